//! PCI in one home: addresses, what sysfs says about the host's PCI
//! functions, and nova's `[pci] device_spec` and `alias` entries as typed
//! values with their matching. The configuration parses into these types;
//! the compute service's PCI tracker and the driver use them. Nothing here
//! reads the configuration.

mod address;
mod alias;
mod discover;
mod nodes;
mod spec;

pub use address::{pci_address, AddressSpec, Pattern, PciAddress};
pub use alias::{check_aliases, PciAlias};
pub use discover::{discover, function_by_ifname, is_physical_function, HostDevice};
pub use nodes::{device_nodes, NotOnHost, PciNode};
pub use spec::{DeviceIds, DeviceSpec};

/// The PCI device types of `PciDeviceType` (`nova/objects/fields.py`).
pub const TYPE_PCI: &str = "type-PCI";
pub const TYPE_PF: &str = "type-PF";
pub const TYPE_VF: &str = "type-VF";
pub const TYPE_VDPA: &str = "vdpa";
