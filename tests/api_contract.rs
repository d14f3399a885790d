//! Every response checked against docs/openapi.yaml.

mod common;

use common::{Client, Daemon};
use serde_json::{json, Value};

struct Contract {
    doc: Value,
}

impl Contract {
    fn load() -> Contract {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        Contract { doc }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(|r| r.as_str()) {
            Some(r) => self.doc.pointer(r.trim_start_matches('#')).unwrap(),
            None => v,
        }
    }

    /// Checks one response; `template` is the path as written in the spec.
    fn check(&self, method: &str, template: &str, status: u16, body: &[u8]) {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(
            op.is_object(),
            "{method} {template} is not in the OpenAPI file"
        );
        let resp = op["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {template}: status {status} is not documented"));
        let resp = self.resolve(resp);
        let content = resp["content"].as_object().unwrap();
        if content.contains_key("text/plain") {
            assert!(std::str::from_utf8(body).is_ok());
            return;
        }
        let schema = &content["application/json"]["schema"];
        let full = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::validator_for(&full).unwrap();
        let instance: Value = serde_json::from_slice(body).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: {errors:?}\nbody: {instance}"
        );
    }
}

fn call(c: &Client, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
    common::raw_call(c, method, path, body)
}

fn wait_op(c: &Client, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap();
    let url = v["operation"].as_str().unwrap();
    let (st, b) = call(c, "GET", &format!("{url}/wait?timeout=30"), None);
    assert_eq!(st, 200);
    serde_json::from_slice::<Value>(&b).unwrap()["metadata"].clone()
}

