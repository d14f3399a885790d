//! Shelve, offload, unshelve, rescue and unrescue against the driver and
//! conductor doubles, with a local HTTP server standing in for Glance: the
//! driver calls, the saved states (and expected task states) in nova-compute
//! 34's order, the Glance requests, faults and recovery at start-up.

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A Glance that answers every request with an active, empty image and
/// records `METHOD path` of each.
async fn glance() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&req[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = req.len() - end;
                    while body < len {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body += n,
                        }
                    }
                    let line = head.lines().next().unwrap_or("").to_string();
                    let mut parts = line.split(' ');
                    let what = format!(
                        "{} {}",
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or("")
                    );
                    log.lock().unwrap().push(what);
                    let reply = r#"{"id": "x", "status": "active", "size": 0}"#;
                    let out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if conn.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// A manager over `driver`, an answering conductor and the fake Glance,
/// with more `[DEFAULT]` options.
async fn setup(
    driver: Arc<FakeDriver>,
    extra: &str,
) -> (
    Manager,
    Arc<FakeConductor>,
    Arc<Mutex<Vec<String>>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = glance().await;
    let conductor = FakeConductor::answering();
    let m = manager_conf(
        driver,
        conductor.clone(),
        dir.path(),
        &format!("{extra}\n[glance]\napi_servers = {url}\n"),
    );
    (m, conductor, seen, dir)
}

/// A captured message's arguments with the instance changed by `edit`.
fn call_from(fixture: &str, method: &str, edit: impl Fn(&mut Map<String, Value>)) -> ComputeCall {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nova-34/api-to-compute")
        .join(fixture);
    let capture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let body: Value = serde_json::from_str(capture["body_raw"].as_str().unwrap()).unwrap();
    let msg: Value = serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
    let mut args = msg["args"].as_object().cloned().unwrap();
    edit(&mut args);
    ComputeCall::decode(method, &args).unwrap().unwrap()
}

fn task_states_saved(c: &FakeConductor) -> Vec<Value> {
    c.saves()
        .iter()
        .filter_map(|s| s.get("task_state").cloned())
        .collect()
}

fn shelved_offloaded_instance(args: &mut Map<String, Value>, task: &str) {
    let data = &mut args["instance"]["nova_object.data"];
    data["vm_state"] = json!("shelved_offloaded");
    data["task_state"] = json!(task);
    data["power_state"] = json!(4);
    let meta = data["system_metadata"].as_object_mut().unwrap();
    meta.insert("shelved_at".into(), json!("2026-12-04T09:00:00.000000"));
    meta.insert("shelved_image_id".into(), json!("img-s"));
    meta.insert("shelved_host".into(), json!("ct-host-1"));
}

