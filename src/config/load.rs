//! Loading: built-in defaults, then the TOML file, then `WABA_GATEWAY__*` variables;
//! secrets read from their `*_file`s; the demo app on embedded Kafka.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use super::unknown::{Sources, unknown_keys};
use super::{
    AckMode, AppSettings, ConfigError, DEMO_SECRET, DEMO_VERIFY_TOKEN, LogFormat, Settings,
};
use crate::routing::SplitBy;

impl Settings {
    /// Loads defaults, then `file`, then the `WABA_GATEWAY__*` variables of `env`, reads
    /// `*_file` secrets, adds the demo app where it applies, and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut settings, mut problems) = Self::load_layers(file, env)?;
        if settings.apps.is_empty() && settings.kafka.is_embedded() {
            settings.apps.insert("default".to_owned(), demo_app());
        }
        problems.extend(settings.problems());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Loads the layers and reads `*_file` secrets, without checking that the settings can
    /// run a gateway: for commands that need only a part of them (`subscriptions`). Returns
    /// the problems met reading secret files.
    pub fn load_layers(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("WABA_GATEWAY__"))
            .collect();
        let sources = Sources {
            file: file.and_then(|path| Some((path, std::fs::read_to_string(path).ok()?))),
            env: &env,
        };
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let layered = builder
            .add_source(
                config::Environment::with_prefix("WABA_GATEWAY")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env.clone())),
            )
            .build()
            .map_err(|error| ConfigError::Invalid(vec![in_our_words(&error)]))?;
        // Every key the settings do not read is named, each with where it was written,
        // before (and besides) the first value that cannot be read.
        let tree: serde_json::Value = layered
            .clone()
            .try_deserialize()
            .map_err(|error| ConfigError::Invalid(vec![in_our_words(&error)]))?;
        let mut problems: Vec<String> = unknown_keys(&tree)
            .iter()
            .map(|path| sources.describe(path))
            .collect();
        let mut settings = match layered.try_deserialize::<Settings>() {
            Ok(settings) if problems.is_empty() => settings,
            Ok(_) => return Err(ConfigError::Invalid(problems)),
            Err(error) => {
                problems.push(in_our_words(&error));
                return Err(ConfigError::Invalid(problems));
            }
        };
        let kafka = &mut settings.kafka;
        kafka.librdkafka.0 = dotted(std::mem::take(&mut kafka.librdkafka.0));
        kafka.librdkafka_files = dotted(std::mem::take(&mut kafka.librdkafka_files));
        let problems = settings.read_secret_files();
        Ok((settings, problems))
    }

    fn read_secret_files(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, app) in &mut self.apps {
            let key = format!("apps.{name}");
            read_secret(
                &mut app.secret,
                &app.secret_file,
                &key,
                "secret",
                &mut problems,
            );
            read_secret(
                &mut app.verify_token,
                &app.verify_token_file,
                &key,
                "verify_token",
                &mut problems,
            );
            if let Some(path) = &app.previous_secrets_file {
                match std::fs::read_to_string(path) {
                    Ok(text) => app.previous_secrets.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|line| !line.is_empty())
                            .map(|line| SecretString::from(line.to_owned())),
                    ),
                    Err(error) => problems.push(format!(
                        "{key}.previous_secrets_file = {}: cannot be read ({error})",
                        path.display()
                    )),
                }
            }
        }
        let kafka = &mut self.kafka;
        for (key, path) in &kafka.librdkafka_files {
            let setting = format!("kafka.librdkafka_files.\"{key}\"");
            if kafka.librdkafka.0.contains_key(key) {
                problems.push(format!(
                    "{setting} and kafka.librdkafka.\"{key}\" are both set; keep one"
                ));
                continue;
            }
            if let Some(value) = read_file_secret(path, &setting, &mut problems) {
                kafka.librdkafka_secrets.insert(key.clone(), value);
            }
        }
        read_secret(
            &mut self.graph.access_token,
            &self.graph.access_token_file,
            "graph",
            "access_token",
            &mut problems,
        );
        problems
    }
}

