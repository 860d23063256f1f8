//! End to end: the gateway binary against an external Kafka-protocol broker process
//! (tansu, with in-memory storage), over TCP, with real signed HTTP; records are read back
//! with an rdkafka consumer that shares none of the gateway's code paths.
//!
//! The broker is `$WABA_GATEWAY_TANSU`, which `tests/run.sh` installs and sets. Without it
//! these tests say SKIPPED and pass, so a plain `cargo test` works anywhere.
//!
//! Known limits of this broker: no topic auto-creation (so the gateway's own topic creation
//! is exercised), an unreliable high watermark (records are read until they are all there,
//! never up to a watermark), no transactions.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "support/kit.rs"]
mod kit;
#[path = "support/tansu.rs"]
mod tansu;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use helpers::*;
use kit::*;
use tansu::*;

fn gateway_env<'a>(brokers: &'a str, ack: &'a str, spool_dir: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("WABA_GATEWAY__KAFKA__BROKERS", brokers),
        ("WABA_GATEWAY__KAFKA__TOPIC_PARTITIONS", "3"),
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
        ("WABA_GATEWAY__DELIVERY__ACK", ack),
        ("WABA_GATEWAY__DELIVERY__SPOOL_DIR", spool_dir),
    ]
}

fn partitions(brokers: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata.topics()[0].partitions().len()
}

#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_creates_its_topics_and_six_changes_arrive_as_six_records() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let env = gateway_env(&broker.address, "kafka", spool.to_str().expect("utf-8"));
    let gateway = GatewayProcess::start(dir.path(), &env);
    gateway.wait_ready().await;

    let body = fixture("multi_two_entries_three_fields_each.json");
    let signature = sign(SECRET, &body);
    let answer = post(
        &gateway.url(),
        &body,
        &[("x-hub-signature-256", &signature)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let topics = [
        "whatsapp.messages",
        "whatsapp.phone_number_quality_update",
        "whatsapp.message_template_status_update",
        "whatsapp.account_review_update",
        "whatsapp.template_category_update",
    ];
    let address = broker.address.clone();
    let records = tokio::task::spawn_blocking(move || consume(&address, &topics, 6))
        .await
        .expect("consumed");
    assert_eq!(records.len(), 6, "exactly one record per change");
    let by_topic: Vec<(&str, usize)> = topics
        .iter()
        .map(|topic| (*topic, records.iter().filter(|r| r.topic == *topic).count()))
        .collect();
    assert_eq!(
        by_topic,
        [
            ("whatsapp.messages", 2),
            ("whatsapp.phone_number_quality_update", 1),
            ("whatsapp.message_template_status_update", 1),
            ("whatsapp.account_review_update", 1),
            ("whatsapp.template_category_update", 1),
        ]
    );
    for record in &records {
        let envelope = record.json();
        assert_eq!(envelope["event_id"], record.event_id());
        assert_eq!(envelope["app"], "default");
    }
    let address = broker.address.clone();
    let counts =
        tokio::task::spawn_blocking(move || topics.map(|topic| partitions(&address, topic)))
            .await
            .expect("metadata");
    assert_eq!(counts, [3; 5], "created with kafka.topic_partitions");
    assert_eq!(gateway.signal("TERM").code(), Some(0));
}

#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_forwards_every_acknowledged_notification_to_the_broker() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let env = gateway_env(&broker.address, "spool", spool.to_str().expect("utf-8"));
    let gateway = GatewayProcess::start(dir.path(), &env);
    gateway.wait_ready().await;
    let template = String::from_utf8(fixture("messages_status_read.json")).expect("utf-8");
    let mut sent = BTreeSet::new();
    for n in 0..50 {
        let id = format!("wamid.e2e-{n:03}");
        let body = template.replace("wamid.GWout0001AAA=", &id);
        assert_eq!(try_notify(&gateway.url(), body.as_bytes()).await, Some(200));
        sent.insert(id);
    }
    let address = broker.address.clone();
    let records =
        tokio::task::spawn_blocking(move || consume(&address, &["whatsapp.messages"], 50))
            .await
            .expect("consumed");
    let received: BTreeSet<String> = records.iter().map(|r| r.item_id("statuses")).collect();
    assert_eq!(received, sent);
    assert_eq!(gateway.signal("TERM").code(), Some(0));
}

