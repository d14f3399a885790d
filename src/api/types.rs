//! Request and response bodies of the REST API, shared with the CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::devices::DeviceConfig;
pub use crate::driver::Limits;
use crate::runtime::IdMap;

/// LXD-shaped envelope of every response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default)]
    pub error_code: u16,
    #[serde(default)]
    pub error: String,
    pub metadata: Option<T>,
}

impl<T> Envelope<T> {
    pub fn sync(metadata: T) -> Envelope<T> {
        Envelope {
            kind: "sync".into(),
            status: "Success".into(),
            status_code: 200,
            operation: None,
            error_code: 0,
            error: String::new(),
            metadata: Some(metadata),
        }
    }
}

/// `GET /1.0`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub api_version: String,
    pub server: String,
    pub server_version: String,
    pub host: String,
    pub runtime: String,
    pub runtime_version: String,
    pub runtime_root: String,
    pub cgroup_mode: String,
    pub storage: String,
    /// Unprivileged overlay roots sit on idmapped mounts of the image (no
    /// id-shifted copies).
    pub idmapped_roots: bool,
    /// How root disk sizes are enforced.
    pub root_disk: String,
    pub state_path: String,
    pub reconcile: serde_json::Value,
}

/// Where a new instance's root comes from.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Source {
    #[serde(rename = "type", default = "image_source")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

fn image_source() -> String {
    "image".into()
}

fn yes() -> bool {
    true
}

/// `POST /1.0/instances`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesPost {
    pub name: String,
    pub source: Source,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub nesting: bool,
    /// Nova flavor extra specs (`quota:cpu_shares`, `hw:cpu_policy`, ...),
    /// mapped as for a Nova server; they win over `limits`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_specs: BTreeMap<String, String>,
    /// Devices by name, each `TYPE,KEY=VALUE,...`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Start once created (`launch`); false creates only (`init`).
    #[serde(default = "yes")]
    pub start: bool,
    /// The networks of the instance's interfaces, `eth0` first; absent: the
    /// host's default network; `["none"]`: no interface but loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
}

/// One network interface of an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceNic {
    /// The name inside (`eth0`).
    pub name: String,
    /// The standalone network it is plugged into, if it is one.
    pub network: Option<String>,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The address the network's DHCP server leased it, once it has one.
    pub ipv4: Option<String>,
}

/// Live state of an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceState {
    pub status: String,
    pub status_code: u16,
    pub power_state: String,
    pub pid: Option<i32>,
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub processes: Option<u64>,
    pub processes_limit: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// An instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub status_code: u16,
    pub created_at: String,
    pub image: String,
    pub image_alias: Option<String>,
    pub limits: Limits,
    pub privileged: bool,
    #[serde(default)]
    pub nesting: bool,
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceConfig>,
    #[serde(default)]
    pub pinned_cpus: Option<String>,
    pub command: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    pub idmap: Option<IdMap>,
    pub state: InstanceState,
    /// Network interfaces, in order.
    #[serde(default)]
    pub nics: Vec<InstanceNic>,
}

/// `PUT /1.0/instances/{name}/state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatePut {
    pub action: String,
    /// Seconds a graceful stop waits; -1 or absent: `[DEFAULT] shutdown_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub force: bool,
}

/// `POST /1.0/instances/{name}/exec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecPost {
    pub command: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Seconds; absent: `[corral] exec_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// Result of an exec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// An image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub fingerprint: String,
    pub alias: Option<String>,
    pub size: i64,
    pub created_at: String,
    pub properties: serde_json::Value,
    pub used_by: Vec<String>,
}

/// A background operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub class: String,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    pub status: String,
    pub status_code: u16,
    pub resources: BTreeMap<String, Vec<String>>,
    pub metadata: Option<serde_json::Value>,
    pub may_cancel: bool,
    pub err: String,
}

/// `POST /1.0/networks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksPost {
    pub name: String,
    /// The IPv4 subnet in CIDR form (`10.148.0.0/24`); the bridge takes its
    /// first address. Absent: a free `10.x.y.0/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Masquerade the subnet's traffic leaving the host.
    #[serde(default = "yes")]
    pub nat: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub description: String,
}

/// How a network is on the host right now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkState {
    /// Whether the bridge exists.
    pub bridge: bool,
    /// The network's dnsmasq, when it runs.
    pub dnsmasq_pid: Option<i32>,
    /// Whether its nftables table is loaded.
    pub nft_table: bool,
}

/// A network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// Always `bridge`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The subnet in CIDR form.
    pub subnet: String,
    /// The bridge's address with its prefix (`10.148.0.1/24`).
    pub ipv4_address: String,
    pub nat: bool,
    pub mtu: Option<u32>,
    pub description: String,
    pub created_at: String,
    /// `Created`, or `Errored` when a part is missing on the host.
    pub status: String,
    pub state: NetworkState,
    /// The instances plugged into it.
    pub used_by: Vec<String>,
}

/// `POST /1.0/instances/{name}/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsPost {
    pub name: String,
}

/// `PUT /1.0/instances/{name}`: only a restore (LXD's `{"restore": "snap0"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancePut {
    pub restore: String,
}

/// One snapshot of an instance's root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    pub created_at: String,
    /// Bytes it holds on disk.
    pub size: i64,
    /// Fingerprint of the image its root lies over.
    pub image: String,
    /// `overlay` (the instance's writable layer) or `copy` (its whole root).
    pub storage: String,
}

/// What a snapshot operation returns: the snapshot and how long the
/// instance was frozen for it (absent when it was not running).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotTaken {
    #[serde(flatten)]
    pub snapshot: Snapshot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<f64>,
}

/// `POST /1.0/instances/{name}/publish`: an image of the instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishPost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}
