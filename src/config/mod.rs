//! corral's configuration: nova.conf-style INI files, validated once at start-up
//! and passed down. Nova's option names are used where Nova has one; options
//! Nova has no name for live in the `[corral]` section.
//!
//! The typed root: options are parsed once into the leaves' own types
//! ([`RuntimeChoice`], [`StopSignal`], [`StorageChoice`], [`Allowlist`], the
//! PCI specs of [`crate::devices::pci`]), so a bad value fails start-up with
//! an error naming the option, and no leaf reads the configuration itself.

mod ini;
pub mod pci;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::devices::Allowlist;
use crate::runtime::{RuntimeChoice, StopSignal};
use crate::storage::quota::RootDiskChoice;
use crate::storage::{IdmapChoice, StorageChoice};
use crate::strutil::{parse_bool, parse_size};

pub use crate::cpuset::CpuSet;
pub use ini::Ini;
pub use pci::PciSection;

/// Errors reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {reason}")]
    Syntax {
        origin: String,
        line: usize,
        reason: String,
    },
    #[error("[{section}] {key} = {value:?}: {reason}")]
    Invalid {
        section: &'static str,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// How an instance's CPU count (`vcpus`) is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuLimitMode {
    /// A CFS quota of that many CPUs: never more, even on an idle host.
    Hard,
    /// Only a relative weight (1024 shares per CPU): for overcommit, an
    /// instance may use idle CPUs beyond its count.
    Shares,
}

/// The `[compute]` options corral reads (Nova's names).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ComputeSection {
    /// `[compute] cpu_dedicated_set`: host CPUs for `hw:cpu_policy=dedicated`.
    pub cpu_dedicated_set: Option<CpuSet>,
    /// `[compute] cpu_shared_set`: host CPUs every other instance runs on.
    pub cpu_shared_set: Option<CpuSet>,
}

/// The validated configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// `[DEFAULT] host`: this host's name (defaults to the kernel hostname).
    pub host: String,
    /// `[DEFAULT] state_path`: where corral keeps its store, images and instances.
    pub state_path: PathBuf,
    /// `[DEFAULT] shutdown_timeout`: seconds a graceful stop waits before killing.
    pub shutdown_timeout: u64,
    /// `[DEFAULT] debug`.
    pub debug: bool,
    pub corral: CorralConfig,
    /// `[compute]`.
    pub compute: ComputeSection,
    /// `[pci]`: PCI passthrough (Nova's options).
    pub pci: PciSection,
    /// The Nova compute service; present when `[DEFAULT] transport_url` is set.
    pub nova: Option<NovaConfig>,
}

