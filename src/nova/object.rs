//! The versioned-object primitive (`oslo_versionedobjects.base.obj_to_primitive`).
//!
//! ```text
//! {"nova_object.name": "Instance", "nova_object.namespace": "nova",
//!  "nova_object.version": "2.8", "nova_object.data": {...only set fields...},
//!  "nova_object.changes": ["task_state"]}
//! ```
//!
//! [`NovaObject`] is the generic form: any object, data kept as JSON in wire order, so
//! objects this crate has no struct for (and fields it does not know) still round-trip.
//! Typed structs in `objects/` convert to and from it through [`VersionedObject`].
//!
//! Versions: an object at the same major and an older or equal minor than Nova 34's is
//! read as is; a *newer minor* (controllers upgraded before computes) is read
//! tolerantly, unknown fields kept in `extra` and written back; another major is an
//! error ([`ObjectError::NewerMajorVersion`] / [`ObjectError::IncompatibleVersion`]),
//! as oslo's `IncompatibleObjectVersion`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::objects::manifest;

/// Key prefix of object primitives (`NovaObject.OBJ_SERIAL_NAMESPACE`).
pub const OBJ_SERIAL_NAMESPACE: &str = "nova_object";
/// The only object namespace nova accepts (`NovaObject.OBJ_PROJECT_NAMESPACE`).
pub const OBJ_PROJECT_NAMESPACE: &str = "nova";
/// `nova_object.name`
pub const KEY_NAME: &str = "nova_object.name";
/// `nova_object.namespace`
pub const KEY_NAMESPACE: &str = "nova_object.namespace";
/// `nova_object.version`
pub const KEY_VERSION: &str = "nova_object.version";
/// `nova_object.data`
pub const KEY_DATA: &str = "nova_object.data";
/// `nova_object.changes`
pub const KEY_CHANGES: &str = "nova_object.changes";

/// Errors of the object codec.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The value is not a JSON object.
    #[error("object primitive is not a JSON object")]
    NotAnObject,
    /// A required `nova_object.*` key is absent.
    #[error("object primitive has no {0}")]
    MissingKey(&'static str),
    /// A `nova_object.*` key has the wrong JSON type.
    #[error("{key} of an object primitive must be {expected}")]
    BadKey {
        /// The key.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// Namespace other than `nova` (oslo `UnsupportedObjectError`).
    #[error("unsupported object namespace {0:?}")]
    UnsupportedNamespace(String),
    /// Not `major.minor[.patch]` with integers.
    #[error("invalid object version {0:?}")]
    InvalidVersion(String),
    /// Name not registered in nova 34 (oslo `UnsupportedObjectError`).
    #[error("unknown object {0:?}")]
    UnknownObject(String),
    /// Major version above the one nova 34 implements.
    #[error("{name} {found} has a newer major version than the supported {supported}")]
    NewerMajorVersion {
        /// Object name.
        name: String,
        /// Version received.
        found: ObjectVersion,
        /// Version nova 34 implements.
        supported: ObjectVersion,
    },
    /// Older major version (oslo `IncompatibleObjectVersion`).
    #[error("{name} {found} is incompatible with the supported {supported}")]
    IncompatibleVersion {
        /// Object name.
        name: String,
        /// Version received.
        found: ObjectVersion,
        /// Version nova 34 implements.
        supported: ObjectVersion,
    },
    /// A typed conversion was given another object.
    #[error("expected a {expected} object, got {found}")]
    WrongObject {
        /// Name the typed struct stands for.
        expected: &'static str,
        /// Name received.
        found: String,
    },
    /// A field value does not decode into its typed field.
    #[error("invalid field {object}.{field}")]
    InvalidField {
        /// Object name.
        object: &'static str,
        /// Field name.
        field: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A `major.minor` object (or RPC API) version; a third component is kept if present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectVersion {
    /// Major: incompatible changes.
    pub major: u32,
    /// Minor: compatible additions.
    pub minor: u32,
    /// Rare third component (oslo retries such versions as `major.minor`).
    pub patch: Option<u32>,
}

impl ObjectVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor,
            patch: None,
        }
    }

    /// oslo `version_is_compatible(implemented, self)`: same major and not newer.
    pub fn is_compatible_with(&self, implemented: ObjectVersion) -> bool {
        self.major == implemented.major && *self <= implemented
    }
}

