//! Safe unpacking of root filesystem tarballs.
//!
//! The archive is treated as hostile: every file is created relative to an
//! open directory descriptor, walking the path one component at a time with
//! `O_NOFOLLOW`, so no entry can ever be written outside the destination even
//! when earlier entries planted symlinks. Symlinks themselves are created
//! verbatim (absolute targets are normal in a rootfs) but are never followed.
//!
//! Extraction goes into a sibling temp dir that is renamed onto `dest` only
//! once everything succeeded, so a failed unpack leaves nothing behind.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{self, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use tar::EntryType;

use crate::text;

mod extract;
mod paths;

use extract::extract_into;
use paths::*;

/// Longest text of an archive's making (an entry name, a parser message)
/// that goes into an error.
const MAX_ERROR_TEXT: usize = 200;

/// Archive bytes (a name) as plain text (see [`text::printable_ascii_bytes`]).
fn printable_bytes(raw: &[u8]) -> String {
    text::printable_ascii_bytes(raw, MAX_ERROR_TEXT)
}

/// A message about archive content as plain ASCII: the tar crate quotes
/// header bytes in its errors (decoded lossily, so any byte may come out as
/// some character).
fn printable_ascii(msg: &str) -> String {
    text::printable_ascii(msg, MAX_ERROR_TEXT)
}

