//! The split on arbitrary bodies: no panic; a body that is not a notification is kept
//! whole as one dead letter; otherwise every record is a JSON envelope whose value bytes
//! appear in the body as they were sent, and the records are those of the level-by-level
//! reference split.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use waba_gateway::config::KafkaSettings;
use waba_gateway::envelope::{split_by_levels, to_records};

fuzz_target!(|body: &[u8]| {
    let routing = KafkaSettings::default().routing();
    let split = to_records(&routing, "fuzz", body, std::time::SystemTime::UNIX_EPOCH);
    // The one-pass split gives exactly what the level-by-level reference gives.
    match split_by_levels(&routing, "fuzz", body, std::time::SystemTime::UNIX_EPOCH) {
        Ok(records) => assert_eq!(split.records, records),
        Err(error) => assert_eq!(split.deadletter, Some(error.reason())),
    }
    if split.deadletter.is_some() {
        assert_eq!(split.records.len(), 1);
        assert_eq!(split.records[0].value, body);
        return;
    }
    for record in &split.records {
        let envelope: BTreeMap<&str, &RawValue> =
            serde_json::from_slice(&record.value).expect("every envelope is a JSON object");
        let value = envelope["value"].get().as_bytes();
        assert!(
            body.windows(value.len()).any(|window| window == value),
            "a value that is not in the body"
        );
    }
});
