//! cgroup v1 and v2: detecting the host's layout, reading a container's
//! resource statistics and freezer state, and removing its leftover cgroups.
//!
//! Every function takes the cgroup root (normally `/sys/fs/cgroup`) as a
//! parameter so tests can point it at a fake hierarchy in a temp dir.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

mod cleanup;
mod delegate;
mod freezer;
mod mounts;
mod stats;

pub use cleanup::{cleanup, exists};
pub use delegate::delegate;
pub use freezer::{freeze, freezer_state, set_frozen, FreezerState};
pub use mounts::{v1_mounts, V1Mount};
pub use stats::{read_stats, Stats};

/// The default cgroup root on Linux.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup hierarchy the controllers live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupMode {
    /// Controllers are v1 mounts (legacy, or hybrid with an extra
    /// controller-less cgroup2 at `unified`).
    V1,
    /// One unified cgroup2 hierarchy.
    V2,
}

/// Errors from reading or cleaning up cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy found at {0}")]
    NotMounted(PathBuf),
    #[error("invalid cgroup path {0}")]
    InvalidPath(String),
    #[error("cgroup {0} not found")]
    NotFound(String),
    #[error("cannot parse {file}: {reason}")]
    Parse { file: PathBuf, reason: String },
    #[error("cannot read {file}: {source}")]
    Read { file: PathBuf, source: io::Error },
    #[error("cannot write {file}: {source}")]
    Write { file: PathBuf, source: io::Error },
    #[error("cgroup {0} has no freezer")]
    NoFreezer(String),
    #[error("cgroup {path} did not freeze within {waited:?}")]
    FreezeTimeout {
        path: String,
        waited: std::time::Duration,
    },
    #[error("cannot give cgroup {path} to the container's root: {source}")]
    Delegate { path: PathBuf, source: io::Error },
    #[error("cannot remove cgroup {dir}: {source}")]
    Remove { dir: PathBuf, source: io::Error },
}

/// Works out whether `root` holds a unified (v2) hierarchy or v1 controller
/// mounts (legacy or hybrid).
pub fn detect(root: &Path) -> Result<CgroupMode, CgroupError> {
    // cgroup.controllers only exists on cgroup2, so its presence at the root
    // means the whole tree is unified.
    if root.join("cgroup.controllers").is_file() {
        return Ok(CgroupMode::V2);
    }
    let entries = std::fs::read_dir(root).map_err(|source| CgroupError::Read {
        file: root.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == "unified" {
            continue;
        }
        // A v1 hierarchy always has cgroup.procs at its top.
        if entry.path().join("cgroup.procs").is_file() {
            return Ok(CgroupMode::V1);
        }
    }
    Err(CgroupError::NotMounted(root.to_path_buf()))
}

/// Whether a v1 `root` also carries the controller-less cgroup2 hierarchy at
/// `root/unified` (systemd's hybrid layout).
pub fn is_hybrid(root: &Path) -> bool {
    !root.join("cgroup.controllers").exists() && root.join("unified/cgroup.controllers").is_file()
}

/// A cgroup path relative to the hierarchy root: one path for all
/// controllers (what runc creates for a container) plus optional per
/// controller overrides (what `/proc/<pid>/cgroup` can show on v1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPath {
    default: PathBuf,
    per_controller: BTreeMap<String, PathBuf>,
}

impl CgroupPath {
    /// Validates `path` (a leading `/` is allowed; `..` is not, since these
    /// paths end up in rmdir calls).
    pub fn new(path: impl AsRef<Path>) -> Result<Self, CgroupError> {
        Ok(Self {
            default: clean(path.as_ref())?,
            per_controller: BTreeMap::new(),
        })
    }

    /// Parses `/proc/<pid>/cgroup`. The v2 line (`0::/path`) gives the
    /// default; v1 lines give per-controller paths, keyed by controller name
    /// (`memory`, `cpu`, `name=systemd`).
    pub fn from_proc_cgroup(content: &str) -> Result<Self, CgroupError> {
        let mut out = Self::default();
        for line in content.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(CgroupError::Parse {
                    file: PathBuf::from("/proc/self/cgroup"),
                    reason: format!("malformed line {line:?}"),
                });
            };
            let path = clean(Path::new(path))?;
            if controllers.is_empty() {
                out.default = path;
            } else {
                for c in controllers.split(',') {
                    out.per_controller.insert(c.to_string(), path.clone());
                }
            }
        }
        Ok(out)
    }

    /// The path used when no override exists.
    pub fn default_path(&self) -> &Path {
        &self.default
    }

    /// The path for one v1 controller (`name=systemd` style names included).
    pub fn for_controller(&self, controller: &str) -> &Path {
        self.per_controller.get(controller).unwrap_or(&self.default)
    }

    /// The path inside a v1 hierarchy directory named like `cpu,cpuacct`,
    /// `systemd` or `unified`.
    fn for_hierarchy(&self, dir_name: &str) -> &Path {
        if dir_name == "unified" {
            return &self.default;
        }
        if let Some(p) = self.per_controller.get(&format!("name={dir_name}")) {
            return p;
        }
        dir_name
            .split(',')
            .find_map(|c| self.per_controller.get(c))
            .unwrap_or(&self.default)
    }

    fn is_root(&self) -> bool {
        self.default.as_os_str().is_empty()
            && self
                .per_controller
                .values()
                .all(|p| p.as_os_str().is_empty())
    }

    fn display(&self) -> String {
        format!("/{}", self.default.display())
    }
}

impl TryFrom<&str> for CgroupPath {
    type Error = CgroupError;
    fn try_from(path: &str) -> Result<Self, Self::Error> {
        Self::new(path)
    }
}

