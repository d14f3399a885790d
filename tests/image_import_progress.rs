//! The operation of a REST image import reports its progress in its
//! metadata, as LXD does: `{"progress": {"processed_bytes", "total_bytes",
//! "percent", "stage"}}` while it runs, the image record when it is done.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;

#[test]
fn an_image_import_reports_its_progress() {
    require_host!();
    let d = Daemon::start();
    // A root tarball big enough to take a while: busybox and 256 MiB of noise.
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(common::busybox_tarball())
        .arg("-C")
        .arg(&root));
    ok(Command::new("sh").arg("-c").arg(format!(
        "head -c 268435456 /dev/urandom > {}/ballast",
        root.display()
    )));
    let tarball = work.path().join("big.tar");
    ok(Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg("."));
    std::fs::remove_dir_all(&root).unwrap();
    let total = std::fs::metadata(&tarball).unwrap().len();

    let c = d.client();
    let mut f = std::fs::File::open(&tarball).unwrap();
    let r = c
        .request(
            "POST",
            "/1.0/images",
            Some(("application/octet-stream", &mut f, total)),
            &[("X-Corral-Alias", "big")],
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let url = v["operation"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let (st, body) = common::raw_call(&c, "GET", &url, None);
        assert_eq!(st, 200);
        let op: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let op = op["metadata"].clone();
        if op["status"] != "Running" {
            break op;
        }
        if let Some(p) = op["metadata"].get("progress") {
            seen.push(p.clone());
        }
        assert!(Instant::now() < deadline, "the import did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(done["status"], "Success", "{done}");
    assert_eq!(done["metadata"]["alias"], "big", "{done}");
    assert!(
        !seen.is_empty(),
        "no progress reported while the import ran"
    );
    for p in &seen {
        assert_eq!(p["total_bytes"], total, "{p}");
        let n = p["processed_bytes"].as_u64().unwrap();
        assert!(n <= total, "{p}");
        assert_eq!(p["percent"], n * 100 / total, "{p}");
    }
    // Part way, not only at the ends.
    assert!(
        seen.iter().any(|p| {
            let n = p["processed_bytes"].as_u64().unwrap();
            n > 0 && n < total
        }),
        "{seen:?}"
    );
    d.ok(&["image", "delete", "big"]);
}
