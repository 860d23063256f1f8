//! A routed record from its parts: the envelope written around a value's bytes, and the
//! headers (DESIGN §6), CloudEvents ones included.

use std::borrow::Cow;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::value::RawValue;

use super::shape::string_text;
use super::{EntryContext, Record, headers, timestamp};
use crate::routing::{ItemKind, field_label};

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
    /// Written verbatim: the bytes of the body, or pieces of them in item mode.
    value: &'a RawValue,
}

impl Envelope<'_> {
    /// The envelope's JSON.
    fn to_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(self.value.get().len() + 320 + self.app.len());
        serde_json::to_writer(&mut json, self)
            .expect("an envelope of raw JSON serializes into a Vec");
        json
    }
}

fn rfc3339_millis<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// A change's `field`, as Meta sent it and as text.
pub(super) struct Field<'a> {
    pub(super) raw: Option<&'a RawValue>,
    pub(super) text: Option<Cow<'a, str>>,
}

impl<'a> Field<'a> {
    pub(super) fn of(raw: Option<&'a RawValue>) -> Self {
        Self {
            raw,
            text: raw.and_then(string_text),
        }
    }
}

/// What an item record says about its item (DESIGN §6, item mode).
pub(super) struct ItemHead<'a> {
    pub(super) kind: ItemKind,
    pub(super) index: usize,
    /// The message's `id`, or the status's: the wamid it reports on.
    pub(super) message_id: Option<Cow<'a, str>>,
    /// A status's `status`.
    pub(super) status: Option<Cow<'a, str>>,
}

/// What a record says beyond what its entry says.
pub(super) struct Parts<'a> {
    pub(super) topic: String,
    pub(super) key: Option<String>,
    pub(super) event_id: String,
    pub(super) phone_number_id: Option<String>,
    pub(super) item: Option<ItemHead<'a>>,
    pub(super) counts_change: bool,
}

/// A record of `value` (a change's value, or an item's value cut from it).
pub(super) fn routed(
    context: &EntryContext<'_>,
    field: &Field<'_>,
    value: &RawValue,
    parts: Parts<'_>,
) -> Record {
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
        value,
    }
    .to_json();

    let mut headers = Vec::with_capacity(16);
    headers.push((headers::EVENT_ID, parts.event_id));
    headers.push((headers::APP, context.app.to_owned()));
    for (name, text) in [
        (headers::OBJECT, context.object_text.as_deref()),
        (headers::ENTRY_ID, context.id_text.as_deref()),
        (headers::FIELD, field.text.as_deref()),
    ] {
        if let Some(text) = text {
            headers.push((name, text.to_owned()));
        }
    }
    // Consumers serving many business numbers filter on it without parsing (DESIGN §6).
    if let Some(phone_number_id) = parts.phone_number_id {
        headers.push((headers::PHONE_NUMBER_ID, phone_number_id));
    }
    if let Some(item) = &parts.item {
        headers.push((headers::ITEM_KIND, item.kind.as_str().to_owned()));
        for (name, text) in [
            (headers::MESSAGE_ID, &item.message_id),
            (headers::STATUS, &item.status),
        ] {
            if let Some(text) = text {
                headers.push((name, text.clone().into_owned()));
            }
        }
    }
    // Events of a field: the records of its topic, not those kept on the unrouted topic.
    if context.routing.cloudevents() && parts.topic != context.routing.unrouted() {
        let event_id = headers[0].1.clone();
        push_cloudevents(context, field, parts.item.as_ref(), &event_id, &mut headers);
    }
    headers.push((headers::CONTENT_TYPE, "application/json".to_owned()));

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
        (headers::CE_SPECVERSION, "1.0".to_owned()),
        (headers::CE_ID, event_id.to_owned()),
        (
            headers::CE_SOURCE,
            format!(
                "urn:waba-gateway:{}:{}",
                context.app,
                context.id_text.as_deref().unwrap_or_default()
            ),
        ),
        (headers::CE_TYPE, kind),
        (headers::CE_TIME, timestamp(context.received_at)),
    ]);
}
