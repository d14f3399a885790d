//! Entry names made safe (components, no `..`) and the descriptor-relative
//! file operations the extractor is built from.

use super::*;

/// Turns an entry name into safe components: a leading `/` or `./` is
/// stripped, `.` and empty components are dropped, and `..` is refused.
pub(super) fn normalize(raw: &[u8]) -> Result<Vec<OsString>> {
    let lossy = || printable_bytes(raw);
    if raw.contains(&0) {
        return Err(UnpackError::BadName {
            entry: lossy(),
            reason: "name contains a nul byte",
        });
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(UnpackError::BadName {
            entry: lossy(),
            reason: "name too long",
        });
    }
    let mut comps = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(UnpackError::PathTraversal { entry: lossy() }),
            c if c.len() > MAX_NAME_LEN => {
                return Err(UnpackError::BadName {
                    entry: lossy(),
                    reason: "path component too long",
                });
            }
            c => comps.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(comps)
}

pub(super) fn display(comps: &[OsString]) -> String {
    if comps.is_empty() {
        return ".".to_string();
    }
    printable_bytes(&key(comps))
}

pub(super) fn key(comps: &[OsString]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            k.push(b'/');
        }
        k.extend_from_slice(c.as_bytes());
    }
    k
}

/// Callers only pass non-empty component lists; the root is handled apart.
pub(super) fn last(comps: &[OsString]) -> &OsStr {
    comps.last().map_or(OsStr::new("."), |c| c.as_os_str())
}

pub(super) fn open_fd(
    dir: Option<&OwnedFd>,
    path: &OsStr,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let raw = fcntl::openat(dir.map(|d| d.as_raw_fd()), path, flags, mode)?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub(super) fn lstat_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn is_type(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == kind
}

pub(super) fn fchown(fd: &OwnedFd, uid: u32, gid: u32, name: &str) -> Result<()> {
    unistd::fchown(
        fd.as_raw_fd(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )
    .map_err(|e| io_err(name, e.into()))
}

pub(super) fn set_dir_meta(fd: &OwnedFd, mode: u32, mtime: Option<i64>, name: &str) -> Result<()> {
    stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| io_err(name, e.into()))?;
    if let Some(mtime) = mtime {
        stat::futimens(
            fd.as_raw_fd(),
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::new(mtime, 0),
        )
        .map_err(|e| io_err(name, e.into()))?;
    }
    Ok(())
}
