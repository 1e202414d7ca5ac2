//! Integers in request bodies, read as JSON numbers: `2.0` is the integer 2.
//!
//! JSON has one number type and JSON Schema's `integer` admits any number
//! with a zero fractional part, so a client whose JSON library writes whole
//! numbers as floats (Python's for a float, many others after arithmetic)
//! sends integers that serde's derived readers would refuse. Fields marked
//! `#[serde(deserialize_with = "whole::de")]` (or `whole::de_opt` with
//! `default`) accept them; fractions and out-of-range values stay refused,
//! and no integer is above 2^63 - 1, whatever its Rust type.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// Largest magnitude a float spells exactly as an integer.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Reads an integer of type `T` from any JSON number that is a whole number
/// within `T`'s range.
pub fn de<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_any(WholeVisitor(PhantomData))
}

/// As `de`, for an optional field (`null` or absent is `None`).
pub fn de_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    struct OptVisitor<T>(PhantomData<T>);
    impl<'de, T: TryFrom<i128>> Visitor<'de> for OptVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            de(d).map(Some)
        }
    }
    deserializer.deserialize_option(OptVisitor(PhantomData))
}

struct WholeVisitor<T>(PhantomData<T>);

impl<T: TryFrom<i128>> WholeVisitor<T> {
    fn fit<E: de::Error>(n: i128) -> Result<T, E> {
        // Every integer is stored as a signed 64-bit one, in SQLite and
        // PostgreSQL alike, and documented as `int64`.
        if n > i128::from(i64::MAX) {
            return Err(E::invalid_value(
                de::Unexpected::Other("an integer above 2^63 - 1"),
                &"an integer in range",
            ));
        }
        T::try_from(n).map_err(|_| {
            E::invalid_value(
                de::Unexpected::Other("an integer out of range"),
                &"an integer in range",
            )
        })
    }
}

impl<'de, T: TryFrom<i128>> Visitor<'de> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        Self::fit(i128::from(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        Self::fit(i128::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
        if n.fract() != 0.0 || !n.is_finite() || n.abs() > EXACT {
            return Err(E::invalid_type(de::Unexpected::Float(n), &self));
        }
        // Exact: a whole float within ±2^53 converts without rounding.
        #[allow(clippy::cast_possible_truncation)]
        Self::fit(n as i128)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Fields {
        #[serde(deserialize_with = "super::de")]
        count: u32,
        #[serde(default, deserialize_with = "super::de_opt")]
        limit: Option<u64>,
    }

    fn read(json: &str) -> Result<Fields, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn whole_numbers_are_read_in_either_spelling() {
        let expected = Fields {
            count: 2,
            limit: Some(458),
        };
        assert_eq!(read(r#"{"count": 2, "limit": 458}"#).unwrap(), expected);
        assert_eq!(read(r#"{"count": 2.0, "limit": 458.0}"#).unwrap(), expected);
        assert_eq!(
            read(r#"{"count": 2e0, "limit": null}"#).unwrap().limit,
            None
        );
        assert_eq!(read(r#"{"count": 2}"#).unwrap().limit, None);
    }

    #[test]
    fn fractions_out_of_range_and_other_types_are_refused() {
        for bad in [
            r#"{"count": 2.5}"#,
            r#"{"count": -1}"#,
            r#"{"count": -1.0}"#,
            r#"{"count": 4294967296}"#,
            r#"{"count": 1e300}"#,
            r#"{"count": "2"}"#,
            r#"{"count": 1, "limit": 0.5}"#,
            r#"{"count": 1, "limit": 9223372036854775808}"#,
        ] {
            assert!(read(bad).is_err(), "{bad} should be refused");
        }
    }
}
