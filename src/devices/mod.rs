//! Host devices and paths given to instances (a leaf under the driver):
//! parsing `TYPE,KEY=VALUE,...` device strings, the operator's allowlist,
//! checking that a device is present, and setting it up on the host (device
//! nodes owned by the container's root, block devices mounted under the
//! instance directory) for the bundle to bind in.
//!
//! Types: `unix-char`, `unix-block` and `disk` name host paths; `usb`
//! (every device with the given ids), `gpu` (one physical GPU: its DRM nodes,
//! NVIDIA nodes and, for NVIDIA, what a CDI spec adds) and `nic` (a host
//! interface moved into the container) are looked up in sysfs under
//! [`HostPaths`], so that they can be tested against a fake tree. LXD's
//! `pci`, `infiniband`, `proxy`, `tpm` and `unix-hotplug` are refused.
//!
//! `gpu` and `nic` devices are exclusive: [`Resolved::claim`] names what an
//! instance holds, and [`resolve_on`] skips (`gpu`) or refuses (`nic`) what
//! other instances hold. `usb` devices are shared.

mod allowlist;
mod cdi;
mod host;
pub mod pci;
mod select;
#[cfg(test)]
mod tests_host;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

pub use allowlist::Allowlist;
pub use host::{inventory, HostPaths, NIC_CLASS};

