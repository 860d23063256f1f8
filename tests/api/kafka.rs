//! The real rdkafka producer against librdkafka's mock cluster, over TCP: exact records,
//! and broker faults that must never produce a 200 without Kafka's acknowledgement.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;

use crate::helpers::*;

const ALL_TOPICS: &[&str] = &[
    "whatsapp.messages",
    "whatsapp.phone_number_quality_update",
    "whatsapp.message_template_status_update",
    "whatsapp.account_review_update",
    "whatsapp.template_category_update",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entries_of_three_changes_become_six_exact_records_with_stable_event_ids() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let app = spawn_kafka_app(&brokers, &[]).await;
    app.wait_ready().await;
    let body = fixture("multi_two_entries_three_fields_each.json");
    let mut forged = body.clone();
    forged[100] ^= 1;
    let answer = post(
        &app.url("/webhook"),
        &forged,
        &[("x-hub-signature-256", &sign(SECRET, &body))],
    )
    .await;
    assert_eq!(answer.status, 401, "a tampered body is refused");
    assert_eq!(
        app.metric(r#"waba_gateway_signature_failures_total{app="default",reason="mismatch"}"#)
            .await,
        1.0
    );
    let answer = app.notify(&body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        app.notify(&body).await.status,
        200,
        "Meta's retry of the same body"
    );

    let records = consume(&brokers, ALL_TOPICS, 12);
    assert_eq!(
        records.len(),
        12,
        "exactly six records per accepted POST, none for the forged one"
    );

    let parsed: Value = serde_json::from_slice(&body).expect("fixture");
    let mut expected = Vec::new();
    for entry in parsed["entry"].as_array().expect("entries") {
        for change in entry["changes"].as_array().expect("changes") {
            expected.push((entry, change));
        }
    }
    let mut ids_per_delivery: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        let envelope = record.json();
        let (entry, change) = expected
            .iter()
            .find(|(_, change)| change["value"] == envelope["value"])
            .expect("every record is one of the changes");
        let field = change["field"].as_str().expect("field");
        assert_eq!(record.topic, format!("whatsapp.{field}"));
        let raw = envelope_value_bytes(&record.value);
        assert!(
            body.windows(raw.len()).any(|w| w == raw),
            "the value is the change's bytes exactly"
        );
        assert_eq!(envelope["field"], field);
        assert_eq!(envelope["entry_id"], entry["id"]);
        assert_eq!(envelope["entry_time"], entry["time"]);
        assert_eq!(envelope["object"], "whatsapp_business_account");
        assert_eq!(envelope["app"], "default");
        assert_eq!(envelope["event_id"], record.event_id());
        let expected_key = if field == "messages" {
            "420123456789002:4915112345678".to_owned()
        } else {
            entry["id"].as_str().expect("id").to_owned()
        };
        assert_eq!(record.key.as_deref(), Some(expected_key.as_str()));
        let header_names: BTreeSet<&str> = record.headers.keys().map(String::as_str).collect();
        let mut expected_names = BTreeSet::from([
            "content-type",
            "wa-app",
            "wa-entry-id",
            "wa-event-id",
            "wa-field",
            "wa-object",
        ]);
        if field == "messages" {
            // Every messages record names its business phone number.
            expected_names.insert("wa-phone-number-id");
            assert_eq!(
                record.headers.get("wa-phone-number-id").map(String::as_str),
                change["value"]["metadata"]["phone_number_id"].as_str()
            );
        }
        assert_eq!(header_names, expected_names);
        *ids_per_delivery
            .entry(record.event_id().to_owned())
            .or_default() += 1;
    }
    assert_eq!(ids_per_delivery.len(), 6, "six distinct changes");
    assert!(
        ids_per_delivery.values().all(|count| *count == 2),
        "each change has the same event_id in both deliveries: {ids_per_delivery:?}"
    );
    assert_eq!(
        app.metric(r#"waba_gateway_kafka_records_total{outcome="ok",topic="whatsapp.messages"}"#)
            .await,
        4.0
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_conversation_keeps_its_order_on_one_partition() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let app = spawn_kafka_app(&brokers, &[]).await;
    app.wait_ready().await;
    let template = String::from_utf8(fixture("messages_text.json")).expect("utf-8");
    let mut sent = Vec::new();
    for n in 0..20 {
        let body = template.replace("wamid.GW1763770001AAA=", &format!("wamid.order-{n:02}"));
        assert_eq!(app.notify(body.as_bytes()).await.status, 200);
        sent.push(format!("wamid.order-{n:02}"));
    }
    let records = consume(&brokers, &["whatsapp.messages"], 20);
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 1, "one key, one partition");
    let received: Vec<String> = records.iter().map(|r| r.item_id("messages")).collect();
    assert_eq!(received, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_and_a_dead_broker_get_503_within_the_ack_timeout_never_200() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let app = spawn_kafka_app(
        &brokers,
        &[("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "1000")],
    )
    .await;
    app.wait_ready().await;
    let template = String::from_utf8(fixture("messages_text.json")).expect("utf-8");
    let body =
        |n: usize| template.replace("wamid.GW1763770001AAA=", &format!("wamid.fault-{n:03}"));

    // Warm up: the topic exists and the producer has its id.
    assert_eq!(app.notify(body(0).as_bytes()).await.status, 200);
    let mut accepted = vec![0];

    // Every Produce request fails with a retriable error.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    for n in 1..=3 {
        let started = Instant::now();
        let answer = app.notify(body(n).as_bytes()).await;
        let elapsed = started.elapsed();
        assert_eq!(answer.status, 503, "produce errors: {}", answer.text());
        // Not held until librdkafka gives up: the 1 s ack timeout bounds the answer (to
        // the millisecond on the paused clock: http::tests).
        assert!(elapsed < Duration::from_secs(10), "answered in {elapsed:?}");
        assert_eq!(answer.headers["retry-after"], "5");
    }
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    // The broker goes away entirely.
    cluster.broker_down(1).expect("broker down");
    for n in 4..=5 {
        let started = Instant::now();
        let answer = app.notify(body(n).as_bytes()).await;
        assert_eq!(answer.status, 503, "broker down");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    cluster.broker_up(1).expect("broker up");

    // Back to normal: accepted again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 100;
    loop {
        let answer = app.notify(body(n).as_bytes()).await;
        if answer.status == 200 {
            accepted.push(n);
            break;
        }
        assert_eq!(answer.status, 503);
        assert!(Instant::now() < deadline, "the gateway did not recover");
        n += 1;
    }

    // Every 200 is in Kafka. (A 503'd body may be there too: Meta's retry makes it a
    // duplicate with the same event_id, which is at-least-once.)
    let records = consume(&brokers, &["whatsapp.messages"], accepted.len());
    let ids: BTreeSet<String> = records.iter().map(|r| r.item_id("messages")).collect();
    for n in &accepted {
        assert!(
            ids.contains(&format!("wamid.fault-{n:03}")),
            "200 for {n} but not in Kafka"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrent_load_with_faults_every_200_is_in_kafka() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let app = spawn_kafka_app(
        &brokers,
        &[("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "800")],
    )
    .await;
    app.wait_ready().await;
    let template = String::from_utf8(fixture("messages_status_delivered.json")).expect("utf-8");
    let url = app.url("/webhook");
    let send = |n: usize| {
        let body = template.replace("wamid.GWout0001AAA=", &format!("wamid.load-{n:04}"));
        let url = url.clone();
        tokio::spawn(async move {
            let answer = post_signed(&url, body.as_bytes(), SECRET).await;
            (n, answer.status)
        })
    };
    // 25 ms apart: each fault lasts well over the 800 ms ack timeout, so some requests
    // must be refused, and librdkafka's retries carry others across the fault's end.
    let mut tasks = Vec::new();
    for n in 0..140 {
        match n {
            20 => cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5000],
            ),
            70 => cluster.clear_request_errors(RDKafkaApiKey::Produce),
            85 => cluster.broker_down(1).expect("down"),
            130 => cluster.broker_up(1).expect("up"),
            _ => {}
        }
        tasks.push(send(n));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut ok = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (n, status) = task.await.expect("request task");
        match status {
            200 => ok.push(n),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        !ok.is_empty() && refused > 0,
        "{} ok, {refused} refused",
        ok.len()
    );
    eprintln!("{} answered 200, {refused} answered 503", ok.len());
    let records = consume(&brokers, &["whatsapp.messages"], ok.len());
    let ids: BTreeSet<String> = records.iter().map(|r| r.item_id("statuses")).collect();
    let missing: Vec<usize> = ok
        .iter()
        .copied()
        .filter(|n| !ids.contains(&format!("wamid.load-{n:04}")))
        .collect();
    assert!(
        missing.is_empty(),
        "answered 200 but not in Kafka: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_that_does_not_drain_is_answered_503_soon_not_after_the_ack_timeout()
{
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let app = spawn_kafka_app(
        &brokers,
        &[
            (
                "WABA_GATEWAY__KAFKA__LIBRDKAFKA__QUEUE_BUFFERING_MAX_MESSAGES",
                "3",
            ),
            ("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "15000"),
            ("WABA_GATEWAY__SERVER__REQUEST_TIMEOUT_MS", "18000"),
        ],
    )
    .await;
    app.wait_ready().await;
    assert_eq!(app.notify(&fixture("messages_text.json")).await.status, 200);
    cluster.broker_down(1).expect("down");
    let started = Instant::now();
    // Six records do not fit a queue of three while nothing drains it.
    let answer = app
        .notify(&fixture("multi_two_entries_three_fields_each.json"))
        .await;
    assert_eq!(answer.status, 503);
    assert!(answer.text().contains("queue is full"), "{}", answer.text());
    // Backpressure after a short wait for room (QUEUE_WAIT, to the millisecond on the
    // paused clock: http::tests), not the 15 s ack timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// librdkafka's statistics reach /metrics: the producer's queue, each broker's state and
/// round-trip time; a broker that goes down shows as down, and its errors are counted.
/// The process collector and the build's revision are there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_client_statistics_and_process_metrics_are_exported() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let app = spawn_kafka_app(
        &brokers,
        &[("WABA_GATEWAY__KAFKA__STATISTICS_INTERVAL_MS", "100")],
    )
    .await;
    app.wait_ready().await;
    assert_eq!(app.notify(&fixture("messages_text.json")).await.status, 200);
    let text = |app: &TestApp| {
        let url = app.admin_url("/metrics");
        async move { get(&url).await.text() }
    };
    let up_line = |metrics: &str, value: &str| {
        metrics
            .lines()
            .any(|line| line.starts_with("waba_gateway_kafka_broker_up{") && line.ends_with(value))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = text(&app).await;
    while !up_line(&metrics, " 1") {
        assert!(Instant::now() < deadline, "no broker up in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = text(&app).await;
    }
    for expected in [
        "waba_gateway_kafka_broker_rtt_seconds{broker=",
        "quantile=\"0.99\"}",
        "waba_gateway_kafka_producer_queue_messages ",
        "waba_gateway_kafka_producer_queue_bytes ",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "waba_gateway_build_info{revision=\"",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }

    cluster.broker_down(1).expect("down");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !up_line(&metrics, " 0") {
        assert!(
            Instant::now() < deadline,
            "the broker never showed down:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = text(&app).await;
    }
    cluster.broker_up(1).expect("up");
}

/// A notification that splits today, told apart by its message id.
fn notification(n: usize) -> Vec<u8> {
    String::from_utf8(fixture("messages_text.json"))
        .expect("utf-8")
        .replace("wamid.GW1763770001AAA=", &format!("wamid.replay-{n}"))
        .into_bytes()
}

/// Any replay, run twice, publishes nothing new; a plain run after a filtered one
/// publishes only what the filtered run left; what still fails is tried by every run.
#[test]
fn a_replay_run_twice_publishes_nothing_new_whatever_its_filters() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let (one, two, three) = (notification(1), notification(2), notification(3));
    write_dead_letters(
        &brokers,
        &[
            (&one, "invalid_json"),
            (b"<still not json/>", "invalid_json"),
            (&two, "missing_entry"),
            (&three, "invalid_json"),
        ],
    );
    let replay = |extra: &[&str]| {
        let output = binary()
            .args(["replay", "--from", "deadletter", "--idle-seconds", "2"])
            .args(extra)
            .env("WABA_GATEWAY__KAFKA__BROKERS", &brokers)
            .env("WABA_GATEWAY__KAFKA__CREATE_TOPICS", "false")
            .env("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET)
            .env("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{extra:?}: {stderr}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    // Waits for `n` records (and a moment for any more).
    let published = |n: usize| {
        let mut ids: Vec<String> = consume(&brokers, &["whatsapp.messages"], n)
            .iter()
            .map(|record| record.item_id("messages"))
            .collect();
        ids.sort();
        ids
    };
    let filtered = ["--reason", "missing_entry"];
    assert_eq!(
        replay(&filtered),
        "read 4 dead letters: 1 replayed as 1 records, 0 still failing, 3 outside the window \
         or reason asked for"
    );
    assert_eq!(
        replay(&filtered),
        "read 4 dead letters: 0 replayed as 0 records, 0 still failing, 1 replayed by an \
         earlier run (not published again), 3 outside the window or reason asked for"
    );
    assert_eq!(published(1), ["wamid.replay-2"]);
    assert_eq!(
        replay(&[]),
        "read 4 dead letters: 2 replayed as 2 records, 1 still failing (invalid_json: 1), 1 \
         replayed by an earlier run (not published again)"
    );
    // The group is done up to the one that still fails, which is read again.
    assert_eq!(
        replay(&[]),
        "read 3 dead letters: 0 replayed as 0 records, 1 still failing (invalid_json: 1), 2 \
         replayed by an earlier run (not published again)"
    );
    assert_eq!(
        published(3),
        ["wamid.replay-1", "wamid.replay-2", "wamid.replay-3"],
        "each published once"
    );
}
