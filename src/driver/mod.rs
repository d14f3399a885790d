//! THE SEAM: corral's own description of an instance (`InstanceSpec`) and the
//! operations every frontend (REST API, Nova compute manager) drives through
//! the `Driver` trait. The container driver implements it over the runtime,
//! storage, image cache and store.

pub mod configdrive;
pub mod container;
pub mod extra_specs;
pub mod nic;
pub mod pci;
pub mod sysinit;
pub mod vif;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use configdrive::ConfigDrive;
pub use container::{validate_name, validate_snapshot_name, ContainerDriver};

use crate::image::ImageError;
use crate::runtime::{ExecOutput, RuntimeError};
use crate::storage::StorageError;
use crate::store::{ImageRecord, SnapshotRecord, StoreError};

/// Errors of driver operations. Frontends map each variant to their wire once.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("instance {0} not found")]
    NotFound(String),
    #[error("image {0} not found")]
    ImageNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the OCI runtime is not available: {0}")]
    RuntimeUnavailable(#[source] RuntimeError),
    #[error("runtime failure")]
    Runtime(#[source] RuntimeError),
    #[error("storage failure")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("store failure")]
    Store(#[source] StoreError),
    #[error("device setup failed")]
    Device(#[source] crate::devices::DeviceError),
    #[error(transparent)]
    Nic(#[from] nic::NicError),
    #[error(transparent)]
    Vif(#[from] crate::netdev::NetdevError),
    #[error("{path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `s` is a UUID in its hyphenated form (`8-4-4-4-12` hex digits),
/// the only form instance uuids take: Nova's, and those corral makes.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

impl From<RuntimeError> for DriverError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Missing(_) | RuntimeError::NotFound => DriverError::RuntimeUnavailable(e),
            other => DriverError::Runtime(other),
        }
    }
}

impl From<StoreError> for DriverError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { kind, name } => {
                DriverError::Conflict(format!("{kind} {name} already exists"))
            }
            StoreError::IdRangesExhausted(_) => DriverError::Conflict(e.to_string()),
            other => DriverError::Store(other),
        }
    }
}

/// Compute limits of one instance. `None` means unlimited (or the default).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// A hard cap in CPUs (CFS quota = cpus x period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes; the configured default applies when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Swap on top of `memory_bytes` (memory+swap limit = memory + swap; 0: no
    /// swap). Applied only where the host accounts swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<u64>,
    /// `hw:cpu_policy=dedicated`: `cpus` exclusive host CPUs from
    /// `[compute] cpu_dedicated_set`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu_dedicated: bool,
    /// The size of the instance's writable root (Nova's `root_gb`, `corral
    /// launch --disk`): what it writes past this fails with ENOSPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk_bytes: Option<u64>,
    /// The size of the instance's ephemeral disk (Nova's `ephemeral_gb`,
    /// `corral launch --ephemeral`), mounted at `/mnt` in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_bytes: Option<u64>,
    /// The ephemeral disk's filesystem (default ext4); only with
    /// `ephemeral_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_format: Option<String>,
    /// Block I/O throttles on the device holding the instance's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bytes_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_iops_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_iops_sec: Option<u64>,
    /// Rate limits on the instance's NICs (`quota:vif_*`), in kilobytes per
    /// second (average) and kilobytes (burst), as Nova's flavors give them.
    /// Inbound: traffic to the instance; outbound: traffic it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vif_inbound_average: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vif_inbound_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vif_outbound_average: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vif_outbound_burst: Option<u64>,
}

/// The filesystem of an ephemeral disk nobody named one for.
pub use crate::storage::ephemeral::DEFAULT_FORMAT as DEFAULT_EPHEMERAL_FORMAT;

/// The default CFS period.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Below this, a container cannot even start its init.
pub const MIN_MEMORY_BYTES: u64 = 8 << 20;

