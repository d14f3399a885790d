//! The local image cache: root tarballs unpacked once, plus id-shifted copies
//! for unprivileged instances.
//!
//! Layout under `images/`:
//! - `<fingerprint>/rootfs`: the unpacked tarball, owners as in the archive;
//! - `<fingerprint>/shifted/<host_base>/rootfs`: the same tree with every owner
//!   moved into the id range starting at `host_base`. Overlay roots of
//!   unprivileged instances sit on top of these, so files the container sees as
//!   root's are owned by its mapped root on the host. An id range slot is reused
//!   by later instances, and so is its shifted copy.

pub mod unpack;

use std::io::Read;
use std::path::{Path, PathBuf};

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
    #[error("image archive has no root filesystem: {0} is missing")]
    NotARootfs(&'static str),
    #[error("background task failed: {0}")]
    Join(String),
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

/// Reads what can be learnt about an unpacked root: its os-release and init.
fn properties(rootfs: &Path) -> serde_json::Value {
    let mut props = serde_json::Map::new();
    if let Ok(text) = std::fs::read_to_string(rootfs.join("etc/os-release")) {
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
    props.insert(
        "init".into(),
        (if std::fs::symlink_metadata(rootfs.join("sbin/init")).is_ok() {
            "/sbin/init"
        } else {
            ""
        })
        .into(),
    );
    serde_json::Value::Object(props)
}

impl ImageCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> ImageCache {
        ImageCache {
            dir,
            max_bytes,
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

    /// Removes what an interrupted upload or import left in the cache (a
    /// daemon killed mid-download): `.upload-*` files and half-made copies.
    pub fn remove_leftovers(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".upload-") && fsutil::remove_tree(&e.path()).is_ok() {
                removed.push(e.path());
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

    /// Unpacks an archive into the cache under its fingerprint. The archive
    /// must hold a root filesystem (`bin/` or `sbin/` or `usr/`).
    pub async fn import(&self, archive: &Path) -> Result<Imported, ImageError> {
        let archive = archive.to_path_buf();
        let dir = self.dir.clone();
        let max_bytes = self.max_bytes;
        tokio::task::spawn_blocking(move || -> Result<Imported, ImageError> {
            let fp = fingerprint(&archive)?;
            let size = std::fs::metadata(&archive).map_err(io_err(&archive))?.len();
            let image_dir = dir.join(&fp);
            let rootfs = image_dir.join("rootfs");
            std::fs::create_dir_all(&image_dir).map_err(io_err(&image_dir))?;
            // A leftover from an interrupted import of the same archive.
            fsutil::remove_tree(&rootfs).map_err(io_err(&rootfs))?;
            let opts = UnpackOptions {
                max_bytes,
                ..UnpackOptions::default()
            };
            let stats = match unpack::unpack(&archive, &rootfs, &opts) {
                Ok(s) => s,
                Err(e) => {
                    let _ = fsutil::remove_tree(&image_dir);
                    return Err(e.into());
                }
            };
            let looks_like_root = ["bin", "sbin", "usr"]
                .iter()
                .any(|d| std::fs::symlink_metadata(rootfs.join(d)).is_ok());
            if !looks_like_root {
                let _ = fsutil::remove_tree(&image_dir);
                return Err(ImageError::NotARootfs("bin/, sbin/ or usr/"));
            }
            Ok(Imported {
                fingerprint: fp,
                size,
                stats,
                properties: properties(&rootfs),
            })
        })
        .await
        .map_err(|e| ImageError::Join(e.to_string()))?
    }

    /// The image's root shifted into the id range at `host_base`, made on
    /// first use.
    pub async fn shifted_rootfs(&self, fp: &str, host_base: u32) -> Result<PathBuf, ImageError> {
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
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            std::fs::create_dir_all(&base_dir).map_err(io_err(&base_dir))?;
            fsutil::remove_tree(&tmp).map_err(io_err(&tmp))?;
            fsutil::copy_tree(&src, &tmp, host_base).map_err(io_err(&src))?;
            std::fs::rename(&tmp, &target2).map_err(io_err(&target2))
        })
        .await
        .map_err(|e| ImageError::Join(e.to_string()))??;
        Ok(target)
    }

    /// Removes an image and all its shifted copies.
    pub async fn remove(&self, fp: &str) -> Result<(), ImageError> {
        let dir = self.image_dir(fp);
        tokio::task::spawn_blocking(move || fsutil::remove_tree(&dir).map_err(io_err(&dir)))
            .await
            .map_err(|e| ImageError::Join(e.to_string()))?
    }
}
