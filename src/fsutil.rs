//! File-tree helpers shared by the image cache, the storage layer, the
//! devices and the driver: tree copy and removal, the one reader of
//! `/proc/self/mountinfo`, and the one atomic writer of small state files.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::{self, Whence};

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

#[cfg(test)]
thread_local! {
    /// How often this thread read the mount table (tests count scans with it).
    pub static MOUNT_TABLE_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Every mount point of this process's mount namespace, read once.
pub fn mount_point_set() -> std::collections::HashSet<PathBuf> {
    #[cfg(test)]
    MOUNT_TABLE_READS.with(|n| n.set(n.get() + 1));
    fs::read_to_string("/proc/self/mountinfo")
        .map(|info| mount_points_in(&info).into_iter().collect())
        .unwrap_or_default()
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
    #[cfg(test)]
    MOUNT_TABLE_READS.with(|n| n.set(n.get() + 1));
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    mount_points_in(&info)
        .iter()
        .any(|mp| mp.as_os_str().as_bytes() == want)
}

/// Bounds on what one tree copy may make: an image's tree is a tenant's, and
/// its copy must never cost the host more than the image was allowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyLimits {
    /// Bytes of file data written (holes of sparse files are kept as holes
    /// and cost nothing; a second name of a hard-linked file costs nothing).
    pub max_bytes: u64,
    /// Entries made: files, directories, symlinks and hard links.
    pub max_entries: u64,
}

/// What [`copy_tree`] made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes of file data written.
    pub bytes: u64,
    /// Entries made, hard links included.
    pub entries: u64,
    /// Of those, hard links to a file already copied.
    pub hardlinks: u64,
}

/// Why a tree copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot copy {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("copy of {root} passes the limit of {limit} bytes of file data")]
    TooLarge { root: PathBuf, limit: u64 },
    #[error("copy of {root} passes the limit of {limit} entries")]
    TooManyEntries { root: PathBuf, limit: u64 },
    #[error("owner id {id} of {path} overflows with shift {shift}")]
    IdOverflow { path: PathBuf, id: u32, shift: u32 },
}

fn cio(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the tree `src` to `dst` (which must not exist), adding `shift` to
/// every owner and group id. Symlinks are copied as links, never followed;
/// special files are skipped (image unpacking refuses them anyway). Hard
/// links stay hard links (a file with more than one name is copied once and
/// linked again), holes of sparse files stay holes, and the copy stops with
/// an error, leaving what it made for the caller to remove, once it would
/// pass `limits`.
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    shift: u32,
    limits: CopyLimits,
) -> Result<CopyStats, CopyError> {
    let meta = fs::symlink_metadata(src).map_err(cio(src))?;
    let mut c = Copier {
        root: src.to_path_buf(),
        shift,
        limits,
        stats: CopyStats::default(),
        links: HashMap::new(),
    };
    c.entry(src, dst, &meta)?;
    Ok(c.stats)
}

struct Copier {
    root: PathBuf,
    shift: u32,
    limits: CopyLimits,
    stats: CopyStats,
    /// (device, inode) of each file with more than one name, to the path of
    /// its copy: later names become hard links to it.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    fn shifted(&self, id: u32, path: &Path) -> Result<u32, CopyError> {
        id.checked_add(self.shift)
            .ok_or_else(|| CopyError::IdOverflow {
                path: path.to_path_buf(),
                id,
                shift: self.shift,
            })
    }

    fn count_entry(&mut self) -> Result<(), CopyError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(CopyError::TooManyEntries {
                root: self.root.clone(),
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn entry(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), CopyError> {
        let ft = meta.file_type();
        if !(ft.is_symlink() || ft.is_dir() || ft.is_file()) {
            return Ok(());
        }
        self.count_entry()?;
        let uid = self.shifted(meta.uid(), src)?;
        let gid = self.shifted(meta.gid(), src)?;
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(cio(src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(cio(dst))?;
            std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(cio(dst))?;
        } else if ft.is_dir() {
            fs::create_dir(dst).map_err(cio(dst))?;
            for entry in fs::read_dir(src).map_err(cio(src))? {
                let entry = entry.map_err(cio(src))?;
                let path = entry.path();
                let m = entry.metadata().map_err(cio(&path))?;
                self.entry(&path, &dst.join(entry.file_name()), &m)?;
            }
            std::os::unix::fs::chown(dst, Some(uid), Some(gid)).map_err(cio(dst))?;
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(cio(dst))?;
        } else {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key) {
                    fs::hard_link(first, dst).map_err(cio(dst))?;
                    self.stats.hardlinks += 1;
                    return Ok(());
                }
            }
            self.file(src, dst)?;
            std::os::unix::fs::chown(dst, Some(uid), Some(gid)).map_err(cio(dst))?;
            // chown clears setuid/setgid: set the mode after it.
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(cio(dst))?;
            if meta.nlink() > 1 {
                self.links.insert(key, dst.to_path_buf());
            }
        }
        Ok(())
    }

    /// Copies the data extents of one file; holes stay holes.
    fn file(&mut self, src: &Path, dst: &Path) -> Result<(), CopyError> {
        let mut from = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(src)
            .map_err(cio(src))?;
        let len = from.metadata().map_err(cio(src))?.len();
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dst)
            .map_err(cio(dst))?;
        let fd = from.as_raw_fd();
        let mut pos = 0u64;
        while pos < len {
            let start = match unistd::lseek(fd, pos as i64, Whence::SeekData) {
                Ok(o) => o as u64,
                // Nothing but a hole up to the end.
                Err(Errno::ENXIO) => break,
                // A file system without extent queries: all of it is data.
                Err(_) => pos,
            };
            if start >= len {
                break;
            }
            let end = match unistd::lseek(fd, start as i64, Whence::SeekHole) {
                Ok(o) => (o as u64).min(len),
                Err(_) => len,
            };
            let n = end.saturating_sub(start);
            if self.stats.bytes.saturating_add(n) > self.limits.max_bytes {
                return Err(CopyError::TooLarge {
                    root: self.root.clone(),
                    limit: self.limits.max_bytes,
                });
            }
            from.seek(SeekFrom::Start(start)).map_err(cio(src))?;
            to.seek(SeekFrom::Start(start)).map_err(cio(dst))?;
            let copied = io::copy(&mut (&mut from).take(n), &mut to).map_err(cio(dst))?;
            self.stats.bytes += copied;
            if copied < n {
                // The file shrank under us: what is left is gone.
                break;
            }
            pos = end;
        }
        to.set_len(len).map_err(cio(dst))?;
        Ok(())
    }
}