impl Limits {
    /// Checks the values before anything is created.
    pub fn validate(&self) -> Result<(), DriverError> {
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0 && c <= 4096.0) {
                return Err(DriverError::Invalid(format!(
                    "cpus must be a number above 0 and at most 4096, got {c}"
                )));
            }
        }
        if let Some(s) = self.cpu_shares {
            if !(2..=262_144).contains(&s) {
                return Err(DriverError::Invalid(format!(
                    "cpu shares must be between 2 and 262144, got {s}"
                )));
            }
        }
        if let Some(p) = self.cpu_period_us {
            if !(1_000..=1_000_000).contains(&p) {
                return Err(DriverError::Invalid(format!(
                    "cpu period must be between 1000 and 1000000 us, got {p}"
                )));
            }
        }
        if let Some(q) = self.cpu_quota_us {
            if q != -1 && q < 1_000 {
                return Err(DriverError::Invalid(format!(
                    "cpu quota must be -1 (unlimited) or at least 1000 us, got {q}"
                )));
            }
        }
        if let Some(d) = self.root_disk_bytes {
            if !(crate::storage::MIN_DISK_BYTES..=crate::storage::MAX_DISK_BYTES).contains(&d) {
                return Err(DriverError::Invalid(format!(
                    "a root disk must be between {} MiB and {} TiB, got {d} bytes",
                    crate::storage::MIN_DISK_BYTES >> 20,
                    crate::storage::MAX_DISK_BYTES >> 40
                )));
            }
        }
        if let Some(d) = self.ephemeral_bytes {
            use crate::storage::ephemeral::{MAX_BYTES, MIN_BYTES};
            if !(MIN_BYTES..=MAX_BYTES).contains(&d) {
                return Err(DriverError::Invalid(format!(
                    "an ephemeral disk must be between {} MiB and {} TiB, got {d} bytes",
                    MIN_BYTES >> 20,
                    MAX_BYTES >> 40
                )));
            }
        }
        if let Some(f) = &self.ephemeral_format {
            if self.ephemeral_bytes.is_none() {
                return Err(DriverError::Invalid(
                    "an ephemeral format needs an ephemeral disk size".into(),
                ));
            }
            crate::storage::ephemeral::check_format(f)
                .map_err(|e| DriverError::Invalid(e.to_string()))?;
        }
        if let Some(m) = self.memory_bytes {
            if m < MIN_MEMORY_BYTES {
                return Err(DriverError::Invalid(format!(
                    "memory limit must be at least 8MiB, got {m} bytes"
                )));
            }
            if m > i64::MAX as u64 {
                return Err(DriverError::Invalid("memory limit is too large".into()));
            }
        }
        if let Some(p) = self.pids {
            if p == 0 || p > i64::MAX as u64 {
                return Err(DriverError::Invalid(format!(
                    "process limit must be at least 1, got {p}"
                )));
            }
        }
        if let Some(s) = self.swap_bytes {
            if self.memory_bytes.is_none() {
                return Err(DriverError::Invalid(
                    "swap needs a memory limit (memory + swap is what is limited)".into(),
                ));
            }
            if s > (i64::MAX as u64) / 2 {
                return Err(DriverError::Invalid("swap limit is too large".into()));
            }
        }
        if self.cpu_dedicated {
            match self.cpus {
                Some(c) if c >= 1.0 && c.fract() == 0.0 => {}
                _ => {
                    return Err(DriverError::Invalid(
                        "dedicated CPUs need a whole number of cpus (at least 1)".into(),
                    ))
                }
            }
        }
        for (what, v) in [
            ("disk read bytes/s", self.disk_read_bytes_sec),
            ("disk write bytes/s", self.disk_write_bytes_sec),
            ("disk read iops", self.disk_read_iops_sec),
            ("disk write iops", self.disk_write_iops_sec),
        ] {
            if let Some(v) = v {
                if v == 0 || v > i64::MAX as u64 {
                    return Err(DriverError::Invalid(format!(
                        "{what} limit must be at least 1, got {v}"
                    )));
                }
            }
        }
        for (what, avg, burst) in [
            ("inbound", self.vif_inbound_average, self.vif_inbound_burst),
            (
                "outbound",
                self.vif_outbound_average,
                self.vif_outbound_burst,
            ),
        ] {
            if avg.is_some_and(|v| v == 0 || v > u32::MAX as u64)
                || burst.is_some_and(|v| v == 0 || v > u32::MAX as u64)
            {
                return Err(DriverError::Invalid(format!(
                    "NIC {what} rate limit out of range (1 to {} KB/s)",
                    u32::MAX
                )));
            }
            if burst.is_some() && avg.is_none() {
                return Err(DriverError::Invalid(format!(
                    "NIC {what} burst needs an {what} average"
                )));
            }
        }
        Ok(())
    }

    /// Whether any NIC rate limit is set.
    pub fn has_vif_limits(&self) -> bool {
        self.vif_inbound_average.is_some() || self.vif_outbound_average.is_some()
    }

    /// Whether any block I/O throttle is set.
    pub fn has_blkio(&self) -> bool {
        self.disk_read_bytes_sec.is_some()
            || self.disk_write_bytes_sec.is_some()
            || self.disk_read_iops_sec.is_some()
            || self.disk_write_iops_sec.is_some()
    }

    /// (quota, period) in microseconds as the runtime applies them.
    pub fn cfs(&self) -> (Option<i64>, Option<u64>) {
        let period = self.cpu_period_us.unwrap_or(CPU_PERIOD_US);
        let quota = match (self.cpu_quota_us, self.cpus) {
            (Some(q), _) => Some(q),
            (None, Some(c)) => Some((c * period as f64).round() as i64),
            (None, None) => None,
        };
        let period = (quota.is_some() || self.cpu_period_us.is_some()).then_some(period);
        (quota, period)
    }
}