#[tokio::test]
async fn shelve_powers_off_uploads_and_offloads_at_once() {
    let driver = FakeDriver::running();
    let (m, c, seen, _d) = setup(driver.clone(), "").await;
    let call = captured("18-shelve_instance.json");
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    let image = "6f8d13ea-9cad-49d7-b50f-aa873f0ec169";
    let calls = driver.calls();
    let pos = |s: String| {
        calls
            .iter()
            .position(|c| *c == s)
            .unwrap_or_else(|| panic!("{s} not in {calls:?}"))
    };
    // powered off before the snapshot; destroyed after the upload
    assert!(
        pos(format!("power_off {uuid} 7s force=false"))
            < pos(format!("snapshot_create {uuid} nova-{image}"))
    );
    assert!(pos(format!("snapshot_export {uuid} nova-{image}")) < pos(format!("destroy {uuid}")));
    assert!(pos(format!("snapshot_delete {uuid} nova-{image}")) < pos(format!("destroy {uuid}")));
    let saves = c.saves();
    assert_eq!(
        task_states_saved(&c),
        [
            json!("shelving_image_pending_upload"),
            json!("shelving_image_uploading"),
            json!("shelving_offloading"),
            json!(null),
        ]
    );
    assert_eq!(saves[0]["expected"], json!("shelving"));
    assert_eq!(saves[1]["expected"], json!("shelving_image_pending_upload"));
    let shelved = &saves[2];
    assert_eq!(shelved["vm_state"], "shelved");
    assert_eq!(shelved["power_state"], 4);
    assert_eq!(
        shelved["expected"],
        json!(["shelving", "shelving_image_uploading"])
    );
    let meta = &shelved["system_metadata"];
    assert_eq!(meta["shelved_image_id"], image);
    assert_eq!(meta["shelved_host"], "ct-host-1");
    assert!(meta["shelved_at"].as_str().unwrap().starts_with("20"));
    // the image's own keys are kept
    assert!(meta.get("image_base_image_ref").is_some());
    let offloaded = &saves[3];
    assert_eq!(offloaded["vm_state"], "shelved_offloaded");
    assert_eq!(
        offloaded["expected"],
        json!(["shelving", "shelving_offloading"])
    );
    let nilled = &saves[4];
    assert_eq!(nilled["host"], json!(null));
    assert_eq!(nilled["node"], json!(null));
    assert_eq!(nilled["expected"], json!(null));
    assert_eq!(saves.len(), 5, "{saves:?}");
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    assert!(c
        .log()
        .iter()
        .any(|e| e["op"] == "fanout" && e["method"] == "delete_instance_info"));
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("PUT /v2/images/{image}/file")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.starts_with("DELETE")), "{seen:?}");
    assert_eq!(
        c.events(),
        [
            json!(["start", "compute_shelve_instance"]),
            json!(["finish", "compute_shelve_instance", false])
        ]
    );
}

#[tokio::test]
async fn shelve_with_offload_time_minus_one_keeps_the_container() {
    let driver = FakeDriver::running();
    let (m, c, _, _d) = setup(driver.clone(), "shelved_offload_time = -1").await;
    let call = captured("18-shelve_instance.json");
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    assert!(!driver.calls().contains(&format!("destroy {uuid}")));
    let saves = c.saves();
    let last = saves.last().unwrap();
    assert_eq!(last["vm_state"], "shelved");
    assert_eq!(last["task_state"], json!(null));
    assert!(c.faults().is_empty());
}

#[tokio::test]
async fn a_failed_shelve_upload_leaves_the_instance_active_with_a_fault() {
    let driver = FakeDriver::running();
    driver.failing.lock().unwrap().push("snapshot_create");
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let call = captured("18-shelve_instance.json");
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    assert!(driver
        .calls()
        .contains(&format!("power_off {uuid} 7s force=false")));
    assert!(!driver.calls().contains(&format!("destroy {uuid}")));
    // nothing but the reverted task state
    assert_eq!(c.saves(), [json!({"task_state": null})]);
    assert_eq!(c.faults().len(), 1);
    assert_eq!(
        c.events(),
        [
            json!(["start", "compute_shelve_instance"]),
            json!(["finish", "compute_shelve_instance", true])
        ]
    );
}

#[tokio::test]
async fn shelve_offload_frees_the_host() {
    let driver = FakeDriver::running();
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let call = call_from("18-shelve_instance.json", "shelve_offload_instance", |a| {
        a.remove("image_id");
        a["clean_shutdown"] = json!(false);
        let data = &mut a["instance"]["nova_object.data"];
        data["vm_state"] = json!("shelved");
        data["task_state"] = json!("shelving_offloading");
    });
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    assert_eq!(
        driver.calls(),
        [
            format!("power_off {uuid} 0s force=true"),
            format!("get_info {uuid}"),
            format!("destroy {uuid}"),
        ]
    );
    let saves = c.saves();
    assert_eq!(saves[0]["vm_state"], "shelved_offloaded");
    assert_eq!(saves[1]["host"], json!(null));
    assert!(c.faults().is_empty());
}

