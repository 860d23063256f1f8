//! Properties of the split over generated bodies (proptest): it never panics; an
//! authentic body that is not a notification is kept whole as one dead letter; and in a
//! notification every change ends up in exactly one record, its value bytes unchanged,
//! however the JSON is spaced, escaped or ordered. Every split is also compared with the
//! level-by-level reference split.

use proptest::collection::vec;
use proptest::prelude::*;
use waba_gateway::config::KafkaSettings;
use waba_gateway::envelope::{Record, split_by_levels, to_records};
use waba_gateway::routing::{Routing, SplitBy};

use crate::helpers::envelope_value_bytes;

const AT: &str = "2026-11-22T00:00:00.000Z";

/// [`AT`] as the time the gateway passes around.
fn at(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(text).expect("an RFC 3339 time")
}

/// The split of `body`, checked against the level-by-level reference: the same records,
/// or a dead letter where the reference finds no notification or no record.
fn split(body: &[u8]) -> waba_gateway::envelope::Split {
    split_with(&KafkaSettings::default().routing(), body)
}

/// [`split`] with another routing.
fn split_with(routing: &Routing, body: &[u8]) -> waba_gateway::envelope::Split {
    let routing = routing.clone();
    let split = to_records(&routing, "default", body, at(AT));
    match split_by_levels(&routing, "default", body, at(AT)) {
        Ok(records) if records.is_empty() => assert_eq!(split.deadletter, Some("no_entries")),
        Ok(records) => assert_eq!(split.records, records, "{}", String::from_utf8_lossy(body)),
        Err(error) => assert_eq!(split.deadletter, Some(error.reason())),
    }
    split
}

/// JSON white space, often none.
fn space() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => vec(prop_oneof![Just(' '), Just('\n'), Just('\t'), Just('\r')], 1..4)
            .prop_map(|chars| chars.into_iter().collect()),
    ]
}

/// A JSON string literal with any characters, written raw or escaped in every way JSON
/// allows (`\/`, `\u00e9`, surrogate pairs).
fn string_literal() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        // Raw: anything but the quote, the backslash and control characters.
        4 => prop_oneof![
            prop::char::range(' ', '!'),
            prop::char::range('#', '['),
            prop::char::range(']', '~'),
            prop::char::range('\u{a0}', '\u{d7ff}'),
            prop::char::range('\u{e000}', '\u{10ffff}'),
        ]
        .prop_map(String::from),
        1 => prop_oneof![
            Just(r#"\""#),
            Just(r"\\"),
            Just(r"\/"),
            Just(r"\n"),
            Just(r"\t"),
            Just(r"\b"),
            Just(r"\f"),
            Just(r"\r"),
            Just(r"\ud83d\ude00"),
        ]
        .prop_map(str::to_owned),
        1 => (0u16..0xd800).prop_map(|unit| format!(r"\u{unit:04x}")),
        1 => (0xe000u16..=0xffff).prop_map(|unit| format!(r"\u{unit:04X}")),
    ];
    vec(piece, 0..10).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// Any JSON number that fits a double.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
    ]
}

/// Any JSON value, as text, nested a few levels, spaced at random.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string_literal(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            (vec((space(), inner.clone(), space()), 0..6)).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(before, item, after)| format!("{before}{item}{after}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            vec((string_literal(), space(), inner), 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(key, space, value)| format!("{key}{space}:{space}{value}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// One change as written in the body, and the bytes its record must carry as `value`.
#[derive(Debug, Clone)]
struct Change {
    text: String,
    value: String,
}