/// corral's description of one instance, built by a frontend.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceSpec {
    pub uuid: String,
    pub name: String,
    /// Image alias or fingerprint, as the caller named it.
    pub image: String,
    #[serde(default)]
    pub limits: Limits,
    /// No user namespace: container root is host root.
    #[serde(default)]
    pub privileged: bool,
    /// Nested containers: /proc and /sys fully visible, so the instance can
    /// mount its own (LXD's `security.nesting`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nesting: bool,
    /// Host devices and paths, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: BTreeMap<String, crate::devices::DeviceConfig>,
    /// The exclusive host CPUs of a dedicated instance: chosen by the driver
    /// when it creates the instance (whatever a frontend puts here is replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_cpus: Option<crate::config::CpuSet>,
    /// Overrides the image's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// The container's host name when it differs from `name` (Nova instances are
    /// stored under their uuid but named after the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Host PCI devices given to the instance (`0000:00:05.0`), claimed by
    /// Nova's PCI tracker (`pci_passthrough:alias`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci_devices: Vec<String>,
    /// Virtual interfaces, in the order the instance sees them (`eth0`,
    /// `eth1`, ...): plugged after the runtime makes the network namespace
    /// and before init runs, on every start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vifs: Vec<VifSpec>,
    /// A config drive: its files are written into the instance directory on
    /// every start and bound read-only at [`configdrive::SEED_DIR`], owned by
    /// the container's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_drive: Option<ConfigDrive>,
    /// A Debian `/etc/network/interfaces` written into the root when it is
    /// made (create, rebuild), replacing the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interfaces: Option<String>,
}

/// One virtual interface of an instance: a veth pair whose host end is
/// plugged into a switch, whose other end is the instance's `ethN`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VifSpec {
    /// The Neutron port id, or corral's own id of a standalone interface:
    /// the host end is named `tap` + its first 11 characters, as Nova names
    /// tap devices.
    pub id: String,
    /// MAC address of the instance's end (`fa:16:3e:..`).
    pub mac: String,
    /// MTU of both ends; None leaves the kernel's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Name inside the instance; None: `eth<position>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_name: Option<String>,
    /// Where the host end goes.
    pub plug: VifPlug,
}

/// Where the host end of a virtual interface is plugged (os-vif's plugins).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum VifPlug {
    /// A Linux bridge (`vif_type` `bridge`, corral's standalone networks).
    Bridge { bridge: String },
    /// A port on an Open vSwitch bridge (`vif_type` `ovs`), with the
    /// `external_ids` the agents look for; `hybrid` puts a `qbr` Linux
    /// bridge between (`ovs_hybrid_plug`).
    Ovs {
        bridge: String,
        #[serde(default)]
        hybrid: bool,
        /// `iface-id`: the Neutron port id.
        iface_id: String,
        /// `vm-uuid`: the instance uuid.
        vm_uuid: String,
    },
    /// A bare host end, left for the network backend to wire (`vif_type` `tap`).
    Tap,
}

/// Awaited by the driver between plugging a new instance's interfaces and
/// starting its init: Nova's wait for `network-vif-plugged`.
pub type StartGate =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DriverError>> + Send>>;

/// Nova's power states (`nova/compute/power_state.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    NoState = 0,
    Running = 1,
    Paused = 3,
    Shutdown = 4,
    Crashed = 6,
    Suspended = 7,
}

