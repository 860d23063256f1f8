//! Every payload in `../shared/fixtures/meta-payloads/` (real Meta payloads, collected with
//! their sources), posted signed to a running gateway. Skipped, and said so, when the
//! folder is not beside the repository.

use serde_json::Value;

use crate::helpers::*;

/// The records one body must give: topics, in order, or `None` for a dead letter.
fn expected_topics(body: &[u8]) -> Option<Vec<String>> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    let notifications = match parsed {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return None,
    };
    let mut topics = Vec::new();
    for notification in notifications {
        for entry in notification.get("entry")?.as_array()? {
            match entry.get("changes").and_then(Value::as_array) {
                Some(changes) if !changes.is_empty() => {
                    for change in changes {
                        let field = change.get("field").and_then(Value::as_str);
                        let routable = field.is_some_and(|f| {
                            !f.is_empty()
                                && f.len() <= 100
                                && f.bytes().all(|b| {
                                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
                                })
                        });
                        topics.push(match (field, routable, change.get("value")) {
                            (Some(field), true, Some(v)) if !v.is_null() => {
                                format!("whatsapp.{field}")
                            }
                            _ => "whatsapp.unrouted".to_owned(),
                        });
                    }
                }
                _ => topics.push("whatsapp.unrouted".to_owned()),
            }
        }
    }
    Some(topics)
}

#[cfg_attr(
    missing_meta_payloads,
    ignore = "needs ../shared/fixtures/meta-payloads beside the repository"
)]
#[tokio::test]
async fn every_shared_meta_payload_is_accepted_and_split_losslessly() {
    let dir = shared_fixtures_dir();
    let app = spawn_app(&[]).await;
    let memory = app.memory.clone().expect("memory");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 100, "only {} payloads", files.len());
    let (mut changes, mut dead_letters) = (0, 0);
    for path in &files {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let body = std::fs::read(path).expect("readable");
        let before = memory.records().len();
        let answer = app.notify(&body).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        let records = memory.records()[before..].to_vec();
        match expected_topics(&body) {
            Some(topics) => {
                let got: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
                assert_eq!(got, topics, "{name}");
                for record in &records {
                    let envelope: Value = serde_json::from_slice(&record.value).expect("envelope");
                    assert_eq!(envelope["app"], "default", "{name}");
                    let raw = envelope_value_bytes(&record.value);
                    assert!(
                        body.windows(raw.len()).any(|w| w == raw),
                        "{name}: value bytes not in the body"
                    );
                }
                changes += records.len();
            }
            None => {
                assert_eq!(records.len(), 1, "{name}");
                assert_eq!(records[0].topic, "whatsapp.deadletter", "{name}");
                assert_eq!(records[0].value, body, "{name}");
                dead_letters += 1;
            }
        }
    }
    eprintln!(
        "{} Meta payloads: {changes} records, {dead_letters} dead letters",
        files.len()
    );
    assert!(changes >= 100);
}

#[cfg_attr(
    missing_meta_payloads,
    ignore = "needs ../shared/fixtures/meta-payloads beside the repository"
)]
#[tokio::test]
async fn a_body_meta_really_signed_verifies_with_its_app_secret() {
    let dir = shared_fixtures_dir();
    let body = std::fs::read(dir.join("messages__text-raw-signed-body.json")).expect("signed body");
    // The secret (revoked) and Meta's signature are recorded in the folder's SOURCES.md.
    let sources = std::fs::read_to_string(dir.join("SOURCES.md")).expect("SOURCES.md");
    let line = sources
        .lines()
        .find(|l| l.contains("messages__text-raw-signed-body.json") && l.contains("app_secret="))
        .expect("the signed body's note");
    let after = |marker: &str, len: usize| {
        let at = line.find(marker).expect(marker) + marker.len();
        line[at..at + len].to_owned()
    };
    let secret = after("app_secret=", 32);
    let signature = format!("sha256={}", after("X-Hub-Signature-256: sha256=", 64));
    assert_eq!(
        sign(&secret, &body),
        signature,
        "sign() reproduces Meta's signature"
    );

    let app = spawn_app(&[("WABA_GATEWAY__APPS__DEFAULT__SECRET", &secret)]).await;
    let answer = post(
        &app.url("/webhook"),
        &body,
        &[("x-hub-signature-256", &signature)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let records = app.memory.as_ref().expect("memory").records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic, "whatsapp.messages");
}
