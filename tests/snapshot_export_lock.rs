//! The export of a snapshot (what Nova's snapshot streams to Glance) holds
//! the instance's lock: a delete asked for meanwhile waits until the export
//! has written its whole tarball, then removes everything.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::RuntimeCleanup as Cleanup;
use corral::driver::Driver;

/// A consumer that stalls on its first write until `go` (a slow Glance).
struct Stalled {
    started: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
}

impl Write for Stalled {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.started.store(true, Ordering::SeqCst);
        while !self.go.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_delete_waits_for_the_export_of_a_snapshot() {
    require_host!();
    let tmp = tempfile::Builder::new()
        .prefix("corral-test-exportlock-")
        .tempdir()
        .unwrap();
    let runtime_root = PathBuf::from(format!(
        "/run/corral-test/exportlock-{}",
        std::process::id()
    ));
    let uuid = uuid::Uuid::new_v4().to_string();
    let _cleanup = Cleanup {
        runtime_root: runtime_root.clone(),
        uuid: uuid.clone(),
    };
    let base = 220_000_000u64 + u64::from(std::process::id() % 1000) * 65536;
    let d = common::in_process_driver(tmp.path(), &runtime_root, base, 5).await;
    d.images()
        .import_image(&common::busybox_tarball(), Some("busybox"), None)
        .await
        .unwrap();
    let spec = common::spec(&uuid, "exported", "busybox");
    d.spawn(&spec, true, None).await.unwrap();
    d.snapshot_create(&uuid, "s1").await.unwrap();
    let len = d.snapshot_export_len(&uuid, "s1").await.unwrap();
    assert!(len > 0);

    let started = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let deleted = Arc::new(AtomicBool::new(false));
    let out = Box::new(Stalled {
        started: started.clone(),
        go: go.clone(),
        bytes: bytes.clone(),
    });
    let export = d.snapshot_export(&uuid, "s1", out);
    let delete = async {
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = d.destroy(&uuid).await;
        deleted.store(true, Ordering::SeqCst);
        r
    };
    let consumer = async {
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The delete is asked for while the export is under way: it waits.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let waited = !deleted.load(Ordering::SeqCst);
        go.store(true, Ordering::SeqCst);
        waited
    };
    let (exported, deleted_result, waited) = tokio::join!(export, delete, consumer);
    assert!(
        waited,
        "the instance was deleted while its snapshot was exported"
    );
    exported.unwrap();
    assert_eq!(bytes.load(Ordering::SeqCst), len, "the export is whole");
    deleted_result.unwrap();
    assert!(d.leftovers(&uuid).is_empty(), "{:?}", d.leftovers(&uuid));
}
