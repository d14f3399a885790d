//! Compute RPC dispatch and the instance operations, with nova-compute's
//! state transitions, action events, faults and per-instance locks.
//!
//! Long because it holds one handler per compute RPC method Nova 34 casts or
//! calls, each a few dozen lines of state transitions; the decisions shared
//! between them are small functions tested on their own
//! (`manager_tests.rs`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::conductor::ConductorApi;
use super::events::InstanceEvents;
use super::glance::Glance;
use super::network::{NetworkApi, NetworkError};
use super::pci::{self, PciRequest};
use super::resources::{Claim, ResourceTracker};
use super::{ephemeral, spec, ComputeError, RPC_API_VERSION};
use crate::config::Config;
use crate::driver::{Driver, DriverError, PowerState};
use crate::nova::object::{NovaObject, VersionedObject};
use crate::nova::objects::instance::{power_state, task_states, vm_states, Instance};
use crate::nova::objects::network_model::NetworkInfo;
use crate::nova::rpc_methods::ComputeCall;
use crate::rpc::{Context, Endpoint, Failure, Request};
use crate::text::printable;
use tracing::Instrument;

/// Every method of nova-compute's RPC API (`nova/compute/rpcapi.py`): the ones
/// corral does not implement are answered as nova-compute answers them when
/// its driver lacks the feature.
const RPC_METHODS: &[&str] = &[
    "build_and_run_instance",
    "terminate_instance",
    "stop_instance",
    "start_instance",
    "reboot_instance",
    "pause_instance",
    "suspend_instance",
    "get_console_output",
    "snapshot_instance",
    "backup_instance",
    "rebuild_instance",
    "external_instance_event",
    "attach_interface",
    "detach_interface",
    "reserve_block_device_name",
    "attach_volume",
    "detach_volume",
    "swap_volume",
    "remove_volume_connection",
    "volume_snapshot_create",
    "prep_resize",
    "resize_instance",
    "finish_resize",
    "confirm_resize",
    "revert_resize",
    "finish_revert_resize",
    "check_instance_shared_storage",
    "prep_snapshot_based_resize_at_dest",
    "prep_snapshot_based_resize_at_source",
    "finish_snapshot_based_resize_at_dest",
    "confirm_snapshot_based_resize_at_source",
    "revert_snapshot_based_resize_at_dest",
    "finish_revert_snapshot_based_resize_at_source",
    "check_can_live_migrate_destination",
    "check_can_live_migrate_source",
    "pre_live_migration",
    "live_migration",
    "post_live_migration_at_destination",
    "rollback_live_migration_at_destination",
    "drop_move_claim_at_destination",
    "live_migration_abort",
    "live_migration_force_complete",
    "shelve_instance",
    "shelve_offload_instance",
    "unshelve_instance",
    "rescue_instance",
    "soft_delete_instance",
    "set_admin_password",
    "get_vnc_console",
    "validate_console_port",
    "get_diagnostics",
    "quiesce_instance",
    "trigger_crash_dump",
    "inject_network_info",
    "add_fixed_ip_to_instance",
    "get_host_uptime",
    "host_power_action",
    "host_maintenance_mode",
    "set_host_enabled",
    "cache_images",
    "allow_share",
    "unpause_instance",
    "resume_instance",
    "get_instance_diagnostics",
    "unrescue_instance",
    "restore_instance",
    "get_spice_console",
    "get_serial_console",
    "get_mks_console",
    "unquiesce_instance",
    "remove_fixed_ip_from_instance",
    "volume_snapshot_delete",
    "deny_share",
];

/// The compute manager.
pub struct Manager {
    cfg: Arc<Config>,
    driver: Arc<dyn Driver>,
    conductor: Arc<dyn ConductorApi>,
    tracker: ResourceTracker,
    glance: Option<Glance>,
    locks: crate::locks::KeyedLocks,
    builds: Arc<tokio::sync::Semaphore>,
    /// Neutron, when `[neutron]` is configured.
    network: Option<NetworkApi>,
    /// Waiters for `network-vif-plugged`.
    events: InstanceEvents,
    /// `[DEFAULT] vif_plugging_timeout` (zero: no wait).
    vif_timeout: Duration,
    /// `[DEFAULT] vif_plugging_is_fatal`.
    vif_fatal: bool,
    /// Config drive and network injection options.
    guest: spec::GuestDataOptions,
    /// `[DEFAULT] shelved_offload_time`.
    shelved_offload_time: i64,
}

/// What a build's spawn takes from the steps before it.
struct SpawnInputs {
    nw_info: NetworkInfo,
    vifs: Vec<crate::driver::VifSpec>,
    pci_devices: Vec<String>,
    ephemeral_disk: Option<(u64, String)>,
}

/// An instance being worked on: its object, saved through the conductor.
struct Inst {
    obj: NovaObject,
    uuid: String,
}

impl Inst {
    fn new(instance: &Instance) -> Result<Inst, ComputeError> {
        let mut obj = instance.to_object()?;
        obj.reset_changes();
        let uuid = instance
            .uuid()
            .ok_or_else(|| ComputeError::Invalid("instance without a uuid".into()))?
            .to_string();
        Ok(Inst { obj, uuid })
    }

    fn str(&self, field: &str) -> Option<&str> {
        self.obj.get(field).and_then(Value::as_str)
    }
}

fn now_iso() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map(|s| {
            // Nova's datetime fields: "2026-11-27T18:00:00Z" style.
            match s.find('.') {
                Some(dot) => format!("{}Z", &s[..dot]),
                None => s,
            }
        })
        .unwrap_or_default()
}

