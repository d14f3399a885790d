//! Disk and filesystem images: the root filesystem of a squashfs, a raw disk
//! (MBR or GPT partition table, or a bare filesystem) or a qcow2 image is
//! found, mounted read-only from a loop device and copied into the cache.
//!
//! The image is hostile. Partition tables are parsed here, bounds-checked (a
//! partition past the end of the image is refused); only filesystems of known
//! types are mounted, each with an explicit type, `ro,nosuid,nodev,noexec`,
//! from a read-only loop device with the partition's offset and size limit;
//! the copy is [`fsutil::copy_tree`]'s (links never followed, owners kept,
//! special files skipped, bounded). Every mount is unmounted and its loop
//! device detached, on error too. qcow2 images go through `qemu-img`: any
//! backing file or external data file is refused before `qemu-img` opens the
//! image, then again from `qemu-img info`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::format::{self, FsType};
use crate::fsutil;

/// Sector size of partition tables (corral reads 512-byte sector tables only).
const SECTOR: u64 = 512;
/// Most GPT partition entries looked at.
const MAX_GPT_ENTRIES: u32 = 256;
/// Longest text of a tool's output that goes into an error.
const MAX_TOOL_TEXT: usize = 300;
/// Address space and CPU seconds `qemu-img info` may use on an image from a
/// tenant (the limits nova's own `QEMU_IMG_LIMITS` set: a crafted header can
/// make the parser allocate or loop without end).
const QEMU_IMG_INFO_AS: u64 = 1 << 30;
const QEMU_IMG_INFO_CPU_SECS: u64 = 30;

/// Why a disk image was refused.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot read disk image {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("partition {index} ({start}+{len} bytes) runs past the end of the {size}-byte image")]
    PastEnd {
        index: usize,
        start: u64,
        len: u64,
        size: u64,
    },
    #[error("bad GPT partition table: {0}")]
    BadGpt(&'static str),
    #[error(
        "no root filesystem found: no partition or filesystem holds /etc/os-release or \
         /sbin/init{0}"
    )]
    NoRoot(String),
    #[error("qcow2 image refused: {0}")]
    Qcow2(String),
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("image copy refused: {0}")]
    Copy(#[from] fsutil::CopyError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A byte range of an image that may hold a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Checks one partition against the image's size.
fn region(index: usize, start_lba: u64, sectors: u64, size: u64) -> Result<Region, DiskError> {
    let start = start_lba.checked_mul(SECTOR);
    let len = sectors.checked_mul(SECTOR);
    match (start, len) {
        (Some(s), Some(l)) if s.checked_add(l).is_some_and(|end| end <= size) && l > 0 => {
            Ok(Region { offset: s, len: l })
        }
        _ => Err(DiskError::PastEnd {
            index,
            start: start.unwrap_or(u64::MAX),
            len: len.unwrap_or(u64::MAX),
            size,
        }),
    }
}

/// The partitions of a disk image with an MBR (and maybe GPT) table, or the
/// whole image when it has none. Extended (logical) MBR partitions are not
/// looked at.
pub fn regions(path: &Path) -> Result<Vec<Region>, DiskError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let head = format::read_head(&mut f).map_err(io_err(path))?;
    let whole = Region {
        offset: 0,
        len: size,
    };
    if format::filesystem_of(&head).is_some() || head.get(510..512) != Some(&[0x55, 0xaa]) {
        return Ok(vec![whole]);
    }
    let mut out = Vec::new();
    let mut gpt = false;
    for i in 0..4 {
        let e = &head[446 + i * 16..446 + (i + 1) * 16];
        let kind = e[4];
        let (start, sectors) = (u32_at(e, 8) as u64, u32_at(e, 12) as u64);
        match kind {
            0 => continue,
            0xee => gpt = true,
            0x05 | 0x0f | 0x85 => continue,
            _ => out.push(region(i + 1, start, sectors, size)?),
        }
    }
    if gpt {
        return gpt_regions(&mut f, path, size);
    }
    Ok(out)
}

