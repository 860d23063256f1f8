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
pub mod headers;
mod items;
mod key;
mod record;
mod shape;

#[cfg(test)]
mod header_tests;
#[cfg(test)]
mod item_tests;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::time::SystemTime;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::routing::{ItemKind, Routing, SplitBy};
use key::{Conversation, conversation_key, conversation_key_by_levels};
use record::{Field, Parts, routed};
use shape::{ChangeShape, EntryShape, List, parse_notifications, shape, text};

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

    /// Sets the header `name` to `value`, in place of the one it had.
    pub fn set_header(&mut self, name: &'static str, value: String) {
        match self.headers.iter_mut().find(|(header, _)| *header == name) {
            Some((_, old)) => *old = value,
            None => self.headers.push((name, value)),
        }
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
    /// Notifications whose `entry` lists are all empty: nothing to route, and kept whole
    /// rather than answered 200 with no trace.
    #[error("the notification has no entries")]
    NoEntries,
}

impl EnvelopeError {
    /// Every [`EnvelopeError::reason`].
    pub const REASONS: [&'static str; 8] = [
        "empty_body",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "missing_entry",
        "entry_not_a_list",
        "no_notifications",
        "no_entries",
    ];

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
            Self::NoEntries => "no_entries",
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
    match split(routing, app, body, received_at).and_then(|records| {
        if records.is_empty() {
            Err(EnvelopeError::NoEntries)
        } else {
            Ok(records)
        }
    }) {
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
/// JSON, and a `messages` value's key the same way (its lists, then their first items). It
/// takes every body, whatever its shape; [`split`] gives the same records from one pass
/// for bodies of the ordinary shape.
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
            (headers::APP, app.to_owned()),
            (headers::ERROR, error.to_owned()),
            (headers::RECEIVED_AT, timestamp(received_at)),
        ],
        value: body.to_vec(),
        field: "other",
        counts_change: false,
    }
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
    /// Whether keys are read level by level ([`split_by_levels`]), as the reference that
    /// the property tests and the fuzz target compare the one-pass split with.
    keys_by_levels: bool,
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
            keys_by_levels: false,
        }
    }
}

impl EntryContext<'_> {
    /// A record's key and `wa-phone-number-id`: by conversation on a `messages` record
    /// that names its business number, else the entry id and none.
    fn keyed(&self, conversation: Option<Conversation>) -> (Option<String>, Option<String>) {
        match conversation {
            Some(conversation) => (Some(conversation.key), Some(conversation.phone_number_id)),
            None => (self.id_text.as_deref().map(str::to_owned), None),
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
    let context = EntryContext {
        keys_by_levels: true,
        ..EntryContext::new(
            routing,
            app,
            object,
            entry_shape.as_ref().and_then(|shape| shape.id),
            entry_shape.as_ref().and_then(|shape| shape.time),
            received_at,
        )
    };
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

/// A change that cannot be routed, kept whole on the unrouted topic.
fn unrouted_record(
    context: &EntryContext<'_>,
    field: Option<&RawValue>,
    change: &RawValue,
) -> Record {
    let topic = context.routing.unrouted().to_owned();
    record_on(context, &Field::of(field), change, topic)
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

/// The one record of a change, on its field's topic.
fn record(context: &EntryContext<'_>, field: &Field<'_>, value: &RawValue) -> Record {
    let topic = context
        .routing
        .topic(context.object_text.as_deref(), field.text.as_deref());
    record_on(context, field, value, topic)
}

/// The one record of a change, on `topic`.
fn record_on(
    context: &EntryContext<'_>,
    field: &Field<'_>,
    value: &RawValue,
    topic: String,
) -> Record {
    let conversation = if field.text.as_deref() != Some("messages") {
        None
    } else if context.keys_by_levels {
        conversation_key_by_levels(value)
    } else {
        conversation_key(value)
    };
    let (key, phone_number_id) = context.keyed(conversation);
    routed(
        context,
        field,
        value,
        Parts {
            topic,
            key,
            event_id: event_id(context, field.raw, value),
            phone_number_id,
            item: None,
            counts_change: true,
        },
    )
}

/// A deterministic id for a change: SHA-256 over what Meta sent about it (object, entry id,
/// entry time, field and the value's exact bytes), each part length-prefixed, truncated to
/// 128 bits. The receiving app is left out on purpose: Meta delivers the same change to
/// every subscribed app, and consumers should see those copies as duplicates.
fn event_id(context: &EntryContext<'_>, field: Option<&RawValue>, value: &RawValue) -> String {
    id_text(&change_hash(context, field, value).finalize())
}

/// An id as text: the first 128 bits of `hash` in lower-case hex.
fn id_text(hash: &[u8]) -> String {
    let mut text = [0u8; 32];
    hex::encode_to_slice(&hash[..16], &mut text).expect("16 bytes are 32 hex digits");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

/// An item's id: the change's hash (see [`event_id`]) continued with the item's kind, the
/// position of its array among the value's members (a value may repeat an array) and its
/// position in that array, so that each item of a change has its own id, the same on
/// every delivery of the change. `change` is [`change_hash`], computed once per change.
fn item_event_id(change: &Sha256, kind: ItemKind, array: usize, index: usize) -> String {
    let mut hasher = change.clone();
    hasher.update(b"item");
    hasher.update(kind.as_str().as_bytes());
    hasher.update((array as u64).to_be_bytes());
    hasher.update((index as u64).to_be_bytes());
    id_text(&hasher.finalize())
}

/// The hash of what Meta sent about a change, not yet finished.
fn change_hash(context: &EntryContext<'_>, field: Option<&RawValue>, value: &RawValue) -> Sha256 {
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
    hasher
}
