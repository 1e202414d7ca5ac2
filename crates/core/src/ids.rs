//! Identifier newtypes. Each is parsed once at the edge and trusted afterwards,
//! so a handler holding a `TenantId` never re-checks its shape.

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be {min} to {max} characters long")]
    Length {
        kind: &'static str,
        min: usize,
        max: usize,
    },
    #[error("{kind} must start with a lowercase letter")]
    Start { kind: &'static str },
    #[error(
        "{kind} may contain only lowercase letters, digits and single hyphens, and must not end with a hyphen"
    )]
    Charset { kind: &'static str },
    #[error("{kind} must be {len} lowercase hexadecimal characters")]
    Hex { kind: &'static str, len: usize },
}

/// Checks the slug rule shared by tenants, plans and regions: lowercase ASCII
/// letters, digits and hyphens, starting with a letter, with no leading,
/// trailing or doubled hyphen. The rule keeps ids safe in URLs, file names,
/// PostgreSQL schema names and metric labels alike.
fn check_slug(kind: &'static str, s: &str, min: usize, max: usize) -> Result<(), IdError> {
    if s.len() < min || s.len() > max {
        return Err(IdError::Length { kind, min, max });
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(IdError::Start { kind });
    }
    let charset_ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !charset_ok || s.ends_with('-') || s.contains("--") {
        return Err(IdError::Charset { kind });
    }
    Ok(())
}

/// The conversions every string identifier shares: parse on the way in
/// (`TryFrom<String>`, `FromStr`), plain text on the way out.
macro_rules! string_newtype {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use string_newtype;

/// The slug rule of `check_slug` as a regular expression, for the OpenAPI
/// document: a lowercase letter, then letters and digits with single inner
/// hyphens.
pub const SLUG_PATTERN: &str = "^[a-z](-?[a-z0-9])*$";

/// An identifier's rule as data: a pattern and length limits that match
/// exactly the strings its parser accepts, and an example. The API describes
/// the identifier from it, so that clients and fuzzers generating from the
/// OpenAPI document produce only ids the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRule {
    pub pattern: &'static str,
    pub min_chars: usize,
    pub max_chars: usize,
    pub example: &'static str,
}

macro_rules! id_rule {
    ($name:ident, $pattern:expr, $min:expr, $max:expr, $example:literal) => {
        impl $name {
            /// The rule `parse` enforces, as a pattern and length limits.
            pub const RULE: $crate::ids::IdRule = $crate::ids::IdRule {
                pattern: $pattern,
                min_chars: $min,
                max_chars: $max,
                example: $example,
            };
        }
    };
}
pub(crate) use id_rule;

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $min:literal, $max:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an identifier.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_slug($kind, s, $min, $max)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        string_newtype!($name);
        id_rule!($name, SLUG_PATTERN, $min, $max, $example);
    };
}

slug_id!(
    /// A tenant's immutable id: a slug of 3 to 63 characters, e.g. `acme`.
    TenantId, "tenant id", 3, 63, "acme"
);
slug_id!(
    /// A plan (tier) id, e.g. `default` or `pro`.
    PlanId, "plan id", 1, 63, "default"
);
slug_id!(
    /// A data-residency region, e.g. `eu-west`.
    RegionId, "region", 1, 63, "default"
);

slug_id!(
    /// A service behind the gateway, named in `/v1/proxy/{service}/…`, e.g. `billing`.
    ServiceName, "service name", 1, 63, "billing"
);

slug_id!(
    /// A storage pool's name, e.g. `eu-1`.
    PoolName, "pool name", 1, 63, "default"
);

impl PoolName {
    /// The pool of the default configuration.
    pub fn default_pool() -> Self {
        Self("default".to_owned())
    }
}

impl PlanId {
    /// The plan every tenant gets until plans are managed (see the governance work).
    pub fn default_plan() -> Self {
        Self("default".to_owned())
    }
}

impl RegionId {
    pub fn default_region() -> Self {
        Self("default".to_owned())
    }
}

/// An identifier of `$len` lowercase hex characters, random when made here.
macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $len:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const LEN: usize = $len;

            pub fn parse(s: &str) -> Result<Self, IdError> {
                let ok = s.len() == Self::LEN
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if ok {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::Hex {
                        kind: $kind,
                        len: Self::LEN,
                    })
                }
            }

            /// A fresh random id.
            pub fn generate(rng: &mut (impl rand::RngCore + rand::CryptoRng)) -> Self {
                let mut bytes = [0u8; $len / 2];
                rng.fill_bytes(&mut bytes);
                Self(hex::encode(bytes))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        string_newtype!($name);
    };
}

hex_id!(
    /// The public half of an API key: 16 lowercase hex characters (64 random
    /// bits). It names the key in URLs, logs and audit entries; it proves nothing.
    KeyId, "key id", 16
);
/// The rule of `KeyId::parse` as a regular expression.
pub const KEY_ID_PATTERN: &str = "^[0-9a-f]{16}$";
id_rule!(
    KeyId,
    KEY_ID_PATTERN,
    KeyId::LEN,
    KeyId::LEN,
    "3f9a0c1d2b4e5f60"
);

hex_id!(
    /// One run of one tenantd node, made at its start: 12 lowercase hex
    /// characters. A restarted node is a new run with a new id; its name
    /// (`node_name`) says which machine it is.
    NodeId, "node id", 12
);
id_rule!(
    NodeId,
    "^[0-9a-f]{12}$",
    NodeId::LEN,
    NodeId::LEN,
    "5c0ffee1d0e5"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_ids_are_twelve_hex_characters_and_made_fresh() {
        let made = NodeId::generate(&mut rand::rngs::OsRng);
        assert_eq!(NodeId::parse(made.as_str()), Ok(made.clone()));
        assert_ne!(made, NodeId::generate(&mut rand::rngs::OsRng));
        for bad in [
            "",
            "0123456789a",
            "0123456789abc",
            "0123456789AB",
            "0123456789ag",
        ] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn tenant_id_accepts_slugs() {
        for ok in ["acme", "a-b-c", "t01", "x".repeat(63).as_str()] {
            assert!(TenantId::parse(ok).is_ok(), "{ok} should parse");
        }
    }

    #[test]
    fn tenant_id_rejects_non_slugs() {
        let too_long = "x".repeat(64);
        for bad in [
            "",
            "ab",
            "Acme",
            "1acme",
            "-acme",
            "acme-",
            "ac--me",
            "ac me",
            "acmé",
            "ac_me",
            "../etc",
            too_long.as_str(),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tenant_id_deserializes_through_validation() {
        let err = serde_json::from_str::<TenantId>("\"Bad\"").unwrap_err();
        assert!(err.to_string().contains("lowercase letter"), "{err}");
        let ok: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(ok.as_str(), "acme");
    }

    #[test]
    fn key_id_is_sixteen_lowercase_hex() {
        assert!(KeyId::parse("0123456789abcdef").is_ok());
        for bad in [
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdefa",
            "0123456789abcdeg",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsed_tenant_ids_round_trip_and_are_url_safe(s in "\\PC{0,70}") {
            if let Ok(id) = TenantId::parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
        }
    }
}