/// The partitions of a GPT table (at LBA 1).
fn gpt_regions(f: &mut File, path: &Path, size: u64) -> Result<Vec<Region>, DiskError> {
    let mut hdr = [0u8; 92];
    f.seek(SeekFrom::Start(SECTOR)).map_err(io_err(path))?;
    f.read_exact(&mut hdr)
        .map_err(|_| DiskError::BadGpt("the header runs past the end of the image"))?;
    if &hdr[0..8] != b"EFI PART" {
        return Err(DiskError::BadGpt("no \"EFI PART\" signature at LBA 1"));
    }
    let entries_lba = u64_at(&hdr, 72);
    let count = u32_at(&hdr, 80);
    let entry_size = u32_at(&hdr, 84);
    if !(128..=4096).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return Err(DiskError::BadGpt("partition entry size out of range"));
    }
    if count > MAX_GPT_ENTRIES {
        return Err(DiskError::BadGpt("too many partition entries"));
    }
    let table_len = count as u64 * entry_size as u64;
    let table_start = entries_lba
        .checked_mul(SECTOR)
        .filter(|s| s.checked_add(table_len).is_some_and(|e| e <= size))
        .ok_or(DiskError::BadGpt(
            "the partition entries run past the end of the image",
        ))?;
    let mut table = vec![0u8; table_len as usize];
    f.seek(SeekFrom::Start(table_start)).map_err(io_err(path))?;
    f.read_exact(&mut table).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, e) in table.chunks(entry_size as usize).enumerate() {
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let (first, last) = (u64_at(e, 32), u64_at(e, 40));
        if last < first {
            return Err(DiskError::BadGpt("a partition ends before it starts"));
        }
        out.push(region(i + 1, first, last - first + 1, size)?);
    }
    Ok(out)
}

/// Runs a tool; its stderr goes into the error.
fn run(tool: &'static str, cmd: &mut Command) -> Result<Vec<u8>, DiskError> {
    let out = cmd.output().map_err(|e| DiskError::Tool {
        tool,
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            tool,
            message: crate::text::printable(
                String::from_utf8_lossy(&out.stderr).trim(),
                MAX_TOOL_TEXT,
            ),
        });
    }
    Ok(out.stdout)
}

/// A read-only mount of one region of an image file through a loop device,
/// unmounted (and its directory removed) when dropped. mount(8) makes the
/// loop device read-only (the mount is `ro`) and with autoclear: it is
/// detached with the unmount, also when a daemon killed mid-copy has its
/// leftover mount detached lazily at the next start, and by mount(8) itself
/// when the mount fails.
struct Mount(PathBuf);

impl Mount {
    fn new(image: &Path, r: Region, fs: FsType, at: &Path) -> Result<Mount, DiskError> {
        std::fs::create_dir(at).map_err(io_err(at))?;
        let mut opts = format!(
            "ro,nosuid,nodev,noexec,loop,offset={},sizelimit={}",
            r.offset, r.len
        );
        match fs {
            // a journal left dirty is not replayed (the device is read-only)
            FsType::Ext4 => opts.push_str(",noload"),
            FsType::Xfs => opts.push_str(",norecovery"),
            FsType::Btrfs | FsType::Squashfs => {}
        }
        let res = run(
            "mount",
            Command::new("mount")
                .args(["-t", fs.kernel_name(), "-o", &opts])
                .arg(image)
                .arg(at),
        );
        if let Err(e) = res {
            let _ = std::fs::remove_dir(at);
            return Err(e);
        }
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = run("umount", Command::new("umount").arg(&self.0)) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot unmount, detaching lazily");
            let _ = run("umount", Command::new("umount").arg("-l").arg(&self.0));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Whether the tree at `root` looks like an operating system's root.
fn is_root(root: &Path) -> bool {
    fsutil::exists_in_root(root, "etc/os-release") || fsutil::exists_in_root(root, "sbin/init")
}

/// Finds the root filesystem on the raw disk or filesystem image `image`,
/// and copies it to `dest` (which must not exist). `scratch` is a directory
/// for mount points. Partitions are tried in table order; the first with
/// `/etc/os-release` or `/sbin/init` is the root.
pub fn copy_root(
    image: &Path,
    dest: &Path,
    scratch: &Path,
    limits: fsutil::CopyLimits,
) -> Result<fsutil::CopyStats, DiskError> {
    let mut skipped = Vec::new();
    for r in regions(image)? {
        let mut head = Vec::new();
        let mut f = File::open(image).map_err(io_err(image))?;
        f.seek(SeekFrom::Start(r.offset)).map_err(io_err(image))?;
        (&mut f)
            .take(r.len.min(0x10048))
            .read_to_end(&mut head)
            .map_err(io_err(image))?;
        let Some(fs) = format::filesystem_of(&head) else {
            continue;
        };
        let at = scratch.join(format!(".mnt-{}", uuid::Uuid::new_v4().simple()));
        let mnt = match Mount::new(image, r, fs, &at) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(offset = r.offset, error = %e, "partition not mountable, skipped");
                skipped.push(format!("{} at byte {}: {e}", fs.kernel_name(), r.offset));
                continue;
            }
        };
        if !is_root(&mnt.0) {
            continue;
        }
        let stats = fsutil::copy_tree(&mnt.0, dest, 0, limits);
        drop(mnt);
        return Ok(stats?);
    }
    let why = if skipped.is_empty() {
        String::new()
    } else {
        format!(" (not mountable: {})", skipped.join("; "))
    };
    Err(DiskError::NoRoot(crate::text::printable(
        &why,
        MAX_TOOL_TEXT,
    )))
}

