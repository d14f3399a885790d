//! Root disks as filesystem project quotas: where the state directory's
//! filesystem enforces project quotas (ext4 with the `project` feature
//! mounted `prjquota`, xfs mounted `pquota`), an overlay root's size is a
//! block limit on a project id of the instance's own, carried by its upper
//! and work directories (with `FS_XFLAG_PROJINHERIT`, so everything made in
//! them inherits it), instead of a loop-mounted layer file. Writes past it
//! fail inside with EDQUOT.
//!
//! The project id is kept in `<instance>/quota.projid`; the lowest id from
//! [`FIRST_PROJECT_ID`] that no instance holds is taken. Release clears the
//! id's limits and frees it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{io_err, StorageError};

/// Project ids corral hands out start here (ids below are the operator's,
/// e.g. `/etc/projid`).
pub const FIRST_PROJECT_ID: u32 = 2_000_000;
/// The project id of the start-up probe.
const PROBE_PROJECT_ID: u32 = FIRST_PROJECT_ID - 1;
/// The probe's limit, and what it tries to write.
const PROBE_LIMIT: u64 = 1 << 20;
const PROBE_WRITE: usize = 4 << 20;
/// The file holding an instance's project id.
pub const PROJID_FILE: &str = "quota.projid";

const PRJQUOTA: u32 = 2;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const Q_XGETQSTAT: u32 = (b'X' as u32) << 8 | 5;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
/// `_IOR('X', 31, struct fsxattr)` and `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;

/// How an overlay root's size is enforced (`[corral] root_disk_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RootDiskChoice {
    /// A project quota where the filesystem enforces them, else a layer file.
    Auto,
    /// Project quotas; start-up fails where the filesystem has none.
    Project,
    /// Always a loop-mounted layer file.
    Loop,
}

impl std::str::FromStr for RootDiskChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<RootDiskChoice, String> {
        match s {
            "auto" => Ok(RootDiskChoice::Auto),
            "project" => Ok(RootDiskChoice::Project),
            "loop" => Ok(RootDiskChoice::Loop),
            _ => Err("must be auto, project or loop".into()),
        }
    }
}

/// `struct if_dqblk` of `quotactl(2)`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskQuota {
    pub bhardlimit: u64,
    pub bsoftlimit: u64,
    pub curspace: u64,
    pub ihardlimit: u64,
    pub isoftlimit: u64,
    pub curinodes: u64,
    pub btime: u64,
    pub itime: u64,
    pub valid: u32,
}

/// `struct fsxattr` of `ioctl_xfs_fsgetxattr(2)`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

fn quotactl(fs: &File, cmd: u32, id: u32, addr: *mut libc::c_void) -> std::io::Result<()> {
    let qcmd = (cmd << 8) | (PRJQUOTA & 0xff);
    // SAFETY: `fs` is an open descriptor; `addr` points to a structure of
    // the size the command reads or writes (or is null when it takes none).
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fs.as_raw_fd(),
            qcmd as libc::c_uint,
            id as libc::c_int,
            addr,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_dir(path: &Path) -> Result<File, StorageError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(path))
}

fn quota_err(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Quota(format!("{what} on {}: {e}", path.display()))
}

/// Whether the filesystem holding `path` accounts and enforces project
/// quotas; why not, when it does not.
pub fn enforced(path: &Path) -> Result<(), String> {
    let dir = open_dir(path).map_err(|e| e.to_string())?;
    // `struct fs_quota_stat`; its flags are at offset 2.
    let mut buf = [0u64; 16];
    quotactl(&dir, Q_XGETQSTAT, 0, buf.as_mut_ptr().cast())
        .map_err(|e| format!("no quota state on {}: {e}", path.display()))?;
    let bytes: &[u8; 128] = bytemuck_u8(&buf);
    let flags = u16::from_ne_bytes([bytes[2], bytes[3]]);
    if flags & FS_QUOTA_PDQ_ACCT == 0 || flags & FS_QUOTA_PDQ_ENFD == 0 {
        return Err(format!(
            "project quotas are not enforced on {} (mount it with prjquota or pquota)",
            path.display()
        ));
    }
    Ok(())
}

