//! The deliverer: the one path from a body to Kafka (split, enqueue, wait, count, log a
//! dead letter), shared by the `kafka` and `none` intakes, the forwarder, `spool drain` and
//! `replay`.

use std::sync::Arc;
use std::time::SystemTime;

use crate::envelope::{self, Record, headers};
use crate::metrics::Metrics;
use crate::publish::{Publication, PublishError, Publisher, Sink};
use crate::routing::Routing;
use crate::trace::{Kind, Span, SpanContext, Text, Tracer};

/// Splits bodies and publishes their records. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    sink: Sink,
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    tracer: Tracer,
    /// A span every producer span links to (`replay`'s run).
    link: Option<SpanContext>,
    /// For each of the gateway's topics, its PRODUCER spans' name and the topic, made once.
    span_texts: Arc<std::collections::HashMap<String, SpanTexts>>,
}

/// A topic's PRODUCER span name (`publish <topic>`) and the topic, shared by its spans.
type SpanTexts = (Arc<str>, Arc<str>);

impl Deliverer {
    /// A deliverer producing to `publisher` as `routing` says, counting into `metrics`.
    pub(crate) fn new(
        publisher: Arc<dyn Publisher>,
        routing: Routing,
        metrics: Arc<Metrics>,
        tracer: Tracer,
    ) -> Self {
        let sink = Sink::new(publisher, metrics.clone(), routing.deadletter());
        let span_texts = routing
            .known_topics()
            .into_iter()
            .map(|topic| {
                let texts = (
                    Arc::from(format!("publish {topic}").as_str()),
                    Arc::from(topic.as_str()),
                );
                (topic, texts)
            })
            .collect();
        Self {
            sink,
            routing: Arc::new(routing),
            metrics,
            tracer,
            link: None,
            span_texts: Arc::new(span_texts),
        }
    }

    /// The same deliverer, whose producer spans link to `span`.
    pub fn linking_to(mut self, span: Option<SpanContext>) -> Self {
        self.link = span;
        self
    }

    /// The routing it splits by.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Whether Kafka is unreachable now (see [`Publisher::unreachable`]).
    pub fn kafka_unreachable(&self) -> bool {
        self.sink.unreachable().is_some()
    }

    /// Splits `body` and enqueues its records in order, without waiting for Kafka. Each
    /// record's PRODUCER span is a child of `trace` (the request's span), when tracing is
    /// on.
    pub async fn enqueue(
        &self,
        app: &Arc<str>,
        body: &[u8],
        received_at: SystemTime,
        trace: Option<&SpanContext>,
    ) -> Result<Pending, PublishError> {
        let split = envelope::to_records(&self.routing, app, body, received_at);
        self.enqueue_records(app, split.records, split.deadletter, trace)
            .await
    }

    /// Enqueues records made elsewhere (`replay` of a refused record), counted as one
    /// notification once Kafka has them; `trace` is the span their PRODUCER spans are
    /// children of (for a replay, the one in the dead letter's `traceparent`).
    pub async fn enqueue_records(
        &self,
        app: &Arc<str>,
        mut records: Vec<Record>,
        deadletter: Option<&'static str>,
        trace: Option<&SpanContext>,
    ) -> Result<Pending, PublishError> {
        let mut spans = self.producer_spans(&mut records, trace);
        let fields: Vec<&'static str> = records
            .iter()
            .filter(|record| record.counts_change)
            .map(|record| record.field)
            .collect();
        let publication = match self.sink.enqueue(app, records).await {
            Ok(publication) => publication.traced(spans),
            Err(error) => {
                for span in &mut spans {
                    span.fail(error.to_string());
                }
                return Err(error);
            }
        };
        Ok(Pending {
            publication,
            app: app.clone(),
            fields,
            deadletter,
            metrics: self.metrics.clone(),
        })
    }
}

impl Deliverer {
    /// A PRODUCER span per record, child of `trace`, whose context the record then
    /// carries (in place of a `traceparent` it had). None when tracing is off: the records
    /// are left as they are.
    fn producer_spans(&self, records: &mut [Record], trace: Option<&SpanContext>) -> Vec<Span> {
        if !self.tracer.enabled() {
            return Vec::new();
        }
        let mut spans = Vec::with_capacity(records.len());
        for record in records {
            let texts = self.span_texts.get(&record.topic);
            let name = texts.map_or_else(
                || Text::Owned(format!("publish {}", record.topic)),
                |(name, _)| Text::from(name),
            );
            let Some(mut span) = self.tracer.start(name, Kind::Producer, trace) else {
                return Vec::new();
            };
            if span.is_recording() {
                span.set("messaging.system", "kafka");
                span.set("messaging.operation.type", "publish");
                span.set("messaging.operation.name", "send");
                let topic = texts.map_or_else(
                    || Text::Owned(record.topic.clone()),
                    |(_, topic)| Text::from(topic),
                );
                span.set("messaging.destination.name", topic);
                if let Some(key) = &record.key {
                    span.set("messaging.kafka.message.key", key.clone());
                }
                if let Some(id) = record.header(headers::EVENT_ID) {
                    span.set("messaging.message.id", id.to_owned());
                }
                span.set("messaging.message.body.size", record.value.len() as i64);
                span.set("wa.field", record.field);
                if let Some(link) = &self.link {
                    span.link(link.clone());
                }
            }
            carry(record, span.context());
            spans.push(span);
        }
        spans
    }
}

/// Writes `span` into `record`'s `traceparent` (and `tracestate`) headers.
pub(crate) fn carry(record: &mut Record, span: &SpanContext) {
    record.set_header(headers::TRACEPARENT, span.traceparent());
    match &span.state {
        Some(state) => record.set_header(headers::TRACESTATE, state.to_string()),
        None => record
            .headers
            .retain(|(name, _)| *name != headers::TRACESTATE),
    }
}

/// One notification's records, enqueued and awaiting Kafka.
pub struct Pending {
    publication: Publication,
    app: Arc<str>,
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
