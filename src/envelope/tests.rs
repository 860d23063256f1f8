//! The split over the own fixtures and over bodies built to break it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::*;

pub(super) const AT: &str = "2026-11-22T01:02:03.456Z";

/// [`AT`] as the time the gateway passes around.
pub(super) fn at(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(text).expect("an RFC 3339 time")
}

pub(super) fn routing() -> Routing {
    Routing::new(
        "whatsapp.{field}",
        BTreeMap::new(),
        "whatsapp.unrouted",
        "whatsapp.deadletter",
    )
}

pub(super) fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn envelope(record: &Record) -> Value {
    serde_json::from_slice(&record.value).expect("the envelope is JSON")
}

/// The exact bytes of the envelope's `value` member, cut out of the record by position:
/// the envelope ends with `"value":<raw>}`.
fn value_bytes(record: &Record) -> &[u8] {
    let marker = b",\"value\":";
    let start = record
        .value
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the envelope has a value")
        + marker.len();
    &record.value[start..record.value.len() - 1]
}

#[test]
fn every_own_fixture_gives_the_expected_topics_and_keys() {
    let expected: BTreeMap<String, Vec<BTreeMap<String, String>>> =
        serde_json::from_slice(&fixture("expected.json")).expect("expected.json");
    assert!(expected.len() >= 30, "only {} fixtures", expected.len());
    for (name, want) in expected {
        let records = split(&routing(), "default", &fixture(&name), at(AT))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<(String, Option<String>)> = records
            .iter()
            .map(|r| (r.topic.clone(), r.key.clone()))
            .collect();
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|w| (w["topic"].clone(), Some(w["key"].clone())))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn each_change_value_is_copied_byte_for_byte_and_appears_in_the_body() {
    for name in [
        "multi_two_entries_three_fields_each.json",
        "messages_location.json",
    ] {
        let body = fixture(name);
        let parsed: Value = serde_json::from_slice(&body).expect("fixture is JSON");
        let changes: Vec<&Value> = parsed["entry"]
            .as_array()
            .expect("entry list")
            .iter()
            .flat_map(|e| e["changes"].as_array().expect("changes").iter())
            .collect();
        let records = split(&routing(), "default", &body, at(AT)).expect("splits");
        assert_eq!(records.len(), changes.len(), "{name}");
        for (record, change) in records.iter().zip(changes) {
            let bytes = value_bytes(record);
            assert!(
                body.windows(bytes.len()).any(|w| w == bytes),
                "{name}: value bytes are not a slice of the body"
            );
            let value: Value = serde_json::from_slice(bytes).expect("value is JSON");
            assert_eq!(&value, &change["value"], "{name}");
        }
    }
}

#[test]
fn escapes_in_a_value_are_preserved_exactly() {
    let body = fixture("messages_image_escaped_unicode_and_slashes.json");
    let records = split(&routing(), "default", &body, at(AT)).expect("splits");
    let bytes = std::str::from_utf8(value_bytes(&records[0])).expect("ascii");
    assert!(bytes.contains(r#""caption":"Caf\u00e9 cr\u00e8me \ud83d\ude00""#));
    assert!(bytes.contains(r#""mime_type":"image\/jpeg""#));
    assert!(bytes.contains(r#""url":"https:\/\/lookaside.fbsbx.com\/whatsapp_business"#));
    let value: Value = serde_json::from_str(bytes).expect("value is JSON");
    assert_eq!(
        value["messages"][0]["image"]["caption"],
        "Café crème \u{1F600}"
    );
    assert_eq!(value["messages"][0]["image"]["mime_type"], "image/jpeg");
}

#[test]
fn the_envelope_carries_every_documented_member() {
    let body = fixture("message_template_status_update.json");
    let records = split(&routing(), "shop-eu", &body, at(AT)).expect("splits");
    let envelope = envelope(&records[0]);
    let members: Vec<&str> = envelope
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        [
            "app",
            "entry_id",
            "entry_time",
            "event_id",
            "field",
            "object",
            "received_at",
            "value"
        ]
    );
    assert_eq!(envelope["app"], "shop-eu");
    assert_eq!(envelope["object"], "whatsapp_business_account");
    assert_eq!(envelope["entry_id"], "310987654321001");
    assert_eq!(envelope["entry_time"], 1763771000);
    assert_eq!(envelope["field"], "message_template_status_update");
    assert_eq!(envelope["received_at"], AT);
    assert_eq!(envelope["value"]["event"], "REJECTED");
    let event_id = envelope["event_id"].as_str().expect("string");
    assert_eq!(event_id.len(), 32);
    assert!(event_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        records[0].headers,
        vec![
            ("wa-event-id", event_id.to_owned()),
            ("wa-app", "shop-eu".to_owned()),
            ("wa-object", "whatsapp_business_account".to_owned()),
            ("wa-entry-id", "310987654321001".to_owned()),
            ("wa-field", "message_template_status_update".to_owned()),
            ("content-type", "application/json".to_owned()),
        ]
    );
}

#[test]
fn entry_time_is_null_when_meta_sent_none() {
    let records = split(
        &routing(),
        "default",
        &fixture("messages_text.json"),
        at(AT),
    )
    .expect("splits");
    assert_eq!(envelope(&records[0])["entry_time"], Value::Null);
}

#[test]
fn event_ids_are_stable_across_deliveries_and_distinct_across_changes() {
    let body = fixture("multi_two_entries_three_fields_each.json");
    let ids = |app: &str, received: &str| -> Vec<String> {
        split(&routing(), app, &body, at(received))
            .expect("splits")
            .iter()
            .map(|r| r.header("wa-event-id").expect("id").to_owned())
            .collect()
    };
    let first = ids("default", AT);
    assert_eq!(first, ids("default", "2026-11-29T00:00:00.000Z"));
    assert_eq!(first, ids("other-app", AT));
    let mut unique = first.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);
}

#[test]
fn the_same_value_at_another_entry_time_is_another_event() {
    let a = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","time":100,"changes":[{"field":"phone_number_quality_update","value":{"event":"FLAGGED"}}]}]}"#;
    let b = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","time":200,"changes":[{"field":"phone_number_quality_update","value":{"event":"FLAGGED"}}]}]}"#;
    let id = |body: &[u8]| {
        split(&routing(), "default", body, at(AT)).expect("splits")[0]
            .header("wa-event-id")
            .expect("id")
            .to_owned()
    };
    assert_ne!(id(a), id(b));
}

#[test]
fn a_messages_key_prefers_the_phone_number_then_business_scoped_ids() {
    let key = |value: &str| {
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"field":"messages","value":{value}}}]}}]}}"#
        );
        split(&routing(), "default", body.as_bytes(), at(AT)).expect("splits")[0]
            .key
            .clone()
    };
    let md = r#""metadata":{"phone_number_id":"P"}"#;
    assert_eq!(
        key(&format!(
            r#"{{{md},"contacts":[{{"wa_id":"C","user_id":"U"}}],"messages":[{{"from":"F"}}]}}"#
        )),
        Some("P:C".into())
    );
    assert_eq!(
        key(&format!(
            r#"{{{md},"messages":[{{"from":"F","from_user_id":"U"}}]}}"#
        )),
        Some("P:F".into())
    );
    assert_eq!(
        key(&format!(r#"{{{md},"statuses":[{{"recipient_id":"R"}}]}}"#)),
        Some("P:R".into())
    );
    assert_eq!(
        key(&format!(
            r#"{{{md},"contacts":[{{"user_id":"U"}}],"messages":[{{}}]}}"#
        )),
        Some("P:U".into())
    );
    assert_eq!(
        key(&format!(
            r#"{{{md},"statuses":[{{"recipient_user_id":"RU"}}]}}"#
        )),
        Some("P:RU".into())
    );
    assert_eq!(
        key(&format!(r#"{{{md},"errors":[{{"code":1}}]}}"#)),
        Some("P".into())
    );
    assert_eq!(
        key(r#"{"contacts":[{"wa_id":"C"}]}"#),
        Some("W".into()),
        "no phone number id: the entry id"
    );
    assert_eq!(
        key(&format!(r#"{{{md},"contacts":[{{"wa_id":4915100}}]}}"#)),
        Some("P:4915100".into()),
        "numbers are used as written"
    );
}

#[test]
fn an_entry_without_changes_is_one_unrouted_record_holding_the_whole_entry() {
    let body = fixture("entry_without_changes.json");
    let records = split(&routing(), "default", &body, at(AT)).expect("splits");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic, "whatsapp.unrouted");
    let envelope = envelope(&records[0]);
    assert_eq!(envelope["field"], Value::Null);
    assert_eq!(envelope["value"]["id"], "310987654321001");
    assert_eq!(envelope["value"]["time"], 1763774000);
    assert_eq!(records[0].header("wa-field"), None);
}

#[test]
fn changes_that_cannot_be_routed_keep_everything_they_carry() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"E","changes":[
        {"field":"Bad Field","value":{"a":1}},
        {"field":"messages"},
        "not an object",
        {"field":7,"value":{"b":2}}]}]}"#;
    let records = split(&routing(), "default", body, at(AT)).expect("splits");
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.topic == "whatsapp.unrouted"));
    assert_eq!(envelope(&records[0])["field"], "Bad Field");
    assert_eq!(envelope(&records[0])["value"], serde_json::json!({"a": 1}));
    assert_eq!(
        envelope(&records[1])["value"],
        serde_json::json!({"field": "messages"})
    );
    assert_eq!(envelope(&records[2])["value"], "not an object");
    assert_eq!(envelope(&records[3])["field"], 7);
    assert_eq!(envelope(&records[3])["value"], serde_json::json!({"b": 2}));
}

