//! The data API over HTTP: records with versions and conditional requests,
//! lists, batches, bad input, and leak probes between tenants.

use reqwest::Method;
use serde_json::{json, Value};
use tenantd_client::api::{BatchOperation, BatchRequest, CreateCollection, CreateTenant};
use tenantd_client::{Client, RecordQuery};
use tenantd_core::{CollectionName, Isolation, RecordId, Role, TenantId};

use crate::helpers::{assert_problem, spawn_app, TestApp};

fn orders() -> CollectionName {
    "orders".parse().unwrap()
}

fn rid(s: &str) -> RecordId {
    s.parse().unwrap()
}

/// A tenant with the given model, its developer's client and token.
async fn tenant(app: &TestApp, id: &str, isolation: Isolation) -> (Client, String) {
    app.operator
        .create_tenant(&CreateTenant {
            isolation: Some(isolation),
            ..CreateTenant::new(TenantId::parse(id).unwrap(), id)
        })
        .await
        .unwrap();
    let token = app.tenant_key(id, Role::Developer).await.token;
    (app.client(&token), token)
}

async fn with_orders(client: &Client, indexes: &[&str]) {
    client
        .create_collection(&CreateCollection {
            name: orders(),
            indexes: indexes.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn records_round_trip_with_versions_in_both_models() {
    let app = spawn_app().await;
    for (id, model) in [
        ("acme", Isolation::Pooled),
        ("globex", Isolation::Dedicated),
    ] {
        let (client, _) = tenant(&app, id, model).await;
        with_orders(&client, &[]).await;
        let created = client
            .create_record(&orders(), &json!({"total": 10}))
            .await
            .unwrap();
        assert_eq!(
            (created.version, created.data.clone()),
            (1, json!({"total": 10}))
        );
        assert_eq!(created.id.as_str().len(), 36, "a UUIDv7");
        let put = client
            .put_record(&orders(), &created.id, &json!({"total": 11}), Some(1))
            .await
            .unwrap();
        assert_eq!(put.version, 2);
        let patched = client
            .patch_record(
                &orders(),
                &created.id,
                &json!({"note": "gift", "total": null}),
                Some(2),
            )
            .await
            .unwrap();
        assert_eq!(
            (patched.version, patched.data),
            (3, json!({"note": "gift"}))
        );
        assert_problem(
            client
                .put_record(&orders(), &created.id, &json!({}), Some(2))
                .await,
            412,
            "precondition_failed",
        );
        client
            .delete_record(&orders(), &created.id, Some(3))
            .await
            .unwrap();
        assert_problem(
            client.record(&orders(), &created.id).await,
            404,
            "not_found",
        );
    }
}

#[tokio::test]
async fn etags_drive_conditional_requests() {
    let app = spawn_app().await;
    let (client, token) = tenant(&app, "acme", Isolation::Pooled).await;
    with_orders(&client, &[]).await;
    let path = "/v1/collections/orders/records/inv-1";
    let put = |headers: Vec<(&'static str, &'static str)>, body: Value| {
        let mut request = app
            .request(Method::PUT, path)
            .bearer_auth(&token)
            .json(&body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let created = put(vec![("if-none-match", "*")], json!({"a": 1}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["etag"], "\"1\"");
    assert_eq!(created.headers()["location"], path);
    assert_eq!(
        put(vec![("if-none-match", "*")], json!({"a": 2}))
            .await
            .unwrap()
            .status(),
        412
    );
    assert_eq!(
        put(vec![("if-match", "\"7\"")], json!({"a": 2}))
            .await
            .unwrap()
            .status(),
        412
    );
    assert_eq!(
        put(vec![("if-match", "W/\"1\"")], json!({"a": 2}))
            .await
            .unwrap()
            .status(),
        412,
        "weak tags never match"
    );
    let replaced = put(vec![("if-match", "\"1\"")], json!({"a": 2}))
        .await
        .unwrap();
    assert_eq!(
        (
            replaced.status().as_u16(),
            replaced.headers()["etag"].to_str().unwrap()
        ),
        (200, "\"2\"")
    );

    let get = |tag: &'static str| {
        app.request(Method::GET, path)
            .bearer_auth(&token)
            .header("if-none-match", tag)
            .send()
    };
    let unchanged = get("\"2\"").await.unwrap();
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"], "\"2\"");
    assert_eq!(get("\"1\"").await.unwrap().status(), 200);

    let missing = app
        .request(Method::PUT, "/v1/collections/orders/records/nope")
        .bearer_auth(&token)
        .header("if-match", "*")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 412);
}

#[tokio::test]
async fn lists_filter_sort_and_page() {
    let app = spawn_app().await;
    let (client, _) = tenant(&app, "acme", Isolation::Dedicated).await;
    with_orders(&client, &["total"]).await;
    for (id, total, status) in [
        ("a", 30, "paid"),
        ("b", 10, "paid"),
        ("c", 20, "open"),
        ("d", 40, "paid"),
    ] {
        client
            .put_record(
                &orders(),
                &rid(id),
                &json!({"total": total, "status": status}),
                None,
            )
            .await
            .unwrap();
    }
    let mut query = RecordQuery {
        filter: Some("status = \"paid\"".into()),
        sort: Some("-total".into()),
        limit: Some(2),
        cursor: None,
    };
    let first = client.list_records(&orders(), &query).await.unwrap();
    let ids: Vec<_> = first.items.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, ["d", "a"]);
    query.cursor = first.next_cursor.clone();
    let second = client.list_records(&orders(), &query).await.unwrap();
    let ids: Vec<_> = second.items.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, ["b"]);
    assert_eq!(second.next_cursor, None);

    let other_sort = RecordQuery {
        sort: Some("total".into()),
        cursor: first.next_cursor,
        ..Default::default()
    };
    assert_problem(
        client.list_records(&orders(), &other_sort).await,
        400,
        "invalid_parameter",
    );
    let unindexed = RecordQuery {
        sort: Some("status".into()),
        ..Default::default()
    };
    assert_problem(
        client.list_records(&orders(), &unindexed).await,
        400,
        "invalid_parameter",
    );
    let too_many = RecordQuery {
        limit: Some(1001),
        ..Default::default()
    };
    assert_problem(
        client.list_records(&orders(), &too_many).await,
        400,
        "invalid_parameter",
    );
    let bad = RecordQuery {
        filter: Some("total >= ".into()),
        ..Default::default()
    };
    match client.list_records(&orders(), &bad).await {
        Err(tenantd_client::Error::Api(p)) => {
            assert_eq!((p.status, p.code.as_str()), (400, "invalid_filter"));
            assert!(p.detail.unwrap().contains("position 9"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_records_and_names_are_400() {
    let app = spawn_app().await;
    let (client, token) = tenant(&app, "acme", Isolation::Pooled).await;
    with_orders(&client, &[]).await;
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "d": deep });
    }
    let big = json!({"blob": "x".repeat(300 * 1024)});
    for body in [json!([1]), json!("text"), deep, big] {
        assert_problem(
            client.create_record(&orders(), &body).await,
            400,
            "invalid_record",
        );
    }
    for path in [
        "/v1/collections/Orders/records",
        "/v1/collections/orders/records/-bad-",
        "/v1/collections/orders/records?limt=5",
    ] {
        let response = app
            .request(Method::GET, path)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
    }
    let bad_index = client
        .create_collection(&CreateCollection {
            name: "items".parse().unwrap(),
            indexes: vec!["a b".into()],
        })
        .await;
    assert_problem(bad_index, 422, "invalid_body");
    let again = client
        .create_collection(&CreateCollection {
            name: orders(),
            indexes: vec![],
        })
        .await;
    assert_problem(again, 409, "collection_exists");
    let schema = app
        .operator
        .create_tenant(&CreateTenant {
            isolation: Some(Isolation::Schema),
            ..CreateTenant::new(TenantId::parse("initech").unwrap(), "x")
        })
        .await;
    assert_problem(schema, 422, "placement_failed");
}

#[tokio::test]
async fn a_batch_applies_all_or_nothing() {
    let app = spawn_app().await;
    let (client, _) = tenant(&app, "acme", Isolation::Pooled).await;
    with_orders(&client, &[]).await;
    client
        .put_record(&orders(), &rid("keep"), &json!({"v": 1}), None)
        .await
        .unwrap();
    let failing = BatchRequest {
        operations: vec![
            BatchOperation::Create {
                id: Some(rid("n1")),
                data: json!({}),
            },
            BatchOperation::Put {
                id: rid("keep"),
                data: json!({"v": 2}),
                if_match: Some(1),
            },
            BatchOperation::Create {
                id: Some(rid("keep")),
                data: json!({}),
            },
        ],
    };
    match client.batch(&orders(), &failing).await {
        Err(tenantd_client::Error::Api(p)) => {
            assert_eq!((p.status, p.code.as_str()), (409, "record_exists"));
            assert!(p.detail.unwrap().starts_with("operation 2"));
        }
        other => panic!("{other:?}"),
    }
    assert_problem(client.record(&orders(), &rid("n1")).await, 404, "not_found");
    assert_eq!(
        client.record(&orders(), &rid("keep")).await.unwrap().data,
        json!({"v": 1})
    );

    let ok = BatchRequest {
        operations: vec![
            BatchOperation::Create {
                id: None,
                data: json!({"n": 1}),
            },
            BatchOperation::Patch {
                id: rid("keep"),
                data: json!({"w": true}),
                if_match: Some(1),
            },
            BatchOperation::Delete {
                id: rid("keep"),
                if_match: Some(2),
            },
        ],
    };
    let results = client.batch(&orders(), &ok).await.unwrap().results;
    assert_eq!(results.len(), 3);
    assert_eq!((results[1].version, results[2].deleted), (Some(2), true));
    let empty = BatchRequest { operations: vec![] };
    assert_problem(client.batch(&orders(), &empty).await, 422, "invalid_body");
}

#[tokio::test]
async fn a_canary_never_crosses_tenants() {
    let app = spawn_app().await;
    let (acme, _) = tenant(&app, "acme", Isolation::Pooled).await;
    let (globex, _) = tenant(&app, "globex", Isolation::Pooled).await;
    let (initech, _) = tenant(&app, "initech", Isolation::Dedicated).await;
    for client in [&acme, &globex, &initech] {
        with_orders(client, &["secret"]).await;
    }
    acme.put_record(
        &orders(),
        &rid("shared-id"),
        &json!({"secret": "CANARY-acme"}),
        None,
    )
    .await
    .unwrap();
    for other in [&globex, &initech] {
        // The same id is free in every other tenant: no unique-key oracle.
        other
            .put_record(
                &orders(),
                &rid("shared-id"),
                &json!({"secret": "mine"}),
                None,
            )
            .await
            .unwrap();
        let got = other.record(&orders(), &rid("shared-id")).await.unwrap();
        assert_eq!(got.data, json!({"secret": "mine"}));
        let filter = RecordQuery {
            filter: Some("secret = \"CANARY-acme\"".into()),
            ..Default::default()
        };
        assert!(other
            .list_records(&orders(), &filter)
            .await
            .unwrap()
            .items
            .is_empty());
        let sorted = RecordQuery {
            sort: Some("secret".into()),
            ..Default::default()
        };
        let all = other.list_records(&orders(), &sorted).await.unwrap();
        assert!(!serde_json::to_string(&all).unwrap().contains("CANARY"));
        // Conditional writes on the other tenant's version say nothing either.
        let err = other
            .put_record(&orders(), &rid("shared-id"), &json!({}), Some(99))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("CANARY"));
    }
    // Deleting in one tenant leaves the others alone.
    globex.delete_collection(&orders()).await.unwrap();
    assert_eq!(
        acme.record(&orders(), &rid("shared-id"))
            .await
            .unwrap()
            .data["secret"],
        "CANARY-acme"
    );
    assert_problem(
        globex.record(&orders(), &rid("shared-id")).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn purging_a_tenant_purges_its_data() {
    let app = spawn_app().await;
    for (id, model) in [
        ("acme", Isolation::Pooled),
        ("globex", Isolation::Dedicated),
    ] {
        let (client, _) = tenant(&app, id, model).await;
        with_orders(&client, &[]).await;
        client
            .create_record(&orders(), &json!({"x": 1}))
            .await
            .unwrap();
        let tenant_id = TenantId::parse(id).unwrap();
        app.operator.delete_tenant(&tenant_id).await.unwrap();
        app.operator.purge_tenant(&tenant_id).await.unwrap();
        let (fresh, _) = tenant(&app, id, model).await;
        assert!(
            fresh
                .collections(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty(),
            "{id}"
        );
    }
    let dedicated = app.config.data_dir.join("data/tenants/globex.db");
    assert!(dedicated.exists(), "recreated on first use");
}

#[tokio::test]
async fn operators_do_not_read_tenant_data() {
    let app = spawn_app().await;
    tenant(&app, "acme", Isolation::Pooled).await;
    assert_problem(
        app.operator.collections(&Default::default()).await,
        403,
        "forbidden",
    );
}
