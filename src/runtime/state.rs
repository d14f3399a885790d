//! A container's state read from runc's own state directory instead of one
//! `runc state` process per container: `<root>/<id>/state.json`, the init
//! process in `/proc`, the `exec.fifo` of a created container and the
//! freezer of its cgroup.
//!
//! The status is derived as runc 1.1 derives it (`libcontainer`'s
//! `refreshState` and `runType`): a frozen cgroup is `paused`; otherwise no
//! init process, one with another start time (the pid was reused) or a
//! zombie is `stopped`; an `exec.fifo` still in the state directory is
//! `created`; anything else is `running`. `pid` is 0 once stopped, as
//! `runc state` prints it, and `bundle` comes from the `bundle=` label runc
//! keeps in the saved config.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ContainerState, RuntimeError, Status};

/// Where runc keeps one container's state, under its `--root`.
const STATE_FILE: &str = "state.json";
/// The fifo `runc create` leaves until `runc start` opens it.
const EXEC_FIFO: &str = "exec.fifo";
/// runc writes a few KiB; anything past this is not runc's.
const MAX_STATE_BYTES: u64 = 4 << 20;
/// How often a `FREEZING` v1 freezer is re-read before it counts as frozen.
const FREEZING_RETRIES: u32 = 50;

/// The part of runc's `state.json` the status needs.
#[derive(Debug, serde::Deserialize)]
struct SavedState {
    id: String,
    #[serde(default)]
    init_process_pid: i32,
    #[serde(default)]
    init_process_start: u64,
    #[serde(default)]
    cgroup_paths: BTreeMap<String, PathBuf>,
    #[serde(default)]
    config: SavedConfig,
}

#[derive(Debug, Default, serde::Deserialize)]
struct SavedConfig {
    #[serde(default)]
    labels: Vec<String>,
}

/// Whether `id` can name a directory under the runtime root (runc's own rule
/// is `^[\w+-\.]+$`; this refuses what could leave the root).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
}

fn io_error(path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state of container `id` under runc's `root`, or `None` when runc does
/// not know it (no state directory or no `state.json` in it). `proc` is the
/// proc file system (`/proc`; a fixture in tests).
pub(super) fn read(
    root: &Path,
    proc: &Path,
    id: &str,
) -> Result<Option<ContainerState>, RuntimeError> {
    if !valid_id(id) {
        return Err(RuntimeError::Command {
            binary: "runc".into(),
            verb: "state",
            id: id.to_string(),
            message: "invalid container id format".into(),
        });
    }
    let dir = root.join(id);
    let path = dir.join(STATE_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, e)),
    };
    let mut text = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| io_error(&path, e))?;
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(io_error(
            &path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "state file is too large"),
        ));
    }
    let saved: SavedState =
        serde_json::from_slice(&text).map_err(|source| RuntimeError::StateDecode {
            binary: "runc".into(),
            source,
        })?;
    let status = status_of(&saved, &dir, proc)?;
    let pid = if status == Status::Stopped {
        0
    } else {
        saved.init_process_pid
    };
    let bundle = saved
        .config
        .labels
        .iter()
        .find_map(|l| l.strip_prefix("bundle="))
        .map(PathBuf::from);
    Ok(Some(ContainerState {
        id: saved.id,
        status,
        pid: Some(pid),
        bundle,
    }))
}

/// Every container under runc's `root`, by name, as `runc list` gives them:
/// entries that are not directories or whose state cannot be read are left
/// out; a missing root holds none.
pub(super) fn list(root: &Path, proc: &Path) -> Result<Vec<ContainerState>, RuntimeError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(root, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(root, e))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match read(root, proc, &name) {
            Ok(Some(st)) => out.push(st),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "skipping unreadable runc state")
            }
        }
    }
    Ok(out)
}

fn status_of(saved: &SavedState, dir: &Path, proc: &Path) -> Result<Status, RuntimeError> {
    if frozen(&saved.cgroup_paths).map_err(|message| RuntimeError::Command {
        binary: "runc".into(),
        verb: "state",
        id: saved.id.clone(),
        message,
    })? {
        return Ok(Status::Paused);
    }
    if saved.init_process_pid <= 0 {
        return Ok(Status::Stopped);
    }
    match proc_stat(proc, saved.init_process_pid) {
        Some((state, start))
            if start == saved.init_process_start && !matches!(state, 'Z' | 'X' | 'x') => {}
        _ => return Ok(Status::Stopped),
    }
    if dir.join(EXEC_FIFO).symlink_metadata().is_ok() {
        return Ok(Status::Created);
    }
    Ok(Status::Running)
}

