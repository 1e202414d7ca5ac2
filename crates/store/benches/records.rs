//! The record store's cost per operation on every engine and model: get by
//! id (from the database and from the cache), a filtered list over an
//! indexed field, and a single write. SQLite runs in a temporary directory;
//! PostgreSQL on a throwaway cluster that makes every commit durable, like
//! SQLite's `synchronous=FULL`. Run with
//! `cargo bench -p tenantd-store --bench records`.

// Set-up that cannot fail on these inputs; a panic would be the report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;
use tenantd_core::filter::{FieldPath, Filter};
use tenantd_core::share::Percent;
use tenantd_core::testing::{member, tenant_at};
use tenantd_core::{CollectionName, DataScope, Isolation, PoolName, RecordId, Role};
use tenantd_store::cache::CacheLimits;
use tenantd_store::data::{BatchOp, ListQuery};
use tenantd_store::{DataLimits, DataStore, StoragePool};
use tenantd_testkit::Postgres;
use time::macros::datetime;
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);
/// Records per tenant, spread over 100 customers.
const RECORDS: usize = 10_000;

fn scope(tenant: &str, pool: &str, isolation: Isolation) -> DataScope {
    member(
        &tenant_at(tenant, pool, isolation, NOW),
        Role::Developer,
        NOW,
    )
    .data_scope(Role::Developer)
    .unwrap()
}

/// A store with a SQLite pool `sqlite` under `dir` and a PostgreSQL pool
/// `pg` on `database` of `server`.
async fn store(
    dir: &std::path::Path,
    server: &Postgres,
    database: &str,
    cache_bytes: u64,
) -> DataStore {
    let cache = CacheLimits {
        capacity_bytes: cache_bytes,
        tenant_share_percent: Percent::ALL,
        ttl: Duration::from_secs(600),
    };
    let pools = [
        StoragePool::sqlite(PoolName::parse("sqlite").unwrap(), dir),
        StoragePool::postgres(
            PoolName::parse("pg").unwrap(),
            &server.app_url(database),
            &server.owner_url(database),
        ),
    ];
    DataStore::open(
        &pools,
        DataLimits {
            max_record_bytes: 64 * 1024,
        },
        tenantd_store::Connections::default(),
        cache,
    )
    .await
    .unwrap()
}

/// Fills `orders` of `scope` with `RECORDS` records in batches of 1000.
async fn fill(store: &DataStore, scope: &DataScope) {
    let orders = CollectionName::parse("orders").unwrap();
    let indexes = [FieldPath::parse("customer").unwrap()];
    store
        .create_collection(scope, &orders, &indexes, NOW)
        .await
        .unwrap();
    for chunk in 0..RECORDS / 1000 {
        let ops = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                BatchOp::Create {
                    id: RecordId::parse(&format!("r{n:06}")).unwrap(),
                    body: json!({ "customer": format!("c{:03}", n % 100), "total": n, "note": "x".repeat(100) }),
                }
            })
            .collect();
        store.write(scope, &orders, ops, NOW).await.unwrap();
    }
}

fn records(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cached_dir = tempfile::tempdir().unwrap();
    let server = Postgres::start_durable();
    let (uncached, cached) = runtime.block_on(async {
        let (first, second) = (
            server.tenantd_database().await,
            server.tenantd_database().await,
        );
        (
            store(dir.path(), &server, &first, 0).await,
            store(cached_dir.path(), &server, &second, 64 * 1024 * 1024).await,
        )
    });
    let orders = CollectionName::parse("orders").unwrap();
    // A neighbour's rows share the pooled tables, as in production.
    runtime.block_on(async {
        for pool in ["sqlite", "pg"] {
            let neighbour = scope("globex", pool, Isolation::Pooled);
            for st in [&uncached, &cached] {
                fill(st, &neighbour).await;
            }
        }
    });
    let mut group = c.benchmark_group("records");
    for (pool, model) in [
        ("sqlite", Isolation::Pooled),
        ("sqlite", Isolation::Dedicated),
        ("pg", Isolation::Pooled),
        ("pg", Isolation::Schema),
        ("pg", Isolation::Dedicated),
    ] {
        let name = format!("{pool}-{}", model.as_str());
        let s = scope(&format!("acme-{name}"), pool, model);
        runtime.block_on(async {
            for st in [&uncached, &cached] {
                fill(st, &s).await;
                st.optimize().await.unwrap();
            }
        });
        let id = RecordId::parse("r004242").unwrap();
        group.bench_function(BenchmarkId::new("get_by_id", &name), |b| {
            b.to_async(&runtime)
                .iter(|| async { uncached.record(&s, &orders, &id).await.unwrap().unwrap() })
        });
        group.bench_function(BenchmarkId::new("get_by_id_cached", &name), |b| {
            b.to_async(&runtime)
                .iter(|| async { cached.record(&s, &orders, &id).await.unwrap().unwrap() })
        });
        let collection = runtime
            .block_on(uncached.collection(&s, &orders))
            .unwrap()
            .unwrap();
        let query = ListQuery {
            filter: Some(Filter::parse("customer = \"c042\"").unwrap()),
            limit: 100,
            ..Default::default()
        };
        group.bench_function(BenchmarkId::new("list_filter_indexed_100", &name), |b| {
            b.to_async(&runtime).iter(|| async {
                let page = uncached.list(&s, &collection, &query).await.unwrap();
                assert_eq!(page.len(), 100);
            })
        });
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("put", &name), |b| {
            b.to_async(&runtime).iter(|| {
                n += 1;
                let op = BatchOp::Put {
                    id: RecordId::parse(&format!("w{}", n % 1000)).unwrap(),
                    body: json!({ "n": n }),
                    expect: None,
                };
                let (store, s, orders) = (&uncached, &s, &orders);
                async move { store.write(s, orders, vec![op], NOW).await.unwrap() }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = records
}
criterion_main!(benches);
