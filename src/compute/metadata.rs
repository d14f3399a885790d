//! A Nova instance's metadata as its config drive holds it, the way Nova's
//! `nova/api/metadata/base.py` (`InstanceMetadata.metadata_for_config_drive`)
//! and `nova/virt/netutils.py` write it for the OpenStack format:
//! `openstack/<version>/` for every metadata version and `latest`, with
//! `meta_data.json`, `user_data`, `vendor_data.json`, `network_data.json`
//! and `vendor_data2.json` by the version rules, and `openstack/content/`
//! for the network template and injected files. The EC2 tree is left out.
//!
//! JSON is written as Python's `json.dumps` writes it, keys in Nova's order.
//! Also the Debian `interfaces` file of `nova/virt/interfaces.template`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::driver::ConfigDrive;
use crate::nova::objects::instance::Instance;
use crate::nova::objects::network_model::{NetworkInfo, Subnet, Vif};
use crate::pyjson;

/// Nova's `OPENSTACK_VERSIONS`, oldest first.
pub const OPENSTACK_VERSIONS: [&str; 10] = [
    "2012-08-10", // FOLSOM
    "2013-04-04", // GRIZZLY
    "2013-10-17", // HAVANA
    "2015-10-15", // LIBERTY
    "2016-06-30", // NEWTON_ONE
    "2016-10-06", // NEWTON_TWO
    "2017-02-22", // OCATA
    "2018-08-27", // ROCKY
    "2020-10-14", // VICTORIA
    "2025-04-04", // EPOXY
];
const GRIZZLY: usize = 1;
const HAVANA: usize = 2;
const LIBERTY: usize = 3;
const NEWTON_ONE: usize = 4;
const NEWTON_TWO: usize = 5;
const VICTORIA: usize = 8;

/// Nova's API caps `user_data` at this many characters of base64.
pub const MAX_USER_DATA_B64: usize = 65535;

/// VIF types `network_data.json` names (`LEGACY_EXPOSED_VIF_TYPES`); others are `phy`.
const EXPOSED_VIF_TYPES: [&str; 8] = [
    "bridge",
    "dvs",
    "hw_veb",
    "hyperv",
    "ovs",
    "tap",
    "vhostuser",
    "vif",
];

/// Errors building the metadata.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetadataError {
    #[error("user data is {0} characters of base64, more than {MAX_USER_DATA_B64}")]
    UserDataTooLarge(usize),
    #[error("user data is not valid base64")]
    UserDataNotBase64,
    #[error("injected file {0} is not a [path, base64 contents] pair")]
    BadInjectedFile(usize),
    #[error("the instance has no uuid")]
    NoUuid,
}

/// What the drive is made of besides the instance object.
#[derive(Debug, Clone)]
pub struct DriveInputs<'a> {
    pub network_info: &'a NetworkInfo,
    /// The build's admin password (`extra_md['admin_pass']`).
    pub admin_pass: Option<&'a str>,
    /// The build's injected files (personality): path and decoded contents.
    pub injected_files: Vec<(String, Vec<u8>)>,
    /// `[api] dhcp_domain` (`novalocal`; empty: the bare hostname).
    pub dhcp_domain: &'a str,
}

/// Whether Nova would give the instance a config drive
/// (`nova.virt.configdrive.required_by`): asked for, forced for new builds
/// by `[DEFAULT] force_config_drive`, or mandatory for its image.
pub fn required(inst: &Instance, force: bool, image_props: Option<&Map<String, Value>>) -> bool {
    let asked = inst.config_drive.as_str().is_some_and(|v| !v.is_empty());
    let launched = inst.launched_at.get().is_some();
    let mandatory = image_props
        .and_then(|p| p.get("img_config_drive"))
        .and_then(Value::as_str)
        == Some("mandatory");
    asked || (force && !launched) || mandatory
}

/// The build's `injected_files` (`[[path, base64 contents], ...]`) decoded.
pub fn decode_injected_files(files: &[Value]) -> Result<Vec<(String, Vec<u8>)>, MetadataError> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let pair = f.as_array().filter(|a| a.len() == 2);
            let (Some(path), Some(data)) = (
                pair.and_then(|a| a[0].as_str()),
                pair.and_then(|a| a[1].as_str()),
            ) else {
                return Err(MetadataError::BadInjectedFile(i));
            };
            let data = decode_b64(data).map_err(|_| MetadataError::BadInjectedFile(i))?;
            Ok((path.to_string(), data))
        })
        .collect()
}

