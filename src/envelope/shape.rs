//! The shape reader: the members of a notification, an entry and a change, read as raw
//! JSON in one pass over each object, never by position and never re-serialised.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::EnvelopeError;

pub(super) struct Notification<'a> {
    pub(super) object: Option<&'a RawValue>,
    pub(super) entries: Vec<&'a RawValue>,
}

/// A member as raw JSON, written verbatim wherever it goes.
pub(super) type Raw<'a> = &'a RawValue;

/// A member that is present, even as `null`: serde reads `null` into `None` for an
/// `Option`, which would turn `"value":null` into a change without a value.
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Declares a struct that reads the named members of a JSON object in one pass, each as
/// [`Raw`] JSON or as a [`List`] of raw items. A member that is present, even as `null`,
/// is `Some`; members not named are skipped unread.
macro_rules! members {
    ($(#[$meta:meta])* $name:ident { $($field:ident: $kind:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(serde::Deserialize, Default)]
        pub(super) struct $name<'a> {
            $(
                #[serde(borrow, default, deserialize_with = "crate::envelope::shape::present")]
                pub(super) $field: Option<$kind<'a>>,
            )+
        }
    };
}
pub(super) use members;

/// A member that should be a list, read in the same pass as the object holding it: its
/// items as raw JSON, or `NotAList` for any other JSON value.
pub(super) enum List<'a> {
    Items(Vec<&'a RawValue>),
    NotAList,
}

impl<'de: 'a, 'a> Deserialize<'de> for List<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<'a>(std::marker::PhantomData<List<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for ListVisitor<'a> {
            type Value = List<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<List<'a>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'a RawValue>()? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<List<'a>, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(List::NotAList)
            }
            fn visit_bool<E>(self, _: bool) -> Result<List<'a>, E> {
                Ok(List::NotAList)
            }
            fn visit_i64<E>(self, _: i64) -> Result<List<'a>, E> {
                Ok(List::NotAList)
            }
            fn visit_u64<E>(self, _: u64) -> Result<List<'a>, E> {
                Ok(List::NotAList)
            }
            fn visit_f64<E>(self, _: f64) -> Result<List<'a>, E> {
                Ok(List::NotAList)
            }
            fn visit_str<E>(self, _: &str) -> Result<List<'a>, E> {
                Ok(List::NotAList)
            }
            fn visit_unit<E>(self) -> Result<List<'a>, E> {
                Ok(List::NotAList)
            }
        }
        deserializer.deserialize_any(ListVisitor(std::marker::PhantomData))
    }
}

members! {
    /// A notification: `{"object": …, "entry": [ … ]}`.
    NotificationShape { object: Raw, entry: List }
}

members! {
    /// An entry: `{"id": …, "time": …, "changes": [ … ]}`.
    EntryShape { id: Raw, time: Raw, changes: List }
}

members! {
    /// A change: `{"field": …, "value": …}`.
    ChangeShape { field: Raw, value: Raw }
}

/// Deserializes a shape from a JSON object only. Derived structs would also accept an array
/// (member by position), which would read meaning into bodies that have none.
pub(super) fn shape<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    if raw.get().starts_with('{') {
        serde_json::from_str(raw.get()).ok()
    } else {
        None
    }
}

pub(super) fn parse_notifications(body: &[u8]) -> Result<Vec<Notification<'_>>, EnvelopeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let json_error = |error: serde_json::Error| {
        if std::str::from_utf8(body).is_err() {
            EnvelopeError::InvalidUtf8
        } else {
            EnvelopeError::InvalidJson(error.to_string())
        }
    };
    match first {
        None => Err(EnvelopeError::Empty),
        Some(b'{') => {
            let shape: NotificationShape = serde_json::from_slice(body).map_err(json_error)?;
            Ok(vec![notification(shape)?])
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(json_error)?;
            if items.is_empty() {
                return Err(EnvelopeError::NoNotifications);
            }
            items
                .into_iter()
                .map(|item| {
                    shape::<NotificationShape>(item)
                        .ok_or(EnvelopeError::NotAnObject)
                        .and_then(notification)
                })
                .collect()
        }
        Some(_) => {
            // Validate first, so that garbage is reported as invalid JSON, not as a shape.
            serde_json::from_slice::<&RawValue>(body).map_err(json_error)?;
            Err(EnvelopeError::NotAnObject)
        }
    }
}

fn notification(shape: NotificationShape<'_>) -> Result<Notification<'_>, EnvelopeError> {
    let entries = match shape.entry.ok_or(EnvelopeError::MissingEntry)? {
        List::Items(entries) => entries,
        List::NotAList => return Err(EnvelopeError::EntryNotAList),
    };
    Ok(Notification {
        object: shape.object,
        entries,
    })
}

/// The text of a JSON string (unescaped) or number (as written); `None` for anything else
/// and for the empty string.
pub(super) fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    match json.as_bytes().first()? {
        b'"' => string_text(raw),
        b'-' | b'0'..=b'9' => Some(Cow::Borrowed(json)),
        _ => None,
    }
}

/// The unescaped text of a JSON string; `None` for other JSON and for the empty string.
pub(super) fn string_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Cow::Borrowed(text),
        // Only a string with escapes needs a copy.
        Err(_) => Cow::Owned(serde_json::from_str::<String>(raw.get()).ok()?),
    };
    (!text.is_empty()).then_some(text)
}
