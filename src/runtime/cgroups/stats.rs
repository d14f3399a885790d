//! Reading a container's resource statistics from its cgroup.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{v1_controller_dir, CgroupError, CgroupMode, CgroupPath};

/// Values at or above this are "no limit" on v1: the kernel reports
/// `LONG_MAX` rounded down to the page size (9223372036854771712 with 4 KiB
/// pages, a different number with 64 KiB pages), and no real limit is
/// anywhere near 4 EiB.
const V1_UNLIMITED: u64 = 1 << 62;

/// Resource usage and limits of one cgroup. Every field is `None` when the
/// file behind it does not exist (controller not enabled, old kernel, root
/// cgroup); limits are also `None` when unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Total CPU time consumed (v1 `cpuacct.usage`, v2 `cpu.stat` usage_usec).
    pub cpu_usage_ns: Option<u64>,
    /// CFS quota per period; `None` when unlimited.
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    /// v1 `cpu.shares` (default 1024).
    pub cpu_shares: Option<u64>,
    /// v2 `cpu.weight` (default 100).
    pub cpu_weight: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// Peak usage (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub memory_max_usage_bytes: Option<u64>,
    /// Swap in use, excluding memory (on v1 derived from `memory.memsw.*`).
    pub swap_usage_bytes: Option<u64>,
    /// Swap allowed on top of memory (on v1 memsw limit minus memory limit).
    pub swap_limit_bytes: Option<u64>,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kills: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices, summed over devices.
    pub blkio_read_bytes: Option<u64>,
    /// Bytes written to block devices, summed over devices.
    pub blkio_write_bytes: Option<u64>,
}

/// Reads the stats of the cgroup at `path` under `root`.
///
/// Fails with [`CgroupError::NotFound`] when the cgroup does not exist at
/// all, so a wrong path is not mistaken for an idle container.
pub fn read_stats(mode: CgroupMode, root: &Path, path: &CgroupPath) -> Result<Stats, CgroupError> {
    match mode {
        CgroupMode::V1 => read_v1(root, path),
        CgroupMode::V2 => read_v2(root, path),
    }
}

fn read_v1(root: &Path, path: &CgroupPath) -> Result<Stats, CgroupError> {
    let dir = |c: &str| {
        v1_controller_dir(root, c)
            .map(|d| d.join(path.for_controller(c)))
            .filter(|d| d.is_dir())
    };
    let memory = dir("memory");
    let cpu = dir("cpu");
    let cpuacct = dir("cpuacct");
    let pids = dir("pids");
    let blkio = dir("blkio");
    if [&memory, &cpu, &cpuacct, &pids, &blkio]
        .iter()
        .all(|d| d.is_none())
    {
        return Err(CgroupError::NotFound(path.display()));
    }
    let mem = memory.as_deref();

    let memory_limit = read(mem, "memory.limit_in_bytes", parse_v1_limit)?.flatten();
    let memory_usage = read(mem, "memory.usage_in_bytes", parse_u64)?;
    let memsw_usage = read(mem, "memory.memsw.usage_in_bytes", parse_u64)?;
    let memsw_limit = read(mem, "memory.memsw.limit_in_bytes", parse_v1_limit)?.flatten();
    let (blkio_read, blkio_write) = match read(
        blkio.as_deref(),
        "blkio.throttle.io_service_bytes",
        parse_blkio_v1,
    )? {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };

    Ok(Stats {
        cpu_usage_ns: read(cpuacct.as_deref(), "cpuacct.usage", parse_u64)?,
        cpu_quota_us: read(cpu.as_deref(), "cpu.cfs_quota_us", parse_v1_quota)?.flatten(),
        cpu_period_us: read(cpu.as_deref(), "cpu.cfs_period_us", parse_u64)?,
        cpu_shares: read(cpu.as_deref(), "cpu.shares", parse_u64)?,
        cpu_weight: None,
        memory_usage_bytes: memory_usage,
        memory_limit_bytes: memory_limit,
        memory_max_usage_bytes: read(mem, "memory.max_usage_in_bytes", parse_u64)?,
        swap_usage_bytes: memsw_usage
            .zip(memory_usage)
            .map(|(sw, m)| sw.saturating_sub(m)),
        swap_limit_bytes: memsw_limit
            .zip(memory_limit)
            .map(|(sw, m)| sw.saturating_sub(m)),
        oom_kills: read(mem, "memory.oom_control", |t| parse_keyed(t, "oom_kill"))?.flatten(),
        pids_current: read(pids.as_deref(), "pids.current", parse_u64)?,
        pids_limit: read(pids.as_deref(), "pids.max", parse_max)?.flatten(),
        blkio_read_bytes: blkio_read,
        blkio_write_bytes: blkio_write,
    })
}

