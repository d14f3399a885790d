//! Ephemeral disks in real runc containers: `/mnt` is a filesystem of the
//! size asked for, the container root's own (nosuid, nodev); writes past it
//! fail with ENOSPC; it survives a stop and a start (and a restart of the
//! daemon); a rebuild keeps it or makes it again empty; a delete leaves no
//! mount, loop device or file.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Daemon;
use common::RuntimeCleanup as Cleanup;
use corral::driver::{ContainerDriver, Driver, InstanceSpec, Limits, PowerState};

fn loop_devices_of(file: &Path) -> String {
    let out = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .expect("losetup");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&*file.to_string_lossy()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The size of the filesystem at /mnt inside, in KiB (`df -k`).
fn mnt_kib(d: &Daemon, name: &str) -> u64 {
    let out = d.exec(name, "df -k /mnt | tail -n 1");
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("df -k /mnt: {out}"))
}

#[test]
fn an_ephemeral_disk_is_mnt_of_its_size_kept_and_removed() {
    require_host!();
    let mut d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "eph", "--ephemeral", "64MiB"]);
    let uuid = d.uuid("eph");
    let dir = d.state.join("instances").join(&uuid);
    let img = dir.join("ephemeral.img");
    assert!(img.is_file(), "no ephemeral disk at {}", img.display());
    assert!(!loop_devices_of(&img).is_empty(), "no loop device");
    // A filesystem of its own at /mnt, of (about) 64 MiB, owned by the
    // container's root, nosuid and nodev.
    // What it really takes: the disk files' sizes, and far fewer blocks.
    let (st, body) = common::raw_call(&d.client(), "GET", "/1.0/resources", None);
    assert_eq!(st, 200);
    let res: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mine = &res["metadata"]["disk"]["instances"]["eph"];
    assert_eq!(mine["provisioned_bytes"], 64 << 20, "{res}");
    let held = mine["allocated_bytes"].as_u64().unwrap();
    assert!(held > 0 && held < 32 << 20, "{res}");
    let kib = mnt_kib(&d, "eph");
    assert!((48 << 10..=64 << 10).contains(&kib), "/mnt is {kib} KiB");
    let line = d.exec("eph", "grep ' /mnt ' /proc/mounts");
    assert!(line.contains(" ext4 "), "{line}");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    assert_eq!(d.exec("eph", "stat -c '%u:%g %a' /mnt").trim(), "0:0 755");
    assert_eq!(d.exec("eph", "ls -A /mnt").trim(), "");
    // Past its size: ENOSPC, and the root is untouched by it.
    let out = d.exec(
        "eph",
        "dd if=/dev/zero of=/mnt/fill bs=1M count=100 2>&1; echo rc=$?",
    );
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    // The blocks written count: the disk file is (nearly) full.
    let (_, body) = common::raw_call(&d.client(), "GET", "/1.0/resources", None);
    let res: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let full = res["metadata"]["disk"]["instances"]["eph"]["allocated_bytes"]
        .as_u64()
        .unwrap();
    assert!(full > 48 << 20, "{res}");
    let out = d.exec(
        "eph",
        "rm /mnt/fill && echo kept > /mnt/data && sync && echo ok",
    );
    assert_eq!(out.trim(), "ok", "{out}");
    // Stop and start, then a restart of the daemon: the same disk, the
    // same data.
    d.ok(&["stop", "eph"]);
    d.ok(&["start", "eph"]);
    assert_eq!(d.exec("eph", "cat /mnt/data").trim(), "kept");
    d.stop();
    d.spawn();
    assert_eq!(d.exec("eph", "cat /mnt/data").trim(), "kept");
    let shown = d.ok(&["info", "eph"]);
    assert!(shown.contains("ephemeral=64.0MiB(ext4)"), "{shown}");
    // What the host cannot make is refused before anything is made.
    let err = d.fails(&[
        "launch",
        "busybox",
        "bad",
        "--ephemeral",
        "64MiB",
        "--ephemeral-format",
        "vfat",
    ]);
    assert!(err.contains("\"vfat\" is not supported"), "{err}");
    let err = d.fails(&["launch", "busybox", "tiny", "--ephemeral", "1MiB"]);
    assert!(err.contains("ephemeral disk must be between"), "{err}");
    assert!(d.cli(&["info", "bad"]).status.code() != Some(0));
    // Delete: no mount, no loop device, no file.
    d.ok(&["delete", "--force", "eph"]);
    assert!(!img.exists() && !dir.exists());
    assert_eq!(loop_devices_of(&img), "");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uuid), "a mount of {uuid} is left");
}

