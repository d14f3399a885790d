//! `Instance` 2.8 and the objects that travel with it (`nova/objects/instance.py`,
//! `instance_info_cache.py`, `instance_fault.py`, `external_event.py`).

use super::super::fields::{Dict, JsonString, NovaDateTime};
use super::super::object::NovaObject;
use super::flavor::Flavor;
use super::network_model::NetworkInfo;
use super::nova_object;

/// `nova/compute/power_state.py`: `Instance.power_state` is an integer on the wire.
pub mod power_state {
    /// No state known.
    pub const NOSTATE: i64 = 0;
    /// Running.
    pub const RUNNING: i64 = 1;
    /// Paused (frozen).
    pub const PAUSED: i64 = 3;
    /// Shut down.
    pub const SHUTDOWN: i64 = 4;
    /// Crashed.
    pub const CRASHED: i64 = 6;
    /// Suspended.
    pub const SUSPENDED: i64 = 7;
}

/// `nova/compute/vm_states.py` values a compute writes.
pub mod vm_states {
    /// Running.
    pub const ACTIVE: &str = "active";
    /// Being built.
    pub const BUILDING: &str = "building";
    /// Paused.
    pub const PAUSED: &str = "paused";
    /// Suspended.
    pub const SUSPENDED: &str = "suspended";
    /// Powered off.
    pub const STOPPED: &str = "stopped";
    /// Rescued.
    pub const RESCUED: &str = "rescued";
    /// Resized, awaiting confirm.
    pub const RESIZED: &str = "resized";
    /// Soft-deleted (note the hyphen).
    pub const SOFT_DELETED: &str = "soft-delete";
    /// Deleted.
    pub const DELETED: &str = "deleted";
    /// Error.
    pub const ERROR: &str = "error";
    /// Shelved.
    pub const SHELVED: &str = "shelved";
    /// Shelved and offloaded.
    pub const SHELVED_OFFLOADED: &str = "shelved_offloaded";
}

/// `nova/compute/task_states.py` values seen around the lifecycle (hyphens and
/// underscores both occur).
pub mod task_states {
    /// Scheduling (set by the API before build).
    pub const SCHEDULING: &str = "scheduling";
    /// Allocating networks.
    pub const NETWORKING: &str = "networking";
    /// Attaching block devices.
    pub const BLOCK_DEVICE_MAPPING: &str = "block_device_mapping";
    /// Spawning.
    pub const SPAWNING: &str = "spawning";
    /// Stopping.
    pub const POWERING_OFF: &str = "powering-off";
    /// Starting.
    pub const POWERING_ON: &str = "powering-on";
    /// Soft reboot.
    pub const REBOOTING: &str = "rebooting";
    /// Hard reboot.
    pub const REBOOTING_HARD: &str = "rebooting_hard";
    /// Pausing.
    pub const PAUSING: &str = "pausing";
    /// Unpausing.
    pub const UNPAUSING: &str = "unpausing";
    /// Suspending.
    pub const SUSPENDING: &str = "suspending";
    /// Resuming.
    pub const RESUMING: &str = "resuming";
    /// Deleting.
    pub const DELETING: &str = "deleting";
    /// Rebuilding.
    pub const REBUILDING: &str = "rebuilding";
}