#[test]
fn bodies_that_are_not_notifications_are_errors_with_a_reason() {
    let cases: [(&[u8], &str); 9] = [
        (b"", "empty_body"),
        (b" \r\n\t", "empty_body"),
        (b"{\"entry\":[\xff]}", "invalid_utf8"),
        (b"hello", "invalid_json"),
        (b"{\"entry\":[", "invalid_json"),
        (b"42", "not_an_object"),
        (b"{\"object\":\"page\"}", "missing_entry"),
        (b"{\"entry\":{\"id\":\"1\"}}", "entry_not_a_list"),
        (b"[]", "no_notifications"),
    ];
    for (body, reason) in cases {
        let error = split(&routing(), "default", body, at(AT)).expect_err("not a notification");
        assert_eq!(error.reason(), reason, "{}", String::from_utf8_lossy(body));
    }
    // Empty entry lists split into nothing, which is kept as a dead letter, not dropped.
    for body in [&br#"{"entry":[]}"#[..], br#"[{"entry":[]},{"entry":[]}]"#] {
        assert!(
            split(&routing(), "default", body, at(AT))
                .expect("a shape")
                .is_empty()
        );
        let kept = to_records(&routing(), "default", body, at(AT));
        assert_eq!(kept.deadletter, Some("no_entries"));
        assert_eq!(kept.records.len(), 1);
        assert_eq!(kept.records[0].value, body);
    }
    for body in [
        &br#"[["whatsapp_business_account",[{"id":"1"}]]]"#[..],
        br#"["whatsapp_business_account"]"#,
    ] {
        let error = split(&routing(), "default", body, at(AT)).expect_err("arrays are no objects");
        assert_eq!(error.reason(), "not_an_object");
    }
    // Nesting far deeper than the parser's limit, in an array and in an object.
    for (deep, reason) in [
        (
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            "not_an_object",
        ),
        (
            format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)),
            "invalid_json",
        ),
    ] {
        let error = split(&routing(), "default", deep.as_bytes(), at(AT)).expect_err("too deep");
        assert_eq!(error.reason(), reason);
    }
}

