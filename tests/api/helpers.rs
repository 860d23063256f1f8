//! Test helpers: a gateway on 127.0.0.1:0, real HTTP requests signed like Meta's, and a
//! consumer that reads back what reached the broker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use waba_gateway::app::{App, Dependencies};
use waba_gateway::config::Settings;
use waba_gateway::publish::Publisher;
use waba_gateway::publish::memory::MemoryPublisher;

pub const SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";

/// A running gateway.
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub memory: Option<Arc<MemoryPublisher>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings for tests: loopback listeners on free ports, one app `default` at `/webhook`
/// with [`SECRET`] and [`VERIFY_TOKEN`], `ack = "kafka"`, then `extra` variables (which
/// win).
pub fn settings(brokers: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = [
        ("WABA_GATEWAY__SERVER__LISTEN", "127.0.0.1:0"),
        ("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:0"),
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
        ("WABA_GATEWAY__KAFKA__BROKERS", brokers),
        ("WABA_GATEWAY__DELIVERY__ACK", "kafka"),
        ("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", "0"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    Settings::load(None, env.drain(..)).expect("test settings are valid")
}

/// A gateway that publishes to memory.
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let memory = Arc::new(MemoryPublisher::new());
    let mut app = spawn_with(
        settings("memory:0", extra),
        Some(memory.clone() as Arc<dyn Publisher>),
    )
    .await;
    app.memory = Some(memory);
    app
}

/// A gateway that publishes with the real producer to librdkafka's mock cluster at
/// `brokers`. The mock has no CreateTopics (it times out) and creates topics on first use,
/// so topic creation is off here; the end-to-end suite covers it on a real broker.
pub async fn spawn_kafka_app(brokers: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("WABA_GATEWAY__KAFKA__CREATE_TOPICS", "false")];
    env.extend_from_slice(extra);
    spawn_with(settings(brokers, &env), None).await
}

pub async fn spawn_with(settings: Settings, publisher: Option<Arc<dyn Publisher>>) -> TestApp {
    let app = App::build(settings, Dependencies { publisher })
        .await
        .expect("the app builds");
    let (addr, admin_addr) = (app.public_addr(), app.admin_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        admin_addr,
        memory: None,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// POSTs `body` to `/webhook`, signed with [`SECRET`].
    pub async fn notify(&self, body: &[u8]) -> Answer {
        post_signed(&self.url("/webhook"), body, SECRET).await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&self.admin_url("/readyz")).await.status != 200 {
            assert!(Instant::now() < deadline, "the gateway never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one metric line, e.g. `waba_gateway_changes_total{app="default",field="messages"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        series_value(&get(&self.admin_url("/metrics")).await.text(), series)
    }

    /// Triggers shutdown and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task
            .take()
            .expect("stopped once")
            .await
            .expect("the app task")
    }

    /// Triggers shutdown without waiting.
    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task.take().expect("stopped once")
    }
}

/// The value of `series` (`name{label="value",…}`, labels in the order /metrics writes
/// them) in a /metrics `text`. A labelled series not counted yet is 0, but only when the
/// gateway declares a metric of that name with exactly those label names: a renamed
/// metric or label fails here instead of reading as 0.
pub fn series_value(text: &str, series: &str) -> f64 {
    if let Some(value) = text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    {
        return value.parse().expect("a metric value");
    }
    let (name, labels) = series.split_once('{').unwrap_or((series, ""));
    let mut label_names: Vec<String> = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(label, _)| label.trim().to_owned())
        })
        .collect();
    label_names.sort();
    assert!(
        !label_names.is_empty(),
        "{series} is not on /metrics, and a metric without labels is always there:\n{text}"
    );
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    let declared = waba_gateway::metrics::Metrics::new(Vec::new()).declared();
    let found = declared.iter().find(|(declared, _)| declared == family);
    let Some((_, declared_labels)) = found else {
        panic!("{series}: the gateway has no metric {family}");
    };
    let mut declared_labels = declared_labels.clone();
    if name.ends_with("_bucket") {
        declared_labels.push("le".to_owned());
    }
    declared_labels.sort();
    assert_eq!(
        label_names, declared_labels,
        "{series}: {family} has the labels {declared_labels:?}"
    );
    0.0
}

/// The one line of `log` that contains `needle`; fails, showing the log, when there is
/// none or more than one.
pub fn one_line<'a>(log: &'a str, needle: &str) -> &'a str {
    let lines: Vec<&str> = log.lines().filter(|line| line.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "lines containing {needle:?}:\n{log}");
    lines[0]
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    waba_gateway::signature::sign(secret.as_bytes(), body)
}

pub async fn get(url: &str) -> Answer {
    request(http::Method::GET, url, Bytes::new(), &[]).await
}

pub async fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> Answer {
    request(
        http::Method::POST,
        url,
        Bytes::copy_from_slice(body),
        headers,
    )
    .await
}

