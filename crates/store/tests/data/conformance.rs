//! Behaviour every engine and model must share.

use serde_json::{json, Value};
use tenantd_core::filter::{FieldPath, Filter};
use tenantd_store::data::{
    BatchOp, BatchResult, Cursor, DataError, Direction, Expect, ListQuery, Usage,
};

use crate::{coll, fixture, rid, scope, MODELS, NOW};

fn path(s: &str) -> FieldPath {
    FieldPath::parse(s).unwrap()
}

#[tokio::test]
async fn collections_are_created_listed_and_deleted() {
    for model in MODELS {
        let f = fixture().await;
        let s = scope("acme", model);
        let created = f
            .store
            .create_collection(&s, &coll("orders"), &[path("total")], NOW)
            .await
            .unwrap();
        assert_eq!(created.indexes, vec![path("total")]);
        assert!(matches!(
            f.store
                .create_collection(&s, &coll("orders"), &[], NOW)
                .await,
            Err(DataError::CollectionExists)
        ));
        f.store
            .create_collection(&s, &coll("invoices"), &[], NOW)
            .await
            .unwrap();
        let names: Vec<String> = f
            .store
            .collections(&s, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(names, ["invoices", "orders"], "{model:?}");
        assert_eq!(
            f.store.collection(&s, &coll("orders")).await.unwrap(),
            Some(created)
        );

        f.create(&s, "orders", "a", json!({"total": 1})).await;
        assert!(f
            .store
            .delete_collection(&s, &coll("orders"))
            .await
            .unwrap());
        assert!(!f
            .store
            .delete_collection(&s, &coll("orders"))
            .await
            .unwrap());
        assert_eq!(
            f.store.usage(&s).await.unwrap(),
            Usage::default(),
            "{model:?}: usage follows the delete"
        );
    }
}

#[tokio::test]
async fn records_have_versions_and_exact_usage() {
    for model in MODELS {
        let f = fixture().await;
        let s = scope("acme", model);
        let orders = coll("orders");
        f.store
            .create_collection(&s, &orders, &[], NOW)
            .await
            .unwrap();

        let a = f.create(&s, "orders", "a", json!({"n": 1})).await;
        assert_eq!(a.version, 1);
        let size_a = (1 + json!({"n": 1}).to_string().len()) as i64;
        assert_eq!(
            f.store.usage(&s).await.unwrap(),
            Usage {
                bytes: size_a,
                records: 1
            }
        );

        let dup = f
            .store
            .write(
                &s,
                &orders,
                vec![BatchOp::Create {
                    id: rid("a"),
                    body: json!({}),
                }],
                NOW,
            )
            .await;
        assert!(matches!(dup, Err(DataError::RecordExists)), "{model:?}");

        let put = vec![BatchOp::Put {
            id: rid("a"),
            body: json!({"n": 2, "x": "yy"}),
            expect: Some(Expect::Version(1)),
        }];
        let BatchResult::Written(a2) = f
            .store
            .write(&s, &orders, put, NOW)
            .await
            .unwrap()
            .remove(0)
        else {
            panic!()
        };
        assert_eq!(a2.version, 2);
        let stale = vec![BatchOp::Put {
            id: rid("a"),
            body: json!({}),
            expect: Some(Expect::Version(1)),
        }];
        assert!(matches!(
            f.store.write(&s, &orders, stale, NOW).await,
            Err(DataError::VersionMismatch { current: Some(2) })
        ));

        let patch = vec![BatchOp::Patch {
            id: rid("a"),
            patch: json!({"x": null, "y": {"z": true}}),
            expect: None,
        }];
        let BatchResult::Written(a3) = f
            .store
            .write(&s, &orders, patch, NOW)
            .await
            .unwrap()
            .remove(0)
        else {
            panic!()
        };
        assert_eq!(a3.body, json!({"n": 2, "y": {"z": true}}));
        assert_eq!(a3.version, 3);
        let size_a3 = (1 + a3.body.to_string().len()) as i64;
        assert_eq!(
            f.store.usage(&s).await.unwrap(),
            Usage {
                bytes: size_a3,
                records: 1
            }
        );
        assert_eq!(
            f.store.record(&s, &orders, &rid("a")).await.unwrap(),
            Some(a3)
        );

        let must_exist = vec![BatchOp::Put {
            id: rid("b"),
            body: json!({}),
            expect: Some(Expect::Exists),
        }];
        assert!(matches!(
            f.store.write(&s, &orders, must_exist, NOW).await,
            Err(DataError::VersionMismatch { current: None })
        ));
        let missing = vec![BatchOp::Patch {
            id: rid("nope"),
            patch: json!({}),
            expect: None,
        }];
        assert!(matches!(
            f.store.write(&s, &orders, missing, NOW).await,
            Err(DataError::RecordNotFound)
        ));
        let delete = vec![BatchOp::Delete {
            id: rid("a"),
            expect: Some(Expect::Version(3)),
        }];
        f.store.write(&s, &orders, delete, NOW).await.unwrap();
        assert_eq!(f.store.usage(&s).await.unwrap(), Usage::default());
        assert_eq!(f.store.record(&s, &orders, &rid("a")).await.unwrap(), None);
        assert!(matches!(
            f.store.record(&s, &coll("nothing"), &rid("a")).await,
            Err(DataError::CollectionNotFound)
        ));
    }
}

#[tokio::test]
async fn bodies_are_checked_on_every_write() {
    let f = fixture().await;
    let s = scope("acme", MODELS[0]);
    let orders = coll("orders");
    f.store
        .create_collection(&s, &orders, &[], NOW)
        .await
        .unwrap();
    let too_big = json!({"blob": "x".repeat(70 * 1024)});
    let mut too_deep = json!(1);
    for _ in 0..40 {
        too_deep = json!({ "d": too_deep });
    }
    for body in [json!([1, 2]), too_big, too_deep.clone()] {
        let op = vec![BatchOp::Create { id: rid("a"), body }];
        assert!(matches!(
            f.store.write(&s, &orders, op, NOW).await,
            Err(DataError::InvalidBody(_))
        ));
    }
    f.create(&s, "orders", "a", json!({})).await;
    let op = vec![BatchOp::Patch {
        id: rid("a"),
        patch: too_deep,
        expect: None,
    }];
    assert!(matches!(
        f.store.write(&s, &orders, op, NOW).await,
        Err(DataError::InvalidBody(_))
    ));
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    for model in MODELS {
        let f = fixture().await;
        let s = scope("acme", model);
        let orders = coll("orders");
        f.store
            .create_collection(&s, &orders, &[], NOW)
            .await
            .unwrap();
        f.create(&s, "orders", "keep", json!({"v": 1})).await;
        let ops = vec![
            BatchOp::Create {
                id: rid("new"),
                body: json!({}),
            },
            BatchOp::Put {
                id: rid("keep"),
                body: json!({"v": 2}),
                expect: None,
            },
            BatchOp::Delete {
                id: rid("missing"),
                expect: None,
            },
        ];
        match f.store.write(&s, &orders, ops, NOW).await {
            Err(DataError::Batch { index: 2, error }) => {
                assert!(matches!(*error, DataError::RecordNotFound))
            }
            other => panic!("{model:?}: {other:?}"),
        }
        assert_eq!(
            f.store.record(&s, &orders, &rid("new")).await.unwrap(),
            None
        );
        assert_eq!(
            f.store
                .record(&s, &orders, &rid("keep"))
                .await
                .unwrap()
                .unwrap()
                .body,
            json!({"v": 1})
        );
        assert_eq!(f.store.usage(&s).await.unwrap().records, 1);
    }
}

fn ids(page: &[tenantd_store::data::ListedRecord]) -> Vec<String> {
    page.iter().map(|r| r.record.id.to_string()).collect()
}

#[tokio::test]
async fn filters_compare_by_type() {
    for model in MODELS {
        let f = fixture().await;
        let s = scope("acme", model);
        let c = f
            .store
            .create_collection(&s, &coll("items"), &[], NOW)
            .await
            .unwrap();
        let bodies: [(&str, Value); 6] = [
            ("a", json!({"n": 5, "s": "x", "b": true, "o": {"k": "v"}})),
            ("b", json!({"n": "5", "s": "y", "b": 1})),
            ("c", json!({"n": 10, "b": false, "o": {"k": "w"}})),
            ("d", json!({"n": null, "s": "x"})),
            ("e", json!({})),
            ("f", json!({"n": 7.5, "s": "z"})),
        ];
        for (id, body) in bodies {
            f.create(&s, "items", id, body).await;
        }
        let cases = [
            ("n = 5", vec!["a"]),
            ("n = \"5\"", vec!["b"]),
            ("n > 5", vec!["c", "f"]),
            ("n >= 5 and n < 10", vec!["a", "f"]),
            ("n = null", vec!["d", "e"]),
            ("n != null", vec!["a", "b", "c", "f"]),
            ("b = true", vec!["a"]),
            ("b != true", vec!["b", "c", "d", "e", "f"]),
            ("s in (\"x\", \"z\")", vec!["a", "d", "f"]),
            ("s != \"x\"", vec!["b", "c", "e", "f"]),
            ("o.k = \"w\" or n = 5", vec!["a", "c"]),
            ("(s = \"x\" or s = \"y\") and n = null", vec!["d"]),
            ("s > \"x\"", vec!["b", "f"]),
        ];
        for (filter, expected) in cases {
            let query = ListQuery {
                filter: Some(Filter::parse(filter).unwrap()),
                limit: 100,
                ..Default::default()
            };
            let got = f.store.list(&s, &c, &query).await.unwrap();
            assert_eq!(ids(&got), expected, "{model:?}: {filter}");
        }
    }
}

#[tokio::test]
async fn sorting_needs_an_index() {
    let f = fixture().await;
    let s = scope("acme", MODELS[0]);
    let c = f
        .store
        .create_collection(&s, &coll("items"), &[path("a")], NOW)
        .await
        .unwrap();
    let query = ListQuery {
        sort: Some((path("b"), Direction::Ascending)),
        limit: 10,
        ..Default::default()
    };
    assert!(matches!(
        f.store.list(&s, &c, &query).await,
        Err(DataError::NotIndexed(_))
    ));
}

/// Walks every page of `query` with pages of `size`.
async fn walk(
    f: &crate::Fixture,
    s: &tenantd_core::DataScope,
    c: &tenantd_store::data::Collection,
    mut query: ListQuery,
    size: u32,
) -> Vec<String> {
    let mut seen = Vec::new();
    query.limit = size;
    loop {
        let page = f.store.list(s, c, &query).await.unwrap();
        seen.extend(ids(&page));
        if page.len() < size as usize {
            return seen;
        }
        let last: Cursor = page.last().unwrap().position.clone();
        query.after = Some(last);
    }
}

#[tokio::test]
async fn sorted_pages_visit_every_record_once_in_order() {
    for model in MODELS {
        let f = fixture().await;
        let s = scope("acme", model);
        let c = f
            .store
            .create_collection(&s, &coll("items"), &[path("k")], NOW)
            .await
            .unwrap();
        // Mixed types, ties, nulls and missing fields: SQLite orders NULL,
        // then numbers, then text; ties go by id.
        let values = [
            json!(3),
            json!("b"),
            json!(null),
            json!(1.5),
            json!(3),
            json!("a"),
            Value::Null,
            json!(-2),
            json!("b"),
            json!(3),
        ];
        for (i, v) in values.iter().enumerate() {
            let body = if i == 6 { json!({}) } else { json!({ "k": v }) };
            f.create(&s, "items", &format!("r{i}"), body).await;
        }
        let ascending = ["r2", "r6", "r7", "r3", "r0", "r4", "r9", "r5", "r1", "r8"];
        for size in [1, 3, 4, 100] {
            let q = ListQuery {
                sort: Some((path("k"), Direction::Ascending)),
                ..Default::default()
            };
            assert_eq!(
                walk(&f, &s, &c, q, size).await,
                ascending,
                "{model:?} ascending by {size}"
            );
            let q = ListQuery {
                sort: Some((path("k"), Direction::Descending)),
                ..Default::default()
            };
            let mut descending = ascending;
            descending.reverse();
            assert_eq!(
                walk(&f, &s, &c, q, size).await,
                descending,
                "{model:?} descending by {size}"
            );
            let unsorted = walk(&f, &s, &c, ListQuery::default(), size).await;
            let mut by_id = ascending.to_vec();
            by_id.sort();
            assert_eq!(unsorted, by_id, "{model:?} by id, pages of {size}");
        }
        let filtered = ListQuery {
            filter: Some(Filter::parse("k >= 1.5").unwrap()),
            sort: Some((path("k"), Direction::Descending)),
            ..Default::default()
        };
        assert_eq!(
            walk(&f, &s, &c, filtered, 2).await,
            ["r9", "r4", "r0", "r3"]
        );
    }
}