/// Whether a project quota holds what is written through an overlay
/// mounted the way roots are (by the daemon, whose credentials overlayfs
/// writes with): in the scratch directory `dir` (made and removed) on the
/// pool, an upper directory under a 1 MiB project limit takes 4 MiB written
/// through an overlay, which must fail. A filesystem that exempts the
/// mounter's `CAP_SYS_RESOURCE` from quota limits lets it pass. Why not,
/// when it does not.
pub fn probe_overlay(pool: &Path, dir: &Path) -> Result<(), String> {
    enforced(pool)?;
    let merged = dir.join("merged");
    let clean = || -> Result<(), String> {
        super::unmount(&merged).map_err(|e| e.to_string())?;
        crate::fsutil::remove_tree(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        set_limit(pool, PROBE_PROJECT_ID, 0).map_err(|e| e.to_string())
    };
    clean()?;
    let result = (|| {
        let (lower, upper, work) = (dir.join("lower"), dir.join("upper"), dir.join("work"));
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        for d in [&upper, &work] {
            assign_tree(d, PROBE_PROJECT_ID).map_err(|e| e.to_string())?;
        }
        set_limit(pool, PROBE_PROJECT_ID, PROBE_LIMIT).map_err(|e| e.to_string())?;
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| format!("overlay at {}: {e}", merged.display()))?;
        let f = merged.join("fill");
        let mut file = File::create(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let chunk = vec![0x5au8; 64 << 10];
        let mut written = 0;
        let refused = loop {
            if written >= PROBE_WRITE {
                break file.sync_all().err();
            }
            if let Err(e) = std::io::Write::write_all(&mut file, &chunk) {
                break Some(e);
            }
            written += chunk.len();
        };
        match refused {
            Some(e) if matches!(e.raw_os_error(), Some(libc::EDQUOT | libc::ENOSPC)) => Ok(()),
            Some(e) => Err(format!("a write through the probe overlay failed: {e}")),
            None => Err(format!(
                "{PROBE_WRITE} bytes written through an overlay passed a {PROBE_LIMIT}-byte project quota on {} (the filesystem exempts the mounter's CAP_SYS_RESOURCE)",
                pool.display()
            )),
        }
    })();
    result.and(clean())
}

fn bytemuck_u8(buf: &[u64; 16]) -> &[u8; 128] {
    // SAFETY: [u64; 16] and [u8; 128] have the same size, and u8 has no
    // alignment or validity requirements.
    unsafe { &*(buf as *const [u64; 16]).cast::<[u8; 128]>() }
}

/// Sets the project id of the directory or file `f`, with inheritance for
/// a directory.
fn set_project(f: &File, path: &Path, id: u32) -> Result<(), StorageError> {
    let mut x = FsXattr::default();
    // SAFETY: `x` is a `struct fsxattr` the ioctl fills.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) } != 0 {
        return Err(quota_err(
            "FS_IOC_FSGETXATTR",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    let is_dir = f.metadata().map_err(io_err(path))?.is_dir();
    let xflags = if is_dir {
        x.xflags | FS_XFLAG_PROJINHERIT
    } else {
        x.xflags
    };
    if x.projid == id && x.xflags == xflags {
        return Ok(());
    }
    x.projid = id;
    x.xflags = xflags;
    // SAFETY: as above, read by the kernel.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR, &x as *const FsXattr) } != 0 {
        return Err(quota_err(
            "FS_IOC_FSSETXATTR",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Gives `root` and everything under it the project id (directories and
/// regular files: what holds blocks; links, devices and FIFOs keep theirs).
/// Needed for a tree made without it (a restored snapshot).
pub fn assign_tree(root: &Path, id: u32) -> Result<(), StorageError> {
    let f = open_dir(root)?;
    set_project(&f, root, id)?;
    let entries = std::fs::read_dir(root).map_err(io_err(root))?;
    for e in entries {
        let e = e.map_err(io_err(root))?;
        let p = e.path();
        let t = e.file_type().map_err(io_err(&p))?;
        if t.is_dir() {
            assign_tree(&p, id)?;
        } else if t.is_file() {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&p)
                .map_err(io_err(&p))?;
            set_project(&f, &p, id)?;
        }
    }
    Ok(())
}

/// The project's limits and use.
pub fn get(fs_path: &Path, id: u32) -> Result<DiskQuota, StorageError> {
    let dir = open_dir(fs_path)?;
    let mut q = DiskQuota::default();
    quotactl(&dir, Q_GETQUOTA, id, (&mut q as *mut DiskQuota).cast())
        .map_err(|e| quota_err("Q_GETQUOTA", fs_path, e))?;
    Ok(q)
}

/// Sets the project's block limit (`bytes`, rounded up to 1 KiB; 0: none).
pub fn set_limit(fs_path: &Path, id: u32, bytes: u64) -> Result<(), StorageError> {
    let dir = open_dir(fs_path)?;
    let kib = bytes.div_ceil(1024);
    let mut q = DiskQuota {
        bhardlimit: kib,
        bsoftlimit: kib,
        valid: QIF_BLIMITS | QIF_ILIMITS,
        ..DiskQuota::default()
    };
    quotactl(&dir, Q_SETQUOTA, id, (&mut q as *mut DiskQuota).cast())
        .map_err(|e| quota_err("Q_SETQUOTA", fs_path, e))
}

/// The instance's project id, if it has one.
pub fn project_of(instance_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(instance_dir.join(PROJID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One allocation at a time: two instances never take the same id.
static ALLOCATE: Mutex<()> = Mutex::new(());

/// The lowest id from [`FIRST_PROJECT_ID`] not in `taken`.
pub fn lowest_free(taken: &[u32]) -> u32 {
    let mut id = FIRST_PROJECT_ID;
    let mut sorted = taken.to_vec();
    sorted.sort_unstable();
    for t in sorted {
        if t == id {
            id += 1;
        } else if t > id {
            break;
        }
    }
    id
}

/// The instance's project id: its own, or the lowest free one among the
/// instances beside it (under `instance_dir`'s parent), recorded.
fn allocate(instance_dir: &Path) -> Result<u32, StorageError> {
    let _g = ALLOCATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(id) = project_of(instance_dir) {
        return Ok(id);
    }
    let parent = instance_dir.parent().unwrap_or(instance_dir);
    let taken: Vec<u32> = std::fs::read_dir(parent)
        .map_err(io_err(parent))?
        .flatten()
        .filter_map(|e| project_of(&e.path()))
        .collect();
    let id = lowest_free(&taken);
    let file = instance_dir.join(PROJID_FILE);
    let tmp = instance_dir.join(format!("{PROJID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n")).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &file).map_err(io_err(&file))?;
    Ok(id)
}

/// Whether the directory `path` carries the project id `id`, inherited.
fn carries(path: &Path, id: u32) -> Result<bool, StorageError> {
    let f = open_dir(path)?;
    let mut x = FsXattr::default();
    // SAFETY: `x` is a `struct fsxattr` the ioctl fills.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) } != 0 {
        return Err(quota_err(
            "FS_IOC_FSGETXATTR",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(x.projid == id && x.xflags & FS_XFLAG_PROJINHERIT != 0)
}

/// Puts the instance's upper and work directories (made, empty or not)
/// under a project of its own limited to `bytes`. A directory that carries
/// the id already is not walked again (what is made in it inherits it); a
/// restored one (a new tree) is.
pub(super) fn apply(
    instance_dir: &Path,
    dirs: &[PathBuf],
    bytes: u64,
) -> Result<u32, StorageError> {
    let id = allocate(instance_dir)?;
    for d in dirs {
        if !carries(d, id)? {
            assign_tree(d, id)?;
        }
    }
    set_limit(instance_dir, id, bytes)?;
    Ok(id)
}

/// Clears the instance's project limit and frees its id (after its files
/// are gone). Nothing when it has none.
pub(super) fn release(instance_dir: &Path) -> Result<(), StorageError> {
    let Some(id) = project_of(instance_dir) else {
        return Ok(());
    };
    set_limit(instance_dir, id, 0)?;
    let file = instance_dir.join(PROJID_FILE);
    std::fs::remove_file(&file).map_err(io_err(&file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(RootDiskChoice::Auto));
        assert_eq!("project".parse(), Ok(RootDiskChoice::Project));
        assert_eq!("loop".parse(), Ok(RootDiskChoice::Loop));
        assert!("prjquota".parse::<RootDiskChoice>().is_err());
    }

    #[test]
    fn the_lowest_free_id_is_taken() {
        assert_eq!(lowest_free(&[]), FIRST_PROJECT_ID);
        assert_eq!(
            lowest_free(&[FIRST_PROJECT_ID + 1, FIRST_PROJECT_ID]),
            FIRST_PROJECT_ID + 2
        );
        assert_eq!(
            lowest_free(&[FIRST_PROJECT_ID, FIRST_PROJECT_ID + 2, 7]),
            FIRST_PROJECT_ID + 1
        );
    }

    #[test]
    fn ids_are_recorded_per_instance_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(allocate(&a).unwrap(), FIRST_PROJECT_ID);
        assert_eq!(allocate(&a).unwrap(), FIRST_PROJECT_ID);
        assert_eq!(allocate(&b).unwrap(), FIRST_PROJECT_ID + 1);
        std::fs::remove_file(a.join(PROJID_FILE)).unwrap();
        assert_eq!(project_of(&a), None);
        assert_eq!(allocate(&a).unwrap(), FIRST_PROJECT_ID);
        std::fs::write(b.join(PROJID_FILE), "junk").unwrap();
        assert_eq!(project_of(&b), None);
    }

    /// The project id and inherit flag of `path`.
    fn project(path: &Path) -> (u32, bool) {
        let f = std::fs::File::open(path).unwrap();
        let mut x = FsXattr::default();
        // SAFETY: as in set_project.
        assert_eq!(
            unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) },
            0
        );
        (x.projid, x.xflags & FS_XFLAG_PROJINHERIT != 0)
    }

    /// Project ids on a real filesystem that keeps them (xfs keeps them
    /// without quotas; the limits themselves need a kernel with quota
    /// support, see tests/storage_quota.rs).
    #[test]
    fn project_ids_are_set_on_a_tree_and_inherited() {
        let has = |b: &str| {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
        };
        if !nix::unistd::geteuid().is_root() || !has("mkfs.xfs") {
            eprintln!("skipped: needs root and mkfs.xfs (xfsprogs)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("xfs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(320 << 20)
            .unwrap();
        let run = |c: &mut std::process::Command| c.output().unwrap();
        assert!(
            run(std::process::Command::new("mkfs.xfs").arg("-q").arg(&img))
                .status
                .success()
        );
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        if !mounted.status.success() {
            eprintln!(
                "skipped: cannot mount xfs: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
            return;
        }
        let result = std::panic::catch_unwind(|| {
            let upper = mnt.join("upper");
            std::fs::create_dir_all(upper.join("etc/deep")).unwrap();
            std::fs::write(upper.join("etc/deep/f"), "x").unwrap();
            std::os::unix::fs::symlink("f", upper.join("etc/deep/l")).unwrap();
            assign_tree(&upper, FIRST_PROJECT_ID).unwrap();
            assert_eq!(project(&upper), (FIRST_PROJECT_ID, true));
            assert_eq!(project(&upper.join("etc/deep")), (FIRST_PROJECT_ID, true));
            assert_eq!(project(&upper.join("etc/deep/f")).0, FIRST_PROJECT_ID);
            // Made afterwards: inherited.
            std::fs::create_dir(upper.join("etc/new")).unwrap();
            std::fs::write(upper.join("etc/new/g"), "y").unwrap();
            assert_eq!(project(&upper.join("etc/new/g")).0, FIRST_PROJECT_ID);
            // Again: nothing to change, no error.
            assign_tree(&upper, FIRST_PROJECT_ID).unwrap();
            assert!(carries(&upper, FIRST_PROJECT_ID).unwrap());
            assert!(!carries(&upper, FIRST_PROJECT_ID + 1).unwrap());
            assert!(!carries(&mnt, FIRST_PROJECT_ID).unwrap());
            // No pquota: not enforced, and said so; the overlay probe leaves
            // nothing behind.
            let why = enforced(&mnt).unwrap_err();
            assert!(why.contains(&mnt.display().to_string()), "{why}");
            let why = probe_overlay(&mnt, &mnt.join(".probe")).unwrap_err();
            assert!(why.contains(&mnt.display().to_string()), "{why}");
            assert!(!mnt.join(".probe").exists());
        });
        let _ = run(std::process::Command::new("umount").arg(&mnt));
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn a_tmpdir_without_project_quotas_is_told() {
        let dir = tempfile::tempdir().unwrap();
        if let Err(why) = enforced(dir.path()) {
            assert!(why.contains(&dir.path().display().to_string()), "{why}");
        }
    }
}
