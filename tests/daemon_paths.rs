//! Where a daemon keeps its state, and two daemons on one machine.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, BIN};

/// Runs `corral daemon` and returns its stderr if it exits within 20 s;
/// kills it and returns None if it keeps running.
fn daemon_exit(config: &Path, state: &Path, socket: &Path) -> Option<String> {
    let mut child = Command::new(BIN)
        .arg("daemon")
        .arg("--config-file")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success());
            return Some(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    let _ = child.wait();
    None
}

fn remove_cgroup_parent(name: &str) {
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(name));
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let _ = std::fs::remove_dir(e.path().join(name));
        }
    }
}

#[test]
fn state_under_a_private_parent_is_refused_with_the_fix() {
    require_host!();
    let dir = tempfile::Builder::new()
        .prefix("corral-test-")
        .tempdir()
        .unwrap();
    // As under /root, or from `mktemp -d`.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = private.join("state");
    let conf = dir.path().join("c.conf");
    std::fs::write(
        &conf,
        "[corral]\noci_runtime = runc\nruntime_root = /run/corral-test/private\ncgroup_parent = corral-test\n",
    )
    .unwrap();
    let err = daemon_exit(&conf, &state, &dir.path().join("s.sock"))
        .expect("the daemon started on a state path its containers cannot reach");
    assert!(
        err.contains(&format!("the directory {}", private.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod o+x {}", private.display())),
        "{err}"
    );

    // With the fix the message names, the same state path works.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
    let d = Daemon::start_in(dir, state, "");
    d.import_busybox();
    d.ok(&["launch", "busybox", "reach"]);
    assert_eq!(d.exec("reach", "echo up").trim(), "up");
}

#[test]
fn two_daemons_with_their_own_state_paths_both_launch() {
    require_host!();
    let top = tempfile::Builder::new()
        .prefix("corral-test-")
        .tempdir()
        .unwrap();
    let (state_a, state_b) = (top.path().join("host-a"), top.path().join("host-b"));
    let a = Daemon::start_own("host-a", state_a.clone());
    let b = Daemon::start_own("host-b", state_b.clone());
    assert_eq!(a.socket, state_a.join("corral.sock"));
    assert_ne!(a.runtime_root, b.runtime_root);
    for (d, name) in [(&a, "on-a"), (&b, "on-b")] {
        d.import_busybox();
        d.ok(&["launch", "busybox", name]);
        let uuid = d.uuid(name);
        assert_eq!(d.runc_status(&uuid).as_deref(), Some("running"), "{name}");
        assert_eq!(d.exec(name, "echo up").trim(), "up");
    }
    // Each sees only its own.
    assert!(a.fails(&["info", "on-b"]).contains("not found"));
    assert!(b.fails(&["info", "on-a"]).contains("not found"));

    // A second daemon on a state path in use is refused, whatever its socket.
    let err = daemon_exit(&a.config, &state_a, &top.path().join("third.sock"))
        .expect("a second daemon ran on the same state path");
    assert!(
        err.contains("another corral daemon") && err.contains(&state_a.display().to_string()),
        "{err}"
    );
    assert!(err.contains("corral.lock"), "{err}");
    // The first one still serves.
    assert_eq!(a.exec("on-a", "echo still").trim(), "still");

    let tags = [&state_a, &state_b].map(|s| corral::config::state_tag(s));
    drop(a);
    drop(b);
    for tag in tags {
        remove_cgroup_parent(&format!("corral-{tag}"));
        let _ = std::fs::remove_dir_all(Path::new("/run/corral").join(&tag));
    }
}

/// Runs `argv` as the host user nobody (65534), no groups; its success.
fn as_nobody(argv: &[&str]) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn host_users_reach_nothing_of_a_tenant() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&[
        "launch",
        "busybox",
        "secret",
        "--env",
        "DB_PASSWORD=hunter2",
    ]);
    assert_eq!(d.exec("secret", "echo $DB_PASSWORD").trim(), "hunter2");
    let uuid = d.uuid("secret");
    let inst = d.state.join("instances").join(&uuid);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // The check itself works: nobody can read what everyone may.
    assert!(as_nobody(&["cat", "/etc/hostname"]));
    assert!(as_nobody(&["stat", &s(&d.state)]));
    for path in [
        inst.join("config.json"),
        inst.join("console.log"),
        inst.join("rootfs/bin/busybox"),
        inst.join("rootfs/etc/passwd"),
    ] {
        assert!(path.exists(), "{}", path.display());
        assert!(
            !as_nobody(&["cat", &s(&path)]),
            "a host user reads {}",
            path.display()
        );
        assert!(
            !as_nobody(&["stat", &s(&path)]),
            "a host user reaches {}",
            path.display()
        );
    }
    assert!(!as_nobody(&["ls", &s(&d.state.join("instances"))]));
    // Images, and their setuid files, are the daemon's alone.
    let images = d.state.join("images");
    let busybox: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("rootfs/bin/busybox"))
        .filter(|p| p.exists())
        .collect();
    assert!(!busybox.is_empty());
    for p in &busybox {
        assert!(!as_nobody(&["stat", &s(p)]), "{}", p.display());
    }
    assert!(!as_nobody(&["ls", &s(&images)]));
    // config.json is root's alone even with the directory open.
    let mode = std::fs::metadata(inst.join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "config.json mode {mode:o}");
    // And the instance still works after a stop and start.
    d.ok(&["restart", "secret"]);
    assert_eq!(d.exec("secret", "echo $DB_PASSWORD").trim(), "hunter2");
}
