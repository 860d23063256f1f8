//! The record key rule (DESIGN §6): `messages` changes are keyed by conversation,
//! `"{phone_number_id}:{customer}"`, so that one conversation stays in order on one
//! partition; every other field by the entry id.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::shape::{shape, text};

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
pub(super) fn conversation_key(value: &RawValue) -> Option<String> {
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
