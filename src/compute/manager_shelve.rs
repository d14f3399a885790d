//! Nova's `shelve_instance`, `shelve_offload_instance` and
//! `unshelve_instance` (and the shelved part of `start_instance`) for
//! corral's containers, in nova-compute 34's order: the instance is powered
//! off and its root uploaded to the Glance image nova-api made (task states
//! `shelving` -> `shelving_image_pending_upload` -> `shelving_image_uploading`),
//! `shelved_*` system metadata is written and the instance is SHELVED; an
//! offload removes the container and its data, unbinds its ports from this
//! host, frees Placement and the node and leaves the instance on no host
//! (SHELVED_OFFLOADED); an unshelve boots it again here from the shelved
//! image and deletes that image.

use serde_json::{json, Map, Value};

use super::{now_iso, stop_timeout, GatedSpawnError, Inst, Manager};
use crate::compute::network::NetworkError;
use crate::compute::{spec, ComputeError};
use crate::driver::DriverError;
use crate::nova::object::{NovaObject, VersionedObject};
use crate::nova::objects::instance::{power_state, task_states, vm_states, Instance};
use crate::nova::rpc_methods::UnshelveInstance;
use crate::rpc::Context;

pub(super) const SHELVING: &str = "shelving";
pub(super) const SHELVING_IMAGE_PENDING_UPLOAD: &str = "shelving_image_pending_upload";
pub(super) const SHELVING_IMAGE_UPLOADING: &str = "shelving_image_uploading";
pub(super) const SHELVING_OFFLOADING: &str = "shelving_offloading";

/// The system metadata keys a shelve writes and an unshelve or start removes
/// (`remove_shelved_keys_from_system_metadata`).
const SHELVED_KEYS: [&str; 3] = ["shelved_at", "shelved_image_id", "shelved_host"];

/// Whether a shelved instance shelved at `shelved_at` (Nova's ISO time)
/// is due for offload `offload_time` seconds later (`_poll_shelved_instances`).
pub(super) fn offload_due(shelved_at: &str, offload_time: i64, now: time::OffsetDateTime) -> bool {
    if offload_time <= 0 {
        return false;
    }
    let Some(at) = parse_nova_time(shelved_at) else {
        return false;
    };
    (now - at).whole_seconds() > offload_time
}

/// `timeutils.utcnow().isoformat()`, with or without fraction and offset.
fn parse_nova_time(s: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    // Naive (no offset): UTC.
    time::OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok()
}

/// nova's `utcnow().isoformat()`: naive UTC with microseconds.
fn nova_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