/// What the host knows of an instance right now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceInfo {
    pub power_state: PowerState,
    /// Running, Stopped or Frozen (LXD's words).
    pub status: &'static str,
    pub pid: Option<i32>,
    pub stats: Option<crate::runtime::cgroups::Stats>,
}

/// One instance as the host sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceView {
    pub uuid: String,
    pub name: String,
    pub image: String,
    pub image_alias: Option<String>,
    pub spec: InstanceSpec,
    pub idmap: Option<crate::runtime::IdMap>,
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

/// The backends the driver picked at start-up, as frontends report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// The OCI runtime's name (`runc`, `crun`).
    pub runtime: String,
    pub runtime_version: String,
    /// The runtime's state directory.
    pub runtime_root: PathBuf,
    /// `v2`, `v1` or `v1-hybrid`.
    pub cgroup_mode: String,
    /// The storage pool kind, lowercase.
    pub storage: String,
    /// Unprivileged overlay roots sit on idmapped mounts of the image.
    pub idmapped_roots: bool,
    /// How root disk sizes are enforced (`project_quota`, `loop_file`,
    /// `qgroup`, `none`).
    pub root_disk: String,
}

/// The image cache as frontends use it: imports, listing, removal.
#[async_trait::async_trait]
pub trait ImageStore: Send + Sync {
    /// Imports an image file (already on disk) under an optional alias: a
    /// root tarball, squashfs, raw or qcow2 disk image, told by content and
    /// checked against `declared` when the uploader said what it is.
    async fn import_image(
        &self,
        archive: &Path,
        alias: Option<&str>,
        declared: Option<crate::image::format::Declared>,
    ) -> Result<ImageRecord, DriverError>;
    /// Imports as [`ImageStore::import_image`] does, keeping `given`
    /// properties (only `stop_signal`, see [`sysinit`]) beside what is read
    /// from the root; a bad one refuses the import.
    async fn import_image_with(
        &self,
        archive: &Path,
        alias: Option<&str>,
        declared: Option<crate::image::format::Declared>,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ImageRecord, DriverError> {
        if !given.is_empty() {
            return Err(DriverError::Invalid(
                "this image store keeps no given properties".into(),
            ));
        }
        self.import_image(archive, alias, declared).await
    }
    /// A path for an upload in progress (removed by the caller).
    fn image_upload_path(&self) -> PathBuf;
    async fn list_images(&self) -> Result<Vec<ImageRecord>, DriverError>;
    /// One image by alias or fingerprint.
    async fn get_image(&self, key: &str) -> Result<ImageRecord, DriverError>;
    /// Deletes an image no instance uses and no launch is using.
    async fn delete_image(&self, key: &str) -> Result<(), DriverError>;
}

/// A snapshot just taken.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotMade {
    pub snapshot: SnapshotRecord,
    /// How long the instance was frozen while its root was captured; `None`
    /// when it was not running (nothing to freeze) or already frozen.
    pub pause: Option<Duration>,
}

