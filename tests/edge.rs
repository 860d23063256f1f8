//! The internet edge under attack, measured from outside (SECURITY.md, "Bounded whatever
//! clients send"): the gateway binary with the default configuration in a memory control
//! group of 512 MiB (the chart's limit), on tansu, with hostile clients on loopback and a
//! signed notification every 100 ms beside them. Each run prints one line of figures (peak
//! RSS, the signed POSTs' statuses and p99, recovery) before its assertions, so the same
//! suite measures any build: `WABA_GATEWAY_BINARY=… cargo test --test edge -- --nocapture`.
//!
//! Needs root (a cgroup v1 memory controller) and `$WABA_GATEWAY_TANSU` (tests/run.sh
//! installs it): without them each test says SKIPPED, and fails under `CI=true`.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "support/tansu.rs"]
mod tansu;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use helpers::*;
use tansu::Tansu;

/// The chart's memory limit.
const CGROUP_LIMIT: u64 = 512 * 1024 * 1024;
/// What the default configuration stays under, whatever clients send.
const RSS_CEILING: u64 = 256_000_000;
/// How long each attack is held.
const ATTACK: Duration = Duration::from_secs(10);

/// One run at a time: they measure one process's memory and share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A memory control group (cgroup v1) with the chart's limit, removed when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn create(name: &str) -> std::io::Result<Self> {
        let path = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/waba-gateway-edge-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir(&path)?;
        let cgroup = Self(path);
        std::fs::write(
            cgroup.0.join("memory.limit_in_bytes"),
            CGROUP_LIMIT.to_string(),
        )?;
        Ok(cgroup)
    }

    fn procs(&self) -> PathBuf {
        self.0.join("cgroup.procs")
    }

    /// Processes of the group the kernel killed for memory.
    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.0.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The broker and a control group for `name`. Where this machine cannot make them, the
/// tests are ignored (build.rs), except under `CI=true`, where they fail here.
fn prerequisites(name: &str) -> (Tansu, Cgroup) {
    let cgroup = Cgroup::create(name).unwrap_or_else(|error| {
        panic!("no memory cgroup could be made under /sys/fs/cgroup/memory ({error}); run as root")
    });
    (Tansu::start(), cgroup)
}

