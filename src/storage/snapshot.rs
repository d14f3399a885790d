//! Snapshots of instance roots: copies of a root's writable state (the
//! overlay's upper directory, or the whole root of a `copy` pool) kept under
//! `<instance>/snapshots/<name>/state`, and the restore of one of them into
//! the instance. The caller freezes the container around [`capture`] and
//! keeps the root unmounted around [`restore`].
//!
//! The copy keeps what overlayfs needs to read the state back as it was:
//! owners, modes, times, extended attributes (`trusted.overlay.opaque`,
//! file capabilities), whiteouts (0/0 character devices), FIFOs, symlinks
//! and hard links. File data is cloned (reflink) where the filesystem can,
//! copied otherwise.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{io_err, Storage, StorageError, StorageKind};

/// Suffix of the state a restore moved aside (`upper.restore-old`,
/// `rootfs.restore-old`) until the new state is in its place.
const OLD_SUFFIX: &str = ".restore-old";
/// The copy of the snapshot's state a restore makes beside the state.
const RESTORE_TMP: &str = "restore.tmp";
/// What a restore replaces: an overlay's upper layer, a copy pool's root.
const STATES: [&str; 2] = ["upper", "rootfs"];
use crate::fsutil;

/// The directory holding an instance's snapshots.
pub fn snapshots_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join("snapshots")
}

/// The directory of one snapshot.
pub fn snapshot_dir(instance_dir: &Path, name: &str) -> PathBuf {
    snapshots_dir(instance_dir).join(name)
}

/// What [`capture`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub entries: u64,
    pub bytes: u64,
}

/// The writable state of an instance root for a pool kind. An instance
/// with a root disk of its own has its state on that disk: it is mounted
/// first (a stopped instance's may not be), so that the state read or
/// replaced is the disk's, never the empty mount point under it.
fn state_of(kind: StorageKind, instance_dir: &Path) -> Result<PathBuf, StorageError> {
    match kind {
        StorageKind::Overlay => {
            if super::layer::has_disk(instance_dir) {
                super::layer::mount(instance_dir, 0)?;
            }
            Ok(super::upper_dir(instance_dir))
        }
        StorageKind::Copy if super::layer::has_disk(instance_dir) => {
            Ok(super::layer::mount(instance_dir, 0)?.join("rootfs"))
        }
        StorageKind::Copy => Ok(Storage::rootfs(instance_dir)),
        StorageKind::Btrfs => Ok(instance_dir.join(super::btrfs::SUBVOL)),
    }
}

/// Copies the instance's writable state into `<snapshot dir>/state`. The
/// snapshot directory must not exist yet; on error nothing of it is left.
pub fn capture(
    kind: StorageKind,
    instance_dir: &Path,
    name: &str,
) -> Result<CaptureStats, StorageError> {
    let src = state_of(kind, instance_dir)?;
    let parent = snapshots_dir(instance_dir);
    // Only the host's root enters: a snapshot holds the tenant's setuid files.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .map_err(io_err(&parent))?;
    let dir = snapshot_dir(instance_dir, name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io_err(&dir))?;
    let result = match kind {
        // A read-only snapshot of the root's subvolume: nothing is copied.
        StorageKind::Btrfs => {
            super::btrfs::snapshot(&src, &dir.join("state"), true).map(|()| CaptureStats::default())
        }
        _ => copy_state(&src, &dir.join("state")),
    };
    if result.is_err() {
        let _ = super::btrfs::delete_subvolume(&dir.join("state"));
        let _ = fsutil::remove_tree(&dir);
    }
    result
}

