//! `waba-gateway subscriptions`: add, list, remove and doctor, over the Graph API's
//! `/{waba-id}/subscribed_apps`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use secrecy::SecretString;

use super::{Failed, UsageError};
use crate::config::ConfigError;

/// Options every `subscriptions` action takes.
#[derive(Debug, clap::Args)]
pub(super) struct GraphArgs {
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
pub(super) enum SubscriptionAction {
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
    /// Check why notifications may not arrive: the token, this app's subscription, the
    /// callback URL Meta uses, and (with --callback-url) the verification handshake.
    #[command(after_help = "Examples:
  waba-gateway subscriptions doctor --waba-id 102290129340398
  waba-gateway subscriptions doctor --waba-id 102290129340398 \\
      --callback-url https://hooks.example.com/webhook
  waba-gateway subscriptions doctor --waba-id 102290129340398 --json | jq '.[] | select(.ok | not)'")]
    Doctor {
        #[command(flatten)]
        graph: GraphArgs,
        /// Try Meta's verification handshake against this URL, with the app's verify token.
        #[arg(long)]
        callback_url: Option<String>,
        /// The app (its [apps.NAME] table) whose verify token the handshake sends.
        #[arg(long, default_value = "default")]
        app: String,
        /// Print JSON instead of lines.
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

pub(super) fn run(action: SubscriptionAction) -> anyhow::Result<()> {
    let graph_args = match &action {
        SubscriptionAction::Add { graph, .. }
        | SubscriptionAction::List { graph, .. }
        | SubscriptionAction::Doctor { graph, .. }
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
    let settings = super::readers::kafka_settings(graph_args.config.as_deref())?;
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
    // graph.base_url was checked when the settings were loaded (config::validate).
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
        SubscriptionAction::Doctor {
            graph: args,
            callback_url,
            app,
            json,
        } => {
            let patient = crate::doctor::Patient {
                waba_id: &args.waba_id,
                app_id: Some(graph.app_id.as_str()),
                callback_url: callback_url.as_deref(),
                app: (
                    &app,
                    settings
                        .apps
                        .get(&app)
                        .and_then(|settings| settings.verify_token.as_ref()),
                ),
            };
            let checks = runtime.block_on(crate::doctor::examine(&client, &patient));
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&checks)?)
            } else {
                checks
                    .iter()
                    .try_for_each(|check| writeln!(out, "{}", check.line()))
            }
            .context("writing to standard output")?;
            if checks.iter().any(|check| !check.ok) {
                return Err(Failed.into());
            }
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
