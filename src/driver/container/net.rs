//! An instance's network devices: virtual interfaces plugged on start and unplugged
//! on stop, live attach and detach, and the physical NICs moved in and handed back.

use super::*;

impl ContainerDriver {
    /// Plugs the virtual interfaces into the network namespace of the
    /// created container. What a crash could leave is written down first
    /// (`vifs.json`), so that start-up finds and removes it.
    pub(super) async fn plug_vifs(&self, uuid: &str, vifs: &[VifSpec]) -> Result<(), DriverError> {
        // What an earlier start of this instance may have left.
        self.unplug_vifs(uuid).await?;
        if vifs.is_empty() {
            return Ok(());
        }
        let pid = self.init_pid(uuid).await?;
        let taken = netdev::links_in(pid).map_err(vif::vif_error)?;
        let list = vif::plan(vifs, &taken)?;
        let dir = self.instance_dir(uuid);
        let id = uuid.to_string();
        blocking("interface plug", move || {
            for v in &list {
                netdev::bridge_exists(&v.switch).map_err(vif::vif_error)?;
                netdev::ensure_free(v).map_err(vif::vif_error)?;
            }
            netdev::save(&dir, &list)?;
            crash_point("plug.after_record");
            for (i, v) in list.iter().enumerate() {
                let t = std::time::Instant::now();
                netdev::plug(v, pid).map_err(vif::vif_error)?;
                tracing::info!(uuid = %id, vif = %v.id, tap = %v.tap(), inside = %v.inside, ms = t.elapsed().as_secs_f64() * 1000.0, "interface plugged");
                if i == 0 {
                    crash_point("plug.after_first");
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes from the host what `vifs.json` says was plugged (OVS ports,
    /// `qbr` bridges, `qvb`/`qvo` and tap devices), then the record.
    pub(super) async fn unplug_vifs(&self, uuid: &str) -> Result<(), DriverError> {
        let dir = self.instance_dir(uuid);
        let list = netdev::load(&dir)?;
        if list.is_empty() {
            return Ok(());
        }
        blocking("interface unplug", move || {
            netdev::unplug_all(&list)?;
            netdev::save(&dir, &[])?;
            Ok(())
        })
        .await
    }

    /// One more interface: kept in the spec, plugged now when the
    /// instance runs (inside as asked, else the next free `ethN`).
    pub(super) async fn attach_vif(
        &self,
        rec: &InstanceRecord,
        new: &VifSpec,
    ) -> Result<(), DriverError> {
        if rec.phase != Phase::Ready {
            return Err(DriverError::Conflict(format!(
                "instance {} is being created or deleted",
                rec.name
            )));
        }
        let mut spec = Self::spec_of(rec)?;
        if spec.vifs.iter().any(|v| v.id == new.id) {
            return Err(DriverError::Conflict(format!(
                "instance {} already has interface {}",
                rec.name, new.id
            )));
        }
        let mut all = spec.vifs.clone();
        all.push(new.clone());
        vif::check(&all)?;
        let probe = vif::to_netdev(new, "eth0".into());
        blocking("bridge check", move || {
            netdev::bridge_exists(&probe.switch).map_err(vif::vif_error)
        })
        .await?;
        spec.vifs.push(new.clone());
        let Some(pid) = self.live_pid(&rec.uuid).await? else {
            return self.store_spec(&rec.uuid, &spec).await;
        };
        let taken = netdev::links_in(pid).map_err(vif::vif_error)?;
        let plugged = vif::plan(std::slice::from_ref(new), &taken)?
            .pop()
            .ok_or_else(|| DriverError::Invalid("no interface to plug".into()))?;
        let dir = self.instance_dir(&rec.uuid);
        let mut record = netdev::load(&dir)?;
        let (d, v, uuid) = (dir.clone(), plugged.clone(), rec.uuid.clone());
        blocking("interface plug", move || {
            netdev::ensure_free(&v).map_err(vif::vif_error)?;
            record.push(v.clone());
            netdev::save(&d, &record)?;
            let t = std::time::Instant::now();
            if let Err(e) = netdev::plug(&v, pid) {
                record.pop();
                netdev::save(&d, &record)?;
                return Err(vif::vif_error(e));
            }
            tracing::info!(%uuid, vif = %v.id, tap = %v.tap(), inside = %v.inside, ms = t.elapsed().as_secs_f64() * 1000.0, "interface plugged");
            Ok(())
        })
        .await?;
        if let Err(e) = self.store_spec(&rec.uuid, &spec).await {
            let v = plugged.clone();
            let _ = blocking("interface unplug", move || {
                netdev::unplug(&v)?;
                let mut record = netdev::load(&dir)?;
                record.retain(|r| r.id != v.id);
                netdev::save(&dir, &record)?;
                Ok(())
            })
            .await;
            return Err(e);
        }
        Ok(())
    }

    /// Forgets an interface and unplugs it if it is plugged.
    pub(super) async fn detach_vif(
        &self,
        rec: &InstanceRecord,
        vif_id: &str,
    ) -> Result<(), DriverError> {
        let mut spec = Self::spec_of(rec)?;
        let Some(pos) = spec.vifs.iter().position(|v| v.id == vif_id) else {
            return Err(DriverError::Invalid(format!(
                "instance {} has no interface {vif_id}",
                rec.name
            )));
        };
        spec.vifs.remove(pos);
        // The spec first: a crash after it leaves a stray in the record,
        // which start-up removes.
        self.store_spec(&rec.uuid, &spec).await?;
        let dir = self.instance_dir(&rec.uuid);
        let id = vif_id.to_string();
        blocking("interface unplug", move || {
            let mut record = netdev::load(&dir)?;
            if let Some(i) = record.iter().position(|r| r.id == id) {
                netdev::unplug(&record[i])?;
                record.remove(i);
                netdev::save(&dir, &record)?;
            }
            Ok(())
        })
        .await
    }

    /// A running instance's interfaces after a restart: the namespace
    /// keeps what was plugged; only what an interrupted detach or attach
    /// left (in the record, no longer or not yet in the spec) is removed.
    pub(super) async fn reconcile_vifs(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let dir = self.instance_dir(&rec.uuid);
        let list = netdev::load(&dir)?;
        if list.is_empty() {
            return Ok(());
        }
        let spec = Self::spec_of(rec)?;
        let (keep, strays): (Vec<_>, Vec<_>) = list
            .into_iter()
            .partition(|v| spec.vifs.iter().any(|s| s.id == v.id));
        if strays.is_empty() {
            return Ok(());
        }
        let name = rec.name.clone();
        blocking("interface unplug", move || {
            netdev::unplug_all(&strays)?;
            netdev::save(&dir, &keep)?;
            tracing::warn!(%name, count = strays.len(), "unplugged interfaces an interrupted attach or detach left");
            Ok(())
        })
        .await
    }

    pub(super) async fn attach_nics(&self, uuid: &str) -> Result<(), DriverError> {
        let nics = nic::load(&self.instance_dir(uuid))?;
        if nics.is_empty() {
            return Ok(());
        }
        let limits = Self::spec_of(&self.record_by_uuid(uuid).await?)?.limits;
        let pid = self
            .runtime
            .state(uuid)
            .await?
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                DriverError::Invalid(format!("container {uuid} has no init process for its NICs"))
            })?;
        let moved = nics.clone();
        let inside = tokio::task::spawn_blocking(move || {
            // One the kernel handed back under another name comes home first.
            nic::detach(None, &moved)?;
            nic::attach(pid, &moved, &limits)
        })
        .await
        .map_err(|e| DriverError::Invalid(format!("NIC attach task: {e}")))??;
        // What each one is inside, for the detach (the container has not run yet).
        nic::save_records(&self.instance_dir(uuid), &inside)?;
        tracing::info!(uuid, count = nics.len(), "host interfaces moved in");
        Ok(())
    }

    /// Moves back into a running instance the host interfaces that a stop
    /// or delete cut short had already brought home (the container still
    /// runs, so the operation is rolled back).
    pub(super) async fn reattach_nics(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let net = self.host.sys.join("class/net");
        let home: Vec<_> = nic::load(&self.instance_dir(&rec.uuid))?
            .into_iter()
            .filter(|n| net.join(&n.host_name).exists())
            .collect();
        if home.is_empty() {
            return Ok(());
        }
        let limits = Self::spec_of(rec)?.limits;
        let pid = self
            .runtime
            .state(&rec.uuid)
            .await?
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                DriverError::Invalid(format!(
                    "container {} has no init process for its NICs",
                    rec.uuid
                ))
            })?;
        let count = home.len();
        tokio::task::spawn_blocking(move || nic::attach(pid, &home, &limits))
            .await
            .map_err(|e| DriverError::Invalid(format!("NIC attach task: {e}")))??;
        tracing::warn!(name = %rec.name, count, "host interfaces moved back in after an interrupted stop or delete");
        Ok(())
    }

    /// Brings the instance's host interfaces home: from its namespace while
    /// the container lives, else (a physical one freed with the namespace)
    /// under its own name again.
    pub(super) async fn detach_nics(&self, uuid: &str) -> Result<(), DriverError> {
        let nics = nic::load(&self.instance_dir(uuid))?;
        if nics.is_empty() {
            return Ok(());
        }
        let pid = match self.runtime.state(uuid).await? {
            Some(s) if matches!(s.status, Status::Running | Status::Paused | Status::Created) => {
                s.pid.filter(|p| *p > 0)
            }
            _ => None,
        };
        tokio::task::spawn_blocking(move || nic::detach(pid, &nics))
            .await
            .map_err(|e| DriverError::Invalid(format!("NIC detach task: {e}")))??;
        Ok(())
    }
}
