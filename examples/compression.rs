//! What each producer compression costs and saves, side by side in one run
//! (benches/compression.sh; README "Records every client reads").
//!
//! cargo run --release --example compression -- [RECORDS]
//!
//! Splits notifications into the gateway's records, in turn each of the project's fixtures
//! and of Meta's payloads (../shared/fixtures/meta-payloads, when beside the repository),
//! each time with a random token in each change's value, and produces RECORDS
//! (default 60000) of them with the gateway's producer settings (linger 1 ms, idempotent, acks=all) to
//! librdkafka's in-process mock cluster, once per codec. Prints, per codec: CPU
//! microseconds per record of the whole process, wall records/s, and the bytes sent to the
//! broker per record (librdkafka's `tx_bytes`) against the records' own bytes
//! (`txmsg_bytes`).

#![allow(clippy::print_stdout)] // printing the figures is its job

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use waba_gateway::config::KafkaSettings;
use waba_gateway::envelope::to_records;

#[derive(Clone, Default)]
struct LastStatistics(Arc<Mutex<Option<Statistics>>>);

impl ClientContext for LastStatistics {
    fn stats(&self, statistics: Statistics) {
        *self.0.lock().expect("not poisoned") = Some(statistics);
    }
}

impl ProducerContext for LastStatistics {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// CPU seconds of this process so far (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).map_or(Ok(60_000), |n| n.parse())?;
    let routing = KafkaSettings::default().routing();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut templates = Vec::new();
    for dir in ["tests/fixtures", "../shared/fixtures/meta-payloads"] {
        let Ok(listing) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for path in listing.flatten().map(|entry| entry.path()) {
            if path.extension().is_some_and(|e| e == "json") && !path.ends_with("expected.json") {
                templates.push(std::fs::read_to_string(&path)?);
            }
        }
    }
    templates.sort();
    let mut records = Vec::with_capacity(count);
    let mut n = 0;
    while records.len() < count {
        let template = &templates[n % templates.len()];
        // Each notification its own: a random token at the start of each change's value,
        // so a different event id and records whose bytes do not repeat.
        let body = template.replace(
            "\"value\": {",
            &format!("\"value\": {{\"token\":\"{:032x}\",", fastrand::u128(..)),
        );
        let body = body.replace(
            "\"value\":{",
            &format!("\"value\":{{\"token\":\"{:032x}\",", fastrand::u128(..)),
        );
        n += 1;
        let split = to_records(&routing, "default", body.as_bytes(), SystemTime::now());
        records.extend(split.records.into_iter().map(|r| (r.topic, r.key, r.value)));
    }
    records.truncate(count);
    let bytes: usize = records.iter().map(|(_, _, v)| v.len()).sum();
    println!(
        "{count} records of {} notifications, {} bytes of envelope each on average",
        templates.len(),
        bytes / count
    );
    println!(
        "{:<8} {:>10} {:>12} {:>14} {:>10}",
        "codec", "records/s", "cpu us/rec", "wire B/rec", "wire/raw"
    );
    // librdkafka's default level for each codec (-1), and gzip at its fastest level too.
    for (codec, level) in [
        ("none", -1),
        ("gzip", -1),
        ("gzip", 1),
        ("snappy", -1),
        ("lz4", -1),
        ("zstd", -1),
    ] {
        let cluster = MockCluster::new(1)?;
        let context = LastStatistics::default();
        let producer: ThreadedProducer<LastStatistics> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("compression.type", codec)
            .set("compression.level", level.to_string())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("statistics.interval.ms", "100")
            .create_with_context(context.clone())?;
        let (start, cpu) = (Instant::now(), cpu_seconds());
        for (topic, key, value) in &records {
            let mut record =
                BaseRecord::<String, Vec<u8>, ()>::with_opaque_to(topic, ()).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            let mut pending = record;
            loop {
                match producer.send(pending) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.poll(Duration::from_millis(1));
                        pending = back;
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(60))?;
        let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        std::thread::sleep(Duration::from_millis(300));
        let stats = context.0.lock().expect("not poisoned").take();
        let (tx, raw) = stats.map_or((0, 0), |s| (s.tx_bytes, s.txmsg_bytes));
        println!(
            "{:<8} {:>10.0} {:>12.1} {:>14.0} {:>10.3}",
            if level == -1 {
                codec.to_owned()
            } else {
                format!("{codec}-{level}")
            },
            count as f64 / wall,
            cpu * 1e6 / count as f64,
            tx as f64 / count as f64,
            tx as f64 / raw.max(1) as f64
        );
    }
    Ok(())
}
