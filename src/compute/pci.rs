//! Nova's own PCI passthrough, as nova-compute's `PciDevTracker` does it
//! (`nova/pci/manager.py`, `nova/pci/stats.py`, `nova/objects/pci_device.py`,
//! `nova/compute/pci_placement_translator.py`).
//!
//! * Discovery: the host's PCI functions under sysfs, described as the libvirt
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

// ------------------------------------------------------------------ discovery

/// The devices a spec allows (`update_devices_from_hypervisor_resources`), with
/// the spec tags `managed` and `live_migratable` added as the driver adds them.
pub fn assignable(devices: Vec<HostDevice>, cfg: &PciSection, sysfs: &Path) -> Vec<HostDevice> {
    devices
        .into_iter()
        .filter_map(|mut d| {
            let spec = cfg.spec_for(&d.ids(), sysfs)?;
            for tag in ["managed", "live_migratable"] {
                if let Some(v) = spec.tag(tag) {
                    d.extra.push((tag.to_string(), v.to_string()));
                }
            }
            Some(d)
        })
        .collect()
}

// ------------------------------------------------------------------ requests

/// One `InstancePCIRequest`.
#[derive(Debug, Clone, PartialEq)]
pub struct PciRequest {
    pub count: u64,
    pub spec: Vec<Map<String, Value>>,
    pub alias_name: Option<String>,
    pub request_id: Option<String>,
}

