//! Lifecycle of real containers, daemon restarts and reconciliation.

mod common;

use std::time::Duration;

use common::{wait_until, Daemon};

#[test]
fn stop_start_pause_resume_restart_delete_change_the_runtime() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "life"]);
    let uuid = d.uuid("life");
    assert_eq!(d.runc_status(&uuid).as_deref(), Some("running"));
    // The runtime id is the instance uuid.
    let listed = std::process::Command::new("runc")
        .arg("--root")
        .arg(&d.runtime_root)
        .arg("list")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&uuid));

    d.ok(&["stop", "life"]);
    assert_eq!(d.runc_status(&uuid), None);
    assert_eq!(d.instance("life")["status"], "Stopped");

    d.ok(&["start", "life"]);
    assert_eq!(d.runc_status(&uuid).as_deref(), Some("running"));
    let pid1 = d.instance("life")["state"]["pid"].as_i64().unwrap();

    d.ok(&["pause", "life"]);
    assert_eq!(d.runc_status(&uuid).as_deref(), Some("paused"));
    assert_eq!(d.instance("life")["status"], "Frozen");
    d.ok(&["resume", "life"]);
    assert_eq!(d.runc_status(&uuid).as_deref(), Some("running"));

    d.ok(&["restart", "life"]);
    let pid2 = d.instance("life")["state"]["pid"].as_i64().unwrap();
    assert_ne!(pid1, pid2, "restart makes a new init");
    assert_eq!(d.runc_status(&uuid).as_deref(), Some("running"));

    d.ok(&["stop", "--force", "life"]);
    assert_eq!(d.runc_status(&uuid), None);
    d.ok(&["start", "life"]);

    // A running instance is only deleted with force.
    let err = d.fails(&["delete", "life"]);
    assert!(err.contains("running"), "{err}");
    d.ok(&["delete", "--force", "life"]);
    assert!(
        d.leftovers(&uuid).is_empty(),
        "left behind: {:?}",
        d.leftovers(&uuid)
    );
    assert!(d.fails(&["info", "life"]).contains("not found"));
}

#[test]
fn console_log_holds_what_init_prints_and_stays_bounded() {
    require_host!();
    let d = Daemon::start_with("console_log_max_bytes = 4096\nconsole_log_check_interval = 1");
    d.import_busybox();
    d.ok(&["launch", "busybox", "talk"]);
    assert!(wait_until(Duration::from_secs(5), || {
        d.ok(&["console-log", "talk"])
            .contains("corral-image: booting talk")
    }));
    // Write to init's stdout, which is the console.
    d.exec(
        "talk",
        "i=0; while [ $i -lt 400 ]; do echo console-line-$i >> /proc/1/fd/1; i=$((i+1)); done",
    );
    let uuid = d.uuid("talk");
    let log = d.state.join("instances").join(&uuid).join("console.log");
    assert!(wait_until(Duration::from_secs(10), || std::fs::metadata(
        &log
    )
    .map(|m| m.len() <= 4096)
    .unwrap_or(false)));
    assert!(log.with_extension("log.1").exists(), "rotated log missing");
    let tail = d.ok(&["console-log", "talk", "--lines", "2"]);
    assert_eq!(tail, "console-line-398\nconsole-line-399\n");
}

#[test]
fn containers_outlive_the_daemon_and_reconcile_on_start() {
    require_host!();
    let mut d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "keep"]);
    d.ok(&["launch", "busybox", "gone"]);
    d.ok(&["init", "busybox", "idle"]);
    let keep = d.uuid("keep");
    let gone = d.uuid("gone");
    let pid = d.instance("keep")["state"]["pid"].as_i64().unwrap();

    // A clean stop: containers keep running.
    d.stop();
    assert_eq!(d.runc_status(&keep).as_deref(), Some("running"));
    // Killed outside corral while it was down.
    let st = std::process::Command::new("runc")
        .arg("--root")
        .arg(&d.runtime_root)
        .args(["delete", "--force", &gone])
        .status()
        .unwrap();
    assert!(st.success());
    d.spawn();
    let info: serde_json::Value = d.client().get("/1.0").unwrap();
    assert_eq!(info["reconcile"]["running"], 1);
    assert_eq!(info["reconcile"]["stale"], serde_json::json!(["gone"]));
    let list: Vec<serde_json::Value> = d.client().get("/1.0/instances?recursion=1").unwrap();
    assert_eq!(list.len(), 3, "nothing lost, nothing duplicated");
    assert_eq!(d.instance("keep")["state"]["pid"].as_i64(), Some(pid));
    assert_eq!(d.instance("gone")["status"], "Stopped");
    assert_eq!(d.instance("idle")["status"], "Stopped");
    d.ok(&["start", "gone"]);
    assert_eq!(d.exec("gone", "echo back").trim(), "back");

    // A crash: the same.
    d.crash();
    assert_eq!(d.runc_status(&keep).as_deref(), Some("running"));
    d.spawn();
    assert_eq!(d.instance("keep")["state"]["pid"].as_i64(), Some(pid));
    let info: serde_json::Value = d.client().get("/1.0").unwrap();
    assert_eq!(info["reconcile"]["running"], 2);
    assert_eq!(info["reconcile"]["stale"], serde_json::json!([]));
}

