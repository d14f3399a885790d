//! Snapshots of instance roots for the container driver: the freeze, capture
//! and thaw of a running instance, and the restore and delete of snapshots,
//! over `storage::snapshot` and the store's snapshot records.

use std::time::{Duration, Instant};

use super::{blocking, ContainerDriver};
use crate::driver::{DriverError, ImageStore, SnapshotMade};
use crate::runtime::cgroups::{self, CgroupPath};
use crate::runtime::Status;
use crate::storage::export::{self, Unshift};
use crate::storage::snapshot;
use crate::store::{InstanceRecord, SnapshotRecord, Store};

/// How long a freeze may take before the snapshot gives up (and thaws).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Snapshot names: 1-63 letters, digits, dots, dashes and underscores,
/// starting with a letter or digit (they name a directory).
pub fn validate_snapshot_name(name: &str) -> Result<(), DriverError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(DriverError::Invalid(format!(
            "invalid snapshot name {name:?}: use 1-63 letters, digits, dots, dashes and \
             underscores, starting with a letter or digit"
        )))
    }
}

impl ContainerDriver {
    async fn snapshot_record(
        &self,
        rec: &InstanceRecord,
        name: &str,
    ) -> Result<SnapshotRecord, DriverError> {
        validate_snapshot_name(name)?;
        self.store
            .find_snapshot(&rec.uuid, name)
            .await?
            .ok_or_else(|| DriverError::NotFound(format!("{}/{name} (snapshot)", rec.name)))
    }

    pub(super) async fn take_snapshot(
        &self,
        uuid: &str,
        name: &str,
    ) -> Result<SnapshotMade, DriverError> {
        validate_snapshot_name(name)?;
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        if self.store.find_snapshot(&rec.uuid, name).await?.is_some() {
            return Err(DriverError::Conflict(format!(
                "instance {} already has a snapshot {name}",
                rec.name
            )));
        }
        let dir = self.instance_dir(&rec.uuid);
        let kind = self.storage.kind;
        // A directory without a record: a snapshot a crash interrupted.
        let d = dir.clone();
        let n = name.to_string();
        blocking("snapshot cleanup", move || {
            snapshot::remove(&d, &n).map_err(DriverError::from)
        })
        .await?;
        let status = self.runtime.state(&rec.uuid).await?.map(|s| s.status);
        // A running instance is frozen around the capture; a frozen one stays
        // frozen (it is the user's); a stopped one has nothing to freeze.
        let freeze = status == Some(Status::Running);
        let mode = self.runtime.cgroup_mode;
        let root = self.cgroup_root.clone();
        let cg = CgroupPath::new(self.cgroup_path(&rec.uuid))
            .map_err(|e| DriverError::Invalid(e.to_string()))?;
        let n = name.to_string();
        let d = dir.clone();
        let uuid_owned = rec.uuid.clone();
        let (stats, pause) = blocking("snapshot capture", move || {
            let started = Instant::now();
            if freeze {
                cgroups::freeze(mode, &root, &cg, FREEZE_TIMEOUT).map_err(|e| {
                    DriverError::Conflict(format!("cannot freeze the instance: {e}"))
                })?;
            }
            let captured = snapshot::capture(kind, &d, &n);
            let pause = freeze.then(|| started.elapsed());
            if freeze {
                // Always thawed, whatever the capture did.
                if let Err(e) = cgroups::set_frozen(mode, &root, &cg, false) {
                    tracing::error!(uuid = %uuid_owned, error = %e, "instance not thawed after its snapshot");
                    let _ = snapshot::remove(&d, &n);
                    return Err(DriverError::Invalid(format!(
                        "the instance could not be thawed after its snapshot: {e}"
                    )));
                }
            }
            Ok((captured?, pause))
        })
        .await?;
        tracing::info!(
            uuid = %rec.uuid,
            snapshot = name,
            pause_ms = pause.map(|p| p.as_secs_f64() * 1000.0),
            entries = stats.entries,
            bytes = stats.bytes,
            "snapshot taken"
        );
        let d = dir.clone();
        let n = name.to_string();
        let size = blocking("snapshot size", move || Ok(snapshot::size(&d, &n))).await?;
        let record = SnapshotRecord {
            instance: rec.uuid.clone(),
            name: name.to_string(),
            image: rec.image.clone(),
            storage: kind.as_str().to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            created_at: Store::timestamp(),
        };
        if let Err(e) = self.store.insert_snapshot(&record).await {
            let _ = snapshot::remove(&dir, name);
            return Err(e.into());
        }
        Ok(SnapshotMade {
            snapshot: record,
            pause,
        })
    }

