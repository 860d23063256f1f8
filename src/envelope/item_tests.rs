//! Item mode (DESIGN §6) over bodies written for it and over every fixture.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::routing::SplitBy;

const AT: &str = "2026-11-22T01:02:03.456Z";

fn items(overrides: &[(&str, &str)]) -> Routing {
    Routing::new(
        "whatsapp.{field}",
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        "whatsapp.unrouted",
        "whatsapp.deadletter",
    )
    .with_split(SplitBy::Item)
}

fn split_items(routing: &Routing, body: &str) -> Vec<Record> {
    let at = humantime::parse_rfc3339(AT).expect("time");
    let records = split(routing, "default", body.as_bytes(), at).expect("splits");
    let reference = split_by_levels(routing, "default", body.as_bytes(), at).expect("splits");
    assert_eq!(records, reference, "the one pass and the reference differ");
    records
}

fn envelope(record: &Record) -> Value {
    serde_json::from_slice(&record.value).expect("the envelope is JSON")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn change(value: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","time":1700000000,"changes":[{{"field":"messages","value":{value}}}]}}]}}"#
    )
}

const META: &str = r#""messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}"#;

#[test]
fn statuses_of_three_customers_are_three_records_on_their_own_keys() {
    let statuses = [
        r#"{"id":"wamid.A","status":"delivered","timestamp":"1700000001","recipient_id":"16505551111"}"#,
        r#"{"id":"wamid.B","status":"read","timestamp":"1700000002","recipient_id":"16505552222","pricing":{"billable":true}}"#,
        r#"{"id":"wamid.C","status":"failed","timestamp":"1700000003","recipient_id":"16505553333","errors":[{"code":131047}]}"#,
    ];
    let body = change(&format!(
        r#"{{{META},"statuses":[{}]}}"#,
        statuses.join(",")
    ));
    let records = split_items(&items(&[]), &body);
    assert_eq!(records.len(), 3);
    for (index, (record, status)) in records.iter().zip(statuses).enumerate() {
        let customer = ["16505551111", "16505552222", "16505553333"][index];
        assert_eq!(record.topic, "whatsapp.messages");
        assert_eq!(
            record.key.as_deref(),
            Some(format!("106540352242922:{customer}").as_str())
        );
        assert_eq!(record.header("wa-item-kind"), Some("status"));
        assert_eq!(
            record.header("wa-message-id"),
            Some(["wamid.A", "wamid.B", "wamid.C"][index])
        );
        assert_eq!(
            record.header("wa-status"),
            Some(["delivered", "read", "failed"][index])
        );
        assert_eq!(record.header("wa-phone-number-id"), Some("106540352242922"));
        let expected_value = format!(r#"{{{META},"statuses":[{status}]}}"#);
        assert!(
            record
                .value
                .ends_with(format!(r#","value":{expected_value}}}"#).as_bytes()),
            "{}",
            String::from_utf8_lossy(&record.value)
        );
        let envelope = envelope(record);
        assert_eq!(envelope["item_kind"], "status");
        assert_eq!(envelope["item_index"], index);
        assert_eq!(envelope["field"], "messages");
        assert_eq!(record.counts_change, index == 0);
    }
    let ids: std::collections::BTreeSet<_> =
        records.iter().map(|r| r.header("wa-event-id")).collect();
    assert_eq!(ids.len(), 3, "each item has its own event id");
    // A retry of the same change gives the same ids.
    let again = split_items(&items(&[]), &body);
    assert_eq!(records, again);
}

#[test]
fn a_message_keeps_its_own_contact_and_every_other_member_in_place() {
    let value = r#"{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1065"},"contacts":[{"profile":{"name":"Ann"},"wa_id":"111"},{"profile":{"name":"Bo"},"wa_id":"222","user_id":"US.9"}],"messages":[{"from":"111","id":"wamid.1","type":"text","text":{"body":"h\u00e9llo \/ x"}},{"from_user_id":"US.9","id":"wamid.2","type":"text","text":{"body":"hi"}}],"future_member":{"x":[1,2]}}"#;
    let records = split_items(&items(&[]), &change(value));
    assert_eq!(records.len(), 2);
    let values: Vec<Value> = records
        .iter()
        .map(|r| envelope(r)["value"].clone())
        .collect();
    assert_eq!(
        values[0],
        json!({"messaging_product":"whatsapp","metadata":{"phone_number_id":"1065"},
               "contacts":[{"profile":{"name":"Ann"},"wa_id":"111"}],
               "messages":[{"from":"111","id":"wamid.1","type":"text","text":{"body":"héllo / x"}}],
               "future_member":{"x":[1,2]}})
    );
    assert_eq!(
        values[1]["contacts"],
        json!([{"profile":{"name":"Bo"},"wa_id":"222","user_id":"US.9"}])
    );
    assert_eq!(records[0].key.as_deref(), Some("1065:111"));
    assert_eq!(records[1].key.as_deref(), Some("1065:US.9"));
    assert_eq!(records[1].header("wa-message-id"), Some("wamid.2"));
    assert_eq!(records[0].header("wa-status"), None);
    // Escapes stay as Meta wrote them: the item is a slice of the body.
    assert!(contains(&records[0].value, r#""body":"h\u00e9llo \/ x""#));
    // Member order is the body's.
    let text = String::from_utf8_lossy(&records[0].value);
    let text = &text[text.find("\"value\":").expect("value")..];
    let order: Vec<usize> = [
        "\"metadata\"",
        "\"contacts\"",
        "\"messages\"",
        "\"future_member\"",
    ]
    .iter()
    .map(|name| text.find(name).expect("member kept"))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn the_only_contact_goes_with_an_item_that_names_no_contact() {
    let value = r#"{"metadata":{"phone_number_id":"1065"},"contacts":[{"wa_id":"111"}],"messages":[{"from":"999","id":"wamid.1"}],"errors":[{"code":131051,"title":"Unsupported message type"}]}"#;
    let records = split_items(&items(&[]), &change(value));
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(
            envelope(record)["value"]["contacts"],
            json!([{"wa_id":"111"}])
        );
    }
    let error = &records[1];
    assert_eq!(error.header("wa-item-kind"), Some("error"));
    assert_eq!(error.key.as_deref(), Some("1065"));
    assert_eq!(
        envelope(error)["value"]["errors"],
        json!([{"code":131051,"title":"Unsupported message type"}])
    );
    assert!(envelope(error)["value"].get("messages").is_none());
    assert!(envelope(&records[0])["value"].get("errors").is_none());

    // Two contacts, neither the item's: none goes with it.
    let value = r#"{"metadata":{"phone_number_id":"1065"},"contacts":[{"wa_id":"1"},{"wa_id":"2"}],"statuses":[{"id":"w","status":"sent","recipient_id":"3"}]}"#;
    let records = split_items(&items(&[]), &change(value));
    assert!(envelope(&records[0])["value"].get("contacts").is_none());
    assert_eq!(records[0].key.as_deref(), Some("1065:3"));
}

#[test]
fn items_go_to_their_kind_topic_when_one_is_set() {
    let routing = items(&[
        ("messages.status", "wa.statuses"),
        ("messages", "wa.inbound"),
    ]);
    assert!(routing.problems().is_empty(), "{:?}", routing.problems());
    let value = r#"{"metadata":{"phone_number_id":"1"},"messages":[{"from":"2","id":"m"}],"statuses":[{"id":"s","status":"sent","recipient_id":"2"}]}"#;
    let records = split_items(&routing, &change(value));
    let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["wa.inbound", "wa.statuses"]);
    let bad = items(&[("messages.reaction", "x"), ("calls.status", "y")]);
    let problems = bad.problems().join("\n");
    assert!(
        problems.contains("kafka.topics.\"messages.reaction\""),
        "{problems}"
    );
    assert!(
        problems.contains("kafka.topics.\"calls.status\""),
        "{problems}"
    );
}

#[test]
fn other_fields_and_changes_without_items_stay_one_record() {
    for value in [
        r#"{"metadata":{"phone_number_id":"1"}}"#,
        r#"{"metadata":{"phone_number_id":"1"},"messages":[],"statuses":{"not":"a list"}}"#,
        r#"["not","an","object"]"#,
    ] {
        let body = change(value);
        let by_items = split_items(&items(&[]), &body);
        let by_changes = split_items(&items(&[]).with_split(SplitBy::Change), &body);
        assert_eq!(by_items, by_changes, "{value}");
        assert_eq!(by_items[0].header("wa-item-kind"), None);
    }
    let body = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/message_template_status_update.json"),
    )
    .expect("fixture");
    assert_eq!(
        split_items(&items(&[]), &body),
        split_items(&items(&[]).with_split(SplitBy::Change), &body)
    );
}

#[test]
fn cloudevents_headers_are_on_routed_records_only_when_on() {
    let body = change(
        r#"{"metadata":{"phone_number_id":"1"},"statuses":[{"id":"s","status":"sent","recipient_id":"2"}]}"#,
    );
    let records = split_items(&items(&[]).with_cloudevents(true), &body);
    let record = &records[0];
    assert_eq!(record.header("ce_specversion"), Some("1.0"));
    assert_eq!(record.header("ce_id"), record.header("wa-event-id"));
    assert_eq!(
        record.header("ce_source"),
        Some("urn:waba-gateway:default:102290129340398")
    );
    assert_eq!(
        record.header("ce_type"),
        Some("com.whatsapp.messages.status")
    );
    assert_eq!(record.header("ce_time"), Some(AT));
    assert_eq!(record.header("content-type"), Some("application/json"));
    let change_mode = split_items(
        &items(&[])
            .with_split(SplitBy::Change)
            .with_cloudevents(true),
        &body,
    );
    assert_eq!(
        change_mode[0].header("ce_type"),
        Some("com.whatsapp.messages")
    );
    let off = split_items(&items(&[]), &body);
    assert!(
        off[0]
            .headers
            .iter()
            .all(|(name, _)| !name.starts_with("ce_"))
    );
    // Unrouted records are not events of a field.
    let unrouted = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"Bad Field","value":{}},{"field":"messages"}]}]}"#;
    for record in split_items(&items(&[]).with_cloudevents(true), unrouted) {
        assert_eq!(record.topic, "whatsapp.unrouted");
        assert!(
            record
                .headers
                .iter()
                .all(|(name, _)| !name.starts_with("ce_")),
            "{record:?}"
        );
    }
}

