//! `ack = "spool"`: 200 once on disk, nothing lost across kill -9, Kafka outages, a full
//! spool, or SIGTERM. The real producer runs against librdkafka's mock cluster, which
//! lives in the test process, so the gateway can be killed and restarted around it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use crate::helpers::*;

/// Bodies that differ only in their message id, `wamid.spool-<n>`.
fn body(n: usize) -> Vec<u8> {
    String::from_utf8(fixture("messages_text.json"))
        .expect("utf-8")
        .replace("wamid.GW1763770001AAA=", &format!("wamid.spool-{n:05}"))
        .into_bytes()
}

/// Every acknowledged id is in Kafka, and every copy of one id carries one event_id.
fn assert_all_in_kafka(brokers: &str, acknowledged: &BTreeSet<String>) -> usize {
    let records = consume(brokers, &["whatsapp.messages"], acknowledged.len());
    let mut event_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in &records {
        event_ids
            .entry(record.item_id("messages"))
            .or_default()
            .insert(record.event_id().to_owned());
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !event_ids.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "answered 200 but not in Kafka: {missing:?}"
    );
    for (id, ids) in &event_ids {
        assert_eq!(
            ids.len(),
            1,
            "{id} replayed with different event_ids: {ids:?}"
        );
    }
    records.len()
}

