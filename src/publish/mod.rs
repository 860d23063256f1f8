//! Publishing records: the [`Publisher`] trait (Kafka in production, memory in handler
//! tests) and the [`Sink`] that every ack mode goes through.
//!
//! Invariants of [`Sink::enqueue`] + [`Publication::finish`]:
//! - a request's records are enqueued in their order, after their topics exist, so that
//!   one conversation keeps its order on its partition;
//! - `finish` returns `Ok` only when Kafka acknowledged every record (or, for a record the
//!   broker refused as such, its copy on the dead-letter topic): nothing is dropped;
//! - a full producer queue is waited on for [`QUEUE_WAIT`] at most, while librdkafka
//!   sends what it holds, then is [`PublishError::QueueFull`]: backpressure, never a hang.

pub(crate) mod client_log;
pub(crate) mod embedded;
pub(crate) mod kafka;
pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::envelope::{Record, headers};
use crate::metrics::Metrics;
use crate::telemetry;
use crate::trace::Span;

/// How long a request waits for room in a full producer queue, in all: long enough for a
/// burst of large bodies to pass while librdkafka sends, short enough that a queue which
/// does not drain (Kafka down) is a 503 well within Meta's answer time.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// How often a full queue is tried again while waiting.
const QUEUE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves when the broker acknowledged one enqueued record.
pub type Delivery = BoxFuture<'static, Result<(), Undelivered>>;

/// Why one enqueued record is not in Kafka.
#[derive(Debug)]
pub struct Undelivered {
    /// What went wrong.
    pub error: PublishError,
    /// The record's value as the producer gives it back: the [`Sink`] does not keep values
    /// while Kafka acknowledges, and a record refused for good needs its value for the
    /// dead-letter topic.
    pub value: Option<Vec<u8>>,
}

impl From<PublishError> for Undelivered {
    fn from(error: PublishError) -> Self {
        Self { error, value: None }
    }
}

/// Why a record is not in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Kafka cannot take it now (down, slow, queue full, timed out): answer 503, Meta retries.
    #[error("Kafka cannot take the record now: {0}")]
    Retryable(String),
    /// The producer's queue is full (`queue.buffering.max.messages` or `.kbytes`):
    /// backpressure, answered 503 at once; Meta retries later.
    #[error("the producer's queue is full")]
    QueueFull,
    /// Kafka refuses this record as it is (too large, invalid): retrying cannot help, so it
    /// goes to the dead-letter topic. `reason` is a fixed label.
    #[error("Kafka refused the record ({reason}): {detail}")]
    Rejected {
        /// Fixed label for `wa-error` and metrics.
        reason: &'static str,
        /// What the broker or client said.
        detail: String,
    },
}

/// Every `reason` of [`PublishError::Rejected`]: why Kafka refuses a record for good.
pub const REFUSALS: [&str; 4] = [
    "record_too_large",
    "invalid_record",
    "unknown_topic",
    "topic_authorization_failed",
];

/// Something records can be produced to.
pub trait Publisher: Send + Sync + 'static {
    /// Makes sure `topics` exist before anything is produced to them.
    fn prepare<'a>(&'a self, topics: &'a [&'a str]) -> BoxFuture<'a, Result<(), PublishError>>;

    /// Enqueues one record without waiting; the returned future resolves with the broker's
    /// acknowledgement.
    fn enqueue(&self, record: &Record) -> Result<Delivery, PublishError>;

    /// Waits, up to `timeout`, until everything enqueued is acknowledged or failed.
    fn flush(&self, timeout: std::time::Duration) -> BoxFuture<'_, Result<(), PublishError>>;

    /// The brokers it cannot reach now, each with why (`127.0.0.1:9 (Connection
    /// refused)`), when it cannot reach any: the one line that says so is logged by the
    /// publisher itself, so what waits on Kafka meanwhile need not log its own.
    fn unreachable(&self) -> Option<String> {
        None
    }
}

/// The publisher with the metrics it counts into and the dead-letter topic it falls back
/// to. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    publisher: Arc<dyn Publisher>,
    metrics: Arc<Metrics>,
    deadletter_topic: Arc<str>,
}

impl Sink {
    /// A sink over `publisher`.
    pub fn new(
        publisher: Arc<dyn Publisher>,
        metrics: Arc<Metrics>,
        deadletter_topic: &str,
    ) -> Self {
        Self {
            publisher,
            metrics,
            deadletter_topic: deadletter_topic.into(),
        }
    }

    /// The brokers its publisher cannot reach now, when it cannot reach any (see
    /// [`Publisher::unreachable`]).
    pub fn unreachable(&self) -> Option<String> {
        self.publisher.unreachable()
    }

