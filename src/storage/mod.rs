//! Instance roots: a writable overlay over the cached image, or a full copy of
//! it where overlayfs is unavailable. Picked once at start-up. The overlay of an
//! unprivileged instance sits on the image seen through an idmapped mount
//! ([`idmap`]) where the kernel allows it, else on an id-shifted copy of the
//! image (made by the image cache).

pub mod btrfs;
pub mod ephemeral;
pub mod idmap;
mod layer;
pub mod quota;

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
    #[error("{0} is not on a btrfs filesystem ([corral] storage = btrfs)")]
    NotBtrfs(PathBuf),
    #[error("btrfs pool: {0}")]
    Btrfs(String),
    #[error("project quota: {0}")]
    Quota(String),
    #[error("project quotas unavailable ([corral] root_disk_limit = project): {0}")]
    NoProjectQuota(String),
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
    Btrfs,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Overlay => "overlay",
            StorageKind::Copy => "copy",
            StorageKind::Btrfs => "btrfs",
        }
    }
}

/// The storage backend, picked once.
#[derive(Debug, Clone)]
pub struct Storage {
    pub kind: StorageKind,
    /// Overlay roots of unprivileged instances sit on an idmapped mount of
    /// the unshifted image (no copy per id range); on a btrfs pool, their
    /// subvolumes are mounted idmapped.
    pub idmapped: bool,
    /// The directory whose filesystem holds the roots (the state path).
    pub pool: PathBuf,
    /// Overlay root disks are project quotas on the upper directories
    /// ([`quota`]), not loop-mounted layer files.
    pub project_quota: bool,
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

/// The size of the filesystem holding the roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCapacity {
    pub total_bytes: u64,
    /// What unprivileged writers may still use.
    pub available_bytes: u64,
}

/// The capacity of the pool at `pool` (the state path: every backend keeps
/// its roots, layer files, quota directories or subvolumes on its
/// filesystem), not of the host's root filesystem. None when it cannot be
/// read.
pub fn pool_capacity(pool: &Path) -> Option<PoolCapacity> {
    let s = nix::sys::statvfs::statvfs(pool).ok()?;
    let frag = s.fragment_size();
    Some(PoolCapacity {
        total_bytes: s.blocks().saturating_mul(frag),
        available_bytes: s.blocks_available().saturating_mul(frag),
    })
}

/// Bind-mounts `src` on `dst`.
pub(crate) fn bind(src: &Path, dst: &Path) -> Result<(), StorageError> {
    nix::mount::mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(
        |source| StorageError::Mount {
            path: dst.to_path_buf(),
            source,
        },
    )
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
    /// Subvolumes on the btrfs filesystem of the state path.
    Btrfs,
}

impl std::str::FromStr for StorageChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<StorageChoice, String> {
        match s {
            "auto" => Ok(StorageChoice::Auto),
            "overlay" => Ok(StorageChoice::Overlay),
            "copy" => Ok(StorageChoice::Copy),
            "btrfs" => Ok(StorageChoice::Btrfs),
            _ => Err("must be auto, overlay, copy or btrfs".into()),
        }
    }
}