/// Python's `base64.b64decode`: characters outside the alphabet are dropped.
fn decode_b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        .collect();
    STANDARD.decode(clean.as_bytes())
}

/// The instance's user data, decoded; None when it has none.
pub fn user_data(inst: &Instance) -> Result<Option<Vec<u8>>, MetadataError> {
    let Some(b64) = inst.user_data.as_str() else {
        return Ok(None);
    };
    if b64.len() > MAX_USER_DATA_B64 {
        return Err(MetadataError::UserDataTooLarge(b64.len()));
    }
    decode_b64(b64)
        .map(Some)
        .map_err(|_| MetadataError::UserDataNotBase64)
}

/// `(name, type, public key)` of the instance's key pair: the first of
/// `keypairs`, else `key_name` and `key_data` (type `ssh`).
fn keypair(inst: &Instance) -> Option<(String, String, String)> {
    let name = inst.key_name.as_str().filter(|n| !n.is_empty())?;
    let listed = inst.keypairs.get().and_then(|l| {
        let first = l.get("objects")?.as_array()?.first()?;
        let data = first.get("nova_object.data")?;
        Some((
            data.get("name")?.as_str()?.to_string(),
            data.get("type")
                .and_then(Value::as_str)
                .unwrap_or("ssh")
                .to_string(),
            data.get("public_key")?.as_str()?.to_string(),
        ))
    });
    listed.or_else(|| {
        let key = inst.key_data.as_str()?;
        Some((name.to_string(), "ssh".to_string(), key.to_string()))
    })
}

/// The guest CPUs of the instance's dedicated cells (`numa_topology`'s
/// `pcpuset`s), sorted.
fn dedicated_cpus(inst: &Instance) -> Vec<i64> {
    let mut cpus: Vec<i64> = inst
        .numa_topology
        .get()
        .and_then(|t| t.get("cells"))
        .and_then(Value::as_array)
        .map(|cells| {
            cells
                .iter()
                .filter_map(|c| c.get("nova_object.data")?.get("pcpuset")?.as_array())
                .flatten()
                .filter_map(Value::as_i64)
                .collect()
        })
        .unwrap_or_default();
    cpus.sort_unstable();
    cpus
}

