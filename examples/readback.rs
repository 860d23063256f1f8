//! Reads a benchmark's records back from Kafka and finds each expected change by its
//! `event_id` (benches/load.sh).
//!
//! cargo run --release --example readback -- BROKERS EXPECTED SECONDS
//! EXPECTED has one line per request answered 200: `<entry id> <changes>`. Every topic the
//! gateway's default routing names is read from the beginning, headers only (`wa-entry-id`,
//! `wa-event-id`), until every expected change is found or SECONDS pass. Prints
//! `expected=N found=M missing=K`. Changes are told apart by event_id, so a record served
//! twice does not make up for one that is missing.

#![allow(clippy::print_stdout, clippy::print_stderr)] // printing the figures is its job

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() == 3, "usage: readback BROKERS EXPECTED SECONDS");
    let mut expected: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(&args[1])?.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(id), Some(changes)) = (parts.next(), parts.next()) {
            expected.insert(id.to_owned(), changes.parse()?);
        }
    }
    let wanted: usize = expected.values().sum();
    let deadline = Instant::now() + Duration::from_secs(args[2].parse()?);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args[0])
        .set("group.id", format!("readback-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()?;
    let routing = waba_gateway::config::KafkaSettings::default().routing();
    let topics = routing.known_topics();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let existing: Vec<&str> = topics
        .iter()
        .map(String::as_str)
        .filter(|topic| metadata.topics().iter().any(|t| t.name() == *topic))
        .collect();
    consumer.subscribe(&existing)?;

    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    let mut found = 0;
    while found < wanted && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let Some(headers) = message.headers() else {
            continue;
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|header| header.key == name)
                .and_then(|header| std::str::from_utf8(header.value?).ok())
        };
        let (Some(entry_id), Some(event_id)) = (header("wa-entry-id"), header("wa-event-id"))
        else {
            continue;
        };
        let Some(&changes) = expected.get(entry_id) else {
            continue;
        };
        let events = seen.entry(entry_id.to_owned()).or_default();
        if events.len() < changes && events.insert(event_id.to_owned()) {
            found += 1;
        }
    }
    let short: Vec<&String> = expected
        .iter()
        .filter(|(id, changes)| seen.get(*id).map_or(0, HashSet::len) < **changes)
        .map(|(id, _)| id)
        .take(10)
        .collect();
    if !short.is_empty() {
        eprintln!("missing changes of: {short:?}");
    }
    println!("expected={wanted} found={found} missing={}", wanted - found);
    Ok(())
}