/// Errors of device requests and their host setup.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("device {name}: {kind} {path} is not allowed by [corral] device_allowlist")]
    NotAllowed {
        name: String,
        kind: &'static str,
        path: PathBuf,
    },
    #[error("device {name}: {path} is not present on this host: {reason}")]
    NotPresent {
        name: String,
        path: PathBuf,
        reason: String,
    },
    /// What was asked for exists but other instances hold it (`gpu`, `nic`).
    #[error("device {name}: {reason}")]
    Busy { name: String, reason: String },
    #[error("device {name}: setting up {path} failed: {reason}")]
    Setup {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One device of an instance, as asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DeviceConfig {
    /// A character device node (`/dev/fuse`).
    UnixChar {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A block device node (`/dev/loop3`).
    UnixBlock {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A host directory or a block device's filesystem, mounted at `path`.
    Disk {
        source: PathBuf,
        path: PathBuf,
        #[serde(default)]
        readonly: bool,
    },
    /// Every USB device with these ids (4 lower-case hex digits), each as
    /// its `/dev/bus/usb/BBB/DDD` node. `required`: whether finding none is
    /// an error.
    Usb {
        vendorid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        productid: Option<String>,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        required: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// One physical GPU (any one when no selector is given): by PCI ids, by
    /// PCI address (`0000:01:00.0`) or by DRM card index (`id`).
    Gpu {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vendorid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        productid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pci: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A host network interface (`parent`, any free allowed one when not
    /// given) moved into the container as `name` (the device's name when
    /// not given).
    Nic {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

impl DeviceConfig {
    /// The allowlist type name.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceConfig::UnixChar { .. } => "unix-char",
            DeviceConfig::UnixBlock { .. } => "unix-block",
            DeviceConfig::Disk { .. } => "disk",
            DeviceConfig::Usb { .. } => "usb",
            DeviceConfig::Gpu { .. } => "gpu",
            DeviceConfig::Nic { .. } => "nic",
        }
    }

    /// The host path the allowlist is matched against (`unix-char`,
    /// `unix-block`, `disk`); empty for `usb`, `gpu` and `nic`, which are
    /// found in sysfs (see [`DeviceConfig::describe`]).
    pub fn host_path(&self) -> &Path {
        match self {
            DeviceConfig::UnixChar { path, .. } | DeviceConfig::UnixBlock { path, .. } => path,
            DeviceConfig::Disk { source, .. } => source,
            DeviceConfig::Usb { .. } | DeviceConfig::Gpu { .. } | DeviceConfig::Nic { .. } => {
                Path::new("")
            }
        }
    }

    /// What is asked for, for people: the host path, or the selector
    /// (`1d6b:0002`, `vendorid=10de`, `any`, `eth1 as eth0`).
    pub fn describe(&self) -> String {
        match self {
            DeviceConfig::UnixChar { path, .. } | DeviceConfig::UnixBlock { path, .. } => {
                path.display().to_string()
            }
            DeviceConfig::Disk { source, path, .. } => {
                format!("{} at {}", source.display(), path.display())
            }
            DeviceConfig::Usb {
                vendorid,
                productid,
                ..
            } => format!("{vendorid}:{}", productid.as_deref().unwrap_or("*")),
            DeviceConfig::Gpu {
                vendorid,
                productid,
                pci,
                id,
                ..
            } => {
                let mut s = Vec::new();
                if let Some(v) = vendorid {
                    s.push(format!("vendorid={v}"));
                }
                if let Some(p) = productid {
                    s.push(format!("productid={p}"));
                }
                if let Some(p) = pci {
                    s.push(format!("pci={p}"));
                }
                if let Some(i) = id {
                    s.push(format!("id={i}"));
                }
                if s.is_empty() {
                    "any".to_string()
                } else {
                    s.join(",")
                }
            }
            DeviceConfig::Nic { parent, name } => {
                let mut s = parent.clone().unwrap_or_else(|| "any".to_string());
                if let Some(n) = name {
                    s.push_str(&format!(" as {n}"));
                }
                s
            }
        }
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> DeviceError {
    DeviceError::Invalid {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Device names: 1-64 letters, digits, `-` and `_`.
pub fn validate_name(name: &str) -> Result<(), DeviceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            name,
            "invalid device name: use 1-64 letters, digits, - and _",
        ))
    }
}

/// An absolute path without `..`, `.` or empty components.
fn clean_abs(name: &str, key: &str, value: &str) -> Result<PathBuf, DeviceError> {
    let p = PathBuf::from(value);
    if is_clean_abs(&p) {
        Ok(p)
    } else {
        Err(invalid(
            name,
            format!("{key}={value:?} must be an absolute path without . or .."),
        ))
    }
}

fn is_clean_abs(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn strict_bool(name: &str, key: &str, value: &str) -> Result<bool, DeviceError> {
    crate::strutil::parse_bool(value.trim()).ok_or_else(|| {
        invalid(
            name,
            format!("{key}={value:?} is not a boolean (true/false, yes/no, 1/0)"),
        )
    })
}

fn octal_mode(name: &str, m: &str) -> Result<u32, DeviceError> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| invalid(name, format!("mode={m:?} is not an octal mode")))
}

/// A USB or PCI id: exactly 4 hex digits, lower-cased.
fn hex_id(name: &str, key: &str, value: &str) -> Result<String, DeviceError> {
    if value.len() == 4 && value.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(invalid(
            name,
            format!("{key}={value:?} is not a 4-digit hex id (e.g. 10de)"),
        ))
    }
}

/// A PCI address `DDDD:BB:DD.F` (or `BB:DD.F`, domain 0000), lower-cased
/// in its 4-digit domain form.
fn pci_address(text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase();
    let full = if t.matches(':').count() == 1 {
        format!("0000:{t}")
    } else {
        t
    };
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, func) = rest.split_once('.')?;
    let ok = hex(domain, 4)
        && hex(bus, 2)
        && hex(slot, 2)
        && u8::from_str_radix(slot, 16).is_ok_and(|s| s <= 0x1f)
        && func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c));
    ok.then_some(full)
}

/// A Linux interface name: 1-15 bytes, no `/`, `:` or whitespace, not `.`
/// or `..`.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

fn ifname(name: &str, key: &str, value: &str) -> Result<String, DeviceError> {
    if !valid_ifname(value) {
        return Err(invalid(
            name,
            format!(
                "{key}={value:?} is not a network interface name (1-15 characters, no /, : or spaces)"
            ),
        ));
    }
    if value == "lo" {
        return Err(invalid(
            name,
            format!("{key}=lo: the loopback interface cannot be given or replaced"),
        ));
    }
    Ok(value.to_string())
}

const SUPPORTED: &str = "unix-char, unix-block, disk, usb, gpu, nic";

/// Parses `TYPE,KEY=VALUE,...` (the syntax of `--device NAME=...` and of the
/// `corral:device:NAME` extra spec):
///
/// - `unix-char,path=PATH[,target=PATH][,mode=0660]` (also `unix-block`)
/// - `disk,source=PATH,path=PATH[,readonly=BOOL]`
/// - `usb,vendorid=XXXX[,productid=XXXX][,required=BOOL][,mode=0660]`
/// - `gpu[,gputype=physical][,vendorid=XXXX][,productid=XXXX][,pci=ADDR][,id=N][,mode=0660]`
/// - `nic[,nictype=physical][,parent=IFNAME][,name=IFNAME]`
pub fn parse(name: &str, text: &str) -> Result<DeviceConfig, DeviceError> {
    validate_name(name)?;
    let mut parts = text.split(',').map(str::trim);
    let kind = parts.next().unwrap_or("");
    let mut kv = BTreeMap::new();
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| invalid(name, format!("{p:?} is not KEY=VALUE")))?;
        if kv.insert(k.trim(), v.trim()).is_some() {
            return Err(invalid(name, format!("{k} is given twice")));
        }
    }
    let allowed: &[&str] = match kind {
        "unix-char" | "unix-block" => &["path", "target", "mode"],
        "disk" => &["source", "path", "readonly", "shift"],
        "usb" => &["vendorid", "productid", "required", "mode"],
        "gpu" => &["gputype", "vendorid", "productid", "pci", "id", "mode"],
        "nic" => &["nictype", "parent", "name"],
        "pci" | "infiniband" | "proxy" | "tpm" | "unix-hotplug" => {
            return Err(invalid(
                name,
                format!("device type {kind} is not supported (supported: {SUPPORTED})"),
            ))
        }
        other => {
            return Err(invalid(
                name,
                format!("unknown device type {other:?} (supported: {SUPPORTED})"),
            ))
        }
    };
    if let Some(k) = kv.keys().find(|k| !allowed.contains(k)) {
        return Err(invalid(
            name,
            format!(
                "unknown key {k:?} for {kind} (keys: {})",
                allowed.join(", ")
            ),
        ));
    }
    let need = |k: &str| -> Result<&str, DeviceError> {
        kv.get(k)
            .copied()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(name, format!("{kind} needs {k}=")))
    };
    let mode = kv.get("mode").map(|m| octal_mode(name, m)).transpose()?;
    let id_of = |k: &str| kv.get(k).map(|v| hex_id(name, k, v)).transpose();
    match kind {
        "disk" => {
            if let Some(v) = kv.get("shift") {
                if strict_bool(name, "shift", v)? {
                    return Err(invalid(
                        name,
                        "shift=true is not supported: the host's owners are kept",
                    ));
                }
            }
            let path = clean_abs(name, "path", need("path")?)?;
            if path == Path::new("/") {
                return Err(invalid(name, "path=/ would hide the root filesystem"));
            }
            Ok(DeviceConfig::Disk {
                source: clean_abs(name, "source", need("source")?)?,
                path,
                readonly: match kv.get("readonly") {
                    Some(v) => strict_bool(name, "readonly", v)?,
                    None => false,
                },
            })
        }
        "usb" => Ok(DeviceConfig::Usb {
            vendorid: hex_id(name, "vendorid", need("vendorid")?)?,
            productid: id_of("productid")?,
            required: match kv.get("required") {
                Some(v) => strict_bool(name, "required", v)?,
                None => true,
            },
            mode,
        }),
        "gpu" => {
            if let Some(t) = kv.get("gputype").filter(|t| **t != "physical") {
                return Err(invalid(
                    name,
                    format!("gputype={t} is not supported (only physical)"),
                ));
            }
            let pci = kv
                .get("pci")
                .map(|p| {
                    pci_address(p).ok_or_else(|| {
                        invalid(
                            name,
                            format!("pci={p:?} is not a PCI address (0000:01:00.0 or 01:00.0)"),
                        )
                    })
                })
                .transpose()?;
            let id = kv
                .get("id")
                .map(|i| {
                    i.parse::<u32>().map_err(|_| {
                        invalid(
                            name,
                            format!("id={i:?} is not a DRM card index (0, 1, ...)"),
                        )
                    })
                })
                .transpose()?;
            Ok(DeviceConfig::Gpu {
                vendorid: id_of("vendorid")?,
                productid: id_of("productid")?,
                pci,
                id,
                mode,
            })
        }
        "nic" => {
            if let Some(t) = kv.get("nictype").filter(|t| **t != "physical") {
                return Err(invalid(
                    name,
                    format!("nictype={t} is not supported (only physical)"),
                ));
            }
            let parent = kv
                .get("parent")
                .map(|p| ifname(name, "parent", p))
                .transpose()?;
            let inside = kv
                .get("name")
                .map(|p| ifname(name, "name", p))
                .transpose()?;
            if inside.is_none() {
                ifname(name, "name", name).map_err(|_| {
                    invalid(
                        name,
                        format!(
                            "the device name {name:?} is not a usable interface name: give name=IFNAME"
                        ),
                    )
                })?;
            }
            Ok(DeviceConfig::Nic {
                parent,
                name: inside,
            })
        }
        _ => {
            let path = clean_abs(name, "path", need("path")?)?;
            let target = kv
                .get("target")
                .map(|t| clean_abs(name, "target", t))
                .transpose()?;
            if let Some(t) = &target {
                if !t.starts_with("/dev") {
                    return Err(invalid(name, "target must be under /dev"));
                }
            }
            Ok(if kind == "unix-char" {
                DeviceConfig::UnixChar { path, target, mode }
            } else {
                DeviceConfig::UnixBlock { path, target, mode }
            })
        }
    }
}