/// The whole drive: every `openstack/<version>/` file as Nova's config drive
/// has it, and `openstack/content/`.
pub fn config_drive(inst: &Instance, inputs: &DriveInputs) -> Result<ConfigDrive, MetadataError> {
    let uuid = inst.uuid().ok_or(MetadataError::NoUuid)?;
    let user_data = user_data(inst)?;
    // openstack/content: the network template first, then the files.
    let mut content: Vec<Vec<u8>> = Vec::new();
    let mut network_config = None;
    if let Some(cfg) = interfaces(inputs.network_info, false) {
        network_config = Some(json!({
            "name": "network_config",
            "content_path": format!("/content/{:04}", content.len()),
        }));
        content.push(cfg.into_bytes());
    }
    let mut files = Vec::new();
    for (path, data) in &inputs.injected_files {
        files.push(json!({
            "path": path,
            "content_path": format!("/content/{:04}", content.len()),
        }));
        content.push(data.clone());
    }
    let network = network_data(inputs.network_info);
    let mut out = BTreeMap::new();
    let versions = OPENSTACK_VERSIONS.iter().copied().chain(["latest"]);
    for (v, version) in versions.enumerate() {
        let at_least = |required: usize| v >= required;
        let dir = format!("openstack/{version}");
        let mut md = Map::new();
        md.insert("uuid".into(), json!(uuid));
        if let Some(meta) = inst.metadata.get().filter(|m| m.iter().next().is_some()) {
            let m: Map<String, Value> = meta
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            md.insert("meta".into(), Value::Object(m));
        }
        if !files.is_empty() {
            md.insert("files".into(), Value::Array(files.clone()));
        }
        if let Some(p) = inputs.admin_pass.filter(|p| !p.is_empty()) {
            md.insert("admin_pass".into(), json!(p));
        }
        if let Some(nc) = &network_config {
            md.insert("network_config".into(), nc.clone());
        }
        if let Some((name, kind, key)) = keypair(inst) {
            md.insert("public_keys".into(), json!({ name.clone(): key.clone() }));
            md.insert(
                "keys".into(),
                json!([{"name": name, "type": kind, "data": key}]),
            );
        }
        let hostname = inst.hostname.get().cloned();
        let hostname = match (hostname, inputs.dhcp_domain) {
            (Some(h), d) if !d.is_empty() => json!(format!("{h}.{d}")),
            (h, _) => json!(h),
        };
        md.insert("hostname".into(), hostname);
        md.insert("name".into(), json!(inst.display_name.get()));
        md.insert("launch_index".into(), json!(inst.launch_index.get()));
        md.insert(
            "availability_zone".into(),
            json!(inst.availability_zone.get()),
        );
        if at_least(GRIZZLY) {
            let seed: [u8; 512] = std::array::from_fn(|_| rand::random::<u8>());
            md.insert("random_seed".into(), json!(STANDARD.encode(seed)));
        }
        if at_least(LIBERTY) {
            md.insert("project_id".into(), json!(inst.project_id.get()));
        }
        if at_least(NEWTON_ONE) {
            // Tagged devices' metadata: containers have none.
            md.insert("devices".into(), json!([]));
        }
        if at_least(VICTORIA) {
            md.insert("dedicated_cpus".into(), json!(dedicated_cpus(inst)));
        }
        out.insert(
            format!("{dir}/meta_data.json"),
            pyjson::to_string(&Value::Object(md)).into_bytes(),
        );
        if let Some(ud) = &user_data {
            out.insert(format!("{dir}/user_data"), ud.clone());
        }
        if at_least(HAVANA) {
            // StaticJSON with no `[api] vendordata_jsonfile_path`.
            out.insert(format!("{dir}/vendor_data.json"), b"{}".to_vec());
        }
        if at_least(LIBERTY) {
            out.insert(
                format!("{dir}/network_data.json"),
                pyjson::to_string(&network).into_bytes(),
            );
        }
        if at_least(NEWTON_TWO) {
            // Nova's default providers: StaticJSON only, empty.
            out.insert(
                format!("{dir}/vendor_data2.json"),
                br#"{"static": {}}"#.to_vec(),
            );
        }
    }
    for (i, c) in content.into_iter().enumerate() {
        out.insert(format!("openstack/content/{i:04}"), c);
    }
    Ok(ConfigDrive { files: out })
}

// ---- addresses ------------------------------------------------------------------

/// An address and prefix length of a CIDR (`netaddr.IPNetwork`: no prefix is
/// a host route).
fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match cidr.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (cidr.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((addr, len))
}

fn v4_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

fn v6_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

/// `str(IPNetwork(cidr).netmask)`.
fn netmask(cidr: &str) -> Option<String> {
    Some(match parse_cidr(cidr)? {
        (IpAddr::V4(_), l) => Ipv4Addr::from(v4_mask(l)).to_string(),
        (IpAddr::V6(_), l) => Ipv6Addr::from(v6_mask(l)).to_string(),
    })
}

/// `str(IPNetwork(cidr).network)`.
fn network_address(cidr: &str) -> Option<String> {
    Some(match parse_cidr(cidr)? {
        (IpAddr::V4(a), l) => Ipv4Addr::from(u32::from(a) & v4_mask(l)).to_string(),
        (IpAddr::V6(a), l) => Ipv6Addr::from(u128::from(a) & v6_mask(l)).to_string(),
    })
}

/// `str(IPNetwork(cidr).broadcast)`: None for /31 and /32 (Python's `None`).
fn broadcast(cidr: &str) -> Option<String> {
    match parse_cidr(cidr)? {
        (IpAddr::V4(a), l) if l < 31 => {
            Some(Ipv4Addr::from(u32::from(a) | !v4_mask(l)).to_string())
        }
        _ => None,
    }
}

// ---- network_data.json ------------------------------------------------------------

fn subnet_version(s: &Subnet) -> Option<i64> {
    s.version
        .get()
        .copied()
        .or_else(|| parse_cidr(s.cidr.as_str()?).map(|(a, _)| if a.is_ipv4() { 4 } else { 6 }))
}