impl PciRequest {
    /// The requests of an `InstancePCIRequests` primitive.
    pub fn from_requests_object(obj: &NovaObject) -> Result<Vec<PciRequest>, ComputeError> {
        let mut out = Vec::new();
        for r in obj.list_objects_of("requests")? {
            let spec = match r.get("spec") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| i.as_object().cloned())
                    .collect(),
                _ => Vec::new(),
            };
            out.push(PciRequest {
                count: r.get("count").and_then(Value::as_u64).unwrap_or(0),
                spec,
                alias_name: r
                    .get("alias_name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                request_id: r
                    .get("request_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
        Ok(out)
    }

    /// `_get_rp_uuids_for_request` without a provider mapping: the providers
    /// the scheduler allocated this request from (`rp_uuids`, set from the
    /// request spec's mapping when `[filter_scheduler] pci_in_placement`).
    fn rp_uuids(&self) -> Vec<String> {
        if self.alias_name.is_none() {
            return Vec::new();
        }
        self.spec
            .first()
            .and_then(|s| s.get("rp_uuids"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn requests_type(&self, dev_type: &str) -> bool {
        self.spec
            .iter()
            .any(|s| s.get("dev_type").and_then(Value::as_str) == Some(dev_type))
    }
}

/// `update_pci_request_with_placement_allocations` for flavor requests: the
/// providers of the request groups `<request_id>-<n>` (from the request spec's
/// `requested_resources`) are written to the spec as `rp_uuids`.
pub fn apply_provider_mapping(requests: &mut [PciRequest], groups: &[NovaObject]) {
    for r in requests.iter_mut() {
        let Some(rid) = r.request_id.clone() else {
            continue;
        };
        let rps: Vec<String> = groups
            .iter()
            .filter(|g| {
                g.get("requester_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.starts_with(&rid))
            })
            .filter_map(|g| {
                g.get("provider_uuids")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        if rps.is_empty() {
            continue;
        }
        for spec in &mut r.spec {
            spec.insert("rp_uuids".into(), json!(rps.join(",")));
        }
    }
}

trait ListField {
    fn list_objects_of(&self, field: &str) -> Result<Vec<NovaObject>, ComputeError>;
}

impl ListField for NovaObject {
    fn list_objects_of(&self, field: &str) -> Result<Vec<NovaObject>, ComputeError> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .map(NovaObject::from_primitive)
                .collect::<Result<_, _>>()?),
            Some(_) => Err(ComputeError::Invalid(format!(
                "{}.{field} is not a list",
                self.name
            ))),
        }
    }
}

// ------------------------------------------------------------------ devices and pools

/// A tracked `PciDevice` record.
#[derive(Debug, Clone)]
struct Dev {
    obj: NovaObject,
    /// Bumped on every local change, so a save that raced one keeps it.
    rev: u64,
    /// The claim epoch of its last claim (see [`State::epoch`]).
    claimed_at: u64,
}

impl Dev {
    fn s(&self, f: &str) -> Option<&str> {
        self.obj.get(f).and_then(Value::as_str)
    }
    fn address(&self) -> &str {
        self.s("address").unwrap_or("")
    }
    fn status(&self) -> &str {
        self.s("status").unwrap_or("")
    }
    fn dev_type(&self) -> &str {
        self.s("dev_type").unwrap_or(TYPE_PCI)
    }
    fn instance_uuid(&self) -> Option<&str> {
        self.s("instance_uuid")
    }
    fn parent_addr(&self) -> Option<&str> {
        self.s("parent_addr")
    }
    fn extra(&self, key: &str) -> Option<&str> {
        self.obj
            .get("extra_info")
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
    }
    fn is_gone(&self) -> bool {
        matches!(self.status(), status::REMOVED | status::DELETED)
    }
    fn set(&mut self, field: &str, v: Value) {
        self.obj.set(field, v);
        self.rev += 1;
    }
    fn set_if_changed(&mut self, field: &str, v: Value) {
        if self.obj.get(field) != Some(&v) {
            self.set(field, v);
        }
    }
    fn set_extra(&mut self, key: &str, v: Option<&str>) {
        let mut extra = match self.obj.get("extra_info") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let before = extra.get(key).cloned();
        match v {
            Some(v) => extra.insert(key.to_string(), json!(v)),
            None => extra.remove(key),
        };
        if before != extra.get(key).cloned() || self.obj.get("extra_info").is_none() {
            self.set("extra_info", Value::Object(extra));
        }
    }
    /// The VPD card serial number the driver recorded (`capabilities`).
    fn card_serial_number(&self) -> Option<String> {
        let caps: Value = serde_json::from_str(self.extra("capabilities")?).ok()?;
        caps.get("vpd")?
            .get("card_serial_number")?
            .as_str()
            .map(str::to_string)
    }
}

/// A group of equivalent free devices (`PciDeviceStats` pool).
#[derive(Debug, Clone, PartialEq)]
struct Pool {
    /// product_id, vendor_id, numa_node, dev_type, the spec's tags, address,
    /// parent_ifname, remote_managed: what makes two devices equivalent.
    keys: Map<String, Value>,
    count: u64,
    /// Addresses of the free devices in it.
    devices: Vec<String>,
    /// The Placement provider of its devices (`report_in_placement`).
    rp_uuid: Option<String>,
}

impl Pool {
    /// `len(pool)` of nova's pool dict (keys, count, devices, rp_uuid).
    fn width(&self) -> usize {
        self.keys.len() + 2 + usize::from(self.rp_uuid.is_some())
    }

    fn value(&self, key: &str) -> Option<Value> {
        match key {
            "count" => Some(json!(self.count)),
            "rp_uuid" => self.rp_uuid.as_ref().map(|u| json!(u)),
            k => self.keys.get(k).cloned(),
        }
    }

    /// `pci_device_prop_match`: any spec whose every key matches (strings
    /// compared case-insensitively, a list asks for all its members).
    fn matches_any(&self, specs: &[Map<String, Value>]) -> bool {
        let lower = |v: Value| match v {
            Value::String(s) => Value::String(s.to_lowercase()),
            other => other,
        };
        specs.iter().any(|spec| {
            spec.iter()
                .filter(|(k, _)| !IGNORED_TAGS.contains(&k.as_str()))
                .all(|(k, want)| {
                    let have = self.value(k).unwrap_or(Value::Null);
                    match (want, &have) {
                        (Value::Array(w), Value::Array(h)) => w.iter().all(|x| h.contains(x)),
                        _ => lower(want.clone()) == lower(have),
                    }
                })
        })
    }

    /// The `PciDevicePool` 1.1 primitive (`from_dict`: everything but ids,
    /// NUMA node and count is a tag, as a string).
    fn to_primitive(&self) -> Value {
        let mut tags = Map::new();
        for (k, v) in &self.keys {
            if matches!(k.as_str(), "product_id" | "vendor_id" | "numa_node") {
                continue;
            }
            tags.insert(k.clone(), tag_value(v));
        }
        if let Some(rp) = &self.rp_uuid {
            tags.insert("rp_uuid".into(), json!(rp));
        }
        let mut data = Map::new();
        data.insert(
            "product_id".into(),
            self.keys.get("product_id").cloned().unwrap_or(Value::Null),
        );
        data.insert(
            "vendor_id".into(),
            self.keys.get("vendor_id").cloned().unwrap_or(Value::Null),
        );
        data.insert(
            "numa_node".into(),
            self.keys.get("numa_node").cloned().unwrap_or(Value::Null),
        );
        data.insert("tags".into(), Value::Object(tags));
        data.insert("count".into(), json!(self.count));
        json!({
            "nova_object.name": "PciDevicePool",
            "nova_object.namespace": "nova",
            "nova_object.version": "1.1",
            "nova_object.data": data,
            "nova_object.changes": ["count", "numa_node", "product_id", "tags", "vendor_id"],
        })
    }
}

/// `DictOfNullableStringsField` coercion.
fn tag_value(v: &Value) -> Value {
    match v {
        Value::Null | Value::String(_) => v.clone(),
        Value::Bool(true) => json!("True"),
        Value::Bool(false) => json!("False"),
        other => json!(other.to_string()),
    }
}

/// The data of each pool of a `PciDevicePoolList` primitive, for comparing.
fn pool_datas(list: Option<&Value>) -> Option<Vec<Value>> {
    let list = list?;
    if list.is_null() {
        return None;
    }
    let objects = list.get("nova_object.data")?.get("objects")?.as_array()?;
    Some(
        objects
            .iter()
            .map(|p| p.get("nova_object.data").cloned().unwrap_or(Value::Null))
            .collect(),
    )
}

/// The tracker's state: devices and pools, changed only under its lock.
#[derive(Debug, Default)]
struct State {
    loaded: bool,
    node_id: Option<i64>,
    devs: Vec<Dev>,
    pools: Vec<Pool>,
    /// New properties of claimed devices, applied when they are freed.
    stale: BTreeMap<String, HostDevice>,
    /// Devices gone from the host or the config while in use.
    remove_when_freed: BTreeSet<String>,
    /// Counts claims, so a usage clean-up never frees a claim younger than
    /// its instance listing.
    epoch: u64,
}

/// Device spec and sysfs root, what matching needs.
struct Env<'a> {
    cfg: &'a PciSection,
    sysfs: &'a Path,
}

impl Env<'_> {
    /// `Whitelist.get_devspec`: the spec a record matches.
    fn spec(&self, d: &Dev) -> Option<&DeviceSpec> {
        let serial = d.card_serial_number();
        let ids = DeviceIds {
            vendor_id: d.s("vendor_id").unwrap_or(""),
            product_id: d.s("product_id").unwrap_or(""),
            address: d.address(),
            parent_addr: d.parent_addr(),
            card_serial_number: serial.as_deref(),
        };
        self.cfg.spec_for(&ids, self.sysfs)
    }
}

impl State {
    fn idx(&self, address: &str) -> Option<usize> {
        self.devs
            .iter()
            .position(|d| d.address() == address && !d.is_gone())
    }

    fn children(&self, pf: &str) -> Vec<usize> {
        self.devs
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                !d.is_gone()
                    && matches!(d.dev_type(), TYPE_VF | TYPE_VDPA)
                    && d.parent_addr() == Some(pf)
            })
            .map(|(i, _)| i)
            .collect()
    }

    fn parent(&self, i: usize) -> Option<usize> {
        let p = self.devs[i].parent_addr()?;
        self.devs
            .iter()
            .position(|d| !d.is_gone() && d.dev_type() == TYPE_PF && d.address() == p)
    }

    fn free_addresses(&self) -> BTreeSet<String> {
        self.pools
            .iter()
            .flat_map(|p| p.devices.iter().cloned())
            .collect()
    }

    // -- pools (PciDeviceStats)

    /// `_create_pool_keys_from_dev`: `None` for a device no spec matches.
    fn pool_keys(&self, env: &Env<'_>, i: usize) -> Option<Map<String, Value>> {
        let d = &self.devs[i];
        let spec = env.spec(d)?;
        let mut keys = Map::new();
        for k in ["product_id", "vendor_id", "numa_node", "dev_type"] {
            keys.insert(k.into(), d.obj.get(k).cloned().unwrap_or(Value::Null));
        }
        for (k, v) in &spec.tags {
            if !IGNORED_TAGS.contains(&k.as_str()) {
                keys.insert(k.clone(), v.as_deref().map_or(Value::Null, |s| json!(s)));
            }
        }
        keys.insert(
            "address".into(),
            json!(d.parent_addr().unwrap_or(d.address())),
        );
        if let Some(ifname) = d.extra("parent_ifname") {
            keys.insert("parent_ifname".into(), json!(ifname));
        }
        if matches!(d.dev_type(), TYPE_VF | TYPE_PF | TYPE_VDPA)
            && keys.get("remote_managed").is_none_or(Value::is_null)
        {
            keys.insert("remote_managed".into(), json!("false"));
        }
        Some(keys)
    }

    fn find_pool(&self, keys: &Map<String, Value>) -> Option<usize> {
        self.pools.iter().position(|p| &p.keys == keys)
    }

    fn add_to_pools(&mut self, env: &Env<'_>, i: usize) {
        let Some(keys) = self.pool_keys(env, i) else {
            return;
        };
        let addr = self.devs[i].address().to_string();
        let p = match self.find_pool(&keys) {
            Some(p) => p,
            None => {
                self.pools.push(Pool {
                    keys: keys.clone(),
                    count: 0,
                    devices: Vec::new(),
                    rp_uuid: None,
                });
                self.pools.sort_by_key(Pool::width);
                self.find_pool(&keys).unwrap_or(0)
            }
        };
        if let Some(pool) = self.pools.get_mut(p) {
            pool.count += 1;
            pool.devices.push(addr);
        }
    }

    fn decrease_pool(&mut self, p: usize) {
        if self.pools[p].count > 1 {
            self.pools[p].count -= 1;
        } else {
            self.pools.remove(p);
        }
    }

    fn remove_from_pools(&mut self, env: &Env<'_>, i: usize) {
        let Some(keys) = self.pool_keys(env, i) else {
            return;
        };
        let addr = self.devs[i].address().to_string();
        match self.find_pool(&keys) {
            Some(p) => {
                self.pools[p].devices.retain(|a| *a != addr);
                self.decrease_pool(p);
            }
            None => tracing::warn!(address = %addr, "PCI device is in no pool"),
        }
    }

    /// `PciDeviceStats.update_device`: only a changed device type moves it.
    fn update_in_pools(&mut self, env: &Env<'_>, i: usize) {
        let addr = self.devs[i].address().to_string();
        let dev_type = json!(self.devs[i].dev_type());
        let Some(p) = self.pools.iter().position(|p| p.devices.contains(&addr)) else {
            return;
        };
        if self.pools[p].keys.get("dev_type") == Some(&dev_type) {
            return;
        }
        self.pools[p].devices.retain(|a| *a != addr);
        self.decrease_pool(p);
        self.add_to_pools(env, i);
    }

    /// The `PciDevicePoolList` 1.1 primitive of the pools.
    fn pools_primitive(&self) -> Value {
        let objects: Vec<Value> = self.pools.iter().map(Pool::to_primitive).collect();
        json!({
            "nova_object.name": "PciDevicePoolList",
            "nova_object.namespace": "nova",
            "nova_object.version": "1.1",
            "nova_object.data": {"objects": objects},
            "nova_object.changes": ["objects"],
        })
    }

    // -- records

    /// `_initial_instance_usage`: the records of a previous run.
    fn load(&mut self, env: &Env<'_>, records: Vec<NovaObject>) {
        self.devs = records
            .into_iter()
            .map(|mut obj| {
                obj.reset_changes();
                Dev {
                    obj,
                    rev: 0,
                    claimed_at: 0,
                }
            })
            .collect();
        self.devs.sort_by(|a, b| a.address().cmp(b.address()));
        self.pools.clear();
        for i in 0..self.devs.len() {
            if self.devs[i].status() == status::AVAILABLE {
                self.add_to_pools(env, i);
            }
        }
    }

    /// `PciDevice.update_device`: only changed values are set.
    fn update_device(dev: &mut Dev, hv: &HostDevice, node_id: Option<i64>) {
        dev.set_if_changed("dev_id", json!(hv.dev_id));
        dev.set_if_changed("address", json!(hv.address));
        dev.set_if_changed("product_id", json!(hv.product_id));
        dev.set_if_changed("vendor_id", json!(hv.vendor_id));
        dev.set_if_changed("numa_node", json!(hv.numa_node));
        dev.set_if_changed("label", json!(hv.label));
        dev.set_if_changed("dev_type", json!(hv.dev_type));
        dev.set_if_changed("parent_addr", json!(hv.parent_addr));
        if node_id.is_some() {
            dev.set_if_changed("compute_node_id", json!(node_id));
        }
        for (k, v) in &hv.extra {
            dev.set_extra(k, Some(v));
        }
        for tag in ["managed", "live_migratable"] {
            if !hv.extra.iter().any(|(k, _)| k == tag) && dev.extra(tag).is_some() {
                dev.set_extra(tag, None);
            }
        }
    }

    /// `PciDevice.create`: a new record, `available`.
    fn new_device(hv: &HostDevice, node_id: Option<i64>) -> Result<Dev, ComputeError> {
        let mut obj = NovaObject::new_nova34("PciDevice")?;
        obj.set("extra_info", json!({}));
        let mut d = Dev {
            obj,
            rev: 0,
            claimed_at: 0,
        };
        Self::update_device(&mut d, hv, node_id);
        d.set_if_changed("parent_addr", json!(hv.parent_addr));
        d.set_if_changed("compute_node_id", json!(node_id));
        d.set("status", json!(status::AVAILABLE));
        d.set("uuid", json!(Uuid::new_v4().to_string()));
        Ok(d)
    }

    /// `PciDevice.remove`: only an unused device; else `Err(reason)`.
    fn remove_device(&mut self, i: usize) -> Result<(), String> {
        let d = &mut self.devs[i];
        if !matches!(
            d.status(),
            status::AVAILABLE | status::UNAVAILABLE | status::UNCLAIMABLE
        ) {
            return Err(format!("status {}", d.status()));
        }
        if let Some(owner) = d.instance_uuid() {
            return Err(format!("owned by {owner}"));
        }
        d.set("status", json!(status::REMOVED));
        d.set("instance_uuid", Value::Null);
        d.set("request_id", Value::Null);
        Ok(())
    }

    /// `_set_hvdevs`: the devices the host has and the config allows now.
    fn set_hvdevs(&mut self, env: &Env<'_>, devices: &[HostDevice]) -> Result<(), ComputeError> {
        let node_id = self.node_id;
        let new: BTreeSet<&str> = devices.iter().map(|d| d.address.as_str()).collect();
        for i in 0..self.devs.len() {
            if self.devs[i].is_gone() {
                continue;
            }
            let addr = self.devs[i].address().to_string();
            match devices.iter().find(|d| d.address == addr) {
                None => {
                    let was_free = self.free_addresses().contains(&addr);
                    match self.remove_device(i) {
                        Ok(()) => {
                            tracing::info!(address = %addr, "PCI device gone from the host or the device_spec: removed");
                            if was_free {
                                // its pool keys come from the record, still matched
                                self.remove_address_from_pools(&addr);
                            }
                        }
                        Err(why) => {
                            tracing::warn!(address = %addr, reason = %why,
                                "PCI device gone from the host or the device_spec while in use: \
                                 it is removed when its instance frees it");
                            self.remove_when_freed.insert(addr);
                        }
                    }
                }
                Some(hv) => {
                    if matches!(self.devs[i].status(), status::CLAIMED | status::ALLOCATED) {
                        self.stale.insert(addr, hv.clone());
                    } else {
                        Self::update_device(&mut self.devs[i], hv, node_id);
                        self.update_in_pools(env, i);
                    }
                }
            }
        }
        let existing: BTreeSet<String> = self
            .devs
            .iter()
            .filter(|d| !d.is_gone())
            .map(|d| d.address().to_string())
            .collect();
        for hv in devices {
            if new.contains(hv.address.as_str()) && !existing.contains(&hv.address) {
                self.devs.push(Self::new_device(hv, node_id)?);
                let i = self.devs.len() - 1;
                self.add_to_pools(env, i);
                tracing::info!(address = %hv.address, vendor = %hv.vendor_id, product = %hv.product_id,
                    dev_type = %hv.dev_type, "tracking a PCI device");
            }
        }
        self.devs.sort_by(|a, b| a.address().cmp(b.address()));
        Ok(())
    }

    fn remove_address_from_pools(&mut self, addr: &str) {
        if let Some(p) = self
            .pools
            .iter()
            .position(|p| p.devices.iter().any(|a| a == addr))
        {
            self.pools[p].devices.retain(|a| a != addr);
            self.decrease_pool(p);
        }
    }

    // -- claims

    /// `_filter_pools`: the pools that can serve `req`, or `None`.
    fn filter_pools(&self, req: &PciRequest, rp_uuids: &[String]) -> Option<Vec<usize>> {
        let total = |ps: &[usize]| ps.iter().map(|p| self.pools[*p].count).sum::<u64>();
        let mut ps: Vec<usize> = (0..self.pools.len())
            .filter(|p| self.pools[*p].matches_any(&req.spec))
            .collect();
        if total(&ps) < req.count {
            return None;
        }
        // (no NUMA filtering: corral's instances have no NUMA topology)
        let pool_str = |p: usize, k: &str| {
            self.pools[p]
                .keys
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if !req.requests_type(TYPE_PF) {
            ps.retain(|p| pool_str(*p, "dev_type").as_deref() != Some(TYPE_PF));
        }
        if total(&ps) < req.count {
            return None;
        }
        if !req.requests_type(TYPE_VDPA) {
            ps.retain(|p| pool_str(*p, "dev_type").as_deref() != Some(TYPE_VDPA));
        }
        let wants_rm = req.spec.iter().any(|s| {
            s.get("remote_managed")
                .and_then(Value::as_str)
                .and_then(bool_from_string)
                .unwrap_or(false)
        });
        if !wants_rm {
            ps.retain(|p| {
                !pool_str(*p, "remote_managed")
                    .as_deref()
                    .and_then(bool_from_string)
                    .unwrap_or(false)
            });
        }
        if !rp_uuids.is_empty() {
            ps.retain(|p| {
                self.pools[*p].rp_uuid.as_ref().is_some_and(|rp| {
                    let wanted = rp_uuids.iter().filter(|u| *u == rp).count() as u64;
                    wanted > 0 && self.pools[*p].count >= wanted
                })
            });
        }
        let lm = |v: &str| {
            req.spec
                .iter()
                .all(|s| s.get("live_migratable").and_then(Value::as_str) == Some(v))
        };
        for v in ["true", "false"] {
            if lm(v) {
                ps.retain(|p| pool_str(*p, "live_migratable").as_deref() == Some(v));
                break;
            }
        }
        if total(&ps) < req.count {
            return None;
        }
        Some(ps)
    }

    /// `_handle_device_dependents`: a claimed PF takes its VFs out of the
    /// pools, a claimed VF its PF.
    fn take_dependents(&mut self, env: &Env<'_>, i: usize) {
        let free = self.free_addresses();
        match self.devs[i].dev_type() {
            TYPE_PF => {
                let pf = self.devs[i].address().to_string();
                for c in self.children(&pf) {
                    if free.contains(self.devs[c].address()) {
                        self.remove_from_pools(env, c);
                    }
                }
            }
            TYPE_VF | TYPE_VDPA => {
                if let Some(p) = self.parent(i) {
                    if free.contains(self.devs[p].address()) {
                        self.remove_from_pools(env, p);
                    }
                }
            }
            _ => {}
        }
    }

    /// `consume_requests`: the devices for every request, taken out of the
    /// pools (nothing taken when one request cannot be met).
    fn consume(
        &mut self,
        env: &Env<'_>,
        requests: &[PciRequest],
    ) -> Result<Vec<(usize, Option<String>)>, String> {
        let saved = self.pools.clone();
        let mut taken = Vec::new();
        for req in requests {
            let rps = req.rp_uuids();
            let Some(ps) = self.filter_pools(req, &rps) else {
                self.pools = saved;
                return Err(CLAIM_FAILED.into());
            };
            let addrs: Vec<(String, Option<String>)> = {
                let mut out = Vec::new();
                if rps.is_empty() {
                    let mut count = req.count;
                    for p in ps {
                        let n = count.min(self.pools[p].count);
                        count -= n;
                        self.pools[p].count -= n;
                        for _ in 0..n {
                            if let Some(a) = self.pools[p].devices.pop() {
                                out.push((a, req.request_id.clone()));
                            }
                        }
                        if count == 0 {
                            break;
                        }
                    }
                } else {
                    for p in ps {
                        let Some(rp) = self.pools[p].rp_uuid.clone() else {
                            continue;
                        };
                        let n = rps.iter().filter(|u| **u == rp).count() as u64;
                        self.pools[p].count -= n;
                        for _ in 0..n {
                            if let Some(a) = self.pools[p].devices.pop() {
                                out.push((a, req.request_id.clone()));
                            }
                        }
                    }
                }
                out
            };
            for (a, rid) in addrs {
                if let Some(i) = self.idx(&a) {
                    self.take_dependents(env, i);
                    taken.push((i, rid));
                }
            }
        }
        Ok(taken)
    }

    /// `PciDevice.claim` then `allocate` (nova-compute allocates in the same
    /// claim, before anything is saved: the record goes to `allocated`).
    fn claim_and_allocate(&mut self, i: usize, uuid: &str, rid: Option<String>) {
        match self.devs[i].dev_type() {
            TYPE_PF => {
                let pf = self.devs[i].address().to_string();
                for c in self.children(&pf) {
                    self.devs[c].set("status", json!(status::UNAVAILABLE));
                }
            }
            TYPE_VF | TYPE_VDPA => {
                if let Some(p) = self.parent(i) {
                    self.devs[p].set("status", json!(status::UNAVAILABLE));
                }
            }
            _ => {}
        }
        let epoch = self.epoch;
        let d = &mut self.devs[i];
        d.set("request_id", json!(rid));
        d.set("status", json!(status::ALLOCATED));
        d.set("instance_uuid", json!(uuid));
        d.claimed_at = epoch;
    }

    fn claim(
        &mut self,
        env: &Env<'_>,
        uuid: &str,
        requests: &[PciRequest],
    ) -> Result<Vec<String>, String> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.epoch += 1;
        let taken = self.consume(env, requests)?;
        let mut out = Vec::new();
        for (i, rid) in taken {
            self.claim_and_allocate(i, uuid, rid);
            out.push(self.devs[i].address().to_string());
        }
        Ok(out)
    }

    /// `_free_device`: back to `available` (with its PF or VFs), stale
    /// properties applied, into the pools; or removed if it left meanwhile.
    fn free_device(&mut self, env: &Env<'_>, i: usize) {
        let mut freed = Vec::new();
        match self.devs[i].dev_type() {
            TYPE_PF => {
                let pf = self.devs[i].address().to_string();
                for c in self.children(&pf) {
                    self.devs[c].set("status", json!(status::AVAILABLE));
                    freed.push(c);
                }
            }
            TYPE_VF | TYPE_VDPA => {
                if let Some(p) = self.parent(i) {
                    let pf = self.devs[p].address().to_string();
                    let me = self.devs[i].address().to_string();
                    let others_free = self.children(&pf).into_iter().all(|c| {
                        self.devs[c].address() == me || self.devs[c].status() == status::AVAILABLE
                    });
                    if others_free {
                        self.devs[p].set("status", json!(status::AVAILABLE));
                        freed.push(p);
                    }
                }
            }
            _ => {}
        }
        let d = &mut self.devs[i];
        d.set("status", json!(status::AVAILABLE));
        d.set("instance_uuid", Value::Null);
        d.set("request_id", Value::Null);
        freed.push(i);
        let addr = d.address().to_string();
        if let Some(hv) = self.stale.remove(&addr) {
            let node_id = self.node_id;
            Self::update_device(&mut self.devs[i], &hv, node_id);
        }
        if self.remove_when_freed.remove(&addr) {
            let _ = self.remove_device(i);
        } else {
            for f in freed {
                self.add_to_pools(env, f);
            }
        }
    }

    /// Frees every device an instance holds; true when there was one.
    fn free_instance(&mut self, env: &Env<'_>, uuid: &str) -> bool {
        let held: Vec<usize> = (0..self.devs.len())
            .filter(|i| {
                let d = &self.devs[*i];
                matches!(d.status(), status::CLAIMED | status::ALLOCATED)
                    && d.instance_uuid() == Some(uuid)
            })
            .collect();
        for i in &held {
            self.free_device(env, *i);
        }
        !held.is_empty()
    }

    /// `clean_usage`: frees what instances no longer on this host hold
    /// (claims younger than `epoch`, the listing's, are kept).
    fn clean_usage(&mut self, env: &Env<'_>, instances: &BTreeSet<String>, epoch: u64) -> bool {
        let owners: BTreeSet<String> = self
            .devs
            .iter()
            .filter(|d| {
                matches!(d.status(), status::CLAIMED | status::ALLOCATED) && d.claimed_at <= epoch
            })
            .filter_map(|d| d.instance_uuid().map(str::to_string))
            .filter(|u| !instances.contains(u))
            .collect();
        for u in &owners {
            tracing::info!(instance = %u, "freeing the PCI devices of an instance no longer on this host");
            self.free_instance(env, u);
        }
        !owners.is_empty()
    }

    fn holds_any(&self) -> bool {
        self.devs
            .iter()
            .any(|d| matches!(d.status(), status::CLAIMED | status::ALLOCATED))
    }
}

// ------------------------------------------------------------------ placement view

/// Upper case, runs of other characters than `[A-Z0-9_]` as `_`.
fn normalize_name(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.to_uppercase().chars() {
        if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
            sep = false;
        } else if !sep {
            out.push('_');
            sep = true;
        }
    }
    out
}

/// os-resource-classes 1.1's standard classes.
const STANDARD_RCS: &[&str] = &[
    "VCPU",
    "MEMORY_MB",
    "DISK_GB",
    "PCI_DEVICE",
    "SRIOV_NET_VF",
    "NUMA_SOCKET",
    "NUMA_CORE",
    "NUMA_THREAD",
    "NUMA_MEMORY_MB",
    "IPV4_ADDRESS",
    "VGPU",
    "VGPU_DISPLAY_HEAD",
    "NET_BW_EGR_KILOBIT_PER_SEC",
    "NET_BW_IGR_KILOBIT_PER_SEC",
    "PCPU",
    "MEM_ENCRYPTION_CONTEXT",
    "FPGA",
    "PGPU",
    "NET_PACKET_RATE_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_EGR_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_IGR_KILOPACKET_PER_SEC",
];

/// `get_resource_class`: the `resource_class` tag, normalized, or
/// `CUSTOM_PCI_<VENDOR>_<PRODUCT>`.
pub fn resource_class(tag: Option<&str>, vendor_id: &str, product_id: &str) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(rc) => {
            let up = rc.to_uppercase();
            if STANDARD_RCS.contains(&up.as_str()) || up.starts_with("CUSTOM_") {
                normalize_name(&up)
            } else {
                format!("CUSTOM_{}", normalize_name(&up))
            }
        }
        None => format!("CUSTOM_PCI_{vendor_id}_{product_id}").to_uppercase(),
    }
}