/// POSTs `body` to `url` with `X-Hub-Signature-256` computed with `secret`, as Meta does.
pub async fn post_signed(url: &str, body: &[u8], secret: &str) -> Answer {
    post(url, body, &[("x-hub-signature-256", &sign(secret, body))]).await
}

pub async fn request(
    method: http::Method,
    url: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> Answer {
    try_request(method, url, body, headers)
        .await
        .expect("the gateway answers")
}

/// A signed POST to `url` whose answer may never come (the gateway being killed): the
/// status, or `None` when the connection failed.
pub async fn try_notify(url: &str, body: &[u8]) -> Option<u16> {
    let signature = sign(SECRET, body);
    try_post(url, body, &[("x-hub-signature-256", &signature)])
        .await
        .map(|answer| answer.status)
}

/// A POST whose answer may never come: the answer, or `None` when the connection failed.
pub async fn try_post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> Option<Answer> {
    try_request(
        http::Method::POST,
        url,
        Bytes::copy_from_slice(body),
        headers,
    )
    .await
}

async fn try_request(
    method: http::Method,
    url: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> Option<Answer> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client
        .request(builder.body(Full::new(body)).expect("a valid request"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// The project's own fixture `name`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Meta's payloads beside the repository, when the folder is there.
pub fn shared_fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/meta-payloads");
    assert!(
        dir.is_dir(),
        "{} is missing: the tests that read Meta's payloads need ../shared beside the repository",
        dir.display()
    );
    dir
}

/// A record read back from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub value: Vec<u8>,
}

impl Consumed {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("the record is JSON")
    }

    pub fn event_id(&self) -> &str {
        &self.headers["wa-event-id"]
    }

    /// The id of the change's first message (`messages`) or status (`statuses`).
    pub fn item_id(&self, list: &str) -> String {
        self.json()["value"][list][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("the record has no value.{list}[0].id"))
            .to_owned()
    }
}

/// The exact bytes of an envelope's `value` member, as the record carries them.
pub fn envelope_value_bytes(envelope: &[u8]) -> &[u8] {
    let members: BTreeMap<&str, &serde_json::value::RawValue> =
        serde_json::from_slice(envelope).expect("an envelope is a JSON object");
    members
        .get("value")
        .expect("an envelope value")
        .get()
        .as_bytes()
}

/// Reads `topics` from the beginning until `count` records arrived (or 20 s passed), then
/// a little longer to catch any extra record. Uses its own consumer, not the gateway's code.
pub fn consume(brokers: &str, topics: &[&str], count: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "waba-gateway-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        for partition in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Beginning)
                .expect("assignable");
        }
    }
    consumer.assign(&assignment).expect("assigned");
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline && settle.is_none_or(|at| Instant::now() < at) {
        if records.len() >= count && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(500));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("a record");
        let headers = message
            .headers()
            .map(|list| {
                list.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Consumed {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            value: message.payload().unwrap_or_default().to_vec(),
        });
    }
    records
}

/// The `waba-gateway` binary with the caller's environment cleared of gateway settings:
/// `$WABA_GATEWAY_BINARY` when set (tests/run.sh points it at the release build, the one
/// that ships), else the test profile's build.
pub fn binary() -> std::process::Command {
    without_settings(std::process::Command::new(binary_path()))
}

/// The path of the `waba-gateway` binary the tests run (see [`binary`]).
pub fn binary_path() -> std::ffi::OsString {
    std::env::var_os("WABA_GATEWAY_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_waba-gateway").into())
}

/// `command` with the caller's gateway settings and log filter removed.
pub fn without_settings(mut command: std::process::Command) -> std::process::Command {
    command
        .env_remove("WABA_GATEWAY_CONFIG")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("WABA_GATEWAY__") {
            command.env_remove(key);
        }
    }
    command
}