impl PartialOrd for ObjectVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch.unwrap_or(0)).cmp(&(
            other.major,
            other.minor,
            other.patch.unwrap_or(0),
        ))
    }
}

impl FromStr for ObjectVersion {
    type Err = ObjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ObjectError::InvalidVersion(s.to_string());
        let mut parts = s.split('.');
        let part = |p: Option<&str>| -> Result<u32, ObjectError> {
            let p = p.ok_or_else(bad)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let major = part(parts.next())?;
        let minor = part(parts.next())?;
        let patch = match parts.next() {
            Some(p) => Some(part(Some(p))?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for ObjectVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(p) = self.patch {
            write!(f, ".{p}")?;
        }
        Ok(())
    }
}

impl Serialize for ObjectVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// How a received object version relates to the one nova 34 implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSupport {
    /// Same version.
    Exact,
    /// Older minor: every field it has is known.
    OlderMinor,
    /// Newer minor: may carry fields this crate keeps opaquely in `extra`.
    NewerMinor,
}

/// The version nova 34 implements for `name`, if registered.
pub fn nova34_version(name: &str) -> Option<ObjectVersion> {
    manifest::nova34_version_str(name)?.parse().ok()
}

/// Checks an object name and version against the nova 34 manifest.
pub fn check_supported(name: &str, version: ObjectVersion) -> Result<VersionSupport, ObjectError> {
    let supported = nova34_version(name).ok_or_else(|| ObjectError::UnknownObject(name.into()))?;
    compare_versions(name, version, supported)
}

/// Compares a received version with the implemented one.
pub fn compare_versions(
    name: &str,
    found: ObjectVersion,
    supported: ObjectVersion,
) -> Result<VersionSupport, ObjectError> {
    match found.major.cmp(&supported.major) {
        Ordering::Greater => Err(ObjectError::NewerMajorVersion {
            name: name.to_string(),
            found,
            supported,
        }),
        Ordering::Less => Err(ObjectError::IncompatibleVersion {
            name: name.to_string(),
            found,
            supported,
        }),
        Ordering::Equal => Ok(match found.cmp(&supported) {
            Ordering::Equal => VersionSupport::Exact,
            Ordering::Less => VersionSupport::OlderMinor,
            Ordering::Greater => VersionSupport::NewerMinor,
        }),
    }
}

/// Any versioned object, generic: name, version, field data in wire order, changes.
#[derive(Clone, Debug, PartialEq)]
pub struct NovaObject {
    /// `nova_object.name`, e.g. `Instance`.
    pub name: String,
    /// `nova_object.namespace`; always `nova` once decoded.
    pub namespace: String,
    /// `nova_object.version`.
    pub version: ObjectVersion,
    /// `nova_object.data`: only the fields that are set.
    pub data: Map<String, Value>,
    /// `nova_object.changes`: `None` when absent (oslo omits it when empty). The
    /// conductor persists exactly these fields on `save`/`create`.
    pub changes: Option<Vec<String>>,
    /// Any other keys of the primitive (none from oslo), kept for re-encoding.
    pub extra: Map<String, Value>,
}

impl NovaObject {
    /// An empty object of `name` at `version`.
    pub fn new(name: impl Into<String>, version: ObjectVersion) -> Self {
        Self {
            name: name.into(),
            namespace: OBJ_PROJECT_NAMESPACE.to_string(),
            version,
            data: Map::new(),
            changes: None,
            extra: Map::new(),
        }
    }

    /// An empty object at the version nova 34 uses for `name`.
    pub fn new_nova34(name: &str) -> Result<Self, ObjectError> {
        let version =
            nova34_version(name).ok_or_else(|| ObjectError::UnknownObject(name.into()))?;
        Ok(Self::new(name, version))
    }

    /// True when `value` is an object primitive: nova decodes any dict with
    /// `nova_object.name` as an object, at any depth.
    pub fn is_primitive(value: &Value) -> bool {
        value.as_object().is_some_and(|m| m.contains_key(KEY_NAME))
    }

