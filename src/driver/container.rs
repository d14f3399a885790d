//! The container driver: instances as system containers run by an OCI runtime.
//!
//! Large on purpose for now: every operation of the `Driver` trait and the
//! phase records that let a restart finish or roll it back live beside the
//! one type that owns the runtime, storage, image cache and store handles.
//! The next split is by operation family (create/destroy, power, images),
//! once networking and storage pools add theirs.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod rescue;
mod snapshots;

pub use snapshots::validate_snapshot_name;

use super::sysinit;
use super::{
    configdrive, nic, vif, BackendInfo, Driver, DriverError, ImageStore, InstanceInfo,
    InstanceSpec, InstanceView, PowerState, ReconcileReport, SnapshotMade, StartGate, VifSpec,
};
use crate::config::{Config, CpuLimitMode, CpuSet};
use crate::crashpoint::crash_point;
use crate::devices::{self, Allowlist, HostPaths};
use crate::fsutil;
use crate::image::ImageCache;
use crate::netdev;
use crate::runtime::bundle::{BindMount, Blkio, DeviceRule};
use crate::runtime::cgroups::{self, CgroupMode, CgroupPath};
use crate::runtime::{bundle, console, BundleConfig, ExecOutput, IdMap, Runtime, Status};
use crate::storage::{ephemeral, Storage};
use crate::store::{ImageRecord, InstanceRecord, Phase, SnapshotRecord, Store};

/// Default environment of an instance's init and of exec'd commands.
/// The exclusive devices an instance holds, in its directory.
const CLAIMS_FILE: &str = "claims.json";
/// The link to the pty of a systemd instance's `/dev/console`.
const CONSOLE_PTY_LINK: &str = "console.pty";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container driver and host services (images, listing) for frontends.
pub struct ContainerDriver {
    cfg: Arc<Config>,
    runtime: Runtime,
    storage: Storage,
    images: ImageCache,
    store: Store,
    cgroup_root: PathBuf,
    stop_signal: i32,
    locks: crate::locks::KeyedLocks,
    allowlist: Allowlist,
    /// Where sysfs, /dev and CDI specs are read (the real host).
    host: HostPaths,
    /// Held from choosing a dedicated instance's CPUs until its record is
    /// stored, so two creates never pick the same CPUs.
    cpu_alloc: tokio::sync::Mutex<()>,
    /// Imports run one at a time: two imports of the same archive would
    /// unpack into the same cache directory.
    import_lock: tokio::sync::Mutex<()>,
}

