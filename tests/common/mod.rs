//! Drives the real `corral` binary with real runc: a daemon per test on its
//! own socket, state directory and runtime root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use corral::cli::client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// Why the real-runtime tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (containers, cgroups and mounts)".into());
    }
    let has = |b: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
            .unwrap_or(false)
    };
    if !has("runc") {
        return Some("runc is not installed (apt-get install runc)".into());
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some("busybox-static is not installed (apt-get install busybox-static)".into());
    }
    None
}

/// Skips the calling test with a printed reason when the host lacks what
/// real containers need. In CI (CI=true) a missing piece is a failure.
#[macro_export]
macro_rules! require_host {
    () => {
        if let Some(reason) = common::skip_reason() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot run real-runtime tests in CI: {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// The busybox root tarball, built once per test binary.
pub fn busybox_tarball() -> PathBuf {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("corral-test-image-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("busybox.tar.gz");
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("openstack/images/build-busybox-rootfs.sh");
            let st = Command::new("sh")
                .arg(script)
                .arg(&out)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "building the busybox image failed");
            out
        })
        .clone()
}

/// The Debian tarball, or why there is none (the mirror is unreachable or
/// debootstrap is missing: the tests skip; any other failure fails them).
pub fn debian_tarball() -> Result<PathBuf, String> {
    static TARBALL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TARBALL
        .get_or_init(|| {
            let has_debootstrap = ["/usr/sbin/debootstrap", "/sbin/debootstrap"]
                .iter()
                .any(|p| Path::new(p).is_file());
            if !has_debootstrap {
                return Err("debootstrap is not installed (apt-get install debootstrap)".into());
            }
            let dir = std::env::temp_dir().join(format!("corral-debian-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("debian-12.tar.gz");
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("openstack/images/build-debian-rootfs.sh");
            let res = Command::new("sh")
                .arg(script)
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            match res.status.code() {
                Some(0) => Ok(out),
                Some(3) => Err(format!(
                    "Debian's mirror cannot be reached: {}",
                    String::from_utf8_lossy(&res.stderr).trim()
                )),
                _ => panic!(
                    "building the Debian image failed ({}): {}",
                    res.status,
                    String::from_utf8_lossy(&res.stderr)
                ),
            }
        })
        .clone()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running daemon with its own directories. Dropping it deletes every
/// instance it has and stops it.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub runtime_root: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    /// Whether `spawn` passes `--socket` (else the socket is the daemon's
    /// own default for its state path).
    pass_socket: bool,
}

/// A number for each daemon of this test binary, and a distinct id range
/// base for it, so tests running side by side never share host ids.
fn next_daemon() -> (u32, u64) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let slot = (std::process::id() % 500) * 8 + n;
    (n, 10_000_000u64 + u64::from(slot) * 65536 * 8)
}

impl Daemon {
    /// Starts a daemon with extra `[corral]` options.
    pub fn start_with(extra: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .unwrap();
        let state = dir.path().join("state");
        Daemon::start_in(dir, state, extra)
    }

    /// Starts a daemon with extra `[corral]` options on the state path
    /// `state`; `dir` holds its socket, config and log.
    pub fn start_in(dir: tempfile::TempDir, state: PathBuf, extra: &str) -> Daemon {
        let (n, base) = next_daemon();
        let runtime_root = PathBuf::from(format!("/run/corral-test/{}-{}", std::process::id(), n));
        let config = dir.path().join("corral.conf");
        std::fs::write(
            &config,
            format!(
                "[DEFAULT]\nshutdown_timeout = 10\n[corral]\noci_runtime = runc\nruntime_root = {}\nidmap_base = {base}\nidmap_max_instances = 8\ncgroup_parent = corral-test\ndefault_network = none\n{extra}\n",
                runtime_root.display()
            ),
        )
        .unwrap();
        let socket = dir.path().join("corral.sock");
        let mut d = Daemon {
            dir,
            socket,
            state,
            runtime_root,
            config,
            child: None,
            pass_socket: true,
        };
        d.spawn();
        d
    }

    /// Starts a daemon as an operator would start a second host on one
    /// machine: only `host` and the state path given, so its socket,
    /// runtime root and cgroup parent are its own defaults.
    pub fn start_own(host: &str, state: PathBuf) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .unwrap();
        let (_, base) = next_daemon();
        let config = dir.path().join("corral.conf");
        std::fs::write(
            &config,
            format!(
                "[DEFAULT]\nhost = {host}\nshutdown_timeout = 10\n[corral]\noci_runtime = runc\nidmap_base = {base}\nidmap_max_instances = 8\ndefault_network = none\n"
            ),
        )
        .unwrap();
        let cfg = corral::config::Config::load(
            std::slice::from_ref(&config),
            &corral::config::Overrides {
                state_dir: Some(state.clone()),
                socket: None,
            },
        )
        .unwrap();
        let mut d = Daemon {
            dir,
            socket: cfg.corral.socket,
            state,
            runtime_root: cfg.corral.runtime_root,
            config,
            child: None,
            pass_socket: false,
        };
        d.spawn();
        d
    }

    pub fn start() -> Daemon {
        Daemon::start_with("")
    }

    /// Starts (again) the daemon process and waits for its socket.
    pub fn spawn(&mut self) {
        self.spawn_env(&[]);
    }

    /// Starts (again) the daemon process with extra environment variables
    /// and waits for its socket.
    pub fn spawn_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("daemon")
            .arg("--config-file")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .envs(env.iter().copied());
        if self.pass_socket {
            cmd.arg("--socket").arg(&self.socket);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited with {st}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not listen in time:\n{}", self.log());
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM (containers keep running).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the daemon to exit on its own; its exit status, or None
    /// when it still runs after `timeout` (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = st {
                self.child = None;
                return Some(st);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Runs a CLI verb against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .env("CORRAL_SOCKET", &self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a CLI verb that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "corral {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a CLI verb that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "corral {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn import_busybox(&self) {
        let tb = busybox_tarball();
        self.ok(&[
            "image",
            "import",
            tb.to_str().unwrap(),
            "--alias",
            "busybox",
        ]);
    }

    /// Output of a command in an instance (must exit 0).
    pub fn exec(&self, name: &str, cmd: &str) -> String {
        self.ok(&["exec", name, "--", "sh", "-c", cmd])
    }

    pub fn instance(&self, name: &str) -> serde_json::Value {
        self.client()
            .get(&format!("/1.0/instances/{name}"))
            .unwrap()
    }

    pub fn uuid(&self, name: &str) -> String {
        self.instance(name)["uuid"].as_str().unwrap().to_string()
    }

    /// The runtime's status of a container, None when runc does not know it.
    pub fn runc_status(&self, uuid: &str) -> Option<String> {
        let out = Command::new("runc")
            .arg("--root")
            .arg(&self.runtime_root)
            .arg("state")
            .arg(uuid)
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"].as_str().map(str::to_string)
    }

    /// Everything named with the uuid that is still on the host.
    pub fn leftovers(&self, uuid: &str) -> Vec<String> {
        let mut left = Vec::new();
        if self.runc_status(uuid).is_some() {
            left.push("runtime container".into());
        }
        let inst = self.state.join("instances").join(uuid);
        if inst.exists() {
            left.push(inst.display().to_string());
        }
        for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = entry.path().join("corral-test").join(uuid);
            if p.exists() {
                left.push(p.display().to_string());
            }
        }
        let unified = Path::new("/sys/fs/cgroup/corral-test").join(uuid);
        if unified.exists() {
            left.push(unified.display().to_string());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if mounts.contains(uuid) {
            left.push("a mount".into());
        }
        left
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Ok(list) = self
                .client()
                .get::<Vec<serde_json::Value>>("/1.0/instances?recursion=1")
            {
                for i in list {
                    if let Some(name) = i["name"].as_str() {
                        let _ = self.cli(&["delete", "--force", name]);
                    }
                }
            }
        }
        self.stop();
        // Whatever is left in the runtime root (a test that failed midway).
        if let Ok(rd) = std::fs::read_dir(&self.runtime_root) {
            for e in rd.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&self.runtime_root)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.runtime_root);
        if let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") {
            let st = self.state.display().to_string();
            for line in m.lines() {
                if let Some(mp) = line.split_whitespace().nth(4) {
                    if mp.starts_with(&st) {
                        let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
                    }
                }
            }
        }
    }
}

/// Whether the container sees cgroup v2 files.
pub fn read_cgroup(d: &Daemon, name: &str, v1: &str, v2: &str) -> String {
    d.exec(
        name,
        &format!("if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cat /sys/fs/cgroup/{v2}; else cat /sys/fs/cgroup/{v1}; fi"),
    )
    .trim()
    .to_string()
}

/// Polls until `f` is true or the timeout passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A request with an optional JSON body over the daemon's socket: status and
/// raw body.
pub fn raw_call(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, Vec<u8>) {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let resp = match &bytes {
        Some(b) => {
            let mut cur = std::io::Cursor::new(b.as_slice());
            c.request(
                method,
                path,
                Some(("application/json", &mut cur, b.len() as u64)),
                &[],
            )
            .unwrap()
        }
        None => c.request(method, path, None, &[]).unwrap(),
    };
    (resp.status, resp.body)
}

/// A container driver in the test process itself (no daemon), on `dir`'s
/// state and `runtime_root`, its one id range at `id_base` (a range of the
/// caller's own: the daemons above use 10,000,000 and up).
pub async fn in_process_driver(
    dir: &Path,
    runtime_root: &Path,
    id_base: u64,
    shutdown_timeout: u32,
) -> corral::driver::ContainerDriver {
    in_process_driver_on(
        &dir.join("state"),
        dir,
        runtime_root,
        id_base,
        shutdown_timeout,
        "",
    )
    .await
}

/// As [`in_process_driver`], on the state path `state` (its socket in
/// `dir`), with more `[corral]` options in `corral_options` (e.g.
/// `storage = btrfs`).
pub async fn in_process_driver_on(
    state: &Path,
    dir: &Path,
    runtime_root: &Path,
    id_base: u64,
    shutdown_timeout: u32,
    corral_options: &str,
) -> corral::driver::ContainerDriver {
    use corral::config::{Config, Ini, Overrides};
    let mut ini = Ini::default();
    ini.merge_str(
        &format!(
            "[DEFAULT]\nshutdown_timeout = {shutdown_timeout}\n[corral]\noci_runtime = runc\n\
             runtime_root = {}\nidmap_base = {id_base}\nidmap_max_instances = 1\n\
             cgroup_parent = corral-test\n{corral_options}\n",
            runtime_root.display()
        ),
        "test",
    )
    .unwrap();
    let cfg = std::sync::Arc::new(
        Config::from_ini(
            &ini,
            &Overrides {
                state_dir: Some(state.to_path_buf()),
                socket: Some(dir.join("corral.sock")),
            },
        )
        .unwrap(),
    );
    std::fs::create_dir_all(&cfg.state_path).unwrap();
    std::fs::create_dir_all(runtime_root).unwrap();
    let cgroup_root = PathBuf::from(corral::runtime::cgroups::DEFAULT_ROOT);
    let runtime =
        corral::runtime::Runtime::select(cfg.corral.oci_runtime, runtime_root, &cgroup_root)
            .unwrap();
    let storage = corral::storage::Storage::select(
        cfg.corral.storage,
        cfg.corral.idmapped_roots,
        &cfg.state_path,
        &cfg.state_path.join(".idmap-probe"),
    )
    .unwrap();
    let store = corral::store::Store::open(&cfg.store_path()).await.unwrap();
    corral::driver::ContainerDriver::new(cfg, runtime, storage, store, cgroup_root).unwrap()
}

/// An instance of `image` with nothing but defaults: no limits, devices,
/// interfaces or guest data (tests add what they check with `..spec(...)`).
pub fn spec(uuid: &str, name: &str, image: &str) -> corral::driver::InstanceSpec {
    corral::driver::InstanceSpec {
        uuid: uuid.into(),
        name: name.into(),
        image: image.into(),
        limits: Default::default(),
        privileged: false,
        nesting: false,
        devices: Default::default(),
        pinned_cpus: None,
        command: None,
        environment: Default::default(),
        hostname: None,
        pci_devices: Vec::new(),
        vifs: Vec::new(),
        config_drive: None,
        network_interfaces: None,
    }
}

/// Removes a test's runc container and its runtime root when dropped (also
/// when the test fails).
pub struct RuntimeCleanup {
    pub runtime_root: PathBuf,
    pub uuid: String,
}

impl Drop for RuntimeCleanup {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.runtime_root)
            .args(["delete", "--force", &self.uuid])
            .output();
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

/// Whether `bin` is on the PATH.
pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Runs `cmd`, which must succeed; its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
