//! Conversions between domain values and their column encodings.

use time::OffsetDateTime;

use crate::catalog::CatalogEngine;
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

/// `rows` tuples of `columns` placeholders, the `first` being the
/// statement's `first`th: `($1, $2), ($3, $4)` on PostgreSQL, `(?, ?), (?, ?)`
/// on SQLite, whose binding looks each named parameter up by a scan of
/// them all (quadratic over a statement of thousands); anonymous ones bind
/// in order.
pub(crate) fn placeholder_rows(
    engine: CatalogEngine,
    rows: usize,
    columns: usize,
    first: usize,
) -> String {
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
            push_placeholder(&mut sql, engine, first + row * columns + column);
        }
        sql.push(')');
    }
    sql
}

/// `count` placeholders from the `first`th, for an `IN (…)` list.
pub(crate) fn placeholder_list(engine: CatalogEngine, count: usize, first: usize) -> String {
    let mut sql = String::with_capacity(count * 5);
    for n in first..first + count {
        if n > first {
            sql.push_str(", ");
        }
        push_placeholder(&mut sql, engine, n);
    }
    sql
}

fn push_placeholder(sql: &mut String, engine: CatalogEngine, n: usize) {
    match engine {
        CatalogEngine::Sqlite => sql.push('?'),
        CatalogEngine::Postgres => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
    }
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
        let pg = CatalogEngine::Postgres;
        assert_eq!(placeholder_rows(pg, 2, 3, 1), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholder_rows(pg, 1, 1, 4), "($4)");
        assert_eq!(placeholder_list(pg, 3, 2), "$2, $3, $4");
        let sqlite = CatalogEngine::Sqlite;
        assert_eq!(placeholder_rows(sqlite, 2, 2, 1), "(?, ?), (?, ?)");
        assert_eq!(placeholder_list(sqlite, 2, 1), "?, ?");
    }
}
