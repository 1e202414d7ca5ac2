//! Tenants never see each other's data, whatever their models, whatever the
//! sequence of operations.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use tenantd_core::filter::Filter;
use tenantd_core::OperatorScope;
use tenantd_store::data::{BatchOp, DataError, ListQuery};

use sqlx::{Connection, PgConnection};
use tenantd_store::{Connections, DataStore};
use tenantd_testkit::Postgres;

use crate::{coll, fixture, pools, rid, scope, CACHE, LIMITS, MODELS, NOW};

#[tokio::test]
async fn the_same_names_in_two_tenants_stay_independent() {
    let pairs = MODELS
        .iter()
        .flat_map(|a| MODELS.iter().map(move |b| (*a, *b)));
    for (model_a, model_b) in pairs {
        let f = fixture().await;
        let a = scope("acme", model_a);
        let b = scope("globex", model_b);
        for s in [&a, &b] {
            f.store
                .create_collection(s, &coll("orders"), &[], NOW)
                .await
                .unwrap();
        }
        f.create(&a, "orders", "same-id", json!({"canary": "acme-secret"}))
            .await;
        // The same id in the other tenant is free: no unique-key oracle.
        f.create(&b, "orders", "same-id", json!({"canary": "globex"}))
            .await;
        let ca = f
            .store
            .collection(&a, &coll("orders"))
            .await
            .unwrap()
            .unwrap();
        let everything = ListQuery {
            limit: 100,
            ..Default::default()
        };
        let canary = ListQuery {
            filter: Some(Filter::parse("canary = \"acme-secret\"").unwrap()),
            limit: 100,
            ..Default::default()
        };
        let b_list = f.store.list(&b, &ca, &everything).await.unwrap();
        assert_eq!(b_list.len(), 1);
        assert_eq!(b_list[0].record.body, json!({"canary": "globex"}));
        assert!(
            f.store.list(&b, &ca, &canary).await.unwrap().is_empty(),
            "{model_a:?}/{model_b:?}"
        );

        f.store
            .delete_collection(&b, &coll("orders"))
            .await
            .unwrap();
        assert!(f
            .store
            .record(&a, &coll("orders"), &rid("same-id"))
            .await
            .unwrap()
            .is_some());
        assert!(matches!(
            f.store.record(&b, &coll("orders"), &rid("same-id")).await,
            Err(DataError::CollectionNotFound)
        ));
        assert_eq!(f.store.usage(&b).await.unwrap().records, 0);
        assert_eq!(f.store.usage(&a).await.unwrap().records, 1);
    }
}

#[tokio::test]
async fn purge_removes_one_tenant_only() {
    for model in MODELS {
        let f = fixture().await;
        let a = scope("acme", model);
        let b = scope("globex", MODELS[0]);
        let c = scope("initech", model);
        for s in [&a, &b, &c] {
            f.store
                .create_collection(s, &coll("orders"), &[], NOW)
                .await
                .unwrap();
            f.create(s, "orders", "x", json!({})).await;
        }
        f.store
            .purge(&OperatorScope::server(), a.tenant(), a.pool())
            .await
            .unwrap();
        f.store
            .purge(&OperatorScope::server(), a.tenant(), a.pool())
            .await
            .unwrap();
        assert!(
            f.store.collections(&a, None, 10).await.unwrap().is_empty(),
            "{model:?}"
        );
        assert_eq!(f.store.usage(&a).await.unwrap().records, 0);
        for other in [&b, &c] {
            assert_eq!(f.store.collections(other, None, 10).await.unwrap().len(), 1);
            assert_eq!(f.store.usage(other).await.unwrap().records, 1);
        }
    }
}

/// Tenants of the property test.
const TENANTS: usize = 7;