#[tokio::test]
async fn unshelve_boots_from_the_shelved_image_and_deletes_it() {
    let driver = FakeDriver::running();
    *driver.cached_images.lock().unwrap() = true;
    let (m, c, seen, _d) = setup(driver.clone(), "").await;
    let call = call_from("18-shelve_instance.json", "unshelve_instance", |a| {
        a.remove("image_id");
        a.remove("clean_shutdown");
        a.insert("image".into(), json!({"id": "img-s", "properties": {}}));
        a.insert("filter_properties".into(), json!({}));
        a.insert("node".into(), json!("ct-host-1"));
        a.insert("request_spec".into(), json!(null));
        shelved_offloaded_instance(a, "unshelving");
        a["instance"]["nova_object.data"]["host"] = json!(null);
    });
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    assert!(
        driver.calls().contains(&format!("spawn {uuid} true")),
        "{:?}",
        driver.calls()
    );
    assert_eq!(driver.specs.lock().unwrap()[0].image, "glance/img-s");
    let saves = c.saves();
    assert_eq!(saves[0], json!({"task_state": "spawning"}));
    assert_eq!(saves[1]["host"], "ct-host-1");
    let last = saves.last().unwrap();
    assert_eq!(last["vm_state"], "active");
    assert_eq!(last["task_state"], json!(null));
    assert_eq!(last["expected"], "spawning");
    let meta = last["system_metadata"].as_object().unwrap();
    for k in ["shelved_at", "shelved_image_id", "shelved_host"] {
        assert!(!meta.contains_key(k), "{k} kept");
    }
    assert!(meta.contains_key("image_base_image_ref"));
    assert!(seen
        .lock()
        .unwrap()
        .contains(&"DELETE /v2/images/img-s".to_string()));
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}

#[tokio::test]
async fn a_failed_unshelve_leaves_it_offloaded_on_no_host() {
    let driver = FakeDriver::running();
    *driver.cached_images.lock().unwrap() = true;
    driver.failing.lock().unwrap().push("spawn");
    let (m, c, seen, _d) = setup(driver.clone(), "").await;
    let call = call_from("18-shelve_instance.json", "unshelve_instance", |a| {
        a.remove("image_id");
        a.remove("clean_shutdown");
        a.insert("image".into(), json!({"id": "img-s"}));
        a.insert("filter_properties".into(), json!({}));
        a.insert("node".into(), json!(null));
        a.insert("request_spec".into(), json!(null));
        shelved_offloaded_instance(a, "unshelving");
    });
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    assert!(driver.calls().contains(&format!("destroy {uuid}")));
    let saves = c.saves();
    assert!(
        saves.iter().all(|s| s.get("vm_state").is_none()),
        "{saves:?}"
    );
    assert!(saves
        .iter()
        .any(|s| s["host"] == json!(null) && s["task_state"] == json!(null)));
    assert_eq!(c.faults().len(), 1);
    // the shelved image stays for the next try
    assert!(!seen.lock().unwrap().iter().any(|s| s.starts_with("DELETE")));
}

#[tokio::test]
async fn starting_a_shelved_instance_deletes_its_image_and_keys() {
    let driver = FakeDriver::running();
    let (m, c, seen, _d) = setup(driver.clone(), "shelved_offload_time = -1").await;
    let call = call_from("04-start_instance.json", "start_instance", |a| {
        let data = &mut a["instance"]["nova_object.data"];
        data["vm_state"] = json!("shelved");
        data["task_state"] = json!("powering-on");
        data["system_metadata"]["shelved_image_id"] = json!("img-s");
        data["system_metadata"]["shelved_at"] = json!("2026-12-04T09:00:00");
        data["system_metadata"]["shelved_host"] = json!("ct-host-1");
    });
    m.cast(ctx(), call).await;
    let last = c.saves().last().unwrap().clone();
    assert_eq!(last["vm_state"], "active");
    assert_eq!(last["expected"], "powering-on");
    assert!(last["system_metadata"].get("shelved_image_id").is_none());
    assert!(seen
        .lock()
        .unwrap()
        .contains(&"DELETE /v2/images/img-s".to_string()));
}

