//! Snapshots of real containers' roots: a consistent copy of a running
//! instance (frozen by the cgroup freezer for the copy), restores to any
//! snapshot, and their life with the instance.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{wait_until, Daemon};

/// A counter written every 10 ms: each value appended to /data/log (one
/// write per line), then the current value renamed into /data/counter.
const COUNTER_LOOP: &str = "mkdir -p /data; i=0; while true; do i=$((i+1)); \
     echo $i >> /data/log; echo $i > /data/counter.tmp; mv /data/counter.tmp /data/counter; \
     usleep 10000; done";

fn snapshot_state(d: &Daemon, uuid: &str, snap: &str) -> PathBuf {
    d.state
        .join("instances")
        .join(uuid)
        .join("snapshots")
        .join(snap)
        .join("state")
}

fn counter(d: &Daemon, name: &str) -> u64 {
    d.exec(name, "cat /data/counter").trim().parse().unwrap()
}

#[test]
fn snapshot_of_a_running_writer_is_consistent_and_the_instance_keeps_running() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "count", "--", "sh", "-c", COUNTER_LOOP]);
    let uuid = d.uuid("count");
    assert!(wait_until(Duration::from_secs(10), || {
        d.exec("count", "cat /data/counter 2>/dev/null || echo 0")
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            > 20
    }));
    let pid = d.instance("count")["state"]["pid"].as_i64().unwrap();

    for round in 0..5 {
        let snap = format!("s{round}");
        let out = d.ok(&["--format", "json", "snapshot", "create", "count", &snap]);
        let taken: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(taken["name"], snap.as_str());
        let pause = taken["pause_ms"]
            .as_f64()
            .expect("a running instance is paused");
        eprintln!("snapshot {snap}: paused {pause:.2} ms");
        let state = snapshot_state(&d, &uuid, &snap);
        // Every line of the log is whole, and they count 1..n.
        let log = std::fs::read_to_string(state.join("data/log")).unwrap();
        assert!(log.ends_with('\n'), "a half-written line: {log:?}");
        let values: Vec<u64> = log.lines().map(|l| l.parse().unwrap()).collect();
        let n = values.len() as u64;
        assert!(n > 20);
        assert_eq!(values, (1..=n).collect::<Vec<_>>());
        // The counter is whole and at most one step behind the log.
        let c: u64 = std::fs::read_to_string(state.join("data/counter"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(c == n || c + 1 == n, "counter {c}, log up to {n}");
    }

    // Same init, not frozen, still counting.
    let info = d.instance("count");
    assert_eq!(info["state"]["pid"].as_i64().unwrap(), pid);
    assert_eq!(info["status"], "Running");
    assert_eq!(d.runc_status(&uuid).as_deref(), Some("running"));
    let before = counter(&d, "count");
    assert!(wait_until(Duration::from_secs(5), || counter(&d, "count") > before + 5));

    let listed = d.ok(&["--format", "json", "snapshot", "list", "count"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
    assert!(listed.iter().all(|s| s["size"].as_i64().unwrap() > 0));

    // Deleting the instance deletes its snapshots.
    d.ok(&["delete", "--force", "count"]);
    assert!(d.leftovers(&uuid).is_empty(), "{:?}", d.leftovers(&uuid));
    assert!(!snapshot_state(&d, &uuid, "s0").exists());
}

#[test]
fn restore_brings_back_any_snapshot_and_refuses_a_running_instance() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "rs"]);
    d.exec("rs", "echo one > /root/marker");
    d.ok(&["snapshot", "create", "rs", "first"]);
    // An image file deleted (a whiteout in the writable layer), a new file.
    d.exec(
        "rs",
        "echo two > /root/marker; rm /etc/inittab; echo x > /root/extra",
    );
    d.ok(&["snapshot", "create", "rs", "second"]);
    d.exec("rs", "echo three > /root/marker");

    // Bad and duplicate names are refused; nothing is made.
    for bad in ["../x", ".hidden", "a/b", "with space"] {
        let err = d.fails(&["snapshot", "create", "rs", bad]);
        assert!(err.contains("invalid snapshot name"), "{bad}: {err}");
    }
    let err = d.fails(&["snapshot", "create", "rs", "first"]);
    assert!(err.contains("already has a snapshot"), "{err}");
    let err = d.fails(&["snapshot", "restore", "rs", "nope"]);
    assert!(err.contains("not found"), "{err}");

    // A running instance is refused, and keeps running with its data.
    let err = d.fails(&["snapshot", "restore", "rs", "first"]);
    assert!(err.contains("running"), "{err}");
    assert_eq!(d.exec("rs", "cat /root/marker").trim(), "three");

    d.ok(&["stop", "--force", "rs"]);
    d.ok(&["snapshot", "restore", "rs", "first"]);
    d.ok(&["start", "rs"]);
    assert_eq!(d.exec("rs", "cat /root/marker").trim(), "one");
    assert_eq!(
        d.exec("rs", "test -e /etc/inittab && echo yes").trim(),
        "yes"
    );
    assert_eq!(d.exec("rs", "test -e /root/extra || echo no").trim(), "no");

    // The newer snapshot is still there to go back to.
    d.ok(&["stop", "--force", "rs"]);
    d.ok(&["snapshot", "restore", "rs", "second"]);
    d.ok(&["start", "rs"]);
    assert_eq!(d.exec("rs", "cat /root/marker").trim(), "two");
    assert_eq!(
        d.exec("rs", "test -e /etc/inittab || echo gone").trim(),
        "gone"
    );
    assert_eq!(d.exec("rs", "cat /root/extra").trim(), "x");

    // A snapshot of a stopped instance: nothing to freeze.
    d.ok(&["stop", "--force", "rs"]);
    let out = d.ok(&["--format", "json", "snapshot", "create", "rs", "cold"]);
    let taken: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(taken.get("pause_ms").is_none(), "{taken}");

    d.ok(&["snapshot", "delete", "rs", "first"]);
    let listed = d.ok(&["snapshot", "list", "rs"]);
    assert!(
        !listed.contains("first") && listed.contains("second"),
        "{listed}"
    );
    let uuid = d.uuid("rs");
    assert!(!snapshot_state(&d, &uuid, "first").exists());
    let err = d.fails(&["snapshot", "delete", "rs", "first"]);
    assert!(err.contains("not found"), "{err}");

    // With the instance gone, nothing of it holds the image any more.
    d.ok(&["delete", "rs"]);
    d.ok(&["image", "delete", "busybox"]);
}

