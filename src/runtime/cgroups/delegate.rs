//! Delegation: handing a container's own cgroup to the container's root user,
//! so an init that manages cgroups (systemd) can make its slices and scopes
//! below it, as LXC does for unprivileged containers. Only the directory and
//! the files that create and move into children are given away: the limits
//! written on the container's cgroup itself stay the host's.

use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupMode, CgroupPath};

/// On cgroup v2: the files systemd's delegation contract names.
const V2_FILES: &[&str] = &["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"];

/// On cgroup v1: what moving tasks into a child needs.
const V1_FILES: &[&str] = &["cgroup.procs", "tasks"];

/// Gives the cgroup `path` (relative to `root`) to `uid`:`gid`. On v2 the one
/// unified directory; on v1 the directory in every hierarchy under `root`
/// where the container has one (named hierarchies such as `systemd`
/// included; the controller-less `unified` tree of a hybrid host too).
/// Returns what was changed. A hierarchy without the container's directory
/// is skipped; on v2 the directory must exist.
pub fn delegate(
    root: &Path,
    mode: CgroupMode,
    path: &str,
    uid: u32,
    gid: u32,
) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = CgroupPath::new(path)?;
    let rel = rel.default_path();
    if rel.as_os_str().is_empty() {
        // Never the root of a hierarchy.
        return Err(CgroupError::InvalidPath(path.to_string()));
    }
    let mut changed = Vec::new();
    match mode {
        CgroupMode::V2 => {
            let dir = root.join(rel);
            if !dir.is_dir() {
                return Err(CgroupError::NotFound(path.to_string()));
            }
            chown_group(&dir, V2_FILES, uid, gid, &mut changed)?;
        }
        CgroupMode::V1 => {
            // `cpu,cpuacct` style links name a hierarchy twice: real
            // directories only.
            let hierarchies = super::v1_hierarchies(root)?;
            for (name, h) in hierarchies {
                let dir = h.join(rel);
                if !dir.is_dir() {
                    continue;
                }
                let files: &[&str] = if name == "unified" {
                    V2_FILES
                } else {
                    V1_FILES
                };
                chown_group(&dir, files, uid, gid, &mut changed)?;
            }
            if changed.is_empty() {
                return Err(CgroupError::NotFound(path.to_string()));
            }
        }
    }
    Ok(changed)
}

fn chown_group(
    dir: &Path,
    files: &[&str],
    uid: u32,
    gid: u32,
    changed: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let chown = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|source| CgroupError::Delegate {
            path: p.to_path_buf(),
            source,
        })
    };
    chown(dir)?;
    changed.push(dir.to_path_buf());
    for f in files {
        let p = dir.join(f);
        // Not every kernel has every file (cgroup.threads is 4.14+).
        if p.symlink_metadata().is_ok_and(|m| m.is_file()) {
            chown(&p)?;
            changed.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn owner(p: &Path) -> (u32, u32) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    }

    fn touch(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), "").unwrap();
        }
    }

    #[test]
    fn v2_gives_the_directory_and_its_delegation_files_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        touch(root, &["cgroup.controllers", "cgroup.procs"]);
        let dir = root.join("corral/u1");
        touch(
            &dir,
            &[
                "cgroup.procs",
                "cgroup.subtree_control",
                "cgroup.threads",
                "memory.max",
                "pids.max",
            ],
        );
        let changed = delegate(root, CgroupMode::V2, "/corral/u1", 100_000, 100_000).unwrap();
        assert_eq!(changed.len(), 4, "{changed:?}");
        for p in [
            dir.clone(),
            dir.join("cgroup.procs"),
            dir.join("cgroup.subtree_control"),
            dir.join("cgroup.threads"),
        ] {
            assert_eq!(owner(&p), (100_000, 100_000), "{}", p.display());
        }
        // The limits stay the host's, and so does the parent.
        assert_eq!(owner(&dir.join("memory.max")), (0, 0));
        assert_eq!(owner(&dir.join("pids.max")), (0, 0));
        assert_eq!(owner(&root.join("corral")), (0, 0));
    }

    #[test]
    fn v2_without_the_cgroup_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        touch(t.path(), &["cgroup.controllers"]);
        let e = delegate(t.path(), CgroupMode::V2, "/corral/nope", 1, 1).unwrap_err();
        assert!(matches!(e, CgroupError::NotFound(_)), "{e}");
    }

    #[test]
    fn v1_gives_every_hierarchy_the_container_has() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for h in ["systemd", "memory", "pids", "unified"] {
            touch(&root.join(h), &["cgroup.procs"]);
            touch(
                &root.join(h).join("corral/u1"),
                &["cgroup.procs", "tasks", "cgroup.subtree_control"],
            );
        }
        std::fs::write(root.join("memory/corral/u1/memory.limit_in_bytes"), "").unwrap();
        // A hierarchy where runc made nothing for the container.
        touch(&root.join("freezer"), &["cgroup.procs"]);
        // A link naming a hierarchy twice is not followed.
        std::os::unix::fs::symlink("memory", root.join("memory,alias")).unwrap();
        let changed = delegate(root, CgroupMode::V1, "corral/u1", 7, 8).unwrap();
        for h in ["systemd", "memory", "pids", "unified"] {
            let d = root.join(h).join("corral/u1");
            assert_eq!(owner(&d), (7, 8), "{h}");
            assert_eq!(owner(&d.join("cgroup.procs")), (7, 8), "{h}");
        }
        assert_eq!(owner(&root.join("systemd/corral/u1/tasks")), (7, 8));
        // v1 children need no subtree_control; unified is a v2 tree.
        assert_eq!(
            owner(&root.join("systemd/corral/u1/cgroup.subtree_control")),
            (0, 0)
        );
        assert_eq!(
            owner(&root.join("unified/corral/u1/cgroup.subtree_control")),
            (7, 8)
        );
        assert_eq!(
            owner(&root.join("memory/corral/u1/memory.limit_in_bytes")),
            (0, 0)
        );
        assert!(!root.join("freezer/corral/u1").exists());
        assert!(changed
            .iter()
            .all(|p| !p.starts_with(root.join("memory,alias"))));
    }

    #[test]
    fn v1_without_any_cgroup_and_bad_paths_are_errors() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("systemd"), &["cgroup.procs"]);
        assert!(matches!(
            delegate(t.path(), CgroupMode::V1, "/corral/u1", 1, 1),
            Err(CgroupError::NotFound(_))
        ));
        assert!(matches!(
            delegate(t.path(), CgroupMode::V1, "/corral/../..", 1, 1),
            Err(CgroupError::InvalidPath(_))
        ));
        assert!(matches!(
            delegate(t.path(), CgroupMode::V1, "/", 1, 1),
            Err(CgroupError::InvalidPath(_))
        ));
    }
}
