//! Idmapped mounts: the cached image's tree seen through an id mapping, so an
//! unprivileged instance's overlay can sit on the one unshifted copy of the
//! image instead of a copy per id range (docs/decisions/0007).
//!
//! corral makes the mounts itself (`open_tree`, `mount_setattr` with
//! `MOUNT_ATTR_IDMAP`, `move_mount`; Linux 5.12+, and overlayfs accepts an
//! idmapped lower layer from 5.19): the OCI runtime only ever sees an ordinary
//! overlay root. The id mapping comes from a user namespace made for the
//! purpose (a short-lived child that unshares one; its mapping is written by
//! the daemon, which holds the namespace by a file descriptor).

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Errors of the idmapped mount calls, with the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("cannot make a user namespace for the id mapping: {step}: {source}")]
    UserNs {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{call} of {path} failed: {source}")]
    Mount {
        call: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString, IdmapError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| IdmapError::Mount {
        call: "path",
        path: p.display().to_string(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// A user namespace whose ids 0..`len` are the host's `base`..`base+len`,
/// held by its `/proc/<pid>/ns/user` descriptor.
pub fn user_namespace(base: u32, len: u32) -> Result<OwnedFd, IdmapError> {
    let err = |step| move |source| IdmapError::UserNs { step, source };
    // One at a time in the process. The child never execs, so close-on-exec
    // does not shut the pipes of another build's namespace that were open
    // when it was forked; two children each holding the other's "done" end
    // would wait for each other forever.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Two pipes: the child says "unshared", the parent says "done" by closing.
    // Close-on-exec: a process another thread starts meanwhile must not
    // keep an end open (the child would never see "done").
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(std::io::Error::from)
        .map_err(err("pipe"))?;
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(std::io::Error::from)
        .map_err(err("pipe"))?;
    // SAFETY: the child only makes async-signal-safe system calls (unshare,
    // write, read, _exit) before it exits; it never returns into Rust code
    // that could touch locks held by other threads of the parent.
    let pid = match unsafe { libc::fork() } {
        -1 => return Err(err("fork")(std::io::Error::last_os_error())),
        0 => unsafe {
            drop_in_child(&ready_r, &done_w);
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                1
            } else {
                0
            };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            // Returns 0 (EOF) when the parent closes its end.
            libc::read(done_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        },
        pid => pid,
    };
    drop(ready_w);
    drop(done_r);
    let result = (|| {
        let mut ok = [0u8; 1];
        File::from(ready_r)
            .read_exact(&mut ok)
            .map_err(err("wait for the child"))?;
        if ok[0] != 1 {
            return Err(err("unshare(CLONE_NEWUSER)")(
                std::io::Error::from_raw_os_error(libc::EPERM),
            ));
        }
        let map = format!("0 {base} {len}\n");
        for f in ["uid_map", "gid_map"] {
            std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{pid}/{f}"))
                .and_then(|mut h| h.write_all(map.as_bytes()))
                .map_err(err("write the id map"))?;
        }
        let ns = File::open(format!("/proc/{pid}/ns/user")).map_err(err("open ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    drop(done_w);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

/// Closes, in the forked child, the pipe ends that belong to the parent.
///
/// # Safety
/// Only async-signal-safe calls (close).
unsafe fn drop_in_child(a: &OwnedFd, b: &OwnedFd) {
    libc::close(a.as_raw_fd());
    libc::close(b.as_raw_fd());
}

/// Mounts `source` at `target` (an existing empty directory), read-only,
/// nosuid, nodev, with its owners moved by the id mapping of `userns`.
pub fn mount_idmapped(source: &Path, target: &Path, userns: &OwnedFd) -> Result<(), IdmapError> {
    mount_idmapped_with(
        source,
        target,
        userns,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
}

/// As [`mount_idmapped`], writable and with setuid files and device nodes
/// honoured, as on an overlay root: what is written through it lands with
/// the owners mapped back (a btrfs pool's instance root).
pub fn mount_idmapped_writable(
    source: &Path,
    target: &Path,
    userns: &OwnedFd,
) -> Result<(), IdmapError> {
    mount_idmapped_with(source, target, userns, 0)
}

fn mount_idmapped_with(
    source: &Path,
    target: &Path,
    userns: &OwnedFd,
    flags: u64,
) -> Result<(), IdmapError> {
    let src = cpath(source)?;
    let dst = cpath(target)?;
    let empty = c"";
    let fail = |call, p: &Path| {
        let source = std::io::Error::last_os_error();
        IdmapError::Mount {
            call,
            path: p.display().to_string(),
            source,
        }
    };
    // SAFETY: plain system calls with valid, NUL-terminated paths and a
    // properly sized `mount_attr`; the returned descriptor is owned below.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        if fd < 0 {
            return Err(fail("open_tree", source));
        }
        let tree = OwnedFd::from_raw_fd(fd as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP | flags,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        if libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) != 0
        {
            return Err(fail("mount_setattr(MOUNT_ATTR_IDMAP)", source));
        }
        if libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) != 0
        {
            return Err(fail("move_mount", target));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn a_user_namespace_has_the_mapping_asked_for() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let ns = user_namespace(300_000, 65536).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", ns.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
        // A different namespace from ours.
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        assert_ne!(link, ours);
    }

    /// Builds make namespaces at the same time. Each child waits for its
    /// parent to close a pipe; a child forked while another build's pipe
    /// was open held that pipe's end, and two such children waited for each
    /// other forever (their builds with them).
    #[test]
    fn user_namespaces_made_at_once_all_finish() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..8u32 {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..40u32 {
                    let ns = user_namespace(400_000 + (t * 40 + i) * 16, 16);
                    assert!(ns.is_ok(), "{:?}", ns.err());
                }
                let _ = tx.send(t);
            });
        }
        drop(tx);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut done = 0;
        while done < 8 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(_) => done += 1,
                Err(e) => panic!(
                    "{done} of 8 threads finished ({e}): namespace children wait on each other"
                ),
            }
        }
    }

    #[test]
    fn an_idmapped_mount_shows_owners_moved_and_is_read_only() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/hostname"), "x").unwrap();
        std::os::unix::fs::chown(src.join("etc/hostname"), Some(5), Some(7)).unwrap();
        std::fs::create_dir(&dst).unwrap();
        let ns = user_namespace(400_000, 65536).unwrap();
        if let Err(e) = mount_idmapped(&src, &dst, &ns) {
            eprintln!("skipped: this kernel has no idmapped mounts here: {e}");
            return;
        }
        let m = std::fs::metadata(dst.join("etc/hostname")).unwrap();
        let moved = (m.uid(), m.gid());
        let ro = std::fs::write(dst.join("etc/new"), "y").is_err();
        nix::mount::umount2(&dst, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert_eq!(moved, (400_005, 400_007));
        assert!(ro, "an idmapped lower layer must be read-only");
        // The source keeps its owners.
        let m = std::fs::metadata(src.join("etc/hostname")).unwrap();
        assert_eq!((m.uid(), m.gid()), (5, 7));
    }
}