fn kw(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl Manager {
    pub fn new(
        cfg: Arc<Config>,
        nova: &crate::config::NovaConfig,
        driver: Arc<dyn Driver>,
        conductor: Arc<dyn ConductorApi>,
        tracker: ResourceTracker,
    ) -> Result<Manager, ComputeError> {
        let glance = nova
            .glance_endpoint
            .as_deref()
            .map(|e| Glance::new(e, cfg.corral.max_image_bytes))
            .transpose()?;
        let builds = Arc::new(tokio::sync::Semaphore::new(nova.max_concurrent_builds));
        let network = crate::neutron::NeutronOptions::from_pairs(&nova.neutron_section)
            .map_err(NetworkError::from)?
            .map(|o| {
                crate::neutron::NeutronClient::new(&o)
                    .map(|c| NetworkApi::new(Arc::new(c), &o.ovs_bridge, &cfg.host))
            })
            .transpose()
            .map_err(NetworkError::from)?;
        Ok(Manager {
            cfg,
            driver,
            conductor,
            tracker,
            glance,
            locks: crate::locks::KeyedLocks::new(),
            builds,
            network,
            events: InstanceEvents::default(),
            vif_timeout: Duration::from_secs(nova.vif_plugging_timeout),
            vif_fatal: nova.vif_plugging_is_fatal,
            guest: spec::GuestDataOptions {
                force_config_drive: nova.force_config_drive,
                dhcp_domain: nova.dhcp_domain.clone(),
                inject_network: nova.inject_network,
            },
            shelved_offload_time: nova.shelved_offload_time,
        })
    }

    /// The same manager over another Neutron (tests use a double).
    pub fn with_neutron(
        mut self,
        neutron: Arc<dyn crate::neutron::NeutronApi>,
        ovs_bridge: &str,
    ) -> Manager {
        self.network = Some(NetworkApi::new(neutron, ovs_bridge, &self.cfg.host));
        self
    }

    fn host(&self) -> &str {
        &self.cfg.host
    }

    /// The instance's lock; its entry leaves the map when no one holds or waits for it.
    fn lock_for(&self, uuid: &str) -> crate::locks::LockHandle<'_> {
        self.locks.handle(uuid)
    }

    /// `instance.save(expected_task_state=...)` of the given fields.
    async fn save(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        fields: &[(&str, Value)],
        expected_task_state: Option<Value>,
    ) -> Result<(), ComputeError> {
        inst.obj.reset_changes();
        for (k, v) in fields {
            inst.obj.set(k, v.clone());
        }
        let mut kwargs = Map::new();
        if let Some(e) = expected_task_state {
            kwargs.insert("expected_task_state".into(), e);
        }
        self.conductor
            .object_action(ctx, &mut inst.obj, "save", vec![], kwargs)
            .await?;
        inst.obj.reset_changes();
        Ok(())
    }

    /// The end of an operation: the power state the driver reports, the target
    /// vm_state, no task state (plus `extra`), saved from `expected`.
    async fn settle(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        vm_state: &str,
        expected: &str,
        extra: &[(&str, Value)],
    ) -> Result<(), ComputeError> {
        let power = self.current_power(&inst.uuid).await;
        let mut fields = vec![
            ("power_state", json!(power)),
            ("vm_state", json!(vm_state)),
            ("task_state", Value::Null),
        ];
        fields.extend(extra.iter().cloned());
        self.save(ctx, inst, &fields, Some(json!(expected))).await
    }

    /// `InstanceFault.create`, as `wrap_instance_fault` / `add_instance_fault_from_exc`.
    async fn add_fault(&self, ctx: &Context, uuid: &str, class: &str, message: &str) {
        let result = async {
            let mut f = NovaObject::new_nova34("InstanceFault")?;
            f.set("instance_uuid", json!(uuid));
            f.set("code", json!(500));
            let (msg, details) = fault_text(class, message);
            f.set("message", json!(msg));
            f.set("details", json!(details));
            f.set("host", json!(self.host()));
            self.conductor
                .object_action(ctx, &mut f, "create", vec![], Map::new())
                .await
                .map(|_| ())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(uuid, error = %e.full_message(), "cannot record the instance fault");
        }
    }

    async fn event_start(&self, ctx: &Context, uuid: &str, event: &str) {
        if let Err(e) = self
            .conductor
            .event_start(ctx, uuid, event, self.host())
            .await
        {
            tracing::warn!(uuid, event, error = %e.full_message(), "action event start not recorded");
        }
    }

    async fn event_finish(&self, ctx: &Context, uuid: &str, event: &str, error: Option<&str>) {
        if let Err(e) = self.conductor.event_finish(ctx, uuid, event, error).await {
            tracing::warn!(uuid, event, error = %e.full_message(), "action event finish not recorded");
        }
    }

    fn power_state_of(&self, p: PowerState) -> i64 {
        p as i64
    }

    async fn current_power(&self, uuid: &str) -> i64 {
        match self.driver.power_state(uuid).await {
            Ok(state) => self.power_state_of(state),
            Err(_) => power_state::NOSTATE,
        }
    }

    // ---- recovery and periodic work -------------------------------------------

    /// `init_host`: finish or fail what a restart interrupted.
    pub async fn init_host(&self, ctx: &Context) {
        for mut inst in self.host_instances(ctx).await {
            let vm = inst.str("vm_state").unwrap_or("").to_string();
            let task = inst.str("task_state").map(str::to_string);
            let uuid = inst.uuid.clone();
            if self.recover_shelve(ctx, &mut inst).await
                || self.recover_rescue(ctx, &mut inst).await
            {
                continue;
            }
            let action = recovery_for(&vm, task.as_deref());
            if action == Recovery::FailBuild {
                tracing::warn!(%uuid, "build interrupted by a restart: instance goes to error");
                let _ = self.driver.destroy(&uuid).await;
                self.add_fault(
                    ctx,
                    &uuid,
                    "BuildAbortException",
                    "build interrupted by a restart of the compute service",
                )
                .await;
                self.to_error(ctx, &mut inst).await;
                let _ = self.tracker.release(ctx, &uuid).await;
                self.tracker.delete_allocations(&uuid).await;
            } else if action == Recovery::FinishDelete {
                if let Ok(instance) = Instance::from_object(inst.obj.clone()) {
                    let _ = self.do_terminate(ctx, &mut inst, &instance).await;
                }
            } else if action == Recovery::ClearTask {
                let power = self.current_power(&uuid).await;
                let _ = self
                    .save(
                        ctx,
                        &mut inst,
                        &[("task_state", Value::Null), ("power_state", json!(power))],
                        None,
                    )
                    .await;
            }
        }
    }

    /// This host's instances as Nova lists them (errors logged: the periodic
    /// work tries again next time).
    async fn host_instances(&self, ctx: &Context) -> Vec<Inst> {
        self.host_instances_with(ctx, &["flavor"]).await
    }

    /// [`Self::host_instances`] with only the `expected_attrs` named (none: the
    /// instance's own columns, as Nova's `_sync_power_states` asks).
    async fn host_instances_with(&self, ctx: &Context, attrs: &[&str]) -> Vec<Inst> {
        let list = match self.instances_on_host(ctx, attrs).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e.full_message(), "cannot list this host's instances");
                return Vec::new();
            }
        };
        list.into_iter()
            .filter_map(|obj| Instance::from_object(obj).ok())
            .filter_map(|i| Inst::new(&i).ok())
            .collect()
    }

    async fn instances_on_host(
        &self,
        ctx: &Context,
        attrs: &[&str],
    ) -> Result<Vec<NovaObject>, ComputeError> {
        let list = self
            .conductor
            .class_action(
                ctx,
                "InstanceList",
                "get_by_host",
                vec![json!(self.host())],
                kw(&[("expected_attrs", json!(attrs))]),
            )
            .await?;
        Ok(NovaObject::from_primitive(&list)?.list_objects()?)
    }

    /// `_sync_power_states`: report containers that died or were changed
    /// outside Nova; an active instance whose container stopped is stopped.
    pub async fn sync_power_states(&self, ctx: &Context) {
        // no flavors: the pass reads only the instance's states
        let busy = |inst: &Inst| inst.obj.get("task_state").is_some_and(|v| !v.is_null());
        let listed = self.host_instances_with(ctx, &[]).await;
        let quiet: Vec<String> = listed
            .iter()
            .filter(|i| !busy(i))
            .map(|i| i.uuid.clone())
            .collect();
        let states = match self.driver.power_states(&quiet).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "power states unreadable: no power sync this time");
                return;
            }
        };
        for mut inst in listed {
            if busy(&inst) {
                continue;
            }
            let power = states
                .get(&inst.uuid)
                .map_or(power_state::NOSTATE, |s| self.power_state_of(*s));
            // An instance whose listed state agrees with its container needs
            // nothing, and no second read: a pass over 1000 quiet instances
            // makes no call per instance. A change made since the list is
            // seen by the next pass, as one made after a refresh would be.
            if sync_action(&inst, power) == PowerSync::Nothing {
                continue;
            }
            let lock = self.lock_for(&inst.uuid);
            let _g = lock.lock().await;
            // As `_sync_instance_power_state`: the instance again, under its
            // lock; an operation that held it (a shelve) may have changed it.
            let refreshed = self
                .conductor
                .object_action(ctx, &mut inst.obj, "refresh", vec![], Map::new())
                .await;
            if refreshed.is_err() || inst.obj.get("task_state").is_some_and(|v| !v.is_null()) {
                continue;
            }
            inst.obj.reset_changes();
            let action = sync_action(&inst, power);
            if action == PowerSync::StopInstance {
                tracing::warn!(uuid = %inst.uuid, "container stopped outside Nova: instance stopped");
                let _ = self
                    .driver
                    .power_off(&inst.uuid, Duration::from_secs(0), true)
                    .await;
                let _ = self
                    .save(
                        ctx,
                        &mut inst,
                        &[
                            ("power_state", json!(power_state::SHUTDOWN)),
                            ("vm_state", json!(vm_states::STOPPED)),
                            ("task_state", Value::Null),
                        ],
                        Some(Value::Null),
                    )
                    .await;
            } else if action == PowerSync::SavePower {
                let _ = self
                    .save(ctx, &mut inst, &[("power_state", json!(power))], None)
                    .await;
            }
        }
    }

    // ---- dispatch ------------------------------------------------------------

    /// A call: answered with a value or a failure.
    pub async fn call(&self, ctx: Context, call: ComputeCall) -> Result<Value, Failure> {
        use ComputeCall as C;
        match call {
            C::GetConsoleOutput(a) => {
                let uuid = a.instance.uuid().unwrap_or_default().to_string();
                let lines = a.tail_length.get().and_then(|n| usize::try_from(*n).ok());
                match self.driver.console_output(&uuid, lines).await {
                    Ok(text) => Ok(json!(text)),
                    Err(e) => Err(ComputeError::Driver(e).to_failure(Some(&uuid))),
                }
            }
            C::GetDiagnostics(a) => self.diagnostics(&a.instance, false).await,
            C::GetInstanceDiagnostics(a) => self.diagnostics(&a.instance, true).await,
            C::GetHostUptime(_) => Ok(json!(host_uptime())),
            C::CacheImages(a) => Ok(self.cache_images(&ctx, &a.image_ids).await),
            C::AttachInterface(a) => self.attach_interface(&ctx, *a).await,
            C::StopInstance(_) => {
                // stop_instance is a call when the API asks for it: do it in line.
                self.cast(ctx, call).await;
                Ok(Value::Null)
            }
            other => Err(Failure::not_implemented(&format!(
                "{} is not supported by this compute driver",
                other.method()
            ))),
        }
    }

    /// A cast: runs to the end; errors become faults and error states.
    pub async fn cast(&self, ctx: Context, call: ComputeCall) {
        use ComputeCall as C;
        let method = call.method();
        if let C::ExternalInstanceEvent(a) = call {
            // Not under the instance's lock: a build holding it waits for these.
            self.external_instance_event(&ctx, *a).await;
            return;
        }
        let Some(instance) = call.instance().cloned() else {
            if let C::ExternalInstanceEvent(_) = call {
                return;
            }
            tracing::info!(method, "cast without an instance ignored");
            return;
        };
        let mut inst = match Inst::new(&instance) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(method, error = %e.full_message(), "bad instance in cast");
                return;
            }
        };
        if let C::BuildAndRunInstance(b) = call {
            let permit = self.builds.clone().acquire_owned().await;
            let lock = self.lock_for(&inst.uuid);
            let _g = lock.lock().await;
            self.build(&ctx, &mut inst, &instance, *b).await;
            drop(permit);
            return;
        }
        let lock = self.lock_for(&inst.uuid);
        let _g = lock.lock().await;
        let event = format!("compute_{method}");
        let uuid = inst.uuid.clone();
        let evented = !matches!(call, C::ExternalInstanceEvent(_) | C::InjectNetworkInfo(_));
        if evented {
            self.event_start(&ctx, &uuid, &event).await;
        }
        let result = match call {
            C::TerminateInstance(_) => {
                self.events.clear(&uuid);
                self.do_terminate(&ctx, &mut inst, &instance).await
            }
            C::StopInstance(a) => {
                let clean = a.clean_shutdown.get().copied().unwrap_or(true);
                self.do_stop(&ctx, &mut inst, clean).await
            }
            C::StartInstance(_) => self.do_start(&ctx, &mut inst).await,
            C::RebootInstance(a) => self.do_reboot(&ctx, &mut inst, a.is_hard()).await,
            C::PauseInstance(_) => self.do_freeze(&ctx, &mut inst, false).await,
            C::UnpauseInstance(_) => self.do_thaw(&ctx, &mut inst, false).await,
            C::SuspendInstance(_) => self.do_freeze(&ctx, &mut inst, true).await,
            C::ResumeInstance(_) => self.do_thaw(&ctx, &mut inst, true).await,
            C::RebuildInstance(a) => {
                let image = a
                    .image_ref
                    .get()
                    .cloned()
                    .or_else(|| inst.str("image_ref").map(str::to_string));
                self.do_rebuild(&ctx, &mut inst, image, &a).await
            }
            C::DetachInterface(a) => {
                let port = a.port_id.as_str().unwrap_or_default().to_string();
                self.detach_interface(&ctx, &uuid, &port, &instance).await
            }
            C::SnapshotInstance(a) => {
                let image_id = a.image_id.get().cloned().unwrap_or_default();
                self.do_snapshot(&ctx, &mut inst, &image_id, None).await
            }
            C::BackupInstance(a) => {
                let image_id = a.image_id.get().cloned().unwrap_or_default();
                let backup_type = a.backup_type.get().cloned().unwrap_or_default();
                let rotation = a.rotation.get().copied().unwrap_or(0);
                self.do_snapshot(&ctx, &mut inst, &image_id, Some((&backup_type, rotation)))
                    .await
            }
            C::ShelveInstance(a) => {
                let image_id = a.image_id.get().cloned().unwrap_or_default();
                let clean = a.clean_shutdown.get().copied().unwrap_or(true);
                self.do_shelve(&ctx, &mut inst, &instance, &image_id, clean)
                    .await
            }
            C::ShelveOffloadInstance(a) => {
                let clean = a.clean_shutdown.get().copied().unwrap_or(true);
                self.do_shelve_offload(&ctx, &mut inst, &instance, clean, false)
                    .await
            }
            C::UnshelveInstance(a) => self.do_unshelve(&ctx, &mut inst, &instance, &a).await,
            C::RescueInstance(a) => {
                let args = rescue::RescueArgs {
                    image: a.rescue_image_ref.as_str(),
                    password: a.rescue_password.as_str(),
                    clean: a.clean_shutdown.get().copied().unwrap_or(true),
                };
                self.do_rescue(&ctx, &mut inst, &instance, args).await
            }
            C::UnrescueInstance(_) => self.do_unrescue(&ctx, &mut inst).await,
            C::ExternalInstanceEvent(_) | C::InjectNetworkInfo(_) => Ok(()),
            other => Err(ComputeError::Invalid(format!(
                "NotImplementedError: {} is not supported by this compute driver",
                other.method()
            ))),
        };
        if let Err(e) = &result {
            let msg = e.full_message();
            tracing::warn!(%uuid, method, error = %msg, "operation failed");
            let class = fault_class(e, &msg);
            self.add_fault(&ctx, &uuid, class, &msg).await;
            // reverts_task_state: the instance leaves its task state.
            let _ = self
                .save(&ctx, &mut inst, &[("task_state", Value::Null)], None)
                .await;
        }
        if evented {
            let err = result.as_ref().err().map(|e| e.full_message());
            self.event_finish(&ctx, &uuid, &event, err.as_deref()).await;
        }
    }

    // ---- build -----------------------------------------------------------------

    async fn build(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
        args: crate::nova::rpc_methods::BuildAndRunInstance,
    ) {
        let uuid = inst.uuid.clone();
        let event = "compute__do_build_and_run_instance";
        // Step 1: building, from scheduling (a deleted instance stops here),
        // beside the action event's start (two conductor calls of their own).
        let building = [
            ("vm_state", json!(vm_states::BUILDING)),
            ("task_state", Value::Null),
        ];
        let (_, building) = tokio::join!(
            self.event_start(ctx, &uuid, event),
            self.save(
                ctx,
                inst,
                &building,
                Some(json!([task_states::SCHEDULING, null])),
            )
        );
        if let Err(e) = building {
            tracing::info!(%uuid, error = %e.full_message(), "build abandoned: instance changed or gone");
            self.tracker.delete_allocations(&uuid).await;
            self.event_finish(ctx, &uuid, event, Some(&e.full_message()))
                .await;
            return;
        }
        let result = self.build_steps(ctx, inst, instance, &args).await;
        match result {
            Ok(()) => {
                self.event_finish(ctx, &uuid, event, None).await;
                let mut a = Map::new();
                a.insert("host_name".into(), json!(self.host()));
                let mut list = NovaObject::new_nova34("InstanceList")
                    .unwrap_or_else(|_| NovaObject::new("InstanceList", inst.obj.version));
                list.data
                    .insert("objects".into(), json!([inst.obj.to_primitive()]));
                a.insert("instance_info".into(), list.to_primitive());
                let _ = self
                    .conductor
                    .scheduler_fanout(ctx, "update_instance_info", a)
                    .await;
            }
            Err((e, reschedulable)) => {
                let msg = e.full_message();
                tracing::warn!(%uuid, error = %msg, "build failed");
                self.events.clear(&uuid);
                if let Err(d) = self.driver.destroy(&uuid).await {
                    if !matches!(d, DriverError::NotFound(_)) {
                        tracing::warn!(%uuid, error = %d, "cleanup after a failed build incomplete");
                    }
                }
                // _cleanup_allocated_networks: made ports deleted, user ports unbound
                if self.network.is_some() && allocation_for(instance, &args).is_some() {
                    let keep = requested_port_ids(&args);
                    self.deallocate(ctx, &uuid, &keep).await;
                }
                let _ = self.tracker.release(ctx, &uuid).await;
                let retry = args
                    .filter_properties
                    .get()
                    .and_then(|f| f.get("retry"))
                    .filter(|r| r.is_object())
                    .cloned();
                let alternates = args.host_list.get().map(|h| !h.is_empty()).unwrap_or(false);
                if reschedulable && retry.is_some() && alternates {
                    self.reschedule(ctx, inst, &args, &msg).await;
                    self.event_finish(
                        ctx,
                        &uuid,
                        event,
                        Some(&format!("Build of instance {uuid} was re-scheduled: {msg}")),
                    )
                    .await;
                } else {
                    self.add_fault(ctx, &uuid, e.nova_class(), &msg).await;
                    let _ = self
                        .save(
                            ctx,
                            inst,
                            &[
                                ("vm_state", json!(vm_states::ERROR)),
                                ("task_state", Value::Null),
                                ("host", Value::Null),
                                ("node", Value::Null),
                                ("compute_id", Value::Null),
                                ("launched_on", Value::Null),
                            ],
                            None,
                        )
                        .await;
                    self.tracker.delete_allocations(&uuid).await;
                    self.event_finish(ctx, &uuid, event, Some(&msg)).await;
                }
            }
        }
    }

    /// The build after step 1; errors say whether a reschedule may help.
    async fn build_steps(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
        args: &crate::nova::rpc_methods::BuildAndRunInstance,
    ) -> Result<(), (ComputeError, bool)> {
        let uuid = inst.uuid.clone();
        let abort = |e: ComputeError| (e, false);
        let resched = |e: ComputeError| (e, true);
        // The flavor is checked before anything is made.
        let flavor = instance
            .flavor
            .get()
            .ok_or_else(|| abort(ComputeError::Invalid("instance has no flavor".into())))?;
        spec::limits(flavor).map_err(|e| abort(ComputeError::Invalid(e.to_string())))?;
        let ephemeral_disk = ephemeral::disk(
            flavor,
            args.block_device_mapping
                .get()
                .map(|l| l.mappings())
                .unwrap_or(&[]),
            self.cfg
                .nova
                .as_ref()
                .and_then(|n| n.default_ephemeral_format.as_deref()),
        )
        .map_err(|e| abort(ComputeError::Invalid(e.to_string())))?;
        // Networks asked for without a Neutron to ask: refused before anything is made.
        let allocation = allocation_for(instance, args);
        if allocation
            .as_ref()
            .is_some_and(|a| !a.requests.is_empty() || a.auto)
            && self.network.is_none()
        {
            return Err(abort(ComputeError::Invalid(
                "networks requested but no [neutron] section is configured".into(),
            )));
        }
        // Claim: the instance lands on this host and node.
        let claim = Claim {
            vcpus: flavor.vcpus.get().copied().unwrap_or(0).max(0) as u64,
            memory_mb: flavor.memory_mb.get().copied().unwrap_or(0).max(0) as u64,
            disk_gb: (flavor.root_gb.get().copied().unwrap_or(0)
                + flavor.ephemeral_gb.get().copied().unwrap_or(0))
            .max(0) as u64,
        };
        // The instance's host and node are saved beside the claim's own
        // saves (PCI devices, the node's usage): separate conductor calls.
        let node_id = self.tracker.compute_node_id().await;
        let landed = [
            ("host", json!(self.host())),
            ("launched_on", json!(self.host())),
            ("node", json!(self.tracker.nodename())),
            (
                "compute_id",
                node_id.map(Value::from).unwrap_or(Value::Null),
            ),
        ];
        let claimed = async {
            // PCI devices (`pci_passthrough:alias`): too few is nova's failed
            // claim test, a reschedule; the node save of the claim saves them.
            let pci_devices = self.claim_pci(ctx, &uuid, instance, args).await?;
            self.tracker.instance_claim(ctx, &uuid, claim).await?;
            Ok::<_, ComputeError>(pci_devices)
        };
        let (landed, claimed) = tokio::join!(self.save(ctx, inst, &landed, None), claimed);
        landed.map_err(abort)?;
        let pci_devices = claimed.map_err(resched)?;
        // `_allocate_network`: networking is saved before any port is made;
        // without ports to make, that save joins the ones below.
        let allocates = self.network.is_some() && allocation.is_some();
        let image_ref = inst.str("image_ref").map(str::to_string);
        if allocates {
            self.save(
                ctx,
                inst,
                &[("task_state", json!(task_states::NETWORKING))],
                Some(json!([null])),
            )
            .await
            .map_err(abort)?;
        }
        // As in Nova, the ports are made beside the block_device_mapping and
        // spawning saves; the image, root, bundle and container do not wait
        // for those saves either. Nova sees the same transitions in the same
        // order, and a failed save still fails the build once the spawn has
        // ended (the failure path destroys what it made).
        let saves = async {
            if !allocates {
                self.save(
                    ctx,
                    inst,
                    &[("task_state", json!(task_states::NETWORKING))],
                    Some(json!([null])),
                )
                .await?;
            }
            self.save(
                ctx,
                inst,
                &[("task_state", json!(task_states::BLOCK_DEVICE_MAPPING))],
                None,
            )
            .await?;
            self.save(
                ctx,
                inst,
                &[("task_state", json!(task_states::SPAWNING))],
                Some(json!(task_states::BLOCK_DEVICE_MAPPING)),
            )
            .await
        };
        let saves = async {
            let saved = saves.await;
            if saved.is_err() {
                // the build fails anyway: no wait for network-vif-plugged
                self.events.clear(&uuid);
            }
            saved
        };
        let work = async {
            // _build_networks_for_instance: ports made or taken over, bound here.
            let nw_info = match (&self.network, &allocation) {
                (Some(net), Some(a)) => {
                    let (info, _) = net.allocate(a).await.map_err(|e| {
                        // a failed binding may succeed on another host
                        let reschedulable = matches!(e, NetworkError::PortBindingFailed(_));
                        (ComputeError::Network(e), reschedulable)
                    })?;
                    self.save_nw_info(ctx, &uuid, &info).await.map_err(abort)?;
                    info
                }
                _ => Default::default(),
            };
            let vifs = match &self.network {
                Some(net) => net.vif_specs(&uuid, &nw_info).map_err(|e| {
                    let reschedulable = matches!(e, NetworkError::PortBindingFailed(_));
                    (ComputeError::Network(e), reschedulable)
                })?,
                None => Vec::new(),
            };
            let inputs = SpawnInputs {
                nw_info,
                vifs,
                pci_devices,
                ephemeral_disk,
            };
            let record_drive = self
                .prepare_and_spawn(ctx, &uuid, instance, args, image_ref, inputs)
                .await?;
            Ok((record_drive, self.current_power(&uuid).await))
        };
        let (saved, spawned) = tokio::join!(saves, work);
        saved.map_err(abort)?;
        let (record_drive, power) = spawned?;
        let mut fields = vec![
            ("power_state", json!(power)),
            ("vm_state", json!(vm_states::ACTIVE)),
            ("task_state", Value::Null),
            ("launched_at", json!(now_iso())),
        ];
        if record_drive {
            fields.push(("config_drive", json!("True")));
        }
        self.save(ctx, inst, &fields, Some(json!(task_states::SPAWNING)))
            .await
            .map_err(abort)?;
        Ok(())
    }

    /// The image into the cache, the instance's spec and the gated spawn of
    /// a build; says whether a forced config drive is to be recorded.
    async fn prepare_and_spawn(
        &self,
        ctx: &Context,
        uuid: &str,
        instance: &Instance,
        args: &crate::nova::rpc_methods::BuildAndRunInstance,
        image_ref: Option<String>,
        inputs: SpawnInputs,
    ) -> Result<bool, (ComputeError, bool)> {
        let abort = |e: ComputeError| (e, false);
        let SpawnInputs {
            nw_info,
            vifs,
            pci_devices,
            ephemeral_disk,
        } = inputs;
        // Image into the cache, then the container.
        let image_id = args
            .image
            .get()
            .and_then(|i| i.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(image_ref)
            .ok_or_else(|| abort(ComputeError::Invalid("no image to build from".into())))?;
        let alias = self.cache_image(ctx, &image_id).await.map_err(abort)?;
        let mut spec = spec::from_instance(instance, &alias)
            .map_err(|e| abort(ComputeError::Invalid(e.to_string())))?;
        spec.pci_devices = pci_devices;
        ephemeral::apply(&mut spec.limits, ephemeral_disk);
        // The config drive and injected network come from the network just
        // allocated (empty without networks).
        let (drive, interfaces) = spec::guest_data(
            instance,
            &self.guest,
            &spec::GuestDataInputs {
                network_info: nw_info.clone(),
                admin_pass: args.admin_password.as_str(),
                injected_files: args.injected_files.get().map(Vec::as_slice).unwrap_or(&[]),
                image_props: args
                    .image
                    .get()
                    .and_then(|i| i.get("properties"))
                    .and_then(Value::as_object),
            },
        )
        .map_err(|e| abort(ComputeError::Invalid(e.to_string())))?;
        // `configdrive.update_instance`: a forced drive is recorded on the instance.
        let record_drive =
            drive.is_some() && instance.config_drive.as_str().is_none_or(str::is_empty);
        spec.config_drive = drive;
        spec.network_interfaces = interfaces;
        spec.vifs = vifs;
        self.spawn_gated(uuid, &spec, &nw_info)
            .await
            .map_err(|e| match e {
                GatedSpawnError::VifPlug => (
                    ComputeError::Network(NetworkError::VirtualInterfaceCreate),
                    false,
                ),
                GatedSpawnError::Driver(e) => {
                    let reschedulable =
                        !matches!(e, DriverError::Invalid(_) | DriverError::ImageNotFound(_));
                    (ComputeError::Driver(e), reschedulable)
                }
            })?;
        Ok(record_drive)
    }

    /// The instance's `InstancePCIRequests` (in the build message, else read
    /// through the conductor), with the providers the scheduler allocated
    /// them from, claimed on this host.
    async fn claim_pci(
        &self,
        ctx: &Context,
        uuid: &str,
        instance: &Instance,
        args: &crate::nova::rpc_methods::BuildAndRunInstance,
    ) -> Result<Vec<String>, ComputeError> {
        use crate::nova::fields::Field;
        let requests = match &instance.pci_requests {
            Field::Set(obj) => obj.clone(),
            Field::Null => return Ok(Vec::new()),
            Field::Unset => {
                let v = self
                    .conductor
                    .class_action(
                        ctx,
                        "InstancePCIRequests",
                        "get_by_instance_uuid",
                        vec![json!(uuid)],
                        Map::new(),
                    )
                    .await?;
                if v.is_null() {
                    return Ok(Vec::new());
                }
                NovaObject::from_primitive(&v)?
            }
        };
        let mut requests = PciRequest::from_requests_object(&requests)?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(groups) = args
            .request_spec
            .get()
            .and_then(|r| r.requested_resources.get())
        {
            pci::apply_provider_mapping(&mut requests, groups);
        }
        self.tracker.pci().claim(uuid, &requests)
    }

    /// `cache_images`, as nova-compute answers it: each image id to `cached`
    /// (downloaded now), `existing` (already in the cache) or `error` (logged).
    async fn cache_images(&self, ctx: &Context, image_ids: &[String]) -> Value {
        tracing::info!(count = image_ids.len(), "caching images by request");
        let mut results = serde_json::Map::new();
        for id in image_ids {
            let alias = super::glance::alias(id);
            let result = if self.driver.images().get_image(&alias).await.is_ok() {
                "existing"
            } else {
                match self.cache_image(ctx, id).await {
                    Ok(_) => "cached",
                    Err(e) => {
                        tracing::error!(image = %printable(id, 80), error = %e, "failed to cache image");
                        "error"
                    }
                }
            };
            results.insert(id.clone(), json!(result));
        }
        Value::Object(results)
    }

    async fn cache_image(&self, ctx: &Context, image_id: &str) -> Result<String, ComputeError> {
        let glance = self
            .glance
            .as_ref()
            .ok_or_else(|| ComputeError::Glance("no [glance] api_servers configured".into()))?;
        let token = ctx.get("auth_token").and_then(Value::as_str);
        let request_id = ctx.get("request_id").and_then(Value::as_str);
        glance
            .ensure_cached(self.driver.images(), image_id, token, request_id)
            .await
    }

    /// `_reschedule`: free this host, then hand the build back to the conductor.
    async fn reschedule(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        args: &crate::nova::rpc_methods::BuildAndRunInstance,
        reason: &str,
    ) {
        let uuid = inst.uuid.clone();
        let _ = self
            .save(
                ctx,
                inst,
                &[
                    ("host", Value::Null),
                    ("node", Value::Null),
                    ("compute_id", Value::Null),
                    ("launched_on", Value::Null),
                    ("task_state", json!(task_states::SCHEDULING)),
                ],
                None,
            )
            .await;
        self.tracker.delete_allocations(&uuid).await;
        let mut filter = args.filter_properties.get().cloned().unwrap_or_default();
        if let Some(Value::Object(retry)) = filter.get_mut("retry") {
            retry.insert("exc_reason".into(), json!(reason));
            retry.insert("exc".into(), json!([reason]));
        }
        let to = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
        let mut a = Map::new();
        a.insert("instances".into(), json!([inst.obj.to_primitive()]));
        a.insert("image".into(), to(serde_json::to_value(args.image.get())));
        a.insert("filter_properties".into(), Value::Object(filter));
        a.insert(
            "admin_password".into(),
            to(serde_json::to_value(args.admin_password.get())),
        );
        a.insert(
            "injected_files".into(),
            to(serde_json::to_value(args.injected_files.get())),
        );
        a.insert(
            "requested_networks".into(),
            to(serde_json::to_value(args.requested_networks.get())),
        );
        a.insert(
            "security_groups".into(),
            to(serde_json::to_value(args.security_groups.get())),
        );
        a.insert(
            "request_spec".into(),
            to(serde_json::to_value(args.request_spec.get())),
        );
        a.insert(
            "host_lists".into(),
            json!([to(serde_json::to_value(args.host_list.get()))]),
        );
        if let Err(e) = self.conductor.build_instances(ctx, a).await {
            tracing::error!(%uuid, error = %e.full_message(), "reschedule cast failed");
        } else {
            tracing::info!(%uuid, "build rescheduled");
        }
    }

    // ---- lifecycle ---------------------------------------------------------------

    async fn do_terminate(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
    ) -> Result<(), ComputeError> {
        let uuid = inst.uuid.clone();
        match self.driver.destroy(&uuid).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // _shutdown_instance: the network goes with the instance.
        if let Some(net) = &self.network {
            let keep = self
                .cached_nw_info(ctx, &uuid, instance)
                .await
                .0
                .iter()
                .filter(|v| v.preserve_on_delete.get() == Some(&true))
                .filter_map(|v| v.id.as_str().map(str::to_string))
                .collect::<Vec<_>>();
            if let Err(e) = net.deallocate(&uuid, &keep).await {
                // _try_deallocate_network: the server goes to ERROR, a delete
                // again tries the ports again
                self.to_error(ctx, inst).await;
                return Err(e.into());
            }
        }
        self.tracker.release(ctx, &uuid).await?;
        // Allocations go before the record, so nobody sees a deleted server
        // that still holds resources.
        self.tracker.delete_allocations(&uuid).await;
        self.save(
            ctx,
            inst,
            &[
                ("vm_state", json!(vm_states::DELETED)),
                ("task_state", Value::Null),
                ("power_state", json!(power_state::NOSTATE)),
                ("terminated_at", json!(now_iso())),
            ],
            None,
        )
        .await?;
        self.conductor
            .object_action(ctx, &mut inst.obj, "destroy", vec![], Map::new())
            .await?;
        let a = kw(&[
            ("host_name", json!(self.host())),
            ("instance_uuid", json!(uuid)),
        ]);
        let _ = self
            .conductor
            .scheduler_fanout(ctx, "delete_instance_info", a)
            .await;
        Ok(())
    }

    /// `_set_instance_obj_error_state`: the instance to ERROR with no task
    /// state. A failed save is logged; the caller reports its own error.
    async fn to_error(&self, ctx: &Context, inst: &mut Inst) {
        let fields = [
            ("vm_state", json!(vm_states::ERROR)),
            ("task_state", Value::Null),
        ];
        if let Err(e) = self.save(ctx, inst, &fields, None).await {
            tracing::warn!(uuid = %inst.uuid, error = %e.full_message(), "instance not set to ERROR");
        }
    }

    async fn do_stop(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        clean: bool,
    ) -> Result<(), ComputeError> {
        let timeout = stop_timeout(clean, self.cfg.shutdown_timeout);
        self.driver.power_off(&inst.uuid, timeout, !clean).await?;
        self.settle(
            ctx,
            inst,
            vm_states::STOPPED,
            task_states::POWERING_OFF,
            &[],
        )
        .await
    }

    async fn do_start(&self, ctx: &Context, inst: &mut Inst) -> Result<(), ComputeError> {
        self.driver.power_on(&inst.uuid).await?;
        let unshelved = self.unshelved_by_start(ctx, inst).await;
        self.settle(
            ctx,
            inst,
            vm_states::ACTIVE,
            task_states::POWERING_ON,
            &unshelved,
        )
        .await
    }

    async fn do_reboot(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        hard: bool,
    ) -> Result<(), ComputeError> {
        let (pending, started, expected) = reboot_task_states(hard);
        let power = self.current_power(&inst.uuid).await;
        self.save(
            ctx,
            inst,
            &[
                ("power_state", json!(power)),
                ("task_state", json!(pending)),
            ],
            Some(json!(expected)),
        )
        .await?;
        self.save(
            ctx,
            inst,
            &[("task_state", json!(started))],
            Some(json!(pending)),
        )
        .await?;
        let timeout = Duration::from_secs(self.cfg.shutdown_timeout);
        self.driver.reboot(&inst.uuid, hard, timeout).await?;
        self.settle(ctx, inst, vm_states::ACTIVE, started, &[])
            .await
    }

    async fn do_freeze(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        suspend: bool,
    ) -> Result<(), ComputeError> {
        let (vm, expected) = if suspend {
            self.driver.suspend(&inst.uuid).await?;
            (vm_states::SUSPENDED, task_states::SUSPENDING)
        } else {
            self.driver.pause(&inst.uuid).await?;
            (vm_states::PAUSED, task_states::PAUSING)
        };
        self.settle(ctx, inst, vm, expected, &[]).await
    }

    async fn do_thaw(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        resume: bool,
    ) -> Result<(), ComputeError> {
        let expected = if resume {
            self.driver.resume(&inst.uuid).await?;
            task_states::RESUMING
        } else {
            self.driver.unpause(&inst.uuid).await?;
            task_states::UNPAUSING
        };
        self.settle(ctx, inst, vm_states::ACTIVE, expected, &[])
            .await
    }

    async fn do_rebuild(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        image: Option<String>,
        args: &crate::nova::rpc_methods::RebuildInstance,
    ) -> Result<(), ComputeError> {
        let image =
            image.ok_or_else(|| ComputeError::Invalid("rebuild without an image".into()))?;
        // A new root gets a new config drive (Nova builds it again: new
        // password, files and seed) and the injected network again.
        let (drive, interfaces) = spec::guest_data(
            &args.instance,
            &self.guest,
            &spec::GuestDataInputs {
                network_info: NetworkInfo(args.instance.network_info().to_vec()),
                admin_pass: args.new_pass.as_str(),
                injected_files: args.injected_files.get().map(Vec::as_slice).unwrap_or(&[]),
                image_props: None,
            },
        )
        .map_err(|e| ComputeError::Invalid(e.to_string()))?;
        self.save(
            ctx,
            inst,
            &[("task_state", json!("rebuild_block_device_mapping"))],
            Some(json!([task_states::REBUILDING])),
        )
        .await?;
        self.save(
            ctx,
            inst,
            &[("task_state", json!("rebuild_spawning"))],
            Some(json!("rebuild_block_device_mapping")),
        )
        .await?;
        let alias = self.cache_image(ctx, &image).await?;
        self.driver
            .set_guest_data(&inst.uuid, drive, interfaces)
            .await?;
        let preserve = args.preserve_ephemeral.get().copied().unwrap_or(false);
        self.driver.rebuild(&inst.uuid, &alias, preserve).await?;
        let extra = [
            ("image_ref", json!(image)),
            ("launched_at", json!(now_iso())),
        ];
        self.settle(ctx, inst, vm_states::ACTIVE, "rebuild_spawning", &extra)
            .await
    }

    async fn diagnostics(&self, instance: &Instance, object: bool) -> Result<Value, Failure> {
        let uuid = instance.uuid().unwrap_or_default().to_string();
        let info = self
            .driver
            .get_info(&uuid)
            .await
            .map_err(|e| ComputeError::Driver(e).to_failure(Some(&uuid)))?;
        let stats = info.stats.clone().unwrap_or_default();
        let cpu_ns = stats.cpu_usage_ns.unwrap_or(0);
        let mem_used = stats.memory_usage_bytes.unwrap_or(0);
        let mem_max = stats.memory_limit_bytes.unwrap_or(0);
        let vcpus = instance
            .flavor
            .get()
            .and_then(|f| f.vcpus.get().copied())
            .unwrap_or(1);
        if !object {
            return Ok(json!({
                "cpu0_time": cpu_ns,
                "memory": mem_max / 1024,
                "memory-actual": mem_max / 1024,
                "memory-rss": mem_used / 1024,
                "processes": stats.pids_current.unwrap_or(0),
            }));
        }
        let state = match info.power_state {
            PowerState::Running => "running",
            PowerState::Paused => "paused",
            PowerState::Suspended => "suspended",
            PowerState::Crashed => "crashed",
            PowerState::Shutdown => "shutdown",
            PowerState::NoState => "pending",
        };
        let mut d = NovaObject::new_nova34("Diagnostics")
            .map_err(|e| ComputeError::Object(e).to_failure(None))?;
        d.set("state", json!(state));
        d.set("driver", json!("libvirt"));
        d.set("hypervisor", json!("lxc"));
        d.set("hypervisor_os", json!("linux"));
        d.set("config_drive", json!(false));
        d.set("num_cpus", json!(vcpus));
        d.set("num_nics", json!(0));
        d.set("num_disks", json!(1));
        let mut mem = NovaObject::new_nova34("MemoryDiagnostics")
            .map_err(|e| ComputeError::Object(e).to_failure(None))?;
        mem.set("maximum", json!(mem_max >> 20));
        mem.set("used", json!(mem_used >> 20));
        d.set("memory_details", mem.to_primitive());
        let mut cpu = NovaObject::new_nova34("CpuDiagnostics")
            .map_err(|e| ComputeError::Object(e).to_failure(None))?;
        cpu.set("id", json!(0));
        cpu.set("time", json!(cpu_ns));
        cpu.set("utilisation", Value::Null);
        d.set("cpu_details", json!([cpu.to_primitive()]));
        d.set("nic_details", json!([]));
        d.set("disk_details", json!([]));
        Ok(d.to_primitive())
    }
}