fn subnets(vif: &Vif) -> &[Subnet] {
    vif.network
        .get()
        .and_then(|n| n.subnets.get())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The first subnet of `version` (`_get_first_network`).
fn first_subnet(vif: &Vif, version: i64) -> Option<&Subnet> {
    subnets(vif)
        .iter()
        .find(|s| subnet_version(s) == Some(version))
}

fn meta<'a>(m: &'a crate::nova::fields::Field<Map<String, Value>>, key: &str) -> Option<&'a Value> {
    m.get()?.get(key).filter(|v| !v.is_null())
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn dns_services(s: &Subnet) -> Vec<Value> {
    s.dns
        .get()
        .map(|d| {
            d.iter()
                .map(|ip| json!({"type": "dns", "address": ip.address.get()}))
                .collect()
        })
        .unwrap_or_default()
}

fn ips(s: &Subnet) -> &[crate::nova::objects::network_model::FixedIp] {
    s.ips.get().map(Vec::as_slice).unwrap_or(&[])
}

fn network_id(vif: &Vif) -> Value {
    json!(vif.network.get().and_then(|n| n.id.get()))
}

fn net_entry(vif: &Vif, s: &Subnet, version: i64, num: usize, link: &Value) -> Value {
    let mut net_type = String::new();
    if let Some(mode) = meta(&s.meta, "ipv6_address_mode") {
        net_type = format!("_{}", mode.as_str().unwrap_or_default());
    } else if meta(&s.meta, "dhcp_server").is_some() || truthy(meta(&s.meta, "enable_dhcp")) {
        return json!({
            "id": format!("network{num}"),
            "type": format!("ipv{version}_dhcp"),
            "link": link,
            "network_id": network_id(vif),
        });
    }
    let cidr = s.cidr.as_str().unwrap_or_default();
    let ip = &ips(s)[0];
    let mut routes = Vec::new();
    if let Some(gw) = s.gateway.get().and_then(|g| g.address.get()) {
        let any = if version == 4 { "0.0.0.0" } else { "::" };
        routes.push(json!({"network": any, "netmask": any, "gateway": gw}));
    }
    for r in s.routes.get().map(Vec::as_slice).unwrap_or(&[]) {
        let rc = r.cidr.as_str().unwrap_or_default();
        routes.push(json!({
            "network": network_address(rc),
            "netmask": netmask(rc),
            "gateway": r.gateway.get().and_then(|g| g.address.get()),
        }));
    }
    json!({
        "id": format!("network{num}"),
        "type": format!("ipv{version}{net_type}"),
        "link": link,
        "ip_address": ip.address.get(),
        "netmask": netmask(cidr),
        "routes": routes,
        "network_id": network_id(vif),
        "services": dns_services(s),
    })
}

