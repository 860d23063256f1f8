//! Delivery: what becomes of a verified notification, per `delivery.ack` (DESIGN §5).
//!
//! [`Intake`] is built once at start-up with one variant per ack mode; the handler calls
//! [`Intake::accept`] and answers 200 when it returns `Ok`. [`Deliverer`] is the one path
//! from a body to Kafka — split, enqueue, wait, count, log a dead letter — shared by the
//! `kafka` and `none` modes, the spool's forwarder, `spool drain` and `replay`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::envelope::{self, Record};
use crate::metrics::Metrics;
use crate::publish::{Publication, PublishError, Sink};
use crate::routing::Routing;
use crate::spool::{Entry, Spool, SpoolError};

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

/// Where verified notifications go, per ack mode.
pub enum Intake {
    /// `ack = "spool"`: 200 once the body is synced to the spool; the forwarder publishes it.
    Spool(Arc<Spool>),
    /// `ack = "kafka"`: 200 once Kafka acknowledged every record, within `timeout`.
    Kafka {
        /// Splits and publishes.
        deliverer: Deliverer,
        /// `delivery.kafka_ack_timeout_ms`.
        timeout: Duration,
    },
    /// `ack = "none"`: 200 once the records are enqueued; a later failure is only logged.
    None {
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
            Self::Spool(_) => false,
            Self::Kafka { deliverer, .. } | Self::None { deliverer, .. } => {
                deliverer.kafka_unreachable()
            }
        }
    }

    /// Takes a verified `body` that came in for `app` at `received_at`.
    pub async fn accept(
        &self,
        app: &str,
        body: Bytes,
        received_at: SystemTime,
    ) -> Result<(), NotAccepted> {
        match self {
            Self::Spool(spool) => {
                let entry = Entry {
                    app: app.to_owned(),
                    received_at_ms: unix_ms(received_at),
                    body,
                };
                spool
                    .append(entry)
                    .await
                    .map(drop)
                    .map_err(NotAccepted::from)
            }
            Self::Kafka { deliverer, timeout } => {
                let delivered = async move {
                    let pending = deliverer.enqueue(app, &body, received_at).await?;
                    // The producer holds what it needs: the body is not kept while Kafka
                    // acknowledges.
                    drop(body);
                    pending.finish().await
                };
                within(*timeout, "acknowledge", delivered).await
            }
            Self::None { deliverer, timeout } => {
                let enqueued = deliverer.enqueue(app, &body, received_at);
                let pending = within(*timeout, "take the records", enqueued).await?;
                let app = app.to_owned();
                tokio::spawn(async move {
                    if let Err(error) = pending.finish().await {
                        tracing::error!(%app, %error, "records acknowledged to Meta were lost (ack = \"none\")");
                    }
                });
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

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Splits bodies and publishes their records. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    sink: Sink,
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    /// A deliverer producing through `sink` as `routing` says.
    pub fn new(sink: Sink, routing: Routing, metrics: Arc<Metrics>) -> Self {
        Self {
            sink,
            routing: Arc::new(routing),
            metrics,
        }
    }

    /// The routing it splits by.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Whether Kafka is unreachable now (see [`crate::publish::Publisher::unreachable`]).
    pub fn kafka_unreachable(&self) -> bool {
        self.sink.publisher().unreachable().is_some()
    }

    /// Splits `body` and enqueues its records in order, without waiting for Kafka.
    pub async fn enqueue(
        &self,
        app: &str,
        body: &[u8],
        received_at: SystemTime,
    ) -> Result<Pending, PublishError> {
        let split = envelope::to_records(&self.routing, app, body, received_at);
        self.enqueue_records(app, split.records, split.deadletter)
            .await
    }

    /// Enqueues records made elsewhere (`replay` of a refused record), counted as one
    /// notification once Kafka has them.
    pub async fn enqueue_records(
        &self,
        app: &str,
        records: Vec<Record>,
        deadletter: Option<&'static str>,
    ) -> Result<Pending, PublishError> {
        let fields: Vec<&'static str> = records
            .iter()
            .filter(|record| record.counts_change)
            .map(|record| record.field)
            .collect();
        let publication = self.sink.enqueue(app, records).await?;
        Ok(Pending {
            publication,
            app: app.to_owned(),
            fields,
            deadletter,
            metrics: self.metrics.clone(),
        })
    }
}

/// One notification's records, enqueued and awaiting Kafka.
pub struct Pending {
    publication: Publication,
    app: String,
    fields: Vec<&'static str>,
    deadletter: Option<&'static str>,
    metrics: Arc<Metrics>,
}

impl Pending {
    /// Waits until Kafka has every record, then counts the notification: once accepted, so
    /// that Meta's retries of a refused request count once.
    pub async fn finish(self) -> Result<(), PublishError> {
        self.publication.finish().await?;
        if let Some(reason) = self.deadletter {
            tracing::warn!(app = %self.app, reason, "authentic body is not a notification; keeping it on the dead-letter topic");
        }
        self.metrics
            .count_accepted(&self.app, &self.fields, self.deadletter);
        Ok(())
    }
}
