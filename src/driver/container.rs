//! The container driver: instances as system containers run by an OCI runtime.
//!
//! This file holds the type (its runtime, storage, image cache and store handles), the
//! record and view helpers every operation shares, and the `Driver` implementation,
//! which is the seam's entry point. Each operation family lives in its own file:
//! `create` (claims, CPUs, the bundle, root, devices and guest data), `power` (boot,
//! start, stop, console relay), `net` (virtual interfaces and physical NICs),
//! `teardown` (delete, leftovers, log rotation, reconcile at start-up), `images` (the
//! image store), `rescue` and `snapshots`. The phase records in the store let a
//! restart finish or roll back whatever was in flight. The file is near 800 lines of
//! code because the `Driver` implementation is one block (a trait's implementation
//! cannot be split across files); its methods take the lock and hand over to the
//! families above.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod create;
mod images;
mod net;
mod power;
mod rescue;
mod teardown;

use create::check_guest_data;
pub use create::{block_device_of, claims_in, ClaimsError};
use images::{validate_alias, ByteCounter};
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
        let mut info = self.state_of(rec).await?;
        if info.pid.is_some() {
            info.stats = self.stats(&rec.uuid);
        }
        Ok(info)
    }

    /// [`Self::info_of`] without the cgroup statistics: the power state
    /// alone reads the runtime's state, the init process and the freezer,
    /// not a dozen cgroup files.
    async fn state_of(&self, rec: &InstanceRecord) -> Result<InstanceInfo, DriverError> {
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
        Ok(InstanceInfo {
            power_state,
            status,
            pid,
            stats: None,
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

    async fn store_spec(&self, uuid: &str, spec: &InstanceSpec) -> Result<(), DriverError> {
        let json = serde_json::to_string(spec)
            .map_err(|e| DriverError::Invalid(format!("cannot encode spec: {e}")))?;
        self.store.set_spec(uuid, &json).await?;
        Ok(())
    }
}

/// The host's online CPUs, when the kernel says.
fn online_cpus() -> Option<CpuSet> {
    crate::host::online_cpus(Path::new(crate::host::SYS))
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

    async fn power_state(&self, uuid: &str) -> Result<PowerState, DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        Ok(self.state_of(&rec).await?.power_state)
    }

    /// One read of the store for all of them: a query per instance is a
    /// round trip to the store's thread each, and at 1000 instances those
    /// switches cost more than the states themselves.
    async fn power_states(
        &self,
        uuids: &[String],
    ) -> Result<std::collections::HashMap<String, PowerState>, DriverError> {
        let wanted: std::collections::HashSet<&str> = uuids.iter().map(String::as_str).collect();
        let mut out = std::collections::HashMap::with_capacity(uuids.len());
        for rec in self.store.list_instances().await? {
            if !wanted.contains(rec.uuid.as_str()) {
                continue;
            }
            match self.state_of(&rec).await {
                Ok(info) => {
                    out.insert(rec.uuid, info.power_state);
                }
                Err(e) => tracing::debug!(uuid = %rec.uuid, error = %e, "power state unreadable"),
            }
        }
        Ok(out)
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
