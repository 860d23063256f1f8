//! Keys the settings do not read: every one of them, found by walking the layered keys
//! against the settings' own, named with where it came from (the file and line, or the
//! environment variable) and what was probably meant, all in one run.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::{AppSettings, Settings};
use crate::tls::TlsSettings;

/// Where the layers came from, to say where an unknown key was written.
pub(super) struct Sources<'a> {
    /// The file and its text, when one was given and could be read.
    pub file: Option<(&'a Path, String)>,
    /// The `WABA_GATEWAY__*` variables.
    pub env: &'a HashMap<String, String>,
}

impl Sources<'_> {
    /// One sentence for the unknown key at `path` (`server.listen_addr`).
    pub fn describe(&self, path: &str) -> String {
        let origin = self.origin(path);
        let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
        let known = known_keys(section).unwrap_or_default();
        let hint = match closest(key, &known) {
            Some(close) => format!("did you mean {close:?}?"),
            None if known.is_empty() => "remove it".to_owned(),
            None => format!("the keys here are {}", known.join(", ")),
        };
        format!("{path} ({origin}) is not a setting: {hint}")
    }

    /// Where the key at `path` was written: the environment variable, or the file and
    /// line.
    pub fn origin(&self, path: &str) -> String {
        match (self.variable(path), &self.file) {
            (Some(variable), _) => format!("environment variable {variable}"),
            (None, Some((file, text))) => match line_of(text, path) {
                Some(line) => format!("{} line {line}", file.display()),
                None => file.display().to_string(),
            },
            (None, None) => "the settings".to_owned(),
        }
    }

    /// The variable that set `path`, if one did.
    pub fn variable(&self, path: &str) -> Option<&str> {
        let wanted = format!("WABA_GATEWAY__{}", path.replace('.', "__"));
        self.env
            .keys()
            .find(|name| name.eq_ignore_ascii_case(&wanted))
            .map(String::as_str)
    }
}

/// The paths of every key in `tree` (the layers, merged) that the settings do not have,
/// sorted.
pub(super) fn unknown_keys(tree: &serde_json::Value) -> Vec<String> {
    let mut unknown = Vec::new();
    walk("", tree, &mut unknown);
    unknown.sort();
    unknown
}

fn walk(section: &str, node: &serde_json::Value, unknown: &mut Vec<String>) {
    let serde_json::Value::Object(members) = node else {
        return;
    };
    let known = known_keys(section);
    for (key, value) in members {
        let path = if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        };
        match &known {
            Some(known) if !known.contains(key) => unknown.push(path),
            _ => walk(&path, value, unknown),
        }
    }
}

/// The line of `text` (TOML) where the key at `path` is written.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = document.as_table();
    let mut span = None;
    let segments: Vec<&str> = path.split('.').collect();
    for (at, segment) in segments.iter().enumerate() {
        let (key, item) = table.get_key_value(segment)?;
        span = key.span().or(span);
        if at + 1 < segments.len() {
            table = item.as_table_like()?;
        }
    }
    Some(text[..span?.start].matches('\n').count() + 1)
}

/// The keys a section of the settings has (`server`, `apps.shop`; `` for the top level),
/// read off the defaults serialized with every optional key present. `None` for a
/// section of free names (`apps`, `kafka.topics`, `kafka.librdkafka`,
/// `kafka.librdkafka_files`) or for a value.
fn known_keys(section: &str) -> Option<Vec<String>> {
    let segments: Vec<&str> = section.split('.').filter(|s| !s.is_empty()).collect();
    let node = match segments.as_slice() {
        ["apps"] | ["kafka", "topics" | "librdkafka" | "librdkafka_files"] => return None,
        ["apps", _] => app_shape(),
        path => {
            let mut node = settings_shape();
            for segment in path {
                node = node[*segment].take();
            }
            node
        }
    };
    match node {
        serde_json::Value::Object(members) => Some(members.keys().cloned().collect()),
        _ => None,
    }
}

/// The settings' defaults as JSON, with `[server.tls]` present: the keys and, by their
/// defaults, the types of every setting (an optional key that is absent is `null`).
pub(super) fn settings_shape() -> serde_json::Value {
    let mut shape = json(&Settings::default());
    shape["server"]["tls"] = json(&TlsSettings {
        cert_file: Default::default(),
        key_file: Default::default(),
        client_ca_file: None,
        client_names: Vec::new(),
        reload_interval_ms: 0,
    });
    shape
}

/// [`settings_shape`] of one `[apps.<name>]`.
pub(super) fn app_shape() -> serde_json::Value {
    json(&AppSettings::default())
}

fn json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("settings serialize to JSON")
}

/// The known key closest to `key`, when it is close enough to be a misspelling.
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| candidate.as_str())
}

/// Warnings for variables that look meant for the settings but are not read: one `_`
/// after `WABA_GATEWAY` where two are needed (`WABA_GATEWAY_KAFKA__BROKERS`).
pub fn misnamed_variables(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let sections = known_keys("").unwrap_or_default();
    let mut warnings: Vec<String> = env
        .into_iter()
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix("WABA_GATEWAY_")?;
            let section = rest.split("__").next()?.to_ascii_lowercase();
            let meant = sections.contains(&section);
            (!rest.starts_with('_') && meant).then(|| {
                format!(
                    "{name} is not read: settings variables start with WABA_GATEWAY__ (two \
                     underscores), as in WABA_GATEWAY__{rest}"
                )
            })
        })
        .collect();
    warnings.sort();
    warnings
}
