//! A container's `/dev/console` as a pseudo-terminal whose output is appended
//! to the instance's console log. An init such as systemd writes its boot
//! messages to `/dev/console` (it reopens it for each message), not to its
//! standard output; a regular file there would be rewritten from its start
//! at every open, so the console is a pty and a relay copies what the
//! container writes into the log.
//!
//! The relay is a separate process (`cat`, reading the pty's master and
//! holding one slave descriptor so the pty never hangs up between two of the
//! container's opens) in its own session: it outlives a restart of the
//! daemon. Its pid is kept in a file in the instance directory so the next
//! start, the stop or the delete ends it, checked first to still be this
//! instance's relay.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The relay's pid file in the instance directory.
pub const RELAY_PID_FILE: &str = "console-relay.pid";

/// A relay running for one instance: the slave to bind at `/dev/console`.
#[derive(Debug)]
pub struct ConsoleRelay {
    pub slave: PathBuf,
    pub pid: u32,
}

/// Opens a pty, makes it raw (the log gets `\n`, not `\r\n`), gives the
/// slave to `owner` (the container's root on the host), and starts the relay
/// appending to `log`. A relay left by an earlier start is ended first.
pub fn start(dir: &Path, log: &Path, owner: Option<(u32, u32)>) -> io::Result<ConsoleRelay> {
    stop(dir, log);
    // SAFETY: posix_openpt has no memory arguments; its result is checked.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: posix_openpt just returned this descriptor; nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: plain calls on a valid descriptor.
    if unsafe { libc::grantpt(master.as_raw_fd()) } != 0
        || unsafe { libc::unlockpt(master.as_raw_fd()) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is valid for its length, which is passed.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ptsname_r wrote a NUL-terminated string into the buffer.
    let slave_path = PathBuf::from(
        unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    );
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)?;
    make_raw(&slave)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&slave_path, Some(uid), Some(gid))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let held = slave.as_raw_fd();
    let pid_file = dir.join(RELAY_PID_FILE);
    let _ = std::fs::remove_file(&pid_file);
    let pid_path = std::ffi::CString::new(pid_file.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::from(File::from(master)))
        .stdout(Stdio::from(out))
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fcntl, fork, open,
    // write, close, _exit) between fork and exec, and no allocation.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // The slave stays open in the relay (not close-on-exec).
            let flags = libc::fcntl(held, libc::F_GETFD);
            if flags < 0 || libc::fcntl(held, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            // A second fork: the relay is init's child, not the daemon's,
            // so whoever reaps it is never this process.
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            let fd = libc::open(
                pid_path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o600,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = [0u8; 12];
            let mut n = libc::getpid() as u32;
            let mut i = buf.len();
            loop {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let len = buf.len() - i;
            let ok = libc::write(fd, buf[i..].as_ptr().cast(), len) == len as isize;
            libc::close(fd);
            if !ok {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The first child exits as soon as the relay is forked.
    let status = cmd.spawn()?.wait()?;
    drop(slave);
    if !status.success() {
        return Err(io::Error::other(format!("console relay: {status}")));
    }
    let pid = std::fs::read_to_string(&pid_file)?
        .trim()
        .parse::<u32>()
        .map_err(|_| io::Error::other("console relay wrote no pid"))?;
    Ok(ConsoleRelay {
        slave: slave_path,
        pid,
    })
}

fn make_raw(f: &File) -> io::Result<()> {
    // SAFETY: termios is plain data; tcgetattr fills it before it is used.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    if unsafe { libc::tcgetattr(f.as_raw_fd(), &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: t is a valid termios.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: valid descriptor and pointer.
    if unsafe { libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ends the instance's relay, if one runs: the pid in its file is signalled
/// only when that process is a relay writing to `log`.
pub fn stop(dir: &Path, log: &Path) {
    let pid_file = dir.join(RELAY_PID_FILE);
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return;
    };
    if let Ok(pid) = text.trim().parse::<i32>() {
        if pid > 1 && is_relay_of(Path::new("/proc"), pid, log) {
            // SAFETY: kill has no memory arguments.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_file(&pid_file);
}

/// Whether process `pid` (under `proc`) is a relay appending to `log`.
fn is_relay_of(proc: &Path, pid: i32, log: &Path) -> bool {
    let base = proc.join(pid.to_string());
    let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
    if comm.trim() != "cat" {
        return false;
    }
    std::fs::read_link(base.join("fd/1")).is_ok_and(|p| p == log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn wait_for(log: &Path, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains(want) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn writes_to_the_console_append_to_the_log_across_opens() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("console.log");
        std::fs::write(&log, "before\n").unwrap();
        let relay = start(t.path(), &log, None).unwrap();
        // Open, write, close, as systemd does for each status line.
        for line in ["one\n", "two\n"] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&relay.slave)
                .unwrap();
            f.write_all(line.as_bytes()).unwrap();
        }
        let text = wait_for(&log, "two");
        assert_eq!(text, "before\none\ntwo\n");
        assert!(is_relay_of(Path::new("/proc"), relay.pid as i32, &log));
        // A second start replaces the relay.
        let again = start(t.path(), &log, None).unwrap();
        assert_ne!(again.pid, relay.pid);
        stop(t.path(), &log);
        assert!(!t.path().join(RELAY_PID_FILE).exists());
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_relay_of(Path::new("/proc"), again.pid as i32, &log) {
            assert!(Instant::now() < deadline, "relay {} still runs", again.pid);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_stale_pid_file_ends_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("console.log");
        // This test process is not a relay of that log.
        std::fs::write(
            t.path().join(RELAY_PID_FILE),
            std::process::id().to_string(),
        )
        .unwrap();
        stop(t.path(), &log);
        assert!(!t.path().join(RELAY_PID_FILE).exists());
        std::fs::write(t.path().join(RELAY_PID_FILE), "garbage").unwrap();
        stop(t.path(), &log);
    }
}
