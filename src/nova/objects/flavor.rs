//! `Flavor` 1.2 (`nova/objects/flavor.py`), embedded in `Instance.flavor` and
//! `RequestSpec.flavor`.

use super::super::fields::{Dict, NovaDateTime};
use super::nova_object;

nova_object! {
    /// `Flavor` 1.2. `extra_specs` carries scheduling and driver hints
    /// (`hw:cpu_policy`, `quota:cpu_shares`, `resources:VCPU`, ...).
    pub struct Flavor("Flavor", 1, 2) {
        id: i64,
        name: String,
        memory_mb: i64,
        vcpus: i64,
        root_gb: i64,
        ephemeral_gb: i64,
        /// The user-visible flavor id (a string).
        flavorid: String,
        swap: i64,
        /// A float on the wire (`1.0`).
        rxtx_factor: f64,
        vcpu_weight: i64,
        disabled: bool,
        is_public: bool,
        extra_specs: Dict<String>,
        projects: Vec<String>,
        description: String,
        created_at: NovaDateTime,
        updated_at: NovaDateTime,
        deleted_at: NovaDateTime,
        deleted: bool,
    }
}

impl Flavor {
    /// One extra spec, if present.
    pub fn extra_spec(&self, key: &str) -> Option<&str> {
        self.extra_specs.get()?.get(key).map(String::as_str)
    }
}
