//! The record cache: writes are seen at once, and no tenant takes more than
//! its share.

use serde_json::json;
use tenantd_core::share::Percent;
use tenantd_store::cache::CacheLimits;
use tenantd_store::data::{BatchOp, Expect};

use crate::{coll, rid, scope, MODELS, NOW};

#[tokio::test]
async fn cached_reads_see_every_write() {
    let f = crate::fixture().await;
    let s = scope("acme", MODELS[0]);
    let orders = coll("orders");
    f.store
        .create_collection(&s, &orders, &[], NOW)
        .await
        .unwrap();
    f.create(&s, "orders", "a", json!({"v": 1})).await;
    for version in 1..=3 {
        // Read twice: the second read is served by the cache.
        for _ in 0..2 {
            let got = f
                .store
                .record(&s, &orders, &rid("a"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.version, version);
        }
        let put = vec![BatchOp::Put {
            id: rid("a"),
            body: json!({"v": version + 1}),
            expect: Some(Expect::Version(version)),
        }];
        f.store.write(&s, &orders, put, NOW).await.unwrap();
    }
    f.store
        .write(
            &s,
            &orders,
            vec![BatchOp::Delete {
                id: rid("a"),
                expect: None,
            }],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(f.store.record(&s, &orders, &rid("a")).await.unwrap(), None);

    f.create(&s, "orders", "b", json!({})).await;
    f.store
        .record(&s, &orders, &rid("b"))
        .await
        .unwrap()
        .unwrap();
    f.store.delete_collection(&s, &orders).await.unwrap();
    f.store
        .create_collection(&s, &orders, &[], NOW)
        .await
        .unwrap();
    assert_eq!(
        f.store.record(&s, &orders, &rid("b")).await.unwrap(),
        None,
        "dropped with its collection"
    );
}

#[tokio::test]
async fn one_tenant_cannot_take_more_than_its_share() {
    let limits = CacheLimits {
        capacity_bytes: 64 * 1024,
        tenant_share_percent: Percent::new(25).unwrap(),
        ttl: std::time::Duration::from_secs(60),
    };
    let f = crate::fixture_with(limits).await;
    let store = &f.store;
    let noisy = scope("noisy", MODELS[0]);
    let quiet = scope("quiet", MODELS[0]);
    let orders = coll("orders");
    for s in [&noisy, &quiet] {
        store.create_collection(s, &orders, &[], NOW).await.unwrap();
    }
    let body = json!({"pad": "x".repeat(900)});
    for i in 0..60 {
        let op = vec![BatchOp::Create {
            id: rid(&format!("r{i}")),
            body: body.clone(),
        }];
        store.write(&noisy, &orders, op, NOW).await.unwrap();
        store
            .record(&noisy, &orders, &rid(&format!("r{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    let noisy_bytes = store.cache_bytes(&noisy).await;
    assert!(
        noisy_bytes > 10 * 1024,
        "the cache is in use: {noisy_bytes}"
    );
    assert!(
        noisy_bytes <= 16 * 1024,
        "noisy holds {noisy_bytes} bytes, over its 25% share"
    );

    store
        .write(
            &quiet,
            &orders,
            vec![BatchOp::Create {
                id: rid("q"),
                body: body.clone(),
            }],
            NOW,
        )
        .await
        .unwrap();
    store
        .record(&quiet, &orders, &rid("q"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store.cache_bytes(&quiet).await > 0,
        "a quiet tenant still gets cached"
    );
}
