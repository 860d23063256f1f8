//! The headers of routed records: the business phone number where it applies, and only
//! headers that `replay` keeps.

use std::path::Path;

use super::tests::{AT, at, fixture, routing};
use super::*;
use crate::routing::SplitBy;

#[test]
fn messages_records_name_their_business_phone_number_and_others_do_not() {
    for (name, phone_number_id) in [
        ("messages_text.json", Some("420123456789002")),
        ("message_template_status_update.json", None),
    ] {
        let records = split(&routing(), "default", &fixture(name), at(AT)).expect("splits");
        for record in &records {
            assert_eq!(
                record.header("wa-phone-number-id"),
                phone_number_id,
                "{name}"
            );
        }
    }
    // A messages value without metadata has no phone number to name.
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"statuses":[]}}]}]}"#;
    let records = split(&routing(), "default", body, at(AT)).expect("splits");
    assert_eq!(records[0].header("wa-phone-number-id"), None);
    assert_eq!(records[0].key.as_deref(), Some("1"));
}

/// Every header a routed record carries is one of [`headers::ROUTED`], which `replay`
/// keeps when it replays a refused record: a header added to records and not to that list
/// fails here. Checked over every fixture, in both split modes, with CloudEvents, and with
/// the trace headers the deliverer writes when tracing is on.
#[test]
fn every_header_of_a_routed_record_is_one_replay_keeps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = std::collections::BTreeSet::new();
    let traced = crate::trace::SpanContext::from_headers(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some(b"vendor=value"),
    )
    .expect("valid");
    for path in std::fs::read_dir(&dir).expect("fixtures") {
        let path = path.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let body = std::fs::read(&path).expect("read");
        for split_by in [SplitBy::Change, SplitBy::Item] {
            let routing = routing().with_split(split_by).with_cloudevents(true);
            let records = split(&routing, "default", &body, at(AT)).unwrap_or_default();
            for mut record in records {
                crate::delivery::carry(&mut record, &traced);
                for (name, _) in &record.headers {
                    assert!(
                        headers::ROUTED.contains(name),
                        "{name} ({}) is not in headers::ROUTED",
                        path.display()
                    );
                    seen.insert(*name);
                }
            }
        }
    }
    // The fixtures exercise every routed header, so the list holds nothing stale.
    assert_eq!(seen.len(), headers::ROUTED.len(), "{seen:?}");
}