/// `serve` inside `cgroup` from its first instruction, with the default configuration but
/// for Kafka, the app and the spool folder.
fn start_gateway(
    dir: &Path,
    brokers: &str,
    cgroup: &Cgroup,
    extra: &[(&str, &str)],
) -> GatewayProcess {
    let spool = dir.join("spool");
    let mut env = vec![
        ("WABA_GATEWAY__KAFKA__BROKERS", brokers),
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
        (
            "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
            spool.to_str().expect("utf-8"),
        ),
    ];
    env.extend_from_slice(extra);
    let mut command = without_settings(std::process::Command::new("sh"));
    command
        .args(["-c", r#"echo $$ > "$0" && exec "$@""#])
        .arg(cgroup.procs())
        .arg(binary_path())
        .arg("serve");
    GatewayProcess::spawn(command, dir, &env)
}

/// The largest resident set of `pid` seen: sampled every 50 ms, and the kernel's own
/// high-water mark while the process lives.
struct PeakRss {
    pid: u32,
    sampled: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn watch(pid: u32) -> Self {
        let sampled = Arc::new(AtomicU64::new(0));
        let peak = sampled.clone();
        let sampler = tokio::spawn(async move {
            while let Some(rss) = status_bytes(pid, "VmRSS:") {
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self {
            pid,
            sampled,
            sampler,
        }
    }

    fn bytes(&self) -> u64 {
        let high_water = status_bytes(self.pid, "VmHWM:").unwrap_or(0);
        high_water.max(self.sampled.load(Ordering::Relaxed))
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// A `… kB` line of `/proc/{pid}/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix(field))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// What the hostile clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// 140 connections, each sending `Content-Length: 4194304`, a well-formed but wrong
    /// signature and all but the last byte of the body, then holding.
    Bodies,
    /// 1,400 connections, each sending about 395 KB of request head that never ends.
    Heads,
    /// Both at once.
    Both,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Self::Bodies => "bodies that never finish",
            Self::Heads => "heads that never finish",
            Self::Both => "both at once",
        }
    }

    /// Starts the hostile clients; they stop when `stop` turns true.
    fn start(
        self,
        addr: std::net::SocketAddr,
        stop: &Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (bodies, heads) = match self {
            Self::Bodies => (140, 0),
            Self::Heads => (0, 1400),
            Self::Both => (140, 1400),
        };
        let mut clients = Vec::new();
        for _ in 0..bodies {
            clients.push(tokio::spawn(hostile_client(
                addr,
                stop.clone(),
                forged_body_prefix(),
            )));
        }
        let head = Bytes::from(endless_head());
        for _ in 0..heads {
            clients.push(tokio::spawn(hostile_client(
                addr,
                stop.clone(),
                head.clone(),
            )));
        }
        clients
    }
}

/// A forged POST of 4 MiB: its head and all but the last byte of its body.
fn forged_body_prefix() -> Bytes {
    static PREFIX: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let length = 4 * 1024 * 1024;
            let forged = format!("sha256={}", "0".repeat(64));
            let mut bytes = format!(
                "POST /webhook HTTP/1.1\r\nhost: gateway\r\ncontent-length: {length}\r\nx-hub-signature-256: {forged}\r\n\r\n"
            )
            .into_bytes();
            bytes.resize(bytes.len() + length - 1, b'x');
            Bytes::from(bytes)
        })
        .clone()
}

/// About 395 KB of a request head that never ends.
fn endless_head() -> Vec<u8> {
    let mut head = b"POST /webhook HTTP/1.1\r\nhost: gateway\r\n".to_vec();
    let mut n = 0;
    while head.len() < 395_000 {
        head.extend_from_slice(format!("x-pad-{n}: {}\r\n", "a".repeat(1000)).as_bytes());
        n += 1;
    }
    head
}

/// Sends `bytes` on a connection and holds it open; when the gateway closes it, opens
/// another a second later; until `stop`.
async fn hostile_client(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, bytes: Bytes) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            // The gateway refuses or closes at some point: the write fails, and the
            // connection is held until it is closed.
            let _ = stream.write_all(&bytes).await;
            let mut sink = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink));
                if let Ok(Ok(0) | Err(_)) = read.await {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The answer to one signed POST.
#[derive(Debug, Clone, Copy)]
struct Posted {
    /// The status, or `None` when the connection failed or no answer came within 15 s.
    status: Option<u16>,
    retry_after: bool,
    took: Duration,
}

/// A signed notification whose status has the id `wamid`, POSTed to `url`.
async fn post_notification(url: &str, wamid: &str) -> Posted {
    let template = String::from_utf8(fixture("messages_status_read.json")).expect("utf-8");
    let body = template.replace("wamid.GWout0001AAA=", wamid);
    let signature = sign(SECRET, body.as_bytes());
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        try_post(url, body.as_bytes(), &[("x-hub-signature-256", &signature)]),
    )
    .await
    .ok()
    .flatten();
    Posted {
        status: answer.as_ref().map(|answer| answer.status),
        retry_after: answer.is_some_and(|answer| answer.headers.contains_key("retry-after")),
        took: started.elapsed(),
    }
}

/// The figures of one run.
struct Figures {
    name: String,
    peak_rss: u64,
    killed: bool,
    /// `200`, `503`, …, `failed`: how many signed POSTs got each.
    statuses: BTreeMap<String, usize>,
    /// 503s without `Retry-After`.
    bare_503s: usize,
    p99: Duration,
    /// From the attack's end to the first 200.
    recovered_in: Option<Duration>,
}

impl Figures {
    /// Prints the figures, then asserts that the gateway lived and stayed under the
    /// ceiling.
    fn print_and_check_memory(&self) {
        self.print();
        assert!(!self.killed, "the gateway was killed");
        assert!(
            self.peak_rss < RSS_CEILING,
            "peak RSS {} ≥ {RSS_CEILING}",
            self.peak_rss
        );
    }

    fn print(&self) {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{count} × {status}"))
            .collect();
        eprintln!(
            "edge: {}: peak RSS {:.1} MB; signed POSTs: {}; p99 {} ms; first 200 after the attack: {}; killed: {}",
            self.name,
            self.peak_rss as f64 / 1e6,
            statuses.join(", "),
            self.p99.as_millis(),
            self.recovered_in.map_or_else(
                || "never".to_owned(),
                |took| format!("{} ms", took.as_millis())
            ),
            if self.killed { "yes" } else { "no" },
        );
    }
}

fn p99(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took.get((took.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// Reads `topic` until a record of every id in `wanted` has arrived (an id found by `id_of`
/// in the record's value), or 60 s pass; returns the ids found.
fn read_ids(
    brokers: &str,
    topic: &str,
    wanted: &BTreeSet<String>,
    id_of: impl Fn(&serde_json::Value) -> Option<String>,
) -> BTreeSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "waba-gateway-edge")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    let mut found = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !wanted.is_subset(&found) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("a record");
        let envelope: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON");
        found.extend(id_of(&envelope));
    }
    found
}