    pub(super) async fn list_snapshots(
        &self,
        uuid: &str,
    ) -> Result<Vec<SnapshotRecord>, DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        Ok(self.store.list_snapshots(&rec.uuid).await?)
    }

    pub(super) async fn get_snapshot(
        &self,
        uuid: &str,
        name: &str,
    ) -> Result<SnapshotRecord, DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        self.snapshot_record(&rec, name).await
    }

    pub(super) async fn restore_snapshot(&self, uuid: &str, name: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        let snap = self.snapshot_record(&rec, name).await?;
        if snap.storage != self.storage.kind.as_str() {
            return Err(DriverError::Conflict(format!(
                "snapshot {name} was taken on a {} pool, this host uses {}",
                snap.storage,
                self.storage.kind.as_str()
            )));
        }
        match self.runtime.state(&rec.uuid).await?.map(|s| s.status) {
            Some(Status::Running | Status::Paused) => {
                return Err(DriverError::Conflict(format!(
                    "instance {} is running: stop it before restoring snapshot {name}",
                    rec.name
                )))
            }
            // A container left created or stopped holds the root's mount.
            Some(_) => self.runtime.delete(&rec.uuid, true).await?,
            None => {}
        }
        // The image the snapshot's state lies over must still be here.
        let image = self.get_image(&snap.image).await?;
        let dir = self.instance_dir(&rec.uuid);
        self.storage.unmount(&dir).await?;
        let kind = self.storage.kind;
        let n = name.to_string();
        blocking("snapshot restore", move || {
            snapshot::restore(kind, &dir, &n).map_err(DriverError::from)
        })
        .await?;
        if image.fingerprint != rec.image {
            let mut spec = Self::spec_of(&rec)?;
            spec.image = image.fingerprint.clone();
            let json = serde_json::to_string(&spec)
                .map_err(|e| DriverError::Invalid(format!("cannot encode spec: {e}")))?;
            self.store.set_spec(&rec.uuid, &json).await?;
            self.store.set_image(&rec.uuid, &image.fingerprint).await?;
        }
        tracing::info!(uuid = %rec.uuid, snapshot = name, "snapshot restored");
        Ok(())
    }

    pub(super) async fn delete_snapshot(&self, uuid: &str, name: &str) -> Result<(), DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        self.snapshot_record(&rec, name).await?;
        // The record goes first: a crash between leaves a directory the
        // next snapshot of that name removes, never a record without files.
        self.store.delete_snapshot(&rec.uuid, name).await?;
        let dir = self.instance_dir(&rec.uuid);
        let n = name.to_string();
        blocking("snapshot delete", move || {
            snapshot::remove(&dir, &n).map_err(DriverError::from)
        })
        .await
    }
}

impl ContainerDriver {
    /// Streams the snapshot `name` as a root tarball (the image's root with
    /// the snapshot over it, owners shifted back to the image's ids) to `out`.
    pub(super) async fn export_snapshot(
        &self,
        uuid: &str,
        name: &str,
        measure: bool,
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<u64, DriverError> {
        let rec = self.record_by_uuid(uuid).await?;
        // Held until the last byte is written: a stop, restore or delete
        // asked for meanwhile waits rather than pulling the files (and the
        // export's mount) from under the stream.
        let lock = self.lock_for(&rec.uuid);
        let _g = lock.lock().await;
        // Deleted while this waited for the lock: not found.
        let rec = self.record_by_uuid(&rec.uuid).await?;
        let snap = self.snapshot_record(&rec, name).await?;
        let pin = self.images.pin(&snap.image).map_err(super::image_busy)?;
        let idmap = self.idmap_of(&rec);
        let whole_root = self.storage.kind == crate::storage::StorageKind::Btrfs;
        let lower = match idmap {
            Some(m) if !whole_root => self.images.shifted_rootfs(&snap.image, m.host_base).await?,
            _ => self.images.rootfs(&snap.image),
        };
        let dir = self.instance_dir(&rec.uuid);
        // A btrfs root seen through an idmapped mount holds the image's own
        // ids: nothing to shift back.
        let idmap =
            idmap.filter(|_| !(whole_root && crate::storage::btrfs::is_idmapped_root(&dir)));
        let ids = idmap.map(|m| Unshift {
            base: m.host_base,
            size: m.size,
        });
        let kind = self.storage.kind;
        let n = name.to_string();
        let stats = blocking("snapshot export", move || {
            let _pin = pin;
            export::export_snapshot(kind, &dir, &n, &lower, ids, measure, out)
                .map_err(DriverError::from)
        })
        .await?;
        tracing::info!(uuid = %rec.uuid, snapshot = name, entries = stats.entries, bytes = stats.bytes, "snapshot exported");
        Ok(stats.bytes)
    }

    /// An image of the instance as it is now (`lxc publish`): a snapshot
    /// (frozen for its copy when running), exported as a root tarball and
    /// imported; the snapshot is removed after.
    pub(super) async fn publish_instance(
        &self,
        uuid: &str,
        alias: Option<&str>,
    ) -> Result<crate::store::ImageRecord, DriverError> {
        if let Some(a) = alias {
            super::validate_alias(a)?;
            if self.store.find_image(a).await?.is_some() {
                return Err(DriverError::Conflict(format!(
                    "image alias {a} already exists"
                )));
            }
        }
        let name = format!("publish-{}", uuid::Uuid::new_v4().simple());
        self.take_snapshot(uuid, &name).await?;
        let tarball = self.images.upload_path();
        let result = async {
            let file = std::fs::File::create(&tarball).map_err(super::io_err(&tarball))?;
            let out = Box::new(std::io::BufWriter::new(file));
            self.export_snapshot(uuid, &name, false, out).await?;
            self.import_image(&tarball, alias, None).await
        }
        .await;
        let _ = std::fs::remove_file(&tarball);
        if let Err(e) = self.delete_snapshot(uuid, &name).await {
            tracing::warn!(uuid, snapshot = %name, error = %e, "publish snapshot not removed");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names() {
        for good in ["s1", "before-upgrade", "2026.12.04", "a_b"] {
            validate_snapshot_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad:?}");
        }
    }
}
