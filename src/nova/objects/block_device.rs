//! `BlockDeviceMapping` 1.21 and its list 1.18 (`nova/objects/block_device.py`).

use super::super::fields::NovaDateTime;
use super::instance::Instance;
use super::nova_object;

nova_object! {
    /// `BlockDeviceMapping` 1.21: one disk of an instance (image, volume, blank, ...).
    pub struct BlockDeviceMapping("BlockDeviceMapping", 1, 21) {
        id: i64,
        uuid: String,
        instance_uuid: String,
        instance: Box<Instance>,
        /// `image`, `volume`, `snapshot`, `blank`.
        source_type: String,
        /// `local` or `volume`.
        destination_type: String,
        guest_format: String,
        device_type: String,
        disk_bus: String,
        boot_index: i64,
        device_name: String,
        delete_on_termination: bool,
        snapshot_id: String,
        volume_id: String,
        volume_size: i64,
        image_id: String,
        no_device: bool,
        /// JSON text from Cinder (sensitive: may hold credentials).
        connection_info: String,
        tag: String,
        attachment_id: String,
        volume_type: String,
        encrypted: bool,
        encryption_secret_uuid: String,
        encryption_format: String,
        encryption_options: String,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

nova_object! {
    /// `BlockDeviceMappingList` 1.18 (`bdms`, `block_device_mapping` arguments).
    pub struct BlockDeviceMappingList("BlockDeviceMappingList", 1, 18) {
        objects: Vec<BlockDeviceMapping>,
    }
}

impl BlockDeviceMappingList {
    /// The mappings (empty when unset).
    pub fn mappings(&self) -> &[BlockDeviceMapping] {
        self.objects.get().map(Vec::as_slice).unwrap_or(&[])
    }
}
