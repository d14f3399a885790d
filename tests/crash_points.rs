//! Crash points: the daemon is killed with SIGKILL at every named step of
//! launch, start, stop, delete (device attach included: a NIC moved in and a
//! host directory as a disk), image import and image delete, in turn, started again, and
//! the host checked: nothing leaks (runtime containers, cgroups, mounts,
//! interfaces, store records and id ranges, files under the state directory,
//! device claims) and the instance is either done as asked or rolled back,
//! and deletes cleanly. Every point in `corral::crashpoint::POINTS` is run.
//!
//! `CORRAL_CRASH_POINTS=a,b` runs only the named points (while working on
//! one); unset, all of them run.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use corral::crashpoint::{ENV_VAR, POINTS};

const INST: &str = "crashy";
const IMPORTED: &str = "crashimg";

/// The operations that reach crash points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Launch,
    Start,
    Stop,
    Delete,
    Import,
    ImageDelete,
}

/// The operations that reach a point, by its prefix.
fn ops_reaching(point: &str) -> Vec<Op> {
    match point.split_once('.').map(|(op, _)| op) {
        Some("launch") => vec![Op::Launch],
        Some("prepare") | Some("start") => vec![Op::Launch, Op::Start],
        Some("power_on") => vec![Op::Start],
        // Reached only by instances with virtual interfaces, which the CLI
        // does not make yet: tests/vifs.rs crashes there.
        Some("plug") => vec![],
        Some("stop") => vec![Op::Stop],
        Some("delete") | Some("remove") => vec![Op::Delete],
        Some("import") => vec![Op::Import],
        Some("image_delete") => vec![Op::ImageDelete],
        _ => panic!("crash point {point}: no operation known to reach it; add it here"),
    }
}

/// A veth pair made by the test: the first end is given to the instance as
/// a NIC, the peer stays on the host (it dies with the first end, so its
/// presence tells that the NIC was not destroyed).
struct Veth {
    name: String,
    peer: String,
}

impl Veth {
    fn new() -> Veth {
        let name = format!("crl{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let peer = format!("{name}p");
        let v = Veth { name, peer };
        v.make();
        v
    }

    fn make(&self) {
        let st = Command::new("ip")
            .args(["link", "add", &self.name, "type", "veth", "peer", "name"])
            .arg(&self.peer)
            .status()
            .unwrap();
        assert!(st.success(), "cannot create a veth pair");
    }

    /// Makes the pair again after a failed point destroyed it, so that the
    /// next points still run.
    fn remake_if_gone(&self) {
        if !on_host(&self.name) && !on_host(&self.peer) {
            self.make();
        }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.peer])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn on_host(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

struct Host {
    d: Daemon,
    veth: Veth,
    share: PathBuf,
    cgroup_parent: String,
    import_tar: PathBuf,
    _dir: tempfile::TempDir,
}

impl Host {
    fn launch_args(&self) -> Vec<String> {
        vec![
            "launch".into(),
            "busybox".into(),
            INST.into(),
            "--device".into(),
            format!("eth1=nic,parent={}", self.veth.name),
            "--device".into(),
            format!("share=disk,source={},path=/mnt/share", self.share.display()),
        ]
    }

    fn run(&self, args: &[String]) -> std::process::Output {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.d.cli(&a)
    }

    fn launch(&self) {
        let out = self.run(&self.launch_args());
        assert!(
            out.status.success(),
            "launch failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.d.log()
        );
    }

    fn instances(&self) -> Vec<serde_json::Value> {
        self.d
            .client()
            .get("/1.0/instances?recursion=1")
            .expect("list instances")
    }

    fn images(&self) -> Vec<String> {
        let list: Vec<serde_json::Value> = self
            .d
            .client()
            .get("/1.0/images?recursion=1")
            .expect("list images");
        list.iter()
            .filter_map(|i| i["fingerprint"].as_str().map(str::to_string))
            .collect()
    }

    fn runc_ids(&self) -> BTreeSet<String> {
        let out = Command::new("runc")
            .arg("--root")
            .arg(&self.d.runtime_root)
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Cgroup directories under this daemon's cgroup parent, in every
    /// hierarchy.
    fn cgroups(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let parent = h.path().join(&self.cgroup_parent);
            if let Ok(rd) = std::fs::read_dir(&parent) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        out.insert(e.path().display().to_string());
                    }
                }
            }
        }
        out
    }

    /// Mount points under the test's directory (state dir included).
    fn mounts(&self) -> BTreeSet<String> {
        let root = self.d.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .map(|m| m.replace("\\040", " "))
            .filter(|m| m.starts_with(&root))
            .collect()
    }

    /// The test's interfaces on the host.
    fn links(&self) -> BTreeSet<String> {
        let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| n.starts_with(&self.veth.name))
            .collect()
    }

    /// Every file and directory under the state directory, but the store's
    /// own files, without crossing into other filesystems (a mounted root
    /// shows as its mount point).
    fn files(&self) -> BTreeSet<String> {
        fn walk(dir: &Path, base: &Path, dev: u64, out: &mut BTreeSet<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if rel.starts_with("corral.sqlite") {
                    continue;
                }
                out.insert(rel);
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    if m.is_dir() && m.dev() == dev {
                        walk(&p, base, dev, out);
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
        let dev = std::fs::metadata(&self.d.state).unwrap().dev();
        walk(&self.d.state, &self.d.state, dev, &mut out);
        out
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            runc: self.runc_ids(),
            cgroups: self.cgroups(),
            mounts: self.mounts(),
            links: self.links(),
            files: self.files(),
        }
    }

    /// Whether `ifname` is in the network namespace of process `pid`.
    fn in_netns(pid: i64, ifname: &str) -> bool {
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "ip", "link", "show", ifname])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    runc: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    mounts: BTreeSet<String>,
    links: BTreeSet<String>,
    files: BTreeSet<String>,
}

fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let mut one = |what: &str, a: &BTreeSet<String>, b: &BTreeSet<String>| {
        // The first few of each, to keep a failure readable.
        let left: Vec<_> = b.difference(a).collect();
        let gone: Vec<_> = a.difference(b).collect();
        for (how, xs) in [("left behind", left), ("gone", gone)] {
            for x in xs.iter().take(5) {
                out.push(format!("{what} {how}: {x}"));
            }
            if xs.len() > 5 {
                out.push(format!("... and {} more of them", xs.len() - 5));
            }
        }
    };
    one("runtime container", &before.runc, &after.runc);
    one("cgroup", &before.cgroups, &after.cgroups);
    one("mount", &before.mounts, &after.mounts);
    one("interface", &before.links, &after.links);
    one("file", &before.files, &after.files);
    out
}

/// Runs the operation against a daemon armed at `point`; the daemon must
/// die there, by SIGKILL.
fn crash_during(h: &mut Host, op: Op, point: &str) {
    // What the operation needs, made by an unarmed daemon.
    match op {
        Op::Launch | Op::Import => {}
        Op::Start => {
            h.launch();
            h.d.ok(&["stop", "--force", INST]);
        }
        Op::Stop | Op::Delete => h.launch(),
        Op::ImageDelete => {
            let tar = h.import_tar.display().to_string();
            h.d.ok(&["image", "import", &tar, "--alias", IMPORTED]);
        }
    }
    h.d.stop();
    let log_len = h.d.log().len();
    h.d.spawn_env(&[(ENV_VAR, point)]);
    let tar = h.import_tar.display().to_string();
    let out = match op {
        Op::Launch => h.run(&h.launch_args()),
        Op::Start => h.d.cli(&["start", INST]),
        Op::Stop => h.d.cli(&["stop", "--force", INST]),
        Op::Delete => h.d.cli(&["delete", "--force", INST]),
        Op::Import => h.d.cli(&["image", "import", &tar, "--alias", IMPORTED]),
        Op::ImageDelete => h.d.cli(&["image", "delete", IMPORTED]),
    };
    // The daemon dies before the client sees its answer: no long wait.
    let status = h.d.wait_exit(Duration::from_secs(5));
    let log = h.d.log();
    let new_log = &log[log_len.min(log.len())..];
    assert!(
        status.is_some(),
        "{op:?} did not reach crash point {point} (it {}):\n{new_log}",
        if out.status.success() {
            "succeeded"
        } else {
            "failed"
        }
    );
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGKILL),
        "daemon did not die by SIGKILL at {point}:\n{new_log}"
    );
    assert!(
        new_log.contains(&format!("crash point {point}:")),
        "the daemon died elsewhere than at {point}:\n{new_log}"
    );
    assert!(
        !out.status.success(),
        "{op:?} reported success though the daemon died"
    );
}

