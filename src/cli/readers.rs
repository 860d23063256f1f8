//! The commands that read the gateway's topics: `tail` and `replay`. They need `[kafka]`
//! only: no app has to be configured.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{From, UsageError};
use crate::config::Settings;
use crate::delivery::{Delivery, Purpose};
use crate::metrics::Metrics;
use crate::publish::kafka::KafkaOptions;
use crate::replay::ReplayOptions;
use crate::tail::{Selection, TailOptions};

/// The settings, loaded and checked as every command does, with the log set to warnings
/// (the command's own output is what matters).
pub(super) fn kafka_settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    let settings = super::load(config)?;
    crate::telemetry::init("warn", settings.log.format);
    Ok(settings)
}

/// `--brokers`, else the embedded broker's address file, else `kafka.brokers`.
pub(super) fn resolve_brokers(
    settings: &Settings,
    brokers: Option<String>,
) -> anyhow::Result<String> {
    Ok(match brokers {
        Some(brokers) => brokers,
        None if settings.kafka.is_embedded() => {
            let path = &settings.kafka.embedded_address_file;
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "reading the embedded broker's address from {}: is `waba-gateway serve` \
                         running from this directory? (or pass --brokers)",
                        path.display()
                    )
                })?
                .trim()
                .to_owned()
        }
        None => settings.kafka.brokers.clone(),
    })
}

/// The settings with `--brokers`, else the embedded broker's address, as `kafka.brokers`:
/// what a command's own clients connect to.
pub(super) fn with_brokers(
    mut settings: Settings,
    brokers: Option<String>,
) -> anyhow::Result<Settings> {
    settings.kafka.brokers = resolve_brokers(&settings, brokers)?;
    Ok(settings)
}

pub(super) fn tail(
    config: Option<PathBuf>,
    fields: Vec<String>,
    brokers: Option<String>,
    from: From,
    exit: bool,
    max_records: Option<u64>,
) -> anyhow::Result<()> {
    let settings = kafka_settings(config.as_deref())?;
    let routing = settings.kafka.routing();
    let selection = if fields.is_empty() {
        Selection::All(routing)
    } else {
        Selection::Topics(
            fields
                .iter()
                .map(|field| match field.as_str() {
                    "unrouted" => Ok(routing.unrouted().to_owned()),
                    "deadletter" => Ok(routing.deadletter().to_owned()),
                    field if routing.knows_field(field) => Ok(routing.field_topic(field)),
                    // The items of `messages` by kind, with their override when set.
                    field
                        if let Some(kind) = crate::routing::ItemKind::ALL
                            .into_iter()
                            .find(|kind| kind.topic_key() == field) =>
                    {
                        Ok(routing.item_topic(Some(crate::routing::WABA_OBJECT), kind))
                    }
                    field => Err(UsageError(format!(
                        "--field {field:?} is not a field the gateway knows; known fields: {}, \
                         messages.message, messages.status and messages.error (the items of \
                         messages, for routing.split = \"item\"), and unrouted and deadletter",
                        routing.known_fields().join(", ")
                    ))),
                })
                .collect::<Result<_, _>>()?,
        )
    };
    let settings = with_brokers(settings, brokers)?;
    let options = TailOptions {
        config: KafkaOptions::from_settings(&settings).consumer_config(),
        selection,
        from_beginning: from == From::Beginning,
        exit_at_end: exit,
        max_records,
    };
    crate::tail::run(&options, &mut std::io::stdout().lock())?;
    Ok(())
}

/// `replay`'s command line.
#[derive(Debug, clap::Args)]
pub(super) struct ReplayArgs {
    /// What to replay: the dead-letter topic.
    #[arg(long, value_enum)]
    from: ReplaySource,
    /// TOML configuration file (for brokers and topic names).
    #[arg(long, env = "WABA_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Brokers to use instead of the configured ones.
    #[arg(long)]
    brokers: Option<String>,
    #[command(flatten)]
    selection: ReplayOptions,
}

/// What `replay` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReplaySource {
    /// The dead-letter topic (`kafka.deadletter_topic`).
    Deadletter,
}

pub(super) fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(problem) = args.selection.impossible() {
        return Err(UsageError(problem).into());
    }
    let settings = with_brokers(kafka_settings(args.config.as_deref())?, args.brokers)?;
    let routing = settings.routing();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ReplayArgs {
        from: ReplaySource::Deadletter,
        selection,
        ..
    } = args;
    let consumer = KafkaOptions::from_settings(&settings).consumer_config();
    let terminal = std::io::stderr().is_terminal();
    let summary = runtime.block_on(async {
        let metrics = Arc::new(Metrics::new(routing.known_topics()));
        let delivery = Delivery::new(&settings, Purpose::Replay, metrics, None)?;
        // One span for the run; each replayed record's PRODUCER span stays in the trace
        // it was first published in, and links to this one.
        let run = delivery
            .tracer()
            .start("replay", crate::trace::Kind::Internal, None);
        let deliverer = delivery
            .deliverer()
            .clone()
            .linking_to(run.as_ref().map(|run| run.context().clone()));
        let summary = crate::replay::run(&consumer, &selection, &deliverer, |summary| {
            if terminal {
                eprint!("\r{}", summary.line(selection.dry_run));
            }
        })
        .await;
        drop(run);
        delivery.tracer().shutdown(crate::trace::FLUSH).await;
        summary
    });
    if terminal {
        eprintln!();
    }
    let summary = summary?;
    // What still fails is reported, not an error: it stays on the topic for a later run.
    writeln!(
        std::io::stdout().lock(),
        "{}",
        summary.line(selection.dry_run)
    )
    .context("writing to standard output")
}
