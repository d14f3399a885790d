//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) and every input a
//! fuzzing run ever crashed on (`tests/fixtures/fuzz/<target>/`) through the
//! fuzz targets' entry functions, without libFuzzer or a nightly toolchain, so
//! plain `cargo test` keeps them green. See docs/fuzzing.md.

#[path = "../fuzz/src/lib.rs"]
mod entries;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fixtures/fuzz").join(target),
    ] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            out.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds for fuzz target {target}");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        eprintln!("{target}: {}", file.display());
        run(&data);
    }
}

#[test]
fn rpc_envelope() {
    replay("rpc_envelope", entries::rpc_envelope);
}

#[test]
fn nova_message() {
    replay("nova_message", entries::nova_message);
}

#[test]
fn nova_object() {
    replay("nova_object", entries::nova_object);
}

#[test]
fn unpack() {
    replay("unpack", entries::unpack);
}

#[test]
fn config() {
    replay("config", entries::config);
}

#[test]
fn transport_url() {
    replay("transport_url", entries::transport_url);
}

#[test]
fn extra_specs() {
    replay("extra_specs", entries::extra_specs);
}

#[test]
fn devices() {
    replay("devices", entries::devices);
}

#[test]
fn api_bodies() {
    replay("api_bodies", entries::api_bodies);
}