async fn sh(d: &ContainerDriver, uuid: &str, script: &str) -> String {
    let argv = ["/bin/sh", "-c", script].map(String::from);
    let out = d
        .exec(uuid, &argv, &[], None, Duration::from_secs(20))
        .await
        .unwrap();
    format!("{}{}", out.stdout, out.stderr)
}

#[tokio::test]
async fn a_rebuild_keeps_the_ephemeral_disk_only_when_asked() {
    require_host!();
    let tmp = tempfile::Builder::new()
        .prefix("corral-test-ephemeral-")
        .tempdir()
        .unwrap();
    let runtime_root = PathBuf::from(format!("/run/corral-test/ephemeral-{}", std::process::id()));
    let uuid = uuid::Uuid::new_v4().to_string();
    let _cleanup = Cleanup {
        runtime_root: runtime_root.clone(),
        uuid: uuid.clone(),
    };
    // An id range of its own (other tests use 10,000,000 and up).
    let base = 210_000_000u64 + u64::from(std::process::id() % 1000) * 65536;
    let d = common::in_process_driver(tmp.path(), &runtime_root, base, 5).await;
    d.images()
        .import_image(&common::busybox_tarball(), Some("busybox"), None)
        .await
        .unwrap();
    let spec = InstanceSpec {
        limits: Limits {
            ephemeral_bytes: Some(48 << 20),
            ephemeral_format: Some("ext4".into()),
            ..Limits::default()
        },
        ..common::spec(&uuid, "rebuilt", "busybox")
    };
    d.spawn(&spec, true, None).await.unwrap();
    // The power sync's reads agree with get_info's, without its statistics.
    let info = d.get_info(&uuid).await.unwrap();
    assert_eq!(info.power_state, PowerState::Running);
    assert!(info.stats.is_some());
    assert_eq!(d.power_state(&uuid).await.unwrap(), PowerState::Running);
    let states = d
        .power_states(&[uuid.clone(), "not-an-instance".into()])
        .await
        .unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states.get(&uuid), Some(&PowerState::Running));
    let out = sh(
        &d,
        &uuid,
        "echo one > /mnt/data && echo root > /etc/r && cat /mnt/data",
    )
    .await;
    assert_eq!(out.trim(), "one", "{out}");
    // preserve_ephemeral: a new root, the same ephemeral disk.
    d.rebuild(&uuid, "busybox", true).await.unwrap();
    let out = sh(&d, &uuid, "cat /mnt/data; ls /etc/r 2>&1").await;
    assert!(out.starts_with("one\n"), "{out}");
    assert!(
        out.contains("No such file"),
        "the root was not made again: {out}"
    );
    // Without: made again, empty, of the same size.
    d.rebuild(&uuid, "busybox", false).await.unwrap();
    let out = sh(&d, &uuid, "ls -A /mnt; df -k /mnt | tail -n 1").await;
    let kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("/mnt not empty or no df: {out}"));
    assert!((32 << 10..=48 << 10).contains(&kib), "{out}");
    let img = tmp
        .path()
        .join("state/instances")
        .join(&uuid)
        .join("ephemeral.img");
    assert!(img.is_file());
    d.destroy(&uuid).await.unwrap();
    assert!(!img.exists());
    assert_eq!(loop_devices_of(&img), "");
}