/// Linux `PATH_MAX`: longer names cannot be created anyway and only show up in
/// archives crafted to exhaust memory or confuse tools.
const MAX_PATH_LEN: usize = 4096;
/// Linux `NAME_MAX` for a single component.
const MAX_NAME_LEN: usize = 255;
/// Mode of directories the archive implies but never lists.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Options for [`unpack`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackOptions {
    /// When set, every entry is owned by `original id + shift` (uid and gid
    /// alike): this maps the rootfs of an unprivileged container into its
    /// user-namespace id range. When `None`, original ids are kept (this
    /// needs root; an unprivileged caller keeps its own ids, like GNU tar).
    pub uid_shift: Option<u32>,
    /// Size of the id range the shift maps onto. With a shift set, an entry
    /// whose uid or gid is not below this is refused, because it would land in
    /// the range of another container (or of the host).
    pub shift_range: u32,
    /// Upper bound on the decompressed tar stream (headers included); a guard
    /// against decompression bombs. Also bounds the bytes of file content
    /// written, sparse holes counted at their full size.
    pub max_bytes: u64,
    /// Upper bound on the entries made: files, directories (implied ones
    /// included), symlinks and hard links, each hard link counting as one.
    pub max_entries: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            uid_shift: None,
            shift_range: 65536,
            max_bytes: 32 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// What [`unpack`] created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created, including parents the archive did not list.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("destination {0} already exists")]
    DestExists(PathBuf),
    #[error("invalid destination {0}")]
    InvalidDest(PathBuf),
    #[error("cannot read archive {path}: {source}")]
    Archive { path: PathBuf, source: io::Error },
    #[error("unsupported compression {0}")]
    UnsupportedCompression(&'static str),
    /// The text is made by [`crate::text::printable`]: never raw archive bytes.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    #[error("archive exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("entry {entry} escapes the destination with a .. component")]
    PathTraversal { entry: String },
    #[error("entry {entry} has an invalid name: {reason}")]
    BadName { entry: String, reason: &'static str },
    #[error("entry {entry} would be written through symlink {link}")]
    WriteThroughSymlink { entry: String, link: String },
    #[error("entry {entry} needs {parent} to be a directory but it is not")]
    NotADirectory { entry: String, parent: String },
    #[error("hardlink {entry} points to {target} which is not a file extracted from this archive")]
    HardlinkOutside { entry: String, target: String },
    #[error("device node {entry} refused")]
    DeviceNode { entry: String },
    #[error("fifo {entry} refused")]
    Fifo { entry: String },
    #[error("entry {entry} has unsupported type {kind}")]
    UnsupportedEntry { entry: String, kind: String },
    #[error("entry {entry} has id {id} outside the shift range of {range}")]
    IdOutOfRange { entry: String, id: u64, range: u32 },
    #[error("entry {entry} has id {id} which overflows with shift {shift}")]
    IdOverflow { entry: String, id: u64, shift: u32 },
    #[error("entry {entry} cannot replace the non-empty directory already there")]
    Conflict { entry: String },
    #[error("cannot extract {entry}: {source}")]
    Io { entry: String, source: io::Error },
}

type Result<T> = std::result::Result<T, UnpackError>;

/// Unpacks the tarball `archive` (plain, gzip, xz or zstd, told apart by magic
/// bytes) into `dest`, which must not exist yet.
///
/// On error nothing is left at `dest` and the temp dir is removed.
pub fn unpack(archive: &Path, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    match fs::symlink_metadata(dest) {
        Ok(_) => return Err(UnpackError::DestExists(dest.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dest.display().to_string(), e)),
    }
    let name = dest
        .file_name()
        .ok_or_else(|| UnpackError::InvalidDest(dest.to_path_buf()))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };

    let file = File::open(archive).map_err(|source| UnpackError::Archive {
        path: archive.to_path_buf(),
        source,
    })?;
    let tripped = Rc::new(Cell::new(false));
    let reader = LimitedReader {
        inner: decompressor(file, archive)?,
        remaining: opts.max_bytes,
        tripped: Rc::clone(&tripped),
    };

    let tmp = create_temp_sibling(parent, name)?;
    let result = extract_into(reader, &tmp, opts, &tripped).and_then(|stats| {
        // RENAME_NOREPLACE because a plain rename silently replaces an empty
        // directory someone created at dest in the meantime.
        fcntl::renameat2(None, &tmp, None, dest, RenameFlags::RENAME_NOREPLACE).map_err(
            |e| match e {
                Errno::EEXIST | Errno::ENOTEMPTY => UnpackError::DestExists(dest.to_path_buf()),
                e => io_err(dest.display().to_string(), e.into()),
            },
        )?;
        Ok(stats)
    });
    if result.is_err() {
        // Best effort: the original error is what the caller needs to see, and
        // remove_dir_all does not follow symlinks, so it stays inside tmp.
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Picks the decompressor from the first bytes of the file; extensions lie.
fn decompressor(mut file: File, path: &Path) -> Result<Box<dyn Read>> {
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(UnpackError::Archive {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    let head = magic[..got].to_vec();
    let stream = io::Cursor::new(head.clone()).chain(file);
    if head.starts_with(&[0x1f, 0x8b]) {
        // Multi-member so that pigz-style concatenated gzip works.
        Ok(Box::new(flate2::read::MultiGzDecoder::new(stream)))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Ok(Box::new(xz2::read::XzDecoder::new_multi_decoder(stream)))
    } else if head.starts_with(b"BZh") {
        Err(UnpackError::UnsupportedCompression("bzip2"))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut file = stream.into_inner().1;
        file.seek(SeekFrom::Start(0))
            .map_err(|source| UnpackError::Archive {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Box::new(ZstdReader::spawn(file, path)?))
    } else {
        Ok(Box::new(stream))
    }
}

/// A zstd stream decompressed by the `zstd` tool (package zstd): its exit
/// status is checked at the end of the stream, so a corrupt or truncated
/// archive is an error, never a short tarball.
struct ZstdReader {
    child: std::process::Child,
    out: std::process::ChildStdout,
    done: bool,
}

impl ZstdReader {
    fn spawn(file: File, path: &Path) -> Result<ZstdReader> {
        let mut child = std::process::Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .stdin(file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|source| UnpackError::Archive {
                path: path.to_path_buf(),
                source: io::Error::new(source.kind(), format!("cannot run zstd: {source}")),
            })?;
        let out = child.stdout.take().ok_or_else(|| UnpackError::Archive {
            path: path.to_path_buf(),
            source: io::Error::other("zstd has no output pipe"),
        })?;
        Ok(ZstdReader {
            child,
            out,
            done: false,
        })
    }
}

impl Read for ZstdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let st = self.child.wait()?;
            if !st.success() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt zstd stream (zstd {st})"),
                ));
            }
        }
        Ok(n)
    }
}

