//! `ApiError`: the one place where failures become HTTP answers (DESIGN §4).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::signature::SignatureError;

/// Seconds Meta is asked to wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// Every way a request is not answered 200.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route at this path.
    #[error("no such path")]
    NotFound,
    /// A route that does not take this method; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// A verification request without `hub.mode`, `hub.verify_token` or `hub.challenge`.
    #[error("hub.mode, hub.verify_token and hub.challenge are all required")]
    VerifyParametersMissing,
    /// A verification request with the wrong mode or token.
    #[error("verification refused")]
    VerifyRefused,
    /// A body over `server.max_body_bytes`.
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// The body did not arrive within `server.request_timeout_ms`.
    #[error("the body did not arrive in time")]
    BodyTimeout,
    /// The connection broke while the body was read.
    #[error("the body could not be read")]
    BodyRead,
    /// The signature did not verify; nothing is stored.
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// The notification cannot be accepted durably now; Meta retries later.
    #[error("cannot accept the notification now: {0}")]
    Unavailable(String),
    /// A cap was reached; carries the setting. Meta retries later.
    #[error("too busy to take this request now ({0} reached)")]
    Overloaded(&'static str),
}

impl ApiError {
    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::VerifyParametersMissing | Self::BodyRead => StatusCode::BAD_REQUEST,
            Self::VerifyRefused => StatusCode::FORBIDDEN,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer: the status, a one-line text body, and `Allow` or `Retry-After` where
    /// they apply. The text never echoes request content.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut response = text(status, format!("{self}\n"));
        let headers = response.headers_mut();
        match self {
            Self::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unavailable(_) | Self::Overloaded(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            Self::BodyTooLarge(_) | Self::BodyTimeout | Self::BodyRead => {
                // The rest of the body is not read: the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// A `text/plain` answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_the_status_of_the_contract() {
        for (error, status) in [
            (ApiError::NotFound, 404),
            (ApiError::MethodNotAllowed("GET, POST"), 405),
            (ApiError::VerifyParametersMissing, 400),
            (ApiError::VerifyRefused, 403),
            (ApiError::BodyTooLarge(10), 413),
            (ApiError::BodyTimeout, 408),
            (ApiError::Signature(SignatureError::Mismatch), 401),
            (ApiError::Unavailable("x".into()), 503),
            (ApiError::Overloaded("server.max_connections"), 503),
        ] {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn a_503_asks_meta_to_retry_later() {
        let response = ApiError::Unavailable("Kafka is down".into()).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = ApiError::Overloaded("server.max_in_flight_requests").into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
