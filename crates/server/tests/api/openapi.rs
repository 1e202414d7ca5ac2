//! The published API description: a checked-in snapshot makes every contract
//! change visible in review, and the description covers exactly the routes.

use std::collections::BTreeSet;

use serde_json::Value;
use tenantd_server::{openapi_json, route_table};

use crate::helpers::spawn_app;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_openapi_document_matches_the_checked_in_snapshot() {
    let current = openapi_json();
    // A developer's switch for this test, not server configuration.
    #[allow(clippy::disallowed_methods)]
    let bless = std::env::var_os("TENANTD_BLESS").is_some();
    if bless {
        std::fs::write(SNAPSHOT, &current).expect("write snapshot");
        return;
    }
    let snapshot = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        snapshot == current,
        "the API contract changed: review the difference, then run \
         `TENANTD_BLESS=1 cargo test -p tenantd-server --test api openapi` and commit crates/server/openapi.json"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_describes_exactly_the_route_table() {
    let doc: Value = serde_json::from_str(&openapi_json()).expect("valid JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    // OpenAPI has no catch-all parameter: `{*path}` is written `{path}`.
    let routed: BTreeSet<_> = route_table()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.replace("{*", "{")))
        .collect();
    assert_eq!(documented, routed);
}

#[tokio::test]
async fn the_server_publishes_the_same_document() {
    let app = spawn_app().await;
    let response = app
        .request(reqwest::Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), openapi_json());
}

#[tokio::test]
async fn the_api_reference_renders_the_document_from_files_in_the_binary() {
    let app = spawn_app().await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.url)).send();
    let page = get("/docs/").await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    // Everything the page loads is served here, nothing from elsewhere.
    for asset in [
        "./swagger-ui.css",
        "./swagger-ui-bundle.js",
        "./swagger-initializer.js",
    ] {
        assert!(page.contains(asset), "the page does not load {asset}");
        let served = get(&format!("/docs/{}", &asset[2..])).await.unwrap();
        assert_eq!(served.status(), 200, "{asset}");
    }
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "{page}"
    );
    let initializer = get("/docs/swagger-initializer.js").await.unwrap();
    let initializer = initializer.text().await.unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    // The bare path leads to the page.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/docs", app.url))
        .send()
        .await
        .unwrap();
    assert!(bare.status().is_redirection(), "{}", bare.status());
}

#[tokio::test]
async fn the_api_reference_lists_every_path_in_a_real_browser() {
    use tenantd_testkit::browser::{Browser, Locator};
    let app = spawn_app().await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/docs/", app.url))
        .await
        .unwrap();
    // Swagger UI draws the operations once it has read /openapi.json.
    let path = Locator::Css(".opblock-summary-path");
    browser
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(30))
        .for_element(path)
        .await
        .expect("the reference shows operations");
    let mut shown = BTreeSet::new();
    for element in browser.client.find_all(path).await.unwrap() {
        shown.insert(element.attr("data-path").await.unwrap().unwrap_or_default());
    }
    let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(shown, documented);
    browser.screenshot("api-reference").await;
    browser.close().await;
}