/// Options of the Nova compute service (nova.conf names).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NovaConfig {
    /// `[DEFAULT] transport_url` (may hold a password: never logged).
    #[serde(skip)]
    pub transport_url: String,
    /// `[DEFAULT]` options the RPC layer reads (rpc_response_timeout, control_exchange ...).
    #[serde(skip)]
    pub default_section: std::collections::HashMap<String, String>,
    /// `[oslo_messaging_rabbit]`.
    #[serde(skip)]
    pub rabbit_section: std::collections::HashMap<String, String>,
    /// `[placement]` (keystoneauth options).
    #[serde(skip)]
    pub placement_section: std::collections::BTreeMap<String, String>,
    /// `[neutron]` (keystoneauth options and `ovs_bridge`); no `auth_type`: no Neutron.
    #[serde(skip)]
    pub neutron_section: std::collections::BTreeMap<String, String>,
    /// `[DEFAULT] vif_plugging_timeout`: seconds a build waits for
    /// `network-vif-plugged` (0: does not wait).
    pub vif_plugging_timeout: u64,
    /// `[DEFAULT] vif_plugging_is_fatal`: a build whose ports were not reported
    /// plugged in time fails.
    pub vif_plugging_is_fatal: bool,
    /// `[DEFAULT] report_interval`: seconds between heartbeats.
    pub report_interval: u64,
    /// `[DEFAULT] update_resources_interval` (0: 60 s).
    pub update_resources_interval: u64,
    /// `[DEFAULT] sync_power_state_interval` (negative: disabled).
    pub sync_power_state_interval: i64,
    /// `[DEFAULT] rpc_response_timeout`.
    pub rpc_response_timeout: u64,
    /// `[DEFAULT] shelved_offload_time`: seconds a shelved server keeps its
    /// container before it is offloaded (0: at once, -1: never).
    pub shelved_offload_time: i64,
    /// `[DEFAULT] shelved_poll_interval`: seconds between looks for shelved
    /// servers to offload (0 or negative: never).
    pub shelved_poll_interval: i64,
    pub cpu_allocation_ratio: Option<f64>,
    pub ram_allocation_ratio: Option<f64>,
    pub disk_allocation_ratio: Option<f64>,
    pub initial_cpu_allocation_ratio: f64,
    pub initial_ram_allocation_ratio: f64,
    pub initial_disk_allocation_ratio: f64,
    pub reserved_host_memory_mb: u64,
    pub reserved_host_disk_mb: u64,
    pub reserved_host_cpus: u64,
    /// `[DEFAULT] my_ip`.
    pub my_ip: String,
    /// `[glance] api_servers` (first) or `endpoint_override`.
    pub glance_endpoint: Option<String>,
    /// `[DEFAULT] max_concurrent_builds`.
    pub max_concurrent_builds: usize,
    /// `[image_cache] manager_interval` (seconds; 0 or negative: disabled).
    pub image_cache_interval: i64,
    /// `[image_cache] remove_unused_base_images`.
    pub remove_unused_base_images: bool,
    /// `[image_cache] remove_unused_original_minimum_age_seconds`.
    pub remove_unused_minimum_age: u64,
    /// `[DEFAULT] force_config_drive`: every new server gets a config drive.
    pub force_config_drive: bool,
    /// `[api] dhcp_domain`: appended to the hostname in the metadata (empty: none).
    pub dhcp_domain: String,
    /// `[corral] inject_network`: a new or rebuilt server's root gets the
    /// static network configuration as `/etc/network/interfaces`.
    pub inject_network: bool,
    /// `[DEFAULT] default_ephemeral_format`: the filesystem of an ephemeral
    /// disk whose block device mapping names none (unset: ext4).
    pub default_ephemeral_format: Option<String>,
}

/// The `[corral]` section.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorralConfig {
    pub oci_runtime: RuntimeChoice,
    pub runtime_root: PathBuf,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub default_pids_limit: u64,
    pub idmap_base: u32,
    pub idmap_size: u32,
    pub idmap_max_instances: u32,
    pub console_log_max_bytes: u64,
    pub console_log_check_interval: u64,
    pub storage: StorageChoice,
    pub idmapped_roots: IdmapChoice,
    /// How an overlay root's size is enforced.
    pub root_disk_limit: RootDiskChoice,
    pub init_command: Option<Vec<String>>,
    /// The signal a graceful stop sends first.
    pub stop_signal: StopSignal,
    pub max_image_bytes: u64,
    /// Most entries (files, directories, links) one image may hold.
    pub max_image_entries: u64,
    pub cgroup_parent: String,
    pub exec_timeout: u64,
    pub cpu_limit_mode: CpuLimitMode,
    /// Whether instances may ask for `privileged` (no user namespace).
    pub allow_privileged: bool,
    /// Whether instances may ask for `nesting` (mount proc/sys inside).
    pub allow_nesting: bool,
    /// `no_new_privileges` of every instance's processes.
    pub no_new_privileges: bool,
    /// `type:glob` patterns of the host devices and paths instances may get.
    pub device_allowlist: Allowlist,
    /// Where lxcfs keeps its files (`proc/meminfo` ...).
    pub lxcfs_path: PathBuf,
    /// The network a standalone host makes at start-up and launches
    /// instances on by default; None: no default network (`none`).
    pub default_network: Option<String>,
    /// The default network's subnet; None: 10.148.0.0/24 when free, else a
    /// free 10.x.y.0/24.
    pub default_network_subnet: Option<crate::network::Ipv4Cidr>,
}

/// The state path of the embedded default.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/corral";

/// Defaults of the paths each daemon needs for itself. With the default
/// state path they are the embedded default's (`/run/corral/corral.sock`,
/// `/run/corral/runc`, cgroup `corral`); a daemon given another state path
/// gets its own, so that two daemons with their own state paths never share
/// a socket, a runtime root or a cgroup: the socket in the state directory,
/// the runtime root and the cgroup parent named by a tag of the state path
/// (`/run/corral/<tag>/runc`, `corral-<tag>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerDaemon {
    pub socket: String,
    pub runtime_root: String,
    pub cgroup_parent: String,
}

