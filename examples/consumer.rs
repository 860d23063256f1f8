//! A consumer of the gateway's topics, as a team downstream would write it: a starting
//! point to copy (README, "Consuming the topics").
//!
//! cargo run --example consumer -- --bootstrap-servers kafka:9092 --group billing \
//!     --topic whatsapp.messages [--topic ...] [--exit-after-idle SECONDS]
//!
//! - Reads the topics in a consumer group: partitions are shared among the group's
//!   members, and each conversation (one record key) stays in order on one partition.
//! - Drops duplicates by `event_id` (the `wa-event-id` header) within a bounded window
//!   (`--dedup-window`, 100000 ids): Meta retries, and a replayed spool delivers again.
//! - Refuses a status downgrade for a message: `sent` < `delivered` < `read`, and
//!   `failed` wins over all (headers `wa-message-id` and `wa-status`, which the gateway
//!   sets with `routing.split = "item"`; in change mode, a record's one status).
//! - Commits offsets after processing, so a crash replays what was not processed (and the
//!   duplicate window drops what was).
//! - Prints one JSON line per event processed on standard output, and one per event
//!   dropped (a duplicate or a downgrade) on standard error.
//! - Continues each record's trace when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: a CONSUMER span `process <topic>` whose
//!   parent is the gateway's PRODUCER span in the record's `traceparent` header, exported
//!   by the OpenTelemetry SDK over OTLP/HTTP (the `OTEL_*` variables configure it).

#![allow(clippy::print_stdout, clippy::print_stderr)] // printing events is its job

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::{Context as TraceContext, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Kafka's bootstrap servers.
    #[arg(long)]
    bootstrap_servers: String,
    /// The consumer group.
    #[arg(long)]
    group: String,
    /// A topic to read (repeatable).
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// Exit after this many seconds without a record (0: run until killed).
    #[arg(long, default_value_t = 0)]
    exit_after_idle: u64,
    /// How many recent event ids are remembered to drop duplicates.
    #[arg(long, default_value_t = 100_000)]
    dedup_window: usize,
}

/// A map that keeps its `capacity` most recently added keys: the bounded memory of the
/// duplicate filter and of each message's status.
struct Bounded<V> {
    values: HashMap<String, V>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<V> Bounded<V> {
    fn new(capacity: usize) -> Self {
        Self {
            values: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.values.get(key)
    }

    /// Sets `key`; a new key may push out the oldest one.
    fn set(&mut self, key: &str, value: V) {
        if self.values.insert(key.to_owned(), value).is_none() {
            self.order.push_back(key.to_owned());
            if self.order.len() > self.capacity
                && let Some(oldest) = self.order.pop_front()
            {
                self.values.remove(&oldest);
            }
        }
    }
}

/// A status's place in a message's life; `failed` wins over all. Unknown statuses are not
/// ranked and always pass.
fn rank(status: &str) -> Option<u8> {
    match status {
        "sent" => Some(1),
        "delivered" => Some(2),
        "read" => Some(3),
        "failed" => Some(4),
        _ => None,
    }
}

/// What a record says, from its headers (and its value for what they lack).
struct Event {
    event_id: String,
    field: Option<String>,
    kind: Option<String>,
    message_id: Option<String>,
    status: Option<String>,
}

fn event(message: &BorrowedMessage<'_>) -> anyhow::Result<Event> {
    let header = |name: &str| -> Option<String> {
        let headers = message.headers()?;
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let envelope: Value = serde_json::from_slice(message.payload().unwrap_or_default())
        .context("the record is not JSON")?;
    let event_id = header("wa-event-id")
        .or_else(|| envelope["event_id"].as_str().map(str::to_owned))
        .context("the record has no event id")?;
    let (mut message_id, mut status) = (header("wa-message-id"), header("wa-status"));
    // Change mode: the record's one status, when it has exactly one.
    if let (None, Some([only])) = (
        &status,
        envelope["value"]["statuses"].as_array().map(Vec::as_slice),
    ) {
        message_id = only["id"].as_str().map(str::to_owned);
        status = only["status"].as_str().map(str::to_owned);
    }
    Ok(Event {
        event_id,
        field: header("wa-field"),
        kind: header("wa-item-kind"),
        message_id,
        status,
    })
}

/// A record's headers, as the W3C propagator reads them.
struct RecordHeaders<'a>(Option<&'a rdkafka::message::BorrowedHeaders>);

impl Extractor for RecordHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let header = self.0?.iter().find(|header| header.key == key)?;
        std::str::from_utf8(header.value?).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|headers| headers.iter().map(|header| header.key).collect())
            .unwrap_or_default()
    }
}

