//! The local image cache: images (root tarballs, squashfs, raw and qcow2 disk
//! images; see [`format`] and [`disk`]) made into a root tree once, plus
//! id-shifted copies for unprivileged instances.
//!
//! Layout under `images/`:
//! - `<fingerprint>/rootfs`: the unpacked tarball, owners as in the archive;
//! - `<fingerprint>/shifted/<host_base>/rootfs`: the same tree with every owner
//!   moved into the id range starting at `host_base`. Overlay roots of
//!   unprivileged instances sit on top of these, so files the container sees as
//!   root's are owned by its mapped root on the host. An id range slot is reused
//!   by later instances, and so is its shifted copy.

pub mod disk;
pub mod format;
pub mod unpack;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub use unpack::{UnpackError, UnpackOptions, UnpackStats};

use crate::fsutil;

/// Errors of the image cache.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image archive refused: {0}")]
    Unpack(#[from] UnpackError),
    #[error("image refused: {0}")]
    Format(#[from] format::FormatError),
    #[error("disk image refused: {0}")]
    Disk(#[from] disk::DiskError),
    #[error("image archive has no root filesystem: {0} is missing")]
    NotARootfs(&'static str),
    #[error("image copy refused: {0}")]
    Copy(#[from] fsutil::CopyError),
    #[error("image {0} is in use by a launch in progress")]
    InUse(String),
    #[error("image {0} is being deleted")]
    Deleting(String),
    #[error("background task failed: {0}")]
    Join(String),
}

/// Most bytes of an image's `/etc/os-release` that are read.
const OS_RELEASE_MAX_BYTES: u64 = 64 * 1024;

/// Launches using each image, and images being deleted: a delete never
/// removes files a launch is copying, and a launch never starts on an image
/// whose files are going.
#[derive(Debug, Default)]
struct Pins {
    users: HashMap<String, usize>,
    deleting: HashSet<String>,
}

/// Held while a launch uses an image's files; see [`ImageCache::pin`].
#[derive(Debug)]
pub struct ImagePin {
    pins: Arc<Mutex<Pins>>,
    fp: String,
}

impl Drop for ImagePin {
    fn drop(&mut self) {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.users.get_mut(&self.fp) {
            *n -= 1;
            if *n == 0 {
                p.users.remove(&self.fp);
            }
        }
    }
}

/// Held while an image's files are removed; see [`ImageCache::begin_delete`].
#[derive(Debug)]
pub struct DeleteGuard {
    pins: Arc<Mutex<Pins>>,
    fp: String,
}

impl Drop for DeleteGuard {
    fn drop(&mut self) {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        p.deleting.remove(&self.fp);
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    pub fingerprint: String,
    pub size: u64,
    pub stats: UnpackStats,
    pub properties: serde_json::Value,
}

/// The image cache directory.
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
    max_entries: u64,
    pins: Arc<Mutex<Pins>>,
    /// Serialises creation of shifted copies so two launches in the same slot
    /// never build the same copy twice.
    shift_lock: tokio::sync::Mutex<()>,
}

/// The sha256 of a file, hex encoded: an image's fingerprint.
pub fn fingerprint(path: &Path) -> Result<String, ImageError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The fingerprint of an archive, hashed on a blocking thread.
pub async fn fingerprint_blocking(path: &Path) -> Result<String, ImageError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || fingerprint(&path))
        .await
        .map_err(|e| ImageError::Join(e.to_string()))?
}

/// Reads what can be learnt about an unpacked root: its os-release and init.
/// Both are looked up inside the root only (a symlink to `/dev/zero` or to a
/// host file resolves inside the image), and at most 64 KiB are read.
fn properties(rootfs: &Path) -> serde_json::Value {
    let mut props = serde_json::Map::new();
    let os_release = fsutil::read_in_root(rootfs, "etc/os-release", OS_RELEASE_MAX_BYTES)
        .or_else(|_| fsutil::read_in_root(rootfs, "usr/lib/os-release", OS_RELEASE_MAX_BYTES));
    if let Ok(bytes) = os_release {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim_matches('"').to_string();
                match k {
                    "ID" => {
                        props.insert("os".into(), v.into());
                    }
                    "VERSION_ID" => {
                        props.insert("release".into(), v.into());
                    }
                    "PRETTY_NAME" | "NAME" if !props.contains_key("description") => {
                        props.insert("description".into(), v.into());
                    }
                    _ => {}
                }
            }
        }
    }
    // Which init /sbin/init is: systemd images stop on SIGRTMIN+3 and want
    // their cgroup delegated.
    if let Ok(target) = fsutil::resolve_in_root(rootfs, "sbin/init") {
        if target.file_name().is_some_and(|n| n == "systemd") {
            props.insert("init_system".into(), "systemd".into());
        }
    }
    props.insert(
        "init".into(),
        (if fsutil::exists_in_root(rootfs, "sbin/init") {
            "/sbin/init"
        } else {
            ""
        })
        .into(),
    );
    serde_json::Value::Object(props)
}

