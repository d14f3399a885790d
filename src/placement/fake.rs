//! In-process fake of placement 16.0.0 (and of Keystone's token API) for unit tests.
//!
//! It keeps real state (providers, generations, inventories, traits, allocations) so the
//! client's retry loops meet the same answers a real placement gives, and it has knobs
//! to inject the races and failures that a real one only shows under load.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use uuid::Uuid;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Rp {
    pub name: String,
    pub generation: u64,
    pub parent: Option<Uuid>,
    pub inventories: BTreeMap<String, Value>,
    pub traits: BTreeSet<String>,
    pub aggregates: BTreeSet<Uuid>,
}

#[derive(Debug, Clone)]
pub struct Consumer {
    pub generation: u64,
    pub project_id: String,
    pub user_id: String,
    pub allocations: BTreeMap<Uuid, BTreeMap<String, u64>>,
}

/// A canned answer for the next `count` requests matching method and path.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub body: Value,
    pub count: u32,
}

#[derive(Debug, Default)]
pub struct State {
    pub requests: Vec<Recorded>,
    pub providers: BTreeMap<Uuid, Rp>,
    pub known_traits: BTreeSet<String>,
    pub resource_classes: BTreeSet<String>,
    pub consumers: BTreeMap<Uuid, Consumer>,
    /// Before each of the next N provider writes, another writer bumps the generation
    /// (and adds `foreign_trait`, if set), so the client's write meets a 409.
    pub foreign_writes: u32,
    pub foreign_trait: Option<String>,
    /// Next N `PUT /allocations` meet a provider-side (not consumer) conflict.
    pub allocation_races: u32,
    pub faults: Vec<Fault>,
    /// When set, placement requests must carry this token (else 401).
    pub accepted_token: Option<String>,
    /// Keystone: issued tokens become the accepted token (false: issued tokens are bad).
    pub keystone_tokens_valid: bool,
    pub keystone_expires_at: String,
    pub tokens_issued: u32,
    /// Base URL the fake listens on, for the catalog.
    pub base_url: String,
}

pub type Shared = Arc<Mutex<State>>;

pub struct Fake {
    pub url: String,
    pub state: Shared,
    handle: actix_web::dev::ServerHandle,
}