/// A device node's kind and numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    pub block: bool,
    pub major: u64,
    pub minor: u64,
}

/// A device node to make for an instance (numbers from sysfs, so the host
/// node itself need not be there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub dev: DevNum,
    /// The node on the host (`/dev/bus/usb/001/003`), for messages.
    pub host: PathBuf,
    /// Where it appears in the container.
    pub target: PathBuf,
    pub mode: u32,
}

/// A host file or directory bound into the container (from a CDI spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// A device checked against the allowlist and the host, ready to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A device node made under the instance dir and bound at `target`.
    Node {
        name: String,
        dev: DevNum,
        target: PathBuf,
        mode: u32,
    },
    /// A host directory bound at `target`.
    Dir {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// A block device mounted under the instance dir, bound at `target`.
    BlockDisk {
        name: String,
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// Device nodes, bind mounts and environment entries (`usb`: one node
    /// per device, maybe none; `gpu`: its nodes and CDI edits).
    Nodes {
        name: String,
        /// `usb` or `gpu`.
        kind: &'static str,
        nodes: Vec<NodeSpec>,
        binds: Vec<BindSpec>,
        env: Vec<String>,
        /// `gpu:<pci address>` for a GPU.
        claim: Option<String>,
        /// The Placement resource class of each device given, one entry per
        /// unit.
        classes: Vec<String>,
    },
    /// A host interface to move into the container's network namespace.
    Nic {
        name: String,
        host_if: String,
        inside: String,
        /// `nic:<host_if>`.
        claim: String,
    },
}

impl Resolved {
    /// What this device holds exclusively (`gpu:0000:01:00.0`,
    /// `nic:eth1`): the `taken` keys of [`resolve_on`] for other instances.
    pub fn claim(&self) -> Option<&str> {
        match self {
            Resolved::Nodes { claim, .. } => claim.as_deref(),
            Resolved::Nic { claim, .. } => Some(claim),
            Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => None,
        }
    }
}

/// The Placement resource class a resolved `gpu`, `usb` or `nic` device
/// consumes (`CUSTOM_CORRAL_GPU_10DE_2330`, `CUSTOM_CORRAL_USB_1D6B_0002`,
/// `CUSTOM_CORRAL_NIC`); `None` for the path types and for a `usb` device
/// that found nothing. A `usb` device matching several products consumes
/// several classes: this is the first, [`resources`] has them all.
pub fn resource_class(resolved: &Resolved) -> Option<String> {
    match resolved {
        Resolved::Nodes { classes, .. } => classes.first().cloned(),
        Resolved::Nic { .. } => Some(host::NIC_CLASS.to_string()),
        Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => None,
    }
}

/// The Placement resources a resolved device consumes, by class.
pub fn resources(resolved: &Resolved) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    match resolved {
        Resolved::Nodes { classes, .. } => {
            for c in classes {
                *out.entry(c.clone()).or_insert(0) += 1;
            }
        }
        Resolved::Nic { .. } => {
            out.insert(host::NIC_CLASS.to_string(), 1);
        }
        Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => {}
    }
    out
}