#[test]
fn numbers_beyond_a_double_are_valid_json_and_pass_through_unchanged() {
    let huge = format!("-{}", "9".repeat(400));
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","time":1e400,"changes":[{{"field":"statuses","value":{{"n":{huge},"m":1.8e308}}}},{{"field":"messages","value":{{"n":1e309}}}}]}}]}}"#
    );
    let records = split(&routing(), "default", body.as_bytes(), at(AT)).expect("splits");
    let routed: Vec<(&str, &[u8])> = records
        .iter()
        .map(|record| (record.topic.as_str(), value_bytes(record)))
        .collect();
    let first = format!(r#"{{"n":{huge},"m":1.8e308}}"#);
    assert_eq!(
        routed,
        [
            ("whatsapp.statuses", first.as_bytes()),
            ("whatsapp.messages", &br#"{"n":1e309}"#[..]),
        ]
    );
    for record in &records {
        let envelope = String::from_utf8(record.value.clone()).expect("utf-8");
        assert!(envelope.contains(r#""entry_time":1e400,"#), "{envelope}");
    }
}

#[test]
fn an_entry_or_change_given_as_an_array_is_not_read_by_position() {
    let body = br#"{"object":"whatsapp_business_account","entry":[["E",1,[{"field":"messages","value":{}}]],{"id":"F","changes":[["messages",{}]]}]}"#;
    let records = split(&routing(), "default", body, at(AT)).expect("splits");
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.topic == "whatsapp.unrouted"));
    assert_eq!(records[0].key, None);
    assert_eq!(records[1].key.as_deref(), Some("F"));
}

#[test]
fn a_null_value_is_a_value_and_a_null_field_is_unroutable() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"statuses","value":null},{"field":null,"value":{}}]}]}"#;
    let records = split(&routing(), "default", body, at(AT)).expect("splits");
    assert_eq!(records[0].topic, "whatsapp.statuses");
    assert_eq!(value_bytes(&records[0]), b"null");
    assert_eq!(records[1].topic, "whatsapp.unrouted");
    assert_eq!(value_bytes(&records[1]), b"{}");
    let error = split(&routing(), "default", br#"{"entry":null}"#, at(AT)).expect_err("no list");
    assert_eq!(error.reason(), "entry_not_a_list");
}

#[test]
fn deep_nesting_inside_a_value_is_passed_through_without_recursion() {
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{deep}}}]}}]}}"#
    );
    let records = split(&routing(), "default", body.as_bytes(), at(AT)).expect("splits");
    assert_eq!(value_bytes(&records[0]), deep.as_bytes());
}

#[test]
fn a_dead_letter_keeps_the_raw_body_and_says_why() {
    let record = dead_letter(
        &routing(),
        "default",
        b"\xffnot json",
        "invalid_utf8",
        at(AT),
    );
    assert_eq!(record.topic, "whatsapp.deadletter");
    assert_eq!(record.value, b"\xffnot json");
    assert_eq!(
        record.headers,
        vec![
            ("wa-app", "default".to_owned()),
            ("wa-error", "invalid_utf8".to_owned()),
            ("wa-received-at", AT.to_owned()),
        ]
    );
}

#[test]
fn timestamps_are_rfc3339_utc_with_milliseconds() {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_602_782_939_456);
    assert_eq!(timestamp(at), "2020-10-15T17:28:59.456Z");
}
