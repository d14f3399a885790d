//! Wire types of the Placement API, shaped after what placement 16.0.0 returns at the
//! microversions nova-compute 34 uses (see `docs/nova-wire-protocol.md` §7).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Microversions nova-compute 34 sends per call (`nova/scheduler/client/report.py`).
///
/// Kept in one place so a reader can compare them with the captured traffic; a call that
/// nova makes without a microversion has no constant and sends no header (1.0 behaviour).
pub mod microversion {
    /// `GET /resource_providers?in_tree=` and `GET /resource_providers/{uuid}`.
    pub const NESTED_PROVIDER: &str = "1.14";
    /// `POST /resource_providers`: the first version whose create answers with the body.
    pub const POST_RPS_RETURNS_PAYLOAD: &str = "1.20";
    /// `GET /resource_providers/{uuid}/aggregates` with the provider generation.
    pub const AGGREGATE_GENERATION: &str = "1.19";
    /// `PUT /resource_providers/{uuid}/inventories`: allows `reserved == total`.
    pub const ALLOW_RESERVED_EQUAL_TOTAL: &str = "1.26";
    /// Traits: `GET /traits`, `PUT /traits/{name}`, `GET`/`PUT /resource_providers/{uuid}/traits`.
    pub const TRAITS: &str = "1.6";
    /// `PUT /resource_classes/{CUSTOM_*}` creates or validates a custom class.
    pub const RESOURCE_CLASS_PUT: &str = "1.7";
    /// `GET`/`PUT /allocations/{consumer}` with consumer generations.
    pub const CONSUMER_GENERATION: &str = "1.28";
}

/// Placement error codes (only present at microversion >= 1.23).
pub mod error_code {
    /// Provider or consumer generation mismatch.
    pub const CONCURRENT_UPDATE: &str = "placement.concurrent_update";
    /// Removing inventory of a class that has allocations.
    pub const INVENTORY_IN_USE: &str = "placement.inventory.inuse";
    /// Another provider already has the name.
    pub const DUPLICATE_NAME: &str = "placement.duplicate_name";
}

/// A resource provider as returned at microversion >= 1.14.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceProvider {
    pub uuid: Uuid,
    pub name: String,
    /// Every provider write must carry this; placement bumps it on each change.
    pub generation: u64,
    #[serde(default)]
    pub parent_provider_uuid: Option<Uuid>,
    #[serde(default)]
    pub root_provider_uuid: Option<Uuid>,
}

/// One inventory record; nova sends all six fields, so do we.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub total: u64,
    pub reserved: u64,
    pub min_unit: u64,
    pub max_unit: u64,
    pub step_size: u64,
    pub allocation_ratio: f64,
}

impl Inventory {
    /// The libvirt/fake driver pattern: units of one, `max_unit == total`.
    pub fn simple(total: u64, reserved: u64, allocation_ratio: f64) -> Self {
        Self {
            total,
            reserved,
            min_unit: 1,
            max_unit: total,
            step_size: 1,
            allocation_ratio,
        }
    }
}

/// Inventories of a provider together with the generation they were read or written at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderInventories {
    pub resource_provider_generation: u64,
    pub inventories: BTreeMap<String, Inventory>,
}

/// Traits of a provider together with the generation they were read or written at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTraits {
    pub resource_provider_generation: u64,
    pub traits: BTreeSet<String>,
}

/// Aggregates of a provider (microversion 1.19 adds the generation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAggregates {
    pub resource_provider_generation: u64,
    pub aggregates: BTreeSet<Uuid>,
}

/// Amounts per resource class held by one consumer on one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAllocation {
    pub resources: BTreeMap<String, u64>,
    /// Present in `GET /allocations/{consumer}` answers, absent in `PUT` bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// `GET /allocations/{consumer}` at 1.28.
///
/// Placement answers `{"allocations": {}}` (no generation, no project) for an unknown
/// consumer instead of 404, hence the optional fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerAllocations {
    pub allocations: BTreeMap<Uuid, ProviderAllocation>,
    #[serde(default)]
    pub consumer_generation: Option<u64>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Body of `PUT /allocations/{consumer}` at 1.28.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRequest {
    pub allocations: BTreeMap<Uuid, ProviderAllocation>,
    pub project_id: String,
    pub user_id: String,
    /// Serialized as `null` for a new consumer: 1.28 requires the key to be present.
    pub consumer_generation: Option<u64>,
}

/// Resources of one consumer as listed under a provider (no per-provider generation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerResources {
    pub resources: BTreeMap<String, u64>,
}

/// `GET /resource_providers/{uuid}/allocations` (no microversion, like nova).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAllocations {
    pub resource_provider_generation: u64,
    pub allocations: BTreeMap<Uuid, ConsumerResources>,
}

/// The root document (`GET /`), which nova's SDK adapter reads once at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersion {
    pub id: String,
    pub min_version: String,
    pub max_version: String,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct VersionsDoc {
    pub versions: Vec<ApiVersion>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProviderList {
    pub resource_providers: Vec<ResourceProvider>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TraitList {
    pub traits: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CreateProvider<'a> {
    pub uuid: Uuid,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_provider_uuid: Option<Uuid>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PutInventories<'a> {
    pub resource_provider_generation: u64,
    pub inventories: &'a BTreeMap<String, Inventory>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PutTraits<'a> {
    pub resource_provider_generation: u64,
    pub traits: Vec<&'a str>,
}

/// Placement's error document: `{"errors": [{"status", "title", "detail", "code"?, "request_id"}]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorDoc {
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEntry {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Whether a name is in the custom namespace, the only one the compute may create.
pub fn is_custom(name: &str) -> bool {
    name.starts_with("CUSTOM_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_generation_null_is_sent() {
        let req = AllocationRequest {
            allocations: BTreeMap::new(),
            project_id: "p".into(),
            user_id: "u".into(),
            consumer_generation: None,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert!(v.get("consumer_generation").unwrap().is_null());
    }

    #[test]
    fn inventory_matches_captured_shape() {
        let inv = Inventory::simple(1000, 0, 4.0);
        let s = serde_json::to_string(&inv).unwrap();
        assert_eq!(
            s,
            r#"{"total":1000,"reserved":0,"min_unit":1,"max_unit":1000,"step_size":1,"allocation_ratio":4.0}"#
        );
    }

    #[test]
    fn parses_captured_consumer_allocations() {
        let body = r#"{"allocations": {"963e4fc6-0b74-4d1d-9966-7e75b0fde662": {"resources": {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}, "generation": 5}}, "project_id": "admin", "user_id": "admin", "consumer_generation": 1}"#;
        let a: ConsumerAllocations = serde_json::from_str(body).unwrap();
        assert_eq!(a.consumer_generation, Some(1));
        let empty: ConsumerAllocations = serde_json::from_str(r#"{"allocations": {}}"#).unwrap();
        assert!(empty.allocations.is_empty());
        assert_eq!(empty.consumer_generation, None);
    }
}
