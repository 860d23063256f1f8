//! `waba-gateway replay --from deadletter`: brings back what was set aside. Each dead
//! letter's raw body goes through the current split again; what now splits is published
//! to its topics as a live delivery would be (the same records and `event_id`s, the
//! header `wa-replayed-from: {topic}/{partition}/{offset}` added), what still fails is
//! counted by reason and left where it is. A record Kafka refused for good (it carries
//! `wa-topic`) is published again as it was, to the topic it was meant for.
//!
//! A run remembers what it published in its consumer group (`--group`), whatever its
//! filters: per partition, the committed offset (every dead letter below it is done) and,
//! in the commit's metadata, the ranges of offsets above it published since. Every run
//! skips what an earlier run published, so running any replay twice publishes nothing
//! new, and a plain run after a filtered one publishes only the rest; what still fails
//! is tried again by each run. On a broker that does not keep commit metadata, a plain
//! run commits each dead letter once handled (published or still failing), and a
//! filtered run is refused, as it could not be remembered. `--dry-run` publishes and
//! commits nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::delivery::Deliverer;
use crate::envelope::{self, Record, headers};
use crate::publish::client_log::ClientLog;
use crate::trace::SpanContext;

/// Which dead letters a run reads, and what it does with them (the command line's
/// options, as they are).
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// The consumer group whose committed offsets remember what was replayed.
    #[arg(long, default_value = "waba-gateway-replay")]
    pub group: String,
    /// Only dead letters written at or after this time (RFC 3339); commits nothing.
    #[arg(long, value_parser = rfc3339)]
    pub since: Option<SystemTime>,
    /// Only dead letters written at or before this time (RFC 3339); commits nothing.
    #[arg(long, value_parser = rfc3339)]
    pub until: Option<SystemTime>,
    /// Only dead letters with this wa-error reason; commits nothing.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(reasons()))]
    pub reason: Option<String>,
    /// Count only: publish and commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop once no dead letter has come for this many seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_seconds: u64,
}

/// Every reason a dead letter's `wa-error` can give: the split's and Kafka's refusals.
pub(crate) fn reasons() -> impl Iterator<Item = &'static str> {
    envelope::EnvelopeError::REASONS
        .into_iter()
        .chain(crate::publish::REFUSALS)
}

impl ReplayOptions {
    fn filtered(&self) -> bool {
        self.since.is_some() || self.until.is_some() || self.reason.is_some()
    }

    /// Why these options can select nothing (`--since` after `--until`), if they cannot.
    pub fn impossible(&self) -> Option<String> {
        match (self.since, self.until) {
            (Some(since), Some(until)) if since > until => Some(format!(
                "--since {} is after --until {}: no dead letter can be in that window; swap them",
                humantime::format_rfc3339(since),
                humantime::format_rfc3339(until)
            )),
            _ => None,
        }
    }
}

fn rfc3339(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|error| format!("{error}: write a time such as 2026-11-29T00:00:00Z"))
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Dead letters read.
    pub read: u64,
    /// Dead letters outside the window or the reason asked for.
    pub skipped: u64,
    /// Dead letters an earlier run published: not published again.
    pub already_replayed: u64,
    /// Dead letters that split now (published, unless a dry run).
    pub replayed: u64,
    /// Records they became.
    pub records: u64,
    /// Dead letters that still do not split, by the reason they fail for now.
    pub still_failing: BTreeMap<String, u64>,
}

impl Summary {
    /// One line: `read 2 dead letters: 1 replayed as 3 records, 1 still failing (invalid_json: 1)`.
    pub fn line(&self, dry_run: bool) -> String {
        let failing: u64 = self.still_failing.values().sum();
        let reasons: Vec<String> = self
            .still_failing
            .iter()
            .map(|(reason, count)| format!("{reason}: {count}"))
            .collect();
        let verb = if dry_run {
            "would be replayed"
        } else {
            "replayed"
        };
        let mut line = format!(
            "read {} dead letters: {} {verb} as {} records, {failing} still failing",
            self.read, self.replayed, self.records
        );
        if !reasons.is_empty() {
            line.push_str(&format!(" ({})", reasons.join(", ")));
        }
        if self.already_replayed > 0 {
            line.push_str(&format!(
                ", {} replayed by an earlier run (not published again)",
                self.already_replayed
            ));
        }
        if self.skipped > 0 {
            line.push_str(&format!(
                ", {} outside the window or reason asked for",
                self.skipped
            ));
        }
        line
    }
}

