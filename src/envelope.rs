//! Splits a verified notification body into Kafka records: one per `entry[].changes[]`.
//!
//! Pure: bytes in, records out, no I/O. Invariants:
//! - every change of the body ends up in exactly one record, and the change's `value` is
//!   copied byte for byte (escapes such as `\u00e9` and `\/` included): it is never parsed
//!   into a tree and re-serialised;
//! - `object`, `entry.id`, `entry.time` and `field` are passed through as the JSON Meta
//!   sent, so nothing Meta sent about a change is lost even when it is malformed;
//! - `event_id` depends only on what Meta sent about the change, so a retry or a replay of
//!   the same change gets the same id;
//! - a body that is not a notification at all is an [`EnvelopeError`]; the caller keeps it
//!   on the dead-letter topic with [`dead_letter`].

use std::borrow::Cow;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::routing::{Routing, field_label};

/// One Kafka record, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Partitioning key (`None` only when the entry had no id).
    pub key: Option<String>,
    /// Kafka headers, in order.
    pub headers: Vec<(&'static str, String)>,
    /// The envelope JSON, or the raw body for a dead letter.
    pub value: Vec<u8>,
    /// The metric label of the change's field (`other` for unknown ones).
    pub field: &'static str,
}

impl Record {
    /// The value of the header `name`, if the record has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why an authentic body is not a notification. It goes to the dead-letter topic with
/// [`EnvelopeError::reason`] as its `wa-error`, and Meta still gets 200.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Nothing but white space.
    #[error("the body is empty")]
    Empty,
    /// Bytes that are not UTF-8.
    #[error("the body is not valid UTF-8")]
    InvalidUtf8,
    /// Not JSON, or JSON nested deeper than the parser allows.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON, but neither an object nor an array of objects.
    #[error("the body is neither a notification object nor an array of them")]
    NotAnObject,
    /// An object without an `entry` member.
    #[error("the notification has no entry member")]
    MissingEntry,
    /// `entry` is there but is not a list.
    #[error("the notification's entry member is not a list")]
    EntryNotAList,
    /// An empty array.
    #[error("the body is an empty array")]
    NoNotifications,
    /// A number too large for a 64-bit float, which consumers' JSON parsers reject or
    /// turn into infinity.
    #[error("the body holds a number out of range")]
    NumberOutOfRange,
}

impl EnvelopeError {
    /// The fixed label used for `wa-error` and `waba_gateway_deadletters_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty_body",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson(_) => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingEntry => "missing_entry",
            Self::EntryNotAList => "entry_not_a_list",
            Self::NoNotifications => "no_notifications",
            Self::NumberOutOfRange => "number_out_of_range",
        }
    }
}

/// Formats a receive time the way every record carries it: RFC 3339, UTC, milliseconds.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A verified body as records: one per change, or the dead letter that keeps it whole.
#[derive(Debug)]
pub struct Split {
    /// The records to produce.
    pub records: Vec<Record>,
    /// Why the body went to the dead-letter topic, if it did.
    pub deadletter: Option<&'static str>,
}

/// Splits a verified body, or, when it is not a notification, makes its dead letter.
pub fn to_records(routing: &Routing, app: &str, body: &[u8], received_at: &str) -> Split {
    match split(routing, app, body, received_at) {
        Ok(records) => Split {
            records,
            deadletter: None,
        },
        Err(error) => Split {
            records: vec![dead_letter(routing, app, body, error.reason(), received_at)],
            deadletter: Some(error.reason()),
        },
    }
}

/// Splits a verified body into one record per change.
pub fn split(
    routing: &Routing,
    app: &str,
    body: &[u8],
    received_at: &str,
) -> Result<Vec<Record>, EnvelopeError> {
    let notifications = parse_notifications(body)?;
    if has_number_out_of_range(body) {
        return Err(EnvelopeError::NumberOutOfRange);
    }
    let mut records = Vec::new();
    for notification in notifications {
        for entry in notification.entries {
            split_entry(
                routing,
                app,
                notification.object,
                entry,
                received_at,
                &mut records,
            );
        }
    }
    Ok(records)
}

/// The record that keeps an authentic body that could not be split: the raw bytes as value.
pub fn dead_letter(
    routing: &Routing,
    app: &str,
    body: &[u8],
    error: &str,
    received_at: &str,
) -> Record {
    Record {
        topic: routing.deadletter().to_owned(),
        key: None,
        headers: vec![
            ("wa-app", app.to_owned()),
            ("wa-error", error.to_owned()),
            ("wa-received-at", received_at.to_owned()),
        ],
        value: body.to_vec(),
        field: "other",
    }
}

