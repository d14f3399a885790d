//! Bad input gets a clear error and changes nothing.

mod common;

use std::path::Path;

use common::{Daemon, BIN};

fn state_snapshot(d: &Daemon) -> (Vec<String>, Vec<String>, Vec<String>) {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["list", "--format", "json"])).unwrap();
    let list = list
        .iter()
        .map(|i| {
            format!(
                "{} {} {} {}",
                i["name"], i["uuid"], i["status"], i["state"]["pid"]
            )
        })
        .collect();
    let images: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["image", "list", "--format", "json"])).unwrap();
    let images = images
        .iter()
        .map(|i| format!("{} {} {}", i["fingerprint"], i["alias"], i["used_by"]))
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(d.state.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.extend(
        std::fs::read_dir(d.state.join("instances"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned()),
    );
    files.sort();
    (list, images, files)
}

fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn hostile(
    dir: &Path,
    name: &str,
    build: impl FnOnce(&mut tar::Builder<std::fs::File>),
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut h = header();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
    build(&mut b);
    b.finish().unwrap();
    path
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "dup"]);
    let before = state_snapshot(&d);

    let err = d.fails(&["launch", "nosuchimage", "x1"]);
    assert!(err.contains("image nosuchimage not found"), "{err}");
    let err = d.fails(&["launch", "busybox", "dup"]);
    assert!(err.contains("already exists"), "{err}");
    let err = d.fails(&["launch", "busybox", "x2", "--memory", "12parsecs"]);
    assert!(err.contains("unknown unit"), "{err}");
    let err = d.fails(&["launch", "busybox", "x3", "--memory", "1KiB"]);
    assert!(err.contains("at least 8MiB"), "{err}");
    let err = d.fails(&["launch", "busybox", "x4", "--cpus", "0"]);
    assert!(err.contains("cpus must be"), "{err}");
    let err = d.fails(&["launch", "busybox", "bad_name"]);
    assert!(err.contains("invalid instance name"), "{err}");
    let err = d.fails(&["launch", "busybox", "x5", "--", "/no/such/init"]);
    assert!(
        err.contains("no such file") || err.contains("not found"),
        "{err}"
    );
    let err = d.fails(&["start", "ghost"]);
    assert!(err.contains("instance ghost not found"), "{err}");
    let err = d.fails(&["start", "dup"]);
    assert!(err.contains("already running"), "{err}");
    let err = d.fails(&["image", "delete", "busybox"]);
    assert!(err.contains("used by instances: dup"), "{err}");
    let err = d.fails(&[
        "image",
        "import",
        d.state.join("nope.tar").to_str().unwrap(),
    ]);
    assert!(err.contains("is not a file"), "{err}");

    assert_eq!(
        state_snapshot(&d),
        before,
        "a refused request changed state"
    );
    // The failed launch of x5 left nothing behind either.
    let runtime_entries = std::fs::read_dir(&d.runtime_root).unwrap().count();
    assert_eq!(runtime_entries, 1);
}

