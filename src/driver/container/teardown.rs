//! Removing an instance and keeping the host clean: delete, leftover checks, console
//! log rotation, and the reconcile of the store with the runtime at start-up.

use super::*;

impl ContainerDriver {
    /// Removes container, cgroups, root, files and the store record.
    pub(super) async fn remove_everything(&self, uuid: &str) -> Result<(), DriverError> {
        self.store.set_phase(uuid, Phase::Deleting).await?;
        crash_point("remove.after_phase");
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if self.runtime.state(uuid).await?.is_some() {
            self.runtime.delete(uuid, true).await?;
        }
        crash_point("remove.after_runtime");
        // Before the directory (and the record) goes. Every step is tried;
        // what cannot be removed (an OVS port while ovsdb is down) is named
        // in the log, and the delete goes on: a delete (or a start-up) that
        // fails for a stray port would keep the whole instance.
        let left = netdev::load(&self.instance_dir(uuid)).unwrap_or_default();
        if let Err(e) = self.unplug_vifs(uuid).await {
            let devices: Vec<String> = left.iter().flat_map(|v| v.host_devices()).collect();
            let ports: Vec<String> = left
                .iter()
                .filter_map(|v| v.ovs_port().map(|(b, p)| format!("{b}/{p}")))
                .collect();
            tracing::error!(uuid, error = %e, ?devices, ?ports, "virtual interfaces not fully unplugged: remove what is left by hand");
        }
        self.stop_console_relay(uuid);
        self.cleanup_cgroups(uuid);
        crash_point("remove.after_cgroups");
        let dir = self.instance_dir(uuid);
        // Disks first: the tree removal below must never reach into them.
        let d = dir.clone();
        blocking("device release", move || {
            devices::release(&d).map_err(DriverError::Device)
        })
        .await?;
        crash_point("remove.after_devices");
        self.release_rescue(uuid).await?;
        self.storage.release(&dir).await?;
        let d = dir.clone();
        blocking("ephemeral disk release", move || {
            Ok(ephemeral::release(&d)?)
        })
        .await?;
        self.storage.release_snapshots(&dir).await?;
        crash_point("remove.after_root");
        let d = dir.clone();
        blocking("instance removal", move || {
            // Never through a mount: whatever is still mounted in the
            // instance (a disk, a root) is the host's or another's data.
            if let Some(mp) = fsutil::mounts_under(&d).into_iter().next() {
                return Err(DriverError::Invalid(format!(
                    "{} is still mounted: the instance directory {} is kept",
                    mp.display(),
                    d.display()
                )));
            }
            fsutil::remove_tree(&d).map_err(io_err(&d))
        })
        .await?;
        crash_point("remove.after_files");
        self.store.delete_instance(uuid).await?;
        let left = self.leftovers(uuid);
        if !left.is_empty() {
            tracing::error!(
                uuid,
                ?left,
                "deleted, but these are left: remove them by hand"
            );
        }
        Ok(())
    }

    pub(super) fn cleanup_cgroups(&self, uuid: &str) {
        let Ok(path) = CgroupPath::new(self.cgroup_path(uuid)) else {
            return;
        };
        if let Err(e) = cgroups::cleanup(self.runtime.cgroup_mode, &self.cgroup_root, &path) {
            tracing::warn!(uuid, error = %e, "cgroup cleanup incomplete");
        }
    }

    /// What of a uuid is still on the host after a delete: its directory, the
    /// runtime's state or its cgroup (named in the log after a delete, and checked
    /// by the tests).
    pub fn leftovers(&self, uuid: &str) -> Vec<String> {
        let mut left = Vec::new();
        let dir = self.instance_dir(uuid);
        if dir.exists() {
            left.push(dir.display().to_string());
        }
        if self.runtime.root.join(uuid).exists() {
            left.push(self.runtime.root.join(uuid).display().to_string());
        }
        if let Ok(path) = CgroupPath::new(self.cgroup_path(uuid)) {
            if cgroups::exists(self.runtime.cgroup_mode, &self.cgroup_root, &path).unwrap_or(false)
            {
                left.push(format!("cgroup {}", self.cgroup_path(uuid)));
            }
        }
        left
    }

    /// Keeps each console log under its size bound: when a log passes it, it
    /// becomes `console.log.1` and a fresh log starts (copy and truncate, since
    /// the container holds the file open for append).
    pub async fn rotate_console_logs(&self) -> Result<(), DriverError> {
        let max = self.cfg.corral.console_log_max_bytes;
        for uuid in self.store.list_instance_uuids().await? {
            let path = self.console_path(&uuid);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() <= max {
                continue;
            }
            let rotated = path.with_extension("log.1");
            let res = (|| -> std::io::Result<()> {
                let mut f = std::fs::File::open(&path)?;
                let keep = max.min(meta.len());
                f.seek(SeekFrom::Start(meta.len() - keep))?;
                let mut buf = Vec::with_capacity(keep as usize);
                f.take(keep).read_to_end(&mut buf)?;
                std::fs::write(&rotated, &buf)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(0)
            })();
            if let Err(e) = res {
                tracing::warn!(%uuid, error = %e, "console log rotation failed");
            }
        }
        Ok(())
    }

