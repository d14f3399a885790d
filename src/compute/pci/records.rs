//! The tracked `PciDevice` records and the tracker's state that holds them:
//! loading them from the conductor, folding in what discovery found on the
//! host (new devices, changed ones, devices gone from the host or the
//! config), and which devices a `[pci] device_spec` makes assignable.

use super::*;

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

/// A tracked `PciDevice` record.
#[derive(Debug, Clone)]
pub(super) struct Dev {
    pub(super) obj: NovaObject,
    /// Bumped on every local change, so a save that raced one keeps it.
    pub(super) rev: u64,
    /// The claim epoch of its last claim (see [`State::epoch`]).
    pub(super) claimed_at: u64,
}

impl Dev {
    pub(super) fn s(&self, f: &str) -> Option<&str> {
        self.obj.get(f).and_then(Value::as_str)
    }
    pub(super) fn address(&self) -> &str {
        self.s("address").unwrap_or("")
    }
    pub(super) fn status(&self) -> &str {
        self.s("status").unwrap_or("")
    }
    pub(super) fn dev_type(&self) -> &str {
        self.s("dev_type").unwrap_or(TYPE_PCI)
    }
    pub(super) fn instance_uuid(&self) -> Option<&str> {
        self.s("instance_uuid")
    }
    pub(super) fn parent_addr(&self) -> Option<&str> {
        self.s("parent_addr")
    }
    pub(super) fn extra(&self, key: &str) -> Option<&str> {
        self.obj
            .get("extra_info")
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
    }
    pub(super) fn is_gone(&self) -> bool {
        matches!(self.status(), status::REMOVED | status::DELETED)
    }
    pub(super) fn set(&mut self, field: &str, v: Value) {
        self.obj.set(field, v);
        self.rev += 1;
    }
    pub(super) fn set_if_changed(&mut self, field: &str, v: Value) {
        if self.obj.get(field) != Some(&v) {
            self.set(field, v);
        }
    }
    pub(super) fn set_extra(&mut self, key: &str, v: Option<&str>) {
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
    pub(super) fn card_serial_number(&self) -> Option<String> {
        let caps: Value = serde_json::from_str(self.extra("capabilities")?).ok()?;
        caps.get("vpd")?
            .get("card_serial_number")?
            .as_str()
            .map(str::to_string)
    }
}

/// The tracker's state: devices and pools, changed only under its lock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) loaded: bool,
    pub(super) node_id: Option<i64>,
    pub(super) devs: Vec<Dev>,
    pub(super) pools: Vec<Pool>,
    /// New properties of claimed devices, applied when they are freed.
    pub(super) stale: BTreeMap<String, HostDevice>,
    /// Devices gone from the host or the config while in use.
    pub(super) remove_when_freed: BTreeSet<String>,
    /// Counts claims, so a usage clean-up never frees a claim younger than
    /// its instance listing.
    pub(super) epoch: u64,
}

/// Device spec and sysfs root, what matching needs.
pub(super) struct Env<'a> {
    pub(super) cfg: &'a PciSection,
    pub(super) sysfs: &'a Path,
}

impl Env<'_> {
    /// `Whitelist.get_devspec`: the spec a record matches.
    pub(super) fn spec(&self, d: &Dev) -> Option<&DeviceSpec> {
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
    pub(super) fn idx(&self, address: &str) -> Option<usize> {
        self.devs
            .iter()
            .position(|d| d.address() == address && !d.is_gone())
    }

    pub(super) fn children(&self, pf: &str) -> Vec<usize> {
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

    pub(super) fn parent(&self, i: usize) -> Option<usize> {
        let p = self.devs[i].parent_addr()?;
        self.devs
            .iter()
            .position(|d| !d.is_gone() && d.dev_type() == TYPE_PF && d.address() == p)
    }

    pub(super) fn free_addresses(&self) -> BTreeSet<String> {
        self.pools
            .iter()
            .flat_map(|p| p.devices.iter().cloned())
            .collect()
    }

    // -- pools (PciDeviceStats)

    /// `_initial_instance_usage`: the records of a previous run.
    pub(super) fn load(&mut self, env: &Env<'_>, records: Vec<NovaObject>) {
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
    pub(super) fn update_device(dev: &mut Dev, hv: &HostDevice, node_id: Option<i64>) {
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
    pub(super) fn new_device(hv: &HostDevice, node_id: Option<i64>) -> Result<Dev, ComputeError> {
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
    pub(super) fn remove_device(&mut self, i: usize) -> Result<(), String> {
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
    pub(super) fn set_hvdevs(
        &mut self,
        env: &Env<'_>,
        devices: &[HostDevice],
    ) -> Result<(), ComputeError> {
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

    pub(super) fn holds_any(&self) -> bool {
        self.devs
            .iter()
            .any(|d| matches!(d.status(), status::CLAIMED | status::ALLOCATED))
    }
}