/// Creates the dead-letter topic (tansu creates none by itself) and writes `letters` to
/// it (see [`helpers::write_dead_letters`]).
fn write_dead_letters(brokers: &str, letters: &[(&[u8], &str)]) {
    create_topics(brokers, &["whatsapp.deadletter"]);
    helpers::write_dead_letters(brokers, letters);
}

/// Creates `topics` with one partition each (tansu creates none by itself).
fn create_topics(brokers: &str, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let topics: Vec<NewTopic> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, 1, TopicReplication::Fixed(1)))
        .collect();
    for created in
        futures_executor(admin.create_topics(&topics, &AdminOptions::new())).expect("created")
    {
        created.expect("a topic created");
    }
}

fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// The settings of the gateway that wrote the topics: its brokers and its app. Every
/// command loads and checks the whole configuration, as `check-config` does.
fn gateway_settings(brokers: &str) -> [(&'static str, String); 3] {
    [
        ("WABA_GATEWAY__KAFKA__BROKERS", brokers.to_owned()),
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET.to_owned()),
        (
            "WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN",
            VERIFY_TOKEN.to_owned(),
        ),
    ]
}

/// Runs `replay --from deadletter` against `brokers`, with `env` and `extra` arguments;
/// it must succeed. Returns its output.
fn replay(brokers: &str, env: &[(&str, &str)], extra: &[&str]) -> String {
    let output = binary()
        .args(["replay", "--from", "deadletter", "--idle-seconds", "3"])
        .args(extra)
        .envs(gateway_settings(brokers))
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[test]
fn replay_publishes_dead_letters_that_now_split_once_and_leaves_the_rest() {
    let broker = Tansu::start();
    // An earlier gateway sent a notification holding a number beyond a double to the
    // dead-letter topic; today it splits. Bytes that are not JSON still do not.
    let notification = br#"{"object":"whatsapp_business_account","entry":[{"id":"310987654321001","time":1763770001,"changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"420123456789002"},"statuses":[{"id":"wamid.REPLAY1","status":"read","timestamp":"1763770001","recipient_id":"4915112345678","pricing":{"rate":1e309}}]}}]}]}"#;
    write_dead_letters(
        &broker.address,
        &[
            (&notification[..], "number_out_of_range"),
            (b"<notification/>", "invalid_json"),
        ],
    );

    let first = replay(&broker.address, &[], &[]);
    assert_eq!(
        first.trim(),
        "read 2 dead letters: 1 replayed as 1 records, 1 still failing (invalid_json: 1)"
    );
    let records = consume(&broker.address, &["whatsapp.messages"], 1);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(
        record.headers.get("wa-replayed-from").map(String::as_str),
        Some("whatsapp.deadletter/0/0")
    );
    // The same records and event ids a live POST of the same body gets.
    let live = waba_gateway::envelope::to_records(
        &waba_gateway::config::KafkaSettings::default().routing(),
        "default",
        notification,
        std::time::SystemTime::now(),
    );
    assert_eq!(live.deadletter, None);
    assert_eq!(live.records.len(), 1);
    assert_eq!(
        Some(record.event_id()),
        live.records[0].header("wa-event-id")
    );
    assert_eq!(record.key.as_deref(), live.records[0].key.as_deref());
    assert_eq!(
        envelope_value_bytes(&record.value),
        envelope_value_bytes(&live.records[0].value)
    );

    // Its group's committed offsets: a second run finds nothing new to publish.
    let second = replay(&broker.address, &[], &[]);
    assert_eq!(
        second.trim(),
        "read 0 dead letters: 0 replayed as 0 records, 0 still failing"
    );
    assert_eq!(consume(&broker.address, &["whatsapp.messages"], 1).len(), 1);
}

#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[test]
fn replay_in_item_mode_publishes_one_record_per_status_with_the_live_event_ids() {
    let broker = Tansu::start();
    let notification = br#"{"object":"whatsapp_business_account","entry":[{"id":"310987654321001","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"420123456789002"},"statuses":[{"id":"wamid.R1","status":"read","timestamp":"1763770001","recipient_id":"4915100000001"},{"id":"wamid.R2","status":"sent","timestamp":"1763770002","recipient_id":"4915100000002"}]}}]}]}"#;
    write_dead_letters(
        &broker.address,
        &[(&notification[..], "number_out_of_range")],
    );
    let output = replay(
        &broker.address,
        &[("WABA_GATEWAY__ROUTING__SPLIT", "item")],
        &[],
    );
    assert_eq!(
        output.trim(),
        "read 1 dead letters: 1 replayed as 2 records, 0 still failing"
    );
    let mut records = consume(&broker.address, &["whatsapp.messages"], 2);
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let live = waba_gateway::envelope::to_records(
        &waba_gateway::config::KafkaSettings::default()
            .routing()
            .with_split(waba_gateway::routing::SplitBy::Item),
        "default",
        notification,
        std::time::SystemTime::now(),
    );
    assert_eq!(records.len(), 2);
    for (record, (customer, status)) in records
        .iter()
        .zip([("4915100000001", "read"), ("4915100000002", "sent")])
    {
        assert_eq!(
            record.key.as_deref(),
            Some(format!("420123456789002:{customer}").as_str())
        );
        assert_eq!(record.headers["wa-item-kind"], "status");
        assert_eq!(record.headers["wa-status"], status);
        assert!(record.headers.contains_key("wa-replayed-from"));
        let same = live
            .records
            .iter()
            .find(|live| live.key == record.key)
            .expect("the live split has it");
        assert_eq!(Some(record.event_id()), same.header("wa-event-id"));
    }
}

/// A replica killed while Kafka was down leaves acknowledged notifications on its volume:
/// `spool status` shows them, `spool drain` forwards every one of them, found in Kafka by
/// `event_id`, and leaves the spool empty.
#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_drain_forwards_what_a_killed_gateway_left_while_kafka_was_down() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let spool_dir = spool.to_str().expect("utf-8").to_owned();
    // Port 1 of loopback: nothing listens there, and no other test can take it (a port
    // picked free and let go could be taken by a broker of a test running alongside).
    let unreachable = "127.0.0.1:1".to_owned();
    let env = gateway_env(&unreachable, "spool", &spool_dir);
    let gateway = GatewayProcess::start(dir.path(), &env);
    let template = String::from_utf8(fixture("messages_status_read.json")).expect("utf-8");
    let routing = waba_gateway::config::KafkaSettings::default().routing();
    let mut expected = BTreeSet::new();
    for n in 0..20 {
        let body = template.replace("wamid.GWout0001AAA=", &format!("wamid.drain-{n:03}"));
        assert_eq!(try_notify(&gateway.url(), body.as_bytes()).await, Some(200));
        let split = waba_gateway::envelope::to_records(
            &routing,
            "default",
            body.as_bytes(),
            std::time::SystemTime::now(),
        );
        for record in split.records {
            expected.insert(record.header("wa-event-id").expect("an id").to_owned());
        }
    }
    assert!(!gateway.signal("KILL").success());

    let status = |dir: &str| {
        let output = binary()
            .args(["spool", "status", "--dir", dir, "--json"])
            .output()
            .expect("runs");
        assert!(output.status.success());
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
    };
    let before = status(&spool_dir);
    assert_eq!(before["entries"], 20, "{before}");
    assert_eq!(before["held_by"], serde_json::Value::Null, "{before}");

    let drained = binary()
        .args([
            "spool",
            "drain",
            "--dir",
            &spool_dir,
            "--brokers",
            &broker.address,
        ])
        .env("WABA_GATEWAY__KAFKA__TOPIC_PARTITIONS", "3")
        .output()
        .expect("runs");
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert!(
        String::from_utf8_lossy(&drained.stdout).contains("forwarded 20 entries"),
        "{}",
        String::from_utf8_lossy(&drained.stdout)
    );
    let address = broker.address.clone();
    let records =
        tokio::task::spawn_blocking(move || consume(&address, &["whatsapp.messages"], 20))
            .await
            .expect("consumed");
    let found: BTreeSet<String> = records.iter().map(|r| r.event_id().to_owned()).collect();
    assert_eq!(
        found, expected,
        "every acknowledged notification, by event_id"
    );
    assert_eq!(status(&spool_dir)["entries"], 0);
}

