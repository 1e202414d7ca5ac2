//! TLS and HTTP/2, with certificates made by the test (testkit's `certs`).
//! On the listener: TLS 1.3 with HTTP/1.1 and HTTP/2 by ALPN, client
//! certificates required, a certificate reloaded under an open connection,
//! HTTP/2 in the clear by prior knowledge, and failed handshakes counted,
//! never answered in plain text. To upstreams: `https://` verified (a wrong
//! name refused), mTLS, and HTTP/2 by ALPN or prior knowledge. (PostgreSQL's
//! and Redis's TLS are tested in `catalog.rs` and `limiter.rs`.)

use std::path::Path;
use std::time::Duration;

use reqwest::tls::TlsInfo;
use reqwest::{Certificate, Identity, Version};
use tenantd_server::config::{ClientAuth, NonZeroDuration, ServiceConfig, TlsConfig};
use tenantd_testkit::certs::{Authority, Leaf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app_with, TestApp};

/// Writes the server's certificate and key where the configuration reads
/// them, each file replaced whole (written aside, then renamed).
fn install(dir: &Path, leaf: &Leaf) {
    for (name, pem) in [("server.pem", &leaf.cert), ("server.key", &leaf.key)] {
        let aside = dir.join(format!("{name}.new"));
        std::fs::write(&aside, pem).unwrap();
        std::fs::rename(aside, dir.join(name)).unwrap();
    }
}

fn tls_config(dir: &Path) -> TlsConfig {
    TlsConfig {
        listen: None,
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        client_ca_file: None,
        client_auth: ClientAuth::Optional,
        reload_interval: NonZeroDuration::from_millis(50),
        handshake_timeout: NonZeroDuration::from_secs(2),
    }
}

/// A node whose listener speaks TLS with a certificate for `localhost`
/// from `ca`; `tweak` adjusts its TLS settings.
async fn tls_app(ca: &Authority, tweak: impl FnOnce(&mut TlsConfig, &Path)) -> TestApp {
    let certs = tempfile::tempdir().unwrap().keep();
    install(&certs, &ca.server("localhost"));
    let mut tls = tls_config(&certs);
    tweak(&mut tls, &certs);
    spawn_app_with(move |c| c.tls = Some(tls)).await
}

/// A client that trusts `ca` and reaches the node as `localhost`.
fn client(app: &TestApp, ca: &Authority) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", app.addr)
        .tls_info(true)
}

fn https(app: &TestApp, path: &str) -> String {
    format!("https://localhost:{}{path}", app.addr.port())
}