/// The OpenTelemetry tracer provider, when an OTLP endpoint is configured.
fn tracer_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("creating the OTLP exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("waba-gateway-consumer");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let provider = tracer_provider()?;
    let tracer = provider
        .as_ref()
        .map(|provider| provider.tracer("waba-gateway-consumer"));
    let propagator = TraceContextPropagator::new();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the consumer")?;
    let topics: Vec<&str> = args.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).context("subscribing")?;

    let mut seen: Bounded<()> = Bounded::new(args.dedup_window);
    let mut statuses: Bounded<u8> = Bounded::new(args.dedup_window);
    let idle = Duration::from_secs(args.exit_after_idle);
    let mut last = Instant::now();
    loop {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            if args.exit_after_idle > 0 && last.elapsed() >= idle {
                break;
            }
            continue;
        };
        let message = result.context("reading from Kafka")?;
        last = Instant::now();
        let event = event(&message)?;
        // The processing span: a child of the gateway's PRODUCER span for this record.
        let mut span = tracer.as_ref().map(|tracer| {
            let parent: TraceContext = propagator.extract(&RecordHeaders(message.headers()));
            tracer
                .span_builder(format!("process {}", message.topic()))
                .with_kind(SpanKind::Consumer)
                .with_attributes([
                    KeyValue::new("messaging.system", "kafka"),
                    KeyValue::new("messaging.operation.type", "process"),
                    KeyValue::new("messaging.destination.name", message.topic().to_owned()),
                    KeyValue::new("messaging.consumer.group.name", args.group.clone()),
                    KeyValue::new("messaging.message.id", event.event_id.clone()),
                    KeyValue::new("messaging.kafka.offset", message.offset()),
                ])
                .start_with_context(tracer, &parent)
        });
        let position = json!({"topic": message.topic(), "partition": message.partition(), "offset": message.offset()});
        if seen.get(&event.event_id).is_some() {
            eprintln!(
                "{}",
                json!({"dropped": "duplicate", "event_id": event.event_id, "at": position})
            );
        } else if let Some(downgrade) = downgrade(&mut statuses, &event) {
            eprintln!(
                "{}",
                json!({"dropped": "status_downgrade", "event_id": event.event_id, "message_id": event.message_id, "status": event.status, "after": downgrade, "at": position})
            );
        } else {
            seen.set(&event.event_id, ());
            // The team's own processing goes here; then the line that says it is done.
            println!(
                "{}",
                json!({"event_id": event.event_id, "field": event.field, "item_kind": event.kind,
                       "message_id": event.message_id, "status": event.status, "at": position})
            );
        }
        if let Some(span) = &mut span {
            span.end();
        }
        // Processed (or dropped on purpose): its offset may be committed.
        consumer
            .commit_message(&message, CommitMode::Async)
            .context("committing")?;
    }
    // What was processed stays committed for the group's next run.
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        eprintln!("{}", json!({"warning": format!("final commit: {error}")}));
    }
    if let Some(provider) = provider {
        // Exports the last spans before exiting.
        if let Err(error) = provider.shutdown() {
            eprintln!(
                "{}",
                json!({"warning": format!("exporting traces: {error}")})
            );
        }
    }
    Ok(())
}

/// The status a message already reached when `event` would take it back, else `None`
/// (and the new status is remembered).
fn downgrade(statuses: &mut Bounded<u8>, event: &Event) -> Option<&'static str> {
    if event.kind.as_deref().is_some_and(|kind| kind != "status") {
        return None;
    }
    let (Some(id), Some(rank)) = (&event.message_id, event.status.as_deref().and_then(rank)) else {
        return None;
    };
    match statuses.get(id) {
        Some(&known) if known >= rank => Some(STATUSES[usize::from(known)]),
        _ => {
            statuses.set(id, rank);
            None
        }
    }
}

/// The statuses by rank.
const STATUSES: [&str; 5] = ["", "sent", "delivered", "read", "failed"];
