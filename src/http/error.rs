//! `ApiError`: the one place where failures become HTTP answers (DESIGN §4).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::metrics::Metrics;
use crate::publish::PublishError;
use crate::signature::SignatureError;
use crate::spool::SpoolError;

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
    /// A request from a client outside `server.allowed_source_cidrs`.
    #[error("this source may not call the webhook")]
    SourceNotAllowed,
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
    /// The spool cannot store the notification now; Meta retries later.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// Kafka cannot take the notification now; Meta retries later.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A cap was reached. Meta retries later.
    #[error("too busy to take this request now ({} reached)", .0.setting())]
    Overloaded(Cap),
}

impl From<crate::delivery::NotAccepted> for ApiError {
    fn from(error: crate::delivery::NotAccepted) -> Self {
        match error {
            crate::delivery::NotAccepted::Spool(error) => Self::Spool(error),
            crate::delivery::NotAccepted::Publish(error) => Self::Publish(error),
        }
    }
}

/// A cap on what the webhook listener takes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `server.max_connections`.
    Connections,
    /// `server.max_in_flight_requests`.
    InFlight,
    /// `server.receive_budget_bytes`.
    ReceiveBudget,
}

impl Cap {
    /// The setting that sets it.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Connections => "server.max_connections",
            Self::InFlight => "server.max_in_flight_requests",
            Self::ReceiveBudget => "server.receive_budget_bytes",
        }
    }

    /// The `limit` label of `waba_gateway_overload_refusals_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::InFlight => "in_flight",
            Self::ReceiveBudget => "receive_budget",
        }
    }

    /// Counts one refusal at this cap.
    pub fn count(self, metrics: &Metrics) {
        metrics
            .overload_refusals
            .with_label_values(&[self.label()])
            .inc();
    }
}

impl ApiError {
    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::VerifyParametersMissing | Self::BodyRead => StatusCode::BAD_REQUEST,
            Self::VerifyRefused | Self::SourceNotAllowed => StatusCode::FORBIDDEN,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::Spool(_) | Self::Publish(_) | Self::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The answer's body: one fixed line per failure, so that no internal detail (paths,
    /// broker errors, sizes) reaches the client; the detail goes to the log.
    fn body(&self) -> String {
        match self {
            Self::Spool(SpoolError::Full { .. }) => "the spool is full; retry later".to_owned(),
            Self::Spool(_) => "the notification cannot be stored now; retry later".to_owned(),
            Self::Publish(PublishError::QueueFull) => {
                "Kafka's producer queue is full; retry later".to_owned()
            }
            Self::Publish(_) => "Kafka cannot take the notification now; retry later".to_owned(),
            other => other.to_string(),
        }
    }

    /// The answer: the status, a one-line text body, and `Allow` or `Retry-After` where
    /// they apply. The text never echoes request content.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut response = text(status, format!("{}\n", self.body()));
        let headers = response.headers_mut();
        match self {
            Self::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Spool(_) | Self::Publish(_) | Self::Overloaded(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        if self.leaves_body_unread() {
            // The body (or its rest) is not read: the connection cannot be reused.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Whether the answer goes out before the body has been read to its end.
    fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge(_)
                | Self::BodyTimeout
                | Self::BodyRead
                | Self::Overloaded(Cap::ReceiveBudget)
                | Self::Signature(SignatureError::Missing | SignatureError::Malformed)
        )
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
            (ApiError::Spool(SpoolError::Closed), 503),
            (
                ApiError::Publish(PublishError::Retryable("down".into())),
                503,
            ),
            (ApiError::Overloaded(Cap::Connections), 503),
        ] {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn a_503_asks_meta_to_retry_later() {
        let response =
            ApiError::Publish(PublishError::Retryable("Kafka is down".into())).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = ApiError::Overloaded(Cap::InFlight).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert!(!response.headers().contains_key(header::CONNECTION));
        // Refused mid-body: the rest is not read, so the connection closes.
        let response = ApiError::Overloaded(Cap::ReceiveBudget).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_503_body_is_a_fixed_line_without_internal_detail() {
        use http_body_util::BodyExt;
        let internal = "broker kafka-0.internal:9092: SASL authentication failed";
        for (error, expected) in [
            (
                ApiError::Publish(PublishError::Retryable(internal.to_owned())),
                "Kafka cannot take the notification now; retry later\n",
            ),
            (
                ApiError::Spool(SpoolError::Io(std::io::Error::other(internal))),
                "the notification cannot be stored now; retry later\n",
            ),
            (
                ApiError::Spool(SpoolError::Full { bytes: 7, max: 8 }),
                "the spool is full; retry later\n",
            ),
        ] {
            let body = error.into_response().into_body().collect().await;
            let body = body.expect("a full body").to_bytes();
            assert_eq!(body, expected.as_bytes());
        }
    }
}