/// `network_data.json` (`netutils.get_network_metadata`): `{}` when the
/// instance has no network, else its `links`, `networks` and `services`.
pub fn network_data(ni: &NetworkInfo) -> Value {
    if ni.0.is_empty() {
        return json!({});
    }
    let mut links = Vec::new();
    let mut nets = Vec::new();
    let mut services: Vec<Value> = Vec::new();
    let mut ifc_num = 0usize;
    let mut net_num = 0usize;
    for vif in &ni.0 {
        if subnets(vif).is_empty() {
            continue;
        }
        let (v4, v6) = (first_subnet(vif, 4), first_subnet(vif, 6));
        let this = ifc_num;
        ifc_num += 1;
        if v4.is_none() && v6.is_none() {
            continue;
        }
        let link_id = match vif.devname.as_str().filter(|d| !d.is_empty()) {
            Some(d) => d.to_string(),
            None => format!("interface{this}"),
        };
        let vif_type = vif.vif_type.as_str().unwrap_or_default();
        let nic_type = if EXPOSED_VIF_TYPES.contains(&vif_type) {
            vif_type
        } else {
            "phy"
        };
        let dhcp = subnets(vif)
            .iter()
            .any(|s| truthy(s.meta.get().and_then(|m| m.get("dhcp_server"))));
        let mtu = if dhcp {
            Value::Null
        } else {
            vif.network
                .get()
                .and_then(|n| n.meta.get())
                .and_then(|m| m.get("mtu"))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let link = json!(link_id);
        links.push(json!({
            "id": link_id,
            "vif_id": vif.id.get(),
            "type": nic_type,
            "mtu": mtu,
            "ethernet_mac_address": vif.address.get(),
        }));
        for (s, version) in [(v4, 4), (v6, 6)] {
            let Some(s) = s.filter(|s| !ips(s).is_empty()) else {
                continue;
            };
            nets.push(net_entry(vif, s, version, net_num, &link));
            net_num += 1;
            for d in dns_services(s) {
                if !services.contains(&d) {
                    services.push(d);
                }
            }
        }
    }
    json!({"links": links, "networks": nets, "services": services})
}

// ---- interfaces -------------------------------------------------------------------

const INTERFACES_HEAD: &str = "# Injected by Nova on instance boot
#
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

# The loopback network interface
auto lo
iface lo inet loopback
";

fn py(v: Option<&str>) -> &str {
    v.unwrap_or("None")
}

/// The Debian `interfaces` file of `nova/virt/interfaces.template` as
/// `netutils.get_injected_network_template` renders it (for a non-LXC
/// guest), or None when no interface has a static address to write.
/// Nova writes only networks marked `injected` without a DHCP server;
/// `every_network` writes each interface's first addresses regardless
/// (`[corral] inject_network`: the operator asked for static addresses).
pub fn interfaces(ni: &NetworkInfo, every_network: bool) -> Option<String> {
    let mut out = String::new();
    let mut any = false;
    let mut use_ipv6 = false;
    struct Ifc {
        name: String,
        hw: Option<String>,
        address: Option<(String, String, Option<String>)>,
        gateway: String,
        dns: String,
        v6: Option<(String, u8)>,
        gateway_v6: String,
        dns_v6: String,
    }
    let mut ifcs = Vec::new();
    let mut ifc_num = 0usize;
    for vif in &ni.0 {
        if subnets(vif).is_empty() {
            continue;
        }
        let (v4, v6) = (first_subnet(vif, 4), first_subnet(vif, 6));
        let name = format!("eth{ifc_num}");
        ifc_num += 1;
        let net = vif.network.get();
        if !every_network && !truthy(net.and_then(|n| meta(&n.meta, "injected"))) {
            continue;
        }
        let dhcp = |s: Option<&Subnet>| s.is_some_and(|s| meta(&s.meta, "dhcp_server").is_some());
        if !every_network && (dhcp(v4) || dhcp(v6)) {
            continue;
        }
        let dns_of = |s: &Subnet| {
            s.dns
                .get()
                .map(|d| {
                    d.iter()
                        .map(|i| i.address.as_str().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        let gw_of = |s: &Subnet| {
            s.gateway
                .get()
                .and_then(|g| g.address.get())
                .cloned()
                .unwrap_or_default()
        };
        let mut ifc = Ifc {
            name,
            hw: vif.address.get().cloned(),
            address: None,
            gateway: String::new(),
            dns: String::new(),
            v6: None,
            gateway_v6: String::new(),
            dns_v6: String::new(),
        };
        if let Some(s) = v4 {
            if let Some(ip) = ips(s).first() {
                let cidr = s.cidr.as_str().unwrap_or_default();
                ifc.address = Some((
                    py(ip.address.as_str()).to_string(),
                    py(netmask(cidr).as_deref()).to_string(),
                    broadcast(cidr),
                ));
                ifc.gateway = gw_of(s);
                ifc.dns = dns_of(s);
            }
        }
        if let Some(s) = v6 {
            if let Some(ip) = ips(s).first() {
                use_ipv6 = true;
                let len = parse_cidr(s.cidr.as_str().unwrap_or_default()).map_or(128, |c| c.1);
                ifc.v6 = Some((py(ip.address.as_str()).to_string(), len));
                ifc.gateway_v6 = gw_of(s);
                ifc.dns_v6 = dns_of(s);
            }
        }
        ifcs.push(ifc);
        any = true;
    }
    if !any {
        return None;
    }
    out.push_str(INTERFACES_HEAD);
    // Nova writes Python's `None` for a missing MAC or broadcast (a /31 or
    // /32); the file corral injects itself leaves those lines out.
    let line = |key: &str, v: Option<&str>| match (v, every_network) {
        (None, true) => String::new(),
        (v, _) => format!("    {key} {}\n", py(v)),
    };
    for i in &ifcs {
        let hw = line("hwaddress ether", i.hw.as_deref());
        out.push_str(&format!("\nauto {}\n", i.name));
        if let Some((addr, mask, bcast)) = &i.address {
            out.push_str(&format!(
                "iface {} inet static\n{hw}    address {addr}\n    netmask {mask}\n{}",
                i.name,
                line("broadcast", bcast.as_deref())
            ));
            if !i.gateway.is_empty() {
                out.push_str(&format!("    gateway {}\n", i.gateway));
            }
            if !i.dns.is_empty() {
                out.push_str(&format!("    dns-nameservers {}\n", i.dns));
            }
        }
        if let (true, Some((addr, len))) = (use_ipv6, &i.v6) {
            out.push_str(&format!(
                "iface {} inet6 static\n{hw}    address {addr}\n    netmask {len}\n",
                i.name
            ));
            if !i.gateway_v6.is_empty() {
                out.push_str(&format!("    gateway {}\n", i.gateway_v6));
            }
            if !i.dns_v6.is_empty() {
                out.push_str(&format!("    dns-nameservers {}\n", i.dns_v6));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixtures written by Nova 34's own `InstanceMetadata` and `netutils`
    /// (`tests/fixtures/configdrive/generate.py`).
    const NO_NETWORK: &str = include_str!("../../tests/fixtures/configdrive/no-network.json");
    const NETWORKS: &str = include_str!("../../tests/fixtures/configdrive/networks.json");

    struct Fixture {
        instance: Instance,
        network_info: NetworkInfo,
        admin_pass: Option<String>,
        injected: Vec<Value>,
        files: Map<String, Value>,
        interfaces: Option<String>,
    }

    fn fixture(text: &str) -> Fixture {
        let v: Value = serde_json::from_str(text).unwrap();
        Fixture {
            instance: serde_json::from_value(v["instance"].clone()).unwrap(),
            network_info: serde_json::from_value(v["network_info"].clone()).unwrap(),
            admin_pass: v["admin_pass"].as_str().map(str::to_string),
            injected: v["injected_files"].as_array().unwrap().clone(),
            files: v["files"].as_object().unwrap().clone(),
            interfaces: v["interfaces"].as_str().map(str::to_string),
        }
    }

    /// The JSON text with its random seed (checked: 512 bytes) taken out.
    fn without_seed(text: &str) -> String {
        let mut v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(pyjson::to_string(&v), text, "not Python's json.dumps form");
        if let Some(seed) = v.get_mut("random_seed") {
            let bytes = STANDARD.decode(seed.as_str().unwrap()).unwrap();
            assert_eq!(bytes.len(), 512);
            *seed = json!("-");
        }
        pyjson::to_string(&v)
    }

    fn matches_nova(f: &Fixture) {
        let inputs = DriveInputs {
            network_info: &f.network_info,
            admin_pass: f.admin_pass.as_deref(),
            injected_files: decode_injected_files(&f.injected).unwrap(),
            dhcp_domain: "novalocal",
        };
        let drive = config_drive(&f.instance, &inputs).unwrap();
        let ours: Vec<&String> = drive.files.keys().collect();
        let mut theirs: Vec<&String> = f.files.keys().collect();
        theirs.sort();
        assert_eq!(ours, theirs);
        for (path, nova) in &f.files {
            let nova = nova.as_str().unwrap();
            let mine = String::from_utf8(drive.files[path].clone()).unwrap();
            if path.ends_with(".json") {
                assert_eq!(without_seed(&mine), without_seed(nova), "{path}");
            } else {
                assert_eq!(mine, nova, "{path}");
            }
        }
        assert_eq!(interfaces(&f.network_info, false), f.interfaces);
        drive.validate().unwrap();
    }

    #[test]
    fn drive_without_networks_matches_nova() {
        let f = fixture(NO_NETWORK);
        matches_nova(&f);
        // Nova's `{}` for no network, and the user data decoded.
        let d = config_drive(
            &f.instance,
            &DriveInputs {
                network_info: &f.network_info,
                admin_pass: None,
                injected_files: vec![],
                dhcp_domain: "",
            },
        )
        .unwrap();
        assert_eq!(d.files["openstack/latest/network_data.json"], b"{}");
        assert!(d.files["openstack/latest/user_data"].starts_with(b"#!/bin/sh\n"));
        let md: Value =
            serde_json::from_slice(&d.files["openstack/latest/meta_data.json"]).unwrap();
        assert_eq!(md["hostname"], "web-1");
        assert_eq!(md["dedicated_cpus"], json!([0, 1]));
        assert!(md.get("admin_pass").is_none());
        assert!(!d.files.contains_key("openstack/content/0000"));
    }

    #[test]
    fn drive_with_networks_matches_nova() {
        matches_nova(&fixture(NETWORKS));
    }

    #[test]
    fn key_data_stands_in_for_a_missing_keypair_list() {
        let mut f = fixture(NO_NETWORK);
        f.instance.keypairs = crate::nova::fields::Field::Unset;
        let inputs = DriveInputs {
            network_info: &f.network_info,
            admin_pass: None,
            injected_files: vec![],
            dhcp_domain: "novalocal",
        };
        let d = config_drive(&f.instance, &inputs).unwrap();
        let md: Value =
            serde_json::from_slice(&d.files["openstack/latest/meta_data.json"]).unwrap();
        assert_eq!(md["keys"][0]["name"], "mykey");
        assert_eq!(md["keys"][0]["type"], "ssh");
        assert!(md["public_keys"]["mykey"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 "));
    }

    #[test]
    fn hostile_user_data_is_refused() {
        let mut f = fixture(NO_NETWORK);
        f.instance.user_data = crate::nova::fields::Field::Set("A".repeat(MAX_USER_DATA_B64 + 1));
        assert_eq!(
            user_data(&f.instance),
            Err(MetadataError::UserDataTooLarge(MAX_USER_DATA_B64 + 1))
        );
        f.instance.user_data = crate::nova::fields::Field::Set("!!!!x".into());
        assert_eq!(
            user_data(&f.instance),
            Err(MetadataError::UserDataNotBase64)
        );
        f.instance.user_data = crate::nova::fields::Field::Null;
        assert_eq!(user_data(&f.instance), Ok(None));
        assert!(matches!(
            decode_injected_files(&[json!(["/etc/x"])]),
            Err(MetadataError::BadInjectedFile(0))
        ));
    }

    #[test]
    fn every_network_injection_writes_dhcp_and_uninjected_networks() {
        let f = fixture(NETWORKS);
        let text = interfaces(&f.network_info, true).unwrap();
        assert!(text.contains(
            "\nauto eth0\niface eth0 inet static\n    hwaddress ether fa:16:3e:11:22:33\n    address 10.210.0.5\n    netmask 255.255.255.0\n    broadcast 10.210.0.255\n    gateway 10.210.0.1\n    dns-nameservers 10.210.0.2\niface eth0 inet6 static\n"
        ));
        // Nova's own rendering of the injected network (eth1) is kept as it is.
        let nova = f.interfaces.as_deref().unwrap();
        let eth1 = |t: &str| {
            let from = t.find("\nauto eth1\n").unwrap();
            let to = t.find("\nauto eth2\n").unwrap();
            t[from..to].to_string()
        };
        assert_eq!(eth1(&text), eth1(nova));
        assert_eq!(interfaces(&NetworkInfo::default(), true), None);
        // A /31 has no broadcast: Nova writes `broadcast None`, corral leaves it out.
        assert!(f
            .interfaces
            .as_deref()
            .unwrap()
            .contains("    broadcast None\n"));
        assert!(text.contains(
            "\nauto eth2\niface eth2 inet static\n    hwaddress ether fa:16:3e:aa:bb:cc\n    address 10.213.0.1\n    netmask 255.255.255.254\n"
        ));
        assert!(!text.contains("None"), "{text}");
    }

    #[test]
    fn config_drive_is_required_as_nova_decides() {
        let mut i = Instance::default();
        assert!(!required(&i, false, None));
        assert!(required(&i, true, None));
        i.config_drive = crate::nova::fields::Field::Set("True".into());
        assert!(required(&i, false, None));
        i.config_drive = crate::nova::fields::Field::Set(String::new());
        let props: Map<String, Value> =
            serde_json::from_value(json!({"img_config_drive": "mandatory"})).unwrap();
        assert!(required(&i, false, Some(&props)));
    }

    #[test]
    fn addresses_as_netaddr_writes_them() {
        assert_eq!(netmask("10.0.0.0/8").as_deref(), Some("255.0.0.0"));
        assert_eq!(netmask("10.0.0.1").as_deref(), Some("255.255.255.255"));
        assert_eq!(netmask("fd00::/48").as_deref(), Some("ffff:ffff:ffff::"));
        assert_eq!(network_address("10.1.2.3/16").as_deref(), Some("10.1.0.0"));
        assert_eq!(broadcast("10.1.2.3/16").as_deref(), Some("10.1.255.255"));
        assert_eq!(broadcast("10.1.2.3/32"), None);
        assert_eq!(netmask("bogus"), None);
    }
}
