//! The btrfs pool (`[corral] storage = btrfs`) on a real btrfs filesystem:
//! a sparse file formatted with mkfs.btrfs and loop-mounted as the daemon's
//! state directory. Roots are subvolumes, `--disk` a qgroup limit, snapshots
//! read-only subvolumes.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{on_path as has, run_ok as sh};
use common::{wait_until, Daemon};
use corral::driver::{ContainerDriver, Driver, InstanceSpec};

/// A btrfs filesystem on a loop device, unmounted (and its loop device
/// released) when dropped.
struct Pool {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    file: PathBuf,
}

impl Pool {
    fn make(size: u64) -> Pool {
        let dir = tempfile::Builder::new()
            .prefix("corral-btrfs-")
            .tempdir()
            .unwrap();
        let file = dir.path().join("pool.img");
        std::fs::File::create(&file).unwrap().set_len(size).unwrap();
        sh(Command::new("mkfs.btrfs").arg("-q").arg(&file));
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(&mnt));
        Pool {
            _dir: dir,
            mnt,
            file,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A store connection closing in the background may hold it a moment.
        for _ in 0..50 {
            match Command::new("umount").arg(&self.mnt).output() {
                Ok(o) if o.status.success() => return,
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
    }
}

/// The ids of the subvolumes on the filesystem of `path`.
fn subvolume_ids(path: &Path) -> BTreeSet<u64> {
    sh(Command::new("btrfs").args(["subvolume", "list"]).arg(path))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// The level-0 qgroups on the filesystem of `path`.
fn qgroup_ids(path: &Path) -> BTreeSet<u64> {
    let out = sh(Command::new("btrfs")
        .args(["qgroup", "show", "--raw"])
        .arg(path));
    corral::storage::btrfs::parse_qgroup_ids(&out)
        .into_iter()
        .collect()
}

fn subvolume_list(path: &Path) -> String {
    sh(Command::new("btrfs").args(["subvolume", "list"]).arg(path))
}

fn is_subvolume(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.ino() == 256)
}

#[test]
fn btrfs_pool_with_idmapped_roots() {
    require_host!();
    pool_roots_quotas_snapshots_and_cleanup("idmapped_roots = auto", true);
}

#[test]
fn btrfs_pool_with_id_shifted_image_copies() {
    require_host!();
    pool_roots_quotas_snapshots_and_cleanup("idmapped_roots = off", false);
}

/// Launch, `--disk` enforced, neighbour and image untouched, snapshot,
/// restore, publish, delete leaving nothing, on a pool of its own.
fn pool_roots_quotas_snapshots_and_cleanup(extra: &str, idmapped: bool) {
    if !has("mkfs.btrfs") || !has("btrfs") {
        let reason = "btrfs-progs is not installed (apt-get install btrfs-progs)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason}");
        }
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let pool = Pool::make(1 << 30);
    let state = pool.mnt.join("state");
    let tmp = tempfile::Builder::new()
        .prefix("corral-test-")
        .tempdir()
        .unwrap();
    let mut d = Daemon::start_in(tmp, state.clone(), &format!("storage = btrfs\n{extra}"));
    let info: serde_json::Value = d.client().get("/1.0").unwrap();
    assert_eq!(info["storage"], "btrfs", "{info}");
    if info["idmapped_roots"] != idmapped {
        assert!(!idmapped, "{info}");
        eprintln!(
            "SKIPPED: this kernel gives no idmapped btrfs roots; the daemon log says why:\n{}",
            d.log()
        );
        return;
    }
    // Placement's DISK_GB is the pool's filesystem, not the host's root.
    let cap = corral::storage::pool_capacity(&state).unwrap();
    assert!(
        cap.total_bytes <= 1 << 30 && cap.total_bytes >= 512 << 20,
        "{cap:?}"
    );
    d.import_busybox();

    d.ok(&["launch", "busybox", "small", "--disk", "64MiB"]);
    d.ok(&["launch", "busybox", "free"]);
    let uuid = d.uuid("small");
    let inst = state.join("instances").join(&uuid);
    let sub = inst.join("subvol");
    assert!(is_subvolume(&sub), "no subvolume at {}", sub.display());
    // No layer file: the size is the subvolume's qgroup limit.
    assert!(!inst.join("layer.img").exists());
    // The root is a snapshot of the image: it holds nothing of its own yet.
    let excl = sh(Command::new("btrfs")
        .args(["qgroup", "show", "--raw", "-e"])
        .arg(&sub));
    assert!(excl.contains("67108864"), "no 64 MiB limit: {excl}");

    // 100 MiB into a 64 MiB root: the write fails inside.
    let out = d.exec(
        "small",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?; sync",
    );
    assert!(
        out.contains("Disk quota exceeded") || out.contains("No space left on device"),
        "{out}"
    );
    assert!(!out.contains("rc=0"), "{out}");
    // Freed, it writes again.
    assert_eq!(
        d.exec(
            "small",
            "rm /fill && sync && echo ok > /etc/ok && cat /etc/ok"
        )
        .trim(),
        "ok"
    );
    // The neighbour has no limit, and owners inside are the instance's own.
    let out = d.exec(
        "free",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?; rm /fill",
    );
    assert!(out.contains("rc=0"), "{out}");
    assert_eq!(d.exec("free", "stat -c %u:%g /bin/busybox").trim(), "0:0");
    // The image and the host's side are untouched: a new root from the
    // image has none of it.
    d.ok(&["launch", "busybox", "fresh"]);
    assert_eq!(
        d.exec("fresh", "test -e /etc/ok || echo clean").trim(),
        "clean"
    );
    d.ok(&["delete", "--force", "fresh"]);

    // Snapshots are read-only subvolumes; restore brings the root back.
    d.exec("small", "echo one > /etc/mark; chown 1000:1000 /etc/mark");
    d.ok(&["snapshot", "create", "small", "s1"]);
    let snap = inst.join("snapshots/s1/state");
    assert!(
        is_subvolume(&snap),
        "snapshot {} is no subvolume",
        snap.display()
    );
    let ro = sh(Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(&snap)
        .arg("ro"));
    assert_eq!(ro.trim(), "ro=true");
    d.exec("small", "echo two > /etc/mark");
    d.ok(&["stop", "--force", "small"]);
    d.ok(&["snapshot", "restore", "small", "s1"]);
    d.ok(&["start", "small"]);
    assert_eq!(d.exec("small", "cat /etc/mark").trim(), "one");
    assert_eq!(
        d.exec("small", "stat -c %u:%g /etc/mark").trim(),
        "1000:1000"
    );
    // The restored root keeps its limit.
    let out = d.exec(
        "small",
        "dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?; rm -f /fill",
    );
    assert!(!out.contains("rc=0"), "after a restore: {out}");

    // Publish: the image has the files with their owners.
    d.ok(&["publish", "small", "--alias", "pub1"]);
    d.ok(&["launch", "pub1", "copy1"]);
    assert_eq!(d.exec("copy1", "cat /etc/mark").trim(), "one");
    assert_eq!(
        d.exec("copy1", "stat -c %u:%g /etc/mark /bin/busybox")
            .trim(),
        "1000:1000\n0:0"
    );

    // A root remembers how it was made: with the daemon's choice changed,
    // it starts as before, and a new root is made the new way.
    if idmapped {
        let conf = std::fs::read_to_string(&d.config).unwrap();
        std::fs::write(
            &d.config,
            conf.replace("idmapped_roots = auto", "idmapped_roots = off"),
        )
        .unwrap();
        d.stop();
        d.spawn();
        let info: serde_json::Value = d.client().get("/1.0").unwrap();
        assert_eq!(info["idmapped_roots"], false, "{info}");
        d.ok(&["stop", "--force", "small"]);
        // As after a host reboot: the root is mounted again at the start.
        sh(Command::new("umount").arg(inst.join("rootfs")));
        d.ok(&["start", "small"]);
        assert_eq!(
            d.exec("small", "stat -c %u:%g /etc/mark /bin/busybox")
                .trim(),
            "1000:1000\n0:0"
        );
        d.ok(&["launch", "busybox", "shifted"]);
        assert_eq!(
            d.exec("shifted", "stat -c %u:%g /bin/busybox").trim(),
            "0:0"
        );
        assert!(!state
            .join("instances")
            .join(d.uuid("shifted"))
            .join("subvol.idmapped")
            .exists());
        assert!(inst.join("subvol.idmapped").exists());
        d.ok(&["delete", "--force", "shifted"]);
    }

    // Delete: no subvolume, qgroup or mount of the instances is left.
    let copy_uuid = d.uuid("copy1");
    let free_uuid = d.uuid("free");
    for name in ["small", "free", "copy1"] {
        d.ok(&["delete", "--force", name]);
    }
    for u in [&uuid, &free_uuid, &copy_uuid] {
        assert!(d.leftovers(u).is_empty(), "{u}: {:?}", d.leftovers(u));
        assert!(
            !subvolume_list(&pool.mnt).contains(u.as_str()),
            "a subvolume of {u} is left:\n{}",
            subvolume_list(&pool.mnt)
        );
    }
    // Every qgroup left belongs to a subvolume that exists (the images').
    let stale = || {
        let live = subvolume_ids(&pool.mnt);
        qgroup_ids(&pool.mnt)
            .into_iter()
            .filter(|id| *id != 5 && !live.contains(id))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(std::time::Duration::from_secs(10), || stale().is_empty()),
        "qgroups of deleted subvolumes are left: {:?}",
        stale()
    );

    // The deleted image's subvolume goes at the next start.
    d.ok(&["image", "delete", "pub1"]);
    d.stop();
    let images_before = std::fs::read_dir(state.join("pool-images"))
        .unwrap()
        .count();
    d.spawn();
    let images_after = std::fs::read_dir(state.join("pool-images"))
        .unwrap()
        .count();
    assert!(
        images_after < images_before,
        "pool-images: {images_before} entries before the restart, {images_after} after"
    );
    d.ok(&["image", "delete", "busybox"]);
    drop(d);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&state.display().to_string()),
        "a mount under the pool's state is left"
    );
    let file = pool.file.clone();
    drop(pool);
    let loops = sh(Command::new("losetup").arg("-j").arg(&file));
    assert!(loops.trim().is_empty(), "loop device left: {loops}");
}

