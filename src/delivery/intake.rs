//! The intake: what the handler hands a verified notification to, one variant per ack
//! mode (DESIGN §5). The handler answers 200 when [`Intake::accept`] returns `Ok`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::Deliverer;
use crate::publish::PublishError;
use crate::spool::{Entry, Spool, SpoolError};
use crate::telemetry;
use crate::trace::{Kind, SpanContext, Tracer};

/// Why a notification was not accepted: the handler answers 503 and Meta retries.
#[derive(Debug, thiserror::Error)]
pub enum NotAccepted {
    /// The spool cannot store it now.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// Kafka cannot take it now.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Where verified notifications go, per ack mode. Built by
/// [`Delivery::intake`](super::Delivery::intake).
pub enum Intake {
    /// `ack = "spool"`: 200 once the body is synced to the spool; the forwarder publishes it.
    Spooled {
        /// The spool.
        spool: Arc<Spool>,
        /// For the `spool append` span.
        tracer: Tracer,
    },
    /// `ack = "kafka"`: 200 once Kafka acknowledged every record, within `timeout`.
    Acknowledged {
        /// Splits and publishes.
        deliverer: Deliverer,
        /// `delivery.kafka_ack_timeout_ms`.
        timeout: Duration,
    },
    /// `ack = "none"`: 200 once the records are enqueued; a later failure is only logged.
    Queued {
        /// Splits and publishes.
        deliverer: Deliverer,
        /// `delivery.kafka_ack_timeout_ms`: how long a request waits to be enqueued
        /// (topics created, room in the producer's queue).
        timeout: Duration,
    },
}

impl Intake {
    /// Whether what it cannot take now is explained by Kafka being unreachable, which the
    /// publisher logs once for all.
    pub fn kafka_unreachable(&self) -> bool {
        match self {
            Self::Spooled { .. } => false,
            Self::Acknowledged { deliverer, .. } | Self::Queued { deliverer, .. } => {
                deliverer.kafka_unreachable()
            }
        }
    }

    /// Takes a verified `body` that came in for `app` at `received_at`, in the trace of
    /// the request's span `trace` (when tracing is on).
    pub async fn accept(
        &self,
        app: &Arc<str>,
        body: Bytes,
        received_at: SystemTime,
        trace: Option<&SpanContext>,
    ) -> Result<(), NotAccepted> {
        match self {
            Self::Spooled { spool, tracer } => {
                let entry = Entry {
                    app: app.clone(),
                    received_at_ms: crate::epoch::ms(received_at),
                    body,
                    // The forwarder's PRODUCER spans are children of the request's span,
                    // however much later (a restart) they are published.
                    trace: trace.cloned(),
                };
                let mut span = tracer.start("spool append", Kind::Internal, trace);
                let appended = spool.append(entry).await.map(drop);
                if let (Some(span), Err(error)) = (&mut span, &appended) {
                    span.fail(error.to_string());
                }
                appended.map_err(NotAccepted::from)
            }
            Self::Acknowledged { deliverer, timeout } => {
                let delivered = async move {
                    let pending = deliverer.enqueue(app, &body, received_at, trace).await?;
                    // The producer holds what it needs: the body is not kept while Kafka
                    // acknowledges.
                    drop(body);
                    pending.finish().await
                };
                within(*timeout, "acknowledge", delivered).await
            }
            Self::Queued { deliverer, timeout } => {
                let enqueued = deliverer.enqueue(app, &body, received_at, trace);
                let pending = within(*timeout, "take the records", enqueued).await?;
                let app = app.clone();
                let log_span = trace.map(SpanContext::log_span);
                tokio::spawn(telemetry::within(log_span, async move {
                    if let Err(error) = pending.finish().await {
                        tracing::error!(%app, %error, "records acknowledged to Meta were lost (ack = \"none\")");
                    }
                }));
                Ok(())
            }
        }
    }
}

/// `work`, or a retryable failure naming what Kafka did not do (`what`) once `timeout` has
/// passed.
async fn within<T>(
    timeout: Duration,
    what: &str,
    work: impl Future<Output = Result<T, PublishError>>,
) -> Result<T, NotAccepted> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(PublishError::Retryable(format!(
                "Kafka did not {what} within {} ms",
                timeout.as_millis()
            )))
        })
        .map_err(NotAccepted::from)
}