/// One attack held for 10 s beside a signed POST every 100 ms, then signed POSTs until one
/// gets 200; every 200 is then looked for in Kafka.
async fn run_attack(attack: Attack) {
    let _serial = SERIAL.lock().await;
    let tag = format!("{attack:?}").to_ascii_lowercase();
    let (broker, cgroup) = prerequisites(&tag);
    let dir = tempfile::tempdir().expect("dir");
    let mut gateway = start_gateway(dir.path(), &broker.address, &cgroup, &[]);
    gateway.wait_ready().await;
    let peak = PeakRss::watch(gateway.child.id());
    let url = gateway.url();
    let addr = gateway.public.parse().expect("an address");

    let stop = Arc::new(AtomicBool::new(false));
    let hostile = attack.start(addr, &stop);
    let mut posts = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < ATTACK {
        let (url, wamid) = (url.clone(), format!("wamid.EDGE-{tag}-{n:04}"));
        posts.push((
            wamid.clone(),
            tokio::spawn(async move { post_notification(&url, &wamid).await }),
        ));
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in &hostile {
        client.abort();
    }
    let ended = Instant::now();
    let mut recovered_in = None;
    let mut after = Vec::new();
    while ended.elapsed() < Duration::from_secs(5) {
        let wamid = format!("wamid.EDGE-{tag}-after-{n:04}");
        n += 1;
        let posted = post_notification(&url, &wamid).await;
        if posted.status == Some(200) {
            recovered_in.get_or_insert(ended.elapsed());
            after.push(wamid);
            if after.len() == 5 {
                break;
            }
        } else {
            assert!(
                recovered_in.is_none(),
                "a signed POST after recovery got {posted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut statuses = BTreeMap::new();
    let mut took = Vec::new();
    let mut accepted: BTreeSet<String> = after.into_iter().collect();
    let mut bare_503s = 0;
    for (wamid, post) in posts {
        let posted = post.await.expect("a POST task");
        let status = posted
            .status
            .map_or_else(|| "failed".to_owned(), |status| status.to_string());
        *statuses.entry(status).or_default() += 1;
        took.push(posted.took);
        match posted.status {
            Some(200) => {
                accepted.insert(wamid);
            }
            Some(503) if !posted.retry_after => bare_503s += 1,
            _ => {}
        }
    }
    let figures = Figures {
        name: attack.name().to_owned(),
        peak_rss: peak.bytes(),
        killed: gateway.child.try_wait().expect("wait").is_some() || cgroup.oom_kills() > 0,
        statuses,
        bare_503s,
        p99: p99(took),
        recovered_in,
    };
    figures.print_and_check_memory();
    let unexpected: Vec<_> = figures
        .statuses
        .keys()
        .filter(|status| !["200", "503"].contains(&status.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "signed POSTs got {unexpected:?}");
    assert_eq!(figures.bare_503s, 0, "a 503 without Retry-After");
    let recovered = figures.recovered_in.expect("signed POSTs got 200 again");
    assert!(
        recovered <= Duration::from_secs(1),
        "first 200 after {recovered:?}"
    );

    let brokers = broker.address.clone();
    let wanted = accepted.clone();
    let found = tokio::task::spawn_blocking(move || {
        read_ids(&brokers, "whatsapp.messages", &wanted, |envelope| {
            envelope["value"]["statuses"][0]["id"]
                .as_str()
                .map(str::to_owned)
        })
    })
    .await
    .expect("read back");
    let missing: Vec<_> = accepted.difference(&found).collect();
    assert!(
        missing.is_empty(),
        "answered 200 but not in Kafka: {missing:?}"
    );
    drop(peak);
    assert_eq!(gateway.signal_and_wait("TERM").code(), Some(0));
}

#[cfg_attr(
    any(missing_tansu, missing_memory_cgroup),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and root with memory cgroups (/sys/fs/cgroup/memory)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_finish_neither_kill_the_gateway_nor_lock_meta_out() {
    run_attack(Attack::Bodies).await;
}

#[cfg_attr(
    any(missing_tansu, missing_memory_cgroup),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and root with memory cgroups (/sys/fs/cgroup/memory)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_that_never_finish_neither_kill_the_gateway_nor_lock_meta_out() {
    run_attack(Attack::Heads).await;
}

#[cfg_attr(
    any(missing_tansu, missing_memory_cgroup),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and root with memory cgroups (/sys/fs/cgroup/memory)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_bodies_and_heads_together_neither_kill_the_gateway_nor_lock_meta_out() {
    run_attack(Attack::Both).await;
}

/// A signed notification of 1,000 changes, about 3 MB, whose entry id is `entry`.
fn three_megabytes(entry: &str) -> Vec<u8> {
    let body: serde_json::Value =
        serde_json::from_slice(&fixture("messages_text.json")).expect("JSON");
    let change = &body["entry"][0]["changes"][0];
    let changes: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            let mut change = change.clone();
            change["value"]["messages"][0]["id"] = format!("wamid.BIG{i:06}").into();
            change["value"]["messages"][0]["text"]["body"] =
                format!("Bestellung {i} ").repeat(190).into();
            change
        })
        .collect();
    let body = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": entry, "time": 1_763_770_001, "changes": changes}],
    });
    serde_json::to_vec(&body).expect("JSON")
}

/// A signed POST of `body` whose answer is read while the body is still being written (as
/// curl does): a 503 for a body refused part-way is read, not lost to a broken pipe. The
/// status, or `None` when no answer came.
async fn post_reading_early_answers(addr: std::net::SocketAddr, body: Vec<u8>) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut reading, mut writing) = stream.into_split();
    let mut request = post_head(&body, &sign(SECRET, &body)).into_bytes();
    request.extend_from_slice(&body);
    let writer = tokio::spawn(async move {
        let _ = writing.write_all(&request).await;
        // Held open until the answer is read.
        writing
    });
    let answer = read_answer(&mut reading).await.ok();
    writer.abort();
    answer.map(|answer| answer.status)
}

