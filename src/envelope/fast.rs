//! The split's fast path: a notification of the ordinary shape read in one pass.
//!
//! [`super::split_by_levels`] reads each level (body, entry, change) as raw JSON and reads
//! it again one level down: every byte of a change is scanned once per level. Here one
//! serde pass over the body reads the notifications, their entries and their changes as
//! objects, and captures each change's `value` as raw JSON. Anything else than the ordinary
//! shape (an entry or change that is not an object, a missing or empty `changes`, a change
//! without `value`, invalid JSON) makes the pass fail, and the caller falls back to the
//! level-by-level reading, which keeps every such body exactly as before. Both give the
//! same records for every body the fast path takes: the fuzz target and the property tests
//! compare them.

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde_json::value::RawValue;

use super::shape::{ChangeShape, Raw, members};

/// A JSON object read as `T`; any other JSON value is an error. Derived structs would also
/// take an array, member by position.
pub(super) struct Object<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_any(ObjectVisitor(std::marker::PhantomData))
            .map(Object)
    }
}

/// Entries as objects.
type Entries<'a> = Vec<Object<Entry<'a>>>;
/// Changes as objects.
type Changes<'a> = Vec<Object<ChangeShape<'a>>>;

members! {
    /// A notification whose `entry` is a list of objects.
    Notification { object: Raw, entry: Entries }
}

members! {
    /// An entry whose `changes` is a list of objects.
    Entry { id: Raw, time: Raw, changes: Changes }
}

/// One entry of the ordinary shape: what its notification and itself say, and its changes
/// as `(field, value)`.
pub(super) struct OrdinaryEntry<'a> {
    pub(super) object: Option<&'a RawValue>,
    pub(super) id: Option<&'a RawValue>,
    pub(super) time: Option<&'a RawValue>,
    pub(super) changes: Vec<(Option<&'a RawValue>, &'a RawValue)>,
}

/// Every entry of `body` in order, when the body has the ordinary shape; `None` otherwise.
pub(super) fn entries(body: &[u8]) -> Option<Vec<OrdinaryEntry<'_>>> {
    // serde_json does not check the UTF-8 of members it skips, and the level-by-level
    // reading checks it in every member it captures: a body with bytes that are not UTF-8
    // anywhere is left to it.
    let body = std::str::from_utf8(body).ok()?;
    let notifications = match body.bytes().find(|b| !b.is_ascii_whitespace())? {
        b'{' => vec![serde_json::from_str::<Object<Notification>>(body).ok()?],
        b'[' => serde_json::from_str::<Vec<Object<Notification>>>(body).ok()?,
        _ => return None,
    };
    if notifications.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for Object(notification) in notifications {
        for Object(entry) in notification.entry? {
            let changes = entry
                .changes
                .filter(|changes| !changes.is_empty())?
                .into_iter()
                .map(|Object(change)| Some((change.field, change.value?)))
                .collect::<Option<_>>()?;
            entries.push(OrdinaryEntry {
                object: notification.object,
                id: entry.id,
                time: entry.time,
                changes,
            });
        }
    }
    Some(entries)
}
