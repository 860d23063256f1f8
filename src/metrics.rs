//! The gateway's Prometheus metrics (DESIGN §7), owned by the app and injected where they
//! are counted; never a global registry.
//!
//! Every label value comes from a fixed set: routes, status codes, configured app names,
//! documented field names (else `other`), the gateway's own topics (else `other`), and
//! the reason enums of the modules that fail.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::signature::SecretMatch;

/// Bucket bounds for request and delivery latencies, in seconds: Meta wants a median under
/// 250 ms and fewer than 1% over 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Declares the [`Metrics`] struct and its constructor from one table: each metric is
/// named, documented, created and registered in one row, so that none can be left out of
/// the registry.
macro_rules! metrics {
    ($($(#[$doc:meta])* $field:ident: $kind:ty = $make:expr;)+) => {
        /// All metrics of one gateway instance.
        #[derive(Clone)]
        pub struct Metrics {
            registry: Registry,
            $($(#[$doc])* pub $field: $kind,)+
            /// `kafka_records` handles (ok, error) of the gateway's own topics, and of
            /// `other`: looked up once, not per record.
            topics: HashMap<String, [IntCounter; 2]>,
            /// `http_requests` handles of 200 answers and `http_request_duration` handles,
            /// by route: looked up once, not per request.
            routes: HashMap<&'static str, (IntCounter, Histogram)>,
        }

        impl Metrics {
            /// Registers every metric in a new registry. `topics` are the topic names that
            /// may be used as labels; any other topic is counted as `other`.
            pub fn new(topics: impl IntoIterator<Item = String>) -> Self {
                let registry = Registry::new();
                // process_cpu_seconds_total, process_resident_memory_bytes, open fds...
                #[cfg(target_os = "linux")]
                registry
                    .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
                    .expect("the process collector is registered once");
                let mut metrics = Self {
                    $($field: register(&registry, $make),)+
                    registry,
                    topics: HashMap::new(),
                    routes: HashMap::new(),
                };
                metrics.look_up_handles(topics);
                metrics
                    .build_info
                    .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("WABA_GATEWAY_REVISION")])
                    .set(1);
                metrics
            }

            /// Every metric of the gateway, rendered or not yet (a labelled metric appears
            /// once a label set is counted): its name and its label names.
            pub fn declared(&self) -> Vec<(String, Vec<String>)> {
                let mut declared = Vec::new();
                $(
                    for desc in self.$field.desc() {
                        declared.push((desc.fq_name.clone(), desc.variable_labels.clone()));
                    }
                )+
                declared
            }
        }
    };
}

metrics! {
    /// `waba_gateway_http_requests_total{route,status}`.
    http_requests: IntCounterVec = counters("waba_gateway_http_requests_total", "HTTP requests answered, by route and status code.", &["route", "status"]);
    /// `waba_gateway_http_request_duration_seconds{route}`.
    http_request_duration: HistogramVec = HistogramVec::new(latencies("waba_gateway_http_request_duration_seconds", "Time from the request's arrival to its answer."), &["route"]);
    /// `waba_gateway_signature_failures_total{app,reason}`.
    signature_failures: IntCounterVec = counters("waba_gateway_signature_failures_total", "Notifications refused because X-Hub-Signature-256 was missing, malformed or wrong.", &["app", "reason"]);
    /// `waba_gateway_signature_matches_total{app,secret}`: which secret verified
    /// (`current` or `previous`), to know when a rotated-out secret can go.
    signature_matches: IntCounterVec = counters("waba_gateway_signature_matches_total", "Notifications whose signature verified, by which secret matched.", &["app", "secret"]);
    /// `waba_gateway_changes_total{app,field}`.
    changes: IntCounterVec = counters("waba_gateway_changes_total", "Changes split out of verified notifications, by app and field.", &["app", "field"]);
    /// `waba_gateway_deadletters_total{app,reason}`.
    deadletters: IntCounterVec = counters("waba_gateway_deadletters_total", "Authentic bodies or records kept on the dead-letter topic, by reason.", &["app", "reason"]);
    /// `waba_gateway_kafka_records_total{topic,outcome}`.
    kafka_records: IntCounterVec = counters("waba_gateway_kafka_records_total", "Records produced to Kafka, by topic and outcome (ok or error).", &["topic", "outcome"]);
    /// `waba_gateway_kafka_delivery_seconds`.
    kafka_delivery: Histogram = Histogram::with_opts(latencies("waba_gateway_kafka_delivery_seconds", "Time from enqueueing a record to Kafka's acknowledgement."));
    /// `waba_gateway_spool_entries`.
    spool_entries: IntGauge = IntGauge::new("waba_gateway_spool_entries", "Notifications on the local spool not yet released.");
    /// `waba_gateway_spool_bytes`.
    spool_bytes: IntGauge = IntGauge::new("waba_gateway_spool_bytes", "Bytes on the local spool not yet released.");
    /// `waba_gateway_spool_oldest_entry_age_seconds`.
    spool_oldest_age: Gauge = Gauge::new("waba_gateway_spool_oldest_entry_age_seconds", "Age of the oldest notification on the spool not yet in Kafka; 0 when empty.");
    /// `waba_gateway_spool_max_bytes`: `delivery.spool_max_bytes`, for alerts on how full.
    spool_max_bytes: IntGauge = IntGauge::new("waba_gateway_spool_max_bytes", "The spool's size limit, delivery.spool_max_bytes.");
    /// `waba_gateway_spool_fsyncs_total`: one per group commit.
    spool_fsyncs: IntCounter = IntCounter::new("waba_gateway_spool_fsyncs_total", "Spool writes made durable with fdatasync; each covers every request waiting.");
    /// `waba_gateway_spool_quarantined_total`: corrupt spool ranges moved aside.
    spool_quarantined: IntCounter = IntCounter::new("waba_gateway_spool_quarantined_total", "Corrupt byte ranges found in the spool and moved to its quarantine folder.");
    /// `waba_gateway_trace_spans_exported_total`: spans the collector took.
    trace_spans_exported: IntCounter = IntCounter::new("waba_gateway_trace_spans_exported_total", "Trace spans exported to the OpenTelemetry collector.");
    /// `waba_gateway_trace_spans_dropped_total{reason}`: `queue_full` (the export queue
    /// was full: the collector is slow or down) or `export_failed`.
    trace_spans_dropped: IntCounterVec = counters("waba_gateway_trace_spans_dropped_total", "Trace spans not exported, by reason (queue_full, export_failed).", &["reason"]);
    /// `waba_gateway_connections`: open connections on the webhook listener.
    connections: IntGauge = IntGauge::new("waba_gateway_connections", "Connections open on the webhook listener.");
    /// `waba_gateway_overload_refusals_total{limit}`: 503s of the caps
    /// (`connections`, `in_flight`).
    overload_refusals: IntCounterVec = counters("waba_gateway_overload_refusals_total", "Requests answered 503 because a cap was reached: server.max_connections (connections), server.max_in_flight_requests (in_flight) or server.receive_budget_bytes (receive_budget).", &["limit"]);
    /// `waba_gateway_receive_budget_used_bytes`: bytes of request bodies held, against
    /// `server.receive_budget_bytes`.
    receive_budget_used: IntGauge = IntGauge::new("waba_gateway_receive_budget_used_bytes", "Bytes of request bodies held from their first byte until accepted, against server.receive_budget_bytes.");
    /// `waba_gateway_receive_budget_bytes`: `server.receive_budget_bytes`.
    receive_budget_bytes: IntGauge = IntGauge::new("waba_gateway_receive_budget_bytes", "The ceiling of bytes of request bodies held at once, server.receive_budget_bytes.");
    /// `waba_gateway_source_refusals_total`: connections from outside
    /// `server.allowed_source_cidrs`, and requests that a trusted proxy forwarded for one.
    source_refusals: IntCounter = IntCounter::new("waba_gateway_source_refusals_total", "Connections closed at accept, and requests forwarded by a trusted proxy answered 403, because their source is outside server.allowed_source_cidrs.");
    /// `waba_gateway_tls_handshake_failures_total{reason}`.
    tls_handshake_failures: IntCounterVec = counters("waba_gateway_tls_handshake_failures_total", "TLS handshakes that failed on the webhook listener, by reason.", &["reason"]);
    /// `waba_gateway_tls_reloads_total{outcome}`: certificate reloads (`ok`, `error`).
    tls_reloads: IntCounterVec = counters("waba_gateway_tls_reloads_total", "Reloads of the TLS certificate and key, by outcome (ok or error).", &["outcome"]);
    /// `waba_gateway_kafka_producer_queue_messages` (librdkafka statistics).
    kafka_producer_queue_messages: IntGauge = IntGauge::new("waba_gateway_kafka_producer_queue_messages", "Records in the producer's queue, not yet acknowledged (librdkafka statistics).");
    /// `waba_gateway_kafka_producer_queue_bytes` (librdkafka statistics).
    kafka_producer_queue_bytes: IntGauge = IntGauge::new("waba_gateway_kafka_producer_queue_bytes", "Bytes of the records in the producer's queue (librdkafka statistics).");
    /// `waba_gateway_kafka_broker_rtt_seconds{broker,quantile}` (librdkafka statistics).
    kafka_broker_rtt: GaugeVec = GaugeVec::new(Opts::new("waba_gateway_kafka_broker_rtt_seconds", "Round-trip time to each broker, by quantile (0.5, 0.99), from librdkafka statistics."), &["broker", "quantile"]);
    /// `waba_gateway_kafka_broker_up{broker}`: 1 while librdkafka's state is UP.
    kafka_broker_up: IntGaugeVec = IntGaugeVec::new(Opts::new("waba_gateway_kafka_broker_up", "1 while librdkafka's connection to the broker is UP, else 0."), &["broker"]);
    /// `waba_gateway_kafka_errors_total{kind}`: librdkafka's errors by class.
    kafka_errors: IntCounterVec = counters("waba_gateway_kafka_errors_total", "Errors librdkafka reported, by kind (its error code's name).", &["kind"]);
    /// `waba_gateway_build_info{version,revision}`.
    build_info: IntGaugeVec = IntGaugeVec::new(Opts::new("waba_gateway_build_info", "Always 1; the version and revision that run."), &["version", "revision"]);
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A labelled counter.
fn counters(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

/// The options of a latency histogram.
fn latencies(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

/// Every `route` label of the HTTP metrics.
pub const ROUTES: &[&str] = &[
    "webhook_notify",
    "webhook_verify",
    "webhook_refused",
    "webhook_other",
    "healthz",
    "readyz",
    "metrics",
    "not_found",
    "over_capacity",
];

impl Metrics {
    fn look_up_handles(&mut self, topics: impl IntoIterator<Item = String>) {
        let outcomes = |label: &str| {
            ["ok", "error"].map(|outcome| self.kafka_records.with_label_values(&[label, outcome]))
        };
        let topics: HashMap<String, [IntCounter; 2]> = topics
            .into_iter()
            .chain(["other".to_owned()])
            .map(|topic| {
                let handles = outcomes(&topic);
                (topic, handles)
            })
            .collect();
        self.routes = ROUTES
            .iter()
            .map(|route| {
                let ok = self.http_requests.with_label_values(&[route, "200"]);
                (
                    *route,
                    (ok, self.http_request_duration.with_label_values(&[route])),
                )
            })
            .collect();
        self.topics = topics;
    }

    /// Counts one record Kafka acknowledged (`ok`) or failed.
    pub fn count_record(&self, topic: &str, ok: bool) {
        let handles = self.topics.get(topic).or_else(|| self.topics.get("other"));
        if let Some(handles) = handles {
            handles[usize::from(!ok)].inc();
        }
    }

    /// Counts one answer of `route` with `status`, and how long it took.
    pub fn count_answer(&self, route: &'static str, status: http::StatusCode, seconds: f64) {
        match self.routes.get(route) {
            Some((ok, duration)) => {
                if status == http::StatusCode::OK {
                    ok.inc();
                } else {
                    self.http_requests
                        .with_label_values(&[route, status.as_str()])
                        .inc();
                }
                duration.observe(seconds);
            }
            None => {
                self.http_requests
                    .with_label_values(&[route, status.as_str()])
                    .inc();
                self.http_request_duration
                    .with_label_values(&[route])
                    .observe(seconds);
            }
        }
    }

    /// `waba_gateway_signature_matches_total` of `app`: the current secret's counter, then
    /// the previous secrets', looked up once for the app's route rather than per request.
    pub fn signature_match_counters(&self, app: &str) -> [IntCounter; 2] {
        [SecretMatch::Current, SecretMatch::Previous].map(|matched| {
            self.signature_matches
                .with_label_values(&[app, matched.label()])
        })
    }

    /// Counts a notification Kafka accepted: each change by field, or the dead letter by
    /// reason.
    pub fn count_accepted(&self, app: &str, fields: &[&'static str], deadletter: Option<&str>) {
        match deadletter {
            Some(reason) => self.deadletters.with_label_values(&[app, reason]).inc(),
            None => {
                for field in fields {
                    self.changes.with_label_values(&[app, field]).inc();
                }
            }
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

/// Registers a new metric and returns it: the one way metrics are made here.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric names, labels and buckets are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_text_has_every_documented_metric() {
        let metrics = Metrics::new(["whatsapp.messages".to_owned()]);
        metrics
            .http_requests
            .with_label_values(&["webhook_notify", "200"])
            .inc();
        metrics
            .http_request_duration
            .with_label_values(&["webhook_notify"])
            .observe(0.01);
        for (counter, labels) in [
            (&metrics.signature_failures, ["default", "mismatch"]),
            (&metrics.changes, ["default", "messages"]),
            (&metrics.deadletters, ["default", "invalid_json"]),
            (&metrics.kafka_records, ["whatsapp.messages", "ok"]),
        ] {
            counter.with_label_values(&labels).inc();
        }
        metrics.kafka_delivery.observe(0.002);
        let text = String::from_utf8(metrics.render()).expect("utf-8");
        for name in [
            "waba_gateway_http_requests_total{route=\"webhook_notify\",status=\"200\"} 1",
            "waba_gateway_http_request_duration_seconds_bucket{route=\"webhook_notify\",le=\"0.01\"} 1",
            "waba_gateway_signature_failures_total{app=\"default\",reason=\"mismatch\"} 1",
            "waba_gateway_changes_total{app=\"default\",field=\"messages\"} 1",
            "waba_gateway_deadletters_total{app=\"default\",reason=\"invalid_json\"} 1",
            "waba_gateway_kafka_records_total{outcome=\"ok\",topic=\"whatsapp.messages\"} 1",
            "waba_gateway_kafka_delivery_seconds_count 1",
            "waba_gateway_spool_entries 0",
            "waba_gateway_spool_bytes 0",
            "waba_gateway_build_info{revision=\"",
            concat!("version=\"", env!("CARGO_PKG_VERSION"), "\"} 1"),
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn records_of_topics_outside_the_known_set_are_counted_as_other() {
        let metrics = Metrics::new(["whatsapp.messages".to_owned()]);
        metrics.count_record("whatsapp.messages", true);
        metrics.count_record("whatsapp.anything_else", true);
        metrics.count_record("whatsapp.anything_else", false);
        let text = String::from_utf8(metrics.render()).expect("utf-8");
        for line in [
            r#"waba_gateway_kafka_records_total{outcome="ok",topic="whatsapp.messages"} 1"#,
            r#"waba_gateway_kafka_records_total{outcome="ok",topic="other"} 1"#,
            r#"waba_gateway_kafka_records_total{outcome="error",topic="other"} 1"#,
        ] {
            assert!(
                text.lines().any(|rendered| rendered == line),
                "{line}\n{text}"
            );
        }
    }
}
