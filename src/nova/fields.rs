//! Field encodings of Nova versioned objects and RPC arguments.
//!
//! * [`Field`]: a field is *unset* (absent from `nova_object.data`), *null* or set.
//!   Nova distinguishes the first two (an unset field is lazy-loaded, a null one is a
//!   value), so the model keeps all three and re-encodes exactly what it received.
//! * [`NovaDateTime`]: Nova puts two datetime formats on the wire (object fields
//!   `2026-01-02T03:04:05Z` from `oslo_versionedobjects._utils.isotime`; the context
//!   `timestamp` and datetimes inside plain dicts `2026-01-02T03:04:05.678901`, no zone,
//!   from `PERFECT_TIME_FORMAT`) and accepts ISO 8601 with offsets. A parsed value
//!   remembers its layout so it is written back unchanged.
//! * [`JsonString`]: fields that are JSON text inside JSON (`InstanceInfoCache.network_info`,
//!   `ComputeNode.numa_topology`/`metrics`, `Selection.allocation_request`).
//! * [`FlexBool`]: oslo's `FlexibleBooleanField`, which accepts `"yes"`, `"1"`, ...
//! * [`Dict`]: `DictOf*Field` values (`metadata`, `system_metadata`, `extra_specs`),
//!   typed but in wire order, so re-encoding reproduces nova's bytes.

use std::fmt;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::pyjson;

/// Errors of field decoding.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// A datetime string in none of the layouts Nova's `parse_isotime` accepts.
    #[error("invalid datetime {0:?}")]
    InvalidDateTime(String),
    /// A JSON-in-JSON field whose string is not valid JSON of the expected shape.
    #[error("invalid JSON inside string field")]
    InvalidJsonString(#[source] serde_json::Error),
}

/// One field of a versioned object or one RPC argument: unset, null, or a value.
///
/// Encoders skip [`Field::Unset`] (use
/// `#[serde(default, skip_serializing_if = "Field::is_unset")]`), write `null` for
/// [`Field::Null`] and the value for [`Field::Set`].
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Field<T> {
    /// Not present on the wire (for an object: attribute not loaded).
    #[default]
    Unset,
    /// Present as JSON `null`.
    Null,
    /// Present with a value.
    Set(T),
}

impl<T> Field<T> {
    /// True when the field is absent; used by `skip_serializing_if`.
    pub fn is_unset(&self) -> bool {
        matches!(self, Field::Unset)
    }

    /// True when the field is present as `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Field::Null)
    }

    /// True when the field holds a value.
    pub fn is_set(&self) -> bool {
        matches!(self, Field::Set(_))
    }

    /// The value, if any (unset and null both give `None`).
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Mutable access to the value, if any.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Consumes the field, giving the value if any.
    pub fn into_option(self) -> Option<T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    /// `Some(v)` becomes set, `None` becomes null (never unset: an explicit value).
    pub fn from_option(value: Option<T>) -> Self {
        match value {
            Some(v) => Field::Set(v),
            None => Field::Null,
        }
    }

    /// Borrowing view.
    pub fn as_ref(&self) -> Field<&T> {
        match self {
            Field::Unset => Field::Unset,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(v),
        }
    }
}

impl Field<String> {
    /// The string value, if any.
    pub fn as_str(&self) -> Option<&str> {
        self.get().map(String::as_str)
    }
}

impl<T> From<T> for Field<T> {
    fn from(value: T) -> Self {
        Field::Set(value)
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Set(v) => v.serialize(serializer),
            Field::Unset | Field::Null => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Field::from_option(Option::<T>::deserialize(deserializer)?))
    }
}

/// How a datetime's zone was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneStyle {
    /// Trailing `Z` (oslo `isotime`, object fields).
    Z,
    /// Trailing `+HH:MM` (Python `isoformat()` of an aware datetime).
    Offset,
    /// No zone: naive UTC (`PERFECT_TIME_FORMAT`, context `timestamp`).
    Naive,
}

/// The textual layout of a datetime, kept so re-encoding reproduces the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTimeStyle {
    /// Separator between date and time: `T`, or a space (Python `str(datetime)`).
    pub separator: char,
    /// Number of fractional-second digits written (0 = no fraction).
    pub fraction_digits: u8,
    /// Zone suffix.
    pub zone: ZoneStyle,
}

