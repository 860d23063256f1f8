//! The command line (DESIGN §2): `serve`, `check-config`, `sign`, `tail`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (clap), 78 (`EX_CONFIG`) bad
//! configuration.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

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
  waba-gateway tail --brokers kafka:9092 --field statuses --max-records 10")]
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
        /// Exit after this many records (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_records: Option<u64>,
    },
    /// Subscribe, list or unsubscribe the app on a WhatsApp Business Account (Graph API
    /// `/{waba-id}/subscribed_apps`).
    #[command(after_help = "Examples:
  waba-gateway subscriptions list --waba-id 102290129340398
  waba-gateway subscriptions add --waba-id 102290129340398
  waba-gateway subscriptions remove --waba-id 102290129340398 --yes")]
    Subscriptions {
        #[command(subcommand)]
        action: SubscriptionAction,
    },
}

/// Options every `subscriptions` action takes.
#[derive(Debug, clap::Args)]
struct GraphArgs {
    /// The WhatsApp Business Account id.
    #[arg(long)]
    waba_id: String,
    /// Access token (a system user's, with whatsapp_business_management); wins over
    /// graph.access_token, graph.access_token_file and WABA_GATEWAY__GRAPH__ACCESS_TOKEN.
    #[arg(long)]
    token: Option<String>,
    /// TOML configuration file (for [graph]).
    #[arg(long, env = "WABA_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SubscriptionAction {
    /// Subscribe the app to the account's webhooks (POST).
    #[command(after_help = "Examples:
  waba-gateway subscriptions add --waba-id 102290129340398 --token \"$TOKEN\"
  waba-gateway subscriptions add --waba-id 102290129340398 \\
      --override-callback-url https://hooks.example.com/webhook --verify-token \"$VERIFY_TOKEN\"")]
    Add {
        #[command(flatten)]
        graph: GraphArgs,
        /// Send this account's notifications to this https URL instead of the app's.
        #[arg(long, requires = "verify_token")]
        override_callback_url: Option<String>,
        /// The verify token Meta sends to the override URL.
        #[arg(long, requires = "override_callback_url")]
        verify_token: Option<String>,
    },
    /// List the apps subscribed to the account (GET).
    #[command(after_help = "Examples:
  waba-gateway subscriptions list --waba-id 102290129340398
  waba-gateway subscriptions list --waba-id 102290129340398 --json | jq '.[].id'")]
    List {
        #[command(flatten)]
        graph: GraphArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Unsubscribe the app (DELETE): every phone number of the account stops sending
    /// webhooks to it.
    #[command(after_help = "Examples:
  waba-gateway subscriptions remove --waba-id 102290129340398          # asks to confirm
  waba-gateway subscriptions remove --waba-id 102290129340398 --yes")]
    Remove {
        #[command(flatten)]
        graph: GraphArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
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
        Command::Subscriptions { action } => subscriptions(action),
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

fn load(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    warn_of_misnamed_variables();
    Ok(Settings::load(config.as_deref(), std::env::vars())?)
}

/// Says which `WABA_GATEWAY_…` variables look meant for the settings but are not read.
fn warn_of_misnamed_variables() {
    for warning in crate::config::misnamed_variables(std::env::vars()) {
        eprintln!("waba-gateway: warning: {warning}");
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config)?;
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
    let settings = load(config)?;
    crate::app::check(&settings)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", settings.to_redacted_toml()).context("writing to standard output")?;
    Ok(())
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

fn tail(
    config: Option<PathBuf>,
    fields: Vec<String>,
    brokers: Option<String>,
    from: From,
    exit: bool,
    max_records: Option<u64>,
) -> anyhow::Result<()> {
    // Reading topics needs [kafka] only: no app has to be configured.
    warn_of_misnamed_variables();
    let (settings, mut problems) = Settings::load_layers(config.as_deref(), std::env::vars())?;
    problems.extend(settings.kafka.routing().problems());
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems).into());
    }
    crate::telemetry::init("warn", settings.log.format);
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
                    field => Err(UsageError(format!(
                        "--field {field:?} is not a field the gateway knows; known fields: {}, \
                         and unrouted and deadletter",
                        routing.known_fields().join(", ")
                    ))),
                })
                .collect::<Result<_, _>>()?,
        )
    };
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

