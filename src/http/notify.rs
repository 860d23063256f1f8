//! Event notifications: limit, read, verify, hand the body to the ack mode's
//! [`Intake`](crate::delivery::Intake), and answer.
//!
//! The order matters: the signature is checked over the exact raw bytes before anything
//! parses them, and nothing is stored or produced for a request that fails it.

use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::budget::{Held, Pieces};
use super::{ApiError, AppRoute, Cap, Gateway, RequestBody, error};
use crate::signature::{self, SignatureError};
use crate::trace::{Kind, SpanContext};

impl Gateway {
    pub(super) async fn notify<B: RequestBody>(
        &self,
        app: &AppRoute,
        request: Request<B>,
        trace: Option<&SpanContext>,
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
        // only its connection and the bytes it sent, never the capacity that complete
        // notifications need. Its bytes stay counted against the receive budget until
        // the notification is accepted.
        let (body, _held) = self.read_body(request).await?;
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(self.overloaded(Cap::InFlight));
        };
        {
            let mut span = self.tracer.start("verify signature", Kind::Internal, trace);
            let checked = self.check_signature(app, &digest, &body);
            if let (Some(span), Err(error)) = (&mut span, &checked) {
                span.fail(error.to_string());
            }
            checked?;
        }

        self.intake
            .accept(&app.name, body.into_bytes(), SystemTime::now(), trace)
            .await
            .map_err(|error| {
                // Kafka being unreachable is one line of its own, for every request.
                if self.intake.kafka_unreachable() {
                    return error;
                }
                if let Some(held_back) = self.logs.not_accepted.admit() {
                    tracing::warn!(app = %app.name, %error, held_back, "notification not accepted; Meta will retry");
                }
                error
            })?;
        Ok(error::text(StatusCode::OK, "accepted\n"))
    }

    /// Reads the whole body into pieces, each counted against the receive budget as it is
    /// allocated. A body refused part-way (over the budget or the size limit) is not read
    /// further: its answer closes the connection.
    async fn read_body<B: RequestBody>(
        &self,
        request: Request<B>,
    ) -> Result<(Pieces, Held), ApiError> {
        let limit = self.limits.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(ApiError::BodyTooLarge(limit));
        }
        let mut pieces = Pieces::expecting(declared);
        let mut held = self.receive_budget.hold();
        let body = request.into_body();
        let read = async {
            let mut body = std::pin::pin!(body);
            let mut evicted = std::pin::pin!(held.eviction());
            loop {
                let frame = tokio::select! {
                    biased;
                    () = &mut evicted => return Err(self.overloaded(Cap::ReceiveBudget)),
                    frame = body.frame() => frame,
                };
                let Some(frame) = frame else { break };
                let frame = frame.map_err(|_| ApiError::BodyRead)?;
                if let Ok(data) = frame.into_data() {
                    if (pieces.len() + data.len()) as u64 > limit {
                        return Err(ApiError::BodyTooLarge(limit));
                    }
                    if !pieces.extend(&data, &mut held) {
                        return Err(self.overloaded(Cap::ReceiveBudget));
                    }
                }
            }
            held.arrived();
            Ok(())
        };
        tokio::time::timeout(self.limits.request_timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout)??;
        Ok((pieces, held))
    }

    fn check_signature(
        &self,
        app: &AppRoute,
        digest: &[u8; signature::DIGEST_LEN],
        body: &Pieces,
    ) -> Result<(), ApiError> {
        let matched = app
            .keys
            .verify(digest, body.parts())
            .map_err(|error| self.refused(app, error))?;
        app.matches[usize::from(matched == signature::SecretMatch::Previous)].inc();
        Ok(())
    }

    /// Counts a refused signature, and logs it at most once per interval: a flood of
    /// forged requests is visible in the log without filling it.
    fn refused(&self, app: &AppRoute, error: SignatureError) -> ApiError {
        self.metrics
            .signature_failures
            .with_label_values(&[&app.name, error.reason()])
            .inc();
        if let Some(held_back) = self.logs.refusals.admit() {
            tracing::warn!(
                app = %app.name,
                reason = error.reason(),
                held_back,
                "notification refused: bad signature (X-Hub-Signature-256 missing, malformed or not made with the app secret)"
            );
        }
        error.into()
    }
}