    /// Decodes the primitive's structure (keys, namespace, version syntax). Does not
    /// consult the manifest: see [`NovaObject::from_primitive_checked`].
    pub fn from_primitive(value: &Value) -> Result<Self, ObjectError> {
        let map = value.as_object().ok_or(ObjectError::NotAnObject)?;
        Self::from_map(map.clone())
    }

    /// Like [`NovaObject::from_primitive`], taking ownership.
    pub fn from_value(value: Value) -> Result<Self, ObjectError> {
        match value {
            Value::Object(map) => Self::from_map(map),
            _ => Err(ObjectError::NotAnObject),
        }
    }

    fn from_map(map: Map<String, Value>) -> Result<Self, ObjectError> {
        let mut name = None;
        let mut namespace = None;
        let mut version = None;
        let mut data = None;
        let mut changes = None;
        let mut extra = Map::new();
        for (key, value) in map {
            match key.as_str() {
                KEY_NAME => name = Some(value),
                KEY_NAMESPACE => namespace = Some(value),
                KEY_VERSION => version = Some(value),
                KEY_DATA => data = Some(value),
                KEY_CHANGES => changes = Some(value),
                _ => {
                    extra.insert(key, value);
                }
            }
        }
        let name = match name.ok_or(ObjectError::MissingKey(KEY_NAME))? {
            Value::String(s) => s,
            _ => return Err(bad_key(KEY_NAME, "a string")),
        };
        let namespace = match namespace.ok_or(ObjectError::MissingKey(KEY_NAMESPACE))? {
            Value::String(s) => s,
            _ => return Err(bad_key(KEY_NAMESPACE, "a string")),
        };
        if namespace != OBJ_PROJECT_NAMESPACE {
            return Err(ObjectError::UnsupportedNamespace(namespace));
        }
        let version = match version.ok_or(ObjectError::MissingKey(KEY_VERSION))? {
            Value::String(s) => s.parse()?,
            _ => return Err(bad_key(KEY_VERSION, "a string")),
        };
        let data = match data.ok_or(ObjectError::MissingKey(KEY_DATA))? {
            Value::Object(m) => m,
            _ => return Err(bad_key(KEY_DATA, "a JSON object")),
        };
        let changes = match changes {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(bad_key(KEY_CHANGES, "a list of strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(bad_key(KEY_CHANGES, "a list of strings")),
        };
        Ok(Self {
            name,
            namespace,
            version,
            data,
            changes,
            extra,
        })
    }

    /// Decodes and checks name and version against the nova 34 manifest.
    pub fn from_primitive_checked(value: &Value) -> Result<Self, ObjectError> {
        let obj = Self::from_primitive(value)?;
        obj.check_supported()?;
        Ok(obj)
    }

    /// Checks this object's name and version against the nova 34 manifest.
    pub fn check_supported(&self) -> Result<VersionSupport, ObjectError> {
        check_supported(&self.name, self.version)
    }

    /// The primitive, keys in oslo's order (name, namespace, version, data, changes).
    pub fn to_primitive(&self) -> Value {
        let mut map = Map::new();
        map.insert(KEY_NAME.into(), Value::String(self.name.clone()));
        map.insert(KEY_NAMESPACE.into(), Value::String(self.namespace.clone()));
        map.insert(KEY_VERSION.into(), Value::String(self.version.to_string()));
        map.insert(KEY_DATA.into(), Value::Object(self.data.clone()));
        if let Some(changes) = &self.changes {
            map.insert(
                KEY_CHANGES.into(),
                Value::Array(changes.iter().cloned().map(Value::String).collect()),
            );
        }
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        Value::Object(map)
    }

    /// A field's value, if set.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.data.get(field)
    }

    /// True when the field is set (possibly to null).
    pub fn is_set(&self, field: &str) -> bool {
        self.data.contains_key(field)
    }

    /// Sets a field and records it as changed, as oslo's attribute setter does (even
    /// when the value is the same).
    pub fn set(&mut self, field: &str, value: Value) {
        self.data.insert(field.to_string(), value);
        self.mark_changed(field);
    }

    /// Records `field` as changed.
    pub fn mark_changed(&mut self, field: &str) {
        let changes = self.changes.get_or_insert_with(Vec::new);
        if !changes.iter().any(|c| c == field) {
            changes.push(field.to_string());
        }
    }

    /// Forgets all changes (`obj_reset_changes()`), e.g. after a successful save.
    pub fn reset_changes(&mut self) {
        self.changes = None;
    }

    /// oslo `obj_what_changed()`: own changes plus every set object field whose nested
    /// object (or list element) has changes of its own.
    pub fn what_changed(&self) -> Vec<String> {
        let mut out: Vec<String> = self.changes.clone().unwrap_or_default();
        for (field, value) in &self.data {
            if out.iter().any(|c| c == field) {
                continue;
            }
            if nested_has_changes(value) {
                out.push(field.clone());
            }
        }
        out
    }

    /// A nested object field, decoded generically; `Ok(None)` when unset or null.
    pub fn child(&self, field: &str) -> Result<Option<NovaObject>, ObjectError> {
        match self.data.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::from_primitive(v).map(Some),
        }
    }

