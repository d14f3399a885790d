//! `ImageMeta` 1.8 and `ImageMetaProps` 1.44 (`nova/objects/image_meta.py`).
//!
//! `ImageMetaProps` has 86 fields in nova 34; the ones a container driver may act on
//! are typed, the rest stay in `extra` (and round-trip).

use super::super::fields::{FlexBool, NovaDateTime};
use super::nova_object;

nova_object! {
    /// `ImageMeta` 1.8: the Glance image as nova sees it (`RequestSpec.image`). Note the
    /// `image` argument of `build_and_run_instance` is a plain dict, not this object.
    pub struct ImageMeta("ImageMeta", 1, 8) {
        id: String,
        name: String,
        status: String,
        visibility: String,
        protected: FlexBool,
        checksum: String,
        owner: String,
        size: i64,
        virtual_size: i64,
        container_format: String,
        disk_format: String,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        tags: Vec<String>,
        direct_url: String,
        min_ram: i64,
        min_disk: i64,
        properties: ImageMetaProps,
    }
}

nova_object! {
    /// `ImageMetaProps` 1.44 (subset typed; all other properties in `extra`).
    pub struct ImageMetaProps("ImageMetaProps", 1, 44) {
        hw_architecture: String,
        hw_cpu_cores: i64,
        hw_cpu_sockets: i64,
        hw_cpu_policy: String,
        hw_cpu_threads: i64,
        hw_disk_bus: String,
        hw_machine_type: String,
        hw_mem_page_size: String,
        hw_numa_nodes: i64,
        hw_qemu_guest_agent: FlexBool,
        hw_video_model: String,
        hw_vif_model: String,
        hw_vm_mode: String,
        img_config_drive: String,
        img_hv_requested_version: String,
        img_hv_type: String,
        os_admin_user: String,
        os_command_line: String,
        os_distro: String,
        os_type: String,
        traits_required: Vec<String>,
    }
}
