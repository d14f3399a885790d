//! Instance roots: a writable overlay over the cached image, or a full copy of
//! it where overlayfs is unavailable. Picked once at start-up. The overlay of an
//! unprivileged instance sits on the image seen through an idmapped mount
//! ([`idmap`]) where the kernel allows it, else on an id-shifted copy of the
//! image (made by the image cache).

pub mod ephemeral;
pub mod idmap;
mod layer;

pub use layer::{MAX_DISK_BYTES, MIN_DISK_BYTES};

pub mod export;
pub mod snapshot;
pub mod usage;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::fsutil;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the overlay root at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot unmount {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("root copy refused: {0}")]
    Copy(#[from] fsutil::CopyError),
    #[error("overlayfs is not available on this kernel ([corral] storage = overlay)")]
    NoOverlay,
    #[error("{0} is mounted: the instance must be stopped")]
    Busy(PathBuf),
    #[error("background task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Idmap(#[from] idmap::IdmapError),
    #[error("cannot make the instance's root disk: {0}")]
    Disk(String),
    #[error("cannot make the instance's ephemeral disk: {0}")]
    Ephemeral(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How roots are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Overlay,
    Copy,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Overlay => "overlay",
            StorageKind::Copy => "copy",
        }
    }
}

/// The storage backend, picked once.
#[derive(Debug, Clone)]
pub struct Storage {
    pub kind: StorageKind,
    /// Overlay roots of unprivileged instances sit on an idmapped mount of
    /// the unshifted image (no copy per id range).
    pub idmapped: bool,
}

/// Whether unprivileged overlay roots may use idmapped lower layers
/// (`[corral] idmapped_roots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdmapChoice {
    /// When the kernel passes a probe at start-up; id-shifted copies otherwise.
    Auto,
    /// Always id-shifted copies.
    Off,
}

impl std::str::FromStr for IdmapChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<IdmapChoice, String> {
        match s {
            "auto" => Ok(IdmapChoice::Auto),
            "off" => Ok(IdmapChoice::Off),
            _ => Err("must be auto or off".into()),
        }
    }
}

fn overlay_available() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

/// Whether `path` is a mount point, from `/proc/self/mountinfo`.
pub fn is_mounted(path: &Path) -> bool {
    fsutil::is_mount_point(path)
}

/// How an instance's writable root is made from the cached image
/// (`[corral] storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageChoice {
    /// overlayfs when the kernel offers it, a copy otherwise.
    Auto,
    Overlay,
    Copy,
}

impl std::str::FromStr for StorageChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<StorageChoice, String> {
        match s {
            "auto" => Ok(StorageChoice::Auto),
            "overlay" => Ok(StorageChoice::Overlay),
            "copy" => Ok(StorageChoice::Copy),
            _ => Err("must be auto, overlay or copy".into()),
        }
    }
}

