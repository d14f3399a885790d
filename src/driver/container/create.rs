//! Creating an instance: the claims it holds, its CPUs, and the bundle, root,
//! devices, disks and guest data prepared before the runtime creates it.

use super::*;

/// The lxcfs files bound over /proc when lxcfs runs.
pub(super) const LXCFS_PROC_FILES: [&str; 7] = [
    "cpuinfo",
    "diskstats",
    "loadavg",
    "meminfo",
    "stat",
    "swaps",
    "uptime",
];

/// The whole block device holding `path` (a partition's parent disk: the
/// kernel throttles whole disks only), as (major, minor), or why there is none.
pub fn block_device_of(path: &Path, sys_dev_block: &Path) -> Result<(u64, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .dev();
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    let entry = sys_dev_block.join(format!("{major}:{minor}"));
    if !entry.exists() {
        return Err(format!(
            "{} is on device {major}:{minor}, which is not a block device (overlay, btrfs subvolume or tmpfs?)",
            path.display()
        ));
    }
    if entry.join("partition").exists() {
        let parent = std::fs::canonicalize(&entry)
            .map_err(|e| format!("cannot resolve {}: {e}", entry.display()))?
            .join("..")
            .join("dev");
        let text = std::fs::read_to_string(&parent)
            .map_err(|e| format!("cannot read {}: {e}", parent.display()))?;
        let (a, b) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("bad device number in {}", parent.display()))?;
        return Ok((
            a.parse()
                .map_err(|_| format!("bad major in {}", parent.display()))?,
            b.parse()
                .map_err(|_| format!("bad minor in {}", parent.display()))?,
        ));
    }
    Ok((major, minor))
}

/// The config drive and network configuration of a spec, checked.
pub(super) fn check_guest_data(spec: &InstanceSpec) -> Result<(), DriverError> {
    if let Some(cd) = &spec.config_drive {
        cd.validate().map_err(drive_err)?;
    }
    if let Some(text) = &spec.network_interfaces {
        if text.len() > configdrive::MAX_INTERFACES_BYTES {
            return Err(drive_err(
                configdrive::ConfigDriveError::InterfacesTooLarge(text.len()),
            ));
        }
    }
    Ok(())
}

/// An instance's `claims.json` that cannot be read or decoded.
#[derive(Debug, thiserror::Error)]
#[error("device claims of instance {instance} ({path}) are unreadable ({reason}): exclusive devices count as held until the file is fixed or the instance is deleted")]
pub struct ClaimsError {
    pub instance: String,
    pub path: PathBuf,
    pub reason: String,
}

/// The claims of every instance directory under `instances_dir` but
/// `except`'s, and the claims files that could not be read or decoded. A
/// missing file holds nothing (an instance without exclusive devices).
pub fn claims_in(
    instances_dir: &Path,
    except: Option<&str>,
) -> (BTreeSet<String>, Vec<ClaimsError>) {
    let mut taken = BTreeSet::new();
    let mut errors = Vec::new();
    let Ok(rd) = std::fs::read_dir(instances_dir) else {
        return (taken, errors);
    };
    for e in rd.flatten() {
        let instance = e.file_name().to_string_lossy().into_owned();
        if except == Some(instance.as_str()) {
            continue;
        }
        let path = e.path().join(CLAIMS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(err) => {
                errors.push(ClaimsError {
                    instance,
                    path,
                    reason: err.to_string(),
                });
                continue;
            }
        };
        match serde_json::from_slice::<Vec<String>>(&bytes) {
            Ok(list) => taken.extend(list),
            Err(err) => errors.push(ClaimsError {
                instance,
                path,
                reason: err.to_string(),
            }),
        }
    }
    (taken, errors)
}

