//! The freezer of a cgroup: reading its state, and freezing and thawing it
//! (v1 `freezer.state`, v2 `cgroup.freeze`) for consistent snapshots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::stats::{parse_keyed, read};
use super::{v1_controller_dir, CgroupError, CgroupMode, CgroupPath};

/// Whether a cgroup's tasks are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreezerState {
    Thawed,
    /// Freezing was asked for but not every task has stopped yet.
    Freezing,
    Frozen,
}

/// Reads the freezer state of the cgroup at `path`; `None` when the freezer
/// is unavailable (no v1 freezer mount, root cgroup, kernel before 5.2 on
/// v2, or the cgroup is gone).
pub fn freezer_state(
    mode: CgroupMode,
    root: &Path,
    path: &CgroupPath,
) -> Result<Option<FreezerState>, CgroupError> {
    match mode {
        CgroupMode::V1 => {
            let dir =
                v1_controller_dir(root, "freezer").map(|d| d.join(path.for_controller("freezer")));
            read(dir.as_deref(), "freezer.state", |t| match t.trim() {
                "THAWED" => Ok(FreezerState::Thawed),
                "FREEZING" => Ok(FreezerState::Freezing),
                "FROZEN" => Ok(FreezerState::Frozen),
                other => Err(format!("invalid freezer state {other:?}")),
            })
        }
        CgroupMode::V2 => {
            let dir = root.join(path.default_path());
            let d = Some(dir.as_path());
            let Some(requested) = read(d, "cgroup.freeze", |t| match t.trim() {
                "0" => Ok(false),
                "1" => Ok(true),
                other => Err(format!("invalid freeze value {other:?}")),
            })?
            else {
                return Ok(None);
            };
            let frozen = read(d, "cgroup.events", |t| parse_keyed(t, "frozen"))?.flatten();
            // cgroup.events reports the effective state, which is also frozen
            // when an ancestor was frozen, so it wins over cgroup.freeze.
            Ok(Some(match (requested, frozen) {
                (_, Some(1)) => FreezerState::Frozen,
                // Without cgroup.events there is nothing better than the request.
                (true, None) => FreezerState::Frozen,
                (true, Some(_)) => FreezerState::Freezing,
                (false, _) => FreezerState::Thawed,
            }))
        }
    }
}

/// The control file that freezes the cgroup at `path`: v1 `freezer.state`
/// (hybrid hosts too), v2 `cgroup.freeze`; `None` without a freezer.
fn control_file(mode: CgroupMode, root: &Path, path: &CgroupPath) -> Option<PathBuf> {
    let file = match mode {
        CgroupMode::V1 => v1_controller_dir(root, "freezer")?
            .join(path.for_controller("freezer"))
            .join("freezer.state"),
        CgroupMode::V2 => root.join(path.default_path()).join("cgroup.freeze"),
    };
    file.is_file().then_some(file)
}

/// Asks the kernel to freeze (`true`) or thaw (`false`) every task of the
/// cgroup at `path`. Returns at once: see [`freeze`] to wait for it.
pub fn set_frozen(
    mode: CgroupMode,
    root: &Path,
    path: &CgroupPath,
    frozen: bool,
) -> Result<(), CgroupError> {
    let file =
        control_file(mode, root, path).ok_or_else(|| CgroupError::NoFreezer(path.display()))?;
    let value = match (mode, frozen) {
        (CgroupMode::V1, true) => "FROZEN",
        (CgroupMode::V1, false) => "THAWED",
        (CgroupMode::V2, true) => "1",
        (CgroupMode::V2, false) => "0",
    };
    std::fs::write(&file, value).map_err(|source| CgroupError::Write { file, source })
}

