//! An instance's root disk: the overlay's writable layer on a filesystem of
//! its own, an ext4 file in the instance directory (`layer.img`, sparse: it
//! holds only what the instance wrote) mounted through a loop device at
//! `layer/`. Writing past its size fails inside the container with ENOSPC;
//! the host's filesystem and other instances are untouched. The loop device
//! is released with the mount (mount(8)'s autoclear).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io_err, is_mounted, StorageError};

/// The smallest root disk (ext4 with a journal needs a few MiB).
pub const MIN_DISK_BYTES: u64 = 32 << 20;
/// The largest root disk.
pub const MAX_DISK_BYTES: u64 = 64 << 40;

pub(super) const MOUNT_POINT: &str = "layer";
pub(super) const IMAGE: &str = "layer.img";
pub(super) const IMAGE_TMP: &str = "layer.img.tmp";

pub(super) fn mount_point(dir: &Path) -> PathBuf {
    dir.join(MOUNT_POINT)
}

/// Whether the instance has a root disk of its own.
pub(super) fn has_disk(dir: &Path) -> bool {
    dir.join(IMAGE).is_file()
}

pub(super) fn run(cmd: &mut Command) -> Result<(), StorageError> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| StorageError::Disk(format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(StorageError::Disk(format!(
        "{what} failed ({}): {}",
        out.status,
        err.trim().chars().take(400).collect::<String>()
    )))
}

/// Makes (first time, `bytes` large) and mounts the instance's root disk;
/// returns its mount point. `bytes == 0`: mount an existing disk only. A
/// disk already made keeps its size.
pub(super) fn mount(dir: &Path, bytes: u64) -> Result<PathBuf, StorageError> {
    let mp = mount_point(dir);
    if is_mounted(&mp) {
        return Ok(mp);
    }
    let img = dir.join(IMAGE);
    if !img.is_file() {
        if bytes == 0 {
            return Err(StorageError::Disk(format!("{} is missing", img.display())));
        }
        let tmp = dir.join(IMAGE_TMP);
        let _ = std::fs::remove_file(&tmp);
        let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.set_len(bytes).map_err(io_err(&tmp))?;
        drop(f);
        // No blocks reserved for root (the container's root is the one
        // writing), inode tables and journal left to be zeroed lazily (the
        // file is sparse: unwritten blocks read as zeros).
        let made = run(Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            ])
            .arg(&tmp));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &img).map_err(io_err(&img))?;
    }
    std::fs::create_dir_all(&mp).map_err(io_err(&mp))?;
    // `noinit_itable`: the kernel would otherwise zero the inode tables in
    // the background, filling the sparse file with zeros it already reads.
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noinit_itable"])
        .arg(&img)
        .arg(&mp))?;
    // The filesystem's root is host root's: only the layer directories in it
    // are the container's (the caller sets their owners).
    let m = std::fs::metadata(&mp).map_err(io_err(&mp))?;
    if m.uid() != 0 {
        return Err(StorageError::Disk(format!(
            "{} is owned by {}, not root",
            mp.display(),
            m.uid()
        )));
    }
    let lost = mp.join("lost+found");
    let _ = std::fs::remove_dir(&lost);
    Ok(mp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_disk_bounds_what_is_written_and_goes_with_release() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("i");
        std::fs::create_dir(&inst).unwrap();
        let mp = mount(&inst, MIN_DISK_BYTES).unwrap();
        assert!(has_disk(&inst));
        // Sparse: the file holds far less than its size.
        let held = std::fs::metadata(inst.join(IMAGE)).unwrap().blocks() * 512;
        // Past the size: ENOSPC.
        let big = vec![7u8; 1 << 20];
        let mut f = std::fs::File::create(mp.join("fill")).unwrap();
        let err = (0..64)
            .map(|_| std::io::Write::write_all(&mut f, &big))
            .find_map(|r| r.err())
            .expect("a write past the disk's size fails");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        // Mounting again is a no-op; release unmounts and removes it.
        assert_eq!(mount(&inst, 0).unwrap(), mp);
        super::super::release(&inst).unwrap();
        assert!(!is_mounted(&mp));
        assert!(!inst.join(IMAGE).exists());
        assert!(
            held < 8 << 20,
            "a fresh {MIN_DISK_BYTES}-byte disk holds {held} bytes"
        );
    }
}
