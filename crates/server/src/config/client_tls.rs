//! TLS as a client: the files tenantd's own connections to a service's
//! `https://` upstreams and to a `rediss://` Redis read. (PostgreSQL's are
//! libpq's URL parameters.)

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Whom to trust and what to present. Unset, the system's roots and no
/// client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM: the authorities the server's certificate must chain to, instead
    /// of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM: the certificate (then its chain) tenantd presents to a server
    /// that asks for one (mTLS), with its key.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl ClientTls {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The client certificate and its key, when both are set.
    pub fn identity(&self) -> Option<(&Path, &Path)> {
        self.client_cert_file
            .as_deref()
            .zip(self.client_key_file.as_deref())
    }

    /// A certificate needs its key, and files are for connections that
    /// speak TLS (`speaks_tls`, of which `scheme` is the name).
    pub(super) fn check(&self, speaks_tls: bool, scheme: &str) -> Result<(), String> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err("tls.client_cert_file and tls.client_key_file go together".into());
        }
        if !self.is_empty() && !speaks_tls {
            return Err(format!(
                "tls files are for {scheme} connections; there are none here"
            ));
        }
        Ok(())
    }
}