/// Replaces the instance's writable state with a copy of the snapshot's.
/// The root must not be mounted. The new state is made beside the old one
/// first, then the two trade places by renames: a failed (or killed)
/// restore leaves the instance as it was, or restored, never half of each.
pub fn restore(kind: StorageKind, instance_dir: &Path, name: &str) -> Result<(), StorageError> {
    let rootfs = Storage::rootfs(instance_dir);
    if super::is_mounted(&rootfs) {
        return Err(StorageError::Busy(rootfs));
    }
    let from = snapshot_dir(instance_dir, name).join("state");
    let target = state_of(kind, instance_dir)?;
    if kind == StorageKind::Btrfs {
        return restore_subvolume(&from, &target);
    }
    // Beside the state it replaces (on the instance's root disk, if any): the
    // swap is a rename on one filesystem.
    let base = target.parent().unwrap_or(instance_dir).to_path_buf();
    // What an earlier restore left (a failure, a kill) goes first.
    settle(&base)?;
    let tmp = base.join(RESTORE_TMP);
    if let Err(e) = copy_state(&from, &tmp) {
        let _ = fsutil::remove_tree(&tmp);
        return Err(e);
    }
    let old = aside(&target);
    if target.exists() {
        if let Err(e) = fs::rename(&target, &old) {
            let _ = fsutil::remove_tree(&tmp);
            return Err(io_err(&target)(e));
        }
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        // Put back what was there.
        let _ = fs::rename(&old, &target);
        let _ = fsutil::remove_tree(&tmp);
        return Err(io_err(&target)(e));
    }
    // The new state is in place: what is left is clean-up, done again by
    // the next restore or start-up when it fails here. overlayfs's work
    // directory belongs to the old upper: start it afresh.
    let work = base.join("work");
    for p in [&old, &work] {
        if let Err(e) = fsutil::remove_tree(p) {
            tracing::warn!(path = %p.display(), error = %e, "restore: not removed yet");
        }
    }
    Ok(())
}

fn aside(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(OLD_SUFFIX);
    state.with_file_name(name)
}

/// Settles what a restore left in `base` (an instance directory or the
/// mount point of its root disk): a state moved aside comes back when the
/// new one never took its place, and goes when it did; a half-made copy
/// goes.
fn settle(base: &Path) -> Result<(), StorageError> {
    for state in STATES {
        let target = base.join(state);
        let old = aside(&target);
        if fs::symlink_metadata(&old).is_err() {
            continue;
        }
        if fs::symlink_metadata(&target).is_err() {
            fs::rename(&old, &target).map_err(io_err(&target))?;
        } else {
            fsutil::remove_tree(&old).map_err(io_err(&old))?;
        }
    }
    let tmp = base.join(RESTORE_TMP);
    fsutil::remove_tree(&tmp).map_err(io_err(&tmp))
}

/// A btrfs root back to a snapshot: a writable snapshot of it is made
/// beside the root's subvolume, then replaces it (its qgroup limit is set
/// again when the root is mounted).
fn restore_subvolume(from: &Path, target: &Path) -> Result<(), StorageError> {
    let tmp = target.with_extension("restore");
    super::btrfs::delete_subvolume(&tmp)?;
    super::btrfs::snapshot(from, &tmp, false)?;
    if let Err(e) = super::btrfs::delete_subvolume(target) {
        let _ = super::btrfs::delete_subvolume(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, target).map_err(io_err(target))
}

/// Removes one snapshot (missing is fine).
pub fn remove(instance_dir: &Path, name: &str) -> Result<(), StorageError> {
    let dir = snapshot_dir(instance_dir, name);
    super::btrfs::delete_subvolume(&dir.join("state"))?;
    fsutil::remove_tree(&dir).map_err(io_err(&dir))
}

/// Removes every snapshot of the instance.
pub fn remove_all(instance_dir: &Path) -> Result<(), StorageError> {
    let parent = snapshots_dir(instance_dir);
    let Ok(entries) = fs::read_dir(&parent) else {
        return Ok(());
    };
    for e in entries.flatten() {
        remove(instance_dir, &e.file_name().to_string_lossy())?;
    }
    Ok(())
}

/// Bytes a snapshot holds on disk.
pub fn size(instance_dir: &Path, name: &str) -> u64 {
    fsutil::tree_size(&snapshot_dir(instance_dir, name))
}

/// Settles the restores a daemon killed mid-restore (or a restore that
/// failed) left under `instances_dir`, in each instance directory and on
/// its root disk (when mounted; else its next mount settles it). Run at
/// start-up.
pub fn remove_leftovers(instances_dir: &Path) {
    let Ok(entries) = fs::read_dir(instances_dir) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        for base in [dir.clone(), super::layer::mount_point(&dir)] {
            if base.is_dir() {
                if let Err(err) = settle(&base) {
                    tracing::warn!(dir = %base.display(), error = %err, "half-made restore not settled");
                }
            }
        }
        // A btrfs restore stopped between removing the old root and putting
        // the new one in place finishes; one stopped earlier is undone.
        let sub = e.path().join(super::btrfs::SUBVOL);
        let tmp = sub.with_extension("restore");
        if super::btrfs::is_subvolume(&tmp) {
            if super::btrfs::is_subvolume(&sub) {
                let _ = super::btrfs::delete_subvolume(&tmp);
            } else {
                let _ = fs::rename(&tmp, &sub);
            }
        }
    }
}

