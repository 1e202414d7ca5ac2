//! The write gate behind tenant moves: held writes are refused, not lost.

use serde_json::json;
use tenantd_core::filter::FieldPath;
use tenantd_core::PoolName;
use tenantd_store::data::{BatchOp, CopyProgress, DataError, ListQuery, Placement};
use tokio::sync::watch;

use crate::{coll, fixture, rid, scopes, At, MODELS, NOW};

fn placement(at: At) -> Placement {
    Placement {
        pool: PoolName::parse(at.pool).unwrap(),
        isolation: at.isolation,
    }
}

#[tokio::test]
async fn a_frozen_tenant_refuses_writes_and_others_do_not_notice() {
    let f = fixture().await;
    let (acme, acme_control) = scopes("acme", MODELS[0]);
    let (globex, _) = scopes("globex", MODELS[0]);
    let orders = coll("orders");
    for s in [&acme, &globex] {
        f.store
            .create_collection(s, &orders, &[], NOW)
            .await
            .unwrap();
    }
    let write = |id: &str| {
        vec![BatchOp::Create {
            id: rid(id),
            body: json!({}),
        }]
    };

    let freeze = f
        .store
        .freeze(&acme_control, &placement(MODELS[0]))
        .await
        .unwrap();
    assert!(matches!(
        f.store.write(&acme, &orders, write("a"), NOW).await,
        Err(DataError::Maintenance)
    ));
    assert!(matches!(
        f.store.delete_collection(&acme, &orders).await,
        Err(DataError::Maintenance)
    ));
    f.store
        .write(&globex, &orders, write("g"), NOW)
        .await
        .unwrap();
    assert!(
        f.store
            .record(&acme, &orders, &rid("a"))
            .await
            .unwrap()
            .is_none(),
        "reads go on"
    );
    drop(freeze);
    f.store
        .write(&acme, &orders, write("a"), NOW)
        .await
        .unwrap();
}

/// A move's first steps: the tenant's writes held at `from`, its data
/// copied to `to`.
async fn hold_and_copy(
    store: &tenantd_store::DataStore,
    control: &tenantd_core::TenantScope,
    from: &Placement,
    to: &Placement,
) -> tenantd_store::data::Freeze {
    let freeze = store.freeze(control, from).await.unwrap();
    store
        .copy_tenant(control, from, to, &watch::Sender::default())
        .await
        .unwrap();
    freeze
}