impl Fake {
    pub async fn start() -> Fake {
        let state: Shared = Arc::new(Mutex::new(State {
            known_traits: [
                "COMPUTE_NODE",
                "OWNER_NOVA",
                "COMPUTE_IMAGE_TYPE_RAW",
                "COMPUTE_MANAGED_PCI_DEVICE",
                "COMPUTE_IMAGE_TYPE_QCOW2",
                "COMPUTE_NET_ATTACH_INTERFACE",
                "COMPUTE_STATUS_DISABLED",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            keystone_tokens_valid: true,
            keystone_expires_at: "2999-01-01T00:00:00.000000Z".to_owned(),
            ..State::default()
        }));
        let data = web::Data::new(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        let url = format!("http://{addr}");
        state.lock().unwrap().base_url = url.clone();
        Fake { url, state, handle }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests other than Keystone's, as `METHOD path`.
    pub fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| !r.path.starts_with("/v3/"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn add_provider(&self, uuid: Uuid, name: &str) {
        self.lock().providers.insert(
            uuid,
            Rp {
                name: name.to_owned(),
                ..Rp::default()
            },
        );
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn error(status: u16, detail: &str, code: Option<&str>) -> HttpResponse {
    let title = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut entry = json!({"status": status, "title": title,
        "detail": format!("There was an error.\n\n {detail}  "), "request_id": "req-fake"});
    if let Some(code) = code {
        entry["code"] = json!(code);
    }
    HttpResponse::build(StatusCode::from_u16(status).unwrap())
        .insert_header(("x-openstack-request-id", "req-fake"))
        .json(json!({ "errors": [entry] }))
}

fn ok(v: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("x-openstack-request-id", "req-fake"))
        .json(v)
}

/// Placement sends error codes from 1.23 on.
fn code_for(r: &Recorded, code: &'static str) -> Option<&'static str> {
    let v = r
        .header("openstack-api-version")?
        .strip_prefix("placement ")?;
    let (major, minor) = v.split_once('.')?;
    let at_least = (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?) >= (1, 23);
    at_least.then_some(code)
}

fn rp_json(uuid: &Uuid, rp: &Rp, providers: &BTreeMap<Uuid, Rp>) -> Value {
    let mut root = rp.parent.unwrap_or(*uuid);
    while let Some(p) = providers.get(&root).and_then(|r| r.parent) {
        root = p;
    }
    json!({"uuid": uuid, "name": rp.name, "generation": rp.generation,
           "parent_provider_uuid": rp.parent, "root_provider_uuid": root, "links": []})
}

async fn handle(req: HttpRequest, body: web::Bytes, data: web::Data<Shared>) -> HttpResponse {
    let rec = Recorded {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let mut st = data.lock().unwrap();
    st.requests.push(rec.clone());
    let path = rec
        .path
        .strip_prefix("/placement")
        .unwrap_or(&rec.path)
        .to_owned();

    if rec.method == "POST" && path == "/v3/auth/tokens" {
        return keystone(&mut st, &rec);
    }
    if path == "/" && rec.method == "GET" {
        return ok(json!({"versions": [{"id": "v1.0", "max_version": "1.39",
            "min_version": "1.0", "status": "CURRENT", "links": []}]}));
    }
    if let Some(accepted) = &st.accepted_token {
        if rec.header("x-auth-token") != Some(accepted.as_str()) {
            return error(
                401,
                "The request you have made requires authentication.",
                None,
            );
        }
    }
    if let Some(f) = st
        .faults
        .iter_mut()
        .find(|f| f.count > 0 && f.method == rec.method && f.path == path)
    {
        f.count -= 1;
        return HttpResponse::build(StatusCode::from_u16(f.status).unwrap()).json(f.body.clone());
    }
    placement(&mut st, &rec, &path)
}

fn keystone(st: &mut State, rec: &Recorded) -> HttpResponse {
    let body = rec.json();
    if body["auth"]["identity"]["methods"] != json!(["password"]) {
        return error(400, "bad auth body", None);
    }
    if body["auth"]["identity"]["password"]["user"]["password"] != json!("secret") {
        return error(
            401,
            "The request you have made requires authentication.",
            None,
        );
    }
    st.tokens_issued += 1;
    let token = format!("tok-{}", st.tokens_issued);
    if st.keystone_tokens_valid {
        st.accepted_token = Some(token.clone());
    }
    let base = st.base_url.clone();
    let catalog = json!([
        {"type": "identity", "name": "keystone", "endpoints": [
            {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": format!("{base}/v3")}]},
        {"type": "placement", "name": "placement", "endpoints": [
            {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://192.0.2.1:8778"},
            {"interface": "internal", "region_id": "RegionTwo", "region": "RegionTwo", "url": "http://192.0.2.2:8778"},
            {"interface": "internal", "region_id": "RegionOne", "region": "RegionOne", "url": format!("{base}/placement/")}]}
    ]);
    HttpResponse::Created()
        .insert_header(("X-Subject-Token", token))
        .json(
            json!({"token": {"methods": ["password"], "expires_at": st.keystone_expires_at,
            "catalog": catalog, "project": {"id": "p1", "name": "service"}}}),
        )
}

/// Simulate another writer if one is scheduled.
fn race(st: &mut State, uuid: &Uuid) {
    if st.foreign_writes == 0 {
        return;
    }
    st.foreign_writes -= 1;
    let extra = st.foreign_trait.clone();
    if let Some(rp) = st.providers.get_mut(uuid) {
        rp.generation += 1;
        if let Some(t) = extra {
            rp.traits.insert(t);
        }
    }
}

fn placement(st: &mut State, rec: &Recorded, path: &str) -> HttpResponse {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let conflict = |rec: &Recorded| {
        error(
            409,
            "resource provider generation conflict",
            code_for(rec, "placement.concurrent_update"),
        )
    };
    match (rec.method.as_str(), parts.as_slice()) {
        ("GET", ["resource_providers"]) => {
            let Some(tree) = rec.query.strip_prefix("in_tree=") else {
                return error(400, "unsupported query", None);
            };
            let Ok(u) = Uuid::parse_str(tree) else {
                return error(400, "bad uuid", None);
            };
            let list: Vec<Value> = st
                .providers
                .iter()
                .filter(|(k, _)| **k == u)
                .map(|(k, rp)| rp_json(k, rp, &st.providers))
                .collect();
            ok(json!({ "resource_providers": list }))
        }
        ("POST", ["resource_providers"]) => {
            let b = rec.json();
            let Ok(u) = Uuid::parse_str(b["uuid"].as_str().unwrap_or("")) else {
                return error(400, "bad uuid", None);
            };
            let name = b["name"].as_str().unwrap_or("").to_owned();
            if st.providers.contains_key(&u) {
                return error(
                    409,
                    &format!("Conflicting resource provider uuid: {u} already exists."),
                    code_for(rec, "placement.duplicate_uuid"),
                );
            }
            if st.providers.values().any(|rp| rp.name == name) {
                return error(
                    409,
                    &format!("Conflicting resource provider name: {name} already exists."),
                    code_for(rec, "placement.duplicate_name"),
                );
            }
            let parent = b["parent_provider_uuid"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok());
            let rp = Rp {
                name,
                parent,
                ..Rp::default()
            };
            let v = rp_json(&u, &rp, &st.providers);
            st.providers.insert(u, rp);
            ok(v)
        }
        ("PUT", ["traits", name]) => {
            if st.known_traits.contains(*name) {
                return HttpResponse::NoContent().finish();
            }
            if !name.starts_with("CUSTOM_") {
                return error(400, &format!("Trait {name} is not a custom trait"), None);
            }
            st.known_traits.insert((*name).to_owned());
            HttpResponse::Created().finish()
        }
        ("GET", ["traits"]) => {
            let names: BTreeSet<&str> = rec
                .query
                .strip_prefix("name=in:")
                .unwrap_or("")
                .split(',')
                .collect();
            let found: Vec<&String> = st
                .known_traits
                .iter()
                .filter(|t| names.contains(t.as_str()))
                .collect();
            ok(json!({ "traits": found }))
        }
        ("PUT", ["resource_classes", name]) => {
            if !name.starts_with("CUSTOM_") {
                return error(400, "not a custom class", None);
            }
            if st.resource_classes.insert((*name).to_owned()) {
                HttpResponse::Created().finish()
            } else {
                HttpResponse::NoContent().finish()
            }
        }
        (m, ["resource_providers", u, rest @ ..]) => {
            let Ok(u) = Uuid::parse_str(u) else {
                return error(400, "bad uuid", None);
            };
            if !st.providers.contains_key(&u) {
                return error(
                    404,
                    &format!("No resource provider with uuid {u} found"),
                    None,
                );
            }
            provider(st, rec, m, u, rest, conflict)
        }
        (m, ["allocations", c]) => {
            let Ok(c) = Uuid::parse_str(c) else {
                return error(400, "bad uuid", None);
            };
            allocations(st, rec, m, c)
        }
        _ => error(404, "The resource could not be found.", None),
    }
}

fn provider(
    st: &mut State,
    rec: &Recorded,
    method: &str,
    u: Uuid,
    rest: &[&str],
    conflict: impl Fn(&Recorded) -> HttpResponse,
) -> HttpResponse {
    match (method, rest) {
        ("GET", []) => {
            let rp = &st.providers[&u];
            ok(rp_json(&u, rp, &st.providers))
        }
        ("DELETE", []) => {
            if st
                .consumers
                .values()
                .any(|c| c.allocations.contains_key(&u))
            {
                return error(409, "Unable to delete resource provider: in use", None);
            }
            st.providers.remove(&u);
            HttpResponse::NoContent().finish()
        }
        ("GET", ["inventories"]) => {
            let rp = &st.providers[&u];
            ok(
                json!({"inventories": rp.inventories, "resource_provider_generation": rp.generation}),
            )
        }
        ("PUT", ["inventories"]) => {
            race(st, &u);
            let b = rec.json();
            let rp = &st.providers[&u];
            if b["resource_provider_generation"] != json!(rp.generation) {
                return conflict(rec);
            }
            let inv: BTreeMap<String, Value> =
                serde_json::from_value(b["inventories"].clone()).unwrap_or_default();
            for (rc, _) in rp
                .inventories
                .iter()
                .filter(|(rc, _)| !inv.contains_key(*rc))
            {
                if st
                    .consumers
                    .values()
                    .any(|c| c.allocations.get(&u).is_some_and(|a| a.contains_key(rc)))
                {
                    return error(
                        409,
                        &format!("Inventory for '{rc}' on resource provider '{u}' in use."),
                        code_for(rec, "placement.inventory.inuse"),
                    );
                }
            }
            if let Some(rc) = inv
                .keys()
                .find(|rc| rc.starts_with("CUSTOM_") && !st.resource_classes.contains(*rc))
            {
                return error(
                    400,
                    &format!("Unknown resource class in inventory: {rc}"),
                    None,
                );
            }
            let rp = st.providers.get_mut(&u).unwrap();
            rp.inventories = inv;
            rp.generation += 1;
            ok(
                json!({"inventories": rp.inventories, "resource_provider_generation": rp.generation}),
            )
        }
        ("GET", ["traits"]) => {
            let rp = &st.providers[&u];
            ok(json!({"traits": rp.traits, "resource_provider_generation": rp.generation}))
        }
        ("PUT", ["traits"]) => {
            race(st, &u);
            let b = rec.json();
            let rp = &st.providers[&u];
            if b["resource_provider_generation"] != json!(rp.generation) {
                return conflict(rec);
            }
            let traits: BTreeSet<String> =
                serde_json::from_value(b["traits"].clone()).unwrap_or_default();
            if let Some(t) = traits.iter().find(|t| !st.known_traits.contains(*t)) {
                return error(400, &format!("No such trait(s): {t}"), None);
            }
            let rp = st.providers.get_mut(&u).unwrap();
            rp.traits = traits;
            rp.generation += 1;
            ok(json!({"traits": rp.traits, "resource_provider_generation": rp.generation}))
        }
        ("GET", ["aggregates"]) => {
            let rp = &st.providers[&u];
            ok(json!({"aggregates": rp.aggregates, "resource_provider_generation": rp.generation}))
        }
        ("GET", ["allocations"]) => {
            let rp = &st.providers[&u];
            let allocs: BTreeMap<String, Value> = st
                .consumers
                .iter()
                .filter_map(|(c, cons)| {
                    cons.allocations
                        .get(&u)
                        .map(|r| (c.to_string(), json!({ "resources": r })))
                })
                .collect();
            ok(json!({"allocations": allocs, "resource_provider_generation": rp.generation}))
        }
        _ => error(405, "method not allowed", None),
    }
}

fn allocations(st: &mut State, rec: &Recorded, method: &str, c: Uuid) -> HttpResponse {
    match method {
        "GET" => match st.consumers.get(&c) {
            None => ok(json!({"allocations": {}})),
            Some(cons) => {
                let allocs: BTreeMap<String, Value> = cons
                    .allocations
                    .iter()
                    .map(|(rp, r)| {
                        let generation = st.providers.get(rp).map(|p| p.generation);
                        (
                            rp.to_string(),
                            json!({"resources": r, "generation": generation}),
                        )
                    })
                    .collect();
                ok(json!({"allocations": allocs, "project_id": cons.project_id,
                    "user_id": cons.user_id, "consumer_generation": cons.generation}))
            }
        },
        "PUT" => {
            if st.allocation_races > 0 {
                st.allocation_races -= 1;
                return error(
                    409,
                    "resource provider generation conflict",
                    code_for(rec, "placement.concurrent_update"),
                );
            }
            let b = rec.json();
            let current = st.consumers.get(&c).map(|x| x.generation);
            let sent = b["consumer_generation"].as_u64();
            if current != sent {
                return error(
                    409,
                    &format!(
                        "consumer generation conflict - expected {current:?} but got {sent:?}"
                    ),
                    code_for(rec, "placement.concurrent_update"),
                );
            }
            let allocs: BTreeMap<Uuid, Value> =
                serde_json::from_value(b["allocations"].clone()).unwrap_or_default();
            if allocs.is_empty() {
                st.consumers.remove(&c);
                return HttpResponse::NoContent().finish();
            }
            let allocations = allocs
                .into_iter()
                .map(|(rp, v)| {
                    let r: BTreeMap<String, u64> =
                        serde_json::from_value(v["resources"].clone()).unwrap_or_default();
                    (rp, r)
                })
                .collect();
            st.consumers.insert(
                c,
                Consumer {
                    generation: current.map_or(1, |g| g + 1),
                    project_id: b["project_id"].as_str().unwrap_or("").to_owned(),
                    user_id: b["user_id"].as_str().unwrap_or("").to_owned(),
                    allocations,
                },
            );
            HttpResponse::NoContent().finish()
        }
        "DELETE" => {
            if st.consumers.remove(&c).is_some() {
                HttpResponse::NoContent().finish()
            } else {
                error(404, &format!("No allocations for consumer '{c}'"), None)
            }
        }
        _ => error(405, "method not allowed", None),
    }
}
