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

/// librdkafka properties whose values are credentials.
fn is_sensitive_property(key: &str) -> bool {
    [
        "password",
        "secret",
        "sasl.jaas",
        "key.pem",
        "oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `[kafka.librdkafka]`: property names and values, credentials redacted in `Debug` and in
/// printed settings.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct LibrdkafkaProperties(pub BTreeMap<String, String>);

impl LibrdkafkaProperties {
    fn shown(&self) -> impl Iterator<Item = (&String, &str)> {
        self.0.iter().map(|(key, value)| {
            let shown = if is_sensitive_property(key) {
                REDACTED
            } else {
                value.as_str()
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
