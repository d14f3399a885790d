//! `Migration` 1.8 and its list 1.5 (`nova/objects/migration.py`).

use super::super::fields::NovaDateTime;
use super::nova_object;

nova_object! {
    /// `Migration` 1.8: a resize, cold/live migration or evacuation record.
    pub struct Migration("Migration", 1, 8) {
        id: i64,
        uuid: String,
        source_compute: String,
        dest_compute: String,
        source_node: String,
        dest_node: String,
        dest_compute_id: i64,
        dest_host: String,
        old_instance_type_id: i64,
        new_instance_type_id: i64,
        instance_uuid: String,
        status: String,
        /// `migration`, `resize`, `live-migration`, `evacuation`.
        migration_type: String,
        hidden: bool,
        memory_total: i64,
        memory_processed: i64,
        memory_remaining: i64,
        disk_total: i64,
        disk_processed: i64,
        disk_remaining: i64,
        cross_cell_move: bool,
        user_id: String,
        project_id: String,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

nova_object! {
    /// `MigrationList` 1.5.
    pub struct MigrationList("MigrationList", 1, 5) {
        objects: Vec<Migration>,
    }
}