    /// Ensures the topics exist, then enqueues every record in order. Fails at once, with
    /// nothing more enqueued, when the producer cannot take a record.
    pub async fn enqueue(
        &self,
        app: &Arc<str>,
        mut records: Vec<Record>,
    ) -> Result<Publication, PublishError> {
        let mut topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        self.publisher.prepare(&topics).await?;
        let mut deliveries = Vec::with_capacity(records.len());
        // Tokio's clock: the wait is on the runtime's timers.
        let mut queue_full_since: Option<tokio::time::Instant> = None;
        for record in &mut records {
            let delivery = loop {
                match self.publisher.enqueue(record) {
                    Err(PublishError::QueueFull)
                        if queue_full_since
                            .get_or_insert_with(tokio::time::Instant::now)
                            .elapsed()
                            < QUEUE_WAIT =>
                    {
                        tokio::time::sleep(QUEUE_POLL).await;
                    }
                    other => break other,
                }
            };
            let delivery = match delivery {
                Ok(delivery) => {
                    // The producer has its own copy: each value is held once.
                    record.value = Vec::new();
                    delivery
                }
                Err(rejected @ PublishError::Rejected { .. }) => {
                    Box::pin(std::future::ready(Err(rejected.into())))
                }
                Err(error) => {
                    self.count(&record.topic, false);
                    return Err(error);
                }
            };
            deliveries.push((Instant::now(), delivery));
        }
        Ok(Publication {
            sink: self.clone(),
            app: app.clone(),
            records,
            deliveries,
            spans: Vec::new(),
        })
    }

    fn count(&self, topic: &str, ok: bool) {
        self.metrics.count_record(topic, ok);
    }
}

/// Records of one request, enqueued and awaiting acknowledgement. It keeps their topics,
/// keys and headers; their values only where the producer refused them at once.
pub struct Publication {
    sink: Sink,
    app: Arc<str>,
    records: Vec<Record>,
    deliveries: Vec<(Instant, Delivery)>,
    /// The records' PRODUCER spans, in order, when tracing is on: each ends when Kafka
    /// acknowledged its record.
    spans: Vec<Span>,
}

impl Publication {
    /// The same publication, whose records' spans (one per record, in order) end as Kafka
    /// acknowledges them.
    pub(crate) fn traced(mut self, spans: Vec<Span>) -> Self {
        self.spans = spans;
        self
    }

    /// Waits for every acknowledgement. A record the broker refused is produced to the
    /// dead-letter topic instead (its envelope as value, the reason in `wa-error`, the
    /// intended topic in `wa-topic`), and waited for in turn.
    pub async fn finish(self) -> Result<(), PublishError> {
        let Self {
            sink,
            app,
            records,
            deliveries,
            spans,
        } = self;
        let mut outcome = Ok(());
        let mut refused = Vec::new();
        let mut spans = spans.into_iter();
        for (mut record, (enqueued_at, delivery)) in records.into_iter().zip(deliveries) {
            let result = delivery.await;
            let mut span = spans.next();
            if let (Some(span), Err(Undelivered { error, .. })) = (&mut span, &result) {
                span.fail(error.to_string());
            }
            let log_span = span.as_ref().map(|span| span.context().log_span());
            sink.count(&record.topic, result.is_ok());
            let error = match result {
                Ok(()) => {
                    sink.metrics
                        .kafka_delivery
                        .observe(enqueued_at.elapsed().as_secs_f64());
                    continue;
                }
                Err(Undelivered { error, value }) => {
                    if let Some(value) = value {
                        record.value = value;
                    }
                    error
                }
            };
            match error {
                PublishError::Rejected { reason, detail } => {
                    telemetry::within_sync(log_span, || {
                        tracing::error!(app = %app, topic = %record.topic, reason, %detail, "Kafka refused a record for good; sending it to the dead-letter topic with the topic it was meant for (wa-topic)");
                    });
                    sink.metrics
                        .deadletters
                        .with_label_values(&[&app, reason])
                        .inc();
                    refused.push(refused_record(
                        &sink.deadletter_topic,
                        record,
                        reason,
                        &detail,
                    ));
                }
                error => outcome = Err(error),
            }
        }
        outcome?;
        if refused.is_empty() {
            return Ok(());
        }
        let publication = Box::pin(sink.enqueue(&app, refused)).await?;
        // A dead letter refused in turn cannot be kept anywhere: report it as retryable so
        // Meta delivers the notification again rather than it being lost.
        match Box::pin(publication.finish()).await {
            Err(PublishError::Rejected { reason, detail }) => Err(PublishError::Retryable(
                format!("the dead-letter topic refused a record too ({reason}: {detail})"),
            )),
            other => other,
        }
    }
}

fn refused_record(deadletter_topic: &str, record: Record, reason: &str, detail: &str) -> Record {
    let mut headers: Vec<(&'static str, String)> = record
        .headers
        .into_iter()
        .filter(|(name, _)| *name != headers::CONTENT_TYPE)
        .collect();
    headers.push((headers::ERROR, format!("{reason}: {detail}")));
    headers.push((headers::TOPIC, record.topic));
    Record {
        topic: deadletter_topic.to_owned(),
        key: record.key,
        headers,
        value: record.value,
        field: record.field,
        counts_change: record.counts_change,
    }
}
