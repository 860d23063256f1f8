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

mod fast;
mod items;
mod key;
mod shape;

#[cfg(test)]
mod item_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::routing::{ItemKind, Routing, SplitBy, field_label, is_routable_name};
use key::conversation_key;
use shape::{ChangeShape, EntryShape, List, parse_notifications, shape, string_text, text};

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
    /// True on the first record of a change (the only one outside item mode): what
    /// `waba_gateway_changes_total` counts.
    pub counts_change: bool,
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
pub fn to_records(routing: &Routing, app: &str, body: &[u8], received_at: SystemTime) -> Split {
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

/// Splits a verified body into one record per change: in one pass when the body has the
/// ordinary shape, else level by level.
pub fn split(
    routing: &Routing,
    app: &str,
    body: &[u8],
    received_at: SystemTime,
) -> Result<Vec<Record>, EnvelopeError> {
    let Some(entries) = fast::entries(body) else {
        return split_by_levels(routing, app, body, received_at);
    };
    let mut records = Vec::with_capacity(entries.iter().map(|e| e.changes.len()).sum());
    for entry in entries {
        let context = EntryContext::new(
            routing,
            app,
            entry.object,
            entry.id,
            entry.time,
            received_at,
        );
        for (field, value) in entry.changes {
            push_change(&context, field, value, &mut records);
        }
    }
    Ok(records)
}

/// The reference split: reads the body, then each entry, then each change, each as raw
/// JSON. It takes every body, whatever its shape; [`split`] gives the same records from
/// one pass for bodies of the ordinary shape.
pub fn split_by_levels(
    routing: &Routing,
    app: &str,
    body: &[u8],
    received_at: SystemTime,
) -> Result<Vec<Record>, EnvelopeError> {
    let notifications = parse_notifications(body)?;
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
    received_at: SystemTime,
) -> Record {
    Record {
        topic: routing.deadletter().to_owned(),
        key: None,
        headers: vec![
            ("wa-app", app.to_owned()),
            ("wa-error", error.to_owned()),
            ("wa-received-at", timestamp(received_at)),
        ],
        value: body.to_vec(),
        field: "other",
        counts_change: false,
    }
}

/// The value of a routed record (DESIGN §6). The raw members are written verbatim: the
/// bytes Meta sent, never re-serialised; a member Meta did not send is `null`.
#[derive(Serialize)]
struct Envelope<'a> {
    event_id: &'a str,
    app: &'a str,
    object: Option<&'a RawValue>,
    entry_id: Option<&'a RawValue>,
    entry_time: Option<&'a RawValue>,
    field: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_index: Option<usize>,
    #[serde(serialize_with = "rfc3339_millis")]
    received_at: SystemTime,
}

impl Envelope<'_> {
    /// The envelope's JSON with `value` as its last member, written verbatim: the bytes
    /// of the body, or pieces of them in item mode.
    fn to_json(&self, value: &str) -> Vec<u8> {
        let mut json = Vec::with_capacity(value.len() + 320 + self.app.len());
        serde_json::to_writer(&mut json, self)
            .expect("an envelope of raw JSON serializes into a Vec");
        debug_assert_eq!(json.last(), Some(&b'}'));
        json.pop();
        json.extend_from_slice(b",\"value\":");
        json.extend_from_slice(value.as_bytes());
        json.push(b'}');
        json
    }
}

fn rfc3339_millis<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// What every record of one entry shares.
struct EntryContext<'a> {
    routing: &'a Routing,
    app: &'a str,
    object: Option<&'a RawValue>,
    object_text: Option<Cow<'a, str>>,
    id: Option<&'a RawValue>,
    id_text: Option<Cow<'a, str>>,
    time: Option<&'a RawValue>,
    received_at: SystemTime,
}

