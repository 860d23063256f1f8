//! Event notifications: limit, read, verify, then either spool the raw body (`ack =
//! "spool"`) or split and publish it, and answer.
//!
//! The order matters: the signature is checked over the exact raw bytes before anything
//! parses them, and nothing is stored or produced for a request that fails it.

use std::time::SystemTime;

use bytes::Bytes;
use bytes::BytesMut;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use secrecy::ExposeSecret;

use super::{ApiError, AppRoute, Cap, Gateway, RequestBody, error};
use crate::config::AckMode;
use crate::envelope::{self, Record};
use crate::publish::PublishError;
use crate::signature::{self, SignatureError};
use crate::spool::SpoolError;

impl Gateway {
    pub(super) async fn notify<B: RequestBody>(
        &self,
        app: &AppRoute,
        request: Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        // A missing or malformed signature is refused before the body is read (no
        // `100 Continue`), so that such requests cost nothing while they stall.
        let digest = request
            .headers()
            .get(signature::HEADER)
            .ok_or(SignatureError::Missing)
            .and_then(|header| signature::parse_header(header.as_bytes()))
            .map_err(|error| self.refused(app, error))?;
        // Reading a body takes no in-flight permit: a client that stalls mid-body holds
        // only its connection, never the capacity that complete notifications need.
        let body = self.read_body(request).await?;
        let Ok(_permit) = self.in_flight.try_acquire() else {
            Cap::InFlight.count(&self.metrics);
            return Err(ApiError::Overloaded(Cap::InFlight));
        };
        self.check_signature(app, &digest, &body)?;

        let now = SystemTime::now();
        if let Some(spool) = &self.spool {
            let received_at_ms = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let entry = crate::spool::Entry {
                app: app.name.clone(),
                received_at_ms,
                body: body.to_vec(),
            };
            spool.append(entry).await.map_err(|error| {
                tracing::warn!(app = %app.name, %error, "notification not spooled; Meta will retry");
                ApiError::from(error)
            })?;
            return Ok(error::text(StatusCode::OK, "accepted\n"));
        }

        let split = envelope::to_records(&self.routing, &app.name, &body, now);
        // The records hold copies of what they need: the body's memory is not kept while
        // Kafka acknowledges.
        drop(body);
        if let Some(reason) = split.deadletter {
            tracing::warn!(app = %app.name, reason, "authentic body is not a notification; keeping it on the dead-letter topic");
        }
        let fields: Vec<&'static str> = split.records.iter().map(|record| record.field).collect();
        self.publish(&app.name, split.records).await?;
        // Counted once accepted, so Meta's retries of a refused request count once.
        self.metrics
            .count_accepted(&app.name, &fields, split.deadletter);
        Ok(error::text(StatusCode::OK, "accepted\n"))
    }

    async fn read_body<B: RequestBody>(&self, request: Request<B>) -> Result<Bytes, ApiError> {
        let limit = self.limits.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(ApiError::BodyTooLarge(limit));
        }
        // Sized once from Content-Length when the first bytes arrive, so that a large body
        // is never copied while it grows, and a client that sends none reserves nothing.
        let capacity = usize::try_from(declared.unwrap_or(0)).unwrap_or(0);
        let mut buffer = BytesMut::new();
        let body = request.into_body();
        let read = async {
            let mut body = std::pin::pin!(body);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| ApiError::BodyRead)?;
                if let Ok(data) = frame.into_data() {
                    if (buffer.len() + data.len()) as u64 > limit {
                        return Err(ApiError::BodyTooLarge(limit));
                    }
                    if buffer.capacity() == 0 {
                        buffer.reserve(capacity.max(data.len()));
                    }
                    buffer.extend_from_slice(&data);
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.limits.request_timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout)??;
        Ok(buffer.freeze())
    }

    fn check_signature(
        &self,
        app: &AppRoute,
        digest: &[u8; signature::DIGEST_LEN],
        body: &[u8],
    ) -> Result<(), ApiError> {
        let secrets = app.secrets.iter().map(|s| s.expose_secret().as_bytes());
        let matched = signature::verify_digest(secrets, digest, body)
            .map_err(|error| self.refused(app, error))?;
        self.metrics
            .signature_matches
            .with_label_values(&[&app.name, matched.label()])
            .inc();
        Ok(())
    }

    /// Counts a refused signature, and logs it at most once per interval: a flood of
    /// forged requests is visible in the log without filling it.
    fn refused(&self, app: &AppRoute, error: SignatureError) -> ApiError {
        self.metrics
            .signature_failures
            .with_label_values(&[&app.name, error.reason()])
            .inc();
        if let Some(held_back) = self.refusals.admit() {
            tracing::warn!(
                app = %app.name,
                reason = error.reason(),
                held_back,
                "notification refused: bad signature (X-Hub-Signature-256 missing, malformed or not made with the app secret)"
            );
        }
        error.into()
    }

    async fn publish(&self, app: &str, records: Vec<Record>) -> Result<(), ApiError> {
        let unavailable = |error: PublishError| {
            tracing::warn!(%app, %error, "notification not accepted; Meta will retry");
            ApiError::from(error)
        };
        match self.limits.ack {
            AckMode::Kafka => {
                let delivered = async { self.sink.enqueue(app, records).await?.finish().await };
                tokio::time::timeout(self.limits.kafka_ack_timeout, delivered)
                    .await
                    .map_err(|_| {
                        unavailable(PublishError::Retryable(format!(
                            "Kafka did not acknowledge within {} ms",
                            self.limits.kafka_ack_timeout.as_millis()
                        )))
                    })?
                    .map_err(unavailable)
            }
            AckMode::None => {
                let publication = self.sink.enqueue(app, records).await.map_err(unavailable)?;
                let app = app.to_owned();
                tokio::spawn(async move {
                    if let Err(error) = publication.finish().await {
                        tracing::error!(%app, %error, "records acknowledged to Meta were lost (ack = \"none\")");
                    }
                });
                Ok(())
            }
            AckMode::Spool => Err(SpoolError::Closed.into()),
        }
    }
}