impl PerDaemon {
    pub fn of(state_path: &Path) -> PerDaemon {
        if state_path == Path::new(DEFAULT_STATE_PATH) {
            return PerDaemon {
                socket: "/run/corral/corral.sock".into(),
                runtime_root: "/run/corral/runc".into(),
                cgroup_parent: "corral".into(),
            };
        }
        let tag = state_tag(state_path);
        PerDaemon {
            socket: state_path
                .join("corral.sock")
                .to_string_lossy()
                .into_owned(),
            runtime_root: format!("/run/corral/{tag}/runc"),
            cgroup_parent: format!("corral-{tag}"),
        }
    }
}

/// 12 hex digits of the SHA-256 of the state path: stable for one path,
/// distinct for two.
pub fn state_tag(state_path: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(state_path.as_os_str().as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Command-line overrides, applied after the files.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
}

impl Config {
    /// Reads the given files in order (later files win), applies the overrides
    /// and validates everything.
    pub fn load(files: &[PathBuf], overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut ini = Ini::default();
        for file in files {
            ini.merge_file(file)?;
        }
        Config::from_ini(&ini, overrides)
    }

    /// Builds the typed configuration from parsed INI options.
    pub fn from_ini(ini: &Ini, overrides: &Overrides) -> Result<Config, ConfigError> {
        let host = match ini.get("DEFAULT", "host") {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_string()),
        };
        let state_path = match &overrides.state_dir {
            Some(p) if p.is_relative() => std::env::current_dir()
                .map(|cwd| cwd.join(p))
                .unwrap_or_else(|_| p.clone()),
            Some(p) => p.clone(),
            None => abs_path(ini, "DEFAULT", "state_path", DEFAULT_STATE_PATH)?,
        };
        let paths = PerDaemon::of(&state_path);
        let corral = CorralConfig {
            oci_runtime: typed(ini, "corral", "oci_runtime", RuntimeChoice::Auto)?,
            runtime_root: abs_path(ini, "corral", "runtime_root", &paths.runtime_root)?,
            socket: match &overrides.socket {
                Some(p) => p.clone(),
                None => abs_path(ini, "corral", "socket", &paths.socket)?,
            },
            socket_group: get(ini, "corral", "socket_group").map(str::to_string),
            default_pids_limit: num(ini, "corral", "default_pids_limit", 1024u64)?,
            idmap_base: num(ini, "corral", "idmap_base", 1_000_000u32)?,
            idmap_size: num(ini, "corral", "idmap_size", 65536u32)?,
            idmap_max_instances: num(ini, "corral", "idmap_max_instances", 10_000u32)?,
            console_log_max_bytes: size(ini, "corral", "console_log_max_bytes", 1 << 20)?,
            console_log_check_interval: num(ini, "corral", "console_log_check_interval", 5u64)?,
            storage: typed(ini, "corral", "storage", StorageChoice::Auto)?,
            idmapped_roots: typed(ini, "corral", "idmapped_roots", IdmapChoice::Auto)?,
            root_disk_limit: typed(ini, "corral", "root_disk_limit", RootDiskChoice::Auto)?,
            init_command: get(ini, "corral", "init_command")
                .map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .filter(|c| !c.is_empty()),
            stop_signal: typed(ini, "corral", "stop_signal", StopSignal::default())?,
            max_image_bytes: size(ini, "corral", "max_image_bytes", 8 << 30)?,
            max_image_entries: num(ini, "corral", "max_image_entries", 1_000_000u64)?,
            cgroup_parent: get(ini, "corral", "cgroup_parent")
                .unwrap_or(paths.cgroup_parent.as_str())
                .to_string(),
            exec_timeout: num(ini, "corral", "exec_timeout", 300u64)?,
            cpu_limit_mode: match get(ini, "corral", "cpu_limit_mode").unwrap_or("hard") {
                "hard" => CpuLimitMode::Hard,
                "shares" => CpuLimitMode::Shares,
                other => {
                    return Err(invalid(
                        "corral",
                        "cpu_limit_mode",
                        other,
                        "must be hard or shares",
                    ))
                }
            },
            allow_privileged: boolean(ini, "corral", "allow_privileged", false)?,
            allow_nesting: boolean(ini, "corral", "allow_nesting", false)?,
            no_new_privileges: boolean(ini, "corral", "no_new_privileges", false)?,
            device_allowlist: device_allowlist(ini)?,
            lxcfs_path: abs_path(ini, "corral", "lxcfs_path", "/var/lib/lxcfs")?,
            default_network: match get(ini, "corral", "default_network").unwrap_or("corralbr0") {
                "" | "none" => None,
                name => {
                    crate::network::validate_name(name)
                        .map_err(|e| invalid("corral", "default_network", name, &e.to_string()))?;
                    Some(name.to_string())
                }
            },
            default_network_subnet: match get(ini, "corral", "default_network_subnet") {
                None | Some("") | Some("auto") => None,
                Some(v) => {
                    let c: crate::network::Ipv4Cidr = v
                        .parse()
                        .map_err(|r: String| invalid("corral", "default_network_subnet", v, &r))?;
                    c.usable()
                        .map_err(|r| invalid("corral", "default_network_subnet", v, &r))?;
                    Some(c)
                }
            },
        };
        let cpu_set = |key: &'static str| -> Result<Option<CpuSet>, ConfigError> {
            get(ini, "compute", key)
                .map(|v| CpuSet::parse(v).map_err(|r| invalid("compute", key, v, &r)))
                .transpose()
        };
        let compute = ComputeSection {
            cpu_dedicated_set: cpu_set("cpu_dedicated_set")?,
            cpu_shared_set: cpu_set("cpu_shared_set")?,
        };
        let nova = nova_config(ini)?;
        let config = Config {
            nova,
            host,
            state_path,
            shutdown_timeout: num(ini, "DEFAULT", "shutdown_timeout", 60u64)?,
            debug: boolean(ini, "DEFAULT", "debug", false)?,
            corral,
            compute,
            pci: PciSection::from_ini(ini)?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.corral;
        if c.idmap_size < 65536 {
            return Err(invalid(
                "corral",
                "idmap_size",
                &c.idmap_size.to_string(),
                "must be at least 65536 so a system container gets a full id range",
            ));
        }
        if c.idmap_base == 0 {
            return Err(invalid(
                "corral",
                "idmap_base",
                "0",
                "must be above 0: host ids from 0 would map the host's root",
            ));
        }
        let end =
            u64::from(c.idmap_base) + u64::from(c.idmap_size) * u64::from(c.idmap_max_instances);
        if end > u64::from(u32::MAX) {
            return Err(invalid(
                "corral",
                "idmap_max_instances",
                &c.idmap_max_instances.to_string(),
                "idmap_base + idmap_size * idmap_max_instances passes the 32-bit id space",
            ));
        }
        if c.default_pids_limit == 0 {
            return Err(invalid(
                "corral",
                "default_pids_limit",
                "0",
                "must be at least 1",
            ));
        }
        if c.cgroup_parent.is_empty() || c.cgroup_parent.contains("..") {
            return Err(invalid(
                "corral",
                "cgroup_parent",
                &c.cgroup_parent,
                "must be a relative cgroup name",
            ));
        }
        if let (Some(d), Some(s)) = (
            &self.compute.cpu_dedicated_set,
            &self.compute.cpu_shared_set,
        ) {
            if !d.is_disjoint(s) {
                return Err(invalid(
                    "compute",
                    "cpu_dedicated_set",
                    &d.to_string(),
                    "overlaps cpu_shared_set",
                ));
            }
        }
        Ok(())
    }

    /// The SQLite store file.
    pub fn store_path(&self) -> PathBuf {
        self.state_path.join("corral.sqlite")
    }
    /// The image cache.
    pub fn images_dir(&self) -> PathBuf {
        self.state_path.join("images")
    }
    /// Per-instance directories (bundle, root, console log).
    pub fn instances_dir(&self) -> PathBuf {
        self.state_path.join("instances")
    }
}

