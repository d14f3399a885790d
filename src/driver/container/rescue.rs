//! Rescue of an instance (Nova's `rescue` / `unrescue`): the container
//! boots from another image's root, in the instance's own id range and with
//! its own interfaces, and the instance's root is mounted read-write at
//! `/mnt` inside it (nova-lxd's convention). The rescue root is an overlay
//! of its own in `<instance>/rescue/`, whose `image` file names the rescue
//! image: while it is there, every boot of the instance (a restart of the
//! daemon too) is a rescue boot. An unrescue or a delete removes it all.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{blocking, drive_err, io_err, ContainerDriver};
use crate::driver::{configdrive, ConfigDrive, DriverError, ImageStore};
use crate::fsutil;
use crate::storage::Storage;
use crate::store::InstanceRecord;

/// The rescue directory inside an instance's directory.
const RESCUE_DIR: &str = "rescue";
/// The file in it naming the rescue image's fingerprint.
const RESCUE_IMAGE: &str = "image";
/// Where the instance's own root appears in the rescue container.
pub const RESCUE_MOUNT: &str = "/mnt";

/// The bundle's `config.json` turned into a rescue boot: root, init and a
/// read-write bind of the instance's root at [`RESCUE_MOUNT`].
pub fn rescue_config(
    mut config: Value,
    rescue_root: &Path,
    instance_root: &Path,
    args: &[String],
    drive: Option<&Path>,
) -> Result<Value, DriverError> {
    let bad = |what: &str| DriverError::Invalid(format!("bundle config without {what}"));
    let root = config
        .get_mut("root")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("a root"))?;
    root.insert("path".into(), json!(rescue_root));
    root.insert("readonly".into(), json!(false));
    let process = config
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("a process"))?;
    process.insert("args".into(), json!(args));
    let mounts = config
        .get_mut("mounts")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("mounts"))?;
    mounts.retain(|m| m.get("destination").and_then(Value::as_str) != Some(RESCUE_MOUNT));
    if let Some(drive) = drive {
        // The rescue's own config drive where the instance's was.
        for m in mounts.iter_mut() {
            if m.get("destination").and_then(Value::as_str) == Some(configdrive::SEED_DIR) {
                m["source"] = json!(drive);
            }
        }
    }
    mounts.push(json!({
        "destination": RESCUE_MOUNT,
        "type": "bind",
        "source": instance_root,
        "options": ["rbind", "rw"],
    }));
    Ok(config)
}

impl ContainerDriver {
    fn rescue_dir(&self, uuid: &str) -> PathBuf {
        self.instance_dir(uuid).join(RESCUE_DIR)
    }

    /// The rescue image's fingerprint while the instance is rescued.
    pub(super) fn rescue_image(&self, uuid: &str) -> Option<String> {
        std::fs::read_to_string(self.rescue_dir(uuid).join(RESCUE_IMAGE))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Rescues the stopped instance from the cached image `image`.
    pub(super) async fn start_rescue(
        &self,
        uuid: &str,
        image: &str,
        drive: Option<ConfigDrive>,
    ) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        let rescue_image = self.get_image(image).await?;
        if !self.images.has(&rescue_image.fingerprint) {
            return Err(DriverError::ImageNotFound(format!(
                "{image} (its files are missing from the cache)"
            )));
        }
        // Stopped (the manager powered it off; a forced stop otherwise).
        self.stop_container(&rec.uuid, std::time::Duration::ZERO, true)
            .await?;
        let dir = self.rescue_dir(&rec.uuid);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let marker = dir.join(RESCUE_IMAGE);
        fsutil::write_atomic(&marker, rescue_image.fingerprint.as_bytes(), 0o600)
            .map_err(io_err(&marker))?;
        let booted = async {
            if let Some(cd) = drive {
                let root_id = self.idmap_of(&rec).map(|m| m.host_base).unwrap_or(0);
                let d = dir.clone();
                blocking("rescue config drive", move || {
                    cd.write(&d, root_id, root_id).map_err(drive_err)
                })
                .await?;
            }
            self.boot(&rec).await?;
            self.store.set_desired(&rec.uuid, "running").await?;
            Ok::<(), DriverError>(())
        }
        .await;
        if let Err(e) = booted {
            tracing::warn!(uuid, error = %e, "rescue failed, rolling back");
            if let Err(s) = self
                .stop_container(&rec.uuid, std::time::Duration::ZERO, true)
                .await
            {
                tracing::warn!(uuid, error = %s, "rescue container not stopped");
            }
            if let Err(r) = self.release_rescue(&rec.uuid).await {
                tracing::error!(uuid, error = %r, "rescue root not removed");
            }
            return Err(e);
        }
        tracing::info!(uuid, image = %rescue_image.fingerprint, "instance rescued");
        Ok(())
    }

