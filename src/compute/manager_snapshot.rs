//! Nova's `snapshot_instance` and `backup_instance` for corral's containers:
//! nova-compute 34's task_state sequence (`image_snapshot` (snapshot only)
//! -> `image_pending_upload` -> `image_uploading` -> none, each saved with
//! the expected state nova uses), a consistent snapshot through the driver
//! (freeze, capture, thaw), streamed to Glance as a root tarball, and the
//! rotation of backups.

use serde_json::{json, Map, Value};

use super::{Inst, Manager};
use crate::compute::ComputeError;
use crate::rpc::Context;

const IMAGE_SNAPSHOT_PENDING: &str = "image_snapshot_pending";
const IMAGE_SNAPSHOT: &str = "image_snapshot";
const IMAGE_BACKUP: &str = "image_backup";
const IMAGE_PENDING_UPLOAD: &str = "image_pending_upload";
const IMAGE_UPLOADING: &str = "image_uploading";

/// The Glance formats of corral's own images: a root tarball stored as is.
const DISK_FORMAT: &str = "raw";
const CONTAINER_FORMAT: &str = "bare";

/// Chunks sent to Glance (bytes).
const CHUNK: usize = 256 * 1024;

/// An `io::Write` that hands full chunks to the upload; the upload reads
/// them as a stream, so the tarball is never stored.
struct ChannelWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload ended"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Manager {
    /// `snapshot_instance` (`backup` None) or `backup_instance` (type and
    /// rotation) into the Glance image nova-api made.
    pub(super) async fn do_snapshot(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        image_id: &str,
        backup: Option<(&str, i64)>,
    ) -> Result<(), ComputeError> {
        let glance = self
            .glance
            .as_ref()
            .ok_or_else(|| ComputeError::Invalid("no Glance endpoint is configured".into()))?;
        let token = ctx.get("auth_token").and_then(Value::as_str);
        let request_id = ctx.get("request_id").and_then(Value::as_str);
        let first = if backup.is_some() {
            IMAGE_BACKUP
        } else {
            // The API set image_snapshot_pending; a restarted compute may
            // have cleared it, as nova says.
            self.save(
                ctx,
                inst,
                &[("task_state", json!(IMAGE_SNAPSHOT))],
                Some(json!(IMAGE_SNAPSHOT_PENDING)),
            )
            .await?;
            IMAGE_SNAPSHOT
        };
        let power = self.current_power(&inst.uuid).await;
        self.save(ctx, inst, &[("power_state", json!(power))], None)
            .await?;
        let states = (first, IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING);
        let result = self
            .snapshot_upload(ctx, inst, image_id, states, token, request_id)
            .await;
        if let Err(e) = result {
            // delete_image_on_error: the half-made image goes.
            if let Err(d) = glance.delete(image_id, token, request_id).await {
                tracing::warn!(uuid = %inst.uuid, image_id, error = %d.full_message(), "failed snapshot image not deleted");
            }
            return Err(e);
        }
        self.save(
            ctx,
            inst,
            &[("task_state", Value::Null)],
            Some(json!(IMAGE_UPLOADING)),
        )
        .await?;
        if let Some((backup_type, rotation)) = backup {
            self.rotate_backups(
                &inst.uuid,
                image_id,
                backup_type,
                rotation,
                token,
                request_id,
            )
            .await?;
        }
        Ok(())
    }

    /// The host snapshot uploaded into `image_id`; `states`: the task state
    /// before, then those of the pending upload and the upload (a shelve
    /// has its own).
    pub(super) async fn snapshot_upload(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        image_id: &str,
        states: (&str, &str, &str),
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<(), ComputeError> {
        let Some(glance) = self.glance.as_ref() else {
            return Err(ComputeError::Invalid("no Glance endpoint".into()));
        };
        let uuid = inst.uuid.clone();
        let snap = format!("nova-{image_id}");
        // A snapshot of this image left by an earlier try goes first.
        let _ = self.driver.snapshot_delete(&uuid, &snap).await;
        let made = self.driver.snapshot_create(&uuid, &snap).await?;
        tracing::info!(
            %uuid,
            image_id,
            pause_ms = made.pause.map(|p| p.as_secs_f64() * 1000.0),
            "instance snapshotted on the host"
        );
        let uploaded = async {
            let (first, pending, uploading) = states;
            self.save(
                ctx,
                inst,
                &[("task_state", json!(pending))],
                Some(json!(first)),
            )
            .await?;
            self.save(
                ctx,
                inst,
                &[("task_state", json!(uploading))],
                Some(json!(pending)),
            )
            .await?;
            // The libvirt driver's _create_snapshot_metadata.
            let mut meta = Map::new();
            meta.insert("disk_format".into(), json!(DISK_FORMAT));
            meta.insert("container_format".into(), json!(CONTAINER_FORMAT));
            meta.insert("image_location".into(), json!("snapshot"));
            meta.insert("image_state".into(), json!("available"));
            if let Some(p) = inst.str("project_id") {
                meta.insert("owner_id".into(), json!(p));
            }
            if let Some(os) = inst.str("os_type").filter(|s| !s.is_empty()) {
                meta.insert("os_type".into(), json!(os));
            }
            glance.update(image_id, &meta, token, request_id).await?;
            let len = self.driver.snapshot_export_len(&uuid, &snap).await?;
            // The export writes into a bounded channel the upload reads: the
            // tarball is never stored. An export error is sent down the
            // stream, so Glance sees the upload fail, never a short image.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
            let errors = tx.clone();
            let writer = ChannelWriter {
                buf: Vec::with_capacity(CHUNK),
                tx,
            };
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let export = async {
                let r = self
                    .driver
                    .snapshot_export(&uuid, &snap, Box::new(writer))
                    .await;
                if let Err(e) = &r {
                    let _ = errors.send(Err(std::io::Error::other(e.to_string()))).await;
                }
                drop(errors);
                r
            };
            let (exported, sent) = tokio::join!(
                export,
                glance.upload(image_id, len, stream, token, request_id)
            );
            let bytes = exported?;
            sent?;
            // Glance must hold all of it: a server that dropped the body
            // would leave an empty "active" image.
            let shown = glance.show(image_id, token, request_id).await?;
            let stored = shown.get("size").and_then(Value::as_u64);
            if stored != Some(len) {
                return Err(ComputeError::Glance(format!(
                    "image {image_id}: Glance holds {stored:?} bytes of the {len} uploaded"
                )));
            }
            tracing::info!(%uuid, image_id, bytes, tarball = len, "snapshot uploaded to Glance");
            Ok::<(), ComputeError>(())
        }
        .await;
        if let Err(e) = self.driver.snapshot_delete(&uuid, &snap).await {
            tracing::warn!(%uuid, snapshot = %snap, error = %e, "host snapshot not removed");
        }
        uploaded
    }

    /// nova's `_rotate_backups`: the oldest backups of this type beyond
    /// `rotation` are deleted; `newest` is the backup just made.
    async fn rotate_backups(
        &self,
        uuid: &str,
        newest: &str,
        backup_type: &str,
        rotation: i64,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<(), ComputeError> {
        let Some(glance) = self.glance.as_ref() else {
            return Ok(());
        };
        let images = glance
            .list(
                &[
                    ("image_type", "backup"),
                    ("backup_type", backup_type),
                    ("instance_uuid", uuid),
                ],
                token,
                request_id,
            )
            .await?;
        let keep = usize::try_from(rotation.max(0)).unwrap_or(0);
        for id in rotated_out(&images, newest, keep) {
            tracing::info!(uuid, image_id = id, backup_type, "rotating out a backup");
            glance.delete(id, token, request_id).await?;
        }
        Ok(())
    }
}

/// The backups past the `keep` newest, from Glance's list newest first.
/// Glance's `created_at` has whole seconds, so two backups made within one
/// second tie and come in any order: the one just made (`newest`) is the
/// newest whatever the list says.
fn rotated_out<'a>(images: &'a [Value], newest: &'a str, keep: usize) -> Vec<&'a str> {
    let ids = images
        .iter()
        .filter_map(|img| img.get("id").and_then(Value::as_str));
    let listed_newest = ids.clone().any(|id| id == newest);
    let ordered: Vec<&str> = listed_newest
        .then_some(newest)
        .into_iter()
        .chain(ids.filter(|id| *id != newest))
        .collect();
    ordered.into_iter().skip(keep).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_backup_just_made_when_created_at_ties() {
        // Made within one second: Glance listed the older first.
        let listed = [json!({"id": "bk0"}), json!({"id": "bk1"})];
        assert_eq!(rotated_out(&listed, "bk1", 1), ["bk0"]);
        assert_eq!(rotated_out(&listed, "bk1", 2), Vec::<&str>::new());
        assert_eq!(rotated_out(&listed, "bk1", 0), ["bk1", "bk0"]);
        // In order, and the one just made not (yet) listed.
        let listed = [json!({"id": "c"}), json!({"id": "b"}), json!({"id": "a"})];
        assert_eq!(rotated_out(&listed, "c", 2), ["a"]);
        assert_eq!(rotated_out(&listed, "x", 1), ["b", "a"]);
    }
}
