//! The batch exporter: ended spans wait in a bounded queue; one task posts them to the
//! collector in batches (`max_export_batch_size`, or every `schedule_delay_ms`), one
//! export at a time, each within `timeout_ms`. A full queue drops the span at once and
//! counts it: nothing on a request's path ever waits for the collector.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};

use super::{AttrValue, SpanData, otlp};
use crate::config::TraceExporter;
use crate::metrics::Metrics;
use crate::telemetry::Throttle;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The handle the tracer pushes ended spans to.
pub(super) struct Exporter {
    queue: mpsc::Sender<SpanData>,
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
        let (queue, spans) = mpsc::channel(config.max_queue_size);
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
        tracing::info!(endpoint = %task.config.url, "exporting traces over OTLP/HTTP");
        runtime.spawn(task.run(spans, stops));
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
        if self.queue.try_send(span).is_err() {
            self.queue_full.inc();
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
        mut spans: mpsc::Receiver<SpanData>,
        mut stops: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let max = self.config.max_batch;
        let mut batch: Vec<SpanData> = Vec::with_capacity(max);
        let mut due = tokio::time::Instant::now() + self.config.delay;
        loop {
            let room = max - batch.len();
            tokio::select! {
                received = spans.recv_many(&mut batch, room) => {
                    if received == 0 {
                        break;
                    }
                    if batch.len() < max {
                        continue;
                    }
                }
                () = tokio::time::sleep_until(due) => {}
                Some(done) = stops.recv() => {
                    spans.close();
                    loop {
                        let room = max - batch.len();
                        if spans.recv_many(&mut batch, room).await == 0 {
                            break;
                        }
                        if batch.len() >= max {
                            self.export(&mut batch).await;
                        }
                    }
                    self.export(&mut batch).await;
                    let _ = done.send(());
                    return;
                }
            }
            self.export(&mut batch).await;
            due = tokio::time::Instant::now() + self.config.delay;
        }
        self.export(&mut batch).await;
    }

    /// Posts `batch` (emptied), counting its spans as exported or dropped.
    async fn export(&self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let body = otlp::encode(&self.resource, batch);
        batch.clear();
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
            tracing::warn!(endpoint = %self.config.url, spans = count, held_back, "could not export traces: {failure}; they are dropped (waba_gateway_trace_spans_dropped_total)");
        }
    }
}