/// A change for a field whose topic does not exist, on a cluster where the gateway may not
/// create topics: after librdkafka's bounded wait it goes to the dead-letter topic with the
/// topic it was meant for; the other changes arrive once; a restart replays nothing.
#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_for_good_is_dead_lettered_and_holds_nothing_back() {
    let broker = Tansu::start();
    let address = broker.address.clone();
    tokio::task::spawn_blocking(move || {
        create_topics(&address, &["whatsapp.messages", "whatsapp.deadletter"])
    })
    .await
    .expect("created");
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let mut env = gateway_env(&broker.address, "spool", spool.to_str().expect("utf-8"));
    env.push(("WABA_GATEWAY__KAFKA__CREATE_TOPICS", "false"));
    env.push((
        "WABA_GATEWAY__KAFKA__LIBRDKAFKA__TOPIC_METADATA_PROPAGATION_MAX_MS",
        "1000",
    ));
    let gateway = GatewayProcess::start(dir.path(), &env);
    gateway.wait_ready().await;

    let message = |n: usize| {
        format!(
            r#"{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550000000","phone_number_id":"420123456789002"}},"statuses":[{{"id":"wamid.refused-{n}","status":"sent","timestamp":"1763770001","recipient_id":"4915112345678"}}]}}}}"#
        )
    };
    let calls = r#"{"field":"calls","value":{"messaging_product":"whatsapp","calls":[{"id":"wacid.1","event":"connect"}]}}"#;
    for n in 0..3 {
        let changes = if n == 0 {
            format!("{},{calls}", message(n))
        } else {
            message(n)
        };
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"310987654321001","changes":[{changes}]}}]}}"#
        );
        assert_eq!(try_notify(&gateway.url(), body.as_bytes()).await, Some(200));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gateway.metric("waba_gateway_spool_entries").await > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the spool never emptied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let address = broker.address.clone();
    let (dead, messages) = tokio::task::spawn_blocking(move || {
        (
            consume(&address, &["whatsapp.deadletter"], 1),
            consume(&address, &["whatsapp.messages"], 3),
        )
    })
    .await
    .expect("consumed");
    assert_eq!(dead.len(), 1);
    let error = dead[0].headers.get("wa-error").cloned().unwrap_or_default();
    assert!(error.starts_with("unknown_topic"), "{error}");
    assert_eq!(
        dead[0].headers.get("wa-topic").map(String::as_str),
        Some("whatsapp.calls")
    );
    assert_eq!(dead[0].json()["field"], "calls");
    let ids: BTreeSet<String> = messages.iter().map(|r| r.item_id("statuses")).collect();
    assert_eq!(messages.len(), 3, "each other change once");
    assert_eq!(ids.len(), 3);

    assert_eq!(gateway.signal("TERM").code(), Some(0));
    let restarted = GatewayProcess::start(dir.path(), &env);
    restarted.wait_ready().await;
    assert_eq!(restarted.metric("waba_gateway_spool_entries").await, 0.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let address = broker.address.clone();
    let again = tokio::task::spawn_blocking(move || consume(&address, &["whatsapp.messages"], 3))
        .await
        .expect("consumed");
    assert_eq!(
        again.len(),
        3,
        "the restart replayed nothing already released"
    );
    assert_eq!(restarted.signal("TERM").code(), Some(0));

    // Once the topic exists, replay sends the refused record where it was meant to go.
    // This broker drops the metadata of offset commits, where a filtered run records what
    // it published: a filtered run is refused, publishing nothing, and a plain one runs.
    let address = broker.address.clone();
    let (summary, calls) = tokio::task::spawn_blocking(move || {
        create_topics(&address, &["whatsapp.calls"]);
        let filtered = binary()
            .args(["replay", "--from", "deadletter", "--idle-seconds", "3"])
            .args(["--reason", "unknown_topic"])
            .envs(gateway_settings(&address))
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&filtered.stderr);
        assert_eq!(filtered.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("does not keep the metadata of offset commits"),
            "{stderr}"
        );
        let summary = replay(&address, &[], &[]);
        (summary, consume(&address, &["whatsapp.calls"], 1))
    })
    .await
    .expect("replayed");
    assert_eq!(
        summary.trim(),
        "read 1 dead letters: 1 replayed as 1 records, 0 still failing"
    );
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].json()["field"], "calls");
    assert_eq!(calls[0].event_id(), dead[0].event_id());
    assert_eq!(
        calls[0].headers.get("wa-replayed-from").map(String::as_str),
        Some("whatsapp.deadletter/0/0")
    );
}