/// Reads the dead-letter topic of the deliverer's routing until it is idle, replaying
/// through it;
/// `progress` sees the summary after each dead letter.
pub async fn run(
    consumer: &ClientConfig,
    options: &ReplayOptions,
    deliverer: &Deliverer,
    mut progress: impl FnMut(&Summary),
) -> anyhow::Result<Summary> {
    let topic = deliverer.routing().deadletter();
    let (consumer, mut ledgers, memory) = open(consumer, options, topic)?;
    let mut summary = Summary::default();
    let mut last_seen = Instant::now();
    loop {
        if last_seen.elapsed() > Duration::from_secs(options.idle_seconds) {
            return Ok(summary);
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("reading the dead-letter topic")?;
        last_seen = Instant::now();
        summary.read += 1;
        let ledger = ledgers.entry(message.partition()).or_default();
        if ledger.contains(message.offset()) {
            summary.already_replayed += 1;
            progress(&summary);
            continue;
        }
        if memory == Memory::Ledger && !options.dry_run {
            // Refused before publishing, not after: what is published is remembered.
            let mut after = ledger.clone();
            after.insert(message.offset());
            anyhow::ensure!(
                after.metadata().len() <= MAX_METADATA_BYTES,
                "the offsets replayed from {topic}/{} are too scattered to remember in the \
                 group's commit ({} bytes, at most {MAX_METADATA_BYTES}): run replay without \
                 --since, --until and --reason once, then filter again",
                message.partition(),
                after.metadata().len()
            );
        }
        let published = replay_one(options, deliverer, &message, &mut summary).await?;
        match memory {
            _ if options.dry_run => {}
            Memory::Ledger if published => {
                ledger.insert(message.offset());
                commit(&consumer, topic, message.partition(), ledger)?;
            }
            Memory::Ledger => {}
            // Without metadata a plain run moves past each dead letter it handled.
            Memory::Offsets => {
                ledger.below = message.offset() + 1;
                commit(
                    &consumer,
                    topic,
                    message.partition(),
                    &Ledger {
                        below: ledger.below,
                        ranges: Vec::new(),
                    },
                )?;
            }
        }
        progress(&summary);
    }
}

/// The most metadata a commit carries (brokers' `offset.metadata.max.bytes` is 4096 by
/// default).
const MAX_METADATA_BYTES: usize = 4000;

/// What marks the metadata of a replay's commit.
const METADATA_PREFIX: &str = "waba-gateway-replay/1 ";

/// How a run remembers what it published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// The committed offset and the ranges in its metadata.
    Ledger,
    /// The committed offset only (the broker drops commit metadata): plain runs only.
    Offsets,
}

/// The dead letters of one partition that a group has done: every offset below `below`,
/// and the `ranges` (start inclusive, end exclusive, sorted, apart) above it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ledger {
    below: i64,
    ranges: Vec<(i64, i64)>,
}