impl Drop for ZstdReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Caps the decompressed stream; `tripped` lets the caller tell the cap from
/// genuine corruption, since the tar crate only passes on an `io::Error`.
struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            // Exactly at the limit is fine; only data beyond it trips.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.set(true);
                    Err(io::Error::other("size limit exceeded"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn create_temp_sibling(parent: &Path, name: &OsStr) -> Result<PathBuf> {
    let state = std::collections::hash_map::RandomState::new();
    for attempt in 0u32..16 {
        let mut h = state.build_hasher();
        h.write_u32(attempt);
        h.write_u32(std::process::id());
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp-{:08x}", h.finish() as u32));
        let tmp = parent.join(tmp_name);
        // 0700 while unpacking so nobody else can race us inside the tree or
        // reach half-finished setuid files.
        match fs::DirBuilder::new().mode(0o700).create(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(tmp.display().to_string(), e)),
        }
    }
    Err(io_err(
        parent.display().to_string(),
        io::Error::new(io::ErrorKind::AlreadyExists, "no free temp dir name"),
    ))
}

fn bad_name(name: &str, reason: &'static str) -> UnpackError {
    UnpackError::BadName {
        entry: name.to_string(),
        reason,
    }
}

fn io_err(entry: impl Into<String>, source: io::Error) -> UnpackError {
    UnpackError::Io {
        entry: entry.into(),
        source,
    }
}

/// A parser error about the archive, in plain text: the tar crate's messages
/// quote header fields verbatim, and those are the archive's bytes.
fn corrupt(e: io::Error) -> UnpackError {
    UnpackError::Corrupt(printable_ascii(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use tempfile::TempDir;

    const MTIME: u64 = 1_600_000_000;

    struct Work {
        dir: TempDir,
    }

    impl Work {
        fn new() -> Self {
            Work {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn archive(&self) -> PathBuf {
            self.dir.path().join("a.tar")
        }
        fn dest(&self) -> PathBuf {
            self.dir.path().join("rootfs")
        }
        fn write(&self, bytes: &[u8]) -> PathBuf {
            fs::write(self.archive(), bytes).unwrap();
            self.archive()
        }
        fn unpack(&self, bytes: &[u8], opts: &UnpackOptions) -> Result<UnpackStats> {
            let archive = self.write(bytes);
            unpack(&archive, &self.dest(), opts)
        }
        /// Everything in the work dir except the archive: must be empty after
        /// a failed unpack.
        fn leftovers(&self) -> Vec<String> {
            fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "a.tar")
                .collect()
        }
    }

    /// Appends an entry with a name written straight into the header, so the
    /// tar crate's own path checks cannot sanitise hostile names.
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: EntryType, data: &[u8], link: &[u8]) {
        raw_full(b, name, kind, data, link, 0o644, 0);
    }

    fn raw_full(
        b: &mut tar::Builder<Vec<u8>>,
        name: &[u8],
        kind: EntryType,
        data: &[u8],
        link: &[u8],
        mode: u32,
        id: u64,
    ) {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(id);
        h.set_gid(id);
        h.set_mtime(MTIME);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn tarball(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    /// A small but realistic rootfs.
    fn good() -> Vec<u8> {
        tarball(|b| {
            raw_full(b, b"./", EntryType::Directory, b"", b"", 0o755, 0);
            raw_full(b, b"./bin/", EntryType::Directory, b"", b"", 0o755, 0);
            raw_full(
                b,
                b"./bin/busybox",
                EntryType::Regular,
                b"ELF",
                b"",
                0o755,
                0,
            );
            raw(b, b"./bin/sh", EntryType::Symlink, b"", b"/bin/busybox");
            raw(b, b"./bin/ash", EntryType::Link, b"", b"./bin/busybox");
            raw_full(b, b"./etc/", EntryType::Directory, b"", b"", 0o750, 0);
            raw_full(
                b,
                b"./etc/passwd",
                EntryType::Regular,
                b"root:x:0:0",
                b"",
                0o644,
                0,
            );
            // Parents usr/ and usr/bin/ are implied, not listed.
            raw_full(
                b,
                b"usr/bin/passwd",
                EntryType::Regular,
                b"suid",
                b"",
                0o4755,
                1000,
            );
        })
    }

    fn check_good(dest: &Path, stats: UnpackStats) {
        assert_eq!(
            stats,
            UnpackStats {
                files: 3,
                dirs: 4,
                symlinks: 1,
                hardlinks: 1,
                bytes: 3 + 10 + 4,
            }
        );
        assert_eq!(fs::read(dest.join("bin/busybox")).unwrap(), b"ELF");
        assert_eq!(
            fs::read_link(dest.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        let bb = fs::metadata(dest.join("bin/busybox")).unwrap();
        let ash = fs::metadata(dest.join("bin/ash")).unwrap();
        assert_eq!(bb.ino(), ash.ino());
        assert_eq!(bb.mode() & 0o7777, 0o755);
        assert_eq!(bb.mtime(), MTIME as i64);
        let etc = fs::metadata(dest.join("etc")).unwrap();
        assert_eq!(etc.mode() & 0o7777, 0o750);
        assert_eq!(etc.mtime(), MTIME as i64);
        assert_eq!(
            fs::metadata(dest.join("usr/bin")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(fs::metadata(dest).unwrap().mode() & 0o7777, 0o755);
    }

    #[test]
    fn good_plain_archive() {
        let w = Work::new();
        let stats = w.unpack(&good(), &UnpackOptions::default()).unwrap();
        check_good(&w.dest(), stats);
        assert!(w.leftovers().iter().all(|n| n == "rootfs"));
    }

    #[test]
    fn good_gzip_archive() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&good()).unwrap();
        let w = Work::new();
        let stats = w
            .unpack(&enc.finish().unwrap(), &UnpackOptions::default())
            .unwrap();
        check_good(&w.dest(), stats);
    }

    #[test]
    fn good_xz_archive() {
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&good()).unwrap();
        let w = Work::new();
        let stats = w
            .unpack(&enc.finish().unwrap(), &UnpackOptions::default())
            .unwrap();
        check_good(&w.dest(), stats);
    }

    #[test]
    fn extension_is_ignored() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&good()).unwrap();
        let w = Work::new();
        let archive = w.dir.path().join("rootfs.tar.xz");
        fs::write(&archive, enc.finish().unwrap()).unwrap();
        let stats = unpack(&archive, &w.dest(), &UnpackOptions::default()).unwrap();
        check_good(&w.dest(), stats);
    }

    #[test]
    fn setuid_bit_kept() {
        let w = Work::new();
        w.unpack(&good(), &UnpackOptions::default()).unwrap();
        let meta = fs::metadata(w.dest().join("usr/bin/passwd")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
        if unistd::geteuid().is_root() {
            assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
        }
    }

    #[test]
    fn uid_shift_applied() {
        if !unistd::geteuid().is_root() {
            eprintln!("skipping uid_shift_applied: needs root to chown");
            return;
        }
        let w = Work::new();
        let opts = UnpackOptions {
            uid_shift: Some(100_000),
            ..UnpackOptions::default()
        };
        w.unpack(&good(), &opts).unwrap();
        let dest = w.dest();
        let ids = |p: &str| {
            let m = fs::symlink_metadata(dest.join(p)).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(ids(""), (100_000, 100_000));
        assert_eq!(ids("bin"), (100_000, 100_000));
        assert_eq!(ids("bin/busybox"), (100_000, 100_000));
        // The symlink itself, not its (host) target, is chowned.
        assert_eq!(ids("bin/sh"), (100_000, 100_000));
        assert_eq!(ids("usr"), (100_000, 100_000));
        assert_eq!(ids("usr/bin/passwd"), (101_000, 101_000));
        // chown clears setuid; it must have been reapplied afterwards.
        let mode = fs::metadata(dest.join("usr/bin/passwd")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o4755);
    }

    #[test]
    fn uid_outside_shift_range_refused() {
        let w = Work::new();
        let opts = UnpackOptions {
            uid_shift: Some(100_000),
            ..UnpackOptions::default()
        };
        let bytes = tarball(|b| {
            raw_full(b, b"f", EntryType::Regular, b"x", b"", 0o644, 70_000);
        });
        let err = w.unpack(&bytes, &opts).unwrap_err();
        assert!(
            matches!(err, UnpackError::IdOutOfRange { id: 70_000, .. }),
            "{err}"
        );
        assert!(w.leftovers().is_empty());
    }

    fn assert_refused(bytes: &[u8], check: impl Fn(&UnpackError) -> bool) -> UnpackError {
        let w = Work::new();
        let err = w.unpack(bytes, &UnpackOptions::default()).unwrap_err();
        assert!(check(&err), "unexpected error: {err}");
        assert!(!w.dest().exists());
        assert!(w.leftovers().is_empty(), "left {:?}", w.leftovers());
        err
    }

    #[test]
    fn traversal_refused() {
        let bytes = tarball(|b| raw(b, b"../evil", EntryType::Regular, b"x", b""));
        let err = assert_refused(&bytes, |e| matches!(e, UnpackError::PathTraversal { .. }));
        assert_eq!(
            err.to_string(),
            "entry ../evil escapes the destination with a .. component"
        );
        let bytes = tarball(|b| raw(b, b"a/../../evil", EntryType::Regular, b"x", b""));
        assert_refused(&bytes, |e| matches!(e, UnpackError::PathTraversal { .. }));
    }

    #[test]
    fn absolute_path_made_relative() {
        let outside = tempfile::tempdir().unwrap();
        let abs = outside.path().join("evil");
        let bytes = tarball(|b| {
            raw(b, abs.as_os_str().as_bytes(), EntryType::Regular, b"x", b"");
        });
        let w = Work::new();
        w.unpack(&bytes, &UnpackOptions::default()).unwrap();
        assert!(!abs.exists());
        let inside = w.dest().join(abs.strip_prefix("/").unwrap());
        assert_eq!(fs::read(inside).unwrap(), b"x");
    }

    #[test]
    fn write_through_symlink_refused() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("x");
        fs::create_dir(&target).unwrap();
        let bytes = tarball(|b| {
            raw(
                b,
                b"link",
                EntryType::Symlink,
                b"",
                target.as_os_str().as_bytes(),
            );
            raw(b, b"link/file", EntryType::Regular, b"pwned", b"");
        });
        let err = assert_refused(
            &bytes,
            |e| matches!(e, UnpackError::WriteThroughSymlink { link, .. } if link == "link"),
        );
        assert_eq!(
            err.to_string(),
            "entry link/file would be written through symlink link"
        );
        assert!(!target.join("file").exists());
    }

    #[test]
    fn symlink_chain_to_parent_refused() {
        // l1 -> l2 -> .. : each hop is harmless on its own, the chain escapes.
        let bytes = tarball(|b| {
            raw(b, b"d/l2", EntryType::Symlink, b"", b"..");
            raw(b, b"d/l1", EntryType::Symlink, b"", b"l2");
            raw(b, b"d/l1/escape", EntryType::Regular, b"x", b"");
        });
        assert_refused(
            &bytes,
            |e| matches!(e, UnpackError::WriteThroughSymlink { link, .. } if link == "d/l1"),
        );
        let bytes = tarball(|b| {
            raw(b, b"up", EntryType::Symlink, b"", b"../..");
            raw(b, b"up/dir/", EntryType::Directory, b"", b"");
        });
        assert_refused(&bytes, |e| {
            matches!(e, UnpackError::WriteThroughSymlink { .. })
        });
    }

    #[test]
    fn symlink_replaced_by_file_is_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"original").unwrap();
        let bytes = tarball(|b| {
            raw(
                b,
                b"a",
                EntryType::Symlink,
                b"",
                victim.as_os_str().as_bytes(),
            );
            raw(b, b"a", EntryType::Regular, b"new", b"");
        });
        let w = Work::new();
        w.unpack(&bytes, &UnpackOptions::default()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert_eq!(fs::read(w.dest().join("a")).unwrap(), b"new");
    }

    #[test]
    fn hardlink_outside_refused() {
        let bytes = tarball(|b| raw(b, b"passwd", EntryType::Link, b"", b"/etc/passwd"));
        let err = assert_refused(&bytes, |e| matches!(e, UnpackError::HardlinkOutside { .. }));
        assert_eq!(
            err.to_string(),
            "hardlink passwd points to /etc/passwd which is not a file extracted from this archive"
        );
        let bytes = tarball(|b| raw(b, b"passwd", EntryType::Link, b"", b"../../etc/passwd"));
        assert_refused(&bytes, |e| matches!(e, UnpackError::HardlinkOutside { .. }));
        // A directory of the archive is not a valid target either.
        let bytes = tarball(|b| {
            raw(b, b"d/", EntryType::Directory, b"", b"");
            raw(b, b"l", EntryType::Link, b"", b"d");
        });
        assert_refused(&bytes, |e| matches!(e, UnpackError::HardlinkOutside { .. }));
    }

    #[test]
    fn hardlink_through_symlinked_parent_refused() {
        // etc -> /etc makes "etc/passwd" look extracted only if we trusted the
        // name; the target must be a file we created.
        let bytes = tarball(|b| {
            raw(b, b"etc", EntryType::Symlink, b"", b"/etc");
            raw(b, b"p", EntryType::Link, b"", b"etc/passwd");
        });
        assert_refused(&bytes, |e| matches!(e, UnpackError::HardlinkOutside { .. }));
    }

    #[test]
    fn char_device_refused() {
        let bytes = tarball(|b| raw(b, b"./dev/sda", EntryType::Char, b"", b""));
        let err = assert_refused(&bytes, |e| matches!(e, UnpackError::DeviceNode { .. }));
        assert_eq!(err.to_string(), "device node dev/sda refused");
    }

    #[test]
    fn block_device_refused() {
        let bytes = tarball(|b| raw(b, b"dev/sda1", EntryType::Block, b"", b""));
        let err = assert_refused(&bytes, |e| matches!(e, UnpackError::DeviceNode { .. }));
        assert_eq!(err.to_string(), "device node dev/sda1 refused");
    }

    #[test]
    fn fifo_refused() {
        let bytes = tarball(|b| raw(b, b"run/initctl", EntryType::Fifo, b"", b""));
        let err = assert_refused(&bytes, |e| matches!(e, UnpackError::Fifo { .. }));
        assert_eq!(err.to_string(), "fifo run/initctl refused");
    }

    #[test]
    fn nul_in_name_refused() {
        let bytes = tarball(|b| {
            raw(
                b,
                b"././@LongLink",
                EntryType::GNULongName,
                b"etc/pa\0sswd",
                b"",
            );
            raw(b, b"placeholder", EntryType::Regular, b"x", b"");
        });
        assert_refused(&bytes, |e| matches!(e, UnpackError::BadName { .. }));
    }

    #[test]
    fn absurd_names_refused() {
        let long_component = "x".repeat(300);
        let bytes = tarball(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, &long_component, &b"x"[..]).unwrap();
        });
        assert_refused(&bytes, |e| matches!(e, UnpackError::BadName { .. }));
        let long_path = "a/".repeat(2100) + "f";
        let bytes = tarball(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, &long_path, &b"x"[..]).unwrap();
        });
        assert_refused(&bytes, |e| matches!(e, UnpackError::BadName { .. }));
    }

    #[test]
    fn size_limit_enforced() {
        let big = vec![0u8; 1 << 20];
        let bytes = tarball(|b| raw(b, b"zeros", EntryType::Regular, &big, b""));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&bytes).unwrap();
        let w = Work::new();
        let opts = UnpackOptions {
            max_bytes: 64 * 1024,
            ..UnpackOptions::default()
        };
        let err = w.unpack(&enc.finish().unwrap(), &opts).unwrap_err();
        assert!(
            matches!(err, UnpackError::TooLarge { limit: 65536 }),
            "{err}"
        );
        assert!(w.leftovers().is_empty());
    }

    #[test]
    fn failure_leaves_no_dest_and_no_temp_dir() {
        // Plenty of good entries first, so the temp tree really had content.
        let mut bytes = good();
        bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
        let bytes = {
            let mut b = tar::Builder::new(Vec::new());
            b.get_mut().extend_from_slice(&bytes);
            raw(&mut b, b"dev/null", EntryType::Char, b"", b"");
            b.into_inner().unwrap()
        };
        assert_refused(&bytes, |e| matches!(e, UnpackError::DeviceNode { .. }));
    }

    #[test]
    fn existing_dest_refused() {
        let w = Work::new();
        fs::create_dir(w.dest()).unwrap();
        let err = w.unpack(&good(), &UnpackOptions::default()).unwrap_err();
        assert!(matches!(err, UnpackError::DestExists(_)), "{err}");
        assert_eq!(fs::read_dir(w.dest()).unwrap().count(), 0);
    }

    #[test]
    fn entry_cap_counts_every_entry_and_hardlink() {
        let bytes = tarball(|b| {
            raw(b, b"f", EntryType::Regular, b"x", b"");
            for i in 0..10 {
                raw(b, format!("l{i}").as_bytes(), EntryType::Link, b"", b"f");
            }
        });
        let w = Work::new();
        let opts = UnpackOptions {
            max_entries: 10,
            ..UnpackOptions::default()
        };
        let err = w.unpack(&bytes, &opts).unwrap_err();
        assert!(
            matches!(err, UnpackError::TooManyEntries { limit: 10 }),
            "{err}"
        );
        assert_eq!(err.to_string(), "archive has more than 10 entries");
        assert!(w.leftovers().is_empty());
        // Implied parents count too.
        let bytes = tarball(|b| raw(b, b"a/b/c/d/e/f", EntryType::Regular, b"x", b""));
        let w = Work::new();
        let opts = UnpackOptions {
            max_entries: 4,
            ..UnpackOptions::default()
        };
        let err = w.unpack(&bytes, &opts).unwrap_err();
        assert!(matches!(err, UnpackError::TooManyEntries { .. }), "{err}");
        let w = Work::new();
        let opts = UnpackOptions {
            max_entries: 11,
            ..UnpackOptions::default()
        };
        let stats = w.unpack(&good(), &opts).unwrap();
        assert_eq!(stats.hardlinks, 1);
    }

    #[test]
    fn zeros_are_left_as_holes() {
        let mut data = vec![0u8; 8 << 20];
        data[4 << 20] = 1;
        let bytes = tarball(|b| raw(b, b"sparse", EntryType::Regular, &data, b""));
        let w = Work::new();
        let stats = w.unpack(&bytes, &UnpackOptions::default()).unwrap();
        assert_eq!(stats.bytes, 8 << 20);
        let f = w.dest().join("sparse");
        let m = fs::metadata(&f).unwrap();
        assert_eq!(m.len(), 8 << 20);
        assert!(m.blocks() * 512 <= 1 << 20, "{} blocks", m.blocks());
        assert_eq!(fs::read(&f).unwrap(), data);
    }

    #[test]
    fn errors_never_carry_raw_bytes() {
        // A hostile name in a refused entry.
        let bytes = tarball(|b| raw(b, b"dev/\x1b[2J\xff\xfe", EntryType::Char, b"", b""));
        let err = assert_refused(&bytes, |e| matches!(e, UnpackError::DeviceNode { .. }));
        assert_eq!(
            err.to_string(),
            "device node dev/\\x1b[2J\\xff\\xfe refused"
        );
        // Random bytes: the tar crate quotes header fields in its errors.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        for seed in 0..64 {
            let mut bytes = noise.clone();
            bytes.rotate_left(seed * 512 + 7);
            let w = Work::new();
            if let Err(err) = w.unpack(&bytes, &UnpackOptions::default()) {
                let text = err.to_string();
                assert!(
                    text.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
                    "{text:?}"
                );
                assert!(text.len() < 400, "{text}");
            }
        }
    }

    #[test]
    fn garbage_and_unsupported_compression() {
        let w = Work::new();
        let err = w
            .unpack(&[0x42u8; 2048], &UnpackOptions::default())
            .unwrap_err();
        assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");
        assert!(w.leftovers().is_empty());
        let err = w
            .unpack(b"BZh91AY&SY", &UnpackOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, UnpackError::UnsupportedCompression("bzip2")),
            "{err}"
        );
    }

    #[test]
    fn zstd_archives_unpack_and_corrupt_ones_are_refused() {
        if std::process::Command::new("zstd")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: zstd is not installed");
            return;
        }
        let tar = tarball(|b| raw(b, b"etc/hostname", EntryType::Regular, b"zz\n", b""));
        let mut child = std::process::Command::new("zstd")
            .args(["-q", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        let zst = child.wait_with_output().unwrap().stdout;
        let w = Work::new();
        w.unpack(&zst, &UnpackOptions::default()).unwrap();
        assert_eq!(fs::read(w.dest().join("etc/hostname")).unwrap(), b"zz\n");
        // cut short, and garbage after the magic
        for bad in [zst[..zst.len() / 2].to_vec(), {
            let mut g = zst[..4].to_vec();
            g.extend_from_slice(&[0x11; 600]);
            g
        }] {
            let w = Work::new();
            let err = w.unpack(&bad, &UnpackOptions::default()).unwrap_err();
            assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");
            assert!(w.leftovers().is_empty());
        }
    }
}