/// What `init_host` does with an instance a restart found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// A build was interrupted: the instance goes to error.
    FailBuild,
    /// A delete was interrupted: finish it.
    FinishDelete,
    /// Another task was interrupted: clear it, refresh the power state.
    ClearTask,
    Nothing,
}

fn recovery_for(vm_state: &str, task_state: Option<&str>) -> Recovery {
    let spawning = [
        task_states::SCHEDULING,
        task_states::BLOCK_DEVICE_MAPPING,
        task_states::NETWORKING,
        task_states::SPAWNING,
    ];
    if vm_state == vm_states::BUILDING || task_state.is_some_and(|t| spawning.contains(&t)) {
        Recovery::FailBuild
    } else if task_state == Some(task_states::DELETING) {
        Recovery::FinishDelete
    } else if task_state.is_some() {
        Recovery::ClearTask
    } else {
        Recovery::Nothing
    }
}

/// What the power-state sync does with an idle instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PowerSync {
    /// Active, but the container is gone or stopped: the instance is stopped.
    StopInstance,
    /// The power state Nova holds is stale.
    SavePower,
    Nothing,
}

/// [`power_sync_for`] an instance as Nova holds it.
fn sync_action(inst: &Inst, power: i64) -> PowerSync {
    let db_power = inst
        .obj
        .get("power_state")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    power_sync_for(inst.str("vm_state").unwrap_or(""), db_power, power)
}

