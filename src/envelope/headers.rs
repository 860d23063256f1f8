//! The names of the Kafka headers the gateway writes (DESIGN §6): one place, so that what
//! reads records back (`replay`) keeps every header a record carries.

/// The record's event id, as in its envelope.
pub const EVENT_ID: &str = "wa-event-id";
/// The app the notification came in for.
pub const APP: &str = "wa-app";
/// The notification's `object`, as text.
pub const OBJECT: &str = "wa-object";
/// The entry's `id`, as text.
pub const ENTRY_ID: &str = "wa-entry-id";
/// The change's `field`.
pub const FIELD: &str = "wa-field";
/// `metadata.phone_number_id` of a `messages` change.
pub const PHONE_NUMBER_ID: &str = "wa-phone-number-id";
/// Item mode: `message`, `status` or `error`.
pub const ITEM_KIND: &str = "wa-item-kind";
/// Item mode: the wamid the item is or reports on.
pub const MESSAGE_ID: &str = "wa-message-id";
/// Item mode: a status's `status`.
pub const STATUS: &str = "wa-status";
/// CloudEvents binary mode (`kafka.cloudevents`).
pub const CE_SPECVERSION: &str = "ce_specversion";
/// CloudEvents `id`: the event id.
pub const CE_ID: &str = "ce_id";
/// CloudEvents `source`.
pub const CE_SOURCE: &str = "ce_source";
/// CloudEvents `type`.
pub const CE_TYPE: &str = "ce_type";
/// CloudEvents `time`: when the notification came in.
pub const CE_TIME: &str = "ce_time";
/// The value's media type.
pub const CONTENT_TYPE: &str = "content-type";

/// W3C Trace Context: the record's PRODUCER span, whose child a consumer's span is (only
/// when tracing is on).
pub use crate::trace::{TRACEPARENT, TRACESTATE};

/// Dead letters: why the record is there (`reason: detail`).
pub const ERROR: &str = "wa-error";
/// Dead letters: when the body came in (a body that could not be split).
pub const RECEIVED_AT: &str = "wa-received-at";
/// Dead letters: the topic a record Kafka refused was meant for.
pub const TOPIC: &str = "wa-topic";
/// Replayed records: `topic/partition/offset` of the dead letter they came from.
pub const REPLAYED_FROM: &str = "wa-replayed-from";

/// Every header a routed record may carry: what a refused record keeps when it is
/// replayed to the topic it was meant for.
pub const ROUTED: [&str; 17] = [
    EVENT_ID,
    APP,
    OBJECT,
    ENTRY_ID,
    FIELD,
    PHONE_NUMBER_ID,
    ITEM_KIND,
    MESSAGE_ID,
    STATUS,
    CE_SPECVERSION,
    CE_ID,
    CE_SOURCE,
    CE_TYPE,
    CE_TIME,
    CONTENT_TYPE,
    TRACEPARENT,
    TRACESTATE,
];
