//! The record key rule (DESIGN §6): `messages` changes are keyed by conversation,
//! `"{phone_number_id}:{customer}"`, so that one conversation stays in order on one
//! partition; every other field by the entry id.

use std::borrow::Cow;

use serde::Deserialize;
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
    /// A contact, a message or a status: the members that may name the customer, and an
    /// item's own `id` and `status`.
    PartyShape { wa_id: Raw, from: Raw, recipient_id: Raw, user_id: Raw, from_user_id: Raw, recipient_user_id: Raw, id: Raw, status: Raw }
}

/// What a party is in a `messages` value, which says which of its members name the
/// customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// An element of `contacts`: `wa_id`, `user_id`.
    Contact,
    /// An element of `messages`: the customer wrote it (`from`, `from_user_id`).
    Message,
    /// An element of `statuses`: the customer it was sent to (`recipient_id`,
    /// `recipient_user_id`).
    Status,
}

/// Who a conversation is with: a phone number (`wa_id`) and a business-scoped user id,
/// either of which may be missing.
#[derive(Debug, Default)]
pub(super) struct Customer<'a> {
    pub(super) phone: Option<Cow<'a, str>>,
    pub(super) user: Option<Cow<'a, str>>,
}

impl<'a> Customer<'a> {
    /// The customer rule (DESIGN §6): of `parties`, in order, the first phone number that
    /// is text, else the first business-scoped user id.
    pub(super) fn of(parties: &[(Role, &PartyShape<'a>)]) -> Self {
        let named = |member: fn(Role, &PartyShape<'a>) -> Option<&'a RawValue>| {
            parties
                .iter()
                .find_map(|(role, party)| member(*role, party).and_then(text))
        };
        Self {
            phone: named(|role, party| match role {
                Role::Contact => party.wa_id,
                Role::Message => party.from,
                Role::Status => party.recipient_id,
            }),
            user: named(|role, party| match role {
                Role::Contact => party.user_id,
                Role::Message => party.from_user_id,
                Role::Status => party.recipient_user_id,
            }),
        }
    }

    /// What the key names: the phone number, else the user id.
    pub(super) fn name(&self) -> Option<&str> {
        self.phone.as_deref().or(self.user.as_deref())
    }
}

members! {
    /// The same members, each list read in the same pass for its first item only.
    OnePassValueShape { metadata: Raw, contacts: FirstParty, messages: FirstParty, statuses: FirstParty }
}

/// `"{phone_number_id}:{customer}"` for a `messages` value, or just the phone number id
/// when no customer is named (system messages, `value.errors`). `None` when the value has
/// no `metadata.phone_number_id`.
///
/// Read in one pass over the value; a value that pass cannot read (a first party with a
/// member twice, say) is read again level by level, which decides for every value.
pub(super) fn conversation_key(value: &RawValue) -> Option<Conversation> {
    if !value.get().starts_with('{') {
        return None;
    }
    match serde_json::from_str::<OnePassValueShape>(value.get()) {
        Ok(shape) => key_of(
            shape.metadata,
            [shape.contacts, shape.messages, shape.statuses].map(FirstParty::party),
        ),
        Err(_) => conversation_key_by_levels(value),
    }
}

/// [`conversation_key`] reading the value, then each list, then its first item.
pub(super) fn conversation_key_by_levels(value: &RawValue) -> Option<Conversation> {
    let value: MessagesValueShape = shape(value)?;
    key_of(
        value.metadata,
        [
            first_party(value.contacts),
            first_party(value.messages),
            first_party(value.statuses),
        ],
    )
}

/// The business phone number of a `messages` value, and the record key it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Conversation {
    /// `metadata.phone_number_id`, as text (the `wa-phone-number-id` header).
    pub(super) phone_number_id: String,
    /// `"{phone_number_id}:{customer}"`, or the phone number id alone.
    pub(super) key: String,
}

/// The conversation from `metadata` and the first contact, message and status.
fn key_of(
    metadata: Option<&RawValue>,
    [contact, message, status]: [PartyShape<'_>; 3],
) -> Option<Conversation> {
    let phone_number_id = phone_number_id(metadata?)?;
    let customer = Customer::of(&[
        (Role::Contact, &contact),
        (Role::Message, &message),
        (Role::Status, &status),
    ]);
    Some(Conversation::of(&phone_number_id, customer.name()))
}

/// `metadata.phone_number_id` as text, from a value's `metadata`.
pub(super) fn phone_number_id(metadata: &RawValue) -> Option<Cow<'_, str>> {
    let metadata: MetadataShape = shape(metadata)?;
    metadata.phone_number_id.and_then(text)
}

impl Conversation {
    /// The conversation of `customer` on the business number `phone_number_id`: the key
    /// `"{phone_number_id}:{customer}"`, or the phone number id alone without a customer.
    pub(super) fn of(phone_number_id: &str, customer: Option<&str>) -> Self {
        let key = match customer {
            Some(customer) => format!("{phone_number_id}:{customer}"),
            None => phone_number_id.to_owned(),
        };
        Self {
            phone_number_id: phone_number_id.to_owned(),
            key,
        }
    }
}

/// The first element of a list of objects, or an empty party when there is none.
fn first_party(list: Option<&RawValue>) -> PartyShape<'_> {
    list.and_then(|list| serde_json::from_str::<Vec<&RawValue>>(list.get()).ok())
        .and_then(|items| items.first().copied())
        .and_then(shape)
        .unwrap_or_default()
}

/// The first item of a list when it is an object, read as a party; an empty party for any
/// other JSON. The rest of the list is skipped unread.
pub(super) struct FirstParty<'a>(PartyShape<'a>);

impl<'a> FirstParty<'a> {
    /// The party of a member that may be absent.
    fn party(first: Option<Self>) -> PartyShape<'a> {
        first.map(|first| first.0).unwrap_or_default()
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for FirstParty<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(PartyVisitor { first_only: true })
            .map(FirstParty)
    }
}

/// Reads a list's first item (`first_only`), or the item itself: an object as a party,
/// anything else as none.
struct PartyVisitor {
    first_only: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for PartyVisitor {
    type Value = PartyShape<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PartyVisitor {
    type Value = PartyShape<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = if self.first_only {
            seq.next_element_seed(PartyVisitor { first_only: false })?
        } else {
            None
        };
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(first.unwrap_or_default())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        if self.first_only {
            serde::de::IgnoredAny::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            return Ok(PartyShape::default());
        }
        PartyShape::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(PartyShape::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(PartyShape::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(PartyShape::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(PartyShape::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(PartyShape::default())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(PartyShape::default())
    }
}
