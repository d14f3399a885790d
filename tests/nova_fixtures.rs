//! Walks every captured nova 34 fixture, decodes every message into typed structs,
//! re-encodes it and compares with the original body.
//!
//! Three levels are checked for each message:
//! * envelope level: re-encoding the decoded envelope is byte-identical to `body_raw`;
//! * typed level: re-encoding from the typed call / reply equals the original
//!   semantically (JSON values equal after decoding the JSON-in-JSON envelope, with
//!   JSON text inside strings such as `failure` and `network_info` compared decoded);
//! * object level: every versioned object with a typed struct round-trips through it.
//!
//! Set `NOVA_WIRE_DUMP_DIR` to also write every typed re-encoded body there (one file
//! per message) for `tests/roundtrip_check.py`, which decodes them with real oslo/nova.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral::nova::decode::{decode_file, DecodeError, DecodedMessage};
use corral::nova::object::walk_primitives;
use corral::nova::objects::{object_versions_arg, typed_round_trip};
use corral::nova::rpc_methods::{ConductorCall, RpcCall, RpcTarget};
use serde_json::Value;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nova-34")
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Files that hold no AMQP traffic (HTTP logs, step marks): they must decode to
/// `NoMessages`, not silently to nothing.
fn expect_no_messages(rel: &str) -> bool {
    rel.starts_with("placement/")
        || rel.ends_with("-requests.jsonl.gz")
        || rel == "raw/lifecycle-steps.json"
        || rel.starts_with("raw/rpcapi-direct-")
}

fn read_text(path: &Path) -> Option<String> {
    if path.extension().is_some_and(|e| e == "gz") {
        match Command::new("gzip").arg("-dc").arg(path).output() {
            Ok(out) if out.status.success() => Some(String::from_utf8(out.stdout).unwrap()),
            Ok(out) => panic!("gzip -dc {}: {}", path.display(), out.status),
            Err(e) => {
                eprintln!("skipping {}: gzip not available ({e})", path.display());
                None
            }
        }
    } else {
        Some(fs::read_to_string(path).unwrap())
    }
}

/// JSON equality where a string holding JSON text equals the value it encodes (nested
/// encodings: `failure`, `network_info`, `allocation_request`, `metrics`, ...).
fn semantic_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| semantic_eq(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| semantic_eq(v, w))
        }
        (Value::String(x), Value::String(y)) if x == y => true,
        (Value::String(x), other) | (other, Value::String(x)) => {
            match serde_json::from_str::<Value>(x) {
                Ok(parsed @ (Value::Object(_) | Value::Array(_))) => match other {
                    Value::String(y) => {
                        serde_json::from_str::<Value>(y).is_ok_and(|p| semantic_eq(&parsed, &p))
                    }
                    _ => semantic_eq(&parsed, other),
                },
                _ => false,
            }
        }
        _ => a == b,
    }
}

fn body_value(body: &str) -> Value {
    let mut outer: Value = serde_json::from_str(body).unwrap();
    if let Some(Value::String(inner)) = outer.get("oslo.message") {
        let inner: Value = serde_json::from_str(inner).unwrap();
        outer["oslo.message"] = inner;
    }
    outer
}

#[derive(Default)]
struct Stats {
    files: usize,
    messages: usize,
    byte_identical: usize,
    typed_byte_identical: usize,
    typed_calls: usize,
    generic_calls: BTreeMap<String, usize>,
    replies: usize,
    objects_round_tripped: BTreeMap<String, usize>,
    manifests_checked: usize,
}

fn check_message(rel: &str, m: &DecodedMessage, stats: &mut Stats, dump: Option<&Path>) {
    let what = format!("{rel} {} ({})", m.label, m.method().unwrap_or("?"));
    stats.messages += 1;

    // Envelope level: byte-identical.
    let generic = m.reencode().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(generic, m.raw_body, "{what}: envelope re-encoding differs");
    stats.byte_identical += 1;

    // Typed level: semantic equality.
    let typed = m
        .reencode_typed()
        .unwrap_or_else(|e| panic!("{what}: typed re-encoding failed: {e}"));
    if typed == m.raw_body {
        stats.typed_byte_identical += 1;
    }
    let (orig, back) = (body_value(&m.raw_body), body_value(&typed));
    assert!(
        semantic_eq(&orig, &back),
        "{what}: typed re-encoding differs\noriginal: {orig}\nre-encoded: {back}"
    );
    if let Some(dir) = dump {
        fs::write(dir.join(format!("{:05}.json", stats.messages)), &typed).unwrap();
        fs::write(dir.join(format!("{:05}.orig", stats.messages)), &m.raw_body).unwrap();
    }

    match &m.call {
        Some(call) if call.is_typed() => stats.typed_calls += 1,
        Some(call) => {
            *stats
                .generic_calls
                .entry(format!("{:?}:{}", call.target(), call.method()))
                .or_default() += 1
        }
        None => stats.replies += 1,
    }

    // The manifest sent with class actions is exactly what this crate computes.
    if let Some(RpcCall::Conductor(ConductorCall::ObjectClassActionVersions(c))) = &m.call {
        let ours = object_versions_arg(&c.objname).expect("known object");
        let theirs: Vec<(&String, &Value)> = c.object_versions.iter().collect();
        let ours: Vec<(&String, &Value)> = ours.iter().collect();
        assert_eq!(ours, theirs, "{what}: manifest for {}", c.objname);
        stats.manifests_checked += 1;
    }

    // Object level: every object with a typed struct round-trips through it.
    let inner = body_value(&m.raw_body)
        .get("oslo.message")
        .cloned()
        .unwrap_or_else(|| body_value(&m.raw_body));
    walk_primitives(&inner, &mut |p| {
        if let Some(result) = typed_round_trip(p) {
            let back = result.unwrap_or_else(|e| panic!("{what}: typed object: {e}"));
            assert!(
                semantic_eq(p, &back),
                "{what}: object round trip differs\noriginal: {p}\nre-encoded: {back}"
            );
            let name = p["nova_object.name"].as_str().unwrap_or("?").to_string();
            *stats.objects_round_tripped.entry(name).or_default() += 1;
        }
    });
}

