//! The compute manager's network operations (`nova/compute/manager.py`):
//! the instance info cache saved through the conductor, networks released
//! after a failed build or a delete, `external_instance_event`, and
//! `attach_interface` / `detach_interface`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{Manager, NetworkError};
use crate::compute::events::{wait_for, EventStatus, WaitOutcome};
use crate::compute::network::{Allocation, NetRequest};
use crate::compute::ComputeError;
use crate::driver::{DriverError, InstanceSpec, StartGate};
use crate::nova::fields::JsonString;
use crate::nova::object::NovaObject;
use crate::nova::objects::instance::Instance;
use crate::nova::objects::network_model::NetworkInfo;
use crate::nova::rpc_methods::{AttachInterface, BuildAndRunInstance, ExternalInstanceEvent};
use crate::rpc::{Context, Failure};

/// What a build asks of Neutron; `None` for networks `none`.
pub(super) fn allocation_for(
    instance: &Instance,
    args: &BuildAndRunInstance,
) -> Option<Allocation> {
    let list = args.requested_networks.get();
    if list.is_some_and(|l| l.is_no_network()) {
        return None;
    }
    let objects = list
        .and_then(|l| l.objects.get())
        .cloned()
        .unwrap_or_default();
    let auto = objects.len() == 1 && objects[0].network_id.as_str() == Some("auto");
    let requests = if auto {
        Vec::new()
    } else {
        objects
            .iter()
            .map(|r| NetRequest {
                network_id: r
                    .network_id
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                port_id: r
                    .port_id
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                address: r
                    .address
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            })
            .collect()
    };
    Some(Allocation {
        uuid: instance.uuid().unwrap_or_default().to_string(),
        project_id: instance.project_id.as_str().unwrap_or_default().to_string(),
        availability_zone: instance.availability_zone.as_str().map(str::to_string),
        requests,
        auto,
        security_groups: args.security_groups.get().cloned().unwrap_or_default(),
        preserved: Vec::new(),
    })
}

