//! The Kafka [`Publisher`]: rdkafka's `FutureProducer` (idempotent, `acks=all`, gzip) and an
//! admin client that creates missing topics.
//!
//! Topics are created lazily, once per process, before the first record goes to them:
//! many clusters disable auto-creation. A broker that cannot create topics (no
//! permission, no CreateTopics support) is not an error here; producing then tells.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaConfRes;

use super::client_log::ClientLog;
use super::{BoxFuture, Delivery, PublishError, Publisher, Undelivered};
use crate::config::Settings;
use crate::envelope::Record;
use crate::metrics::Metrics;

/// Extra room for the envelope and headers on top of the largest body.
const ENVELOPE_ROOM_BYTES: u64 = 64 * 1024;

/// How the producer and its topics are set up.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `[kafka.librdkafka]` and `[kafka.librdkafka_files]`, applied last, so they can
    /// override every default.
    pub librdkafka: BTreeMap<String, String>,
    /// Properties whose values are never shown, not even when invalid (read from files).
    pub hidden: std::collections::BTreeSet<String>,
    /// The largest body the gateway accepts; sizes the producer's and topics' limits.
    pub max_body_bytes: u64,
    /// `message.timeout.ms`: how long librdkafka keeps retrying one record.
    pub message_timeout: Duration,
    /// Whether to create missing topics.
    pub create_topics: bool,
    /// `statistics.interval.ms`: how often librdkafka reports into the metrics; 0 is off.
    pub statistics_interval: Duration,
    /// Partitions of created topics.
    pub topic_partitions: i32,
    /// Replication factor of created topics; -1 for the broker's default.
    pub topic_replication_factor: i32,
    /// How records are batched, and how much the producer's queue holds.
    pub batching: Batching,
}

/// The producer's batching: `linger.ms`, `batch.size`, `queue.buffering.max.kbytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    /// `linger.ms`.
    pub linger_ms: u64,
    /// `batch.size`.
    pub batch_bytes: u64,
    /// `queue.buffering.max.kbytes`.
    pub queue_kbytes: u64,
}

impl KafkaOptions {
    /// The options `settings` describe, with librdkafka's own batching and a 30 s
    /// deadline per record: what a client that does not produce needs. What produces is
    /// tuned to its purpose by `delivery`.
    pub fn from_settings(settings: &Settings) -> Self {
        let kafka = &settings.kafka;
        Self {
            brokers: kafka.brokers.clone(),
            librdkafka: kafka.librdkafka_properties(),
            hidden: kafka.hidden_properties(),
            statistics_interval: Duration::from_millis(kafka.statistics_interval_ms),
            max_body_bytes: settings.server.max_body_bytes,
            message_timeout: Duration::from_secs(30),
            create_topics: kafka.create_topics,
            topic_partitions: kafka.topic_partitions,
            topic_replication_factor: kafka.topic_replication_factor,
            batching: Batching {
                linger_ms: 5,
                batch_bytes: 1_000_000,
                queue_kbytes: (settings.delivery.producer_queue_bytes() / 1024).max(1),
            },
        }
    }

    /// The largest record: a body plus envelope and headers.
    pub fn max_message_bytes(&self) -> u64 {
        (self.max_body_bytes + ENVELOPE_ROOM_BYTES).max(1_000_000)
    }

    /// The producer's librdkafka configuration: the gateway's defaults, then the operator's.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "waba-gateway")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // gzip is the one codec every mainstream client reads without an extra package
            // (kafkajs, kafka-python and aiokafka ship only gzip); at level 1 it costs half
            // of the default level's CPU for 8 times fewer bytes than no compression
            // (benches/compression.sh, README "Records every client reads").
            .set("compression.type", "gzip")
            .set("linger.ms", self.batching.linger_ms.to_string())
            .set("batch.size", self.batching.batch_bytes.to_string())
            .set(
                "queue.buffering.max.kbytes",
                self.batching.queue_kbytes.to_string(),
            )
            .set("message.max.bytes", self.max_message_bytes().to_string())
            .set(
                "message.timeout.ms",
                self.message_timeout.as_millis().to_string(),
            )
            .set(
                "statistics.interval.ms",
                self.statistics_interval.as_millis().to_string(),
            );
        let codec_chosen = ["compression.type", "compression.codec"]
            .iter()
            .any(|key| self.librdkafka.contains_key(*key));
        if !codec_chosen {
            config.set("compression.level", "1");
        }
        for (key, value) in &self.librdkafka {
            config.set(key, value);
        }
        config
    }

    /// A consumer's configuration for the same cluster (`tail`, tests): the brokers and the
    /// operator's connection properties, without the producer's.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.librdkafka {
            config.set(key, value);
        }
        config
    }
}

