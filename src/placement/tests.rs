//! Client tests against the in-process fake placement/keystone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde_json::json;
use uuid::Uuid;

use super::fake::{Fake, Fault};
use super::*;

const CN: &str = "963e4fc6-0b74-4d1d-9966-7e75b0fde662";

fn cn() -> Uuid {
    Uuid::parse_str(CN).unwrap()
}

fn admin_token_client(fake: &Fake) -> PlacementClient {
    let pairs: BTreeMap<String, String> = [
        ("auth_type", "admin_token"),
        ("token", "admin"),
        ("endpoint", fake.url.as_str()),
        ("region_name", "RegionOne"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    PlacementClient::new(PlacementOptions::from_pairs(&pairs).unwrap()).unwrap()
}

fn password_opts(fake: &Fake) -> PlacementOptions {
    PlacementOptions {
        auth_type: Some("password".into()),
        auth_url: Some(format!("{}/v3", fake.url)),
        username: Some("nova".into()),
        password: Some("secret".into()),
        user_domain_name: Some("Default".into()),
        project_name: Some("service".into()),
        project_domain_name: Some("Default".into()),
        region_name: Some("RegionOne".into()),
        ..PlacementOptions::default()
    }
}

fn inventory() -> BTreeMap<String, Inventory> {
    BTreeMap::from([
        ("VCPU".to_owned(), Inventory::simple(1000, 0, 4.0)),
        ("MEMORY_MB".to_owned(), Inventory::simple(800_000, 512, 1.0)),
        ("DISK_GB".to_owned(), Inventory::simple(600_000, 0, 1.0)),
    ])
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_sequence_matches_captured_nova_compute() {
    let fake = Fake::start().await;
    let client =
        admin_token_client(&fake).with_request_id("req-46846a9e-9d94-4c97-99bc-a70a2bb1b3c1");

    let v = client.get_version().await.unwrap();
    assert_eq!(v.max_version, "1.39");
    let rp = client
        .ensure_resource_provider(cn(), "fake-compute-1")
        .await
        .unwrap();
    assert_eq!((rp.name.as_str(), rp.generation), ("fake-compute-1", 0));
    client.get_allocations_for_provider(cn()).await.unwrap();
    let inv = client.set_inventories(cn(), 0, &inventory()).await.unwrap();
    assert_eq!(inv.resource_provider_generation, 1);
    let traits = set(&["COMPUTE_NODE", "OWNER_NOVA", "COMPUTE_IMAGE_TYPE_RAW"]);
    let t = client.set_traits(cn(), 1, &traits).await.unwrap();
    assert_eq!(t.resource_provider_generation, 2);
    assert_eq!(t.traits, traits);

    let reqs = fake.requests();
    let seen: Vec<(String, String, String, Option<&str>)> = reqs
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.query.clone(),
                r.header("openstack-api-version"),
            )
        })
        .collect();
    let cn_path = format!("/resource_providers/{CN}");
    let expected: Vec<(String, String, String, Option<&str>)> = vec![
        ("GET".into(), "/".into(), "".into(), None),
        (
            "GET".into(),
            "/resource_providers".into(),
            format!("in_tree={CN}"),
            Some("placement 1.14"),
        ),
        (
            "POST".into(),
            "/resource_providers".into(),
            "".into(),
            Some("placement 1.20"),
        ),
        (
            "GET".into(),
            format!("{cn_path}/allocations"),
            "".into(),
            None,
        ),
        (
            "PUT".into(),
            format!("{cn_path}/inventories"),
            "".into(),
            Some("placement 1.26"),
        ),
        (
            "GET".into(),
            "/traits".into(),
            "name=in:COMPUTE_IMAGE_TYPE_RAW,COMPUTE_NODE,OWNER_NOVA".into(),
            Some("placement 1.6"),
        ),
        (
            "PUT".into(),
            format!("{cn_path}/traits"),
            "".into(),
            Some("placement 1.6"),
        ),
    ];
    assert_eq!(seen, expected);

    // version discovery is unauthenticated and carries no request id, as captured
    assert_eq!(reqs[0].header("x-auth-token"), None);
    assert_eq!(reqs[0].header("x-openstack-request-id"), None);
    for r in &reqs {
        assert_eq!(r.header("accept"), Some("application/json"));
        assert!(r
            .header("user-agent")
            .unwrap()
            .starts_with("corral-compute keystoneauth1"));
    }
    for r in &reqs[1..] {
        assert_eq!(r.header("x-auth-token"), Some("admin"));
        assert_eq!(
            r.header("x-openstack-request-id"),
            Some("req-46846a9e-9d94-4c97-99bc-a70a2bb1b3c1")
        );
        let has_body = !r.body.is_empty();
        assert_eq!(
            r.header("content-type") == Some("application/json"),
            has_body
        );
    }
    assert_eq!(
        reqs[2].json(),
        json!({"uuid": CN, "name": "fake-compute-1"})
    );
    assert_eq!(
        reqs[4].json(),
        json!({"resource_provider_generation": 0, "inventories": {
            "VCPU": {"total": 1000, "min_unit": 1, "max_unit": 1000, "step_size": 1, "allocation_ratio": 4.0, "reserved": 0},
            "MEMORY_MB": {"total": 800000, "min_unit": 1, "max_unit": 800000, "step_size": 1, "allocation_ratio": 1.0, "reserved": 512},
            "DISK_GB": {"total": 600000, "min_unit": 1, "max_unit": 600000, "step_size": 1, "allocation_ratio": 1.0, "reserved": 0}}})
    );
    assert_eq!(
        reqs[6].json(),
        json!({"resource_provider_generation": 1,
               "traits": ["COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_NODE", "OWNER_NOVA"]})
    );

    // a second ensure finds it and does not create
    let again = client
        .ensure_resource_provider(cn(), "fake-compute-1")
        .await
        .unwrap();
    assert_eq!(again.generation, 2);
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|c| c.starts_with("POST"))
            .count(),
        1
    );
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_generation_conflict_is_retried_then_succeeds() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    fake.lock().foreign_writes = 2;
    let client = admin_token_client(&fake);
    let done = client.set_inventories(cn(), 0, &inventory()).await.unwrap();
    // two foreign bumps, then ours
    assert_eq!(done.resource_provider_generation, 3);
    assert_eq!(done.inventories, inventory());
    let inv_path = format!("PUT /resource_providers/{CN}/inventories");
    let get_path = format!("GET /resource_providers/{CN}/inventories");
    assert_eq!(
        fake.calls(),
        vec![
            inv_path.clone(),
            get_path.clone(),
            inv_path.clone(),
            get_path,
            inv_path
        ]
    );
    let puts: Vec<u64> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.json()["resource_provider_generation"].as_u64().unwrap())
        .collect();
    assert_eq!(puts, vec![0, 1, 2]);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_conflict_retry_is_bounded() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    fake.lock().foreign_writes = 100;
    let client = admin_token_client(&fake);
    let err = client
        .set_inventories(cn(), 0, &inventory())
        .await
        .unwrap_err();
    match &err {
        PlacementError::GenerationConflict {
            uuid,
            attempts,
            last,
        } => {
            assert_eq!(*uuid, cn());
            assert_eq!(*attempts, CONFLICT_ATTEMPTS);
            assert_eq!(last.status, 409);
            assert_eq!(last.code.as_deref(), Some("placement.concurrent_update"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(err.status(), Some(409));
    let puts = fake.calls().iter().filter(|c| c.starts_with("PUT")).count();
    assert_eq!(puts, CONFLICT_ATTEMPTS as usize);

    fake.lock().foreign_writes = 100;
    let err = client
        .set_traits(cn(), 0, &set(&["COMPUTE_NODE"]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PlacementError::GenerationConflict { attempts: 4, .. }
    ));
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traits_conflicts_retry_and_update_keeps_foreign_traits() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    let client = admin_token_client(&fake);
    {
        let mut st = fake.lock();
        st.foreign_writes = 1;
        st.foreign_trait = Some("CUSTOM_OPERATOR".to_owned());
        st.known_traits.insert("CUSTOM_OPERATOR".to_owned());
    }
    // set_traits overwrites: the foreign trait is gone afterwards
    let t = client
        .set_traits(cn(), 0, &set(&["COMPUTE_NODE", "CUSTOM_MINE"]))
        .await
        .unwrap();
    assert_eq!(t.traits, set(&["COMPUTE_NODE", "CUSTOM_MINE"]));
    assert!(fake.lock().known_traits.contains("CUSTOM_MINE"));

    // update_traits merges on every attempt: the foreign trait survives
    {
        let mut st = fake.lock();
        st.foreign_writes = 1;
        st.foreign_trait = Some("CUSTOM_OPERATOR".to_owned());
    }
    let t = client
        .update_traits(cn(), &set(&["OWNER_NOVA"]), &set(&["CUSTOM_MINE"]))
        .await
        .unwrap();
    assert_eq!(
        t.traits,
        set(&["COMPUTE_NODE", "CUSTOM_OPERATOR", "OWNER_NOVA"])
    );
    // no change: no write
    let before = fake.calls().len();
    client
        .update_traits(cn(), &set(&["OWNER_NOVA"]), &BTreeSet::new())
        .await
        .unwrap();
    let after = fake.calls();
    assert!(after[before..].iter().all(|c| c.starts_with("GET")));
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_in_use_and_custom_classes() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    let client = admin_token_client(&fake);
    let mut inv = inventory();
    inv.insert("CUSTOM_GPU".to_owned(), Inventory::simple(2, 0, 1.0));
    let done = client.set_inventories(cn(), 0, &inv).await.unwrap();
    assert!(done.inventories.contains_key("CUSTOM_GPU"));
    assert!(fake
        .calls()
        .contains(&"PUT /resource_classes/CUSTOM_GPU".to_owned()));
    let rc_put = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/resource_classes/CUSTOM_GPU")
        .unwrap();
    assert_eq!(
        rc_put.header("openstack-api-version"),
        Some("placement 1.7")
    );
    assert!(rc_put.body.is_empty());

    let consumer = Uuid::new_v4();
    client
        .put_allocations(
            consumer,
            &AllocationRequest {
                allocations: BTreeMap::from([(
                    cn(),
                    ProviderAllocation {
                        resources: BTreeMap::from([("CUSTOM_GPU".to_owned(), 1)]),
                        generation: None,
                    },
                )]),
                project_id: "p".into(),
                user_id: "u".into(),
                consumer_generation: None,
            },
        )
        .await
        .unwrap();
    let err = client
        .set_inventories(cn(), done.resource_provider_generation, &inventory())
        .await
        .unwrap_err();
    match err {
        PlacementError::InventoryInUse { uuid, error } => {
            assert_eq!(uuid, cn());
            assert!(error.message.contains("CUSTOM_GPU"), "{}", error.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_uses_catalog_endpoint() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    let client = PlacementClient::new(password_opts(&fake)).unwrap();
    client.get_traits(cn()).await.unwrap();
    client.get_aggregates(cn()).await.unwrap();
    let reqs = fake.requests();
    assert_eq!(reqs[0].path, "/v3/auth/tokens");
    assert_eq!(
        reqs[0].json(),
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user":
            {"name": "nova", "domain": {"name": "Default"}, "password": "secret"}}},
            "scope": {"project": {"name": "service", "domain": {"name": "Default"}}}}})
    );
    // internal, RegionOne, with the catalog URL's path prefix kept
    assert_eq!(
        reqs[1].path,
        format!("/placement/resource_providers/{CN}/traits")
    );
    assert_eq!(reqs[1].header("x-auth-token"), Some("tok-1"));
    assert_eq!(
        reqs[2].header("openstack-api-version"),
        Some("placement 1.19")
    );
    assert_eq!(fake.lock().tokens_issued, 1, "token is cached");

    // a region without internal/public placement endpoints
    let mut opts = password_opts(&fake);
    opts.region_name = Some("RegionThree".into());
    let err = PlacementClient::new(opts)
        .unwrap()
        .get_traits(cn())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlacementError::EndpointNotFound { .. }),
        "{err}"
    );

    // public only picks the public endpoint (unreachable here)
    let mut opts = password_opts(&fake);
    opts.valid_interfaces = vec!["public".into()];
    opts.timeout = Some(Duration::from_millis(300));
    let err = PlacementClient::new(opts)
        .unwrap()
        .get_traits(cn())
        .await
        .unwrap_err();
    match err {
        PlacementError::Transport { url, .. } => assert!(url.starts_with("http://192.0.2.1:8778/")),
        other => panic!("unexpected {other:?}"),
    }

    // wrong password
    let mut opts = password_opts(&fake);
    opts.password = Some("wrong".into());
    let err = PlacementClient::new(opts)
        .unwrap()
        .get_traits(cn())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlacementError::Auth(ref e) if e.status == 401),
        "{err}"
    );
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_triggers_one_reauthentication() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    let client = PlacementClient::new(password_opts(&fake)).unwrap();
    client.get_traits(cn()).await.unwrap();
    // keystone revoked our token
    fake.lock().accepted_token = Some("revoked-elsewhere".into());
    client.get_traits(cn()).await.unwrap();
    assert_eq!(fake.lock().tokens_issued, 2);
    let last: Vec<_> = fake.requests().into_iter().rev().take(3).collect();
    assert_eq!(last[0].header("x-auth-token"), Some("tok-2"));
    assert_eq!(last[1].path, "/v3/auth/tokens");
    assert_eq!(last[2].header("x-auth-token"), Some("tok-1"));

    // tokens keystone hands out keep failing: one retry only, then the 401 surfaces
    {
        let mut st = fake.lock();
        st.keystone_tokens_valid = false;
        st.accepted_token = Some("nothing-valid".into());
    }
    let before = fake.requests().len();
    let err = client.get_traits(cn()).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(fake.lock().tokens_issued, 3);
    assert_eq!(
        fake.requests().len() - before,
        3,
        "placement, keystone, placement"
    );

    // admin_token cannot re-authenticate: 401 straight back
    let static_client = admin_token_client(&fake);
    let before = fake.requests().len();
    let err = static_client.get_traits(cn()).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(fake.requests().len() - before, 1);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_near_expiry_is_renewed_before_use() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    // expires in 60 s: inside keystoneauth's 120 s margin, so every call re-authenticates
    let soon = SystemTime::now() + Duration::from_secs(60);
    let secs = soon
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    fake.lock().keystone_expires_at = iso(secs);
    let client = PlacementClient::new(password_opts(&fake)).unwrap();
    client.get_traits(cn()).await.unwrap();
    client.get_traits(cn()).await.unwrap();
    assert_eq!(fake.lock().tokens_issued, 2);
    fake.stop().await;
}

