//! Capture files beyond AMQP bodies: the HTTP requests a compute (and the rest of
//! Nova) exchanges with Placement, Glance, Neutron and nova-api, and the timeline
//! notes a capture keeps beside them. `corral nova decode` prints these too, so an
//! operator reads a whole capture with one tool.

use serde_json::{json, Map, Value};

use super::decode::{decode_file, DecodeError};

/// Decodes any capture: AMQP messages first, then HTTP records, then timeline notes.
/// `redact` hides tokens and passwords.
pub fn decode_capture(contents: &str, redact: bool) -> Result<Vec<Value>, DecodeError> {
    match decode_file(contents) {
        Ok(msgs) => msgs
            .iter()
            .map(|m| m.to_json(redact).map_err(DecodeError::MalformedJson))
            .collect(),
        Err(DecodeError::NoMessages) => decode_other(contents, redact),
        Err(e) => Err(e),
    }
}

fn records(contents: &str) -> Result<Vec<Value>, DecodeError> {
    let trimmed = contents.trim();
    match serde_json::from_str::<Value>(trimmed) {
        Ok(v) => Ok(vec![v]),
        Err(e) => trimmed
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .map_err(|_| DecodeError::MalformedJson(e)),
    }
}

fn is_http(m: &Map<String, Value>) -> bool {
    m.get("method").is_some_and(Value::is_string)
        && m.get("path").is_some_and(Value::is_string)
        && m.contains_key("status")
}

fn body(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

fn http(index: usize, m: &Map<String, Value>, redact: bool) -> Value {
    let headers = m.get("req_headers").and_then(Value::as_object);
    let header = |name: &str| {
        headers
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string)
    };
    let mut request = body(m.get("req_body"));
    if redact {
        redact_secrets(&mut request);
    }
    json!({
        "index": index,
        "kind": "http",
        "method": m.get("method"),
        "path": m.get("path"),
        "query": m.get("query"),
        "status": m.get("status"),
        "client": header("User-Agent"),
        "microversion": header("OpenStack-API-Version").or_else(|| header("X-OpenStack-Nova-API-Version")),
        "request": request,
        "response": body(m.get("resp_body")),
        "duration_ms": m.get("duration_ms"),
    })
}

fn redact_secrets(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                let key = k.to_ascii_lowercase();
                if key.contains("password") || key.contains("token") || key.contains("secret") {
                    *val = Value::String("***".into());
                } else {
                    redact_secrets(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

fn decode_other(contents: &str, redact: bool) -> Result<Vec<Value>, DecodeError> {
    let mut out = Vec::new();
    for rec in records(contents)? {
        let Value::Object(map) = &rec else {
            return Err(DecodeError::NoMessages);
        };
        if is_http(map) {
            out.push(http(out.len(), map, redact));
            continue;
        }
        if let Some(reqs) = map.get("requests").and_then(Value::as_array) {
            for r in reqs {
                match r.as_object() {
                    Some(m) if is_http(m) => out.push(http(out.len(), m, redact)),
                    _ => return Err(DecodeError::NoMessages),
                }
            }
            continue;
        }
        // Timeline notes: when each step of a captured run happened.
        let notes = ["steps", "marks"]
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_array));
        if let Some(notes) = notes {
            for n in notes {
                out.push(json!({"index": out.len(), "kind": "annotation", "note": n}));
            }
            continue;
        }
        return Err(DecodeError::NoMessages);
    }
    if out.is_empty() {
        return Err(DecodeError::NoMessages);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_records_and_notes() {
        let rec = r#"{"requests": [{"method": "PUT", "path": "/resource_providers/x/inventories", "query": "", "status": "200 OK",
            "req_headers": {"User-Agent": "nova-compute", "OpenStack-API-Version": "placement 1.39", "X-Auth-Token": "t"},
            "req_body": "{\"inventories\": {\"VCPU\": {\"total\": 2}}, \"password\": \"p\"}", "resp_body": "{\"resource_provider_generation\": 2}"}]}"#;
        let v = decode_capture(rec, true).unwrap();
        assert_eq!(v[0]["kind"], "http");
        assert_eq!(v[0]["request"]["inventories"]["VCPU"]["total"], 2);
        assert_eq!(v[0]["request"]["password"], "***");
        assert_eq!(v[0]["response"]["resource_provider_generation"], 2);
        assert_eq!(v[0]["microversion"], "placement 1.39");
        let notes =
            decode_capture(r#"{"host": "h", "steps": [{"step": "create"}]}"#, true).unwrap();
        assert_eq!(notes[0]["kind"], "annotation");
        assert!(matches!(
            decode_capture(r#"{"what": 1}"#, true),
            Err(DecodeError::NoMessages)
        ));
        assert!(matches!(
            decode_capture("{oops", true),
            Err(DecodeError::MalformedJson(_))
        ));
    }
}