/// (state letter, start time in clock ticks) of a process: fields 3 and 22 of
/// `/proc/<pid>/stat`, counted after the command name (which may hold spaces
/// and parentheses, so the last `)` ends it).
fn proc_stat(proc: &Path, pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the container's cgroup is frozen, read as runc reads it: the v1
/// freezer when there is one (hybrid hosts too), else `cgroup.freeze` of the
/// unified cgroup. A missing file means no freezer: not frozen.
fn frozen(paths: &BTreeMap<String, PathBuf>) -> Result<bool, String> {
    if let Some(dir) = paths.get("freezer") {
        for _ in 0..FREEZING_RETRIES {
            let Some(state) = read_small(&dir.join("freezer.state")) else {
                return Ok(false);
            };
            match state.trim() {
                "THAWED" => return Ok(false),
                "FROZEN" => {
                    // frozen itself, or only through an ancestor
                    return match read_small(&dir.join("freezer.self_freezing")) {
                        None => Ok(true),
                        Some(s) => match s.trim() {
                            "0" => Ok(false),
                            "1" => Ok(true),
                            other => Err(format!("unknown freezer.self_freezing state {other:?}")),
                        },
                    };
                }
                "FREEZING" => std::thread::sleep(std::time::Duration::from_millis(1)),
                other => return Err(format!("unknown freezer.state {other:?}")),
            }
        }
        // still freezing: a freeze was asked for
        return Ok(true);
    }
    if let Some(dir) = paths.get("") {
        return match read_small(&dir.join("cgroup.freeze")) {
            None => Ok(false),
            Some(s) => match s.trim() {
                "0" => Ok(false),
                "1" => Ok(true),
                other => Err(format!("unknown cgroup.freeze state {other:?}")),
            },
        };
    }
    Ok(false)
}

fn read_small(path: &Path) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }
        fn proc(&self) -> PathBuf {
            self.dir.path().join("proc")
        }
        fn cg(&self) -> PathBuf {
            self.dir.path().join("cg")
        }
        fn process(&self, pid: i32, state: char, start: u64) {
            let d = self.proc().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            // comm with a space and a parenthesis, as a hostile process name could be
            let mut fields = vec![format!("{pid}"), "(evil) name)".into(), state.to_string()];
            for i in 4..=21 {
                fields.push(i.to_string());
            }
            fields.push(start.to_string());
            fields.push("0".into());
            std::fs::write(d.join("stat"), fields.join(" ") + "\n").unwrap();
        }
        fn container(&self, id: &str, pid: i32, start: u64, cgroups: &str) {
            let d = self.root().join(id);
            std::fs::create_dir_all(&d).unwrap();
            let json = format!(
                r#"{{"id":"{id}","init_process_pid":{pid},"init_process_start":{start},
                   "created":"2026-01-01T00:00:00Z","cgroup_paths":{cgroups},
                   "config":{{"labels":["x=y","bundle=/b/{id}"],"rootfs":"/r"}}}}"#
            );
            std::fs::write(d.join(STATE_FILE), json).unwrap();
        }
        fn state(&self, id: &str) -> Option<ContainerState> {
            read(&self.root(), &self.proc(), id).unwrap()
        }
    }

    #[test]
    fn running_created_stopped_from_the_init_process() {
        let f = Fixture::new();
        f.process(100, 'S', 5000);
        f.container("run", 100, 5000, "{}");
        let s = f.state("run").unwrap();
        assert_eq!(
            (s.id.as_str(), s.status, s.pid),
            ("run", Status::Running, Some(100))
        );
        assert_eq!(s.bundle, Some(PathBuf::from("/b/run")));

        f.container("new", 100, 5000, "{}");
        std::fs::write(f.root().join("new").join(EXEC_FIFO), "").unwrap();
        assert_eq!(f.state("new").unwrap().status, Status::Created);

        // the pid was reused by another process
        f.container("reused", 100, 4999, "{}");
        let s = f.state("reused").unwrap();
        assert_eq!((s.status, s.pid), (Status::Stopped, Some(0)));

        f.process(101, 'Z', 7);
        f.container("zombie", 101, 7, "{}");
        assert_eq!(f.state("zombie").unwrap().status, Status::Stopped);

        f.container("gone", 4242, 1, "{}");
        assert_eq!(f.state("gone").unwrap().status, Status::Stopped);
        f.container("nopid", 0, 0, "{}");
        assert_eq!(f.state("nopid").unwrap().status, Status::Stopped);
    }

    #[test]
    fn paused_from_the_v1_or_v2_freezer() {
        let f = Fixture::new();
        f.process(100, 'S', 9);
        let v1 = f.cg().join("freezer/c");
        std::fs::create_dir_all(&v1).unwrap();
        let v2 = f.cg().join("unified/c");
        std::fs::create_dir_all(&v2).unwrap();
        let hybrid = format!(r#"{{"":"{}","freezer":"{}"}}"#, v2.display(), v1.display());
        let unified = format!(r#"{{"":"{}"}}"#, v2.display());
        f.container("h", 100, 9, &hybrid);
        f.container("u", 100, 9, &unified);

        // no freezer files: not frozen
        assert_eq!(f.state("h").unwrap().status, Status::Running);
        assert_eq!(f.state("u").unwrap().status, Status::Running);

        std::fs::write(v1.join("freezer.state"), "FROZEN\n").unwrap();
        std::fs::write(v2.join("cgroup.freeze"), "0\n").unwrap();
        assert_eq!(f.state("h").unwrap().status, Status::Paused);
        assert_eq!(f.state("u").unwrap().status, Status::Running);
        // frozen only through an ancestor
        std::fs::write(v1.join("freezer.self_freezing"), "0\n").unwrap();
        assert_eq!(f.state("h").unwrap().status, Status::Running);
        std::fs::write(v1.join("freezer.self_freezing"), "1\n").unwrap();
        assert_eq!(f.state("h").unwrap().status, Status::Paused);
        std::fs::write(v1.join("freezer.state"), "THAWED\n").unwrap();
        assert_eq!(f.state("h").unwrap().status, Status::Running);

        std::fs::write(v2.join("cgroup.freeze"), "1\n").unwrap();
        let s = f.state("u").unwrap();
        assert_eq!((s.status, s.pid), (Status::Paused, Some(100)));

        std::fs::write(v1.join("freezer.state"), "MELTING\n").unwrap();
        assert!(matches!(
            read(&f.root(), &f.proc(), "h"),
            Err(RuntimeError::Command { .. })
        ));
    }

    #[test]
    fn unknown_bad_and_hostile_states() {
        let f = Fixture::new();
        assert!(f.state("nothing").is_none());
        assert!(list(&f.root(), &f.proc()).unwrap().is_empty());
        std::fs::create_dir_all(f.root().join("half")).unwrap();
        assert!(f.state("half").is_none());

        for id in ["", ".", "..", "../x", "a/b", "a b"] {
            assert!(matches!(
                read(&f.root(), &f.proc(), id),
                Err(RuntimeError::Command { .. })
            ));
        }
        std::fs::create_dir_all(f.root().join("bad")).unwrap();
        std::fs::write(f.root().join("bad").join(STATE_FILE), "{not json").unwrap();
        assert!(matches!(
            read(&f.root(), &f.proc(), "bad"),
            Err(RuntimeError::StateDecode { .. })
        ));
        std::fs::create_dir_all(f.root().join("big")).unwrap();
        let big = vec![b' '; (MAX_STATE_BYTES + 10) as usize];
        std::fs::write(f.root().join("big").join(STATE_FILE), big).unwrap();
        assert!(matches!(
            read(&f.root(), &f.proc(), "big"),
            Err(RuntimeError::Io { .. })
        ));
        // a garbled /proc stat is no live process
        f.container("g", 300, 1, "{}");
        std::fs::create_dir_all(f.proc().join("300")).unwrap();
        std::fs::write(f.proc().join("300/stat"), "300 (x").unwrap();
        assert_eq!(f.state("g").unwrap().status, Status::Stopped);

        // list skips what it cannot read and files that are not containers
        f.process(100, 'R', 2);
        f.container("ok", 100, 2, "{}");
        std::fs::write(f.root().join("file"), "").unwrap();
        let ids: Vec<_> = list(&f.root(), &f.proc())
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.status))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("g".into(), Status::Stopped),
                ("ok".into(), Status::Running)
            ]
        );
    }
}