fn power_sync_for(vm_state: &str, db_power: i64, power: i64) -> PowerSync {
    if vm_state == vm_states::ACTIVE
        && (power == power_state::SHUTDOWN
            || power == power_state::CRASHED
            || power == power_state::NOSTATE)
    {
        PowerSync::StopInstance
    } else if power != db_power {
        PowerSync::SavePower
    } else {
        PowerSync::Nothing
    }
}

/// The exception class of the fault a failed cast records.
fn fault_class<'a>(e: &'a ComputeError, message: &str) -> &'a str {
    if message.starts_with("NotImplementedError") {
        "NotImplementedError"
    } else {
        e.nova_class()
    }
}

/// How long a stop waits for the instance: a clean shutdown the configured
/// time, a forced one not at all.
fn stop_timeout(clean: bool, shutdown_timeout: u64) -> Duration {
    Duration::from_secs(if clean { shutdown_timeout } else { 0 })
}

/// A reboot's (pending, started, expected) task states.
fn reboot_task_states(hard: bool) -> (&'static str, &'static str, &'static str) {
    if hard {
        (
            "reboot_pending_hard",
            "reboot_started_hard",
            task_states::REBOOTING_HARD,
        )
    } else {
        ("reboot_pending", "reboot_started", task_states::REBOOTING)
    }
}