/// Checks a qcow2 header before any tool reads it: no backing file, no
/// external data file.
fn check_qcow2_header(path: &Path) -> Result<(), DiskError> {
    let mut h = [0u8; 104];
    let mut f = File::open(path).map_err(io_err(path))?;
    let n = f.read(&mut h).map_err(io_err(path))?;
    if n < 72 || &h[0..4] != b"QFI\xfb" {
        return Err(DiskError::Qcow2("truncated or not a qcow2 header".into()));
    }
    let be64 = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[o..o + 8]);
        u64::from_be_bytes(a)
    };
    let version = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if version != 2 && version != 3 {
        return Err(DiskError::Qcow2(format!(
            "not a qcow2 image (header version {version})"
        )));
    }
    if be64(8) != 0 {
        return Err(DiskError::Qcow2("it has a backing file".into()));
    }
    if version >= 3 {
        if n < 80 {
            return Err(DiskError::Qcow2("truncated version 3 header".into()));
        }
        // incompatible feature bit 2: an external data file
        if be64(72) & 0b100 != 0 {
            return Err(DiskError::Qcow2("it has an external data file".into()));
        }
    }
    Ok(())
}

/// Sets resource limits on a tool's process before it runs.
fn limited(cmd: &mut Command, address_space: u64, cpu_secs: u64) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (resource, value) in [
                (libc::RLIMIT_AS, address_space),
                (libc::RLIMIT_CPU, cpu_secs),
            ] {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// Converts the qcow2 image `src` to the raw file `dest` (sparse), after
/// checking it: qcow2 by `qemu-img info` (run with nova's resource limits),
/// no backing file, no external data file, and a virtual size of at most
/// `max_bytes`: the raw disk is written in full, and compressed clusters
/// would otherwise let a small upload fill the host's disk. `dest` is
/// removed on error.
pub fn qcow2_to_raw(src: &Path, dest: &Path, max_bytes: u64) -> Result<(), DiskError> {
    check_qcow2_header(src)?;
    let info = run(
        "qemu-img",
        limited(
            Command::new("qemu-img")
                .args(["info", "--output=json", "-f", "qcow2"])
                .arg(src),
            QEMU_IMG_INFO_AS,
            QEMU_IMG_INFO_CPU_SECS,
        ),
    )?;
    let info: serde_json::Value = serde_json::from_slice(&info)
        .map_err(|e| DiskError::Qcow2(format!("qemu-img info gave bad JSON: {e}")))?;
    if info.get("format").and_then(|v| v.as_str()) != Some("qcow2") {
        return Err(DiskError::Qcow2(
            "qemu-img does not read it as qcow2".into(),
        ));
    }
    if info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some() {
        return Err(DiskError::Qcow2("it has a backing file".into()));
    }
    if info.pointer("/format-specific/data/data-file").is_some() {
        return Err(DiskError::Qcow2("it has an external data file".into()));
    }
    check_virtual_size(&info, max_bytes)?;
    let res = run(
        "qemu-img",
        Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(src)
            .arg(dest),
    );
    if res.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    res.map(|_| ())
}

/// The virtual size `qemu-img info` reports, at most `max_bytes`.
fn check_virtual_size(info: &serde_json::Value, max_bytes: u64) -> Result<u64, DiskError> {
    let size = info
        .get("virtual-size")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| DiskError::Qcow2("qemu-img info gives no virtual size".into()))?;
    if size > max_bytes {
        return Err(DiskError::Qcow2(format!(
            "its virtual size ({size} bytes) is over max_image_bytes ({max_bytes})"
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        for (i, (kind, start, len)) in entries.iter().enumerate() {
            let e = 446 + i * 16;
            d[e + 4] = *kind;
            d[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            d[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xaa;
        d
    }

    fn regions_of(bytes: &[u8]) -> Result<Vec<Region>, DiskError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk");
        std::fs::write(&p, bytes).unwrap();
        regions(&p)
    }

    #[test]
    fn mbr_partitions_are_bounds_checked() {
        let r = regions_of(&mbr(&[(0x83, 2, 4), (0x05, 6, 2)])).unwrap();
        assert_eq!(
            r,
            vec![Region {
                offset: 1024,
                len: 2048
            }]
        );
        let e = regions_of(&mbr(&[(0x83, 2, 100)])).unwrap_err();
        assert!(matches!(e, DiskError::PastEnd { index: 1, .. }), "{e}");
        let e = regions_of(&mbr(&[(0x83, u32::MAX, u32::MAX)])).unwrap_err();
        assert!(matches!(e, DiskError::PastEnd { .. }), "{e}");
    }

    #[test]
    fn gpt_partitions_are_bounds_checked() {
        let mut d = mbr(&[(0xee, 1, 7)]);
        d.resize(16 * 1024, 0);
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let entry = |d: &mut Vec<u8>, i: usize, first: u64, last: u64| {
            let e = 1024 + i * 128;
            d[e] = 1;
            d[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
            d[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
        };
        entry(&mut d, 1, 8, 31);
        assert_eq!(
            regions_of(&d).unwrap(),
            vec![Region {
                offset: 4096,
                len: 24 * 512
            }]
        );
        entry(&mut d, 2, 8, 32);
        assert!(matches!(
            regions_of(&d).unwrap_err(),
            DiskError::PastEnd { index: 3, .. }
        ));
        // the entry array itself past the end
        d[512 + 72..512 + 80].copy_from_slice(&1000u64.to_le_bytes());
        assert!(matches!(regions_of(&d).unwrap_err(), DiskError::BadGpt(_)));
    }

    #[test]
    fn qcow2_headers_with_external_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q");
        let mut h = vec![0u8; 104];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[7] = 3;
        std::fs::write(&p, &h).unwrap();
        check_qcow2_header(&p).unwrap();
        h[15] = 200;
        std::fs::write(&p, &h).unwrap();
        assert!(check_qcow2_header(&p)
            .unwrap_err()
            .to_string()
            .contains("backing"));
        h[15] = 0;
        h[79] = 4;
        std::fs::write(&p, &h).unwrap();
        assert!(check_qcow2_header(&p)
            .unwrap_err()
            .to_string()
            .contains("data file"));
    }

    #[test]
    fn a_virtual_size_over_the_image_limit_is_refused() {
        let info = serde_json::json!({"format": "qcow2", "virtual-size": 9u64 << 30});
        let e = check_virtual_size(&info, 8 << 30).unwrap_err().to_string();
        assert!(e.contains("virtual size (9663676416 bytes)"), "{e}");
        assert!(e.contains("max_image_bytes"), "{e}");
        assert_eq!(check_virtual_size(&info, 9 << 30).unwrap(), 9 << 30);
        let e = check_virtual_size(&serde_json::json!({"format": "qcow2"}), 1 << 40)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no virtual size"), "{e}");
    }
}
