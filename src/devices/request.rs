//! What an instance asks for: `TYPE,KEY=VALUE,...` device strings parsed and
//! checked into [`DeviceConfig`] (names, paths, modes, ids, interface
//! names), before anything on the host is looked at.

use super::*;

pub(super) fn yes() -> bool {
    true
}

pub(super) fn is_true(b: &bool) -> bool {
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

pub(super) fn invalid(name: &str, reason: impl Into<String>) -> DeviceError {
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
pub(super) fn clean_abs(name: &str, key: &str, value: &str) -> Result<PathBuf, DeviceError> {
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

pub(super) fn is_clean_abs(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

pub(super) fn strict_bool(name: &str, key: &str, value: &str) -> Result<bool, DeviceError> {
    crate::strutil::parse_bool(value.trim()).ok_or_else(|| {
        invalid(
            name,
            format!("{key}={value:?} is not a boolean (true/false, yes/no, 1/0)"),
        )
    })
}

pub(super) fn octal_mode(name: &str, m: &str) -> Result<u32, DeviceError> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| invalid(name, format!("mode={m:?} is not an octal mode")))
}

/// A USB or PCI id: exactly 4 hex digits, lower-cased.
pub(super) fn hex_id(name: &str, key: &str, value: &str) -> Result<String, DeviceError> {
    if value.len() == 4 && value.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(invalid(
            name,
            format!("{key}={value:?} is not a 4-digit hex id (e.g. 10de)"),
        ))
    }
}

/// A Linux interface name: 1-15 bytes, no `/`, `:` or whitespace, not `.`
/// or `..`.
pub(super) fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

pub(super) fn ifname(name: &str, key: &str, value: &str) -> Result<String, DeviceError> {
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

pub(super) const SUPPORTED: &str = "unix-char, unix-block, disk, usb, gpu, nic";

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
