//! Fuzz entry points: one function per target, each feeding raw bytes to the
//! library's real decoding and validation functions, the way the daemon, the
//! REST API and the CLI call them.
//!
//! The libFuzzer targets in `fuzz_targets/` are one line each around these
//! functions; `tests/fuzz_corpus.rs` in the main crate includes this file and
//! replays the committed seeds and crash inputs through the same functions
//! with plain `cargo test`, without libFuzzer or a nightly toolchain.
//!
//! A function returns normally for every input; a panic is a defect in the
//! library (the daemon must never panic on input). The few `assert!`s here
//! check properties the library promises (an unpack leaves nothing outside
//! its destination).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corral::api::types::{ExecPost, InstancesPost, NetworksPost, StatePut};
use corral::config::{Config, CpuSet, Ini, Overrides};
use corral::devices::pci::PciAddress;
use corral::devices::Allowlist;
use corral::driver::extra_specs::{self, Unknown};
use corral::driver::Limits;
use corral::image::unpack::{unpack as unpack_archive, UnpackOptions};
use corral::nova::object::{check_all_primitives, ObjectVersion};
use corral::nova::rpc_methods::ReplyResult;
use corral::nova::{ComputeCall, NovaObject};
use corral::placement::PlacementOptions;
use corral::rpc::envelope::{self, EnvelopeError, Failure, Request};
use corral::rpc::{RpcOptions, Transport, TransportUrl};
use serde_json::Value;

/// The decompressed size cap of the unpack target: small, so that one run
/// stays fast and a decompression bomb is cut short.
pub const UNPACK_MAX_BYTES: u64 = 1 << 20;