#[tokio::test]
async fn rescue_stops_the_instance_and_boots_the_rescue_image() {
    let driver = FakeDriver::running();
    *driver.cached_images.lock().unwrap() = true;
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let call = captured("14-rescue_instance.json");
    let uuid = uuid_of(&call);
    let base = match &call {
        ComputeCall::RescueInstance(a) => a
            .instance
            .to_object()
            .unwrap()
            .get("system_metadata")
            .and_then(|m| m.get("image_base_image_ref"))
            .and_then(Value::as_str)
            .unwrap()
            .to_string(),
        _ => unreachable!(),
    };
    m.cast(ctx(), call).await;
    let calls: Vec<String> = driver
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("get_image"))
        .collect();
    assert_eq!(
        calls,
        [
            format!("power_off {uuid} 7s force=false"),
            format!("rescue {uuid} glance/{base} drive=false"),
            format!("get_info {uuid}"),
        ]
    );
    let saves = c.saves();
    assert_eq!(saves.len(), 1, "{saves:?}");
    assert_eq!(saves[0]["vm_state"], "rescued");
    assert_eq!(saves[0]["task_state"], json!(null));
    assert_eq!(saves[0]["power_state"], 1);
    assert_eq!(saves[0]["expected"], "rescuing");
    assert!(saves[0]["launched_at"].is_string());
}

#[tokio::test]
async fn a_failed_rescue_is_an_error_and_instance_not_rescuable() {
    let driver = FakeDriver::running();
    *driver.cached_images.lock().unwrap() = true;
    driver.failing.lock().unwrap().push("rescue");
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    m.cast(ctx(), captured("14-rescue_instance.json")).await;
    assert_eq!(
        c.saves(),
        [json!({"vm_state": "error"}), json!({"task_state": null})]
    );
    let faults = c.faults();
    assert_eq!(faults.len(), 1);
    assert!(faults[0]["details"]
        .as_str()
        .unwrap()
        .starts_with("InstanceNotRescuable: Instance "));
}

#[tokio::test]
async fn unrescue_boots_the_instance_from_its_own_root() {
    let driver = FakeDriver::running();
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let call = captured("15-unrescue_instance.json");
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    assert_eq!(
        driver.calls(),
        [format!("unrescue {uuid}"), format!("get_info {uuid}")]
    );
    assert_eq!(
        c.saves(),
        [
            json!({"vm_state": "active", "task_state": null, "power_state": 1, "expected": "unrescuing"})
        ]
    );
}

#[tokio::test]
async fn a_failed_unrescue_is_an_error() {
    let driver = FakeDriver::running();
    driver.failing.lock().unwrap().push("unrescue");
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    m.cast(ctx(), captured("15-unrescue_instance.json")).await;
    assert_eq!(c.saves()[0]["vm_state"], "error");
    assert_eq!(c.faults().len(), 1);
}

#[tokio::test]
async fn a_restart_finishes_an_offload_and_undoes_a_rescue() {
    let driver = FakeDriver::running();
    *driver.rescued.lock().unwrap() = true;
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let mut offloading = instance_in("shelved", Some("shelving_offloading"), 4);
    offloading["nova_object.data"]["uuid"] = json!("aaaaaaaa-0000-0000-0000-000000000001");
    let mut rescuing = instance_in("active", Some("rescuing"), 4);
    rescuing["nova_object.data"]["uuid"] = json!("aaaaaaaa-0000-0000-0000-000000000002");
    let mut unshelving = instance_in("shelved_offloaded", Some("spawning"), 0);
    unshelving["nova_object.data"]["uuid"] = json!("aaaaaaaa-0000-0000-0000-000000000003");
    *c.instances.lock().unwrap() = vec![offloading, rescuing, unshelving];
    m.init_host(&ctx()).await;
    let calls = driver.calls();
    assert!(calls.contains(&"destroy aaaaaaaa-0000-0000-0000-000000000001".to_string()));
    assert!(calls.contains(&"unrescue aaaaaaaa-0000-0000-0000-000000000002".to_string()));
    // an interrupted unshelve is a failed spawn: its container goes
    assert!(calls.contains(&"destroy aaaaaaaa-0000-0000-0000-000000000003".to_string()));
    let vm: Vec<Value> = c
        .saves()
        .iter()
        .filter_map(|s| s.get("vm_state").cloned())
        .collect();
    assert_eq!(
        vm,
        [json!("shelved_offloaded"), json!("active"), json!("error")]
    );
}