/// Settles a restore left on a root disk just mounted (`base`: its mount
/// point).
pub(super) fn settle_disk(base: &Path) -> Result<(), StorageError> {
    settle(base)
}

fn copy_state(src: &Path, dst: &Path) -> Result<CaptureStats, StorageError> {
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    let mut c = Copier {
        stats: CaptureStats::default(),
        links: HashMap::new(),
    };
    c.entry(src, dst, &meta)?;
    Ok(c.stats)
}

struct Copier {
    stats: CaptureStats,
    /// (device, inode) of files with more than one name, to their copy.
    links: HashMap<(u64, u64), PathBuf>,
}

fn cstr(path: &Path) -> Result<CString, StorageError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| StorageError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

impl Copier {
    fn entry(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), StorageError> {
        let ft = meta.file_type();
        self.stats.entries += 1;
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_err(src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(io_err(dst))?;
        } else if ft.is_dir() {
            fs::create_dir(dst).map_err(io_err(dst))?;
            for entry in fs::read_dir(src).map_err(io_err(src))? {
                let entry = entry.map_err(io_err(src))?;
                let path = entry.path();
                let m = entry.metadata().map_err(io_err(&path))?;
                self.entry(&path, &dst.join(entry.file_name()), &m)?;
            }
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    fs::hard_link(first, dst).map_err(io_err(dst))?;
                    return Ok(());
                }
            }
            self.file(src, dst)?;
            if meta.nlink() > 1 {
                self.links
                    .insert((meta.dev(), meta.ino()), dst.to_path_buf());
            }
        } else if (ft.is_char_device() && meta.rdev() == 0) || ft.is_fifo() {
            // A whiteout (a file deleted from the image) or a FIFO.
            let kind = if ft.is_fifo() {
                nix::sys::stat::SFlag::S_IFIFO
            } else {
                nix::sys::stat::SFlag::S_IFCHR
            };
            nix::sys::stat::mknod(
                dst,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
                0,
            )
            .map_err(|e| StorageError::Io {
                path: dst.to_path_buf(),
                source: e.into(),
            })?;
        } else {
            // Sockets and device nodes are the running system's, not data.
            tracing::debug!(path = %src.display(), "special file left out of the snapshot");
            self.stats.entries -= 1;
            return Ok(());
        }
        std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(io_err(dst))?;
        copy_xattrs(src, dst)?;
        if !ft.is_symlink() {
            // chown clears setuid/setgid: the mode goes after it.
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err(dst))?;
        }
        let times = [
            nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
            nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        ];
        nix::sys::stat::utimensat(
            None,
            dst,
            &times[0],
            &times[1],
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| StorageError::Io {
            path: dst.to_path_buf(),
            source: e.into(),
        })?;
        Ok(())
    }

    /// Clones the file where the filesystem shares extents, copies it otherwise.
    fn file(&mut self, src: &Path, dst: &Path) -> Result<(), StorageError> {
        let mut from = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(src)
            .map_err(io_err(src))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dst)
            .map_err(io_err(dst))?;
        use std::os::fd::AsRawFd;
        // SAFETY: FICLONE takes the source descriptor as its argument; both
        // descriptors are open for the duration of the call.
        let cloned = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0;
        let n = if cloned {
            from.metadata().map_err(io_err(src))?.len()
        } else {
            io::copy(&mut from, &mut to).map_err(io_err(dst))?
        };
        self.stats.bytes += n;
        Ok(())
    }
}