/// The certificate the server presented for `response`'s connection.
fn presented(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

#[tokio::test]
async fn tls_1_3_serves_http_1_1_and_http_2_by_alpn() {
    let ca = Authority::new("test CA");
    let app = tls_app(&ca, |_, _| {}).await;
    for (builder, version) in [
        (client(&app, &ca).http1_only(), Version::HTTP_11),
        (client(&app, &ca), Version::HTTP_2),
    ] {
        let http = builder
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .build()
            .unwrap();
        let answer = http
            .get(https(&app, "/v1/me"))
            .bearer_auth(&app.operator_token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.version(), version);
    }
    // TLS 1.2 is still offered.
    let old = client(&app, &ca)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(
        old.get(https(&app, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A client that does not trust the certificate is refused by its own side.
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .resolve("localhost", app.addr)
        .build()
        .unwrap();
    assert!(stranger.get(https(&app, "/healthz")).send().await.is_err());
}

#[tokio::test]
async fn required_client_certificates_refuse_a_client_without_one() {
    let ca = Authority::new("test CA");
    let clients = Authority::new("client CA");
    let clients_pem = clients.pem.clone();
    let app = tls_app(&ca, |tls, dir| {
        let path = dir.join("clients.pem");
        std::fs::write(&path, &clients_pem).unwrap();
        tls.client_ca_file = Some(path);
        tls.client_auth = ClientAuth::Required;
    })
    .await;
    let anonymous = client(&app, &ca).build().unwrap();
    assert!(anonymous.get(https(&app, "/healthz")).send().await.is_err());

    let leaf = clients.client("billing-service");
    let identity = Identity::from_pem(format!("{}{}", leaf.cert, leaf.key).as_bytes()).unwrap();
    let known = client(&app, &ca).identity(identity).build().unwrap();
    assert_eq!(
        known
            .get(https(&app, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A certificate from another authority is refused too.
    let intruder = Authority::new("other").client("intruder");
    let identity =
        Identity::from_pem(format!("{}{}", intruder.cert, intruder.key).as_bytes()).unwrap();
    let other = client(&app, &ca).identity(identity).build().unwrap();
    assert!(other.get(https(&app, "/healthz")).send().await.is_err());
    let refused = crate::helpers::metric_over(
        &app,
        &known,
        &https(&app, "/metrics"),
        "tenantd_tls_handshake_failures_total{reason=\"certificate\"}",
    )
    .await;
    assert!(refused >= 2.0, "{refused}");
}

#[tokio::test]
async fn a_new_certificate_is_used_for_new_connections_while_open_ones_go_on() {
    let ca = Authority::new("test CA");
    let certs = tempfile::tempdir().unwrap().keep();
    let first = ca.server("localhost");
    install(&certs, &first);
    let tls = tls_config(&certs);
    let app = spawn_app_with(move |c| c.tls = Some(tls)).await;

    let open = client(&app, &ca).http1_only().build().unwrap();
    let before = open.get(https(&app, "/healthz")).send().await.unwrap();
    let old_cert = presented(&before);

    // A broken file is refused and the certificate in use stays.
    std::fs::write(certs.join("server.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = client(&app, &ca).build().unwrap();
    let still = fresh.get(https(&app, "/healthz")).send().await.unwrap();
    assert_eq!(presented(&still), old_cert);

    install(&certs, &ca.server("localhost"));
    let mut renewed = false;
    for _ in 0..100 {
        let fresh = client(&app, &ca).build().unwrap();
        let answer = fresh.get(https(&app, "/healthz")).send().await.unwrap();
        if presented(&answer) != old_cert {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(renewed, "new connections never got the new certificate");
    // The connection opened before goes on, with the certificate it began with.
    let after = open.get(https(&app, "/healthz")).send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(presented(&after), old_cert, "the open connection was kept");
}

#[tokio::test]
async fn http_2_is_served_in_the_clear_by_prior_knowledge() {
    let app = spawn_app_with(|_| {}).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answer = h2c
        .get(format!("{}/v1/me", app.url))
        .bearer_auth(&app.operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (answer.status().as_u16(), answer.version()),
        (200, Version::HTTP_2)
    );
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_no_plain_text_answer_and_is_counted() {
    let ca = Authority::new("test CA");
    let app = tls_app(&ca, |_, _| {}).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let http = client(&app, &ca).build().unwrap();
    let failed = crate::helpers::metric_over(
        &app,
        &http,
        &https(&app, "/metrics"),
        "tenantd_tls_handshake_failures_total{reason=\"protocol\"}",
    )
    .await;
    assert_eq!(failed, 1.0);
}

#[tokio::test]
async fn tls_on_a_listener_of_its_own_leaves_the_main_one_plain() {
    let ca = Authority::new("test CA");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = tls_app(&ca, |tls, _| {
        tls.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    })
    .await;
    let plain = app.http.get(format!("{}/healthz", app.url)).send().await;
    assert_eq!(plain.unwrap().status(), 200);
    let secure = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .build()
        .unwrap();
    let mut answered = None;
    // The TLS listener is bound when the server runs, just after the test's.
    for _ in 0..100 {
        if let Ok(answer) = secure
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
        {
            answered = Some(answer.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered, Some(reqwest::StatusCode::OK));
}

/// An upstream that takes 30 ms over each request, counting those it began.
async fn slow_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let begun = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = begun.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            "done"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, begun)
}

/// One HTTP/2 connection carrying two tenants' streams (a shared client),
/// one tenant flooding a service with two seats: the other's requests are
/// served between the flood's, not after it.
#[tokio::test]
async fn one_http_2_connection_still_queues_each_tenant_fairly() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (upstream, begun) = slow_upstream().await;
    let mut busy = crate::gateway::service("busy", &[&upstream]);
    busy.seats = Some(2);
    let app = spawn_app_with(|c| c.gateway.services = vec![busy]).await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let flooder = app
        .tenant_key("acme", tenantd_core::Role::Developer)
        .await
        .token;
    let victim = app
        .tenant_key("globex", tenantd_core::Role::Developer)
        .await
        .token;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("{}/v1/proxy/busy/work", app.url);
    let flood_done = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (h2c, url, key, done) = (
                h2c.clone(),
                url.clone(),
                flooder.clone(),
                flood_done.clone(),
            );
            tokio::spawn(async move {
                let answer = h2c.get(url).bearer_auth(key).send().await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                answer.status().as_u16()
            })
        })
        .collect();
    // The flood is queued once the upstream is busy with it.
    crate::helpers::until("the flood reaching the service", || {
        begun.load(Ordering::SeqCst) >= 2
    })
    .await;
    let mut seen_by_victim = Vec::new();
    for _ in 0..3 {
        let answer = h2c.get(&url).bearer_auth(&victim).send().await.unwrap();
        assert_eq!(
            (answer.status().as_u16(), answer.version()),
            (200, Version::HTTP_2)
        );
        seen_by_victim.push(flood_done.load(Ordering::SeqCst));
    }
    for request in flood {
        let status = request.await.unwrap();
        assert!(status == 200 || status == 503, "{status}");
    }
    // In one queue the victim's requests would wait behind most of the 40.
    assert!(
        seen_by_victim[2] < 20,
        "the flood's requests done before each of the other tenant's: {seen_by_victim:?}"
    );
}

/// An HTTPS upstream on loopback presenting `leaf`, offering h2 and
/// http/1.1 by ALPN, asking for client certificates from `clients` when
/// given; it answers every request with the HTTP version it came in.
async fn https_upstream(leaf: &Leaf, clients: Option<&Authority>) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
                roots.add(der.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_upstream(tls, h2).await;
                }
            });
        }
    });
    port
}

/// A plain upstream on loopback that speaks HTTP/2 only (prior knowledge).
async fn h2c_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_upstream(tcp, true));
        }
    });
    port
}