struct Notification<'a> {
    object: Option<&'a RawValue>,
    entries: Vec<&'a RawValue>,
}

/// A member that is present, even as `null`: serde reads `null` into `None` for an
/// `Option`, which would turn `"value":null` into a change without a value.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// A member that should be a list, read in the same pass as the object holding it: its
/// items as raw JSON, or `NotAList` for any other JSON value.
enum List<'a> {
    Items(Vec<&'a RawValue>),
    NotAList,
}

impl<'de> Deserialize<'de> for List<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> serde::de::Visitor<'de> for ListVisitor {
            type Value = List<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<List<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<List<'de>, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(List::NotAList)
            }
            fn visit_bool<E>(self, _: bool) -> Result<List<'de>, E> {
                Ok(List::NotAList)
            }
            fn visit_i64<E>(self, _: i64) -> Result<List<'de>, E> {
                Ok(List::NotAList)
            }
            fn visit_u64<E>(self, _: u64) -> Result<List<'de>, E> {
                Ok(List::NotAList)
            }
            fn visit_f64<E>(self, _: f64) -> Result<List<'de>, E> {
                Ok(List::NotAList)
            }
            fn visit_str<E>(self, _: &str) -> Result<List<'de>, E> {
                Ok(List::NotAList)
            }
            fn visit_unit<E>(self) -> Result<List<'de>, E> {
                Ok(List::NotAList)
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// A list member that is present, even as `null` (see [`present`]).
fn present_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<List<'de>>, D::Error> {
    List::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct NotificationShape<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    object: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_list")]
    entry: Option<List<'a>>,
}

#[derive(Deserialize)]
struct EntryShape<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    time: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_list")]
    changes: Option<List<'a>>,
}

#[derive(Deserialize)]
struct ChangeShape<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    field: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    value: Option<&'a RawValue>,
}

/// Deserializes a shape from a JSON object only. Derived structs would also accept an array
/// (member by position), which would read meaning into bodies that have none.
fn shape<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    if raw.get().starts_with('{') {
        serde_json::from_str(raw.get()).ok()
    } else {
        None
    }
}

fn parse_notifications(body: &[u8]) -> Result<Vec<Notification<'_>>, EnvelopeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let json_error = |error: serde_json::Error| {
        if std::str::from_utf8(body).is_err() {
            EnvelopeError::InvalidUtf8
        } else {
            EnvelopeError::InvalidJson(error.to_string())
        }
    };
    match first {
        None => Err(EnvelopeError::Empty),
        Some(b'{') => {
            let shape: NotificationShape = serde_json::from_slice(body).map_err(json_error)?;
            Ok(vec![notification(shape)?])
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(json_error)?;
            if items.is_empty() {
                return Err(EnvelopeError::NoNotifications);
            }
            items
                .into_iter()
                .map(|item| {
                    shape::<NotificationShape>(item)
                        .ok_or(EnvelopeError::NotAnObject)
                        .and_then(notification)
                })
                .collect()
        }
        Some(_) => {
            // Validate first, so that garbage is reported as invalid JSON, not as a shape.
            serde_json::from_slice::<&RawValue>(body).map_err(json_error)?;
            Err(EnvelopeError::NotAnObject)
        }
    }
}