impl<'a> EntryContext<'a> {
    fn new(
        routing: &'a Routing,
        app: &'a str,
        object: Option<&'a RawValue>,
        id: Option<&'a RawValue>,
        time: Option<&'a RawValue>,
        received_at: SystemTime,
    ) -> Self {
        Self {
            routing,
            app,
            object,
            object_text: object.and_then(text),
            id,
            id_text: id.and_then(text),
            time,
            received_at,
        }
    }
}

fn split_entry<'a>(
    routing: &Routing,
    app: &'a str,
    object: Option<&'a RawValue>,
    entry: &'a RawValue,
    received_at: SystemTime,
    records: &mut Vec<Record>,
) {
    let entry_shape = shape::<EntryShape>(entry);
    let context = EntryContext::new(
        routing,
        app,
        object,
        entry_shape.as_ref().and_then(|shape| shape.id),
        entry_shape.as_ref().and_then(|shape| shape.time),
        received_at,
    );
    let changes = match entry_shape.and_then(|shape| shape.changes) {
        Some(List::Items(changes)) if !changes.is_empty() => changes,
        // An entry without a list of changes is kept whole, as one unrouted record.
        _ => {
            records.push(record(&context, &Field::of(None), entry));
            return;
        }
    };
    for change in changes {
        let record = match shape::<ChangeShape>(change) {
            Some(ChangeShape {
                field,
                value: Some(value),
            }) => {
                push_change(&context, field, value, records);
                continue;
            }
            // No value, or not an object: the whole change is the value, on the unrouted topic.
            Some(ChangeShape { field, value: None }) => unrouted_record(&context, field, change),
            None => unrouted_record(&context, None, change),
        };
        records.push(record);
    }
}

/// A change that cannot be routed, kept whole on the unrouted topic, without the
/// CloudEvents headers of routed records.
fn unrouted_record(
    context: &EntryContext<'_>,
    field: Option<&RawValue>,
    change: &RawValue,
) -> Record {
    let mut record = record(context, &Field::of(field), change);
    context.routing.unrouted().clone_into(&mut record.topic);
    record.headers.retain(|(name, _)| !name.starts_with("ce_"));
    record
}

/// A change's `field`, as Meta sent it and as text.
struct Field<'a> {
    raw: Option<&'a RawValue>,
    text: Option<Cow<'a, str>>,
}

impl<'a> Field<'a> {
    fn of(raw: Option<&'a RawValue>) -> Self {
        Self {
            raw,
            text: raw.and_then(string_text),
        }
    }
}

/// The record or records of one change: one per item of a `messages` change in item mode
/// (when it has any), else one.
fn push_change<'a>(
    context: &EntryContext<'a>,
    field: Option<&'a RawValue>,
    value: &'a RawValue,
    records: &mut Vec<Record>,
) {
    let field = Field::of(field);
    if context.routing.split() == SplitBy::Item
        && field.text.as_deref() == Some("messages")
        && items::push_items(context, &field, value, records)
    {
        return;
    }
    records.push(record(context, &field, value));
}

/// The one record of a change.
fn record(context: &EntryContext<'_>, field: &Field<'_>, value: &RawValue) -> Record {
    let conversation = if field.text.as_deref() == Some("messages") {
        conversation_key(value)
    } else {
        None
    };
    let (key, phone_number_id) = match conversation {
        Some(conversation) => (Some(conversation.key), Some(conversation.phone_number_id)),
        None => (context.id_text.as_deref().map(str::to_owned), None),
    };
    routed(
        context,
        field,
        value.get(),
        Parts {
            topic: context
                .routing
                .topic(context.object_text.as_deref(), field.text.as_deref()),
            key,
            event_id: event_id(context, field.raw, value, None),
            phone_number_id,
            item: None,
            counts_change: true,
        },
    )
}

/// What an item record says about its item (DESIGN §6, item mode).
struct ItemHead<'a> {
    kind: ItemKind,
    index: usize,
    /// The message's `id`, or the status's: the wamid it reports on.
    message_id: Option<Cow<'a, str>>,
    /// A status's `status`.
    status: Option<Cow<'a, str>>,
}