/// 50 connections posting signed 3 MB bodies, two each, at once.
async fn run_three_megabyte_bodies(ack: &str) {
    let _serial = SERIAL.lock().await;
    let (broker, cgroup) = prerequisites(&format!("3mb-{ack}"));
    let dir = tempfile::tempdir().expect("dir");
    let mut gateway = start_gateway(
        dir.path(),
        &broker.address,
        &cgroup,
        &[("WABA_GATEWAY__DELIVERY__ACK", ack)],
    );
    gateway.wait_ready().await;
    let peak = PeakRss::watch(gateway.child.id());
    let addr: std::net::SocketAddr = gateway.public.parse().expect("an address");
    // Every body is made first, so that the 50 clients send at once.
    let bodies = tokio::task::spawn_blocking(|| {
        (0..50)
            .map(|client| {
                (0..2)
                    .map(|n| {
                        let entry = format!("big-{client:02}-{n}");
                        let body = three_megabytes(&entry);
                        (entry, body)
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("bodies");
    let clients: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for (entry, body) in bodies {
                    let started = Instant::now();
                    let status = post_reading_early_answers(addr, body).await;
                    answers.push((entry, status, started.elapsed()));
                }
                answers
            })
        })
        .collect();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut accepted = BTreeSet::new();
    let mut took = Vec::new();
    for client in clients {
        for (entry, status, elapsed) in client.await.expect("a client") {
            let label = status.map_or_else(|| "failed".to_owned(), |status| status.to_string());
            *statuses.entry(label).or_default() += 1;
            took.push(elapsed);
            if status == Some(200) {
                accepted.insert(entry);
            }
        }
    }
    let figures = Figures {
        name: format!("50 connections of 3 MB bodies, ack = {ack}"),
        peak_rss: peak.bytes(),
        killed: gateway.child.try_wait().expect("wait").is_some() || cgroup.oom_kills() > 0,
        statuses,
        bare_503s: 0,
        p99: p99(took),
        recovered_in: None,
    };
    figures.print_and_check_memory();
    assert!(!accepted.is_empty(), "no 3 MB body was accepted");

    // Every change of every accepted body: 1,000 records per entry id.
    let brokers = broker.address.clone();
    let wanted: BTreeSet<String> = accepted
        .iter()
        .flat_map(|entry| (0..1000).map(move |i| format!("{entry}/wamid.BIG{i:06}")))
        .collect();
    let expected = wanted.clone();
    let found = tokio::task::spawn_blocking(move || {
        read_ids(&brokers, "whatsapp.messages", &expected, |envelope| {
            let entry = envelope["entry_id"].as_str()?;
            let wamid = envelope["value"]["messages"][0]["id"].as_str()?;
            Some(format!("{entry}/{wamid}"))
        })
    })
    .await
    .expect("read back");
    let missing = wanted.difference(&found).count();
    assert_eq!(missing, 0, "records of bodies answered 200 not in Kafka");
    drop(peak);
    assert_eq!(gateway.signal_and_wait("TERM").code(), Some(0));
}

#[cfg_attr(
    any(missing_tansu, missing_memory_cgroup),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and root with memory cgroups (/sys/fs/cgroup/memory)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_connections_of_3_mb_bodies_stay_within_the_budget_in_spool_mode() {
    run_three_megabyte_bodies("spool").await;
}

#[cfg_attr(
    any(missing_tansu, missing_memory_cgroup),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and root with memory cgroups (/sys/fs/cgroup/memory)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_connections_of_3_mb_bodies_stay_within_the_budget_in_kafka_mode() {
    run_three_megabyte_bodies("kafka").await;
}