/// Why the operator's `[kafka.librdkafka]` and `[kafka.librdkafka_files]` properties
/// cannot be used, one sentence per property. Found by building each property, then the producer's whole configuration, as
/// librdkafka does, without creating a client or connecting. A value is quoted only when
/// it is known not to be secret.
pub fn property_problems(options: &KafkaOptions) -> Vec<String> {
    let mut problems: Vec<String> = options
        .librdkafka
        .iter()
        .filter_map(|(key, value)| {
            let mut config = ClientConfig::new();
            config.set(key, value);
            config
                .create_native_config()
                .err()
                .map(|error| describe_hiding(&error, &options.hidden))
        })
        .collect();
    if problems.is_empty()
        && let Err(error) = options.producer_config().create_native_config()
    {
        problems.push(describe_hiding(&error, &options.hidden));
    }
    for key in [
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.keystore.location",
        "ssl.crl.location",
        "sasl.kerberos.keytab",
    ] {
        let Some(path) = options.librdkafka.get(key) else {
            continue;
        };
        if key == "ssl.ca.location" && path == "probe" {
            continue;
        }
        let readable = std::fs::metadata(path).and_then(|metadata| {
            if metadata.is_dir() && key == "ssl.ca.location" {
                std::fs::read_dir(path).map(drop)
            } else {
                std::fs::File::open(path).map(drop)
            }
        });
        if let Err(error) = readable {
            let shown = if crate::config::is_shown_property(key) && !options.hidden.contains(key) {
                format!(" = {path:?}")
            } else {
                String::new()
            };
            problems.push(format!(
                "kafka.librdkafka.\"{key}\"{shown} cannot be read ({error}); the client needs \
                 this file to connect: mount it, or correct the path"
            ));
        }
    }
    if problems.is_empty() {
        // librdkafka checks the rest (certificate and key files, SASL mechanisms this
        // build lacks) only when a client is created: one with no broker to reach.
        let mut config = options.producer_config();
        config.set("bootstrap.servers", "");
        if let Err(error) = config.create_with_context::<_, BaseProducer<Quiet>>(Quiet) {
            problems.push(format!(
                "[kafka.librdkafka]: librdkafka cannot create a client with these properties: {}",
                mask_values(
                    &describe_hiding(&error, &options.hidden),
                    &config,
                    &options.hidden
                )
            ));
        }
    }
    problems
}

/// A consumer of `config`'s cluster that logs through [`ClientLog`]; an error in the
/// gateway's words (see [`describe`]).
pub fn consumer(
    config: &ClientConfig,
) -> anyhow::Result<rdkafka::consumer::BaseConsumer<ClientLog>> {
    let log = ClientLog::new(config.get("bootstrap.servers").unwrap_or_default());
    config.create_with_context(log).map_err(|error| {
        anyhow::anyhow!("creating the Kafka consumer: {}", describe(&error, config))
    })
}

/// A client context that logs nothing: for the client [`property_problems`] creates only
/// to see whether it can be created.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
}

