//! The free devices grouped as nova's `PciDeviceStats` groups them: the pools
//! set as `ComputeNode.pci_device_pools`, kept in step with every record
//! change, and the pools a request can be served from.

use super::*;

/// A group of equivalent free devices (`PciDeviceStats` pool).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pool {
    /// product_id, vendor_id, numa_node, dev_type, the spec's tags, address,
    /// parent_ifname, remote_managed: what makes two devices equivalent.
    pub(super) keys: Map<String, Value>,
    pub(super) count: u64,
    /// Addresses of the free devices in it.
    pub(super) devices: Vec<String>,
    /// The Placement provider of its devices (`report_in_placement`).
    pub(super) rp_uuid: Option<String>,
}

impl Pool {
    /// `len(pool)` of nova's pool dict (keys, count, devices, rp_uuid).
    pub(super) fn width(&self) -> usize {
        self.keys.len() + 2 + usize::from(self.rp_uuid.is_some())
    }

    pub(super) fn value(&self, key: &str) -> Option<Value> {
        match key {
            "count" => Some(json!(self.count)),
            "rp_uuid" => self.rp_uuid.as_ref().map(|u| json!(u)),
            k => self.keys.get(k).cloned(),
        }
    }

    /// `pci_device_prop_match`: any spec whose every key matches (strings
    /// compared case-insensitively, a list asks for all its members).
    pub(super) fn matches_any(&self, specs: &[Map<String, Value>]) -> bool {
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
    pub(super) fn to_primitive(&self) -> Value {
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
pub(super) fn tag_value(v: &Value) -> Value {
    match v {
        Value::Null | Value::String(_) => v.clone(),
        Value::Bool(true) => json!("True"),
        Value::Bool(false) => json!("False"),
        other => json!(other.to_string()),
    }
}

/// The data of each pool of a `PciDevicePoolList` primitive, for comparing.
pub(super) fn pool_datas(list: Option<&Value>) -> Option<Vec<Value>> {
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

impl State {
    /// `_create_pool_keys_from_dev`: `None` for a device no spec matches.
    pub(super) fn pool_keys(&self, env: &Env<'_>, i: usize) -> Option<Map<String, Value>> {
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

    pub(super) fn find_pool(&self, keys: &Map<String, Value>) -> Option<usize> {
        self.pools.iter().position(|p| &p.keys == keys)
    }

    pub(super) fn add_to_pools(&mut self, env: &Env<'_>, i: usize) {
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

    pub(super) fn decrease_pool(&mut self, p: usize) {
        if self.pools[p].count > 1 {
            self.pools[p].count -= 1;
        } else {
            self.pools.remove(p);
        }
    }

    pub(super) fn remove_from_pools(&mut self, env: &Env<'_>, i: usize) {
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
    pub(super) fn update_in_pools(&mut self, env: &Env<'_>, i: usize) {
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
    pub(super) fn pools_primitive(&self) -> Value {
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

    pub(super) fn remove_address_from_pools(&mut self, addr: &str) {
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
    pub(super) fn filter_pools(&self, req: &PciRequest, rp_uuids: &[String]) -> Option<Vec<usize>> {
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
}