impl Storage {
    /// Picks how roots are made. `probe_dir` (a scratch directory on the
    /// instances' filesystem, made and removed) is where the idmapped overlay
    /// is tried once; a failure is logged and means id-shifted copies.
    pub fn select(
        choice: StorageChoice,
        idmap: IdmapChoice,
        probe_dir: &Path,
    ) -> Result<Storage, StorageError> {
        let kind = match choice {
            StorageChoice::Copy => StorageKind::Copy,
            StorageChoice::Overlay if overlay_available() => StorageKind::Overlay,
            StorageChoice::Overlay => return Err(StorageError::NoOverlay),
            StorageChoice::Auto if overlay_available() => StorageKind::Overlay,
            StorageChoice::Auto => StorageKind::Copy,
        };
        let idmapped = kind == StorageKind::Overlay
            && idmap == IdmapChoice::Auto
            && match probe_idmapped_overlay(probe_dir) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "idmapped overlay roots unavailable: unprivileged roots use id-shifted image copies");
                    false
                }
            };
        Ok(Storage { kind, idmapped })
    }

    /// A backend without idmapped roots (tests, tools).
    pub fn plain(kind: StorageKind) -> Storage {
        Storage {
            kind,
            idmapped: false,
        }
    }

    /// The root filesystem path inside an instance directory.
    pub fn rootfs(instance_dir: &Path) -> PathBuf {
        instance_dir.join("rootfs")
    }

    /// Makes the instance's writable root over `lower` (or mounts it again
    /// after a host reboot). Idempotent.
    /// `idmap` (host base, length): the overlay sits on `lower` seen through
    /// that id mapping; only with [`Storage::idmapped`], else `lower` must
    /// already be owned by the instance's ids.
    /// `disk` (bytes): the writable layer lives on a filesystem of that size
    /// of its own (a loop-mounted ext4 file in the instance directory), so
    /// writes past it fail with ENOSPC; overlay roots only (a copy root is
    /// not bounded, and says so in the log).
    /// A full copy (`storage = copy`) is bounded by `limits`.
    pub async fn prepare(
        &self,
        instance_dir: &Path,
        lower: &Path,
        idmap: Option<(u32, u32)>,
        disk: Option<u64>,
        limits: fsutil::CopyLimits,
    ) -> Result<PathBuf, StorageError> {
        let dir = instance_dir.to_path_buf();
        let lower = lower.to_path_buf();
        let kind = self.kind;
        let idmap = idmap.filter(|_| self.idmapped);
        if disk.is_some() && kind == StorageKind::Copy {
            tracing::warn!(dir = %dir.display(), "root disk size not enforced: [corral] storage = copy");
        }
        tokio::task::spawn_blocking(move || match kind {
            StorageKind::Overlay => prepare_overlay(&dir, &lower, idmap, disk),
            StorageKind::Copy => prepare_copy(&dir, &lower, limits),
        })
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?
    }

    /// Removes half-made root copies (`<instance>/rootfs.tmp`) a daemon
    /// killed mid-copy left under `instances_dir`. Run at start-up.
    pub fn remove_leftovers(instances_dir: &Path) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(instances_dir) else {
            return removed;
        };
        for e in entries.flatten() {
            let tmp = e.path().join("rootfs.tmp");
            if std::fs::symlink_metadata(&tmp).is_ok() && fsutil::remove_tree(&tmp).is_ok() {
                removed.push(tmp);
            }
        }
        snapshot::remove_leftovers(instances_dir);
        removed
    }

    /// Unmounts the instance's overlay root, keeping its layers (the next
    /// `prepare` mounts it again). Nothing to do for a copy.
    pub async fn unmount(&self, instance_dir: &Path) -> Result<(), StorageError> {
        let rootfs = Self::rootfs(instance_dir);
        tokio::task::spawn_blocking(move || {
            if is_mounted(&rootfs) {
                nix::mount::umount2(&rootfs, MntFlags::empty()).map_err(|source| {
                    StorageError::Unmount {
                        path: rootfs.clone(),
                        source,
                    }
                })?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?
    }

    /// Unmounts and removes the instance's root (upper, work and mount point).
    pub async fn release(&self, instance_dir: &Path) -> Result<(), StorageError> {
        let dir = instance_dir.to_path_buf();
        tokio::task::spawn_blocking(move || release(&dir))
            .await
            .map_err(|e| StorageError::Join(e.to_string()))?
    }
}

/// Mounts `image` at `dir/lower` through the id mapping (unless mounted).
fn mount_lower(dir: &Path, image: &Path, (base, len): (u32, u32)) -> Result<PathBuf, StorageError> {
    let lower = dir.join("lower");
    if is_mounted(&lower) {
        return Ok(lower);
    }
    std::fs::create_dir_all(&lower).map_err(io_err(&lower))?;
    let ns = idmap::user_namespace(base, len)?;
    idmap::mount_idmapped(image, &lower, &ns)?;
    Ok(lower)
}

/// Unmounts `path` if mounted (detached when busy).
fn unmount(path: &Path) -> Result<(), StorageError> {
    if is_mounted(path) {
        if let Err(e) = nix::mount::umount2(path, MntFlags::empty()) {
            // Busy: detach it now; the kernel frees it when the last user goes.
            tracing::warn!(path = %path.display(), error = %e, "unmount busy, detaching");
            nix::mount::umount2(path, MntFlags::MNT_DETACH).map_err(|source| {
                StorageError::Unmount {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Where the instance's own root disk is mounted, when it has one: what
/// block I/O limits throttle (its loop device) instead of the host's disk.
pub fn root_disk_mount(instance_dir: &Path) -> Option<PathBuf> {
    layer::has_disk(instance_dir).then(|| layer::mount_point(instance_dir))
}

/// The overlay's upper directory of an instance: on its own root disk when
/// it has one (`layer/upper`), else `upper`.
pub fn upper_dir(instance_dir: &Path) -> PathBuf {
    if layer::has_disk(instance_dir) {
        layer::mount_point(instance_dir).join("upper")
    } else {
        instance_dir.join("upper")
    }
}

fn prepare_overlay(
    dir: &Path,
    image: &Path,
    idmap: Option<(u32, u32)>,
    disk: Option<u64>,
) -> Result<PathBuf, StorageError> {
    let rootfs = Storage::rootfs(dir);
    if is_mounted(&rootfs) {
        return Ok(rootfs);
    }
    let lower = match idmap {
        Some(m) => mount_lower(dir, image, m)?,
        None => image.to_path_buf(),
    };
    let lower = lower.as_path();
    // The writable layer: on the instance's own root disk, or beside it.
    let base = match disk {
        Some(bytes) => layer::mount(dir, bytes)?,
        None if layer::has_disk(dir) => layer::mount(dir, 0)?,
        None => dir.to_path_buf(),
    };
    // A restore a host reboot cut short, on a disk unmounted at start-up.
    snapshot::settle_disk(&base)?;
    let upper = base.join("upper");
    let work = base.join("work");
    let lower_meta = std::fs::metadata(lower).map_err(io_err(lower))?;
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
    }
    // The overlay's root directory takes its owner and mode from upper: make
    // it the image root's, so the container's root owns its `/`.
    std::os::unix::fs::chown(&upper, Some(lower_meta.uid()), Some(lower_meta.gid()))
        .map_err(io_err(&upper))?;
    std::fs::set_permissions(
        &upper,
        std::fs::Permissions::from_mode(lower_meta.mode() & 0o7777),
    )
    .map_err(io_err(&upper))?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|source| StorageError::Mount {
        path: rootfs.clone(),
        source,
    })?;
    Ok(rootfs)
}

fn prepare_copy(
    dir: &Path,
    lower: &Path,
    limits: fsutil::CopyLimits,
) -> Result<PathBuf, StorageError> {
    let rootfs = Storage::rootfs(dir);
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    let tmp = dir.join("rootfs.tmp");
    fsutil::remove_tree(&tmp).map_err(io_err(&tmp))?;
    if let Err(e) = fsutil::copy_tree(lower, &tmp, 0, limits) {
        let _ = fsutil::remove_tree(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, &rootfs).map_err(io_err(&rootfs))?;
    Ok(rootfs)
}

fn release(dir: &Path) -> Result<(), StorageError> {
    unmount(&Storage::rootfs(dir))?;
    // The idmapped lower layer is the image's own tree: never removed
    // through, only unmounted (and it is read-only).
    let lower = dir.join("lower");
    unmount(&lower)?;
    let disk = layer::mount_point(dir);
    unmount(&disk)?;
    for m in [&lower, &disk] {
        if is_mounted(m) {
            return Err(StorageError::Unmount {
                path: m.clone(),
                source: nix::Error::EBUSY,
            });
        }
    }
    for d in [
        "rootfs",
        "rootfs.tmp",
        "upper",
        "work",
        "lower",
        layer::MOUNT_POINT,
        layer::IMAGE,
        layer::IMAGE_TMP,
    ] {
        let p = dir.join(d);
        fsutil::remove_tree(&p).map_err(io_err(&p))?;
    }
    Ok(())
}

/// Tries, in the scratch directory `dir` (made and removed), what an unprivileged overlay
/// root on an idmapped lower layer needs: the idmapped mount, the overlay on
/// it, owners seen moved, and a copy-up. Leaves nothing behind.
fn probe_idmapped_overlay(dir: &Path) -> Result<(), StorageError> {
    const BASE: u32 = 3_000_000;
    let s = dir;
    // What a daemon killed mid-probe left.
    release(&s.join("inst"))?;
    if !fsutil::mounts_under(s).is_empty() {
        return Err(StorageError::Unmount {
            path: s.to_path_buf(),
            source: nix::Error::EBUSY,
        });
    }
    fsutil::remove_tree(s).map_err(io_err(s))?;
    std::fs::create_dir_all(s).map_err(io_err(s))?;
    let image = s.join("image");
    std::fs::create_dir_all(image.join("etc")).map_err(io_err(&image))?;
    let f = image.join("etc/probe");
    std::fs::write(&f, "x").map_err(io_err(&f))?;
    let inst = s.join("inst");
    std::fs::create_dir_all(&inst).map_err(io_err(&inst))?;
    let result = (|| {
        let root = prepare_overlay(&inst, &image, Some((BASE, 65536)), None)?;
        let probe = root.join("etc/probe");
        let m = std::fs::metadata(&probe).map_err(io_err(&probe))?;
        if m.uid() != BASE || m.gid() != BASE {
            return Err(StorageError::Io {
                path: probe,
                source: std::io::Error::other(format!(
                    "owned by {}:{} through the idmapped overlay, not {BASE}:{BASE}",
                    m.uid(),
                    m.gid()
                )),
            });
        }
        // A write copies the file up into the instance's own layer.
        std::fs::write(&probe, "y").map_err(io_err(&probe))?;
        Ok(())
    })();
    let cleanup = release(&inst).and_then(|()| {
        if fsutil::mounts_under(s).is_empty() {
            fsutil::remove_tree(s).map_err(io_err(s))
        } else {
            Ok(())
        }
    });
    result.and(cleanup)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: fsutil::CopyLimits = fsutil::CopyLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    #[test]
    fn leftover_copies_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("i1");
        std::fs::create_dir_all(inst.join("rootfs.tmp/etc")).unwrap();
        std::fs::create_dir_all(inst.join("rootfs")).unwrap();
        let removed = Storage::remove_leftovers(dir.path());
        assert_eq!(removed, vec![inst.join("rootfs.tmp")]);
        assert!(!inst.join("rootfs.tmp").exists());
        assert!(inst.join("rootfs").exists());
    }

    #[test]
    fn copy_root_prepare_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/hostname"), "x").unwrap();
        let inst = dir.path().join("inst");
        std::fs::create_dir_all(&inst).unwrap();
        let root = prepare_copy(&inst, &lower, LIMITS).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "x"
        );
        // idempotent
        prepare_copy(&inst, &lower, LIMITS).unwrap();
        release(&inst).unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn mountinfo_unescape() {
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/definitely/not/mounted")));
    }
}