/// Opens `rel` inside the tree at `root` as a process chrooted there would:
/// every symlink, absolute or relative, resolves inside `root`, `..` stops at
/// it and magic links (`/proc/self/...`) are refused. Image and instance
/// trees belong to tenants; nothing in them may reach a host file.
fn open_in_root(root: &Path, rel: &str, flags: OFlag) -> io::Result<OwnedFd> {
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)?;
    // openat2 refuses O_NOCTTY (or anything else) next to O_PATH.
    let extra = if flags.contains(OFlag::O_PATH) {
        OFlag::O_CLOEXEC
    } else {
        OFlag::O_CLOEXEC | OFlag::O_NOCTTY
    };
    let how = OpenHow::new()
        .flags(flags | extra)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match fcntl::openat2(dir.as_raw_fd(), rel, how) {
        // SAFETY: openat2 just returned this descriptor and nothing else owns it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(Errno::ENOSYS) => open_beneath_nofollow(&dir, rel, flags),
        Err(e) => Err(e.into()),
    }
}

/// Fallback for kernels without openat2 (before 5.6): a walk one component at
/// a time that follows no symlink at all, so a symlinked file reads as absent.
fn open_beneath_nofollow(dir: &File, rel: &str, flags: OFlag) -> io::Result<OwnedFd> {
    let comps: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    let Some((last, parents)) = comps.split_last() else {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    };
    let mut cur: OwnedFd = dir.try_clone()?.into();
    for c in parents {
        let fd = fcntl::openat(
            Some(cur.as_raw_fd()),
            *c,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    let fd = fcntl::openat(
        Some(cur.as_raw_fd()),
        *last,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads at most `max` bytes of the regular file `rel` inside the tree at
/// `root` (resolved as [`open_in_root`] does). Anything but a regular file
/// (a FIFO, a device, a directory) is refused without reading, and the open
/// never blocks.
pub fn read_in_root(root: &Path, rel: &str, max: u64) -> io::Result<Vec<u8>> {
    let fd = open_in_root(root, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let file = File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{rel} is not a regular file"),
        ));
    }
    let mut buf = Vec::new();
    file.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether `rel` exists inside the tree at `root` (parents resolved as
/// [`open_in_root`] does; the last component itself is not followed, so a
/// symlink counts, as with `lstat`).
pub fn exists_in_root(root: &Path, rel: &str) -> bool {
    open_in_root(root, rel, OFlag::O_PATH | OFlag::O_NOFOLLOW).is_ok()
}

/// Where `rel` leads inside the tree at `root` once every symlink is
/// followed (resolved as [`open_in_root`] does), as an absolute path inside
/// the tree: `sbin/init` of a Debian root gives `/usr/lib/systemd/systemd`.
pub fn resolve_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let fd = open_in_root(root, rel, OFlag::O_PATH)?;
    let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let base = fs::canonicalize(root)?;
    let inside = real
        .strip_prefix(&base)
        .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
    Ok(Path::new("/").join(inside))
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

/// The last `max` bytes of the file at `path` (all of it when smaller),
/// read without reading the rest.
pub fn read_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
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

    const BIG: CopyLimits = CopyLimits {
        max_bytes: 1 << 30,
        max_entries: 1 << 20,
    };

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
        copy_tree(&src, &dst, shift, BIG).unwrap();
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

    fn limits(max_bytes: u64, max_entries: u64) -> CopyLimits {
        CopyLimits {
            max_bytes,
            max_entries,
        }
    }

    #[test]
    fn copy_keeps_hard_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("big"), vec![7u8; 64 * 1024]).unwrap();
        for i in 0..50 {
            fs::hard_link(src.join("big"), src.join(format!("l{i}"))).unwrap();
        }
        let dst = dir.path().join("dst");
        // Room for the file once, not for 51 copies of it.
        let stats = copy_tree(&src, &dst, 0, limits(100 * 1024, 100)).unwrap();
        assert_eq!(stats.bytes, 64 * 1024);
        assert_eq!(stats.hardlinks, 50);
        assert_eq!(stats.entries, 52);
        let ino = fs::metadata(dst.join("big")).unwrap().ino();
        for i in 0..50 {
            let m = fs::metadata(dst.join(format!("l{i}"))).unwrap();
            assert_eq!(m.ino(), ino);
        }
        assert_eq!(fs::metadata(dst.join("big")).unwrap().nlink(), 51);
    }

    #[test]
    fn copy_stops_at_its_limits() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a"), vec![1u8; 8192]).unwrap();
        fs::write(src.join("b"), vec![1u8; 8192]).unwrap();
        let err = copy_tree(&src, &dir.path().join("d1"), 0, limits(10_000, 100)).unwrap_err();
        assert!(
            matches!(err, CopyError::TooLarge { limit: 10_000, .. }),
            "{err}"
        );
        let err = copy_tree(&src, &dir.path().join("d2"), 0, limits(1 << 20, 2)).unwrap_err();
        assert!(
            matches!(err, CopyError::TooManyEntries { limit: 2, .. }),
            "{err}"
        );
        copy_tree(&src, &dir.path().join("d3"), 0, limits(16384, 3)).unwrap();
    }

    #[test]
    fn copy_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        let f = fs::File::create(src.join("sparse")).unwrap();
        f.set_len(4 << 30).unwrap();
        drop(f);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(src.join("sparse"))
            .unwrap();
        f.seek(SeekFrom::Start(1 << 30)).unwrap();
        std::io::Write::write_all(&mut f, &[1u8; 4096]).unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        let stats = copy_tree(&src, &dst, 0, limits(1 << 20, 10)).unwrap();
        assert!(stats.bytes <= 1 << 20, "{stats:?}");
        let m = fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(m.len(), 4 << 30);
        assert!(m.blocks() * 512 <= 1 << 20, "{} blocks", m.blocks());
        let mut back = fs::File::open(dst.join("sparse")).unwrap();
        back.seek(SeekFrom::Start(1 << 30)).unwrap();
        let mut buf = [0u8; 4096];
        back.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 1));
    }

    #[test]
    fn reads_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/os-release"), "ID=inside\n").unwrap();
        let host_file = dir.path().join("host-secret");
        fs::write(&host_file, "secret").unwrap();
        let sym = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        sym("/dev/zero", "etc/zero");
        sym(host_file.to_str().unwrap(), "etc/host");
        sym("../usr/lib/os-release", "etc/os-release");
        sym("/usr/lib/os-release", "etc/absolute");
        sym("../../../../../../../usr/lib/os-release", "etc/up");
        sym("/proc/self/root/etc/passwd", "etc/magic");
        nix::unistd::mkfifo(&root.join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        fs::write(root.join("etc/big"), vec![b'x'; 100_000]).unwrap();

        for name in ["etc/os-release", "etc/absolute", "etc/up"] {
            assert_eq!(
                read_in_root(&root, name, 1024).unwrap(),
                b"ID=inside\n",
                "{name}"
            );
        }
        for name in [
            "etc/zero",
            "etc/host",
            "etc/magic",
            "/etc/zero",
            "../host-secret",
        ] {
            let err = read_in_root(&root, name, 1024).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{name}: {err}");
        }
        // A FIFO is neither read nor waited on; a directory is not read.
        let started = std::time::Instant::now();
        let err = read_in_root(&root, "etc/fifo", 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(read_in_root(&root, "etc", 1024).is_err());
        assert_eq!(read_in_root(&root, "etc/big", 4096).unwrap().len(), 4096);

        sym("/lib/systemd/systemd", "etc/init");
        assert!(exists_in_root(&root, "etc/init"));
        assert!(exists_in_root(&root, "/etc/os-release"));
        assert!(!exists_in_root(&root, "etc/host/x"));
        sym(dir.path().to_str().unwrap(), "hostdir");
        assert!(!exists_in_root(&root, "hostdir/host-secret"));
    }
}