/// Copies every extended attribute of `src` (not following symlinks).
fn copy_xattrs(src: &Path, dst: &Path) -> Result<(), StorageError> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    let names = xattr_list(&s).map_err(io_err(src))?;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let value = match xattr_get(&s, &cname) {
            Ok(v) => v,
            // Gone meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(io_err(src)(e)),
        };
        // SAFETY: valid NUL-terminated strings and a buffer of value.len() bytes.
        let rc = unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            tracing::warn!(
                path = %dst.display(),
                attr = %OsStr::from_bytes(name).to_string_lossy(),
                error = %e,
                "extended attribute not copied"
            );
        }
    }
    Ok(())
}

fn xattr_list(path: &CString) -> io::Result<Vec<u8>> {
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the size.
        let n = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // No xattr support on this filesystem: nothing to copy.
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: buf has buf.len() writable bytes.
        let m = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

fn xattr_get(path: &CString, name: &CString) -> io::Result<Vec<u8>> {
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the size.
        let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: buf has buf.len() writable bytes.
        let m = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn capture_and_restore_keep_whiteouts_links_owners_and_xattrs() {
        let d = tempfile::tempdir().unwrap();
        let inst = d.path();
        let upper = inst.join("upper");
        fs::create_dir_all(upper.join("etc/opaque")).unwrap();
        fs::write(upper.join("etc/counter"), "41\n").unwrap();
        fs::hard_link(upper.join("etc/counter"), upper.join("etc/counter2")).unwrap();
        std::os::unix::fs::symlink("counter", upper.join("etc/link")).unwrap();
        fs::set_permissions(
            upper.join("etc/counter"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        let root = is_root();
        if root {
            // A whiteout, an opaque directory, and a shifted owner.
            nix::sys::stat::mknod(
                &upper.join("etc/gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0),
                0,
            )
            .unwrap();
            let p = cstr(&upper.join("etc/opaque")).unwrap();
            let n = CString::new("trusted.overlay.opaque").unwrap();
            assert_eq!(
                unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) },
                0
            );
            std::os::unix::fs::chown(upper.join("etc/counter"), Some(100_000), Some(100_005))
                .unwrap();
            fs::set_permissions(
                upper.join("etc/counter"),
                fs::Permissions::from_mode(0o4755),
            )
            .unwrap();
        }
        let stats = capture(StorageKind::Overlay, inst, "s1").unwrap();
        assert!(stats.entries >= 5, "{stats:?}");
        let state = snapshot_dir(inst, "s1").join("state");
        let m = fs::metadata(state.join("etc/counter")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!(
            fs::metadata(state.join("etc/counter2")).unwrap().ino(),
            m.ino()
        );
        assert_eq!(
            fs::read_link(state.join("etc/link")).unwrap(),
            Path::new("counter")
        );
        if root {
            assert_eq!((m.uid(), m.gid()), (100_000, 100_005));
            let w = fs::symlink_metadata(state.join("etc/gone")).unwrap();
            assert!(w.file_type().is_char_device() && w.rdev() == 0);
            let p = cstr(&state.join("etc/opaque")).unwrap();
            let n = CString::new("trusted.overlay.opaque").unwrap();
            assert_eq!(xattr_get(&p, &n).unwrap(), b"y");
        }
        // A second snapshot of the same name is refused, the first kept.
        assert!(capture(StorageKind::Overlay, inst, "s1").is_err());
        assert!(state.join("etc/counter").exists());

        // The instance changes; the restore brings the snapshot's state back.
        fs::write(upper.join("etc/counter"), "99\n").unwrap();
        fs::write(upper.join("etc/new"), "x").unwrap();
        fs::create_dir_all(inst.join("work/work")).unwrap();
        restore(StorageKind::Overlay, inst, "s1").unwrap();
        assert_eq!(
            fs::read_to_string(upper.join("etc/counter")).unwrap(),
            "41\n"
        );
        assert!(!upper.join("etc/new").exists());
        assert!(!inst.join("work").exists());
        assert!(!inst.join("restore.tmp").exists());
        // The snapshot itself is untouched by the restore.
        assert!(state.join("etc/counter").exists());
        remove(inst, "s1").unwrap();
        assert!(!snapshot_dir(inst, "s1").exists());
    }

    #[test]
    fn restore_of_a_missing_snapshot_loses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let inst = d.path();
        fs::create_dir_all(inst.join("rootfs/etc")).unwrap();
        fs::write(inst.join("rootfs/etc/hostname"), "x").unwrap();
        assert!(restore(StorageKind::Copy, inst, "nope").is_err());
        assert_eq!(
            fs::read_to_string(inst.join("rootfs/etc/hostname")).unwrap(),
            "x"
        );
        assert!(!inst.join("restore.tmp").exists());
    }

    #[test]
    fn a_restore_left_half_done_on_a_root_disk_is_cleaned_at_start_up() {
        let d = tempfile::tempdir().unwrap();
        let inst = d.path().join("i1");
        // A root disk's state (mounted or not: the mount point's contents).
        let layer = inst.join(super::super::layer::MOUNT_POINT);
        fs::create_dir_all(layer.join("upper/etc")).unwrap();
        fs::write(layer.join("upper/etc/kept"), "x").unwrap();
        fs::create_dir_all(layer.join("restore.tmp/etc")).unwrap();
        fs::write(layer.join("restore.tmp/etc/half"), "y").unwrap();
        Storage::remove_leftovers(d.path());
        assert!(!layer.join("restore.tmp").exists());
        assert_eq!(
            fs::read_to_string(layer.join("upper/etc/kept")).unwrap(),
            "x"
        );
    }

    #[test]
    fn a_restore_killed_between_its_renames_is_settled() {
        let d = tempfile::tempdir().unwrap();
        let inst = d.path().join("i1");
        // Killed after the old state was moved aside, before the new one
        // took its place: the old one comes back, the copy goes.
        fs::create_dir_all(inst.join(format!("upper{OLD_SUFFIX}/etc"))).unwrap();
        fs::write(inst.join(format!("upper{OLD_SUFFIX}/etc/kept")), "x").unwrap();
        fs::create_dir_all(inst.join("restore.tmp/etc")).unwrap();
        Storage::remove_leftovers(d.path());
        assert_eq!(
            fs::read_to_string(inst.join("upper/etc/kept")).unwrap(),
            "x"
        );
        assert!(!inst.join("restore.tmp").exists());
        assert!(!inst.join(format!("upper{OLD_SUFFIX}")).exists());
        // Killed after the new state took its place: the old one goes.
        fs::create_dir_all(inst.join(format!("rootfs{OLD_SUFFIX}/etc"))).unwrap();
        fs::create_dir_all(inst.join("rootfs/etc")).unwrap();
        fs::write(inst.join("rootfs/etc/new"), "n").unwrap();
        Storage::remove_leftovers(d.path());
        assert_eq!(
            fs::read_to_string(inst.join("rootfs/etc/new")).unwrap(),
            "n"
        );
        assert!(!inst.join(format!("rootfs{OLD_SUFFIX}")).exists());
    }

    #[test]
    fn a_restore_that_cannot_replace_the_state_leaves_it_whole() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let inst = &d.path().join("i1");
        fs::create_dir_all(inst.join("upper/etc")).unwrap();
        fs::write(inst.join("upper/etc/a"), "1").unwrap();
        fs::write(inst.join("upper/etc/b"), "2").unwrap();
        capture(StorageKind::Overlay, inst, "s1").unwrap();
        fs::write(inst.join("upper/etc/a"), "changed").unwrap();
        // The old state cannot be removed (an immutable file in it): the
        // restore still swaps whole trees, never leaves half of one.
        let chattr = |flag: &str, path: &Path| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !chattr("+i", &inst.join("upper/etc/b")) {
            eprintln!("skipped: chattr +i does not work here");
            return;
        }
        let result = restore(StorageKind::Overlay, inst, "s1");
        let old = inst.join(format!("upper{OLD_SUFFIX}"));
        for p in [inst.join("upper/etc/b"), old.join("etc/b")] {
            if p.exists() {
                chattr("-i", &p);
            }
        }
        result.unwrap();
        assert_eq!(fs::read_to_string(inst.join("upper/etc/a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(inst.join("upper/etc/b")).unwrap(), "2");
        assert!(!inst.join("restore.tmp").exists());
        // What could not be removed then goes at the next start-up.
        Storage::remove_leftovers(d.path());
        assert!(!old.exists());
        assert_eq!(fs::read_to_string(inst.join("upper/etc/a")).unwrap(), "1");
    }
}
