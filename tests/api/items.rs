//! Item mode (DESIGN §6) through the real producer on librdkafka's mock cluster: every
//! fixture, the project's and Meta's, posted signed in both ack modes; each item of a
//! `messages` change read back from Kafka exactly once, its bytes verbatim, on its
//! customer's key, with its kind, index and headers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::mocking::MockCluster;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::helpers::*;

/// One item as the gateway must publish it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    kind: &'static str,
    index: usize,
    key: String,
    raw: String,
    message_id: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(borrow)]
    entry: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    changes: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Change<'a> {
    field: Option<String>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

fn text(raw: Option<&&RawValue>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(raw?.get()).ok()?;
    match value {
        serde_json::Value::String(text) if !text.is_empty() => Some(text),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The items of every `messages` change of `body`, and how many `messages` changes it has
/// (each without items being one record of its own).
fn expected_items(body: &str) -> (Vec<Item>, usize, usize) {
    let notifications: Vec<Notification<'_>> = match body.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str(body).unwrap_or_default(),
        _ => serde_json::from_str(body)
            .map(|n| vec![n])
            .unwrap_or_default(),
    };
    let (mut items, mut changes, mut without_items) = (Vec::new(), 0, 0);
    for entry in notifications.iter().flat_map(|n| &n.entry) {
        let Ok(entry) = serde_json::from_str::<Entry<'_>>(entry.get()) else {
            continue;
        };
        for change in &entry.changes {
            let Ok(Change {
                field: Some(field),
                value: Some(value),
            }) = serde_json::from_str(change.get())
            else {
                continue;
            };
            if field != "messages" {
                continue;
            }
            changes += 1;
            let members: BTreeMap<String, &RawValue> =
                serde_json::from_str(value.get()).unwrap_or_default();
            let metadata: BTreeMap<String, &RawValue> = members
                .get("metadata")
                .and_then(|m| serde_json::from_str(m.get()).ok())
                .unwrap_or_default();
            let phone = text(metadata.get("phone_number_id"));
            let before = items.len();
            for (array, kind, customer, user) in [
                ("messages", "message", "from", "from_user_id"),
                ("statuses", "status", "recipient_id", "recipient_user_id"),
                ("errors", "error", "", ""),
            ] {
                let list: Vec<&RawValue> = members
                    .get(array)
                    .and_then(|l| serde_json::from_str(l.get()).ok())
                    .unwrap_or_default();
                for (index, raw) in list.into_iter().enumerate() {
                    let item: BTreeMap<String, &RawValue> =
                        serde_json::from_str(raw.get()).unwrap_or_default();
                    let customer = text(item.get(customer)).or_else(|| text(item.get(user)));
                    let key = match (&phone, customer) {
                        (Some(phone), Some(customer)) => format!("{phone}:{customer}"),
                        (Some(phone), None) => phone.clone(),
                        (None, _) => text(entry.id.as_ref()).unwrap_or_default(),
                    };
                    items.push(Item {
                        kind,
                        index,
                        key,
                        raw: raw.get().to_owned(),
                        message_id: text(item.get("id")),
                        status: (kind == "status")
                            .then(|| text(item.get("status")))
                            .flatten(),
                    });
                }
            }
            if items.len() == before {
                without_items += 1;
            }
        }
    }
    (items, changes, without_items)
}

/// Three customers' statuses batched into one change, as Meta sends them.
const BATCHED_STATUSES: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"statuses":[{"id":"wamid.AAA","status":"delivered","timestamp":"1750263773","recipient_id":"16505551111"},{"id":"wamid.BBB","status":"read","timestamp":"1750263774","recipient_id":"16505552222"},{"id":"wamid.CCC","status":"sent","timestamp":"1750263775","recipient_id":"16505553333"}]},"field":"messages"}]}]}"#;

fn bodies() -> Vec<(String, String)> {
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")];
    dirs.push(shared_fixtures_dir());
    let mut bodies = vec![("batched statuses".to_owned(), BATCHED_STATUSES.to_owned())];
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("readable")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("expected.json"))
            .collect();
        paths.sort();
        for path in paths {
            if let Ok(body) = std::fs::read_to_string(&path) {
                bodies.push((path.display().to_string(), body));
            }
        }
    }
    bodies
}

