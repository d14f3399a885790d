//! Hostile tenants: images and instances built to hurt the host. Each case is
//! contained: the daemon stays alive with a bounded RSS, disk use stays near
//! what the image is allowed, and nothing outside the state dir is touched.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, BIN};

/// What the daemon may hold in memory after any of these cases.
const MAX_RSS_BYTES: u64 = 150 << 20;

fn rss_bytes(d: &Daemon) -> u64 {
    let pid = d.pid().expect("daemon running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon alive");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// The daemon answers and holds less than [`MAX_RSS_BYTES`].
fn assert_alive_and_small(d: &Daemon) {
    d.ok(&["list"]);
    let rss = rss_bytes(d);
    assert!(rss < MAX_RSS_BYTES, "daemon RSS is {rss} bytes");
}

/// Blocks allocated under `dir` on its own file system, each inode once (as
/// `du` counts): mounts below it (overlay roots) are not entered.
fn disk_use(dir: &Path) -> u64 {
    fn walk(p: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        if m.dev() != dev {
            return;
        }
        if seen.insert((m.dev(), m.ino())) {
            *total += m.blocks() * 512;
        }
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), dev, seen, total);
                }
            }
        }
    }
    let dev = std::fs::metadata(dir).unwrap().dev();
    let mut total = 0;
    walk(dir, dev, &mut HashSet::new(), &mut total);
    total
}

/// Runs a CLI verb, killed after `limit`: a hung import fails the test
/// instead of hanging it. Returns the output and how long it took.
fn cli_within(d: &Daemon, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .env("CORRAL_SOCKET", &d.socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corral {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (output, started.elapsed())
}

/// The busybox root's entries followed by whatever `extra` appends, gzipped.
fn busybox_plus(dir: &Path, name: &str, extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> PathBuf {
    let mut src = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(common::busybox_tarball()).unwrap())
        .read_to_end(&mut src)
        .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(&src[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut h = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        match h.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().unwrap().unwrap().into_owned();
                b.append_link(&mut h, &path, &target).unwrap();
            }
            _ => b.append_data(&mut h, &path, &mut entry).unwrap(),
        }
    }
    extra(&mut b);
    let tar = b.into_inner().unwrap();
    let path = dir.join(name);
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&tar).unwrap();
    enc.finish().unwrap();
    path
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Nothing but `bin/` and `etc/os-release` as a symlink to `target`.
fn symlinked_os_release(dir: &Path, name: &str, target: &str) -> PathBuf {
    let path = dir.join(name);
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut h, "etc/os-release", target).unwrap();
    b.finish().unwrap();
    path
}

fn image_properties(d: &Daemon, alias: &str) -> serde_json::Value {
    let v: serde_json::Value = d.client().get(&format!("/1.0/images/{alias}")).unwrap();
    v["properties"].clone()
}

#[test]
fn hardlink_bomb_stays_one_file_on_disk() {
    require_host!();
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    const FILE: usize = 4 << 20;
    let image = busybox_plus(work.path(), "bomb.tar.gz", |b| {
        let data: Vec<u8> = (0..FILE).map(|i| (i % 251) as u8 + 1).collect();
        let mut h = header(tar::EntryType::Regular, FILE as u64, 0o644);
        b.append_data(&mut h, "bomb/file", &data[..]).unwrap();
        for i in 0..200 {
            let mut h = header(tar::EntryType::Link, 0, 0o644);
            b.append_link(&mut h, format!("bomb/link{i}"), "bomb/file")
                .unwrap();
        }
    });
    let before = disk_use(&d.state);
    d.ok(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "bomb",
    ]);
    let imported = disk_use(&d.state) - before;
    assert!(imported < 16 << 20, "import used {imported} bytes");
    d.ok(&["launch", "bomb", "b1"]);
    let inside = d.exec("b1", "ls /bomb | wc -l");
    assert_eq!(inside.trim(), "201");
    let launched = disk_use(&d.state) - before;
    // The image once, its id-shifted copy once, the instance: a few MB, not
    // 201 copies of the file.
    assert!(
        launched < 32 << 20,
        "import and launch used {launched} bytes"
    );
    assert_alive_and_small(&d);
}

