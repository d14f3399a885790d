//! cgroup v1 and v2: layout detection, stats, freezer state and cleanup.

use std::path::Path;

/// Errors reading cgroup files.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot parse {path}: {content:?}")]
    Parse { path: String, content: String },
}

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// cgroup v1 controllers only.
    Legacy,
    /// cgroup v1 controllers plus a v2 hierarchy at `unified/` (systemd's hybrid).
    Hybrid,
    /// cgroup v2 only.
    Unified,
}

/// Detects the layout under `root` (normally `/sys/fs/cgroup`).
pub fn detect(root: &Path) -> CgroupMode {
    if root.join("cgroup.controllers").exists() {
        CgroupMode::Unified
    } else if root.join("unified").join("cgroup.controllers").exists() {
        CgroupMode::Hybrid
    } else {
        CgroupMode::Legacy
    }
}