impl Ledger {
    /// From a commit: its offset (`None` when the group has none) and metadata.
    fn from_commit(offset: Option<i64>, metadata: &str) -> Self {
        let mut ledger = Self {
            below: offset.unwrap_or(0).max(0),
            ranges: Vec::new(),
        };
        if let Some(list) = metadata.strip_prefix(METADATA_PREFIX) {
            for range in list.split(',').filter(|range| !range.is_empty()) {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(start), Ok(end)) = (start.parse::<i64>(), end.parse::<i64>())
                    && start <= end
                {
                    ledger.insert_range(start, end + 1);
                }
            }
        }
        ledger
    }

    fn contains(&self, offset: i64) -> bool {
        offset < self.below
            || self
                .ranges
                .iter()
                .any(|(start, end)| (*start..*end).contains(&offset))
    }

    fn insert(&mut self, offset: i64) {
        self.insert_range(offset, offset + 1);
    }

    fn insert_range(&mut self, start: i64, end: i64) {
        if end <= self.below {
            return;
        }
        self.ranges.push((start.max(self.below), end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(self.ranges.len());
        for (start, end) in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        // A range that starts where `below` ends extends it.
        if let Some(&(start, end)) = merged.first()
            && start <= self.below
        {
            self.below = end;
            merged.remove(0);
        }
        self.ranges = merged;
    }

    /// The commit's metadata: `waba-gateway-replay/1 12-14,20` (ranges inclusive).
    fn metadata(&self) -> String {
        let ranges: Vec<String> = self
            .ranges
            .iter()
            .map(|&(start, end)| match end - start {
                1 => start.to_string(),
                _ => format!("{start}-{}", end - 1),
            })
            .collect();
        format!("{METADATA_PREFIX}{}", ranges.join(","))
    }
}

/// Commits `ledger` as the group's memory of `topic`/`partition`.
fn commit(
    consumer: &BaseConsumer<ClientLog>,
    topic: &str,
    partition: i32,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let mut list = TopicPartitionList::new();
    let mut element = list.add_partition(topic, partition);
    element
        .set_offset(Offset::Offset(ledger.below))
        .context("recording what was replayed")?;
    element.set_metadata(ledger.metadata());
    consumer
        .commit(&list, CommitMode::Sync)
        .context("committing what was replayed")
}

/// A consumer of the dead-letter topic, assigned every partition from where this run
/// starts, with what the group remembers of each partition and how it remembers.
fn open(
    config: &ClientConfig,
    options: &ReplayOptions,
    topic: &str,
) -> anyhow::Result<(BaseConsumer<ClientLog>, BTreeMap<i32, Ledger>, Memory)> {
    let mut config = config.clone();
    config
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer = crate::publish::kafka::consumer(&config)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading the partitions of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "{topic} has no partition: does the topic exist? (waba-gateway topics apply)"
    );
    let mut asked = TopicPartitionList::new();
    for partition in &partitions {
        asked.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(asked, Duration::from_secs(10))
        .context("reading what earlier runs replayed (the group's committed offsets)")?;
    let mut ledgers = BTreeMap::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        ledgers.insert(
            element.partition(),
            Ledger::from_commit(offset, element.metadata()),
        );
    }
    let memory = if options.dry_run {
        Memory::Ledger
    } else {
        memory(&consumer, topic, &ledgers)?
    };
    anyhow::ensure!(
        memory == Memory::Ledger || !options.filtered(),
        "this Kafka does not keep the metadata of offset commits, which replay needs to \
         remember what a filtered run (--since, --until, --reason) published; run replay \
         without them"
    );
    // From where the group is done, or from `since` when that is later.
    let mut at_since: BTreeMap<i32, Offset> = BTreeMap::new();
    if let Some(since) = options.since {
        let mut asked = TopicPartitionList::new();
        for partition in &partitions {
            asked
                .add_partition_offset(
                    topic,
                    *partition,
                    Offset::Offset(crate::epoch::ms(since) as i64),
                )
                .context("choosing where to start")?;
        }
        let found = consumer
            .offsets_for_times(asked, Duration::from_secs(10))
            .context("finding the first dead letter at --since")?;
        for element in found.elements() {
            at_since.insert(element.partition(), element.offset());
        }
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        let below = ledgers.get(partition).map_or(0, |l| l.below);
        let offset = match at_since.get(partition) {
            Some(Offset::Offset(at)) => (*at).max(below),
            // Nothing at or after `since` in this partition.
            Some(Offset::End) => continue,
            _ => below,
        };
        let offset = if offset > 0 {
            Offset::Offset(offset)
        } else {
            Offset::Beginning
        };
        assignment
            .add_partition_offset(topic, *partition, offset)
            .context("choosing where to start")?;
    }
    consumer
        .assign(&assignment)
        .context("reading the dead-letter topic")?;
    Ok((consumer, ledgers, memory))
}

/// Whether the broker keeps commit metadata: the first partition's commit is written
/// again as it is, and read back.
fn memory(
    consumer: &BaseConsumer<ClientLog>,
    topic: &str,
    ledgers: &BTreeMap<i32, Ledger>,
) -> anyhow::Result<Memory> {
    let Some((&partition, ledger)) = ledgers.iter().next() else {
        return Ok(Memory::Ledger);
    };
    commit(consumer, topic, partition, ledger)?;
    let mut asked = TopicPartitionList::new();
    asked.add_partition(topic, partition);
    let back = consumer
        .committed_offsets(asked, Duration::from_secs(10))
        .context("reading what earlier runs replayed (the group's committed offsets)")?;
    let kept = back
        .elements()
        .first()
        .is_some_and(|element| element.metadata() == ledger.metadata());
    Ok(if kept {
        Memory::Ledger
    } else {
        Memory::Offsets
    })
}