impl rdkafka::producer::ProducerContext for Quiet {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// A client error in the gateway's words, for a client built from `config`: no property
/// value is quoted, and any value of `config` that may be secret is masked in librdkafka's
/// own text.
pub fn describe(error: &KafkaError, config: &ClientConfig) -> String {
    let every: std::collections::BTreeSet<String> = config
        .config_map()
        .keys()
        .map(|key| (*key).to_owned())
        .collect();
    mask_values(&describe_hiding(error, &every), config, &every)
}

/// `text` with every value of `config` that may be secret (a property in `hidden`, or whose
/// value is not known to be safe to print) replaced by `***`.
fn mask_values(
    text: &str,
    config: &ClientConfig,
    hidden: &std::collections::BTreeSet<String>,
) -> String {
    let mut masked = text.to_owned();
    for (key, value) in config.config_map() {
        let named_by_us = ["bootstrap.servers", "client.id", "group.id"].contains(&key);
        let secret = hidden.contains(key) || !crate::config::is_shown_property(key);
        if secret && !named_by_us && value.len() >= 4 {
            masked = masked.replace(value, "***");
        }
    }
    masked
}

/// [`describe`], never showing the value of a property in `hidden`.
fn describe_hiding(error: &KafkaError, hidden: &std::collections::BTreeSet<String>) -> String {
    let KafkaError::ClientConfig(result, _, key, value) = error else {
        return error.to_string();
    };
    let what = match result {
        RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => {
            "is not a librdkafka property (see librdkafka's CONFIGURATION.md for the names; \
             Java client properties such as sasl.jaas.config do not apply)"
                .to_owned()
        }
        _ if crate::config::is_shown_property(key) && !hidden.contains(key) => {
            format!("= {value:?} is not a valid value for this property")
        }
        _ => "has a value that is not valid for this property (value not shown)".to_owned(),
    };
    format!("kafka.librdkafka.\"{key}\" {what}")
}

/// Produces records to Kafka.
pub struct KafkaPublisher {
    producer: FutureProducer<ClientLog>,
    log: ClientLog,
    admin: Option<AdminClient<ClientLog>>,
    options: KafkaOptions,
    known_topics: RwLock<HashSet<String>>,
    creating: tokio::sync::Mutex<()>,
}

impl KafkaPublisher {
    /// Creates the producer (and the admin client when topics are to be created), whose
    /// statistics and errors go into `metrics` when given. Nothing connects yet.
    pub fn new(options: KafkaOptions, metrics: Option<Arc<Metrics>>) -> Result<Self, KafkaError> {
        let config = options.producer_config();
        let log = ClientLog::counting(&options.brokers, metrics);
        let producer = config.create_with_context(log.clone())?;
        let admin = if options.create_topics {
            Some(options.consumer_config().create_with_context(log.clone())?)
        } else {
            None
        };
        Ok(Self {
            producer,
            log,
            admin,
            options,
            known_topics: RwLock::new(HashSet::new()),
            creating: tokio::sync::Mutex::new(()),
        })
    }