fn read_v2(root: &Path, path: &CgroupPath) -> Result<Stats, CgroupError> {
    let dir = root.join(path.default_path());
    if !dir.is_dir() {
        return Err(CgroupError::NotFound(path.display()));
    }
    let d = Some(dir.as_path());
    let (quota, period) = match read(d, "cpu.max", parse_cpu_max)? {
        Some((q, p)) => (q, Some(p)),
        None => (None, None),
    };
    let (io_read, io_write) = match read(d, "io.stat", parse_io_stat)? {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    let usage_usec = read(d, "cpu.stat", |t| parse_keyed(t, "usage_usec"))?.flatten();
    Ok(Stats {
        cpu_usage_ns: usage_usec.map(|u| u.saturating_mul(1000)),
        cpu_quota_us: quota,
        cpu_period_us: period,
        cpu_shares: None,
        cpu_weight: read(d, "cpu.weight", parse_u64)?,
        memory_usage_bytes: read(d, "memory.current", parse_u64)?,
        memory_limit_bytes: read(d, "memory.max", parse_max)?.flatten(),
        memory_max_usage_bytes: read(d, "memory.peak", parse_u64)?,
        swap_usage_bytes: read(d, "memory.swap.current", parse_u64)?,
        swap_limit_bytes: read(d, "memory.swap.max", parse_max)?.flatten(),
        oom_kills: read(d, "memory.events", |t| parse_keyed(t, "oom_kill"))?.flatten(),
        pids_current: read(d, "pids.current", parse_u64)?,
        pids_limit: read(d, "pids.max", parse_max)?.flatten(),
        blkio_read_bytes: io_read,
        blkio_write_bytes: io_write,
    })
}

/// Reads `dir/name` and parses it; a missing dir or file is `None`, content
/// that does not parse is an error naming the file.
pub(crate) fn read<T>(
    dir: Option<&Path>,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, CgroupError> {
    let Some(dir) = dir else { return Ok(None) };
    let file = dir.join(name);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CgroupError::Read { file, source }),
    };
    parse(&text).map(Some).map_err(|reason| CgroupError::Parse {
        file: PathBuf::from(&file),
        reason,
    })
}

pub(crate) fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse().map_err(|_| format!("invalid number {t:?}"))
}

/// `max` or a number.
fn parse_max(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        _ => parse_u64(text).map(Some),
    }
}

fn parse_v1_limit(text: &str) -> Result<Option<u64>, String> {
    let v = parse_u64(text)?;
    Ok((v < V1_UNLIMITED).then_some(v))
}

/// `-1` means unlimited.
fn parse_v1_quota(text: &str) -> Result<Option<i64>, String> {
    let t = text.trim();
    match t.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(v) if v > 0 => Ok(Some(v)),
        _ => Err(format!("invalid quota {t:?}")),
    }
}

/// `"max 100000"` or `"50000 100000"`.
fn parse_cpu_max(text: &str) -> Result<(Option<i64>, u64), String> {
    let t = text.trim();
    let mut parts = t.split_whitespace();
    let (Some(quota), period, None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("invalid cpu.max {t:?}"));
    };
    // The kernel always prints the period, but writing only the quota is
    // allowed, and then it stays at the 100ms default.
    let period = period.map_or(Ok(100_000), parse_u64)?;
    let quota = match quota {
        "max" => None,
        q => Some(
            q.parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("invalid cpu.max {t:?}"))?,
        ),
    };
    Ok((quota, period))
}