#[test]
fn interrupted_create_is_rolled_back_on_restart() {
    require_host!();
    let mut d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "half"]);
    let uuid = d.uuid("half");
    d.stop();
    // Make the store say the create never finished, as a crash mid-create
    // leaves it.
    let db = d.state.join("corral.sqlite");
    let st = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c=sqlite3.connect('{}'); c.execute(\"UPDATE instances SET phase='creating' WHERE uuid='{uuid}'\"); c.commit()",
            db.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    d.spawn();
    let info: serde_json::Value = d.client().get("/1.0").unwrap();
    assert_eq!(
        info["reconcile"]["rolled_back"],
        serde_json::json!(["half"])
    );
    assert!(d.fails(&["info", "half"]).contains("not found"));
    assert!(
        d.leftovers(&uuid).is_empty(),
        "left behind: {:?}",
        d.leftovers(&uuid)
    );
}

/// Files under `dir` named `name`, to any depth.
fn find_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name() == name {
            found.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            found.extend(find_named(&p, name));
        }
    }
    found
}

#[test]
fn unprivileged_roots_see_the_one_cached_image_through_an_idmapped_mount() {
    use std::os::unix::fs::MetadataExt;
    require_host!();
    let d = Daemon::start();
    let info: serde_json::Value = d.client().get("/1.0").unwrap();
    if info["storage"] != "overlay" || info["idmapped_roots"] != true {
        eprintln!(
            "skipped: this kernel gives no idmapped overlay roots ({info}); the daemon log says why:\n{}",
            d.log()
        );
        return;
    }
    d.import_busybox();
    d.ok(&["launch", "busybox", "a1"]);
    d.ok(&["launch", "busybox", "a2"]);
    // No copy of the image per id range.
    assert_eq!(
        find_named(&d.state.join("images"), "shifted"),
        Vec::<std::path::PathBuf>::new()
    );
    for name in ["a1", "a2"] {
        // The container's root owns the image's files, and may change them.
        assert_eq!(
            d.exec(name, "stat -c %u:%g /bin/busybox /etc").trim(),
            "0:0\n0:0"
        );
        assert_eq!(
            d.exec(
                name,
                "echo hi > /etc/motd && chown 5:6 /etc/motd && stat -c %u:%g /etc/motd"
            )
            .trim(),
            "5:6"
        );
    }
    let u1 = d.uuid("a1");
    let u2 = d.uuid("a2");
    let inst = |u: &str| d.state.join("instances").join(u);
    let owner = |p: std::path::PathBuf| {
        let m = std::fs::metadata(&p).unwrap();
        (m.uid(), m.gid())
    };
    // On the host: each instance's changes in its own layer, owned by its
    // own range; two ranges, one image.
    let (b1, _) = owner(inst(&u1).join("upper"));
    let (b2, _) = owner(inst(&u2).join("upper"));
    assert_ne!(b1, b2);
    assert!(b1 >= 65536 && b2 >= 65536, "{b1} {b2}");
    assert_eq!(owner(inst(&u1).join("upper/etc/motd")), (b1 + 5, b1 + 6));
    assert_eq!(owner(inst(&u2).join("upper/etc/motd")), (b2 + 5, b2 + 6));
    // The cached image itself is untouched, owners as in the archive.
    let images = find_named(&d.state.join("images"), "busybox");
    let cached = images
        .iter()
        .find(|p| p.ends_with("rootfs/bin/busybox"))
        .expect("the cached image's /bin/busybox");
    assert_eq!(owner(cached.clone()), (0, 0));
    assert!(
        !std::fs::read_dir(cached.parent().unwrap().parent().unwrap().join("etc"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name() == "motd")
    );
    // Stop and start mount it again; delete leaves no mount behind.
    d.ok(&["stop", "a1"]);
    d.ok(&["start", "a1"]);
    assert_eq!(d.exec("a1", "cat /etc/motd").trim(), "hi");
    d.ok(&["delete", "--force", "a1"]);
    d.ok(&["delete", "--force", "a2"]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for u in [&u1, &u2] {
        assert!(!mounts.contains(u.as_str()), "a mount of {u} is left");
        assert!(!inst(u).exists());
    }
}