#[test]
fn symlinked_special_files_are_not_read() {
    require_host!();
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let host_id = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("ID=")
                .map(|v| v.trim_matches('"').to_string())
        });
    let shadow_mtime = std::fs::metadata("/etc/shadow").ok().map(|m| m.mtime());
    for (i, target) in ["/dev/zero", "/dev/kmsg", "/etc/shadow", "/etc/os-release"]
        .iter()
        .enumerate()
    {
        let alias = format!("sym{i}");
        let image = symlinked_os_release(work.path(), &format!("{alias}.tar"), target);
        let (out, took) = cli_within(
            &d,
            &[
                "image",
                "import",
                image.to_str().unwrap(),
                "--alias",
                &alias,
            ],
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "import with os-release -> {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took < Duration::from_secs(10), "{target}: {took:?}");
        let props = image_properties(&d, &alias);
        assert_eq!(props.get("os"), None, "{target}: {props}");
        if let Some(id) = &host_id {
            assert!(
                !props.to_string().contains(id.as_str()),
                "{target}: {props}"
            );
        }
        assert_alive_and_small(&d);
    }
    assert_eq!(
        std::fs::metadata("/etc/shadow").ok().map(|m| m.mtime()),
        shadow_mtime
    );
}

#[test]
fn huge_entry_counts_are_refused_by_the_cap() {
    require_host!();
    let d = Daemon::start_with("max_image_entries = 5000");
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("many.tar.gz");
    {
        let enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(enc);
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
        for i in 0..6000 {
            let mut h = header(tar::EntryType::Regular, 0, 0o644);
            b.append_data(&mut h, format!("bin/f{i}"), std::io::empty())
                .unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    let err = d.fails(&["image", "import", path.to_str().unwrap(), "--alias", "many"]);
    assert!(err.contains("more than 5000 entries"), "{err}");
    let left: Vec<_> = std::fs::read_dir(d.state.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the image cache: {left:?}");
    assert_alive_and_small(&d);
}

/// A GNU sparse entry: `apparent` bytes long, all holes but the last 4 KiB.
fn append_sparse(b: &mut tar::Builder<Vec<u8>>, name: &str, apparent: u64) {
    let data = vec![0x5au8; 4096];
    let mut h = header(tar::EntryType::GNUSparse, data.len() as u64, 0o644);
    h.set_path(name).unwrap();
    {
        let gnu = h.as_gnu_mut().unwrap();
        let octal = |v: u64| {
            let s = format!("{v:011o}\0");
            let mut a = [0u8; 12];
            a.copy_from_slice(s.as_bytes());
            a
        };
        gnu.realsize = octal(apparent);
        gnu.sparse[0].offset = octal(apparent - 4096);
        gnu.sparse[0].numbytes = octal(4096);
    }
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

#[test]
fn sparse_file_with_a_huge_apparent_size_stays_sparse() {
    require_host!();
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    const APPARENT: u64 = 1 << 30;
    let image = busybox_plus(work.path(), "sparse.tar.gz", |b| {
        append_sparse(b, "var/huge", APPARENT)
    });
    let before = disk_use(&d.state);
    d.ok(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "sparse",
    ]);
    d.ok(&["launch", "sparse", "s1"]);
    let size = d.exec("s1", "stat -c %s /var/huge");
    assert_eq!(size.trim(), APPARENT.to_string());
    let used = disk_use(&d.state) - before;
    assert!(used < 32 << 20, "a sparse file made {used} bytes of blocks");
    assert_alive_and_small(&d);
}

#[test]
fn console_flood_gets_a_bounded_answer() {
    require_host!();
    let d = Daemon::start_with("console_log_max_bytes = 65536\nconsole_log_check_interval = 1");
    d.import_busybox();
    d.ok(&["launch", "busybox", "loud"]);
    let uuid = d.uuid("loud");
    let log = d.state.join("instances").join(&uuid).join("console.log");
    // `yes` to the console for a while, in the background.
    d.exec(
        "loud",
        "(yes > /proc/1/fd/1 & echo $! > /tmp/yes.pid) >/dev/null 2>&1",
    );
    assert!(common::wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&log)
            .map(|m| m.len() > 1 << 20)
            .unwrap_or(false)
    }));
    for _ in 0..3 {
        let (out, took) = cli_within(&d, &["console-log", "loud"], Duration::from_secs(30));
        assert!(out.status.success());
        assert!(
            out.stdout.len() <= 2 * 65536 + 4096,
            "console-log answered {} bytes",
            out.stdout.len()
        );
        assert!(took < Duration::from_secs(5), "console-log took {took:?}");
        assert_alive_and_small(&d);
    }
    d.exec("loud", "kill $(cat /tmp/yes.pid)");
    // Once the flood stops, rotation brings the log back under its bound.
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            std::fs::metadata(&log)
                .map(|m| m.len() <= 65536)
                .unwrap_or(false)
        }),
        "console.log stays at {:?} bytes",
        std::fs::metadata(&log).map(|m| m.len())
    );
    let rotated = log.with_extension("log.1");
    assert!(std::fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0) <= 65536);
    assert_alive_and_small(&d);
}