async fn replay_one(
    options: &ReplayOptions,
    deliverer: &Deliverer,
    message: &BorrowedMessage<'_>,
    summary: &mut Summary,
) -> anyhow::Result<bool> {
    let header = |name: &str| -> Option<String> {
        let headers = message.headers()?;
        headers
            .iter()
            .find(|header| header.key == name)
            .and_then(|header| header.value)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    };
    let written = message
        .timestamp()
        .to_millis()
        .map(|at| crate::epoch::at(at.max(0) as u64));
    let outside = |at: SystemTime| {
        options.since.is_some_and(|since| at < since)
            || options.until.is_some_and(|until| at > until)
    };
    let wanted_reason = options
        .reason
        .as_ref()
        .is_none_or(|reason| wa_error_reason(header(headers::ERROR).as_deref()) == Some(reason));
    if written.is_some_and(outside) || !wanted_reason {
        summary.skipped += 1;
        return Ok(false);
    }
    let app: std::sync::Arc<str> = header(headers::APP)
        .unwrap_or_else(|| "default".to_owned())
        .into();
    let received_at = header(headers::RECEIVED_AT)
        .and_then(|text| humantime::parse_rfc3339_weak(&text).ok())
        .or(written)
        .unwrap_or_else(SystemTime::now);
    let body = message.payload().unwrap_or_default();
    // The trace the dead letter was first published in: its records continue it.
    let trace = header(headers::TRACEPARENT).and_then(|parent| {
        SpanContext::from_headers(
            parent.as_bytes(),
            header(headers::TRACESTATE).as_deref().map(str::as_bytes),
        )
    });
    let mut records = match header(headers::TOPIC) {
        // A record Kafka refused for good: its envelope goes to the topic it was meant
        // for, as it was (the topic may exist now).
        Some(topic) => vec![refused_record(message, topic, body)],
        None => {
            let split = envelope::to_records(deliverer.routing(), &app, body, received_at);
            if let Some(reason) = split.deadletter {
                *summary.still_failing.entry(reason.to_owned()).or_default() += 1;
                return Ok(false);
            }
            split.records
        }
    };
    let origin = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    for record in &mut records {
        record
            .headers
            .push((headers::REPLAYED_FROM, origin.clone()));
    }
    summary.replayed += 1;
    summary.records += records.len() as u64;
    if !options.dry_run {
        let publishing = async {
            deliverer
                .enqueue_records(&app, records, None, trace.as_ref())
                .await?
                .finish()
                .await
        };
        publishing
            .await
            .with_context(|| format!("publishing the records of dead letter {origin}"))?;
    }
    Ok(true)
}

/// The reason of a `wa-error` header: `unknown_topic: Broker: Unknown topic` is
/// `unknown_topic`.
fn wa_error_reason(error: Option<&str>) -> Option<&str> {
    error.map(|error| error.split(':').next().unwrap_or(error).trim())
}

/// The record a refused dead letter stands for: its envelope, key and headers, to `topic`.
fn refused_record(message: &BorrowedMessage<'_>, topic: String, value: &[u8]) -> Record {
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    if let Some(list) = message.headers() {
        for header in list.iter() {
            if let Some(name) = headers::ROUTED.iter().find(|name| **name == header.key) {
                let value = String::from_utf8_lossy(header.value.unwrap_or_default());
                headers.push((name, value.into_owned()));
            }
        }
    }
    let field = headers
        .iter()
        .find(|(name, _)| *name == headers::FIELD)
        .map(|(_, field)| field.as_str());
    Record {
        topic,
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        field: crate::routing::field_label(field),
        headers,
        value: value.to_vec(),
        counts_change: true,
    }
}

#[cfg(test)]
mod tests {
    use super::Ledger;

    #[test]
    fn every_reason_of_a_dead_letter_is_a_choice_of_reason() {
        let routing = crate::config::KafkaSettings::default().routing();
        let bodies: [&[u8]; 8] = [
            b"",
            b"{\"entry\":[\xff]}",
            b"hello",
            b"42",
            b"{\"object\":\"page\"}",
            b"{\"entry\":{\"id\":\"1\"}}",
            b"[]",
            b"{\"entry\":[]}",
        ];
        let mut reasons: Vec<&str> = bodies
            .iter()
            .map(|body| {
                crate::envelope::to_records(&routing, "default", body, std::time::SystemTime::now())
                    .deadletter
                    .expect("a dead letter")
            })
            .collect();
        reasons.dedup();
        assert_eq!(reasons.len(), 8, "one body per reason: {reasons:?}");
        let choices: Vec<&str> = super::reasons().collect();
        for reason in &reasons {
            assert!(choices.contains(reason), "{reason}");
        }
        assert_eq!(
            choices.len(),
            reasons.len() + crate::publish::REFUSALS.len()
        );
    }

    #[test]
    fn a_ledger_remembers_scattered_offsets_and_reads_back_what_it_wrote() {
        let mut ledger = Ledger::from_commit(None, "");
        for offset in [5, 3, 4, 9, 12, 13] {
            ledger.insert(offset);
        }
        assert_eq!(ledger.below, 0);
        assert_eq!(ledger.metadata(), "waba-gateway-replay/1 3-5,9,12-13");
        assert!(ledger.contains(4) && ledger.contains(9) && ledger.contains(13));
        assert!(!ledger.contains(2) && !ledger.contains(6) && !ledger.contains(14));
        // What starts where the committed offset ends moves it.
        for offset in [0, 1, 2] {
            ledger.insert(offset);
        }
        assert_eq!(ledger.below, 6);
        assert_eq!(ledger.metadata(), "waba-gateway-replay/1 9,12-13");
        let read = Ledger::from_commit(Some(ledger.below), &ledger.metadata());
        assert_eq!(read, ledger);
        // A commit from before the ledger (an offset, no metadata) is done below it.
        let old = Ledger::from_commit(Some(7), "");
        assert!(old.contains(6) && !old.contains(7));
        assert_eq!(Ledger::from_commit(Some(7), "something else"), old);
    }
}
