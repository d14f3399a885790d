//! Typed versioned objects a compute handles, and the nova 34 version manifest.
//!
//! Each struct mirrors one `nova/objects/*.py` class at the version nova 34 uses:
//! every field is a [`Field`](super::fields::Field) (unset / null / value) declared in nova's field order
//! (own fields, then `NovaPersistentObject`'s `created_at`, `updated_at`, `deleted_at`,
//! `deleted`), so re-encoding writes fields in the order nova does. Fields this crate
//! does not type (for example those added by a newer minor version) go to `extra` and
//! are written back after the known ones. Object-valued fields this crate has no struct
//! for are kept as generic [`NovaObject`]s.
//!
//! `Serialize`/`Deserialize` of these structs use the full primitive
//! (`nova_object.name`, ...), so they can be used directly as RPC argument types.

pub mod block_device;
pub mod compute_node;
pub mod flavor;
pub mod image_meta;
pub mod instance;
pub mod instance_action;
pub mod manifest;
pub mod migration;
pub mod network_model;
pub mod request_spec;
pub mod scheduling;
pub mod service;

pub use super::object::nova34_version;
pub use block_device::{BlockDeviceMapping, BlockDeviceMappingList};
pub use compute_node::{ComputeNode, ComputeNodeList, HvSpec};
pub use flavor::Flavor;
pub use image_meta::{ImageMeta, ImageMetaProps};
pub use instance::{
    Instance, InstanceExternalEvent, InstanceFault, InstanceInfoCache, InstanceList,
};
pub use instance_action::{InstanceAction, InstanceActionEvent};
pub use manifest::{object_tree_versions, object_versions_arg, NOVA_34_OBJECT_VERSIONS};
pub use migration::{Migration, MigrationList};
pub use network_model::{FixedIp, Ip, Network, NetworkInfo, Route, Subnet, Vif};
pub use request_spec::{Destination, RequestSpec};
pub use scheduling::{NetworkRequest, NetworkRequestList, SchedulerLimits, Selection};
pub use service::Service;

use serde_json::Value;

use super::object::{NovaObject, ObjectError, VersionedObject};

