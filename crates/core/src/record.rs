//! The data API's domain: collection names, record ids, isolation models and
//! the shape rules for record bodies.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::filter::FieldPath;
use crate::ids::{id_rule, string_newtype, IdError};

/// How a tenant's data is kept apart from other tenants'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Shared tables; every key leads with the tenant id.
    Pooled,
    /// A PostgreSQL schema of its own.
    Schema,
    /// A database of its own (a SQLite file per tenant).
    Dedicated,
}

impl Isolation {
    pub const ALL: [Isolation; 3] = [Self::Pooled, Self::Schema, Self::Dedicated];

    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Pooled => "pooled",
            Isolation::Schema => "schema",
            Isolation::Dedicated => "dedicated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

/// A collection's name: a lowercase identifier of 1 to 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CollectionName(String);

impl CollectionName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !(1..=63).contains(&s.len()) {
            return Err(IdError::Length {
                kind: "collection name",
                min: 1,
                max: 63,
            });
        }
        if !first_ok || !rest_ok {
            return Err(IdError::Charset {
                kind: "collection name",
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A record's id: server-assigned (a UUIDv7, so ids sort by creation time) or
/// chosen by the client: 1 to 128 of `A-Z a-z 0-9 _ . -`, starting with a
/// letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId(String);

impl RecordId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !(1..=128).contains(&s.len()) {
            return Err(IdError::Length {
                kind: "record id",
                min: 1,
                max: 128,
            });
        }
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(IdError::Charset { kind: "record id" });
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh id that sorts after ids generated before `now`.
    pub fn generate(now: OffsetDateTime, rng: &mut impl RngCore) -> Self {
        let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let mut random = [0u8; 10];
        rng.fill_bytes(&mut random);
        Self::from_parts(millis, random)
    }

    fn from_parts(now_unix_millis: u64, random: [u8; 10]) -> Self {
        // UUIDv7 layout: 48-bit milliseconds, version 7, 12 random bits,
        // variant 0b10, 62 random bits.
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&now_unix_millis.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        b[6] = (b[6] & 0x0f) | 0x70;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        Self(format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An async job's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let shape_ok = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if shape_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Hex {
                kind: "job id",
                len: 36,
            })
        }
    }

    /// A fresh id that sorts after ids generated before `now`.
    pub fn generate(now: OffsetDateTime, rng: &mut impl RngCore) -> Self {
        Self(RecordId::generate(now, rng).0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(CollectionName);
string_newtype!(RecordId);
string_newtype!(JobId);

/// The rules of `CollectionName::parse`, `RecordId::parse` and
/// `JobId::parse` as regular expressions.
pub const COLLECTION_NAME_PATTERN: &str = "^[a-z][a-z0-9_]*$";
pub const RECORD_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";
pub const JOB_ID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

id_rule!(CollectionName, COLLECTION_NAME_PATTERN, 1, 63, "orders");
id_rule!(
    RecordId,
    RECORD_ID_PATTERN,
    1,
    128,
    "0192f5c4-6f1e-7c3a-9d0b-3e8f2a1c4b5d"
);
id_rule!(
    JobId,
    JOB_ID_PATTERN,
    36,
    36,
    "0192f5c4-6f1e-7c3a-9d0b-3e8f2a1c4b5d"
);

/// Deepest nesting of arrays and objects in a record body.
pub const MAX_RECORD_DEPTH: usize = 32;
/// Most fields a collection may declare as indexed.
pub const MAX_INDEXED_FIELDS: usize = 16;

/// Why a record body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("a record must be a JSON object")]
    NotAnObject,
    #[error("a record nests deeper than {MAX_RECORD_DEPTH} levels")]
    TooDeep,
}

/// Checks a record body: a JSON object no deeper than `MAX_RECORD_DEPTH`.
pub fn check_body(body: &Value) -> Result<(), BodyError> {
    fn depth_ok(v: &Value, depth: usize) -> bool {
        if depth > MAX_RECORD_DEPTH {
            return false;
        }
        match v {
            Value::Array(items) => items.iter().all(|i| depth_ok(i, depth + 1)),
            Value::Object(map) => map.values().all(|i| depth_ok(i, depth + 1)),
            _ => true,
        }
    }
    if !body.is_object() {
        return Err(BodyError::NotAnObject);
    }
    if !depth_ok(body, 1) {
        return Err(BodyError::TooDeep);
    }
    Ok(())
}

/// Checks a collection's declared index fields: distinct paths, at most
/// `MAX_INDEXED_FIELDS`.
pub fn check_indexes(fields: &[FieldPath]) -> Result<(), String> {
    if fields.len() > MAX_INDEXED_FIELDS {
        return Err(format!("at most {MAX_INDEXED_FIELDS} indexed fields"));
    }
    for (i, f) in fields.iter().enumerate() {
        if fields[..i].contains(f) {
            return Err(format!("{f} is declared twice"));
        }
    }
    Ok(())
}

/// Applies an RFC 7386 JSON Merge Patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collection_names_are_lowercase_identifiers() {
        for ok in ["orders", "a", "order_items2"] {
            assert!(CollectionName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Orders", "1st", "order-items", "_x", &"a".repeat(64)] {
            assert!(CollectionName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_ids_accept_uuids_and_client_ids() {
        for ok in ["0192f5c4-6f1e-7c3a-9d0b-3e8f2a1c4b5d", "A1", "inv_2026.001"] {
            assert!(RecordId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a/b", "a b", "é", &"a".repeat(129)] {
            assert!(RecordId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_uuid_v7_and_sort_by_time() {
        let a = RecordId::from_parts(1_700_000_000_000, [0xff; 10]);
        let b = RecordId::from_parts(1_700_000_000_001, [0x00; 10]);
        assert!(a < b);
        assert_eq!(a.as_str().len(), 36);
        assert_eq!(&a.as_str()[14..15], "7", "version nibble");
        assert!(
            matches!(&a.as_str()[19..20], "8" | "9" | "a" | "b"),
            "variant bits"
        );
        assert!(RecordId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn job_ids_are_generated_uuids() {
        let id = JobId::generate(OffsetDateTime::UNIX_EPOCH, &mut rand::thread_rng());
        assert_eq!(JobId::parse(id.as_str()), Ok(id));
        for bad in [
            "",
            "not-a-uuid",
            "0192F5C4-6F1E-7C3A-9D0B-3E8F2A1C4B5D",
            "0192f5c46f1e7c3a9d0b3e8f2a1c4b5d1234",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_must_be_shallow_objects() {
        assert!(check_body(&json!({"a": [1, {"b": 2}]})).is_ok());
        assert_eq!(check_body(&json!([1])), Err(BodyError::NotAnObject));
        let mut deep = json!(1);
        for _ in 0..MAX_RECORD_DEPTH {
            deep = json!({ "x": deep });
        }
        assert_eq!(check_body(&deep), Err(BodyError::TooDeep));
    }

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }
}