/// An instance fault's `message` (Nova's column holds 255 characters) and
/// `details`, escaped: errors quote input bytes (a corrupt image's header, say).
fn fault_text(class: &str, message: &str) -> (String, String) {
    (
        printable(message, 255),
        printable(&format!("{class}: {message}"), 4096),
    )
}

/// `uptime`'s line, as nova-compute returns it.
fn host_uptime() -> String {
    let proc = std::path::Path::new(crate::host::PROC);
    let up = crate::host::uptime_secs(proc).unwrap_or(0.0) as u64;
    let l = crate::host::load_average(proc);
    let now = time::OffsetDateTime::now_utc();
    let (days, hours, mins) = (up / 86400, (up % 86400) / 3600, (up % 3600) / 60);
    format!(
        " {:02}:{:02}:{:02} up {} days, {:2}:{:02},  0 users,  load average: {}",
        now.hour(),
        now.minute(),
        now.second(),
        days,
        hours,
        mins,
        l.join(", ")
    )
}

/// The RPC endpoint of the compute API (version 6.5) on `compute` and `compute-alt`.
pub struct ComputeEndpoint {
    manager: Arc<Manager>,
    casts: Arc<super::casts::CastRunner>,
}

impl ComputeEndpoint {
    pub fn new(manager: Arc<Manager>, casts: Arc<super::casts::CastRunner>) -> ComputeEndpoint {
        ComputeEndpoint { manager, casts }
    }
}

