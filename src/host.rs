//! Host facts: uptime, load average, memory total, disk total and online CPUs,
//! read from `/proc`, `/sys` and the file system. Readers take the root they
//! read under, so tests point them at fixture files.

use std::path::Path;

use crate::cpuset::CpuSet;

/// Where the kernel's process information is mounted.
pub const PROC: &str = "/proc";
/// Where sysfs is mounted.
pub const SYS: &str = "/sys";

/// Seconds since boot (`<proc>/uptime`, first field).
pub fn uptime_secs(proc: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(proc.join("uptime")).ok()?;
    text.split_whitespace().next()?.parse::<f64>().ok()
}

/// The 1, 5 and 15 minute load averages as the kernel writes them
/// (`<proc>/loadavg`); fewer when the file is short or missing.
pub fn load_average(proc: &Path) -> Vec<String> {
    std::fs::read_to_string(proc.join("loadavg"))
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(str::to_string)
        .collect()
}

/// Total memory in KiB (`MemTotal` of `<proc>/meminfo`).
pub fn mem_total_kib(proc: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc.join("meminfo")).ok()?;
    text.lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
}

/// Size in bytes of the file system holding `path`.
pub fn disk_total_bytes(path: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(path)
        .ok()
        .map(|s| s.blocks() * s.fragment_size())
}

/// How many CPUs are online (at least 1).
pub fn online_cpu_count() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus > 0 {
        cpus as u64
    } else {
        1
    }
}

/// The online CPUs, when the kernel says (`<sys>/devices/system/cpu/online`).
pub fn online_cpus(sys: &Path) -> Option<CpuSet> {
    let text = std::fs::read_to_string(sys.join("devices/system/cpu/online")).ok()?;
    CpuSet::parse(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn uptime_and_load_from_proc_files() {
        let d = fixture(&[
            ("uptime", "93784.52 180000.10\n"),
            ("loadavg", "0.52 0.58 0.59 2/1034 12345\n"),
        ]);
        assert_eq!(uptime_secs(d.path()), Some(93784.52));
        assert_eq!(load_average(d.path()), ["0.52", "0.58", "0.59"]);
    }

    #[test]
    fn missing_or_garbled_files_give_nothing() {
        let d = fixture(&[("uptime", "soon\n"), ("meminfo", "MemFree: 10 kB\n")]);
        assert_eq!(uptime_secs(d.path()), None);
        assert!(load_average(d.path()).is_empty());
        assert_eq!(mem_total_kib(d.path()), None);
        assert_eq!(online_cpus(d.path()), None);
    }

    #[test]
    fn memory_total_from_meminfo() {
        let d = fixture(&[(
            "meminfo",
            "MemTotal:       16318480 kB\nMemFree:         1234 kB\n",
        )]);
        assert_eq!(mem_total_kib(d.path()), Some(16_318_480));
    }

    #[test]
    fn online_cpus_from_sysfs() {
        let d = fixture(&[("devices/system/cpu/online", "0-3,6\n")]);
        let set = online_cpus(d.path()).unwrap();
        assert_eq!(set.len(), 5);
        assert!(online_cpu_count() >= 1);
    }

    #[test]
    fn disk_total_of_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(disk_total_bytes(d.path()).unwrap() > 0);
        assert_eq!(disk_total_bytes(&d.path().join("missing")), None);
    }
}