/// After the restart: the state a user (and Nova) accepts, nothing held by
/// what is gone.
fn check_recovered(h: &Host, op: Op) -> Vec<String> {
    let mut bad = Vec::new();
    let list = h.instances();
    let uuids: BTreeSet<String> = list
        .iter()
        .filter_map(|i| i["uuid"].as_str().map(str::to_string))
        .collect();
    let mut inst_pid = None;
    match list.as_slice() {
        [] => {
            if matches!(op, Op::Start | Op::Stop) {
                bad.push(format!("{op:?} lost the instance"));
            }
        }
        [i] => {
            let status = i["status"].as_str().unwrap_or("?").to_string();
            let uuid = i["uuid"].as_str().unwrap_or("?");
            let allowed: &[&str] = match op {
                Op::Launch => &["Running"],
                _ => &["Running", "Stopped"],
            };
            if !allowed.contains(&status.as_str()) {
                bad.push(format!("{op:?}: instance left {status}"));
            }
            let runc = h.d.runc_status(uuid);
            match status.as_str() {
                "Running" => {
                    if runc.as_deref() != Some("running") {
                        bad.push(format!("shown Running, runtime says {runc:?}"));
                    }
                    inst_pid = i["state"]["pid"].as_i64();
                }
                "Stopped" if runc.is_some() => {
                    bad.push(format!("shown Stopped, runtime still has it {runc:?}"));
                }
                _ => {}
            }
        }
        more => bad.push(format!("{} instances after one {op:?}", more.len())),
    }
    for id in h.runc_ids() {
        if !uuids.contains(&id) {
            bad.push(format!("runtime container {id} without an instance"));
        }
    }
    for cg in h.cgroups() {
        if !uuids.iter().any(|u| cg.ends_with(u.as_str())) {
            bad.push(format!("cgroup {cg} without an instance"));
        }
    }
    let instances_dir = h.d.state.join("instances");
    for e in std::fs::read_dir(&instances_dir)
        .map(|rd| rd.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !uuids.contains(&name) {
            bad.push(format!(
                "instance directory {name} (its files and device claims) without an instance"
            ));
        }
    }
    for m in h.mounts() {
        let ok = uuids.iter().any(|u| {
            // Its root, the image through an idmapped mount under it, its root disk,
            // its disks.
            m == instances_dir.join(u).join("rootfs").display().to_string()
                || m == instances_dir.join(u).join("lower").display().to_string()
                || m == instances_dir.join(u).join("layer").display().to_string()
                || m.starts_with(&instances_dir.join(u).join("disks").display().to_string())
        });
        if !ok {
            bad.push(format!("mount {m} without an instance"));
        }
    }
    // The NIC: on the host, or in the running instance; never destroyed.
    if !on_host(&h.veth.peer) {
        bad.push(format!("NIC {} destroyed (its peer is gone)", h.veth.name));
    } else if !on_host(&h.veth.name) {
        let inside = inst_pid.is_some_and(|pid| Host::in_netns(pid, "eth1"));
        if !inside {
            bad.push(format!(
                "NIC {} neither on the host nor in a running instance",
                h.veth.name
            ));
        }
    }
    // The image cache holds the images the store has, nothing else.
    let images = h.images();
    for e in std::fs::read_dir(h.d.state.join("images"))
        .map(|rd| rd.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !images.contains(&name) {
            bad.push(format!("image cache entry {name} without an image"));
        }
    }
    bad
}