#[derive(Debug, Clone)]
enum Op {
    Put { tenant: usize, id: u8, value: u8 },
    Delete { tenant: usize, id: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..TENANTS, 0..6u8, any::<u8>()).prop_map(|(tenant, id, value)| Op::Put {
            tenant,
            id,
            value
        }),
        (0..TENANTS, 0..6u8).prop_map(|(tenant, id)| Op::Delete { tenant, id }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random interleaved writes by seven tenants (one on every engine and
    /// model, and a second pooled one on each engine) over the same ids:
    /// each tenant sees exactly its own model of the data through get,
    /// list, filter and usage.
    #[test]
    fn every_tenant_sees_exactly_its_own_records(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let f = fixture().await;
            let scopes = [
                scope("acme", MODELS[0]),
                scope("globex", MODELS[0]),
                scope("initech", MODELS[1]),
                scope("hooli", MODELS[2]),
                scope("umbrella", MODELS[2]),
                scope("wonka", MODELS[3]),
                scope("stark", MODELS[4]),
            ];
            let orders = coll("orders");
            for s in &scopes {
                f.store.create_collection(s, &orders, &[], NOW).await.unwrap();
            }
            let mut model: [BTreeMap<String, u8>; TENANTS] = Default::default();
            for op in ops {
                match op {
                    Op::Put { tenant, id, value } => {
                        let body = json!({ "owner": scopes[tenant].tenant().as_str(), "v": value });
                        let put = vec![BatchOp::Put { id: rid(&format!("r{id}")), body, expect: None }];
                        f.store.write(&scopes[tenant], &orders, put, NOW).await.unwrap();
                        model[tenant].insert(format!("r{id}"), value);
                    }
                    Op::Delete { tenant, id } => {
                        let delete = vec![BatchOp::Delete { id: rid(&format!("r{id}")), expect: None }];
                        let result = f.store.write(&scopes[tenant], &orders, delete, NOW).await;
                        match model[tenant].remove(&format!("r{id}")) {
                            Some(_) => assert!(result.is_ok()),
                            None => assert!(matches!(result, Err(DataError::RecordNotFound))),
                        }
                    }
                }
            }
            for (i, s) in scopes.iter().enumerate() {
                let c = f.store.collection(s, &orders).await.unwrap().unwrap();
                let listed = f.store.list(s, &c, &ListQuery { limit: 100, ..Default::default() }).await.unwrap();
                let seen: BTreeMap<String, u8> = listed
                    .iter()
                    .map(|r| {
                        assert_eq!(r.record.body["owner"], s.tenant().as_str(), "a foreign record was listed");
                        (r.record.id.to_string(), r.record.body["v"].as_u64().unwrap() as u8)
                    })
                    .collect();
                assert_eq!(&seen, &model[i]);
                let foreign = ListQuery {
                    filter: Some(Filter::parse(&format!("owner != \"{}\"", s.tenant())).unwrap()),
                    limit: 100,
                    ..Default::default()
                };
                assert!(f.store.list(s, &c, &foreign).await.unwrap().is_empty());
                for id in 0..6u8 {
                    let got = f.store.record(s, &orders, &rid(&format!("r{id}"))).await.unwrap();
                    assert_eq!(got.map(|r| r.body["v"].as_u64().unwrap() as u8), model[i].get(&format!("r{id}")).copied());
                }
                assert_eq!(f.store.usage(s).await.unwrap().records, model[i].len() as i64);
            }
        });
    }
}

/// A PostgreSQL pool whose tenant tables could leak is refused when the
/// store opens it (as at server start), naming the table, for the pooled
/// schema and for tenant schemas alike.
#[tokio::test]
async fn a_postgres_pool_without_forced_row_level_security_is_refused() {
    let f = fixture().await;
    let wonka = scope("wonka", MODELS[3]);
    f.store
        .create_collection(&wonka, &coll("orders"), &[], NOW)
        .await
        .unwrap();
    let server = Postgres::shared();
    let mut owner = PgConnection::connect(&server.owner_url(f.database()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reopen = || async {
        DataStore::open(
            &pools(dir.path(), f.database()),
            LIMITS,
            Connections::default(),
            CACHE,
        )
        .await
    };
    reopen().await.unwrap();

    for (table, problem) in [
        (
            "tenantd.records",
            "tenantd.records does not FORCE ROW LEVEL SECURITY",
        ),
        (
            "t_wonka.usage",
            "t_wonka.usage does not FORCE ROW LEVEL SECURITY",
        ),
    ] {
        sqlx::query(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
            .execute(&mut owner)
            .await
            .unwrap();
        let refused = reopen().await.unwrap_err().to_string();
        assert!(refused.contains(problem), "{refused}");
        sqlx::query(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))
            .execute(&mut owner)
            .await
            .unwrap();
        reopen().await.unwrap();
    }
}
