//! An instance's ephemeral disk (Nova's `ephemeral_gb`, `corral launch
//! --ephemeral`): a second filesystem of its own, made the way the root disk
//! is ([`super::layer`]): a sparse file in the instance directory
//! (`ephemeral.img`, holding only what was written) formatted and mounted
//! through a loop device at `ephemeral/` (nosuid, nodev), its root owned by
//! the instance's root. The driver bind-mounts it at [`GUEST_PATH`] in the
//! container. It stays with the instance (stop, start, reboot, a rebuild
//! that preserves it) and goes with [`release`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::layer::run;
use super::{io_err, is_mounted, StorageError};

/// Where the disk appears in the container: cloud-init's `ephemeral0`
/// mount point on libvirt guests.
pub const GUEST_PATH: &str = "/mnt";
/// The filesystem when neither the caller nor `[DEFAULT]
/// default_ephemeral_format` names one (Nova's default for Linux guests).
pub const DEFAULT_FORMAT: &str = "ext4";
/// The filesystems an ephemeral disk may have (each where its `mkfs.<fs>`
/// is installed).
pub const FORMATS: &[&str] = &["ext4", "ext3", "ext2", "xfs", "btrfs"];
/// The smallest ephemeral disk.
pub const MIN_BYTES: u64 = super::layer::MIN_DISK_BYTES;
/// The largest ephemeral disk.
pub const MAX_BYTES: u64 = super::layer::MAX_DISK_BYTES;

const MOUNT_POINT: &str = "ephemeral";
const IMAGE: &str = "ephemeral.img";
const IMAGE_TMP: &str = "ephemeral.img.tmp";

/// Directories `mkfs.<fs>` is looked up in.
const SBIN: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Where the disk is mounted on the host.
pub fn mount_point(dir: &Path) -> PathBuf {
    dir.join(MOUNT_POINT)
}

/// The disk's file (sparse).
pub fn image(dir: &Path) -> PathBuf {
    dir.join(IMAGE)
}

/// [`run`], its failure named as the ephemeral disk's.
fn run_eph(cmd: &mut Command) -> Result<(), StorageError> {
    run(cmd).map_err(|e| match e {
        StorageError::Disk(m) => StorageError::Ephemeral(m),
        other => other,
    })
}

fn mkfs(fs: &str) -> Option<PathBuf> {
    SBIN.iter()
        .map(|d| Path::new(d).join(format!("mkfs.{fs}")))
        .find(|p| p.is_file())
}

/// Checks that `fs` is a filesystem an ephemeral disk may have and that this
/// host can make it.
pub fn check_format(fs: &str) -> Result<(), StorageError> {
    if !FORMATS.contains(&fs) {
        return Err(StorageError::Ephemeral(format!(
            "format {fs:?} is not supported (one of {})",
            FORMATS.join(", ")
        )));
    }
    if mkfs(fs).is_none() {
        return Err(StorageError::Ephemeral(format!(
            "format {fs}: mkfs.{fs} is not installed on this host"
        )));
    }
    Ok(())
}

/// Makes (first time: `bytes` large, formatted `fs`, its root owned by
/// `owner`) and mounts the ephemeral disk; returns its mount point on the
/// host. A disk already made keeps its size and contents.
pub fn mount(dir: &Path, bytes: u64, fs: &str, owner: u32) -> Result<PathBuf, StorageError> {
    check_format(fs)?;
    let mp = mount_point(dir);
    if is_mounted(&mp) {
        return Ok(mp);
    }
    let img = image(dir);
    let fresh = !img.is_file();
    if fresh {
        let tmp = dir.join(IMAGE_TMP);
        let _ = std::fs::remove_file(&tmp);
        let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.set_len(bytes).map_err(io_err(&tmp))?;
        drop(f);
        let Some(tool) = mkfs(fs) else {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::Ephemeral(format!(
                "mkfs.{fs} is not installed"
            )));
        };
        let mut cmd = Command::new(tool);
        match fs {
            // No blocks reserved for root; tables zeroed lazily (the file
            // is sparse: unwritten blocks read as zeros).
            "ext4" => cmd.args([
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            ]),
            "ext3" | "ext2" => cmd.args(["-q", "-F", "-m", "0", "-E", "nodiscard"]),
            // xfs, btrfs: no discard of the (sparse) file.
            _ => cmd.args(["-q", "-f", "-K"]),
        };
        if let Err(e) = run_eph(cmd.arg(&tmp)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &img).map_err(io_err(&img))?;
    }
    std::fs::create_dir_all(&mp).map_err(io_err(&mp))?;
    let opts = if fs == "ext4" {
        "loop,nosuid,nodev,noinit_itable"
    } else {
        "loop,nosuid,nodev"
    };
    run_eph(
        Command::new("mount")
            .args(["-t", fs, "-o", opts])
            .arg(&img)
            .arg(&mp),
    )?;
    if fresh {
        // The instance's own: its root owns the filesystem's root. mkfs's
        // lost+found (host root's, the overflow id inside) goes.
        let _ = std::fs::remove_dir(mp.join("lost+found"));
        std::os::unix::fs::chown(&mp, Some(owner), Some(owner)).map_err(io_err(&mp))?;
        std::fs::set_permissions(&mp, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(&mp))?;
    }
    Ok(mp)
}

/// Unmounts (detached when busy: the loop device goes with the last user)
/// and removes the ephemeral disk. Nothing to do without one.
pub fn release(dir: &Path) -> Result<(), StorageError> {
    let mp = mount_point(dir);
    super::unmount(&mp)?;
    if is_mounted(&mp) {
        return Err(StorageError::Unmount {
            path: mp,
            source: nix::Error::EBUSY,
        });
    }
    for d in [MOUNT_POINT, IMAGE, IMAGE_TMP] {
        let p = dir.join(d);
        crate::fsutil::remove_tree(&p).map_err(io_err(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn formats_are_checked_by_name_and_tool() {
        let e = check_format("vfat").unwrap_err().to_string();
        assert!(e.contains("format \"vfat\" is not supported"), "{e}");
        assert!(check_format("ext4;rm").is_err());
        for fs in FORMATS {
            assert_eq!(check_format(fs).is_ok(), mkfs(fs).is_some(), "{fs}");
        }
    }

    #[test]
    fn an_ephemeral_disk_is_sized_owned_kept_and_released() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("i");
        std::fs::create_dir(&inst).unwrap();
        let mp = mount(&inst, MIN_BYTES, DEFAULT_FORMAT, 1_234_567).unwrap();
        let m = std::fs::metadata(&mp).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1_234_567, 1_234_567, 0o755)
        );
        assert!(!mp.join("lost+found").exists());
        let st = nix::sys::statvfs::statvfs(&mp).unwrap();
        let size = st.blocks() as u64 * st.fragment_size() as u64;
        assert!(size <= MIN_BYTES && size > MIN_BYTES / 2, "{size}");
        std::fs::write(mp.join("kept"), "x").unwrap();
        // Unmounted (a host reboot) and mounted again: same disk, same data.
        super::super::unmount(&mp).unwrap();
        assert!(!is_mounted(&mp));
        mount(&inst, 2 * MIN_BYTES, DEFAULT_FORMAT, 0).unwrap();
        assert_eq!(std::fs::read_to_string(mp.join("kept")).unwrap(), "x");
        assert_eq!(std::fs::metadata(&mp).unwrap().uid(), 1_234_567);
        release(&inst).unwrap();
        assert!(!is_mounted(&mp));
        assert!(!mp.exists() && !image(&inst).exists());
        // Twice: nothing left to do.
        release(&inst).unwrap();
    }
}
