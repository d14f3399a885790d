//! File-tree helpers shared by the image cache, the storage layer, the
//! devices and the driver: tree copy and removal, the one reader of
//! `/proc/self/mountinfo`, and the one atomic writer of small state files.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` so that a crash leaves either the old file or the
/// new one, never a truncated one: a temporary file in the same directory
/// (created with `mode`), fsynced, renamed over `path`, then the directory
/// fsynced so the rename itself is durable.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits the caller asked for; never more.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Undoes the kernel's octal escapes in a `/proc/*/mountinfo` field (`\040`
/// for a space, `\011` tab, `\012` newline, `\134` backslash).
pub fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The mount points of a mountinfo text (its fifth field), unescaped.
pub fn mount_points_in(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(OsString::from_vec(unescape_mountinfo(mp))))
        .collect()
}

/// The mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mount_points_in(&info)
        .into_iter()
        .filter(|mp| mp.starts_with(dir))
        .collect()
}

/// Whether `path` is a mount point in this process's mount namespace, by
/// `/proc/self/mountinfo`. Compared byte for byte with the unescaped mount
/// points, so paths with spaces or other escaped bytes are found.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    mount_points_in(&info)
        .iter()
        .any(|mp| mp.as_os_str().as_bytes() == want)
}

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
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c\\134d"), b"/a b\tc\\d");
        assert_eq!(unescape_mountinfo("/x\\04"), b"/x\\04");
        let text = "36 35 98:0 / /srv/state\\040dir/disks/d rw,noatime master:1 - ext4 /dev/x rw\n\
                    37 35 98:0 / /proc rw - proc proc rw\n";
        assert_eq!(
            mount_points_in(text),
            vec![
                PathBuf::from("/srv/state dir/disks/d"),
                PathBuf::from("/proc")
            ]
        );
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/definitely/not/mounted")));
    }

    #[test]
    fn mounts_below_a_directory_are_listed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let dir = tempfile::Builder::new().prefix("a b ").tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let mp = dir.path().join("inst/disks/d");
        fs::create_dir_all(&mp).unwrap();
        assert!(mounts_under(dir.path()).is_empty());
        nix::mount::mount(
            Some(host.path()),
            &mp,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let found = mounts_under(&dir.path().join("inst"));
        let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
        assert_eq!(found, vec![mp.clone()]);
        assert!(mounts_under(&dir.path().join("other")).is_empty());
    }

    #[test]
    fn atomic_write_replaces_whole_files_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("claims.json");
        write_atomic(&p, b"[\"nic:a\"]", 0o600).unwrap();
        write_atomic(&p, b"[]", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"[]");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // Nothing else is left in the directory.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomic(&dir.path().join("no/such/dir/f"), b"x", 0o600).is_err());
    }

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
