//! HTTPS on the webhook listener (`[server.tls]`): rustls with the certificate and key
//! from files, reloaded on SIGHUP or when the files change, without touching connections
//! already open (each handshake takes the configuration current at that moment).
//!
//! With `client_ca_file`, a client certificate is required, as Meta sends one: its chain
//! must verify against that CA (Meta's outbound API CA), and its CN or one of its SAN DNS
//! names must be one of `client_names` (`client.webhooks.fbclientcerts.com` unless told
//! otherwise). A client that fails either check fails the handshake and never reaches
//! HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;

use crate::config::TlsSettings;

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

/// Checks that `[server.tls]` can be loaded as it stands (for `check-config`).
pub fn load(settings: &TlsSettings) -> Result<(), TlsError> {
    build(settings, &Files::read(settings)?).map(drop)
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

/// The WebPKI client verifier, then the name check.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl NamedClients {
    fn carries_a_name(&self, certificate: &CertificateDer<'_>) -> bool {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate) else {
            return false;
        };
        let wanted = |name: &str| {
            self.names
                .iter()
                .any(|wanted| wanted.eq_ignore_ascii_case(name))
        };
        let common_name = parsed
            .subject()
            .iter_common_name()
            .filter_map(|name| name.as_str().ok())
            .any(wanted);
        let alternative_name = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .is_some_and(|extension| {
                extension.value.general_names.iter().any(|name| match name {
                    GeneralName::DNSName(dns) => wanted(dns),
                    _ => false,
                })
            });
        common_name || alternative_name
    }
}

impl ClientCertVerifier for NamedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.carries_a_name(end_entity) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