/// Deletes what the crashed operation left and compares the host with the
/// snapshot taken before.
fn clean_up(h: &Host, before: &Snapshot) -> Vec<String> {
    let mut bad = Vec::new();
    if !h.instances().is_empty() {
        let out = h.d.cli(&["delete", "--force", INST]);
        if !out.status.success() {
            bad.push(format!(
                "delete after recovery failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if h.d
        .client()
        .get::<serde_json::Value>(&format!("/1.0/images/{IMPORTED}"))
        .is_ok()
    {
        let out = h.d.cli(&["image", "delete", IMPORTED]);
        if !out.status.success() {
            bad.push(format!(
                "image delete after recovery failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if !on_host(&h.veth.name) {
        bad.push(format!("NIC {} not back on the host", h.veth.name));
    }
    bad.extend(diff(before, &h.snapshot()));
    bad
}

/// A recovered instance works as asked: a stopped one starts, a running one
/// has its NIC and its disk; and when its container then dies while the
/// daemon is down, the next start-up reports it (what Nova's power sync
/// relies on).
fn check_usable(h: &mut Host) -> Vec<String> {
    let mut bad = Vec::new();
    let list = h.instances();
    let Some(i) = list.first() else {
        return bad;
    };
    let uuid = i["uuid"].as_str().unwrap_or("?").to_string();
    if i["status"] == "Stopped" {
        let out = h.d.cli(&["start", INST]);
        if !out.status.success() {
            bad.push(format!(
                "the recovered, stopped instance does not start: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return bad;
        }
    }
    let out = h.d.cli(&[
        "exec",
        INST,
        "--",
        "sh",
        "-c",
        "ls /sys/class/net; cat /mnt/share/hello",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("eth1") {
        bad.push(format!("the running instance lacks its NIC: {text}"));
    }
    if !text.contains("from the host") {
        bad.push(format!("the running instance lacks its disk: {text}"));
    }
    // Killed outside corral while it is down: reported stale on start-up.
    // The veth is taken out first (by hand, as an operator would), or it
    // would die with the container's namespace.
    let pid = h.instances()[0]["state"]["pid"].as_i64().unwrap_or(0);
    h.d.stop();
    if pid > 0 && Host::in_netns(pid, "eth1") {
        let p = pid.to_string();
        for args in [
            vec!["ip", "link", "set", "dev", "eth1", "down"],
            vec!["ip", "link", "set", "dev", "eth1", "name", &h.veth.name],
            vec!["ip", "link", "set", "dev", &h.veth.name, "netns", "1"],
        ] {
            let st = Command::new("nsenter")
                .args(["-t", &p, "-n"])
                .args(&args)
                .status()
                .unwrap();
            assert!(st.success(), "{args:?} failed");
        }
    }
    let _ = Command::new("runc")
        .arg("--root")
        .arg(&h.d.runtime_root)
        .args(["kill", &uuid, "KILL"])
        .status();
    common::wait_until(Duration::from_secs(10), || {
        h.d.runc_status(&uuid).as_deref() == Some("stopped")
    });
    h.d.spawn();
    let info: serde_json::Value = h.d.client().get("/1.0").unwrap();
    if info["reconcile"]["stale"] != serde_json::json!([INST]) {
        bad.push(format!(
            "a running instance that died while the daemon was down is not reported stale: {}",
            info["reconcile"]
        ));
    }
    bad
}

fn scenario(h: &mut Host, before: &Snapshot, op: Op, point: &str) -> Vec<String> {
    crash_during(h, op, point);
    h.d.spawn();
    let mut bad = check_recovered(h, op);
    if bad.is_empty() {
        bad.extend(check_usable(h));
    }
    bad.extend(clean_up(h, before));
    bad
}

#[test]
fn every_crash_point_recovers_without_leaks() {
    require_host!();
    let only: Option<BTreeSet<String>> = std::env::var("CORRAL_CRASH_POINTS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(str::to_string).collect());
    if let Some(only) = &only {
        for p in only {
            assert!(POINTS.contains(&p.as_str()), "no crash point {p}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello"), "from the host\n").unwrap();
    // A second image: the busybox tarball uncompressed (other bytes, so
    // another fingerprint).
    let import_tar = dir.path().join("busybox.tar");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' > '{}'",
            common::busybox_tarball().display(),
            import_tar.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let cgroup_parent = format!("corral-test/crash-{}", std::process::id());
    let d = Daemon::start_with(&format!(
        "device_allowlist = nic:crl*, disk:{}/*\ncgroup_parent = {cgroup_parent}",
        dir.path().display()
    ));
    let mut h = Host {
        d,
        veth: Veth::new(),
        share,
        cgroup_parent,
        import_tar,
        _dir: dir,
    };
    h.d.import_busybox();
    // A first launch makes the image's id-shifted copy, which later
    // instances in the same id range reuse: part of the host's state.
    h.launch();
    assert_eq!(
        h.d.exec(INST, "cat /mnt/share/hello; ls /sys/class/net")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["from", "the", "host", "eth1", "lo"]
    );
    h.d.ok(&["delete", "--force", INST]);
    let before = h.snapshot();
    assert!(before.links.contains(&h.veth.name), "{before:?}");

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    for point in POINTS {
        if only.as_ref().is_some_and(|o| !o.contains(*point)) {
            continue;
        }
        for op in ops_reaching(point) {
            ran += 1;
            let t = Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                scenario(&mut h, &before, op, point)
            }));
            let bad = match r {
                Ok(bad) => bad,
                Err(e) => vec![e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into())],
            };
            eprintln!(
                "{point} during {op:?}: {} ({:.1}s)",
                if bad.is_empty() { "ok" } else { "FAILED" },
                t.elapsed().as_secs_f64()
            );
            if !bad.is_empty() {
                failures.push(format!("{point} during {op:?}:\n  {}", bad.join("\n  ")));
                // Back to a clean, unarmed daemon for the next point.
                h.d.crash();
                h.d.spawn();
                let _ = h.d.cli(&["delete", "--force", INST]);
                let _ = h.d.cli(&["image", "delete", IMPORTED]);
                h.veth.remake_if_gone();
            }
        }
    }
    eprintln!(
        "{ran} crash scenarios in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // The cgroup parent of this test, once empty.
    for hier in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hier.path().join(&h.cgroup_parent));
    }
    assert!(ran > 0, "no crash point selected");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unknown_crash_point_stops_the_daemon_at_start_up() {
    require_host!();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.conf");
    std::fs::write(&config, "[corral]\noci_runtime = runc\n").unwrap();
    let mut child = Command::new(common::BIN)
        .arg("daemon")
        .arg("--config-file")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("corral.sock"))
        .env(ENV_VAR, "launch.no_such_step")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that ignored the name would serve: stop it and fail.
    let exited = common::wait_until(Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited,
        "the daemon started with an unknown crash point:\n{err}"
    );
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("names no crash point"), "{err}");
    // Refused before anything is made.
    assert!(!dir.path().join("state").exists());
}
