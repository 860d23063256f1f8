//! Types, checked strictly and all at once: a whole number where one is expected (not
//! `6.5`, which the layers would round; `5000.0` is 5000), `true` or `false` (not `"off"`), text in quotes
//! (not `brokers = 9092`), and one of the names of a choice. The `config` crate would
//! convert each of these silently, or stop at the first one it cannot, in an order that
//! varies from run to run; here every problem is named, sorted by key, without the value
//! (it may be a secret) except for the names of a choice.

use serde_json::Value;

use super::unknown::{Sources, app_shape, settings_shape};

/// The keys whose value is one of a few names, with those names.
const CHOICES: &[(&str, &[&str])] = &[
    ("delivery.ack", &["spool", "kafka", "none"]),
    ("log.format", &["text", "json"]),
    ("routing.split", &["change", "item"]),
];

/// One sentence per value of `tree` (the layers, merged) whose type does not fit its key,
/// sorted by key. Each such value is replaced by its default, and text from environment
/// variables by the number or boolean it spells, so that the settings can still be read
/// and checked for every other problem in the same run.
pub(super) fn type_problems(tree: &mut Value, sources: &Sources) -> Vec<String> {
    let mut problems = Vec::new();
    check("", tree, &settings_shape(), sources, &mut problems);
    problems.sort();
    problems
}

/// Checks `value` against `shape`, and replaces it as [`type_problems`] says.
fn check(
    path: &str,
    value: &mut Value,
    shape: &Value,
    sources: &Sources,
    problems: &mut Vec<String>,
) {
    match fitted(path, value, shape, sources, problems) {
        Fit::Fits => {}
        Fit::Is(fitted) => *value = fitted,
        Fit::Wrong(wanted) => {
            problems.push(sentence(path, value, wanted, sources));
            // Text stands for a scalar where text is wanted, so that the key is not also
            // reported missing; anything else, by its default.
            *value = match (shape, &*value) {
                (Value::String(_) | Value::Null, Value::Number(_) | Value::Bool(_)) => {
                    Value::String(value.to_string())
                }
                _ => shape.clone(),
            };
        }
        Fit::WrongChoice(problem) => {
            problems.push(problem);
            *value = shape.clone();
        }
    }
}

enum Fit {
    Fits,
    /// Fits, written as this value.
    Is(Value),
    /// Does not fit: what to write instead.
    Wrong(&'static str),
    /// A name that is not one of a choice's: the sentence that says so.
    WrongChoice(String),
}

fn fitted(
    path: &str,
    value: &mut Value,
    shape: &Value,
    sources: &Sources,
    problems: &mut Vec<String>,
) -> Fit {
    let from_env = sources.variable(path).is_some();
    match shape {
        Value::Object(members) => {
            let Value::Object(given) = value else {
                return Fit::Wrong("a table of settings");
            };
            for (key, value) in given {
                let path = join(path, key);
                match (path.as_str(), members.get(key)) {
                    // Free names: one app shape each.
                    ("apps", _) => {
                        if let Value::Object(apps) = value {
                            for (name, app) in apps {
                                let path = join("apps", name);
                                check(&path, app, &app_shape(), sources, problems);
                            }
                        } else {
                            problems.push(sentence(&path, value, "a table of apps", sources));
                            *value = Value::Object(Default::default());
                        }
                    }
                    // Free names whose values librdkafka reads as text (`linger.ms = 5`).
                    ("kafka.librdkafka" | "kafka.librdkafka_files" | "kafka.topics", _) => {
                        if let Value::Object(properties) = value {
                            for property in properties.values_mut() {
                                if let Value::Number(_) | Value::Bool(_) = property {
                                    *property = Value::String(property.to_string());
                                }
                            }
                        }
                    }
                    (_, Some(shape)) => check(&path, value, shape, sources, problems),
                    // Unknown keys are named elsewhere.
                    (_, None) => {}
                }
            }
            Fit::Fits
        }
        _ if CHOICES.iter().any(|(key, _)| *key == path) => {
            let (_, names) = CHOICES.iter().find(|(key, _)| *key == path).expect("found");
            if let Value::String(name) = value
                && names.contains(&name.as_str())
            {
                return Fit::Fits;
            }
            let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
            let given = match value {
                Value::String(name) => format!("{name:?}"),
                other => kind(other).to_owned(),
            };
            Fit::WrongChoice(format!(
                "{path} ({}) is {given}, not one of {}: write one of those",
                sources.origin(path),
                quoted.join(", ")
            ))
        }
        Value::Number(_) => match value {
            Value::Number(number) if number.is_i64() || number.is_u64() => Fit::Fits,
            // A whole number written with a fraction of zero (`5000.0`: Helm's `toToml`
            // writes every number from values.yaml so) is that number; `6.5` is not.
            Value::Number(number)
                if number
                    .as_f64()
                    .is_some_and(|n| n.fract() == 0.0 && n.abs() < 9.0e15) =>
            {
                Fit::Is((number.as_f64().unwrap_or_default() as i64).into())
            }
            Value::String(text) if from_env => match text.trim().parse::<i64>() {
                Ok(number) => Fit::Is(number.into()),
                Err(_) => match text.trim().parse::<u64>() {
                    Ok(number) => Fit::Is(number.into()),
                    Err(_) => Fit::Wrong("a whole number"),
                },
            },
            _ => Fit::Wrong("a whole number"),
        },
        Value::Bool(_) => match value {
            Value::Bool(_) => Fit::Fits,
            Value::String(text) if from_env && text.eq_ignore_ascii_case("true") => {
                Fit::Is(true.into())
            }
            Value::String(text) if from_env && text.eq_ignore_ascii_case("false") => {
                Fit::Is(false.into())
            }
            _ => Fit::Wrong("true or false"),
        },
        Value::Array(_) => match value {
            Value::String(_) => Fit::Fits,
            Value::Array(items) if items.iter().all(Value::is_string) => Fit::Fits,
            _ => Fit::Wrong("a list of texts in quotes"),
        },
        // Text, and the optional keys (all text: paths, secrets), absent from the defaults.
        Value::String(_) | Value::Null => match value {
            Value::String(_) => Fit::Fits,
            _ => Fit::Wrong("text in quotes"),
        },
    }
}

fn sentence(path: &str, value: &Value, wanted: &str, sources: &Sources) -> String {
    let hint = if sources.variable(path).is_some() {
        String::new()
    } else if matches!(value, Value::String(_)) {
        " (without quotes)".to_owned()
    } else {
        String::new()
    };
    // A number or a switch is never secret: what was given may be quoted.
    let given = match (wanted, value) {
        ("a whole number" | "true or false", Value::String(text)) => format!("{text:?}"),
        ("a whole number" | "true or false", Value::Number(_) | Value::Bool(_)) => {
            value.to_string()
        }
        _ => kind(value).to_owned(),
    };
    format!(
        "{path} ({}) is {given}: write {wanted}{hint}",
        sources.origin(path)
    )
}

/// What a value is, without saying what it holds.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "true or false",
        Value::Number(number) if number.is_f64() => "a number with a fraction",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