/// The lxcfs files bound over /proc when lxcfs runs.
const LXCFS_PROC_FILES: [&str; 7] = [
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

fn device_invalid(e: devices::DeviceError) -> DriverError {
    DriverError::Invalid(e.to_string())
}

/// Bad content is the caller's to fix; a failed write is the host's.
fn drive_err(e: configdrive::ConfigDriveError) -> DriverError {
    match e {
        configdrive::ConfigDriveError::Io { path, source } => DriverError::Io { path, source },
        other => DriverError::Invalid(other.to_string()),
    }
}

/// The config drive and network configuration of a spec, checked.
fn check_guest_data(spec: &InstanceSpec) -> Result<(), DriverError> {
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A launch or delete that meets another on the same image: a conflict the
/// caller may retry, not a failure of the host.
fn image_busy(e: crate::image::ImageError) -> DriverError {
    match e {
        crate::image::ImageError::InUse(_) | crate::image::ImageError::Deleting(_) => {
            DriverError::Conflict(e.to_string())
        }
        e => e.into(),
    }
}

/// Instance names are hostnames: 1-63 letters, digits and dashes, starting
/// with a letter and not ending with a dash, and never a UUID (a key that
/// is a UUID names an instance by its uuid).
pub fn validate_name(name: &str) -> Result<(), DriverError> {
    if super::is_uuid(name) {
        return Err(DriverError::Invalid(format!(
            "invalid instance name {name:?}: a name must not be a UUID"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(DriverError::Invalid(format!(
            "invalid instance name {name:?}: use 1-63 letters, digits and dashes, starting with a letter"
        )))
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let all: Vec<&str> = trimmed.split('\n').collect();
    let start = all.len().saturating_sub(lines);
    let mut out = all[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Runs blocking work (mknod, mount, blkid, tree removal) on tokio's
/// blocking threads, so the async workers keep serving.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DriverError::Invalid(format!("{what} task failed: {e}")))?
}

/// The first directory from `/` down to `dir` that other users may not
/// traverse (no `o+x`), with its mode.
pub fn untraversable_ancestor(dir: &Path) -> Option<(PathBuf, u32)> {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut chain: Vec<&Path> = real.ancestors().collect();
    chain.reverse();
    chain.into_iter().find_map(|d| {
        let mode = std::fs::metadata(d).ok()?.permissions().mode() & 0o7777;
        (mode & 0o001 == 0).then(|| (d.to_path_buf(), mode))
    })
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
    pub fn new(
        cfg: Arc<Config>,
        runtime: Runtime,
        storage: Storage,
        store: Store,
        cgroup_root: PathBuf,
    ) -> Result<ContainerDriver, DriverError> {
        let stop_signal = cfg.corral.stop_signal.number();
        let images = ImageCache::new(
            cfg.images_dir(),
            cfg.corral.max_image_bytes,
            cfg.corral.max_image_entries,
        );
        // Containers' mapped roots must traverse the state path and the
        // instances directory down to their own directory (traverse only:
        // nobody lists them). The image cache is the daemon's alone: overlay
        // reads its lower layers with the daemon's credentials, and a host
        // user must never reach an image's setuid files.
        for (dir, mode) in [
            (cfg.state_path.clone(), 0o711),
            (cfg.images_dir(), 0o700),
            (cfg.instances_dir(), 0o711),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(&dir)
                .map_err(io_err(&dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&dir))?;
        }
        // The runtime mounts an unprivileged container's root (and its device
        // nodes, console ...) as the container's mapped root, a host id
        // that is neither owner nor group of the directories above: each must
        // let others traverse it, else every launch fails in runc with
        // "mount ...: permission denied". Refuse now, naming the fix.
        if let Some((dir, mode)) = untraversable_ancestor(&cfg.instances_dir()) {
            return Err(DriverError::Invalid(format!(
                "state_path {state}: the directory {dir} (mode {mode:04o}) does not let other users \
                 traverse it, and unprivileged containers' ids must, to reach their root \
                 filesystems (every launch would fail with 'mount ...: permission denied'). \
                 Allow traversal without listing (chmod o+x {dir}), or choose a state_path \
                 whose parent directories all allow it (e.g. /var/lib/corral)",
                state = cfg.state_path.display(),
                dir = dir.display(),
            )));
        }
        let allowlist = cfg.corral.device_allowlist.clone();
        if let Some(set) = cfg
            .compute
            .cpu_dedicated_set
            .iter()
            .chain(cfg.compute.cpu_shared_set.iter())
            .find(|s| !online_cpus().map(|o| s.0.is_subset(&o.0)).unwrap_or(true))
        {
            return Err(DriverError::Invalid(format!(
                "[compute] CPU set {set} names CPUs this host does not have online"
            )));
        }
        Ok(ContainerDriver {
            allowlist,
            host: HostPaths::default(),
            cpu_alloc: tokio::sync::Mutex::new(()),
            cfg,
            runtime,
            storage,
            images,
            store,
            cgroup_root,
            stop_signal,
            locks: crate::locks::KeyedLocks::new(),
            import_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The host CPUs instances without dedicated CPUs run on: `[compute]
    /// cpu_shared_set`, else every online CPU outside `cpu_dedicated_set`;
    /// `None` (no cpuset) when neither is set.
    pub fn shared_cpus(&self) -> Option<CpuSet> {
        let c = &self.cfg.compute;
        match (&c.cpu_shared_set, &c.cpu_dedicated_set) {
            (Some(shared), _) => Some(shared.clone()),
            (None, Some(dedicated)) => online_cpus().and_then(|o| o.without(dedicated)),
            (None, None) => None,
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The instance's lock; its entry leaves the map when no one holds or waits for it.
    fn lock_for(&self, uuid: &str) -> crate::locks::LockHandle<'_> {
        self.locks.handle(uuid)
    }

    fn instance_dir(&self, uuid: &str) -> PathBuf {
        self.cfg.instances_dir().join(uuid)
    }

    fn console_path(&self, uuid: &str) -> PathBuf {
        self.instance_dir(uuid).join("console.log")
    }

    fn cgroup_path(&self, uuid: &str) -> String {
        format!("/{}/{}", self.cfg.corral.cgroup_parent, uuid)
    }

    fn idmap_of(&self, rec: &InstanceRecord) -> Option<IdMap> {
        rec.idmap_slot.map(|slot| IdMap {
            host_base: self.cfg.corral.idmap_base + slot * self.cfg.corral.idmap_size,
            size: self.cfg.corral.idmap_size,
        })
    }

    /// The instance a frontend names: by uuid when the key is a UUID, else
    /// by name (a name is never a UUID, so a key names one instance only).
    async fn record(&self, key: &str) -> Result<InstanceRecord, DriverError> {
        if super::is_uuid(key) {
            return self.record_by_uuid(key).await;
        }
        self.store
            .find_instance_by_name(key)
            .await?
            .ok_or_else(|| DriverError::NotFound(key.to_string()))
    }

    /// The instance of a uuid, never one that happens to be named so.
    async fn record_by_uuid(&self, uuid: &str) -> Result<InstanceRecord, DriverError> {
        self.store
            .find_instance_by_uuid(uuid)
            .await?
            .ok_or_else(|| DriverError::NotFound(uuid.to_string()))
    }

    fn spec_of(rec: &InstanceRecord) -> Result<InstanceSpec, DriverError> {
        serde_json::from_str(&rec.spec).map_err(|e| {
            DriverError::Invalid(format!("stored spec of {} is unreadable: {e}", rec.name))
        })
    }

    // ---- instances ---------------------------------------------------------

    async fn view(
        &self,
        rec: InstanceRecord,
        images: &[ImageRecord],
    ) -> Result<InstanceView, DriverError> {
        let spec = Self::spec_of(&rec)?;
        let info = self.info_of(&rec).await?;
        let image_alias = images
            .iter()
            .find(|i| i.fingerprint == rec.image)
            .and_then(|i| i.alias.clone());
        Ok(InstanceView {
            idmap: self.idmap_of(&rec),
            uuid: rec.uuid,
            name: rec.name,
            image: rec.image,
            image_alias,
            spec,
            info,
            created_at: rec.created_at,
        })
    }

    async fn info_of(&self, rec: &InstanceRecord) -> Result<InstanceInfo, DriverError> {
        let state = if rec.phase == Phase::Ready {
            self.runtime.state(&rec.uuid).await?
        } else {
            None
        };
        let (power_state, status, pid) = match state.as_ref().map(|s| s.status) {
            Some(Status::Running) => (
                PowerState::Running,
                "Running",
                state.as_ref().and_then(|s| s.pid),
            ),
            Some(Status::Paused) if rec.desired == "suspended" => (
                PowerState::Suspended,
                "Frozen",
                state.as_ref().and_then(|s| s.pid),
            ),
            Some(Status::Paused) => (
                PowerState::Paused,
                "Frozen",
                state.as_ref().and_then(|s| s.pid),
            ),
            Some(Status::Created) | Some(Status::Creating) => {
                (PowerState::NoState, "Starting", None)
            }
            Some(Status::Stopped) => (PowerState::Crashed, "Stopped", None),
            None => match rec.phase {
                Phase::Creating => (PowerState::NoState, "Creating", None),
                Phase::Deleting => (PowerState::NoState, "Deleting", None),
                Phase::Ready => (PowerState::Shutdown, "Stopped", None),
            },
        };
        let stats = if pid.is_some() {
            self.stats(&rec.uuid)
        } else {
            None
        };
        Ok(InstanceInfo {
            power_state,
            status,
            pid,
            stats,
        })
    }

    fn stats(&self, uuid: &str) -> Option<cgroups::Stats> {
        let path = CgroupPath::new(self.cgroup_path(uuid)).ok()?;
        match cgroups::read_stats(self.runtime.cgroup_mode, &self.cgroup_root, &path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(uuid, error = %e, "cannot read cgroup stats");
                None
            }
        }
    }

    /// Creates a new instance from a spec whose uuid is fresh.
    async fn create(
        &self,
        spec: &InstanceSpec,
        start: bool,
        gate: Option<StartGate>,
    ) -> Result<(), DriverError> {
        if !super::is_uuid(&spec.uuid) {
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
    fn held_claims(&self, except: Option<&str>) -> Result<BTreeSet<String>, DriverError> {
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
    async fn allocate_cpus(&self, spec: &InstanceSpec) -> Result<CpuSet, DriverError> {
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
    fn swap_accounting(&self) -> bool {
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
    fn lxcfs_binds(&self) -> Vec<BindMount> {
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

    fn init_args(
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
    async fn prepare(
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
            for n in super::pci::device_nodes(&self.host.sys, &self.host.dev, addr)? {
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
        device_env.extend(super::pci::env(&spec.pci_devices));
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

    /// Root and bundle ready again (after a reboot of the host, too), then the
    /// container started: what power-on and reboot share.
    async fn boot(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let spec = Self::spec_of(rec)?;
        let image = self.get_image(&rec.image).await?;
        let args = self.init_args(&spec, &image)?;
        self.prepare(rec, &spec, &image, &args, false).await?;
        self.apply_rescue(rec).await?;
        self.start_container(&rec.uuid, None).await?;
        crash_point("power_on.before_desired");
        self.store.set_desired(&rec.uuid, "running").await?;
        Ok(())
    }

    /// Creates the container, moves its host interfaces in, plugs its
    /// virtual interfaces, awaits `gate` and starts its init. A failure at
    /// any step removes what the earlier ones made.
    async fn start_container(
        &self,
        uuid: &str,
        gate: Option<StartGate>,
    ) -> Result<(), DriverError> {
        let dir = self.instance_dir(uuid);
        if let Some(st) = self.runtime.state(uuid).await? {
            match st.status {
                Status::Running | Status::Paused => return Ok(()),
                // Created by a start that did not finish: what it plugged
                // and moved in is not known to be complete, so it is made
                // again from the start.
                Status::Created => self.undo_start(uuid).await,
                Status::Stopped | Status::Creating => self.runtime.delete(uuid, true).await?,
            }
        }
        let profile = sysinit::BootProfile::load(&dir);
        let systemd = profile.as_ref().is_some_and(|p| p.systemd);
        if systemd {
            self.start_console_relay(uuid, profile.as_ref().and_then(|p| p.root_id))
                .await?;
        }
        if let Err(e) = self
            .runtime
            .create(uuid, &dir, &self.console_path(uuid))
            .await
        {
            self.stop_console_relay(uuid);
            return Err(e.into());
        }
        crash_point("start.after_create");
        if systemd {
            // Before the init runs: its cgroup is its root's to manage.
            let (root, mode, path) = (
                self.cgroup_root.clone(),
                self.runtime.cgroup_mode,
                self.cgroup_path(uuid),
            );
            let owner = profile.as_ref().and_then(|p| p.root_id).unwrap_or(0);
            let delegated = blocking("cgroup delegation", move || {
                cgroups::delegate(&root, mode, &path, owner, owner)
                    .map_err(|e| DriverError::Runtime(e.into()))
            })
            .await;
            if let Err(e) = delegated {
                self.undo_start(uuid).await;
                return Err(e);
            }
        }
        // Host interfaces go in before the init runs, so it finds them.
        if let Err(e) = self.attach_nics(uuid).await {
            let _ = self.runtime.delete(uuid, true).await;
            return Err(e);
        }
        crash_point("start.after_nics");
        // Virtual interfaces, then the gate (Nova's wait for the network's
        // word that they are plugged), and only then the init.
        let plugged = async {
            let spec = Self::spec_of(&self.record_by_uuid(uuid).await?)?;
            self.plug_vifs(uuid, &spec.vifs).await?;
            crash_point("plug.before_gate");
            if let Some(gate) = gate {
                gate.await?;
            }
            Ok::<(), DriverError>(())
        }
        .await;
        if let Err(e) = plugged {
            self.undo_start(uuid).await;
            return Err(e);
        }
        if let Err(e) = self.runtime.start(uuid).await {
            self.undo_start(uuid).await;
            return Err(e.into());
        }
        crash_point("start.after_start");
        Ok(())
    }

    /// Takes back what a failed start made: virtual interfaces, host
    /// interfaces, the created container.
    async fn undo_start(&self, uuid: &str) {
        if let Err(e) = self.unplug_vifs(uuid).await {
            tracing::warn!(uuid, error = %e, "virtual interfaces not unplugged");
        }
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if let Err(e) = self.runtime.delete(uuid, true).await {
            tracing::warn!(uuid, error = %e, "created container not deleted");
        }
        self.stop_console_relay(uuid);
    }

    /// The pid of the container's init (created or running).
    async fn init_pid(&self, uuid: &str) -> Result<i32, DriverError> {
        self.runtime
            .state(uuid)
            .await?
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                DriverError::Invalid(format!(
                    "container {uuid} has no init process for its interfaces"
                ))
            })
    }

    /// Plugs the virtual interfaces into the network namespace of the
    /// created container. What a crash could leave is written down first
    /// (`vifs.json`), so that start-up finds and removes it.
    async fn plug_vifs(&self, uuid: &str, vifs: &[VifSpec]) -> Result<(), DriverError> {
        // What an earlier start of this instance may have left.
        self.unplug_vifs(uuid).await?;
        if vifs.is_empty() {
            return Ok(());
        }
        let pid = self.init_pid(uuid).await?;
        let taken = netdev::links_in(pid).map_err(vif::vif_error)?;
        let list = vif::plan(vifs, &taken)?;
        let dir = self.instance_dir(uuid);
        let id = uuid.to_string();
        blocking("interface plug", move || {
            for v in &list {
                netdev::bridge_exists(&v.switch).map_err(vif::vif_error)?;
                netdev::ensure_free(v).map_err(vif::vif_error)?;
            }
            netdev::save(&dir, &list)?;
            crash_point("plug.after_record");
            for (i, v) in list.iter().enumerate() {
                let t = std::time::Instant::now();
                netdev::plug(v, pid).map_err(vif::vif_error)?;
                tracing::info!(uuid = %id, vif = %v.id, tap = %v.tap(), inside = %v.inside, ms = t.elapsed().as_secs_f64() * 1000.0, "interface plugged");
                if i == 0 {
                    crash_point("plug.after_first");
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes from the host what `vifs.json` says was plugged (OVS ports,
    /// `qbr` bridges, `qvb`/`qvo` and tap devices), then the record.
    async fn unplug_vifs(&self, uuid: &str) -> Result<(), DriverError> {
        let dir = self.instance_dir(uuid);
        let list = netdev::load(&dir)?;
        if list.is_empty() {
            return Ok(());
        }
        blocking("interface unplug", move || {
            netdev::unplug_all(&list)?;
            netdev::save(&dir, &[])?;
            Ok(())
        })
        .await
    }

    /// The pid of the instance's init when its container runs (or is
    /// frozen): its namespace takes interfaces live.
    async fn live_pid(&self, uuid: &str) -> Result<Option<i32>, DriverError> {
        Ok(match self.runtime.state(uuid).await? {
            Some(s) if matches!(s.status, Status::Running | Status::Paused) => {
                s.pid.filter(|p| *p > 0)
            }
            _ => None,
        })
    }

    async fn store_spec(&self, uuid: &str, spec: &InstanceSpec) -> Result<(), DriverError> {
        let json = serde_json::to_string(spec)
            .map_err(|e| DriverError::Invalid(format!("cannot encode spec: {e}")))?;
        self.store.set_spec(uuid, &json).await?;
        Ok(())
    }

    /// One more interface: kept in the spec, plugged now when the
    /// instance runs (inside as asked, else the next free `ethN`).
    async fn attach_vif(&self, rec: &InstanceRecord, new: &VifSpec) -> Result<(), DriverError> {
        if rec.phase != Phase::Ready {
            return Err(DriverError::Conflict(format!(
                "instance {} is being created or deleted",
                rec.name
            )));
        }
        let mut spec = Self::spec_of(rec)?;
        if spec.vifs.iter().any(|v| v.id == new.id) {
            return Err(DriverError::Conflict(format!(
                "instance {} already has interface {}",
                rec.name, new.id
            )));
        }
        let mut all = spec.vifs.clone();
        all.push(new.clone());
        vif::check(&all)?;
        let probe = vif::to_netdev(new, "eth0".into());
        blocking("bridge check", move || {
            netdev::bridge_exists(&probe.switch).map_err(vif::vif_error)
        })
        .await?;
        spec.vifs.push(new.clone());
        let Some(pid) = self.live_pid(&rec.uuid).await? else {
            return self.store_spec(&rec.uuid, &spec).await;
        };
        let taken = netdev::links_in(pid).map_err(vif::vif_error)?;
        let plugged = vif::plan(std::slice::from_ref(new), &taken)?
            .pop()
            .ok_or_else(|| DriverError::Invalid("no interface to plug".into()))?;
        let dir = self.instance_dir(&rec.uuid);
        let mut record = netdev::load(&dir)?;
        let (d, v, uuid) = (dir.clone(), plugged.clone(), rec.uuid.clone());
        blocking("interface plug", move || {
            netdev::ensure_free(&v).map_err(vif::vif_error)?;
            record.push(v.clone());
            netdev::save(&d, &record)?;
            let t = std::time::Instant::now();
            if let Err(e) = netdev::plug(&v, pid) {
                record.pop();
                netdev::save(&d, &record)?;
                return Err(vif::vif_error(e));
            }
            tracing::info!(%uuid, vif = %v.id, tap = %v.tap(), inside = %v.inside, ms = t.elapsed().as_secs_f64() * 1000.0, "interface plugged");
            Ok(())
        })
        .await?;
        if let Err(e) = self.store_spec(&rec.uuid, &spec).await {
            let v = plugged.clone();
            let _ = blocking("interface unplug", move || {
                netdev::unplug(&v)?;
                let mut record = netdev::load(&dir)?;
                record.retain(|r| r.id != v.id);
                netdev::save(&dir, &record)?;
                Ok(())
            })
            .await;
            return Err(e);
        }
        Ok(())
    }

    /// Forgets an interface and unplugs it if it is plugged.
    async fn detach_vif(&self, rec: &InstanceRecord, vif_id: &str) -> Result<(), DriverError> {
        let mut spec = Self::spec_of(rec)?;
        let Some(pos) = spec.vifs.iter().position(|v| v.id == vif_id) else {
            return Err(DriverError::Invalid(format!(
                "instance {} has no interface {vif_id}",
                rec.name
            )));
        };
        spec.vifs.remove(pos);
        // The spec first: a crash after it leaves a stray in the record,
        // which start-up removes.
        self.store_spec(&rec.uuid, &spec).await?;
        let dir = self.instance_dir(&rec.uuid);
        let id = vif_id.to_string();
        blocking("interface unplug", move || {
            let mut record = netdev::load(&dir)?;
            if let Some(i) = record.iter().position(|r| r.id == id) {
                netdev::unplug(&record[i])?;
                record.remove(i);
                netdev::save(&dir, &record)?;
            }
            Ok(())
        })
        .await
    }

    /// A running instance's interfaces after a restart: the namespace
    /// keeps what was plugged; only what an interrupted detach or attach
    /// left (in the record, no longer or not yet in the spec) is removed.
    async fn reconcile_vifs(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let dir = self.instance_dir(&rec.uuid);
        let list = netdev::load(&dir)?;
        if list.is_empty() {
            return Ok(());
        }
        let spec = Self::spec_of(rec)?;
        let (keep, strays): (Vec<_>, Vec<_>) = list
            .into_iter()
            .partition(|v| spec.vifs.iter().any(|s| s.id == v.id));
        if strays.is_empty() {
            return Ok(());
        }
        let name = rec.name.clone();
        blocking("interface unplug", move || {
            netdev::unplug_all(&strays)?;
            netdev::save(&dir, &keep)?;
            tracing::warn!(%name, count = strays.len(), "unplugged interfaces an interrupted attach or detach left");
            Ok(())
        })
        .await
    }

    async fn attach_nics(&self, uuid: &str) -> Result<(), DriverError> {
        let nics = nic::load(&self.instance_dir(uuid))?;
        if nics.is_empty() {
            return Ok(());
        }
        let limits = Self::spec_of(&self.record_by_uuid(uuid).await?)?.limits;
        let pid = self
            .runtime
            .state(uuid)
            .await?
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                DriverError::Invalid(format!("container {uuid} has no init process for its NICs"))
            })?;
        let moved = nics.clone();
        let inside = tokio::task::spawn_blocking(move || {
            // One the kernel handed back under another name comes home first.
            nic::detach(None, &moved)?;
            nic::attach(pid, &moved, &limits)
        })
        .await
        .map_err(|e| DriverError::Invalid(format!("NIC attach task: {e}")))??;
        // What each one is inside, for the detach (the container has not run yet).
        nic::save_records(&self.instance_dir(uuid), &inside)?;
        tracing::info!(uuid, count = nics.len(), "host interfaces moved in");
        Ok(())
    }

    /// Moves back into a running instance the host interfaces that a stop
    /// or delete cut short had already brought home (the container still
    /// runs, so the operation is rolled back).
    async fn reattach_nics(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let net = self.host.sys.join("class/net");
        let home: Vec<_> = nic::load(&self.instance_dir(&rec.uuid))?
            .into_iter()
            .filter(|n| net.join(&n.host_name).exists())
            .collect();
        if home.is_empty() {
            return Ok(());
        }
        let limits = Self::spec_of(rec)?.limits;
        let pid = self
            .runtime
            .state(&rec.uuid)
            .await?
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                DriverError::Invalid(format!(
                    "container {} has no init process for its NICs",
                    rec.uuid
                ))
            })?;
        let count = home.len();
        tokio::task::spawn_blocking(move || nic::attach(pid, &home, &limits))
            .await
            .map_err(|e| DriverError::Invalid(format!("NIC attach task: {e}")))??;
        tracing::warn!(name = %rec.name, count, "host interfaces moved back in after an interrupted stop or delete");
        Ok(())
    }

    /// Brings the instance's host interfaces home: from its namespace while
    /// the container lives, else (a physical one freed with the namespace)
    /// under its own name again.
    async fn detach_nics(&self, uuid: &str) -> Result<(), DriverError> {
        let nics = nic::load(&self.instance_dir(uuid))?;
        if nics.is_empty() {
            return Ok(());
        }
        let pid = match self.runtime.state(uuid).await? {
            Some(s) if matches!(s.status, Status::Running | Status::Paused | Status::Created) => {
                s.pid.filter(|p| *p > 0)
            }
            _ => None,
        };
        tokio::task::spawn_blocking(move || nic::detach(pid, &nics))
            .await
            .map_err(|e| DriverError::Invalid(format!("NIC detach task: {e}")))??;
        Ok(())
    }

    /// Stops the container and removes it from the runtime.
    async fn stop_container(
        &self,
        uuid: &str,
        timeout: Duration,
        force: bool,
    ) -> Result<(), DriverError> {
        let Some(st) = self.runtime.state(uuid).await? else {
            return Ok(());
        };
        // The tenant's processes stay frozen while its host interfaces are
        // found and moved out, so none can be renamed or swapped meanwhile.
        let has_nics = nic::load(&self.instance_dir(uuid)).is_ok_and(|n| !n.is_empty());
        let frozen = st.status == Status::Paused
            || (has_nics && st.status == Status::Running && self.runtime.pause(uuid).await.is_ok());
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if frozen {
            self.runtime.resume(uuid).await?;
        }
        crash_point("stop.after_nics");
        if matches!(st.status, Status::Running | Status::Paused) {
            let mut stopped = false;
            if !force {
                let signal = sysinit::BootProfile::load(&self.instance_dir(uuid))
                    .map_or(self.stop_signal, |p| p.stop_signal_number);
                match self.runtime.signal(uuid, signal).await {
                    Ok(()) => stopped = self.runtime.wait_stopped(uuid, timeout).await?,
                    Err(e) => tracing::debug!(uuid, error = %e, "stop signal not delivered"),
                }
            }
            if !stopped {
                if let Err(e) = self.runtime.signal(uuid, libc::SIGKILL).await {
                    tracing::debug!(uuid, error = %e, "kill not delivered");
                }
                self.runtime
                    .wait_stopped(uuid, Duration::from_secs(10))
                    .await?;
            }
        }
        crash_point("stop.after_kill");
        self.runtime.delete(uuid, true).await?;
        crash_point("stop.after_delete");
        self.stop_console_relay(uuid);
        // The veth died with the namespace; OVS ports and qbr/qvb/qvo stay.
        if let Err(e) = self.unplug_vifs(uuid).await {
            tracing::warn!(uuid, error = %e, "virtual interfaces not unplugged: done at the next start");
        }
        let dir = self.instance_dir(uuid);
        blocking("device release", move || {
            devices::release(&dir).map_err(DriverError::Device)
        })
        .await?;
        Ok(())
    }

    /// Removes container, cgroups, root, files and the store record.
    async fn remove_everything(&self, uuid: &str) -> Result<(), DriverError> {
        self.store.set_phase(uuid, Phase::Deleting).await?;
        crash_point("remove.after_phase");
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if self.runtime.state(uuid).await?.is_some() {
            self.runtime.delete(uuid, true).await?;
        }
        crash_point("remove.after_runtime");
        // Before the directory (and the record) goes. Every step is tried;
        // what cannot be removed (an OVS port while ovsdb is down) is named
        // in the log, and the delete goes on: a delete (or a start-up) that
        // fails for a stray port would keep the whole instance.
        let left = netdev::load(&self.instance_dir(uuid)).unwrap_or_default();
        if let Err(e) = self.unplug_vifs(uuid).await {
            let devices: Vec<String> = left.iter().flat_map(|v| v.host_devices()).collect();
            let ports: Vec<String> = left
                .iter()
                .filter_map(|v| v.ovs_port().map(|(b, p)| format!("{b}/{p}")))
                .collect();
            tracing::error!(uuid, error = %e, ?devices, ?ports, "virtual interfaces not fully unplugged: remove what is left by hand");
        }
        self.stop_console_relay(uuid);
        self.cleanup_cgroups(uuid);
        crash_point("remove.after_cgroups");
        let dir = self.instance_dir(uuid);
        // Disks first: the tree removal below must never reach into them.
        let d = dir.clone();
        blocking("device release", move || {
            devices::release(&d).map_err(DriverError::Device)
        })
        .await?;
        crash_point("remove.after_devices");
        self.release_rescue(uuid).await?;
        self.storage.release(&dir).await?;
        let d = dir.clone();
        blocking("ephemeral disk release", move || {
            Ok(ephemeral::release(&d)?)
        })
        .await?;
        self.storage.release_snapshots(&dir).await?;
        crash_point("remove.after_root");
        let d = dir.clone();
        blocking("instance removal", move || {
            // Never through a mount: whatever is still mounted in the
            // instance (a disk, a root) is the host's or another's data.
            if let Some(mp) = fsutil::mounts_under(&d).into_iter().next() {
                return Err(DriverError::Invalid(format!(
                    "{} is still mounted: the instance directory {} is kept",
                    mp.display(),
                    d.display()
                )));
            }
            fsutil::remove_tree(&d).map_err(io_err(&d))
        })
        .await?;
        crash_point("remove.after_files");
        self.store.delete_instance(uuid).await?;
        let left = self.leftovers(uuid);
        if !left.is_empty() {
            tracing::error!(
                uuid,
                ?left,
                "deleted, but these are left: remove them by hand"
            );
        }
        Ok(())
    }

    fn cleanup_cgroups(&self, uuid: &str) {
        let Ok(path) = CgroupPath::new(self.cgroup_path(uuid)) else {
            return;
        };
        if let Err(e) = cgroups::cleanup(self.runtime.cgroup_mode, &self.cgroup_root, &path) {
            tracing::warn!(uuid, error = %e, "cgroup cleanup incomplete");
        }
    }

    /// Starts the relay of the instance's `/dev/console` into its console
    /// log and points the bundle's link at its pty.
    async fn start_console_relay(
        &self,
        uuid: &str,
        root_id: Option<u32>,
    ) -> Result<(), DriverError> {
        let dir = self.instance_dir(uuid);
        let log = self.console_path(uuid);
        blocking("console relay", move || {
            let relay =
                console::start(&dir, &log, root_id.map(|id| (id, id))).map_err(io_err(&log))?;
            let link = dir.join(CONSOLE_PTY_LINK);
            let tmp = dir.join(format!("{CONSOLE_PTY_LINK}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&relay.slave, &tmp).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &link).map_err(io_err(&link))?;
            Ok(())
        })
        .await
    }

    fn stop_console_relay(&self, uuid: &str) {
        console::stop(&self.instance_dir(uuid), &self.console_path(uuid));
    }

    /// What of a uuid is still on the host after a delete: its directory, the
    /// runtime's state or its cgroup (named in the log after a delete, and checked
    /// by the tests).
    pub fn leftovers(&self, uuid: &str) -> Vec<String> {
        let mut left = Vec::new();
        let dir = self.instance_dir(uuid);
        if dir.exists() {
            left.push(dir.display().to_string());
        }
        if self.runtime.root.join(uuid).exists() {
            left.push(self.runtime.root.join(uuid).display().to_string());
        }
        if let Ok(path) = CgroupPath::new(self.cgroup_path(uuid)) {
            if cgroups::exists(self.runtime.cgroup_mode, &self.cgroup_root, &path).unwrap_or(false)
            {
                left.push(format!("cgroup {}", self.cgroup_path(uuid)));
            }
        }
        left
    }

    /// Keeps each console log under its size bound: when a log passes it, it
    /// becomes `console.log.1` and a fresh log starts (copy and truncate, since
    /// the container holds the file open for append).
    pub async fn rotate_console_logs(&self) -> Result<(), DriverError> {
        let max = self.cfg.corral.console_log_max_bytes;
        for rec in self.store.list_instances().await? {
            let path = self.console_path(&rec.uuid);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() <= max {
                continue;
            }
            let rotated = path.with_extension("log.1");
            let res = (|| -> std::io::Result<()> {
                let mut f = std::fs::File::open(&path)?;
                let keep = max.min(meta.len());
                f.seek(SeekFrom::Start(meta.len() - keep))?;
                let mut buf = Vec::with_capacity(keep as usize);
                f.take(keep).read_to_end(&mut buf)?;
                std::fs::write(&rotated, &buf)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(0)
            })();
            if let Err(e) = res {
                tracing::warn!(uuid = %rec.uuid, error = %e, "console log rotation failed");
            }
        }
        Ok(())
    }

    /// Reconciles the store with the runtime after a start: finishes or rolls
    /// back what was in flight, reports containers that died, and orphans.
    pub async fn reconcile(&self) -> Result<ReconcileReport, DriverError> {
        let mut report = ReconcileReport::default();
        // Half-made trees can be large: remove them off the async workers.
        let images_dir = self.images.dir().to_path_buf();
        let instances_dir = self.cfg.instances_dir();
        let (images_left, roots_left) = tokio::task::spawn_blocking(move || {
            (
                ImageCache::remove_leftovers_in(&images_dir),
                Storage::remove_leftovers(&instances_dir),
            )
        })
        .await
        .map_err(|e| crate::image::ImageError::Join(e.to_string()))?;
        for path in images_left {
            tracing::warn!(path = %path.display(), "removed what an interrupted image upload, import or copy left");
        }
        for path in roots_left {
            tracing::warn!(path = %path.display(), "removed an interrupted root copy");
        }
        let images: std::collections::HashSet<String> = self
            .store
            .list_images()
            .await?
            .into_iter()
            .map(|i| i.fingerprint)
            .collect();
        for path in self.images.remove_unknown(&images) {
            tracing::warn!(path = %path.display(), "removed an interrupted image import");
        }
        let records = self.store.list_instances().await?;
        let known: std::collections::HashSet<String> =
            records.iter().map(|r| r.uuid.clone()).collect();
        for rec in records {
            match rec.phase {
                Phase::Creating => {
                    tracing::warn!(name = %rec.name, "rolling back a create interrupted by the last stop");
                    self.remove_everything(&rec.uuid).await?;
                    report.rolled_back.push(rec.name);
                }
                Phase::Deleting => {
                    tracing::warn!(name = %rec.name, "finishing a delete interrupted by the last stop");
                    self.remove_everything(&rec.uuid).await?;
                    report.finished_deletes.push(rec.name);
                }
                Phase::Ready => {
                    let state = self.runtime.state(&rec.uuid).await?;
                    match state.map(|s| s.status) {
                        Some(Status::Running) | Some(Status::Paused) => {
                            report.running += 1;
                            if rec.desired == "stopped" {
                                // A start cut short after the container
                                // started: it runs, so it is meant to.
                                tracing::warn!(name = %rec.name, "finishing a start interrupted by the last stop");
                                self.store.set_desired(&rec.uuid, "running").await?;
                            }
                            if let Err(e) = self.reattach_nics(&rec).await {
                                tracing::warn!(name = %rec.name, error = %e, "host interfaces not moved back in");
                            }
                            if let Err(e) = self.reconcile_vifs(&rec).await {
                                tracing::warn!(name = %rec.name, error = %e, "virtual interfaces not reconciled");
                            }
                        }
                        Some(_) => {
                            tracing::warn!(name = %rec.name, "container died while corral was down");
                            // A container created but never started (a start
                            // cut short) holds its host interfaces in its
                            // namespace: bring them home before the namespace
                            // goes, or a virtual one dies with it.
                            if let Err(e) = self.detach_nics(&rec.uuid).await {
                                tracing::warn!(name = %rec.name, error = %e, "host interfaces not brought back");
                            }
                            self.runtime.delete(&rec.uuid, true).await?;
                            if let Err(e) = self.unplug_vifs(&rec.uuid).await {
                                tracing::warn!(name = %rec.name, error = %e, "virtual interfaces not unplugged");
                            }
                            if rec.desired != "stopped" {
                                report.stale.push(rec.name.clone());
                                self.store.set_desired(&rec.uuid, "stopped").await?;
                            }
                        }
                        None => {
                            // A stop cut short, or a host reboot: OVS ports
                            // outlive both.
                            if let Err(e) = self.unplug_vifs(&rec.uuid).await {
                                tracing::warn!(name = %rec.name, error = %e, "virtual interfaces not unplugged");
                            }
                            if rec.desired != "stopped" {
                                tracing::warn!(name = %rec.name, "container is gone (host reboot or killed outside corral)");
                                report.stale.push(rec.name.clone());
                                self.store.set_desired(&rec.uuid, "stopped").await?;
                            }
                        }
                    }
                }
            }
        }
        for c in self.runtime.list().await? {
            if !known.contains(&c.id) {
                tracing::warn!(id = %c.id, "runtime container without a store record left alone");
                report.orphans.push(c.id);
            }
        }
        Ok(report)
    }
}

/// The host's online CPUs, when the kernel says.
fn online_cpus() -> Option<CpuSet> {
    crate::host::online_cpus(Path::new(crate::host::SYS))
}

fn validate_alias(alias: &str) -> Result<(), DriverError> {
    let ok = !alias.is_empty()
        && alias.len() <= 128
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
        && !alias.contains("..");
    if ok {
        Ok(())
    } else {
        Err(DriverError::Invalid(format!(
            "invalid image alias {alias:?}: use letters, digits and - _ . : /"
        )))
    }
}

#[async_trait::async_trait]
impl ImageStore for ContainerDriver {
    /// Imports an image file (already on disk) under an optional alias.
    async fn import_image(
        &self,
        archive: &Path,
        alias: Option<&str>,
        declared: Option<crate::image::format::Declared>,
    ) -> Result<ImageRecord, DriverError> {
        self.import_image_with(archive, alias, declared, &serde_json::Map::new())
            .await
    }

    async fn import_image_with(
        &self,
        archive: &Path,
        alias: Option<&str>,
        declared: Option<crate::image::format::Declared>,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ImageRecord, DriverError> {
        for (k, v) in given {
            match (k.as_str(), v.as_str()) {
                (sysinit::IMAGE_STOP_SIGNAL, Some(sig)) => sysinit::validate(sig)?,
                _ => {
                    return Err(DriverError::Invalid(format!(
                        "image property {k:?} cannot be given (only {})",
                        sysinit::IMAGE_STOP_SIGNAL
                    )))
                }
            }
        }
        let _one_at_a_time = self.import_lock.lock().await;
        crash_point("import.after_upload");
        if let Some(a) = alias {
            validate_alias(a)?;
            if self.store.find_image(a).await?.is_some() {
                return Err(DriverError::Conflict(format!(
                    "image alias {a} already exists"
                )));
            }
        }
        let fp = crate::image::fingerprint_blocking(archive).await?;
        if let Some(existing) = self.store.find_image(&fp).await? {
            return Err(DriverError::Conflict(format!(
                "this image is already imported as {}",
                existing.alias.unwrap_or(existing.fingerprint)
            )));
        }
        let mut imported = self.images.import(archive, declared).await?;
        crash_point("import.after_unpack");
        if let Some(props) = imported.properties.as_object_mut() {
            props.extend(given.clone());
        }
        let rec = ImageRecord {
            fingerprint: imported.fingerprint.clone(),
            alias: alias.map(str::to_string),
            size: imported.size as i64,
            created_at: Store::timestamp(),
            properties: imported.properties,
        };
        if let Err(e) = self.store.insert_image(&rec).await {
            let _ = self.images.remove(&imported.fingerprint).await;
            return Err(e.into());
        }
        crash_point("import.after_record");
        tracing::info!(fingerprint = %rec.fingerprint, alias = ?rec.alias, files = imported.stats.files, "image imported");
        Ok(rec)
    }

    /// A path for an upload in progress (removed by the caller).
    fn image_upload_path(&self) -> PathBuf {
        self.images.upload_path()
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, DriverError> {
        Ok(self.store.list_images().await?)
    }

    async fn get_image(&self, key: &str) -> Result<ImageRecord, DriverError> {
        self.store
            .find_image(key)
            .await?
            .ok_or_else(|| DriverError::ImageNotFound(key.to_string()))
    }

    /// Deletes an image no instance uses and no launch is using.
    async fn delete_image(&self, key: &str) -> Result<(), DriverError> {
        let img = self.get_image(key).await?;
        let guard = self
            .images
            .begin_delete(&img.fingerprint)
            .map_err(image_busy)?;
        let users = self.store.image_users(&img.fingerprint).await?;
        if !users.is_empty() {
            return Err(DriverError::Conflict(format!(
                "image {key} is used by instances: {}",
                users.join(", ")
            )));
        }
        self.store.delete_image(&img.fingerprint).await?;
        crash_point("image_delete.after_record");
        self.images.remove_files(&img.fingerprint, guard).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Driver for ContainerDriver {
    fn images(&self) -> &dyn ImageStore {
        self
    }

    fn backend_info(&self) -> BackendInfo {
        let rt = &self.runtime;
        BackendInfo {
            runtime: rt.kind.name().into(),
            runtime_version: rt.version.clone(),
            runtime_root: rt.root.clone(),
            cgroup_mode: match (rt.cgroup_mode, rt.cgroup_hybrid) {
                (CgroupMode::V2, _) => "v2".into(),
                (_, true) => "v1-hybrid".into(),
                _ => "v1".into(),
            },
            storage: format!("{:?}", self.storage.kind).to_lowercase(),
            idmapped_roots: self.storage.idmapped,
            root_disk: self.storage.root_disk().to_string(),
        }
    }

    /// Checks what a spec asks of this host (limits, security options,
    /// dedicated CPUs, block I/O, devices) before anything is created.
    fn check(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        spec.limits.validate()?;
        vif::check(&spec.vifs)?;
        check_guest_data(spec)?;
        let c = &self.cfg.corral;
        if spec.privileged && !c.allow_privileged {
            return Err(DriverError::Invalid(
                "privileged instances are not allowed on this host ([corral] allow_privileged = false)"
                    .into(),
            ));
        }
        if spec.nesting && !c.allow_nesting {
            return Err(DriverError::Invalid(
                "nesting is not allowed on this host ([corral] allow_nesting = false)".into(),
            ));
        }
        if spec.limits.cpu_dedicated {
            let Some(set) = &self.cfg.compute.cpu_dedicated_set else {
                return Err(DriverError::Invalid(
                    "dedicated CPUs (hw:cpu_policy=dedicated) need [compute] cpu_dedicated_set on this host"
                        .into(),
                ));
            };
            let want = spec.limits.cpus.unwrap_or(0.0) as usize;
            if want > set.len() {
                return Err(DriverError::Invalid(format!(
                    "{want} dedicated CPUs asked for, [compute] cpu_dedicated_set has {} ({set})",
                    set.len()
                )));
            }
        }
        if spec.limits.has_blkio() {
            block_device_of(&self.cfg.state_path, Path::new("/sys/dev/block")).map_err(|e| {
                DriverError::Invalid(format!("block I/O limits cannot be applied: {e}"))
            })?;
        }
        let taken = if spec.devices.is_empty() {
            BTreeSet::new()
        } else {
            self.held_claims(Some(&spec.uuid))?
        };
        for (name, dev) in &spec.devices {
            devices::validate_name(name).map_err(device_invalid)?;
            devices::resolve_on(name, dev, &self.allowlist, &self.host, &taken)
                .map_err(device_invalid)?;
        }
        Ok(())
    }

    /// The Placement resources of the exclusive and countable devices the
    /// host has and the allowlist allows (`CUSTOM_CORRAL_*`).
    /// Interfaces moved into instances are no longer on the host: they are
    /// counted from the instances' claims, so the total does not change
    /// while they are in use.
    fn device_inventory(&self) -> std::collections::BTreeMap<String, u32> {
        let mut inv = devices::inventory(&self.host, &self.allowlist);
        let (held, errors) = claims_in(&self.cfg.instances_dir(), None);
        for e in errors {
            tracing::error!(error = %e, "device claims unreadable");
        }
        for claim in held {
            let Some(ifname) = claim.strip_prefix("nic:") else {
                continue;
            };
            let on_host = self.host.sys.join("class/net").join(ifname).exists();
            if !on_host && self.allowlist.allows_str("nic", ifname) {
                *inv.entry(devices::NIC_CLASS.to_string()).or_insert(0) += 1;
            }
        }
        inv
    }

    /// Resolves a name or uuid to a uuid.
    async fn disk_usage(&self) -> Result<crate::storage::usage::DiskUsage, DriverError> {
        let (instances, state) = (self.cfg.instances_dir(), self.cfg.state_path.clone());
        blocking("disk usage", move || {
            Ok(crate::storage::usage::scan(&instances, &state))
        })
        .await
    }

    async fn resolve(&self, key: &str) -> Result<String, DriverError> {
        Ok(self.record(key).await?.uuid)
    }

    /// Every instance with its live state.
    async fn list(&self) -> Result<Vec<InstanceView>, DriverError> {
        let records = self.store.list_instances().await?;
        let images = self.store.list_images().await?;
        let mut out = Vec::with_capacity(records.len());
        for rec in records {
            out.push(self.view(rec, &images).await?);
        }
        Ok(out)
    }

    /// One instance by name or uuid.
    async fn get(&self, key: &str) -> Result<InstanceView, DriverError> {
        let rec = self.record(key).await?;
        let images = self.store.list_images().await?;
        self.view(rec, &images).await
    }

    async fn spawn(
        &self,
        spec: &InstanceSpec,
        start: bool,
        gate: Option<StartGate>,
    ) -> Result<(), DriverError> {
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        self.create(spec, start, gate).await
    }

    async fn attach_interface(&self, uuid: &str, vif: &VifSpec) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.attach_vif(&rec, vif).await
    }

    async fn detach_interface(&self, uuid: &str, vif_id: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.detach_vif(&rec, vif_id).await
    }

    async fn set_guest_data(
        &self,
        uuid: &str,
        config_drive: Option<super::ConfigDrive>,
        network_interfaces: Option<String>,
    ) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        let rec = self.record_by_uuid(uuid).await?;
        let mut spec = Self::spec_of(&rec)?;
        spec.config_drive = config_drive;
        spec.network_interfaces = network_interfaces;
        check_guest_data(&spec)?;
        let json = serde_json::to_string(&spec)
            .map_err(|e| DriverError::Invalid(format!("cannot encode spec: {e}")))?;
        self.store.set_spec(&rec.uuid, &json).await?;
        Ok(())
    }

    async fn destroy(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        if let Some(st) = self.runtime.state(&rec.uuid).await? {
            if st.status == Status::Paused {
                self.runtime.resume(&rec.uuid).await?;
            }
            if let Err(e) = self.detach_nics(&rec.uuid).await {
                tracing::warn!(uuid, error = %e, "host interfaces not brought back");
            }
            crash_point("delete.after_nics");
            if matches!(st.status, Status::Running | Status::Paused) {
                let _ = self.runtime.signal(&rec.uuid, libc::SIGKILL).await;
                self.runtime
                    .wait_stopped(&rec.uuid, Duration::from_secs(10))
                    .await?;
            }
        }
        crash_point("delete.after_kill");
        self.remove_everything(&rec.uuid).await
    }

    async fn power_on(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.boot(&rec).await
    }

    async fn power_off(
        &self,
        uuid: &str,
        timeout: Duration,
        force: bool,
    ) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.stop_container(&rec.uuid, timeout, force).await?;
        crash_point("stop.before_desired");
        self.store.set_desired(&rec.uuid, "stopped").await?;
        Ok(())
    }

    async fn reboot(&self, uuid: &str, hard: bool, timeout: Duration) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.stop_container(&rec.uuid, timeout, hard).await?;
        self.boot(&rec).await
    }

    async fn pause(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        match self.runtime.state(&rec.uuid).await?.map(|s| s.status) {
            Some(Status::Running) => self.runtime.pause(&rec.uuid).await?,
            Some(Status::Paused) => {}
            _ => {
                return Err(DriverError::Conflict(format!(
                    "instance {} is not running",
                    rec.name
                )))
            }
        }
        self.store.set_desired(&rec.uuid, "frozen").await?;
        Ok(())
    }

    async fn unpause(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        match self.runtime.state(&rec.uuid).await?.map(|s| s.status) {
            Some(Status::Paused) => self.runtime.resume(&rec.uuid).await?,
            Some(Status::Running) => {}
            _ => {
                return Err(DriverError::Conflict(format!(
                    "instance {} is not frozen",
                    rec.name
                )))
            }
        }
        self.store.set_desired(&rec.uuid, "running").await?;
        Ok(())
    }

    async fn suspend(&self, uuid: &str) -> Result<(), DriverError> {
        self.pause(uuid).await?;
        let rec = self.record_by_uuid(uuid).await?;
        self.store.set_desired(&rec.uuid, "suspended").await?;
        Ok(())
    }

    async fn resume(&self, uuid: &str) -> Result<(), DriverError> {
        self.unpause(uuid).await
    }

    async fn rebuild(
        &self,
        uuid: &str,
        image: &str,
        preserve_ephemeral: bool,
    ) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        let img = self.get_image(image).await?;
        let mut spec = Self::spec_of(&rec)?;
        let was_running = self.runtime.state(&rec.uuid).await?.is_some();
        self.stop_container(&rec.uuid, Duration::from_secs(0), true)
            .await?;
        let dir = self.instance_dir(&rec.uuid);
        self.storage.release(&dir).await?;
        if !preserve_ephemeral {
            // Made again, empty, by prepare.
            let d = dir.clone();
            blocking("ephemeral disk release", move || {
                Ok(ephemeral::release(&d)?)
            })
            .await?;
        }
        spec.image = img.fingerprint.clone();
        let json = serde_json::to_string(&spec)
            .map_err(|e| DriverError::Invalid(format!("cannot encode spec: {e}")))?;
        self.store.set_spec(&rec.uuid, &json).await?;
        self.store.set_image(&rec.uuid, &img.fingerprint).await?;
        let rec = self.record_by_uuid(uuid).await?;
        let args = self.init_args(&spec, &img)?;
        self.prepare(&rec, &spec, &img, &args, true).await?;
        if was_running || rec.desired == "running" {
            self.start_container(&rec.uuid, None).await?;
            self.store.set_desired(&rec.uuid, "running").await?;
        }
        Ok(())
    }

    async fn get_info(&self, uuid: &str) -> Result<InstanceInfo, DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        self.info_of(&rec).await
    }

    async fn console_output(
        &self,
        uuid: &str,
        lines: Option<usize>,
    ) -> Result<String, DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let path = self.console_path(&rec.uuid);
        // Only the tail: a log flooded between two rotations can be far
        // larger than its bound, and the answer must stay bounded.
        let max = self.cfg.corral.console_log_max_bytes;
        let mut text = fsutil::read_tail(&path.with_extension("log.1"), max)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match fsutil::read_tail(&path, max) {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        Ok(match lines {
            Some(n) => tail_lines(&text, n),
            None => text,
        })
    }

    async fn exec(
        &self,
        uuid: &str,
        argv: &[String],
        env: &[String],
        cwd: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        if argv.is_empty() {
            return Err(DriverError::Invalid("exec needs a command".into()));
        }
        let rec = self.record_by_uuid(uuid).await?;
        match self.runtime.state(&rec.uuid).await?.map(|s| s.status) {
            Some(Status::Running) => {}
            Some(Status::Paused) => {
                return Err(DriverError::Conflict(format!(
                    "instance {} is frozen",
                    rec.name
                )))
            }
            _ => {
                return Err(DriverError::Conflict(format!(
                    "instance {} is not running",
                    rec.name
                )))
            }
        }
        let mut full_env = vec![DEFAULT_PATH.to_string(), "HOME=/root".to_string()];
        full_env.extend(env.iter().cloned());
        Ok(self
            .runtime
            .exec(&rec.uuid, argv, &full_env, cwd, timeout)
            .await?)
    }

    async fn list_instances(&self) -> Result<Vec<String>, DriverError> {
        Ok(self
            .store
            .list_instances()
            .await?
            .into_iter()
            .map(|r| r.uuid)
            .collect())
    }

    async fn snapshot_create(&self, uuid: &str, name: &str) -> Result<SnapshotMade, DriverError> {
        self.take_snapshot(uuid, name).await
    }

    async fn snapshot_list(&self, uuid: &str) -> Result<Vec<SnapshotRecord>, DriverError> {
        self.list_snapshots(uuid).await
    }

    async fn snapshot_get(&self, uuid: &str, name: &str) -> Result<SnapshotRecord, DriverError> {
        self.get_snapshot(uuid, name).await
    }

    async fn snapshot_restore(&self, uuid: &str, name: &str) -> Result<(), DriverError> {
        self.restore_snapshot(uuid, name).await
    }

    async fn snapshot_delete(&self, uuid: &str, name: &str) -> Result<(), DriverError> {
        self.delete_snapshot(uuid, name).await
    }

    async fn snapshot_export(
        &self,
        uuid: &str,
        name: &str,
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<u64, DriverError> {
        self.export_snapshot(uuid, name, false, out).await
    }

    async fn snapshot_export_len(&self, uuid: &str, name: &str) -> Result<u64, DriverError> {
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let out = Box::new(ByteCounter(counter.clone()));
        self.export_snapshot(uuid, name, true, out).await?;
        Ok(counter.load(std::sync::atomic::Ordering::SeqCst))
    }

    async fn rescue(
        &self,
        uuid: &str,
        image: &str,
        drive: Option<super::ConfigDrive>,
    ) -> Result<(), DriverError> {
        self.start_rescue(uuid, image, drive).await
    }

    async fn unrescue(&self, uuid: &str) -> Result<(), DriverError> {
        self.end_rescue(uuid).await
    }

    async fn is_rescued(&self, uuid: &str) -> bool {
        self.rescue_image(uuid).is_some()
    }

    async fn publish(&self, uuid: &str, alias: Option<&str>) -> Result<ImageRecord, DriverError> {
        self.publish_instance(uuid, alias).await
    }
}

/// A writer that only counts what it is given.
struct ByteCounter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl std::io::Write for ByteCounter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "web-1", "Box2"] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "1abc",
            "-a",
            "a-",
            "a_b",
            "a.b",
            &"x".repeat(64),
            "../x",
            // A UUID-shaped name would be taken for another instance's uuid.
            "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(super::super::is_uuid(
            "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
        ));
        for not in [
            "aaaaaaaabbbb4ccc8dddeeeeeeeeeeee",
            "nova-x",
            "abcdéf12-0000",
        ] {
            assert!(!super::super::is_uuid(not), "{not}");
        }
        validate_alias("busybox").unwrap();
        validate_alias("debian/12").unwrap();
        assert!(validate_alias("../x").is_err());
        assert!(validate_alias("a b").is_err());
    }

    #[test]
    fn block_device_of_a_path() {
        // A fake /sys/dev/block where the path's device is a partition.
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(dir.path()).unwrap().dev();
        let (ma, mi) = (libc::major(dev), libc::minor(dev));
        let sys = dir.path().join("sys");
        let disk = sys.join("devices/vda");
        std::fs::create_dir_all(disk.join("vda1")).unwrap();
        std::fs::write(disk.join("dev"), "254:0\n").unwrap();
        std::fs::write(disk.join("vda1/partition"), "1\n").unwrap();
        std::fs::create_dir_all(sys.join("block")).unwrap();
        std::os::unix::fs::symlink(disk.join("vda1"), sys.join(format!("block/{ma}:{mi}")))
            .unwrap();
        assert_eq!(
            block_device_of(dir.path(), &sys.join("block")),
            Ok((254, 0))
        );
        // A whole disk is itself.
        std::fs::remove_file(disk.join("vda1/partition")).unwrap();
        assert_eq!(
            block_device_of(dir.path(), &sys.join("block")),
            Ok((ma as u64, mi as u64))
        );
        // No block device.
        assert!(block_device_of(dir.path(), &dir.path().join("none")).is_err());
    }

    #[test]
    fn corrupt_claims_are_reported_never_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let inst = |u: &str| {
            let d = dir.path().join(u);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        fsutil::write_atomic(
            &inst("a").join(CLAIMS_FILE),
            br#"["gpu:0000:01:00.0"]"#,
            0o600,
        )
        .unwrap();
        inst("nodevices");
        // A claims file cut short by a crash (the old, non-atomic write).
        std::fs::write(inst("b").join(CLAIMS_FILE), br#"["nic:en"#).unwrap();
        std::fs::write(inst("c").join(CLAIMS_FILE), b"").unwrap();
        let (held, errors) = claims_in(dir.path(), None);
        assert_eq!(held, BTreeSet::from(["gpu:0000:01:00.0".to_string()]));
        let mut bad: Vec<_> = errors.iter().map(|e| e.instance.as_str()).collect();
        bad.sort();
        assert_eq!(bad, ["b", "c"]);
        assert!(errors[0].to_string().contains("count as held"));
        let (_, errors) = claims_in(dir.path(), Some("b"));
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 5), "a\nb\nc\n");
        assert_eq!(tail_lines("", 3), "");
    }
}
