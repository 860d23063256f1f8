//! The request's CPU work, per KB of body: the signature check over the raw bytes, the
//! split into records, and both together (the target: at most 1.5 µs per KB). Beside
//! them, `floor`: the least any split has to do, the signature check, one serde pass over
//! the JSON that keeps nothing, and one SHA-256 over the body (the `event_id`s hash each
//! change's value), to say how much of `both` is the split's own work; and `hashes`,
//! the floor without its JSON pass: what no JSON parser, however fast, takes away.
//!
//! cargo bench --bench hot_path
//!
//! Criterion reports throughput in bytes per second; microseconds per KB are
//! 1000 / (KB/s ÷ 1000), i.e. 976.6 / (MiB/s). docs/PERFORMANCE.md has the figures.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use waba_gateway::config::KafkaSettings;
use waba_gateway::envelope::to_records;
use waba_gateway::routing::SplitBy;
use waba_gateway::signature::{Keys, parse_header, sign};

const SECRET: &[u8] = b"bench-secret";
const AT: &str = "2026-11-22T00:00:00.000Z";

/// [`AT`] as the time the gateway passes around.
fn at(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(text).expect("an RFC 3339 time")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("a fixture")
}

/// A notification of `count` changes, each a text message of about `text_bytes`.
fn many_changes(count: usize, text_bytes: usize) -> Vec<u8> {
    let text = "Bestellung unterwegs? ".repeat(text_bytes / 22 + 1);
    let changes: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15557650001","phone_number_id":"420123456789002"}},"contacts":[{{"profile":{{"name":"Lena Hoffmann"}},"wa_id":"4915112345678"}}],"messages":[{{"from":"4915112345678","id":"wamid.B{i:06}","timestamp":"1763770001","type":"text","text":{{"body":"{text}"}}}}]}},"field":"messages"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"310987654321001","time":1763770001,"changes":[{}]}}]}}"#,
        changes.join(",")
    )
    .into_bytes()
}

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text message", fixture("messages_text.json")),
        (
            "two changes",
            fixture("messages_two_changes_one_entry.json"),
        ),
        ("order", fixture("messages_order.json")),
        ("64 changes", many_changes(64, 500)),
        ("1000 changes, 3 MB", many_changes(1000, 2900)),
    ]
}

/// The signature check as a request makes it: the header read, then the body checked
/// with the app's keys, prepared when the gateway started.
fn verify(keys: &Keys, header: &str, body: &[u8]) {
    let digest = parse_header(header.as_bytes()).expect("well formed");
    keys.verify(&digest, &[body]).expect("valid");
}

fn hot_path(c: &mut Criterion) {
    let keys = Keys::new([SECRET]);
    let routing = KafkaSettings::default().routing();
    let items = routing.clone().with_split(SplitBy::Item);
    let mut group = c.benchmark_group("verify_and_split");
    for (name, body) in bodies() {
        let header = sign(SECRET, &body);
        let label = format!("{name} ({} B)", body.len());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("verify", &label), &body, |b, body| {
            b.iter(|| verify(&keys, &header, black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("split", &label), &body, |b, body| {
            b.iter(|| to_records(&routing, "default", black_box(body), at(AT)))
        });
        group.bench_with_input(BenchmarkId::new("split_items", &label), &body, |b, body| {
            b.iter(|| to_records(&items, "default", black_box(body), at(AT)))
        });
        group.bench_with_input(BenchmarkId::new("both", &label), &body, |b, body| {
            b.iter(|| {
                verify(&keys, &header, black_box(body));
                to_records(&routing, "default", black_box(body), at(AT))
            })
        });
        group.bench_with_input(BenchmarkId::new("floor", &label), &body, |b, body| {
            b.iter(|| {
                verify(&keys, &header, black_box(body));
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body))
                    .expect("a JSON body");
                Sha256::digest(black_box(body))
            })
        });
        group.bench_with_input(BenchmarkId::new("hashes", &label), &body, |b, body| {
            b.iter(|| {
                verify(&keys, &header, black_box(body));
                Sha256::digest(black_box(body))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
