//! Authentic but hostile bodies: each gets 200 and is kept on the dead-letter topic byte
//! for byte with its reason, in both durable ack modes, and the gateway goes on serving.

use std::time::{Duration, Instant};

use crate::helpers::*;

const WABA: &str = r#"{"object":"whatsapp_business_account","entry":"#;

/// Each hostile body, signed with the app's secret, and the `wa-error` it must get.
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let change = r#"[{"id":"1","changes":[{"field":"messages","value":{"text":"#;
    let mut invalid_utf8_in_a_value = format!("{WABA}{change}\"").into_bytes();
    invalid_utf8_in_a_value.extend_from_slice(b"caf\xe9 \xff\xfe");
    invalid_utf8_in_a_value.extend_from_slice(b"\"}}]}]}");
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    let deep_arrays = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    vec![
        (
            "invalid UTF-8 inside a value",
            invalid_utf8_in_a_value,
            "invalid_utf8",
        ),
        (
            "bytes that are not UTF-8 at all",
            b"\xc3\x28\xa0\xa1\x00\xff".to_vec(),
            "invalid_utf8",
        ),
        (
            "objects nested 100000 deep",
            deep_objects.into_bytes(),
            "missing_entry",
        ),
        (
            "arrays nested 200000 deep",
            deep_arrays.into_bytes(),
            "not_an_object",
        ),
        (
            "XML",
            b"<notification><entry/></notification>".to_vec(),
            "invalid_json",
        ),
        (
            "JSON cut off",
            format!("{WABA}[{{\"id\":\"1\",\"changes\":[").into_bytes(),
            "invalid_json",
        ),
        (
            "entry that is an object",
            format!(r#"{WABA}{{"id":"1","changes":[]}}}}"#).into_bytes(),
            "entry_not_a_list",
        ),
        (
            "entry that is a string",
            format!(r#"{WABA}"[]"}}"#).into_bytes(),
            "entry_not_a_list",
        ),
        ("an empty body", Vec::new(), "empty_body"),
        ("white space only", b" \r\n\t ".to_vec(), "empty_body"),
        ("a bare string", br#""whatsapp""#.to_vec(), "not_an_object"),
        ("an empty array", b"[]".to_vec(), "no_notifications"),
        (
            "no entry member",
            br#"{"object":"whatsapp_business_account"}"#.to_vec(),
            "missing_entry",
        ),
        (
            "an empty entry list",
            br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec(),
            "no_entries",
        ),
        (
            "notifications with empty entry lists",
            br#"[{"entry":[]},{"object":"page","entry":[]}]"#.to_vec(),
            "no_entries",
        ),
    ]
}

/// Posts each hostile body in turn, each followed by an ordinary notification: both get
/// 200 at once.
async fn post_all(app: &TestApp) {
    let ordinary = fixture("messages_text.json");
    for (name, body, _) in hostile_bodies() {
        let started = Instant::now();
        let answer = app.notify(&body).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        // Well within the 10 s request timeout; how fast is benches/hot_path.rs's concern.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} took {:?}",
            started.elapsed()
        );
        assert_eq!(app.notify(&ordinary).await.status, 200, "after {name}");
    }
}

fn assert_dead_letters(records: &[waba_gateway::envelope::Record]) {
    let dead: Vec<_> = records
        .iter()
        .filter(|record| record.topic == "whatsapp.deadletter")
        .collect();
    let bodies = hostile_bodies();
    assert_eq!(dead.len(), bodies.len(), "one dead letter per hostile body");
    for ((name, body, reason), record) in bodies.iter().zip(dead) {
        assert_eq!(record.value, *body, "{name}: the raw body, byte for byte");
        assert_eq!(record.header("wa-error"), Some(*reason), "{name}");
        assert_eq!(record.header("wa-app"), Some("default"), "{name}");
        assert!(record.header("wa-received-at").is_some(), "{name}");
    }
    let ordinary = records
        .iter()
        .filter(|record| record.topic == "whatsapp.messages")
        .count();
    assert_eq!(
        ordinary,
        bodies.len(),
        "every ordinary notification went through"
    );
}

#[tokio::test]
async fn hostile_bodies_are_dead_lettered_byte_for_byte_in_kafka_mode() {
    let app = spawn_app(&[]).await;
    post_all(&app).await;
    assert_dead_letters(&app.memory.as_ref().expect("memory").records());
    for reason in ["invalid_utf8", "invalid_json", "empty_body"] {
        assert_eq!(
            app.metric(&format!(
                r#"waba_gateway_deadletters_total{{app="default",reason="{reason}"}}"#
            ))
            .await,
            2.0,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn hostile_bodies_are_dead_lettered_byte_for_byte_from_the_spool() {
    let spool = tempfile::tempdir().expect("a temporary directory");
    let app = spawn_app(&[
        ("WABA_GATEWAY__DELIVERY__ACK", "spool"),
        (
            "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
            spool.path().to_str().expect("a UTF-8 path"),
        ),
    ])
    .await;
    post_all(&app).await;
    let memory = app.memory.as_ref().expect("memory");
    let expected = 2 * hostile_bodies().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while memory.records().len() < expected {
        assert!(Instant::now() < deadline, "the forwarder never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_dead_letters(&memory.records());
}

#[tokio::test]
async fn deep_nesting_inside_an_entry_is_kept_whole_on_the_unrouted_topic() {
    let app = spawn_app(&[]).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!("{WABA}[{deep}]}}");
    assert_eq!(app.notify(body.as_bytes()).await.status, 200);
    let records = app.memory.as_ref().expect("memory").records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic, "whatsapp.unrouted");
    assert_eq!(envelope_value_bytes(&records[0].value), deep.as_bytes());
}

#[tokio::test]
async fn numbers_beyond_a_double_are_routed_unchanged_like_any_other_value() {
    let app = spawn_app(&[]).await;
    let big = format!("-{}", "9".repeat(400));
    let statuses = format!(r#"{{"n":{big}}}"#);
    let body = format!(
        r#"{WABA}[{{"id":"1","time":1e400,"changes":[{{"field":"statuses","value":{statuses}}},{{"field":"messages","value":{{"n":1e309}}}}]}}]}}"#
    );
    assert_eq!(app.notify(body.as_bytes()).await.status, 200);
    let records = app.memory.as_ref().expect("memory").records();
    let routed: Vec<(&str, &[u8])> = records
        .iter()
        .map(|record| (record.topic.as_str(), envelope_value_bytes(&record.value)))
        .collect();
    assert_eq!(
        routed,
        [
            ("whatsapp.statuses", statuses.as_bytes()),
            ("whatsapp.messages", &br#"{"n":1e309}"#[..]),
        ]
    );
}