/// HAProxy in front of `gateways` (public, admin) on `front`, checking each one's /readyz.
fn haproxy(dir: &std::path::Path, front: &str, gateways: &[(String, String)]) -> Child {
    let servers: String = gateways
        .iter()
        .enumerate()
        .map(|(n, (public, admin))| {
            let check_port = admin.rsplit(':').next().expect("a port");
            format!("    server gw{n} {public} check port {check_port} inter 200ms fall 1 rise 1\n")
        })
        .collect();
    let config = format!(
        "global\n    maxconn 512\ndefaults\n    mode http\n    timeout connect 1s\n    \
         timeout client 10s\n    timeout server 10s\n    retries 3\n    option redispatch\n\
         frontend webhooks\n    bind {front}\n    default_backend gateways\n\
         backend gateways\n    balance roundrobin\n    option httpchk GET /readyz\n    \
         http-check expect status 200\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("haproxy.cfg");
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    child.unwrap_or_else(|error| panic!("haproxy cannot run ({error}); tests/run.sh installs it"))
}

/// What the Meta-like sender saw.
#[derive(Default)]
struct Sent {
    acknowledged: BTreeSet<String>,
    retries: u64,
    longest_gap: Duration,
}

/// Sends `count` notifications through `url` over `spread`, from `senders` tasks, as Meta
/// does: signed, every non-200 answer and failed connection retried with backoff until a
/// 200.
async fn send_like_meta(url: &str, count: usize, senders: usize, spread: Duration) -> Sent {
    let begin = Instant::now();
    let template = String::from_utf8(fixture("messages_status_read.json")).expect("utf-8");
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Sent::default()));
    let last_ok = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    let tasks: Vec<_> = (0..senders)
        .map(|sender| {
            let (url, template) = (url.to_owned(), template.clone());
            let (sent, last_ok) = (sent.clone(), last_ok.clone());
            tokio::spawn(async move {
                for n in (sender..count).step_by(senders) {
                    let due = begin + spread.mul_f64(n as f64 / count as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let id = format!("wamid.faults-{n:05}");
                    let body = template.replace("wamid.GWout0001AAA=", &id);
                    let mut delay = Duration::from_millis(20);
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while try_notify(&url, body.as_bytes()).await != Some(200) {
                        assert!(Instant::now() < deadline, "{id} never acknowledged");
                        sent.lock().expect("lock").retries += 1;
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(500));
                    }
                    let now = Instant::now();
                    let mut last = last_ok.lock().expect("lock");
                    let mut sent = sent.lock().expect("lock");
                    sent.longest_gap = sent.longest_gap.max(now - *last);
                    *last = now;
                    sent.acknowledged.insert(id);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a sender");
    }
    std::mem::take(&mut *sent.lock().expect("lock"))
}

/// The test the most trusted systems run: three gateways with their own spools behind
/// HAProxy, fed by a sender that behaves like Meta, while one gateway is killed with
/// `kill -9` and comes back, another gets SIGTERM and comes back, and the broker is
/// stopped and started again. Every notification the sender was told 200 for is in Kafka.
#[cfg_attr(
    any(missing_tansu, missing_haproxy),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and haproxy on PATH (tests/run.sh installs both)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_under_faults_lose_no_acknowledged_notification() {
    let dir = tempfile::tempdir().expect("dir");
    // Every address of this test on a loopback IP of its own (see free_address_on).
    let own = "127.0.0.77";
    let broker_address = free_address_on(own);
    let broker = Tansu::start_with("sqlite://tansu.db", Some(dir.path()), Some(&broker_address));
    let gateways: Vec<(String, String)> = (0..3)
        .map(|_| (free_address_on(own), free_address_on(own)))
        .collect();
    let env = |n: usize| -> Vec<(String, String)> {
        let spool = dir.path().join(format!("spool-{n}"));
        [
            ("WABA_GATEWAY__KAFKA__BROKERS", broker_address.clone()),
            ("WABA_GATEWAY__KAFKA__TOPIC_PARTITIONS", "3".to_owned()),
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET.to_owned()),
            (
                "WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN",
                VERIFY_TOKEN.to_owned(),
            ),
            ("WABA_GATEWAY__DELIVERY__ACK", "spool".to_owned()),
            (
                "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
                spool.display().to_string(),
            ),
            ("WABA_GATEWAY__SERVER__LISTEN", gateways[n].0.clone()),
            ("WABA_GATEWAY__ADMIN__LISTEN", gateways[n].1.clone()),
            ("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", "1000".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec()
    };
    let start = |n: usize| {
        let env = env(n);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        GatewayProcess::start(dir.path(), &pairs)
    };
    let mut running: Vec<Option<GatewayProcess>> = (0..3).map(|n| Some(start(n))).collect();
    for gateway in running.iter().flatten() {
        gateway.wait_ready().await;
    }
    let front = free_address_on(own);
    let mut proxy = haproxy(dir.path(), &front, &gateways);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let url = format!("http://{front}/webhook");
    let started = Instant::now();
    let sending =
        tokio::spawn(async move { send_like_meta(&url, 1200, 8, Duration::from_secs(15)).await });
    let mut broker = Some(broker);
    let at = |seconds: u64| started + Duration::from_secs(seconds);
    tokio::time::sleep_until(at(2).into()).await;
    assert!(!running[0].take().expect("running").signal("KILL").success());
    tokio::time::sleep_until(at(4).into()).await;
    running[0] = Some(start(0));
    tokio::time::sleep_until(at(6).into()).await;
    assert_eq!(
        running[1].take().expect("running").signal("TERM").code(),
        Some(0)
    );
    tokio::time::sleep_until(at(8).into()).await;
    running[1] = Some(start(1));
    tokio::time::sleep_until(at(10).into()).await;
    drop(broker.take());
    tokio::time::sleep_until(at(13).into()).await;
    broker.replace(Tansu::start_with(
        "sqlite://tansu.db",
        Some(dir.path()),
        Some(&broker_address),
    ));

    let sent = sending.await.expect("the sender");
    let sending_time = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    for gateway in running.iter().flatten() {
        while gateway.metric("waba_gateway_spool_entries").await > 0.0 {
            assert!(Instant::now() < deadline, "a spool never emptied");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let address = broker_address.clone();
    let expected = sent.acknowledged.len();
    let records =
        tokio::task::spawn_blocking(move || consume(&address, &["whatsapp.messages"], expected))
            .await
            .expect("consumed");
    let mut copies: std::collections::BTreeMap<String, usize> = Default::default();
    for record in &records {
        *copies.entry(record.item_id("statuses")).or_default() += 1;
    }
    let missing: Vec<&String> = sent
        .acknowledged
        .iter()
        .filter(|id| !copies.contains_key(*id))
        .collect();
    let duplicates: usize = copies.values().map(|n| n - 1).sum();

    eprintln!(
        "replicas under faults: {} notifications acknowledged in {:.1} s, {} retries, {} records \
         in Kafka, {} duplicates, {} missing, longest gap between acknowledgements {:?}",
        sent.acknowledged.len(),
        sending_time.as_secs_f64(),
        sent.retries,
        records.len(),
        duplicates,
        missing.len(),
        sent.longest_gap
    );
    assert_eq!(sent.acknowledged.len(), 1200);
    assert!(
        missing.is_empty(),
        "acknowledged but not in Kafka: {missing:?}"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    for gateway in running.into_iter().flatten() {
        assert_eq!(gateway.signal("TERM").code(), Some(0));
    }
}

/// Runs `waba-gateway topics ARGS` against `brokers` with an item topic override; returns
/// its exit code and standard output.
fn topics(brokers: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("a directory");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[server]\nmax_body_bytes = 5000000\n[kafka.topics]\n\"messages.status\" = \"wa.statuses\"\n",
    )
    .expect("written");
    let output = binary()
        .arg("topics")
        .args(args)
        .args(["--brokers", brokers, "--partitions", "2", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "topics {args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().expect("exited"), stdout)
}

#[cfg_attr(
    missing_tansu,
    ignore = "needs tansu: WABA_GATEWAY_TANSU (tests/run.sh installs it)"
)]
#[test]
fn topics_check_fails_on_a_fresh_broker_apply_creates_every_topic_then_check_passes() {
    let broker = Tansu::start();
    let (code, out) = topics(&broker.address, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("✗ whatsapp.messages: missing"), "{out}");
    assert!(out.contains("✗ wa.statuses: missing"), "{out}");
    assert!(out.contains("✗ whatsapp.deadletter: missing"), "{out}");

    let (code, out) = topics(&broker.address, &["apply"]);
    assert_eq!(code, 0, "{out}");
    let created = out.lines().filter(|l| l.starts_with("created ")).count();
    assert!(created >= 27, "{created} created:\n{out}");
    for topic in [
        "whatsapp.messages",
        "wa.statuses",
        "whatsapp.message_template_status_update",
        "whatsapp.phone_number_quality_update",
        "whatsapp.account_update",
        "whatsapp.unrouted",
        "whatsapp.deadletter",
    ] {
        assert_eq!(partitions(&broker.address, topic), 2, "{topic}");
        // The broker itself reports max.message.bytes above the largest body.
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("✓ {topic}:")))
            .unwrap_or_else(|| panic!("{topic} not checked:\n{out}"));
        let max: u64 = line
            .split("max.message.bytes=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(max > 5_000_000, "{line}");
    }

    let (code, out) = topics(&broker.address, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("all {created} topics are there as wanted")),
        "{out}"
    );
    let (code, out) = topics(&broker.address, &["apply"]);
    assert_eq!(
        (code, out.contains("created ")),
        (0, false),
        "a second apply creates nothing: {out}"
    );
}

/// A notification of one status of `wamid` for customer `recipient`.
fn status_notification(wamid: &str, status: &str, timestamp: u64, recipient: &str) -> Vec<u8> {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"statuses":[{{"id":"{wamid}","status":"{status}","timestamp":"{timestamp}","recipient_id":"{recipient}"}}]}},"field":"messages"}}]}}]}}"#
    )
    .into_bytes()
}

