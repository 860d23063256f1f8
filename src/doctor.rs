//! `waba-gateway subscriptions doctor`: why notifications do not arrive, checked the way
//! Meta decides where to send them. Each check is one line, ✓ or ✗, and every ✗ says what
//! to do:
//!
//! 1. the access token works (`debug_token`);
//! 2. this app (`graph.app_id`, or the token's own app) is in the account's
//!    `subscribed_apps`: another app being subscribed is not enough;
//! 3. which callback URL Meta uses for the account: the override, or the app's own;
//! 4. with `--callback-url`, that URL answers the verification handshake with the app's
//!    verify token, echoing the challenge exactly.

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::graph::{GraphClient, GraphError, SubscribedApp};

/// The OAuth error code of a token Graph no longer accepts (expired, revoked).
const INVALID_TOKEN_CODE: i64 = 190;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which check.
    pub check: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(check: &'static str, detail: String) -> Self {
        Self {
            check,
            ok: true,
            detail,
            fix: None,
        }
    }

    fn fail(check: &'static str, detail: String, fix: String) -> Self {
        Self {
            check,
            ok: false,
            detail,
            fix: Some(fix),
        }
    }

    /// The line a person reads: `✓ check: detail`, and for a failure the fix below it.
    pub fn line(&self) -> String {
        match &self.fix {
            None => format!("✓ {}: {}", self.check, self.detail),
            Some(fix) => format!("✗ {}: {}\n    fix: {fix}", self.check, self.detail),
        }
    }
}

/// What the doctor is asked about.
pub struct Patient<'a> {
    /// The WhatsApp Business Account.
    pub waba_id: &'a str,
    /// `graph.app_id`, when set.
    pub app_id: Option<&'a str>,
    /// The callback URL to try the handshake on.
    pub callback_url: Option<&'a str>,
    /// The app's name in the settings, and its verify token if it has one.
    pub app: (&'a str, Option<&'a SecretString>),
}

/// Runs every check, in order; a check that depends on a failed one says so.
pub async fn examine(client: &GraphClient, patient: &Patient<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let token_app = match client.debug_token().await {
        Ok(info) if info.is_valid => {
            let expiry = match info.expires_at {
                0 => "does not expire".to_owned(),
                at => format!("expires at Unix time {at}"),
            };
            checks.push(Check::pass(
                "access token",
                format!("valid, for app {}; {expiry}", info.app_id),
            ));
            Some(info.app_id)
        }
        Ok(_) => {
            checks.push(token_failure(
                "Graph says the token is not valid".to_owned(),
            ));
            None
        }
        Err(GraphError::Api { code, message, .. }) if code == INVALID_TOKEN_CODE => {
            checks.push(token_failure(message));
            None
        }
        Err(error) => {
            checks.push(Check::fail(
                "access token",
                format!("could not be checked: {error}"),
                "check graph.base_url and the network, then run the doctor again".to_owned(),
            ));
            None
        }
    };
    if !checks[0].ok {
        return checks;
    }

    let app_id = patient
        .app_id
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .or(token_app);
    let subscribed = client.list(patient.waba_id).await;
    let this_app = match (&app_id, &subscribed) {
        (None, _) => {
            checks.push(Check::fail(
                "app subscribed",
                "cannot tell which app this gateway serves".to_owned(),
                "set graph.app_id to the app's id (App Dashboard > App settings > Basic)"
                    .to_owned(),
            ));
            None
        }
        (_, Err(error)) => {
            checks.push(Check::fail(
                "app subscribed",
                format!("the account's subscriptions could not be read: {error}"),
                "give the token's system user access to the account (Business Settings > \
                 WhatsApp accounts), with whatsapp_business_management"
                    .to_owned(),
            ));
            None
        }
        (Some(id), Ok(apps)) => match apps.iter().find(|app| app.id == *id) {
            Some(app) => {
                checks.push(Check::pass(
                    "app subscribed",
                    format!(
                        "app {id} ({}) is subscribed to WABA {}",
                        app.name, patient.waba_id
                    ),
                ));
                Some(app.clone())
            }
            None => {
                checks.push(Check::fail(
                    "app subscribed",
                    format!(
                        "app {id} is not subscribed to WABA {}; subscribed: {}",
                        patient.waba_id,
                        others(apps)
                    ),
                    format!(
                        "waba-gateway subscriptions add --waba-id {} (with a token of app {id})",
                        patient.waba_id
                    ),
                ));
                None
            }
        },
    };

    checks.push(callback_check(this_app.as_ref(), patient.callback_url));
    if let Some(url) = patient.callback_url {
        checks.push(handshake(client, url, patient.app).await);
    }
    checks
}