/// `get_traits`: the `traits` tag's names; names in os-traits' form
/// (`[A-Z0-9_]`) are kept, others become `CUSTOM_<NAME>`.
pub fn spec_traits(tag: Option<&str>) -> BTreeSet<String> {
    tag.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let standard_form = t
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if standard_form {
                t.to_string()
            } else {
                let up = normalize_name(t);
                if up.starts_with("CUSTOM_") {
                    up
                } else {
                    format!("CUSTOM_{up}")
                }
            }
        })
        .collect()
}

/// One PCI resource provider of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct PciProvider {
    pub name: String,
    pub resource_class: String,
    pub traits: BTreeSet<String>,
    pub total: u64,
    pub reserved: u64,
    /// Addresses of its devices.
    pub devices: Vec<String>,
    /// Instance -> devices of this provider it holds.
    pub consumers: BTreeMap<String, u64>,
    /// Whether it stands for one type-PCI or type-PF device (else VFs).
    pub has_parent: bool,
}

/// `PlacementView`: the providers the tracked devices make.
fn placement_view(
    state: &State,
    env: &Env<'_>,
    nodename: &str,
) -> Result<BTreeMap<String, PciProvider>, String> {
    let mut rps: BTreeMap<String, PciProvider> = BTreeMap::new();
    let name_for = |a: &str| format!("{nodename}_{}", a.to_uppercase());
    for d in state.devs.iter().filter(|d| !d.is_gone()) {
        let Some(spec) = env.spec(d) else {
            if d.instance_uuid().is_some() {
                tracing::warn!(
                    address = d.address(),
                    "an allocated PCI device lost its device_spec: kept out of Placement"
                );
            }
            continue;
        };
        if spec.tag("physical_network").is_some_and(|p| !p.is_empty()) {
            continue;
        }
        let vendor = d.s("vendor_id").unwrap_or("");
        let product = d.s("product_id").unwrap_or("");
        let rc = resource_class(spec.tag("resource_class"), vendor, product);
        let mut traits = spec_traits(spec.tag("traits"));
        traits.insert(MANAGED_PCI_TRAIT.into());
        traits.insert("OWNER_NOVA".into());
        if spec
            .tag("live_migratable")
            .and_then(bool_from_string)
            .unwrap_or(false)
        {
            traits.insert("HW_PCI_LIVE_MIGRATABLE".into());
        }
        let parent = matches!(d.dev_type(), TYPE_PCI | TYPE_PF);
        let name = if parent {
            name_for(d.address())
        } else {
            let p = d.parent_addr().ok_or_else(|| {
                format!(
                    "Missing parent address for PCI device {} with type {}",
                    d.address(),
                    d.dev_type()
                )
            })?;
            name_for(p)
        };
        let otu = parent
            && spec
                .tag("one_time_use")
                .and_then(bool_from_string)
                .unwrap_or(false);
        if otu {
            traits.insert("HW_PCI_ONE_TIME_USE".into());
        }
        let fresh = !rps.contains_key(&name);
        let rp = rps.entry(name.clone()).or_insert_with(|| PciProvider {
            name: name.clone(),
            resource_class: rc.clone(),
            traits: traits.clone(),
            total: 0,
            reserved: 0,
            devices: Vec::new(),
            consumers: BTreeMap::new(),
            has_parent: parent,
        });
        if !fresh && (parent || rp.has_parent) {
            return Err(format!(
                "PCI devices {} and {} would share the provider {name}: a PF and its VFs cannot \
                 both be in [pci]device_spec",
                d.address(),
                rp.devices.join(",")
            ));
        }
        if rp.resource_class != rc || rp.traits != traits {
            return Err(format!(
                "the VFs of {name} have different resource classes or traits"
            ));
        }
        rp.devices.push(d.address().to_string());
        rp.total += 1;
        if let Some(u) = d.instance_uuid() {
            *rp.consumers.entry(u.to_string()).or_default() += 1;
            if otu {
                rp.reserved = rp.total;
            }
        }
    }
    Ok(rps)
}

