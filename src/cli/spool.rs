//! `waba-gateway spool status|drain`: what a spool directory holds, and emptying one that
//! no gateway serves any more (the volume of a removed replica, a recovered disk).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use super::readers::{kafka_settings, with_brokers};
use crate::delivery::{Delivery, Mode, Purpose};
use crate::metrics::Metrics;

#[derive(Debug, Subcommand)]
pub(super) enum SpoolAction {
    /// What a spool directory holds: entries, bytes, the oldest entry's age, quarantined
    /// files, and which process holds it. Read-only, safe beside a running gateway.
    #[command(after_help = "Examples:
  waba-gateway spool status --dir /var/lib/waba-gateway/spool
  waba-gateway spool status --config gateway.toml --json")]
    Status {
        /// The spool directory (default: delivery.spool_dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Forward every entry of a spool directory that no gateway holds to Kafka, with the
    /// configured [kafka], and exit 0 once it is empty.
    #[command(after_help = "Examples:
  waba-gateway spool drain --dir /mnt/old-replica/spool --config gateway.toml
  waba-gateway spool drain --dir ./spool --brokers kafka:9092 --timeout-seconds 600")]
    Drain {
        /// The spool directory.
        #[arg(long)]
        dir: PathBuf,
        /// TOML configuration file (for [kafka]).
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Brokers to use instead of the configured ones.
        #[arg(long)]
        brokers: Option<String>,
        /// Give up, leaving what is not forwarded on the spool, after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_seconds: u64,
    },
}

pub(super) fn run(action: SpoolAction) -> anyhow::Result<()> {
    match action {
        SpoolAction::Status { dir, config, json } => {
            let dir = match dir {
                Some(dir) => dir,
                None => kafka_settings(config.as_deref())?.delivery.spool_dir,
            };
            refuse_what_is_no_spool(&dir)?;
            let status = crate::spool::status::read(&dir)
                .with_context(|| format!("reading the spool in {}", dir.display()))?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&status)?)
            } else {
                write!(out, "{}", status.text())
            }
            .context("writing to standard output")
        }
        SpoolAction::Drain {
            dir,
            config,
            brokers,
            timeout_seconds,
        } => drain(dir, config, brokers, Duration::from_secs(timeout_seconds)),
    }
}

/// A folder that holds no spool (its parent, a volume mounted at the wrong place) is
/// refused before anything is read or written: reporting an empty spool there would send
/// an operator to delete the volume that holds the real one.
fn refuse_what_is_no_spool(dir: &std::path::Path) -> anyhow::Result<()> {
    if crate::spool::is_spool(dir) {
        return Ok(());
    }
    anyhow::bail!(
        "no spool here: {} holds no segment (*.seg), checkpoint or lock of a spool; pass the \
         spool directory itself (delivery.spool_dir of the gateway that wrote it). Nothing \
         was read or written",
        dir.display()
    )
}

fn drain(
    dir: PathBuf,
    config: Option<PathBuf>,
    brokers: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let settings = with_brokers(kafka_settings(config.as_deref())?, brokers)?;
    let brokers = settings.kafka.brokers.clone();
    let routing = settings.routing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome: anyhow::Result<usize> = runtime.block_on(async {
        let metrics = Arc::new(Metrics::new(routing.known_topics()));
        refuse_what_is_no_spool(&dir)?;
        // As behind `serve` in spool mode: librdkafka retries without a deadline, this
        // command's timeout bounds the whole.
        let mut delivery = Delivery::new(&settings, Purpose::Drain, metrics, None)?;
        let recovery = delivery
            .open_spool(&dir)
            .with_context(|| format!("opening the spool in {}", dir.display()))?;
        let kafka = delivery.kafka().expect("a Kafka producer");
        let reach = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(30));
        kafka.check_connection(reach).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot reach Kafka at kafka.brokers = {brokers:?} ({error}): nothing was \
                 forwarded, the spool is unchanged"
            )
        })?;
        let forwarding = delivery.forward(Mode::Drain).expect("the spool is open");
        let terminal = std::io::stderr().is_terminal();
        let left = forwarding
            .drain(deadline, |left| {
                if terminal {
                    eprint!("\r{left} of {} entries left", recovery.replayed);
                }
            })
            .await;
        if terminal {
            eprintln!();
        }
        delivery.tracer().shutdown(crate::trace::FLUSH).await;
        if left > 0 {
            anyhow::bail!(
                "{left} of {} entries were not forwarded within {} s; they stay on the spool \
                 for the next run",
                recovery.replayed,
                timeout.as_secs()
            );
        }
        Ok(recovery.replayed)
    });
    runtime.shutdown_background();
    let forwarded = outcome?;
    let quarantined = quarantined_files(&dir);
    if quarantined.is_empty() {
        return writeln!(
            std::io::stdout().lock(),
            "forwarded {forwarded} entries from {} to Kafka; the spool is empty",
            dir.display()
        )
        .context("writing to standard output");
    }
    // Entries may be in those bytes: the volume is not to be deleted on this run's word.
    writeln!(
        std::io::stdout().lock(),
        "forwarded {forwarded} entries from {} to Kafka; NOT empty: quarantine/ holds {} \
         file(s) of bytes that could not be read as entries, and were not forwarded:\n{}\
         Keep the volume until someone has looked at them (README, \"Spool quarantine\"); \
         remove them, then run drain again, to finish",
        dir.display(),
        quarantined.len(),
        quarantined
            .iter()
            .map(|file| format!("  {}\n", file.display()))
            .collect::<String>()
    )
    .context("writing to standard output")?;
    Err(super::Failed.into())
}

/// The files in `dir`'s `quarantine/`, sorted.
fn quarantined_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("quarantine"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