#[test]
fn responses_match_the_openapi_file() {
    require_host!();
    let spec = Contract::load();
    let d = Daemon::start();
    let c = d.client();

    let (st, b) = call(&c, "GET", "/1.0", None);
    spec.check("GET", "/1.0", st, &b);

    // Image import, raw body.
    let tb = common::busybox_tarball();
    let mut f = std::fs::File::open(&tb).unwrap();
    let len = f.metadata().unwrap().len();
    let r = c
        .request(
            "POST",
            "/1.0/images",
            Some(("application/octet-stream", &mut f, len)),
            &[("X-Corral-Alias", "busybox")],
        )
        .unwrap();
    spec.check("POST", "/1.0/images", r.status, &r.body);
    let op = wait_op(&c, &r.body);
    assert_eq!(op["status"], "Success", "{op}");
    let (st, b) = call(&c, "GET", "/1.0/images", None);
    spec.check("GET", "/1.0/images", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/images?recursion=1", None);
    spec.check("GET", "/1.0/images", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/images/busybox", None);
    spec.check("GET", "/1.0/images/{key}", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/images/nope", None);
    assert_eq!(st, 404);
    spec.check("GET", "/1.0/images/{key}", st, &b);

    let create = json!({"name": "api1", "source": {"type": "image", "alias": "busybox"}, "limits": {"memory_bytes": 67108864, "cpus": 1}});
    let (st, b) = call(&c, "POST", "/1.0/instances", Some(create.clone()));
    assert_eq!(st, 202);
    spec.check("POST", "/1.0/instances", st, &b);
    let op = wait_op(&c, &b);
    assert_eq!(op["status"], "Success", "{op}");
    let id = op["id"].as_str().unwrap().to_string();
    let (st, b) = call(&c, "GET", "/1.0/resources", None);
    spec.check("GET", "/1.0/resources", st, &b);
    let (st, b) = call(&c, "GET", &format!("/1.0/operations/{id}"), None);
    spec.check("GET", "/1.0/operations/{id}", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/operations", None);
    spec.check("GET", "/1.0/operations", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/operations/nope", None);
    assert_eq!(st, 404);
    spec.check("GET", "/1.0/operations/{id}", st, &b);

    // Errors: duplicate, bad JSON, unknown field, unknown image.
    let (st, b) = call(&c, "POST", "/1.0/instances", Some(create));
    assert_eq!(st, 409);
    spec.check("POST", "/1.0/instances", st, &b);
    let r = {
        let raw = b"{not json";
        let mut cur = std::io::Cursor::new(&raw[..]);
        c.request(
            "POST",
            "/1.0/instances",
            Some(("application/json", &mut cur, raw.len() as u64)),
            &[],
        )
        .unwrap()
    };
    assert_eq!(r.status, 400);
    spec.check("POST", "/1.0/instances", r.status, &r.body);
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/instances",
        Some(json!({"name": "x", "source": {"alias": "busybox"}, "bogus": 1})),
    );
    assert_eq!(st, 400);
    spec.check("POST", "/1.0/instances", st, &b);
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/instances",
        Some(json!({"name": "x", "source": {"alias": "nope"}})),
    );
    assert_eq!(st, 404);
    spec.check("POST", "/1.0/instances", st, &b);

    for path in ["/1.0/instances", "/1.0/instances?recursion=1"] {
        let (st, b) = call(&c, "GET", path, None);
        spec.check("GET", "/1.0/instances", st, &b);
    }
    let (st, b) = call(&c, "GET", "/1.0/instances/api1", None);
    spec.check("GET", "/1.0/instances/{name}", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/instances/api1/state", None);
    spec.check("GET", "/1.0/instances/{name}/state", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/instances/api1/logs/console?lines=5", None);
    spec.check("GET", "/1.0/instances/{name}/logs/console", st, &b);
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/instances/api1/exec",
        Some(json!({"command": ["sh", "-c", "echo out; echo err >&2; exit 3"]})),
    );
    spec.check("POST", "/1.0/instances/{name}/exec", st, &b);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v["metadata"],
        json!({"exit_code": 3, "stdout": "out\n", "stderr": "err\n"})
    );
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/instances/api1/exec",
        Some(json!({"command": []})),
    );
    assert_eq!(st, 400);
    spec.check("POST", "/1.0/instances/{name}/exec", st, &b);

    let (st, b) = call(
        &c,
        "PUT",
        "/1.0/instances/api1/state",
        Some(json!({"action": "explode"})),
    );
    assert_eq!(st, 400);
    spec.check("PUT", "/1.0/instances/{name}/state", st, &b);
    let (st, b) = call(
        &c,
        "PUT",
        "/1.0/instances/api1/state",
        Some(json!({"action": "start"})),
    );
    assert_eq!(st, 409);
    spec.check("PUT", "/1.0/instances/{name}/state", st, &b);
    let (st, b) = call(&c, "DELETE", "/1.0/instances/api1", None);
    assert_eq!(st, 409);
    spec.check("DELETE", "/1.0/instances/{name}", st, &b);
    let (st, b) = call(
        &c,
        "PUT",
        "/1.0/instances/api1/state",
        Some(json!({"action": "stop", "timeout": 5})),
    );
    assert_eq!(st, 202);
    spec.check("PUT", "/1.0/instances/{name}/state", st, &b);
    assert_eq!(wait_op(&c, &b)["status"], "Success");
    let (st, b) = call(&c, "GET", "/1.0/instances/api1/state", None);
    spec.check("GET", "/1.0/instances/{name}/state", st, &b);
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/instances/api1/exec",
        Some(json!({"command": ["true"]})),
    );
    assert_eq!(st, 409);
    spec.check("POST", "/1.0/instances/{name}/exec", st, &b);
    let (st, b) = call(&c, "DELETE", "/1.0/instances/api1", None);
    assert_eq!(st, 202);
    spec.check("DELETE", "/1.0/instances/{name}", st, &b);
    assert_eq!(wait_op(&c, &b)["status"], "Success");
    let (st, b) = call(&c, "GET", "/1.0/instances/api1", None);
    assert_eq!(st, 404);
    spec.check("GET", "/1.0/instances/{name}", st, &b);
    let (st, b) = call(&c, "DELETE", "/1.0/images/busybox", None);
    assert_eq!(st, 200);
    spec.check("DELETE", "/1.0/images/{key}", st, &b);

    let (st, _) = call(&c, "GET", "/2.0/nothing", None);
    assert_eq!(st, 404);
}

#[test]
fn network_responses_match_the_openapi_file() {
    require_host!();
    for tool in ["ip", "nft", "dnsmasq"] {
        if !std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
        {
            eprintln!("SKIPPED: {tool} is not installed");
            return;
        }
    }
    let spec = Contract::load();
    let d = Daemon::start();
    let c = d.client();
    // A name and a 10.2xx.y.0/24 of this process only.
    let pid = std::process::id();
    let name = format!("tapi{}", pid % 100_000);
    let subnet = format!("10.{}.{}.0/24", 200 + pid % 50, 250 + pid % 5);
    /// Whatever of the network a failed test leaves, removed.
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let want = format!("--interface={}", self.0);
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                let is_dnsmasq = args
                    .first()
                    .is_some_and(|a| String::from_utf8_lossy(a).ends_with("dnsmasq"));
                if is_dnsmasq && args.contains(&want.as_bytes()) {
                    if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::SIGKILL,
                        );
                    }
                }
            }
            let table = format!("corral-{}", self.0);
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .output();
            if std::path::Path::new("/sys/class/net")
                .join(&self.0)
                .exists()
            {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", &self.0])
                    .output();
            }
        }
    }
    let _gone = Gone(name.clone());

    let (st, b) = call(
        &c,
        "POST",
        "/1.0/networks",
        Some(json!({"name": name, "subnet": subnet, "description": "contract"})),
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    spec.check("POST", "/1.0/networks", st, &b);
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/networks",
        Some(json!({"name": name, "subnet": subnet})),
    );
    assert_eq!(st, 409);
    spec.check("POST", "/1.0/networks", st, &b);
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/networks",
        Some(json!({"name": "x", "subnet": "10.0.0.1/8"})),
    );
    assert_eq!(st, 400);
    spec.check("POST", "/1.0/networks", st, &b);
    for path in ["/1.0/networks", "/1.0/networks?recursion=1"] {
        let (st, b) = call(&c, "GET", path, None);
        spec.check("GET", "/1.0/networks", st, &b);
    }
    let (st, b) = call(&c, "GET", &format!("/1.0/networks/{name}"), None);
    assert_eq!(st, 200);
    spec.check("GET", "/1.0/networks/{name}", st, &b);
    let (st, b) = call(&c, "GET", "/1.0/networks/nope", None);
    assert_eq!(st, 404);
    spec.check("GET", "/1.0/networks/{name}", st, &b);

    // An instance on it: its NICs as the file says; the network is in use.
    d.import_busybox();
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/instances",
        Some(
            json!({"name": "n1", "source": {"alias": "busybox"}, "networks": [name], "start": false}),
        ),
    );
    assert_eq!(st, 202);
    assert_eq!(wait_op(&c, &b)["status"], "Success");
    let (st, b) = call(&c, "GET", "/1.0/instances/n1", None);
    spec.check("GET", "/1.0/instances/{name}", st, &b);
    let (st, b) = call(&c, "DELETE", &format!("/1.0/networks/{name}"), None);
    assert_eq!(st, 409);
    spec.check("DELETE", "/1.0/networks/{name}", st, &b);
    let (st, b) = call(
        &c,
        "POST",
        "/1.0/instances",
        Some(json!({"name": "n2", "source": {"alias": "busybox"}, "networks": ["nope"]})),
    );
    assert_eq!(st, 404);
    spec.check("POST", "/1.0/instances", st, &b);
    let (st, b) = call(&c, "DELETE", "/1.0/instances/n1", None);
    assert_eq!(st, 202);
    assert_eq!(wait_op(&c, &b)["status"], "Success");
    let (st, b) = call(&c, "DELETE", &format!("/1.0/networks/{name}"), None);
    assert_eq!(st, 200);
    spec.check("DELETE", "/1.0/networks/{name}", st, &b);
    let (st, b) = call(&c, "DELETE", &format!("/1.0/networks/{name}"), None);
    assert_eq!(st, 404);
    spec.check("DELETE", "/1.0/networks/{name}", st, &b);
}

