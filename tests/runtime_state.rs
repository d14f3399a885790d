//! corral reads runc's state from its state directory instead of running
//! `runc state`: for real containers in every state runc knows, the reading
//! must match what `runc state` and `runc list` print.

mod common;

use std::path::Path;
use std::process::Command;

use corral::runtime::{Runtime, RuntimeChoice, Status};

fn runc(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// `runc create`: the container's init keeps its stdio, so none may be a pipe
/// this test waits on.
fn runc_create(root: &Path, bundle: &Path, id: &str) -> bool {
    Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["create", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// (status, pid, bundle) as `runc state` prints them; None when runc does not
/// know the container.
fn runc_state(root: &Path, id: &str) -> Option<(String, i64, String)> {
    let out = runc(root, &["state", id]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some((
        v["status"].as_str().unwrap().to_string(),
        v["pid"].as_i64().unwrap(),
        v["bundle"].as_str().unwrap().to_string(),
    ))
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Creating => "creating",
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Stopped => "stopped",
    }
}

/// A bundle whose init is busybox `sh -c CMD`, in a cgroup of its own.
fn bundle(dir: &Path, id: &str, cmd: &str) -> std::path::PathBuf {
    let b = dir.join(id);
    std::fs::create_dir_all(b.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", b.join("rootfs/bin/busybox")).unwrap();
    assert!(Command::new("runc")
        .arg("spec")
        .current_dir(&b)
        .status()
        .unwrap()
        .success());
    let path = b.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/busybox", "sh", "-c", cmd]);
    spec["linux"]["cgroupsPath"] = format!("/corral-test-state/{id}").into();
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    b
}

#[tokio::test]
async fn direct_reading_matches_runc_state() {
    require_host!();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runc");
    let rt = Runtime::select(RuntimeChoice::Runc, &root, Path::new("/sys/fs/cgroup")).unwrap();
    let tag = format!("st{}", std::process::id());
    let ids: Vec<String> = ["created", "running", "paused", "exited"]
        .iter()
        .map(|s| format!("{tag}-{s}"))
        .collect();
    let cmds = ["sleep 600", "sleep 600", "sleep 600", "exit 0"];
    for (id, cmd) in ids.iter().zip(cmds) {
        let b = bundle(tmp.path(), id, cmd);
        assert!(runc_create(&root, &b, id), "runc create {id}");
    }
    for id in &ids[1..] {
        assert!(runc(&root, &["start", id]).status.success());
    }
    assert!(runc(&root, &["pause", &ids[2]]).status.success());
    // the short-lived init has exited
    assert!(common::wait_until(
        std::time::Duration::from_secs(10),
        || { runc_state(&root, &ids[3]).is_some_and(|s| s.0 == "stopped") }
    ));

    let check = |rt: Runtime, ids: Vec<String>, root: std::path::PathBuf| async move {
        let mut seen = Vec::new();
        for id in &ids {
            let want = runc_state(&root, id).expect("runc knows it");
            let got = rt.state(id).await.unwrap().expect("corral knows it");
            let got = (
                status_word(got.status).to_string(),
                got.pid.unwrap_or(-1) as i64,
                got.bundle.unwrap().display().to_string(),
            );
            assert_eq!(got, want, "{id}");
            seen.push(want.0);
        }
        seen
    };
    let seen = check(rt.clone(), ids.clone(), root.clone()).await;
    assert_eq!(seen, ["created", "running", "paused", "stopped"]);

    // killed from outside: stopped, pid 0, like runc says
    assert!(runc(&root, &["resume", &ids[2]]).status.success());
    assert!(runc(&root, &["kill", &ids[1], "KILL"]).status.success());
    assert!(common::wait_until(
        std::time::Duration::from_secs(10),
        || { runc_state(&root, &ids[1]).is_some_and(|s| s.0 == "stopped") }
    ));
    let seen = check(rt.clone(), ids.clone(), root.clone()).await;
    assert_eq!(seen, ["created", "stopped", "running", "stopped"]);

    // list: the same containers and states as `runc list`
    let out = runc(&root, &["list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut want: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    want.sort();
    let got: Vec<(String, String)> = rt
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, status_word(c.status).to_string()))
        .collect();
    assert_eq!(got, want);

    for id in &ids {
        assert!(runc(&root, &["delete", "--force", id]).status.success());
        assert!(rt.state(id).await.unwrap().is_none());
    }
    assert!(rt.list().await.unwrap().is_empty());
    let _ = std::fs::remove_dir("/sys/fs/cgroup/unified/corral-test-state");
    for c in [
        "cpu", "memory", "pids", "freezer", "devices", "blkio", "cpuset", "systemd",
    ] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{c}/corral-test-state"));
    }
}