/// Every fixture, the project's and Meta's: each item of each `messages` change is in
/// exactly one record, its bytes verbatim; every other change is its change-mode record.
#[test]
fn every_fixture_gives_each_item_exactly_once_byte_for_byte() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bodies = Vec::new();
    for dir in [
        root.join("tests/fixtures"),
        root.join("../shared/fixtures/meta-payloads"),
    ] {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in listing.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|e| e == "json") && !path.ends_with("expected.json") {
                bodies.push((
                    path.clone(),
                    std::fs::read_to_string(&path).expect("fixture"),
                ));
            }
        }
    }
    assert!(bodies.len() >= 40, "only {} fixtures", bodies.len());
    let mut items_seen = 0;
    for (path, body) in &bodies {
        let at = humantime::parse_rfc3339(AT).expect("time");
        let Ok(records) = split(&items(&[]), "default", body.as_bytes(), at) else {
            continue;
        };
        let changes = split(
            &items(&[]).with_split(SplitBy::Change),
            "default",
            body.as_bytes(),
            at,
        )
        .expect("splits in change mode too");
        let mut records = records.iter().peekable();
        for change in &changes {
            let value: Value = envelope(change)["value"].clone();
            let expected: Vec<(&str, &str, &Value)> = ["messages", "statuses", "errors"]
                .iter()
                .filter(|_| change.header("wa-field") == Some("messages"))
                .flat_map(|array| {
                    value
                        .get(*array)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(move |item| {
                            (
                                *array,
                                ItemKind::of_array(array).expect("kind").as_str(),
                                item,
                            )
                        })
                })
                .collect();
            if expected.is_empty() {
                assert_eq!(records.next(), Some(change), "{}", path.display());
                continue;
            }
            for (index_in_change, (array, kind, item)) in expected.iter().enumerate() {
                let record = records
                    .next()
                    .unwrap_or_else(|| panic!("{}: an item is missing", path.display()));
                let got = envelope(record);
                assert_eq!(got["item_kind"], *kind, "{}", path.display());
                assert_eq!(&got["value"][array], &json!([item]), "{}", path.display());
                assert_eq!(record.counts_change, index_in_change == 0);
                // The item's bytes, as they are in the body, are in the record.
                let raw = raw_items(body, array);
                assert!(
                    raw.iter().any(|raw| contains(&record.value, raw)),
                    "{}",
                    path.display()
                );
                items_seen += 1;
            }
        }
        assert!(
            records.next().is_none(),
            "{}: records beyond the items",
            path.display()
        );
    }
    assert!(items_seen >= 40, "only {items_seen} items");
}

