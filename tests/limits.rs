//! Limits seen from inside real runc containers.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{read_cgroup, Daemon};

#[test]
fn limits_and_id_map_are_visible_inside() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&[
        "launch",
        "busybox",
        "lim",
        "--cpus",
        "0.5",
        "--memory",
        "64MiB",
        "--pids",
        "50",
        "--cpu-shares",
        "512",
    ]);

    let mem = read_cgroup(&d, "lim", "memory/memory.limit_in_bytes", "memory.max");
    assert_eq!(mem, (64u64 << 20).to_string());
    let cpu = read_cgroup(&d, "lim", "cpu/cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == "50000" || cpu == "50000 100000", "cpu quota {cpu}");
    let pids = read_cgroup(&d, "lim", "pids/pids.max", "pids.max");
    assert_eq!(pids, "50");
    let shares = read_cgroup(&d, "lim", "cpu/cpu.shares", "cpu.weight");
    assert!(shares == "512" || !shares.is_empty(), "cpu shares {shares}");

    // Unprivileged: container root is a non-root host id, from the store.
    let uid_map = d.exec("lim", "cat /proc/self/uid_map");
    let fields: Vec<u64> = uid_map
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields[0], 0);
    assert!(fields[1] >= 1_000_000, "host base {}", fields[1]);
    assert_eq!(fields[2], 65536);
    let inst = d.instance("lim");
    assert_eq!(inst["idmap"]["host_base"].as_u64(), Some(fields[1]));
    // The root filesystem is owned by the mapped root: root inside sees 0.
    assert_eq!(d.exec("lim", "stat -c %u /etc/passwd").trim(), "0");
    assert_eq!(d.exec("lim", "hostname").trim(), "lim");
    // Its own namespaces.
    for ns in ["pid", "net", "mnt", "uts", "ipc", "user"] {
        let inside = d.exec("lim", &format!("readlink /proc/1/ns/{ns}"));
        let outside = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(
            inside.trim(),
            outside.to_string_lossy(),
            "{ns} namespace shared with the host"
        );
    }
}

#[test]
fn second_instance_gets_a_different_id_range() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "one"]);
    d.ok(&["launch", "busybox", "two"]);
    let a = d.instance("one")["idmap"]["host_base"].as_u64().unwrap();
    let b = d.instance("two")["idmap"]["host_base"].as_u64().unwrap();
    assert!(a.abs_diff(b) >= 65536, "ranges overlap: {a} {b}");
}

#[test]
fn memory_hog_is_oom_killed_inside_only() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "hog", "--memory", "32MiB"]);
    let pid_before = d.instance("hog")["state"]["pid"].as_i64().unwrap();
    // dd allocates one 128 MiB buffer and fills it: far over the limit.
    let out = d.cli(&[
        "exec",
        "hog",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=128M",
        "count=1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "hog should be SIGKILLed: {out:?}"
    );
    let inst = d.instance("hog");
    assert_eq!(inst["status"], "Running", "the container survives its hog");
    assert_eq!(inst["state"]["pid"].as_i64(), Some(pid_before));
    assert!(
        inst["state"]["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "{inst}"
    );
    // The host and the daemon are fine.
    assert_eq!(d.exec("hog", "echo alive").trim(), "alive");
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "bomb", "--pids", "30"]);
    // Forks 100 sleepers; the shell's builtins read the count without forking.
    let out = d.exec(
        "bomb",
        "(for i in $(seq 100); do sleep 5 & done) 2>/dev/null; \
         if [ -f /sys/fs/cgroup/pids.current ]; then f=/sys/fs/cgroup/pids.current; else f=/sys/fs/cgroup/pids/pids.current; fi; \
         read n < $f; echo $n",
    );
    let n: u64 = out.trim().parse().unwrap();
    assert!(n <= 30, "{n} processes, limit 30");
    assert!(n >= 20, "the bomb should have filled the limit, got {n}");
    let inst = d.instance("bomb");
    assert!(inst["state"]["processes"].as_u64().unwrap() <= 30);
    assert_eq!(inst["state"]["processes_limit"].as_u64(), Some(30));
}

