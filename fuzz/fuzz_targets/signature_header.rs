//! `X-Hub-Signature-256` parsing and verification on arbitrary header bytes: no panic,
//! and a header verifies exactly when it is the body's signature (hex in either case).
#![no_main]

use libfuzzer_sys::fuzz_target;
use waba_gateway::signature::{parse_header, sign, verify};

const SECRET: &[u8] = b"fuzz-secret";
const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

fuzz_target!(|header: &[u8]| {
    let parsed = parse_header(header);
    let verified = verify([SECRET], Some(header), BODY).is_ok();
    let expected = sign(SECRET, BODY);
    let is_the_signature = header.len() == expected.len()
        && header.starts_with(b"sha256=")
        && header.eq_ignore_ascii_case(expected.as_bytes());
    assert_eq!(verified, is_the_signature);
    if verified {
        assert!(parsed.is_ok());
    }
});