fn change() -> impl Strategy<Value = Change> {
    let field = prop_oneof![
        Just("\"messages\"".to_owned()),
        Just("\"statuses\"".to_owned()),
        Just("\"message_template_status_update\"".to_owned()),
        Just("\"Not A Field!\"".to_owned()),
        string_literal(),
        number(),
    ];
    prop_oneof![
        // The usual change: `field` and `value`, in either order.
        4 => (field.clone(), json_value(), any::<bool>(), space()).prop_map(
            |(field, value, value_first, space)| {
                let text = if value_first {
                    format!(r#"{{{space}"value"{space}:{space}{value},"field":{field}}}"#)
                } else {
                    format!(r#"{{"field":{space}{field}{space},"value":{value}{space}}}"#)
                };
                Change { text, value }
            }
        ),
        // No value: the whole change is kept.
        1 => field.prop_map(|field| {
            let text = format!(r#"{{"field":{field}}}"#);
            Change { text: text.clone(), value: text }
        }),
        // Not even an object: kept whole too.
        1 => json_value()
            .prop_filter("not an object", |value| !value.starts_with('{'))
            .prop_map(|value| Change { text: value.clone(), value }),
    ]
}

/// A notification (or an array of them) and its changes in order.
fn notification() -> impl Strategy<Value = (String, Vec<Change>)> {
    let entry = (
        vec(change(), 1..5),
        prop_oneof![string_literal(), number()],
        number(),
        space(),
    )
        .prop_map(|(changes, id, time, space)| {
            let list: Vec<&str> = changes.iter().map(|c| c.text.as_str()).collect();
            let text = format!(
                r#"{{"id":{id},{space}"time":{time},"changes":[{space}{}{space}]}}"#,
                list.join(&format!("{space},"))
            );
            (text, changes)
        });
    let one = (vec(entry, 1..4), space()).prop_map(|(entries, space)| {
        let texts: Vec<&str> = entries.iter().map(|(text, _)| text.as_str()).collect();
        let text = format!(
            r#"{space}{{"object":"whatsapp_business_account",{space}"entry":[{}]}}{space}"#,
            texts.join(",")
        );
        let changes = entries
            .into_iter()
            .flat_map(|(_, changes)| changes)
            .collect();
        (text, changes)
    });
    (vec(one, 1..3), any::<bool>()).prop_map(|(notifications, as_array)| {
        if !as_array {
            return notifications.into_iter().next().expect("one at least");
        }
        let texts: Vec<&str> = notifications
            .iter()
            .map(|(text, _)| text.as_str())
            .collect();
        let text = format!("[{}]", texts.join(","));
        let changes = notifications
            .into_iter()
            .flat_map(|(_, changes)| changes)
            .collect();
        (text, changes)
    })
}

/// An item of a generated value: its array, its text and its customer.
type GeneratedItem = (&'static str, String, Option<String>);

/// A `messages` value with any mix of messages, statuses, errors, contacts and members
/// the gateway does not know, in any order: its text, and each item.
fn messages_value() -> impl Strategy<Value = (String, Vec<GeneratedItem>)> {
    let customer = prop::sample::select(vec!["111", "222", "333"]);
    let extra = || (json_value(), space());
    let message = (customer.clone(), 0u32..1000, extra()).prop_map(|(c, n, (x, sp))| {
        (
            format!(r#"{{"from":"{c}",{sp}"id":"wamid.M{n}","x":{x}}}"#),
            Some(c.to_owned()),
        )
    });
    let status = (
        customer.clone(),
        0u32..1000,
        prop::sample::select(vec!["sent", "delivered", "read", "failed"]),
        extra(),
    )
        .prop_map(|(c, n, st, (x, sp))| {
            (
                format!(
                    r#"{{"id":"wamid.S{n}","status":"{st}",{sp}"recipient_id":"{c}","x":{x}}}"#
                ),
                Some(c.to_owned()),
            )
        });
    let error = (0u32..200000, json_value())
        .prop_map(|(code, x)| (format!(r#"{{"code":{code},"x":{x}}}"#), None));
    let contact =
        (customer, json_value()).prop_map(|(c, x)| format!(r#"{{"wa_id":"{c}","profile":{x}}}"#));
    (
        vec(message, 0..4),
        vec(status, 0..4),
        vec(error, 0..3),
        prop::option::of(vec(contact, 0..4)),
        vec(json_value(), 0..3),
        space(),
    )
        .prop_flat_map(|(messages, statuses, errors, contacts, unknown, sp)| {
            let mut members = vec![format!(r#""metadata":{{"phone_number_id":"1065"}}"#)];
            let mut items = Vec::new();
            for (name, list) in [
                ("messages", messages),
                ("statuses", statuses),
                ("errors", errors),
            ] {
                if list.is_empty() && name != "messages" {
                    continue;
                }
                let texts: Vec<&str> = list.iter().map(|(text, _)| text.as_str()).collect();
                members.push(format!(
                    r#""{name}":[{sp}{}]"#,
                    texts.join(&format!(",{sp}"))
                ));
                items.extend(
                    list.into_iter()
                        .map(|(text, customer)| (name, text, customer)),
                );
            }
            if let Some(contacts) = contacts {
                members.push(format!(r#""contacts":[{}]"#, contacts.join(",")));
            }
            for (n, value) in unknown.into_iter().enumerate() {
                members.push(format!(r#""unknown_{n}":{value}"#));
            }
            (Just(members).prop_shuffle(), Just(items), Just(sp))
        })
        .prop_map(|(members, items, sp)| {
            (
                format!("{{{sp}{}{sp}}}", members.join(&format!("{sp},"))),
                items,
            )
        })
}

fn assert_one_dead_letter(body: &[u8], records: &[Record]) {
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic, "whatsapp.deadletter");
    assert_eq!(records[0].value, body);
    assert!(records[0].header("wa-error").is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_change_is_in_exactly_one_record_with_its_value_bytes((body, changes) in notification()) {
        let split = split(body.as_bytes());
        prop_assert_eq!(split.deadletter, None, "{}", body);
        prop_assert_eq!(split.records.len(), changes.len());
        for (record, change) in split.records.iter().zip(&changes) {
            prop_assert_eq!(
                std::str::from_utf8(envelope_value_bytes(&record.value)).expect("UTF-8"),
                change.value.as_str()
            );
            // Every envelope is itself valid JSON.
            serde_json::from_slice::<serde_json::Value>(&record.value).expect("a JSON envelope");
        }
    }

    #[test]
    fn any_bytes_split_without_panic_or_are_kept_whole(body in vec(any::<u8>(), 0..512)) {
        let split = split(&body);
        if split.deadletter.is_some() {
            assert_one_dead_letter(&body, &split.records);
        }
    }

    #[test]
    fn any_json_splits_without_panic_or_is_kept_whole(body in json_value()) {
        let split = split(body.as_bytes());
        if split.deadletter.is_some() {
            assert_one_dead_letter(body.as_bytes(), &split.records);
        } else {
            prop_assert!(!split.records.is_empty());
        }
    }

    #[test]
    fn a_notification_cut_short_is_kept_whole((body, _) in notification(), cut in any::<prop::sample::Index>()) {
        let bytes = body.trim_end().as_bytes();
        let short = &bytes[..cut.index(bytes.len())];
        let split = split(short);
        prop_assert!(split.deadletter.is_some(), "{}", String::from_utf8_lossy(short));
        assert_one_dead_letter(short, &split.records);
    }

    #[test]
    fn item_mode_gives_every_item_once_cut_from_the_body((value, items) in messages_value()) {
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"9","changes":[{{"field":"messages","value":{value}}}]}}]}}"#
        );
        let routing = KafkaSettings::default().routing().with_split(SplitBy::Item);
        let split = split_with(&routing, body.as_bytes());
        prop_assert_eq!(split.deadletter, None);
        if items.is_empty() {
            prop_assert_eq!(split.records.len(), 1);
            prop_assert_eq!(envelope_value_bytes(&split.records[0].value), value.as_bytes());
            return Ok(());
        }
        // Records come in the order of the arrays in the value, then of the items.
        let mut expected = items.clone();
        expected.sort_by_key(|(array, _, _)| value.find(&format!("\"{array}\"")));
        prop_assert_eq!(split.records.len(), expected.len());
        // Each item is its own event.
        let ids: std::collections::BTreeSet<_> =
            split.records.iter().map(|r| r.header("wa-event-id")).collect();
        prop_assert_eq!(ids.len(), expected.len());
        let top: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
            serde_json::from_str(&value).expect("the value is an object");
        for (record, (array, text, customer)) in split.records.iter().zip(&expected) {
            let cut: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
                serde_json::from_slice(envelope_value_bytes(&record.value)).expect("an object");
            // Its own array holds just the item, byte for byte; the other two are gone.
            prop_assert_eq!(cut[*array].get(), format!("[{text}]"));
            for other in ["messages", "statuses", "errors"].iter().filter(|a| *a != array) {
                prop_assert!(!cut.contains_key(*other));
            }
            // Every other member is kept, byte for byte: nothing is dropped.
            for (name, raw) in &top {
                if ["messages", "statuses", "errors", "contacts"].contains(&name.as_str()) {
                    continue;
                }
                prop_assert_eq!(cut[name].get(), raw.get());
            }
            // Contacts are cut down to ones of the body.
            if let Some(contacts) = cut.get("contacts") {
                let contacts: Vec<&serde_json::value::RawValue> = serde_json::from_str(contacts.get()).expect("a list");
                prop_assert!(!contacts.is_empty());
                for contact in contacts {
                    prop_assert!(body.contains(contact.get()));
                }
            }
            let key = match customer {
                Some(customer) => format!("1065:{customer}"),
                None => "1065".to_owned(),
            };
            prop_assert_eq!(record.key.as_deref(), Some(key.as_str()));
        }
    }
}