/// oslo.messaging envelope and request decoding as the RPC server and client
/// run it on every AMQP delivery (`rpc::envelope`), then the compute
/// dispatcher's typed decoding of the arguments (`nova::ComputeCall`).
pub fn rpc_envelope(data: &[u8]) {
    let msg = match envelope::deserialize_msg(data) {
        Ok(m) => m,
        Err(EnvelopeError::UnsupportedEnvelopeVersion(version)) => {
            // The server still looks for a reply queue to tell the caller.
            let _ = Failure::unsupported_envelope_version(&version).to_json_string();
            if let Ok(Value::Object(outer)) = serde_json::from_slice::<Value>(data) {
                if let Ok(inner) = envelope::inner_message(&outer) {
                    let _ = Request::from_message(inner, "compute").reply_q;
                }
            }
            return;
        }
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // The client's reply path.
    let (_, part) = envelope::parse_reply(msg.clone());
    if let envelope::ReplyPart::Payload { result: Err(f), .. } = part {
        let text = f.to_json_string();
        let _ = Failure::from_json_str(&text);
    }
    // The server's request path.
    let request = Request::from_message(msg, "compute");
    let _ = request.namespace_str();
    let _ = request.is_call();
    let _ = request.request_id();
    let _ = request.instance_uuid();
    let _ = request.heartbeat_interval();
    if let Some(version) = request.version_str() {
        for implemented in ["6.5", "3.0", "1.1"] {
            if let Err(e) = envelope::version_is_compatible(implemented, &version) {
                let _ = e.to_failure().to_json_string();
            }
        }
    }
    let method = request.method.clone().unwrap_or_default();
    let args = request.args_map();
    if let Some(Err(e)) = ComputeCall::decode(&method, &args) {
        let _ = Failure::new("builtins", "TypeError", &e.to_string()).to_json_string();
    }
}

/// A whole AMQP body through `nova::decode` (envelope, typed call or reply),
/// re-encoded; and the same text as a capture file, as `corral nova decode`
/// reads it.
pub fn nova_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match corral::nova::decode_message(text) {
        Ok(m) => {
            let _ = m.method();
            let _ = m.reencode();
            let _ = m.reencode_typed();
            let _ = m.to_json(true);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match corral::nova::capture::decode_capture(text, true) {
        Ok(values) => {
            let _ = serde_json::to_string(&values);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A JSON value as a Nova versioned-object primitive, and as the result of a
/// conductor reply (`nova::object`, `ReplyResult::decode`).
pub fn nova_object(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = check_all_primitives(&value);
    if let Value::String(s) = &value {
        let _ = ObjectVersion::from_str(s);
    }
    if let Ok(obj) = NovaObject::from_primitive(&value) {
        let _ = obj.check_supported();
        let _ = obj.to_primitive();
        let _ = obj.what_changed();
        let _ = obj.only_changes(&["uuid", "id"]);
        let _ = obj.list_objects();
        for field in obj.data.keys() {
            let _ = obj.child(field);
        }
        let _ = NovaObject::from_primitive_checked(&value);
    }
    for method in [None, Some("object_action"), Some("select_destinations")] {
        if let Ok(r) = ReplyResult::decode(method, &value) {
            let _ = r.to_value();
        }
    }
}

static UNPACK_RUN: AtomicU64 = AtomicU64::new(0);

/// A tarball (plain, gzip or xz) through the safe unpacker into a scratch
/// directory, with a 1 MiB cap and an id shift, as an unprivileged instance's
/// image is unpacked. Everything is removed again before returning.
pub fn unpack(data: &[u8]) {
    let scratch = std::env::temp_dir().join(format!(
        "corral-fuzz-unpack-{}-{}",
        std::process::id(),
        UNPACK_RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    if std::fs::create_dir(&scratch).is_err() {
        return;
    }
    let archive = scratch.join("archive");
    let dest = scratch.join("root");
    if std::fs::write(&archive, data).is_ok() {
        let opts = UnpackOptions {
            uid_shift: Some(1_000_000),
            shift_range: 65536,
            max_bytes: UNPACK_MAX_BYTES,
            max_entries: 4096,
        };
        let result = unpack_archive(&archive, &dest, &opts);
        if let Err(e) = &result {
            let _ = e.to_string();
        }
        // Nothing but the archive and, on success, the destination may be left
        // next to it: no temp dir, no entry that escaped.
        let mut left: Vec<String> = std::fs::read_dir(&scratch)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        left.sort();
        let expected: &[&str] = if result.is_ok() {
            &["archive", "root"]
        } else {
            &["archive"]
        };
        let cleaned = remove_tree(&scratch);
        assert_eq!(
            left, expected,
            "unpack left entries outside its destination"
        );
        assert!(
            cleaned,
            "cannot remove the scratch dir {}",
            scratch.display()
        );
    } else {
        remove_tree(&scratch);
    }
}

/// Removes `dir`, first making every directory in it writable and searchable
/// again (an archive may list directories with mode 000).
fn remove_tree(dir: &PathBuf) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::remove_dir_all(dir).is_ok() {
        return true;
    }
    fn open_up(dir: &std::path::Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(dir);
    std::fs::remove_dir_all(dir).is_ok()
}

/// INI text through the nova.conf parser, then the full typed configuration
/// with its validation (`config::Ini`, `Config::from_ini`), as the daemon
/// reads its config files at start-up.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut ini = Ini::default();
    if let Err(e) = ini.merge_str(text, "fuzz.conf") {
        let _ = e.to_string();
        return;
    }
    let _ = ini.get("DEFAULT", "transport_url");
    let _ = ini.get_all("pci", "device_spec");
    let _ = ini.section("corral");
    match Config::from_ini(&ini, &Overrides::default()) {
        Ok(c) => {
            let _ = c.store_path();
            let _ = c.images_dir();
            let _ = c.instances_dir();
            if let Some(nova) = &c.nova {
                nova_options(nova);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// What the compute service builds from the Nova side of the configuration
/// at start-up (`ComputeService::start`, `ResourceTracker::new`), short of
/// connecting anywhere.
fn nova_options(nova: &corral::config::NovaConfig) {
    match RpcOptions::from_sections(&nova.default_section, &nova.rabbit_section) {
        Ok(options) => {
            let _ = options.default.response_timeout();
            let _ = options.rabbit.reconnect_delay();
            let _ = options.rabbit.durable();
            let _: Vec<Duration> = options.rabbit.retry_intervals().take(4).collect();
            if let Err(e) = Transport::from_url(&nova.transport_url, options) {
                let _ = e.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Err(e) = PlacementOptions::from_pairs(&nova.placement_section) {
        let _ = e.to_string();
    }
}

/// A `transport_url` through the oslo.messaging URL parser (`rpc::url`).
pub fn transport_url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match TransportUrl::parse(text) {
        Ok(url) => {
            let _ = url.to_string();
            let _ = url.vhost();
            for b in url.brokers() {
                let _ = format!("{b:?}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Flavor extra specs, one `KEY=VALUE` per line, mapped as for a Nova server
/// and for the standalone API (`driver::extra_specs`), then the resulting
/// limits checked as the driver checks them.
pub fn extra_specs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: Vec<String> = text.lines().map(str::to_string).collect();
    let specs = match corral::strutil::parse_pairs(&pairs) {
        Ok(s) => s,
        Err(_) => {
            // Duplicate or malformed lines: map what splits anyway.
            pairs
                .iter()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        }
    };
    let base = Limits {
        cpus: Some(2.0),
        memory_bytes: Some(512 << 20),
        ..Limits::default()
    };
    for unknown in [Unknown::IgnoreForeign, Unknown::Refuse] {
        match extra_specs::apply(&specs, base.clone(), unknown) {
            Ok(m) => {
                let _ = m.limits.validate();
                let _ = m.limits.cfs();
                for d in m.devices.values() {
                    let _ = d.describe();
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// Device strings (`devices::parse`: first line the device name, the rest
/// `TYPE,KEY=VALUE,...`), the device allowlist (one pattern per line) and the
/// CPU set and PCI address syntaxes used with them.
pub fn devices(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, spec) = text.split_once('\n').unwrap_or(("dev0", text));
    match corral::devices::parse(name, spec) {
        Ok(d) => {
            let _ = d.kind();
            let _ = d.host_path();
            let _ = d.describe();
            let _ = serde_json::to_string(&d);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = corral::devices::validate_name(name);
    let patterns: Vec<String> = text.lines().map(str::to_string).collect();
    if let Ok(allow) = Allowlist::parse(&patterns) {
        for kind in ["unix-char", "unix-block", "disk", "usb", "gpu", "nic"] {
            let _ = allow.allows_str(kind, spec);
            let _ = allow.allows(kind, std::path::Path::new(name));
            let _ = allow.has_kind(kind);
        }
        let _ = allow.allows_usb_vendor(name);
    }
    if let Ok(set) = CpuSet::parse(spec) {
        let _ = set.to_string();
    }
    if let Some(a) = PciAddress::parse(name) {
        let _ = a.to_string();
    }
}

/// REST request bodies (`POST /1.0/instances`, `PUT .../state`,
/// `POST .../exec`) through their serde types and the checks the handlers run
/// before they ask the driver for anything.
pub fn api_bodies(data: &[u8]) {
    if let Ok(body) = serde_json::from_slice::<InstancesPost>(data) {
        instances_post(body);
    }
    if let Ok(body) = serde_json::from_slice::<StatePut>(data) {
        let _ = match body.timeout {
            None => Duration::from_secs(60),
            Some(t) if t < 0 => Duration::from_secs(60),
            Some(t) => Duration::from_secs(t as u64),
        };
        let _ = serde_json::to_string(&body);
    }
    if let Ok(body) = serde_json::from_slice::<ExecPost>(data) {
        let _: Vec<String> = body
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = Duration::from_secs(body.timeout.unwrap_or(300));
        let _ = serde_json::to_string(&body);
    }
    if let Ok(body) = serde_json::from_slice::<NetworksPost>(data) {
        let _ = serde_json::to_string(&body);
        if corral::network::validate_name(&body.name).is_ok() {
            if let Some(Ok(c)) = body
                .subnet
                .as_deref()
                .map(str::parse::<corral::network::Ipv4Cidr>)
            {
                if c.usable().is_ok() {
                    let (start, end) = c.dhcp_range();
                    assert!(c.contains(c.gateway()) && c.contains(start) && c.contains(end));
                    assert!(start <= end);
                    let _ = c.to_string().parse::<corral::network::Ipv4Cidr>();
                }
            }
        }
    }
}

fn instances_post(body: InstancesPost) {
    let _ = serde_json::to_string(&body);
    if body.source.kind != "image" {
        return;
    }
    if body
        .source
        .alias
        .clone()
        .or(body.source.fingerprint.clone())
        .is_none()
    {
        return;
    }
    if corral::driver::container::validate_name(&body.name).is_err() {
        return;
    }
    let Ok(mapped) = extra_specs::apply(&body.extra_specs, body.limits, Unknown::Refuse) else {
        return;
    };
    let mut devices = mapped.devices;
    for (name, text) in &body.devices {
        let Ok(dev) = corral::devices::parse(name, text) else {
            return;
        };
        if devices.insert(name.clone(), dev).is_some() {
            return;
        }
    }
    if mapped.limits.validate().is_ok() {
        let _ = mapped.limits.cfs();
    }
}