/// Runs a consumer of the kit (`program` and its first arguments) in group `group` until
/// it is idle for 4 s; returns its standard output and standard error lines as JSON.
fn run_consumer(
    program: &[String],
    brokers: &str,
    group: &str,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let output = Command::new(&program[0])
        .args(&program[1..])
        .args(["--bootstrap-servers", brokers, "--group", group])
        .args(["--topic", "whatsapp.messages", "--exit-after-idle", "4"])
        .output()
        .expect("the consumer runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{program:?}: {stderr}");
    let lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter(|line| line.starts_with('{'))
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect()
    };
    (
        lines(&String::from_utf8_lossy(&output.stdout)),
        lines(&stderr),
    )
}

#[cfg_attr(
    any(missing_tansu, missing_consumer, missing_python_kit),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and the kit's consumers (WABA_GATEWAY_CONSUMER, WABA_GATEWAY_PYTHON): tests/run.sh installs them"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_and_python_consumers_print_each_event_once_and_refuse_downgrades() {
    let consumers = kit_consumers();
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let mut env = gateway_env(&broker.address, "kafka", spool.to_str().expect("utf-8"));
    env.push(("WABA_GATEWAY__ROUTING__SPLIT", "item"));
    let gateway = GatewayProcess::start(dir.path(), &env);
    gateway.wait_ready().await;

    let text = fixture("messages_text.json");
    let sent = [
        // Meta's retry: the same notification twice.
        text.clone(),
        text,
        // One message's statuses, arriving out of order; failed wins over all.
        status_notification("wamid.X", "read", 1_750_263_775, "16505551111"),
        status_notification("wamid.X", "delivered", 1_750_263_774, "16505551111"),
        status_notification("wamid.X", "sent", 1_750_263_773, "16505551111"),
        status_notification("wamid.X", "failed", 1_750_263_776, "16505551111"),
        status_notification("wamid.Y", "delivered", 1_750_263_777, "16505552222"),
    ];
    for body in &sent {
        let answer = post(
            &gateway.url(),
            body,
            &[("x-hub-signature-256", &sign(SECRET, body))],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }

    for (name, program) in consumers {
        let group = format!("kit-{name}");
        let address = broker.address.clone();
        let (printed, dropped) = tokio::task::spawn_blocking({
            let (program, group) = (program.clone(), group.clone());
            move || run_consumer(&program, &address, &group)
        })
        .await
        .expect("ran");
        let events: Vec<(Option<&str>, Option<&str>)> = printed
            .iter()
            .map(|e| (e["message_id"].as_str(), e["status"].as_str()))
            .collect();
        assert_eq!(printed.len(), 4, "{name}: {printed:#?}");
        let ids: BTreeSet<&str> = printed
            .iter()
            .filter_map(|e| e["event_id"].as_str())
            .collect();
        assert_eq!(ids.len(), 4, "{name}: each event once");
        for expected in [
            (Some("wamid.X"), Some("read")),
            (Some("wamid.X"), Some("failed")),
            (Some("wamid.Y"), Some("delivered")),
        ] {
            assert!(
                events.contains(&expected),
                "{name}: {expected:?} not in {events:?}"
            );
        }
        // A set: a record the broker serves twice is one more duplicate, dropped too.
        let reasons: BTreeSet<(&str, Option<&str>)> = dropped
            .iter()
            .filter_map(|d| Some((d["dropped"].as_str()?, d["status"].as_str())))
            .collect();
        assert_eq!(
            reasons,
            BTreeSet::from([
                ("duplicate", None),
                ("status_downgrade", Some("delivered")),
                ("status_downgrade", Some("sent"))
            ]),
            "{name}: {dropped:#?}"
        );
        // Offsets were committed after processing: the group's next run reads nothing.
        let address = broker.address.clone();
        let (again, _) =
            tokio::task::spawn_blocking(move || run_consumer(&program, &address, &group))
                .await
                .expect("ran");
        assert!(
            again.is_empty(),
            "{name}: read again after committing: {again:#?}"
        );
    }
    assert_eq!(gateway.signal("TERM").code(), Some(0));
}