fn iso(unix: u64) -> String {
    // inverse of days_from_civil, good enough for 1970..2100
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let (mut y, mut d) = (1970u64, days);
    loop {
        let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        };
        if d < len {
            break;
        }
        d -= len;
        y += 1;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while d >= months[m] {
        d -= months[m];
        m += 1;
    }
    format!(
        "{y:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000000Z",
        m + 1,
        d + 1,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_are_mapped() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    let client = admin_token_client(&fake);
    fake.lock().faults.push(Fault {
        method: "GET",
        path: format!("/resource_providers/{CN}/aggregates"),
        status: 503,
        body: json!({"errors": [{"status": 503, "title": "Service Unavailable",
            "detail": "The server is currently\n\n unavailable.", "code": "placement.undefined_code",
            "request_id": "req-abc"}]}),
        count: 1,
    });
    let err = client.get_aggregates(cn()).await.unwrap_err();
    let api = err.api_error().unwrap();
    assert_eq!(api.status, 503);
    assert_eq!(api.code.as_deref(), Some("placement.undefined_code"));
    assert_eq!(api.title.as_deref(), Some("Service Unavailable"));
    assert_eq!(api.message, "The server is currently unavailable.");
    assert_eq!(api.request_id.as_deref(), Some("req-abc"));
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!("placement request failed: GET /resource_providers/{CN}/aggregates returned 503 (placement.undefined_code): The server is currently unavailable.")
    );

    // not placement's document: raw text
    fake.lock().faults.push(Fault {
        method: "GET",
        path: format!("/resource_providers/{CN}/aggregates"),
        status: 502,
        body: json!("bad gateway"),
        count: 1,
    });
    let err = client.get_aggregates(cn()).await.unwrap_err();
    assert_eq!(err.api_error().unwrap().message, "\"bad gateway\"");
    assert_eq!(err.code(), None);

    // 404 on a provider sub-resource
    let missing = Uuid::new_v4();
    let err = client.get_inventories(missing).await.unwrap_err();
    assert!(matches!(err, PlacementError::ProviderNotFound(u) if u == missing));
    assert_eq!(client.get_resource_provider(missing).await.unwrap(), None);

    // a standard trait placement does not know cannot be created
    let err = client
        .ensure_custom_traits(["COMPUTE_NOT_A_TRAIT", "CUSTOM_OK"])
        .await
        .unwrap_err();
    match err {
        PlacementError::TraitCreationFailed { name, error } => {
            assert_eq!(name, "COMPUTE_NOT_A_TRAIT");
            assert_eq!(error.status, 400);
        }
        other => panic!("unexpected {other:?}"),
    }
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_conflicts_follow_nova() {
    let fake = Fake::start().await;
    let client = admin_token_client(&fake);
    let other = Uuid::new_v4();
    fake.add_provider(other, "host-a");
    // same name, other uuid: fatal
    let err = client
        .create_resource_provider(cn(), "host-a", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlacementError::ProviderNameConflict { ref name, .. } if name == "host-a"),
        "{err}"
    );
    // same uuid created concurrently: read it back
    fake.add_provider(cn(), "host-b");
    let rp = client
        .create_resource_provider(cn(), "host-b", None)
        .await
        .unwrap();
    assert_eq!(rp.uuid, cn());
    assert_eq!(
        fake.calls()[1..],
        [
            "POST /resource_providers".to_owned(),
            format!("GET /resource_providers/{CN}")
        ]
    );
    // child provider carries its parent
    let child = Uuid::new_v4();
    let rp = client
        .create_resource_provider(child, "host-b_gpu", Some(cn()))
        .await
        .unwrap();
    assert_eq!(rp.parent_provider_uuid, Some(cn()));
    assert_eq!(rp.root_provider_uuid, Some(cn()));
    let post = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.json()["parent_provider_uuid"], json!(cn()));
    // delete
    assert!(client.delete_resource_provider(child).await.unwrap());
    assert!(!client.delete_resource_provider(child).await.unwrap());
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_round_trip() {
    let fake = Fake::start().await;
    fake.add_provider(cn(), "host");
    let client = admin_token_client(&fake);
    let consumer = Uuid::new_v4();
    let request = |generation| AllocationRequest {
        allocations: BTreeMap::from([(
            cn(),
            ProviderAllocation {
                resources: BTreeMap::from([("VCPU".to_owned(), 1), ("MEMORY_MB".to_owned(), 512)]),
                generation: None,
            },
        )]),
        project_id: "admin".into(),
        user_id: "admin".into(),
        consumer_generation: generation,
    };
    let empty = client.get_allocations_for_consumer(consumer).await.unwrap();
    assert!(empty.allocations.is_empty());

    // a provider-side race is retried
    fake.lock().allocation_races = 1;
    client
        .put_allocations(consumer, &request(None))
        .await
        .unwrap();
    let put = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(put.header("openstack-api-version"), Some("placement 1.28"));
    assert!(put.json()["consumer_generation"].is_null());

    let got = client.get_allocations_for_consumer(consumer).await.unwrap();
    assert_eq!(got.consumer_generation, Some(1));
    assert_eq!(got.allocations[&cn()].resources["MEMORY_MB"], 512);
    let by_rp = client.get_allocations_for_provider(cn()).await.unwrap();
    assert!(by_rp.allocations.contains_key(&consumer));

    // stale consumer generation: not retried
    let err = client
        .put_allocations(consumer, &request(None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlacementError::ConsumerGenerationConflict { .. }),
        "{err}"
    );

    // bounded provider races
    fake.lock().allocation_races = 100;
    let err = client
        .put_allocations(consumer, &request(Some(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlacementError::AllocationConflict { attempts: 4, .. }),
        "{err}"
    );
    fake.lock().allocation_races = 0;

    // GET + PUT {} with the consumer generation
    assert!(client.remove_allocations(consumer).await.unwrap());
    assert!(!client.remove_allocations(consumer).await.unwrap());
    let put = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(
        put.json(),
        json!({"allocations": {}, "project_id": "admin", "user_id": "admin", "consumer_generation": 1})
    );

    // forced DELETE without microversion
    client
        .put_allocations(consumer, &request(None))
        .await
        .unwrap();
    assert!(client.delete_allocations(consumer).await.unwrap());
    assert!(!client.delete_allocations(consumer).await.unwrap());
    let del = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(del.header("openstack-api-version"), None);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_time_out() {
    // accepts connections (backlog) but never answers
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = PlacementOptions {
        auth_type: Some("admin_token".into()),
        token: Some("admin".into()),
        endpoint: Some(format!("http://{addr}")),
        timeout: Some(Duration::from_millis(300)),
        ..PlacementOptions::default()
    };
    let client = PlacementClient::new(opts).unwrap();
    let started = std::time::Instant::now();
    let err = client.get_traits(cn()).await.unwrap_err();
    assert!(matches!(err, PlacementError::Transport { .. }), "{err}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[test]
fn bad_cafile_is_reported() {
    let opts = PlacementOptions {
        auth_type: Some("admin_token".into()),
        token: Some("admin".into()),
        endpoint: Some("https://placement".into()),
        cafile: Some("/nonexistent/ca.pem".into()),
        ..PlacementOptions::default()
    };
    let err = PlacementClient::new(opts).unwrap_err();
    assert!(
        matches!(
            err,
            PlacementError::Tls(crate::tls::TlsError::CaFile { .. })
        ),
        "{err}"
    );
}

/// A server that closes its first `drops` connections after reading the
/// request (as a keep-alive connection closed under a new request looks to
/// the client), then answers `body`; returns its address and a count of the
/// connections it took.
fn dropping_server(
    drops: usize,
    body: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            if n < drops {
                continue; // dropped: closed with no answer
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_read_lost_before_an_answer_is_sent_once_more() {
    let (addr, seen) = dropping_server(
        1,
        r#"{"traits": ["HW_CPU_X86_AVX"], "resource_provider_generation": 3}"#,
    );
    let opts = PlacementOptions {
        auth_type: Some("admin_token".into()),
        token: Some("admin".into()),
        endpoint: Some(format!("http://{addr}")),
        ..PlacementOptions::default()
    };
    let client = PlacementClient::new(opts).unwrap();
    let traits = client.get_traits(cn()).await.unwrap();
    assert_eq!(traits.resource_provider_generation, 3);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Twice lost: the error is the caller's.
    let (addr, seen) = dropping_server(2, "{}");
    let opts = PlacementOptions {
        auth_type: Some("admin_token".into()),
        token: Some("admin".into()),
        endpoint: Some(format!("http://{addr}")),
        ..PlacementOptions::default()
    };
    let client = PlacementClient::new(opts).unwrap();
    let err = client.get_traits(cn()).await.unwrap_err();
    assert!(matches!(err, PlacementError::Transport { .. }), "{err}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_write_lost_before_an_answer_is_not_sent_again() {
    let (addr, seen) = dropping_server(1, "{}");
    let opts = PlacementOptions {
        auth_type: Some("admin_token".into()),
        token: Some("admin".into()),
        endpoint: Some(format!("http://{addr}")),
        ..PlacementOptions::default()
    };
    let client = PlacementClient::new(opts).unwrap();
    let err = client.delete_allocations(cn()).await.unwrap_err();
    assert!(matches!(err, PlacementError::Transport { .. }), "{err}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}