    /// The elements of a `*List` object (its `objects` field).
    pub fn list_objects(&self) -> Result<Vec<NovaObject>, ObjectError> {
        match self.data.get("objects") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(Self::from_primitive).collect(),
            Some(_) => Err(ObjectError::BadKey {
                key: KEY_DATA,
                expected: "a list under objects",
            }),
        }
    }

    /// A copy holding only the changed fields plus `keep` (identity fields such as
    /// `uuid`/`id`), for callers that want a minimal payload. oslo itself sends all set
    /// fields; the conductor writes only those listed in `changes` either way.
    pub fn only_changes(&self, keep: &[&str]) -> NovaObject {
        let changed = self.what_changed();
        let mut out = self.clone();
        out.data = self
            .data
            .iter()
            .filter(|(k, _)| changed.iter().any(|c| c == *k) || keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out
    }
}

fn nested_has_changes(value: &Value) -> bool {
    match value {
        Value::Object(map) if map.contains_key(KEY_NAME) => {
            let own = map
                .get(KEY_CHANGES)
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty());
            own || map
                .get(KEY_DATA)
                .and_then(Value::as_object)
                .is_some_and(|d| d.values().any(nested_has_changes))
        }
        Value::Array(items) => items.iter().any(nested_has_changes),
        _ => false,
    }
}

fn bad_key(key: &'static str, expected: &'static str) -> ObjectError {
    ObjectError::BadKey { key, expected }
}

impl Serialize for NovaObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_primitive().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NovaObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        NovaObject::from_value(Value::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

/// Calls `f` for every object primitive inside `value`, at any depth (including inside
/// other objects' data), outermost first.
pub fn walk_primitives<'a>(value: &'a Value, f: &mut dyn FnMut(&'a Value)) {
    match value {
        Value::Object(map) => {
            if map.contains_key(KEY_NAME) {
                f(value);
            }
            for v in map.values() {
                walk_primitives(v, f);
            }
        }
        Value::Array(items) => {
            for v in items {
                walk_primitives(v, f);
            }
        }
        _ => {}
    }
}

/// Checks every object primitive inside `value` against the nova 34 manifest: the
/// receiving nova would reject the message otherwise.
pub fn check_all_primitives(value: &Value) -> Result<(), ObjectError> {
    let mut result = Ok(());
    walk_primitives(value, &mut |v| {
        if result.is_ok() {
            result = NovaObject::from_primitive_checked(v).map(|_| ());
        }
    });
    result
}

/// Version, changes and other non-data parts of a decoded typed object.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectMeta {
    /// Version received, or nova 34's for new objects. Re-encoding keeps it.
    pub version: ObjectVersion,
    /// `nova_object.changes`, `None` when absent.
    pub changes: Option<Vec<String>>,
    /// Other primitive keys, kept.
    pub extra: Map<String, Value>,
}

impl ObjectMeta {
    /// Meta of a new object at `version` with no changes.
    pub fn new(version: ObjectVersion) -> Self {
        Self {
            version,
            changes: None,
            extra: Map::new(),
        }
    }
}

/// A typed versioned object: conversion to and from [`NovaObject`].
pub trait VersionedObject: Sized {
    /// `nova_object.name`.
    const NAME: &'static str;
    /// Version nova 34 uses (`VERSION` in `nova/objects/*.py`).
    const VERSION: ObjectVersion;

