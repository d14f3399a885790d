//! The btrfs pool (`[corral] storage = btrfs`): the state directory's
//! filesystem is btrfs, and every root is a subvolume
//! (docs/decisions/0008).
//!
//! - A cached image is copied once (reflinked: no data is written) into a
//!   read-only subvolume, `<state>/pool-images/<key>`, keyed by the image
//!   tree it was made from (the image's root, or its copy shifted into an id
//!   range where idmapped mounts are missing).
//! - An instance's root is a writable snapshot of that subvolume,
//!   `<instance>/subvol`, mounted at `<instance>/rootfs`: through an idmapped
//!   mount for an unprivileged instance when the kernel allows it, else a
//!   plain bind mount.
//! - The root disk size is a qgroup limit on the exclusive bytes of the
//!   instance's subvolume (what it wrote, not what it shares with the
//!   image): writes past it fail inside with EDQUOT.
//! - A snapshot of the instance is a read-only snapshot of its subvolume.
//!
//! The subvolumes are made and removed with `btrfs` (btrfs-progs); each
//! removal also destroys the subvolume's qgroup.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{idmap, io_err, is_mounted, Storage, StorageError};

/// `statfs(2)`'s `f_type` of btrfs.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
/// The inode number of every subvolume's root directory.
const SUBVOLUME_INO: u64 = 256;

/// The instance's root subvolume, in its directory.
pub(super) const SUBVOL: &str = "subvol";
/// Where the images' read-only subvolumes are, in the state directory.
pub const IMAGES_DIR: &str = "pool-images";
/// Beside the subvolume of a root made to be mounted idmapped (it holds
/// the image's own owners, not the instance's range).
pub(super) const IDMAPPED_MARK: &str = "subvol.idmapped";

/// Whether the instance's root subvolume holds the image's own owners (and
/// is mounted idmapped), as opposed to owners in the instance's range.
pub fn is_idmapped_root(instance_dir: &Path) -> bool {
    instance_dir.join(IDMAPPED_MARK).exists()
}

/// Runs a btrfs-progs command; its standard output.
fn run(cmd: &mut Command) -> Result<String, StorageError> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| StorageError::Btrfs(format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(StorageError::Btrfs(format!(
        "{what} failed ({}): {}",
        out.status,
        err.trim().chars().take(400).collect::<String>()
    )))
}

fn btrfs() -> Command {
    Command::new("btrfs")
}

/// Whether `path` is on a btrfs filesystem.
pub fn is_btrfs(path: &Path) -> Result<bool, StorageError> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| StorageError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(st.filesystem_type().0 as i64 == BTRFS_SUPER_MAGIC)
}

/// Whether `path` is a subvolume's root (on btrfs).
pub(super) fn is_subvolume(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && m.ino() == SUBVOLUME_INO => is_btrfs(path).unwrap_or(false),
        _ => false,
    }
}

/// Checks that `pool` is on btrfs and that quotas are enabled on it
/// (enables them, and waits for the first accounting, when they are not).
pub(super) fn open_pool(pool: &Path) -> Result<(), StorageError> {
    if !is_btrfs(pool)? {
        return Err(StorageError::NotBtrfs(pool.to_path_buf()));
    }
    let enabled = btrfs()
        .args(["qgroup", "show"])
        .arg(pool)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !enabled {
        run(btrfs().args(["quota", "enable"]).arg(pool))?;
        run(btrfs().args(["quota", "rescan", "-w"]).arg(pool))?;
        tracing::info!(pool = %pool.display(), "btrfs quotas enabled");
    }
    let images = pool.join(IMAGES_DIR);
    std::fs::create_dir_all(&images).map_err(io_err(&images))?;
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&images))?;
    Ok(())
}

/// The subvolume's id.
fn subvolume_id(path: &Path) -> Result<u64, StorageError> {
    let out = run(btrfs().args(["inspect-internal", "rootid"]).arg(path))?;
    out.trim()
        .parse()
        .map_err(|_| StorageError::Btrfs(format!("no subvolume id for {}", path.display())))
}

/// Makes a snapshot of the subvolume `src` at `dst` (which must not exist).
pub(super) fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<(), StorageError> {
    let mut cmd = btrfs();
    cmd.args(["subvolume", "snapshot"]);
    if readonly {
        cmd.arg("-r");
    }
    run(cmd.arg(src).arg(dst)).map(drop)
}

/// Limits what the subvolume holds of its own (its exclusive bytes).
pub(super) fn set_limit(path: &Path, bytes: u64) -> Result<(), StorageError> {
    run(btrfs()
        .args(["qgroup", "limit", "-e"])
        .arg(bytes.to_string())
        .arg(path))
    .map(drop)
}

