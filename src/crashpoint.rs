//! Crash points: a test facility that kills the daemon with SIGKILL at a
//! named step of an operation, the way a power cut would (no destructors, no
//! cleanup), so that tests can check what start-up recovery makes of it.
//!
//! A point is a no-op unless the daemon was started with
//! `CORRAL_CRASH_AT=<point>`, read once at start-up ([`arm_from_env`]).
//! Every point is listed in [`POINTS`], so a test can run them all, and a new
//! point is tested as soon as it is listed.

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const ENV_VAR: &str = "CORRAL_CRASH_AT";

/// Every crash point, in the order an operation reaches them. The prefix
/// says which operation reaches it:
/// - `launch.`: creating an instance (`launch`, `init`);
/// - `prepare.`, `start.`: making the root, devices and bundle ready and
///   starting the container, shared by launch and start;
/// - `plug.`: plugging virtual interfaces, in every start of an instance
///   that has some (tests/vifs.rs runs them);
/// - `power_on.`: start of an existing instance;
/// - `stop.`: stop of a running instance;
/// - `delete.`, `remove.`: delete (and every roll-back);
/// - `import.`: image import;
/// - `image_delete.`: image delete.
pub const POINTS: &[&str] = &[
    // Store record (phase creating, id range) made; nothing on the host.
    "launch.after_record",
    // Overlay root mounted.
    "prepare.after_root",
    // Console log created.
    "prepare.after_console",
    // Devices set up, claims and NIC record written.
    "prepare.after_devices",
    // OCI bundle (config.json) written.
    "prepare.after_bundle",
    // Runtime container created (init not started, namespaces exist).
    "start.after_create",
    // Host interfaces moved into the container.
    "start.after_nics",
    // Virtual interfaces: the record written, nothing plugged.
    "plug.after_record",
    // Virtual interfaces: the first plugged, the others not.
    "plug.after_first",
    // Virtual interfaces all plugged, the gate not awaited, init not started.
    "plug.before_gate",
    // Container started.
    "start.after_start",
    // Desired state stored as running, phase still creating.
    "launch.before_ready",
    // Power on: container running, desired state not yet stored.
    "power_on.before_desired",
    // Stop: interfaces brought home, container still running.
    "stop.after_nics",
    // Stop: container stopped, not yet deleted from the runtime.
    "stop.after_kill",
    // Stop: container deleted from the runtime, devices not released.
    "stop.after_delete",
    // Stop: everything stopped, desired state not yet stored.
    "stop.before_desired",
    // Delete: interfaces brought home, container still running.
    "delete.after_nics",
    // Delete: container killed, phase not yet deleting.
    "delete.after_kill",
    // Removal: phase stored as deleting.
    "remove.after_phase",
    // Removal: container deleted from the runtime.
    "remove.after_runtime",
    // Removal: cgroups removed.
    "remove.after_cgroups",
    // Removal: device mounts and nodes released.
    "remove.after_devices",
    // Removal: root unmounted and removed.
    "remove.after_root",
    // Removal: instance directory removed, store record not yet deleted.
    "remove.after_files",
    // Import: the upload is on disk, nothing unpacked.
    "import.after_upload",
    // Import: the archive is unpacked into the cache, no store record.
    "import.after_unpack",
    // Import: the store record is made, the operation not yet finished.
    "import.after_record",
    // Image delete: the store record is gone, the cached tree not yet.
    "image_delete.after_record",
];

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Reads [`ENV_VAR`] once; later calls (and changes of the environment)
/// change nothing. Returns the armed point. An unknown name is refused, so a
/// typo in a test cannot pass for a point that is never reached.
pub fn arm_from_env() -> Result<Option<&'static str>, String> {
    let armed = ARMED.get_or_init(|| std::env::var(ENV_VAR).ok().filter(|v| !v.is_empty()));
    match armed.as_deref() {
        None => Ok(None),
        Some(p) => match POINTS.iter().find(|known| **known == p) {
            Some(known) => Ok(Some(known)),
            None => Err(format!("{ENV_VAR}={p:?} names no crash point")),
        },
    }
}

/// Kills the daemon with SIGKILL when `name` is the armed point; a no-op
/// otherwise (and always, unless [`arm_from_env`] found the variable).
pub fn crash_point(name: &str) {
    debug_assert!(POINTS.contains(&name), "crash point {name} is not listed");
    let Some(Some(armed)) = ARMED.get() else {
        return;
    };
    if armed == name {
        // Unbuffered, so the test can see which point fired.
        eprintln!("crash point {name}: killing the daemon");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
        // SIGKILL cannot be caught; should it not be delivered, still no
        // destructors run.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_unique_and_named_by_operation() {
        let mut seen = std::collections::BTreeSet::new();
        for p in POINTS {
            assert!(seen.insert(p), "{p} listed twice");
            let (op, step) = p.split_once('.').unwrap();
            assert!(
                [
                    "launch",
                    "prepare",
                    "start",
                    "plug",
                    "power_on",
                    "stop",
                    "delete",
                    "remove",
                    "import",
                    "image_delete"
                ]
                .contains(&op),
                "{p}"
            );
            assert!(!step.is_empty());
        }
    }

    #[test]
    fn unarmed_points_do_nothing() {
        // ARMED is not initialised in unit tests: every point returns.
        for p in POINTS {
            crash_point(p);
        }
    }
}
