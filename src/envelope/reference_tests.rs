//! The one-pass reading against the level-by-level reference: the same records and keys
//! for every fixture and for bodies built to tell them apart.

use std::path::Path;

use serde_json::Value;
use serde_json::value::RawValue;

use super::tests::{AT, at, routing};
use super::*;

/// The one-pass split and the level-by-level reference give the same records for every
/// fixture and for bodies the one pass does not take (it then falls back).
#[test]
fn the_one_pass_split_gives_the_records_of_the_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut bodies: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| std::fs::read(path).expect("read"))
        .collect();
    assert!(bodies.len() >= 30);
    for odd in [
        r#"{"object":"o","entry":[{"id":"1","changes":[]}]}"#,
        r#"{"object":"o","entry":[{"id":"1"}]}"#,
        r#"{"object":"o","entry":[{"id":"1","changes":[{"field":"messages"}]}]}"#,
        r#"{"object":"o","entry":[["1",2,[]]]}"#,
        r#"{"object":"o","entry":[{"id":"1","changes":[["messages",{}]]}]}"#,
        r#"{"object":"o","entry":[{"id":"1","id":"2","changes":[{"field":"a","value":{}}]}]}"#,
        r#"{"object":"o","entry":[{"id":"1","changes":[{"field":"a","value":null}]}]}"#,
        r#"{"object":"o","entry":null}"#,
        r#"[{"object":"o","entry":[{"id":"1","changes":[{"field":"a","value":{}}]}]},1]"#,
        r#"[]"#,
        r#"{"object":"o","entry":[{"id":1,"time":null,"changes":[{"field":"a","value":{}}]}]} x"#,
    ] {
        bodies.push(odd.as_bytes().to_vec());
    }
    // Found by the fuzz target: bytes that are not UTF-8 in a member the split skips.
    let mut skipped_member = br#"{"entry":[{"Od":"310"#.to_vec();
    skipped_member.extend_from_slice(&[0xba; 3]);
    skipped_member.extend_from_slice(
        br#"","changes":[{"value":{},"field":"account_update"}]}],"object":"o"}"#,
    );
    bodies.push(skipped_member);
    let mut top_level = br#"{"x":""#.to_vec();
    top_level.push(0xff);
    top_level.extend_from_slice(br#"","entry":[{"id":"1","changes":[{"field":"a","value":{}}]}]}"#);
    bodies.push(top_level);
    for body in &bodies {
        let reference = split_by_levels(&routing(), "default", body, at(AT));
        let one_pass = split(&routing(), "default", body, at(AT));
        assert_eq!(one_pass, reference, "{}", String::from_utf8_lossy(body));
    }
}

/// The key read in one pass is the key read level by level, for every fixture's values and
/// for values built to differ.
#[test]
fn the_one_pass_key_is_the_key_read_level_by_level() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut values: Vec<String> = Vec::new();
    for path in std::fs::read_dir(&dir).expect("fixtures") {
        let path = path.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&std::fs::read(&path).expect("read")) else {
            continue;
        };
        for entry in body["entry"].as_array().into_iter().flatten() {
            for change in entry["changes"].as_array().into_iter().flatten() {
                values.push(change["value"].to_string());
            }
        }
    }
    assert!(values.len() >= 30, "{}", values.len());
    let metadata = r#""metadata":{"phone_number_id":"42"}"#;
    for odd in [
        r#"{"contacts":[{"wa_id":"1","wa_id":"2"}],"messages":[{"from":"3"}]}"#,
        r#"{"contacts":"x","messages":{"from":"3"},"statuses":[[{"recipient_id":"4"}]]}"#,
        r#"{"contacts":[],"messages":[null,{"from":"3"}],"statuses":[{"recipient_id":"4"}]}"#,
        r#"{"contacts":[1],"messages":[true],"statuses":[{"recipient_user_id":"\u0035"}]}"#,
        r#"{"messages":[{"from":5}],"statuses":null}"#,
        r#"{"messages":[{"from":""}],"contacts":[{"user_id":"US.1"}]}"#,
    ] {
        values.push(odd.replacen('{', &format!("{{{metadata},"), 1));
        values.push(odd.to_owned());
    }
    values.push(r#"{"metadata":[{"phone_number_id":"42"}]}"#.to_owned());
    values.push(r#"{"metadata":{"phone_number_id":"42"},"metadata":{}}"#.to_owned());
    values.push("[1]".to_owned());
    values.extend(EDGES.iter().map(|value| (*value).to_owned()));
    for value in &values {
        let raw: &RawValue = serde_json::from_str(value).expect("JSON");
        assert_eq!(
            key::conversation_key(raw),
            key::conversation_key_by_levels(raw),
            "{value}"
        );
    }
}

/// Values spaced, nested and escaped, with members named alike, empty or of other types.
const EDGES: &[&str] = &[
    " {\n \"metadata\" : { \"phone_number_id\" : \"4\\u0032\" } ,\t\"contacts\":[ {\"wa_id\" :\"1\"} ] }",
    r#"{"x":{"messages":[{"from":"9"}]},"metadata":{"phone_number_id":42},"messages":[{"text":{"body":"]}\"["},"from":"3"}]}"#,
    r#"{"metadata":{"phone_number_id":"42","phone_number_idx":"7"},"statuses":[[{"recipient_id":"4"}],{"recipient_id":"5"}]}"#,
    r#"{"metadata":{"phone_number_id":null},"messages":[{"from":"3"}]}"#,
    r#"{"metadata":{"phone_number_id":""},"messages":[{"from":"3"}]}"#,
    r#"{"metadata":{},"messages":[{"from":"3"}]}"#,
    r#"{"metadata":"42","messages":[{"from":"3"}]}"#,
    r#"{"metadata":{"phone_number_id":"42"},"contacts":[],"messages":[{}],"statuses":[{"recipient_id":-1.5e3}]}"#,
    r#"{"metadata":{"phone_number_id":"42"},"messages":[{"from":"\u00e9\"3"},{"from":"4","from":"5"}]}"#,
    r#"{"metadata":{"phone_number_id":"42"},"messages":[{"from":true,"from_user_id":"US.1"}],"statuses":[]}"#,
    r#"{"metadata":{"phone_number_id":"42"},"contacts":{"wa_id":"1"},"messages":"x","statuses":7}"#,
    r#"{}"#,
];