/// Freezes the cgroup at `path` and waits until every task is frozen. A
/// freeze that does not complete within `timeout` is undone (thawed) and
/// reported: the caller never holds a half-frozen cgroup.
pub fn freeze(
    mode: CgroupMode,
    root: &Path,
    path: &CgroupPath,
    timeout: Duration,
) -> Result<(), CgroupError> {
    set_frozen(mode, root, path, true)?;
    let start = Instant::now();
    loop {
        match freezer_state(mode, root, path) {
            Ok(Some(FreezerState::Frozen)) => return Ok(()),
            Ok(Some(_)) if start.elapsed() < timeout => {
                // v1 stays FREEZING until each task stopped; asking again
                // retries the tasks that were busy in the kernel.
                if mode == CgroupMode::V1 {
                    let _ = set_frozen(mode, root, path, true);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(_) => {
                let _ = set_frozen(mode, root, path, false);
                return Err(CgroupError::FreezeTimeout {
                    path: path.display(),
                    waited: timeout,
                });
            }
            Err(e) => {
                let _ = set_frozen(mode, root, path, false);
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn c1() -> CgroupPath {
        CgroupPath::new("corral/c1").unwrap()
    }

    #[test]
    fn v1_states() {
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        assert_eq!(
            freezer_state(CgroupMode::V1, d.path(), &c1()).unwrap(),
            None
        );
        for (text, want) in [
            ("THAWED\n", FreezerState::Thawed),
            ("FREEZING\n", FreezerState::Freezing),
            ("FROZEN\n", FreezerState::Frozen),
        ] {
            write_tree(d.path(), &[("freezer/corral/c1/freezer.state", text)]);
            assert_eq!(
                freezer_state(CgroupMode::V1, d.path(), &c1()).unwrap(),
                Some(want)
            );
        }
        write_tree(d.path(), &[("freezer/corral/c1/freezer.state", "SLUSHY\n")]);
        assert!(matches!(
            freezer_state(CgroupMode::V1, d.path(), &c1()),
            Err(CgroupError::Parse { .. })
        ));
    }

    #[test]
    fn v2_states() {
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        assert_eq!(
            freezer_state(CgroupMode::V2, d.path(), &c1()).unwrap(),
            None
        );
        for (freeze, frozen, want) in [
            ("0\n", "0", FreezerState::Thawed),
            ("1\n", "0", FreezerState::Freezing),
            ("1\n", "1", FreezerState::Frozen),
            // Frozen through a frozen ancestor.
            ("0\n", "1", FreezerState::Frozen),
        ] {
            write_tree(
                d.path(),
                &[
                    ("corral/c1/cgroup.freeze", freeze),
                    (
                        "corral/c1/cgroup.events",
                        &format!("populated 1\nfrozen {frozen}\n"),
                    ),
                ],
            );
            assert_eq!(
                freezer_state(CgroupMode::V2, d.path(), &c1()).unwrap(),
                Some(want),
                "{freeze} {frozen}"
            );
        }
        write_tree(d.path(), &[("corral/c1/cgroup.freeze", "yes\n")]);
        assert!(matches!(
            freezer_state(CgroupMode::V2, d.path(), &c1()),
            Err(CgroupError::Parse { .. })
        ));
    }

    #[test]
    fn v1_freeze_and_thaw_write_freezer_state() {
        let d = tempfile::tempdir().unwrap();
        v1_root(d.path());
        // No freezer file: refused, nothing written.
        assert!(matches!(
            set_frozen(CgroupMode::V1, d.path(), &c1(), true),
            Err(CgroupError::NoFreezer(_))
        ));
        write_tree(d.path(), &[("freezer/corral/c1/freezer.state", "THAWED\n")]);
        let file = d.path().join("freezer/corral/c1/freezer.state");
        freeze(CgroupMode::V1, d.path(), &c1(), Duration::from_secs(1)).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "FROZEN");
        set_frozen(CgroupMode::V1, d.path(), &c1(), false).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "THAWED");
    }

    #[test]
    fn v2_freeze_and_thaw_write_cgroup_freeze() {
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        assert!(matches!(
            freeze(CgroupMode::V2, d.path(), &c1(), Duration::from_secs(1)),
            Err(CgroupError::NoFreezer(_))
        ));
        write_tree(d.path(), &[("corral/c1/cgroup.freeze", "0\n")]);
        let file = d.path().join("corral/c1/cgroup.freeze");
        freeze(CgroupMode::V2, d.path(), &c1(), Duration::from_secs(1)).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1");
        set_frozen(CgroupMode::V2, d.path(), &c1(), false).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "0");
    }

    #[test]
    fn v2_freeze_that_never_completes_is_undone() {
        let d = tempfile::tempdir().unwrap();
        v2_root(d.path());
        // cgroup.events keeps saying "not frozen": a task that never stops.
        write_tree(
            d.path(),
            &[
                ("corral/c1/cgroup.freeze", "0\n"),
                ("corral/c1/cgroup.events", "populated 1\nfrozen 0\n"),
            ],
        );
        let err = freeze(CgroupMode::V2, d.path(), &c1(), Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, CgroupError::FreezeTimeout { .. }), "{err}");
        let file = d.path().join("corral/c1/cgroup.freeze");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "0");
    }
}
