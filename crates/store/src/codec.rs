//! Conversions between domain values and their column encodings.

use time::OffsetDateTime;

use crate::StoreError;

/// Instants are stored as integer nanoseconds since the Unix epoch, which keep
/// order, precision and are cheap to compare in SQL.
pub(crate) fn to_nanos(t: OffsetDateTime) -> i64 {
    // Saturates outside 1677..2262, far beyond any instant tenantd stores.
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn from_nanos(n: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n))
        .map_err(|e| StoreError::Corrupt(format!("instant {n}: {e}")))
}

pub(crate) fn opt_from_nanos(n: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    n.map(from_nanos).transpose()
}

pub(crate) fn parse<T, E: std::fmt::Display>(
    column: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(value).map_err(|e| StoreError::Corrupt(format!("{column} {value:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn instants_round_trip_to_the_nanosecond() {
        let t = datetime!(2026-11-28 16:21:34.123456789 UTC);
        assert_eq!(from_nanos(to_nanos(t)).unwrap(), t);
    }
}