fn nova_config(ini: &Ini) -> Result<Option<NovaConfig>, ConfigError> {
    let Some(url) = get(ini, "DEFAULT", "transport_url") else {
        return Ok(None);
    };
    let section_map = |name: &str| -> std::collections::HashMap<String, String> {
        ini.section(name)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let ratio = |key: &'static str| -> Result<Option<f64>, ConfigError> {
        match get(ini, "DEFAULT", key) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(r) if r > 0.0 && r.is_finite() => Ok(Some(r)),
                _ => Err(invalid("DEFAULT", key, v, "must be a number above 0")),
            },
        }
    };
    let initial = |key: &'static str, default: f64| -> Result<f64, ConfigError> {
        Ok(ratio(key)?.unwrap_or(default))
    };
    let my_ip = get(ini, "DEFAULT", "my_ip")
        .unwrap_or("127.0.0.1")
        .to_string();
    let glance_endpoint = get(ini, "glance", "endpoint_override")
        .map(str::to_string)
        .or_else(|| {
            get(ini, "glance", "api_servers")
                .and_then(|s| s.split(',').map(str::trim).find(|s| !s.is_empty()))
                .map(str::to_string)
        });
    let sync: i64 = match get(ini, "DEFAULT", "sync_power_state_interval") {
        None => 600,
        Some(v) => v
            .parse()
            .map_err(|_| invalid("DEFAULT", "sync_power_state_interval", v, "not an integer"))?,
    };
    Ok(Some(NovaConfig {
        transport_url: url.to_string(),
        default_section: section_map("DEFAULT"),
        rabbit_section: section_map("oslo_messaging_rabbit"),
        placement_section: ini.section("placement").cloned().unwrap_or_default(),
        neutron_section: ini.section("neutron").cloned().unwrap_or_default(),
        vif_plugging_timeout: num(ini, "DEFAULT", "vif_plugging_timeout", 300u64)?,
        vif_plugging_is_fatal: boolean(ini, "DEFAULT", "vif_plugging_is_fatal", true)?,
        report_interval: num(ini, "DEFAULT", "report_interval", 10u64)?.max(1),
        update_resources_interval: match num(ini, "DEFAULT", "update_resources_interval", 0u64)? {
            0 => 60,
            n => n,
        },
        sync_power_state_interval: sync,
        rpc_response_timeout: num(ini, "DEFAULT", "rpc_response_timeout", 60u64)?,
        shelved_offload_time: match num(ini, "DEFAULT", "shelved_offload_time", 0i64)? {
            t if t < -1 => {
                let v = t.to_string();
                return Err(invalid("DEFAULT", "shelved_offload_time", &v, "below -1"));
            }
            t => t,
        },
        shelved_poll_interval: num(ini, "DEFAULT", "shelved_poll_interval", 3600i64)?,
        cpu_allocation_ratio: ratio("cpu_allocation_ratio")?,
        ram_allocation_ratio: ratio("ram_allocation_ratio")?,
        disk_allocation_ratio: ratio("disk_allocation_ratio")?,
        initial_cpu_allocation_ratio: initial("initial_cpu_allocation_ratio", 4.0)?,
        initial_ram_allocation_ratio: initial("initial_ram_allocation_ratio", 1.0)?,
        initial_disk_allocation_ratio: initial("initial_disk_allocation_ratio", 1.0)?,
        reserved_host_memory_mb: num(ini, "DEFAULT", "reserved_host_memory_mb", 512u64)?,
        reserved_host_disk_mb: num(ini, "DEFAULT", "reserved_host_disk_mb", 0u64)?,
        reserved_host_cpus: num(ini, "DEFAULT", "reserved_host_cpus", 0u64)?,
        my_ip,
        glance_endpoint,
        max_concurrent_builds: num(ini, "DEFAULT", "max_concurrent_builds", 10usize)?.max(1),
        image_cache_interval: match get(ini, "image_cache", "manager_interval") {
            None => 2400,
            Some(v) => v
                .parse()
                .map_err(|_| invalid("image_cache", "manager_interval", v, "not an integer"))?,
        },
        remove_unused_base_images: boolean(ini, "image_cache", "remove_unused_base_images", true)?,
        remove_unused_minimum_age: num(
            ini,
            "image_cache",
            "remove_unused_original_minimum_age_seconds",
            86400u64,
        )?,
        force_config_drive: boolean(ini, "DEFAULT", "force_config_drive", false)?,
        dhcp_domain: ini
            .get("api", "dhcp_domain")
            .unwrap_or("novalocal")
            .trim()
            .to_string(),
        inject_network: boolean(ini, "corral", "inject_network", false)?,
        default_ephemeral_format: match get(ini, "DEFAULT", "default_ephemeral_format") {
            None => None,
            Some(v) if crate::storage::ephemeral::FORMATS.contains(&v.trim()) => {
                Some(v.trim().to_string())
            }
            Some(v) => {
                return Err(invalid(
                    "DEFAULT",
                    "default_ephemeral_format",
                    v,
                    &format!(
                        "not a supported filesystem (one of {})",
                        crate::storage::ephemeral::FORMATS.join(", ")
                    ),
                ))
            }
        },
    }))
}

