//! `waba-gateway replay --from deadletter`: brings back what was set aside. Each dead
//! letter's raw body goes through the current split again; what now splits is published
//! to its topics as a live delivery would be (the same records and `event_id`s, the
//! header `wa-replayed-from: {topic}/{partition}/{offset}` added), what still fails is
//! counted by reason and left where it is. A record Kafka refused for good (it carries
//! `wa-topic`) is published again as it was, to the topic it was meant for.
//!
//! Without a window or a reason filter, the run reads in its own consumer group and
//! commits each dead letter once handled, so that a second run publishes nothing new.
//! With `--since`, `--until` or `--reason`, the user chose what to read: nothing is
//! committed. `--dry-run` publishes and commits nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::delivery::Deliverer;
use crate::envelope::{self, Record};
use crate::publish::client_log::ClientLog;

/// How long to wait for a consumer group to hand out partitions.
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(30);

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
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(REASONS))]
    pub reason: Option<String>,
    /// Count only: publish and commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop once no dead letter has come for this many seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_seconds: u64,
}

/// Every reason a dead letter's `wa-error` can give: the split's (see
/// [`envelope::EnvelopeError::reason`]) and Kafka's refusals.
pub const REASONS: &[&str] = &[
    "empty_body",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_entry",
    "entry_not_a_list",
    "no_notifications",
    "no_entries",
    "record_too_large",
    "invalid_record",
    "unknown_topic",
    "topic_authorization_failed",
];

impl ReplayOptions {
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

    fn commits(&self) -> bool {
        !self.dry_run && self.since.is_none() && self.until.is_none() && self.reason.is_none()
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
    let consumer = subscribe(consumer, options, topic)?;
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut last_seen: Option<Instant> = None;
    loop {
        let assigned = consumer
            .assignment()
            .map(|list| list.count() > 0)
            .unwrap_or(false);
        match (assigned, last_seen) {
            (false, _) if started.elapsed() > ASSIGNMENT_WAIT => {
                anyhow::bail!(
                    "no partition of {topic} was assigned within {} s: does the topic exist?",
                    ASSIGNMENT_WAIT.as_secs()
                )
            }
            (true, None) => last_seen = Some(Instant::now()),
            (true, Some(at)) if at.elapsed() > Duration::from_secs(options.idle_seconds) => {
                return Ok(summary);
            }
            _ => {}
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("reading the dead-letter topic")?;
        last_seen = Some(Instant::now());
        summary.read += 1;
        replay_one(options, deliverer, &message, &mut summary).await?;
        if options.commits() {
            consumer
                .commit_message(&message, CommitMode::Sync)
                .context("committing the replayed offset")?;
        }
        progress(&summary);
    }
}

/// A consumer of the dead-letter topic: in the run's group, or over the window asked for.
fn subscribe(
    config: &ClientConfig,
    options: &ReplayOptions,
    topic: &str,
) -> anyhow::Result<BaseConsumer<ClientLog>> {
    let mut config = config.clone();
    config
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer = crate::publish::client_log::consumer(&config)?;
    if options.commits() {
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("subscribing to {topic}"))?;
        return Ok(consumer);
    }
    // A window chosen by the user: every partition, from the first offset at `since`.
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading the partitions of {topic}"))?;
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let start = match options.since {
            Some(since) => Offset::Offset(millis(since)),
            None => Offset::Beginning,
        };
        partitions
            .add_partition_offset(topic, partition.id(), start)
            .context("choosing where to start")?;
    }
    let partitions = match options.since {
        Some(_) => consumer
            .offsets_for_times(partitions, Duration::from_secs(10))
            .context("finding the first dead letter at --since")?,
        None => partitions,
    };
    consumer
        .assign(&partitions)
        .context("reading the dead-letter topic")?;
    Ok(consumer)
}

async fn replay_one(
    options: &ReplayOptions,
    deliverer: &Deliverer,
    message: &BorrowedMessage<'_>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
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
        .map(|at| SystemTime::UNIX_EPOCH + Duration::from_millis(at.max(0) as u64));
    let outside = |at: SystemTime| {
        options.since.is_some_and(|since| at < since)
            || options.until.is_some_and(|until| at > until)
    };
    let wanted_reason = options
        .reason
        .as_ref()
        .is_none_or(|reason| wa_error_reason(header("wa-error").as_deref()) == Some(reason));
    if written.is_some_and(outside) || !wanted_reason {
        summary.skipped += 1;
        return Ok(());
    }
    let app = header("wa-app").unwrap_or_else(|| "default".to_owned());
    let received_at = header("wa-received-at")
        .and_then(|text| humantime::parse_rfc3339_weak(&text).ok())
        .or(written)
        .unwrap_or_else(SystemTime::now);
    let body = message.payload().unwrap_or_default();
    let mut records = match header("wa-topic") {
        // A record Kafka refused for good: its envelope goes to the topic it was meant
        // for, as it was (the topic may exist now).
        Some(topic) => vec![refused_record(message, topic, body)],
        None => {
            let split = envelope::to_records(deliverer.routing(), &app, body, received_at);
            if let Some(reason) = split.deadletter {
                *summary.still_failing.entry(reason.to_owned()).or_default() += 1;
                return Ok(());
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
        record.headers.push(("wa-replayed-from", origin.clone()));
    }
    summary.replayed += 1;
    summary.records += records.len() as u64;
    if !options.dry_run {
        let publishing = async {
            deliverer
                .enqueue_records(&app, records, None)
                .await?
                .finish()
                .await
        };
        publishing
            .await
            .with_context(|| format!("publishing the records of dead letter {origin}"))?;
    }
    Ok(())
}

/// The headers a routed record carries, which a refused record keeps when it is replayed.
const RECORD_HEADERS: &[&str] = &[
    "wa-event-id",
    "wa-app",
    "wa-object",
    "wa-entry-id",
    "wa-field",
    "wa-phone-number-id",
    "wa-item-kind",
    "wa-message-id",
    "wa-status",
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "content-type",
];

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
            if let Some(name) = RECORD_HEADERS.iter().find(|name| **name == header.key) {
                let value = String::from_utf8_lossy(header.value.unwrap_or_default());
                headers.push((name, value.into_owned()));
            }
        }
    }
    let field = headers
        .iter()
        .find(|(name, _)| *name == "wa-field")
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

fn millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}
