//! The OCI runtime adapter: runc or crun as a child process, picked once at
//! start-up. A container's runtime id is its instance uuid.

pub mod bundle;
pub mod cgroups;
mod choice;
pub mod console;
mod state;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

pub use bundle::{BundleConfig, IdMap};
pub use cgroups::CgroupMode;
pub use choice::{RuntimeChoice, StopSignal};

/// Errors from the runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no OCI runtime found: install runc (apt-get install runc) or crun, or set [corral] oci_runtime")]
    NotFound,
    #[error("OCI runtime {0} is not installed or not executable (set [corral] oci_runtime)")]
    Missing(String),
    #[error("{binary} {verb} {id}: {message}")]
    Command {
        binary: String,
        verb: &'static str,
        id: String,
        message: String,
    },
    #[error("cannot run {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid OCI spec")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error("cannot encode the OCI spec")]
    SpecEncode(#[source] serde_json::Error),
    #[error("cannot parse {binary} state output")]
    StateDecode {
        binary: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("command timed out after {0} s")]
    Timeout(u64),
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
}

/// Which runtime binary is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Runc,
    Crun,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
        }
    }
}

/// The runtime's view of a container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub bundle: Option<PathBuf>,
}

/// Output of a command run inside a container.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The proc file system the runc state reader looks for init processes in.
const PROC: &str = "/proc";

