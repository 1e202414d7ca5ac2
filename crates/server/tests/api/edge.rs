//! The edge and bad input: every malformed request gets a problem document
//! with a stable code, and nothing panics or hangs.

use std::time::Duration;
use tenantd_server::config::NonZeroDuration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Sends a request and returns its status, headers and parsed problem body.
async fn problem(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(
        headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "status {status}"
    );
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status, "{body}");
    (status, headers, body)
}

fn operator(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.request(method, path).bearer_auth(&app.operator_token)
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_key() {
    let app = spawn_app().await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], status);
    }
}

#[tokio::test]
async fn problems_carry_code_type_instance_and_the_request_id() {
    let app = spawn_app().await;
    let (status, headers, body) = problem(
        app.request(Method::GET, "/v1/me")
            .header("x-request-id", "trace-me-42"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "missing_api_key");
    assert_eq!(body["type"], "urn:tenantd:error:missing_api_key");
    assert_eq!(body["instance"], "/v1/me");
    assert_eq!(body["request_id"], "trace-me-42");
    assert_eq!(headers["x-request-id"], "trace-me-42");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
}

#[tokio::test]
async fn unsafe_request_ids_are_replaced() {
    let app = spawn_app().await;
    let response = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "a".repeat(200))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32, "a fresh 128-bit hex id: {id}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let (status, _, body) = problem(operator(&app, Method::GET, "/v1/nothing-here")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, _, body) = problem(operator(&app, Method::PUT, "/v1/tenants")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn malformed_bodies_get_the_right_code() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: [(&str, Option<&str>, u16, &str); 7] = [
        ("{\"id\":", Some("application/json"), 400, "malformed_json"),
        ("not json", Some("application/json"), 400, "malformed_json"),
        // Well-formed but of the wrong shape: refused at the first bracket.
        (deep.as_str(), Some("application/json"), 422, "invalid_body"),
        (
            "{\"id\":\"acme\",\"name\":\"A\",\"plan\":\"gold\"}",
            Some("application/json"),
            422,
            "invalid_body",
        ),
        (
            "{\"id\":\"Acme\",\"name\":\"A\"}",
            Some("application/json"),
            422,
            "invalid_body",
        ),
        (
            "{\"name\":\"A\"}",
            Some("application/json"),
            422,
            "invalid_body",
        ),
        (
            "{\"id\":\"acme\",\"name\":\"A\"}",
            None,
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let mut request = operator(&app, Method::POST, "/v1/tenants").body(body.to_owned());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let (got, _, problem) = problem(request).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{body:.60}: {problem}"
        );
    }
    let list = app
        .operator
        .list_tenants(&Default::default(), None)
        .await
        .unwrap();
    assert!(list.items.is_empty(), "no bad request created anything");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_whether_or_not_its_length_is_announced() {
    let app = spawn_app_with(|c| c.max_body_bytes = 4096).await;
    let big = format!("{{\"id\":\"acme\",\"name\":\"{}\"}}", "x".repeat(10_000));
    let (status, _, body) = problem(
        operator(&app, Method::POST, "/v1/tenants")
            .header("content-type", "application/json")
            .body(big.clone()),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // The same body chunked, with no Content-Length to reject it up front.
    let mut chunked = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.operator_token
    );
    for chunk in big.as_bytes().chunks(1000) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let answer = raw_exchange(&app, chunked.as_bytes()).await;
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"code\":\"payload_too_large\""),
        "{answer}"
    );
}

/// Writes raw bytes on a fresh connection and returns the first answer, lowercased.
async fn raw_exchange(app: &TestApp, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_lowercase()
}