/// The ports the user passed to a build: unbound, never deleted, on failure.
pub(super) fn requested_port_ids(args: &BuildAndRunInstance) -> Vec<String> {
    args.requested_networks
        .get()
        .and_then(|l| l.objects.get())
        .map(|o| {
            o.iter()
                .filter_map(|r| r.port_id.as_str().filter(|s| !s.is_empty()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The start gate of a build: waits for the `network-vif-plugged` events
/// (`_create_guest_with_network`). A timeout or a failed event stops the
/// start when `fatal` (and sets `failed`), else it is logged and the start goes on.
fn vif_gate(
    waiters: Vec<(String, tokio::sync::oneshot::Receiver<EventStatus>)>,
    timeout: Duration,
    fatal: bool,
    uuid: String,
    failed: Arc<AtomicBool>,
) -> StartGate {
    Box::pin(async move {
        let outcome = wait_for(waiters, timeout).await;
        let what = match outcome {
            WaitOutcome::Done => return Ok(()),
            WaitOutcome::Failed(key) => format!("{key} reported failed"),
            WaitOutcome::TimedOut(keys) => format!(
                "timed out after {} s waiting for {}",
                timeout.as_secs(),
                keys.join(", ")
            ),
        };
        if fatal {
            tracing::error!(%uuid, "{what}: the build fails (vif_plugging_is_fatal)");
            failed.store(true, Ordering::SeqCst);
            return Err(DriverError::Invalid(format!(
                "virtual interface creation failed: {what}"
            )));
        }
        tracing::warn!(%uuid, "{what}: starting anyway (vif_plugging_is_fatal = false)");
        Ok(())
    })
}

/// How a spawn behind the `network-vif-plugged` gate failed.
pub(super) enum GatedSpawnError {
    /// A fatal wait for the events failed (`VirtualInterfaceCreateException`).
    VifPlug,
    /// The driver failed.
    Driver(DriverError),
}

impl Manager {
    /// Spawns and starts `spec` behind the gate `_create_guest_with_network`
    /// sets: the waiters for `nw_info`'s `network-vif-plugged` events go in
    /// before anything is plugged, so no event is missed (builds and
    /// unshelves).
    pub(super) async fn spawn_gated(
        &self,
        uuid: &str,
        spec: &InstanceSpec,
        nw_info: &NetworkInfo,
    ) -> Result<(), GatedSpawnError> {
        let keys = if self.vif_timeout.is_zero() {
            Vec::new()
        } else {
            crate::compute::events::events_to_wait_for(nw_info)
        };
        let vif_failed = Arc::new(AtomicBool::new(false));
        let gate = (!keys.is_empty()).then(|| {
            let waiters = self.events.prepare(uuid, &keys);
            vif_gate(
                waiters,
                self.vif_timeout,
                self.vif_fatal,
                uuid.to_string(),
                vif_failed.clone(),
            )
        });
        let spawned = self.driver.spawn(spec, true, gate).await;
        self.events.clear(uuid);
        spawned.map_err(|e| {
            if vif_failed.load(Ordering::SeqCst) {
                GatedSpawnError::VifPlug
            } else {
                GatedSpawnError::Driver(e)
            }
        })
    }
}

fn preserved_ids(info: &NetworkInfo) -> Vec<String> {
    info.0
        .iter()
        .filter(|v| v.preserve_on_delete.get() == Some(&true))
        .filter_map(|v| v.id.as_str().map(str::to_string))
        .collect()
}

fn port_ids(info: &NetworkInfo) -> Vec<String> {
    info.0
        .iter()
        .filter_map(|v| v.id.as_str().map(str::to_string))
        .collect()
}

impl Manager {
    /// `update_instance_cache_with_nw_info`: `InstanceInfoCache.save` through
    /// the conductor, so the API lists the addresses.
    pub(super) async fn save_nw_info(
        &self,
        ctx: &Context,
        uuid: &str,
        info: &NetworkInfo,
    ) -> Result<(), ComputeError> {
        let mut cache = NovaObject::new_nova34("InstanceInfoCache")?;
        cache.set("instance_uuid", json!(uuid));
        cache.reset_changes();
        let text = JsonString::new(info.clone())
            .to_json_text()
            .map_err(ComputeError::Encode)?;
        cache.set("network_info", json!(text));
        self.conductor
            .object_action(ctx, &mut cache, "save", vec![], Map::new())
            .await?;
        Ok(())
    }

    /// The instance's `NetworkInfo`: from the message, else from the
    /// conductor; empty when neither has one.
    pub(super) async fn cached_nw_info(
        &self,
        ctx: &Context,
        uuid: &str,
        instance: &Instance,
    ) -> NetworkInfo {
        if let Some(info) = instance.info_cache.get().and_then(|c| c.network_info.get()) {
            return info.value.clone();
        }
        self.stored_nw_info(ctx, uuid).await
    }

    /// `InstanceInfoCache.get_by_instance_uuid` through the conductor; empty
    /// when it has none or cannot be read.
    pub(super) async fn stored_nw_info(&self, ctx: &Context, uuid: &str) -> NetworkInfo {
        let read = self
            .conductor
            .class_action(
                ctx,
                "InstanceInfoCache",
                "get_by_instance_uuid",
                vec![json!(uuid)],
                Map::new(),
            )
            .await;
        let text = read.ok().and_then(|v| {
            v.get("nova_object.data")?
                .get("network_info")?
                .as_str()
                .map(str::to_string)
        });
        text.and_then(|t| JsonString::<NetworkInfo>::parse(&t).ok())
            .map(|j| j.value)
            .unwrap_or_default()
    }

    /// `_cleanup_allocated_networks` of a failed build (errors logged).
    pub(super) async fn deallocate(&self, ctx: &Context, uuid: &str, keep: &[String]) {
        let Some(net) = &self.network else {
            return;
        };
        if let Err(e) = net.deallocate(uuid, keep).await {
            tracing::warn!(uuid, error = %e, "ports of a failed build not released");
        }
        if let Err(e) = self.save_nw_info(ctx, uuid, &NetworkInfo::default()).await {
            tracing::warn!(uuid, error = %e.full_message(), "info cache not cleared");
        }
    }

    /// `external_instance_event`: `network-vif-plugged` (and any other
    /// awaited event) wakes its waiter, `network-changed` refreshes the info
    /// cache, `network-vif-deleted` detaches the interface. Events for an
    /// instance not in the message are ignored.
    pub(super) async fn external_instance_event(&self, ctx: &Context, a: ExternalInstanceEvent) {
        for event in &a.events {
            let Some(uuid) = event.instance_uuid.as_str() else {
                continue;
            };
            let Some(instance) = a.instances.iter().find(|i| i.uuid() == Some(uuid)) else {
                tracing::debug!(uuid, "event for an instance not on this host ignored");
                continue;
            };
            let name = event.name.as_str().unwrap_or_default();
            let tag = event.tag.as_str();
            let key = event.key().unwrap_or_default();
            match name {
                "network-changed" => {
                    let lock = self.lock_for(uuid);
                    let _g = lock.lock().await;
                    self.refresh_nw_info(ctx, uuid, instance, None).await;
                }
                "network-vif-deleted" => {
                    let Some(port) = tag else { continue };
                    let lock = self.lock_for(uuid);
                    let _g = lock.lock().await;
                    match self.driver.detach_interface(uuid, port).await {
                        Ok(()) | Err(DriverError::NotFound(_)) => {}
                        Err(e) => {
                            tracing::warn!(uuid, port, error = %e, "deleted port not detached")
                        }
                    }
                    self.refresh_nw_info(ctx, uuid, instance, Some(port)).await;
                }
                _ => {
                    if name == "network-vif-unplugged" {
                        tracing::info!(uuid, port = tag, "neutron reports a port unplugged");
                    }
                    let status = if event.status.as_str() == Some("failed") {
                        EventStatus::Failed
                    } else {
                        EventStatus::Completed
                    };
                    if !self.events.pop(uuid, &key, status) {
                        tracing::debug!(uuid, event = %key, "event nobody waits for");
                    }
                }
            }
        }
    }

    /// The info cache rebuilt from Neutron, `without` a deleted port. Run
    /// under the instance's lock; the conductor's copy comes first: the
    /// event's instance was read before any attach that just finished, and
    /// its copy would lose which ports the user passed (`preserve_on_delete`).
    async fn refresh_nw_info(
        &self,
        ctx: &Context,
        uuid: &str,
        instance: &Instance,
        without: Option<&str>,
    ) {
        let Some(net) = &self.network else {
            return;
        };
        let mut cached = self.stored_nw_info(ctx, uuid).await;
        if cached.0.is_empty() {
            cached = self.cached_nw_info(ctx, uuid, instance).await;
        }
        let info = net
            .nw_info(uuid, &port_ids(&cached), &preserved_ids(&cached))
            .await;
        match info {
            Ok(mut info) => {
                if let Some(port) = without {
                    info.0.retain(|v| v.id.as_str() != Some(port));
                }
                if let Err(e) = self.save_nw_info(ctx, uuid, &info).await {
                    tracing::warn!(uuid, error = %e.full_message(), "info cache not saved");
                }
            }
            Err(e) => tracing::warn!(uuid, error = %e, "info cache not refreshed"),
        }
    }

    /// `attach_interface`: a port made (or a user port taken over) and bound
    /// here, plugged by the driver; answers the new VIF as Nova does.
    pub(super) async fn attach_interface(
        &self,
        ctx: &Context,
        a: AttachInterface,
    ) -> Result<Value, Failure> {
        let uuid = a.instance.uuid().unwrap_or_default().to_string();
        let lock = self.lock_for(&uuid);
        let _g = lock.lock().await;
        let event = "compute_attach_interface";
        self.event_start(ctx, &uuid, event).await;
        let result = self.do_attach(ctx, &uuid, &a).await;
        let err = result.as_ref().err().map(|f| f.message.clone());
        self.event_finish(ctx, &uuid, event, err.as_deref()).await;
        result
    }

    async fn do_attach(
        &self,
        ctx: &Context,
        uuid: &str,
        a: &AttachInterface,
    ) -> Result<Value, Failure> {
        let failed = || {
            let e = ComputeError::Network(NetworkError::InterfaceAttachFailed(uuid.to_string()));
            let mut f = e.to_failure(Some(uuid));
            f.kwargs.insert("instance_uuid".into(), json!(uuid));
            f
        };
        let Some(net) = &self.network else {
            return Err(failed());
        };
        let cached = self.cached_nw_info(ctx, uuid, &a.instance).await;
        let request = NetRequest {
            network_id: a.network_id.as_str().map(str::to_string),
            port_id: a.port_id.as_str().map(str::to_string),
            address: a.requested_ip.as_str().map(str::to_string),
        };
        let alloc = Allocation {
            uuid: uuid.to_string(),
            project_id: a
                .instance
                .project_id
                .as_str()
                .unwrap_or_default()
                .to_string(),
            availability_zone: a.instance.availability_zone.as_str().map(str::to_string),
            requests: vec![request],
            auto: false,
            security_groups: Vec::new(),
            preserved: preserved_ids(&cached),
        };
        let (info, ids) = net
            .allocate(&alloc)
            .await
            .map_err(|e| ComputeError::Network(e).to_failure(Some(uuid)))?;
        let user_port = a.port_id.get().is_some();
        let [id] = ids.as_slice() else {
            for id in &ids {
                let _ = net.deallocate_port(id, user_port).await;
            }
            return Err(failed());
        };
        let vif = info.0.iter().find(|v| v.id.as_str() == Some(id.as_str()));
        let plugged = match vif.map(|v| net.vif_spec(uuid, v)) {
            Some(Ok(spec)) => self
                .driver
                .attach_interface(uuid, &spec)
                .await
                .map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!("port {id} is not in the instance's network info")),
        };
        if let Err(e) = plugged {
            tracing::warn!(uuid, port = %id, error = %e, "interface not attached, port released");
            if let Err(e) = net.deallocate_port(id, user_port).await {
                tracing::warn!(uuid, port = %id, error = %e, "port not released");
            }
            return Err(failed());
        }
        if let Err(e) = self.save_nw_info(ctx, uuid, &info).await {
            tracing::warn!(uuid, error = %e.full_message(), "info cache not saved");
        }
        let vif = vif.cloned().unwrap_or_default();
        serde_json::to_value(vif).map_err(|e| ComputeError::Encode(e).to_failure(None))
    }

    /// `detach_interface` (a cast): the driver unplugs, then the port is
    /// released (deleted when Nova made it, unbound when the user passed it).
    /// Run under the instance's lock, with its action event and fault.
    pub(super) async fn detach_interface(
        &self,
        ctx: &Context,
        uuid: &str,
        port: &str,
        instance: &Instance,
    ) -> Result<(), ComputeError> {
        // refresh_info_cache_for_instance: the conductor's copy first
        let mut cached = self.stored_nw_info(ctx, uuid).await;
        if cached.0.is_empty() {
            cached = self.cached_nw_info(ctx, uuid, instance).await;
        }
        let Some(vif) = cached.0.iter().find(|v| v.id.as_str() == Some(port)) else {
            return Err(NetworkError::PortNotAttached(port.to_string()).into());
        };
        let preserved = vif.preserve_on_delete.get() == Some(&true);
        if let Err(e) = self.driver.detach_interface(uuid, port).await {
            tracing::warn!(uuid, port, error = %e, "interface not detached");
            return Err(NetworkError::InterfaceDetachFailed(uuid.to_string()).into());
        }
        if let Some(net) = &self.network {
            net.deallocate_port(port, preserved).await?;
        }
        let mut info = cached.clone();
        info.0.retain(|v| v.id.as_str() != Some(port));
        self.save_nw_info(ctx, uuid, &info).await
    }
}

impl From<NetworkError> for Failure {
    fn from(e: NetworkError) -> Self {
        ComputeError::Network(e).to_failure(None)
    }
}
