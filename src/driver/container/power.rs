//! Running an instance: boot, start (with the start gate), stop, the init's pid
//! and the console relay.

use super::*;

impl ContainerDriver {
    /// Root and bundle ready again (after a reboot of the host, too), then the
    /// container started: what power-on and reboot share.
    pub(super) async fn boot(&self, rec: &InstanceRecord) -> Result<(), DriverError> {
        let spec = Self::spec_of(rec)?;
        let image = self.get_image(&rec.image).await?;
        let args = self.init_args(&spec, &image)?;
        self.prepare(rec, &spec, &image, &args, false).await?;
        self.apply_rescue(rec).await?;
        self.start_container(&rec.uuid, None).await?;
        crash_point("power_on.before_desired");
        self.store.set_desired(&rec.uuid, "running").await?;
        Ok(())
    }

    /// Creates the container, moves its host interfaces in, plugs its
    /// virtual interfaces, awaits `gate` and starts its init. A failure at
    /// any step removes what the earlier ones made.
    pub(super) async fn start_container(
        &self,
        uuid: &str,
        gate: Option<StartGate>,
    ) -> Result<(), DriverError> {
        let dir = self.instance_dir(uuid);
        if let Some(st) = self.runtime.state(uuid).await? {
            match st.status {
                Status::Running | Status::Paused => return Ok(()),
                // Created by a start that did not finish: what it plugged
                // and moved in is not known to be complete, so it is made
                // again from the start.
                Status::Created => self.undo_start(uuid).await,
                Status::Stopped | Status::Creating => self.runtime.delete(uuid, true).await?,
            }
        }
        let profile = sysinit::BootProfile::load(&dir);
        let systemd = profile.as_ref().is_some_and(|p| p.systemd);
        if systemd {
            self.start_console_relay(uuid, profile.as_ref().and_then(|p| p.root_id))
                .await?;
        }
        if let Err(e) = self
            .runtime
            .create(uuid, &dir, &self.console_path(uuid))
            .await
        {
            self.stop_console_relay(uuid);
            return Err(e.into());
        }
        crash_point("start.after_create");
        if systemd {
            // Before the init runs: its cgroup is its root's to manage.
            let (root, mode, path) = (
                self.cgroup_root.clone(),
                self.runtime.cgroup_mode,
                self.cgroup_path(uuid),
            );
            let owner = profile.as_ref().and_then(|p| p.root_id).unwrap_or(0);
            let delegated = blocking("cgroup delegation", move || {
                cgroups::delegate(&root, mode, &path, owner, owner)
                    .map_err(|e| DriverError::Runtime(e.into()))
            })
            .await;
            if let Err(e) = delegated {
                self.undo_start(uuid).await;
                return Err(e);
            }
        }
        // Host interfaces go in before the init runs, so it finds them.
        if let Err(e) = self.attach_nics(uuid).await {
            let _ = self.runtime.delete(uuid, true).await;
            return Err(e);
        }
        crash_point("start.after_nics");
        // Virtual interfaces, then the gate (Nova's wait for the network's
        // word that they are plugged), and only then the init.
        let plugged = async {
            let spec = Self::spec_of(&self.record_by_uuid(uuid).await?)?;
            self.plug_vifs(uuid, &spec.vifs).await?;
            crash_point("plug.before_gate");
            if let Some(gate) = gate {
                gate.await?;
            }
            Ok::<(), DriverError>(())
        }
        .await;
        if let Err(e) = plugged {
            self.undo_start(uuid).await;
            return Err(e);
        }
        if let Err(e) = self.runtime.start(uuid).await {
            self.undo_start(uuid).await;
            return Err(e.into());
        }
        crash_point("start.after_start");
        Ok(())
    }

    /// Takes back what a failed start made: virtual interfaces, host
    /// interfaces, the created container.
    pub(super) async fn undo_start(&self, uuid: &str) {
        if let Err(e) = self.unplug_vifs(uuid).await {
            tracing::warn!(uuid, error = %e, "virtual interfaces not unplugged");
        }
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if let Err(e) = self.runtime.delete(uuid, true).await {
            tracing::warn!(uuid, error = %e, "created container not deleted");
        }
        self.stop_console_relay(uuid);
    }

