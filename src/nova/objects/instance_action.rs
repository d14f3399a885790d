//! `InstanceAction` 1.2 and `InstanceActionEvent` 1.4 (`nova/objects/instance_action.py`).
//!
//! A compute rarely sends these as objects: it calls the class methods
//! `InstanceActionEvent.event_start` / `event_finish_with_failure` through
//! `object_class_action_versions` with `want_result: false` (see `rpc_methods`).

use super::super::fields::NovaDateTime;
use super::nova_object;

nova_object! {
    /// `InstanceAction` 1.2: one user action (created by nova-api before the cast).
    pub struct InstanceAction("InstanceAction", 1, 2) {
        id: i64,
        action: String,
        instance_uuid: String,
        /// The request id the compute's events must reuse.
        request_id: String,
        user_id: String,
        project_id: String,
        start_time: NovaDateTime,
        finish_time: NovaDateTime,
        message: String,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

nova_object! {
    /// `InstanceActionEvent` 1.4: one step (`compute_stop_instance`, ...) of an action.
    pub struct InstanceActionEvent("InstanceActionEvent", 1, 4) {
        id: i64,
        event: String,
        action_id: i64,
        start_time: NovaDateTime,
        finish_time: NovaDateTime,
        /// `Success` or `Error`.
        result: String,
        traceback: String,
        host: String,
        details: String,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}
