//! The PCI tracker's tests: discovery on a fake sysfs, records, pools,
//! claims and the Placement view.

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
            std::os::unix::fs::symlink(format!("../{vf}"), d.join(format!("virtfn{n}"))).unwrap();
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
    let cfg = pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\"}\n");
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
    let cfg = pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\"}\n");
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
    let cfg = pci_cfg("[pci]\ndevice_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\"}\n");
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

/// A device provider gets its traits before its inventory: a reader that sees the
/// inventory (the scheduler, or a test waiting for it) also sees the traits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_provider_has_its_traits_before_its_inventory() {
    use crate::placement::fake::Fake;
    use crate::placement::PlacementOptions;

    let sys = FakeSys::new();
    sys.dev("0000:00:05.0", "1af4", "1044", -1);
    let cfg = pci_cfg(
        "[pci]\nreport_in_placement = true\n\
         device_spec = {\"vendor_id\":\"1af4\",\"product_id\":\"1044\"}\n",
    );
    let transport = crate::rpc::Transport::from_url(
        "rabbit://guest:guest@127.0.0.1:1/",
        crate::rpc::RpcOptions::default(),
    )
    .unwrap();
    let conductor = Conductor::new(transport, std::time::Duration::from_secs(1));
    let tracker = PciTracker::new(
        cfg.clone(),
        sys.path().to_path_buf(),
        "cmp1".into(),
        conductor,
    );
    *tracker.state() = tracker_state(&sys, &cfg);

    let fake = Fake::start().await;
    let root = Uuid::new_v4();
    fake.add_provider(root, "cmp1");
    let pairs: BTreeMap<String, String> = [
        ("auth_type", "admin_token"),
        ("token", "admin"),
        ("endpoint", fake.url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let client = PlacementClient::new(PlacementOptions::from_pairs(&pairs).unwrap()).unwrap();
    tracker.sync_placement(&client, root, "cmp1").await.unwrap();

    let calls = fake.calls();
    let at = |suffix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with("PUT ") && c.ends_with(suffix))
            .unwrap_or_else(|| panic!("no PUT …{suffix} in {calls:?}"))
    };
    assert!(at("/traits") < at("/inventories"), "{calls:?}");
}
