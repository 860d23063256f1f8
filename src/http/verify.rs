//! The verification handshake: Meta's `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::{ApiError, AppRoute, error};

/// 200 with `hub.challenge` exactly as sent (it is not always numeric), 403 for the wrong
/// mode or token, 400 when a parameter is missing.
pub fn verify(app: &AppRoute, query: Option<&str>) -> Result<Response<Full<Bytes>>, ApiError> {
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "hub.mode" => &mut mode,
            "hub.verify_token" => &mut token,
            "hub.challenge" => &mut challenge,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    let (Some(mode), Some(token), Some(challenge)) = (mode, token, challenge) else {
        return Err(ApiError::VerifyParametersMissing);
    };
    let token_matches: bool = token
        .as_bytes()
        .ct_eq(app.verify_token.expose_secret().as_bytes())
        .into();
    if mode != "subscribe" || !token_matches {
        tracing::info!(app = %app.name, "verification request refused: wrong mode or verify token");
        return Err(ApiError::VerifyRefused);
    }
    tracing::info!(app = %app.name, "verification request answered");
    Ok(error::text(StatusCode::OK, challenge.into_owned()))
}
