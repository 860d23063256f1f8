//! Loading: built-in defaults, then the TOML file, then `WABA_GATEWAY__*` variables;
//! secrets read from their `*_file`s; the demo app on embedded Kafka.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use super::types::type_problems;
use super::unknown::{Sources, unknown_keys};
use super::{
    AckMode, AppSettings, ConfigError, DEMO_SECRET, DEMO_VERIFY_TOKEN, LogFormat, Settings,
};
use crate::routing::SplitBy;

impl Settings {
    /// Loads defaults, then `file`, then the `WABA_GATEWAY__*` variables of `env`, reads
    /// `*_file` secrets, adds the demo app where it applies, and validates the settings.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_checked(file, env, |_| Vec::new())
    }

    /// [`Settings::load`], with the problems `check` finds in the settings once read
    /// reported in the same run (the commands pass `app::check_problems`: files, spool,
    /// librdkafka).
    pub fn load_checked(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        check: impl FnOnce(&Self) -> Vec<String>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let (mut settings, mut problems) = Self::load_layers(file, env.iter().cloned())?;
        problems.extend(
            settings.telemetry.apply_env(
                env.iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            ),
        );
        if settings.apps.is_empty() && settings.kafka.is_embedded() {
            settings.apps.insert("default".to_owned(), demo_app());
        }
        problems.extend(settings.problems());
        problems.extend(check(&settings));
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Loads the layers and reads `*_file` secrets. Returns the settings with the problems
    /// met on the way (unknown keys, values of the wrong type, secret files that cannot
    /// be read), or only the problems when the layers cannot be read into settings at all.
    fn load_layers(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("WABA_GATEWAY__"))
            .collect();
        let text = file.and_then(|path| std::fs::read_to_string(path).ok());
        if let (Some(path), Some(text)) = (file, &text)
            && let Some(problem) = syntax_problem(path, text)
        {
            return Err(ConfigError::Invalid(vec![problem]));
        }
        let sources = Sources {
            file: file.zip(text),
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
        // Every key the settings do not read is named, each with where it was written, and
        // every value of the wrong type, all before the settings are read.
        let mut tree: serde_json::Value = layered
            .try_deserialize()
            .map_err(|error| ConfigError::Invalid(vec![in_our_words(&error)]))?;
        let mut problems: Vec<String> = unknown_keys(&tree)
            .iter()
            .map(|path| sources.describe(path))
            .collect();
        problems.extend(type_problems(&mut tree, &sources));
        // What the types let through and the settings still cannot read (a negative count,
        // an address that does not parse) is named and set aside, key after key.
        let mut unreadable = Vec::new();
        let mut settings = loop {
            match serde_path_to_error::deserialize::<_, Settings>(&tree) {
                Ok(settings) => break settings,
                Err(error) => {
                    let path = error.path().to_string();
                    unreadable.push(format!(
                        "{path} ({}): {}",
                        sources.origin(&path),
                        without_value(&error.inner().to_string())
                    ));
                    if unreadable.len() >= 32 || !remove(&mut tree, &path) {
                        problems.append(&mut unreadable);
                        return Err(ConfigError::Invalid(problems));
                    }
                }
            }
        };
        problems.append(&mut unreadable);
        let kafka = &mut settings.kafka;
        kafka.librdkafka.0 = dotted(std::mem::take(&mut kafka.librdkafka.0));
        kafka.librdkafka_files = dotted(std::mem::take(&mut kafka.librdkafka_files));
        problems.extend(settings.read_secret_files());
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

/// Why `text` (the TOML file at `path`) cannot be parsed: the file, line, column and the
/// key being written, never the line itself, which may hold a secret.
fn syntax_problem(path: &Path, text: &str) -> Option<String> {
    let error = toml_edit::ImDocument::parse(text).err()?;
    let at = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |start| start.chars().count())
        + 1;
    let key = key_on_line(text, line).map_or(String::new(), |key| format!(", in {key}"));
    // The parser's message may quote what it read: only its wording up to the first quote.
    let message = error.message().lines().next().unwrap_or_default();
    let message = message
        .split(['"', '\'', '`'])
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches([',', ':']);
    Some(format!(
        "{} line {line}, column {column}{key} is not valid TOML ({message}); the line is not \
         shown, as it may hold a secret: look for a missing quote, bracket or `=`",
        path.display()
    ))
}

/// The key written on line `number` (1-based) of `text`, with the table it is in
/// (`apps.default.secret`), when the line starts with a plain key and `=`.
fn key_on_line(text: &str, number: usize) -> Option<String> {
    let mut table = String::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.trim();
        if at + 1 == number {
            let (key, _) = line.split_once('=')?;
            let key = key.trim();
            let plain = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
            return plain.then(|| {
                let key = key.to_owned();
                if table.is_empty() {
                    key
                } else {
                    format!("{table}.{key}")
                }
            });
        }
        if let Some(header) = line.strip_prefix('[')
            && let Some((name, _)) = header.trim_start_matches('[').split_once(']')
        {
            table = name.trim().to_owned();
        }
    }
    None
}

/// Removes the value at `path` (`server.listen`) from `tree`, so that its default applies;
/// false when there is none.
fn remove(tree: &mut serde_json::Value, path: &str) -> bool {
    let Some((parent, key)) = path.rsplit_once('.') else {
        return tree
            .as_object_mut()
            .is_some_and(|members| members.remove(path).is_some());
    };
    parent
        .split('.')
        .try_fold(tree, |node, segment| node.get_mut(segment))
        .and_then(serde_json::Value::as_object_mut)
        .is_some_and(|members| members.remove(key).is_some())
}

/// serde's message without the value it quotes (`invalid value: integer \`-5\`, expected
/// u64` becomes `invalid value, expected a whole number, 0 or more`): the value may be a secret.
fn without_value(message: &str) -> String {
    let mut words = message.split('`');
    let mut kept = words
        .next()
        .unwrap_or_default()
        .trim_end()
        .trim_end_matches(" integer")
        .trim_end_matches(" string")
        .trim_end_matches(':')
        .to_owned();
    // Every other part is quoted; the parts after a quote are kept.
    for (at, part) in words.enumerate() {
        if at % 2 == 1 {
            kept.push_str(part);
        }
    }
    // And nothing in double quotes (serde's `string "…"`).
    let mut parts = kept.split('"');
    let mut unquoted = parts.next().unwrap_or_default().to_owned();
    for (at, part) in parts.enumerate() {
        if at % 2 == 1 {
            unquoted.push_str(part);
        }
    }
    kept = unquoted;
    for unsigned in ["u8", "u16", "u32", "u64", "usize"] {
        kept = kept.replace(
            &format!("expected {unsigned}"),
            "expected a whole number, 0 or more",
        );
    }
    kept
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
        // Only the parser's first line (where), never the snippet of the file it shows.
        E::FileParse {
            uri: Some(uri),
            cause,
        } => format!(
            "{uri} is not valid TOML: {}",
            cause.to_string().lines().next().unwrap_or_default()
        ),
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
                ("none", Self::Queued),
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
