//! `RequestSpec` 1.15 and its typed parts (`nova/objects/request_spec.py`).

use super::super::fields::Dict;
use super::super::object::NovaObject;
use super::flavor::Flavor;
use super::image_meta::ImageMeta;
use super::nova_object;
use super::scheduling::NetworkRequestList;
pub use super::scheduling::SchedulerLimits;

nova_object! {
    /// `RequestSpec` 1.15: what the scheduler was asked for; passed to
    /// `build_and_run_instance`, `rebuild_instance`, resize and unshelve.
    pub struct RequestSpec("RequestSpec", 1, 15) {
        id: i64,
        image: ImageMeta,
        numa_topology: NovaObject,
        pci_requests: NovaObject,
        project_id: String,
        user_id: String,
        availability_zone: String,
        flavor: Flavor,
        num_instances: i64,
        ignore_hosts: Vec<String>,
        force_hosts: Vec<String>,
        force_nodes: Vec<String>,
        requested_destination: Destination,
        retry: NovaObject,
        limits: SchedulerLimits,
        instance_group: NovaObject,
        scheduler_hints: Dict<Vec<String>>,
        instance_uuid: String,
        security_groups: NovaObject,
        network_metadata: NovaObject,
        is_bfv: bool,
        requested_resources: Vec<NovaObject>,
        request_level_params: NovaObject,
        requested_networks: NetworkRequestList,
    }
}

nova_object! {
    /// `Destination` 1.4: a forced or requested host/node.
    pub struct Destination("Destination", 1, 4) {
        host: String,
        node: String,
        cell: NovaObject,
        aggregates: Vec<String>,
        allow_cross_cell_move: bool,
        forbidden_aggregates: Vec<String>,
    }
}
