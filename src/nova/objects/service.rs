//! `Service` 1.22 (`nova/objects/service.py`): the compute's service record.

use super::super::fields::NovaDateTime;
use super::compute_node::ComputeNode;
use super::nova_object;

/// The service version nova 34 controllers run (`SERVICE_VERSION`). A compute must
/// report exactly this: lower than 72 is refused, higher breaks `[upgrade_levels]
/// compute=auto` on the controllers.
pub const NOVA_34_SERVICE_VERSION: i64 = 74;

nova_object! {
    /// `Service` 1.22. `create` must list `version` in the changes; heartbeats
    /// (`save`) must increment `report_count`.
    pub struct Service("Service", 1, 22) {
        id: i64,
        uuid: String,
        host: String,
        binary: String,
        topic: String,
        report_count: i64,
        disabled: bool,
        disabled_reason: String,
        availability_zone: String,
        compute_node: ComputeNode,
        last_seen_up: NovaDateTime,
        forced_down: bool,
        version: i64,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}