/// What a record says beyond what its entry says.
struct Parts<'a> {
    topic: String,
    key: Option<String>,
    event_id: String,
    phone_number_id: Option<String>,
    item: Option<ItemHead<'a>>,
    counts_change: bool,
}

/// A record of `value` (a change's value, or an item's value cut from it).
fn routed(context: &EntryContext<'_>, field: &Field<'_>, value: &str, parts: Parts<'_>) -> Record {
    let envelope = Envelope {
        event_id: &parts.event_id,
        app: context.app,
        object: context.object,
        entry_id: context.id,
        entry_time: context.time,
        field: field.raw,
        item_kind: parts.item.as_ref().map(|item| item.kind.as_str()),
        item_index: parts.item.as_ref().map(|item| item.index),
        received_at: context.received_at,
    }
    .to_json(value);

    let mut headers = Vec::with_capacity(16);
    headers.push(("wa-event-id", parts.event_id.clone()));
    headers.push(("wa-app", context.app.to_owned()));
    for (name, text) in [
        ("wa-object", context.object_text.as_deref()),
        ("wa-entry-id", context.id_text.as_deref()),
        ("wa-field", field.text.as_deref()),
    ] {
        if let Some(text) = text {
            headers.push((name, text.to_owned()));
        }
    }
    // Consumers serving many business numbers filter on it without parsing (DESIGN §6).
    if let Some(phone_number_id) = parts.phone_number_id {
        headers.push(("wa-phone-number-id", phone_number_id));
    }
    if let Some(item) = &parts.item {
        headers.push(("wa-item-kind", item.kind.as_str().to_owned()));
        for (name, text) in [
            ("wa-message-id", &item.message_id),
            ("wa-status", &item.status),
        ] {
            if let Some(text) = text {
                headers.push((name, text.clone().into_owned()));
            }
        }
    }
    let routable = field.text.as_deref().is_some_and(is_routable_name);
    if context.routing.cloudevents() && routable {
        push_cloudevents(
            context,
            field,
            parts.item.as_ref(),
            &parts.event_id,
            &mut headers,
        );
    }
    headers.push(("content-type", "application/json".to_owned()));

    Record {
        topic: parts.topic,
        key: parts.key,
        headers,
        value: envelope,
        field: field_label(field.text.as_deref()),
        counts_change: parts.counts_change,
    }
}

/// The CloudEvents Kafka protocol binding's binary mode: the attributes as `ce_` headers,
/// the envelope as the event's data (its `content-type` is already there).
fn push_cloudevents(
    context: &EntryContext<'_>,
    field: &Field<'_>,
    item: Option<&ItemHead<'_>>,
    event_id: &str,
    headers: &mut Vec<(&'static str, String)>,
) {
    let mut kind = format!("com.whatsapp.{}", field.text.as_deref().unwrap_or_default());
    if let Some(item) = item {
        kind.push('.');
        kind.push_str(item.kind.as_str());
    }
    headers.extend([
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", event_id.to_owned()),
        (
            "ce_source",
            format!(
                "urn:waba-gateway:{}:{}",
                context.app,
                context.id_text.as_deref().unwrap_or_default()
            ),
        ),
        ("ce_type", kind),
        ("ce_time", timestamp(context.received_at)),
    ]);
}

/// A deterministic id for a change: SHA-256 over what Meta sent about it (object, entry id,
/// entry time, field and the value's exact bytes), each part length-prefixed, truncated to
/// 128 bits. The receiving app is left out on purpose: Meta delivers the same change to
/// every subscribed app, and consumers should see those copies as duplicates.
///
/// An item's id also covers its kind and its position in its array, so that each item of
/// a change has its own id, the same on every delivery of the change.
fn event_id(
    context: &EntryContext<'_>,
    field: Option<&RawValue>,
    value: &RawValue,
    item: Option<(ItemKind, usize)>,
) -> String {
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
    if let Some((kind, index)) = item {
        hasher.update(b"item");
        hasher.update(kind.as_str().as_bytes());
        hasher.update((index as u64).to_be_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}
