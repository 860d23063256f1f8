//! The verification handshake: Meta's `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::{ApiError, AppRoute, error};

/// 200 with `hub.challenge` exactly as sent after percent-decoding (it is not always
/// numeric, nor always UTF-8), 403 for the wrong mode or token, 400 when a parameter is
/// missing or the challenge is empty.
pub fn verify(app: &AppRoute, query: Option<&str>) -> Result<Response<Full<Bytes>>, ApiError> {
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (name, value) in query_pairs(query.unwrap_or_default()) {
        let slot = match name.as_slice() {
            b"hub.mode" => &mut mode,
            b"hub.verify_token" => &mut token,
            b"hub.challenge" => &mut challenge,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    let (Some(mode), Some(token), Some(challenge)) = (mode, token, challenge) else {
        return Err(ApiError::VerifyParametersMissing);
    };
    if challenge.is_empty() {
        return Err(ApiError::VerifyParametersMissing);
    }
    let token_matches: bool = token
        .ct_eq(app.verify_token.expose_secret().as_bytes())
        .into();
    if mode != b"subscribe" || !token_matches {
        return Err(ApiError::VerifyRefused);
    }
    let utf8 = std::str::from_utf8(&challenge).is_ok();
    let mut response = error::text(StatusCode::OK, challenge);
    if !utf8 {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    Ok(response)
}

/// The `name=value` pairs of a query string, percent-decoded to bytes (`+` is a space),
/// never re-encoded or made UTF-8.
fn query_pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    let decode = |part: &str| -> Vec<u8> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced).collect()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(move |pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
}