#[cfg_attr(
    any(missing_tansu, missing_kafkajs),
    ignore = "needs tansu (WABA_GATEWAY_TANSU) and kafkajs (WABA_GATEWAY_KAFKAJS): tests/run.sh installs them"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_with_its_default_settings_reads_every_record_headers_included() {
    let node_modules = kit_tool("WABA_GATEWAY_KAFKAJS");
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let mut env = gateway_env(&broker.address, "kafka", spool.to_str().expect("utf-8"));
    env.push(("WABA_GATEWAY__KAFKA__CLOUDEVENTS", "true"));
    let gateway = GatewayProcess::start(dir.path(), &env);
    gateway.wait_ready().await;

    // Every fixture of the project: every field, several changes, unrouted changes.
    let routing = waba_gateway::config::KafkaSettings::default().routing();
    let mut expected = Vec::new();
    let mut topics = BTreeSet::new();
    let fixtures = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
        .expect("fixtures");
    for path in fixtures.map(|e| e.expect("entry").path()) {
        if path.extension().is_none_or(|e| e != "json") || path.ends_with("expected.json") {
            continue;
        }
        let body = std::fs::read(&path).expect("readable");
        let split = waba_gateway::envelope::to_records(
            &routing,
            "default",
            &body,
            std::time::SystemTime::now(),
        );
        for record in &split.records {
            expected.push(
                record
                    .header("wa-event-id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("dead letter on {}", record.topic)),
            );
            topics.insert(record.topic.clone());
        }
        let answer = post(
            &gateway.url(),
            &body,
            &[("x-hub-signature-256", &sign(SECRET, &body))],
        )
        .await;
        assert_eq!(answer.status, 200, "{}: {}", path.display(), answer.text());
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/kafkajs-read.js");
    let output = Command::new("node")
        .arg(script)
        .arg(&broker.address)
        .arg(expected.len().to_string())
        .args(&topics)
        .env("NODE_PATH", &node_modules)
        .env("SECONDS_LIMIT", "60")
        .output()
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kafkajs could not read the records: {stderr}"
    );
    let mut read = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let headers = &record["headers"];
        match headers["wa-event-id"].as_str() {
            Some(event_id) => {
                let envelope: serde_json::Value =
                    serde_json::from_str(record["value"].as_str().expect("text"))
                        .expect("kafkajs reads the envelope as JSON");
                assert_eq!(envelope["event_id"], event_id);
                assert_eq!(headers["wa-app"], "default");
                assert_eq!(headers["content-type"], "application/json");
                if record["topic"] != "whatsapp.unrouted" {
                    assert_eq!(headers["ce_id"], event_id, "{record}");
                }
                read.push(event_id.to_owned());
            }
            None => {
                read.push(format!(
                    "dead letter on {}",
                    record["topic"].as_str().expect("topic")
                ));
            }
        }
    }
    read.sort();
    expected.sort();
    assert_eq!(read, expected, "every record, read by kafkajs");
    eprintln!(
        "kafkajs read {} records from {} topics",
        read.len(),
        topics.len()
    );
    assert_eq!(gateway.signal("TERM").code(), Some(0));
}