/// The `oslo.message` the capture tools decoded for reading must match ours.
fn check_record_views(rel: &str, contents: &str, msgs: &[DecodedMessage]) {
    let Ok(file) = serde_json::from_str::<Value>(contents) else {
        return;
    };
    let mut records = Vec::new();
    if file.get("body_raw").is_some() {
        records.push(&file);
    }
    if let Some(obj) = file.as_object() {
        for v in obj.values() {
            if let Some(items) = v.as_array() {
                records.extend(items.iter().filter(|r| r.get("body_raw").is_some()));
            }
        }
    }
    for record in records {
        let Some(view) = record.get("oslo.message") else {
            continue;
        };
        let raw = record["body_raw"].as_str().unwrap();
        let m = msgs
            .iter()
            .find(|m| m.raw_body == raw)
            .unwrap_or_else(|| panic!("{rel}: record not decoded"));
        let ours = Value::Object(m.envelope.inner_map().unwrap());
        assert!(
            semantic_eq(&ours, view),
            "{rel} {}: differs from the record's view",
            m.label
        );
    }
}

#[test]
fn every_fixture_decodes_typed_and_round_trips() {
    let root = fixture_root();
    let mut files = Vec::new();
    all_files(&root, &mut files);
    assert!(
        files.len() >= 70,
        "fixtures missing under {}",
        root.display()
    );
    let dump = std::env::var_os("NOVA_WIRE_DUMP_DIR").map(PathBuf::from);
    if let Some(d) = &dump {
        fs::create_dir_all(d).unwrap();
    }
    let mut stats = Stats::default();
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.ends_with(".md") {
            continue;
        }
        let Some(contents) = read_text(path) else {
            continue;
        };
        stats.files += 1;
        let result = decode_file(&contents);
        if expect_no_messages(&rel) {
            assert!(
                matches!(result, Err(DecodeError::NoMessages)),
                "{rel}: expected no AMQP messages, got {:?}",
                result.map(|m| m.len())
            );
            continue;
        }
        let msgs = result.unwrap_or_else(|e| {
            let mut err: &dyn std::error::Error = &e;
            let mut chain = err.to_string();
            while let Some(src) = err.source() {
                chain.push_str(": ");
                chain.push_str(&src.to_string());
                err = src;
            }
            panic!("{rel}: {chain}")
        });
        assert!(!msgs.is_empty(), "{rel}: no messages");
        for m in &msgs {
            check_message(&rel, m, &mut stats, dump.as_deref());
        }
        check_record_views(&rel, &contents, &msgs);
    }
    eprintln!(
        "fixtures: {} files, {} messages ({} replies), {} byte-identical at envelope level, \
         {} byte-identical from typed structs, {} typed calls, {} manifests checked",
        stats.files,
        stats.messages,
        stats.replies,
        stats.byte_identical,
        stats.typed_byte_identical,
        stats.typed_calls,
        stats.manifests_checked
    );
    eprintln!("generic (untyped) calls: {:?}", stats.generic_calls);
    eprintln!(
        "typed objects round-tripped: {:?}",
        stats.objects_round_tripped
    );
    // 495 records in the per-file captures, 1482 firehose lines, 34 tap lines and the
    // 6 replies the tap log recorded.
    assert!(
        stats.messages >= 2017,
        "messages missing: {}",
        stats.messages
    );
    // Only the conductor's compute_task calls stay generic in these captures.
    for key in stats.generic_calls.keys() {
        assert!(
            key.starts_with(&format!("{:?}:", RpcTarget::ComputeTask)),
            "untyped call {key}"
        );
    }
    for name in [
        "Instance",
        "Flavor",
        "RequestSpec",
        "ImageMeta",
        "Service",
        "ComputeNode",
        "BlockDeviceMapping",
        "InstanceFault",
        "InstanceInfoCache",
        "Selection",
    ] {
        assert!(
            stats.objects_round_tripped.contains_key(name),
            "{name} never round-tripped"
        );
    }
}
