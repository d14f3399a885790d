//! The resource tracker: this host's ComputeNode (through the conductor) and
//! its Placement resource provider, kept in step with the instances claimed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::conductor::Conductor;
use super::{ComputeError, SERVICE_VERSION};
use crate::config::{Config, NovaConfig};
use crate::driver::Driver;
use crate::nova::object::NovaObject;
use crate::placement::types::Inventory;
use crate::placement::{PlacementClient, PlacementOptions};
use crate::rpc::{Context, RpcError};

/// The image types corral boots (`disk_format` raw: raw disks, squashfs and
/// root tarballs; qcow2 through `qemu-img`): advertised so Nova's scheduler
/// sends only those here.
const IMAGE_TYPES_BOOTED: &[&str] = &["COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_IMAGE_TYPE_QCOW2"];
/// Image types corral refuses: removed if someone set them.
const IMAGE_TYPES_REFUSED: &[&str] = &[
    "COMPUTE_IMAGE_TYPE_AKI",
    "COMPUTE_IMAGE_TYPE_AMI",
    "COMPUTE_IMAGE_TYPE_ARI",
    "COMPUTE_IMAGE_TYPE_ISO",
    "COMPUTE_IMAGE_TYPE_PLOOP",
    "COMPUTE_IMAGE_TYPE_VDI",
    "COMPUTE_IMAGE_TYPE_VHD",
    "COMPUTE_IMAGE_TYPE_VHDX",
    "COMPUTE_IMAGE_TYPE_VMDK",
];

/// What one instance holds on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Claim {
    pub vcpus: u64,
    pub memory_mb: u64,
    pub disk_gb: u64,
}

/// The host's totals.
#[derive(Debug, Clone, Copy)]
pub struct HostResources {
    pub vcpus: u64,
    pub memory_mb: u64,
    pub local_gb: u64,
    /// Nova's `disk_available_least` (GiB): what the storage pool can still
    /// hold; [`ResourceTracker`] takes off what the instances' sparse disk
    /// files may still grow into, as libvirt reports it.
    pub disk_available_least: i64,
}

/// Reads the host: online CPUs, memory, and the storage pool (the
/// filesystem holding `state_path`).
pub fn host_resources(state_path: &std::path::Path) -> HostResources {
    let proc = std::path::Path::new(crate::host::PROC);
    let pool = crate::storage::pool_capacity(state_path);
    HostResources {
        vcpus: crate::host::online_cpu_count(),
        memory_mb: crate::host::mem_total_kib(proc).map_or(0, |kb| kb / 1024),
        local_gb: pool.map_or(0, |p| p.total_bytes >> 30),
        disk_available_least: pool.map_or(0, |p| (p.available_bytes >> 30) as i64),
    }
}

/// How the host's CPUs are offered to Placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInventory {
    /// Shared CPUs (`VCPU`).
    pub vcpu: u64,
    /// Dedicated CPUs (`PCPU`).
    pub pcpu: u64,
}

/// Like nova-compute: `[compute] cpu_shared_set` is the VCPU inventory and
/// `cpu_dedicated_set` the PCPU inventory; with only `cpu_dedicated_set`
/// the host offers no VCPU (Nova schedules only dedicated instances onto
/// it); with neither, every online CPU is a VCPU.
pub fn cpu_inventory(cfg: &Config, online: u64) -> CpuInventory {
    let c = &cfg.compute;
    let pcpu = c.cpu_dedicated_set.as_ref().map_or(0, |s| s.len() as u64);
    let vcpu = match (&c.cpu_shared_set, &c.cpu_dedicated_set) {
        (Some(shared), _) => shared.len() as u64,
        (None, Some(_)) => 0,
        (None, None) => online,
    };
    CpuInventory { vcpu, pcpu }
}

