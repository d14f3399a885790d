//! The container driver: instances as system containers run by an OCI runtime.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{nic, Driver, DriverError, InstanceInfo, InstanceSpec, PowerState};
use crate::config::{Config, CpuLimitMode, CpuSet};
use crate::devices::{self, Allowlist, HostPaths};
use crate::fsutil;
use crate::image::ImageCache;
use crate::runtime::bundle::{BindMount, Blkio, DeviceRule};
use crate::runtime::cgroups::{self, CgroupMode, CgroupPath};
use crate::runtime::{bundle, BundleConfig, ExecOutput, IdMap, Runtime, Status};
use crate::storage::Storage;
use crate::store::{ImageRecord, InstanceRecord, Phase, Store};

/// Default environment of an instance's init and of exec'd commands.
/// The exclusive devices an instance holds, in its directory.
const CLAIMS_FILE: &str = "claims.json";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One instance as the host sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceView {
    pub uuid: String,
    pub name: String,
    pub image: String,
    pub image_alias: Option<String>,
    pub spec: InstanceSpec,
    pub idmap: Option<IdMap>,
    pub info: InstanceInfo,
    pub created_at: String,
}

/// What start-up reconciliation found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReconcileReport {
    /// Instances whose container was gone or dead though they should run.
    pub stale: Vec<String>,
    /// Creates that were in flight at the last stop, rolled back.
    pub rolled_back: Vec<String>,
    /// Deletes that were in flight at the last stop, finished.
    pub finished_deletes: Vec<String>,
    /// Runtime containers under corral's runtime root with no store record.
    pub orphans: Vec<String>,
    /// Containers found running, as expected.
    pub running: usize,
}