/// Value of `key` in a flat keyed file (`key value` per line); `None` when
/// the key is absent (older kernels lack e.g. oom_kill).
pub(crate) fn parse_keyed(text: &str, key: &str) -> Result<Option<u64>, String> {
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(key) {
            continue;
        }
        return match (parts.next(), parts.next()) {
            (Some(v), None) => parse_u64(v).map(Some),
            _ => Err(format!("invalid {key} line {line:?}")),
        };
    }
    Ok(None)
}

/// Sums the Read and Write rows of `blkio.throttle.io_service_bytes`:
/// `8:0 Read 1234` per device and op, then a `Total N` line.
fn parse_blkio_v1(text: &str) -> Result<(u64, u64), String> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] | ["Total", _] => {}
            [_dev, op, value] => {
                let v = parse_u64(value)?;
                match *op {
                    "Read" => read = read.saturating_add(v),
                    "Write" => write = write.saturating_add(v),
                    _ => {}
                }
            }
            _ => return Err(format!("invalid line {line:?}")),
        }
    }
    Ok((read, write))
}

/// Sums rbytes and wbytes over the devices of `io.stat`:
/// `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
fn parse_io_stat(text: &str) -> Result<(u64, u64), String> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        for field in line.split_whitespace().skip(1) {
            let Some((key, value)) = field.split_once('=') else {
                return Err(format!("invalid field {field:?}"));
            };
            match key {
                "rbytes" => read = read.saturating_add(parse_u64(value)?),
                "wbytes" => write = write.saturating_add(parse_u64(value)?),
                _ => {}
            }
        }
    }
    Ok((read, write))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const UNLIMITED_4K: &str = "9223372036854771712\n";

    fn c1() -> CgroupPath {
        CgroupPath::new("/corral/c1").unwrap()
    }

    fn v1_container(root: &Path) {
        v1_root(root);
        write_tree(
            root,
            &[
                ("memory/corral/c1/memory.usage_in_bytes", "104857600\n"),
                ("memory/corral/c1/memory.limit_in_bytes", "536870912\n"),
                ("memory/corral/c1/memory.max_usage_in_bytes", "209715200\n"),
                (
                    "memory/corral/c1/memory.memsw.usage_in_bytes",
                    "115343360\n",
                ),
                (
                    "memory/corral/c1/memory.memsw.limit_in_bytes",
                    "1073741824\n",
                ),
                (
                    "memory/corral/c1/memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
                ),
                ("cpuacct/corral/c1/cpuacct.usage", "278428728954\n"),
                ("cpu/corral/c1/cpu.cfs_quota_us", "50000\n"),
                ("cpu/corral/c1/cpu.cfs_period_us", "100000\n"),
                ("cpu/corral/c1/cpu.shares", "512\n"),
                ("pids/corral/c1/pids.current", "17\n"),
                ("pids/corral/c1/pids.max", "1000\n"),
                (
                    "blkio/corral/c1/blkio.throttle.io_service_bytes",
                    "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n\
                     8:0 Discard 0\n8:0 Total 12288\n8:16 Read 1000\n8:16 Write 24\n\
                     8:16 Total 1024\nTotal 13312\n",
                ),
            ],
        );
    }

    fn v2_container(root: &Path) {
        v2_root(root);
        write_tree(
            root,
            &[
                ("corral/c1/memory.current", "104857600\n"),
                ("corral/c1/memory.max", "536870912\n"),
                ("corral/c1/memory.peak", "209715200\n"),
                ("corral/c1/memory.swap.current", "10485760\n"),
                ("corral/c1/memory.swap.max", "268435456\n"),
                (
                    "corral/c1/memory.events",
                    "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n",
                ),
                (
                    "corral/c1/cpu.stat",
                    "usage_usec 273664371\nuser_usec 197877692\nsystem_usec 75786679\n\
                     nr_periods 10\nnr_throttled 1\nthrottled_usec 5\n",
                ),
                ("corral/c1/cpu.max", "50000 100000\n"),
                ("corral/c1/cpu.weight", "100\n"),
                ("corral/c1/pids.current", "17\n"),
                ("corral/c1/pids.max", "1000\n"),
                (
                    "corral/c1/io.stat",
                    "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                     8:16 rbytes=1000 wbytes=24 rios=1 wios=1 dbytes=0 dios=0\n",
                ),
            ],
        );
    }

    #[test]
    fn v1_every_field() {
        let d = tempfile::tempdir().unwrap();
        v1_container(d.path());
        let s = read_stats(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert_eq!(
            s,
            Stats {
                cpu_usage_ns: Some(278_428_728_954),
                cpu_quota_us: Some(50_000),
                cpu_period_us: Some(100_000),
                cpu_shares: Some(512),
                cpu_weight: None,
                memory_usage_bytes: Some(104_857_600),
                memory_limit_bytes: Some(536_870_912),
                memory_max_usage_bytes: Some(209_715_200),
                swap_usage_bytes: Some(10_485_760),
                swap_limit_bytes: Some(536_870_912),
                oom_kills: Some(3),
                pids_current: Some(17),
                pids_limit: Some(1000),
                blkio_read_bytes: Some(5096),
                blkio_write_bytes: Some(8216),
            }
        );
    }

    #[test]
    fn v1_unlimited() {
        let d = tempfile::tempdir().unwrap();
        v1_container(d.path());
        write_tree(
            d.path(),
            &[
                ("memory/corral/c1/memory.limit_in_bytes", UNLIMITED_4K),
                ("memory/corral/c1/memory.memsw.limit_in_bytes", UNLIMITED_4K),
                ("cpu/corral/c1/cpu.cfs_quota_us", "-1\n"),
                ("pids/corral/c1/pids.max", "max\n"),
            ],
        );
        let s = read_stats(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.swap_limit_bytes, None);
        assert_eq!(s.cpu_quota_us, None);
        assert_eq!(s.cpu_period_us, Some(100_000));
        assert_eq!(s.pids_limit, None);
        // 64 KiB page kernels round LONG_MAX differently.
        write_tree(
            d.path(),
            &[(
                "memory/corral/c1/memory.limit_in_bytes",
                "9223372036854710272\n",
            )],
        );
        let s = read_stats(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert_eq!(s.memory_limit_bytes, None);
    }

    #[test]
    fn v1_combined_cpu_cpuacct_mount() {
        let d = tempfile::tempdir().unwrap();
        write_tree(
            d.path(),
            &[
                ("cpu,cpuacct/cgroup.procs", ""),
                ("cpu,cpuacct/corral/c1/cpuacct.usage", "42\n"),
                ("cpu,cpuacct/corral/c1/cpu.shares", "1024\n"),
            ],
        );
        let s = read_stats(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert_eq!(s.cpu_usage_ns, Some(42));
        assert_eq!(s.cpu_shares, Some(1024));
        assert_eq!(s.memory_usage_bytes, None);
    }

    #[test]
    fn v1_missing_files_are_none() {
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        std::fs::create_dir_all(d.path().join("memory/corral/c1")).unwrap();
        let s = read_stats(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert_eq!(s, Stats::default());
        // Older kernels have no oom_kill line.
        write_tree(
            d.path(),
            &[(
                "memory/corral/c1/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\n",
            )],
        );
        let s = read_stats(CgroupMode::V1, d.path(), &c1()).unwrap();
        assert_eq!(s.oom_kills, None);
    }

    #[test]
    fn v1_garbage_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        v1_container(d.path());
        write_tree(
            d.path(),
            &[("memory/corral/c1/memory.usage_in_bytes", "lots\n")],
        );
        let err = read_stats(CgroupMode::V1, d.path(), &c1()).unwrap_err();
        let file = d.path().join("memory/corral/c1/memory.usage_in_bytes");
        assert!(
            matches!(&err, CgroupError::Parse { file: f, .. } if *f == file),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("cannot parse {}: invalid number \"lots\"", file.display())
        );
        write_tree(
            d.path(),
            &[("memory/corral/c1/memory.usage_in_bytes", "1\n")],
        );
        write_tree(d.path(), &[("cpu/corral/c1/cpu.cfs_quota_us", "-7\n")]);
        assert!(matches!(
            read_stats(CgroupMode::V1, d.path(), &c1()),
            Err(CgroupError::Parse { .. })
        ));
    }

    #[test]
    fn missing_cgroup_is_not_found() {
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        assert!(matches!(
            read_stats(CgroupMode::V1, d.path(), &c1()),
            Err(CgroupError::NotFound(_))
        ));
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        assert!(matches!(
            read_stats(CgroupMode::V2, d.path(), &c1()),
            Err(CgroupError::NotFound(_))
        ));
    }

    #[test]
    fn v2_every_field() {
        let d = tempfile::tempdir().unwrap();
        v2_container(d.path());
        let s = read_stats(CgroupMode::V2, d.path(), &c1()).unwrap();
        assert_eq!(
            s,
            Stats {
                cpu_usage_ns: Some(273_664_371_000),
                cpu_quota_us: Some(50_000),
                cpu_period_us: Some(100_000),
                cpu_shares: None,
                cpu_weight: Some(100),
                memory_usage_bytes: Some(104_857_600),
                memory_limit_bytes: Some(536_870_912),
                memory_max_usage_bytes: Some(209_715_200),
                swap_usage_bytes: Some(10_485_760),
                swap_limit_bytes: Some(268_435_456),
                oom_kills: Some(2),
                pids_current: Some(17),
                pids_limit: Some(1000),
                blkio_read_bytes: Some(5096),
                blkio_write_bytes: Some(8216),
            }
        );
    }

    #[test]
    fn v2_unlimited() {
        let d = tempfile::tempdir().unwrap();
        v2_container(d.path());
        write_tree(
            d.path(),
            &[
                ("corral/c1/memory.max", "max\n"),
                ("corral/c1/memory.swap.max", "max\n"),
                ("corral/c1/cpu.max", "max 100000\n"),
                ("corral/c1/pids.max", "max\n"),
                ("corral/c1/io.stat", ""),
            ],
        );
        let s = read_stats(CgroupMode::V2, d.path(), &c1()).unwrap();
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.swap_limit_bytes, None);
        assert_eq!(s.cpu_quota_us, None);
        assert_eq!(s.cpu_period_us, Some(100_000));
        assert_eq!(s.pids_limit, None);
        assert_eq!(
            (s.blkio_read_bytes, s.blkio_write_bytes),
            (Some(0), Some(0))
        );
    }

    #[test]
    fn v2_missing_files_are_none() {
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        std::fs::create_dir_all(d.path().join("corral/c1")).unwrap();
        let s = read_stats(CgroupMode::V2, d.path(), &c1()).unwrap();
        assert_eq!(s, Stats::default());
    }

    #[test]
    fn v2_garbage_names_the_file() {
        for (file, content) in [
            ("cpu.max", "fifty 100000\n"),
            ("cpu.max", "1 2 3\n"),
            ("memory.max", "lots\n"),
            ("memory.events", "oom_kill many\n"),
            ("io.stat", "8:0 rbytes\n"),
            ("cpu.stat", "usage_usec -1\n"),
        ] {
            let d = tempfile::tempdir().unwrap();
            v2_container(d.path());
            write_tree(d.path(), &[(&format!("corral/c1/{file}"), content)]);
            let err = read_stats(CgroupMode::V2, d.path(), &c1()).unwrap_err();
            let want = d.path().join("corral/c1").join(file);
            assert!(
                matches!(&err, CgroupError::Parse { file: f, .. } if *f == want),
                "{file}: {err}"
            );
        }
    }
}
