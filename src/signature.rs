//! Meta's `X-Hub-Signature-256` check: HMAC-SHA256 of the exact raw body bytes, keyed with
//! the app secret, compared in constant time against the current secret and then every
//! previous one (secret rotation).
//!
//! Pure: bytes in, a verdict out. It runs before anything parses the body.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header Meta signs every event notification with.
pub const HEADER: &str = "x-hub-signature-256";

const PREFIX: &str = "sha256=";
/// Bytes of an HMAC-SHA256 digest.
pub const DIGEST_LEN: usize = 32;

/// Why a notification's signature was not accepted. Each maps to a `reason` label of
/// `waba_gateway_signature_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header (a request signed only with SHA-1 lands here too).
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("the X-Hub-Signature-256 header is not sha256=<64 hex digits>")]
    Malformed,
    /// Well formed, but no configured secret produces it for this body.
    #[error("the X-Hub-Signature-256 header does not match the body under any configured secret")]
    Mismatch,
}

impl SignatureError {
    /// The metric label for this failure.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
        }
    }
}

/// Which configured secret matched: operators watch this to know when the previous secret
/// can be dropped after a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    /// The app's current `secret`.
    Current,
    /// One of `previous_secrets`.
    Previous,
}

impl SecretMatch {
    /// The metric label for this match.
    pub fn label(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
        }
    }
}

/// Checks `header` (the raw `X-Hub-Signature-256` value, if present) against `body`.
///
/// `secrets` yields the current secret first, then the previous ones; the first that
/// verifies wins. Every comparison is constant-time (`Mac::verify_slice`).
pub fn verify<'s>(
    secrets: impl IntoIterator<Item = &'s [u8]>,
    header: Option<&[u8]>,
    body: &[u8],
) -> Result<SecretMatch, SignatureError> {
    let digest = parse_header(header.ok_or(SignatureError::Missing)?)?;
    Keys::new(secrets).verify(&digest, &[body])
}

/// An app's secrets made ready to check bodies with: HMAC hashes each padded key before
/// the first byte of a body, so that work is done here once per secret instead of twice
/// per secret on every request. What is kept are the two hash states the key leads to, not
/// the key; they sign as well as the key does, so they are never printed (`Debug` says only
/// how many there are).
#[derive(Clone)]
pub struct Keys(Vec<HmacSha256>);