/// A command line that parses but cannot be carried out as given (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn subscriptions(action: SubscriptionAction) -> anyhow::Result<()> {
    let graph_args = match &action {
        SubscriptionAction::Add { graph, .. }
        | SubscriptionAction::List { graph, .. }
        | SubscriptionAction::Remove { graph, .. } => graph,
    };
    if graph_args.waba_id.is_empty() || !graph_args.waba_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UsageError(format!(
            "--waba-id {:?} is not a WhatsApp Business Account id (digits only)",
            graph_args.waba_id
        ))
        .into());
    }
    if let SubscriptionAction::Add {
        override_callback_url: Some(url),
        ..
    } = &action
    {
        crate::graph::check_callback_url(url).map_err(UsageError)?;
    }
    warn_of_misnamed_variables();
    let (settings, problems) =
        Settings::load_layers(graph_args.config.as_deref(), std::env::vars())?;
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems).into());
    }
    crate::telemetry::init("warn", settings.log.format);
    let token = match (&graph_args.token, &settings.graph.access_token) {
        (Some(token), _) if token.is_empty() => {
            return Err(UsageError(
                "--token is empty: pass a system user's access token, or leave --token out to \
                 use graph.access_token"
                    .to_owned(),
            )
            .into());
        }
        (Some(token), _) => SecretString::from(token.clone()),
        (None, Some(token)) => token.clone(),
        (None, None) => {
            return Err(ConfigError::Invalid(vec![
                "no Graph API access token: pass --token, or set graph.access_token, \
                 graph.access_token_file or WABA_GATEWAY__GRAPH__ACCESS_TOKEN"
                    .to_owned(),
            ])
            .into());
        }
    };
    let graph = &settings.graph;
    let client = crate::graph::GraphClient::new(
        &graph.base_url,
        &graph.api_version,
        token,
        crate::graph::RetryPolicy {
            max_attempts: graph.max_attempts.max(1),
            base_delay: Duration::from_millis(graph.retry_base_delay_ms),
            max_total_wait: Duration::from_millis(graph.max_wait_ms),
            timeout: Duration::from_millis(graph.timeout_ms),
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut out = std::io::stdout().lock();
    match action {
        SubscriptionAction::Add {
            graph,
            override_callback_url,
            verify_token,
        } => {
            let verify_token = verify_token.map(SecretString::from);
            let callback = override_callback_url.as_deref().zip(verify_token.as_ref());
            runtime.block_on(client.subscribe(&graph.waba_id, callback))?;
            match override_callback_url {
                Some(url) => writeln!(
                    out,
                    "Subscribed the app to WABA {}; its notifications go to {url}.",
                    graph.waba_id
                ),
                None => writeln!(out, "Subscribed the app to WABA {}.", graph.waba_id),
            }
            .context("writing to standard output")?;
        }
        SubscriptionAction::List { graph, json } => {
            let apps = runtime.block_on(client.list(&graph.waba_id))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&apps)?)
            } else {
                write!(out, "{}", app_table(&apps))
            }
            .context("writing to standard output")?;
        }
        SubscriptionAction::Remove { graph, yes } => {
            eprintln!(
                "warning: unsubscribing the app from WABA {} stops webhooks for every phone \
                 number of that account",
                graph.waba_id
            );
            if !yes {
                confirm()?;
            }
            runtime.block_on(client.unsubscribe(&graph.waba_id))?;
            writeln!(out, "Unsubscribed the app from WABA {}.", graph.waba_id)
                .context("writing to standard output")?;
        }
    }
    Ok(())
}

fn confirm() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "refusing to unsubscribe without confirmation: pass --yes".to_owned(),
        )
        .into());
    }
    eprint!("Type 'yes' to unsubscribe: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(UsageError("not confirmed; nothing was changed".to_owned()).into())
    }
}

fn app_table(apps: &[crate::graph::SubscribedApp]) -> String {
    if apps.is_empty() {
        return "No app is subscribed to this account.\n".to_owned();
    }
    let rows: Vec<[&str; 4]> = apps
        .iter()
        .map(|app| {
            [
                app.name.as_str(),
                app.id.as_str(),
                app.link.as_str(),
                app.override_callback_uri.as_deref().unwrap_or("-"),
            ]
        })
        .collect();
    let header = ["NAME", "ID", "LINK", "OVERRIDE CALLBACK"];
    let widths: Vec<usize> = (0..4)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([header[column].len()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let mut table = String::new();
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}
