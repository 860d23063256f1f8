//! `waba-gateway topics asyncapi` (DESIGN §2): the AsyncAPI 3.0 document of what the
//! gateway publishes with a configuration, for the tools consumers use (code generators,
//! catalogs, schema registries).
//!
//! One channel per topic of the plan `topics apply` uses ([`crate::topics::plan`]), with
//! its Kafka binding (partitions, replicas, topic configuration); one message per kind of
//! record a topic carries: each field's records, `messages` items by kind in item mode,
//! records of the unrouted topic, and on the dead-letter topic the bodies that are not
//! notifications and the records Kafka refused. Payloads refer to the JSON Schemas under
//! `schemas/` (`envelope.schema.json`, which picks each field's schema), so the document
//! lives beside them: `schemas/asyncapi.json` is the default configuration's.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::config::Settings;
use crate::envelope::headers;
use crate::routing::{ItemKind, Routing, SplitBy, WABA_OBJECT};
use crate::topics::TopicSpec;

/// Every payload refers to the envelope schema through this component, which refers to
/// the file once: parsers inline what a reference names, and thirty inlined copies of
/// every field's schema are more than some can hold.
const ENVELOPE: &str = "#/components/schemas/envelope";

/// The version of the Kafka bindings written.
const KAFKA_BINDING: &str = "0.5.0";

/// A JSON object whose members keep the order they are given in.
pub struct Ordered(Vec<(&'static str, Value)>);

#[cfg(test)]
impl Ordered {
    /// The member `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }
}

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The document for `settings`, whose topics are `specs`, its members in the order the
/// AsyncAPI specification lists them.
pub fn document(settings: &Settings, specs: &[TopicSpec]) -> Ordered {
    let routing = settings.routing();
    let carried = carried(&routing);
    let mut channels = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let mut used = BTreeSet::new();
    for spec in specs {
        // Two topics may differ only where an id cannot say so (`a.b`, `a_b`).
        let mut id = channel_id(&spec.name);
        while channels.contains_key(&id) {
            id.push('_');
        }
        let names = carried.get(spec.name.as_str()).cloned().unwrap_or_default();
        let messages: serde_json::Map<String, Value> = names
            .iter()
            .map(|name| {
                let reference = json!({ "$ref": format!("#/components/messages/{name}") });
                (name.clone(), reference)
            })
            .collect();
        used.extend(names.iter().cloned());
        let mut configuration = serde_json::Map::new();
        for (key, value) in &spec.configs {
            let value = value
                .parse::<u64>()
                .map_or_else(|_| json!(value), |number| json!(number));
            configuration.insert((*key).to_owned(), value);
        }
        let mut binding = json!({
            "topic": spec.name,
            "partitions": spec.partitions,
            "topicConfiguration": configuration,
            "bindingVersion": KAFKA_BINDING,
        });
        if spec.replication_factor > 0 {
            binding["replicas"] = json!(spec.replication_factor);
        }
        channels.insert(
            id.clone(),
            json!({
                "address": spec.name,
                "description": topic_description(&routing, &spec.name, &names),
                "messages": messages,
                "bindings": { "kafka": binding },
            }),
        );
        let sent: Vec<Value> = names
            .iter()
            .map(|name| json!({ "$ref": format!("#/channels/{id}/messages/{name}") }))
            .collect();
        operations.insert(
            format!("publish_{id}"),
            json!({
                "action": "send",
                "summary": format!("The gateway produces to {}.", spec.name),
                "channel": { "$ref": format!("#/channels/{id}") },
                "messages": sent,
            }),
        );
    }
    let messages: serde_json::Map<String, Value> = used
        .iter()
        .map(|name| (name.clone(), message(&routing, name)))
        .collect();
    let mut document = vec![
        ("asyncapi", json!("3.0.0")),
        (
            "info",
            json!({
                "title": "waba-gateway",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The Kafka records waba-gateway makes of WhatsApp Business Platform \
                    webhooks: one topic per field, each record's value an envelope around the change \
                    Meta sent (schemas/envelope.schema.json, which gives each field's schema). \
                    Generated by `waba-gateway topics asyncapi` from the gateway's configuration.",
            }),
        ),
    ];
    if !settings.kafka.is_embedded() {
        let servers: serde_json::Map<String, Value> = settings
            .kafka
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|broker| !broker.is_empty())
            .enumerate()
            .map(|(n, broker)| {
                let server = json!({
                    "host": broker,
                    "protocol": "kafka",
                    "description": "A bootstrap broker (kafka.brokers).",
                });
                (format!("broker{n}"), server)
            })
            .collect();
        document.push(("servers", Value::Object(servers)));
    }
    document.extend([
        ("defaultContentType", json!("application/json")),
        ("channels", Value::Object(channels)),
        ("operations", Value::Object(operations)),
        (
            "components",
            json!({
                "messages": messages,
                "schemas": {
                    "envelope": {
                        "$ref": "envelope.schema.json",
                        "description": "A record's value (JSON Schema 2020-12, beside this document).",
                    },
                    "routedHeaders": routed_headers(&routing),
                    "deadLetterHeaders": dead_letter_headers(),
                },
            }),
        ),
    ]);
    Ordered(document)
}

