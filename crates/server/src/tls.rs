//! TLS, with rustls and ring. On the listener: the server's certificate and
//! key from PEM files, client certificates verified against the configured
//! authorities, and both read again on SIGHUP and when the files change,
//! without dropping a connection (a handshake takes the configuration current
//! when it starts). To upstreams: each service's client configuration.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, ClientTls, TlsConfig};

/// A TLS configuration that cannot be used, naming the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    path: PathBuf,
    reason: String,
}

fn fail(path: &Path, reason: impl ToString) -> TlsError {
    TlsError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The listener's TLS: the configuration handshakes use now, and what it
/// was read from.
#[derive(Debug)]
pub struct Tls {
    config: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// Each file's modification time and length when last read.
    read: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl Tls {
    /// Reads the files; any of them unusable is an error naming it.
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let read = stamps(config);
        let server = server_config(config)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            current: ArcSwap::from_pointee(server),
            read: Mutex::new(read),
        }))
    }

    /// An acceptor for one handshake, with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files again and uses them for the next handshakes; on an
    /// error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let read = stamps(&self.config);
        let server = server_config(&self.config)?;
        self.current.store(Arc::new(server));
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) = read;
        Ok(())
    }

    /// Whether a file changed (or appeared, or went) since it was read.
    fn changed(&self) -> bool {
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) != stamps(&self.config)
    }

    /// Reloads on SIGHUP and when a file changed (checked every
    /// `reload_interval`), logging each reload and each failure once per
    /// change of the files, until `stopped`.
    pub async fn watch(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; certificates reload when their files change"))
            .ok();
        let mut tick = tokio::time::interval(self.config.reload_interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The stamps of files that failed to load, so that a bad file is
        // reported once, not at every check.
        let mut refused: Option<Vec<Option<(SystemTime, u64)>>> = None;
        loop {
            let asked = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match &mut hangups { Some(h) => h.recv().await, None => None } } => true,
                _ = stopped.changed() => return,
            };
            let now = stamps(&self.config);
            if !asked && (!self.changed() || refused.as_ref() == Some(&now)) {
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    refused = None;
                    tracing::info!(cert_file = %self.config.cert_file.display(), "TLS certificates reloaded");
                }
                Err(e) => {
                    if refused.as_ref() != Some(&now) || asked {
                        tracing::error!(error = %e, "TLS certificates not reloaded; the ones in use stay");
                    }
                    refused = Some(now);
                }
            }
        }
    }
}

fn stamps(config: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    std::iter::once(&config.cert_file)
        .chain(std::iter::once(&config.key_file))
        .chain(config.client_ca_file.iter())
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(path, e))?;
    if certs.is_empty() {
        return Err(fail(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The rustls configuration `config` describes: TLS 1.3 and 1.2 with ring's
/// algorithms, ALPN `h2` then `http/1.1`, and client certificates checked
/// when authorities are given.
fn server_config(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&config.cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| fail(&config.key_file, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(&config.cert_file, e))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path)? {
                roots.add(ca).map_err(|e| fail(path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match config.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| fail(path, e))?)
        }
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| {
        fail(
            &config.key_file,
            format!("{e} (does the key match the certificate?)"),
        )
    })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// The system's trusted roots, read from its store once per process, when a
/// client first needs them.
fn system_roots() -> RootCertStore {
    static ROOTS: std::sync::LazyLock<RootCertStore> = std::sync::LazyLock::new(|| {
        let mut roots = RootCertStore::empty();
        // Certificates the system store holds that rustls cannot use are
        // skipped, as every other client skips them.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    });
    ROOTS.clone()
}

/// The rustls configuration of a client configured by `files`: the
/// authorities of `ca_file`, or the system's, and a client certificate for
/// mTLS when given. Hostnames are verified (webpki); SNI is sent. A client
/// that will never speak TLS (`speaks_tls` false: a service with only
/// `http://` upstreams) trusts nothing and reads no store.
pub fn client_config(
    files: &ClientTls,
    speaks_tls: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let ca_file = files.ca_file.as_deref();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path)? {
                roots.add(ca).map_err(|e| fail(path, e))?;
            }
            roots
        }
        None if speaks_tls => system_roots(),
        None => RootCertStore::empty(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(ca_file.unwrap_or(Path::new("system roots")), e))?
        .with_root_certificates(roots);
    match files.identity() {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| fail(key, format!("{e} (does the key match the certificate?)")))
        }
    }
}

/// Whether `error` (from a connection to an upstream) is a TLS failure: the
/// certificate not trusted or not for the host, or the upstream refusing
/// tenantd's.
pub fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        // An `io::Error`'s `source` skips the error it wraps (tokio-rustls
        // wraps rustls's in one, hyper-rustls that in another): look inside.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    false
}

/// What a failed handshake's error says, as the metric's reason.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => "closed",
        _ => match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(
                rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertificate(_)
                | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)
                | rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
            ) => "certificate",
            _ => "protocol",
        },
    }
}
