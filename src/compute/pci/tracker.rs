//! The PCI tracker of a compute node: the state behind its lock, refreshed
//! from the host and the conductor, saved back as `PciDevice` changes, and
//! synchronised to Placement.

use super::*;

pub(super) struct Inner {
    pub(super) cfg: PciSection,
    pub(super) sysfs: PathBuf,
    pub(super) host: String,
    pub(super) conductor: Conductor,
    pub(super) state: Mutex<State>,
    pub(super) save_lock: tokio::sync::Mutex<()>,
    pub(super) placement: tokio::sync::Mutex<PlacementCache>,
}

/// What was last written to Placement, so an unchanged view costs one listing.
#[derive(Debug, Default)]
pub(super) struct PlacementCache {
    pub(super) checked_disabled: bool,
    pub(super) written: BTreeMap<String, (Uuid, PciProvider)>,
    /// Consumers whose PCI allocations were found or healed.
    pub(super) healed: BTreeSet<(String, Uuid)>,
}

/// The PCI tracker of this compute node (cheap to clone).
#[derive(Clone)]
pub struct PciTracker {
    pub(super) inner: Arc<Inner>,
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

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.inner.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(super) fn env(&self) -> Env<'_> {
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
                // traits before inventory: a provider never offers its devices
                // without the traits that describe them
                let have = p.get_traits(uuid).await?.traits;
                let remove: BTreeSet<String> = have.difference(&want.traits).cloned().collect();
                p.update_traits(uuid, &want.traits, &remove).await?;
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
