//! `ComputeNode` 1.19 and `HVSpec` 1.2 (`nova/objects/compute_node.py`, `hv_spec.py`).

use serde_json::Value;

use super::super::fields::{Dict, JsonString, NovaDateTime};
use super::super::object::NovaObject;
use super::nova_object;

nova_object! {
    /// `ComputeNode` 1.19. Its `uuid` is the placement resource provider uuid.
    /// `metrics` and `numa_topology` are JSON *strings*; `stats` values are strings.
    pub struct ComputeNode("ComputeNode", 1, 19) {
        id: i64,
        uuid: String,
        service_id: i64,
        host: String,
        vcpus: i64,
        memory_mb: i64,
        local_gb: i64,
        vcpus_used: i64,
        memory_mb_used: i64,
        local_gb_used: i64,
        hypervisor_type: String,
        hypervisor_version: i64,
        /// Also the placement resource provider name.
        hypervisor_hostname: String,
        free_ram_mb: i64,
        free_disk_gb: i64,
        current_workload: i64,
        running_vms: i64,
        /// Driver-specific text; JSON for most drivers (not decoded: `{}` or free form).
        cpu_info: String,
        disk_available_least: i64,
        metrics: JsonString<Value>,
        stats: Dict<Option<String>>,
        host_ip: String,
        /// JSON text of a `NUMATopology` primitive.
        numa_topology: JsonString<Value>,
        supported_hv_specs: Vec<HvSpec>,
        pci_device_pools: NovaObject,
        cpu_allocation_ratio: f64,
        ram_allocation_ratio: f64,
        disk_allocation_ratio: f64,
        mapped: i64,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

nova_object! {
    /// `ComputeNodeList` 1.17.
    pub struct ComputeNodeList("ComputeNodeList", 1, 17) {
        objects: Vec<ComputeNode>,
    }
}

nova_object! {
    /// `HVSpec` 1.2: a supported (architecture, hypervisor type, VM mode) triple.
    pub struct HvSpec("HVSpec", 1, 2) {
        arch: String,
        hv_type: String,
        vm_mode: String,
    }
}
