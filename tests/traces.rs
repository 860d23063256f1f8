//! Traces (DESIGN §7b) against a real OTLP/HTTP receiver: `tests/tools/otlp-receiver.py`
//! decodes every export with the OpenTelemetry project's own protobuf classes
//! (`opentelemetry-proto`), and the gateway runs as a process on tansu, with the consumer
//! kit (Rust and Python, each with the OpenTelemetry SDK) reading its records.
//!
//! What is checked is what an operator sees in a trace view: one trace per notification,
//! from the request's SERVER span through its children to one PRODUCER span per record
//! and the kit consumer's CONSUMER span under it; the attributes; a 401 with no record
//! under it; the log lines that carry the trace; and that a collector that is down or
//! hangs changes no answer.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "support/kit.rs"]
mod kit;
#[path = "support/tansu.rs"]
mod tansu;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use helpers::*;
use kit::*;
use tansu::*;

/// The receiver: a child process, stopped when dropped.
struct Receiver {
    child: Child,
    endpoint: String,
    spans: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Self {
        let python = std::env::var("WABA_GATEWAY_PYTHON").expect(
            "WABA_GATEWAY_PYTHON is not set (tests/run.sh installs the kit's Python with \
             opentelemetry-proto and sets it)",
        );
        let dir = tempfile::tempdir().expect("dir");
        let (port_file, spans) = (dir.path().join("port"), dir.path().join("spans.jsonl"));
        let child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/tools/otlp-receiver.py"
            ))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--out")
            .arg(&spans)
            .args(["--lifetime", "300"])
            .stdout(Stdio::null())
            .spawn()
            .expect("the receiver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                break port;
            }
            assert!(Instant::now() < deadline, "the receiver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{}", port.trim()),
            spans,
            _dir: dir,
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    /// The spans once `enough` says they are all there (20 s at most).
    async fn spans_when(&self, what: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if enough(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not received in 20 s; got {} spans",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kind<'a>(spans: &'a [Value], kind: &str) -> Vec<&'a Value> {
    spans.iter().filter(|span| span["kind"] == kind).collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// The fixtures a run sends: every notification body of `tests/fixtures`.
fn fixture_bodies() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut bodies: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .filter(|path| path.file_name().is_some_and(|name| name != "expected.json"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    bodies.sort();
    bodies
}

/// An incoming trace, as a load balancer that traces would send it.
const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_SPAN: &str = "00f067aa0ba902b7";

fn gateway_env<'a>(
    brokers: &'a str,
    ack: &'a str,
    split: &'a str,
    spool_dir: &'a str,
    endpoint: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("WABA_GATEWAY__KAFKA__BROKERS", brokers),
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
        ("WABA_GATEWAY__DELIVERY__ACK", ack),
        ("WABA_GATEWAY__DELIVERY__SPOOL_DIR", spool_dir),
        ("WABA_GATEWAY__ROUTING__SPLIT", split),
        ("WABA_GATEWAY__LOG__FORMAT", "json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "waba-gateway-under-test"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

/// Runs a kit consumer (`program` and its first arguments) with traces to `endpoint`
/// over `topics` until idle; returns how many events it printed or dropped.
fn run_consumer(
    program: &[String],
    brokers: &str,
    group: &str,
    topics: &BTreeSet<String>,
    endpoint: &str,
) -> usize {
    let mut command = Command::new(&program[0]);
    command
        .args(&program[1..])
        .args(["--bootstrap-servers", brokers, "--group", group])
        .args(["--exit-after-idle", "4"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", group)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    for topic in topics {
        command.args(["--topic", topic]);
    }
    let output = command.output().expect("the consumer runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{program:?}: {stderr}");
    let count = |text: &str| {
        text.lines()
            .filter(|line| line.contains("\"event_id\""))
            .count()
    };
    count(&String::from_utf8_lossy(&output.stdout)) + count(&stderr)
}

/// One run over the fixtures in `ack` mode and `split` mode: the chain from each request
/// to its records to the kit consumers' spans.
async fn one_trace_per_notification(ack: &str, split: &str) {
    let receiver = Receiver::start();
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let env = gateway_env(
        &broker.address,
        ack,
        split,
        spool.to_str().expect("utf-8"),
        &receiver.endpoint,
    );
    let gateway = GatewayProcess::start(dir.path(), &env);
    gateway.wait_ready().await;

    let bodies = fixture_bodies();
    for (name, body) in &bodies {
        let answer = post(
            &gateway.url(),
            body,
            &[("x-hub-signature-256", &sign(SECRET, body))],
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
    }
    // A hop that traces: continued, as no allowlist is set.
    let body = fixture("messages_text.json");
    let incoming = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01");
    let answer = post(
        &gateway.url(),
        &body,
        &[
            ("x-hub-signature-256", &sign(SECRET, &body)),
            ("traceparent", &incoming),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    // A forgery: a span, and nothing under it.
    let forged = post(
        &gateway.url(),
        &body,
        &[("x-hub-signature-256", &sign("not-the-secret", &body))],
    )
    .await;
    assert_eq!(forged.status, 401);
    let accepted = bodies.len() + 1;

    // Every record in Kafka (spool mode: once the forwarder has it), then its span.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ack == "spool" && gateway.metric("waba_gateway_spool_entries").await > 0.0 {
        assert!(Instant::now() < deadline, "the spool did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = get(&format!("http://{}/metrics", gateway.admin))
        .await
        .text();
    let records: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("waba_gateway_kafka_records_total{") && line.contains("outcome=\"ok\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let records = records as usize;
    assert!(
        records >= accepted,
        "{records} records of {accepted} notifications"
    );
    let spans = receiver
        .spans_when("the gateway's spans", |spans| {
            kind(spans, "PRODUCER").len() >= records && kind(spans, "SERVER").len() > accepted
        })
        .await;

    // The resource and the scope.
    let server = kind(&spans, "SERVER");
    for span in &spans {
        assert_eq!(span["resource"]["service.name"], "waba-gateway-under-test");
        assert_eq!(span["resource"]["deployment.environment.name"], "test");
        assert_eq!(span["scope"], "waba-gateway");
    }
    // The requests: HTTP semantic conventions.
    let ok: Vec<&&Value> = server
        .iter()
        .filter(|span| attr(span, "http.response.status_code") == 200)
        .collect();
    assert_eq!(ok.len(), accepted, "one SERVER span per accepted request");
    for span in &ok {
        assert_eq!(span["name"], "POST /webhook");
        assert_eq!(attr(span, "http.request.method"), "POST");
        assert_eq!(attr(span, "http.route"), "/webhook");
        assert_eq!(attr(span, "server.address"), "127.0.0.1");
        assert_eq!(span["status"]["code"], 0, "a 200 is no error");
    }
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|span| (span["span_id"].as_str().expect("id"), span))
        .collect();
    // Each request's children: the signature check and, in spool mode, the append.
    for span in &ok {
        let children: BTreeSet<&str> = spans
            .iter()
            .filter(|child| {
                child["parent_span_id"] == span["span_id"] && child["kind"] == "INTERNAL"
            })
            .map(|child| child["name"].as_str().expect("name"))
            .collect();
        let mut expected = BTreeSet::from(["verify signature"]);
        if ack == "spool" {
            expected.insert("spool append");
        }
        assert_eq!(children, expected);
    }
    // Each record: a PRODUCER span under the request that brought it, in its trace.
    let producers = kind(&spans, "PRODUCER");
    assert_eq!(producers.len(), records, "one PRODUCER span per record");
    let mut topics = BTreeSet::new();
    for span in &producers {
        let parent = by_id[span["parent_span_id"].as_str().expect("a parent")];
        assert_eq!(parent["kind"], "SERVER", "{span}");
        assert_eq!(attr(parent, "http.response.status_code"), 200);
        assert_eq!(parent["trace_id"], span["trace_id"]);
        assert_eq!(attr(span, "messaging.system"), "kafka");
        assert_eq!(attr(span, "messaging.operation.type"), "publish");
        let topic = attr(span, "messaging.destination.name")
            .as_str()
            .expect("topic");
        assert_eq!(span["name"], format!("publish {topic}"));
        if topic != "whatsapp.deadletter" {
            assert!(
                attr(span, "messaging.message.id")
                    .as_str()
                    .is_some_and(|id| id.len() == 32),
                "{span}"
            );
            assert!(
                attr(span, "messaging.kafka.message.key").is_string(),
                "{span}"
            );
        }
        topics.insert(topic.to_owned());
    }
    // The incoming trace is continued.
    let continued = ok
        .iter()
        .find(|span| span["trace_id"] == INCOMING_TRACE)
        .expect("a SERVER span in the incoming trace");
    assert_eq!(continued["parent_span_id"], INCOMING_SPAN);
    assert!(
        producers
            .iter()
            .any(|span| span["parent_span_id"] == continued["span_id"])
    );
    // The 401: an error span, a failed signature check under it, and no record.
    let refused = server
        .iter()
        .find(|span| attr(span, "http.response.status_code") == 401)
        .expect("the 401's span");
    assert_eq!(refused["status"]["code"], 2, "ERROR");
    assert_eq!(attr(refused, "error.type"), "401");
    assert!(
        !producers
            .iter()
            .any(|span| span["trace_id"] == refused["trace_id"])
    );
    let check = spans
        .iter()
        .find(|span| span["parent_span_id"] == refused["span_id"])
        .expect("the signature check");
    assert_eq!(
        (check["name"].as_str(), &check["status"]["code"]),
        (Some("verify signature"), &Value::from(2))
    );
    // Its log line carries its trace.
    let log = gateway.log();
    let line = one_line(&log, "notification refused");
    let line: Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(line["trace_id"], refused["trace_id"]);
    assert_eq!(line["span_id"], refused["span_id"]);

    // The kit: each consumer's span is a child of the record's PRODUCER span.
    for (name, program) in kit_consumers() {
        let group = format!("traced-{name}");
        let (address, endpoint, topics) = (
            broker.address.clone(),
            receiver.endpoint.clone(),
            topics.clone(),
        );
        let group_name = group.clone();
        let consumed = tokio::task::spawn_blocking(move || {
            run_consumer(&program, &address, &group_name, &topics, &endpoint)
        })
        .await
        .expect("ran");
        assert!(
            consumed >= records,
            "{name}: {consumed} events of {records} records"
        );
        let spans = receiver
            .spans_when(&format!("{name}'s spans"), |spans| {
                spans
                    .iter()
                    .filter(|span| span["resource"]["service.name"] == group)
                    .count()
                    >= records
            })
            .await;
        let consumers: Vec<&Value> = spans
            .iter()
            .filter(|span| span["resource"]["service.name"] == group)
            .collect();
        let producers: BTreeMap<&str, &Value> = kind(&spans, "PRODUCER")
            .into_iter()
            .map(|span| (span["span_id"].as_str().expect("id"), span))
            .collect();
        let mut covered = BTreeSet::new();
        for span in &consumers {
            assert_eq!(span["kind"], "CONSUMER", "{name}: {span}");
            let parent = producers
                .get(span["parent_span_id"].as_str().expect("parent"))
                .unwrap_or_else(|| panic!("{name}: the parent of {span} is no PRODUCER span"));
            assert_eq!(parent["trace_id"], span["trace_id"]);
            assert_eq!(
                span["name"],
                format!(
                    "process {}",
                    attr(parent, "messaging.destination.name")
                        .as_str()
                        .expect("topic")
                )
            );
            assert_eq!(
                attr(span, "messaging.message.id"),
                attr(parent, "messaging.message.id")
            );
            covered.insert(parent["span_id"].as_str().expect("id"));
        }
        assert_eq!(
            covered.len(),
            records,
            "{name}: every record's span has the consumer's under it"
        );
    }
    assert_eq!(gateway.signal("TERM").code(), Some(0));
}

#[cfg_attr(
    any(missing_tansu, missing_consumer, missing_python_kit),
    ignore = "needs tansu (WABA_GATEWAY_TANSU), the kit's consumers and its Python with opentelemetry-proto (WABA_GATEWAY_CONSUMER, WABA_GATEWAY_PYTHON): tests/run.sh installs them"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kafka_mode_each_notification_is_one_trace_down_to_the_consumers() {
    one_trace_per_notification("kafka", "change").await;
}

#[cfg_attr(
    any(missing_tansu, missing_consumer, missing_python_kit),
    ignore = "needs tansu (WABA_GATEWAY_TANSU), the kit's consumers and its Python with opentelemetry-proto (WABA_GATEWAY_CONSUMER, WABA_GATEWAY_PYTHON): tests/run.sh installs them"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_spool_mode_the_forwarders_records_are_in_the_requests_trace() {
    one_trace_per_notification("spool", "change").await;
}

#[cfg_attr(
    any(missing_tansu, missing_consumer, missing_python_kit),
    ignore = "needs tansu (WABA_GATEWAY_TANSU), the kit's consumers and its Python with opentelemetry-proto (WABA_GATEWAY_CONSUMER, WABA_GATEWAY_PYTHON): tests/run.sh installs them"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_item_mode_each_item_record_has_its_producer_span() {
    one_trace_per_notification("kafka", "item").await;
}

/// A collector that accepts connections and never answers.
struct Hanging {
    address: String,
    _listener: std::thread::JoinHandle<()>,
}

impl Hanging {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: 60 connections at most, then the thread ends.
            for stream in listener.incoming().take(60).flatten() {
                held.push(stream);
            }
        });
        Self {
            address,
            _listener: thread,
        }
    }
}

#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hangs_changes_no_answer_and_what_is_dropped_is_counted() {
    let broker = Tansu::start();
    let hanging = Hanging::start();
    let down = format!("http://{}", free_address());
    let hangs = format!("http://{}", hanging.address);
    let body = fixture("multi_two_entries_three_fields_each.json");
    for (collector, endpoint) in [("down", &down), ("hanging", &hangs)] {
        let dir = tempfile::tempdir().expect("dir");
        let spool = dir.path().join("spool");
        let mut env = gateway_env(
            &broker.address,
            "kafka",
            "change",
            spool.to_str().expect("utf-8"),
            endpoint,
        );
        // A queue of 4 spans and exports that wait 30 s: a collector that hangs fills it.
        env.extend([
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
        ]);
        let gateway = GatewayProcess::start(dir.path(), &env);
        gateway.wait_ready().await;
        for _ in 0..10 {
            let started = Instant::now();
            let answer = post(
                &gateway.url(),
                &body,
                &[("x-hub-signature-256", &sign(SECRET, &body))],
            )
            .await;
            assert_eq!(answer.status, 200, "{collector}: {}", answer.text());
            // A hang guard far below the export timeout: no request waits on the collector.
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{collector}: {:?}",
                started.elapsed()
            );
        }
        let forged = post(
            &gateway.url(),
            &body,
            &[("x-hub-signature-256", &sign("wrong", &body))],
        )
        .await;
        assert_eq!(forged.status, 401, "{collector}");
        assert_eq!(
            gateway
                .metric(
                    r#"waba_gateway_kafka_records_total{outcome="ok",topic="whatsapp.messages"}"#
                )
                .await,
            20.0,
            "{collector}: every record in Kafka"
        );
        let reason = if collector == "down" {
            "export_failed"
        } else {
            "queue_full"
        };
        let series = format!(r#"waba_gateway_trace_spans_dropped_total{{reason="{reason}"}}"#);
        let deadline = Instant::now() + Duration::from_secs(10);
        while gateway.metric(&series).await == 0.0 {
            assert!(
                Instant::now() < deadline,
                "{collector}: nothing counted in {series}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            gateway
                .metric("waba_gateway_trace_spans_exported_total")
                .await,
            0.0
        );
        if collector == "down" {
            assert!(
                gateway
                    .log()
                    .contains("could not export traces: cannot reach the collector"),
                "{}",
                gateway.log()
            );
        }
        // Shutdown waits for the collector no longer than its flush time.
        let stopping = Instant::now();
        assert_eq!(gateway.signal("TERM").code(), Some(0), "{collector}");
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "{collector}: {:?}",
            stopping.elapsed()
        );
    }
}

#[cfg_attr(
    any(missing_tansu, missing_python_kit),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and the kit's Python with opentelemetry-proto (WABA_GATEWAY_PYTHON): tests/run.sh installs them"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_notification_published_after_a_restart_stays_in_its_requests_trace() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let spool = spool.to_str().expect("utf-8");
    // Kafka is down: the notification is spooled, answered 200, and stays.
    let nowhere = free_address();
    let env = gateway_env(&nowhere, "spool", "change", spool, &receiver.endpoint);
    let first = GatewayProcess::start(dir.path(), &env);
    let body = fixture("messages_text.json");
    let answer = post(
        &first.url(),
        &body,
        &[("x-hub-signature-256", &sign(SECRET, &body))],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let request = receiver
        .spans_when("the request's span", |spans| {
            !kind(spans, "SERVER").is_empty()
        })
        .await;
    let request = kind(&request, "SERVER")[0].clone();
    // A crash: the entry is on disk, with its trace.
    first.signal("KILL");
    assert!(
        kind(&receiver.spans(), "PRODUCER").is_empty(),
        "nothing was published"
    );

    // Started again with Kafka: the forwarder publishes it, in the request's trace.
    let broker = Tansu::start();
    let env = gateway_env(
        &broker.address,
        "spool",
        "change",
        spool,
        &receiver.endpoint,
    );
    let second = GatewayProcess::start(dir.path(), &env);
    second.wait_ready().await;
    let spans = receiver
        .spans_when("the record's span", |spans| {
            !kind(spans, "PRODUCER").is_empty()
        })
        .await;
    let producer = kind(&spans, "PRODUCER")[0];
    assert_eq!(producer["trace_id"], request["trace_id"]);
    assert_eq!(producer["parent_span_id"], request["span_id"]);
    assert_eq!(
        attr(producer, "messaging.destination.name"),
        "whatsapp.messages"
    );
    // And the record in Kafka carries that span.
    let records = consume(&broker.address, &["whatsapp.messages"], 1);
    assert_eq!(
        records[0].headers.get("traceparent").map(String::as_str),
        Some(
            format!(
                "00-{}-{}-01",
                producer["trace_id"].as_str().expect("id"),
                producer["span_id"].as_str().expect("id")
            )
            .as_str()
        )
    );
    assert_eq!(second.signal("TERM").code(), Some(0));
}

#[cfg_attr(
    any(missing_tansu, missing_python_kit),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and the kit's Python with opentelemetry-proto (WABA_GATEWAY_PYTHON): tests/run.sh installs them"
)]
#[test]
fn a_replayed_record_keeps_its_trace_and_links_to_the_replay() {
    let receiver = Receiver::start();
    let broker = Tansu::start();
    // A dead letter written while tracing was on: its traceparent names its span.
    let original = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01");
    let body = fixture("messages_text.json");
    let created = binary()
        .args(["topics", "apply", "--brokers", &broker.address])
        .output()
        .expect("topics apply runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    write_dead_letters_with(
        &broker.address,
        &[(&body[..], "unknown_topic")],
        &[("traceparent", &original)],
    );
    let output = binary()
        .args(["replay", "--from", "deadletter", "--idle-seconds", "3"])
        .env("WABA_GATEWAY__KAFKA__BROKERS", &broker.address)
        .env("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET)
        .env("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .output()
        .expect("replay runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let waiting = receiver.spans_when("the replay's spans", |spans| {
        !kind(spans, "PRODUCER").is_empty() && spans.iter().any(|span| span["name"] == "replay")
    });
    let spans = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(waiting);
    let run = spans
        .iter()
        .find(|span| span["name"] == "replay")
        .expect("the run's span");
    let producer = kind(&spans, "PRODUCER")[0];
    assert_eq!(producer["trace_id"], INCOMING_TRACE, "the original trace");
    assert_eq!(producer["parent_span_id"], INCOMING_SPAN);
    assert_eq!(
        producer["links"],
        serde_json::json!([{"trace_id": run["trace_id"], "span_id": run["span_id"]}])
    );
    assert_ne!(run["trace_id"], INCOMING_TRACE);
    let records = consume(&broker.address, &["whatsapp.messages"], 1);
    let carried = records[0]
        .headers
        .get("traceparent")
        .expect("a traceparent");
    assert!(
        carried.starts_with(&format!("00-{INCOMING_TRACE}-")),
        "{carried}"
    );
    assert!(carried.contains(producer["span_id"].as_str().expect("id")));
}
