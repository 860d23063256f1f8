//! Allocations per notification on the path every request takes once its body is read:
//! the signature check and the split into records, in change and in item mode (issue
//! "half the CPU per notification": the allocator took about 10% of the gateway's CPU in
//! the whole-path profile). `stats_alloc`'s counting global allocator wraps the system
//! one; each figure is the count for one notification, the same every run (no timing).
//!
//! cargo bench --bench allocations

use std::alloc::System;
use std::time::SystemTime;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use waba_gateway::config::KafkaSettings;
use waba_gateway::routing::SplitBy;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (reallocations included) and bytes that `work` asks for.
fn count<T>(work: impl FnOnce() -> T) -> (u64, u64, T) {
    let region = Region::new(GLOBAL);
    let out = work();
    let change = region.change();
    (
        (change.allocations + change.reallocations) as u64,
        (change.bytes_allocated + change.bytes_reallocated.max(0) as usize) as u64,
        out,
    )
}

/// The benchmark bodies of `benches/load/lib.sh`.
const FIXTURES: [&str; 6] = [
    "messages_text.json",
    "messages_status_delivered.json",
    "messages_interactive_button_reply.json",
    "message_template_status_update.json",
    "messages_two_changes_one_entry.json",
    "messages_order.json",
];

#[allow(clippy::print_stdout)] // printing figures is its job
fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let secret = b"bench-secret";
    let keys = waba_gateway::signature::Keys::new([&secret[..]]);
    let routing = KafkaSettings::default().routing();
    println!(
        "{:<42} {:>6} | {:>6} | {:>14} {:>9} | {:>14} {:>9}",
        "body", "bytes", "verify", "split (change)", "bytes", "split (item)", "bytes"
    );
    let mut totals = [0u64; 3];
    for name in FIXTURES {
        let body = std::fs::read(dir.join(name)).expect("a fixture");
        let header = waba_gateway::signature::sign(secret, &body);
        // The first call of each pays for lazy set-up; the second is what a request costs.
        let mut figures = Vec::new();
        for _ in 0..2 {
            // As a request checks it: the header read, the body checked with the app's keys,
            // prepared when the gateway started.
            let (verify, _, matched) = count(|| {
                let digest = waba_gateway::signature::parse_header(header.as_bytes())?;
                keys.verify(&digest, &[&body])
            });
            assert!(matched.is_ok());
            let mut split = Vec::new();
            for mode in [SplitBy::Change, SplitBy::Item] {
                let routing = routing.clone().with_split(mode);
                let (allocations, bytes, records) = count(|| {
                    waba_gateway::envelope::to_records(
                        &routing,
                        "default",
                        &body,
                        SystemTime::now(),
                    )
                });
                assert_eq!(records.deadletter, None, "{name}");
                split.push((allocations, bytes, records.records.len()));
                drop(records);
            }
            figures = vec![
                verify,
                split[0].0,
                split[0].1,
                split[1].0,
                split[1].1,
                split[0].2 as u64,
                split[1].2 as u64,
            ];
        }
        totals[0] += figures[0];
        totals[1] += figures[1];
        totals[2] += figures[3];
        println!(
            "{:<42} {:>6} | {:>6} | {:>6} ({} rec) {:>9} | {:>6} ({} rec) {:>9}",
            name,
            body.len(),
            figures[0],
            figures[1],
            figures[5],
            figures[2],
            figures[3],
            figures[6],
            figures[4]
        );
    }
    println!(
        "per notification on average: verify {:.1}, split {:.1} (change) / {:.1} (item) allocations",
        totals[0] as f64 / 6.0,
        totals[1] as f64 / 6.0,
        totals[2] as f64 / 6.0
    );
}