#[test]
fn hostile_tarballs_are_refused() {
    require_host!();
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let traversal = hostile(work.path(), "traversal.tar", |b| {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(4);
        // set_path refuses "..", so write the raw name.
        let name = b"../../etc/evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
    });
    let device = hostile(work.path(), "device.tar", |b| {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Block);
        h.set_mode(0o600);
        h.set_size(0);
        h.set_device_major(8).unwrap();
        h.set_device_minor(0).unwrap();
        b.append_data(&mut h, "dev/sda", std::io::empty()).unwrap();
    });
    let escape = hostile(work.path(), "symlink.tar", |b| {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "etc", "/etc").unwrap();
        let mut h = header();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(4);
        b.append_data(&mut h, "etc/corral-escape", &b"evil"[..])
            .unwrap();
    });
    let garbage = work.path().join("garbage.tar.gz");
    std::fs::write(&garbage, b"this is not a tarball at all").unwrap();
    // Files, but no root filesystem (no bin/, sbin/ or usr/).
    let not_root = work.path().join("notroot.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&not_root).unwrap());
        let mut h = header();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(5);
        b.append_data(&mut h, "etc/hostname", &b"evil\n"[..])
            .unwrap();
        b.finish().unwrap();
    }

    for (file, want) in [
        (&traversal, ".."),
        (&device, "device node"),
        (&escape, "symlink"),
        (&garbage, "archive"),
        (&not_root, "no root filesystem"),
    ] {
        let err = d.fails(&["image", "import", file.to_str().unwrap(), "--alias", "evil"]);
        assert!(err.contains(want), "{}: {err}", file.display());
    }
    assert!(!Path::new("/etc/corral-escape").exists());
    assert!(!Path::new("/etc/evil").exists());
    let images: Vec<serde_json::Value> = d.client().get("/1.0/images?recursion=1").unwrap();
    assert!(images.is_empty());
    let left: Vec<_> = std::fs::read_dir(d.state.join("images"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "image cache not clean: {left:?}");
}

/// Sends a JSON request and returns the status and the decoded body.
fn send(
    d: &Daemon,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let bytes = body.to_string().into_bytes();
    let mut cur = std::io::Cursor::new(bytes.as_slice());
    let resp = d
        .client()
        .request(
            method,
            path,
            Some(("application/json", &mut cur, bytes.len() as u64)),
            &[],
        )
        .unwrap();
    let v = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (resp.status, v)
}

#[test]
fn inputs_that_used_to_panic_get_answers() {
    require_host!();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "calm"]);
    let uuid = d.uuid("calm");

    // A stop with a timeout past what the clock can hold (Instant + Duration
    // overflowed in the operation's task, which then never finished).
    let (status, env) = send(
        &d,
        "PUT",
        "/1.0/instances/calm/state",
        &serde_json::json!({"action": "stop", "timeout": i64::MAX}),
    );
    assert_eq!(status, 202, "{env}");
    let op_url = env["operation"].as_str().unwrap().to_string();
    let op: serde_json::Value = d
        .client()
        .get(&format!("{op_url}/wait?timeout=60"))
        .unwrap();
    assert_eq!(op["status"], "Success", "{op}\n{}", d.log());
    assert_eq!(d.instance("calm")["status"], "Stopped");
    // Waiting on it with a huge timeout answers too.
    let op: serde_json::Value = d
        .client()
        .get(&format!("{op_url}/wait?timeout={}", i64::MAX))
        .unwrap();
    assert_eq!(op["status"], "Success");

    // A uuid-shaped name would make a uuid name two instances.
    let err = d.fails(&["launch", "busybox", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"]);
    assert!(err.contains("must not be a UUID"), "{err}");
    let err = d.fails(&["info", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"]);
    assert!(err.contains("not found"), "{err}");
    // An instance is still found by its uuid, and by its name.
    assert_eq!(d.instance(&uuid)["name"], "calm");
    d.ok(&["start", "calm"]);
    assert_eq!(d.instance("calm")["status"], "Running");
}

#[test]
fn missing_runtime_binary_stops_the_daemon_with_a_clear_error() {
    require_host!();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.conf");
    std::fs::write(
        &conf,
        "[corral]\noci_runtime = crun\nruntime_root = /run/corral-test/missing\n",
    )
    .unwrap();
    let empty_path = dir.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    let out = std::process::Command::new(BIN)
        .env("PATH", &empty_path)
        .args(["daemon", "--config-file"])
        .arg(&conf)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OCI runtime crun is not installed"), "{err}");

    std::fs::write(&conf, "[corral]\noci_runtime = kata\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["daemon", "--config-file"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be auto, runc or crun"));
}

#[test]
fn client_without_daemon_says_so() {
    let out = std::process::Command::new(BIN)
        .env("CORRAL_SOCKET", "/nonexistent/corral.sock")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the corral daemon"));
}
