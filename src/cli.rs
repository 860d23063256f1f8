//! The command line (DESIGN §2): `serve`, `check-config`, `sign`, `tail`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (clap), 78 (`EX_CONFIG`) bad
//! configuration.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{App, Dependencies};
use crate::config::{ConfigError, Settings};
use crate::publish::kafka::KafkaOptions;
use crate::tail::{Selection, TailOptions};

/// `EX_CONFIG` from sysexits.h.
pub const EXIT_CONFIG: u8 = 78;

/// Receives WhatsApp Business Platform webhooks from Meta and publishes every change to a
/// per-field Kafka topic.
#[derive(Debug, Parser)]
#[command(name = "waba-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load, validate and print the effective configuration, secrets redacted.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print `sha256=<hex>` for a body, the way Meta signs it.
    Sign {
        /// The app secret.
        #[arg(long, env = "WABA_GATEWAY_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        /// The body; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Print the records of the gateway's topics, one JSON line each.
    Tail {
        /// TOML configuration file (for brokers and topic names).
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Only this field's topic (repeatable); `unrouted` and `deadletter` name those.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Brokers to read from instead of the configured ones.
        #[arg(long)]
        brokers: Option<String>,
        /// Where to start in each partition.
        #[arg(long, value_enum, default_value_t = From::Beginning)]
        from: From,
        /// Exit after the records that were there at start.
        #[arg(long)]
        exit: bool,
        /// Exit after this many records.
        #[arg(long)]
        max_records: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum From {
    /// The oldest record.
    Beginning,
    /// Only records that arrive from now on.
    End,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Sign { secret, file } => sign(&secret, file),
        Command::Tail {
            config,
            fields,
            brokers,
            from,
            exit,
            max_records,
        } => tail(config, fields, brokers, from, exit, max_records),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<ConfigError>() {
            Some(ConfigError::Invalid(problems)) => {
                eprintln!("waba-gateway: the configuration is not valid:");
                for problem in problems {
                    eprintln!("  - {problem}");
                }
                ExitCode::from(EXIT_CONFIG)
            }
            Some(ConfigError::Load(error)) => {
                eprintln!("waba-gateway: the configuration cannot be loaded: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
            None => {
                eprintln!("waba-gateway: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    Ok(Settings::load(config.as_deref(), std::env::vars())?)
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config)?;
    crate::telemetry::init(&settings.log.level, settings.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("waba-gateway")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let app = App::build(settings, Dependencies::default()).await?;
        app.run_until_stopped(crate::shutdown::signal()).await
    })
}

fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", settings.to_redacted_toml()).context("writing to standard output")?;
    Ok(())
}

fn sign(secret: &str, file: Option<PathBuf>) -> anyhow::Result<()> {
    let body = match file.as_deref() {
        None => read_stdin()?,
        Some(path) if path.as_os_str() == "-" => read_stdin()?,
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", crate::signature::sign(secret.as_bytes(), &body))
        .context("writing to standard output")?;
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the body from standard input")?;
    Ok(body)
}

fn tail(
    config: Option<PathBuf>,
    fields: Vec<String>,
    brokers: Option<String>,
    from: From,
    exit: bool,
    max_records: Option<u64>,
) -> anyhow::Result<()> {
    let settings = load(config)?;
    crate::telemetry::init("warn", settings.log.format);
    let brokers = match brokers {
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
    };
    let routing = settings.kafka.routing();
    let selection = if fields.is_empty() {
        Selection::All(routing)
    } else {
        Selection::Topics(
            fields
                .iter()
                .map(|field| match field.as_str() {
                    "unrouted" => routing.unrouted().to_owned(),
                    "deadletter" => routing.deadletter().to_owned(),
                    field => routing.topic(Some("whatsapp_business_account"), Some(field)),
                })
                .collect(),
        )
    };
    let options = TailOptions {
        config: KafkaOptions {
            brokers,
            librdkafka: settings.kafka.librdkafka.0.clone(),
            max_body_bytes: settings.server.max_body_bytes,
            message_timeout: std::time::Duration::from_secs(5),
            create_topics: false,
            topic_partitions: 1,
            topic_replication_factor: -1,
        }
        .consumer_config(),
        selection,
        from_beginning: from == From::Beginning,
        exit_at_end: exit,
        max_records,
    };
    crate::tail::run(&options, &mut std::io::stdout().lock())?;
    Ok(())
}