fn dev_num(meta: &std::fs::Metadata) -> Option<DevNum> {
    let ft = meta.file_type();
    if !(ft.is_char_device() || ft.is_block_device()) {
        return None;
    }
    let rdev = meta.rdev();
    Some(DevNum {
        block: ft.is_block_device(),
        major: libc::major(rdev) as u64,
        minor: libc::minor(rdev) as u64,
    })
}

/// Checks one device against the allowlist and the real host, with nothing
/// taken by other instances: [`resolve_on`] with [`HostPaths::default`].
pub fn resolve(name: &str, dev: &DeviceConfig, allow: &Allowlist) -> Result<Resolved, DeviceError> {
    resolve_on(name, dev, allow, &HostPaths::default(), &BTreeSet::new())
}

/// Checks one device: allowed and present. Path types are checked by their
/// path as given and as resolved, so a symlink cannot lead out of an
/// allowed tree. `usb`, `gpu` and `nic` are looked up under `host`; `taken`
/// holds the [`Resolved::claim`]s of other instances: a `gpu` selection
/// skips them, a taken `nic` is refused ([`DeviceError::Busy`]).
pub fn resolve_on(
    name: &str,
    dev: &DeviceConfig,
    allow: &Allowlist,
    host: &HostPaths,
    taken: &BTreeSet<String>,
) -> Result<Resolved, DeviceError> {
    match dev {
        DeviceConfig::Usb {
            vendorid,
            productid,
            required,
            mode,
        } => select::usb(
            name,
            &select::UsbWant {
                vendor: vendorid,
                product: productid.as_deref(),
                required: *required,
                mode: *mode,
            },
            allow,
            host,
        ),
        DeviceConfig::Gpu {
            vendorid,
            productid,
            pci,
            id,
            mode,
        } => select::gpu(
            name,
            &select::GpuWant {
                vendor: vendorid.as_deref(),
                product: productid.as_deref(),
                pci: pci.as_deref(),
                id: *id,
                mode: *mode,
            },
            allow,
            host,
            taken,
        ),
        DeviceConfig::Nic {
            parent,
            name: inside,
        } => select::nic(
            name,
            parent.as_deref(),
            inside.as_deref(),
            allow,
            host,
            taken,
        ),
        DeviceConfig::UnixChar { path, .. }
        | DeviceConfig::UnixBlock { path, .. }
        | DeviceConfig::Disk { source: path, .. } => resolve_path(name, dev, path, allow),
    }
}