impl Manager {
    /// The instance's system metadata: from the message, else read through
    /// the conductor (`Instance.get_by_uuid` with it).
    pub(super) async fn system_metadata(
        &self,
        ctx: &Context,
        inst: &Inst,
    ) -> Result<Map<String, Value>, ComputeError> {
        if let Some(Value::Object(m)) = inst.obj.get("system_metadata") {
            return Ok(m.clone());
        }
        let v = self
            .conductor
            .class_action(
                ctx,
                "Instance",
                "get_by_uuid",
                vec![json!(inst.uuid)],
                super::kw(&[("expected_attrs", json!(["system_metadata"]))]),
            )
            .await?;
        if v.is_null() {
            return Ok(Map::new());
        }
        let obj = NovaObject::from_primitive(&v)?;
        Ok(obj
            .get("system_metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default())
    }

    /// `shelve_instance`: powered off, uploaded, SHELVED; offloaded at once
    /// when `shelved_offload_time` is 0.
    pub(super) async fn do_shelve(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
        image_id: &str,
        clean: bool,
    ) -> Result<(), ComputeError> {
        let offload = self.shelved_offload_time == 0;
        if self.glance.is_none() {
            return Err(ComputeError::Invalid(
                "no Glance endpoint is configured".into(),
            ));
        }
        // No clean shutdown of a paused guest.
        let paused =
            inst.obj.get("power_state").and_then(Value::as_i64) == Some(power_state::PAUSED);
        let clean = clean && !paused;
        self.power_off_for(&inst.uuid, clean).await?;
        let token = ctx.get("auth_token").and_then(Value::as_str);
        let request_id = ctx.get("request_id").and_then(Value::as_str);
        let states = (
            SHELVING,
            SHELVING_IMAGE_PENDING_UPLOAD,
            SHELVING_IMAGE_UPLOADING,
        );
        self.snapshot_upload(ctx, inst, image_id, states, token, request_id)
            .await?;
        let mut meta = self.system_metadata(ctx, inst).await?;
        meta.insert("shelved_at".into(), json!(nova_now()));
        meta.insert("shelved_image_id".into(), json!(image_id));
        meta.insert("shelved_host".into(), json!(self.host()));
        let task = if offload {
            json!(SHELVING_OFFLOADING)
        } else {
            Value::Null
        };
        let power = self.current_power(&inst.uuid).await;
        self.save(
            ctx,
            inst,
            &[
                ("system_metadata", Value::Object(meta)),
                ("vm_state", json!(vm_states::SHELVED)),
                ("task_state", task),
                ("power_state", json!(power)),
            ],
            Some(json!([SHELVING, SHELVING_IMAGE_UPLOADING])),
        )
        .await?;
        if offload {
            self.do_shelve_offload(ctx, inst, instance, false, false)
                .await?;
        }
        Ok(())
    }

    /// `_power_off_instance`: a clean stop waits `shutdown_timeout`.
    async fn power_off_for(&self, uuid: &str, clean: bool) -> Result<(), ComputeError> {
        let timeout = stop_timeout(clean, self.cfg.shutdown_timeout);
        match self.driver.power_off(uuid, timeout, !clean).await {
            Ok(()) | Err(DriverError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `_shelve_offload_instance`. `recovering`: finishing one a restart
    /// interrupted, whose task state may already be cleared.
    pub(super) async fn do_shelve_offload(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
        clean: bool,
        recovering: bool,
    ) -> Result<(), ComputeError> {
        let uuid = inst.uuid.clone();
        self.power_off_for(&uuid, clean).await?;
        let power = self.current_power(&uuid).await;
        // The ports stay the instance's, bound to no host.
        if let Some(net) = &self.network {
            let ids: Vec<String> = self
                .cached_nw_info(ctx, &uuid, instance)
                .await
                .0
                .iter()
                .filter_map(|v| v.id.as_str().map(str::to_string))
                .collect();
            net.unbind_host(&ids).await;
        }
        match self.driver.destroy(&uuid).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.events.clear(&uuid);
        // Placement first, so a client polling for SHELVED_OFFLOADED sees
        // the host's resources free.
        self.tracker.delete_allocations(&uuid).await;
        let mut expected = vec![json!(SHELVING), json!(SHELVING_OFFLOADING)];
        if recovering {
            expected.push(Value::Null);
        }
        self.save(
            ctx,
            inst,
            &[
                ("power_state", json!(power)),
                ("vm_state", json!(vm_states::SHELVED_OFFLOADED)),
                ("task_state", Value::Null),
            ],
            Some(Value::Array(expected)),
        )
        .await?;
        self.tracker.release(ctx, &uuid).await?;
        // _nil_out_instance_obj_host_and_node
        self.save(
            ctx,
            inst,
            &[
                ("host", Value::Null),
                ("node", Value::Null),
                ("compute_id", Value::Null),
                ("launched_on", Value::Null),
                ("availability_zone", Value::Null),
            ],
            Some(Value::Null),
        )
        .await?;
        let a = super::kw(&[
            ("host_name", json!(self.host())),
            ("instance_uuid", json!(uuid)),
        ]);
        let _ = self
            .conductor
            .scheduler_fanout(ctx, "delete_instance_info", a)
            .await;
        tracing::info!(%uuid, "shelved instance offloaded");
        Ok(())
    }

    /// `unshelve_instance` of an offloaded instance the conductor scheduled
    /// here: claimed, its ports bound here, booted from the shelved image,
    /// which is then deleted from Glance.
    pub(super) async fn do_unshelve(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
        args: &UnshelveInstance,
    ) -> Result<(), ComputeError> {
        let uuid = inst.uuid.clone();
        self.save(
            ctx,
            inst,
            &[("task_state", json!(task_states::SPAWNING))],
            None,
        )
        .await?;
        let meta = self.system_metadata(ctx, inst).await?;
        let image = args
            .image
            .get()
            .and_then(|i| i.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let boot_image = image
            .clone()
            .or_else(|| {
                meta.get("shelved_image_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| inst.str("image_ref").map(str::to_string))
            .ok_or_else(|| ComputeError::Invalid("no image to unshelve from".into()))?;
        let spawned = self
            .unshelve_spawn(ctx, inst, instance, args, &boot_image)
            .await;
        if let Err(e) = spawned {
            // The claim and the scheduler's allocations go; the instance is
            // on no host again (reverts_task_state saves that).
            self.events.clear(&uuid);
            if let Err(d) = self.driver.destroy(&uuid).await {
                if !matches!(d, DriverError::NotFound(_)) {
                    tracing::warn!(%uuid, error = %d, "cleanup after a failed unshelve incomplete");
                }
            }
            let _ = self.tracker.release(ctx, &uuid).await;
            self.tracker.delete_allocations(&uuid).await;
            let _ = self
                .save(
                    ctx,
                    inst,
                    &[
                        ("host", Value::Null),
                        ("node", Value::Null),
                        ("compute_id", Value::Null),
                        ("launched_on", Value::Null),
                        ("task_state", Value::Null),
                    ],
                    None,
                )
                .await;
            return Err(e);
        }
        if let Some(id) = &image {
            self.delete_shelved_image(ctx, &uuid, id).await;
        }
        let mut meta = meta;
        for k in SHELVED_KEYS {
            meta.remove(k);
        }
        let power = self.current_power(&uuid).await;
        self.save(
            ctx,
            inst,
            &[
                ("power_state", json!(power)),
                ("vm_state", json!(vm_states::ACTIVE)),
                ("task_state", Value::Null),
                ("launched_at", json!(now_iso())),
                ("system_metadata", Value::Object(meta)),
            ],
            Some(json!(task_states::SPAWNING)),
        )
        .await?;
        let mut a = Map::new();
        a.insert("host_name".into(), json!(self.host()));
        if let Ok(mut list) = NovaObject::new_nova34("InstanceList") {
            list.data
                .insert("objects".into(), json!([inst.obj.to_primitive()]));
            a.insert("instance_info".into(), list.to_primitive());
            let _ = self
                .conductor
                .scheduler_fanout(ctx, "update_instance_info", a)
                .await;
        }
        Ok(())
    }

    async fn unshelve_spawn(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
        args: &UnshelveInstance,
        image_id: &str,
    ) -> Result<(), ComputeError> {
        let uuid = inst.uuid.clone();
        let flavor = instance
            .flavor
            .get()
            .ok_or_else(|| ComputeError::Invalid("instance has no flavor".into()))?;
        spec::limits(flavor).map_err(|e| ComputeError::Invalid(e.to_string()))?;
        // rt.instance_claim: the instance lands on this host and node.
        let claim = super::super::resources::Claim {
            vcpus: flavor.vcpus.get().copied().unwrap_or(0).max(0) as u64,
            memory_mb: flavor.memory_mb.get().copied().unwrap_or(0).max(0) as u64,
            disk_gb: (flavor.root_gb.get().copied().unwrap_or(0)
                + flavor.ephemeral_gb.get().copied().unwrap_or(0))
            .max(0) as u64,
        };
        let node_id = self.tracker.compute_node_id().await;
        let node = args
            .node
            .get()
            .cloned()
            .unwrap_or_else(|| self.tracker.nodename().to_string());
        self.save(
            ctx,
            inst,
            &[
                ("host", json!(self.host())),
                ("launched_on", json!(self.host())),
                ("node", json!(node)),
                (
                    "compute_id",
                    node_id.map(Value::from).unwrap_or(Value::Null),
                ),
            ],
            None,
        )
        .await?;
        self.tracker.instance_claim(ctx, &uuid, claim).await?;
        // setup_instance_network_on_host, then the instance's network info.
        let cached = self.cached_nw_info(ctx, &uuid, instance).await;
        let (nw_info, vifs) = match &self.network {
            Some(net) if !cached.0.is_empty() => {
                let order: Vec<String> = cached
                    .0
                    .iter()
                    .filter_map(|v| v.id.as_str().map(str::to_string))
                    .collect();
                let preserved: Vec<String> = cached
                    .0
                    .iter()
                    .filter(|v| v.preserve_on_delete.get() == Some(&true))
                    .filter_map(|v| v.id.as_str().map(str::to_string))
                    .collect();
                let info = net.bind_host(&uuid, &order, &preserved).await?;
                self.save_nw_info(ctx, &uuid, &info).await?;
                let vifs = net.vif_specs(&uuid, &info)?;
                (info, vifs)
            }
            _ => (cached, Vec::new()),
        };
        let alias = self.cache_image(ctx, image_id).await?;
        let mut spec = spec::from_instance(instance, &alias)
            .map_err(|e| ComputeError::Invalid(e.to_string()))?;
        let (drive, interfaces) = spec::guest_data(
            instance,
            &self.guest,
            &spec::GuestDataInputs {
                network_info: nw_info.clone(),
                admin_pass: None,
                injected_files: &[],
                image_props: args
                    .image
                    .get()
                    .and_then(|i| i.get("properties"))
                    .and_then(Value::as_object),
            },
        )
        .map_err(|e| ComputeError::Invalid(e.to_string()))?;
        spec.config_drive = drive;
        // The shelved root already holds what a build injected.
        let _ = interfaces;
        spec.network_interfaces = None;
        spec.vifs = vifs;
        self.spawn_gated(&uuid, &spec, &nw_info)
            .await
            .map_err(|e| match e {
                GatedSpawnError::VifPlug => {
                    ComputeError::Network(NetworkError::VirtualInterfaceCreate)
                }
                GatedSpawnError::Driver(e) => ComputeError::Driver(e),
            })
    }

    /// `_delete_snapshot_of_shelved_instance`: errors are logged only.
    async fn delete_shelved_image(&self, ctx: &Context, uuid: &str, image_id: &str) {
        let Some(glance) = self.glance.as_ref() else {
            tracing::warn!(
                uuid,
                image_id,
                "no Glance endpoint: shelved image not deleted"
            );
            return;
        };
        let token = ctx.get("auth_token").and_then(Value::as_str);
        let request_id = ctx.get("request_id").and_then(Value::as_str);
        match glance.delete(image_id, token, request_id).await {
            Ok(()) => tracing::info!(uuid, image_id, "shelved image deleted"),
            Err(e) => {
                tracing::warn!(uuid, image_id, error = %e.full_message(), "failed to delete the snapshot of a shelved instance")
            }
        }
    }

    /// `start_instance`'s part for a shelved instance (an unshelve of one
    /// not offloaded): its image deleted, its `shelved_*` keys dropped. The
    /// fields to save with the start; none when it was not shelved.
    pub(super) async fn unshelved_by_start(
        &self,
        ctx: &Context,
        inst: &Inst,
    ) -> Vec<(&'static str, Value)> {
        let mut meta = match self.system_metadata(ctx, inst).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(uuid = %inst.uuid, error = %e.full_message(), "system metadata not read");
                return Vec::new();
            }
        };
        if let Some(id) = meta
            .get("shelved_image_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
        {
            self.delete_shelved_image(ctx, &inst.uuid, &id).await;
        }
        if !SHELVED_KEYS.iter().any(|k| meta.contains_key(*k)) {
            return Vec::new();
        }
        for k in SHELVED_KEYS {
            meta.remove(k);
        }
        vec![("system_metadata", Value::Object(meta))]
    }

    /// `_poll_shelved_instances`: SHELVED instances of this host older than
    /// `shelved_offload_time` are offloaded.
    pub async fn poll_shelved_instances(&self, ctx: &Context) {
        if self.shelved_offload_time <= 0 {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        for mut inst in self.host_instances(ctx).await {
            if inst.str("vm_state") != Some(vm_states::SHELVED)
                || inst.obj.get("task_state").is_some_and(|v| !v.is_null())
            {
                continue;
            }
            let lock = self.lock_for(&inst.uuid);
            let _g = lock.lock().await;
            let meta = match self.system_metadata(ctx, &inst).await {
                Ok(m) => m,
                Err(_) => continue,
            };
            let at = meta.get("shelved_at").and_then(Value::as_str).unwrap_or("");
            if !offload_due(at, self.shelved_offload_time, now) {
                continue;
            }
            let Ok(instance) = Instance::from_object(inst.obj.clone()) else {
                continue;
            };
            let uuid = inst.uuid.clone();
            let result = async {
                self.save(
                    ctx,
                    &mut inst,
                    &[("task_state", json!(SHELVING_OFFLOADING))],
                    Some(json!([null])),
                )
                .await?;
                self.do_shelve_offload(ctx, &mut inst, &instance, false, false)
                    .await
            }
            .await;
            if let Err(e) = result {
                tracing::error!(%uuid, error = %e.full_message(), "periodic task failed to offload instance");
            }
        }
    }

    /// What a restart found half-way through a shelve. `shelving` is the
    /// API's: its cast may still be queued, so it is left as nova-compute
    /// leaves it. Once the upload had begun, the cast is lost: the host
    /// snapshot and the half-made Glance image go, and the task state is
    /// cleared as for any other (false). An interrupted offload is finished.
    /// True when handled here.
    pub(super) async fn recover_shelve(&self, ctx: &Context, inst: &mut Inst) -> bool {
        let vm = inst.str("vm_state").unwrap_or("").to_string();
        let task = inst.str("task_state").map(str::to_string);
        let uuid = inst.uuid.clone();
        match task.as_deref() {
            Some(SHELVING) => true,
            Some(SHELVING_IMAGE_PENDING_UPLOAD | SHELVING_IMAGE_UPLOADING) => {
                let snaps = self.driver.snapshot_list(&uuid).await.unwrap_or_default();
                for s in snaps.iter().filter(|s| s.name.starts_with("nova-")) {
                    let _ = self.driver.snapshot_delete(&uuid, &s.name).await;
                    if let (Some(id), Some(glance)) = (s.name.strip_prefix("nova-"), &self.glance) {
                        let request_id = ctx.get("request_id").and_then(Value::as_str);
                        if let Err(e) = glance.delete(id, None, request_id).await {
                            tracing::warn!(%uuid, image_id = id, error = %e.full_message(), "image of an interrupted shelve not deleted");
                        }
                    }
                }
                tracing::warn!(%uuid, "shelve interrupted by a restart: rolled back");
                false
            }
            Some(SHELVING_OFFLOADING) => {
                self.finish_offload(ctx, inst).await;
                true
            }
            None if vm == vm_states::SHELVED_OFFLOADED => {
                self.finish_offload(ctx, inst).await;
                true
            }
            _ => false,
        }
    }

    async fn finish_offload(&self, ctx: &Context, inst: &mut Inst) {
        tracing::warn!(uuid = %inst.uuid, "shelve offload interrupted by a restart: finishing it");
        let Ok(instance) = Instance::from_object(inst.obj.clone()) else {
            return;
        };
        if let Err(e) = self
            .do_shelve_offload(ctx, inst, &instance, false, true)
            .await
        {
            tracing::error!(uuid = %inst.uuid, error = %e.full_message(), "interrupted offload not finished");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_is_due_only_past_the_offload_time() {
        let now = time::OffsetDateTime::parse(
            "2026-12-04T10:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(offload_due("2026-12-04T09:58:00.123456", 60, now));
        assert!(!offload_due("2026-12-04T09:59:30.000001", 60, now));
        assert!(offload_due("2026-12-04T09:58:00+00:00", 60, now));
        // 0 and -1: the periodic never offloads
        assert!(!offload_due("2026-12-04T09:00:00", 0, now));
        assert!(!offload_due("2026-12-04T09:00:00", -1, now));
        assert!(!offload_due("not a time", 60, now));
    }

    #[test]
    fn shelved_at_is_nova_isoformat() {
        let s = nova_now();
        assert_eq!(s.len(), "2026-12-04T10:00:00.000000".len(), "{s}");
        assert!(parse_nova_time(&s).is_some());
    }
}