/// The raw text of each element of every `array` member in a body.
fn raw_items<'a>(body: &'a str, array: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let needle = format!("\"{array}\"");
    let mut rest = body;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        let Some(open) = rest.find('[') else { break };
        if let Ok(items) = serde_json::Deserializer::from_str(&rest[open..])
            .into_iter::<Vec<&RawValue>>()
            .next()
            .expect("a value")
        {
            found.extend(items.into_iter().map(RawValue::get));
        }
    }
    found
}

#[test]
fn every_other_member_named_like_an_item_array_is_left_out_of_an_item() {
    // A second `statuses` and an `errors` that is not a list: neither is the item's.
    let value = r#"{"metadata":{"phone_number_id":"1"},"statuses":[{"id":"s","status":"sent","recipient_id":"2"}],"errors":"not a list","statuses":[{"id":"t","status":"read","recipient_id":"3"}],"kept":1}"#;
    let records = split_items(&items(&[]), &change(value));
    assert_eq!(records.len(), 2);
    // Both are item 0 of a statuses array, and still two events.
    assert_ne!(
        records[0].header("wa-event-id"),
        records[1].header("wa-event-id")
    );
    for (record, item) in records.iter().zip([
        r#"{"id":"s","status":"sent","recipient_id":"2"}"#,
        r#"{"id":"t","status":"read","recipient_id":"3"}"#,
    ]) {
        assert!(
            record.value.ends_with(
                format!(r#""value":{{"metadata":{{"phone_number_id":"1"}},"statuses":[{item}],"kept":1}}}}"#)
                    .as_bytes()
            ),
            "{}",
            String::from_utf8_lossy(&record.value)
        );
    }
}