#[test]
fn exec_output_flood_is_cut() {
    require_host!();
    let d = Daemon::start_with("exec_timeout = 120");
    d.import_busybox();
    d.ok(&["launch", "busybox", "chatty"]);
    let (out, took) = cli_within(
        &d,
        &["exec", "chatty", "--", "yes"],
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(30), "exec took {took:?}");
    assert!(
        out.stdout.len() <= (1 << 20) + 4096,
        "exec answered {} bytes",
        out.stdout.len()
    );
    assert!(out.stdout.starts_with(b"y\ny\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stdout cut at 1048576 bytes"), "{err}");
    assert_alive_and_small(&d);
    // Nothing of it is left running inside.
    assert!(common::wait_until(Duration::from_secs(10), || {
        !d.exec("chatty", "ps").contains("yes")
    }));
}

#[test]
fn fork_bomb_and_memory_hog_stay_in_their_instance() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&[
        "launch", "busybox", "bad", "--memory", "48MiB", "--pids", "40",
    ]);
    d.ok(&["launch", "busybox", "good"]);
    let uuid = d.uuid("bad");
    // A fork bomb: far more sleepers than the pids limit allows.
    d.exec(
        "bad",
        "(for i in $(seq 300); do sleep 20 & done) 2>/dev/null; true",
    );
    // A memory hog: one buffer far over the memory limit.
    let out = d.cli(&[
        "exec",
        "bad",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=256M",
        "count=1",
    ]);
    assert!(!out.status.success(), "the hog got its memory: {out:?}");
    let inst = d.instance("bad");
    assert!(
        inst["state"]["processes"].as_u64().unwrap_or(u64::MAX) <= 40,
        "{inst}"
    );
    assert!(
        inst["state"]["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "{inst}"
    );
    // The neighbour and the daemon do not notice.
    assert_eq!(d.exec("good", "echo fine").trim(), "fine");
    assert_alive_and_small(&d);
    // And the bombed instance goes away whole.
    d.ok(&["delete", "--force", "bad"]);
    assert_eq!(d.leftovers(&uuid), Vec::<String>::new());
}

/// A loop-mounted ext4 file system, unmounted (lazily) when dropped.
struct SmallFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(mib: u64) -> SmallFs {
        let dir = tempfile::Builder::new()
            .prefix("corral-smallfs-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let img = dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "mkfs.ext4 failed");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let st = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success(), "mount -o loop failed");
        std::fs::set_permissions(&mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        SmallFs { mnt, _dir: dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

#[test]
fn disk_filler_meets_enospc_and_the_daemon_carries_on() {
    require_host!();
    // The state path on a file system of its own, as docs/security.md asks of
    // shared hosts: a tenant that fills it fills only it.
    let fs = SmallFs::new(160);
    let dir = tempfile::Builder::new()
        .prefix("corral-test-")
        .tempdir()
        .unwrap();
    let d = Daemon::start_in(dir, fs.mnt.join("state"), "");
    d.import_busybox();
    d.ok(&["launch", "busybox", "filler"]);
    let out = d.cli(&[
        "exec",
        "filler",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/fill",
        "bs=1M",
        "count=400",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("No space left"),
        "the filler was not stopped by a full disk: {out:?}"
    );
    // The daemon answers, the filler still runs and can clean up after itself.
    assert_alive_and_small(&d);
    assert_eq!(d.instance("filler")["status"], "Running");
    assert_eq!(d.exec("filler", "rm /fill; echo freed").trim(), "freed");
    // With the space back, the host launches again.
    d.ok(&["launch", "busybox", "after"]);
    assert_eq!(d.exec("after", "echo up").trim(), "up");
    drop(d);
    drop(fs);
}
