//! The write gate behind tenant moves: held writes are refused, not lost.

use serde_json::json;
use tenantd_core::{Isolation, PoolName};
use tenantd_store::data::{BatchOp, DataError, Placement};

use crate::{coll, fixture, rid, scopes, NOW};

#[tokio::test]
async fn a_frozen_tenant_refuses_writes_and_others_do_not_notice() {
    let f = fixture().await;
    let (acme, acme_control) = scopes("acme", Isolation::Pooled);
    let (globex, _) = scopes("globex", Isolation::Pooled);
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

    let freeze = f.store.freeze(&acme_control).await;
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

#[tokio::test]
async fn a_write_with_the_old_placement_is_refused_after_a_move() {
    let f = fixture().await;
    let (old, control) = scopes("acme", Isolation::Pooled);
    let (new, _) = scopes("acme", Isolation::Dedicated);
    let orders = coll("orders");
    f.store
        .create_collection(&old, &orders, &[], NOW)
        .await
        .unwrap();
    let from = Placement {
        pool: PoolName::default_pool(),
        isolation: Isolation::Pooled,
    };
    let to = Placement {
        pool: PoolName::default_pool(),
        isolation: Isolation::Dedicated,
    };
    {
        let _freeze = f.store.freeze(&control).await;
        f.store.copy_tenant(&control, &from, &to).await.unwrap();
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
