//! Meta's mTLS client certificate: the WebPKI chain check, then the name check.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::extensions::GeneralName;

/// The handshake signature checks, which the inner WebPKI verifier makes as it is.
macro_rules! delegate_signature_checks {
    ($($check:ident),+) => {$(
        fn $check(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.$check(message, cert, dss)
        }
    )+};
}

/// The WebPKI client verifier, then the name check.
#[derive(Debug)]
pub(super) struct NamedClients {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) names: Vec<String>,
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

    delegate_signature_checks!(verify_tls12_signature, verify_tls13_signature);

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
