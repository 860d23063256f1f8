//! The split on arbitrary bodies, in change and in item mode: no panic; a body that is not
//! a notification, or whose entry lists are all empty, is kept whole as one dead letter;
//! otherwise every record is a JSON
//! envelope whose value bytes appear in the body as they were sent (in item mode: the
//! item's bytes, and the value is valid JSON), and the records are those of the
//! level-by-level reference split.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use waba_gateway::config::KafkaSettings;
use waba_gateway::envelope::{split_by_levels, to_records};
use waba_gateway::routing::SplitBy;

fn in_body(body: &[u8], bytes: &[u8]) -> bool {
    body.windows(bytes.len()).any(|window| window == bytes)
}

fuzz_target!(|body: &[u8]| {
    let change = KafkaSettings::default().routing();
    let item = change.clone().with_split(SplitBy::Item);
    for routing in [&change, &item] {
        let split = to_records(routing, "fuzz", body, std::time::SystemTime::UNIX_EPOCH);
        // The one-pass split gives exactly what the level-by-level reference gives.
        match split_by_levels(routing, "fuzz", body, std::time::SystemTime::UNIX_EPOCH) {
            // Entry lists that are all empty split into nothing: kept whole instead.
            Ok(records) if records.is_empty() => {
                assert_eq!(split.deadletter, Some("no_entries"));
            }
            Ok(records) => assert_eq!(split.records, records),
            Err(error) => assert_eq!(split.deadletter, Some(error.reason())),
        }
        if split.deadletter.is_some() {
            assert_eq!(split.records.len(), 1);
            assert_eq!(split.records[0].value, body);
            continue;
        }
        for record in &split.records {
            let envelope: BTreeMap<&str, &RawValue> =
                serde_json::from_slice(&record.value).expect("every envelope is a JSON object");
            let value = envelope["value"];
            let Some(kind) = record.header("wa-item-kind") else {
                assert!(in_body(body, value.get().as_bytes()), "a value that is not in the body");
                continue;
            };
            let array = match kind {
                "message" => "messages",
                "status" => "statuses",
                _ => "errors",
            };
            let members: BTreeMap<String, &RawValue> =
                serde_json::from_str(value.get()).expect("an item's value is an object");
            let items: Vec<&RawValue> =
                serde_json::from_str(members[array].get()).expect("its array is a list");
            assert_eq!(items.len(), 1, "one item per record");
            assert!(in_body(body, items[0].get().as_bytes()), "an item that is not in the body");
        }
    }
});
