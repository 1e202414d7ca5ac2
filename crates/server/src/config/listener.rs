//! The listener's protocols: TLS (certificates, client certificates, reload)
//! and HTTP/2's limits per connection.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NonZeroDuration;

/// TLS on the listener (rustls: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A listener of its own for TLS, beside `listen` (which then stays
    /// plain, e.g. for a load balancer that terminates TLS itself). Unset,
    /// `listen` speaks TLS.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// PEM: the server's certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, RSA or SEC1 EC).
    pub key_file: PathBuf,
    /// PEM: the authorities whose client certificates are accepted. Unset,
    /// no client certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `optional` verifies a certificate the client
    /// presents and lets one without through; `required` refuses it.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes (SIGHUP reloads at once).
    #[serde(default = "default_reload_interval")]
    pub reload_interval: NonZeroDuration,
    /// Time a client has to complete its TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: NonZeroDuration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Optional,
    Required,
}

fn default_reload_interval() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}

fn default_handshake_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}

impl TlsConfig {
    /// Checks what can be checked without reading the files.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.client_auth == ClientAuth::Required && self.client_ca_file.is_none() {
            return Err((
                "tls.client_auth",
                "\"required\" needs tls.client_ca_file: the authorities whose client certificates are accepted".into(),
            ));
        }
        Ok(())
    }
}

/// HTTP/2's limits per connection, apart from the seats: a connection's
/// streams are requests that queue for seats like any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before the server has seen them
    /// through, per connection: past it the connection is closed (the
    /// "rapid reset" attack, CVE-2023-44487).
    pub max_pending_resets: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            max_pending_resets: 20,
        }
    }
}
