//! The batch exporter: ended spans wait in a bounded queue; one task posts them to the
//! collector in batches (`max_export_batch_size`, or every `schedule_delay_ms`), one
//! export at a time, each within `timeout_ms`. A full queue drops the span at once and
//! counts it: nothing on a request's path ever waits for the collector.
//!
//! The queue is a vector behind a mutex rather than a channel: adding a span never wakes
//! the export task (a wake-up per span would cost a context switch per span); the task
//! wakes on its schedule, or once when a whole batch is waiting.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::IntCounter;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{AttrValue, SpanData, otlp};
use crate::config::TraceExporter;
use crate::metrics::Metrics;
use crate::telemetry::Throttle;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Ended spans waiting for export.
struct Queue {
    spans: Mutex<Vec<SpanData>>,
    /// Woken once a batch is waiting.
    batch_ready: Notify,
    max: usize,
    batch: usize,
}

impl Queue {
    /// Takes every span waiting.
    fn take(&self) -> Vec<SpanData> {
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *spans, Vec::with_capacity(self.batch))
    }
}

/// The handle the tracer pushes ended spans to.
pub(super) struct Exporter {
    queue: std::sync::Arc<Queue>,
    queue_full: IntCounter,
    /// Asks the task to export what it holds and stop; answered when done.
    stop: Mutex<Option<mpsc::Sender<oneshot::Sender<()>>>>,
}

impl Exporter {
    /// Starts the export task on the current runtime; `None` (and a warning) outside one.
    pub(super) fn start(config: TraceExporter, metrics: &Metrics) -> Option<Self> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to export traces on; tracing is off");
            return None;
        };
        let queue = std::sync::Arc::new(Queue {
            spans: Mutex::new(Vec::with_capacity(config.max_batch)),
            batch_ready: Notify::new(),
            max: config.max_queue_size,
            batch: config.max_batch,
        });
        let (stop, stops) = mpsc::channel(1);
        let task = Task {
            client: client(),
            resource: config
                .resource
                .iter()
                .map(|(key, value)| (key.clone(), AttrValue::from(value.clone())))
                .chain([
                    (
                        "service.version".to_owned(),
                        env!("CARGO_PKG_VERSION").into(),
                    ),
                    ("telemetry.sdk.name".to_owned(), otlp::SCOPE.into()),
                    ("telemetry.sdk.language".to_owned(), "rust".into()),
                ])
                .collect(),
            exported: metrics.trace_spans_exported.clone(),
            failed: metrics
                .trace_spans_dropped
                .with_label_values(&["export_failed"]),
            failures: Throttle::new(Duration::from_secs(60)),
            config,
        };
        tracing::info!(endpoint = %shown(&task.config.url), "exporting traces over OTLP/HTTP");
        runtime.spawn(task.run(queue.clone(), stops));
        Some(Self {
            queue,
            queue_full: metrics
                .trace_spans_dropped
                .with_label_values(&["queue_full"]),
            stop: Mutex::new(Some(stop)),
        })
    }

    /// Queues an ended span, or drops and counts it when the queue is full.
    pub(super) fn push(&self, span: SpanData) {
        let waiting = {
            let mut spans = self
                .queue
                .spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if spans.len() >= self.queue.max {
                drop(spans);
                self.queue_full.inc();
                return;
            }
            spans.push(span);
            spans.len()
        };
        if waiting == self.queue.batch {
            self.queue.batch_ready.notify_one();
        }
    }

    /// Exports what is queued, waiting `timeout` at most.
    pub(super) async fn shutdown(&self, timeout: Duration) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(stop) = stop else { return };
        let (done, finished) = oneshot::channel();
        if stop.send(done).await.is_ok() {
            let _ = tokio::time::timeout(timeout, finished).await;
        }
    }
}

/// The endpoint as logs show it: scheme, host, port and path, never a `user:password@`.
fn shown(url: &http::Uri) -> String {
    let port = url
        .port_u16()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    format!(
        "{}://{}{port}{}",
        url.scheme_str().unwrap_or("http"),
        url.host().unwrap_or_default(),
        url.path()
    )
}

fn client() -> Client<Https, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

struct Task {
    config: TraceExporter,
    client: Client<Https, Full<Bytes>>,
    resource: Vec<(String, AttrValue)>,
    exported: IntCounter,
    failed: IntCounter,
    failures: Throttle,
}

impl Task {
    async fn run(
        self,
        queue: std::sync::Arc<Queue>,
        mut stops: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(self.config.delay) => None,
                () = queue.batch_ready.notified() => None,
                done = stops.recv() => Some(done),
            };
            let spans = queue.take();
            for batch in spans.chunks(self.config.max_batch) {
                self.export(batch).await;
            }
            if let Some(done) = stopping {
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// Posts `batch`, counting its spans as exported or dropped.
    async fn export(&self, batch: &[SpanData]) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let body = otlp::encode(&self.resource, batch);
        let mut request = http::Request::post(self.config.url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid URL and headers");
        for (name, value) in &self.config.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let sent = tokio::time::timeout(self.config.timeout, self.client.request(request)).await;
        let failure = match sent {
            Ok(Ok(response)) if response.status().is_success() => {
                // Read to the end, so that the connection is kept for the next export.
                let _ = tokio::time::timeout(
                    self.config.timeout,
                    http_body_util::BodyExt::collect(response.into_body()),
                )
                .await;
                self.exported.inc_by(count);
                return;
            }
            Ok(Ok(response)) => format!("the collector answered {}", response.status()),
            Ok(Err(error)) => format!("cannot reach the collector: {error}"),
            Err(_) => format!(
                "the collector did not answer within {} ms",
                self.config.timeout.as_millis()
            ),
        };
        self.failed.inc_by(count);
        if let Some(held_back) = self.failures.admit() {
            tracing::warn!(endpoint = %shown(&self.config.url), spans = count, held_back, "could not export traces: {failure}; they are dropped (waba_gateway_trace_spans_dropped_total)");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoint_is_logged_without_its_credentials() {
        let url: http::Uri = "https://user:secret@otel.example:4318/v1/traces"
            .parse()
            .expect("a URL");
        assert_eq!(super::shown(&url), "https://otel.example:4318/v1/traces");
        let url: http::Uri = "http://collector/v1/traces".parse().expect("a URL");
        assert_eq!(super::shown(&url), "http://collector/v1/traces");
    }
}