#[tokio::test]
async fn a_restart_leaves_what_the_api_set_for_a_queued_cast() {
    // shelving and rescuing without a sign of the driver's work: the cast
    // may still be queued, nothing is touched (as nova-compute)
    let driver = FakeDriver::running();
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let mut shelving = instance_in("active", Some("shelving"), 1);
    shelving["nova_object.data"]["uuid"] = json!("aaaaaaaa-0000-0000-0000-000000000001");
    let mut rescuing = instance_in("active", Some("rescuing"), 1);
    rescuing["nova_object.data"]["uuid"] = json!("aaaaaaaa-0000-0000-0000-000000000002");
    *c.instances.lock().unwrap() = vec![shelving, rescuing];
    m.init_host(&ctx()).await;
    assert!(c.saves().is_empty(), "{:?}", c.saves());
    assert!(!driver
        .calls()
        .iter()
        .any(|c| c.starts_with("unrescue") || c.starts_with("destroy")));
}

#[tokio::test]
async fn a_restart_mid_upload_removes_the_host_snapshot_and_clears_the_task() {
    let driver = FakeDriver::running();
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let mut uploading = instance_in("active", Some("shelving_image_uploading"), 4);
    uploading["nova_object.data"]["uuid"] = json!("aaaaaaaa-0000-0000-0000-000000000001");
    *c.instances.lock().unwrap() = vec![uploading];
    m.init_host(&ctx()).await;
    assert!(driver
        .calls()
        .contains(&"snapshot_list aaaaaaaa-0000-0000-0000-000000000001".to_string()));
    assert_eq!(c.saves()[0]["task_state"], json!(null));
}

#[tokio::test]
async fn the_rescue_password_goes_into_the_rescue_config_drive() {
    let driver = FakeDriver::running();
    *driver.cached_images.lock().unwrap() = true;
    let (m, c, _, _d) = setup(driver.clone(), "").await;
    let call = call_from("14-rescue_instance.json", "rescue_instance", |a| {
        a["instance"]["nova_object.data"]["config_drive"] = json!("True");
    });
    m.cast(ctx(), call).await;
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    let drives = driver.drives.lock().unwrap().clone();
    assert_eq!(drives.len(), 1);
    let meta = drives[0]
        .files
        .iter()
        .find(|(k, _)| k.ends_with("latest/meta_data.json"))
        .map(|(_, v)| serde_json::from_slice::<Value>(v).unwrap())
        .unwrap();
    // the fixture's rescue_password
    assert_eq!(meta["admin_pass"], "rescue-pass");
}

#[tokio::test]
async fn the_periodic_offloads_only_what_was_shelved_long_enough_ago() {
    let driver = FakeDriver::running();
    let (m, c, _, _d) = setup(driver.clone(), "shelved_offload_time = 60").await;
    let shelved = |uuid: &str, at: &str| {
        let mut i = instance_in("shelved", None, 4);
        i["nova_object.data"]["uuid"] = json!(uuid);
        i["nova_object.data"]["system_metadata"]["shelved_at"] = json!(at);
        i
    };
    let old = "aaaaaaaa-0000-0000-0000-000000000001";
    let new = "aaaaaaaa-0000-0000-0000-000000000002";
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000000",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    *c.instances.lock().unwrap() = vec![
        shelved(old, &fmt(now - time::Duration::minutes(5))),
        shelved(new, &fmt(now)),
    ];
    m.poll_shelved_instances(&ctx()).await;
    let calls = driver.calls();
    assert!(calls.contains(&format!("destroy {old}")), "{calls:?}");
    assert!(!calls.contains(&format!("destroy {new}")), "{calls:?}");
    let saves = c.saves();
    assert_eq!(
        saves[0],
        json!({"task_state": "shelving_offloading", "expected": [null]})
    );
    assert_eq!(saves[1]["vm_state"], "shelved_offloaded");
}