// ------------------------------------------------------------------ the tracker

struct Inner {
    cfg: PciSection,
    sysfs: PathBuf,
    host: String,
    conductor: Conductor,
    state: Mutex<State>,
    save_lock: tokio::sync::Mutex<()>,
    placement: tokio::sync::Mutex<PlacementCache>,
}

/// What was last written to Placement, so an unchanged view costs one listing.
#[derive(Debug, Default)]
struct PlacementCache {
    checked_disabled: bool,
    written: BTreeMap<String, (Uuid, PciProvider)>,
    /// Consumers whose PCI allocations were found or healed.
    healed: BTreeSet<(String, Uuid)>,
}

/// The PCI tracker of this compute node (cheap to clone).
#[derive(Clone)]
pub struct PciTracker {
    inner: Arc<Inner>,
}

impl PciTracker {
    /// A tracker over `sysfs` (`/sys` on a host).
    pub fn new(cfg: PciSection, sysfs: PathBuf, host: String, conductor: Conductor) -> PciTracker {
        PciTracker {
            inner: Arc::new(Inner {
                cfg,
                sysfs,
                host,
                conductor,
                state: Mutex::new(State::default()),
                save_lock: tokio::sync::Mutex::new(()),
                placement: tokio::sync::Mutex::new(PlacementCache::default()),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.inner.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            cfg: &self.inner.cfg,
            sysfs: &self.inner.sysfs,
        }
    }

    /// Whether a device spec is configured.
    pub fn configured(&self) -> bool {
        !self.inner.cfg.device_spec.is_empty()
    }

    /// The resource tracker's pass: the first time (`_setup_pci_tracker`) the
    /// records of this node are loaded through the conductor and brought in
    /// step with the host's devices; every time, devices of instances no
    /// longer on this host are freed (`clean_usage`).
    pub async fn refresh(&self, ctx: &Context, node: &NovaObject) -> Result<(), ComputeError> {
        let Some(node_id) = node.get("id").and_then(Value::as_i64) else {
            return Ok(());
        };
        let loaded = self.state().loaded;
        if !loaded {
            let list = self
                .inner
                .conductor
                .class_action(
                    ctx,
                    "PciDeviceList",
                    "get_by_compute_node",
                    vec![json!(node_id)],
                    Map::new(),
                )
                .await?;
            let records = if list.is_null() {
                Vec::new()
            } else {
                NovaObject::from_primitive(&list)?.list_objects()?
            };
            let hv = assignable(
                discover(&self.inner.sysfs),
                &self.inner.cfg,
                &self.inner.sysfs,
            );
            let env = self.env();
            let mut st = self.state();
            st.node_id = Some(node_id);
            let n = records.len();
            st.load(&env, records);
            st.set_hvdevs(&env, &hv)?;
            st.loaded = true;
            tracing::info!(
                records = n,
                assignable = hv.len(),
                pools = st.pools.len(),
                "PCI tracker set up"
            );
        }
        let (holds, epoch) = {
            let st = self.state();
            (st.holds_any(), st.epoch)
        };
        if holds {
            let list = self
                .inner
                .conductor
                .class_action(
                    ctx,
                    "InstanceList",
                    "get_by_host",
                    vec![json!(self.inner.host)],
                    Map::from_iter([("expected_attrs".to_string(), json!([]))]),
                )
                .await?;
            let uuids: BTreeSet<String> = NovaObject::from_primitive(&list)?
                .list_objects()?
                .iter()
                .filter_map(|i| i.get("uuid").and_then(Value::as_str).map(str::to_string))
                .collect();
            let env = self.env();
            self.state().clean_usage(&env, &uuids, epoch);
        }
        Ok(())
    }

    /// Sets `pci_device_pools` on the node object when the pools changed
    /// (always once, as nova-compute does).
    pub fn apply_to_node(&self, node: &mut NovaObject) {
        let pools = self.state().pools_primitive();
        if pool_datas(node.get("pci_device_pools")) != pool_datas(Some(&pools)) {
            node.set("pci_device_pools", pools);
        }
    }

    /// Claims devices for an instance's requests (`claim_instance` +
    /// `allocate_instance`): their addresses, or [`ComputeError::ResourcesUnavailable`].
    /// Nothing is saved here: the node save that follows saves them.
    pub fn claim(&self, uuid: &str, requests: &[PciRequest]) -> Result<Vec<String>, ComputeError> {
        if requests.iter().all(|r| r.count == 0) {
            return Ok(Vec::new());
        }
        let env = self.env();
        let mut st = self.state();
        match st.claim(&env, uuid, requests) {
            Ok(addrs) => {
                tracing::info!(instance = uuid, devices = ?addrs, "PCI devices claimed");
                Ok(addrs)
            }
            Err(msg) => {
                tracing::warn!(instance = uuid, requests = ?requests, "PCI claim failed");
                Err(ComputeError::ResourcesUnavailable(msg))
            }
        }
    }

    /// Frees an instance's devices; true when it held any.
    pub fn free_instance(&self, uuid: &str) -> bool {
        let env = self.env();
        let freed = self.state().free_instance(&env, uuid);
        if freed {
            tracing::info!(instance = uuid, "PCI devices freed");
        }
        freed
    }

    /// The addresses of the devices an instance holds (after a restart too).
    pub fn devices_of(&self, uuid: &str) -> Vec<String> {
        self.state()
            .devs
            .iter()
            .filter(|d| {
                matches!(d.status(), status::CLAIMED | status::ALLOCATED)
                    && d.instance_uuid() == Some(uuid)
            })
            .map(|d| d.address().to_string())
            .collect()
    }

    /// `PciDevTracker.save`: every changed record through `PciDevice.save`;
    /// a removed one is deleted by it and forgotten.
    pub async fn save(&self, ctx: &Context) -> Result<(), ComputeError> {
        let _g = self.inner.save_lock.lock().await;
        let pending: Vec<(u64, NovaObject)> = self
            .state()
            .devs
            .iter()
            .filter(|d| !d.obj.what_changed().is_empty())
            .map(|d| (d.rev, d.obj.clone()))
            .collect();
        let mut first_error = None;
        for (rev, mut obj) in pending {
            let addr = obj
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let uuid = obj.get("uuid").cloned();
            match self
                .inner
                .conductor
                .object_action(ctx, &mut obj, "save", vec![], Map::new())
                .await
            {
                Ok(_) => {
                    obj.reset_changes();
                    let mut st = self.state();
                    let Some(i) = st
                        .devs
                        .iter()
                        .position(|d| d.address() == addr && d.obj.get("uuid") == uuid.as_ref())
                    else {
                        continue;
                    };
                    if obj.get("status").and_then(Value::as_str) == Some(status::DELETED)
                        || st.devs[i].status() == status::REMOVED && st.devs[i].rev == rev
                    {
                        st.devs.remove(i);
                        continue;
                    }
                    let d = &mut st.devs[i];
                    if d.rev == rev {
                        d.obj = obj;
                    } else {
                        // changed again while saving: keep the newer values
                        let changed = d.obj.what_changed();
                        for (k, v) in obj.data {
                            if !changed.contains(&k) {
                                d.obj.data.insert(k, v);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(address = %addr, error = %e.full_message(), "PciDevice.save failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The Placement side (`update_provider_tree_for_pci`). Without
    /// `report_in_placement` it only checks, once, that it was never on.
    pub async fn sync_placement(
        &self,
        p: &PlacementClient,
        root: Uuid,
        nodename: &str,
    ) -> Result<(), ComputeError> {
        let mut cache = self.inner.placement.lock().await;
        if !self.inner.cfg.report_in_placement {
            if cache.checked_disabled {
                return Ok(());
            }
            for rp in p.get_providers_in_tree(root).await? {
                if rp.uuid != root
                    && p.get_traits(rp.uuid)
                        .await?
                        .traits
                        .contains(MANAGED_PCI_TRAIT)
                {
                    return Err(ComputeError::Invalid(
                        "The [pci]report_in_placement is False but it was enabled before on this \
                         compute. Nova does not support disabling it after it is enabled."
                            .into(),
                    ));
                }
            }
            cache.checked_disabled = true;
            return Ok(());
        }
        if !self.state().loaded {
            return Ok(());
        }
        let view = {
            let env = self.env();
            let st = self.state();
            placement_view(&st, &env, nodename).map_err(ComputeError::Invalid)?
        };
        let tree = p.get_providers_in_tree(root).await?;
        // providers of devices that left the view
        for rp in tree
            .iter()
            .filter(|r| r.uuid != root && !view.contains_key(&r.name))
        {
            let ours = cache.written.values().any(|(u, _)| *u == rp.uuid)
                || p.get_traits(rp.uuid)
                    .await?
                    .traits
                    .contains(MANAGED_PCI_TRAIT);
            if ours {
                match p.delete_resource_provider(rp.uuid).await {
                    Ok(_) => {
                        tracing::info!(name = %rp.name, "removed the resource provider of a PCI device")
                    }
                    Err(e) => {
                        tracing::warn!(name = %rp.name, error = %e, "cannot remove a PCI resource provider")
                    }
                }
                cache.written.retain(|_, (u, _)| *u != rp.uuid);
            }
        }
        let mut rp_of: BTreeMap<String, Uuid> = BTreeMap::new();
        for (name, want) in &view {
            let existing = tree.iter().find(|r| &r.name == name);
            let (uuid, generation) = match existing {
                Some(r) => (r.uuid, r.generation),
                None => {
                    let r = p
                        .create_resource_provider(Uuid::new_v4(), name, Some(root))
                        .await?;
                    (r.uuid, r.generation)
                }
            };
            let unchanged = cache.written.get(name).is_some_and(|(u, w)| {
                *u == uuid
                    && w.resource_class == want.resource_class
                    && w.total == want.total
                    && w.reserved == want.reserved
                    && w.traits == want.traits
            });
            if !unchanged {
                let mut inv = BTreeMap::new();
                inv.insert(
                    want.resource_class.clone(),
                    Inventory {
                        total: want.total,
                        reserved: want.reserved,
                        min_unit: 1,
                        max_unit: want.total,
                        step_size: 1,
                        allocation_ratio: 1.0,
                    },
                );
                let current = p.get_inventories(uuid).await?;
                if current.inventories != inv {
                    p.set_inventories(
                        uuid,
                        current.resource_provider_generation.max(generation),
                        &inv,
                    )
                    .await?;
                }
                let have = p.get_traits(uuid).await?.traits;
                let remove: BTreeSet<String> = have.difference(&want.traits).cloned().collect();
                p.update_traits(uuid, &want.traits, &remove).await?;
                cache.written.insert(name.clone(), (uuid, want.clone()));
                tracing::info!(name = %name, rc = %want.resource_class, total = want.total,
                    "PCI resource provider in step");
            }
            rp_of.insert(name.clone(), uuid);
        }
        // the provider of each device in its record and its pool
        {
            let mut st = self.state();
            let mut dev_rp: BTreeMap<String, String> = BTreeMap::new();
            for (name, rp) in &view {
                if let Some(u) = rp_of.get(name) {
                    for a in &rp.devices {
                        dev_rp.insert(a.clone(), u.to_string());
                    }
                }
            }
            for d in st.devs.iter_mut().filter(|d| !d.is_gone()) {
                if let Some(u) = dev_rp.get(d.address()) {
                    if d.extra("rp_uuid") != Some(u.as_str()) {
                        d.set_extra("rp_uuid", Some(u));
                    }
                }
            }
            let by_addr: BTreeMap<String, Option<String>> = st
                .devs
                .iter()
                .map(|d| {
                    (
                        d.address().to_string(),
                        d.extra("rp_uuid").map(str::to_string),
                    )
                })
                .collect();
            for pool in st.pools.iter_mut() {
                let rps: BTreeSet<&String> = pool
                    .devices
                    .iter()
                    .filter_map(|a| by_addr.get(a).and_then(Option::as_ref))
                    .collect();
                if rps.len() == 1 {
                    pool.rp_uuid = rps.into_iter().next().cloned();
                }
            }
        }
        // allocations of instances holding devices (nova heals them while the
        // scheduler does not allocate PCI in Placement)
        let holders: BTreeSet<&String> = view.values().flat_map(|rp| rp.consumers.keys()).collect();
        cache.healed.retain(|(c, _)| holders.contains(c));
        for (name, rp) in &view {
            let Some(rp_uuid) = rp_of.get(name).copied() else {
                continue;
            };
            for (consumer, amount) in &rp.consumers {
                let Ok(c) = Uuid::parse_str(consumer) else {
                    continue;
                };
                if cache.healed.contains(&(consumer.clone(), rp_uuid)) {
                    continue;
                }
                let mut current = p.get_allocations_for_consumer(c).await?;
                if current.allocations.is_empty() {
                    // a migration holds it, or nothing does: not ours to heal
                    continue;
                }
                let have = current
                    .allocations
                    .get(&rp_uuid)
                    .and_then(|a| a.resources.get(&rp.resource_class))
                    .copied();
                if have != Some(*amount) {
                    let entry = current.allocations.entry(rp_uuid).or_insert_with(|| {
                        crate::placement::types::ProviderAllocation {
                            resources: BTreeMap::new(),
                            generation: None,
                        }
                    });
                    entry.resources.insert(rp.resource_class.clone(), *amount);
                    let allocations = current
                        .allocations
                        .into_iter()
                        .map(|(k, mut v)| {
                            v.generation = None;
                            (k, v)
                        })
                        .collect();
                    let body = crate::placement::types::AllocationRequest {
                        allocations,
                        project_id: current.project_id.unwrap_or_default(),
                        user_id: current.user_id.unwrap_or_default(),
                        consumer_generation: current.consumer_generation,
                    };
                    if let Err(e) = p.put_allocations(c, &body).await {
                        tracing::warn!(%consumer, error = %e, "cannot heal the PCI allocation");
                        continue;
                    }
                    tracing::info!(%consumer, rc = %rp.resource_class, "healed the PCI allocation in Placement");
                }
                cache.healed.insert((consumer.clone(), rp_uuid));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ini;

    fn pci_cfg(text: &str) -> PciSection {
        let mut ini = Ini::default();
        ini.merge_str(text, "t").unwrap();
        PciSection::from_ini(&ini).unwrap()
    }

    /// A fake `/sys` with PCI functions: (address, vendor, device, numa).
    struct FakeSys {
        dir: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> FakeSys {
            FakeSys {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self) -> &Path {
            self.dir.path()
        }
        fn dev(&self, addr: &str, vendor: &str, device: &str, numa: i64) -> PathBuf {
            let real = self.path().join("devices/pci0000:00").join(addr);
            std::fs::create_dir_all(&real).unwrap();
            std::fs::write(real.join("vendor"), format!("0x{vendor}\n")).unwrap();
            std::fs::write(real.join("device"), format!("0x{device}\n")).unwrap();
            std::fs::write(real.join("class"), "0xff0000\n").unwrap();
            std::fs::write(real.join("numa_node"), format!("{numa}\n")).unwrap();
            let bus = self.path().join("bus/pci/devices");
            std::fs::create_dir_all(&bus).unwrap();
            std::os::unix::fs::symlink(
                format!("../../../devices/pci0000:00/{addr}"),
                bus.join(addr),
            )
            .unwrap();
            real
        }
        fn pf(&self, addr: &str, vendor: &str, device: &str, vfs: &[(&str, &str)]) {
            let d = self.dev(addr, vendor, device, 0);
            std::fs::write(d.join("sriov_totalvfs"), format!("{}\n", vfs.len().max(1))).unwrap();
            std::fs::create_dir_all(d.join("net/ens1f0")).unwrap();
            std::fs::write(d.join("net/ens1f0/address"), "52:54:00:12:34:56\n").unwrap();
            for (n, (vf, vdev)) in vfs.iter().enumerate() {
                let v = self.dev(vf, vendor, vdev, 0);
                std::os::unix::fs::symlink(format!("../{addr}"), v.join("physfn")).unwrap();
                std::os::unix::fs::symlink(format!("../{vf}"), d.join(format!("virtfn{n}")))
                    .unwrap();
            }
        }
    }

    fn records(state: &State) -> Vec<(String, String, Option<String>)> {
        state
            .devs
            .iter()
            .map(|d| {
                (
                    d.address().to_string(),
                    d.status().to_string(),
                    d.instance_uuid().map(str::to_string),
                )
            })
            .collect()
    }

    fn rng_request(count: u64) -> PciRequest {
        PciRequest {
            count,
            spec: vec![
                serde_json::from_value(json!({"vendor_id": "1af4", "product_id": "1044"})).unwrap(),
            ],
            alias_name: Some("rng".into()),
            request_id: Some("8a1f3e5c-0000-4000-8000-000000000001".into()),
        }
    }

    #[test]
    fn discovery_reads_types_numa_and_parents() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        sys.dev("0000:00:03.0", "1af4", "1041", 1);
        sys.pf(
            "0000:81:00.0",
            "8086",
            "1572",
            &[("0000:81:02.0", "154c"), ("0000:81:02.1", "154c")],
        );
        let devs = discover(sys.path());
        let by = |a: &str| devs.iter().find(|d| d.address == a).unwrap().clone();
        assert_eq!(devs.len(), 5);
        let rng = by("0000:00:05.0");
        assert_eq!(rng.dev_type, TYPE_PCI);
        assert_eq!(rng.numa_node, None);
        assert_eq!(rng.dev_id, "pci_0000_00_05_0");
        assert_eq!(rng.label, "label_1af4_1044");
        assert_eq!(
            (rng.vendor_id.as_str(), rng.product_id.as_str()),
            ("1af4", "1044")
        );
        assert_eq!(by("0000:00:03.0").numa_node, Some(1));
        let pf = by("0000:81:00.0");
        assert_eq!(pf.dev_type, TYPE_PF);
        assert_eq!(
            pf.extra,
            vec![("mac_address".to_string(), "52:54:00:12:34:56".to_string())]
        );
        let vf = by("0000:81:02.1");
        assert_eq!(vf.dev_type, TYPE_VF);
        assert_eq!(vf.parent_addr.as_deref(), Some("0000:81:00.0"));
        assert!(discover(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn only_devices_a_spec_matches_are_assignable() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        sys.dev("0000:00:03.0", "1af4", "1041", 0);
        let cfg = pci_cfg(
            "[pci]\ndevice_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\",\"managed\":\"no\"}\n",
        );
        let a = assignable(discover(sys.path()), &cfg, sys.path());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].address, "0000:00:05.0");
        assert_eq!(
            a[0].extra,
            vec![("managed".to_string(), "false".to_string())]
        );
        let none = assignable(discover(sys.path()), &pci_cfg(""), sys.path());
        assert!(none.is_empty());
    }

    fn tracker_state(sys: &FakeSys, cfg: &PciSection) -> State {
        let env = Env {
            cfg,
            sysfs: sys.path(),
        };
        let hv = assignable(discover(sys.path()), cfg, sys.path());
        let mut st = State {
            node_id: Some(7),
            ..State::default()
        };
        st.load(&env, Vec::new());
        st.set_hvdevs(&env, &hv).unwrap();
        st.loaded = true;
        st
    }

    #[test]
    fn new_devices_become_records_and_pools() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        let cfg =
            pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\"}\n");
        let st = tracker_state(&sys, &cfg);
        let d = &st.devs[0];
        assert_eq!(d.obj.name, "PciDevice");
        assert_eq!(d.obj.version.to_string(), "1.7");
        for (k, v) in [
            ("compute_node_id", json!(7)),
            ("address", json!("0000:00:05.0")),
            ("vendor_id", json!("1af4")),
            ("product_id", json!("1044")),
            ("dev_type", json!("type-PCI")),
            ("dev_id", json!("pci_0000_00_05_0")),
            ("label", json!("label_1af4_1044")),
            ("numa_node", Value::Null),
            ("parent_addr", Value::Null),
            ("status", json!("available")),
            ("extra_info", json!({})),
        ] {
            assert_eq!(d.obj.get(k), Some(&v), "{k}");
        }
        assert!(d.obj.get("uuid").and_then(Value::as_str).is_some());
        assert!(d.obj.what_changed().contains(&"status".to_string()));
        let pools = st.pools_primitive();
        let p = &pools["nova_object.data"]["objects"][0]["nova_object.data"];
        assert_eq!(
            p,
            &json!({"product_id": "1044", "vendor_id": "1af4", "numa_node": null,
                    "tags": {"dev_type": "type-PCI", "address": "0000:00:05.0"}, "count": 1})
        );
    }

    #[test]
    fn claim_free_and_not_enough_devices() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        sys.dev("0000:00:06.0", "1af4", "1044", -1);
        let cfg =
            pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\"}\n");
        let env = Env {
            cfg: &cfg,
            sysfs: sys.path(),
        };
        let mut st = tracker_state(&sys, &cfg);
        assert_eq!(
            st.pools.len(),
            2,
            "one pool per address, as nova splits them"
        );
        let got = st.claim(&env, "inst-1", &[rng_request(1)]).unwrap();
        assert_eq!(got.len(), 1);
        let d = &st.devs[st.idx(&got[0]).unwrap()];
        assert_eq!(d.status(), "allocated");
        assert_eq!(d.instance_uuid(), Some("inst-1"));
        assert_eq!(
            d.s("request_id"),
            Some("8a1f3e5c-0000-4000-8000-000000000001")
        );
        // the consumed pool stays with count 0, as nova's consume_requests leaves it
        let counts: Vec<u64> = st.pools.iter().map(|p| p.count).collect();
        assert_eq!(counts.iter().sum::<u64>(), 1);
        // two more than there are: nothing taken
        let before = st.pools.clone();
        let err = st.claim(&env, "inst-2", &[rng_request(2)]).unwrap_err();
        assert_eq!(err, CLAIM_FAILED);
        assert_eq!(st.pools, before);
        assert!(st.claim(&env, "inst-2", &[rng_request(1)]).is_ok());
        assert!(st.claim(&env, "inst-3", &[rng_request(1)]).is_err());
        // other products never match
        let mut other = rng_request(1);
        other.spec[0].insert("product_id".into(), json!("1045"));
        assert!(st.free_instance(&env, "inst-1"));
        assert!(st.claim(&env, "inst-3", &[other]).is_err());
        assert!(!st.free_instance(&env, "inst-1"));
        let freed = records(&st)
            .into_iter()
            .filter(|(_, s, u)| s == "available" && u.is_none())
            .count();
        assert_eq!(freed, 1);
        assert_eq!(st.pools.iter().map(|p| p.count).sum::<u64>(), 1);
    }

    #[test]
    fn a_restart_reloads_claims_and_frees_gone_instances() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        let cfg =
            pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\"}\n");
        let env = Env {
            cfg: &cfg,
            sysfs: sys.path(),
        };
        let mut st = tracker_state(&sys, &cfg);
        st.claim(&env, "inst-1", &[rng_request(1)]).unwrap();
        // what the conductor would return after the saves
        let mut rec = st.devs[0].obj.clone();
        rec.data.insert("id".into(), json!(3));
        rec.reset_changes();
        let mut st2 = State {
            node_id: Some(7),
            ..State::default()
        };
        st2.load(&env, vec![rec]);
        let hv = assignable(discover(sys.path()), &cfg, sys.path());
        st2.set_hvdevs(&env, &hv).unwrap();
        assert!(st2.pools.is_empty(), "an allocated device is in no pool");
        assert_eq!(st2.devs.len(), 1);
        assert!(st2.devs[0].obj.what_changed().is_empty(), "nothing to save");
        assert!(st2.holds_any());
        // the instance is still on the host: kept
        let on_host: BTreeSet<String> = ["inst-1".to_string()].into();
        assert!(!st2.clean_usage(&env, &on_host, st2.epoch));
        // gone: freed
        assert!(st2.clean_usage(&env, &BTreeSet::new(), st2.epoch));
        assert_eq!(st2.devs[0].status(), "available");
        assert_eq!(st2.pools.len(), 1);
    }

    #[test]
    fn a_fresh_claim_survives_an_older_listing() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        let cfg = pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\"}\n");
        let env = Env {
            cfg: &cfg,
            sysfs: sys.path(),
        };
        let mut st = tracker_state(&sys, &cfg);
        let listing_epoch = st.epoch;
        st.claim(&env, "inst-1", &[rng_request(1)]).unwrap();
        assert!(!st.clean_usage(&env, &BTreeSet::new(), listing_epoch));
        assert_eq!(st.devs[0].status(), "allocated");
    }

    #[test]
    fn devices_leaving_the_host_are_removed_unless_in_use() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        sys.dev("0000:00:06.0", "1af4", "1044", -1);
        let cfg = pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\"}\n");
        let env = Env {
            cfg: &cfg,
            sysfs: sys.path(),
        };
        let mut st = tracker_state(&sys, &cfg);
        let got = st.claim(&env, "inst-1", &[rng_request(1)]).unwrap();
        st.set_hvdevs(&env, &[]).unwrap();
        let statuses: BTreeMap<String, String> =
            records(&st).into_iter().map(|(a, s, _)| (a, s)).collect();
        assert_eq!(statuses[&got[0]], "allocated");
        assert_eq!(statuses.values().filter(|s| *s == "removed").count(), 1);
        assert!(st.pools.iter().all(|p| p.count == 0));
        // freeing the one in use removes it
        st.free_instance(&env, "inst-1");
        assert!(st.devs.iter().all(|d| d.status() == "removed"));
        assert_eq!(st.pools.iter().map(|p| p.count).sum::<u64>(), 0);
    }

    #[test]
    fn pf_and_vf_claims_block_each_other() {
        let sys = FakeSys::new();
        sys.pf(
            "0000:81:00.0",
            "8086",
            "1572",
            &[("0000:81:02.0", "154c"), ("0000:81:02.1", "154c")],
        );
        let cfg = pci_cfg(
            "[pci]\ndevice_spec = {\"vendor_id\":\"8086\", \"physical_network\": \"physnet1\"}\n",
        );
        let env = Env {
            cfg: &cfg,
            sysfs: sys.path(),
        };
        let mut st = tracker_state(&sys, &cfg);
        let vf_req = PciRequest {
            count: 1,
            spec: vec![
                serde_json::from_value(json!({"vendor_id": "8086", "product_id": "154c"})).unwrap(),
            ],
            alias_name: Some("vf".into()),
            request_id: None,
        };
        let pf_req = PciRequest {
            count: 1,
            spec: vec![serde_json::from_value(
                json!({"vendor_id": "8086", "product_id": "1572", "dev_type": "type-PF"}),
            )
            .unwrap()],
            alias_name: Some("pf".into()),
            request_id: None,
        };
        // a PF is only given when asked for as type-PF
        let mut pf_plain = pf_req.clone();
        pf_plain.spec[0].remove("dev_type");
        assert!(st.claim(&env, "i0", &[pf_plain]).is_err());
        let vf = st.claim(&env, "i1", std::slice::from_ref(&vf_req)).unwrap();
        assert_eq!(vf.len(), 1);
        let pf = &st.devs[st.idx("0000:81:00.0").unwrap()];
        assert_eq!(pf.status(), "unavailable");
        assert!(st.claim(&env, "i2", std::slice::from_ref(&pf_req)).is_err());
        let pools = st.pools_primitive();
        let tags = &pools["nova_object.data"]["objects"][0]["nova_object.data"]["tags"];
        assert_eq!(tags["physical_network"], json!("physnet1"));
        assert_eq!(tags["remote_managed"], json!("false"));
        assert_eq!(tags["address"], json!("0000:81:00.0"));
        st.free_instance(&env, "i1");
        assert_eq!(
            st.devs[st.idx("0000:81:00.0").unwrap()].status(),
            "available"
        );
        let pf = st.claim(&env, "i2", &[pf_req]).unwrap();
        assert_eq!(pf, vec!["0000:81:00.0".to_string()]);
        assert!(st
            .children("0000:81:00.0")
            .iter()
            .all(|c| st.devs[*c].status() == "unavailable"));
        assert!(st.claim(&env, "i3", &[vf_req]).is_err());
    }

    #[test]
    fn the_placement_view_follows_nova() {
        let sys = FakeSys::new();
        sys.dev("0000:00:05.0", "1af4", "1044", -1);
        sys.pf(
            "0000:81:00.0",
            "8086",
            "1572",
            &[("0000:81:02.0", "154c"), ("0000:81:02.1", "154c")],
        );
        let cfg = pci_cfg(
            "[pci]\nreport_in_placement = true\n\
             device_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\",\"traits\":\"blue,HW_GPU_API_VULKAN\"}\n\
             device_spec = {\"vendor_id\":\"8086\",\"product_id\":\"154c\",\"resource_class\":\"nic vf\"}\n",
        );
        let env = Env {
            cfg: &cfg,
            sysfs: sys.path(),
        };
        let mut st = tracker_state(&sys, &cfg);
        st.claim(&env, "inst-1", &[rng_request(1)]).unwrap();
        let view = placement_view(&st, &env, "cmp1").unwrap();
        let names: Vec<&String> = view.keys().collect();
        assert_eq!(names, ["cmp1_0000:00:05.0", "cmp1_0000:81:00.0"]);
        let rng = &view["cmp1_0000:00:05.0"];
        assert_eq!(rng.resource_class, "CUSTOM_PCI_1AF4_1044");
        assert_eq!(rng.total, 1);
        assert_eq!(rng.consumers.get("inst-1"), Some(&1));
        assert_eq!(
            rng.traits,
            [
                "COMPUTE_MANAGED_PCI_DEVICE",
                "CUSTOM_BLUE",
                "HW_GPU_API_VULKAN",
                "OWNER_NOVA"
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        );
        let vfs = &view["cmp1_0000:81:00.0"];
        assert_eq!(vfs.resource_class, "CUSTOM_NIC_VF");
        assert_eq!(vfs.total, 2);
        assert_eq!(resource_class(Some("pgpu"), "10de", "1eb8"), "PGPU");
        assert_eq!(resource_class(None, "10de", "1eb8"), "CUSTOM_PCI_10DE_1EB8");
    }

    #[test]
    fn requests_and_provider_mapping() {
        let obj = NovaObject::from_primitive(&json!({
            "nova_object.name": "InstancePCIRequests", "nova_object.namespace": "nova",
            "nova_object.version": "1.1",
            "nova_object.data": {"instance_uuid": "u", "requests": [{
                "nova_object.name": "InstancePCIRequest", "nova_object.namespace": "nova",
                "nova_object.version": "1.4",
                "nova_object.data": {"count": 2, "spec": [{"vendor_id": "1af4", "product_id": "1044"}],
                    "alias_name": "rng", "is_new": false, "numa_policy": "legacy",
                    "request_id": "r1", "requester_id": null}}]}}))
        .unwrap();
        let mut reqs = PciRequest::from_requests_object(&obj).unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].count, 2);
        assert_eq!(reqs[0].alias_name.as_deref(), Some("rng"));
        let group = |id: &str, rp: &str| {
            NovaObject::from_primitive(&json!({
                "nova_object.name": "RequestGroup", "nova_object.namespace": "nova",
                "nova_object.version": "1.3",
                "nova_object.data": {"requester_id": id, "provider_uuids": [rp]}}))
            .unwrap()
        };
        apply_provider_mapping(
            &mut reqs,
            &[
                group("r1-0", "rpA"),
                group("r1-1", "rpB"),
                group("other", "rpC"),
            ],
        );
        assert_eq!(reqs[0].spec[0]["rp_uuids"], json!("rpA,rpB"));
        assert_eq!(reqs[0].rp_uuids(), vec!["rpA", "rpB"]);
    }
}