/// The operations frontends drive. Identified by instance uuid.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// The image cache instances are created from.
    fn images(&self) -> &dyn ImageStore;
    /// The runtime, cgroup and storage backends in use.
    fn backend_info(&self) -> BackendInfo;
    /// Checks what a spec asks of this host (limits, security options,
    /// dedicated CPUs, block I/O, devices) before anything is created.
    fn check(&self, spec: &InstanceSpec) -> Result<(), DriverError>;
    /// The Placement resources of the exclusive and countable devices the
    /// host has and allows (`CUSTOM_CORRAL_*`), by resource class.
    fn device_inventory(&self) -> BTreeMap<String, u32>;
    /// What the instances' disks really take of the disk holding the state
    /// path (see `storage::usage`).
    async fn disk_usage(&self) -> Result<crate::storage::usage::DiskUsage, DriverError>;
    /// Resolves a name or uuid to a uuid.
    async fn resolve(&self, key: &str) -> Result<String, DriverError>;
    /// Every instance with its live state.
    async fn list(&self) -> Result<Vec<InstanceView>, DriverError>;
    /// One instance by name or uuid.
    async fn get(&self, key: &str) -> Result<InstanceView, DriverError>;
    /// Creates the instance (root, bundle, container) and starts it if asked;
    /// when it starts, `gate` is awaited after its interfaces are plugged and
    /// before its init runs (a gate's error fails and rolls back the spawn).
    async fn spawn(
        &self,
        spec: &InstanceSpec,
        start: bool,
        gate: Option<StartGate>,
    ) -> Result<(), DriverError>;
    /// Plugs one more interface into an instance, running or stopped (it is
    /// kept in the instance's spec and plugged on every start).
    async fn attach_interface(&self, uuid: &str, vif: &VifSpec) -> Result<(), DriverError>;
    /// Unplugs and forgets the interface `vif_id` of an instance.
    async fn detach_interface(&self, uuid: &str, vif_id: &str) -> Result<(), DriverError>;
    /// Replaces the config drive and network configuration kept in an
    /// instance's spec: the drive is written again at its next start, the
    /// network configuration into its next new root (rebuild).
    async fn set_guest_data(
        &self,
        uuid: &str,
        config_drive: Option<ConfigDrive>,
        network_interfaces: Option<String>,
    ) -> Result<(), DriverError>;
    /// Removes everything of the instance, running or not.
    async fn destroy(&self, uuid: &str) -> Result<(), DriverError>;
    async fn power_on(&self, uuid: &str) -> Result<(), DriverError>;
    /// Graceful stop (the stop signal, then a kill after `timeout`) or a kill.
    async fn power_off(
        &self,
        uuid: &str,
        timeout: Duration,
        force: bool,
    ) -> Result<(), DriverError>;
    async fn reboot(&self, uuid: &str, hard: bool, timeout: Duration) -> Result<(), DriverError>;
    /// Freezes every process of the instance (cgroup freezer).
    async fn pause(&self, uuid: &str) -> Result<(), DriverError>;
    async fn unpause(&self, uuid: &str) -> Result<(), DriverError>;
    /// Suspends the instance: frozen like a pause, reported as suspended.
    async fn suspend(&self, uuid: &str) -> Result<(), DriverError>;
    async fn resume(&self, uuid: &str) -> Result<(), DriverError>;
    /// A new root from `image` for the same instance (same uuid, limits, id
    /// range), started when it was running.
    /// `preserve_ephemeral`: the ephemeral disk is kept as it is, else made
    /// again, empty.
    async fn rebuild(
        &self,
        uuid: &str,
        image: &str,
        preserve_ephemeral: bool,
    ) -> Result<(), DriverError>;
    async fn get_info(&self, uuid: &str) -> Result<InstanceInfo, DriverError>;
    /// The power state alone (Nova's `get_info`), without the statistics
    /// that [`Driver::get_info`] adds: what the power sync reads for every
    /// instance of the host.
    async fn power_state(&self, uuid: &str) -> Result<PowerState, DriverError> {
        Ok(self.get_info(uuid).await?.power_state)
    }
    /// [`Driver::power_state`] of many instances at once, for the power
    /// sync's pass over the host. An instance that is unknown or whose state
    /// cannot be read is left out; an error means none could be read.
    async fn power_states(
        &self,
        uuids: &[String],
    ) -> Result<std::collections::HashMap<String, PowerState>, DriverError> {
        let mut out = std::collections::HashMap::with_capacity(uuids.len());
        for uuid in uuids {
            if let Ok(state) = self.power_state(uuid).await {
                out.insert(uuid.clone(), state);
            }
        }
        Ok(out)
    }
    /// The console log, or its last `lines` lines.
    async fn console_output(&self, uuid: &str, lines: Option<usize>)
        -> Result<String, DriverError>;
    async fn exec(
        &self,
        uuid: &str,
        argv: &[String],
        env: &[String],
        cwd: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError>;
    /// The uuids of every instance on this host.
    async fn list_instances(&self) -> Result<Vec<String>, DriverError>;
    /// Takes a consistent snapshot of the instance's root named `name`: a
    /// running instance is frozen while its writable state is copied, then
    /// thawed (also on error); its processes and init PID stay.
    async fn snapshot_create(&self, uuid: &str, name: &str) -> Result<SnapshotMade, DriverError>;
    /// The instance's snapshots, oldest first.
    async fn snapshot_list(&self, uuid: &str) -> Result<Vec<SnapshotRecord>, DriverError>;
    async fn snapshot_get(&self, uuid: &str, name: &str) -> Result<SnapshotRecord, DriverError>;
    /// Brings the instance's root back to the snapshot `name` (any of its
    /// snapshots, which all stay). A running or frozen instance is refused:
    /// it must be stopped first.
    async fn snapshot_restore(&self, uuid: &str, name: &str) -> Result<(), DriverError>;
    async fn snapshot_delete(&self, uuid: &str, name: &str) -> Result<(), DriverError>;
    /// Streams the snapshot `name` to `out` as a root tarball: the image's
    /// root with the snapshot over it, owners shifted back to the image's
    /// ids. Returns the bytes of file data written.
    async fn snapshot_export(
        &self,
        uuid: &str,
        name: &str,
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<u64, DriverError>;
    /// The exact length in bytes of what `snapshot_export` writes (for a
    /// `Content-Length` ahead of a streamed upload); no file data is read.
    async fn snapshot_export_len(&self, uuid: &str, name: &str) -> Result<u64, DriverError>;
    /// Makes an image of the instance as it is now (a consistent snapshot,
    /// exported and imported), as `lxc publish` does.
    async fn publish(&self, uuid: &str, alias: Option<&str>) -> Result<ImageRecord, DriverError>;
    /// Boots the stopped instance from the cached image `image` instead of
    /// its root (rescue): same container, id range and interfaces, its own
    /// root read-write at `/mnt`, and `drive` (the rescue's config drive)
    /// instead of its own when given. Kept across restarts until `unrescue`.
    async fn rescue(
        &self,
        uuid: &str,
        image: &str,
        drive: Option<ConfigDrive>,
    ) -> Result<(), DriverError> {
        let _ = (image, drive);
        Err(DriverError::Invalid(format!(
            "instance {uuid}: rescue is not supported by this driver"
        )))
    }
    /// Whether the instance is rescued (its rescue boot is set up).
    async fn is_rescued(&self, uuid: &str) -> bool {
        let _ = uuid;
        false
    }
    /// Ends a rescue (when there is one): the rescue root and everything
    /// written to it is removed and the instance boots from its own root.
    async fn unrescue(&self, uuid: &str) -> Result<(), DriverError> {
        Err(DriverError::Invalid(format!(
            "instance {uuid}: rescue is not supported by this driver"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfs_from_cpus_and_explicit_values() {
        let l = Limits {
            cpus: Some(1.5),
            ..Limits::default()
        };
        assert_eq!(l.cfs(), (Some(150_000), Some(100_000)));
        let l = Limits {
            cpus: Some(2.0),
            cpu_quota_us: Some(20_000),
            cpu_period_us: Some(50_000),
            ..Limits::default()
        };
        assert_eq!(l.cfs(), (Some(20_000), Some(50_000)));
        assert_eq!(Limits::default().cfs(), (None, None));
    }

    #[test]
    fn bad_limits_are_refused() {
        for l in [
            Limits {
                cpus: Some(0.0),
                ..Default::default()
            },
            Limits {
                cpus: Some(f64::NAN),
                ..Default::default()
            },
            Limits {
                memory_bytes: Some(1024),
                ..Default::default()
            },
            Limits {
                pids: Some(0),
                ..Default::default()
            },
            Limits {
                cpu_shares: Some(1),
                ..Default::default()
            },
            Limits {
                cpu_period_us: Some(10),
                ..Default::default()
            },
            Limits {
                cpu_quota_us: Some(5),
                ..Default::default()
            },
            Limits {
                swap_bytes: Some(0),
                ..Default::default()
            },
            Limits {
                cpu_dedicated: true,
                cpus: Some(1.5),
                ..Default::default()
            },
            Limits {
                cpu_dedicated: true,
                ..Default::default()
            },
            Limits {
                disk_write_iops_sec: Some(0),
                ..Default::default()
            },
            Limits {
                ephemeral_bytes: Some(1 << 20),
                ..Default::default()
            },
            Limits {
                ephemeral_format: Some("ext4".into()),
                ..Default::default()
            },
            Limits {
                ephemeral_bytes: Some(1 << 30),
                ephemeral_format: Some("vfat".into()),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(l.validate(), Err(DriverError::Invalid(_))),
                "{l:?}"
            );
        }
        Limits {
            cpus: Some(0.5),
            memory_bytes: Some(64 << 20),
            pids: Some(10),
            ephemeral_bytes: Some(1 << 30),
            ephemeral_format: Some("ext4".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
