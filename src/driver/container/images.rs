//! The driver's image store: import (with progress), list, get and delete of cached
//! images.

use super::*;

pub(super) fn validate_alias(alias: &str) -> Result<(), DriverError> {
    let ok = !alias.is_empty()
        && alias.len() <= 128
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
        && !alias.contains("..");
    if ok {
        Ok(())
    } else {
        Err(DriverError::Invalid(format!(
            "invalid image alias {alias:?}: use letters, digits and - _ . : /"
        )))
    }
}

#[async_trait::async_trait]
impl ImageStore for ContainerDriver {
    /// Imports an image file (already on disk) under an optional alias.
    async fn import_image(
        &self,
        archive: &Path,
        alias: Option<&str>,
        declared: Option<crate::image::format::Declared>,
    ) -> Result<ImageRecord, DriverError> {
        self.import_image_with(archive, alias, declared, &serde_json::Map::new())
            .await
    }

    async fn import_image_with(
        &self,
        archive: &Path,
        alias: Option<&str>,
        declared: Option<crate::image::format::Declared>,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ImageRecord, DriverError> {
        for (k, v) in given {
            match (k.as_str(), v.as_str()) {
                (sysinit::IMAGE_STOP_SIGNAL, Some(sig)) => sysinit::validate(sig)?,
                _ => {
                    return Err(DriverError::Invalid(format!(
                        "image property {k:?} cannot be given (only {})",
                        sysinit::IMAGE_STOP_SIGNAL
                    )))
                }
            }
        }
        let _one_at_a_time = self.import_lock.lock().await;
        crash_point("import.after_upload");
        if let Some(a) = alias {
            validate_alias(a)?;
            if self.store.find_image(a).await?.is_some() {
                return Err(DriverError::Conflict(format!(
                    "image alias {a} already exists"
                )));
            }
        }
        let fp = crate::image::fingerprint_blocking(archive).await?;
        if let Some(existing) = self.store.find_image(&fp).await? {
            return Err(DriverError::Conflict(format!(
                "this image is already imported as {}",
                existing.alias.unwrap_or(existing.fingerprint)
            )));
        }
        let mut imported = self.images.import(archive, declared).await?;
        crash_point("import.after_unpack");
        if let Some(props) = imported.properties.as_object_mut() {
            props.extend(given.clone());
        }
        let rec = ImageRecord {
            fingerprint: imported.fingerprint.clone(),
            alias: alias.map(str::to_string),
            size: imported.size as i64,
            created_at: Store::timestamp(),
            properties: imported.properties,
        };
        if let Err(e) = self.store.insert_image(&rec).await {
            let _ = self.images.remove(&imported.fingerprint).await;
            return Err(e.into());
        }
        crash_point("import.after_record");
        tracing::info!(fingerprint = %rec.fingerprint, alias = ?rec.alias, files = imported.stats.files, "image imported");
        Ok(rec)
    }

    /// A path for an upload in progress (removed by the caller).
    fn image_upload_path(&self) -> PathBuf {
        self.images.upload_path()
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>, DriverError> {
        Ok(self.store.list_images().await?)
    }

    async fn get_image(&self, key: &str) -> Result<ImageRecord, DriverError> {
        self.store
            .find_image(key)
            .await?
            .ok_or_else(|| DriverError::ImageNotFound(key.to_string()))
    }

    /// Deletes an image no instance uses and no launch is using.
    async fn delete_image(&self, key: &str) -> Result<(), DriverError> {
        let img = self.get_image(key).await?;
        let guard = self
            .images
            .begin_delete(&img.fingerprint)
            .map_err(image_busy)?;
        let users = self.store.image_users(&img.fingerprint).await?;
        if !users.is_empty() {
            return Err(DriverError::Conflict(format!(
                "image {key} is used by instances: {}",
                users.join(", ")
            )));
        }
        self.store.delete_image(&img.fingerprint).await?;
        crash_point("image_delete.after_record");
        self.images.remove_files(&img.fingerprint, guard).await?;
        Ok(())
    }
}

/// A writer that only counts what it is given.
pub(super) struct ByteCounter(pub(super) std::sync::Arc<std::sync::atomic::AtomicU64>);

impl std::io::Write for ByteCounter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