/// Two processes on one PostgreSQL pool, as two nodes are: a move held by
/// one refuses the other's writes at once, lets its reads go on, and once
/// the tenant departed, the other's writes to the old placement are refused
/// (not lost) until it learns the new one; a move undone lets them in again.
#[tokio::test]
async fn a_move_on_postgresql_holds_the_tenants_writes_on_every_node() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let other_node = tenantd_store::DataStore::open(
        &crate::pools(dir.path(), f.database()),
        crate::LIMITS,
        tenantd_store::Connections::default(),
        crate::CACHE,
    )
    .await
    .unwrap();
    for (source, target) in [(MODELS[2], MODELS[3]), (MODELS[4], MODELS[2])] {
        let tenant = format!("acme-{}", source.isolation.as_str());
        let (old, control) = scopes(&tenant, source);
        let (new, _) = scopes(&tenant, target);
        let (globex, _) = scopes("globex", source);
        let orders = coll("orders");
        for s in [&old, &globex] {
            f.store.create_collection(s, &orders, &[], NOW).await.ok();
        }
        let write = |id: &str| {
            vec![BatchOp::Put {
                id: rid(id),
                body: json!({ "id": id }),
                expect: None,
            }]
        };
        other_node
            .write(&old, &orders, write("before"), NOW)
            .await
            .unwrap();
        let (from, to) = (placement(source), placement(target));

        let freeze = hold_and_copy(&f.store, &control, &from, &to).await;
        assert!(
            matches!(
                other_node.write(&old, &orders, write("held"), NOW).await,
                Err(DataError::Maintenance)
            ),
            "{source:?}: another node's write during the move is refused"
        );
        other_node
            .write(&globex, &orders, write("g"), NOW)
            .await
            .unwrap();
        assert!(other_node
            .record(&old, &orders, &rid("before"))
            .await
            .unwrap()
            .is_some());

        // Undone: the tenant stays, and the other node writes again.
        f.store.depart(&control, &from, &to, NOW).await.unwrap();
        f.store.stay(&control, &from).await.unwrap();
        drop(freeze);
        other_node
            .write(&old, &orders, write("after-undo"), NOW)
            .await
            .unwrap();

        // Done: the other node's writes to the old copy are refused even
        // after the hold ends, and go to the new copy once it knows.
        let freeze = hold_and_copy(&f.store, &control, &from, &to).await;
        f.store.depart(&control, &from, &to, NOW).await.unwrap();
        drop(freeze);
        assert!(
            matches!(
                other_node.write(&old, &orders, write("stale"), NOW).await,
                Err(DataError::Maintenance)
            ),
            "{source:?}: a write to the copy the tenant left is refused"
        );
        other_node
            .write(&new, &orders, write("moved"), NOW)
            .await
            .unwrap();
        let got = f.store.record(&new, &orders, &rid("after-undo")).await;
        assert!(
            got.unwrap().is_some(),
            "the write after the undo was copied"
        );
    }

    // Back where it came from: its writes there are welcome again.
    let (pooled, control) = scopes("acme-pooled", MODELS[2]);
    let (from, to) = (placement(MODELS[3]), placement(MODELS[2]));
    let freeze = hold_and_copy(&f.store, &control, &from, &to).await;
    f.store.depart(&control, &from, &to, NOW).await.unwrap();
    drop(freeze);
    other_node
        .write(
            &pooled,
            &coll("orders"),
            vec![BatchOp::Create {
                id: rid("home"),
                body: json!({}),
            }],
            NOW,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_write_with_the_old_placement_is_refused_after_a_move() {
    let f = fixture().await;
    let (old, control) = scopes("acme", MODELS[0]);
    let (new, _) = scopes("acme", MODELS[1]);
    let orders = coll("orders");
    f.store
        .create_collection(&old, &orders, &[], NOW)
        .await
        .unwrap();
    let (from, to) = (placement(MODELS[0]), placement(MODELS[1]));
    {
        let _freeze = f.store.freeze(&control, &from).await.unwrap();
        f.store
            .copy_tenant(&control, &from, &to, &watch::Sender::default())
            .await
            .unwrap();
        assert_eq!(
            f.store.digests(&control, &from).await.unwrap(),
            f.store.digests(&control, &to).await.unwrap()
        );
        f.store.moved(&control, to.clone());
    }
    let write = vec![BatchOp::Create {
        id: rid("late"),
        body: json!({}),
    }];
    assert!(
        matches!(
            f.store.write(&old, &orders, write.clone(), NOW).await,
            Err(DataError::Maintenance)
        ),
        "a request that was identified before the move must not write to the old copy"
    );
    f.store.write(&new, &orders, write, NOW).await.unwrap();
    f.store.remove_copy(&control, &from).await.unwrap();
    assert!(f
        .store
        .collections(&old, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.store.collections(&new, None, 10).await.unwrap().len(), 1);
}

/// A tenant's data copied between any two engines and models keeps every
/// record (ids, versions, bodies), its declared indexes and its usage, and
/// digests the same on both sides, whatever text each engine stores.
#[tokio::test]
async fn copies_between_every_engine_and_model_keep_content_and_digest() {
    let f = fixture().await;
    let orders = coll("orders");
    let bodies = [
        json!({"total": 12.5, "customer": {"name": "Zoë", "tags": ["a", "b"]}, "paid": true}),
        json!({"total": 3, "note": null, "big": 12345678901234_i64, "tiny": 1e-7}),
        json!({"z": 1, "a": {"y": 2, "b": [3, {"x": 4}]}}),
    ];
    for from in MODELS {
        for to in MODELS {
            if from == to {
                continue;
            }
            let tenant = "movers";
            let (old, control) = scopes(tenant, from);
            let (new, _) = scopes(tenant, to);
            f.store
                .create_collection(&old, &orders, &[FieldPath::parse("total").unwrap()], NOW)
                .await
                .unwrap();
            for (i, body) in bodies.iter().enumerate() {
                f.create(&old, "orders", &format!("r{i}"), body.clone())
                    .await;
            }
            // A second version of one record.
            let put = vec![BatchOp::Put {
                id: rid("r0"),
                body: json!({"total": 13}),
                expect: None,
            }];
            f.store.write(&old, &orders, put, NOW).await.unwrap();

            let (a, b) = (placement(from), placement(to));
            let progress = watch::Sender::default();
            f.store
                .copy_tenant(&control, &a, &b, &progress)
                .await
                .unwrap();
            assert_eq!(
                *progress.borrow(),
                CopyProgress {
                    collections: 1,
                    collections_total: 1,
                    records: 3,
                    records_total: 3,
                }
            );
            let digests = f.store.digests(&control, &a).await.unwrap();
            assert_eq!(digests.len(), 1);
            assert_eq!(digests[0].records, 3);
            assert_eq!(
                f.store.digests(&control, &b).await.unwrap(),
                digests,
                "{from:?} -> {to:?}"
            );
            assert_eq!(
                f.store.usage(&new).await.unwrap(),
                f.store.usage(&old).await.unwrap()
            );
            let moved = f.store.collection(&new, &orders).await.unwrap().unwrap();
            assert_eq!(
                moved,
                f.store.collection(&old, &orders).await.unwrap().unwrap()
            );
            let sorted = ListQuery {
                sort: Some((
                    FieldPath::parse("total").unwrap(),
                    tenantd_store::data::Direction::Ascending,
                )),
                limit: 10,
                ..Default::default()
            };
            let listed: Vec<_> = f
                .store
                .list(&new, &moved, &sorted)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.record)
                .collect();
            let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
            // Without a total first, then by total.
            assert_eq!(ids, ["r2", "r1", "r0"], "{from:?} -> {to:?}");
            assert_eq!(listed[2].version, 2);
            assert_eq!(listed[0].body, bodies[2]);
            assert_eq!(listed[1].body, bodies[1]);

            f.store.remove_copy(&control, &a).await.unwrap();
            f.store.remove_copy(&control, &b).await.unwrap();
            assert!(f
                .store
                .collections(&old, None, 10)
                .await
                .unwrap()
                .is_empty());
            assert!(f
                .store
                .collections(&new, None, 10)
                .await
                .unwrap()
                .is_empty());
        }
    }
}

/// A copy larger than one part is written in parts, counts every record of
/// every collection (an empty one too) and loses none.
#[tokio::test]
async fn a_copy_in_parts_counts_and_keeps_every_record() {
    let f = fixture().await;
    let (old, control) = scopes("bulk", MODELS[0]);
    let (new, _) = scopes("bulk", MODELS[1]);
    let (orders, empty) = (coll("orders"), coll("empty"));
    for name in [&orders, &empty] {
        f.store
            .create_collection(&old, name, &[], NOW)
            .await
            .unwrap();
    }
    for batch in 0..3 {
        let ops = (0..900)
            .map(|i| BatchOp::Create {
                id: rid(&format!("r{batch}-{i}")),
                body: json!({ "n": i }),
            })
            .collect();
        f.store.write(&old, &orders, ops, NOW).await.unwrap();
    }
    let progress = watch::Sender::default();
    let mut seen = progress.subscribe();
    let (from, to) = (placement(MODELS[0]), placement(MODELS[1]));
    let _freeze = f.store.freeze(&control, &from).await.unwrap();
    f.store
        .copy_tenant(&control, &from, &to, &progress)
        .await
        .unwrap();
    assert!(seen.has_changed().unwrap());
    assert_eq!(
        *seen.borrow_and_update(),
        CopyProgress {
            collections: 2,
            collections_total: 2,
            records: 2700,
            records_total: 2700,
        }
    );
    assert_eq!(
        f.store.digests(&control, &from).await.unwrap(),
        f.store.digests(&control, &to).await.unwrap()
    );
    assert_eq!(
        f.store.usage(&new).await.unwrap(),
        f.store.usage(&old).await.unwrap()
    );
}