impl ContainerDriver {
    /// Creates a new instance from a spec whose uuid is fresh.
    pub(super) async fn create(
        &self,
        spec: &InstanceSpec,
        start: bool,
        gate: Option<StartGate>,
    ) -> Result<(), DriverError> {
        if !crate::driver::is_uuid(&spec.uuid) {
            return Err(DriverError::Invalid(format!(
                "invalid instance uuid {:?}: not a UUID",
                spec.uuid
            )));
        }
        validate_name(&spec.name)?;
        self.check(spec)?;
        if let Some(cmd) = &spec.command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err(DriverError::Invalid("command must not be empty".into()));
            }
        }
        let image = self
            .store
            .find_image(&spec.image)
            .await?
            .ok_or_else(|| DriverError::ImageNotFound(spec.image.clone()))?;
        // Held until the instance is made: a delete of the image meanwhile
        // is refused rather than removing files this launch copies.
        let _pin = self.images.pin(&image.fingerprint).map_err(image_busy)?;
        if !self.images.has(&image.fingerprint) {
            return Err(DriverError::ImageNotFound(format!(
                "{} (its files are missing from the cache)",
                spec.image
            )));
        }
        let args = self.init_args(spec, &image)?;
        let mut stored = spec.clone();
        stored.image = image.fingerprint.clone();
        let alloc_guard = self.cpu_alloc.lock().await;
        stored.pinned_cpus = if spec.limits.cpu_dedicated {
            Some(self.allocate_cpus(spec).await?)
        } else {
            None
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| DriverError::Invalid(format!("cannot encode spec: {e}")))?;
        let rec = self
            .store
            .insert_instance(
                &spec.uuid,
                &spec.name,
                &image.fingerprint,
                &json,
                !spec.privileged,
                self.cfg.corral.idmap_max_instances,
            )
            .await?;
        drop(alloc_guard);
        crash_point("launch.after_record");
        let result = async {
            self.prepare(&rec, &stored, &image, &args, true).await?;
            if start {
                self.start_container(&rec.uuid, gate).await?;
                self.store.set_desired(&rec.uuid, "running").await?;
            }
            crash_point("launch.before_ready");
            self.store.set_phase(&rec.uuid, Phase::Ready).await?;
            Ok::<(), DriverError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(uuid = %rec.uuid, error = %e, "create failed, rolling back");
            if let Err(cleanup) = self.remove_everything(&rec.uuid).await {
                tracing::error!(uuid = %rec.uuid, error = %cleanup, "rollback incomplete");
            }
            return Err(e);
        }
        Ok(())
    }

    /// The devices instances hold exclusively (their `claims.json`), but
    /// for those of `except`. Fails closed: when an instance's claims file
    /// cannot be read or decoded, nothing exclusive is handed out (its
    /// devices might be any of them) until it is fixed or the instance is
    /// deleted.
    pub(super) fn held_claims(
        &self,
        except: Option<&str>,
    ) -> Result<BTreeSet<String>, DriverError> {
        let (taken, errors) = claims_in(&self.cfg.instances_dir(), except);
        match errors.into_iter().next() {
            None => Ok(taken),
            Some(e) => {
                tracing::error!(error = %e, "device claims unreadable: exclusive devices are held");
                Err(DriverError::Conflict(e.to_string()))
            }
        }
    }

    /// Free CPUs of `[compute] cpu_dedicated_set` for a new dedicated
    /// instance: every stored instance keeps its CPUs until it is deleted.
    pub(super) async fn allocate_cpus(&self, spec: &InstanceSpec) -> Result<CpuSet, DriverError> {
        let set = self.cfg.compute.cpu_dedicated_set.clone().ok_or_else(|| {
            DriverError::Invalid("dedicated CPUs need [compute] cpu_dedicated_set".into())
        })?;
        let want = spec.limits.cpus.unwrap_or(0.0) as usize;
        let mut used = std::collections::BTreeSet::new();
        for rec in self.store.list_instances().await? {
            if let Some(p) = Self::spec_of(&rec).ok().and_then(|s| s.pinned_cpus) {
                used.extend(p.0);
            }
        }
        let free: Vec<u32> = set
            .0
            .iter()
            .copied()
            .filter(|c| !used.contains(c))
            .collect();
        if free.len() < want {
            return Err(DriverError::Conflict(format!(
                "not enough free dedicated CPUs: {want} asked for, {} free in [compute] cpu_dedicated_set {set}",
                free.len()
            )));
        }
        Ok(CpuSet(free.into_iter().take(want).collect()))
    }

    /// Whether the host accounts swap (memory+swap limits work).
    pub(super) fn swap_accounting(&self) -> bool {
        let root = &self.cgroup_root;
        match self.runtime.cgroup_mode {
            CgroupMode::V1 => root.join("memory/memory.memsw.limit_in_bytes").exists(),
            CgroupMode::V2 => std::fs::read_dir(root)
                .map(|rd| {
                    rd.flatten()
                        .any(|e| e.path().join("memory.swap.max").exists())
                })
                .unwrap_or(false),
        }
    }

    /// lxcfs's proc files, when lxcfs runs (its files are readable).
    pub(super) fn lxcfs_binds(&self) -> Vec<BindMount> {
        let dir = self.cfg.corral.lxcfs_path.join("proc");
        LXCFS_PROC_FILES
            .iter()
            .filter(|f| std::fs::File::open(dir.join(f)).is_ok())
            .map(|f| BindMount {
                source: dir.join(f),
                target: Path::new("/proc").join(f),
                readonly: false,
            })
            .collect()
    }

    pub(super) fn init_args(
        &self,
        spec: &InstanceSpec,
        image: &ImageRecord,
    ) -> Result<Vec<String>, DriverError> {
        if let Some(cmd) = spec
            .command
            .clone()
            .or_else(|| self.cfg.corral.init_command.clone())
        {
            return Ok(cmd);
        }
        match image.properties.get("init").and_then(|v| v.as_str()) {
            Some(init) if !init.is_empty() => Ok(vec![init.to_string()]),
            _ => Err(DriverError::Invalid(format!(
                "image {} has no /sbin/init: give a command, or set [corral] init_command",
                image.alias.as_deref().unwrap_or(&image.fingerprint)
            ))),
        }
    }

    /// Root + bundle; idempotent, also used to start again after a reboot.
    /// `fresh_root`: the root was just made (create, rebuild): the files
    /// written into it once (`network_interfaces`) go in.
    pub(super) async fn prepare(
        &self,
        rec: &InstanceRecord,
        spec: &InstanceSpec,
        image: &ImageRecord,
        args: &[String],
        fresh_root: bool,
    ) -> Result<(), DriverError> {
        let dir = self.instance_dir(&rec.uuid);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let idmap = self.idmap_of(rec);
        // The instance's files are its own: only the runtime (root) and the
        // container's ids (its root's group, to traverse to its root, device
        // nodes and disks) may enter; other host users never see its setuid
        // files, environment or console.
        let (dir_gid, dir_mode) = match idmap {
            Some(m) => (m.host_base, 0o710),
            None => (0, 0o700),
        };
        std::os::unix::fs::chown(&dir, Some(0), Some(dir_gid)).map_err(io_err(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode))
            .map_err(io_err(&dir))?;
        let _pin = self.images.pin(&rec.image).map_err(image_busy)?;
        // Unprivileged: the image through an idmapped mount where the
        // kernel allows it, else its copy shifted into the instance's range.
        let lower = match idmap {
            Some(m) if !self.storage.idmapped => {
                self.images.shifted_rootfs(&rec.image, m.host_base).await?
            }
            _ => self.images.rootfs(&rec.image),
        };
        let rootfs = self
            .storage
            .prepare(
                &dir,
                &lower,
                idmap.map(|m| (m.host_base, m.size)),
                spec.limits.root_disk_bytes,
                self.images.copy_limits(),
            )
            .await?;
        crash_point("prepare.after_root");
        // Owned by the container's root: host root, or the first mapped id.
        let root_id = idmap.map(|m| m.host_base).unwrap_or(0);
        if fresh_root {
            if let Some(text) = &spec.network_interfaces {
                let (r, id) = self.storage.root_for_writes(&dir, root_id);
                let t = text.clone();
                blocking("network injection", move || {
                    configdrive::inject_interfaces(&r, &t, id, id).map_err(drive_err)
                })
                .await?;
            }
        }
        // The config drive is written again on every start (from the spec):
        // what the instance reads is always what it was given.
        let drive = dir.join(configdrive::DRIVE_DIR);
        let mut binds = Vec::new();
        if let Some(bytes) = spec.limits.ephemeral_bytes {
            let d = dir.clone();
            let fs = spec.limits.ephemeral_format.clone();
            let source = blocking("ephemeral disk", move || {
                let fs = fs.as_deref().unwrap_or(ephemeral::DEFAULT_FORMAT);
                Ok(ephemeral::mount(&d, bytes, fs, root_id)?)
            })
            .await?;
            binds.push(BindMount {
                source,
                target: PathBuf::from(ephemeral::GUEST_PATH),
                readonly: false,
            });
        }
        match &spec.config_drive {
            Some(cd) => {
                let (d, cd) = (dir.clone(), cd.clone());
                let path = blocking("config drive", move || {
                    cd.write(&d, root_id, root_id).map_err(drive_err)
                })
                .await?;
                binds.push(BindMount {
                    source: path,
                    target: PathBuf::from(configdrive::SEED_DIR),
                    readonly: true,
                });
            }
            None => configdrive::remove_tree(&drive).map_err(drive_err)?,
        }
        // The console is the container's own: its mapped root may reopen it
        // (through /proc/1/fd/1) the way a system writes to its console.
        let console = self.console_path(&rec.uuid);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
            .map_err(io_err(&console))?;
        drop(file);
        std::fs::set_permissions(&console, std::fs::Permissions::from_mode(0o640))
            .map_err(io_err(&console))?;
        if let Some(m) = idmap {
            std::os::unix::fs::chown(&console, Some(m.host_base), Some(m.host_base))
                .map_err(io_err(&console))?;
        }
        crash_point("prepare.after_console");
        let profile = sysinit::profile(
            image,
            args,
            &self.cfg.corral.stop_signal,
            idmap.map(|m| m.host_base),
        )?;
        profile.save(&dir)?;
        if profile.systemd {
            // The pty itself is made at each start (start_container); the
            // bundle names the link to it.
            binds.push(BindMount {
                source: dir.join(CONSOLE_PTY_LINK),
                target: PathBuf::from("/dev/console"),
                readonly: false,
            });
        }
        let (mut cpu_quota_us, mut cpu_period_us) = spec.limits.cfs();
        let mut cpu_shares = spec.limits.cpu_shares;
        if self.cfg.corral.cpu_limit_mode == CpuLimitMode::Shares {
            if let (Some(cpus), None) = (spec.limits.cpus, spec.limits.cpu_quota_us) {
                // Overcommit: a weight instead of a cap.
                cpu_quota_us = None;
                cpu_period_us = spec.limits.cpu_period_us;
                cpu_shares = cpu_shares.or(Some(((cpus * 1024.0).round() as u64).max(2)));
            }
        }
        let cpuset_cpus = match &spec.pinned_cpus {
            Some(set) => Some(set.to_string()),
            None => self.shared_cpus().map(|s| s.to_string()),
        };
        let memory_swap = match (spec.limits.memory_bytes, spec.limits.swap_bytes) {
            (Some(m), Some(s)) if self.swap_accounting() => Some((m + s) as i64),
            (Some(_), Some(_)) => {
                tracing::debug!(uuid = %rec.uuid, "the host does not account swap: swap limit skipped");
                None
            }
            _ => None,
        };
        let blkio = if spec.limits.has_blkio() {
            // The disk the root's writes reach: its own root disk (a loop
            // device), else the host's disk under the state path.
            let held = crate::storage::root_disk_mount(&self.instance_dir(&rec.uuid))
                .unwrap_or_else(|| self.cfg.state_path.clone());
            let (major, minor) = block_device_of(&held, Path::new("/sys/dev/block"))
                .map_err(DriverError::Invalid)?;
            Some(Blkio {
                major: major as i64,
                minor: minor as i64,
                read_bps: spec.limits.disk_read_bytes_sec,
                write_bps: spec.limits.disk_write_bytes_sec,
                read_iops: spec.limits.disk_read_iops_sec,
                write_iops: spec.limits.disk_write_iops_sec,
            })
        } else {
            None
        };
        let mut device_rules = Vec::new();
        let mut device_env = Vec::new();
        {
            // One instance at a time picks among free GPUs and NICs.
            let _pick = self.cpu_alloc.lock().await;
            let taken = if spec.devices.is_empty() {
                BTreeSet::new()
            } else {
                self.held_claims(Some(&rec.uuid))?
            };
            let mut claims = Vec::new();
            let mut nics = Vec::new();
            for (name, dev) in &spec.devices {
                let resolved = devices::resolve_on(name, dev, &self.allowlist, &self.host, &taken)
                    .map_err(device_invalid)?;
                if let Some(c) = resolved.claim() {
                    claims.push(c.to_string());
                }
                // mknod, mount and blkid: off the async workers.
                let set = {
                    let (d, r) = (dir.clone(), resolved.clone());
                    blocking("device setup", move || {
                        devices::setup_on(&d, &r, root_id).map_err(DriverError::Device)
                    })
                    .await?
                };
                for p in set.mounts {
                    if let Some(d) = p.allow {
                        device_rules.push(DeviceRule {
                            block: d.block,
                            major: d.major as i64,
                            minor: d.minor as i64,
                        });
                    }
                    binds.push(BindMount {
                        source: p.source,
                        target: p.target,
                        readonly: p.readonly,
                    });
                }
                device_env.extend(set.env);
                nics.extend(set.nic);
            }
            let claims_path = dir.join(CLAIMS_FILE);
            let text = serde_json::to_vec(&claims)
                .map_err(|e| DriverError::Invalid(format!("cannot encode claims: {e}")))?;
            fsutil::write_atomic(&claims_path, &text, 0o600).map_err(io_err(&claims_path))?;
            nic::save(&dir, &nics)?;
        }
        crash_point("prepare.after_devices");
        // Nova's PCI passthrough: the functions' device nodes, and their addresses.
        for addr in &spec.pci_devices {
            for n in crate::driver::pci::device_nodes(&self.host.sys, &self.host.dev, addr)? {
                device_rules.push(DeviceRule {
                    block: n.block,
                    major: n.major as i64,
                    minor: n.minor as i64,
                });
                binds.push(BindMount {
                    source: n.path.clone(),
                    target: n.path,
                    readonly: false,
                });
            }
        }
        device_env.extend(crate::driver::pci::env(&spec.pci_devices));
        if !spec.nesting {
            binds.extend(self.lxcfs_binds());
        }
        let mut env = vec![
            DEFAULT_PATH.to_string(),
            "container=corral".to_string(),
            "TERM=linux".to_string(),
        ];
        env.extend(device_env);
        env.extend(spec.environment.iter().map(|(k, v)| format!("{k}={v}")));
        let cfg = BundleConfig {
            id: rec.uuid.clone(),
            hostname: spec.hostname.clone().unwrap_or_else(|| spec.name.clone()),
            rootfs,
            args: args.to_vec(),
            env,
            idmap,
            cgroups_path: self.cgroup_path(&rec.uuid),
            cgroup_v2: self.runtime.cgroup_mode == CgroupMode::V2,
            cgroup_delegated: profile.systemd,
            cpu_quota_us,
            cpu_period_us,
            cpu_shares,
            memory_bytes: spec.limits.memory_bytes.map(|m| m as i64),
            memory_swap,
            pids_limit: spec
                .limits
                .pids
                .unwrap_or(self.cfg.corral.default_pids_limit) as i64,
            cpuset_cpus,
            blkio,
            nesting: spec.nesting,
            no_new_privileges: self.cfg.corral.no_new_privileges,
            binds,
            device_rules,
        };
        bundle::write(&dir, &cfg)?;
        crash_point("prepare.after_bundle");
        Ok(())
    }
}