/// Whether valid JSON holds a number that overflows an `f64` (`1e400`, a 400-digit
/// integer). The parser that splits the body passes numbers through unread, so they are
/// looked for here, in one pass that skips strings.
fn has_number_out_of_range(json: &[u8]) -> bool {
    let mut at = 0;
    while at < json.len() {
        match json[at] {
            b'"' => {
                // Skip to the closing quote, stepping over escapes.
                at += 1;
                while let Some(offset) = memchr::memchr2(b'"', b'\\', &json[at..]) {
                    at += offset;
                    if json[at] == b'"' {
                        break;
                    }
                    at += 2;
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                let mut exponent = false;
                while let Some(&byte) = json.get(at) {
                    match byte {
                        b'0'..=b'9' | b'-' | b'+' | b'.' => {}
                        b'e' | b'E' => exponent = true,
                        _ => break,
                    }
                    at += 1;
                }
                // Up to 300 digits without an exponent always fit.
                if exponent || at - start > 300 {
                    let finite = std::str::from_utf8(&json[start..at])
                        .ok()
                        .and_then(|number| number.parse::<f64>().ok())
                        .is_some_and(f64::is_finite);
                    if !finite {
                        return true;
                    }
                }
            }
            _ => at += 1,
        }
    }
    false
}

fn notification(shape: NotificationShape<'_>) -> Result<Notification<'_>, EnvelopeError> {
    let entries = match shape.entry.ok_or(EnvelopeError::MissingEntry)? {
        List::Items(entries) => entries,
        List::NotAList => return Err(EnvelopeError::EntryNotAList),
    };
    Ok(Notification {
        object: shape.object,
        entries,
    })
}

/// What every record of one entry shares.
struct EntryContext<'a> {
    app: &'a str,
    object: Option<&'a RawValue>,
    object_text: Option<Cow<'a, str>>,
    id: Option<&'a RawValue>,
    id_text: Option<Cow<'a, str>>,
    time: Option<&'a RawValue>,
    received_at: &'a str,
}

fn split_entry<'a>(
    routing: &Routing,
    app: &'a str,
    object: Option<&'a RawValue>,
    entry: &'a RawValue,
    received_at: &'a str,
    records: &mut Vec<Record>,
) {
    let entry_shape = shape::<EntryShape>(entry);
    let context = EntryContext {
        app,
        object,
        object_text: object.and_then(text),
        id: entry_shape.as_ref().and_then(|shape| shape.id),
        id_text: entry_shape
            .as_ref()
            .and_then(|shape| shape.id)
            .and_then(text),
        time: entry_shape.as_ref().and_then(|shape| shape.time),
        received_at,
    };
    let changes = match entry_shape.and_then(|shape| shape.changes) {
        Some(List::Items(changes)) if !changes.is_empty() => changes,
        // An entry without a list of changes is kept whole, as one unrouted record.
        _ => {
            records.push(record(routing, &context, None, entry));
            return;
        }
    };
    for change in changes {
        let record = match shape::<ChangeShape>(change) {
            Some(ChangeShape {
                field,
                value: Some(value),
            }) => record(routing, &context, field, value),
            // No value, or not an object: the whole change is the value, on the unrouted topic.
            Some(ChangeShape { field, value: None }) => {
                unrouted_record(routing, &context, field, change)
            }
            None => unrouted_record(routing, &context, None, change),
        };
        records.push(record);
    }
}

fn unrouted_record(
    routing: &Routing,
    context: &EntryContext<'_>,
    field: Option<&RawValue>,
    value: &RawValue,
) -> Record {
    let mut record = record(routing, context, field, value);
    routing.unrouted().clone_into(&mut record.topic);
    record
}

fn record(
    routing: &Routing,
    context: &EntryContext<'_>,
    field: Option<&RawValue>,
    value: &RawValue,
) -> Record {
    let field_text = field.and_then(string_text);
    let topic = routing.topic(context.object_text.as_deref(), field_text.as_deref());
    let event_id = event_id(context, field, value);
    let key = if field_text.as_deref() == Some("messages") {
        conversation_key(value).or_else(|| context.id_text.as_deref().map(str::to_owned))
    } else {
        context.id_text.as_deref().map(str::to_owned)
    };

    let mut envelope = Vec::with_capacity(value.get().len() + 256 + context.app.len());
    envelope.extend_from_slice(b"{\"event_id\":\"");
    envelope.extend_from_slice(event_id.as_bytes());
    envelope.extend_from_slice(b"\",\"app\":");
    serde_json::to_writer(&mut envelope, context.app).expect("writing to a Vec cannot fail");
    for (name, raw) in [
        (&b",\"object\":"[..], context.object),
        (b",\"entry_id\":", context.id),
        (b",\"entry_time\":", context.time),
        (b",\"field\":", field),
    ] {
        envelope.extend_from_slice(name);
        envelope.extend_from_slice(raw.map_or("null", RawValue::get).as_bytes());
    }
    envelope.extend_from_slice(b",\"received_at\":\"");
    envelope.extend_from_slice(context.received_at.as_bytes());
    envelope.extend_from_slice(b"\",\"value\":");
    envelope.extend_from_slice(value.get().as_bytes());
    envelope.push(b'}');

    let mut headers = Vec::with_capacity(6);
    headers.push(("wa-event-id", event_id));
    headers.push(("wa-app", context.app.to_owned()));
    for (name, text) in [
        ("wa-object", context.object_text.as_deref()),
        ("wa-entry-id", context.id_text.as_deref()),
        ("wa-field", field_text.as_deref()),
    ] {
        if let Some(text) = text {
            headers.push((name, text.to_owned()));
        }
    }
    headers.push(("content-type", "application/json".to_owned()));

    Record {
        topic,
        key,
        headers,
        value: envelope,
        field: field_label(field_text.as_deref()),
    }
}

