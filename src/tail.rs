//! `waba-gateway tail`: reads the gateway's topics and prints each record as one JSON line:
//! `{"topic","partition","offset","timestamp","key","headers","value"}`. `value` is the
//! record's JSON as written, less the whitespace between its tokens (one line per record),
//! or a string when the record is not JSON (dead letters), or
//! `value_base64` when it is not UTF-8.
//!
//! It assigns partitions directly (no consumer group, nothing committed), so it never
//! disturbs the real consumers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::publish::client_log::ClientLog;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::value::RawValue;

use crate::routing::{Routing, is_routable_name};

/// How long `--exit` waits, once every partition is read to its end, for a record still
/// on its way.
pub const EXIT_IDLE: Duration = Duration::from_secs(2);

/// Which topics `tail` reads.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Exactly these topics.
    Topics(Vec<String>),
    /// Every topic of this layout that exists, including ones created later.
    All(Routing),
}

/// What `tail` does.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Consumer configuration (brokers and connection properties).
    pub config: ClientConfig,
    /// The topics.
    pub selection: Selection,
    /// Start at the oldest record rather than after the newest.
    pub from_beginning: bool,
    /// Stop once every partition is read to its end.
    pub exit_at_end: bool,
    /// Stop after this many records.
    pub max_records: Option<u64>,
}

/// Reads records and writes JSON lines to `out` until the end (with `exit_at_end`), the
/// record limit, or forever. Returns how many records were printed.
pub fn run(options: &TailOptions, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut config = options.config.clone();
    config
        .set("group.id", "waba-gateway-tail")
        .set("enable.auto.commit", "false");
    let consumer = crate::publish::kafka::consumer(&config)?;
    let start = if options.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut assigned = TopicPartitionList::new();
    // For `exit_at_end`: the offset each partition must reach, taken when it was assigned.
    let mut remaining: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut printed = 0;
    let mut last_refresh: Option<Instant> = None;
    // For `exit_at_end`: when a record last came (or the command started).
    let mut last_record = Instant::now();
    // Topics that appear meanwhile are looked for more often while an exit is pending.
    let refresh_every = if options.exit_at_end {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    };
    loop {
        if last_refresh.is_none_or(|at| at.elapsed() > refresh_every) {
            last_refresh = Some(Instant::now());
            // Only what is new is assigned: assigning again what is read already would
            // start it over.
            let mut fresh = TopicPartitionList::new();
            for (topic, partition) in
                assign_new(&consumer, &options.selection, &mut assigned, start)?
            {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                    .context("reading partition offsets")?;
                fresh
                    .add_partition_offset(&topic, partition, start)
                    .context("assigning a partition")?;
                if options.from_beginning && high > low {
                    remaining.insert((topic, partition), high);
                }
            }
            if fresh.count() > 0 {
                consumer
                    .incremental_assign(&fresh)
                    .context("assigning partitions")?;
            }
        }
        // Read to the end, and nothing more on its way: a record accepted just before the
        // command started (a spool forwards it a moment later) is still printed.
        if options.exit_at_end && remaining.is_empty() && last_record.elapsed() >= EXIT_IDLE {
            return Ok(printed);
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                writeln!(out, "{}", line(&message)).context("writing to standard output")?;
                out.flush().context("writing to standard output")?;
                printed += 1;
                last_record = Instant::now();
                let slot = (message.topic().to_owned(), message.partition());
                if remaining
                    .get(&slot)
                    .is_some_and(|high| message.offset() + 1 >= *high)
                {
                    remaining.remove(&slot);
                }
                if options.max_records.is_some_and(|max| printed >= max) {
                    return Ok(printed);
                }
            }
            Some(Err(error)) => return Err(error).context("reading from Kafka"),
        }
    }
}

