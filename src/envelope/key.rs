//! The record key rule (DESIGN §6): `messages` changes are keyed by conversation,
//! `"{phone_number_id}:{customer}"`, so that one conversation stays in order on one
//! partition; every other field by the entry id.

use serde_json::value::RawValue;

use super::shape::{Raw, members, shape, text};

members! {
    /// The members of a `messages` value that name the conversation.
    MessagesValueShape { metadata: Raw, contacts: Raw, messages: Raw, statuses: Raw }
}

members! {
    /// `metadata`: the business phone number the conversation is on.
    MetadataShape { phone_number_id: Raw }
}

members! {
    /// The members that may name the customer, in a contact, a message or a status.
    PartyShape { wa_id: Raw, from: Raw, recipient_id: Raw, user_id: Raw, from_user_id: Raw, recipient_user_id: Raw }
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