fn get<'a>(ini: &'a Ini, section: &str, key: &str) -> Option<&'a str> {
    ini.get(section, key).filter(|v| !v.is_empty())
}

fn invalid(section: &'static str, key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        section,
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn abs_path(
    ini: &Ini,
    section: &'static str,
    key: &'static str,
    default: &str,
) -> Result<PathBuf, ConfigError> {
    let value = get(ini, section, key).unwrap_or(default);
    if !Path::new(value).is_absolute() {
        return Err(invalid(section, key, value, "must be an absolute path"));
    }
    Ok(PathBuf::from(value))
}

fn num<T: FromStr + Copy>(
    ini: &Ini,
    section: &'static str,
    key: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(ini, section, key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| invalid(section, key, v, "not a valid non-negative integer")),
    }
}

/// An option parsed into a leaf's own type (`FromStr`, the error a reason).
fn typed<T: FromStr<Err = String>>(
    ini: &Ini,
    section: &'static str,
    key: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(ini, section, key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|reason: String| invalid(section, key, v, &reason)),
    }
}

/// `[corral] device_allowlist`: comma-separated patterns; an error names the
/// pattern at fault.
fn device_allowlist(ini: &Ini) -> Result<Allowlist, ConfigError> {
    let patterns: Vec<String> = get(ini, "corral", "device_allowlist")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for pattern in &patterns {
        if let Err(reason) = Allowlist::parse(std::slice::from_ref(pattern)) {
            return Err(invalid("corral", "device_allowlist", pattern, &reason));
        }
    }
    Allowlist::parse(&patterns)
        .map_err(|reason| invalid("corral", "device_allowlist", &patterns.join(", "), &reason))
}

