//! `waba-gateway topics apply|check|asyncapi`: the topics of every field, the overrides,
//! the unrouted and the dead-letter topic, created or checked through Kafka's admin API,
//! or described as an AsyncAPI document.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use rdkafka::admin::AdminClient;

use super::Failed;
use super::readers::{kafka_settings, with_brokers};
use crate::publish::client_log::ClientLog;
use crate::publish::kafka::KafkaOptions;
use crate::topics::{Finding, Overrides, TopicSpec, create, inspect, plan, strimzi};

#[derive(Debug, Subcommand)]
pub(super) enum TopicsAction {
    /// Create every missing topic, then check them all (exit 1 naming what is mis-set).
    #[command(after_help = "Examples:
  waba-gateway topics apply --config gateway.toml --partitions 12 --replication-factor 3
  waba-gateway topics apply --dry-run                       # the plan, without connecting
  waba-gateway topics apply --dry-run --output strimzi --strimzi-cluster kafka > topics.yaml")]
    Apply {
        #[command(flatten)]
        topics: TopicsArgs,
        /// Print the plan and connect to nothing.
        #[arg(long)]
        dry_run: bool,
        /// What --dry-run prints.
        #[arg(long, value_enum, default_value_t = Output::Text, requires = "dry_run")]
        output: Output,
        /// The Kafka cluster (strimzi.io/cluster label) of --output strimzi.
        #[arg(long, default_value = "kafka")]
        strimzi_cluster: String,
    },
    /// Print the AsyncAPI 3.0 document of what the gateway publishes: a channel per topic,
    /// each record's schema, headers and key. Connects to nothing.
    ///
    /// Its payloads refer to the JSON Schemas by relative path (envelope.schema.json): keep
    /// the document beside a copy of the repository's schemas/ folder, as
    /// schemas/asyncapi.json (the default configuration's) is.
    #[command(after_help = "Examples:
  waba-gateway topics asyncapi --config gateway.toml > asyncapi.json
  waba-gateway topics asyncapi --brokers kafka-0:9092,kafka-1:9092 --partitions 12")]
    Asyncapi {
        #[command(flatten)]
        topics: TopicsArgs,
    },
    /// Create nothing; exit 1 naming each topic that is missing or mis-set, with the fix.
    #[command(after_help = "Examples:
  waba-gateway topics check --config gateway.toml
  waba-gateway topics check --brokers kafka:9092 --partitions 12")]
    Check {
        #[command(flatten)]
        topics: TopicsArgs,
    },
}

#[derive(Debug, Args)]
pub(super) struct TopicsArgs {
    /// TOML configuration file (brokers, topic names, [kafka.librdkafka] credentials).
    #[arg(long, env = "WABA_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Brokers to use instead of the configured ones.
    #[arg(long)]
    brokers: Option<String>,
    /// Partitions of each topic (default: kafka.topic_partitions).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Replication factor of each topic (default: kafka.topic_replication_factor; -1 is
    /// the broker's default).
    #[arg(long, allow_negative_numbers = true, value_parser = replication_factor)]
    replication_factor: Option<i32>,
    /// A topic-level compression.type, for brokers that should store records in one codec
    /// whatever producers send (clients then need that codec to read).
    #[arg(long, value_enum)]
    compression_type: Option<Compression>,
}

/// What `--dry-run` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Output {
    /// One line per topic.
    Text,
    /// Strimzi KafkaTopic resources (YAML).
    Strimzi,
}

/// Kafka's topic-level `compression.type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Compression {
    /// Keep what the producer sent.
    Producer,
    /// Uncompressed.
    Uncompressed,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

fn replication_factor(text: &str) -> Result<i32, String> {
    match text.parse::<i32>() {
        Ok(n) if n == -1 || n >= 1 => Ok(n),
        _ => Err("must be -1 (the broker's default) or at least 1".to_owned()),
    }
}