#[test]
fn snapshot_responses_match_the_openapi_file() {
    require_host!();
    let spec = Contract::load();
    let d = Daemon::start();
    d.import_busybox();
    d.ok(&["launch", "busybox", "snapi"]);
    let c = d.client();
    let base = "/1.0/instances/snapi/snapshots";
    let (st, b) = call(&c, "POST", base, Some(json!({"name": "s1"})));
    assert_eq!(st, 202);
    spec.check("POST", "/1.0/instances/{name}/snapshots", st, &b);
    let op = wait_op(&c, &b);
    assert_eq!(op["status"], "Success", "{op}");
    // The operation's metadata is a SnapshotTaken.
    let taken = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec.doc["components"],
        "$ref": "#/components/schemas/SnapshotTaken",
    });
    let v = jsonschema::validator_for(&taken).unwrap();
    assert!(v.is_valid(&op["metadata"]), "{}", op["metadata"]);
    assert!(op["metadata"]["pause_ms"].as_f64().is_some());
    for (body, status) in [
        (json!({"name": "s1"}), 409),
        (json!({"name": "../x"}), 400),
        (json!({"nom": "x"}), 400),
    ] {
        let (st, b) = call(&c, "POST", base, Some(body));
        assert_eq!(st, status);
        spec.check("POST", "/1.0/instances/{name}/snapshots", st, &b);
    }
    for path in [base.to_string(), format!("{base}?recursion=1")] {
        let (st, b) = call(&c, "GET", &path, None);
        spec.check("GET", "/1.0/instances/{name}/snapshots", st, &b);
    }
    let one = "/1.0/instances/{name}/snapshots/{snapshot}";
    let (st, b) = call(&c, "GET", &format!("{base}/s1"), None);
    assert_eq!(st, 200);
    spec.check("GET", one, st, &b);
    let (st, b) = call(&c, "GET", &format!("{base}/nope"), None);
    assert_eq!(st, 404);
    spec.check("GET", one, st, &b);
    // Restore: refused while running, accepted when stopped.
    let (st, b) = call(
        &c,
        "PUT",
        "/1.0/instances/snapi",
        Some(json!({"restore": "s1"})),
    );
    assert_eq!(st, 409);
    spec.check("PUT", "/1.0/instances/{name}", st, &b);
    d.ok(&["stop", "--force", "snapi"]);
    let (st, b) = call(
        &c,
        "PUT",
        "/1.0/instances/snapi",
        Some(json!({"restore": "s1"})),
    );
    assert_eq!(st, 202);
    spec.check("PUT", "/1.0/instances/{name}", st, &b);
    assert_eq!(wait_op(&c, &b)["status"], "Success");
    let (st, b) = call(&c, "DELETE", &format!("{base}/s1"), None);
    assert_eq!(st, 202);
    spec.check("DELETE", one, st, &b);
    assert_eq!(wait_op(&c, &b)["status"], "Success");
    let (st, b) = call(&c, "DELETE", &format!("{base}/s1"), None);
    assert_eq!(st, 404);
    spec.check("DELETE", one, st, &b);
}