/// A deterministic id for a change: SHA-256 over what Meta sent about it (object, entry id,
/// entry time, field and the value's exact bytes), each part length-prefixed, truncated to
/// 128 bits. The receiving app is left out on purpose: Meta delivers the same change to
/// every subscribed app, and consumers should see those copies as duplicates.
fn event_id(context: &EntryContext<'_>, field: Option<&RawValue>, value: &RawValue) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"waba-gateway event v1");
    for part in [context.object, context.id, context.time, field, Some(value)] {
        match part {
            Some(raw) => {
                hasher.update((raw.get().len() as u64).to_be_bytes());
                hasher.update(raw.get().as_bytes());
            }
            None => hasher.update(u64::MAX.to_be_bytes()),
        }
    }
    hex::encode(&hasher.finalize()[..16])
}

#[derive(Deserialize)]
struct MessagesValueShape<'a> {
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    contacts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    statuses: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MetadataShape<'a> {
    #[serde(borrow, default)]
    phone_number_id: Option<&'a RawValue>,
}

/// The members that may name the customer, in a contact, a message or a status.
#[derive(Deserialize, Default)]
struct PartyShape<'a> {
    #[serde(borrow, default)]
    wa_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recipient_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    from_user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recipient_user_id: Option<&'a RawValue>,
}

/// `"{phone_number_id}:{customer}"` for a `messages` value, or just the phone number id
/// when no customer is named (system messages, `value.errors`). `None` when the value has
/// no `metadata.phone_number_id`.
fn conversation_key(value: &RawValue) -> Option<String> {
    let value: MessagesValueShape = shape(value)?;
    let metadata: MetadataShape = shape(value.metadata?)?;
    let phone_number_id = metadata.phone_number_id.and_then(text)?;
    let contact = first_party(value.contacts);
    let message = first_party(value.messages);
    let status = first_party(value.statuses);
    let customer = [
        contact.wa_id,
        message.from,
        status.recipient_id,
        contact.user_id,
        message.from_user_id,
        status.recipient_user_id,
    ]
    .into_iter()
    .find_map(|raw| raw.and_then(text));
    Some(match customer {
        Some(customer) => format!("{phone_number_id}:{customer}"),
        None => phone_number_id.into_owned(),
    })
}

/// The first element of a list of objects, or an empty party when there is none.
fn first_party(list: Option<&RawValue>) -> PartyShape<'_> {
    list.and_then(|list| serde_json::from_str::<Vec<&RawValue>>(list.get()).ok())
        .and_then(|items| items.first().copied())
        .and_then(shape)
        .unwrap_or_default()
}

/// The text of a JSON string (unescaped) or number (as written); `None` for anything else
/// and for the empty string.
fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    match json.as_bytes().first()? {
        b'"' => string_text(raw),
        b'-' | b'0'..=b'9' => Some(Cow::Borrowed(json)),
        _ => None,
    }
}