pub(super) fn run(action: TopicsAction) -> anyhow::Result<()> {
    match action {
        TopicsAction::Apply {
            topics,
            dry_run: true,
            output,
            strimzi_cluster,
        } => {
            let (_, specs) = specs(&topics)?;
            let text = match output {
                Output::Strimzi => strimzi(&specs, &strimzi_cluster),
                Output::Text => specs.iter().map(describe).collect(),
            };
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("writing to standard output")
        }
        TopicsAction::Asyncapi { topics } => {
            let (mut settings, specs) = specs(&topics)?;
            // Without --brokers an embedded broker is nobody's server: none is listed.
            if let Some(brokers) = &topics.brokers {
                settings.kafka.brokers.clone_from(brokers);
            }
            let mut text =
                serde_json::to_string_pretty(&crate::asyncapi::document(&settings, &specs))
                    .context("writing the document")?;
            text.push('\n');
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("writing to standard output")
        }
        TopicsAction::Apply { topics, .. } => connect_and(&topics, true),
        TopicsAction::Check { topics } => connect_and(&topics, false),
    }
}

fn specs(args: &TopicsArgs) -> anyhow::Result<(crate::config::Settings, Vec<TopicSpec>)> {
    let settings = kafka_settings(args.config.as_deref())?;
    let overrides = Overrides {
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        compression_type: args
            .compression_type
            .and_then(|c| c.to_possible_value())
            .map(|c| c.get_name().to_owned()),
    };
    let specs = plan(&settings, &overrides);
    Ok((settings, specs))
}

/// One line of the plan.
fn describe(spec: &TopicSpec) -> String {
    let configs: Vec<String> = spec
        .configs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let replication = match spec.replication_factor {
        -1 => "the broker's default replication".to_owned(),
        n => format!("replication factor {n}"),
    };
    format!(
        "{}: {} partitions, {replication}, {}\n",
        spec.name,
        spec.partitions,
        configs.join(" ")
    )
}

/// Creates what is missing (`apply`), then checks every topic: exit 1 when any is
/// missing or mis-set.
fn connect_and(args: &TopicsArgs, apply: bool) -> anyhow::Result<()> {
    let (settings, specs) = specs(args)?;
    let settings = with_brokers(settings, args.brokers.clone())?;
    let brokers = settings.kafka.brokers.clone();
    let admin_config = KafkaOptions::from_settings(&settings).consumer_config();
    let admin: AdminClient<ClientLog> = admin_config
        .create_with_context(ClientLog::new(&brokers))
        .map_err(|error| {
            anyhow::anyhow!(
                "creating the Kafka admin client: {}",
                crate::publish::kafka::describe(&error, &admin_config)
            )
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut out = std::io::stdout().lock();
    let reach = |error| {
        anyhow::anyhow!(
            "cannot read the topics of {brokers}: {error}; check kafka.brokers (or --brokers) \
             and the [kafka.librdkafka] security settings"
        )
    };
    let mut findings = runtime.block_on(inspect(&admin, &specs)).map_err(reach)?;
    if apply {
        let missing: Vec<TopicSpec> = findings
            .iter()
            .filter(|(_, finding)| *finding == Finding::Missing)
            .map(|(spec, _)| spec.clone())
            .collect();
        if !missing.is_empty() {
            let created = runtime
                .block_on(create(&admin, &missing))
                .map_err(|error| anyhow::anyhow!(error))?;
            for topic in created {
                writeln!(out, "created {topic}")?;
            }
            findings = runtime.block_on(inspect(&admin, &specs)).map_err(reach)?;
        }
    }
    let mut bad = 0;
    for (spec, finding) in &findings {
        match finding {
            Finding::Fits {
                partitions,
                configs,
            } => {
                let configs = match configs {
                    Some(configs) => configs
                        .iter()
                        .map(|(key, value)| format!("{key}={value}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    None => "configuration not described by the broker".to_owned(),
                };
                writeln!(out, "✓ {}: {partitions} partitions, {configs}", spec.name)?;
            }
            Finding::Missing => {
                bad += 1;
                writeln!(
                    out,
                    "✗ {}: missing; run `waba-gateway topics apply` (or create it with {} \
                     partitions)",
                    spec.name, spec.partitions
                )?;
            }
            Finding::MisSet(problems) => {
                bad += 1;
                for problem in problems {
                    writeln!(out, "✗ {}: {problem}", spec.name)?;
                }
            }
        }
    }
    if bad > 0 {
        writeln!(
            out,
            "{bad} of {} topics are missing or mis-set",
            findings.len()
        )?;
        return Err(Failed.into());
    }
    writeln!(out, "all {} topics are there as wanted", findings.len())?;
    Ok(())
}
