//! Parsing cgroup v1 mounts out of `/proc/self/mountinfo`.

use std::path::PathBuf;

/// Controllers the kernel knows on v1; any other super option of a cgroup
/// mount (`rw`, `xattr`, `release_agent=...`, ...) is a mount flag.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "debug",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// One cgroup v1 hierarchy mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Controllers bound to the hierarchy, e.g. `["cpu", "cpuacct"]` for a
    /// combined mount or `["name=systemd"]` for a named one.
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub mount_point: PathBuf,
    /// The cgroup of the hierarchy shown at the mount point (`/` on a host,
    /// the container's own cgroup inside a container).
    pub root: String,
}

impl V1Mount {
    /// Whether `controller` (e.g. `cpuacct` or `name=systemd`) is bound here.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Lists the cgroup v1 hierarchies in a `/proc/<pid>/mountinfo` text. Lines
/// that are not cgroup v1 mounts, or are malformed, are skipped.
pub fn v1_mounts(mountinfo: &str) -> Vec<V1Mount> {
    mountinfo.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<V1Mount> {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split_whitespace().collect();
    let right: Vec<&str> = right.split_whitespace().collect();
    if left.len() < 6 || right.len() < 3 || right[0] != "cgroup" {
        return None;
    }
    let controllers: Vec<String> = right[2]
        .split(',')
        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
        .map(str::to_string)
        .collect();
    if controllers.is_empty() {
        return None;
    }
    Some(V1Mount {
        controllers,
        mount_point: PathBuf::from(unescape(left[4])),
        root: unescape(left[3]),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space and so on).
fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&crate::fsutil::unescape_mountinfo(s)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host: separate cpu and cpuacct mounts plus name=systemd.
    const SEPARATE: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A typical systemd production host with combined mounts.
    const COMBINED: &str = "\
25 18 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:30 /lxc/c1 /sys/fs/cgroup/my\\040mem rw,nosuid shared:16 - cgroup cgroup rw,memory,release_agent=/x
";

    #[test]
    fn separate_mounts() {
        let m = v1_mounts(SEPARATE);
        assert_eq!(m.len(), 5);
        let cpu = m.iter().find(|m| m.has("cpu")).unwrap();
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(cpu.controllers, vec!["cpu"]);
        let acct = m.iter().find(|m| m.has("cpuacct")).unwrap();
        assert_eq!(acct.mount_point, PathBuf::from("/sys/fs/cgroup/cpuacct"));
        let sd = m.iter().find(|m| m.has("name=systemd")).unwrap();
        assert_eq!(sd.mount_point, PathBuf::from("/sys/fs/cgroup/systemd"));
        assert_eq!(sd.root, "/");
    }

    #[test]
    fn combined_mounts() {
        let m = v1_mounts(COMBINED);
        assert_eq!(m.len(), 4);
        let cpu = m.iter().find(|m| m.has("cpu")).unwrap();
        assert!(cpu.has("cpuacct"));
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        let sd = m.iter().find(|m| m.has("name=systemd")).unwrap();
        assert_eq!(sd.controllers, vec!["name=systemd"]);
        let mem = m.iter().find(|m| m.has("memory")).unwrap();
        assert_eq!(mem.controllers, vec!["memory"]);
        assert_eq!(mem.mount_point, PathBuf::from("/sys/fs/cgroup/my mem"));
        assert_eq!(mem.root, "/lxc/c1");
    }

    #[test]
    fn junk_lines_skipped() {
        assert!(v1_mounts("garbage\n\n1 2 3 - cgroup\n").is_empty());
    }

    #[test]
    fn real_mountinfo_parses() {
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        // This host mounts cpu and cpuacct separately; whatever the layout,
        // memory must be somewhere on a v1 host.
        let m = v1_mounts(&text);
        if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
            assert!(m.iter().any(|m| m.has("memory")));
        }
    }
}
