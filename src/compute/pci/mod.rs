//! Nova's own PCI passthrough, as nova-compute's `PciDevTracker` does it
//! (`nova/pci/manager.py`, `nova/pci/stats.py`, `nova/objects/pci_device.py`,
//! `nova/compute/pci_placement_translator.py`).
//!
//! * Discovery ([`crate::devices::pci::discover`]): the host's PCI functions under sysfs, described as the libvirt
//!   driver describes them (`_get_pcidev_info`): `dev_type` `type-PCI`, `type-PF`
//!   (SR-IOV capable) or `type-VF` (has a `physfn`, `parent_addr`), `numa_node`,
//!   `dev_id` `pci_0000_00_05_0`, `label` `label_<vendor>_<product>`. Only the
//!   ones a `[pci] device_spec` matches are tracked.
//! * Records: `PciDeviceList.get_by_compute_node` through the conductor at
//!   start-up (the claims of a previous run come back from it), then every
//!   change is a `PciDevice.save` (`object_action`): a new device, a claim
//!   (`allocated`, `instance_uuid`, `request_id`), a free (`available`), a
//!   device gone from the host or the config (`removed`, which deletes it).
//! * Pools: the free devices grouped as `PciDeviceStats` groups them, set as
//!   `ComputeNode.pci_device_pools` (`PciDevicePoolList` 1.1) on the node's
//!   saves; the scheduler's `PciPassthroughFilter` reads them.
//! * Placement (`[pci] report_in_placement`): one child provider per device (or
//!   per PF for its VFs) named `<nodename>_<ADDRESS>`, inventory
//!   `CUSTOM_PCI_<VENDOR>_<PRODUCT>` (or the `resource_class` tag), traits
//!   `COMPUTE_MANAGED_PCI_DEVICE` and `OWNER_NOVA` (plus the `traits` tag).
//!
//! The parts: `records` (the tracked records and the state that holds them),
//! `pools` (the free devices grouped for the scheduler), `claims` (requests,
//! claiming and freeing), `placement` (the providers of the Placement view)
//! and `tracker` (the lock, the conductor and Placement round trips).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::conductor::Conductor;
use super::ComputeError;
use crate::config::pci::PciSection;
pub use crate::devices::pci::{discover, HostDevice};
use crate::devices::pci::{DeviceIds, DeviceSpec, TYPE_PCI, TYPE_PF, TYPE_VDPA, TYPE_VF};
use crate::nova::object::NovaObject;
use crate::placement::types::Inventory;
use crate::placement::PlacementClient;
use crate::rpc::Context;
use crate::strutil::bool_from_string;

/// `PciDeviceStatus` values.
pub mod status {
    pub const AVAILABLE: &str = "available";
    pub const CLAIMED: &str = "claimed";
    pub const ALLOCATED: &str = "allocated";
    pub const REMOVED: &str = "removed";
    pub const DELETED: &str = "deleted";
    pub const UNCLAIMABLE: &str = "unclaimable";
    pub const UNAVAILABLE: &str = "unavailable";
}

/// Pool and request keys the PCI stats leave to Placement.
const IGNORED_TAGS: &[&str] = &["resource_class", "traits", "rp_uuids", "rp_uuid"];
/// The trait of every provider nova-compute makes for a PCI device.
const MANAGED_PCI_TRAIT: &str = "COMPUTE_MANAGED_PCI_DEVICE";

/// The message of nova's claim test (`ComputeResourcesUnavailable`).
pub const CLAIM_FAILED: &str = "Insufficient compute resources: Claim pci failed.";

mod claims;
mod placement;
mod pools;
mod records;
#[cfg(test)]
mod tests;
mod tracker;

use placement::*;
use pools::*;
use records::*;

pub use claims::{apply_provider_mapping, PciRequest};
pub use placement::{resource_class, spec_traits, PciProvider};
pub use records::assignable;
pub use tracker::PciTracker;