async fn every_item_once_through_kafka(ack: &str, cloudevents: bool) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let spool = tempfile::tempdir().expect("a spool directory");
    let spool_dir = spool.path().join("spool");
    let app = spawn_kafka_app(
        &brokers,
        &[
            ("WABA_GATEWAY__ROUTING__SPLIT", "item"),
            (
                "WABA_GATEWAY__KAFKA__CLOUDEVENTS",
                if cloudevents { "true" } else { "false" },
            ),
            ("WABA_GATEWAY__DELIVERY__ACK", ack),
            (
                "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
                spool_dir.to_str().expect("UTF-8 path"),
            ),
        ],
    )
    .await;
    app.wait_ready().await;

    let (mut expected, mut changes, mut without_items) = (Vec::new(), 0, 0);
    for (name, body) in bodies() {
        let answer = app.notify(body.as_bytes()).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        let (items, body_changes, body_without) = expected_items(&body);
        expected.extend(items);
        changes += body_changes;
        without_items += body_without;
    }
    assert!(expected.len() >= 80, "only {} items", expected.len());

    let count = expected.len() + without_items;
    let records = consume(&brokers, &["whatsapp.messages"], count);
    assert_eq!(
        records.len(),
        count,
        "one record per item, one per messages change without items"
    );
    let mut got = Vec::new();
    for record in &records {
        let envelope = record.json();
        let Some(kind) = envelope["item_kind"].as_str() else {
            assert!(!record.headers.contains_key("wa-item-kind"));
            continue;
        };
        let array = match kind {
            "message" => "messages",
            "status" => "statuses",
            "error" => "errors",
            other => panic!("item kind {other}"),
        };
        let value: BTreeMap<String, &RawValue> =
            serde_json::from_slice(envelope_value_bytes(&record.value)).expect("an object");
        let list: Vec<&RawValue> = serde_json::from_str(value[array].get()).expect("a list");
        assert_eq!(list.len(), 1, "the item alone in its array");
        for other in ["messages", "statuses", "errors"]
            .iter()
            .filter(|a| **a != array)
        {
            assert!(
                !value.contains_key(*other),
                "{other} left out of a {kind} record"
            );
        }
        assert_eq!(record.headers["wa-item-kind"], kind);
        assert_eq!(record.headers["wa-field"], "messages");
        assert!(record.headers.contains_key("wa-phone-number-id"));
        if cloudevents {
            assert_eq!(record.headers["ce_specversion"], "1.0");
            assert_eq!(record.headers["ce_id"], record.headers["wa-event-id"]);
            assert_eq!(
                record.headers["ce_type"],
                format!("com.whatsapp.messages.{kind}")
            );
            assert_eq!(
                record.headers["ce_time"],
                envelope["received_at"].as_str().expect("time")
            );
            assert!(record.headers["ce_source"].starts_with("urn:waba-gateway:default:"));
        } else {
            assert!(
                record.headers.keys().all(|name| !name.starts_with("ce_")),
                "{:?}",
                record.headers
            );
        }
        got.push(Item {
            kind: match kind {
                "message" => "message",
                "status" => "status",
                _ => "error",
            },
            index: envelope["item_index"].as_u64().expect("item_index") as usize,
            key: record.key.clone().expect("a key"),
            raw: list[0].get().to_owned(),
            message_id: record.headers.get("wa-message-id").cloned(),
            status: record.headers.get("wa-status").cloned(),
        });
    }
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "each item exactly once, its bytes, key, kind, index and headers"
    );

    // The batched statuses: three records, on the keys of their three customers.
    let batched: Vec<&Consumed> = records
        .iter()
        .filter(|r| {
            r.headers
                .get("wa-message-id")
                .is_some_and(|id| ["wamid.AAA", "wamid.BBB", "wamid.CCC"].contains(&id.as_str()))
        })
        .collect();
    let mut keys: Vec<&str> = batched.iter().filter_map(|r| r.key.as_deref()).collect();
    // Read from several partitions: the order across them is not Kafka's to keep.
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "106540352242922:16505551111",
            "106540352242922:16505552222",
            "106540352242922:16505553333"
        ]
    );
    // Changes are still counted once each.
    assert_eq!(
        app.metric(r#"waba_gateway_changes_total{app="default",field="messages"}"#)
            .await,
        changes as f64
    );
    eprintln!(
        "{ack} mode: {} items from {changes} messages changes read back",
        expected.len()
    );
    app.stop().await.expect("stops");
}

#[cfg_attr(
    missing_meta_payloads,
    ignore = "needs ../shared/fixtures/meta-payloads beside the repository"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_of_every_fixture_is_one_record_in_kafka_mode() {
    every_item_once_through_kafka("kafka", true).await;
}

#[cfg_attr(
    missing_meta_payloads,
    ignore = "needs ../shared/fixtures/meta-payloads beside the repository"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_of_every_fixture_is_one_record_in_spool_mode() {
    every_item_once_through_kafka("spool", false).await;
}