/// A loading error as a sentence that names the key and says what to write, rather than
/// the parser's wording.
fn in_our_words(error: &config::ConfigError) -> String {
    use config::ConfigError as E;
    let at = |origin: &Option<String>| match origin {
        Some(origin) => format!(" ({origin})"),
        None => String::new(),
    };
    match error {
        E::Type {
            origin,
            unexpected,
            expected,
            key: Some(key),
        } => format!("{key}{} is {unexpected}: write {expected}", at(origin)),
        E::At {
            error,
            origin,
            key: Some(key),
        } => format!("{key}{}: {}", at(origin), in_our_words(error)),
        E::Message(message) => message.clone(),
        E::NotFound(what) => format!("{what} was not found"),
        E::FileParse {
            uri: Some(uri),
            cause,
        } => format!("{uri} is not valid TOML: {cause}"),
        other => other.to_string(),
    }
}

fn demo_app() -> AppSettings {
    AppSettings {
        path: Some("/webhook".to_owned()),
        secret: Some(SecretString::from(DEMO_SECRET)),
        verify_token: Some(SecretString::from(DEMO_VERIFY_TOKEN)),
        demo: true,
        ..AppSettings::default()
    }
}

/// librdkafka property names as they are written, `.` for the `_` that environment
/// variables must use instead.
fn dotted<V>(properties: BTreeMap<String, V>) -> BTreeMap<String, V> {
    properties
        .into_iter()
        .map(|(key, value)| (key.replace('_', "."), value))
        .collect()
}

/// The secret held by the file at `path` (less a trailing newline), or a problem naming
/// `setting`.
fn read_file_secret(
    path: &Path,
    setting: &str,
    problems: &mut Vec<String>,
) -> Option<SecretString> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(SecretString::from(
            text.trim_end_matches(['\r', '\n']).to_owned(),
        )),
        Err(error) => {
            problems.push(format!(
                "{setting} = {}: cannot be read ({error})",
                path.display()
            ));
            None
        }
    }
}

fn read_secret(
    secret: &mut Option<SecretString>,
    file: &Option<PathBuf>,
    section: &str,
    name: &str,
    problems: &mut Vec<String>,
) {
    let Some(path) = file else { return };
    if secret.is_some() {
        problems.push(format!(
            "{section}.{name} and {section}.{name}_file are both set; keep one"
        ));
        return;
    }
    *secret = read_file_secret(path, &format!("{section}.{name}_file"), problems);
}

/// A list given as a list, or as one comma-separated string (as environment variables
/// give it).
pub(super) fn string_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Joined(String),
        List(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::List(list) => list,
    })
}

pub(super) fn secret_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SecretString>, D::Error> {
    Ok(string_list(deserializer)?
        .into_iter()
        .map(SecretString::from)
        .collect())
}

/// Reads one of `choices` by name, or says which names there are (rather than serde's
/// "unknown variant" or the config crate's "enum … does not have variant constructor").
fn one_of<'de, D, T>(deserializer: D, choices: &[(&str, T)]) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Copy,
{
    let name = String::deserialize(deserializer)?;
    choices
        .iter()
        .find(|(choice, _)| *choice == name)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<String> = choices
                .iter()
                .map(|(choice, _)| format!("{choice:?}"))
                .collect();
            serde::de::Error::custom(format!(
                "{name:?} is not one of {}: write one of those",
                names.join(", ")
            ))
        })
}

impl<'de> Deserialize<'de> for AckMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_of(
            deserializer,
            &[
                ("spool", Self::Spool),
                ("kafka", Self::Kafka),
                ("none", Self::None),
            ],
        )
    }
}

impl<'de> Deserialize<'de> for SplitBy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_of(
            deserializer,
            &[("change", SplitBy::Change), ("item", SplitBy::Item)],
        )
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_of(deserializer, &[("text", Self::Text), ("json", Self::Json)])
    }
}
