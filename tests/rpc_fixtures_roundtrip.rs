//! Captured nova traffic decodes, and re-encodes to the very same bytes.

use std::path::{Path, PathBuf};

use corral::rpc::envelope::{self, parse_reply, ReplyPart};
use serde_json::Value;

fn fixture_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            fixture_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn roundtrip_dir(dir: &Path) -> (usize, usize) {
    let mut files = Vec::new();
    fixture_files(dir, &mut files);
    let (mut n, mut failures) = (0, 0);
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(doc) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(messages) = doc.get("messages").and_then(Value::as_array) else {
            continue;
        };
        for m in messages {
            let Some(raw) = m.get("body_raw").and_then(Value::as_str) else {
                continue;
            };
            n += 1;
            let inner = envelope::deserialize_msg(raw.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let again = String::from_utf8(envelope::serialize_msg(&inner)).unwrap();
            assert_eq!(again, raw, "{} seq {:?}", f.display(), m.get("seq"));
            // replies parse into the shapes the client understands
            if inner.contains_key("ending") {
                let (msg_id, part) = parse_reply(inner.clone());
                assert!(msg_id.is_some());
                if let ReplyPart::Payload {
                    result: Err(fail), ..
                } = part
                {
                    assert!(!fail.class.is_empty());
                    assert_eq!(
                        corral::rpc::Failure::from_json_str(&fail.to_json_string()).unwrap(),
                        fail
                    );
                    // the failure string itself re-encodes byte for byte
                    let s = inner.get("failure").and_then(Value::as_str).unwrap();
                    let v: Value = serde_json::from_str(s).unwrap();
                    assert_eq!(corral::pyjson::to_string(&v), s);
                    failures += 1;
                }
            }
        }
    }
    (n, failures)
}

#[test]
fn crate_fixtures_roundtrip_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nova-34");
    let (n, failures) = roundtrip_dir(&dir);
    assert!(n > 30, "only {n} messages");
    assert!(
        failures >= 2,
        "expected the captured ComputeHostNotFound failures"
    );
}
