//! A snapshot as a root tarball: the image's root with the snapshot's
//! writable state over it (a read-only overlay of both, or a copy pool's
//! whole root), written as a tar stream with the owners shifted back from
//! the instance's id range to the image's own ids. Streamed: nothing of the
//! tarball is kept on disk.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::snapshot::snapshot_dir;
use super::{io_err, StorageError, StorageKind};

/// The id range a root's owners are shifted by: `base..base+size` on the
/// host is `0..size` in the image. `None`: ids are the host's (privileged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unshift {
    pub base: u32,
    pub size: u32,
}

/// The image's id of a host id (ids outside the range, which the instance
/// itself sees as the overflow id, become 65534).
fn unshift(id: u32, m: Option<Unshift>) -> u64 {
    match m {
        None => u64::from(id),
        Some(m) if id >= m.base && id - m.base < m.size => u64::from(id - m.base),
        Some(_) => 65534,
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Writes the snapshot `name` of the instance over `lower` (the image root
/// the instance's root lies over) as a tar stream to `out`.
/// With `measure`, file data is not read (zeros of the same length are
/// written): what `out` receives has exactly the length of the real export,
/// for a `Content-Length` sent before it.
pub fn export_snapshot<W: Write>(
    kind: StorageKind,
    instance_dir: &Path,
    name: &str,
    lower: &Path,
    ids: Option<Unshift>,
    measure: bool,
    out: W,
) -> Result<ExportStats, StorageError> {
    let dir = snapshot_dir(instance_dir, name);
    let state = dir.join("state");
    fs::symlink_metadata(&state).map_err(io_err(&state))?;
    match kind {
        StorageKind::Copy | StorageKind::Btrfs => write_tar(&state, ids, measure, out),
        StorageKind::Overlay => {
            let mnt = dir.join("export");
            if super::is_mounted(&mnt) {
                let _ = nix::mount::umount2(&mnt, MntFlags::MNT_DETACH);
            }
            fs::create_dir_all(&mnt).map_err(io_err(&mnt))?;
            // Two lower layers and no upper: a read-only overlay in which
            // the state's whiteouts and opaque directories hide the image's.
            let opts = format!("lowerdir={}:{}", state.display(), lower.display());
            nix::mount::mount(
                Some("overlay"),
                &mnt,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(opts.as_str()),
            )
            .map_err(|source| StorageError::Mount {
                path: mnt.clone(),
                source,
            })?;
            let result = write_tar(&mnt, ids, measure, out);
            let unmounted = nix::mount::umount2(&mnt, MntFlags::empty())
                .or_else(|_| nix::mount::umount2(&mnt, MntFlags::MNT_DETACH));
            let _ = fs::remove_dir(&mnt);
            let stats = result?;
            unmounted.map_err(|source| StorageError::Unmount { path: mnt, source })?;
            Ok(stats)
        }
    }
}

/// Writes the tree at `root` as a tar stream (paths relative to it).
pub fn write_tar<W: Write>(
    root: &Path,
    ids: Option<Unshift>,
    measure: bool,
    out: W,
) -> Result<ExportStats, StorageError> {
    let mut w = TarWriter {
        measure,
        root: root.to_path_buf(),
        builder: tar::Builder::new(out),
        ids,
        links: HashMap::new(),
        stats: ExportStats::default(),
    };
    let meta = fs::symlink_metadata(root).map_err(io_err(root))?;
    w.entry(root, Path::new("."), &meta)?;
    let mut out = w.builder.into_inner().map_err(io_err(root))?;
    out.flush().map_err(io_err(root))?;
    Ok(w.stats)
}

struct TarWriter<W: Write> {
    measure: bool,
    root: PathBuf,
    builder: tar::Builder<W>,
    ids: Option<Unshift>,
    /// (device, inode) of files with more than one name, to their first name.
    links: HashMap<(u64, u64), PathBuf>,
    stats: ExportStats,
}

impl<W: Write> TarWriter<W> {
    fn header(&self, meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(unshift(meta.uid(), self.ids));
        h.set_gid(unshift(meta.gid(), self.ids));
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    fn entry(&mut self, path: &Path, rel: &Path, meta: &fs::Metadata) -> Result<(), StorageError> {
        let ft = meta.file_type();
        let werr = |e: io::Error| StorageError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        self.stats.entries += 1;
        if ft.is_dir() {
            let mut h = self.header(meta, tar::EntryType::Directory);
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(werr)?;
            let mut children: Vec<_> = fs::read_dir(path)
                .map_err(io_err(path))?
                .collect::<Result<_, _>>()
                .map_err(io_err(path))?;
            children.sort_by_key(|e| e.file_name());
            for c in children {
                let p = c.path();
                let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
                // Names under the root carry no "./" (hard link targets
                // are compared by name when the tarball is unpacked).
                let child = if rel == Path::new(".") {
                    PathBuf::from(c.file_name())
                } else {
                    rel.join(c.file_name())
                };
                self.entry(&p, &child, &m)?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err(path))?;
            let mut h = self.header(meta, tar::EntryType::Symlink);
            self.builder
                .append_link(&mut h, rel, &target)
                .map_err(werr)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key).cloned() {
                    let mut h = self.header(meta, tar::EntryType::Link);
                    self.builder
                        .append_link(&mut h, rel, &first)
                        .map_err(werr)?;
                    return Ok(());
                }
                self.links.insert(key, rel.to_path_buf());
            }
            let mut h = self.header(meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            // Exactly the size in the header, whatever the file does.
            if self.measure {
                self.builder
                    .append_data(&mut h, rel, io::Read::take(io::repeat(0), meta.len()))
                    .map_err(werr)?;
            } else {
                let f = fs::File::open(path).map_err(io_err(path))?;
                self.builder
                    .append_data(&mut h, rel, io::Read::take(f, meta.len()))
                    .map_err(werr)?;
            }
            self.stats.bytes += meta.len();
        } else if ft.is_fifo() {
            let mut h = self.header(meta, tar::EntryType::Fifo);
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(werr)?;
        } else {
            // Device nodes and sockets belong to a running system.
            self.stats.entries -= 1;
            tracing::debug!(path = %path.display(), root = %self.root.display(), "special file left out of the export");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_shifted_back_and_links_kept() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/a"), "hello").unwrap();
        fs::hard_link(root.join("etc/a"), root.join("etc/b")).unwrap();
        std::os::unix::fs::symlink("a", root.join("etc/c")).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let ids = Some(Unshift {
            base: me,
            size: 65536,
        });
        let mut buf = Vec::new();
        let stats = write_tar(&root, ids, false, &mut buf).unwrap();
        assert_eq!(stats.bytes, 5);
        let mut measured = Vec::new();
        write_tar(&root, ids, true, &mut measured).unwrap();
        assert_eq!(measured.len(), buf.len());
        let mut ar = tar::Archive::new(&buf[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.uid().unwrap(), 0, "shifted back");
            seen.push((
                e.path().unwrap().display().to_string(),
                h.entry_type(),
                e.link_name().unwrap().map(|l| l.display().to_string()),
            ));
        }
        assert!(seen.contains(&("etc/a".into(), tar::EntryType::Regular, None)));
        assert!(seen.contains(&("etc/b".into(), tar::EntryType::Link, Some("etc/a".into()))));
        assert!(seen.contains(&("etc/c".into(), tar::EntryType::Symlink, Some("a".into()))));
        assert_eq!(
            unshift(
                5,
                Some(Unshift {
                    base: 100,
                    size: 10
                })
            ),
            65534
        );
        assert_eq!(
            unshift(
                105,
                Some(Unshift {
                    base: 100,
                    size: 10
                })
            ),
            5
        );
        assert_eq!(unshift(105, None), 105);
    }
}