/// The container driver and host services (images, listing) for frontends.
pub struct ContainerDriver {
    cfg: Arc<Config>,
    runtime: Runtime,
    storage: Storage,
    images: ImageCache,
    store: Store,
    cgroup_root: PathBuf,
    stop_signal: i32,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
/// with a letter and not ending with a dash.
pub fn validate_name(name: &str) -> Result<(), DriverError> {
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

impl ContainerDriver {
    pub fn new(
        cfg: Arc<Config>,
        runtime: Runtime,
        storage: Storage,
        store: Store,
        cgroup_root: PathBuf,
    ) -> Result<ContainerDriver, DriverError> {
        let stop_signal =
            crate::runtime::signal_number(&cfg.corral.stop_signal).ok_or_else(|| {
                DriverError::Invalid(format!("bad stop signal {}", cfg.corral.stop_signal))
            })?;
        let images = ImageCache::new(
            cfg.images_dir(),
            cfg.corral.max_image_bytes,
            cfg.corral.max_image_entries,
        );
        for dir in [
            cfg.state_path.clone(),
            cfg.images_dir(),
            cfg.instances_dir(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&dir)
                .map_err(io_err(&dir))?;
            // Containers' mapped roots must traverse down to their rootfs.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                .map_err(io_err(&dir))?;
        }
        let allowlist = Allowlist::parse(&cfg.corral.device_allowlist)
            .map_err(|e| DriverError::Invalid(format!("[corral] device_allowlist: {e}")))?;
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
            locks: Mutex::new(HashMap::new()),
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

    fn lock_for(&self, uuid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.locks.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(uuid.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    fn forget_lock(&self, uuid: &str) {
        if let Ok(mut map) = self.locks.lock() {
            map.remove(uuid);
        }
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

    async fn record(&self, key: &str) -> Result<InstanceRecord, DriverError> {
        self.store
            .find_instance(key)
            .await?
            .ok_or_else(|| DriverError::NotFound(key.to_string()))
    }

    fn spec_of(rec: &InstanceRecord) -> Result<InstanceSpec, DriverError> {
        serde_json::from_str(&rec.spec).map_err(|e| {
            DriverError::Invalid(format!("stored spec of {} is unreadable: {e}", rec.name))
        })
    }

    /// Resolves a name or uuid to a uuid.
    pub async fn resolve(&self, key: &str) -> Result<String, DriverError> {
        Ok(self.record(key).await?.uuid)
    }

    // ---- images ------------------------------------------------------------

    /// Imports a root tarball (already on disk) under an optional alias.
    pub async fn import_image(
        &self,
        archive: &Path,
        alias: Option<&str>,
    ) -> Result<ImageRecord, DriverError> {
        let _one_at_a_time = self.import_lock.lock().await;
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
        let imported = self.images.import(archive).await?;
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
        tracing::info!(fingerprint = %rec.fingerprint, alias = ?rec.alias, files = imported.stats.files, "image imported");
        Ok(rec)
    }

    /// A path for an upload in progress (removed by the caller).
    pub fn image_upload_path(&self) -> PathBuf {
        self.images.upload_path()
    }

    pub async fn list_images(&self) -> Result<Vec<ImageRecord>, DriverError> {
        Ok(self.store.list_images().await?)
    }

    pub async fn get_image(&self, key: &str) -> Result<ImageRecord, DriverError> {
        self.store
            .find_image(key)
            .await?
            .ok_or_else(|| DriverError::ImageNotFound(key.to_string()))
    }

    /// Deletes an image no instance uses and no launch is using.
    pub async fn delete_image(&self, key: &str) -> Result<(), DriverError> {
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
        self.images.remove_files(&img.fingerprint, guard).await?;
        Ok(())
    }

    // ---- instances ---------------------------------------------------------

    /// Every instance with its live state.
    pub async fn list(&self) -> Result<Vec<InstanceView>, DriverError> {
        let records = self.store.list_instances().await?;
        let images = self.store.list_images().await?;
        let mut out = Vec::with_capacity(records.len());
        for rec in records {
            out.push(self.view(rec, &images).await?);
        }
        Ok(out)
    }

    /// One instance by name or uuid.
    pub async fn get(&self, key: &str) -> Result<InstanceView, DriverError> {
        let rec = self.record(key).await?;
        let images = self.store.list_images().await?;
        self.view(rec, &images).await
    }

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
    async fn create(&self, spec: &InstanceSpec, start: bool) -> Result<(), DriverError> {
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
        let result = async {
            self.prepare(&rec, &stored, &args).await?;
            if start {
                self.start_container(&rec.uuid).await?;
                self.store.set_desired(&rec.uuid, "running").await?;
            }
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

    /// Checks what a spec asks of this host (limits, security options,
    /// dedicated CPUs, block I/O, devices) before anything is created.
    pub fn check(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        spec.limits.validate()?;
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
        let taken = self.held_claims(Some(&spec.uuid));
        for (name, dev) in &spec.devices {
            devices::validate_name(name).map_err(device_invalid)?;
            devices::resolve_on(name, dev, &self.allowlist, &self.host, &taken)
                .map_err(device_invalid)?;
        }
        Ok(())
    }

    /// The devices instances hold exclusively (their `claims.json`), but
    /// for those of `except`.
    fn held_claims(&self, except: Option<&str>) -> BTreeSet<String> {
        let mut taken = BTreeSet::new();
        let Ok(rd) = std::fs::read_dir(self.cfg.instances_dir()) else {
            return taken;
        };
        for e in rd.flatten() {
            if except.is_some() && e.file_name().to_str() == except {
                continue;
            }
            if let Ok(bytes) = std::fs::read(e.path().join(CLAIMS_FILE)) {
                if let Ok(list) = serde_json::from_slice::<Vec<String>>(&bytes) {
                    taken.extend(list);
                }
            }
        }
        taken
    }

    /// The Placement resources of the exclusive and countable devices the
    /// host has and the allowlist allows (`CUSTOM_CORRAL_*`).
    /// Interfaces moved into instances are no longer on the host: they are
    /// counted from the instances' claims, so the total does not change
    /// while they are in use.
    pub fn device_inventory(&self) -> std::collections::BTreeMap<String, u32> {
        let mut inv = devices::inventory(&self.host, &self.allowlist);
        for claim in self.held_claims(None) {
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
    async fn prepare(
        &self,
        rec: &InstanceRecord,
        spec: &InstanceSpec,
        args: &[String],
    ) -> Result<(), DriverError> {
        let dir = self.instance_dir(&rec.uuid);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let idmap = self.idmap_of(rec);
        let _pin = self.images.pin(&rec.image).map_err(image_busy)?;
        let lower = match idmap {
            Some(m) => self.images.shifted_rootfs(&rec.image, m.host_base).await?,
            None => self.images.rootfs(&rec.image),
        };
        let rootfs = self
            .storage
            .prepare(&dir, &lower, self.images.copy_limits())
            .await?;
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
            let (major, minor) = block_device_of(&self.cfg.state_path, Path::new("/sys/dev/block"))
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
        let mut binds = Vec::new();
        let mut device_rules = Vec::new();
        let mut device_env = Vec::new();
        let root_id = idmap.map(|m| m.host_base).unwrap_or(0);
        {
            // One instance at a time picks among free GPUs and NICs.
            let _pick = self.cpu_alloc.lock().await;
            let taken = self.held_claims(Some(&rec.uuid));
            let mut claims = Vec::new();
            let mut nics = Vec::new();
            for (name, dev) in &spec.devices {
                let resolved = devices::resolve_on(name, dev, &self.allowlist, &self.host, &taken)
                    .map_err(device_invalid)?;
                if let Some(c) = resolved.claim() {
                    claims.push(c.to_string());
                }
                let set =
                    devices::setup_on(&dir, &resolved, root_id).map_err(DriverError::Device)?;
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
            std::fs::write(&claims_path, text).map_err(io_err(&claims_path))?;
            nic::save(&dir, &nics)?;
        }
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
        Ok(())
    }

    /// Root and bundle ready again (after a reboot of the host, too), then the
    /// container started: what power-on and reboot share.
    async fn boot(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let spec = Self::spec_of(rec)?;
        let image = self.get_image(&rec.image).await?;
        let args = self.init_args(&spec, &image)?;
        self.prepare(rec, &spec, &args).await?;
        self.start_container(&rec.uuid).await?;
        self.store.set_desired(&rec.uuid, "running").await?;
        Ok(())
    }

    async fn start_container(&self, uuid: &str) -> Result<(), DriverError> {
        let dir = self.instance_dir(uuid);
        if let Some(st) = self.runtime.state(uuid).await? {
            match st.status {
                Status::Running | Status::Paused => return Ok(()),
                Status::Created => {
                    self.runtime.start(uuid).await?;
                    return Ok(());
                }
                Status::Stopped | Status::Creating => self.runtime.delete(uuid, true).await?,
            }
        }
        self.runtime
            .create(uuid, &dir, &self.console_path(uuid))
            .await?;
        // Host interfaces go in before the init runs, so it finds them.
        if let Err(e) = self.attach_nics(uuid).await {
            let _ = self.runtime.delete(uuid, true).await;
            return Err(e);
        }
        if let Err(e) = self.runtime.start(uuid).await {
            let _ = self.detach_nics(uuid).await;
            let _ = self.runtime.delete(uuid, true).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn attach_nics(&self, uuid: &str) -> Result<(), DriverError> {
        let nics = nic::load(&self.instance_dir(uuid))?;
        if nics.is_empty() {
            return Ok(());
        }
        let limits = Self::spec_of(&self.record(uuid).await?)?.limits;
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
        tokio::task::spawn_blocking(move || {
            // One the kernel handed back under another name comes home first.
            nic::detach(None, &moved)?;
            nic::attach(pid, &moved, &limits)
        })
        .await
        .map_err(|e| DriverError::Invalid(format!("NIC attach task: {e}")))??;
        tracing::info!(uuid, count = nics.len(), "host interfaces moved in");
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
        if st.status == Status::Paused {
            self.runtime.resume(uuid).await?;
        }
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if matches!(st.status, Status::Running | Status::Paused) {
            let mut stopped = false;
            if !force {
                match self.runtime.signal(uuid, self.stop_signal).await {
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
        self.runtime.delete(uuid, true).await?;
        devices::release(&self.instance_dir(uuid)).map_err(DriverError::Device)?;
        Ok(())
    }

    /// Removes container, cgroups, root, files and the store record.
    async fn remove_everything(&self, uuid: &str) -> Result<(), DriverError> {
        self.store.set_phase(uuid, Phase::Deleting).await?;
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if self.runtime.state(uuid).await?.is_some() {
            self.runtime.delete(uuid, true).await?;
        }
        self.cleanup_cgroups(uuid);
        let dir = self.instance_dir(uuid);
        // Disks first: the tree removal below must never reach into them.
        devices::release(&dir).map_err(DriverError::Device)?;
        self.storage.release(&dir).await?;
        fsutil::remove_tree(&dir).map_err(io_err(&dir))?;
        self.store.delete_instance(uuid).await?;
        self.forget_lock(uuid);
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

    /// Whether anything of a uuid is left (for tests and the delete check).
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
                        Some(Status::Running) | Some(Status::Paused) => report.running += 1,
                        Some(_) => {
                            tracing::warn!(name = %rec.name, "container died while corral was down");
                            self.runtime.delete(&rec.uuid, true).await?;
                            if rec.desired != "stopped" {
                                report.stale.push(rec.name.clone());
                                self.store.set_desired(&rec.uuid, "stopped").await?;
                            }
                        }
                        None => {
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
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    CpuSet::parse(text.trim()).ok()
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
impl Driver for ContainerDriver {
    async fn spawn(&self, spec: &InstanceSpec, start: bool) -> Result<(), DriverError> {
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        self.create(spec, start).await
    }

    async fn destroy(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        if let Some(st) = self.runtime.state(&rec.uuid).await? {
            if st.status == Status::Paused {
                self.runtime.resume(&rec.uuid).await?;
            }
            if let Err(e) = self.detach_nics(&rec.uuid).await {
                tracing::warn!(uuid, error = %e, "host interfaces not brought back");
            }
            if matches!(st.status, Status::Running | Status::Paused) {
                let _ = self.runtime.signal(&rec.uuid, libc::SIGKILL).await;
                self.runtime
                    .wait_stopped(&rec.uuid, Duration::from_secs(10))
                    .await?;
            }
        }
        self.remove_everything(&rec.uuid).await
    }

    async fn power_on(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record(uuid).await?;
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
        let rec = self.record(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.stop_container(&rec.uuid, timeout, force).await?;
        self.store.set_desired(&rec.uuid, "stopped").await?;
        Ok(())
    }

    async fn reboot(&self, uuid: &str, hard: bool, timeout: Duration) -> Result<(), DriverError> {
        let rec = self.record(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.stop_container(&rec.uuid, timeout, hard).await?;
        self.boot(&rec).await
    }

    async fn pause(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record(uuid).await?;
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
        let rec = self.record(uuid).await?;
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
        let rec = self.record(uuid).await?;
        self.store.set_desired(&rec.uuid, "suspended").await?;
        Ok(())
    }

    async fn resume(&self, uuid: &str) -> Result<(), DriverError> {
        self.unpause(uuid).await
    }

    async fn rebuild(&self, uuid: &str, image: &str) -> Result<(), DriverError> {
        let rec = self.record(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        let img = self.get_image(image).await?;
        let mut spec = Self::spec_of(&rec)?;
        let was_running = self.runtime.state(&rec.uuid).await?.is_some();
        self.stop_container(&rec.uuid, Duration::from_secs(0), true)
            .await?;
        let dir = self.instance_dir(&rec.uuid);
        self.storage.release(&dir).await?;
        spec.image = img.fingerprint.clone();
        let json = serde_json::to_string(&spec)
            .map_err(|e| DriverError::Invalid(format!("cannot encode spec: {e}")))?;
        self.store.set_spec(&rec.uuid, &json).await?;
        self.store.set_image(&rec.uuid, &img.fingerprint).await?;
        let rec = self.record(uuid).await?;
        let args = self.init_args(&spec, &img)?;
        self.prepare(&rec, &spec, &args).await?;
        if was_running || rec.desired == "running" {
            self.start_container(&rec.uuid).await?;
            self.store.set_desired(&rec.uuid, "running").await?;
        }
        Ok(())
    }

    async fn get_info(&self, uuid: &str) -> Result<InstanceInfo, DriverError> {
        let rec = self.record(uuid).await?;
        self.info_of(&rec).await
    }

    async fn console_output(
        &self,
        uuid: &str,
        lines: Option<usize>,
    ) -> Result<String, DriverError> {
        let rec = self.record(uuid).await?;
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
        let rec = self.record(uuid).await?;
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
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
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
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 5), "a\nb\nc\n");
        assert_eq!(tail_lines("", 3), "");
    }
}