/// The messages each topic carries, by topic.
fn carried(routing: &Routing) -> BTreeMap<String, BTreeSet<String>> {
    let mut carried: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |topic: String, message: String| {
        carried.entry(topic).or_default().insert(message);
    };
    for field in routing.known_fields() {
        // In item mode a messages change without items is one record, as in change mode.
        add(routing.field_topic(field), field.to_owned());
    }
    if routing.split() == SplitBy::Item {
        for kind in ItemKind::ALL {
            add(
                routing.item_topic(Some(WABA_OBJECT), kind),
                item_message(kind),
            );
        }
    }
    add(routing.unrouted().to_owned(), "unrouted".to_owned());
    add(routing.deadletter().to_owned(), "deadletter".to_owned());
    add(routing.deadletter().to_owned(), "refused".to_owned());
    carried
}

/// The message name of `messages` items of `kind`.
fn item_message(kind: ItemKind) -> String {
    format!("messages_{}", kind.as_str())
}

/// A channel id AsyncAPI accepts (`[A-Za-z0-9_-]`) for `topic`.
fn channel_id(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn topic_description(routing: &Routing, topic: &str, messages: &BTreeSet<String>) -> String {
    if topic == routing.deadletter() {
        return "Authentic bodies that are not notifications, kept whole, and records Kafka \
                refused for good (wa-topic names where each was meant to go). \
                `waba-gateway replay --from deadletter` re-runs them."
            .to_owned();
    }
    if topic == routing.unrouted() {
        return "Changes whose field (or object) cannot name a topic, and entries without \
                changes, kept whole."
            .to_owned();
    }
    let list: Vec<&str> = messages.iter().map(String::as_str).collect();
    format!("Records of: {}.", list.join(", "))
}

/// The message `name` of [`carried`].
fn message(routing: &Routing, name: &str) -> Value {
    let routed_key = json!({
        "type": "string",
        "description": "messages: \"{phone_number_id}:{customer}\" (the customer's phone number, \
            else their business-scoped user id), or the phone number id alone when no customer \
            is named; one conversation stays in order on one partition. Every other field: the \
            entry id.",
    });
    let routed = |payload: Value, title: String, summary: &str| {
        json!({
            "name": name,
            "title": title,
            "summary": summary,
            "contentType": "application/json",
            "payload": payload,
            "headers": { "$ref": "#/components/schemas/routedHeaders" },
            "bindings": { "kafka": { "key": routed_key, "bindingVersion": KAFKA_BINDING } },
        })
    };
    let envelope_of = |constraints: Value| json!({ "allOf": [{ "$ref": ENVELOPE }, constraints] });
    match name {
        "deadletter" => json!({
            "name": name,
            "title": "An authentic body that is not a notification",
            "summary": "The raw body Meta sent, byte for byte (it may not be JSON); wa-error says \
                why it could not be split.",
            "contentType": "application/octet-stream",
            "payload": {
                "description": "The body as it came: any bytes.",
            },
            "headers": { "$ref": "#/components/schemas/deadLetterHeaders" },
        }),
        "refused" => json!({
            "name": name,
            "title": "A record Kafka refused for good",
            "summary": "The record as it was made, with the topic it was meant for in wa-topic and \
                the reason in wa-error.",
            "contentType": "application/json",
            "payload": { "$ref": ENVELOPE },
            "headers": { "$ref": "#/components/schemas/deadLetterHeaders" },
            "bindings": { "kafka": { "key": routed_key, "bindingVersion": KAFKA_BINDING } },
        }),
        "unrouted" => routed(
            json!({ "$ref": ENVELOPE }),
            "A change or entry that names no topic".to_owned(),
            "The envelope, its value the whole change (or entry) as Meta sent it.",
        ),
        _ => match ItemKind::ALL
            .into_iter()
            .find(|kind| item_message(*kind) == name)
        {
            Some(kind) => routed(
                envelope_of(json!({
                    "required": ["item_kind"],
                    "properties": {
                        "field": { "const": "messages" },
                        "item_kind": { "const": kind.as_str() },
                    },
                })),
                format!("messages: one {} (item mode)", kind.as_str()),
                "The envelope of one item of a messages change: its value the change's value \
                 cut down to that item.",
            ),
            None => {
                let summary = if name == "messages" && routing.split() == SplitBy::Item {
                    "A messages change with no item (item mode), or any messages change (change \
                     mode): the envelope around its value."
                } else {
                    "The envelope around one change's value, byte for byte as Meta sent it."
                };
                routed(
                    envelope_of(json!({
                        "required": ["field"],
                        "properties": { "field": { "const": name } },
                    })),
                    format!("{name}: one change"),
                    summary,
                )
            }
        },
    }
}

/// The headers of a record on a field's, an item kind's or the unrouted topic.
fn routed_headers(routing: &Routing) -> Value {
    let described = [
        (headers::EVENT_ID, "The record's event_id."),
        (headers::APP, "The app the notification came in for."),
        (headers::OBJECT, "The notification's object, as text."),
        (headers::ENTRY_ID, "The entry's id, as text."),
        (headers::FIELD, "The change's field."),
        (
            headers::PHONE_NUMBER_ID,
            "messages: metadata.phone_number_id, to filter by business number without parsing.",
        ),
        (headers::ITEM_KIND, "Item mode: message, status or error."),
        (
            headers::MESSAGE_ID,
            "Item mode: the wamid of the message, or the one a status is about.",
        ),
        (headers::STATUS, "Item mode: a status's status."),
        (headers::CE_SPECVERSION, "CloudEvents: 1.0."),
        (headers::CE_ID, "CloudEvents: the event_id."),
        (
            headers::CE_SOURCE,
            "CloudEvents: urn:waba-gateway:{app}:{entry id}.",
        ),
        (
            headers::CE_TYPE,
            "CloudEvents: com.whatsapp.{field}[.{item kind}].",
        ),
        (
            headers::CE_TIME,
            "CloudEvents: when the notification came in.",
        ),
        (headers::CONTENT_TYPE, "application/json."),
    ];
    let properties: serde_json::Map<String, Value> = described
        .into_iter()
        .filter(|(name, _)| routing.cloudevents() || !name.starts_with("ce_"))
        .map(|(name, description)| {
            let schema = json!({ "type": "string", "description": description });
            (name.to_owned(), schema)
        })
        .collect();
    let mut required = vec![headers::EVENT_ID, headers::APP, headers::CONTENT_TYPE];
    if routing.cloudevents() {
        required.extend([
            headers::CE_SPECVERSION,
            headers::CE_ID,
            headers::CE_SOURCE,
            headers::CE_TYPE,
            headers::CE_TIME,
        ]);
    }
    json!({
        "type": "object",
        "description": "Kafka record headers, each value UTF-8 text.",
        "required": required,
        "properties": properties,
    })
}

/// The headers of a record on the dead-letter topic.
fn dead_letter_headers() -> Value {
    json!({
        "type": "object",
        "description": "Kafka record headers, each value UTF-8 text. A refused record also keeps \
            the headers it was made with, but content-type.",
        "required": [headers::APP, headers::ERROR],
        "properties": {
            headers::APP: { "type": "string", "description": "The app the body came in for." },
            headers::ERROR: {
                "type": "string",
                "description": "{reason}: {detail}; the reasons are those of `waba-gateway replay --reason`.",
            },
            headers::RECEIVED_AT: {
                "type": "string",
                "description": "A body that is not a notification: when it came in (RFC 3339).",
            },
            headers::TOPIC: {
                "type": "string",
                "description": "A refused record: the topic it was meant for.",
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::{Overrides, plan};

    #[test]
    fn every_topic_of_the_plan_is_one_channel_with_its_binding_and_messages() {
        let mut file = tempfile::NamedTempFile::new().expect("a file");
        std::io::Write::write_all(
            &mut file,
            b"[kafka]\nbrokers = \"k1:9092, k2:9092\"\n[kafka.topics]\n\"messages.status\" = \"wa.statuses\"\n\
              [routing]\nsplit = \"item\"\n[apps.shop]\nsecret = \"s\"\nverify_token = \"t\"\n",
        )
        .expect("written");
        let settings = Settings::load(Some(file.path()), []).expect("valid settings");
        let specs = plan(&settings, &Overrides::default());
        let document = document(&settings, &specs);
        let text = serde_json::to_string(&document).expect("JSON");
        assert!(text.starts_with(r#"{"asyncapi":"3.0.0","info":"#), "{text}");
        let channels = document
            .get("channels")
            .and_then(Value::as_object)
            .expect("channels");
        assert_eq!(channels.len(), specs.len());
        let statuses = &channels["wa_statuses"];
        assert_eq!(statuses["address"], "wa.statuses");
        assert_eq!(
            statuses["messages"]["messages_status"]["$ref"],
            "#/components/messages/messages_status"
        );
        let messages = &channels["whatsapp_messages"]["messages"];
        assert!(messages.get("messages_message").is_some());
        assert!(messages.get("messages").is_some());
        assert!(messages.get("messages_status").is_none());
        let binding = &statuses["bindings"]["kafka"];
        assert_eq!(binding["partitions"], settings.kafka.topic_partitions);
        assert!(binding["topicConfiguration"]["max.message.bytes"].is_u64());
        let servers = document.get("servers").expect("servers");
        assert_eq!(servers["broker1"]["host"], "k2:9092");
        let deadletter = &channels["whatsapp_deadletter"]["messages"];
        let clash = Settings::load(
            None,
            [(
                "WABA_GATEWAY__KAFKA__TOPICS__FLOWS".to_owned(),
                "whatsapp_calls".to_owned(),
            )],
        )
        .expect("valid settings");
        let both = super::document(&clash, &plan(&clash, &Overrides::default()));
        let ids = both
            .get("channels")
            .and_then(Value::as_object)
            .expect("ids");
        assert_eq!(ids["whatsapp_calls"]["address"], "whatsapp.calls");
        assert_eq!(ids["whatsapp_calls_"]["address"], "whatsapp_calls");
        assert!(deadletter.get("deadletter").is_some() && deadletter.get("refused").is_some());
        let components = document.get("components").expect("components");
        for (name, _) in components["messages"].as_object().expect("messages") {
            assert!(
                channels.values().any(|c| c["messages"].get(name).is_some()),
                "{name} is on no channel"
            );
        }
    }
}
