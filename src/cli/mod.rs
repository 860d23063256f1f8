//! The command line (DESIGN §2): `serve`, `check-config` and `sign` here; `tail` and
//! `replay` in `readers`; `spool status|drain` in `spool`; `topics plan|apply|check` in
//! `topics`; `subscriptions …` in `subscriptions`. Every command loads its settings with
//! `load`, which reports every problem `check-config` would.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (clap), 78 (`EX_CONFIG`) bad
//! configuration.

mod readers;
mod spool;
mod subscriptions;
mod topics;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{App, Dependencies};
use crate::config::{ConfigError, Settings};

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
    #[command(after_help = "Examples:
  waba-gateway serve                          # embedded Kafka and a demo app, to try it out
  waba-gateway serve --config gateway.toml
  WABA_GATEWAY__KAFKA__BROKERS=kafka:9092 waba-gateway serve --config gateway.toml")]
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load, validate and print the effective configuration, secrets redacted.
    #[command(after_help = "Examples:
  waba-gateway check-config --config gateway.toml
  WABA_GATEWAY_CONFIG=gateway.toml waba-gateway check-config && echo valid")]
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print `sha256=<hex>` for a body, the way Meta signs it.
    #[command(after_help = "Examples:
  waba-gateway sign --secret \"$APP_SECRET\" body.json
  waba-gateway sign --secret \"$APP_SECRET\" - < body.json
  curl -H \"X-Hub-Signature-256: $(waba-gateway sign --secret \"$APP_SECRET\" body.json)\" \\
       -H 'Content-Type: application/json' --data-binary @body.json http://localhost:8080/webhook")]
    Sign {
        /// The app secret.
        #[arg(long, env = "WABA_GATEWAY_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        /// The body; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Print the records of the gateway's topics, one JSON line each.
    #[command(after_help = "Examples:
  waba-gateway tail                                  # every topic, from the beginning
  waba-gateway tail --field messages --from end      # new inbound messages as they come
  waba-gateway tail --field deadletter --exit        # what is on the dead-letter topic now
  waba-gateway tail --field messages.status --max-records 10  # delivery statuses (item mode)
  waba-gateway tail --brokers kafka:9092 --field message_template_status_update --exit")]
    Tail {
        /// TOML configuration file (for brokers and topic names).
        #[arg(long, env = "WABA_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Only this field's topic (repeatable): a field such as `messages`, an item kind
        /// of `messages` (`messages.status`, with its `[kafka.topics]` override when set),
        /// or `unrouted` and `deadletter`.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Brokers to read from instead of the configured ones.
        #[arg(long)]
        brokers: Option<String>,
        /// Where to start in each partition.
        #[arg(long, value_enum, default_value_t = From::Beginning)]
        from: From,
        /// Exit once every partition is read to its end and no record has come for two
        /// seconds (what was still on its way when the command started is printed too).
        #[arg(long)]
        exit: bool,
        /// Exit after this many records (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_records: Option<u64>,
    },
    /// Re-run dead letters through the current split: what now splits is published to its
    /// topics (header wa-replayed-from), what still fails is counted and left.
    #[command(after_help = "Examples:
  waba-gateway replay --from deadletter --dry-run            # count what would come back
  waba-gateway replay --from deadletter                      # replay, once: offsets are committed
  waba-gateway replay --from deadletter --reason invalid_json --since 2026-11-29T00:00:00Z")]
    Replay(readers::ReplayArgs),
    /// Look into a spool directory, or empty one that no gateway serves any more.
    #[command(after_help = "Examples:
  waba-gateway spool status --dir /var/lib/waba-gateway/spool
  waba-gateway spool drain --dir /mnt/old-replica/spool --config gateway.toml")]
    Spool {
        #[command(subcommand)]
        action: spool::SpoolAction,
    },
    /// Create or check the topics the gateway writes to, with the partitions, replication
    /// and max.message.bytes it needs.
    Topics {
        #[command(subcommand)]
        action: topics::TopicsAction,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  waba-gateway completions bash > /etc/bash_completion.d/waba-gateway
  waba-gateway completions zsh > \"${fpath[1]}/_waba-gateway\"
  waba-gateway completions fish > ~/.config/fish/completions/waba-gateway.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Subscribe, list or unsubscribe the app on a WhatsApp Business Account (Graph API
    /// `/{waba-id}/subscribed_apps`).
    #[command(after_help = "Examples:
  waba-gateway subscriptions list --waba-id 102290129340398
  waba-gateway subscriptions add --waba-id 102290129340398
  waba-gateway subscriptions remove --waba-id 102290129340398 --yes")]
    Subscriptions {
        #[command(subcommand)]
        action: subscriptions::SubscriptionAction,
    },
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
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
        } => readers::tail(config, fields, brokers, from, exit, max_records),
        Command::Replay(args) => readers::replay(args),
        Command::Spool { action } => spool::run(action),
        Command::Topics { action } => topics::run(action),
        Command::Completions { shell } => completions(shell),
        Command::Subscriptions { action } => subscriptions::run(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): it has what it wanted.
        Err(error) if is_closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<ConfigError>() {
            Some(ConfigError::Invalid(problems)) => {
                eprintln!("waba-gateway: the configuration is not valid:");
                for problem in problems {
                    eprintln!("  - {problem}");
                }
                ExitCode::from(EXIT_CONFIG)
            }
            None if error.downcast_ref::<Failed>().is_some() => ExitCode::FAILURE,
            None if error.downcast_ref::<UsageError>().is_some() => {
                eprintln!("waba-gateway: {error}");
                ExitCode::from(2)
            }
            None => {
                eprintln!("waba-gateway: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Whether `error` comes from writing to a pipe whose reader has closed it.
fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The settings, loaded and checked the one way every command does (DESIGN §2): every
/// problem named at once (exit 78), no value shown that may be secret.
fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    warn_of_misnamed_variables();
    warn_of_unreadable_rust_log();
    Ok(crate::app::load_settings(config, std::env::vars())?)
}

/// Says on standard error when `RUST_LOG` is not a log filter: it would silence every line
/// (`warning` reads as a target), so `log.level` applies instead.
fn warn_of_unreadable_rust_log() {
    if let Ok(filter) = std::env::var("RUST_LOG")
        && let Some(problem) = crate::config::log_filter_problem(&filter)
    {
        eprintln!(
            "waba-gateway: warning: RUST_LOG is ignored: {}",
            problem.replacen("log.level", "RUST_LOG", 1)
        );
    }
}

/// Says which `WABA_GATEWAY_…` variables look meant for the settings but are not read.
fn warn_of_misnamed_variables() {
    for warning in crate::config::misnamed_variables(std::env::vars()) {
        eprintln!("waba-gateway: warning: {warning}");
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config.as_deref())?;
    crate::telemetry::init(&settings.log.level, settings.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("waba-gateway")
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let app = App::build(settings, Dependencies::default()).await?;
        app.run_until_stopped(crate::shutdown::signal()).await
    });
    // Stopped means drained: a Kafka call still waiting on a blocking thread (a metadata
    // request to an unreachable broker) must not hold the exit back.
    runtime.shutdown_background();
    served
}

fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config.as_deref())?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", settings.to_redacted_toml()).context("writing to standard output")?;
    let bound = settings.memory_bound_bytes();
    writeln!(
        out,
        "\n# memory bound: {bound} bytes ({} MiB) whatever clients send (SECURITY.md); \
         give the process at least this much",
        bound.div_ceil(1024 * 1024)
    )
    .context("writing to standard output")?;
    Ok(())
}

fn completions(shell: Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: clap_complete panics when its output fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut Cli::command(), "waba-gateway", &mut script);
    let mut script = String::from_utf8(script).context("the completion script")?;
    if shell == Shell::Bash {
        // clap_complete names the states of a hyphenated binary two ways (`waba__gateway…`
        // where it reads the words, `waba__subcmd__gateway…` where it completes), so
        // nothing past the first word completed: one name for both.
        script = script.replace("waba__subcmd__gateway", "waba__gateway");
    }
    std::io::stdout()
        .lock()
        .write_all(script.as_bytes())
        .context("writing to standard output")
}

fn sign(secret: &str, file: Option<PathBuf>) -> anyhow::Result<()> {
    if secret.is_empty() {
        return Err(UsageError(
            "--secret is empty: pass the Meta app secret that signs the notifications".to_owned(),
        )
        .into());
    }
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

/// A command that ran and said why it failed on standard output (exit 1, nothing more
/// printed).
#[derive(Debug, thiserror::Error)]
#[error("some checks failed")]
struct Failed;

/// A command line that parses but cannot be carried out as given (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);