/// Makes `archive` (of format `found`) into `image_dir/rootfs`: a tarball is
/// unpacked, a disk or filesystem image has its root filesystem copied out
/// (a qcow2 is first converted to a temporary raw file in `cache_dir`).
fn make_root(
    archive: &Path,
    found: format::Format,
    cache_dir: &Path,
    image_dir: &Path,
    max_bytes: u64,
    max_entries: u64,
) -> Result<UnpackStats, ImageError> {
    let rootfs = image_dir.join("rootfs");
    let opts = UnpackOptions {
        max_bytes,
        max_entries,
        ..UnpackOptions::default()
    };
    let limits = fsutil::CopyLimits {
        max_bytes,
        max_entries,
    };
    let copy = |image: &Path| -> Result<UnpackStats, ImageError> {
        let tmp = image_dir.join(format!("rootfs.tmp-{}", uuid::Uuid::new_v4().simple()));
        let res = disk::copy_root(image, &tmp, image_dir, limits).map_err(ImageError::from);
        let res = res.and_then(|c| {
            std::fs::rename(&tmp, &rootfs).map_err(io_err(&rootfs))?;
            Ok(UnpackStats {
                files: c.entries,
                bytes: c.bytes,
                hardlinks: c.hardlinks,
                ..UnpackStats::default()
            })
        });
        if res.is_err() {
            let _ = fsutil::remove_tree(&tmp);
        }
        res
    };
    match found {
        format::Format::Tarball(_) => Ok(unpack::unpack(archive, &rootfs, &opts)?),
        format::Format::Squashfs | format::Format::Raw => copy(archive),
        format::Format::Qcow2 => {
            let raw = cache_dir.join(format!(".upload-{}.raw", uuid::Uuid::new_v4().simple()));
            let res = disk::qcow2_to_raw(archive, &raw, max_bytes)
                .map_err(ImageError::from)
                .and_then(|()| {
                    // the converted disk is checked like any raw one
                    match format::detect(&raw, Some(format::Declared::Raw))? {
                        format::Format::Raw | format::Format::Squashfs => copy(&raw),
                        other => Err(format::FormatError::Mismatch {
                            declared: "qcow2 disk",
                            found: other.name(),
                        }
                        .into()),
                    }
                });
            let _ = std::fs::remove_file(&raw);
            res
        }
    }
}