/// Serves one upstream connection, HTTP/2 when `h2`, else HTTP/1.1,
/// answering `{"version": …}` with the version each request came in.
async fn serve_upstream<Io>(io: Io, h2: bool)
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let answer = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| {
        let body = serde_json::json!({ "version": format!("{:?}", request.version()) });
        async move {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                axum::body::Bytes::from(body.to_string()),
            )))
        }
    });
    let io = hyper_util::rt::TokioIo::new(io);
    let _ = if h2 {
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(io, answer)
            .await
    } else {
        hyper::server::conn::http1::Builder::new()
            .serve_connection(io, answer)
            .await
    };
}

/// A node with service `secure` in front of `https://localhost:<port>`,
/// trusting `ca`, with `tweak` applied to the service.
async fn gateway_to(
    port: u16,
    ca: &Authority,
    tweak: impl FnOnce(&mut ServiceConfig, &Path),
) -> (TestApp, String) {
    let files = tempfile::tempdir().unwrap().keep();
    std::fs::write(files.join("ca.pem"), &ca.pem).unwrap();
    let mut service = crate::gateway::service("secure", &[&format!("https://localhost:{port}")]);
    service.tls.ca_file = Some(files.join("ca.pem"));
    tweak(&mut service, &files);
    gateway_with(service).await
}

/// A node with `service` (to be named `secure`) and a developer key of a tenant.
async fn gateway_with(service: ServiceConfig) -> (TestApp, String) {
    let app = spawn_app_with(move |c| c.gateway.services = vec![service]).await;
    app.create_tenant("acme").await;
    let key = app
        .tenant_key("acme", tenantd_core::Role::Developer)
        .await
        .token;
    (app, key)
}