/// `waba-gateway serve` as a child process on loopback ports of its choosing.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub public: String,
    pub admin: String,
    /// Every line the process has logged so far.
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Starts `serve` in `dir` with `env`, and waits until it logs its addresses.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = binary();
        command.arg("serve");
        Self::spawn(command, dir, env)
    }

    /// Starts `command` (a `serve`) as [`GatewayProcess::start`] does.
    pub fn spawn(mut command: std::process::Command, dir: &Path, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = command
            .current_dir(dir)
            .env("WABA_GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
            .env("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
            .env("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", "0")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("serve starts");
        let mut log = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut public, mut admin) = (None, None);
        let mut line = String::new();
        while public.is_none() || admin.is_none() {
            line.clear();
            if log.read_line(&mut line).expect("log") == 0 {
                panic!("serve exited before listening: {:?}", child.wait());
            }
            lines.lock().expect("log lines").push(line.clone());
            // `public=…` in text logs, `"public":"…"` in JSON ones.
            let json = serde_json::from_str::<serde_json::Value>(&line).ok();
            let field = |name: &str| {
                json.as_ref()
                    .and_then(|json| json[name].as_str().map(str::to_owned))
                    .or_else(|| {
                        line.split_whitespace()
                            .find_map(|word| word.strip_prefix(&format!("{name}=")))
                            .map(str::to_owned)
                    })
            };
            public = public.or(field("public"));
            admin = admin.or(field("admin"));
        }
        // Keep reading the log so the child never blocks on a full pipe.
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in log.lines().map_while(Result::ok) {
                kept.lock().expect("log lines").push(line);
            }
        });
        Self {
            child,
            public: public.expect("public address"),
            admin: admin.expect("admin address"),
            log: lines,
        }
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lines").join("\n")
    }

    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.public)
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("http://{}/readyz", self.admin)).await.status != 200 {
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One metric's value, as in [`TestApp::metric`].
    pub async fn metric(&self, series: &str) -> f64 {
        series_value(
            &get(&format!("http://{}/metrics", self.admin)).await.text(),
            series,
        )
    }

    /// Sends `signal` (`KILL`, `TERM`) and waits for the exit.
    pub fn signal(mut self, signal: &str) -> std::process::ExitStatus {
        self.signal_and_wait(signal)
    }

    /// Sends `signal` without waiting for anything.
    pub fn send_signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Sends `signal` and waits for the exit, keeping the process (and its log) at hand.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        self.send_signal(signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIG{signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    /// A test that fails half-way still leaves no gateway running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An answer read off a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// Whether the server said it closes the connection after this answer.
    pub fn closes(&self) -> bool {
        self.head.contains("\r\nconnection: close\r\n")
    }
}

/// The head of a POST of `body` to `/webhook` with `signature`, keeping the connection.
pub fn post_head(body: &[u8], signature: &str) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nx-hub-signature-256: {signature}\r\n\r\n",
        body.len()
    )
}

/// Writes a signed POST of `body` on `stream` and reads its answer; an error when the
/// connection fails or closes before a whole answer arrived.
pub async fn raw_exchange(
    stream: &mut tokio::net::TcpStream,
    body: &[u8],
) -> std::io::Result<RawAnswer> {
    use tokio::io::AsyncWriteExt;
    let mut request = post_head(body, &sign(SECRET, body)).into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    read_answer(stream).await
}

/// Reads one answer (head, then a `content-length` body) from `stream`.
pub async fn read_answer(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<RawAnswer> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let status = head
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = received[end..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Ok(RawAnswer { status, head, body })
}

/// A connection to `addr` from the loopback address `source` (127.0.0.2, 127.0.0.3…: a
/// client source of its own for allowlist tests).
pub async fn connect_from(
    source: std::net::Ipv4Addr,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// Writes `letters` (body, `wa-error` reason) to partition 0 of `whatsapp.deadletter` the
/// way an earlier gateway wrote them: the raw body as value, `wa-app`, `wa-error` and
/// `wa-received-at`.
pub fn write_dead_letters(brokers: &str, letters: &[(&[u8], &str)]) {
    write_dead_letters_with(brokers, letters, &[]);
}

/// [`write_dead_letters`], each letter with the `extra` headers too.
pub fn write_dead_letters_with(brokers: &str, letters: &[(&[u8], &str)], extra: &[(&str, &str)]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a producer");
    for (body, reason) in letters {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "wa-app",
                value: Some("default"),
            })
            .insert(Header {
                key: "wa-error",
                value: Some(*reason),
            })
            .insert(Header {
                key: "wa-received-at",
                value: Some("2026-11-20T10:00:00.000Z"),
            });
        let headers = extra.iter().fold(headers, |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(*value),
            })
        });
        producer
            .send(
                BaseRecord::<(), [u8]>::to("whatsapp.deadletter")
                    .partition(0)
                    .payload(*body)
                    .headers(headers),
            )
            .map_err(|(error, _)| error)
            .expect("enqueued");
    }
    producer
        .flush(std::time::Duration::from_secs(10))
        .expect("written");
}

#[test]
fn a_metric_that_is_not_there_reads_as_zero_only_when_the_gateway_declares_it() {
    let text = "waba_gateway_ready 1\n\
                waba_gateway_http_requests_total{route=\"healthz\",status=\"200\"} 3\n";
    assert_eq!(series_value(text, "waba_gateway_ready"), 1.0);
    assert_eq!(
        series_value(
            text,
            r#"waba_gateway_http_requests_total{route="healthz",status="200"}"#
        ),
        3.0
    );
    // Declared, labelled, not counted yet.
    assert_eq!(
        series_value(
            text,
            r#"waba_gateway_http_requests_total{route="webhook_notify",status="503"}"#
        ),
        0.0
    );
    for wrong in [
        r#"waba_gateway_http_request_total{route="healthz",status="200"}"#,
        r#"waba_gateway_http_requests_total{route="healthz",code="200"}"#,
        "waba_gateway_not_ready",
        // Without labels a metric is always rendered: missing means it is not there.
        "waba_gateway_kafka_delivery_seconds_count",
    ] {
        let read = std::panic::catch_unwind(|| series_value(text, wrong));
        assert!(read.is_err(), "{wrong} read as {read:?}");
    }
}