#[test]
fn default_pids_limit_comes_from_config() {
    require_host!();
    let d = Daemon::start_with("default_pids_limit = 77");
    d.import_busybox();
    d.ok(&["launch", "busybox", "dflt"]);
    assert_eq!(read_cgroup(&d, "dflt", "pids/pids.max", "pids.max"), "77");
}

#[test]
fn writing_past_the_root_disk_fails_inside_only() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "small", "--disk", "64MiB"]);
    d.ok(&["launch", "busybox", "free"]);
    let uuid = d.uuid("small");
    let layer = d.state.join("instances").join(&uuid).join("layer.img");
    assert!(layer.is_file(), "no root disk at {}", layer.display());
    // 100 MiB into a 64 MiB root: the write stops with ENOSPC inside.
    let out = d.exec(
        "small",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?; sync",
    );
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    // What it wrote stays within its disk; the host holds no more than that.
    let held = std::fs::metadata(&layer).unwrap().blocks() * 512;
    assert!(held <= 64 << 20, "the root disk file holds {held} bytes");
    // The image's own files are still readable, and small writes still fail
    // until something is freed.
    assert_eq!(
        d.exec("small", "rm /fill && echo ok > /etc/ok && cat /etc/ok")
            .trim(),
        "ok"
    );
    // The other instance writes as much as it likes.
    let out = d.exec(
        "free",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?",
    );
    assert!(out.contains("rc=0"), "{out}");
    // The size and the data survive a stop and a start.
    d.ok(&["stop", "small"]);
    d.ok(&["start", "small"]);
    assert_eq!(d.exec("small", "cat /etc/ok").trim(), "ok");
    let out = d.exec(
        "small",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?",
    );
    assert!(
        out.contains("No space left on device"),
        "after a restart: {out}"
    );
    let shown = d.ok(&["info", "small"]);
    assert!(shown.contains("disk=64.0MiB"), "{shown}");
    // Too small a disk is refused before anything is made.
    let err = d.fails(&["launch", "busybox", "tiny", "--disk", "1MiB"]);
    assert!(err.contains("root disk"), "{err}");
    d.ok(&["delete", "--force", "small"]);
    assert!(!layer.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uuid), "a mount of {uuid} is left");
}

/// `[corral] storage = copy` bounds a root too: the copy lives on the
/// instance's root disk (bind-mounted as its root), so a write past `--disk`
/// fails inside; data survives stop/start, a snapshot restores onto the
/// disk, and a delete leaves no disk file or mount.
#[test]
fn a_copy_root_is_bounded_by_its_disk() {
    require_host!();
    let d = Daemon::start_with("storage = copy");
    d.import_busybox();
    let info: serde_json::Value = d.client().get("/1.0").unwrap();
    assert_eq!(info["storage"], "copy", "{info}");
    d.ok(&["launch", "busybox", "small", "--disk", "64MiB"]);
    let uuid = d.uuid("small");
    let dir = d.state.join("instances").join(&uuid);
    let layer = dir.join("layer.img");
    assert!(layer.is_file(), "no root disk at {}", layer.display());
    assert!(dir.join("layer/rootfs/bin/busybox").exists());
    let out = d.exec(
        "small",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?; sync",
    );
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    let held = std::fs::metadata(&layer).unwrap().blocks() * 512;
    assert!(held <= 64 << 20, "the root disk file holds {held} bytes");
    assert_eq!(
        d.exec("small", "rm /fill && echo one > /etc/v && cat /etc/v")
            .trim(),
        "one"
    );
    d.ok(&["snapshot", "create", "small", "s1"]);
    assert_eq!(
        d.exec("small", "echo two > /etc/v && cat /etc/v").trim(),
        "two"
    );
    d.ok(&["stop", "small"]);
    d.ok(&["snapshot", "restore", "small", "s1"]);
    d.ok(&["start", "small"]);
    assert_eq!(d.exec("small", "cat /etc/v").trim(), "one");
    let out = d.exec(
        "small",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?",
    );
    assert!(
        out.contains("No space left on device"),
        "after a restore: {out}"
    );
    d.ok(&["delete", "--force", "small"]);
    assert!(!dir.exists(), "{} is left", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uuid), "a mount of {uuid} is left");
}