/// Sends distinct notifications from `senders` tasks until `stop` is set; returns the ids
/// answered 200.
fn load(
    url: String,
    senders: usize,
    stop: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<BTreeSet<String>> {
    tokio::spawn(async move {
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let tasks: Vec<_> = (0..senders)
            .map(|sender| {
                let (url, stop, acknowledged) = (url.clone(), stop.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    let mut n = sender * 100_000 / senders;
                    while !*stop.lock().expect("lock") {
                        n += 1;
                        if try_notify(&url, &body(n)).await == Some(200) {
                            acknowledged
                                .lock()
                                .expect("lock")
                                .insert(format!("wamid.spool-{n:05}"));
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("sender");
        }
        std::mem::take(&mut *acknowledged.lock().expect("lock"))
    })
}

/// Starts the gateway process and puts it under load from four senders.
async fn start_under_load(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (
    GatewayProcess,
    Arc<Mutex<bool>>,
    tokio::task::JoinHandle<BTreeSet<String>>,
) {
    let gateway = GatewayProcess::start(dir, env);
    gateway.wait_ready().await;
    let stop = Arc::new(Mutex::new(false));
    let sending = load(gateway.url(), 4, stop.clone());
    (gateway, stop, sending)
}

fn gateway_env<'a>(brokers: &'a str, spool_dir: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("WABA_GATEWAY__KAFKA__BROKERS", brokers),
        ("WABA_GATEWAY__KAFKA__CREATE_TOPICS", "false"),
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
        ("WABA_GATEWAY__DELIVERY__SPOOL_DIR", spool_dir),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_mid_stream_every_acknowledged_notification_reaches_kafka_once_identified() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().join("spool");
    let spool_dir = spool_dir.to_str().expect("utf-8");
    let env = gateway_env(&brokers, spool_dir);

    // Run 1: load; the broker goes away halfway, so the spool holds entries not yet in
    // Kafka when the process is killed.
    let (gateway, stop, sending) = start_under_load(dir.path(), &env).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.broker_down(1).expect("down");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let spooled = gateway.metric("waba_gateway_spool_entries").await;
    assert_eq!(gateway.signal("KILL").code(), None, "killed, not exited");
    *stop.lock().expect("lock") = true;
    let acknowledged = sending.await.expect("load");
    assert!(
        acknowledged.len() > 20,
        "only {} acknowledged",
        acknowledged.len()
    );
    assert!(
        spooled > 0.0,
        "nothing was waiting on the spool at the kill"
    );

    // Run 2: the broker is back; killed again while it replays.
    cluster.broker_up(1).expect("up");
    let gateway = GatewayProcess::start(dir.path(), &env);
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.signal("KILL");

    // Run 3: replays the rest, drains, and stops cleanly.
    let gateway = GatewayProcess::start(dir.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.metric("waba_gateway_spool_entries").await > 0.0 {
        assert!(Instant::now() < deadline, "the spool never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gateway.signal("TERM").code(), Some(0));

    let brokers_for_consume = brokers.clone();
    let acknowledged_for_consume = acknowledged.clone();
    let read = tokio::task::spawn_blocking(move || {
        assert_all_in_kafka(&brokers_for_consume, &acknowledged_for_consume)
    })
    .await
    .expect("consumed");
    eprintln!(
        "{} acknowledged, {spooled} on the spool at the kill, {read} records read back",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_kafka_outage_notifications_keep_getting_200_and_all_arrive_afterwards() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().to_str().expect("utf-8").to_owned();
    let app = spawn_kafka_app(
        &brokers,
        &[
            ("WABA_GATEWAY__DELIVERY__ACK", "spool"),
            ("WABA_GATEWAY__DELIVERY__SPOOL_DIR", &spool_dir),
        ],
    )
    .await;
    app.wait_ready().await;
    cluster.broker_down(1).expect("down");
    let mut acknowledged = BTreeSet::new();
    for n in 0..40 {
        let answer = app.notify(&body(n)).await;
        // Kafka is down throughout: a 200 is proof that nothing waited for it.
        assert_eq!(
            answer.status, 200,
            "outage: still 200 while the spool has room"
        );
        acknowledged.insert(format!("wamid.spool-{n:05}"));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        get(&app.admin_url("/readyz")).await.status,
        200,
        "stays ready"
    );
    assert_eq!(app.metric("waba_gateway_spool_entries").await, 40.0);
    assert!(
        app.metric("waba_gateway_spool_oldest_entry_age_seconds")
            .await
            >= 0.0
    );

    cluster.broker_up(1).expect("up");
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.metric("waba_gateway_spool_entries").await > 0.0 {
        assert!(Instant::now() < deadline, "the spool never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.metric(r#"waba_gateway_changes_total{app="default",field="messages"}"#)
            .await,
        40.0
    );
    tokio::task::spawn_blocking(move || assert_all_in_kafka(&brokers, &acknowledged))
        .await
        .expect("consumed");
    app.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_not_ready_then_recovers_when_kafka_returns() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().to_str().expect("utf-8").to_owned();
    let app = spawn_kafka_app(
        &brokers,
        &[
            ("WABA_GATEWAY__DELIVERY__ACK", "spool"),
            ("WABA_GATEWAY__DELIVERY__SPOOL_DIR", &spool_dir),
            ("WABA_GATEWAY__DELIVERY__SPOOL_MAX_BYTES", "65536"),
            ("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "8192"),
        ],
    )
    .await;
    app.wait_ready().await;
    cluster.broker_down(1).expect("down");
    let mut acknowledged = BTreeSet::new();
    let mut n = 0;
    let refused = loop {
        let answer = app.notify(&body(n)).await;
        if answer.status != 200 {
            break answer;
        }
        acknowledged.insert(format!("wamid.spool-{n:05}"));
        n += 1;
        assert!(n < 1000, "the spool never filled");
    };
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(
        refused.text().contains("spool is full"),
        "{}",
        refused.text()
    );
    let ready = get(&app.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("spool is full"));

    cluster.broker_up(1).expect("up");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&app.admin_url("/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.notify(&body(5000)).await.status,
        200,
        "taking notifications again"
    );
    acknowledged.insert("wamid.spool-05000".to_owned());
    tokio::task::spawn_blocking(move || assert_all_in_kafka(&brokers, &acknowledged))
        .await
        .expect("consumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_loses_nothing_acknowledged() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().join("spool");
    let spool_dir = spool_dir.to_str().expect("utf-8");
    let env = gateway_env(&brokers, spool_dir);
    let (gateway, stop, sending) = start_under_load(dir.path(), &env).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = tokio::task::spawn_blocking(move || gateway.signal("TERM"))
        .await
        .expect("signalled");
    *stop.lock().expect("lock") = true;
    let acknowledged = sending.await.expect("load");
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    assert!(
        acknowledged.len() > 10,
        "only {} acknowledged",
        acknowledged.len()
    );

    // Whatever was still spooled at exit is sent by the next start.
    let gateway = GatewayProcess::start(dir.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.metric("waba_gateway_spool_entries").await > 0.0 {
        assert!(Instant::now() < deadline, "the spool never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.signal("TERM");
    tokio::task::spawn_blocking(move || assert_all_in_kafka(&brokers, &acknowledged))
        .await
        .expect("consumed");
}

/// `serve` or `spool drain` on a directory another gateway holds is refused at once,
/// naming the holder; a holder killed with `kill -9` leaves nothing that blocks the next
/// start; `spool status` says who holds it without disturbing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_directory_serves_one_process_at_a_time() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let spool_dir = spool.to_str().expect("utf-8");
    let env = [
        ("WABA_GATEWAY__DELIVERY__ACK", "spool"),
        ("WABA_GATEWAY__DELIVERY__SPOOL_DIR", spool_dir),
    ];
    let first = GatewayProcess::start(dir.path(), &env);
    first.wait_ready().await;
    let pid = first.child.id().to_string();

    let started = Instant::now();
    let second = binary()
        .arg("serve")
        .current_dir(dir.path())
        .env("WABA_GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .envs(env)
        .output()
        .expect("runs");
    // It does not wait for the lock: it stops at once (bounded generously, as a slow
    // machine takes a while to start a process).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(spool_dir) && stderr.contains(&format!("process {pid}")),
        "{stderr}"
    );

    let drain = binary()
        .args([
            "spool",
            "drain",
            "--dir",
            spool_dir,
            "--brokers",
            "127.0.0.1:9",
        ])
        .output()
        .expect("runs");
    assert_eq!(drain.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&drain.stderr);
    assert!(stderr.contains(&format!("process {pid}")), "{stderr}");

    let status = binary()
        .args(["spool", "status", "--dir", spool_dir, "--json"])
        .output()
        .expect("runs");
    assert_eq!(status.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["held_by"].to_string(), pid);
    // The gateway it looked at is still serving.
    assert_eq!(
        first.metric("waba_gateway_spool_entries").await,
        0.0,
        "still answering"
    );

    assert!(!first.signal("KILL").success());
    let restarted = GatewayProcess::start(dir.path(), &env);
    restarted.wait_ready().await;
    assert_eq!(restarted.signal("TERM").code(), Some(0));
}

/// A small filesystem mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// A 3 MB tmpfs, where the test may mount one (root on Linux); `None` elsewhere.
    fn mount(under: &std::path::Path) -> Option<Self> {
        let path = under.join("disk");
        std::fs::create_dir_all(&path).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(&path)
            .output()
            .ok()?;
        mounted.status.success().then_some(Self { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// The spool on a disk that really fills while Kafka is stalled: 503 with Retry-After and
/// not ready while it cannot write, never a 200 for a body not on disk, nothing
/// acknowledged lost, and once Kafka has taken what the spool held the space comes back
/// (the segment being written included) and the gateway is ready and answers 200 again,
/// without a restart.
#[cfg_attr(missing_root, ignore = "needs root, to mount a tmpfs of 3 MB")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_then_reclaims_its_space_once_kafka_takes_the_spool() {
    let dir = tempfile::tempdir().expect("dir");
    let disk = SmallDisk::mount(dir.path()).expect("a tmpfs of 3 MB mounted (needs root)");
    let spool = disk.path.join("spool");
    let app = spawn_app(&[
        ("WABA_GATEWAY__DELIVERY__ACK", "spool"),
        (
            "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
            spool.to_str().expect("utf-8"),
        ),
    ])
    .await;
    app.wait_ready().await;
    let memory = app.memory.clone().expect("memory");
    memory.set_behaviour(waba_gateway::publish::memory::Behaviour::Unavailable);

    // 100 KB notifications until the disk refuses.
    let padding = "p".repeat(100 * 1024);
    let padded = |n: usize| {
        String::from_utf8(body(n))
            .expect("utf-8")
            .replacen(
                "\"messaging_product\"",
                &format!("\"padding\":\"{padding}\",\"messaging_product\""),
                1,
            )
            .into_bytes()
    };
    let mut acknowledged = BTreeSet::new();
    let mut refused = None;
    for n in 0..100 {
        let answer = app.notify(&padded(n)).await;
        match answer.status {
            200 => {
                acknowledged.insert(format!("wamid.spool-{n:05}"));
            }
            503 => {
                refused = Some(answer);
                break;
            }
            other => panic!("{other}: {}", answer.text()),
        }
    }
    let refused = refused.expect("the 3 MB disk filled up");
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(acknowledged.len() >= 10, "{}", acknowledged.len());
    assert_eq!(get(&app.admin_url("/readyz")).await.status, 503);
    assert_eq!(app.notify(&padded(1000)).await.status, 503, "still full");

    // Kafka comes back: everything acknowledged is forwarded, and the space returns.
    memory.set_behaviour(waba_gateway::publish::memory::Behaviour::Accept);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&app.admin_url("/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forwarded: BTreeSet<String> = memory
        .records()
        .iter()
        .filter(|record| record.topic == "whatsapp.messages")
        .map(|record| {
            let envelope: serde_json::Value =
                serde_json::from_slice(&record.value).expect("an envelope");
            envelope["value"]["messages"][0]["id"]
                .as_str()
                .expect("an id")
                .to_owned()
        })
        .collect();
    assert!(
        acknowledged.is_subset(&forwarded),
        "nothing acknowledged lost"
    );
    let on_disk: u64 = std::fs::read_dir(&spool)
        .expect("spool")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "seg"))
        .map(|entry| entry.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(on_disk < 200 * 1024, "{on_disk} bytes still on the disk");
    assert_eq!(
        app.notify(&padded(2000)).await.status,
        200,
        "answers 200 again"
    );
    eprintln!(
        "full disk: {} acknowledged before the first 503, all forwarded, {on_disk} bytes left",
        acknowledged.len()
    );
    app.stop().await.expect("a clean stop");
}

/// `spool drain` and `spool status` pointed at a folder that holds no spool (here the
/// spool's parent) refuse it, exit 1 and write nothing there: an "empty spool" would send
/// the operator to delete the volume that holds the real one.
#[test]
fn spool_commands_refuse_a_folder_that_holds_no_spool_and_write_nothing() {
    let parent = tempfile::tempdir().expect("dir");
    let spool = parent.path().join("spool");
    std::fs::create_dir(&spool).expect("spool dir");
    std::fs::write(spool.join("00000000000000000000.seg"), b"").expect("a segment");
    std::fs::write(parent.path().join("notes.txt"), b"kept").expect("a file");
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("readable")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    };
    let before = listing(parent.path());
    let wrong = parent.path().to_str().expect("utf-8");
    for args in [
        vec!["spool", "drain", "--dir", wrong, "--brokers", "127.0.0.1:9"],
        vec!["spool", "status", "--dir", wrong],
        vec!["spool", "status", "--dir", wrong, "--json"],
    ] {
        let output = binary().args(&args).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("no spool here"), "{args:?}: {stderr}");
        assert!(stderr.contains("delivery.spool_dir"), "{args:?}: {stderr}");
        assert!(
            output.stdout.is_empty(),
            "{args:?}: nothing reported as a spool"
        );
    }
    assert_eq!(
        listing(parent.path()),
        before,
        "nothing written to the folder"
    );
    // The spool itself is read.
    let status = binary()
        .args([
            "spool",
            "status",
            "--dir",
            spool.to_str().expect("utf-8"),
            "--json",
        ])
        .output()
        .expect("runs");
    assert_eq!(status.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["entries"], 0);
}

/// Ten entries on a spool, one of them damaged in the middle of its segment: `spool
/// status` counts the nine it can read and names the damaged range; `spool drain`
/// forwards the nine, names what it quarantined and exits 1, because the volume still
/// holds bytes that were not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_of_a_segment_is_named_and_drain_does_not_call_it_empty() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let spool_dir = spool.to_str().expect("utf-8");
    // Kafka goes down once the gateway is ready: every entry stays on the spool.
    let first = MockCluster::new(1).expect("mock cluster");
    let first_brokers = first.bootstrap_servers();
    let mut gateway = GatewayProcess::start(dir.path(), &gateway_env(&first_brokers, spool_dir));
    gateway.wait_ready().await;
    first.broker_down(1).expect("down");
    for n in 1..=10 {
        assert_eq!(try_notify(&gateway.url(), &body(n)).await, Some(200));
    }
    gateway.signal_and_wait("KILL");
    let segment = std::fs::read_dir(&spool)
        .expect("spool")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .expect("a segment");
    let mut data = std::fs::read(&segment).expect("segment");
    let at = data
        .windows(17)
        .position(|window| window == b"wamid.spool-00005")
        .expect("the fifth entry is in the segment");
    data[at + 12] ^= 0x20;
    std::fs::write(&segment, &data).expect("damaged");

    let status = binary()
        .args(["spool", "status", "--dir", spool_dir, "--json"])
        .output()
        .expect("runs");
    assert_eq!(status.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["entries"], 9, "{status}");
    let unreadable = status["unreadable"].as_array().expect("a list");
    assert_eq!(unreadable.len(), 1, "{status}");
    let offset = unreadable[0]["offset"].as_u64().expect("offset");
    assert!(offset > 0 && (offset as usize) < at, "{status}");
    assert_eq!(unreadable[0]["at_end"], false);
    let text = binary()
        .args(["spool", "status", "--dir", spool_dir])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("unreadable: {} at byte {offset}", {
            segment.file_name().expect("name").to_string_lossy()
        })),
        "{text}"
    );

    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let drain = binary()
        .args(["spool", "drain", "--dir", spool_dir, "--brokers", &brokers])
        .args(["--timeout-seconds", "60"])
        // The mock cluster creates topics as they are used, and has no CreateTopics.
        .env("WABA_GATEWAY__KAFKA__CREATE_TOPICS", "false")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&drain.stdout);
    let stderr = String::from_utf8_lossy(&drain.stderr);
    assert_eq!(drain.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("forwarded 9 entries"), "{stdout}{stderr}");
    assert!(
        stdout.contains("NOT empty: quarantine/ holds 1 file"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(".seg.at-{offset}.bin")),
        "{stdout}"
    );
    assert!(!stdout.contains("the spool is empty"), "{stdout}");
    let records = consume(&brokers, &["whatsapp.messages"], 9);
    let mut ids: Vec<String> = records
        .iter()
        .map(|record| record.item_id("messages"))
        .collect();
    ids.sort();
    let expected: Vec<String> = (1..=10)
        .filter(|n| *n != 5)
        .map(|n| format!("wamid.spool-{n:05}"))
        .collect();
    assert_eq!(ids, expected);
}

/// A stop with Kafka down is bounded: after SIGTERM the gateway answers for
/// `lame_duck_ms`, then finishes within `drain_timeout_ms`, so it exits within their sum
/// and a second, in either ack mode, with notifications waiting on Kafka (in flight in
/// `kafka` mode, spooled in `spool` mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_kafka_down_ends_within_lame_duck_plus_drain_timeout() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("dir");
    let cases = [("spool", 0), ("kafka", 0), ("spool", 2000), ("kafka", 2000)];
    let mut gateways = Vec::new();
    for (n, (mode, lame_duck)) in cases.iter().enumerate() {
        let spool_dir = dir.path().join(format!("spool-{n}"));
        let spool_dir = spool_dir.to_str().expect("utf-8").to_owned();
        let lame_duck = lame_duck.to_string();
        let mut env = gateway_env(&brokers, &spool_dir);
        env.extend([
            ("WABA_GATEWAY__DELIVERY__ACK", *mode),
            ("WABA_GATEWAY__SHUTDOWN__DRAIN_TIMEOUT_MS", "10000"),
            ("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", &lame_duck),
        ]);
        let gateway = GatewayProcess::start(dir.path(), &env);
        gateway.wait_ready().await;
        gateways.push(gateway);
    }
    cluster.broker_down(1).expect("down");
    let mut sending = Vec::new();
    for gateway in &gateways {
        for n in 0..20 {
            let url = gateway.url();
            sending.push(tokio::spawn(
                async move { try_notify(&url, &body(n)).await },
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stops: Vec<_> = gateways
        .into_iter()
        .zip(cases)
        .map(|(mut gateway, (mode, lame_duck))| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let status = gateway.signal_and_wait("TERM");
                (mode, lame_duck, status.code(), started.elapsed())
            })
        })
        .collect();
    for stop in stops {
        let (mode, lame_duck, code, took) = stop.join().expect("stopped");
        eprintln!("{mode} mode, lame_duck_ms = {lame_duck}: exit {code:?} after {took:?}");
        assert_eq!(code, Some(0), "{mode}");
        let bound = Duration::from_millis(lame_duck + 10_000 + 1_000);
        assert!(
            took <= bound,
            "{mode}, lame duck {lame_duck}: {took:?} > {bound:?}"
        );
    }
    for sent in sending {
        let _ = sent.await;
    }
}