fn token_failure(why: String) -> Check {
    Check::fail(
        "access token",
        format!("does not work: {why}"),
        "create a new system-user token (Business Settings > Users > System users) with \
         whatsapp_business_management, and set graph.access_token_file or pass --token"
            .to_owned(),
    )
}

fn others(apps: &[SubscribedApp]) -> String {
    if apps.is_empty() {
        return "none".to_owned();
    }
    apps.iter()
        .map(|app| format!("{} ({})", app.id, app.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where Meta sends the account's notifications, and whether that is `wanted`.
fn callback_check(app: Option<&SubscribedApp>, wanted: Option<&str>) -> Check {
    const CHECK: &str = "callback URL";
    let Some(app) = app else {
        return Check::fail(
            CHECK,
            "none: Meta sends nothing for this account to an app that is not subscribed".to_owned(),
            "subscribe the app first (see above)".to_owned(),
        );
    };
    match (&app.override_callback_uri, wanted) {
        (Some(used), Some(wanted)) if used != wanted => Check::fail(
            CHECK,
            format!(
                "Meta sends this account's notifications to the override {used}, not to {wanted}"
            ),
            format!(
                "waba-gateway subscriptions add --waba-id <id> --override-callback-url {wanted} \
                 --verify-token <the app's verify token>, or remove the override"
            ),
        ),
        (Some(used), _) => Check::pass(CHECK, format!("the account's override: {used}")),
        (None, _) => Check::pass(
            CHECK,
            "the app's own callback URL (App Dashboard > WhatsApp > Configuration): the account \
             has no override"
                .to_owned(),
        ),
    }
}

/// Meta's verification request against `url`, with the app's verify token.
async fn handshake(
    client: &GraphClient,
    url: &str,
    (app, token): (&str, Option<&SecretString>),
) -> Check {
    const CHECK: &str = "verification handshake";
    let Some(token) = token else {
        return Check::fail(
            CHECK,
            format!("apps.{app} has no verify token to send"),
            format!("set apps.{app}.verify_token (or verify_token_file)"),
        );
    };
    let challenge = format!("doctor-{}", fastrand::u64(..));
    let query = crate::graph::form_query(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", token.expose_secret()),
        ("hub.challenge", challenge.as_str()),
    ]);
    let separator = if url.contains('?') { '&' } else { '?' };
    match client.probe(&format!("{url}{separator}{query}")).await {
        Ok((200, body)) if body == challenge.as_bytes() => Check::pass(
            CHECK,
            format!("{url} echoed the challenge with apps.{app}'s verify token"),
        ),
        Ok((200, _)) => Check::fail(
            CHECK,
            format!("{url} answered 200 but not with the challenge"),
            "the URL must answer hub.challenge exactly: point it at the gateway's app path"
                .to_owned(),
        ),
        Ok((403, _)) => Check::fail(
            CHECK,
            format!("{url} refused apps.{app}'s verify token (403)"),
            format!(
                "set apps.{app}.verify_token to the token entered in the app's Webhooks \
                 settings, or re-enter it there"
            ),
        ),
        Ok((status, _)) => Check::fail(
            CHECK,
            format!("{url} answered {status}"),
            "check that the URL is the gateway's app path (for example /webhook) and that \
             the gateway serves it"
                .to_owned(),
        ),
        Err(error) => Check::fail(
            CHECK,
            format!("{error}"),
            "make the URL reachable from the internet, as Meta calls it".to_owned(),
        ),
    }
}
