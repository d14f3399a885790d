//! Removing a container's leftover cgroup directories.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{v1_hierarchies, CgroupError, CgroupMode, CgroupPath};

/// rmdir of a cgroup fails with EBUSY while dying tasks are still attached,
/// which right after a kill is a matter of milliseconds.
const BUSY_RETRIES: u32 = 5;
const BUSY_BACKOFF: Duration = Duration::from_millis(10);

/// Removes the cgroup at `path`, with all its child cgroups, leaf first, in
/// every hierarchy under `root` (every v1 controller, `name=systemd` and the
/// hybrid `unified` dir, or the single v2 tree). Already absent dirs are
/// fine, so this can run after any delete to make sure nothing is left.
///
/// All hierarchies are tried even when one fails; the first error is
/// returned.
pub fn cleanup(mode: CgroupMode, root: &Path, path: &CgroupPath) -> Result<(), CgroupError> {
    if path.is_root() {
        return Err(CgroupError::InvalidPath("/".to_string()));
    }
    let mut first_err = None;
    for dir in targets(mode, root, path)? {
        if let Err(e) = remove_tree(&dir) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Whether the cgroup at `path` still exists in any hierarchy.
pub fn exists(mode: CgroupMode, root: &Path, path: &CgroupPath) -> Result<bool, CgroupError> {
    for dir in targets(mode, root, path)? {
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(CgroupError::Read { file: dir, source }),
        }
    }
    Ok(false)
}

/// The container's directory in each hierarchy. A hierarchy where the path
/// resolves to its root is left out: removing "everything below the root"
/// would take other containers' cgroups with it.
fn targets(mode: CgroupMode, root: &Path, path: &CgroupPath) -> Result<Vec<PathBuf>, CgroupError> {
    Ok(match mode {
        CgroupMode::V2 => {
            let rel = path.default_path();
            if rel.as_os_str().is_empty() {
                Vec::new()
            } else {
                vec![root.join(rel)]
            }
        }
        CgroupMode::V1 => v1_hierarchies(root)?
            .into_iter()
            .filter_map(|(name, dir)| {
                let rel = path.for_hierarchy(&name);
                (!rel.as_os_str().is_empty()).then(|| dir.join(rel))
            })
            .collect(),
    })
}

fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let remove_err = |source| CgroupError::Remove {
        dir: dir.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        // A symlink or file is not a cgroup we made; never follow it.
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(remove_err(e)),
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(remove_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(remove_err)?;
        if entry.file_type().map_err(remove_err)?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    let mut backoff = BUSY_BACKOFF;
    for attempt in 0..=BUSY_RETRIES {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && attempt < BUSY_RETRIES => {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            Err(e) => return Err(remove_err(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::fs;

    fn c1() -> CgroupPath {
        CgroupPath::new("corral/c1").unwrap()
    }

    /// Real cgroupfs dirs can be rmdir'ed despite their interface files; the
    /// fake tree therefore has directories only below the container level.
    fn mkdirs(root: &Path, dirs: &[&str]) {
        for d in dirs {
            fs::create_dir_all(root.join(d)).unwrap();
        }
    }

    #[test]
    fn v1_removes_every_hierarchy_leaf_first() {
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        let hier = [
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
            "unified",
        ];
        for h in hier {
            mkdirs(
                d.path(),
                &[
                    &format!("{h}/corral/c1/init.scope/nested"),
                    &format!("{h}/corral/c2"),
                ],
            );
        }
        assert!(exists(CgroupMode::V1, d.path(), &c1()).unwrap());
        cleanup(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert!(!exists(CgroupMode::V1, d.path(), &c1()).unwrap());
        for h in hier {
            assert!(d.path().join(h).join("corral/c2").is_dir(), "{h}");
        }
        // Idempotent.
        cleanup(CgroupMode::V1, d.path(), &c1()).unwrap();
    }

    #[test]
    fn v1_combined_mount_with_symlinks() {
        let d = tempfile::tempdir().unwrap();
        mkdirs(d.path(), &["cpu,cpuacct/corral/c1/sub", "memory/corral/c1"]);
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpuacct")).unwrap();
        cleanup(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert!(!exists(CgroupMode::V1, d.path(), &c1()).unwrap());
        assert!(!d.path().join("cpu/corral/c1").exists());
        assert!(d.path().join("cpu").is_symlink());
    }

    #[test]
    fn v2_removes_tree() {
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        mkdirs(d.path(), &["corral/c1/a/b", "corral/c1/c", "corral/c2"]);
        assert!(exists(CgroupMode::V2, d.path(), &c1()).unwrap());
        cleanup(CgroupMode::V2, d.path(), &c1()).unwrap();
        assert!(!exists(CgroupMode::V2, d.path(), &c1()).unwrap());
        assert!(d.path().join("corral/c2").is_dir());
    }

    #[test]
    fn failure_is_reported_but_others_cleaned() {
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        mkdirs(d.path(), &["cpu/corral/c1", "memory/corral/c1/sub"]);
        // Stands in for a cgroup that still has tasks: rmdir fails.
        write_tree(d.path(), &[("memory/corral/c1/sub/busy", "")]);
        let err = cleanup(CgroupMode::V1, d.path(), &c1()).unwrap_err();
        assert!(
            matches!(&err, CgroupError::Remove { dir, .. } if dir.ends_with("memory/corral/c1/sub")),
            "{err}"
        );
        assert!(!d.path().join("cpu/corral/c1").exists());
        assert!(exists(CgroupMode::V1, d.path(), &c1()).unwrap());
    }

    #[test]
    fn root_path_refused() {
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        mkdirs(d.path(), &["other"]);
        let root = CgroupPath::new("/").unwrap();
        assert!(matches!(
            cleanup(CgroupMode::V2, d.path(), &root),
            Err(CgroupError::InvalidPath(_))
        ));
        assert!(d.path().join("other").is_dir());
    }

    #[test]
    fn per_controller_root_is_skipped() {
        // memory at /x but cpu at the hierarchy root: only memory/x goes.
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        mkdirs(d.path(), &["memory/x", "cpu/other"]);
        let path = CgroupPath::from_proc_cgroup("4:memory:/x\n1:cpu:/\n0::/\n").unwrap();
        cleanup(CgroupMode::V1, d.path(), &path).unwrap();
        assert!(!d.path().join("memory/x").exists());
        assert!(d.path().join("cpu/other").is_dir());
    }
}