fn clean(path: &Path) -> Result<PathBuf, CgroupError> {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(c) => out.push(c),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidPath(path.display().to_string()));
            }
        }
    }
    Ok(out)
}

/// The directory of v1 `controller` under `root`: `root/<controller>` when
/// present (systemd symlinks combined mounts such as `cpu,cpuacct` to each
/// name), otherwise a combined directory whose name lists the controller.
pub(crate) fn v1_controller_dir(root: &Path, controller: &str) -> Option<PathBuf> {
    let direct = root.join(controller.strip_prefix("name=").unwrap_or(controller));
    if direct.is_dir() {
        return Some(direct);
    }
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.split(',').any(|c| c == controller))
        })
        .map(|e| e.path())
}

/// Real (non-symlink) hierarchy directories under a v1 root, each once even
/// when combined mounts are symlinked under several names.
pub(crate) fn v1_hierarchies(root: &Path) -> Result<Vec<(String, PathBuf)>, CgroupError> {
    let entries = std::fs::read_dir(root).map_err(|source| CgroupError::Read {
        file: root.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::fs;
    use std::path::Path;

    /// Writes `files` (relative path, content) under `root`.
    pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
    }

    /// A v1 host layout like this one: separate cpu and cpuacct mounts,
    /// name=systemd and a hybrid unified dir.
    pub fn v1_root(root: &Path) {
        for h in [
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
        ] {
            write_tree(root, &[(&format!("{h}/cgroup.procs"), "1\n")]);
        }
        write_tree(
            root,
            &[
                ("unified/cgroup.controllers", ""),
                ("unified/cgroup.procs", "1\n"),
            ],
        );
    }

    pub fn v2_root(root: &Path) {
        write_tree(
            root,
            &[
                (
                    "cgroup.controllers",
                    "cpuset cpu io memory hugetlb pids rdma misc\n",
                ),
                ("cgroup.procs", "1\n"),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn detects_v2() {
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        assert_eq!(detect(d.path()).unwrap(), CgroupMode::V2);
        assert!(!is_hybrid(d.path()));
    }

    #[test]
    fn detects_hybrid_v1() {
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        assert_eq!(detect(d.path()).unwrap(), CgroupMode::V1);
        assert!(is_hybrid(d.path()));
    }

    #[test]
    fn detects_legacy_v1_with_combined_mounts() {
        let d = tempfile::tempdir().unwrap();
        write_tree(
            d.path(),
            &[
                ("cpu,cpuacct/cgroup.procs", "1\n"),
                ("memory/cgroup.procs", "1\n"),
            ],
        );
        assert_eq!(detect(d.path()).unwrap(), CgroupMode::V1);
        assert!(!is_hybrid(d.path()));
        assert_eq!(
            v1_controller_dir(d.path(), "cpuacct").unwrap(),
            d.path().join("cpu,cpuacct")
        );
        assert!(v1_controller_dir(d.path(), "pids").is_none());
    }

    #[test]
    fn nothing_mounted() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(detect(d.path()), Err(CgroupError::NotMounted(_))));
        assert!(matches!(
            detect(&d.path().join("missing")),
            Err(CgroupError::Read { .. })
        ));
    }

    #[test]
    fn paths_are_validated() {
        assert_eq!(
            CgroupPath::new("/corral/c1").unwrap().default_path(),
            Path::new("corral/c1")
        );
        assert!(matches!(
            CgroupPath::new("corral/../../etc"),
            Err(CgroupError::InvalidPath(_))
        ));
    }

    #[test]
    fn parses_proc_cgroup() {
        let p = CgroupPath::from_proc_cgroup(
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/\n",
        )
        .unwrap();
        assert_eq!(p.for_controller("memory"), Path::new("process_api/abc"));
        assert_eq!(p.for_controller("cpuacct"), Path::new("x"));
        assert_eq!(p.for_controller("pids"), Path::new(""));
        assert_eq!(p.for_hierarchy("cpu,cpuacct"), Path::new("x"));
        assert_eq!(p.for_hierarchy("systemd"), Path::new(""));
        assert!(CgroupPath::from_proc_cgroup("garbage\n").is_err());
    }

    /// Reads the real host, whichever layout it has.
    #[test]
    fn real_host() {
        let root = Path::new(DEFAULT_ROOT);
        if !root.exists() {
            eprintln!("skipping real_host: no {DEFAULT_ROOT}");
            return;
        }
        let mode = detect(root).unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = CgroupPath::from_proc_cgroup(&own).unwrap();
        let stats = read_stats(mode, root, &path).unwrap();
        // Our own cgroup holds at least this test's memory, where the host
        // accounts it (a v2 root cgroup has no memory.current).
        let usage_file = match mode {
            CgroupMode::V1 => root
                .join("memory")
                .join(path.for_controller("memory"))
                .join("memory.usage_in_bytes"),
            CgroupMode::V2 => root.join(path.default_path()).join("memory.current"),
        };
        match std::fs::read_to_string(&usage_file) {
            Ok(text) => {
                let direct: u64 = text.trim().parse().unwrap();
                assert!(direct > 0, "{}: {direct}", usage_file.display());
                let read = stats.memory_usage_bytes.unwrap_or_else(|| {
                    panic!("{} exists but no usage was read", usage_file.display())
                });
                assert!(read > 0);
            }
            Err(_) => assert_eq!(stats.memory_usage_bytes, None),
        }
        freezer_state(mode, root, &path).unwrap();
        assert!(exists(mode, root, &path).unwrap());
    }
}
