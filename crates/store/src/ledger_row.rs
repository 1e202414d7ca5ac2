//! The stored form of a quota ledger (`usage_ledgers.ledger`), versioned.
//!
//! Version 2, written now, names every window, counter and level by its
//! period and metric, so that the order of the domain's arrays can change
//! without misreading stored usage. Version 1 (no `version` key) was the
//! domain's positional arrays serialized as they were; it is still read, and
//! a ledger read in it is written back in version 2 at its next write-behind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenantd_core::plan::{Metric, Period};
use tenantd_core::quota::{CountedState, Ledger, LedgerState, LevelState};

/// The version `encode` writes.
const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerRowV2 {
    version: u32,
    /// Each period's current window, `[start, end)` in Unix seconds.
    windows: BTreeMap<Period, [i64; 2]>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    counted: Vec<CountedRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    levels: Vec<LevelRow>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountedRow {
    metric: Metric,
    period: Period,
    used: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    grace_from: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    soft_noted: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelRow {
    metric: Metric,
    value: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    grace_from: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    soft_noted: bool,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Version 1: arrays indexed by period (minute, hour, day, month), counted
/// metric (requests, ingress, egress bytes) and level (storage bytes,
/// records, requests in flight), with soft-limit marks as bits.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerRowV1 {
    window_start: [i64; 4],
    #[serde(default)]
    window_end: [i64; 4],
    used: [[u64; 4]; 3],
    grace_from: [[i64; 4]; 3],
    soft_noted: [u8; 3],
    level: [u64; 3],
    level_grace_from: [i64; 3],
    level_soft_noted: u8,
}

const V1_PERIODS: [Period; 4] = [Period::Minute, Period::Hour, Period::Day, Period::Month];
const V1_COUNTED: [Metric; 3] = [Metric::Requests, Metric::IngressBytes, Metric::EgressBytes];
const V1_LEVELS: [Metric; 3] = [
    Metric::StorageBytes,
    Metric::Records,
    Metric::ConcurrentRequests,
];

impl From<LedgerRowV1> for LedgerState {
    fn from(row: LedgerRowV1) -> Self {
        let windows = V1_PERIODS
            .iter()
            .enumerate()
            .map(|(p, &period)| (period, row.window_start[p], row.window_end[p]))
            .collect();
        let mut counted = Vec::new();
        for (m, &metric) in V1_COUNTED.iter().enumerate() {
            for (p, &period) in V1_PERIODS.iter().enumerate() {
                counted.push(CountedState {
                    metric,
                    period,
                    used: row.used[m][p],
                    grace_from: row.grace_from[m][p],
                    soft_noted: row.soft_noted[m] & (1 << p) != 0,
                });
            }
        }
        let levels = V1_LEVELS
            .iter()
            .enumerate()
            .map(|(l, &metric)| LevelState {
                metric,
                value: row.level[l],
                grace_from: row.level_grace_from[l],
                soft_noted: row.level_soft_noted & (1 << l) != 0,
            })
            .collect();
        LedgerState {
            windows,
            counted,
            levels,
        }
    }
}

/// A ledger as stored, in the current version.
pub(crate) fn encode(ledger: &Ledger) -> String {
    let state = ledger.state();
    let row = LedgerRowV2 {
        version: VERSION,
        windows: state
            .windows
            .iter()
            .map(|&(period, start, end)| (period, [start, end]))
            .collect(),
        counted: state
            .counted
            .iter()
            .map(|c| CountedRow {
                metric: c.metric,
                period: c.period,
                used: c.used,
                grace_from: c.grace_from,
                soft_noted: c.soft_noted,
            })
            .collect(),
        levels: state
            .levels
            .iter()
            .map(|l| LevelRow {
                metric: l.metric,
                value: l.value,
                grace_from: l.grace_from,
                soft_noted: l.soft_noted,
            })
            .collect(),
    };
    serde_json::to_string(&row).expect("a ledger row has only strings and numbers")
}

/// A stored ledger of any version this build reads.
pub(crate) fn decode(json: &str) -> Result<Ledger, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let state = match value.get("version").map(|v| v.as_u64()) {
        None => LedgerState::from(
            serde_json::from_value::<LedgerRowV1>(value).map_err(|e| e.to_string())?,
        ),
        Some(Some(2)) => {
            let row: LedgerRowV2 = serde_json::from_value(value).map_err(|e| e.to_string())?;
            LedgerState {
                windows: row
                    .windows
                    .into_iter()
                    .map(|(period, [start, end])| (period, start, end))
                    .collect(),
                counted: row
                    .counted
                    .into_iter()
                    .map(|c| CountedState {
                        metric: c.metric,
                        period: c.period,
                        used: c.used,
                        grace_from: c.grace_from,
                        soft_noted: c.soft_noted,
                    })
                    .collect(),
                levels: row
                    .levels
                    .into_iter()
                    .map(|l| LevelState {
                        metric: l.metric,
                        value: l.value,
                        grace_from: l.grace_from,
                        soft_noted: l.soft_noted,
                    })
                    .collect(),
            }
        }
        Some(other) => {
            return Err(format!(
                "ledger version {} is newer than this build reads (up to {VERSION})",
                other.map_or("?".to_owned(), |v| v.to_string())
            ))
        }
    };
    Ledger::from_state(&state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantd_core::quota::BillingDay;
    use time::macros::datetime;

    fn busy_ledger() -> Ledger {
        let mut ledger = Ledger::default();
        let day = BillingDay::default();
        let now = datetime!(2026-03-20 10:59:00 UTC).unix_timestamp();
        ledger.charge(Metric::Requests, 3, day, now);
        ledger.charge(Metric::IngressBytes, 512, day, now);
        ledger.set_level(Metric::Records, 7);
        ledger
    }

    #[test]
    fn a_ledger_is_stored_by_name_and_read_back_unchanged() {
        let ledger = busy_ledger();
        let json = encode(&ledger);
        let row: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(row["version"], 2);
        assert!(row["counted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["metric"] == "requests" && c["period"] == "day" && c["used"] == 3));
        assert_eq!(row["levels"][0]["metric"], "records");
        assert_eq!(decode(&json), Ok(ledger));
    }

    #[test]
    fn a_version_one_ledger_is_read_position_by_position() {
        // Requests: 5 this hour and 9 today; 40 egress bytes today; the
        // hourly soft limit of requests already noted; 3 records stored.
        let v1 = r#"{"window_start":[60,3600,86400,0],"window_end":[120,7200,172800,0],
            "used":[[0,5,9,0],[0,0,0,0],[0,0,40,0]],"grace_from":[[0,0,0,0],[0,0,0,0],[0,0,0,0]],
            "soft_noted":[2,0,0],"level":[0,3,0],"level_grace_from":[0,0,0],"level_soft_noted":0}"#;
        let state = decode(v1).unwrap().state();
        let used = |metric, period| {
            state
                .counted
                .iter()
                .find(|c| (c.metric, c.period) == (metric, period))
                .map(|c| (c.used, c.soft_noted))
        };
        assert_eq!(used(Metric::Requests, Period::Hour), Some((5, true)));
        assert_eq!(used(Metric::Requests, Period::Day), Some((9, false)));
        assert_eq!(used(Metric::EgressBytes, Period::Day), Some((40, false)));
        assert_eq!(used(Metric::IngressBytes, Period::Day), None);
        assert!(state.windows.contains(&(Period::Hour, 3600, 7200)));
        assert_eq!(
            state.levels,
            vec![LevelState {
                metric: Metric::Records,
                value: 3,
                grace_from: 0,
                soft_noted: false
            }]
        );
    }

    #[test]
    fn a_ledger_from_a_newer_version_is_refused_not_guessed() {
        let err = decode(r#"{"version":3,"windows":{}}"#).unwrap_err();
        assert!(err.contains("newer"), "{err}");
    }
}