/// Removes the subvolume at `path` and its qgroup; nothing when missing.
pub(super) fn delete_subvolume(path: &Path) -> Result<(), StorageError> {
    if !is_subvolume(path) {
        return Ok(());
    }
    let id = subvolume_id(path)?;
    let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    run(btrfs().args(["subvolume", "delete", "-c"]).arg(path))?;
    // The qgroup can go once the cleaner has dropped the subvolume (newer
    // kernels remove it themselves then: a missing one is fine).
    run(btrfs()
        .args(["subvolume", "sync"])
        .arg(&parent)
        .arg(id.to_string()))?;
    let qgroup = format!("0/{id}");
    if let Err(e) = run(btrfs().args(["qgroup", "destroy", &qgroup]).arg(&parent)) {
        if qgroup_exists(&parent, id)? {
            return Err(e);
        }
    }
    Ok(())
}

/// Whether the level-0 qgroup `0/id` exists on the filesystem of `path`.
pub(super) fn qgroup_exists(path: &Path, id: u64) -> Result<bool, StorageError> {
    let out = run(btrfs().args(["qgroup", "show", "--raw"]).arg(path))?;
    Ok(parse_qgroup_ids(&out).contains(&id))
}

/// The level-0 qgroup ids listed by `btrfs qgroup show`.
pub fn parse_qgroup_ids(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|q| q.strip_prefix("0/"))
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// The name of the image subvolume made from the tree at `source`.
fn image_key(source: &Path) -> String {
    let digest = Sha256::digest(source.as_os_str().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The read-only subvolume holding the tree at `source` (made the first
/// time: a reflinked copy, so the image's data is shared, not written).
fn image_subvolume(pool: &Path, source: &Path) -> Result<PathBuf, StorageError> {
    let images = pool.join(IMAGES_DIR);
    let key = image_key(source);
    let sub = images.join(&key);
    if is_subvolume(&sub) {
        return Ok(sub);
    }
    let tmp = images.join(format!("{key}.tmp"));
    delete_subvolume(&tmp)?;
    run(btrfs().args(["subvolume", "create"]).arg(&tmp))?;
    let made = (|| {
        let mut from = source.as_os_str().to_owned();
        from.push("/.");
        let copied = Command::new("cp")
            .args(["-a", "--reflink=auto", "--no-target-directory"])
            .arg(&from)
            .arg(&tmp)
            .output()
            .map_err(|e| StorageError::Btrfs(format!("cp {}: {e}", source.display())))?;
        if !copied.status.success() {
            return Err(StorageError::Btrfs(format!(
                "cannot copy {} into the pool: {}",
                source.display(),
                String::from_utf8_lossy(&copied.stderr)
                    .trim()
                    .chars()
                    .take(400)
                    .collect::<String>()
            )));
        }
        let meta = std::fs::metadata(source).map_err(io_err(source))?;
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid())).map_err(io_err(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err(&tmp))?;
        std::fs::write(
            images.join(format!("{key}.source")),
            source.as_os_str().as_bytes(),
        )
        .map_err(io_err(&images))?;
        snapshot(&tmp, &sub, true)
    })();
    let cleanup = delete_subvolume(&tmp);
    made.and(cleanup)?;
    Ok(sub)
}

/// Removes the image subvolumes whose source tree is gone (the image was
/// deleted). Instances made from one keep their roots: a btrfs snapshot
/// does not depend on the subvolume it was taken of.
pub fn sweep_images(pool: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let images = pool.join(IMAGES_DIR);
    let Ok(entries) = std::fs::read_dir(&images) else {
        return removed;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "source") {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let source_file = images.join(format!("{name}.source"));
        let gone = name.ends_with(".tmp")
            || match std::fs::read(&source_file) {
                Ok(b) => !Path::new(OsStr::from_bytes(&b)).exists(),
                Err(_) => true,
            };
        if gone && delete_subvolume(&p).is_ok() {
            let _ = std::fs::remove_file(&source_file);
            removed.push(p);
        }
    }
    removed
}

/// Makes (first time) and mounts the instance's root at `<dir>/rootfs`:
/// a writable snapshot of the image subvolume of `image`. An unprivileged
/// instance's (`idmap`) is made from the unshifted image and seen through
/// its id mapping when `use_idmapped`, else made from the id-shifted image;
/// the root remembers which ([`IDMAPPED_MARK`]), so a later change of the
/// daemon's choice leaves it working. `disk`: its qgroup limit (set again at
/// every mount, so a restored root gets it too).
pub(super) fn prepare(
    pool: &Path,
    dir: &Path,
    image: &Path,
    idmap: Option<(u32, u32)>,
    use_idmapped: bool,
    disk: Option<u64>,
) -> Result<PathBuf, StorageError> {
    let rootfs = Storage::rootfs(dir);
    if is_mounted(&rootfs) {
        return Ok(rootfs);
    }
    let sub = dir.join(SUBVOL);
    let mark = dir.join(IDMAPPED_MARK);
    if !is_subvolume(&sub) {
        // The mark first: a root is never left without the one it needs.
        if use_idmapped && idmap.is_some() {
            std::fs::write(&mark, "").map_err(io_err(&mark))?;
        } else {
            crate::fsutil::remove_tree(&mark).map_err(io_err(&mark))?;
        }
        let from = image_subvolume(pool, image)?;
        snapshot(&from, &sub, false)?;
    }
    let idmap = idmap.filter(|_| is_idmapped_root(dir));
    if let Some(bytes) = disk {
        set_limit(&sub, bytes)?;
    }
    std::fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
    match idmap {
        Some((base, len)) => {
            let ns = idmap::user_namespace(base, len)?;
            idmap::mount_idmapped_writable(&sub, &rootfs, &ns)?;
        }
        None => super::bind(&sub, &rootfs)?,
    }
    Ok(rootfs)
}

/// Tries, in the scratch directory `dir` (made and removed), an idmapped
/// writable mount of a subvolume: owners seen moved, and a file written
/// through it lands with the unmapped owner.
pub(super) fn probe_idmapped(dir: &Path) -> Result<(), StorageError> {
    const BASE: u32 = 3_000_000;
    let sub = dir.join("sub");
    let mnt = dir.join("mnt");
    let clean = || -> Result<(), StorageError> {
        super::unmount(&mnt)?;
        delete_subvolume(&sub)?;
        crate::fsutil::remove_tree(dir).map_err(io_err(dir))
    };
    clean()?;
    std::fs::create_dir_all(&mnt).map_err(io_err(&mnt))?;
    run(btrfs().args(["subvolume", "create"]).arg(&sub))?;
    let result = (|| {
        let ns = idmap::user_namespace(BASE, 65536)?;
        idmap::mount_idmapped_writable(&sub, &mnt, &ns)?;
        let m = std::fs::metadata(&mnt).map_err(io_err(&mnt))?;
        if m.uid() != BASE {
            return Err(StorageError::Btrfs(format!(
                "idmapped subvolume owned by {}, not {BASE}",
                m.uid()
            )));
        }
        // Written as the container's root writes it (host id BASE): it
        // lands owned by 0 in the subvolume.
        let f = mnt.join("probe");
        let written = std::thread::spawn(move || {
            // SAFETY: setfsuid/setfsgid change this short-lived thread's
            // file-system ids only.
            unsafe {
                libc::setfsgid(BASE);
                libc::setfsuid(BASE);
            }
            std::fs::write(&f, "x").map_err(io_err(&f))
        })
        .join()
        .map_err(|_| StorageError::Join("idmapped probe".into()))?;
        written?;
        let on_disk = std::fs::metadata(sub.join("probe")).map_err(io_err(&sub))?;
        if on_disk.uid() != 0 {
            return Err(StorageError::Btrfs(format!(
                "a file written through the idmapped subvolume is owned by {} on disk, not 0",
                on_disk.uid()
            )));
        }
        Ok(())
    })();
    result.and(clean())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qgroup_ids_are_read_from_show() {
        let out = "qgroupid         rfer         excl \n\
                   --------         ----         ---- \n\
                   0/5             16384        16384 \n\
                   0/256         1048576        16384 \n\
                   1/100               0            0 \n";
        assert_eq!(parse_qgroup_ids(out), vec![5, 256]);
        assert!(parse_qgroup_ids("").is_empty());
    }

    #[test]
    fn image_keys_differ_per_tree() {
        let a = image_key(Path::new("/s/images/abc/rootfs"));
        let b = image_key(Path::new("/s/images/abc/shifted-100000"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_tmpdir_on_another_filesystem_is_not_a_pool() {
        let dir = tempfile::tempdir().unwrap();
        if is_btrfs(dir.path()).unwrap() {
            eprintln!("skipped: the temporary directory is on btrfs");
            return;
        }
        match open_pool(dir.path()) {
            Err(StorageError::NotBtrfs(p)) => assert_eq!(p, dir.path()),
            other => panic!("{other:?}"),
        }
        assert!(!is_subvolume(dir.path()));
    }
}
