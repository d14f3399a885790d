//! Objects that carry scheduling results and network requests into a build:
//! `Selection` 1.1 (`nova/objects/selection.py`) with its `SchedulerLimits` 1.0,
//! `NetworkRequest` 1.3 and its list 1.1 (`nova/objects/network_request.py`).

use serde_json::Value;

use super::super::fields::JsonString;
use super::super::object::NovaObject;
use super::nova_object;

nova_object! {
    /// `SchedulerLimits` 1.0: oversubscription limits the claim must honour.
    pub struct SchedulerLimits("SchedulerLimits", 1, 0) {
        numa_topology: NovaObject,
        vcpu: i64,
        disk_gb: i64,
        memory_mb: i64,
    }
}

nova_object! {
    /// `Selection` 1.1: one host chosen by the scheduler (`host_list` of a build).
    pub struct Selection("Selection", 1, 1) {
        compute_node_uuid: String,
        service_host: String,
        nodename: String,
        cell_uuid: String,
        limits: SchedulerLimits,
        /// JSON text of the placement allocation request.
        allocation_request: JsonString<Value>,
        allocation_request_version: String,
        availability_zone: String,
    }
}

nova_object! {
    /// `NetworkRequest` 1.3: one requested network or port. `network_id` is `"none"` or
    /// `"auto"` for the special requests.
    pub struct NetworkRequest("NetworkRequest", 1, 3) {
        network_id: String,
        address: String,
        port_id: String,
        pci_request_id: String,
        tag: String,
        arq_uuid: String,
        device_profile: String,
    }
}

nova_object! {
    /// `NetworkRequestList` 1.1.
    pub struct NetworkRequestList("NetworkRequestList", 1, 1) {
        objects: Vec<NetworkRequest>,
    }
}

impl NetworkRequestList {
    /// True for the special `none` request (no networking).
    pub fn is_no_network(&self) -> bool {
        self.objects
            .get()
            .is_some_and(|o| o.len() == 1 && o[0].network_id.as_str() == Some("none"))
    }
}