#[test]
fn a_btrfs_pool_on_another_filesystem_is_refused_at_start() {
    require_host!();
    let dir = tempfile::Builder::new()
        .prefix("corral-test-")
        .tempdir()
        .unwrap();
    let st = nix::sys::statfs::statfs(dir.path()).unwrap();
    if st.filesystem_type().0 as i64 == 0x9123_683e {
        eprintln!("SKIPPED: the temporary directory is on btrfs");
        return;
    }
    let config = dir.path().join("corral.conf");
    std::fs::write(
        &config,
        format!(
            "[corral]\noci_runtime = runc\nstorage = btrfs\ndefault_network = none\nruntime_root = {}\n",
            dir.path().join("run").display()
        ),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .arg("daemon")
        .arg("--config-file")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("is not on a btrfs filesystem ([corral] storage = btrfs)"),
        "{err}"
    );
}

/// A container driver in this process on a btrfs pool's state path.
async fn btrfs_driver(state: &Path, dir: &Path, runtime_root: &Path) -> ContainerDriver {
    let base = 210_000_000u64 + u64::from(std::process::id() % 1000) * 65536;
    common::in_process_driver_on(state, dir, runtime_root, base, 5, "storage = btrfs").await
}

/// The network configuration Nova's `inject_network_info` has the driver
/// write into a fresh root lands in an idmapped btrfs root (which host root
/// cannot write through) owned by the container's root.
#[tokio::test]
async fn injected_network_configuration_lands_in_an_idmapped_btrfs_root() {
    require_host!();
    if !has("mkfs.btrfs") {
        eprintln!("SKIPPED: btrfs-progs is not installed");
        return;
    }
    let pool = Pool::make(1 << 30);
    let tmp = tempfile::tempdir().unwrap();
    let runtime_root = PathBuf::from(format!("/run/corral-test/btrfs-{}", std::process::id()));
    let uuid = uuid::Uuid::new_v4().to_string();
    let d = btrfs_driver(&pool.mnt.join("state"), tmp.path(), &runtime_root).await;
    if !d.storage().idmapped {
        eprintln!("SKIPPED: this kernel gives no idmapped btrfs roots");
        return;
    }
    d.images()
        .import_image(&common::busybox_tarball(), Some("busybox"), None)
        .await
        .unwrap();
    let spec = InstanceSpec {
        network_interfaces: Some("auto lo\niface lo inet loopback\n# injected\n".into()),
        ..common::spec(&uuid, "inject", "busybox")
    };
    let spawned = d.spawn(&spec, true, None).await;
    let result = async {
        spawned?;
        let argv = [
            "/bin/sh",
            "-c",
            "cat /etc/network/interfaces; stat -c '%u:%g %a' /etc/network/interfaces /etc/network",
        ]
        .map(String::from);
        d.exec(&uuid, &argv, &[], None, std::time::Duration::from_secs(20))
            .await
    }
    .await;
    let destroyed = d.destroy(&uuid).await;
    let _ = Command::new("runc")
        .arg("--root")
        .arg(&runtime_root)
        .args(["delete", "--force", &uuid])
        .output();
    let _ = std::fs::remove_dir_all(&runtime_root);
    let out = result.unwrap();
    assert_eq!(out.exit_code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("auto lo\n") && out.stdout.contains("# injected\n0:0 644\n0:0 755"),
        "{}",
        out.stdout
    );
    destroyed.unwrap();
    let sub = pool.mnt.join("state/instances").join(&uuid);
    assert!(!sub.exists(), "{} is left", sub.display());
    assert!(!subvolume_list(&pool.mnt).contains(&uuid));
}

