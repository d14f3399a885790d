//! `corral nova decode` on every captured file: exit 0 and JSON out; bad input
//! exits non-zero with a clear error.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.file_name().and_then(|n| n.to_str()) != Some("README.md") {
            out.push(p);
        }
    }
}

#[test]
fn every_fixture_file_decodes() {
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nova-34"),
        &mut files,
    );
    assert!(files.len() >= 60, "{} files", files.len());
    let mut messages = 0;
    for f in &files {
        let out = Command::new(BIN)
            .args(["nova", "decode"])
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = v.as_array().unwrap();
        assert!(!list.is_empty(), "{}", f.display());
        messages += list.len();
        // Nothing secret leaks by default.
        assert!(!String::from_utf8_lossy(&out.stdout).contains("\"auth_token\": \"admin\""));
    }
    assert!(messages > 2000, "{messages} decoded");
}

#[test]
fn bad_input_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body, want) in [
        (
            "bad.json",
            "{\"oslo.version\": \"2.0\", \"oslo.message\": \"{bad\"}",
            "malformed JSON",
        ),
        (
            "ver.json",
            "{\"oslo.version\": \"3.0\", \"oslo.message\": \"{}\"}",
            "version",
        ),
        ("none.json", "{\"hello\": 1}", "no AMQP messages"),
        ("text.json", "not json at all", "malformed JSON"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let out = Command::new(BIN)
            .args(["nova", "decode"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} decoded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{name}: {err}");
    }
}
