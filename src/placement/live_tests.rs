//! Live test against a real placement, gated on `CORRAL_PLACEMENT_URL`.
//!
//! Uses the test stack's setup: `admin_token` with the token from
//! `CORRAL_PLACEMENT_TOKEN` (default `admin`, which placement's noauth2 maps to the
//! admin role).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_provider_inventory_traits_round_trip() {
    let Ok(url) = std::env::var("CORRAL_PLACEMENT_URL") else {
        eprintln!("skipping live placement test: CORRAL_PLACEMENT_URL is not set");
        return;
    };
    let token = std::env::var("CORRAL_PLACEMENT_TOKEN").unwrap_or_else(|_| "admin".to_owned());
    let opts = PlacementOptions {
        auth_type: Some("admin_token".into()),
        token: Some(token),
        endpoint: Some(url),
        ..PlacementOptions::default()
    };
    let client = PlacementClient::new(opts)
        .unwrap()
        .with_request_id(format!("req-{}", Uuid::new_v4()));

    let version = client.get_version().await.unwrap();
    eprintln!("placement max_version {}", version.max_version);

    let uuid = Uuid::new_v4();
    let name = format!("corral-live-{uuid}");
    let rp = client.ensure_resource_provider(uuid, &name).await.unwrap();
    assert_eq!(
        (rp.uuid, rp.name.as_str(), rp.generation),
        (uuid, name.as_str(), 0)
    );
    // a second provider with the same name is refused like nova expects
    let err = client
        .create_resource_provider(Uuid::new_v4(), &name, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlacementError::ProviderNameConflict { .. }),
        "{err}"
    );
    // the same uuid again is read back
    let same = client
        .create_resource_provider(uuid, &name, None)
        .await
        .unwrap();
    assert_eq!(same.uuid, uuid);

    let mut inv = BTreeMap::from([
        ("VCPU".to_owned(), Inventory::simple(8, 0, 4.0)),
        ("MEMORY_MB".to_owned(), Inventory::simple(16384, 512, 1.0)),
        ("DISK_GB".to_owned(), Inventory::simple(100, 0, 1.0)),
    ]);
    inv.insert(
        "CUSTOM_CORRAL_LIVE".to_owned(),
        Inventory::simple(2, 0, 1.0),
    );
    // stale generation on purpose: the conflict retry must recover
    let written = client.set_inventories(uuid, 7, &inv).await.unwrap();
    assert_eq!(written.inventories, inv);
    let read = client.get_inventories(uuid).await.unwrap();
    assert_eq!(read, written);

    let traits: BTreeSet<String> = ["COMPUTE_NODE", "OWNER_NOVA", "CUSTOM_CORRAL_LIVE_TEST"]
        .into_iter()
        .map(String::from)
        .collect();
    let t = client
        .set_traits(uuid, read.resource_provider_generation, &traits)
        .await
        .unwrap();
    assert_eq!(t.traits, traits);
    let t = client
        .update_traits(
            uuid,
            &BTreeSet::from(["COMPUTE_IMAGE_TYPE_RAW".to_owned()]),
            &BTreeSet::from(["CUSTOM_CORRAL_LIVE_TEST".to_owned()]),
        )
        .await
        .unwrap();
    assert_eq!(client.get_traits(uuid).await.unwrap(), t);
    assert!(t.traits.contains("COMPUTE_IMAGE_TYPE_RAW"));
    assert!(!t.traits.contains("CUSTOM_CORRAL_LIVE_TEST"));

    let aggs = client.get_aggregates(uuid).await.unwrap();
    assert!(aggs.aggregates.is_empty());

    let consumer = Uuid::new_v4();
    let req = AllocationRequest {
        allocations: BTreeMap::from([(
            uuid,
            ProviderAllocation {
                resources: BTreeMap::from([("VCPU".to_owned(), 1), ("MEMORY_MB".to_owned(), 512)]),
                generation: None,
            },
        )]),
        project_id: "admin".into(),
        user_id: "admin".into(),
        consumer_generation: None,
    };
    client.put_allocations(consumer, &req).await.unwrap();
    let got = client.get_allocations_for_consumer(consumer).await.unwrap();
    assert_eq!(got.allocations[&uuid].resources["MEMORY_MB"], 512);
    let err = client.put_allocations(consumer, &req).await.unwrap_err();
    assert!(
        matches!(err, PlacementError::ConsumerGenerationConflict { .. }),
        "{err}"
    );
    assert!(client
        .get_allocations_for_provider(uuid)
        .await
        .unwrap()
        .allocations
        .contains_key(&consumer));
    let err = client.delete_resource_provider(uuid).await.unwrap_err();
    assert!(matches!(err, PlacementError::ProviderInUse { .. }), "{err}");
    // removing an allocated class is refused
    let err = client
        .set_inventories(uuid, t.resource_provider_generation, &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlacementError::InventoryInUse { .. }),
        "{err}"
    );
    assert!(client.remove_allocations(consumer).await.unwrap());
    client.put_allocations(consumer, &req).await.unwrap();
    assert!(client.delete_allocations(consumer).await.unwrap());
    assert!(!client.delete_allocations(consumer).await.unwrap());

    assert!(client.delete_resource_provider(uuid).await.unwrap());
    assert_eq!(client.get_resource_provider(uuid).await.unwrap(), None);
    assert!(!client.delete_resource_provider(uuid).await.unwrap());
}
