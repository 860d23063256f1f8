//! Item mode (DESIGN §6): a `messages` change as one record per element of its
//! `messages`, `statuses` and `errors` arrays.
//!
//! Each item's value is the change's value cut down, from the body's own bytes: the item's
//! array holding just that item, the other item arrays left out, `contacts` cut down to the
//! item's contacts, and every other member kept in its place. Each item is keyed by its
//! own customer, so statuses of many customers batched into one change still land, each
//! conversation in order, on their own partitions.

use std::borrow::Cow;

use serde::de::{self, Deserialize, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::key::{self, Conversation, Customer, PartyShape, Role};
use super::record::{Field, ItemHead, Parts, routed};
use super::shape::{List, Raw, shape, text};
use super::{EntryContext, Record, change_hash, item_event_id};
use crate::routing::ItemKind;

/// Pushes one record per item of a `messages` value and returns true, or returns false
/// (pushing nothing) when the value is not an object or has no item: the change is then
/// one record, as in change mode.
pub(super) fn push_items<'a>(
    context: &EntryContext<'a>,
    field: &Field<'a>,
    value: &'a RawValue,
    records: &mut Vec<Record>,
) -> bool {
    let Some(value_members) = members_in_order(value) else {
        return false;
    };
    let mut arrays: Vec<(usize, ItemKind, Vec<&RawValue>)> = Vec::new();
    let mut contacts: Option<(usize, Vec<Contact<'_>>)> = None;
    let mut phone_number_id = None;
    for (position, (name, raw)) in value_members.iter().enumerate() {
        let name = name.as_str();
        if name == "metadata" && phone_number_id.is_none() {
            phone_number_id = key::phone_number_id(raw);
        }
        // Only the item arrays and the first `contacts` are read any further.
        let kind = ItemKind::of_array(name);
        if kind.is_none() && (name != "contacts" || contacts.is_some()) {
            continue;
        }
        let Ok(List::Items(items)) = serde_json::from_str::<List<'_>>(raw.get()) else {
            continue;
        };
        match kind {
            Some(kind) => arrays.push((position, kind, items)),
            None => contacts = Some((position, items.into_iter().map(Contact::of).collect())),
        }
    }
    if arrays.iter().all(|(_, _, items)| items.is_empty()) {
        return false;
    }

    let change = change_hash(context, field.raw, value);
    let mut first = true;
    for (position, kind, items) in &arrays {
        for (index, item) in items.iter().enumerate() {
            let party = shape::<PartyShape>(item).unwrap_or_default();
            let customer = match kind {
                ItemKind::Message => Customer::of(&[(Role::Message, &party)]),
                ItemKind::Status => Customer::of(&[(Role::Status, &party)]),
                ItemKind::Error => Customer::default(),
            };
            let own_contacts = contacts
                .as_ref()
                .map(|(position, contacts)| (*position, of_customer(contacts, &customer)));
            let item_value = Cut {
                value: &value_members,
                own: (*position, item),
                contacts: own_contacts,
            }
            .to_json();
            let (key, phone) = context.keyed(
                phone_number_id
                    .as_deref()
                    .map(|phone| Conversation::of(phone, customer.name())),
            );
            let status = match kind {
                ItemKind::Status => party.status.and_then(text),
                _ => None,
            };
            records.push(routed(
                context,
                field,
                &item_value,
                Parts {
                    topic: context
                        .routing
                        .item_topic(context.object_text.as_deref(), *kind),
                    key,
                    event_id: item_event_id(&change, *kind, *position, index),
                    phone_number_id: phone,
                    item: Some(ItemHead {
                        kind: *kind,
                        index,
                        message_id: party.id.and_then(text),
                        status,
                    }),
                    counts_change: std::mem::take(&mut first),
                },
            ));
        }
    }
    true
}

/// A contact, and who it names.
struct Contact<'a> {
    raw: &'a RawValue,
    customer: Customer<'a>,
}