#[async_trait::async_trait]
impl Endpoint for ComputeEndpoint {
    fn version(&self) -> Option<&str> {
        Some(RPC_API_VERSION)
    }

    fn has_method(&self, method: &str) -> bool {
        RPC_METHODS.contains(&method)
    }

    async fn dispatch(&self, request: Request) -> Result<Value, Failure> {
        let method = request.method.clone().unwrap_or_default();
        let args = request.args.as_object().cloned().unwrap_or_default();
        let is_call = request.msg_id.is_some();
        let ctx = request.context.clone();
        let request_id = ctx
            .get("request_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let instance_uuid = args
            .get("instance")
            .and_then(|i| i.get("nova_object.data"))
            .and_then(|d| d.get("uuid"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let span = tracing::info_span!("rpc", method = %method, request_id = %request_id, instance_uuid = %instance_uuid);
        // Instrumented, never entered across an await: an entered guard
        // stays current on the thread while the dispatch waits, and every
        // message polled there meanwhile nests in (and keeps alive) its span.
        self.dispatch_decoded(method, args, is_call, ctx)
            .instrument(span)
            .await
    }
}

impl ComputeEndpoint {
    async fn dispatch_decoded(
        &self,
        method: String,
        args: Map<String, Value>,
        is_call: bool,
        ctx: Context,
    ) -> Result<Value, Failure> {
        let call = match ComputeCall::decode(&method, &args) {
            Some(Ok(call)) => call,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "malformed arguments");
                return Err(Failure::new("builtins", "TypeError", &e.to_string()));
            }
            None => {
                // A method nova-compute has but this driver does not support.
                return Err(Failure::not_implemented(&format!(
                    "{method} is not supported by this compute driver"
                )));
            }
        };
        if is_call {
            return self.manager.call(ctx, call).await;
        }
        let m = self.manager.clone();
        if !self
            .casts
            .spawn(async move { m.cast(ctx, call).await }.instrument(tracing::Span::current()))
            .await
        {
            tracing::warn!(method = %method, "shutting down: cast dropped");
        }
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_text_is_printable_and_bounded() {
        assert_eq!(printable("bad\u{1}\u{fffd}x", 100), "bad\\x01\\u{fffd}x");
        assert_eq!(printable("abcdef", 5), "ab...");
        assert!(host_uptime().contains("load average"));
    }

    #[test]
    fn a_fault_from_binary_input_is_printable() {
        // the error of a Glance image of random bytes, as the tar reader words it
        let raw: &[u8] = b"numeric field did not have utf-8 text: \x8f\x1be\x00\xffu$ when getting cksum for \x01\x9b\xfeF>9#\x7f\n";
        let err = String::from_utf8_lossy(raw).repeat(20);
        let (message, details) = fault_text("ImageUnacceptable", &err);
        for text in [&message, &details] {
            assert!(
                text.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{text:?}"
            );
        }
        assert!(message.starts_with("numeric field did not have utf-8 text: \\u{fffd}\\x1be\\x00"));
        assert!(message.chars().count() <= 255);
        assert!(details.starts_with("ImageUnacceptable: numeric field"));
    }

    #[test]
    fn every_typed_compute_method_is_known() {
        for m in [
            "build_and_run_instance",
            "terminate_instance",
            "get_host_uptime",
            "check_can_live_migrate_destination",
        ] {
            assert!(RPC_METHODS.contains(&m), "{m}");
        }
    }
}

#[path = "manager_net.rs"]
mod net;

#[path = "manager_snapshot.rs"]
mod snapshot;

#[path = "manager_shelve.rs"]
mod shelve;

#[path = "manager_rescue.rs"]
mod rescue;
use net::{allocation_for, requested_port_ids, GatedSpawnError};

#[cfg(test)]
#[path = "manager_tests.rs"]
mod manager_tests;