impl DateTimeStyle {
    /// Object fields: `YYYY-MM-DDTHH:MM:SSZ` (oslo `_utils.isotime`, no fraction).
    pub const OBJECT: DateTimeStyle = DateTimeStyle {
        separator: 'T',
        fraction_digits: 0,
        zone: ZoneStyle::Z,
    };
    /// Context `timestamp` and datetimes in plain dicts: `YYYY-MM-DDTHH:MM:SS.ffffff`,
    /// naive UTC. nova parses the context one strictly with this layout.
    pub const PERFECT: DateTimeStyle = DateTimeStyle {
        separator: 'T',
        fraction_digits: 6,
        zone: ZoneStyle::Naive,
    };
}

/// A datetime as Nova writes it, remembering its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NovaDateTime {
    at: OffsetDateTime,
    style: DateTimeStyle,
}

impl NovaDateTime {
    /// A datetime for an object field (`...Z`, whole seconds; sub-seconds are dropped on
    /// the wire as oslo does).
    pub fn object(at: OffsetDateTime) -> Self {
        Self::with_style(at, DateTimeStyle::OBJECT)
    }

    /// A datetime in `PERFECT_TIME_FORMAT` (context `timestamp`, plain dict values).
    pub fn perfect(at: OffsetDateTime) -> Self {
        Self::with_style(at, DateTimeStyle::PERFECT)
    }

    /// A datetime with an explicit layout; the instant is converted to UTC unless the
    /// layout writes an offset.
    pub fn with_style(at: OffsetDateTime, style: DateTimeStyle) -> Self {
        let at = match style.zone {
            ZoneStyle::Offset => at,
            ZoneStyle::Z | ZoneStyle::Naive => at.to_offset(UtcOffset::UTC),
        };
        Self { at, style }
    }

    /// The instant (with the offset it was written with).
    pub fn at(&self) -> OffsetDateTime {
        self.at
    }

    /// The instant in UTC.
    pub fn utc(&self) -> OffsetDateTime {
        self.at.to_offset(UtcOffset::UTC)
    }

    /// The layout it was parsed from or will be written with.
    pub fn style(&self) -> DateTimeStyle {
        self.style
    }

    /// Parses any layout `oslo_utils.timeutils.parse_isotime` accepts in practice:
    /// `YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        parse_datetime(s).ok_or_else(|| FieldError::InvalidDateTime(s.to_string()))
    }
}

impl fmt::Display for NovaDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at;
        write!(
            f,
            "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            self.style.separator,
            at.hour(),
            at.minute(),
            at.second()
        )?;
        if self.style.fraction_digits > 0 {
            let nanos = format!("{:09}", at.nanosecond());
            let digits = usize::from(self.style.fraction_digits);
            if digits <= 9 {
                write!(f, ".{}", &nanos[..digits])?;
            } else {
                write!(f, ".{}{}", nanos, "0".repeat(digits - 9))?;
            }
        }
        match self.style.zone {
            ZoneStyle::Z => f.write_str("Z"),
            ZoneStyle::Naive => Ok(()),
            ZoneStyle::Offset => {
                let (h, m, _) = at.offset().as_hms();
                let sign = if h < 0 || m < 0 { '-' } else { '+' };
                write!(f, "{}{:02}:{:02}", sign, h.abs(), m.abs())
            }
        }
    }
}

fn parse_datetime(s: &str) -> Option<NovaDateTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let separator = match b[10] {
        b'T' => 'T',
        b' ' => ' ',
        _ => return None,
    };
    let year = i32::try_from(num(0, 4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(5, 2)?).ok()?).ok()?;
    let day = u8::try_from(num(8, 2)?).ok()?;
    let hour = u8::try_from(num(11, 2)?).ok()?;
    let minute = u8::try_from(num(14, 2)?).ok()?;
    let second = u8::try_from(num(17, 2)?).ok()?;
    let mut pos = 19;
    let mut fraction_digits = 0u8;
    let mut nanos = 0u32;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = &s[start..pos];
        if digits.is_empty() {
            return None;
        }
        fraction_digits = u8::try_from(digits.len()).ok()?;
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
    }
    let rest = &s[pos..];
    if !rest.is_ascii() {
        return None;
    }
    let (zone, offset) = match rest {
        "" => (ZoneStyle::Naive, UtcOffset::UTC),
        "Z" | "z" => (ZoneStyle::Z, UtcOffset::UTC),
        _ => {
            let rb = rest.as_bytes();
            let sign: i8 = match rb.first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = match rb.len() {
                6 if rb[3] == b':' => (&rest[1..3], &rest[4..6]),
                5 => (&rest[1..3], &rest[3..5]),
                3 => (&rest[1..3], "00"),
                _ => return None,
            };
            if !h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
                return None;
            }
            let h: i8 = h.parse().ok()?;
            let m: i8 = m.parse().ok()?;
            let offset = UtcOffset::from_hms(sign * h, sign * m, 0).ok()?;
            (ZoneStyle::Offset, offset)
        }
    };
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    let at = PrimitiveDateTime::new(date, time).assume_offset(offset);
    Some(NovaDateTime {
        at,
        style: DateTimeStyle {
            separator,
            fraction_digits,
            zone,
        },
    })
}