fn resolve_path(
    name: &str,
    dev: &DeviceConfig,
    path: &Path,
    allow: &Allowlist,
) -> Result<Resolved, DeviceError> {
    let kind = dev.kind();
    let not_allowed = |p: &Path| DeviceError::NotAllowed {
        name: name.to_string(),
        kind,
        path: p.to_path_buf(),
    };
    if !allow.allows(kind, path) {
        return Err(not_allowed(path));
    }
    let not_present = |reason: String| DeviceError::NotPresent {
        name: name.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let real = std::fs::canonicalize(path).map_err(|e| not_present(e.to_string()))?;
    if !allow.allows(kind, &real) {
        return Err(not_allowed(&real));
    }
    let meta = std::fs::metadata(&real).map_err(|e| not_present(e.to_string()))?;
    match dev {
        DeviceConfig::UnixChar { target, mode, .. }
        | DeviceConfig::UnixBlock { target, mode, .. } => {
            let want_block = matches!(dev, DeviceConfig::UnixBlock { .. });
            let num = dev_num(&meta)
                .filter(|d| d.block == want_block)
                .ok_or_else(|| {
                    not_present(format!(
                        "not a {} device",
                        if want_block { "block" } else { "character" }
                    ))
                })?;
            Ok(Resolved::Node {
                name: name.to_string(),
                dev: num,
                target: target.clone().unwrap_or_else(|| path.to_path_buf()),
                mode: mode.unwrap_or(meta.mode() & 0o777),
            })
        }
        DeviceConfig::Disk {
            path: target,
            readonly,
            ..
        } => {
            if meta.is_dir() {
                Ok(Resolved::Dir {
                    source: real,
                    target: target.clone(),
                    readonly: *readonly,
                })
            } else if meta.file_type().is_block_device() {
                Ok(Resolved::BlockDisk {
                    name: name.to_string(),
                    source: real,
                    target: target.clone(),
                    readonly: *readonly,
                })
            } else {
                Err(not_present(
                    "a disk source must be a directory or a block device".into(),
                ))
            }
        }
        DeviceConfig::Usb { .. } | DeviceConfig::Gpu { .. } | DeviceConfig::Nic { .. } => {
            Err(invalid(name, format!("{kind} devices have no host path")))
        }
    }
}

/// What the bundle needs for one set-up device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Host path bound into the container.
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
    /// The device cgroup rule to allow, for nodes.
    pub allow: Option<DevNum>,
}

/// A host interface to move into the container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicMove {
    pub host_name: String,
    pub inside_name: String,
}

/// What the bundle needs for one set-up device of any type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    /// Bind mounts (device nodes carry their cgroup rule in `allow`).
    pub mounts: Vec<Prepared>,
    /// `KEY=VALUE` entries for the container's environment.
    pub env: Vec<String>,
    pub nic: Option<NicMove>,
}

fn nodes_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join("devices")
}

fn disks_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join("disks")
}

fn mkdir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
}

/// Whether `path` is a mount point (per /proc/self/mountinfo, unescaped:
/// a state path with a space in it is found too).
fn is_mounted(path: &Path) -> bool {
    crate::fsutil::is_mount_point(path)
}

/// The filesystem on a block device, by `blkid`.
fn fs_type(dev: &Path) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !t.is_empty()).then_some(t)
}