/// Asserts that a proxied call answers 502 with the problem `code`; returns
/// the problem.
async fn assert_refused(app: &TestApp, key: &str, code: &str) -> serde_json::Value {
    let (status, problem) = proxied(app, key).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (502, Some(code)),
        "{problem}"
    );
    problem
}

async fn proxied(app: &TestApp, key: &str) -> (u16, serde_json::Value) {
    let answer = app
        .http
        .get(format!("{}/v1/proxy/secure/anything", app.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (
        status,
        answer.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn an_https_upstream_is_verified_and_one_with_another_name_refused() {
    let ca = Authority::new("upstream CA");
    let good = https_upstream(&ca.server("localhost"), None).await;
    let (app, key) = gateway_to(good, &ca, |_, _| {}).await;
    assert_eq!(proxied(&app, &key).await.0, 200);

    let wrong = https_upstream(&ca.server("billing.internal"), None).await;
    let (app, key) = gateway_to(wrong, &ca, |_, _| {}).await;
    assert_refused(&app, &key, "upstream_tls").await;

    // Without the service's CA, the system's roots do not know this one.
    let (app, key) = gateway_to(good, &ca, |service, _| service.tls.ca_file = None).await;
    assert_refused(&app, &key, "upstream_tls").await;
}

#[tokio::test]
async fn an_upstream_that_requires_a_client_certificate_gets_the_services() {
    let ca = Authority::new("upstream CA");
    let callers = Authority::new("callers CA");
    let port = https_upstream(&ca.server("localhost"), Some(&callers)).await;
    let (app, key) = gateway_to(port, &ca, |_, _| {}).await;
    assert_refused(&app, &key, "upstream_tls").await;

    let tenantd = callers.client("tenantd");
    let (app, key) = gateway_to(port, &ca, |service, files| {
        std::fs::write(files.join("client.pem"), &tenantd.cert).unwrap();
        std::fs::write(files.join("client.key"), &tenantd.key).unwrap();
        service.tls.client_cert_file = Some(files.join("client.pem"));
        service.tls.client_key_file = Some(files.join("client.key"));
    })
    .await;
    assert_eq!(proxied(&app, &key).await.0, 200);
}

#[tokio::test]
async fn a_service_asking_for_http_2_gets_it_by_alpn_and_by_prior_knowledge() {
    let ca = Authority::new("upstream CA");
    let port = https_upstream(&ca.server("localhost"), None).await;
    for (http2, version) in [(false, "HTTP/1.1"), (true, "HTTP/2.0")] {
        let (app, key) = gateway_to(port, &ca, |service, _| service.http2 = http2).await;
        let (status, body) = proxied(&app, &key).await;
        assert_eq!(
            (status, body["version"].as_str()),
            (200, Some(version)),
            "http2 = {http2}"
        );
    }

    // In the clear there is no ALPN: `http2 = true` speaks it from the
    // first byte, to an upstream that speaks nothing else.
    let port = h2c_upstream().await;
    let plain = || crate::gateway::service("secure", &[&format!("http://127.0.0.1:{port}")]);
    let (app, key) = gateway_with(ServiceConfig {
        http2: true,
        ..plain()
    })
    .await;
    let (status, body) = proxied(&app, &key).await;
    assert_eq!((status, body["version"].as_str()), (200, Some("HTTP/2.0")));
    let (app, key) = gateway_with(plain()).await;
    assert_refused(&app, &key, "upstream_error").await;
}

#[tokio::test]
async fn an_upstream_that_never_finishes_its_handshake_is_refused_at_the_connect_timeout() {
    // It takes the TCP connection and never answers the ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let ca = Authority::new("upstream CA");
    let (app, key) = gateway_to(port, &ca, |service, _| {
        service.connect_timeout = Duration::from_millis(200);
        service.request_timeout = Duration::from_secs(20);
        service.retries = 0;
    })
    .await;
    // Refused as a connection not made, not left to the request's timeout
    // (which would answer 504 upstream_timeout).
    let problem = assert_refused(&app, &key, "upstream_refused").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("within 200 ms"),
        "{problem}"
    );
}
