//! The handlers without a socket: a `Request` in, a `Response` out, on a paused clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::{Gateway, Listener};
use crate::config::Settings;
use crate::delivery::{Delivery, Purpose};
use crate::metrics::Metrics;
use crate::publish::memory::{Behaviour, MemoryPublisher};
use crate::shutdown::Readiness;

const SECRET: &str = "handler-test-secret";
const BODY: &[u8] = include_bytes!("../../tests/fixtures/messages_text.json");

/// The settings of a gateway with `extra` settings (`delivery.ack`, …).
fn settings(extra: &[(&str, &str)]) -> Settings {
    let env = [
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "token"),
        ("WABA_GATEWAY__KAFKA__BROKERS", "127.0.0.1:1"),
    ];
    let extra = extra.iter().map(|(key, value)| {
        (
            format!("WABA_GATEWAY__{}", key.replace('.', "__").to_uppercase()),
            (*value).to_owned(),
        )
    });
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain(extra);
    Settings::load(None, env).expect("valid settings")
}

struct Handler {
    gateway: Gateway,
    memory: Arc<MemoryPublisher>,
    metrics: Arc<Metrics>,
    delivery: Delivery,
}

/// A gateway with `extra` settings, built as `serve` builds it, over a memory publisher.
fn handler(extra: &[(&str, &str)]) -> Handler {
    let settings = settings(extra);
    let metrics = Arc::new(Metrics::new(settings.routing().known_topics()));
    let memory = Arc::new(MemoryPublisher::new());
    let delivery = Delivery::new(
        &settings,
        Purpose::Serve,
        metrics.clone(),
        Some(memory.clone()),
    )
    .expect("delivery");
    let readiness = Arc::new(Readiness::new());
    readiness.kafka_reached();
    let gateway = Gateway::new(&settings, &delivery, metrics.clone(), readiness);
    Handler {
        gateway,
        memory,
        metrics,
        delivery,
    }
}

fn kafka_mode(timeout_ms: &str) -> Handler {
    handler(&[
        ("delivery.ack", "kafka"),
        ("delivery.kafka_ack_timeout_ms", timeout_ms),
    ])
}

impl Handler {
    /// POSTs `body` signed with the app's secret; the status and the body of the answer.
    async fn notify(&self, body: &'static [u8]) -> (StatusCode, String) {
        let request = Request::post("/webhook")
            .header(
                crate::signature::HEADER,
                crate::signature::sign(SECRET.as_bytes(), body),
            )
            .body(Full::new(Bytes::from_static(body)))
            .expect("a request");
        let response = self.gateway.handle(Listener::Public, request).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body");
        (
            status,
            String::from_utf8_lossy(&bytes.to_bytes()).into_owned(),
        )
    }

    /// With the publisher behaving as `behaviour`, a notification is answered 503 exactly
    /// `ms` milliseconds after it came.
    async fn answers_503_after(&self, behaviour: Behaviour, ms: u64) {
        self.memory.set_behaviour(behaviour);
        let started = tokio::time::Instant::now();
        let (status, _) = self.notify(BODY).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(started.elapsed(), Duration::from_millis(ms));
    }

    fn metric(&self, line: &str) -> bool {
        String::from_utf8(self.metrics.render())
            .expect("utf-8")
            .lines()
            .any(|rendered| rendered == line)
    }
}

