//! File-tree helpers shared by the image cache and the storage layer.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Copies the tree `src` to `dst` (which must not exist), adding `shift` to
/// every owner and group id. Symlinks are copied as links, never followed;
/// special files are skipped (image unpacking refuses them anyway).
pub fn copy_tree(src: &Path, dst: &Path, shift: u32) -> io::Result<u64> {
    let meta = fs::symlink_metadata(src)?;
    let mut copied = 0u64;
    copy_entry(src, dst, &meta, shift, &mut copied)?;
    Ok(copied)
}

fn shifted(id: u32, shift: u32) -> io::Result<u32> {
    id.checked_add(shift)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "id shift overflows"))
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    meta: &fs::Metadata,
    shift: u32,
    copied: &mut u64,
) -> io::Result<()> {
    let ft = meta.file_type();
    let uid = shifted(meta.uid(), shift)?;
    let gid = shifted(meta.gid(), shift)?;
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        std::os::unix::fs::symlink(&target, dst)?;
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))?;
    } else if ft.is_dir() {
        fs::create_dir(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let m = entry.metadata()?;
            copy_entry(
                &entry.path(),
                &dst.join(entry.file_name()),
                &m,
                shift,
                copied,
            )?;
        }
        std::os::unix::fs::chown(dst, Some(uid), Some(gid))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_file() {
        *copied += fs::copy(src, dst)?;
        std::os::unix::fs::chown(dst, Some(uid), Some(gid))?;
        // chown clears setuid/setgid: set the mode after it.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// Removes a tree (or a single file or link) if it exists.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Size of a tree in bytes (regular files only).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
            .unwrap_or(0)
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_shifts_owners_and_keeps_modes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/busybox"), b"x").unwrap();
        fs::set_permissions(src.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", src.join("bin/sh")).unwrap();
        let dst = dir.path().join("dst");
        let is_root = nix::unistd::geteuid().is_root();
        let shift = if is_root { 100_000 } else { 0 };
        copy_tree(&src, &dst, shift).unwrap();
        let m = fs::metadata(dst.join("bin/busybox")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!(
            fs::read_link(dst.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        if is_root {
            assert_eq!(
                m.uid(),
                fs::metadata(src.join("bin/busybox")).unwrap().uid() + 100_000
            );
        }
        assert_eq!(tree_size(&dst), 1);
        remove_tree(&dst).unwrap();
        remove_tree(&dst).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
    }
}