    /// Reconciles the store with the runtime after a start: finishes or rolls
    /// back what was in flight, reports containers that died, and orphans.
    pub async fn reconcile(&self) -> Result<ReconcileReport, DriverError> {
        let mut report = ReconcileReport::default();
        // Half-made trees can be large: remove them off the async workers.
        let images_dir = self.images.dir().to_path_buf();
        let instances_dir = self.cfg.instances_dir();
        let (images_left, roots_left) = tokio::task::spawn_blocking(move || {
            (
                ImageCache::remove_leftovers_in(&images_dir),
                Storage::remove_leftovers(&instances_dir),
            )
        })
        .await
        .map_err(|e| crate::image::ImageError::Join(e.to_string()))?;
        for path in images_left {
            tracing::warn!(path = %path.display(), "removed what an interrupted image upload, import or copy left");
        }
        for path in roots_left {
            tracing::warn!(path = %path.display(), "removed an interrupted root copy");
        }
        let images: std::collections::HashSet<String> = self
            .store
            .list_images()
            .await?
            .into_iter()
            .map(|i| i.fingerprint)
            .collect();
        for path in self.images.remove_unknown(&images) {
            tracing::warn!(path = %path.display(), "removed an interrupted image import");
        }
        let records = self.store.list_instances().await?;
        let known: std::collections::HashSet<String> =
            records.iter().map(|r| r.uuid.clone()).collect();
        for rec in records {
            match rec.phase {
                Phase::Creating => {
                    tracing::warn!(name = %rec.name, "rolling back a create interrupted by the last stop");
                    self.remove_everything(&rec.uuid).await?;
                    report.rolled_back.push(rec.name);
                }
                Phase::Deleting => {
                    tracing::warn!(name = %rec.name, "finishing a delete interrupted by the last stop");
                    self.remove_everything(&rec.uuid).await?;
                    report.finished_deletes.push(rec.name);
                }
                Phase::Ready => {
                    let state = self.runtime.state(&rec.uuid).await?;
                    match state.map(|s| s.status) {
                        Some(Status::Running) | Some(Status::Paused) => {
                            report.running += 1;
                            if rec.desired == "stopped" {
                                // A start cut short after the container
                                // started: it runs, so it is meant to.
                                tracing::warn!(name = %rec.name, "finishing a start interrupted by the last stop");
                                self.store.set_desired(&rec.uuid, "running").await?;
                            }
                            if let Err(e) = self.reattach_nics(&rec).await {
                                tracing::warn!(name = %rec.name, error = %e, "host interfaces not moved back in");
                            }
                            if let Err(e) = self.reconcile_vifs(&rec).await {
                                tracing::warn!(name = %rec.name, error = %e, "virtual interfaces not reconciled");
                            }
                        }
                        Some(_) => {
                            tracing::warn!(name = %rec.name, "container died while corral was down");
                            // A container created but never started (a start
                            // cut short) holds its host interfaces in its
                            // namespace: bring them home before the namespace
                            // goes, or a virtual one dies with it.
                            if let Err(e) = self.detach_nics(&rec.uuid).await {
                                tracing::warn!(name = %rec.name, error = %e, "host interfaces not brought back");
                            }
                            self.runtime.delete(&rec.uuid, true).await?;
                            if let Err(e) = self.unplug_vifs(&rec.uuid).await {
                                tracing::warn!(name = %rec.name, error = %e, "virtual interfaces not unplugged");
                            }
                            if rec.desired != "stopped" {
                                report.stale.push(rec.name.clone());
                                self.store.set_desired(&rec.uuid, "stopped").await?;
                            }
                        }
                        None => {
                            // A stop cut short, or a host reboot: OVS ports
                            // outlive both.
                            if let Err(e) = self.unplug_vifs(&rec.uuid).await {
                                tracing::warn!(name = %rec.name, error = %e, "virtual interfaces not unplugged");
                            }
                            if rec.desired != "stopped" {
                                tracing::warn!(name = %rec.name, "container is gone (host reboot or killed outside corral)");
                                report.stale.push(rec.name.clone());
                                self.store.set_desired(&rec.uuid, "stopped").await?;
                            }
                        }
                    }
                }
            }
        }
        for c in self.runtime.list().await? {
            if !known.contains(&c.id) {
                tracing::warn!(id = %c.id, "runtime container without a store record left alone");
                report.orphans.push(c.id);
            }
        }
        Ok(report)
    }
}