impl Serialize for NovaDateTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NovaDateTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        NovaDateTime::parse(&s).map_err(D::Error::custom)
    }
}

/// How a [`JsonString`] arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum JsonEncoding {
    /// As a JSON string holding JSON text (what Nova sends).
    #[default]
    String,
    /// As the JSON value itself (receivers accept it, e.g. `network_info` as a list).
    Inline,
}

impl JsonEncoding {
    /// True for the string form.
    pub fn is_string(&self) -> bool {
        matches!(self, JsonEncoding::String)
    }
}

/// A field whose wire form is JSON text inside a JSON string.
///
/// Decodes the inner JSON into `T`; encodes it back as a Python-formatted string
/// ([`crate::pyjson`]) so the text matches what nova writes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct JsonString<T> {
    /// The decoded inner value.
    pub value: T,
    /// Whether it came as a string or inline; new values are strings.
    pub encoding: JsonEncoding,
}

impl<T> JsonString<T> {
    /// A value to be sent as a JSON string.
    pub fn new(value: T) -> Self {
        Self {
            value,
            encoding: JsonEncoding::String,
        }
    }
}

impl<T: DeserializeOwned> JsonString<T> {
    /// Parses JSON text.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        Ok(Self::new(
            serde_json::from_str(text).map_err(FieldError::InvalidJsonString)?,
        ))
    }
}

impl<T: Serialize> JsonString<T> {
    /// The JSON text as nova would write it.
    pub fn to_json_text(&self) -> Result<String, serde_json::Error> {
        pyjson::to_string_of(&self.value)
    }
}

impl<T: Serialize> Serialize for JsonString<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.encoding {
            JsonEncoding::Inline => self.value.serialize(serializer),
            JsonEncoding::String => {
                let text = self.to_json_text().map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(&text)
            }
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for JsonString<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(deserializer)?;
        match raw {
            Value::String(text) => JsonString::parse(&text).map_err(D::Error::custom),
            other => Ok(JsonString {
                value: serde_json::from_value(other).map_err(D::Error::custom)?,
                encoding: JsonEncoding::Inline,
            }),
        }
    }
}

/// oslo's `FlexibleBooleanField`: a bool on the wire from nova, but strings such as
/// `"yes"`/`"1"` are accepted (`strutils.bool_from_string`). A non-bool input is kept
/// and written back as received.
#[derive(Clone, Debug, PartialEq)]
pub struct FlexBool {
    value: bool,
    raw: Option<Value>,
}

impl FlexBool {
    /// A plain boolean.
    pub fn new(value: bool) -> Self {
        Self { value, raw: None }
    }

    /// The boolean meaning.
    pub fn value(&self) -> bool {
        self.value
    }
}

impl From<bool> for FlexBool {
    fn from(value: bool) -> Self {
        Self::new(value)
    }
}

impl Serialize for FlexBool {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.raw {
            Some(raw) => raw.serialize(serializer),
            None => serializer.serialize_bool(self.value),
        }
    }
}

impl<'de> Deserialize<'de> for FlexBool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(deserializer)?;
        let value = match &raw {
            Value::Bool(b) => return Ok(FlexBool::new(*b)),
            Value::String(s) => matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "t" | "true" | "on" | "y" | "yes" | "1"
            ),
            Value::Number(n) => n.as_f64().is_some_and(|f| f == 1.0),
            _ => return Err(D::Error::custom("expected a boolean")),
        };
        Ok(FlexBool {
            value,
            raw: Some(raw),
        })
    }
}