impl Keys {
    /// The current secret first, then the previous ones.
    pub fn new<'s>(secrets: impl IntoIterator<Item = &'s [u8]>) -> Self {
        Self(
            secrets
                .into_iter()
                .map(|secret| {
                    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
                })
                .collect(),
        )
    }

    /// Checks a digest already read from the header (see [`parse_header`]: the header is
    /// read before the body arrives, so that a request without a well-formed one is refused
    /// without reading it) against a body held in `parts`, in order, as it was received.
    /// The first key that verifies wins; every comparison is constant-time.
    pub fn verify(
        &self,
        digest: &[u8; DIGEST_LEN],
        parts: &[impl AsRef<[u8]>],
    ) -> Result<SecretMatch, SignatureError> {
        for (index, key) in self.0.iter().enumerate() {
            let mut mac = key.clone();
            for part in parts {
                mac.update(part.as_ref());
            }
            if mac.verify_slice(digest).is_ok() {
                return Ok(if index == 0 {
                    SecretMatch::Current
                } else {
                    SecretMatch::Previous
                });
            }
        }
        Err(SignatureError::Mismatch)
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// Parses `sha256=<hex>` into the 32 digest bytes. Hex digits may be upper or lower case;
/// nothing else may surround them.
pub fn parse_header(header: &[u8]) -> Result<[u8; DIGEST_LEN], SignatureError> {
    let hex_digits = header
        .strip_prefix(PREFIX.as_bytes())
        .ok_or(SignatureError::Malformed)?;
    let mut digest = [0u8; DIGEST_LEN];
    hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

/// Signs `body` the way Meta does: `sha256=<lowercase hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    let mut header = String::with_capacity(PREFIX.len() + 2 * DIGEST_LEN);
    header.push_str(PREFIX);
    header.push_str(&hex::encode(mac.finalize().into_bytes()));
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of the project's fixtures, with a signature computed independently by
    /// `openssl dgst -sha256 -hmac fixture-app-secret`. (Meta's own signed body is checked
    /// in the integration tests, read from the shared payloads.)
    const BODY: &[u8] = include_bytes!("../tests/fixtures/messages_text.json");
    const SECRET: &[u8] = b"fixture-app-secret";
    const SIGNATURE: &[u8] =
        b"sha256=5a71f8c62be8ea6a57bd9261655dc708f313f289b2193834a1f524c188b03573";

    #[test]
    fn a_body_signed_with_openssl_verifies_with_its_secret() {
        assert_eq!(
            verify([SECRET], Some(SIGNATURE), BODY),
            Ok(SecretMatch::Current)
        );
    }

    #[test]
    fn sign_reproduces_the_signature_openssl_computed() {
        assert_eq!(sign(SECRET, BODY).as_bytes(), SIGNATURE);
    }

    #[test]
    fn upper_case_hex_digits_are_accepted() {
        let upper = format!(
            "sha256={}",
            std::str::from_utf8(&SIGNATURE[7..])
                .expect("ascii")
                .to_uppercase()
        );
        assert_eq!(
            verify([SECRET], Some(upper.as_bytes()), BODY),
            Ok(SecretMatch::Current)
        );
    }

    #[test]
    fn one_tampered_body_byte_is_a_mismatch() {
        for position in [0, BODY.len() / 2, BODY.len() - 1] {
            let mut body = BODY.to_vec();
            body[position] ^= 0x01;
            assert_eq!(
                verify([SECRET], Some(SIGNATURE), &body),
                Err(SignatureError::Mismatch),
                "byte {position} flipped"
            );
        }
    }

    #[test]
    fn one_tampered_signature_digit_is_a_mismatch() {
        let mut header = SIGNATURE.to_vec();
        let last = header.len() - 1;
        header[last] = if header[last] == b'1' { b'2' } else { b'1' };
        assert_eq!(
            verify([SECRET], Some(&header), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_missing_header_is_missing() {
        assert_eq!(verify([SECRET], None, BODY), Err(SignatureError::Missing));
    }

    #[test]
    fn a_digest_without_the_sha256_prefix_is_malformed() {
        assert_eq!(
            verify([SECRET], Some(&SIGNATURE[7..]), BODY),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_sha1_style_header_value_is_malformed() {
        let sha1 = b"sha1=0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            verify([SECRET], Some(sha1), BODY),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn short_long_and_non_hex_digests_are_malformed() {
        for header in [
            &b"sha256="[..],
            &SIGNATURE[..SIGNATURE.len() - 2],
            b"sha256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc44100",
            b"sha256=zzedfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441",
            b" sha256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441",
            b"SHA256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441",
        ] {
            assert_eq!(
                verify([SECRET], Some(header), BODY),
                Err(SignatureError::Malformed),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn the_wrong_secret_is_a_mismatch() {
        assert_eq!(
            verify([&b"another-apps-secret"[..]], Some(SIGNATURE), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_previous_secret_verifies_and_says_so() {
        assert_eq!(
            verify(
                [&b"the-new-secret"[..], b"older", SECRET],
                Some(SIGNATURE),
                BODY
            ),
            Ok(SecretMatch::Previous)
        );
    }

    #[test]
    fn no_configured_secret_is_a_mismatch_not_a_pass() {
        assert_eq!(
            verify(std::iter::empty(), Some(SIGNATURE), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn prepared_keys_check_one_body_after_another_as_fresh_ones_do() {
        let keys = Keys::new([&b"the-current-secret"[..], SECRET]);
        let other = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let of_fixture = parse_header(SIGNATURE).expect("well formed");
        let of_other =
            parse_header(sign(b"the-current-secret", other).as_bytes()).expect("well formed");
        let (head, tail) = BODY.split_at(100);
        for _ in 0..2 {
            assert_eq!(keys.verify(&of_fixture, &[BODY]), Ok(SecretMatch::Previous));
            assert_eq!(
                keys.verify(&of_fixture, &[head, tail]),
                Ok(SecretMatch::Previous)
            );
            assert_eq!(keys.verify(&of_other, &[other]), Ok(SecretMatch::Current));
            assert_eq!(
                keys.verify(&of_fixture, &[other]),
                Err(SignatureError::Mismatch)
            );
        }
    }

    #[test]
    fn prepared_keys_never_show_a_secret() {
        assert_eq!(
            format!("{:?}", Keys::new([SECRET])),
            "Keys { count: 1, .. }"
        );
    }
}