/// Declares a typed versioned object: the struct, `Default`, [`VersionedObject`] and
/// primitive-form `Serialize`/`Deserialize`.
macro_rules! nova_object {
    (
        $(#[$meta:meta])*
        pub struct $ty:ident($wire:literal, $major:literal, $minor:literal) {
            $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $ty {
            $( $(#[$fmeta])* pub $field: super::super::fields::Field<$fty>, )*
            /// Fields not typed here (newer minor versions, rarely used fields), kept in
            /// wire order and re-encoded after the typed ones.
            pub extra: serde_json::Map<String, serde_json::Value>,
            /// Version received (or nova 34's), `nova_object.changes` and other keys.
            pub meta: super::super::object::ObjectMeta,
        }

        impl Default for $ty {
            fn default() -> Self {
                Self {
                    $( $field: super::super::fields::Field::Unset, )*
                    extra: serde_json::Map::new(),
                    meta: super::super::object::ObjectMeta::new(
                        <Self as super::super::object::VersionedObject>::VERSION,
                    ),
                }
            }
        }

        impl super::super::object::VersionedObject for $ty {
            const NAME: &'static str = $wire;
            const VERSION: super::super::object::ObjectVersion =
                super::super::object::ObjectVersion::new($major, $minor);

            fn from_object(
                obj: super::super::object::NovaObject,
            ) -> Result<Self, super::super::object::ObjectError> {
                let (data, meta) = super::super::object::split_for::<Self>(obj)?;
                let mut out = Self { meta, ..Self::default() };
                for (key, value) in data {
                    $(
                        if key == stringify!($field) {
                            out.$field = super::super::object::decode_field($wire, &key, value)?;
                            continue;
                        }
                    )*
                    out.extra.insert(key, value);
                }
                Ok(out)
            }

            fn to_object(&self) -> Result<super::super::object::NovaObject, super::super::object::ObjectError> {
                let mut data = serde_json::Map::new();
                $( super::super::object::encode_field(&mut data, $wire, stringify!($field), &self.$field)?; )*
                for (k, v) in &self.extra {
                    data.insert(k.clone(), v.clone());
                }
                Ok(super::super::object::join_for::<Self>(&self.meta, data))
            }

            fn meta(&self) -> &super::super::object::ObjectMeta {
                &self.meta
            }

            fn meta_mut(&mut self) -> &mut super::super::object::ObjectMeta {
                &mut self.meta
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use super::super::object::VersionedObject as _;
                let value = self.to_primitive().map_err(serde::ser::Error::custom)?;
                serde::Serialize::serialize(&value, serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use super::super::object::VersionedObject as _;
                let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
                Self::from_primitive(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use nova_object;

/// Round-trips `primitive` through its typed struct when this crate has one for its
/// name: `None` for names without a struct, else the re-encoded primitive. Used by the
/// fixture tests and by `nova decode` to prove typed decoding of every object.
pub fn typed_round_trip(primitive: &Value) -> Option<Result<Value, ObjectError>> {
    let name = primitive.get(super::object::KEY_NAME)?.as_str()?;
    fn rt<T: VersionedObject>(v: &Value) -> Result<Value, ObjectError> {
        T::from_primitive(v)?.to_primitive()
    }
    let f: fn(&Value) -> Result<Value, ObjectError> = match name {
        "Instance" => rt::<Instance>,
        "InstanceList" => rt::<InstanceList>,
        "InstanceInfoCache" => rt::<InstanceInfoCache>,
        "InstanceFault" => rt::<InstanceFault>,
        "InstanceExternalEvent" => rt::<InstanceExternalEvent>,
        "Flavor" => rt::<Flavor>,
        "ImageMeta" => rt::<ImageMeta>,
        "ImageMetaProps" => rt::<ImageMetaProps>,
        "RequestSpec" => rt::<RequestSpec>,
        "Destination" => rt::<Destination>,
        "SchedulerLimits" => rt::<SchedulerLimits>,
        "Service" => rt::<Service>,
        "ComputeNode" => rt::<ComputeNode>,
        "ComputeNodeList" => rt::<ComputeNodeList>,
        "HVSpec" => rt::<HvSpec>,
        "InstanceAction" => rt::<InstanceAction>,
        "InstanceActionEvent" => rt::<InstanceActionEvent>,
        "BlockDeviceMapping" => rt::<BlockDeviceMapping>,
        "BlockDeviceMappingList" => rt::<BlockDeviceMappingList>,
        "Migration" => rt::<Migration>,
        "MigrationList" => rt::<MigrationList>,
        "NetworkRequest" => rt::<NetworkRequest>,
        "NetworkRequestList" => rt::<NetworkRequestList>,
        "Selection" => rt::<Selection>,
        _ => return None,
    };
    Some(f(primitive))
}

/// Names of the objects [`typed_round_trip`] types.
pub const TYPED_OBJECTS: &[&str] = &[
    "BlockDeviceMapping",
    "BlockDeviceMappingList",
    "ComputeNode",
    "ComputeNodeList",
    "Destination",
    "Flavor",
    "HVSpec",
    "ImageMeta",
    "ImageMetaProps",
    "Instance",
    "InstanceAction",
    "InstanceActionEvent",
    "InstanceExternalEvent",
    "InstanceFault",
    "InstanceInfoCache",
    "InstanceList",
    "Migration",
    "MigrationList",
    "NetworkRequest",
    "NetworkRequestList",
    "RequestSpec",
    "SchedulerLimits",
    "Selection",
    "Service",
];

/// Decodes a generic object into a typed one.
pub fn to_typed<T: VersionedObject>(obj: NovaObject) -> Result<T, ObjectError> {
    T::from_object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_versions_match_the_manifest() {
        fn check<T: VersionedObject>() {
            assert_eq!(nova34_version(T::NAME), Some(T::VERSION), "{}", T::NAME);
        }
        check::<Instance>();
        check::<InstanceList>();
        check::<InstanceInfoCache>();
        check::<InstanceFault>();
        check::<InstanceExternalEvent>();
        check::<Flavor>();
        check::<ImageMeta>();
        check::<ImageMetaProps>();
        check::<RequestSpec>();
        check::<Destination>();
        check::<SchedulerLimits>();
        check::<Service>();
        check::<ComputeNode>();
        check::<ComputeNodeList>();
        check::<HvSpec>();
        check::<InstanceAction>();
        check::<InstanceActionEvent>();
        check::<BlockDeviceMapping>();
        check::<BlockDeviceMappingList>();
        check::<Migration>();
        check::<MigrationList>();
        check::<NetworkRequest>();
        check::<NetworkRequestList>();
        check::<Selection>();
        for name in TYPED_OBJECTS {
            assert!(nova34_version(name).is_some());
        }
    }
}