/// The adapter over one runtime binary and one state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub kind: RuntimeKind,
    pub binary: PathBuf,
    pub root: PathBuf,
    pub version: String,
    pub cgroup_mode: CgroupMode,
    /// v1 controllers with a controller-less v2 tree beside them.
    pub cgroup_hybrid: bool,
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn version_of(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// Parses "SIGTERM", "TERM", "15" or "SIGRTMIN+3" into a signal number.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim();
    if let Ok(num) = n.parse::<i32>() {
        return (1..=64).contains(&num).then_some(num);
    }
    let upper = n.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(off) = bare.strip_prefix("RTMIN") {
        let off: i32 = if off.is_empty() {
            0
        } else {
            off.strip_prefix('+')?.parse().ok()?
        };
        let num = libc::SIGRTMIN() + off;
        return (num <= libc::SIGRTMAX()).then_some(num);
    }
    let with_sig = format!("SIG{bare}");
    with_sig
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

impl Runtime {
    /// Picks the runtime once at start-up. `auto` prefers crun, except on a
    /// hybrid cgroup v1/v2 host, which crun (1.8 and later) refuses to run on.
    pub fn select(
        choice: RuntimeChoice,
        root: &Path,
        cgroup_root: &Path,
    ) -> Result<Runtime, RuntimeError> {
        let cgroup_mode = cgroups::detect(cgroup_root)?;
        let cgroup_hybrid = cgroups::is_hybrid(cgroup_root);
        let make = |kind: RuntimeKind, binary: PathBuf| -> Result<Runtime, RuntimeError> {
            let version = version_of(&binary)
                .ok_or_else(|| RuntimeError::Missing(binary.display().to_string()))?;
            Ok(Runtime {
                kind,
                binary,
                root: root.to_path_buf(),
                version,
                cgroup_mode,
                cgroup_hybrid,
            })
        };
        match choice {
            RuntimeChoice::Runc => {
                let bin =
                    find_binary("runc").ok_or_else(|| RuntimeError::Missing("runc".into()))?;
                make(RuntimeKind::Runc, bin)
            }
            RuntimeChoice::Crun => {
                let bin =
                    find_binary("crun").ok_or_else(|| RuntimeError::Missing("crun".into()))?;
                make(RuntimeKind::Crun, bin)
            }
            RuntimeChoice::Auto => {
                let crun_ok = !cgroup_hybrid;
                if crun_ok {
                    if let Some(bin) = find_binary("crun") {
                        if let Ok(rt) = make(RuntimeKind::Crun, bin) {
                            return Ok(rt);
                        }
                    }
                } else {
                    tracing::info!("hybrid cgroup hierarchy: crun refuses it, using runc");
                }
                match find_binary("runc") {
                    Some(bin) => make(RuntimeKind::Runc, bin),
                    None => Err(RuntimeError::NotFound),
                }
            }
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    async fn run(
        &self,
        verb: &'static str,
        id: &str,
        args: &[&str],
    ) -> Result<String, RuntimeError> {
        let mut cmd = self.command();
        cmd.arg(verb).args(args).arg(id);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| RuntimeError::Timeout(60))?
            .map_err(|source| self.spawn_error(source))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.command_error(verb, id, &out.stderr))
        }
    }

    fn spawn_error(&self, source: std::io::Error) -> RuntimeError {
        if source.kind() == std::io::ErrorKind::NotFound {
            RuntimeError::Missing(self.binary.display().to_string())
        } else {
            RuntimeError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            }
        }
    }

    fn command_error(&self, verb: &'static str, id: &str, stderr: &[u8]) -> RuntimeError {
        RuntimeError::Command {
            binary: self.kind.name().to_string(),
            verb,
            id: id.to_string(),
            message: runtime_message(&String::from_utf8_lossy(stderr)),
        }
    }

    /// Creates the container from its bundle. Its console (stdout and stderr)
    /// is the given file, opened for append, so it outlives this daemon.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        console: &Path,
    ) -> Result<(), RuntimeError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io { path, source }
        };
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(console)
                .map_err(io_err(console))
        };
        let out = open()?;
        let err = open()?;
        let log = bundle.join("runtime.log");
        // A fresh log per create, so the error read back is this one's.
        let _ = std::fs::remove_file(&log);
        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(bundle.join("init.pid"))
            .arg(id)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let status = tokio::time::timeout(Duration::from_secs(60), cmd.status())
            .await
            .map_err(|_| RuntimeError::Timeout(60))?
            .map_err(|source| self.spawn_error(source))?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Err(RuntimeError::Command {
            binary: self.kind.name().to_string(),
            verb: "create",
            id: id.to_string(),
            message: runtime_message(&text),
        })
    }

    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, &[]).await.map(|_| ())
    }

    /// The container's state, or None when the runtime does not know it. runc's
    /// is read from its state directory (no process per call); crun is asked.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        if self.kind == RuntimeKind::Runc {
            return state::read(&self.root, Path::new(PROC), id);
        }
        match self.run("state", id, &[]).await {
            Ok(out) => {
                serde_json::from_str(&out)
                    .map(Some)
                    .map_err(|source| RuntimeError::StateDecode {
                        binary: self.kind.name().to_string(),
                        source,
                    })
            }
            Err(RuntimeError::Command { message, .. }) if is_not_found(&message) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container under this runtime root (runc's read from its state
    /// directories, crun's from `crun list`).
    pub async fn list(&self) -> Result<Vec<ContainerState>, RuntimeError> {
        if self.kind == RuntimeKind::Runc {
            return state::list(&self.root, Path::new(PROC));
        }
        let mut cmd = self.command();
        cmd.arg("list").arg("--format").arg("json");
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| RuntimeError::Timeout(60))?
            .map_err(|source| self.spawn_error(source))?;
        if !out.status.success() {
            return Err(self.command_error("list", "", &out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(text).map_err(|source| RuntimeError::StateDecode {
            binary: self.kind.name().to_string(),
            source,
        })
    }

    /// Sends a signal to the container's init.
    pub async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let mut cmd = self.command();
        cmd.arg("kill").arg(id).arg(signal.to_string());
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| RuntimeError::Timeout(30))?
            .map_err(|source| self.spawn_error(source))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.command_error("kill", id, &out.stderr))
        }
    }

    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let args: &[&str] = if force { &["--force"] } else { &[] };
        match self.run("delete", id, args).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::Command { message, .. }) if is_not_found(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("pause", id, &[]).await.map(|_| ())
    }

    pub async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("resume", id, &[]).await.map(|_| ())
    }

    /// Runs a command inside a running container and collects its output.
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        env: &[String],
        cwd: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let mut cmd = self.command();
        cmd.arg("exec");
        for e in env {
            cmd.arg("--env").arg(e);
        }
        if let Some(cwd) = cwd {
            cmd.arg("--cwd").arg(cwd);
        }
        cmd.arg(id).args(argv);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| self.spawn_error(source))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let collect = async {
            let ((out, out_cut), (err, err_cut)) = tokio::join!(
                read_capped(stdout, EXEC_OUTPUT_MAX_BYTES),
                read_capped(stderr, EXEC_OUTPUT_MAX_BYTES)
            );
            let status = child.wait().await;
            (status, out, out_cut, err, err_cut)
        };
        let (status, out, out_cut, err, err_cut) = tokio::time::timeout(timeout, collect)
            .await
            .map_err(|_| RuntimeError::Timeout(timeout.as_secs()))?;
        let status = status.map_err(|source| self.spawn_error(source))?;
        let mut stderr_text = String::from_utf8_lossy(&err).into_owned();
        for (cut, stream) in [(out_cut, "stdout"), (err_cut, "stderr")] {
            if cut {
                stderr_text.push_str(&format!(
                    "\ncorral: {stream} cut at {EXEC_OUTPUT_MAX_BYTES} bytes\n"
                ));
            }
        }
        let exit_code = match status.code() {
            Some(c) => c,
            None => {
                use std::os::unix::process::ExitStatusExt;
                128 + status.signal().unwrap_or(0)
            }
        };
        Ok(ExecOutput {
            exit_code,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: stderr_text,
        })
    }

    /// Polls until the container is stopped or gone, up to `timeout` (a
    /// timeout past what the clock can hold waits without end).
    pub async fn wait_stopped(&self, id: &str, timeout: Duration) -> Result<bool, RuntimeError> {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            match self.state(id).await? {
                None => return Ok(true),
                Some(s) if s.status == Status::Stopped => return Ok(true),
                Some(_) => {}
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Most bytes of each of an exec's stdout and stderr the daemon keeps.
pub const EXEC_OUTPUT_MAX_BYTES: usize = 1 << 20;

/// Reads a pipe to its end or until `cap` bytes, whichever comes first. At
/// the cap the pipe is closed: the writer gets SIGPIPE (EPIPE), as it would
/// writing into `| head`, instead of the daemon buffering without end.
/// Returns the bytes and whether they were cut.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
) -> (Vec<u8>, bool) {
    let Some(mut reader) = reader else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) => {
                let room = cap - out.len();
                if n > room {
                    out.extend_from_slice(&buf[..room]);
                    return (out, true);
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
}

fn is_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("does not exist") || m.contains("no such file") || m.contains("not found")
}

/// The useful line of a runtime's error output: runc writes JSON log lines
/// (`{"level":"error","msg":...}`) or plain text.
fn runtime_message(text: &str) -> String {
    let mut last_error = None;
    let mut last_line = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if v.get("level").and_then(|l| l.as_str()) == Some("error") {
                if let Some(msg) = v.get("msg").and_then(|m| m.as_str()) {
                    last_error = Some(msg.to_string());
                }
            }
            continue;
        }
        last_line = Some(line.to_string());
    }
    last_error
        .or(last_line)
        .unwrap_or_else(|| "failed without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_output_is_cut_and_the_writer_stopped() {
        let mut child = tokio::process::Command::new("yes")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take();
        let (bytes, cut) = tokio::time::timeout(Duration::from_secs(10), read_capped(out, 4096))
            .await
            .unwrap();
        assert!(cut);
        assert_eq!(bytes.len(), 4096);
        // The closed pipe stops it, as `| head` would.
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success());
        let (bytes, cut) = read_capped(Some(&b"short"[..]), 4096).await;
        assert_eq!((bytes.as_slice(), cut), (&b"short"[..], false));
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGPWR"), Some(30));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("0"), None);
    }

    #[test]
    fn runtime_messages() {
        let log = "{\"level\":\"warning\",\"msg\":\"w\"}\n{\"level\":\"error\",\"msg\":\"exec: no such file\"}\n";
        assert_eq!(runtime_message(log), "exec: no such file");
        assert_eq!(
            runtime_message("container \"x\" does not exist\n"),
            "container \"x\" does not exist"
        );
        assert_eq!(runtime_message(""), "failed without a message");
        assert!(is_not_found("container \"x\" does not exist"));
    }
}