nova_object! {
    /// `Instance` 2.8. `Instance.save()` refuses a change of `node` without a change of
    /// `compute_id` (nova 34), so set both together.
    pub struct Instance("Instance", 2, 8) {
        id: i64,
        user_id: String,
        project_id: String,
        image_ref: String,
        kernel_id: String,
        ramdisk_id: String,
        hostname: String,
        launch_index: i64,
        key_name: String,
        key_data: String,
        /// See [`power_state`].
        power_state: i64,
        /// See [`vm_states`].
        vm_state: String,
        /// See [`task_states`].
        task_state: String,
        services: NovaObject,
        memory_mb: i64,
        vcpus: i64,
        root_gb: i64,
        ephemeral_gb: i64,
        ephemeral_key_uuid: String,
        host: String,
        node: String,
        /// The `ComputeNode.id` of `node`; must change with `node`.
        compute_id: i64,
        instance_type_id: i64,
        user_data: String,
        reservation_id: String,
        launched_at: NovaDateTime,
        terminated_at: NovaDateTime,
        availability_zone: String,
        display_name: String,
        display_description: String,
        launched_on: String,
        locked: bool,
        locked_by: String,
        os_type: String,
        architecture: String,
        vm_mode: String,
        uuid: String,
        root_device_name: String,
        default_ephemeral_device: String,
        default_swap_device: String,
        /// A string (`""` or `"True"`), not a bool.
        config_drive: String,
        access_ip_v4: String,
        access_ip_v6: String,
        auto_disk_config: bool,
        progress: i64,
        shutdown_terminate: bool,
        disable_terminate: bool,
        cell_name: String,
        metadata: Dict<String>,
        system_metadata: Dict<Option<String>>,
        info_cache: InstanceInfoCache,
        security_groups: NovaObject,
        fault: InstanceFault,
        cleaned: bool,
        pci_devices: NovaObject,
        numa_topology: NovaObject,
        pci_requests: NovaObject,
        device_metadata: NovaObject,
        tags: NovaObject,
        flavor: Flavor,
        old_flavor: Flavor,
        new_flavor: Flavor,
        vcpu_model: NovaObject,
        ec2_ids: NovaObject,
        migration_context: NovaObject,
        keypairs: NovaObject,
        trusted_certs: NovaObject,
        hidden: bool,
        resources: NovaObject,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

impl Instance {
    /// The instance uuid, if set.
    pub fn uuid(&self) -> Option<&str> {
        self.uuid.as_str()
    }

    /// The host it runs on, if set.
    pub fn host(&self) -> Option<&str> {
        self.host.as_str()
    }

    /// The VIFs of `info_cache.network_info` (empty when unset or null).
    pub fn network_info(&self) -> &[super::network_model::Vif] {
        self.info_cache
            .get()
            .and_then(|c| c.network_info.get())
            .map(|n| n.value.0.as_slice())
            .unwrap_or(&[])
    }
}

nova_object! {
    /// `InstanceList` 2.6 (`InstanceList.get_by_host`, `update_instance_info`).
    pub struct InstanceList("InstanceList", 2, 6) {
        objects: Vec<Instance>,
    }
}

nova_object! {
    /// `InstanceInfoCache` 1.5: the instance's network model. `network_info` is a JSON
    /// *string* of the VIF list on the wire.
    pub struct InstanceInfoCache("InstanceInfoCache", 1, 5) {
        instance_uuid: String,
        network_info: JsonString<NetworkInfo>,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

nova_object! {
    /// `InstanceFault` 1.2, created (`object_action create`) when an operation fails.
    pub struct InstanceFault("InstanceFault", 1, 2) {
        id: i64,
        instance_uuid: String,
        /// HTTP-like code, 500 for unexpected errors.
        code: i64,
        message: String,
        details: String,
        host: String,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

nova_object! {
    /// `InstanceExternalEvent` 1.5 (`external_instance_event`): `network-vif-plugged`
    /// with `tag` = port id, `power-update` with `tag` = `POWER_ON`/`POWER_OFF`, ...
    pub struct InstanceExternalEvent("InstanceExternalEvent", 1, 5) {
        instance_uuid: String,
        name: String,
        /// `completed`, `failed` or `in-progress`.
        status: String,
        tag: String,
        data: Dict<String>,
    }
}

impl InstanceExternalEvent {
    /// `name-tag` as nova keys events (`InstanceExternalEvent.key`).
    pub fn key(&self) -> Option<String> {
        let name = self.name.as_str()?;
        Some(match self.tag.as_str() {
            Some(tag) => format!("{name}-{tag}"),
            None => name.to_string(),
        })
    }
}
