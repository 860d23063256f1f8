//! Redaction: how settings are printed (`check-config`, `Debug`, logs) without a secret.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use super::Settings;

/// The path every secret shows in printed configuration.
const REDACTED: &str = "[redacted]";

impl Settings {
    /// The effective settings as TOML, every secret shown as `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = toml::Table::try_from(self).expect("settings serialize to a table");
        if let Some(toml::Value::Table(apps)) = shown.get_mut("apps") {
            for (name, app) in apps.iter_mut() {
                if let (toml::Value::Table(table), Some(settings)) = (app, self.apps.get(name)) {
                    table.insert(
                        "path".to_owned(),
                        toml::Value::String(Self::app_path(name, settings)),
                    );
                }
            }
        }
        toml::to_string_pretty(&shown).expect("a TOML table prints")
    }
}

pub(super) fn redact_option<S: Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

pub(super) fn redact_list<S: Serializer>(
    secrets: &[SecretString],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|_| REDACTED))
}

/// librdkafka properties whose values are known not to be secret, and so may be printed.
/// Every other value is redacted: a misspelled `sasl.pasword` or a property librdkafka
/// does not have (`sasl.jaas.config`) may hold a credential all the same.
pub(super) const SHOWN_PROPERTIES: &[&str] = &[
    "acks",
    "api.version.request",
    "batch.num.messages",
    "batch.size",
    "broker.address.family",
    "client.id",
    "client.rack",
    "compression.codec",
    "compression.type",
    "connections.max.idle.ms",
    "debug",
    "enable.idempotence",
    "enable.ssl.certificate.verification",
    "linger.ms",
    "log.connection.close",
    "max.in.flight.requests.per.connection",
    "message.max.bytes",
    "message.timeout.ms",
    "metadata.max.age.ms",
    "partitioner",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "request.timeout.ms",
    "retries",
    "retry.backoff.ms",
    "sasl.kerberos.principal",
    "sasl.kerberos.service.name",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.scope",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.username",
    "security.protocol",
    "socket.keepalive.enable",
    "socket.timeout.ms",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.endpoint.identification.algorithm",
    "ssl.key.location",
    "statistics.interval.ms",
    "sticky.partitioning.linger.ms",
    "topic.metadata.propagation.max.ms",
    "topic.metadata.refresh.interval.ms",
];

/// Whether the value of librdkafka property `key` may be printed (see [`SHOWN_PROPERTIES`]).
pub fn is_shown_property(key: &str) -> bool {
    SHOWN_PROPERTIES.binary_search(&key).is_ok()
}

/// `[kafka.librdkafka]`: property names and values; in `Debug` and printed settings only
/// the values of [`SHOWN_PROPERTIES`] show, every other is redacted.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct LibrdkafkaProperties(pub BTreeMap<String, String>);

impl LibrdkafkaProperties {
    fn shown(&self) -> impl Iterator<Item = (&String, &str)> {
        self.0.iter().map(|(key, value)| {
            let shown = if is_shown_property(key) {
                value.as_str()
            } else {
                REDACTED
            };
            (key, shown)
        })
    }
}

impl std::fmt::Debug for LibrdkafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Serialize for LibrdkafkaProperties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.shown())
    }
}