/// Makes the device node `node` (replacing what is there), owned by `root`
/// with `mode`.
fn make_node(
    name: &str,
    node: &Path,
    num: DevNum,
    mode: u32,
    root: u32,
) -> Result<(), DeviceError> {
    let fail = |reason: String| DeviceError::Setup {
        name: name.to_string(),
        path: node.to_path_buf(),
        reason,
    };
    if let Some(dir) = node.parent() {
        mkdir(dir).map_err(|e| fail(e.to_string()))?;
    }
    let _ = std::fs::remove_file(node);
    let kind = if num.block {
        nix::sys::stat::SFlag::S_IFBLK
    } else {
        nix::sys::stat::SFlag::S_IFCHR
    };
    nix::sys::stat::mknod(
        node,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(num.major, num.minor),
    )
    .map_err(|e| fail(e.to_string()))?;
    // mknod honours the umask: set the mode after it.
    nix::sys::stat::fchmodat(
        None,
        node,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| fail(e.to_string()))?;
    std::os::unix::fs::chown(node, Some(root), Some(root)).map_err(|e| fail(e.to_string()))
}

/// Sets one device of any type up on the host. `root` is the host uid/gid
/// of the container's root (0 when privileged): device nodes belong to it.
/// The nodes of a `usb` or `gpu` device are made as
/// `instance_dir/devices/<name>.<n>` (`.` is not in device names, so they
/// never meet another device's node); a `nic` needs nothing here, its move
/// is returned for the caller to make.
pub fn setup_on(instance_dir: &Path, dev: &Resolved, root: u32) -> Result<Setup, DeviceError> {
    match dev {
        Resolved::Nodes {
            name,
            nodes,
            binds,
            env,
            ..
        } => {
            let dir = nodes_dir(instance_dir);
            let mut mounts = Vec::with_capacity(nodes.len() + binds.len());
            for (i, n) in nodes.iter().enumerate() {
                let node = dir.join(format!("{name}.{i}"));
                make_node(name, &node, n.dev, n.mode, root)?;
                mounts.push(Prepared {
                    source: node,
                    target: n.target.clone(),
                    readonly: false,
                    allow: Some(n.dev),
                });
            }
            mounts.extend(binds.iter().map(|b| Prepared {
                source: b.source.clone(),
                target: b.target.clone(),
                readonly: b.readonly,
                allow: None,
            }));
            Ok(Setup {
                mounts,
                env: env.clone(),
                nic: None,
            })
        }
        Resolved::Nic {
            host_if, inside, ..
        } => Ok(Setup {
            mounts: Vec::new(),
            env: Vec::new(),
            nic: Some(NicMove {
                host_name: host_if.clone(),
                inside_name: inside.clone(),
            }),
        }),
        Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => Ok(Setup {
            mounts: vec![setup(instance_dir, dev, root)?],
            env: Vec::new(),
            nic: None,
        }),
    }
}

/// Sets one `unix-char`, `unix-block` or `disk` device up on the host (see
/// [`setup_on`] for every type). `root` is the host uid/gid of the
/// container's root (0 when privileged): device nodes belong to it.
pub fn setup(instance_dir: &Path, dev: &Resolved, root: u32) -> Result<Prepared, DeviceError> {
    match dev {
        Resolved::Node {
            name,
            dev: num,
            target,
            mode,
        } => {
            let node = nodes_dir(instance_dir).join(name);
            make_node(name, &node, *num, *mode, root)?;
            Ok(Prepared {
                source: node,
                target: target.clone(),
                readonly: false,
                allow: Some(*num),
            })
        }
        Resolved::Dir {
            source,
            target,
            readonly,
        } => Ok(Prepared {
            source: source.clone(),
            target: target.clone(),
            readonly: *readonly,
            allow: None,
        }),
        Resolved::BlockDisk {
            name,
            source,
            target,
            readonly,
        } => {
            let mp = disks_dir(instance_dir).join(name);
            let fail = |reason: String| DeviceError::Setup {
                name: name.clone(),
                path: source.clone(),
                reason,
            };
            mkdir(&mp).map_err(|e| fail(e.to_string()))?;
            if !is_mounted(&mp) {
                let mut flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
                if *readonly {
                    flags |= nix::mount::MsFlags::MS_RDONLY;
                }
                let candidates = match fs_type(source) {
                    Some(t) => vec![t],
                    None => vec!["ext4".to_string(), "xfs".to_string()],
                };
                let mut last = String::from("no filesystem found");
                let mut mounted = false;
                for t in &candidates {
                    match nix::mount::mount(
                        Some(source.as_path()),
                        &mp,
                        Some(t.as_str()),
                        flags,
                        None::<&str>,
                    ) {
                        Ok(()) => {
                            mounted = true;
                            break;
                        }
                        Err(e) => last = format!("mount as {t}: {e}"),
                    }
                }
                if !mounted {
                    let _ = std::fs::remove_dir(&mp);
                    return Err(fail(last));
                }
                tracing::debug!(device = %name, source = %source.display(), mountpoint = %mp.display(), "block device mounted");
            }
            Ok(Prepared {
                source: mp,
                target: target.clone(),
                readonly: *readonly,
                allow: None,
            })
        }
        Resolved::Nodes { name, kind, .. } => Err(DeviceError::Setup {
            name: name.clone(),
            path: instance_dir.to_path_buf(),
            reason: format!("a {kind} device is set up by setup_on"),
        }),
        Resolved::Nic { name, .. } => Err(DeviceError::Setup {
            name: name.clone(),
            path: instance_dir.to_path_buf(),
            reason: "a nic device is set up by setup_on".into(),
        }),
    }
}

