//! What instances' disks really take on the host: the blocks allocated to
//! their sparse disk files (root disk `layer.img`, ephemeral disk
//! `ephemeral.img`) against the sizes those files may grow to, and the
//! blocks of what is not bounded by a disk file (a `copy` pool's root, an
//! overlay's upper layer beside the instance, snapshots).
//!
//! A pool that keeps instances elsewhere (a btrfs subvolume, a project quota)
//! adds its own case to [`instance`]: provisioned = its bound, allocated =
//! what it holds.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{ephemeral, layer};

/// One instance's disks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InstanceUsage {
    /// Sizes of its disk files (what they may grow to).
    pub provisioned_bytes: u64,
    /// Blocks its disk files and its unbounded trees hold.
    pub allocated_bytes: u64,
}

impl InstanceUsage {
    /// What its disk files may still take: provisioned, not yet allocated.
    pub fn growth_bytes(&self) -> u64 {
        self.provisioned_bytes.saturating_sub(self.allocated_bytes)
    }
}

/// The disks of all instances under an instances directory, and the
/// filesystem holding them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskUsage {
    /// Size of the filesystem holding the state path.
    pub total_bytes: u64,
    /// Free on it, as an unprivileged writer sees it.
    pub free_bytes: u64,
    /// Sum over the instances.
    pub provisioned_bytes: u64,
    pub allocated_bytes: u64,
    /// What the instances' disk files may still grow into (Nova's
    /// over-committed disk size).
    pub growth_bytes: u64,
    pub instances: BTreeMap<String, InstanceUsage>,
}

impl DiskUsage {
    /// Nova's `disk_available_least`: the free space once every disk file
    /// has grown to its size, in whole GiB (negative: over-committed).
    pub fn available_least_gb(&self) -> i64 {
        (self.free_bytes as i64 - self.growth_bytes as i64).div_euclid(1 << 30)
    }
}

/// Blocks a file or tree holds (hard links counted once per walk).
fn allocated(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
        return 0;
    }
    let own = m.blocks() * 512;
    if !m.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| allocated(&e.path(), seen)).sum())
        .unwrap_or(0)
}

/// One instance's disks, from its directory. Mounted filesystems under it
/// (the root disk, the ephemeral disk, the overlay root, an idmapped image)
/// are not walked: their files are counted as the blocks of their disk file.
pub fn instance(dir: &Path) -> InstanceUsage {
    instance_among(dir, &crate::fsutil::mount_point_set())
}

/// [`instance`], with the host's mount points read once by the caller: the
/// mount table grows with the instances, so reading it per instance made a
/// scan quadratic.
fn instance_among(dir: &Path, mounts: &HashSet<PathBuf>) -> InstanceUsage {
    let mut u = InstanceUsage::default();
    let mut seen = Default::default();
    for file in [dir.join(layer::IMAGE), ephemeral::image(dir)] {
        if let Ok(m) = std::fs::metadata(&file) {
            u.provisioned_bytes += m.len();
            u.allocated_bytes += m.blocks() * 512;
        }
    }
    // Unbounded: a copy root, an upper layer beside the instance, snapshots.
    for tree in ["rootfs", "upper", "snapshots"] {
        let p = dir.join(tree);
        if !mounts.contains(&p) {
            u.allocated_bytes += allocated(&p, &mut seen);
        }
    }
    u
}

/// The disks of every instance under `instances_dir` (one directory per
/// instance) and the filesystem holding `state_path`.
pub fn scan(instances_dir: &Path, state_path: &Path) -> DiskUsage {
    let mut d = DiskUsage::default();
    if let Ok(s) = nix::sys::statvfs::statvfs(state_path) {
        d.total_bytes = s.blocks() * s.fragment_size();
        d.free_bytes = s.blocks_available() * s.fragment_size();
    }
    let Ok(entries) = std::fs::read_dir(instances_dir) else {
        return d;
    };
    let mounts = crate::fsutil::mount_point_set();
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let u = instance_among(&e.path(), &mounts);
        d.provisioned_bytes += u.provisioned_bytes;
        d.allocated_bytes += u.allocated_bytes;
        d.growth_bytes += u.growth_bytes();
        d.instances
            .insert(e.file_name().to_string_lossy().into_owned(), u);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_disk_files_count_their_blocks_and_their_sizes() {
        let t = tempfile::tempdir().unwrap();
        let inst = t.path().join("i1");
        std::fs::create_dir_all(inst.join("snapshots/s1/state")).unwrap();
        // A 1 GiB sparse root disk with 4 MiB written, and a snapshot file.
        let f = std::fs::File::create(inst.join(layer::IMAGE)).unwrap();
        f.set_len(1 << 30).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![1u8; 4 << 20], 0).unwrap();
        f.sync_all().unwrap();
        std::fs::write(inst.join("snapshots/s1/state/data"), vec![2u8; 1 << 20]).unwrap();
        // A hard link is counted once.
        std::fs::hard_link(
            inst.join("snapshots/s1/state/data"),
            inst.join("snapshots/s1/state/link"),
        )
        .unwrap();
        let u = instance(&inst);
        assert_eq!(u.provisioned_bytes, 1 << 30);
        assert!(
            (5 << 20..6 << 20).contains(&u.allocated_bytes),
            "{}",
            u.allocated_bytes
        );
        assert_eq!(u.growth_bytes(), (1 << 30) - u.allocated_bytes);
        let d = scan(t.path(), t.path());
        assert_eq!(d.instances.len(), 1);
        assert_eq!(d.growth_bytes, u.growth_bytes());
        assert!(d.total_bytes > 0 && d.free_bytes <= d.total_bytes);
        assert_eq!(
            d.available_least_gb(),
            (d.free_bytes as i64 - d.growth_bytes as i64).div_euclid(1 << 30)
        );
        // Nothing there: nothing used.
        assert_eq!(scan(&t.path().join("none"), t.path()).instances.len(), 0);
    }

    /// The mount table grows with the instances: a scan reads it once, not
    /// once per instance and tree (which made a pass at 250 instances cost
    /// seconds of CPU).
    #[test]
    fn a_scan_reads_the_mount_table_once() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir_all(t.path().join(format!("i{i}/upper"))).unwrap();
        }
        let before = crate::fsutil::MOUNT_TABLE_READS.with(|n| n.get());
        let d = scan(t.path(), t.path());
        let reads = crate::fsutil::MOUNT_TABLE_READS.with(|n| n.get()) - before;
        assert_eq!(d.instances.len(), 5);
        assert_eq!(reads, 1);
    }
}
