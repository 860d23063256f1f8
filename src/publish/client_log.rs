//! What librdkafka says, in the gateway's words and rate-limited: an unreachable cluster
//! is one WARN line naming `kafka.brokers` and what was tried, then at most one line per
//! interval with how many were held back, instead of librdkafka's own errors several
//! times a second from every client.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use crate::metrics::Metrics;
use crate::telemetry::Throttle;

/// How often a condition that persists is logged again.
const REPEAT_INTERVAL: Duration = Duration::from_secs(30);

/// The context of the gateway's Kafka clients (producer and admin), sharing one set of
/// throttles so that two clients seeing one outage log it once.
#[derive(Clone)]
pub struct ClientLog {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: String,
    /// Where librdkafka's statistics and errors are counted (the gateway's clients; not
    /// `tail`'s).
    metrics: Option<Arc<Metrics>>,
    unreachable: Throttle,
    errors: Throttle,
    logs: Throttle,
}

impl ClientLog {
    /// The context for clients of `brokers` (`kafka.brokers`).
    pub fn new(brokers: &str) -> Self {
        Self::counting(brokers, None)
    }

    /// The context for the gateway's own clients, whose statistics and errors go into
    /// `metrics`.
    pub fn counting(brokers: &str, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                brokers: brokers.to_owned(),
                metrics,
                unreachable: Throttle::new(REPEAT_INTERVAL),
                errors: Throttle::new(REPEAT_INTERVAL),
                logs: Throttle::new(REPEAT_INTERVAL),
            }),
        }
    }
}

/// Errors that mean no broker can be reached.
fn is_unreachable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::BrokerNotAvailable
        )
    )
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if let Some(held_back) = self.inner.logs.admit() {
                    tracing::warn!(target: "librdkafka", fac, held_back, "librdkafka: {message}");
                }
            }
            _ => tracing::debug!(target: "librdkafka", fac, "librdkafka: {message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let Some(metrics) = &self.inner.metrics else {
            return;
        };
        metrics
            .kafka_producer_queue_messages
            .set(statistics.msg_cnt as i64);
        metrics
            .kafka_producer_queue_bytes
            .set(statistics.msg_size as i64);
        for broker in statistics.brokers.values() {
            // Bootstrap entries stand for an address, not a broker: the real ones follow.
            if broker.nodeid < 0 {
                continue;
            }
            let up = i64::from(broker.state == "UP");
            metrics
                .kafka_broker_up
                .with_label_values(&[&broker.name])
                .set(up);
            if let Some(rtt) = &broker.rtt {
                for (quantile, micros) in [("0.5", rtt.p50), ("0.99", rtt.p99)] {
                    metrics
                        .kafka_broker_rtt
                        .with_label_values(&[&broker.name, quantile])
                        .set(micros as f64 / 1e6);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(metrics) = &self.inner.metrics {
            let kind = error
                .rdkafka_error_code()
                .map_or_else(|| "other".to_owned(), |code| format!("{code:?}"));
            metrics.kafka_errors.with_label_values(&[&kind]).inc();
        }
        if is_unreachable(&error) {
            if let Some(held_back) = self.inner.unreachable.admit() {
                tracing::warn!(
                    kafka.brokers = %self.inner.brokers,
                    tried = reason,
                    held_back,
                    "Kafka is unreachable: no broker of kafka.brokers answers; retrying"
                );
            }
        } else if let Some(held_back) = self.inner.errors.admit() {
            tracing::error!(%error, reason, held_back, "Kafka client error");
        }
    }
}

/// `tail`'s consumer logs the same way.
impl rdkafka::consumer::ConsumerContext for ClientLog {}

/// A consumer of `config`'s cluster that logs through [`ClientLog`]; an error in the
/// gateway's words (see [`super::kafka::describe`]).
pub fn consumer(
    config: &rdkafka::ClientConfig,
) -> anyhow::Result<rdkafka::consumer::BaseConsumer<ClientLog>> {
    let log = ClientLog::new(config.get("bootstrap.servers").unwrap_or_default());
    config.create_with_context(log).map_err(|error| {
        anyhow::anyhow!(
            "creating the Kafka consumer: {}",
            super::kafka::describe(&error, config)
        )
    })
}