/// The node identity: `compute_id` under `state_path`, made on first start.
pub fn node_uuid(state_path: &std::path::Path) -> Result<Uuid, ComputeError> {
    let path = state_path.join("compute_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim())
            .map_err(|_| ComputeError::Invalid(format!("{} does not hold a uuid", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            std::fs::write(&path, format!("{id}\n")).map_err(|source| ComputeError::Io {
                path: path.clone(),
                source,
            })?;
            tracing::info!(%id, "generated this host's compute node uuid");
            Ok(id)
        }
        Err(source) => Err(ComputeError::Io { path, source }),
    }
}

/// A version string `1.1.5...` as nova's integer form (1001005).
pub fn version_int(version: &str) -> i64 {
    let nums: Vec<i64> = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    nums.iter().fold(0, |acc, n| acc * 1000 + n)
        * 1000i64.pow(3u32.saturating_sub(nums.len() as u32))
}

struct Inner {
    cfg: Arc<Config>,
    nova: NovaConfig,
    driver: Arc<dyn Driver>,
    conductor: Conductor,
    placement: PlacementClient,
    node_uuid: Uuid,
    node: tokio::sync::Mutex<Option<NovaObject>>,
    claims: Mutex<HashMap<String, Claim>>,
    pci: super::pci::PciTracker,
}

/// Whether `[neutron]` names an auth plugin (the manager then plugs ports).
fn neutron_configured(nova: &NovaConfig) -> bool {
    nova.neutron_section
        .get("auth_type")
        .or_else(|| nova.neutron_section.get("auth_plugin"))
        .is_some_and(|v| !v.trim().is_empty())
}

/// Shared handle of the tracker.
#[derive(Clone)]
pub struct ResourceTracker {
    inner: Arc<Inner>,
}

impl ResourceTracker {
    pub fn new(
        cfg: Arc<Config>,
        nova: NovaConfig,
        driver: Arc<dyn Driver>,
        conductor: Conductor,
    ) -> Result<ResourceTracker, ComputeError> {
        let opts = PlacementOptions::from_pairs(&nova.placement_section)?;
        let placement = PlacementClient::new(opts)?;
        let node_uuid = node_uuid(&cfg.state_path)?;
        let pci = super::pci::PciTracker::new(
            cfg.pci.clone(),
            "/sys".into(),
            cfg.host.clone(),
            conductor.clone(),
        );
        Ok(ResourceTracker {
            inner: Arc::new(Inner {
                cfg,
                nova,
                driver,
                conductor,
                placement,
                node_uuid,
                node: tokio::sync::Mutex::new(None),
                claims: Mutex::new(HashMap::new()),
                pci,
            }),
        })
    }

    /// The PCI device tracker (`[pci]`).
    pub fn pci(&self) -> &super::pci::PciTracker {
        &self.inner.pci
    }

    pub fn node_uuid(&self) -> Uuid {
        self.inner.node_uuid
    }

    /// The hypervisor hostname Nova schedules onto: this host's name.
    pub fn nodename(&self) -> &str {
        &self.inner.cfg.host
    }

    pub fn placement(&self) -> &PlacementClient {
        &self.inner.placement
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        match self.inner.claims.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The ComputeNode's id, once it exists.
    pub async fn compute_node_id(&self) -> Option<i64> {
        self.inner
            .node
            .lock()
            .await
            .as_ref()
            .and_then(|n| n.get("id"))
            .and_then(Value::as_i64)
    }

    /// Records an instance's use of this host and saves the node's usage.
    pub async fn instance_claim(
        &self,
        ctx: &Context,
        uuid: &str,
        claim: Claim,
    ) -> Result<(), ComputeError> {
        self.claims().insert(uuid.to_string(), claim);
        self.save_usage(ctx).await
    }

    /// Forgets an instance's use and saves the node's usage.
    pub async fn release(&self, ctx: &Context, uuid: &str) -> Result<(), ComputeError> {
        let had = self.claims().remove(uuid).is_some();
        let freed_pci = self.inner.pci.free_instance(uuid);
        if had || freed_pci {
            self.save_usage(ctx).await?;
        }
        Ok(())
    }

    /// The host, with what the instances' disks really take (from the
    /// driver; the free space alone when it cannot tell).
    async fn host(&self) -> HostResources {
        let mut host = host_resources(&self.inner.cfg.state_path);
        match self.inner.driver.disk_usage().await {
            Ok(d) => host.disk_available_least = d.available_least_gb(),
            Err(e) => tracing::warn!(error = %e, "disk usage unknown"),
        }
        host
    }

    fn usage(&self) -> (Claim, usize) {
        let claims = self.claims();
        let mut total = Claim::default();
        for c in claims.values() {
            total.vcpus += c.vcpus;
            total.memory_mb += c.memory_mb;
            total.disk_gb += c.disk_gb;
        }
        (total, claims.len())
    }

    fn ratios(&self) -> (f64, f64, f64) {
        let n = &self.inner.nova;
        (
            n.cpu_allocation_ratio
                .unwrap_or(n.initial_cpu_allocation_ratio),
            n.ram_allocation_ratio
                .unwrap_or(n.initial_ram_allocation_ratio),
            n.disk_allocation_ratio
                .unwrap_or(n.initial_disk_allocation_ratio),
        )
    }

    /// Sets the usage fields on the node object (marking only real changes).
    fn apply_usage(&self, node: &mut NovaObject, host: HostResources) {
        let n = &self.inner.nova;
        let (used, count) = self.usage();
        let reserved_disk_gb = n.reserved_host_disk_mb.div_ceil(1024);
        let memory_used = n.reserved_host_memory_mb + used.memory_mb;
        let disk_used = reserved_disk_gb + used.disk_gb;
        let vcpus_used = n.reserved_host_cpus + used.vcpus;
        self.inner.pci.apply_to_node(node);
        let mut set = |k: &str, v: Value| {
            if node.get(k) != Some(&v) {
                node.set(k, v);
            }
        };
        set("vcpus", json!(host.vcpus));
        set("memory_mb", json!(host.memory_mb));
        set("local_gb", json!(host.local_gb));
        set("vcpus_used", json!(vcpus_used));
        set("memory_mb_used", json!(memory_used));
        // As nova's resource tracker: the flavors' disks (what Placement
        // allocates); what they really take is in disk_available_least.
        set("local_gb_used", json!(disk_used));
        set("disk_available_least", json!(host.disk_available_least));
        set(
            "free_ram_mb",
            json!(host.memory_mb as i64 - memory_used as i64),
        );
        set(
            "free_disk_gb",
            json!(host.local_gb as i64 - disk_used as i64),
        );
        set("running_vms", json!(count));
        set("current_workload", json!(0));
        set("metrics", json!("[]"));
        let mut stats = Map::new();
        stats.insert("num_instances".into(), json!(count.to_string()));
        stats.insert("failed_builds".into(), json!("0"));
        set("stats", Value::Object(stats));
    }

    async fn save_usage(&self, ctx: &Context) -> Result<(), ComputeError> {
        let host = self.host().await;
        let mut guard = self.inner.node.lock().await;
        let Some(node) = guard.as_mut() else {
            return Ok(());
        };
        node.reset_changes();
        self.apply_usage(node, host);
        if !node.what_changed().is_empty() {
            self.inner
                .conductor
                .object_action(ctx, node, "save", vec![], Map::new())
                .await?;
            node.reset_changes();
        }
        self.inner.pci.save(ctx).await
    }

    fn new_node(
        &self,
        service: &NovaObject,
        host: HostResources,
    ) -> Result<NovaObject, ComputeError> {
        let runtime_version = self.inner.driver.backend_info().runtime_version;
        let (cpu_r, ram_r, disk_r) = self.ratios();
        let mut node = NovaObject::new_nova34("ComputeNode")?;
        let mut hv = NovaObject::new_nova34("HVSpec")?;
        hv.set("arch", json!(std::env::consts::ARCH));
        hv.set("hv_type", json!("lxc"));
        hv.set("vm_mode", json!("exe"));
        node.set("uuid", json!(self.inner.node_uuid.to_string()));
        node.set(
            "service_id",
            service.get("id").cloned().unwrap_or(Value::Null),
        );
        node.set("host", json!(self.inner.cfg.host));
        node.set("vcpus", json!(host.vcpus));
        node.set("memory_mb", json!(host.memory_mb));
        node.set("local_gb", json!(host.local_gb));
        node.set("vcpus_used", json!(0));
        node.set("memory_mb_used", json!(0));
        node.set("local_gb_used", json!(0));
        node.set("hypervisor_type", json!("lxc"));
        node.set("hypervisor_version", json!(version_int(&runtime_version)));
        node.set("hypervisor_hostname", json!(self.nodename()));
        node.set(
            "cpu_info",
            json!(json!({"arch": std::env::consts::ARCH, "topology": {"sockets": 1, "cores": host.vcpus, "threads": 1}, "features": []}).to_string()),
        );
        node.set("disk_available_least", json!(host.disk_available_least));
        node.set("stats", json!({"failed_builds": "0"}));
        node.set("host_ip", json!(self.inner.nova.my_ip));
        node.set("numa_topology", Value::Null);
        node.set("supported_hv_specs", json!([hv.to_primitive()]));
        node.set("cpu_allocation_ratio", json!(cpu_r));
        node.set("ram_allocation_ratio", json!(ram_r));
        node.set("disk_allocation_ratio", json!(disk_r));
        Ok(node)
    }

    /// `update_available_resource`: make sure the ComputeNode exists and carries
    /// the usage, then bring Placement in step.
    pub async fn update_available_resource(
        &self,
        ctx: &Context,
        service: &NovaObject,
        startup: bool,
    ) -> Result<(), ComputeError> {
        let host = self.host().await;
        let c = &self.inner.conductor;
        if startup {
            self.load_claims(ctx).await?;
        }
        {
            let mut guard = self.inner.node.lock().await;
            if guard.is_none() {
                let found = match c
                    .class_action(
                        ctx,
                        "ComputeNode",
                        "get_by_uuid",
                        vec![json!(self.inner.node_uuid.to_string())],
                        Map::new(),
                    )
                    .await
                {
                    Ok(v) if !v.is_null() => Some(NovaObject::from_primitive(&v)?),
                    Ok(_) => None,
                    Err(ComputeError::Rpc(RpcError::Remote(r)))
                        if r.exc_type == "ComputeHostNotFound" || r.exc_type == "NotFound" =>
                    {
                        None
                    }
                    Err(e) => return Err(e),
                };
                let node = match found {
                    Some(mut n) => {
                        n.reset_changes();
                        if n.get("host").and_then(Value::as_str)
                            != Some(self.inner.cfg.host.as_str())
                        {
                            n.set("host", json!(self.inner.cfg.host));
                        }
                        n
                    }
                    None => {
                        let mut n = self.new_node(service, host)?;
                        c.object_action(ctx, &mut n, "create", vec![], Map::new())
                            .await?;
                        tracing::info!(uuid = %self.inner.node_uuid, "created the compute node record");
                        n.reset_changes();
                        n
                    }
                };
                *guard = Some(node);
            }
            if let Some(node) = guard.as_mut() {
                self.inner.pci.refresh(ctx, node).await?;
                let (cpu_r, ram_r, disk_r) = self.ratios();
                let mut set = |k: &str, v: Value| {
                    if node.get(k) != Some(&v) {
                        node.set(k, v);
                    }
                };
                set("cpu_allocation_ratio", json!(cpu_r));
                set("ram_allocation_ratio", json!(ram_r));
                set("disk_allocation_ratio", json!(disk_r));
                self.apply_usage(node, host);
                if !node.what_changed().is_empty() {
                    c.object_action(ctx, node, "save", vec![], Map::new())
                        .await?;
                    node.reset_changes();
                }
            }
        }
        self.sync_placement(host, service).await?;
        self.inner.pci.save(ctx).await
    }

    /// Rebuilds the claims from Nova's list of this host's instances.
    async fn load_claims(&self, ctx: &Context) -> Result<(), ComputeError> {
        let mut kwargs = Map::new();
        kwargs.insert("expected_attrs".into(), json!(["flavor"]));
        let list = self
            .inner
            .conductor
            .class_action(
                ctx,
                "InstanceList",
                "get_by_host_and_node",
                vec![json!(self.inner.cfg.host), json!(self.nodename())],
                kwargs,
            )
            .await?;
        let list = NovaObject::from_primitive(&list)?;
        let known: BTreeSet<String> = self
            .inner
            .driver
            .list_instances()
            .await?
            .into_iter()
            .collect();
        let mut claims = HashMap::new();
        for inst in list.list_objects()? {
            let Some(uuid) = inst.get("uuid").and_then(Value::as_str) else {
                continue;
            };
            if !known.contains(uuid) {
                continue;
            }
            let flavor = inst
                .child("flavor")?
                .unwrap_or_else(|| NovaObject::new("Flavor", inst.version));
            let n = |k: &str| flavor.get(k).and_then(Value::as_u64).unwrap_or(0);
            claims.insert(
                uuid.to_string(),
                Claim {
                    vcpus: n("vcpus"),
                    memory_mb: n("memory_mb"),
                    disk_gb: n("root_gb") + n("ephemeral_gb"),
                },
            );
        }
        *self.claims() = claims;
        Ok(())
    }

    /// Inventory and traits of the provider (uuid = node uuid, name = nodename).
    async fn sync_placement(
        &self,
        host: HostResources,
        _service: &NovaObject,
    ) -> Result<(), ComputeError> {
        let p = &self.inner.placement;
        let n = &self.inner.nova;
        let rp = p
            .ensure_resource_provider(self.inner.node_uuid, self.nodename())
            .await?;
        let (cpu_r, ram_r, disk_r) = self.ratios();
        let mut inv = BTreeMap::new();
        let cpus = cpu_inventory(&self.inner.cfg, host.vcpus);
        if cpus.vcpu > 0 {
            inv.insert(
                "VCPU".to_string(),
                Inventory::simple(cpus.vcpu, n.reserved_host_cpus.min(cpus.vcpu), cpu_r),
            );
        }
        if cpus.pcpu > 0 {
            // Dedicated CPUs are never overcommitted.
            inv.insert("PCPU".to_string(), Inventory::simple(cpus.pcpu, 0, 1.0));
        }
        if host.memory_mb > 0 {
            inv.insert(
                "MEMORY_MB".to_string(),
                Inventory::simple(host.memory_mb, n.reserved_host_memory_mb, ram_r),
            );
        }
        if host.local_gb > 0 {
            inv.insert(
                "DISK_GB".to_string(),
                Inventory::simple(
                    host.local_gb,
                    n.reserved_host_disk_mb.div_ceil(1024),
                    disk_r,
                ),
            );
        }
        // Countable host devices (GPUs, USB ids, NICs) the allowlist gives
        // out: flavors ask for them with `resources:CUSTOM_CORRAL_...=N`.
        // (`set_inventories` creates the custom classes.)
        for (class, count) in self.inner.driver.device_inventory() {
            if count > 0 {
                inv.insert(class, Inventory::simple(count as u64, 0, 1.0));
            }
        }
        let current = p.get_inventories(self.inner.node_uuid).await?;
        if current.inventories != inv {
            match p
                .set_inventories(
                    self.inner.node_uuid,
                    current.resource_provider_generation.max(rp.generation),
                    &inv,
                )
                .await
            {
                Ok(_) => {}
                // A class still allocated to instances cannot shrink below
                // their use (a device gone while held): the rest of the pass
                // (traits, PCI records) still runs.
                Err(e @ crate::placement::PlacementError::InventoryInUse { .. }) => {
                    tracing::warn!(error = %e, "inventory not updated: in use by instances");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut add: BTreeSet<String> = ["COMPUTE_NODE", "OWNER_NOVA"]
            .iter()
            .chain(IMAGE_TYPES_BOOTED)
            .map(|s| s.to_string())
            .collect();
        // Capabilities corral does not have (yet): removed if someone set them.
        let mut remove: BTreeSet<String> = ["COMPUTE_VOLUME_EXTEND", "COMPUTE_VOLUME_MULTI_ATTACH"]
            .iter()
            .chain(IMAGE_TYPES_REFUSED)
            .map(|s| s.to_string())
            .collect();
        // Interfaces are attached through Neutron: only with a [neutron] section.
        let attach = "COMPUTE_NET_ATTACH_INTERFACE".to_string();
        if neutron_configured(&self.inner.nova) {
            add.insert(attach);
        } else {
            remove.insert(attach);
        }
        p.update_traits(self.inner.node_uuid, &add, &remove).await?;
        self.inner
            .pci
            .sync_placement(p, self.inner.node_uuid, self.nodename())
            .await?;
        let _ = SERVICE_VERSION;
        Ok(())
    }

    /// Removes an instance's allocations (failed build, delete).
    pub async fn delete_allocations(&self, uuid: &str) {
        let Ok(consumer) = Uuid::parse_str(uuid) else {
            return;
        };
        if let Err(e) = self.inner.placement.delete_allocations(consumer).await {
            tracing::warn!(uuid, error = %e, "cannot delete the instance's allocations");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_integers() {
        assert_eq!(version_int("runc version 1.1.5+ds1"), 1_001_005);
        assert_eq!(version_int("crun version 1.8.1"), 1_008_001);
        assert_eq!(version_int("2"), 2_000_000);
    }

    #[test]
    fn cpus_split_into_vcpu_and_pcpu() {
        use crate::config::{Ini, Overrides};
        let cfg = |text: &str| {
            let mut ini = Ini::default();
            ini.merge_str(text, "t").unwrap();
            Config::from_ini(&ini, &Overrides::default()).unwrap()
        };
        assert_eq!(
            cpu_inventory(&cfg(""), 8),
            CpuInventory { vcpu: 8, pcpu: 0 }
        );
        assert_eq!(
            cpu_inventory(
                &cfg("[compute]\ncpu_dedicated_set = 2-5\ncpu_shared_set = 0-1\n"),
                8
            ),
            CpuInventory { vcpu: 2, pcpu: 4 }
        );
        assert_eq!(
            cpu_inventory(&cfg("[compute]\ncpu_dedicated_set = 1\n"), 8),
            CpuInventory { vcpu: 0, pcpu: 1 }
        );
        assert_eq!(
            cpu_inventory(&cfg("[compute]\ncpu_shared_set = 0\n"), 8),
            CpuInventory { vcpu: 1, pcpu: 0 }
        );
    }

    #[test]
    fn node_identity_persists() {
        let d = tempfile::tempdir().unwrap();
        let a = node_uuid(d.path()).unwrap();
        assert_eq!(node_uuid(d.path()).unwrap(), a);
        std::fs::write(d.path().join("compute_id"), "garbage").unwrap();
        assert!(node_uuid(d.path()).is_err());
        let h = host_resources(d.path());
        assert!(h.vcpus >= 1 && h.memory_mb > 0);
    }
}
