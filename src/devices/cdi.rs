//! Container Device Interface specs for NVIDIA GPUs (`kind: nvidia.com/gpu`
//! under [`HostPaths::cdi_dirs`], as `nvidia-ctk cdi generate` writes them),
//! JSON (`*.json`) or YAML (`*.yaml`, `*.yml`).
//!
//! Taken from a spec: the device named by the GPU's UUID, or else one whose
//! device nodes include one of the GPU's own nodes (`/dev/nvidiaN`,
//! `/dev/dri/...`), or else the one named by its NVIDIA minor (`0`), or
//! else the device `all`; its `containerEdits` and the spec's top-level ones:
//! `deviceNodes` (`path`, `hostPath`, `type`, `major`/`minor`, `fileMode`),
//! `mounts` (bind mounts: `hostPath`, `containerPath`, `options` with `ro`)
//! and `env`. Device nodes of the host's other GPUs are dropped, so that
//! `all` gives this GPU only. Not supported, and left out: `hooks` (e.g.
//! `update-ldcache`, `create-symlinks`: the image must find the mounted
//! libraries itself), mounts of other types than bind, `additionalGIDs`,
//! `intelRdt`, annotations, and other kinds than `nvidia.com/gpu`. A spec
//! file that cannot be read is logged and skipped; the first spec (by
//! priority, then file name) with a matching device is used.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{dev_num, is_clean_abs, BindSpec, DevNum, HostPaths, NodeSpec};

pub(super) const GPU_KIND: &str = "nvidia.com/gpu";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    #[serde(default)]
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<Node>,
    #[serde(default)]
    mounts: Vec<Mount>,
    #[serde(default)]
    hooks: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    major: Option<u64>,
    #[serde(default)]
    minor: Option<u64>,
    #[serde(default)]
    file_mode: Option<u32>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mount {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// What a CDI spec adds for one GPU.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct CdiEdits {
    pub spec: PathBuf,
    pub nodes: Vec<NodeSpec>,
    pub binds: Vec<BindSpec>,
    pub env: Vec<String>,
}

/// The GPU the edits are for.
pub(super) struct ForGpu<'a> {
    /// Its own nodes' container paths (DRM, `/dev/nvidiaN`).
    pub mine: &'a [PathBuf],
    /// The container paths of the nodes it already has (its own and the
    /// control nodes): not looked up again.
    pub have: &'a [PathBuf],
    /// The NVIDIA minor and UUID.
    pub minor: Option<u32>,
    pub uuid: Option<&'a str>,
    /// The container paths of other GPUs' nodes.
    pub foreign: &'a BTreeSet<PathBuf>,
    /// The mode for nodes without `fileMode`.
    pub mode: u32,
}

fn load(path: &Path) -> Result<Spec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())
    }
}

/// The spec files, highest priority first (later directories first, then
/// by name).
fn spec_files(host: &HostPaths) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in host.cdi_dirs.iter().rev() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        out.extend(files);
    }
    out
}

/// The edits of the first spec with a device for `gpu`; `None` when no
/// spec has one. A spec whose edits do not fit (a node that is not there,
/// a relative path, an env entry without `=`) is an error.
pub(super) fn gpu_edits(host: &HostPaths, gpu: &ForGpu) -> Result<Option<CdiEdits>, String> {
    let minor = gpu.minor.map(|m| m.to_string());
    for file in spec_files(host) {
        let spec = match load(&file) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(spec = %file.display(), error = %e, "CDI spec skipped");
                continue;
            }
        };
        if spec.kind != GPU_KIND {
            continue;
        }
        let mentions = |d: &Device| {
            d.container_edits.device_nodes.iter().any(|n| {
                gpu.mine.iter().any(|m| {
                    Path::new(&n.path) == m || n.host_path.as_deref().map(Path::new) == Some(m)
                })
            })
        };
        // The most certain first: the UUID, the GPU's own nodes, then the
        // name nvidia-ctk gives by index (taken as the device minor).
        let named = |want: Option<&str>| {
            want.and_then(|w| spec.devices.iter().find(|d| d.name != "all" && d.name == w))
        };
        let device = named(gpu.uuid)
            .or_else(|| spec.devices.iter().find(|d| d.name != "all" && mentions(d)))
            .or_else(|| named(minor.as_deref()))
            .or_else(|| spec.devices.iter().find(|d| d.name == "all"));
        let Some(device) = device else {
            continue;
        };
        let mut out = CdiEdits {
            spec: file.clone(),
            ..CdiEdits::default()
        };
        for edits in [&spec.container_edits, &device.container_edits] {
            apply(host, gpu, edits, &mut out)
                .map_err(|e| format!("CDI spec {}: {e}", file.display()))?;
        }
        tracing::debug!(spec = %file.display(), device = %device.name, "CDI edits taken");
        return Ok(Some(out));
    }
    Ok(None)
}

fn apply(host: &HostPaths, gpu: &ForGpu, edits: &Edits, out: &mut CdiEdits) -> Result<(), String> {
    if !edits.hooks.is_empty() {
        tracing::info!(
            spec = %out.spec.display(),
            hooks = edits.hooks.len(),
            "CDI hooks are not run"
        );
    }
    for e in &edits.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {
                if !out.env.contains(e) {
                    out.env.push(e.clone());
                }
            }
            _ => return Err(format!("env entry {e:?} is not KEY=VALUE")),
        }
    }
    for n in &edits.device_nodes {
        let target = PathBuf::from(&n.path);
        if !is_clean_abs(&target) {
            return Err(format!("device node path {:?} is not absolute", n.path));
        }
        if gpu.foreign.contains(&target)
            || gpu.have.contains(&target)
            || out.nodes.iter().any(|o| o.target == target)
        {
            continue;
        }
        let host_path = PathBuf::from(n.host_path.as_deref().unwrap_or(&n.path));
        if !is_clean_abs(&host_path) {
            return Err(format!(
                "device node hostPath {:?} is not absolute",
                host_path.display()
            ));
        }
        let host_node = host.dev_path(&host_path);
        let dev = match (n.major, n.minor) {
            (Some(major), Some(minor)) => DevNum {
                block: n.kind.as_deref() == Some("b"),
                major,
                minor,
            },
            _ => std::fs::metadata(&host_node)
                .ok()
                .as_ref()
                .and_then(dev_num)
                .ok_or_else(|| {
                    format!("device node {} is not on this host", host_node.display())
                })?,
        };
        out.nodes.push(NodeSpec {
            dev,
            host: host_node,
            target,
            mode: n.file_mode.map_or(gpu.mode, |m| m & 0o777),
        });
    }
    for m in &edits.mounts {
        if m.kind
            .as_deref()
            .is_some_and(|t| t != "bind" && t != "none")
        {
            tracing::info!(
                spec = %out.spec.display(),
                target = %m.container_path,
                "CDI mount of type {:?} left out",
                m.kind
            );
            continue;
        }
        let source = PathBuf::from(&m.host_path);
        let target = PathBuf::from(&m.container_path);
        if !is_clean_abs(&source) || !is_clean_abs(&target) || target == Path::new("/") {
            return Err(format!(
                "mount {} -> {} needs absolute paths (and not /)",
                m.host_path, m.container_path
            ));
        }
        if out.binds.iter().any(|b| b.target == target) {
            continue;
        }
        out.binds.push(BindSpec {
            source,
            target,
            readonly: m.options.iter().any(|o| o == "ro"),
        });
    }
    Ok(())
}