    /// From the generic form; checks name and major version.
    fn from_object(obj: NovaObject) -> Result<Self, ObjectError>;

    /// To the generic form, fields in nova's order, unknown fields after them.
    fn to_object(&self) -> Result<NovaObject, ObjectError>;

    /// Version, changes and extra keys.
    fn meta(&self) -> &ObjectMeta;

    /// Mutable version, changes and extra keys.
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// From a primitive.
    fn from_primitive(value: &Value) -> Result<Self, ObjectError> {
        Self::from_object(NovaObject::from_primitive(value)?)
    }

    /// To a primitive.
    fn to_primitive(&self) -> Result<Value, ObjectError> {
        Ok(self.to_object()?.to_primitive())
    }

    /// Records `field` as changed so a `save`/`create` persists it.
    fn mark_changed(&mut self, field: &str) {
        let changes = self.meta_mut().changes.get_or_insert_with(Vec::new);
        if !changes.iter().any(|c| c == field) {
            changes.push(field.to_string());
        }
    }

    /// Adds to the changes every field whose encoded value differs from `before` (set,
    /// unset or modified, nested objects included). The usual pattern: clone, modify,
    /// `record_changes_since(&clone)`, then send `object_action(save)`.
    fn record_changes_since(&mut self, before: &Self) -> Result<Vec<String>, ObjectError> {
        let old = before.to_object()?.data;
        let new = self.to_object()?.data;
        let mut changed = Vec::new();
        for (k, v) in &new {
            if old.get(k) != Some(v) {
                changed.push(k.clone());
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) && !changed.contains(k) {
                changed.push(k.clone());
            }
        }
        for field in &changed {
            self.mark_changed(field);
        }
        Ok(changed)
    }

    /// Forgets all changes.
    fn reset_changes(&mut self) {
        self.meta_mut().changes = None;
    }
}

/// Splits a generic object for a typed conversion: checks name and major version.
pub(crate) fn split_for<T: VersionedObject>(
    obj: NovaObject,
) -> Result<(Map<String, Value>, ObjectMeta), ObjectError> {
    if obj.name != T::NAME {
        return Err(ObjectError::WrongObject {
            expected: T::NAME,
            found: obj.name,
        });
    }
    compare_versions(T::NAME, obj.version, T::VERSION)?;
    Ok((
        obj.data,
        ObjectMeta {
            version: obj.version,
            changes: obj.changes,
            extra: obj.extra,
        },
    ))
}

/// Joins typed data back into a generic object.
pub(crate) fn join_for<T: VersionedObject>(
    meta: &ObjectMeta,
    data: Map<String, Value>,
) -> NovaObject {
    NovaObject {
        name: T::NAME.to_string(),
        namespace: OBJ_PROJECT_NAMESPACE.to_string(),
        version: meta.version,
        data,
        changes: meta.changes.clone(),
        extra: meta.extra.clone(),
    }
}

/// Decodes one field value for a typed object.
pub(crate) fn decode_field<T: serde::de::DeserializeOwned>(
    object: &'static str,
    field: &str,
    value: Value,
) -> Result<super::fields::Field<T>, ObjectError> {
    serde_json::from_value(value).map_err(|source| ObjectError::InvalidField {
        object,
        field: field.to_string(),
        source,
    })
}

