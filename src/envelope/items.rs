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

use super::key::{self, Conversation};
use super::record::{Field, ItemHead, Parts, routed};
use super::shape::{List, Raw, members, shape, text};
use super::{EntryContext, Record, change_hash, item_event_id};
use crate::routing::ItemKind;

members! {
    /// What an item says about its customer and itself.
    ItemShape { id: Raw, status: Raw, from: Raw, from_user_id: Raw, recipient_id: Raw, recipient_user_id: Raw }
}

members! {
    /// Who a contact is.
    ContactShape { wa_id: Raw, user_id: Raw }
}

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
            let party = shape::<ItemShape>(item).unwrap_or_default();
            let (customer, user) = match kind {
                ItemKind::Message => (party.from, party.from_user_id),
                ItemKind::Status => (party.recipient_id, party.recipient_user_id),
                ItemKind::Error => (None, None),
            };
            let (customer, user) = (customer.and_then(text), user.and_then(text));
            let own_contacts = contacts.as_ref().map(|(position, contacts)| {
                (
                    *position,
                    of_customer(contacts, customer.as_deref(), user.as_deref()),
                )
            });
            let item_value = cut(&value_members, (*position, item), own_contacts);
            let (key, phone) = context.keyed(
                phone_number_id
                    .as_deref()
                    .map(|phone| Conversation::of(phone, customer.as_deref().or(user.as_deref()))),
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
    wa_id: Option<Cow<'a, str>>,
    user_id: Option<Cow<'a, str>>,
}

impl<'a> Contact<'a> {
    fn of(raw: &'a RawValue) -> Self {
        let shape = shape::<ContactShape>(raw).unwrap_or_default();
        Self {
            raw,
            wa_id: shape.wa_id.and_then(text),
            user_id: shape.user_id.and_then(text),
        }
    }
}

/// The contacts of an item: those whose `wa_id` is its customer or whose `user_id` is its
/// business-scoped user id; else the only contact when there is exactly one.
fn of_customer<'a>(
    contacts: &[Contact<'a>],
    customer: Option<&str>,
    user: Option<&str>,
) -> Vec<&'a RawValue> {
    let matching: Vec<&RawValue> = contacts
        .iter()
        .filter(|contact| {
            (customer.is_some() && contact.wa_id.as_deref() == customer)
                || (user.is_some() && contact.user_id.as_deref() == user)
        })
        .map(|contact| contact.raw)
        .collect();
    match contacts {
        [only] if matching.is_empty() => vec![only.raw],
        _ => matching,
    }
}

/// The item's value: the members of `value` in order, the item's own array (at `own`)
/// holding just `item`, every other `messages`, `statuses` or `errors` member left out,
/// `contacts` (at `contacts.0`) holding the item's contacts or left out when it has none.
fn cut(
    value: &[(Name<'_>, &RawValue)],
    (own, item): (usize, &RawValue),
    contacts: Option<(usize, Vec<&RawValue>)>,
) -> String {
    let mut json = String::with_capacity(item.get().len() + 256);
    json.push('{');
    for (position, (name, raw)) in value.iter().enumerate() {
        match &contacts {
            _ if position == own => push_list(&mut json, name, &[item]),
            Some((at, contacts)) if *at == position => {
                if !contacts.is_empty() {
                    push_list(&mut json, name, contacts);
                }
            }
            _ if ItemKind::of_array(name.as_str()).is_some() => {}
            _ => {
                push_name(&mut json, name);
                json.push_str(raw.get());
            }
        }
    }
    json.push('}');
    json
}

/// Appends `"name":[item,…]` to an object being written.
fn push_list(json: &mut String, name: &Name<'_>, items: &[&RawValue]) {
    push_name(json, name);
    json.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(item.get());
    }
    json.push(']');
}

/// Appends `"name":` to an object being written, after a comma unless it is the first.
fn push_name(json: &mut String, name: &Name<'_>) {
    if json.len() > 1 {
        json.push(',');
    }
    match name {
        Name::Verbatim(name) => {
            json.push('"');
            json.push_str(name);
            json.push('"');
        }
        Name::Unescaped(name) => {
            json.push_str(&serde_json::to_string(name).expect("a string serializes to JSON"))
        }
    }
    json.push(':');
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