#[test]
fn publish_makes_an_image_of_a_running_instance_that_launches() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "src", "--", "sh", "-c", COUNTER_LOOP]);
    assert!(wait_until(Duration::from_secs(10), || {
        d.exec("src", "cat /data/counter 2>/dev/null || echo 0")
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            > 5
    }));
    d.exec(
        "src",
        "echo kept > /root/file; chown 1000:1000 /root/file; rm /etc/inittab",
    );
    let pid = d.instance("src")["state"]["pid"].as_i64().unwrap();
    let out = d.ok(&["--format", "json", "publish", "src", "--alias", "pub1"]);
    let img: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(img["alias"], "pub1");
    // The source keeps running, same init, and no snapshot is left of it.
    assert_eq!(d.instance("src")["state"]["pid"].as_i64().unwrap(), pid);
    let snaps = d.ok(&["--format", "json", "snapshot", "list", "src"]);
    assert_eq!(snaps.trim(), "[]");
    let err = d.fails(&["publish", "src", "--alias", "pub1"]);
    assert!(err.contains("already exists"), "{err}");

    // A new instance (another id range) from the image has the files, with
    // the owners they had inside the source.
    d.ok(&["launch", "pub1", "copy1", "--", "sleep", "1000000"]);
    assert_eq!(d.exec("copy1", "cat /root/file").trim(), "kept");
    assert_eq!(
        d.exec("copy1", "stat -c %u:%g /root/file /bin/busybox")
            .trim(),
        "1000:1000\n0:0"
    );
    assert_eq!(
        d.exec("copy1", "test -e /etc/inittab || echo gone").trim(),
        "gone"
    );
    let log = d.exec("copy1", "cat /data/log");
    let values: Vec<u64> = log.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(values, (1..=values.len() as u64).collect::<Vec<_>>());
    assert!(d.instance("copy1")["idmap"]["host_base"] != d.instance("src")["idmap"]["host_base"]);
}

#[test]
fn snapshots_of_an_instance_with_its_own_root_disk_restore_onto_that_disk() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "rd", "--disk", "64MiB"]);
    d.exec("rd", "echo one > /root/marker");
    d.ok(&["snapshot", "create", "rd", "first"]);
    let uuid = d.uuid("rd");
    assert_eq!(
        std::fs::read_to_string(snapshot_state(&d, &uuid, "first").join("root/marker")).unwrap(),
        "one\n"
    );
    d.exec("rd", "echo two > /root/marker");
    d.ok(&["stop", "--force", "rd"]);
    d.ok(&["snapshot", "restore", "rd", "first"]);
    d.ok(&["start", "rd"]);
    assert_eq!(d.exec("rd", "cat /root/marker").trim(), "one");
    // Still its own 64 MiB disk after the restore.
    let out = d.exec(
        "rd",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?",
    );
    assert!(out.contains("No space left on device"), "{out}");
    d.ok(&["delete", "--force", "rd"]);
}