/// The unescaped text of a JSON string; `None` for other JSON and for the empty string.
fn string_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Cow::Borrowed(text),
        // Only a string with escapes needs a copy.
        Err(_) => Cow::Owned(serde_json::from_str::<String>(raw.get()).ok()?),
    };
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde_json::Value;

    use super::*;

    const AT: &str = "2026-11-22T01:02:03.456Z";

    fn routing() -> Routing {
        Routing::new(
            "whatsapp.{field}",
            BTreeMap::new(),
            "whatsapp.unrouted",
            "whatsapp.deadletter",
        )
    }

    fn fixture(name: &str) -> Vec<u8> {
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
            let records = split(&routing(), "default", &fixture(&name), AT)
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
            let records = split(&routing(), "default", &body, AT).expect("splits");
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
        let records = split(&routing(), "default", &body, AT).expect("splits");
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
        let records = split(&routing(), "shop-eu", &body, AT).expect("splits");
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
        let records =
            split(&routing(), "default", &fixture("messages_text.json"), AT).expect("splits");
        assert_eq!(envelope(&records[0])["entry_time"], Value::Null);
    }

    #[test]
    fn event_ids_are_stable_across_deliveries_and_distinct_across_changes() {
        let body = fixture("multi_two_entries_three_fields_each.json");
        let ids = |app: &str, at: &str| -> Vec<String> {
            split(&routing(), app, &body, at)
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
            split(&routing(), "default", body, AT).expect("splits")[0]
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
            split(&routing(), "default", body.as_bytes(), AT).expect("splits")[0]
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
        let records = split(&routing(), "default", &body, AT).expect("splits");
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
        let records = split(&routing(), "default", body, AT).expect("splits");
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
        let cases: [(&[u8], &str); 11] = [
            (b"", "empty_body"),
            (b" \r\n\t", "empty_body"),
            (b"{\"entry\":[\xff]}", "invalid_utf8"),
            (b"hello", "invalid_json"),
            (b"{\"entry\":[", "invalid_json"),
            (b"42", "not_an_object"),
            (b"{\"object\":\"page\"}", "missing_entry"),
            (b"{\"entry\":{\"id\":\"1\"}}", "entry_not_a_list"),
            (b"[]", "no_notifications"),
            (br#"{"entry":[{"time":1e400}]}"#, "number_out_of_range"),
            (br#"{"entry":[],"n":-1E+309}"#, "number_out_of_range"),
        ];
        for (body, reason) in cases {
            let error = split(&routing(), "default", body, AT).expect_err("not a notification");
            assert_eq!(error.reason(), reason, "{}", String::from_utf8_lossy(body));
        }
        for body in [
            &br#"[["whatsapp_business_account",[{"id":"1"}]]]"#[..],
            br#"["whatsapp_business_account"]"#,
        ] {
            let error = split(&routing(), "default", body, AT).expect_err("arrays are no objects");
            assert_eq!(error.reason(), "not_an_object");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            split(&routing(), "default", deep.as_bytes(), AT)
                .expect_err("no notification")
                .reason(),
            "not_an_object"
        );
        let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert_eq!(
            split(&routing(), "default", deep.as_bytes(), AT)
                .expect_err("too deep")
                .reason(),
            "invalid_json"
        );
    }

    #[test]
    fn only_numbers_that_overflow_a_double_are_out_of_range() {
        let long = "9".repeat(400);
        for (json, out_of_range) in [
            (
                "[1e308, -1.5E-400, 0, -0.0, 123456789012345678901234567890]",
                false,
            ),
            (r#"{"a":"1e400 in a string \" 1e999","b":[2e10]}"#, false),
            ("[1.8e308]", true),
            ("[-1e400]", true),
            (&format!("[{long}]"), true),
            (&format!("[0.{long}]"), false),
        ] {
            assert_eq!(
                has_number_out_of_range(json.as_bytes()),
                out_of_range,
                "{json}"
            );
        }
    }

    #[test]
    fn an_entry_or_change_given_as_an_array_is_not_read_by_position() {
        let body = br#"{"object":"whatsapp_business_account","entry":[["E",1,[{"field":"messages","value":{}}]],{"id":"F","changes":[["messages",{}]]}]}"#;
        let records = split(&routing(), "default", body, AT).expect("splits");
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.topic == "whatsapp.unrouted"));
        assert_eq!(records[0].key, None);
        assert_eq!(records[1].key.as_deref(), Some("F"));
    }

    #[test]
    fn a_null_value_is_a_value_and_a_null_field_is_unroutable() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"statuses","value":null},{"field":null,"value":{}}]}]}"#;
        let records = split(&routing(), "default", body, AT).expect("splits");
        assert_eq!(records[0].topic, "whatsapp.statuses");
        assert_eq!(value_bytes(&records[0]), b"null");
        assert_eq!(records[1].topic, "whatsapp.unrouted");
        assert_eq!(value_bytes(&records[1]), b"{}");
        let error = split(&routing(), "default", br#"{"entry":null}"#, AT).expect_err("no list");
        assert_eq!(error.reason(), "entry_not_a_list");
    }

    #[test]
    fn deep_nesting_inside_a_value_is_passed_through_without_recursion() {
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{deep}}}]}}]}}"#
        );
        let records = split(&routing(), "default", body.as_bytes(), AT).expect("splits");
        assert_eq!(value_bytes(&records[0]), deep.as_bytes());
    }

    #[test]
    fn a_dead_letter_keeps_the_raw_body_and_says_why() {
        let record = dead_letter(&routing(), "default", b"\xffnot json", "invalid_utf8", AT);
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
}
