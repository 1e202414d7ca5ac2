//! TLS and HTTP/2 on the listener, with certificates made by the test
//! (rcgen): TLS 1.3 with HTTP/1.1 and HTTP/2 by ALPN, client certificates
//! required, a certificate reloaded under an open connection, HTTP/2 in the
//! clear by prior knowledge, and failed handshakes counted, never answered
//! in plain text.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use reqwest::tls::TlsInfo;
use reqwest::{Certificate, Identity, Version};
use tenantd_server::config::{ClientAuth, NonZeroDuration, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app_with, TestApp};

/// A certificate authority made for one test.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Authority {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `name` and its key, as PEM.
    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes the server's certificate and key where the configuration reads
/// them, each file replaced whole (written aside, then renamed).
fn install(dir: &Path, (cert, key): &(String, String)) {
    for (name, pem) in [("server.pem", cert), ("server.key", key)] {
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
    install(
        &certs,
        &ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth),
    );
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

    let (cert, key) = clients.issue("billing-service", ExtendedKeyUsagePurpose::ClientAuth);
    let identity = Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
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
    let (cert, key) =
        Authority::new("other").issue("intruder", ExtendedKeyUsagePurpose::ClientAuth);
    let identity = Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
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
    let first = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
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

    install(
        &certs,
        &ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth),
    );
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