#[tokio::test(start_paused = true)]
async fn kafka_mode_answers_503_exactly_when_the_ack_timeout_passes() {
    let handler = kafka_mode("300");
    handler.answers_503_after(Behaviour::Hang, 300).await;
    assert!(
        handler
            .metric(r#"waba_gateway_http_requests_total{route="webhook_notify",status="503"} 1"#)
    );
    assert!(!handler.metric(r#"waba_gateway_changes_total{app="default",field="messages"} 1"#));
}

#[tokio::test(start_paused = true)]
async fn kafka_mode_answers_200_once_kafka_has_the_records_and_counts_them() {
    let handler = kafka_mode("5000");
    let (status, body) = handler.notify(BODY).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "accepted\n"));
    let records = handler.memory.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic, "whatsapp.messages");
    assert!(handler.metric(r#"waba_gateway_changes_total{app="default",field="messages"} 1"#));
}

fn none_mode(timeout_ms: &str) -> Handler {
    handler(&[
        ("delivery.ack", "none"),
        ("delivery.kafka_ack_timeout_ms", timeout_ms),
    ])
}

#[tokio::test(start_paused = true)]
async fn none_mode_answers_503_when_topics_are_not_created_within_the_timeout() {
    let handler = none_mode("300");
    handler
        .answers_503_after(Behaviour::StallTopicCreation, 300)
        .await;
}

#[tokio::test(start_paused = true)]
async fn none_mode_answers_200_although_kafka_has_not_acknowledged() {
    let handler = none_mode("5000");
    handler.memory.set_behaviour(Behaviour::Hold);
    let (status, _) = handler.notify(BODY).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        handler.memory.records().is_empty(),
        "nothing acknowledged yet"
    );
    handler.memory.set_behaviour(Behaviour::Accept);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(handler.memory.records().len(), 1);
}

#[tokio::test]
async fn spool_mode_answers_200_with_the_body_on_the_spool_byte_for_byte() {
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().join("spool");
    let handler = handler(&[
        ("delivery.ack", "spool"),
        ("delivery.spool_dir", spool_dir.to_str().expect("utf-8")),
    ]);
    let (status, _) = handler.notify(BODY).await;
    assert_eq!(status, StatusCode::OK);
    let spool = handler.delivery.spool().expect("a spool in spool mode");
    let entry = spool.read(0).expect("readable").expect("an entry");
    assert_eq!((&*entry.app, &entry.body[..]), ("default", BODY));
    assert!(
        handler.memory.records().is_empty(),
        "the forwarder publishes, not the handler"
    );
}

#[tokio::test]
async fn a_forged_body_reaches_no_intake() {
    let handler = kafka_mode("5000");
    let request = Request::post("/webhook")
        .header(
            crate::signature::HEADER,
            crate::signature::sign(b"other", BODY),
        )
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("a request");
    let response = handler.gateway.handle(Listener::Public, request).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(handler.memory.records().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_full_producer_queue_is_503_once_queue_wait_passes_not_the_ack_timeout() {
    let handler = kafka_mode("5000");
    handler.memory.set_behaviour(Behaviour::QueueFull);
    let started = tokio::time::Instant::now();
    let (status, body) = handler.notify(BODY).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("queue is full"), "{body}");
    let waited = started.elapsed();
    assert!(
        waited >= crate::publish::QUEUE_WAIT
            && waited < crate::publish::QUEUE_WAIT + Duration::from_millis(10),
        "{waited:?}"
    );
}

/// A body whose first bytes come, then nothing more.
struct Stalled(bool);

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if std::mem::replace(&mut self.0, true) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
                &BODY[..10],
            )))))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_408_exactly_at_the_request_timeout() {
    let handler = handler(&[
        ("delivery.ack", "kafka"),
        ("delivery.kafka_ack_timeout_ms", "200"),
        ("server.request_timeout_ms", "400"),
    ]);
    let request = Request::post("/webhook")
        .header(
            crate::signature::HEADER,
            crate::signature::sign(SECRET.as_bytes(), BODY),
        )
        .header(http::header::CONTENT_LENGTH, BODY.len())
        .body(Stalled(false))
        .expect("a request");
    let started = tokio::time::Instant::now();
    let response = handler.gateway.handle(Listener::Public, request).await;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    assert!(handler.memory.records().is_empty());
}

/// Whose `traceparent` is continued (SECURITY.md "Traces"), seen in the records: each
/// carries its PRODUCER span, in the trace of the request's span.
#[tokio::test]
async fn an_incoming_traceparent_is_continued_only_without_an_allowlist_or_from_a_trusted_proxy() {
    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tracing = [
        // Exports fail (nothing listens there) and are counted; the spans are made.
        ("telemetry.endpoint", "http://127.0.0.1:9"),
        ("delivery.ack", "kafka"),
    ];
    let allowlist = [
        ("server.allowed_source_cidrs", "10.0.0.0/8"),
        ("server.trusted_proxies", "192.0.2.1/32"),
    ];
    let cases = [
        ("no allowlist", None, true),
        ("an allowed client", Some("10.1.2.3"), false),
        ("a trusted proxy", Some("192.0.2.1"), true),
    ];
    for (who, peer, continued) in cases {
        let mut extra = tracing.to_vec();
        if peer.is_some() {
            extra.extend(allowlist);
        }
        let handler = handler(&extra);
        let mut request = Request::post("/webhook")
            .header(
                crate::signature::HEADER,
                crate::signature::sign(SECRET.as_bytes(), BODY),
            )
            .header("traceparent", INCOMING)
            .header("x-forwarded-for", "10.9.9.9");
        if let Some(peer) = peer {
            let peer: std::net::IpAddr = peer.parse().expect("an address");
            request = request.extension(super::Peer(peer));
        }
        let request = request
            .body(Full::new(Bytes::from_static(BODY)))
            .expect("a request");
        let response = handler.gateway.handle(Listener::Public, request).await;
        assert_eq!(response.status(), StatusCode::OK, "{who}");
        let records = handler.memory.records();
        assert_eq!(records.len(), 1, "{who}");
        let carried = records[0].header("traceparent").expect("a traceparent");
        let trace = &carried[3..35];
        assert_eq!(
            trace == "4bf92f3577b34da6a3ce929d0e0e4736",
            continued,
            "{who}: {carried}"
        );
        assert_ne!(&carried[36..52], "00f067aa0ba902b7", "{who}: its own span");
    }
    // Tracing off: no header at all.
    let handler = handler(&[("delivery.ack", "kafka")]);
    assert_eq!(handler.notify(BODY).await.0, StatusCode::OK);
    assert_eq!(handler.memory.records()[0].header("traceparent"), None);
}