/// A string-keyed dict with typed values that keeps insertion (wire) order, like a
/// Python dict. Lookups are linear: these dicts have a handful of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dict<V>(Vec<(String, V)>);

impl<V> Default for Dict<V> {
    fn default() -> Self {
        Dict(Vec::new())
    }
}

impl<V> Dict<V> {
    /// An empty dict.
    pub fn new() -> Self {
        Dict(Vec::new())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Mutable value of `key`.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` (in place if present, else appended, as a Python dict does); returns
    /// the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: V) -> Option<V> {
        let key = key.into();
        match self.get_mut(&key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the rest.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(pos).1)
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V> FromIterator<(K, V)> for Dict<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut d = Dict::new();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
    }
}

impl<V> IntoIterator for Dict<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<V: Serialize> Serialize for Dict<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Dict<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DictVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for DictVisitor<V> {
            type Value = Dict<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Dict<V>, A::Error> {
                let mut out = Dict::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.insert(k, v);
                }
                Ok(out)
            }
        }

        deserializer.deserialize_map(DictVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_nova_datetime_layouts_round_trip() {
        for s in [
            "2026-11-27T16:23:21Z",
            "2026-11-27T16:24:02.725524",
            "2026-11-27T16:16:13.000000",
            "2026-01-02T03:04:05.678901+00:00",
            "2026-01-02T03:04:05+02:00",
            "2026-01-02 03:04:05",
        ] {
            let dt = NovaDateTime::parse(s).unwrap();
            assert_eq!(dt.to_string(), s);
        }
        let dt = NovaDateTime::parse("2026-01-02T03:04:05+02:00").unwrap();
        assert_eq!(dt.utc().hour(), 1);
    }

    #[test]
    fn constructors_write_the_layouts_nova_expects() {
        let at = NovaDateTime::parse("2026-01-02T03:04:05.678901+01:00")
            .unwrap()
            .at();
        assert_eq!(NovaDateTime::object(at).to_string(), "2026-01-02T02:04:05Z");
        assert_eq!(
            NovaDateTime::perfect(at).to_string(),
            "2026-01-02T02:04:05.678901"
        );
    }

    #[test]
    fn bad_datetimes_are_errors() {
        for s in [
            "",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-01-01T00:00:00+x",
        ] {
            assert!(NovaDateTime::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn field_keeps_unset_null_and_value_apart() {
        let f: Field<i64> = serde_json::from_value(Value::Null).unwrap();
        assert!(f.is_null());
        let f: Field<i64> = serde_json::from_value(serde_json::json!(3)).unwrap();
        assert_eq!(f.get(), Some(&3));
        assert!(Field::<i64>::default().is_unset());
    }

    #[test]
    fn json_string_round_trips_as_string_or_inline() {
        let v: JsonString<Value> =
            serde_json::from_value(Value::String("[{\"a\": 1.0}]".into())).unwrap();
        assert_eq!(v.encoding, JsonEncoding::String);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            Value::String("[{\"a\": 1.0}]".into())
        );
        let v: JsonString<Value> = serde_json::from_value(serde_json::json!([1])).unwrap();
        assert_eq!(serde_json::to_value(&v).unwrap(), serde_json::json!([1]));
        assert!(serde_json::from_value::<JsonString<Value>>(Value::String("[".into())).is_err());
    }

    #[test]
    fn dict_keeps_wire_order() {
        let text = r#"{"z": "1", "a": null, "m": "3"}"#;
        let mut d: Dict<Option<String>> = serde_json::from_str(text).unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert_eq!(d.get("z"), Some(&Some("1".to_string())));
        d.insert("a", Some("2".into()));
        d.insert("b", None);
        assert_eq!(d.remove("z"), Some(Some("1".into())));
        assert_eq!(
            pyjson::to_string_of(&d).unwrap(),
            r#"{"a": "2", "m": "3", "b": null}"#
        );
        assert!(serde_json::from_str::<Dict<String>>("[1]").is_err());
    }

    #[test]
    fn flex_bool_accepts_strings_and_keeps_them() {
        let b: FlexBool = serde_json::from_value(serde_json::json!("yes")).unwrap();
        assert!(b.value());
        assert_eq!(serde_json::to_value(&b).unwrap(), serde_json::json!("yes"));
        let b: FlexBool = serde_json::from_value(serde_json::json!(false)).unwrap();
        assert!(!b.value());
    }
}
