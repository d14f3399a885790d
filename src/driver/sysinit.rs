//! What an instance's init needs from its host, worked out from the image at
//! each start and kept in the instance directory (`boot.json`): the signal a
//! graceful stop sends, and whether the init manages cgroups and writes to
//! `/dev/console` as systemd does (a delegated cgroup and a console relay).
//!
//! The stop signal is, first found: the image's `stop_signal` property
//! (`corral image import --stop-signal`; for Nova the Glance property
//! `corral_stop_signal`, kept when the image is cached), SIGRTMIN+3 for an
//! image whose init is systemd, and `[corral] stop_signal`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::runtime::StopSignal;
use crate::store::ImageRecord;

use super::DriverError;

/// The file in the instance directory.
pub const BOOT_FILE: &str = "boot.json";

/// The Glance image property naming an image's stop signal.
pub const GLANCE_STOP_SIGNAL: &str = "corral_stop_signal";

/// The image property (standalone image metadata) naming its stop signal.
pub const IMAGE_STOP_SIGNAL: &str = "stop_signal";

/// What systemd, as PID 1, stops on.
pub const SYSTEMD_STOP_SIGNAL: &str = "SIGRTMIN+3";

/// How one instance boots and stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootProfile {
    /// The signal a graceful stop sends, by name.
    pub stop_signal: String,
    /// Its number.
    pub stop_signal_number: i32,
    /// The init is systemd: its own cgroup is given to the container's root
    /// and `/dev/console` is a pty relayed into the console log.
    pub systemd: bool,
    /// The host id of the container's root (None: privileged).
    pub root_id: Option<u32>,
}

/// Whether the command `args` runs the image's systemd: the image's init
/// is systemd and the command is its `/sbin/init` or systemd itself.
fn runs_systemd(image: &ImageRecord, args: &[String]) -> bool {
    let image_systemd = image
        .properties
        .get("init_system")
        .and_then(|v| v.as_str())
        .is_some_and(|s| s == "systemd");
    image_systemd
        && args.first().is_some_and(|a| {
            a == "/sbin/init" || Path::new(a).file_name().is_some_and(|n| n == "systemd")
        })
}

fn parse(name: &str, whose: &str) -> Result<StopSignal, DriverError> {
    name.parse::<StopSignal>()
        .map_err(|e| DriverError::Invalid(format!("{whose} stop signal {name:?}: {e}")))
}

/// The profile of an instance of `image` running `args`.
pub fn profile(
    image: &ImageRecord,
    args: &[String],
    fallback: &StopSignal,
    root_id: Option<u32>,
) -> Result<BootProfile, DriverError> {
    let systemd = runs_systemd(image, args);
    let image_signal = image
        .properties
        .get(IMAGE_STOP_SIGNAL)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let signal = match image_signal {
        Some(s) => parse(s, "the image's")?,
        None if systemd => parse(SYSTEMD_STOP_SIGNAL, "systemd's")?,
        None => fallback.clone(),
    };
    Ok(BootProfile {
        stop_signal: signal.name().to_string(),
        stop_signal_number: signal.number(),
        systemd,
        root_id,
    })
}

/// Checks a stop signal given with an instance or image before it is kept.
pub fn validate(name: &str) -> Result<(), DriverError> {
    parse(name, "the").map(|_| ())
}

impl BootProfile {
    pub fn save(&self, dir: &Path) -> Result<(), DriverError> {
        let path = dir.join(BOOT_FILE);
        let json = serde_json::to_vec(self)
            .map_err(|e| DriverError::Invalid(format!("cannot encode {BOOT_FILE}: {e}")))?;
        crate::fsutil::write_atomic(&path, &json, 0o600)
            .map_err(|source| DriverError::Io { path, source })
    }

    /// The profile saved by the last start; None when there is none (an
    /// instance prepared before profiles existed) or it cannot be read.
    pub fn load(dir: &Path) -> Option<BootProfile> {
        let bytes = std::fs::read(dir.join(BOOT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image(props: serde_json::Value) -> ImageRecord {
        ImageRecord {
            fingerprint: "f".into(),
            alias: None,
            size: 1,
            created_at: String::new(),
            properties: props,
        }
    }

    fn init() -> Vec<String> {
        vec!["/sbin/init".into()]
    }

    #[test]
    fn systemd_images_stop_on_sigrtmin_3_others_on_the_host_default() {
        let fallback: StopSignal = "SIGPWR".parse().unwrap();
        let sd = image(json!({"init": "/sbin/init", "init_system": "systemd"}));
        let p = profile(&sd, &init(), &fallback, Some(100_000)).unwrap();
        assert!(p.systemd);
        assert_eq!(p.stop_signal, "SIGRTMIN+3");
        assert_eq!(p.stop_signal_number, libc::SIGRTMIN() + 3);
        assert_eq!(p.root_id, Some(100_000));

        let bb = image(json!({"init": "/sbin/init"}));
        let p = profile(&bb, &init(), &fallback, None).unwrap();
        assert!(!p.systemd);
        assert_eq!(p.stop_signal_number, libc::SIGPWR);

        // Another command in a systemd image is not systemd.
        let sh = vec!["/bin/sh".to_string(), "-c".into(), "sleep 1".into()];
        let p = profile(&sd, &sh, &fallback, None).unwrap();
        assert!(!p.systemd);
        assert_eq!(p.stop_signal, "SIGPWR");
        let direct = vec!["/lib/systemd/systemd".to_string()];
        assert!(profile(&sd, &direct, &fallback, None).unwrap().systemd);
    }

    #[test]
    fn the_image_property_overrides() {
        let fallback = StopSignal::default();
        let sd = image(json!({"init_system": "systemd", "stop_signal": "SIGINT"}));
        let p = profile(&sd, &init(), &fallback, None).unwrap();
        assert_eq!(
            (p.stop_signal.as_str(), p.stop_signal_number),
            ("SIGINT", libc::SIGINT)
        );
        assert!(p.systemd, "the override changes the signal only");
        let bb = image(json!({"stop_signal": "SIGRTMIN+3"}));
        let p = profile(&bb, &init(), &fallback, None).unwrap();
        assert_eq!(p.stop_signal_number, libc::SIGRTMIN() + 3);
        assert!(!p.systemd);
    }

    #[test]
    fn bad_signals_are_refused_with_their_owner_named() {
        let fallback = StopSignal::default();
        let bad = image(json!({"stop_signal": "SIGNOPE"}));
        let e = profile(&bad, &init(), &fallback, None).unwrap_err();
        assert!(e.to_string().contains("image's stop signal"), "{e}");
        assert!(validate("SIGTERM").is_ok());
        assert!(validate("").is_err());
    }

    #[test]
    fn saved_and_loaded() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(BootProfile::load(t.path()), None);
        let p = profile(
            &image(json!({"init_system": "systemd"})),
            &init(),
            &StopSignal::default(),
            Some(7),
        )
        .unwrap();
        p.save(t.path()).unwrap();
        assert_eq!(BootProfile::load(t.path()), Some(p));
        std::fs::write(t.path().join(BOOT_FILE), "{").unwrap();
        assert_eq!(BootProfile::load(t.path()), None);
    }
}
