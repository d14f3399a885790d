//! Progress of an image import, in its operation's metadata as LXD reports
//! it (`{"progress": {...}}`): how far the daemon has read the uploaded
//! file in the pass now running over it (its fingerprint, then its
//! unpacking), told by the kernel's record of the open file's position
//! (`/proc/self/fdinfo`), so the import code needs no hooks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::operations::Operations;

/// How often the metadata is brought up to date.
const EVERY: Duration = Duration::from_millis(100);

/// The furthest position among this process's open files on `path`.
pub fn read_position(path: &Path) -> Option<u64> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    fds.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
        .filter_map(|e| {
            let info =
                std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(e.file_name())).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .max()
}

/// The metadata of an import `processed` bytes into a file of `total`.
pub fn metadata(processed: u64, total: u64) -> serde_json::Value {
    let processed = processed.min(total);
    let percent = (processed * 100).checked_div(total).unwrap_or(100);
    serde_json::json!({"progress": {
        "stage": "import",
        "processed_bytes": processed,
        "total_bytes": total,
        "percent": percent,
    }})
}

/// Keeps the operation `id`'s metadata up to date with the reading of
/// `path` (`total` bytes) until the operation ends.
pub fn watch(ops: Operations, id: String, path: PathBuf, total: u64) {
    // As the kernel names it (fd links are canonical paths).
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let p = path.clone();
            let pos = tokio::task::spawn_blocking(move || read_position(&p))
                .await
                .ok()
                .flatten();
            if let Some(pos) = pos.filter(|p| last != Some(*p)) {
                last = Some(pos);
                if !ops.set_running_metadata(&id, metadata(pos, total)) {
                    return;
                }
            } else if !ops.is_running(&id) {
                return;
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_position_of_an_open_file_is_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("upload");
        std::fs::write(&path, vec![0u8; 10_000]).unwrap();
        assert_eq!(read_position(&path), None);
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact(&mut buf).unwrap();
        assert_eq!(read_position(&path), Some(4096));
        assert_eq!(
            metadata(4096, 10_000)["progress"],
            serde_json::json!({"stage": "import", "processed_bytes": 4096, "total_bytes": 10_000, "percent": 40})
        );
        assert_eq!(metadata(5, 0)["progress"]["percent"], 100);
    }
}