impl<'a> Contact<'a> {
    fn of(raw: &'a RawValue) -> Self {
        let shape = shape::<PartyShape>(raw).unwrap_or_default();
        Self {
            raw,
            customer: Customer::of(&[(Role::Contact, &shape)]),
        }
    }
}

/// The contacts of an item: those whose `wa_id` is its customer's phone number or whose
/// `user_id` is its business-scoped user id; else the only contact when there is exactly
/// one.
fn of_customer<'a>(contacts: &[Contact<'a>], customer: &Customer<'_>) -> Vec<&'a RawValue> {
    let same = |ours: &Option<Cow<'_, str>>, theirs: &Option<Cow<'_, str>>| {
        ours.is_some() && ours == theirs
    };
    let matching: Vec<&RawValue> = contacts
        .iter()
        .filter(|contact| {
            same(&customer.phone, &contact.customer.phone)
                || same(&customer.user, &contact.customer.user)
        })
        .map(|contact| contact.raw)
        .collect();
    match contacts {
        [only] if matching.is_empty() => vec![only.raw],
        _ => matching,
    }
}

/// The item's value: the members of `value` in order, the item's own array (at `own`)
/// holding just that item, every other `messages`, `statuses` or `errors` member left out,
/// `contacts` (at `contacts.0`) holding the item's contacts or left out when it has none.
struct Cut<'v, 'a> {
    value: &'v [(Name<'a>, &'a RawValue)],
    own: (usize, &'a RawValue),
    contacts: Option<(usize, Vec<&'a RawValue>)>,
}

impl Cut<'_, '_> {
    /// The value as JSON: each member raw, as the body wrote it; each name as serde_json
    /// writes it, which is the body's bytes for a name without escapes.
    fn to_json(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).expect("members of raw JSON serialize")
    }
}

impl serde::Serialize for Cut<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (own, item) = self.own;
        let mut map = serializer.serialize_map(None)?;
        for (position, (name, raw)) in self.value.iter().enumerate() {
            match &self.contacts {
                _ if position == own => map.serialize_entry(name.as_str(), &[item])?,
                Some((at, contacts)) if *at == position => {
                    if !contacts.is_empty() {
                        map.serialize_entry(name.as_str(), contacts)?;
                    }
                }
                _ if ItemKind::of_array(name.as_str()).is_some() => {}
                _ => map.serialize_entry(name.as_str(), raw)?,
            }
        }
        map.end()
    }
}

/// The members of a JSON object in the order written, each value as raw JSON; `None` for
/// any other JSON.
fn members_in_order(value: &RawValue) -> Option<Vec<(Name<'_>, &RawValue)>> {
    if !value.get().starts_with('{') {
        return None;
    }
    serde_json::from_str::<InOrder<'_>>(value.get())
        .ok()
        .map(|members| members.0)
}

struct InOrder<'a>(Vec<(Name<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for InOrder<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrderVisitor<'a>(std::marker::PhantomData<InOrder<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for InOrderVisitor<'a> {
            type Value = InOrder<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InOrder<'a>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(name) = map.next_key::<Name<'a>>()? {
                    members.push((name, map.next_value::<Raw<'a>>()?));
                }
                Ok(InOrder(members))
            }
        }
        deserializer.deserialize_map(InOrderVisitor(std::marker::PhantomData))
    }
}

/// A member name: the body's bytes when it has no escapes, else unescaped.
enum Name<'a> {
    Verbatim(&'a str),
    Unescaped(String),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Self::Verbatim(name) => name,
            Self::Unescaped(name) => name,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor<'a>(std::marker::PhantomData<Name<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for NameVisitor<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'a>, E> {
                Ok(Name::Verbatim(name))
            }
            fn visit_str<E>(self, name: &str) -> Result<Name<'a>, E> {
                Ok(Name::Unescaped(name.to_owned()))
            }
        }
        deserializer.deserialize_str(NameVisitor(std::marker::PhantomData))
    }
}
