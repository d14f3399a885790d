//! What instances ask for and what they get: `InstancePCIRequest`s (with
//! their provider mapping from Placement), and claiming devices from the
//! pools for an instance and freeing them again.

use super::*;

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
    pub(super) fn rp_uuids(&self) -> Vec<String> {
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

    pub(super) fn requests_type(&self, dev_type: &str) -> bool {
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

pub(super) trait ListField {
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

impl State {
    /// `_handle_device_dependents`: a claimed PF takes its VFs out of the
    /// pools, a claimed VF its PF.
    pub(super) fn take_dependents(&mut self, env: &Env<'_>, i: usize) {
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
    pub(super) fn consume(
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
    pub(super) fn claim_and_allocate(&mut self, i: usize, uuid: &str, rid: Option<String>) {
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

    pub(super) fn claim(
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
    pub(super) fn free_device(&mut self, env: &Env<'_>, i: usize) {
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
    pub(super) fn free_instance(&mut self, env: &Env<'_>, uuid: &str) -> bool {
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
    pub(super) fn clean_usage(
        &mut self,
        env: &Env<'_>,
        instances: &BTreeSet<String>,
        epoch: u64,
    ) -> bool {
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
}