    /// Ends the rescue (if any) and boots the instance from its own root.
    pub(super) async fn end_rescue(&self, uuid: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.stop_container(&rec.uuid, std::time::Duration::ZERO, true)
            .await?;
        self.release_rescue(&rec.uuid).await?;
        self.boot(&rec).await?;
        self.store.set_desired(&rec.uuid, "running").await?;
        tracing::info!(uuid, "instance unrescued");
        Ok(())
    }

    /// After `prepare` wrote the instance's own bundle: when the instance
    /// is rescued, its rescue root is made (or mounted again) and the
    /// bundle turned into the rescue boot.
    pub(super) async fn apply_rescue(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let Some(fingerprint) = self.rescue_image(&rec.uuid) else {
            return Ok(());
        };
        let image = self.get_image(&fingerprint).await?;
        let _pin = self
            .images
            .pin(&image.fingerprint)
            .map_err(super::image_busy)?;
        let spec = Self::spec_of(rec)?;
        let args = self.init_args(&spec, &image)?;
        let idmap = self.idmap_of(rec);
        let lower = match idmap {
            Some(m) if !self.storage.idmapped => {
                self.images
                    .shifted_rootfs(&image.fingerprint, m.host_base)
                    .await?
            }
            _ => self.images.rootfs(&image.fingerprint),
        };
        let dir = self.rescue_dir(&rec.uuid);
        let rescue_root = self
            .storage
            .prepare(
                &dir,
                &lower,
                idmap.map(|m| (m.host_base, m.size)),
                None,
                self.images.copy_limits(),
            )
            .await?;
        let bundle = self.instance_dir(&rec.uuid).join("config.json");
        let text = std::fs::read(&bundle).map_err(io_err(&bundle))?;
        let config: Value = serde_json::from_slice(&text)
            .map_err(|e| DriverError::Invalid(format!("bad bundle config: {e}")))?;
        let instance_root = Storage::rootfs(&self.instance_dir(&rec.uuid));
        let drive = dir.join(configdrive::DRIVE_DIR);
        let drive = drive.is_dir().then_some(drive.as_path());
        let config = rescue_config(config, &rescue_root, &instance_root, &args, drive)?;
        let text = serde_json::to_vec_pretty(&config)
            .map_err(|e| DriverError::Invalid(format!("cannot encode bundle config: {e}")))?;
        fsutil::write_atomic(&bundle, &text, 0o600).map_err(io_err(&bundle))?;
        Ok(())
    }

    /// Unmounts and removes the rescue root and its marker (nothing to do
    /// when the instance is not rescued).
    pub(super) async fn release_rescue(&self, uuid: &str) -> Result<(), DriverError> {
        let dir = self.rescue_dir(uuid);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        self.storage.release(&dir).await?;
        blocking("rescue removal", move || {
            // Never through a mount.
            if let Some(mp) = fsutil::mounts_under(&dir).into_iter().next() {
                return Err(DriverError::Invalid(format!(
                    "{} is still mounted: the rescue directory {} is kept",
                    mp.display(),
                    dir.display()
                )));
            }
            fsutil::remove_tree(&dir).map_err(io_err(&dir))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rescue_boot_has_the_rescue_root_and_the_instance_root_at_mnt() {
        let config = json!({
            "root": {"path": "/i/rootfs", "readonly": false},
            "process": {"args": ["/sbin/init"]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        });
        let out = rescue_config(
            config,
            Path::new("/i/rescue/rootfs"),
            Path::new("/i/rootfs"),
            &["/bin/sh".to_string()],
            None,
        )
        .unwrap();
        assert_eq!(out["root"]["path"], "/i/rescue/rootfs");
        assert_eq!(out["process"]["args"], json!(["/bin/sh"]));
        let mounts = out["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[1],
            json!({"destination": "/mnt", "type": "bind", "source": "/i/rootfs",
                   "options": ["rbind", "rw"]})
        );
        // applied twice: one /mnt
        let again = rescue_config(
            out,
            Path::new("/i/rescue/rootfs"),
            Path::new("/i/rootfs"),
            &["/bin/sh".to_string()],
            None,
        )
        .unwrap();
        assert_eq!(again["mounts"].as_array().unwrap().len(), 2);
        assert!(rescue_config(json!({}), Path::new("/r"), Path::new("/i"), &[], None).is_err());
    }

    #[test]
    fn a_rescue_drive_replaces_the_instance_drive() {
        let config = json!({
            "root": {"path": "/i/rootfs"},
            "process": {"args": ["/sbin/init"]},
            "mounts": [{"destination": configdrive::SEED_DIR, "type": "bind",
                        "source": "/i/config-drive", "options": ["rbind", "ro"]}],
        });
        let out = rescue_config(
            config,
            Path::new("/i/rescue/rootfs"),
            Path::new("/i/rootfs"),
            &[],
            Some(Path::new("/i/rescue/config-drive")),
        )
        .unwrap();
        assert_eq!(out["mounts"][0]["source"], "/i/rescue/config-drive");
        assert_eq!(out["mounts"][0]["options"], json!(["rbind", "ro"]));
    }
}
