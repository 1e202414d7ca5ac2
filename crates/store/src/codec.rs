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

/// `rows` tuples of `columns` numbered placeholders, from `$first`:
/// `($1, $2), ($3, $4)`. Numbered placeholders are what both SQLite and
/// PostgreSQL read, so a multi-row statement is written once for both.
pub(crate) fn placeholder_rows(rows: usize, columns: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(first + row * columns + column).to_string());
        }
        sql.push(')');
    }
    sql
}

/// `count` numbered placeholders from `$first`, for an `IN (…)` list.
pub(crate) fn placeholder_list(count: usize, first: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
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

    #[test]
    fn placeholders_are_numbered_row_by_row() {
        assert_eq!(placeholder_rows(2, 3, 1), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholder_rows(1, 1, 4), "($4)");
        assert_eq!(placeholder_list(3, 2), "$2, $3, $4");
    }
}