/// Nova's rescue on a btrfs pool: the rescue container boots from the image
/// with the instance's own root (a subvolume) read-write at /mnt; unrescue
/// boots the instance again with what was written there, and a delete
/// leaves no subvolume of either root.
#[tokio::test]
async fn rescue_and_unrescue_on_a_btrfs_pool() {
    require_host!();
    if !has("mkfs.btrfs") {
        eprintln!("SKIPPED: btrfs-progs is not installed");
        return;
    }
    let pool = Pool::make(1 << 30);
    let tmp = tempfile::tempdir().unwrap();
    let runtime_root = PathBuf::from(format!("/run/corral-test/btrfs-r-{}", std::process::id()));
    let uuid = uuid::Uuid::new_v4().to_string();
    let d = btrfs_driver(&pool.mnt.join("state"), tmp.path(), &runtime_root).await;
    d.images()
        .import_image(&common::busybox_tarball(), Some("busybox"), None)
        .await
        .unwrap();
    let spec = common::spec(&uuid, "rescued", "busybox");
    let sh = |script: &str| ["/bin/sh", "-c", script].map(String::from);
    let t = std::time::Duration::from_secs(20);
    let result = async {
        d.spawn(&spec, true, None).await?;
        d.exec(&uuid, &sh("echo own > /own.txt"), &[], None, t)
            .await?;
        d.rescue(&uuid, "busybox", None).await?;
        let rescued = d.is_rescued(&uuid).await;
        let seen = d
            .exec(
                &uuid,
                &sh("cat /mnt/own.txt; test -e /own.txt || echo not-in-rescue-root; echo fixed > /mnt/fixed.txt"),
                &[],
                None,
                t,
            )
            .await?;
        d.unrescue(&uuid).await?;
        let after = d
            .exec(&uuid, &sh("cat /own.txt /fixed.txt; stat -c %u /fixed.txt"), &[], None, t)
            .await?;
        Ok::<_, corral::driver::DriverError>((rescued, seen, after))
    }
    .await;
    let destroyed = d.destroy(&uuid).await;
    let _ = Command::new("runc")
        .arg("--root")
        .arg(&runtime_root)
        .args(["delete", "--force", &uuid])
        .output();
    let _ = std::fs::remove_dir_all(&runtime_root);
    let (rescued, seen, after) = result.unwrap();
    assert!(rescued);
    assert_eq!(seen.stdout, "own\nnot-in-rescue-root\n", "{}", seen.stderr);
    assert_eq!(after.stdout, "own\nfixed\n0\n", "{}", after.stderr);
    destroyed.unwrap();
    let sub = pool.mnt.join("state/instances").join(&uuid);
    assert!(!sub.exists(), "{} is left", sub.display());
    assert!(
        !subvolume_list(&pool.mnt).contains(&uuid),
        "{}",
        subvolume_list(&pool.mnt)
    );
}