impl ImageCache {
    pub fn new(dir: PathBuf, max_bytes: u64, max_entries: u64) -> ImageCache {
        ImageCache {
            dir,
            max_bytes,
            max_entries,
            pins: Arc::new(Mutex::new(Pins::default())),
            shift_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn image_dir(&self, fp: &str) -> PathBuf {
        self.dir.join(fp)
    }

    /// The unshifted root of an image.
    pub fn rootfs(&self, fp: &str) -> PathBuf {
        self.image_dir(fp).join("rootfs")
    }

    /// Whether the image's unpacked root is present.
    pub fn has(&self, fp: &str) -> bool {
        self.rootfs(fp).is_dir()
    }

    /// A fresh path in the cache directory for an upload in progress.
    pub fn upload_path(&self) -> PathBuf {
        self.dir
            .join(format!(".upload-{}", uuid::Uuid::new_v4().simple()))
    }

    /// Marks `fp` as used by a launch until the pin is dropped: a delete of
    /// the image is refused meanwhile. Refused while the image is being
    /// deleted.
    pub fn pin(&self, fp: &str) -> Result<ImagePin, ImageError> {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if p.deleting.contains(fp) {
            return Err(ImageError::Deleting(fp.to_string()));
        }
        *p.users.entry(fp.to_string()).or_insert(0) += 1;
        Ok(ImagePin {
            pins: Arc::clone(&self.pins),
            fp: fp.to_string(),
        })
    }

    /// Starts the delete of `fp`: refused while a launch holds a pin on it;
    /// new pins are refused until the guard is dropped.
    pub fn begin_delete(&self, fp: &str) -> Result<DeleteGuard, ImageError> {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if p.users.get(fp).copied().unwrap_or(0) > 0 {
            return Err(ImageError::InUse(fp.to_string()));
        }
        if !p.deleting.insert(fp.to_string()) {
            return Err(ImageError::Deleting(fp.to_string()));
        }
        Ok(DeleteGuard {
            pins: Arc::clone(&self.pins),
            fp: fp.to_string(),
        })
    }

    /// Removes what an interrupted upload, import or copy left in the cache
    /// (a daemon killed mid-way): `.upload-*` files, the unpacker's
    /// `rootfs.tmp-*` directories, half-made shifted copies
    /// (`shifted/<base>/rootfs.tmp`) and image directories whose import never
    /// finished (no `rootfs`). Run at start-up, before any import or launch.
    pub fn remove_leftovers(&self) -> Vec<PathBuf> {
        Self::remove_leftovers_in(&self.dir)
    }

    /// [`ImageCache::remove_leftovers`] of the cache at `dir`, for a caller
    /// that runs it on a blocking thread.
    pub fn remove_leftovers_in(dir: &Path) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let mut remove = |p: PathBuf| {
            // read-only mounts of a disk image import cut short
            for m in fsutil::mounts_under(&p) {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
            if fsutil::remove_tree(&p).is_ok() {
                removed.push(p);
            }
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return removed;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with(".upload-") {
                remove(path);
                continue;
            }
            if name.starts_with('.') || !path.is_dir() {
                continue;
            }
            if std::fs::symlink_metadata(path.join("rootfs")).is_err() {
                remove(path);
                continue;
            }
            if let Ok(inner) = std::fs::read_dir(&path) {
                for i in inner.flatten() {
                    if i.file_name().to_string_lossy().starts_with("rootfs.tmp") {
                        remove(i.path());
                    }
                }
            }
            if let Ok(slots) = std::fs::read_dir(path.join("shifted")) {
                for slot in slots.flatten() {
                    let tmp = slot.path().join("rootfs.tmp");
                    if std::fs::symlink_metadata(&tmp).is_ok() {
                        remove(tmp);
                    }
                }
            }
        }
        removed
    }

    /// Removes cached images the store does not know: an import cut short
    /// after unpacking (a daemon killed before the image was recorded)
    /// leaves its whole tree. Only entries named like a fingerprint are
    /// touched; `known` holds the store's fingerprints.
    pub fn remove_unknown(&self, known: &std::collections::HashSet<String>) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_fingerprint = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_fingerprint && !known.contains(&name) && fsutil::remove_tree(&e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }

    /// Makes the image file `archive` into a root tree in the cache, under
    /// its fingerprint. Its format is told by content and must fit what was
    /// `declared` (Glance's `disk_format`); the tree must hold a root
    /// filesystem (`bin/` or `sbin/` or `usr/`).
    pub async fn import(
        &self,
        archive: &Path,
        declared: Option<format::Declared>,
    ) -> Result<Imported, ImageError> {
        let archive = archive.to_path_buf();
        let dir = self.dir.clone();
        let max_bytes = self.max_bytes;
        let max_entries = self.max_entries;
        let made = tokio::task::spawn_blocking(move || -> Result<Imported, ImageError> {
            let found = format::detect(&archive, declared)?;
            let fp = fingerprint(&archive)?;
            let size = std::fs::metadata(&archive).map_err(io_err(&archive))?.len();
            let image_dir = dir.join(&fp);
            let rootfs = image_dir.join("rootfs");
            std::fs::create_dir_all(&image_dir).map_err(io_err(&image_dir))?;
            // A leftover from an interrupted import of the same archive.
            fsutil::remove_tree(&rootfs).map_err(io_err(&rootfs))?;
            let made = make_root(&archive, found, &dir, &image_dir, max_bytes, max_entries);
            let stats = match made {
                Ok(s) => s,
                Err(e) => {
                    let _ = fsutil::remove_tree(&image_dir);
                    return Err(e);
                }
            };
            let looks_like_root = ["bin", "sbin", "usr"]
                .iter()
                .any(|d| fsutil::exists_in_root(&rootfs, d));
            if !looks_like_root {
                let _ = fsutil::remove_tree(&image_dir);
                return Err(ImageError::NotARootfs("bin/, sbin/ or usr/"));
            }
            let mut properties = properties(&rootfs);
            if let Some(p) = properties.as_object_mut() {
                p.insert("format".into(), found.name().into());
            }
            tracing::info!(fingerprint = %fp, format = %found, "image made into a root tree");
            Ok(Imported {
                fingerprint: fp,
                size,
                stats,
                properties,
            })
        })
        .await;
        // the unpacking's buffers are freed: their pages go back (crate::memtrim)
        crate::memtrim::release();
        made.map_err(|e| ImageError::Join(e.to_string()))?
    }

    /// The bounds of any copy of an image's tree: what its unpacking was
    /// allowed to make.
    pub fn copy_limits(&self) -> fsutil::CopyLimits {
        fsutil::CopyLimits {
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
        }
    }

    /// The image's root shifted into the id range at `host_base`, made on
    /// first use. Hard links stay links and the copy is bounded by
    /// [`ImageCache::copy_limits`].
    pub async fn shifted_rootfs(&self, fp: &str, host_base: u32) -> Result<PathBuf, ImageError> {
        let _pin = self.pin(fp)?;
        let base_dir = self
            .image_dir(fp)
            .join("shifted")
            .join(host_base.to_string());
        let target = base_dir.join("rootfs");
        let _guard = self.shift_lock.lock().await;
        if target.is_dir() {
            return Ok(target);
        }
        let src = self.rootfs(fp);
        let tmp = base_dir.join("rootfs.tmp");
        let target2 = target.clone();
        let limits = self.copy_limits();
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            std::fs::create_dir_all(&base_dir).map_err(io_err(&base_dir))?;
            fsutil::remove_tree(&tmp).map_err(io_err(&tmp))?;
            if let Err(e) = fsutil::copy_tree(&src, &tmp, host_base, limits) {
                let _ = fsutil::remove_tree(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, &target2).map_err(io_err(&target2))
        })
        .await
        .map_err(|e| ImageError::Join(e.to_string()))??;
        Ok(target)
    }

    /// Removes an image and all its shifted copies; refused while a launch
    /// uses it (see [`ImageCache::pin`]).
    pub async fn remove(&self, fp: &str) -> Result<(), ImageError> {
        let guard = self.begin_delete(fp)?;
        self.remove_files(fp, guard).await
    }

    /// Removes an image's files once [`ImageCache::begin_delete`] allowed it.
    pub async fn remove_files(&self, fp: &str, guard: DeleteGuard) -> Result<(), ImageError> {
        let dir = self.image_dir(fp);
        let res =
            tokio::task::spawn_blocking(move || fsutil::remove_tree(&dir).map_err(io_err(&dir)))
                .await
                .map_err(|e| ImageError::Join(e.to_string()))?;
        drop(guard);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn add(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: &str,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    #[tokio::test]
    async fn properties_never_read_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-os-release");
        std::fs::write(&host, "ID=host-secret\n").unwrap();
        for target in ["/dev/zero", "/dev/kmsg", host.to_str().unwrap()] {
            let bytes = tarball(|b| {
                add(b, "bin/", tar::EntryType::Directory, b"", "");
                add(b, "etc/os-release", tar::EntryType::Symlink, b"", target);
                add(b, "sbin/init", tar::EntryType::Symlink, b"", "/bin/busybox");
            });
            let archive = dir.path().join("a.tar");
            std::fs::write(&archive, bytes).unwrap();
            let cache =
                ImageCache::new(dir.path().join(format!("c{}", target.len())), 1 << 20, 100);
            std::fs::create_dir_all(cache.dir()).unwrap();
            let started = std::time::Instant::now();
            let imported = cache.import(&archive, None).await.unwrap();
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{target}"
            );
            assert_eq!(imported.properties.get("os"), None, "{target}");
            assert_eq!(imported.properties["init"], "/sbin/init");
        }
        // A real distribution's relative link is followed, inside the root.
        let bytes = tarball(|b| {
            add(
                b,
                "usr/lib/os-release",
                tar::EntryType::Regular,
                b"ID=debian\nVERSION_ID=\"12\"\n",
                "",
            );
            add(
                b,
                "etc/os-release",
                tar::EntryType::Symlink,
                b"",
                "../usr/lib/os-release",
            );
        });
        let archive = dir.path().join("b.tar");
        std::fs::write(&archive, bytes).unwrap();
        let cache = ImageCache::new(dir.path().join("deb"), 1 << 20, 100);
        std::fs::create_dir_all(cache.dir()).unwrap();
        let imported = cache.import(&archive, None).await.unwrap();
        assert_eq!(imported.properties["os"], "debian");
        assert_eq!(imported.properties["release"], "12");
    }

    #[tokio::test]
    async fn content_must_match_the_declared_format() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = tarball(|b| {
            add(b, "bin/", tar::EntryType::Directory, b"", "");
            add(b, "sbin/init", tar::EntryType::Symlink, b"", "/bin/busybox");
        });
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, bytes).unwrap();
        let cache = ImageCache::new(dir.path().join("images"), 1 << 20, 100);
        std::fs::create_dir_all(cache.dir()).unwrap();
        // a tarball declared qcow2 (or a compressed one when it is plain)
        for declared in [format::Declared::Qcow2, format::Declared::Compressed] {
            let e = cache.import(&archive, Some(declared)).await.unwrap_err();
            assert!(
                matches!(e, ImageError::Format(format::FormatError::Mismatch { .. })),
                "{e}"
            );
            assert!(e.to_string().contains("but its content is tar"), "{e}");
            assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);
        }
        // declared raw, a root tarball is taken, as corral always has
        let imported = cache
            .import(&archive, Some(format::Declared::Raw))
            .await
            .unwrap();
        assert_eq!(imported.properties["format"], "tar");
    }

    #[tokio::test]
    async fn a_systemd_init_is_recognised_through_merged_usr_links() {
        let dir = tempfile::tempdir().unwrap();
        type Build<'a> = &'a dyn Fn(&mut tar::Builder<Vec<u8>>);
        let cases: [(&str, Build); 3] = [
            // Debian 12: /sbin -> usr/sbin, usr/sbin/init -> ../lib/systemd/systemd.
            ("systemd", &|b| {
                add(b, "sbin", tar::EntryType::Symlink, b"", "usr/sbin");
                add(b, "usr/sbin/", tar::EntryType::Directory, b"", "");
                add(
                    b,
                    "usr/lib/systemd/systemd",
                    tar::EntryType::Regular,
                    b"\x7fELF",
                    "",
                );
                add(
                    b,
                    "usr/sbin/init",
                    tar::EntryType::Symlink,
                    b"",
                    "../lib/systemd/systemd",
                );
            }),
            ("busybox", &|b| {
                add(b, "bin/busybox", tar::EntryType::Regular, b"\x7fELF", "");
                add(b, "sbin/init", tar::EntryType::Symlink, b"", "/bin/busybox");
            }),
            // A link to a host systemd is not followed out of the root.
            ("outside", &|b| {
                add(
                    b,
                    "sbin/init",
                    tar::EntryType::Symlink,
                    b"",
                    "/../../../../lib/systemd/systemd",
                );
            }),
        ];
        for (name, build) in cases {
            let archive = dir.path().join(format!("{name}.tar"));
            std::fs::write(&archive, tarball(|b| build(b))).unwrap();
            let cache = ImageCache::new(dir.path().join(name), 1 << 20, 100);
            std::fs::create_dir_all(cache.dir()).unwrap();
            let imported = cache.import(&archive, None).await.unwrap();
            let want = (name == "systemd").then_some("systemd");
            assert_eq!(
                imported
                    .properties
                    .get("init_system")
                    .and_then(|v| v.as_str()),
                want,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn delete_waits_for_no_launch_and_launch_for_no_delete() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ImageCache::new(dir.path().join("images"), 1 << 30, 1 << 20));
        let fp = "f00d";
        let root = cache.rootfs(fp);
        for i in 0..400 {
            let d = root.join(format!("d{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), vec![1u8; 16 * 1024]).unwrap();
        }
        let c = Arc::clone(&cache);
        let launch = tokio::spawn(async move { c.shifted_rootfs("f00d", 0).await });
        // Wait until the copy is under way, then try to delete the image.
        let tmp = cache.image_dir(fp).join("shifted/0/rootfs.tmp");
        while !tmp.exists() && !launch.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let deleted = cache.remove(fp).await;
        let copied = launch.await.unwrap();
        assert!(
            matches!(deleted, Err(ImageError::InUse(_))),
            "delete during a copy: {deleted:?}"
        );
        let copied = copied.unwrap();
        assert_eq!(std::fs::read_dir(&copied).unwrap().count(), 400);
        // A delete under way refuses launches; once done, so is the image.
        let guard = cache.begin_delete(fp).unwrap();
        assert!(matches!(cache.pin(fp), Err(ImageError::Deleting(_))));
        cache.remove_files(fp, guard).await.unwrap();
        assert!(!cache.has(fp));
        drop(cache.pin(fp).unwrap());
    }

    #[test]
    fn leftovers_of_every_kind_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path().to_path_buf(), 1 << 20, 100);
        let mk = |p: &str| std::fs::create_dir_all(dir.path().join(p)).unwrap();
        mk("good/rootfs/bin");
        mk("good/rootfs.tmp-1234abcd/bin");
        mk("good/shifted/100000/rootfs");
        mk("good/shifted/200000/rootfs.tmp/etc");
        mk("half/rootfs.tmp-deadbeef/etc");
        std::fs::write(dir.path().join(".upload-1"), b"x").unwrap();
        let mut removed = cache.remove_leftovers();
        removed.sort();
        let d = dir.path();
        let mut want = vec![
            d.join(".upload-1"),
            d.join("good/rootfs.tmp-1234abcd"),
            d.join("good/shifted/200000/rootfs.tmp"),
            d.join("half"),
        ];
        want.sort();
        assert_eq!(removed, want);
        assert!(d.join("good/rootfs/bin").is_dir());
        assert!(d.join("good/shifted/100000/rootfs").is_dir());
    }
}