#[tokio::test]
async fn invalid_path_and_query_parameters_are_400() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    for path in [
        "/v1/tenants/NOT_A_SLUG",
        "/v1/tenants/acme/keys/not-hex",
        "/v1/tenants?limit=0",
        "/v1/tenants?limit=201",
        "/v1/tenants?limit=ten",
        "/v1/tenants?cursor=%25%25",
        "/v1/tenants?status=gone",
        "/v1/tenants?limt=5",
        "/v1/platform/keys/0123",
    ] {
        let (status, _, body) = problem(operator(&app, Method::GET, path)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let app = spawn_app_with(|c| c.max_header_bytes = 2048).await;
    let (status, _, body) = problem(
        app.request(Method::GET, "/healthz")
            .header("x-padding", "p".repeat(4096)),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (431, Some("headers_too_large"))
    );
}

#[tokio::test]
async fn many_small_headers_under_the_byte_limit_pass_and_too_many_get_a_problem() {
    let app = spawn_app().await;
    // 150 headers of about 12 bytes: under the 16 KiB limit, over hyper's
    // default count of 100.
    let mut request = app.request(Method::GET, "/healthz");
    for i in 0..150 {
        request = request.header(format!("x-h{i}"), "v");
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    // Past the byte limit with many headers, each under the size hyper
    // counts on: a problem, not a bare 431.
    let mut request = app.request(Method::GET, "/healthz");
    for i in 0..400 {
        request = request.header(format!("x-header-{i:04}"), "v".repeat(32));
    }
    let (status, _, body) = problem(request).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (431, Some("headers_too_large"))
    );
}

/// What the HTTP layer refuses before any route sees a request is a
/// problem too, and the connection is closed after it.
#[tokio::test]
async fn requests_the_http_layer_cannot_parse_get_problems() {
    let app = spawn_app().await;
    let many_lines: String = (0..600).map(|i| format!("x-{i}: v\r\n")).collect();
    let cases = [
        (
            "GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n".to_owned(),
            400,
            "malformed_request",
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n".to_owned(),
            400,
            "malformed_request",
        ),
        (
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_owned(),
            400,
            "malformed_request",
        ),
        (
            "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
            400,
            "malformed_request",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)),
            414,
            "uri_too_long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_lines}\r\n"),
            431,
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // Read to the end: the server closes the connection after the answer.
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
        let head = head.to_lowercase();
        assert!(head.starts_with(&format!("http/1.1 {status} ")), "{head}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (problem["status"].as_u64(), problem["code"].as_str()),
            (Some(status), Some(code)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn more_than_one_credential_is_refused_even_when_they_agree() {
    let app = spawn_app().await;
    let token = app.operator_token.clone();
    for request in [
        app.request(Method::GET, "/v1/me")
            .bearer_auth(&token)
            .header("x-api-key", &token),
        app.request(Method::GET, "/v1/me")
            .header("x-api-key", &token)
            .header("x-api-key", &token),
    ] {
        let (status, _, body) = problem(request).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("multiple_credentials"))
        );
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app_with(|c| c.header_read_timeout = NonZeroDuration::from_millis(300)).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The generous bound only keeps a broken server from hanging the suite.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
}

#[tokio::test]
async fn a_request_over_its_deadline_is_503_with_retry_after() {
    let app = spawn_app_with(|c| c.request_timeout = NonZeroDuration::from_millis(300)).await;
    // The body never arrives in full: the deadline must answer for it.
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":",
        app.operator_token
    );
    let text = raw_exchange(&app, head.as_bytes()).await;
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
}

#[tokio::test]
async fn keys_in_either_header_work_and_malformed_ones_are_told_apart() {
    let app = spawn_app().await;
    let me = app
        .request(Method::GET, "/v1/me")
        .header("x-api-key", &app.operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    let cases = [
        ("Basic dXNlcjpwYXNz", "malformed_api_key"),
        ("Bearer tk_short", "malformed_api_key"),
        (
            "Bearer tk_0123456789abcdef_000000000000000000000000000000000000000000000000",
            "invalid_api_key",
        ),
    ];
    for (authorization, code) in cases {
        let (status, _, body) = problem(
            app.request(Method::GET, "/v1/me")
                .header("authorization", authorization),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some(code)),
            "{authorization}"
        );
    }
    let wrong_secret = format!(
        "{}{}",
        &app.operator_token[..app.operator_token.len() - 4],
        "ffff"
    );
    let (status, _, body) =
        problem(app.request(Method::GET, "/v1/me").bearer_auth(wrong_secret)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
}