/// Encodes one typed field into `data` unless unset.
pub(crate) fn encode_field<T: Serialize>(
    data: &mut Map<String, Value>,
    object: &'static str,
    field: &str,
    value: &super::fields::Field<T>,
) -> Result<(), ObjectError> {
    if value.is_unset() {
        return Ok(());
    }
    let v = serde_json::to_value(value).map_err(|source| ObjectError::InvalidField {
        object,
        field: field.to_string(),
        source,
    })?;
    data.insert(field.to_string(), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_parse_compare_and_print() {
        let v: ObjectVersion = "2.8".parse().unwrap();
        assert_eq!(v, ObjectVersion::new(2, 8));
        assert!(ObjectVersion::new(1, 9) < ObjectVersion::new(1, 10));
        assert_eq!(
            "1.2.3".parse::<ObjectVersion>().unwrap().to_string(),
            "1.2.3"
        );
        for bad in ["", "2", "2.x", "a.b", "1..2", "1.2.3.4", "-1.0"] {
            assert!(bad.parse::<ObjectVersion>().is_err(), "{bad}");
        }
        assert!(ObjectVersion::new(2, 6).is_compatible_with(ObjectVersion::new(2, 8)));
        assert!(!ObjectVersion::new(2, 9).is_compatible_with(ObjectVersion::new(2, 8)));
    }

    #[test]
    fn manifest_versions_parse() {
        for (name, v) in super::super::objects::NOVA_34_OBJECT_VERSIONS {
            assert!(v.parse::<ObjectVersion>().is_ok(), "{name}");
        }
        assert_eq!(nova34_version("Instance"), Some(ObjectVersion::new(2, 8)));
        assert_eq!(nova34_version("NoSuchObject"), None);
    }

    #[test]
    fn version_support_against_manifest() {
        assert_eq!(
            check_supported("Instance", ObjectVersion::new(2, 8)).unwrap(),
            VersionSupport::Exact
        );
        assert_eq!(
            check_supported("Instance", ObjectVersion::new(2, 99)).unwrap(),
            VersionSupport::NewerMinor
        );
        assert!(matches!(
            check_supported("Instance", ObjectVersion::new(3, 0)),
            Err(ObjectError::NewerMajorVersion { .. })
        ));
        assert!(matches!(
            check_supported("Instance", ObjectVersion::new(1, 0)),
            Err(ObjectError::IncompatibleVersion { .. })
        ));
        assert!(matches!(
            check_supported("Gadget", ObjectVersion::new(1, 0)),
            Err(ObjectError::UnknownObject(_))
        ));
    }

    #[test]
    fn primitive_round_trips_and_tracks_changes() {
        let p = json!({"nova_object.name": "Service", "nova_object.namespace": "nova",
            "nova_object.version": "1.22", "nova_object.data": {"host": "h", "report_count": 1}});
        let mut o = NovaObject::from_primitive_checked(&p).unwrap();
        assert_eq!(o.to_primitive(), p);
        o.set("report_count", json!(2));
        assert_eq!(o.what_changed(), vec!["report_count"]);
        assert_eq!(
            o.to_primitive()["nova_object.changes"],
            json!(["report_count"])
        );
        assert_eq!(o.only_changes(&["host"]).data.len(), 2);
        o.reset_changes();
        assert!(o.to_primitive().get(KEY_CHANGES).is_none());
    }

    #[test]
    fn nested_changes_count_as_changes_of_the_parent() {
        let p = json!({"nova_object.name": "Instance", "nova_object.namespace": "nova",
            "nova_object.version": "2.8", "nova_object.data": {"uuid": "u",
            "info_cache": {"nova_object.name": "InstanceInfoCache", "nova_object.namespace": "nova",
              "nova_object.version": "1.5", "nova_object.data": {"network_info": "[]"},
              "nova_object.changes": ["network_info"]}}});
        let o = NovaObject::from_primitive(&p).unwrap();
        assert_eq!(o.what_changed(), vec!["info_cache"]);
    }

    #[test]
    fn malformed_primitives_are_typed_errors() {
        let base = json!({"nova_object.name": "Service", "nova_object.namespace": "nova",
            "nova_object.version": "1.22", "nova_object.data": {}});
        assert!(matches!(
            NovaObject::from_primitive(&json!([])),
            Err(ObjectError::NotAnObject)
        ));
        for (key, value) in [
            (KEY_NAMESPACE, json!("cinder")),
            (KEY_VERSION, json!("x")),
            (KEY_DATA, json!([])),
            (KEY_CHANGES, json!("a")),
        ] {
            let mut p = base.clone();
            p[key] = value;
            assert!(NovaObject::from_primitive(&p).is_err(), "{key}");
        }
        let mut p = base.clone();
        p.as_object_mut().unwrap().remove(KEY_DATA);
        assert!(matches!(
            NovaObject::from_primitive(&p),
            Err(ObjectError::MissingKey(KEY_DATA))
        ));
        let mut p = base;
        p[KEY_NAME] = json!("Gadget");
        assert!(matches!(
            NovaObject::from_primitive_checked(&p),
            Err(ObjectError::UnknownObject(_))
        ));
    }
}