impl Storage {
    /// Picks how roots are made. `pool`: the directory whose filesystem
    /// holds them (the state path; a btrfs pool must be btrfs). `probe_dir`
    /// (a scratch directory on the instances' filesystem, made and removed)
    /// is where the idmapped root is tried once; a failure is logged and
    /// means id-shifted copies.
    pub fn select(
        choice: StorageChoice,
        idmap: IdmapChoice,
        pool: &Path,
        probe_dir: &Path,
    ) -> Result<Storage, StorageError> {
        let kind = match choice {
            StorageChoice::Btrfs => {
                btrfs::open_pool(pool)?;
                for p in btrfs::sweep_images(pool) {
                    tracing::info!(subvolume = %p.display(), "image subvolume of a deleted image removed");
                }
                StorageKind::Btrfs
            }
            StorageChoice::Copy => StorageKind::Copy,
            StorageChoice::Overlay if overlay_available() => StorageKind::Overlay,
            StorageChoice::Overlay => return Err(StorageError::NoOverlay),
            StorageChoice::Auto if overlay_available() => StorageKind::Overlay,
            StorageChoice::Auto => StorageKind::Copy,
        };
        let probe: fn(&Path) -> Result<(), StorageError> = match kind {
            StorageKind::Overlay => probe_idmapped_overlay,
            StorageKind::Btrfs => btrfs::probe_idmapped,
            StorageKind::Copy => |_| Ok(()),
        };
        let idmapped = kind != StorageKind::Copy
            && idmap == IdmapChoice::Auto
            && match probe(probe_dir) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "idmapped roots unavailable: unprivileged roots use id-shifted image copies");
                    false
                }
            };
        Ok(Storage {
            kind,
            idmapped,
            pool: pool.to_path_buf(),
            project_quota: false,
        })
    }

    /// Picks how an overlay root's size is enforced (`[corral]
    /// root_disk_limit`): a project quota where the pool's filesystem
    /// enforces them (`auto`, `project`), else a layer file.
    pub fn with_root_disk(
        mut self,
        choice: quota::RootDiskChoice,
    ) -> Result<Storage, StorageError> {
        if self.kind != StorageKind::Overlay || choice == quota::RootDiskChoice::Loop {
            return Ok(self);
        }
        match quota::probe_overlay(&self.pool, &self.pool.join(".quota-probe")) {
            Ok(()) => self.project_quota = true,
            Err(why) if choice == quota::RootDiskChoice::Project => {
                return Err(StorageError::NoProjectQuota(why))
            }
            Err(why) => {
                tracing::info!(reason = %why, "root disks are loop-mounted layer files")
            }
        }
        Ok(self)
    }

    /// How root disk sizes are enforced: `project_quota`, `loop_file` (an
    /// overlay's upper layer or a copy pool's whole copy on a loop-mounted
    /// file), or `qgroup`.
    pub fn root_disk(&self) -> &'static str {
        match self.kind {
            StorageKind::Overlay if self.project_quota => "project_quota",
            StorageKind::Overlay | StorageKind::Copy => "loop_file",
            StorageKind::Btrfs => "qgroup",
        }
    }

    /// A backend without idmapped roots (tests, tools).
    pub fn plain(kind: StorageKind) -> Storage {
        Storage {
            kind,
            idmapped: false,
            pool: PathBuf::new(),
            project_quota: false,
        }
    }

    /// Where the daemon writes into an instance's fresh root, and the host
    /// id the instance's root has there (`root_id` through the root's mount).
    /// An idmapped btrfs root is written in its subvolume, with the image's
    /// own ids: the daemon's root has no id in the mount's mapping.
    pub fn root_for_writes(&self, instance_dir: &Path, root_id: u32) -> (PathBuf, u32) {
        if self.kind == StorageKind::Btrfs && btrfs::is_idmapped_root(instance_dir) {
            (instance_dir.join(btrfs::SUBVOL), 0)
        } else {
            (Self::rootfs(instance_dir), root_id)
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
    /// `disk` (bytes): the writable layer (a copy pool's whole copy) lives on
    /// a filesystem of that size of its own (a loop-mounted ext4 file in the
    /// instance directory), so writes past it fail with ENOSPC.
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
        let pool = self.pool.clone();
        let project_quota = self.project_quota;
        let (full_idmap, idmapped) = (idmap, self.idmapped);
        let idmap = idmap.filter(|_| self.idmapped);
        tokio::task::spawn_blocking(move || match kind {
            StorageKind::Overlay => prepare_overlay(&dir, &lower, idmap, disk, project_quota),
            StorageKind::Copy => prepare_copy(&dir, &lower, disk, limits),
            StorageKind::Btrfs => btrfs::prepare(&pool, &dir, &lower, full_idmap, idmapped, disk),
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

    /// Removes the instance's snapshots (a btrfs pool's are read-only
    /// subvolumes, which a removal of the files cannot reach). Before the
    /// instance directory is removed.
    pub async fn release_snapshots(&self, instance_dir: &Path) -> Result<(), StorageError> {
        let dir = instance_dir.to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::remove_all(&dir))
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
    project_quota: bool,
) -> Result<PathBuf, StorageError> {
    let rootfs = Storage::rootfs(dir);
    if is_mounted(&rootfs) {
        return Ok(rootfs);
    }
    // A root disk made as a layer file stays one.
    let quota_bytes = disk.filter(|_| project_quota && !layer::has_disk(dir));
    let disk = disk.filter(|_| quota_bytes.is_none());
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
    if let Some(bytes) = quota_bytes {
        // Again at every mount: a restored upper is a tree made without it.
        quota::apply(dir, &[upper.clone(), work.clone()], bytes)?;
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
    disk: Option<u64>,
    limits: fsutil::CopyLimits,
) -> Result<PathBuf, StorageError> {
    let rootfs = Storage::rootfs(dir);
    if is_mounted(&rootfs) {
        return Ok(rootfs);
    }
    // With a root disk the copy lives on it (`layer/rootfs`), bind-mounted
    // at `rootfs`: what the instance writes past its size fails with ENOSPC.
    let base = match disk {
        Some(bytes) => Some(layer::mount(dir, bytes)?),
        None if layer::has_disk(dir) => Some(layer::mount(dir, 0)?),
        None => None,
    };
    let Some(base) = base else {
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        copy_root(lower, dir, &rootfs, limits)?;
        return Ok(rootfs);
    };
    // A restore a host reboot cut short, on a disk unmounted at start-up.
    snapshot::settle_disk(&base)?;
    let state = base.join("rootfs");
    if !state.is_dir() {
        copy_root(lower, &base, &state, limits)?;
    }
    std::fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
    bind(&state, &rootfs)?;
    Ok(rootfs)
}

/// Copies `lower` to `dest` through `<base>/rootfs.tmp` (renamed into place
/// when whole, removed on error).
fn copy_root(
    lower: &Path,
    base: &Path,
    dest: &Path,
    limits: fsutil::CopyLimits,
) -> Result<(), StorageError> {
    let tmp = base.join("rootfs.tmp");
    fsutil::remove_tree(&tmp).map_err(io_err(&tmp))?;
    if let Err(e) = fsutil::copy_tree(lower, &tmp, 0, limits) {
        let _ = fsutil::remove_tree(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}

fn release(dir: &Path) -> Result<(), StorageError> {
    release_root(dir)?;
    quota::release(dir)
}

fn release_root(dir: &Path) -> Result<(), StorageError> {
    unmount(&Storage::rootfs(dir))?;
    btrfs::delete_subvolume(&dir.join(btrfs::SUBVOL))?;
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
        btrfs::IDMAPPED_MARK,
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
        let root = prepare_overlay(&inst, &image, Some((BASE, 65536)), None, false)?;
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
        let root = prepare_copy(&inst, &lower, None, LIMITS).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "x"
        );
        // idempotent
        prepare_copy(&inst, &lower, None, LIMITS).unwrap();
        release(&inst).unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn storage_choices_parse() {
        for (text, want) in [
            ("auto", StorageChoice::Auto),
            ("overlay", StorageChoice::Overlay),
            ("copy", StorageChoice::Copy),
            ("btrfs", StorageChoice::Btrfs),
        ] {
            assert_eq!(text.parse::<StorageChoice>().unwrap(), want);
        }
        for bad in ["", "zfs", "BTRFS", "btrfs "] {
            let err = bad.parse::<StorageChoice>().unwrap_err();
            assert!(err.contains("btrfs"), "{bad}: {err}");
        }
        assert_eq!(StorageKind::Btrfs.as_str(), "btrfs");
    }

    #[test]
    fn idmapped_btrfs_roots_are_written_in_their_subvolume() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path();
        let s = Storage::plain(StorageKind::Btrfs);
        assert_eq!(s.root_for_writes(inst, 7), (inst.join("rootfs"), 7));
        std::fs::write(inst.join(btrfs::IDMAPPED_MARK), "").unwrap();
        assert_eq!(s.root_for_writes(inst, 7), (inst.join("subvol"), 0));
        let o = Storage::plain(StorageKind::Overlay);
        assert_eq!(o.root_for_writes(inst, 7), (inst.join("rootfs"), 7));
    }

    #[test]
    fn pool_capacity_is_the_filesystem_of_the_path() {
        let d = tempfile::tempdir().unwrap();
        let c = pool_capacity(d.path()).unwrap();
        assert!(
            c.total_bytes > 0 && c.available_bytes <= c.total_bytes,
            "{c:?}"
        );
        assert_eq!(pool_capacity(&d.path().join("missing")), None);
    }

    #[test]
    fn mountinfo_unescape() {
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/definitely/not/mounted")));
    }
}