/// Adds the partitions of selected topics not assigned yet; returns the ones added.
fn assign_new(
    consumer: &BaseConsumer<ClientLog>,
    selection: &Selection,
    assigned: &mut TopicPartitionList,
    start: Offset,
) -> anyhow::Result<Vec<(String, i32)>> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .context("fetching the topic list from Kafka (are the brokers right?)")?;
    let known: BTreeSet<String> = assigned
        .elements()
        .iter()
        .map(|e| e.topic().to_owned())
        .collect();
    let mut added = Vec::new();
    for topic in metadata.topics() {
        let wanted = match selection {
            Selection::Topics(topics) => topics.iter().any(|t| t == topic.name()),
            Selection::All(routing) => matches_layout(routing, topic.name()),
        };
        if !wanted || known.contains(topic.name()) || topic.error().is_some() {
            continue;
        }
        for partition in topic.partitions() {
            assigned
                .add_partition_offset(topic.name(), partition.id(), start)
                .context("assigning a partition")?;
            added.push((topic.name().to_owned(), partition.id()));
        }
    }
    Ok(added)
}

/// True for topics the layout can produce to: the fallbacks, overrides, and anything the
/// template yields for a routable field (and object).
pub fn matches_layout(routing: &Routing, topic: &str) -> bool {
    if routing.known_topics().iter().any(|t| t == topic) {
        return true;
    }
    // Try the template: the field is whatever is left between its fixed parts.
    let probe = routing.field_topic("x");
    let Some(field_at) = probe.rfind('x') else {
        return false;
    };
    let (prefix, suffix) = (&probe[..field_at], &probe[field_at + 1..]);
    topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .is_some_and(|field| is_routable_name(field) && routing.field_topic(field) == topic)
}

/// One printed line: the record's metadata, then its value (raw JSON when it is JSON, so
/// that it prints byte for byte; a JSON string when it is other text; base64 otherwise).
#[derive(serde::Serialize)]
struct Line<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<std::borrow::Cow<'a, str>>,
    headers: BTreeMap<&'a str, std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// A value that is UTF-8.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Value<'a> {
    Json(Box<RawValue>),
    Text(std::borrow::Cow<'a, str>),
}

/// `json` (valid JSON) without the whitespace between its tokens, in the order written.
/// Whitespace inside strings is kept; a string cannot hold a raw line break.
fn compact(json: &str) -> Box<RawValue> {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    RawValue::from_string(out).expect("valid JSON stays valid without its whitespace")
}

fn line(message: &rdkafka::message::BorrowedMessage<'_>) -> String {
    let headers = message
        .headers()
        .map(|list| {
            list.iter()
                .map(|h| (h.key, String::from_utf8_lossy(h.value.unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default();
    let payload = message.payload().unwrap_or_default();
    let (value, value_base64) = match std::str::from_utf8(payload) {
        Ok(utf8) => match serde_json::from_str::<&RawValue>(utf8.trim()) {
            // One line per record: the JSON as it was written, less the whitespace
            // between its tokens (a pretty-printed value would span many lines).
            Ok(_) => (Some(Value::Json(compact(utf8.trim()))), None),
            Err(_) => (Some(Value::Text(utf8.into())), None),
        },
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(payload)),
        ),
    };
    let line = Line {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(String::from_utf8_lossy),
        headers,
        value,
        value_base64,
    };
    serde_json::to_string(&line).expect("a line of strings and raw JSON serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_matches_the_topics_it_can_produce_to() {
        let settings = crate::config::KafkaSettings {
            topics: BTreeMap::from([("messages".to_owned(), "wa.inbound".to_owned())]),
            ..Default::default()
        };
        let routing = settings.routing();
        for topic in [
            "wa.inbound",
            "whatsapp.unrouted",
            "whatsapp.deadletter",
            "whatsapp.security",
            "whatsapp.brand_new_field",
        ] {
            assert!(matches_layout(&routing, topic), "{topic}");
        }
        for topic in [
            "whatsapp.messages",
            "other.security",
            "whatsapp.Upper",
            "__consumer_offsets",
        ] {
            assert!(!matches_layout(&routing, topic), "{topic}");
        }
    }
}