/// Undoes every `setup` of an instance: unmounts its block devices and
/// removes its device nodes. An unmount that fails stops here, so that the
/// caller never removes the instance directory with a filesystem in it.
pub fn release(instance_dir: &Path) -> Result<(), DeviceError> {
    let disks = disks_dir(instance_dir);
    if let Ok(rd) = std::fs::read_dir(&disks) {
        for e in rd.flatten() {
            let mp = e.path();
            if is_mounted(&mp) {
                if let Err(err) = nix::mount::umount(&mp) {
                    tracing::debug!(mountpoint = %mp.display(), error = %err, "busy, detaching");
                    nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                        DeviceError::Setup {
                            name: e.to_string(),
                            path: mp.clone(),
                            reason: format!("unmount failed: {e}"),
                        }
                    })?;
                }
            }
            if is_mounted(&mp) {
                return Err(DeviceError::Setup {
                    name: mp
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    path: mp.clone(),
                    reason: "still mounted".into(),
                });
            }
            let _ = std::fs::remove_dir(&mp);
        }
        let _ = std::fs::remove_dir(&disks);
    }
    let nodes = nodes_dir(instance_dir);
    if nodes.exists() {
        crate::fsutil::remove_tree(&nodes).map_err(|e| DeviceError::Setup {
            name: "devices".into(),
            path: nodes.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type() {
        assert_eq!(
            parse("fuse", "unix-char,path=/dev/fuse").unwrap(),
            DeviceConfig::UnixChar {
                path: "/dev/fuse".into(),
                target: None,
                mode: None
            }
        );
        assert_eq!(
            parse(
                "lo",
                "unix-block, path=/dev/loop3, target=/dev/xvdb, mode=0660"
            )
            .unwrap(),
            DeviceConfig::UnixBlock {
                path: "/dev/loop3".into(),
                target: Some("/dev/xvdb".into()),
                mode: Some(0o660)
            }
        );
        assert_eq!(
            parse("data", "disk,source=/srv/data,path=/mnt/data,readonly=yes").unwrap(),
            DeviceConfig::Disk {
                source: "/srv/data".into(),
                path: "/mnt/data".into(),
                readonly: true
            }
        );
        assert!(matches!(
            parse("d", "disk,source=/srv,path=/mnt,shift=false").unwrap(),
            DeviceConfig::Disk {
                readonly: false,
                ..
            }
        ));
    }

    #[test]
    fn bad_devices_are_refused() {
        for (name, text) in [
            ("bad name", "unix-char,path=/dev/fuse"),
            ("", "unix-char,path=/dev/fuse"),
            ("p", "pci,address=0000:01:00.0"),
            ("t", "tpm,path=/dev/tpm0"),
            ("x", "floppy,path=/dev/fd0"),
            ("x", "unix-char"),
            ("x", "unix-char,path=dev/fuse"),
            ("x", "unix-char,path=/dev/../etc/shadow"),
            ("x", "unix-char,path=/dev/fuse,target=/etc/x"),
            ("x", "unix-char,path=/dev/fuse,mode=999"),
            ("x", "unix-char,path=/dev/fuse,colour=red"),
            ("x", "unix-char,path=/dev/fuse,path=/dev/null"),
            ("x", "unix-char,/dev/fuse"),
            ("x", "disk,source=/srv"),
            ("x", "disk,source=/srv,path=/"),
            ("x", "disk,source=/srv,path=/mnt,readonly=perhaps"),
            ("x", "disk,source=/srv,path=/mnt,shift=true"),
        ] {
            assert!(parse(name, text).is_err(), "{name} {text}");
        }
        for t in ["pci", "infiniband", "proxy", "tpm", "unix-hotplug"] {
            let e = parse("x", t).unwrap_err().to_string();
            assert!(e.contains("not supported"), "{e}");
            assert!(e.contains("usb, gpu, nic"), "{e}");
        }
    }

    #[test]
    fn resolve_checks_allowlist_then_presence() {
        let dir = tempfile::tempdir().unwrap();
        let allow = Allowlist::parse(&[
            "unix-char:/dev/null".to_string(),
            format!("disk:{}/*", dir.path().display()),
            "unix-block:/dev/nonexistent*".to_string(),
        ])
        .unwrap();
        // A present character device.
        let r = resolve(
            "n",
            &parse("n", "unix-char,path=/dev/null").unwrap(),
            &allow,
        )
        .unwrap();
        assert!(matches!(
            r,
            Resolved::Node {
                dev: DevNum {
                    block: false,
                    major: 1,
                    minor: 3
                },
                ..
            }
        ));
        // Not allowed.
        let e = resolve(
            "z",
            &parse("z", "unix-char,path=/dev/zero").unwrap(),
            &allow,
        );
        assert!(matches!(e, Err(DeviceError::NotAllowed { .. })), "{e:?}");
        // Allowed but not present.
        let e = resolve(
            "b",
            &parse("b", "unix-block,path=/dev/nonexistent0").unwrap(),
            &allow,
        );
        assert!(matches!(e, Err(DeviceError::NotPresent { .. })), "{e:?}");
        // A directory as a disk; a file is not a disk.
        let sub = dir.path().join("data");
        std::fs::create_dir(&sub).unwrap();
        let d = parse("d", &format!("disk,source={},path=/mnt", sub.display())).unwrap();
        assert!(matches!(
            resolve("d", &d, &allow).unwrap(),
            Resolved::Dir { .. }
        ));
        let f = dir.path().join("file");
        std::fs::write(&f, "x").unwrap();
        let d = parse("f", &format!("disk,source={},path=/mnt", f.display())).unwrap();
        assert!(matches!(
            resolve("f", &d, &allow),
            Err(DeviceError::NotPresent { .. })
        ));
        // A symlink inside the allowed tree that leads out of it.
        let link = dir.path().join("escape");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let d = parse("e", &format!("disk,source={},path=/mnt", link.display())).unwrap();
        assert!(matches!(
            resolve("e", &d, &allow),
            Err(DeviceError::NotAllowed { .. })
        ));
        // Not a char device where one is asked for.
        let allow_all = Allowlist::parse(&["unix-char:*".to_string()]).unwrap();
        let d = parse("f", &format!("unix-char,path={}", f.display())).unwrap();
        assert!(matches!(
            resolve("f", &d, &allow_all),
            Err(DeviceError::NotPresent { .. })
        ));
    }

    #[test]
    fn setup_makes_nodes_and_release_removes_them() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mknod needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let r = Resolved::Node {
            name: "null".into(),
            dev: DevNum {
                block: false,
                major: 1,
                minor: 3,
            },
            target: "/dev/null2".into(),
            mode: 0o666,
        };
        let p = setup(dir.path(), &r, 1_000_000).unwrap();
        let meta = std::fs::metadata(&p.source).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.uid(), 1_000_000);
        assert_eq!(meta.mode() & 0o777, 0o666);
        assert_eq!(meta.rdev(), libc::makedev(1, 3));
        release(dir.path()).unwrap();
        assert!(!p.source.exists());
    }

    /// A disk mounted into an instance whose state path has a space in it
    /// is unmounted by `release`, so removing the instance directory never
    /// reaches into the disk's files.
    #[test]
    fn release_unmounts_disks_under_a_path_with_a_space() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let state = tempfile::Builder::new()
            .prefix("corral state ")
            .tempdir()
            .unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("precious"), b"keep me").unwrap();
        let inst = state.path().join("instances/u 1");
        let mp = disks_dir(&inst).join("data");
        mkdir(&mp).unwrap();
        nix::mount::mount(
            Some(host.path()),
            &mp,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        assert!(is_mounted(&mp), "a mount point with a space is found");
        let released = release(&inst);
        if is_mounted(&mp) {
            let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
            panic!("release left the disk mounted: {released:?}");
        }
        released.unwrap();
        crate::fsutil::remove_tree(&inst).unwrap();
        assert_eq!(
            std::fs::read(host.path().join("precious")).unwrap(),
            b"keep me"
        );
    }
}