    /// The pid of the container's init (created or running).
    pub(super) async fn init_pid(&self, uuid: &str) -> Result<i32, DriverError> {
        self.runtime
            .state(uuid)
            .await?
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                DriverError::Invalid(format!(
                    "container {uuid} has no init process for its interfaces"
                ))
            })
    }

    /// The pid of the instance's init when its container runs (or is
    /// frozen): its namespace takes interfaces live.
    pub(super) async fn live_pid(&self, uuid: &str) -> Result<Option<i32>, DriverError> {
        Ok(match self.runtime.state(uuid).await? {
            Some(s) if matches!(s.status, Status::Running | Status::Paused) => {
                s.pid.filter(|p| *p > 0)
            }
            _ => None,
        })
    }

    /// Stops the container and removes it from the runtime.
    pub(super) async fn stop_container(
        &self,
        uuid: &str,
        timeout: Duration,
        force: bool,
    ) -> Result<(), DriverError> {
        let Some(st) = self.runtime.state(uuid).await? else {
            return Ok(());
        };
        // The tenant's processes stay frozen while its host interfaces are
        // found and moved out, so none can be renamed or swapped meanwhile.
        let has_nics = nic::load(&self.instance_dir(uuid)).is_ok_and(|n| !n.is_empty());
        let frozen = st.status == Status::Paused
            || (has_nics && st.status == Status::Running && self.runtime.pause(uuid).await.is_ok());
        if let Err(e) = self.detach_nics(uuid).await {
            tracing::warn!(uuid, error = %e, "host interfaces not brought back");
        }
        if frozen {
            self.runtime.resume(uuid).await?;
        }
        crash_point("stop.after_nics");
        if matches!(st.status, Status::Running | Status::Paused) {
            let mut stopped = false;
            if !force {
                let signal = sysinit::BootProfile::load(&self.instance_dir(uuid))
                    .map_or(self.stop_signal, |p| p.stop_signal_number);
                match self.runtime.signal(uuid, signal).await {
                    Ok(()) => stopped = self.runtime.wait_stopped(uuid, timeout).await?,
                    Err(e) => tracing::debug!(uuid, error = %e, "stop signal not delivered"),
                }
            }
            if !stopped {
                if let Err(e) = self.runtime.signal(uuid, libc::SIGKILL).await {
                    tracing::debug!(uuid, error = %e, "kill not delivered");
                }
                self.runtime
                    .wait_stopped(uuid, Duration::from_secs(10))
                    .await?;
            }
        }
        crash_point("stop.after_kill");
        self.runtime.delete(uuid, true).await?;
        crash_point("stop.after_delete");
        self.stop_console_relay(uuid);
        // The veth died with the namespace; OVS ports and qbr/qvb/qvo stay.
        if let Err(e) = self.unplug_vifs(uuid).await {
            tracing::warn!(uuid, error = %e, "virtual interfaces not unplugged: done at the next start");
        }
        let dir = self.instance_dir(uuid);
        blocking("device release", move || {
            devices::release(&dir).map_err(DriverError::Device)
        })
        .await?;
        Ok(())
    }

    /// Starts the relay of the instance's `/dev/console` into its console
    /// log and points the bundle's link at its pty.
    pub(super) async fn start_console_relay(
        &self,
        uuid: &str,
        root_id: Option<u32>,
    ) -> Result<(), DriverError> {
        let dir = self.instance_dir(uuid);
        let log = self.console_path(uuid);
        blocking("console relay", move || {
            let relay =
                console::start(&dir, &log, root_id.map(|id| (id, id))).map_err(io_err(&log))?;
            let link = dir.join(CONSOLE_PTY_LINK);
            let tmp = dir.join(format!("{CONSOLE_PTY_LINK}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&relay.slave, &tmp).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &link).map_err(io_err(&link))?;
            Ok(())
        })
        .await
    }

    pub(super) fn stop_console_relay(&self, uuid: &str) {
        console::stop(&self.instance_dir(uuid), &self.console_path(uuid));
    }
}
