//! HTTPS on the webhook listener (`[server.tls]`): rustls with the certificate and key
//! from files, reloaded on SIGHUP or when the files change, without touching connections
//! already open (each handshake takes the configuration current at that moment).
//!
//! With `client_ca_file`, a client certificate is required, as Meta sends one: its chain
//! must verify against that CA (Meta's outbound API CA), and its CN or one of its SAN DNS
//! names must be one of `client_names` (`client.webhooks.fbclientcerts.com` unless told
//! otherwise). A client that fails either check fails the handshake and never reaches
//! HTTP.

mod client;
mod reload;

pub use reload::reload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

use client::NamedClients;

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that a client certificate must chain to (mTLS): Meta's
    /// outbound API CA. None means no client certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: the names a client certificate's CN or a SAN DNS name must
    /// be one of.
    #[serde(default = "default_client_names")]
    pub client_names: Vec<String>,
    /// How often the files are checked for changes (a certificate rotated by
    /// cert-manager); SIGHUP reloads them at once.
    #[serde(default = "default_tls_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

/// The name on Meta's webhook client certificate.
pub const META_CLIENT_NAME: &str = "client.webhooks.fbclientcerts.com";

fn default_client_names() -> Vec<String> {
    vec![META_CLIENT_NAME.to_owned()]
}

fn default_tls_reload_interval_ms() -> u64 {
    10_000
}

/// Why `[server.tls]` cannot be used; each names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read.
    #[error("{key} = {path}: cannot be read ({source})")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file without a PEM certificate.
    #[error("{key} = {path}: holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate { key: &'static str, path: PathBuf },
    /// A key file without a PEM private key.
    #[error("key_file = {0}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    /// A key that rustls refuses, or that is not the certificate's.
    #[error("cert_file and key_file cannot be used together: {0}")]
    Certificate(rustls::Error),
    /// A CA file rustls cannot build a client verifier from.
    #[error("client_ca_file = {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// The bytes of the configured files, read at one moment. Holds the private key: never
/// logged, no `Debug`.
#[derive(PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                key,
                path: path.to_owned(),
                source,
            })
        };
        Ok(Self {
            cert: read("cert_file", &settings.cert_file)?,
            key: read("key_file", &settings.key_file)?,
            client_ca: settings
                .client_ca_file
                .as_deref()
                .map(|path| read("client_ca_file", path))
                .transpose()?,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// Builds the server configuration from the files' bytes.
fn build(settings: &TlsSettings, files: &Files) -> Result<ServerConfig, TlsError> {
    let chain = certificates("cert_file", &settings.cert_file, &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key)
        .map_err(|_| TlsError::NoKey(settings.key_file.clone()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Certificate)?;
    let builder = match (&settings.client_ca_file, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let client_ca_error = |reason: String| TlsError::ClientCa {
                path: path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for certificate in certificates("client_ca_file", path, pem)? {
                roots
                    .add(certificate)
                    .map_err(|error| client_ca_error(error.to_string()))?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| client_ca_error(error.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(NamedClients {
                inner,
                names: settings.client_names.clone(),
            }))
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Certificate)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS configuration in use, replaced whole when the files change.
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files held when last looked at, loadable or not: a change is tried once.
    seen: Mutex<Files>,
}

impl Tls {
    /// Loads the files of `settings`.
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsError> {
        let files = Files::read(settings)?;
        let config = build(settings, &files)?;
        Ok(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new(files),
        })
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        TlsAcceptor::from(current.clone())
    }

    /// Reloads when the files hold something else than when last looked at. `Ok(true)`
    /// when the new files are in use; on an error the configuration in use stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.reload_when(false)
    }

    /// Reloads the files whatever they hold (SIGHUP).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_when(true).map(drop)
    }

    fn reload_when(&self, always: bool) -> Result<bool, TlsError> {
        let files = Files::read(&self.settings)?;
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !always && *seen == files {
            return Ok(false);
        }
        let built = build(&self.settings, &files);
        *seen = files;
        let config = built?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        Ok(true)
    }

    /// How often the files are checked.
    pub fn reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.settings.reload_interval_ms)
    }
}

/// A fixed label for a failed handshake, from the error `TlsAcceptor::accept` returned.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => "client_name",
        rustls::Error::InvalidCertificate(_) => "client_certificate",
        _ => "handshake",
    }
}
