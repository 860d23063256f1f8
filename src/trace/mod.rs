//! OpenTelemetry traces (DESIGN §7b): one trace per notification, from the request's
//! SERVER span through its children (signature, spool append) to a PRODUCER span per
//! record, whose context every record carries in its `traceparent` header.
//!
//! A small tracer of the gateway's own rather than the OpenTelemetry SDK: it makes exactly
//! the spans above, samples them as the standard `OTEL_TRACES_SAMPLER` says, and exports
//! them in batches over OTLP/HTTP (protobuf, [`otlp`]) through the HTTP client the gateway
//! already has, from a bounded queue whose overflow is dropped and counted
//! (`waba_gateway_trace_spans_dropped_total`): a collector that is slow or down never
//! holds a request. Off (no [`Tracer`] inner, no header, no cost) unless an endpoint is
//! configured.
//!
//! Spans are values: created by [`Tracer::start`], annotated, and exported when dropped.

mod context;
mod export;
mod otlp;
mod sampler;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use context::{SpanContext, TRACEPARENT, TRACESTATE};
pub use sampler::Sampler;

use crate::config::TelemetrySettings;
use crate::metrics::Metrics;

/// How long a command waits, before it exits, for its last spans to be exported.
pub const FLUSH: Duration = Duration::from_secs(5);

/// Room for the attributes of a span of each kind: as many as the gateway sets.
fn room(kind: Kind) -> usize {
    match kind {
        Kind::Server => 12,
        Kind::Producer => 8,
        Kind::Internal => 0,
    }
}

/// What a span stands for (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A step inside the gateway.
    Internal,
    /// An HTTP request the gateway answers.
    Server,
    /// A record sent to Kafka.
    Producer,
}

/// A span's name or an attribute's text, made without copying where it can be: a
/// constant, text shared with the settings (an app's path), or text of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// A constant.
    Static(&'static str),
    /// Shared with what made it.
    Shared(Arc<str>),
    /// Its own.
    Owned(String),
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Static(text) => text,
            Self::Shared(text) => text,
            Self::Owned(text) => text,
        }
    }
}

impl From<&'static str> for Text {
    fn from(text: &'static str) -> Self {
        Self::Static(text)
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Self::Owned(text)
    }
}

impl From<&Arc<str>> for Text {
    fn from(text: &Arc<str>) -> Self {
        Self::Shared(text.clone())
    }
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text.
    Text(Text),
    /// A whole number.
    Int(i64),
    /// A flag.
    Bool(bool),
}

impl From<&'static str> for AttrValue {
    fn from(text: &'static str) -> Self {
        Self::Text(Text::Static(text))
    }
}

impl From<String> for AttrValue {
    fn from(text: String) -> Self {
        Self::Text(Text::Owned(text))
    }
}

impl From<&Arc<str>> for AttrValue {
    fn from(text: &Arc<str>) -> Self {
        Self::Text(Text::Shared(text.clone()))
    }
}

impl From<Text> for AttrValue {
    fn from(text: Text) -> Self {
        Self::Text(text)
    }
}

impl From<i64> for AttrValue {
    fn from(number: i64) -> Self {
        Self::Int(number)
    }
}

/// A span's outcome, as OTLP's `Status`.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Nothing said: success for most spans.
    Unset,
    /// Failed, with why.
    Error(String),
}

/// An ended span, as exported.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// Its identity.
    pub context: SpanContext,
    /// Its parent's span id, when it has one.
    pub parent: Option<[u8; 8]>,
    /// Its name.
    pub name: Text,
    /// Its kind.
    pub kind: Kind,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_ns: u64,
    /// Its attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Spans of other traces it relates to.
    pub links: Vec<SpanContext>,
    /// Its outcome.
    pub status: Status,
}

/// Makes spans and hands ended ones to the exporter. Cheap to clone; the default is off.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    sampler: Sampler,
    exporter: export::Exporter,
}

impl Tracer {
    /// The tracer `settings` describe, exporting on the current tokio runtime; off when
    /// they configure no endpoint or say `disabled`. Counts into `metrics`.
    pub fn new(settings: &TelemetrySettings, metrics: &Metrics) -> Self {
        let Some(config) = settings.exporter() else {
            return Self::default();
        };
        match export::Exporter::start(config, metrics) {
            Some(exporter) => Self {
                inner: Some(Arc::new(Inner {
                    sampler: Sampler::named(&settings.sampler, settings.sampler_arg)
                        .unwrap_or(Sampler::ParentBased(sampler::Root::AlwaysOn)),
                    exporter,
                })),
            },
            None => Self::default(),
        }
    }

    /// Whether spans are made at all (an endpoint is configured).
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts a span named `name`, the child of `parent` or the root of a new trace. `None`
    /// when tracing is off.
    pub fn start(
        &self,
        name: impl Into<Text>,
        kind: Kind,
        parent: Option<&SpanContext>,
    ) -> Option<Span> {
        let inner = self.inner.as_ref()?;
        let mut context = match parent {
            Some(parent) => parent.child(),
            None => SpanContext {
                trace_id: context::new_trace_id(),
                span_id: context::new_span_id(),
                sampled: false,
                state: None,
            },
        };
        context.sampled = inner.sampler.samples(parent, &context.trace_id);
        let recording = context.sampled.then(|| {
            Box::new(Recording {
                tracer: inner.clone(),
                data: SpanData {
                    context: context.clone(),
                    parent: parent.map(|parent| parent.span_id),
                    name: name.into(),
                    kind,
                    start_ns: now_ns(),
                    end_ns: 0,
                    attributes: Vec::with_capacity(room(kind)),
                    links: Vec::new(),
                    status: Status::Unset,
                },
            })
        });
        Some(Span { context, recording })
    }

    /// Exports what is queued, waiting `timeout` at most: before a command exits.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Some(inner) = &self.inner {
            inner.exporter.shutdown(timeout).await;
        }
    }
}

/// A span being timed. Ends, and is exported when sampled, when dropped.
pub struct Span {
    context: SpanContext,
    recording: Option<Box<Recording>>,
}

struct Recording {
    tracer: Arc<Inner>,
    data: SpanData,
}

impl Span {
    /// Its identity: the parent of its children, and what a record's `traceparent` says.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    /// Whether it is sampled (attributes are kept): worth computing costly attributes.
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        if let Some(recording) = &mut self.recording {
            recording.data.attributes.push((key, value.into()));
        }
    }

    /// Links it to a span of another trace.
    pub fn link(&mut self, to: SpanContext) {
        if let Some(recording) = &mut self.recording {
            recording.data.links.push(to);
        }
    }

    /// Marks it failed, with `why`.
    pub fn fail(&mut self, why: impl Into<String>) {
        if let Some(recording) = &mut self.recording {
            recording.data.status = Status::Error(why.into());
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(recording) = self.recording.take() {
            let Recording { tracer, mut data } = *recording;
            data.end_ns = now_ns().max(data.start_ns);
            tracer.exporter.push(data);
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}