    /// Fetches cluster metadata: proof that the brokers answer.
    pub async fn check_connection(&self, timeout: Duration) -> Result<usize, KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len())
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    async fn create_missing(&self, topics: &[&str]) -> Result<(), PublishError> {
        let Some(admin) = &self.admin else {
            return Ok(());
        };
        // One creation at a time, so concurrent first requests do not race to create.
        let _creating = self.creating.lock().await;
        let missing: Vec<&str> = {
            let known = self.known_topics.read().expect("lock is never poisoned");
            topics
                .iter()
                .copied()
                .filter(|topic| !known.contains(*topic))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let max_message_bytes = self.options.max_message_bytes().to_string();
        let new_topics: Vec<NewTopic> = missing
            .iter()
            .map(|topic| {
                NewTopic::new(
                    topic,
                    self.options.topic_partitions,
                    TopicReplication::Fixed(self.options.topic_replication_factor),
                )
                .set("max.message.bytes", &max_message_bytes)
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(5)))
            .operation_timeout(Some(Duration::from_secs(5)));
        let results = match admin.create_topics(&new_topics, &options).await {
            Ok(results) => results,
            Err(KafkaError::AdminOp(code)) if cannot_create(code) => {
                tracing::warn!(error = %code, "Kafka cannot create topics here; relying on topics that exist or are auto-created");
                missing
                    .iter()
                    .map(|topic| Ok((*topic).to_owned()))
                    .collect()
            }
            // An admin request that timed out because no broker answers says so.
            Err(error) => {
                return Err(PublishError::Retryable(match self.log.unreachable() {
                    Some(down) => format!("Kafka is unreachable: {down}"),
                    None => format!("creating topics failed: {error}"),
                }));
            }
        };
        let mut known = self.known_topics.write().expect("lock is never poisoned");
        for result in results {
            match result {
                Ok(topic) => {
                    tracing::info!(%topic, partitions = self.options.topic_partitions, "created topic");
                    known.insert(topic);
                }
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(topic);
                }
                Err((topic, code)) if cannot_create(code) => {
                    tracing::warn!(%topic, error = %code, "cannot create topic; producing to it as it is");
                    known.insert(topic);
                }
                Err((topic, code)) => {
                    return Err(PublishError::Retryable(format!(
                        "creating topic {topic} failed: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Errors that mean "this broker will not create topics for us", as opposed to "not now".
fn cannot_create(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::InvalidConfig
    )
}

/// Sorts a produce or delivery error into "retry later" and "this record can never go".
fn classify(error: &KafkaError) -> PublishError {
    let code = match error {
        KafkaError::MessageProduction(code) => Some(*code),
        _ => error.rdkafka_error_code(),
    };
    let reason = match code {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            Some("record_too_large")
        }
        Some(RDKafkaErrorCode::InvalidRecord | RDKafkaErrorCode::InvalidMessage) => {
            Some("invalid_record")
        }
        // librdkafka waits `topic.metadata.propagation.max.ms` (30 s by default) for a
        // topic to appear before it fails a record with this: the bounded wait.
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition) => {
            Some("unknown_topic")
        }
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Some("topic_authorization_failed"),
        Some(RDKafkaErrorCode::QueueFull) => return PublishError::QueueFull,
        _ => None,
    };
    match reason {
        Some(reason) => PublishError::Rejected {
            reason,
            detail: error.to_string(),
        },
        None => PublishError::Retryable(error.to_string()),
    }
}

impl Publisher for KafkaPublisher {
    fn unreachable(&self) -> Option<String> {
        self.log.unreachable()
    }

    fn prepare<'a>(&'a self, topics: &'a [&'a str]) -> BoxFuture<'a, Result<(), PublishError>> {
        let all_known = {
            let known = self.known_topics.read().expect("lock is never poisoned");
            topics.iter().all(|topic| known.contains(*topic))
        };
        if all_known || self.admin.is_none() {
            Box::pin(std::future::ready(Ok(())))
        } else {
            Box::pin(self.create_missing(topics))
        }
    }

    fn enqueue(&self, record: &Record) -> Result<Delivery, PublishError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut future_record = FutureRecord::<str, [u8]>::to(&record.topic)
            .payload(&record.value)
            .headers(headers);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_str());
        }
        let delivery = self
            .producer
            .send_result(future_record)
            .map_err(|(error, _)| classify(&error))?;
        Ok(Box::pin(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, message))) => Err(Undelivered {
                    error: classify(&error),
                    value: message.payload().map(<[u8]>::to_vec),
                }),
                Err(_canceled) => Err(PublishError::Retryable(
                    "the producer shut down before the broker answered".to_owned(),
                )
                .into()),
            }
        }))
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), PublishError>> {
        let producer = self.producer.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || producer.flush(timeout))
                .await
                .map_err(|_| PublishError::Retryable("flush was interrupted".to_owned()))?
                .map_err(|error| PublishError::Retryable(error.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> KafkaOptions {
        KafkaOptions {
            brokers: "k1:9092".to_owned(),
            librdkafka: BTreeMap::from([("linger.ms".to_owned(), "20".to_owned())]),
            hidden: Default::default(),
            statistics_interval: Duration::from_secs(15),
            max_body_bytes: 4 * 1024 * 1024,
            message_timeout: Duration::from_secs(5),
            create_topics: true,
            topic_partitions: 6,
            topic_replication_factor: -1,
            batching: Batching {
                linger_ms: 1,
                batch_bytes: 1_000_000,
                queue_kbytes: 65_536,
            },
        }
    }

    #[test]
    fn the_producer_is_idempotent_acks_all_gzip_and_sized_for_the_largest_body() {
        let config = options().producer_config();
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("compression.type"), Some("gzip"));
        assert_eq!(config.get("compression.level"), Some("1"));
        assert_eq!(config.get("message.max.bytes"), Some("4259840"));
        assert_eq!(config.get("message.timeout.ms"), Some("5000"));
        assert_eq!(
            config.get("linger.ms"),
            Some("20"),
            "operator overrides win"
        );
    }

    #[test]
    fn a_codec_the_operator_chooses_keeps_its_own_default_level() {
        let mut options = options();
        options
            .librdkafka
            .insert("compression.type".to_owned(), "zstd".to_owned());
        let config = options.producer_config();
        assert_eq!(config.get("compression.type"), Some("zstd"));
        assert_eq!(config.get("compression.level"), None);
    }

    #[test]
    fn size_errors_are_rejections_and_the_rest_retryable() {
        assert!(matches!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge
            )),
            PublishError::Rejected {
                reason: "record_too_large",
                ..
            }
        ));
        assert!(matches!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidRecord
            )),
            PublishError::Rejected {
                reason: "invalid_record",
                ..
            }
        ));
        for (code, label) in [
            (RDKafkaErrorCode::UnknownTopic, "unknown_topic"),
            (RDKafkaErrorCode::UnknownTopicOrPartition, "unknown_topic"),
            (
                RDKafkaErrorCode::TopicAuthorizationFailed,
                "topic_authorization_failed",
            ),
        ] {
            assert!(
                matches!(
                    classify(&KafkaError::MessageProduction(code)),
                    PublishError::Rejected { reason, .. } if reason == label
                ),
                "{code:?}"
            );
            assert!(crate::publish::REFUSALS.contains(&label), "{label}");
        }
        assert!(matches!(
            classify(&KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)),
            PublishError::QueueFull
        ));
        assert!(matches!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            PublishError::Retryable(_)
        ));
    }
}
