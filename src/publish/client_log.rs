//! What librdkafka says, in the gateway's words and rate-limited: an unreachable cluster
//! is one WARN line naming each broker that cannot be reached and why, then at most one
//! line per interval with how many were held back, instead of librdkafka's own errors
//! several times a second from every client (and of a line per refused request).

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
    /// The brokers that failed to connect, with why and when: what the one line of an
    /// outage names. A broker leaves it when the statistics show it up, or when it has not
    /// failed for [`DOWN_FOR`].
    down: std::sync::Mutex<std::collections::BTreeMap<String, (String, std::time::Instant)>>,
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
                down: Default::default(),
                metrics,
                unreachable: Throttle::new(REPEAT_INTERVAL),
                errors: Throttle::new(REPEAT_INTERVAL),
                logs: Throttle::new(REPEAT_INTERVAL),
            }),
        }
    }
}

/// How long the first line of an outage waits for every configured broker to fail.
const FIRST_LINE_WAIT: Duration = Duration::from_secs(3);

/// How long a broker that failed to connect counts as down without failing again.
const DOWN_FOR: Duration = Duration::from_secs(60);

impl ClientLog {
    /// The brokers that cannot be reached now, each with why, when every broker tried
    /// lately failed: `127.0.0.1:9 (Connection refused), 127.0.0.1:10 (Connection refused)`.
    pub fn unreachable(&self) -> Option<String> {
        let mut down = self.inner.down.lock().unwrap_or_else(|e| e.into_inner());
        down.retain(|_, (_, at)| at.elapsed() < DOWN_FOR);
        (!down.is_empty()).then(|| {
            down.iter()
                .map(|(broker, (why, _))| format!("{broker} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// Notes a connection failure that librdkafka described as `text`
    /// (`[thrd:…]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection
    /// refused (after 0ms in state CONNECT)`); false when `text` names no broker.
    fn note_down(&self, text: &str) -> bool {
        let Some((broker, why)) = broker_failure(text) else {
            return false;
        };
        let mut down = self.inner.down.lock().unwrap_or_else(|e| e.into_inner());
        down.insert(broker, (why, std::time::Instant::now()));
        true
    }

    /// The one line of an outage, at most once per [`REPEAT_INTERVAL`]: which brokers
    /// cannot be reached and why. Requests refused and spooled entries waiting meanwhile
    /// do not log lines of their own.
    fn report_unreachable(&self, tried: &str) {
        // The first line waits a moment for every configured broker to have failed, so
        // that it names them all.
        {
            let down = self.inner.down.lock().unwrap_or_else(|e| e.into_inner());
            let configured = self
                .inner
                .brokers
                .split(',')
                .filter(|b| !b.trim().is_empty());
            let first = down.values().map(|(_, at)| *at).min();
            if down.len() < configured.count()
                && first.is_some_and(|at| at.elapsed() < FIRST_LINE_WAIT)
            {
                return;
            }
        }
        if let Some(held_back) = self.inner.unreachable.admit() {
            match self.unreachable() {
                Some(down) => tracing::warn!(
                    kafka.brokers = %self.inner.brokers,
                    held_back,
                    "Kafka is unreachable: {down}; retrying until a broker answers"
                ),
                None => tracing::warn!(
                    kafka.brokers = %self.inner.brokers,
                    tried,
                    held_back,
                    "Kafka is unreachable: no broker of kafka.brokers answers; retrying"
                ),
            }
        }
    }
}

/// The broker (`127.0.0.1:9`) and the reason (`Connection refused`) of a connection
/// failure in librdkafka's words.
fn broker_failure(text: &str) -> Option<(String, String)> {
    let text = match text.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(rest, |(_, message)| message),
        None => text,
    };
    let (name, rest) = text.split_once(": ")?;
    // `host:port/bootstrap` or `host:port/<node id>`.
    let broker = name.split_once('/').map_or(name, |(address, _)| address);
    if !broker.contains(':') || broker.contains(' ') {
        return None;
    }
    let why = rest
        .split_once("failed: ")
        .map_or(rest, |(_, why)| why)
        .split(" (after")
        .next()
        .unwrap_or(rest)
        .trim();
    Some((broker.to_owned(), why.to_owned()))
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
                // A broker that cannot be connected to is part of the outage's one line.
                if fac == "FAIL" && self.note_down(message) {
                    self.report_unreachable(message);
                    return;
                }
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
            if broker.state == "UP" {
                let address = broker
                    .name
                    .split_once('/')
                    .map_or(&*broker.name, |(a, _)| a);
                let mut down = self.inner.down.lock().unwrap_or_else(|e| e.into_inner());
                down.remove(address);
            }
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
            self.note_down(reason);
            self.report_unreachable(reason);
        } else if let Some(held_back) = self.inner.errors.admit() {
            tracing::error!(%error, reason, held_back, "Kafka client error");
        }
    }
}

/// `tail`'s consumer logs the same way.
impl rdkafka::consumer::ConsumerContext for ClientLog {}

#[cfg(test)]
mod tests {
    use super::broker_failure;

    #[test]
    fn a_connection_failure_names_its_broker_and_reason() {
        assert_eq!(
            broker_failure(
                "[thrd:127.0.0.1:10/bootstrap]: 127.0.0.1:10/bootstrap: Connect to \
                 ipv4#127.0.0.1:10 failed: Connection refused (after 7ms in state CONNECT)"
            ),
            Some(("127.0.0.1:10".to_owned(), "Connection refused".to_owned()))
        );
        assert_eq!(
            broker_failure(
                "kafka-0.kafka:9092/1: Failed to resolve 'kafka-0.kafka:9092': Name or \
                 service not known (after 2ms in state CONNECT)"
            ),
            Some((
                "kafka-0.kafka:9092".to_owned(),
                "Failed to resolve 'kafka-0.kafka:9092': Name or service not known".to_owned()
            ))
        );
        assert_eq!(broker_failure("0/2 brokers are down"), None);
    }
}
