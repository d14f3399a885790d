//! Reading the freezer state of a cgroup.

use std::path::Path;

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
}