fn size(
    ini: &Ini,
    section: &'static str,
    key: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match get(ini, section, key) {
        None => Ok(default),
        Some(v) => parse_size(v).map_err(|reason| invalid(section, key, v, &reason)),
    }
}

fn boolean(
    ini: &Ini,
    section: &'static str,
    key: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(ini, section, key) {
        None => Ok(default),
        Some(v) => parse_bool(v.trim()).ok_or_else(|| invalid(section, key, v, "not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shelve_options() {
        let nova = |extra: &str| {
            let mut ini = Ini::default();
            ini.merge_str(
                &format!("[DEFAULT]\ntransport_url = rabbit://g:g@127.0.0.1:5672/\n{extra}"),
                "t",
            )
            .unwrap();
            Config::from_ini(&ini, &Overrides::default()).map(|c| c.nova.unwrap())
        };
        let n = nova("").unwrap();
        assert_eq!((n.shelved_offload_time, n.shelved_poll_interval), (0, 3600));
        let n = nova("shelved_offload_time = -1\nshelved_poll_interval = 60\n").unwrap();
        assert_eq!((n.shelved_offload_time, n.shelved_poll_interval), (-1, 60));
        for bad in ["shelved_offload_time = -2", "shelved_offload_time = soon"] {
            assert!(nova(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_network_options() {
        let c = Config::from_ini(&Ini::default(), &Overrides::default()).unwrap();
        assert_eq!(c.corral.default_network.as_deref(), Some("corralbr0"));
        assert_eq!(c.corral.default_network_subnet, None);
        let mut ini = Ini::default();
        ini.merge_str(
            "[corral]\ndefault_network = none\ndefault_network_subnet = 10.201.3.0/24\n",
            "t",
        )
        .unwrap();
        let c = Config::from_ini(&ini, &Overrides::default()).unwrap();
        assert_eq!(c.corral.default_network, None);
        assert_eq!(
            c.corral.default_network_subnet.map(|s| s.to_string()),
            Some("10.201.3.0/24".into())
        );
        for bad in [
            "[corral]\ndefault_network = Bad_Name\n",
            "[corral]\ndefault_network_subnet = 10.201.3.1/24\n",
            "[corral]\ndefault_network_subnet = 10.201.3.0/31\n",
        ] {
            let mut ini = Ini::default();
            ini.merge_str(bad, "t").unwrap();
            assert!(
                Config::from_ini(&ini, &Overrides::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn default_ephemeral_format_is_checked() {
        let load = |extra: &str| {
            let mut ini = Ini::default();
            ini.merge_str(
                &format!("[DEFAULT]\ntransport_url = rabbit://g:g@127.0.0.1:5672/\n{extra}"),
                "t",
            )
            .unwrap();
            Config::from_ini(&ini, &Overrides::default())
                .map(|c| c.nova.and_then(|n| n.default_ephemeral_format))
        };
        assert_eq!(load("").unwrap(), None);
        assert_eq!(
            load("default_ephemeral_format = ext3\n")
                .unwrap()
                .as_deref(),
            Some("ext3")
        );
        let e = load("default_ephemeral_format = ntfs\n").unwrap_err();
        assert!(e.to_string().contains("default_ephemeral_format"), "{e}");
    }

    #[test]
    fn security_cpu_and_device_options() {
        let c = Config::from_ini(&Ini::default(), &Overrides::default()).unwrap();
        assert_eq!(c.corral.cpu_limit_mode, CpuLimitMode::Hard);
        // Privileged and nesting instances are an operator's explicit choice.
        assert!(!c.corral.allow_privileged && !c.corral.allow_nesting);
        assert!(!c.corral.no_new_privileges);
        assert!(c.corral.device_allowlist.is_empty());
        assert_eq!(c.compute.cpu_dedicated_set, None);
        let mut ini = Ini::default();
        ini.merge_str(
            "[corral]\ncpu_limit_mode = shares\nallow_privileged = no\nallow_nesting = yes\n\
             device_allowlist = unix-char:/dev/fuse, disk:/srv/*\n\
             [compute]\ncpu_dedicated_set = 2-5,^3\ncpu_shared_set = 0-1\n",
            "t",
        )
        .unwrap();
        let c = Config::from_ini(&ini, &Overrides::default()).unwrap();
        assert_eq!(c.corral.cpu_limit_mode, CpuLimitMode::Shares);
        assert!(!c.corral.allow_privileged);
        assert!(c.corral.allow_nesting);
        assert_eq!(c.corral.device_allowlist.len(), 2);
        assert_eq!(c.compute.cpu_dedicated_set.unwrap().to_string(), "2,4-5");
        for bad in [
            "[corral]\ncpu_limit_mode = soft\n",
            "[corral]\nallow_nesting = maybe\n",
            "[corral]\ndevice_allowlist = floppy:*\n",
            "[compute]\ncpu_dedicated_set = 1-x\n",
            "[compute]\ncpu_dedicated_set = 0-2\ncpu_shared_set = 2-3\n",
        ] {
            let mut ini = Ini::default();
            ini.merge_str(bad, "t").unwrap();
            assert!(
                Config::from_ini(&ini, &Overrides::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_are_the_embedded_default() {
        let c = Config::from_ini(&Ini::default(), &Overrides::default()).unwrap();
        assert_eq!(c.state_path, PathBuf::from("/var/lib/corral"));
        assert_eq!(c.corral.socket, PathBuf::from("/run/corral/corral.sock"));
        assert_eq!(c.corral.runtime_root, PathBuf::from("/run/corral/runc"));
        assert_eq!(c.corral.oci_runtime, RuntimeChoice::Auto);
        assert_eq!(c.corral.default_pids_limit, 1024);
    }

    #[test]
    fn per_daemon_paths_follow_the_state_path() {
        let load = |text: &str, state: Option<&str>| {
            let mut ini = Ini::default();
            ini.merge_str(text, "t").unwrap();
            let o = Overrides {
                state_dir: state.map(PathBuf::from),
                socket: None,
            };
            Config::from_ini(&ini, &o).unwrap()
        };
        // The default state path keeps the embedded default's paths, even
        // when named.
        let c = load("[DEFAULT]\nstate_path = /var/lib/corral\n", None);
        assert_eq!(c.corral.socket, PathBuf::from("/run/corral/corral.sock"));
        assert_eq!(c.corral.runtime_root, PathBuf::from("/run/corral/runc"));
        assert_eq!(c.corral.cgroup_parent, "corral");
        // Two hosts on one machine: nothing shared.
        let a = load("[DEFAULT]\nhost = a\nstate_path = /srv/corral-a\n", None);
        let b = load("[DEFAULT]\nhost = b\nstate_path = /srv/corral-b\n", None);
        assert_eq!(a.corral.socket, PathBuf::from("/srv/corral-a/corral.sock"));
        let tag = state_tag(Path::new("/srv/corral-a"));
        assert_eq!(tag.len(), 12);
        assert_eq!(
            a.corral.runtime_root,
            PathBuf::from(format!("/run/corral/{tag}/runc"))
        );
        assert_eq!(a.corral.cgroup_parent, format!("corral-{tag}"));
        assert_ne!(a.corral.socket, b.corral.socket);
        assert_ne!(a.corral.runtime_root, b.corral.runtime_root);
        assert_ne!(a.corral.cgroup_parent, b.corral.cgroup_parent);
        // --state-dir counts as a state path; options set by hand still win.
        let c = load(
            "[corral]\nsocket = /tmp/s.sock\ncgroup_parent = mine\n",
            Some("/x"),
        );
        assert_eq!(c.corral.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(c.corral.cgroup_parent, "mine");
        assert_eq!(
            c.corral.runtime_root,
            PathBuf::from(format!("/run/corral/{}/runc", state_tag(Path::new("/x"))))
        );
    }

    #[test]
    fn overrides_and_validation() {
        let mut ini = Ini::default();
        ini.merge_str(
            "[DEFAULT]\nstate_path = /srv/c\n[corral]\noci_runtime = runc\nsocket = /tmp/s\n",
            "t",
        )
        .unwrap();
        let o = Overrides {
            state_dir: Some("/x".into()),
            socket: None,
        };
        let c = Config::from_ini(&ini, &o).unwrap();
        assert_eq!(c.state_path, PathBuf::from("/x"));
        assert_eq!(c.corral.socket, PathBuf::from("/tmp/s"));
        assert_eq!(c.corral.oci_runtime, RuntimeChoice::Runc);

        for bad in [
            "[corral]\noci_runtime = kata\n",
            "[corral]\nidmap_size = 1000\n",
            "[corral]\nidmap_base = 0\n",
            "[corral]\ndefault_pids_limit = many\n",
            "[corral]\nstop_signal = SIGNOPE\n",
            "[corral]\nruntime_root = relative/path\n",
            "[DEFAULT]\ndebug = maybe\n",
        ] {
            let mut ini = Ini::default();
            ini.merge_str(bad, "bad").unwrap();
            let err = Config::from_ini(&ini, &Overrides::default()).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn typed_options_name_the_option_at_fault() {
        let mut ini = Ini::default();
        ini.merge_str(
            "[corral]\noci_runtime = crun\nstorage = copy\nstop_signal = SIGPWR\n\
             device_allowlist = nic:crl*, usb:1D6B:*\n",
            "t",
        )
        .unwrap();
        let c = Config::from_ini(&ini, &Overrides::default()).unwrap();
        assert_eq!(c.corral.oci_runtime, RuntimeChoice::Crun);
        assert_eq!(c.corral.storage, StorageChoice::Copy);
        assert_eq!(c.corral.stop_signal.number(), libc::SIGPWR);
        assert_eq!(c.corral.stop_signal.to_string(), "SIGPWR");
        assert!(c.corral.device_allowlist.allows_str("nic", "crl0"));
        assert!(c.corral.device_allowlist.allows_str("usb", "1d6b:0002"));
        let c = Config::from_ini(&Ini::default(), &Overrides::default()).unwrap();
        assert_eq!(c.corral.storage, StorageChoice::Auto);
        assert_eq!(c.corral.stop_signal.number(), libc::SIGTERM);
        for (bad, key, value) in [
            ("oci_runtime = kata", "oci_runtime", "kata"),
            ("storage = zfs", "storage", "zfs"),
            ("stop_signal = SIGNOPE", "stop_signal", "SIGNOPE"),
            ("stop_signal = 0", "stop_signal", "0"),
            (
                "device_allowlist = nic:a*, floppy:*",
                "device_allowlist",
                "floppy:*",
            ),
            (
                "device_allowlist = disk:relative",
                "device_allowlist",
                "disk:relative",
            ),
            ("allow_nesting = t", "allow_nesting", "t"),
        ] {
            let mut ini = Ini::default();
            ini.merge_str(&format!("[corral]\n{bad}\n"), "t").unwrap();
            let err = Config::from_ini(&ini, &Overrides::default()).unwrap_err();
            match &err {
                ConfigError::Invalid {
                    section,
                    key: k,
                    value: v,
                    ..
                } => assert_eq!((*section, *k, v.as_str()), ("corral", key, value), "{bad}"),
                other => panic!("{bad}: {other}"),
            }
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
