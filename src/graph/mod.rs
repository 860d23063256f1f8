//! The Graph API calls behind `waba-gateway subscriptions`: `/{waba-id}/subscribed_apps`
//! (POST subscribes the app, GET lists, DELETE unsubscribes).
//!
//! The HTTP client is hyper-util's, with rustls and the Mozilla roots built in
//! (webpki-roots), so it needs no system certificate store: the same hyper stack the
//! gateway serves with. It follows `HTTPS_PROXY` and `NO_PROXY` ([`proxy`]). The access token goes only into the `Authorization` header; it is
//! never printed or logged. Throttling answers (codes 4, 80007, 80008, 130429) are retried
//! with exponential backoff and jitter, honouring `X-Business-Use-Case-Usage`'s
//! `estimated_time_to_regain_access`, within a bounded total wait.

mod proxy;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxy::ProxyConnector;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the gateway says it is, to Graph and to callback URLs.
const USER_AGENT: &str = concat!("waba-gateway/", env!("CARGO_PKG_VERSION"));

/// Graph error codes that mean "slow down": application, WABA and pair rate limits.
pub const THROTTLING_CODES: &[i64] = &[4, 80007, 80008, 130429];

/// How calls are retried and bounded.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; it doubles with each attempt.
    pub base_delay: Duration,
    /// The most time spent waiting between attempts, in all.
    pub max_total_wait: Duration,
    /// Time allowed for one request and its answer.
    pub timeout: Duration,
}

/// Why a Graph call failed. Each prints as one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph answered with an error object.
    #[error("Graph API error: {message} (code {code}{subcode}, fbtrace_id {fbtrace_id})",
        subcode = .subcode.map(|s| format!(", subcode {s}")).unwrap_or_default())]
    Api {
        /// Graph's `message`.
        message: String,
        /// Graph's `code`.
        code: i64,
        /// Graph's `error_subcode`.
        subcode: Option<i64>,
        /// Graph's `is_transient`: the same call may work if made again.
        transient: bool,
        /// Graph's `fbtrace_id`, for Meta support.
        fbtrace_id: String,
    },
    /// Still throttled when the retries or the wait budget ran out.
    #[error(
        "Graph API is throttling these calls ({last}); gave up after {attempts} attempts and {waited_secs} s of waiting: try again later"
    )]
    Throttled {
        /// The last error line.
        last: String,
        /// Attempts made.
        attempts: u32,
        /// Seconds spent waiting.
        waited_secs: u64,
    },
    /// Graph asked for a longer pause than the wait budget allows.
    #[error(
        "Graph API asks to wait {minutes} minutes before the next call (X-Business-Use-Case-Usage); try again then"
    )]
    RegainAccessLater {
        /// Minutes, as Graph estimated them.
        minutes: u64,
    },
    /// The request did not reach Graph, or its answer did not come back.
    #[error("cannot reach the Graph API at {url}: {reason}")]
    Network {
        /// Where the request went (no token in it).
        url: String,
        /// What failed.
        reason: String,
    },
    /// An answer that is neither a success nor a Graph error.
    #[error("unexpected answer from the Graph API (HTTP {status}): {snippet}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        snippet: String,
    },
}

impl GraphError {
    /// Whether the same call may work if made again after a pause: throttling, Graph's
    /// `is_transient` or its codes 1 (unknown) and 2 (service), and server errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api {
                code, transient, ..
            } => *transient || THROTTLING_CODES.contains(code) || TRANSIENT_CODES.contains(code),
            Self::Unexpected { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Graph error codes that mean "try again": an unknown error and a temporary service issue.
pub const TRANSIENT_CODES: &[i64] = &[1, 2];

/// What `debug_token` says of the access token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    /// The app the token belongs to.
    #[serde(default)]
    pub app_id: String,
    /// Whether Graph still accepts it.
    #[serde(default)]
    pub is_valid: bool,
    /// Unix time it expires at; 0 for never.
    #[serde(default)]
    pub expires_at: i64,
    /// The permissions it carries.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Whether `base_url` may carry the access token: `https`, or plain `http` to a loopback
/// address only (tests, a local fake).
pub fn check_base_url(base_url: &str) -> Result<(), String> {
    let uri: http::Uri = base_url
        .parse()
        .map_err(|_| format!("graph.base_url = {base_url:?} is not a URL"))?;
    let loopback = match uri.host().map(|host| host.trim_matches(['[', ']'])) {
        Some("localhost") => true,
        Some(host) => host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(format!(
            "graph.base_url = {base_url:?} must be https:// (every call carries the access \
             token); plain http is allowed only to a loopback address, for tests"
        )),
    }
}

fn subscribed_apps(waba_id: &str) -> String {
    format!("{waba_id}/subscribed_apps")
}

/// One app subscribed to a WABA, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscribedApp {
    /// App name.
    pub name: String,
    /// App id.
    pub id: String,
    /// App link.
    pub link: String,
    /// Per-account callback URL, when one is set.
    pub override_callback_uri: Option<String>,
}

/// A Graph API client bound to one base URL, version and token.
pub struct GraphClient {
    base: String,
    token: SecretString,
    retry: RetryPolicy,
    http: Client<HttpsConnector<ProxyConnector>, Full<Bytes>>,
}

impl GraphClient {
    /// A client for `{base_url}/{api_version}`.
    pub fn new(base_url: &str, api_version: &str, token: SecretString, retry: RetryPolicy) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(ProxyConnector::from_env());
        Self {
            base: format!(
                "{}/{}",
                base_url.trim_end_matches('/'),
                api_version.trim_matches('/')
            ),
            token,
            retry,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// POST `subscribed_apps`: subscribes the app, optionally with a per-account callback.
    pub async fn subscribe(
        &self,
        waba_id: &str,
        callback: Option<(&str, &SecretString)>,
    ) -> Result<(), GraphError> {
        let body = callback.map(|(url, verify_token)| {
            serde_json::json!({
                "override_callback_uri": url,
                "verify_token": verify_token.expose_secret(),
            })
        });
        self.call(Method::POST, &subscribed_apps(waba_id), body)
            .await
            .map(drop)
    }

    /// GET `subscribed_apps`.
    pub async fn list(&self, waba_id: &str) -> Result<Vec<SubscribedApp>, GraphError> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            data: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            whatsapp_business_api_data: AppData,
            override_callback_uri: Option<String>,
        }
        #[derive(Deserialize, Default)]
        struct AppData {
            #[serde(default)]
            name: String,
            #[serde(default)]
            id: String,
            #[serde(default)]
            link: String,
        }
        let value = self
            .call(Method::GET, &subscribed_apps(waba_id), None)
            .await?;
        let listing: Listing =
            serde_json::from_value(value.clone()).map_err(|_| GraphError::Unexpected {
                status: 200,
                snippet: snippet(value.to_string().as_bytes()),
            })?;
        Ok(listing
            .data
            .into_iter()
            .map(|entry| SubscribedApp {
                name: entry.whatsapp_business_api_data.name,
                id: entry.whatsapp_business_api_data.id,
                link: entry.whatsapp_business_api_data.link,
                override_callback_uri: entry.override_callback_uri,
            })
            .collect())
    }

    /// GET `debug_token` for the client's own token: which app it belongs to, whether it is
    /// valid, when it expires.
    pub async fn debug_token(&self) -> Result<TokenInfo, GraphError> {
        #[derive(Deserialize)]
        struct Debugged {
            data: TokenInfo,
        }
        let query: String = form_query(&[("input_token", self.token.expose_secret())]);
        let value = self
            .call(Method::GET, &format!("debug_token?{query}"), None)
            .await?;
        serde_json::from_value::<Debugged>(value.clone())
            .map(|debugged| debugged.data)
            .map_err(|_| GraphError::Unexpected {
                status: 200,
                snippet: snippet(value.to_string().as_bytes()),
            })
    }

    /// A plain `GET` of `url`, without the access token (for a callback URL's handshake):
    /// the status and the body.
    pub async fn probe(&self, url: &str) -> Result<(u16, Bytes), GraphError> {
        let request = Request::get(url).header(header::USER_AGENT, USER_AGENT);
        let (status, _, body) = self.exchange(url, request, Bytes::new()).await?;
        Ok((status.as_u16(), body))
    }

    /// Sends one request and reads the whole answer within the timeout. Errors name `url`
    /// without its query, which may carry a token.
    async fn exchange(
        &self,
        url: &str,
        request: http::request::Builder,
        payload: Bytes,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), GraphError> {
        let shown = url.split('?').next().unwrap_or_default();
        let network = |reason: String| GraphError::Network {
            url: shown.to_owned(),
            reason,
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|error| network(format!("invalid request: {error}")))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|error| network(cause(&error)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|error| network(error.to_string()))?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.retry.timeout, exchange)
            .await
            .map_err(|_| {
                network(format!(
                    "no answer within {} s",
                    self.retry.timeout.as_secs()
                ))
            })?
    }

    /// DELETE `subscribed_apps`.
    pub async fn unsubscribe(&self, waba_id: &str) -> Result<(), GraphError> {
        self.call(Method::DELETE, &subscribed_apps(waba_id), None)
            .await
            .map(drop)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, GraphError> {
        let url = format!("{}/{path}", self.base);
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, regain_access_minutes) =
                match self.once(&method, &url, body.as_ref()).await? {
                    Answer::Success(value) => return Ok(value),
                    Answer::Failure {
                        error,
                        regain_access_minutes,
                    } => (error, regain_access_minutes),
                };
            if !error.is_retryable() {
                return Err(error);
            }
            let backoff = self.backoff(attempt);
            let delay =
                match next_delay(attempt, regain_access_minutes, backoff, &self.retry, waited) {
                    Retry::After(delay) => delay,
                    Retry::RegainAccessLater(minutes) => {
                        return Err(GraphError::RegainAccessLater { minutes });
                    }
                    Retry::GiveUp => {
                        return Err(GraphError::Throttled {
                            last: error.to_string(),
                            attempts: attempt,
                            waited_secs: started.elapsed().as_secs(),
                        });
                    }
                };
            tracing::warn!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                %error,
                "Graph API is throttling or failed for a moment; retrying"
            );
            tokio::time::sleep(delay).await;
            waited += delay;
        }
    }

    /// Exponential backoff with jitter: a random delay in [d/2, d], d = base * 2^(n-1).
    fn backoff(&self, attempt: u32) -> Duration {
        crate::backoff::Backoff {
            first: self.retry.base_delay,
            max: Duration::MAX,
            jitter: true,
        }
        .delay(attempt)
    }

    async fn once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GraphError> {
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {}", self.token.expose_secret())).map_err(
                |_| GraphError::Network {
                    url: url.split('?').next().unwrap_or_default().to_owned(),
                    reason: "the access token has characters a header cannot carry".into(),
                },
            )?;
        authorization.set_sensitive(true);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(url)
            .header(header::AUTHORIZATION, authorization)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT);
        let payload = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let (status, headers, body) = self.exchange(url, request, payload).await?;
        // Graph (or a proxy on the way) may echo the token in an error: nothing shown
        // from an answer ever carries it.
        let body = mask_token(body, self.token.expose_secret());
        let usage = headers
            .get("x-business-use-case-usage")
            .and_then(|value| value.to_str().ok())
            .and_then(regain_access_minutes);
        let value: Option<Value> = serde_json::from_slice(&body).ok();
        if let Some(error) = value.as_ref().and_then(|v| v.get("error")) {
            return Ok(Answer::Failure {
                error: api_error(error),
                regain_access_minutes: usage,
            });
        }
        let unexpected = || GraphError::Unexpected {
            status: status.as_u16(),
            snippet: snippet(&body),
        };
        match value {
            Some(value) if status.is_success() => Ok(Answer::Success(value)),
            // A server error may pass: retried like a transient Graph error.
            _ if status.is_server_error() => Ok(Answer::Failure {
                error: unexpected(),
                regain_access_minutes: usage,
            }),
            _ => Err(unexpected()),
        }
    }
}

/// `body` with every occurrence of `token` replaced by `***`.
fn mask_token(body: Bytes, token: &str) -> Bytes {
    let token = token.as_bytes();
    if token.len() < 4 || memchr::memmem::find(&body, token).is_none() {
        return body;
    }
    let mut masked = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = memchr::memmem::find(rest, token) {
        masked.extend_from_slice(&rest[..at]);
        masked.extend_from_slice(b"***");
        rest = &rest[at + token.len()..];
    }
    masked.extend_from_slice(rest);
    Bytes::from(masked)
}

/// What to do after a throttled attempt.
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    /// Wait this long, then try again.
    After(Duration),
    /// Graph's estimate is beyond the wait budget.
    RegainAccessLater(u64),
    /// Out of attempts or wait budget.
    GiveUp,
}

/// Graph's `estimated_time_to_regain_access` wins over the backoff when it is given; either
/// way the wait must fit what is left of the budget, and attempts are bounded.
fn next_delay(
    attempt: u32,
    regain_access_minutes: Option<u64>,
    backoff: Duration,
    policy: &RetryPolicy,
    waited: Duration,
) -> Retry {
    let budget = policy.max_total_wait.saturating_sub(waited);
    let delay = match regain_access_minutes {
        Some(minutes) if minutes > 0 => {
            let asked = Duration::from_secs(minutes * 60);
            if asked > budget {
                return Retry::RegainAccessLater(minutes);
            }
            asked
        }
        _ => backoff,
    };
    if attempt >= policy.max_attempts || delay > budget {
        Retry::GiveUp
    } else {
        Retry::After(delay)
    }
}

enum Answer {
    Success(Value),
    Failure {
        error: GraphError,
        regain_access_minutes: Option<u64>,
    },
}

fn api_error(error: &Value) -> GraphError {
    GraphError::Api {
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_owned(),
        code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
        transient: error
            .get("is_transient")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        subcode: error.get("error_subcode").and_then(Value::as_i64),
        fbtrace_id: error
            .get("fbtrace_id")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_owned(),
    }
}

/// The largest `estimated_time_to_regain_access` (minutes) in an
/// `X-Business-Use-Case-Usage` header: `{"<business-id>":[{..., "estimated_time_to_regain_access": N}]}`.
pub fn regain_access_minutes(header: &str) -> Option<u64> {
    let usage: Value = serde_json::from_str(header).ok()?;
    usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|entry| entry.get("estimated_time_to_regain_access")?.as_u64())
        .max()
}

/// What made a request fail, in the words of the deepest error that says.
fn cause(error: &hyper_util::client::legacy::Error) -> String {
    match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error.to_string(),
    }
}

/// `name=value&…`, percent-encoded.
pub fn form_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| {
            let value =
                percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Checks an override callback URL as Meta requires: https, at most 200 characters.
pub fn check_callback_url(url: &str) -> Result<(), String> {
    if url.len() > 200 {
        return Err(format!(
            "--override-callback-url is {} characters long; Meta accepts at most 200",
            url.len()
        ));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Err("--override-callback-url must be an https:// URL".to_owned());
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.contains(char::is_whitespace) {
        return Err("--override-callback-url must be an https:// URL with a host".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_must_be_https_and_at_most_200_characters() {
        assert!(check_callback_url("https://hooks.example.com/webhook/shop").is_ok());
        assert!(check_callback_url("http://hooks.example.com/webhook").is_err());
        assert!(check_callback_url("https:///webhook").is_err());
        assert!(check_callback_url("https://a b.example.com/").is_err());
        let long = format!("https://hooks.example.com/{}", "a".repeat(175));
        assert_eq!(long.len(), 201);
        assert!(
            check_callback_url(&long)
                .expect_err("too long")
                .contains("201")
        );
        assert!(check_callback_url(&long[..200]).is_ok());
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_total_wait: Duration::from_secs(600),
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn graphs_regain_access_estimate_wins_over_the_backoff_within_the_budget() {
        let backoff = Duration::from_secs(2);
        let zero = Duration::ZERO;
        assert_eq!(
            next_delay(1, Some(3), backoff, &policy(), zero),
            Retry::After(Duration::from_secs(180))
        );
        assert_eq!(
            next_delay(1, None, backoff, &policy(), zero),
            Retry::After(backoff)
        );
        assert_eq!(
            next_delay(1, Some(0), backoff, &policy(), zero),
            Retry::After(backoff)
        );
        assert_eq!(
            next_delay(1, Some(9), backoff, &policy(), Duration::from_secs(120)),
            Retry::RegainAccessLater(9),
            "9 minutes do not fit the 8 left"
        );
        assert_eq!(next_delay(5, None, backoff, &policy(), zero), Retry::GiveUp);
        assert_eq!(
            next_delay(2, None, backoff, &policy(), Duration::from_secs(599)),
            Retry::GiveUp
        );
    }

    #[test]
    fn the_backoff_doubles_with_jitter_between_half_and_all_of_it() {
        let client = GraphClient::new(
            "http://127.0.0.1:1",
            "v24.0",
            SecretString::from("t"),
            policy(),
        );
        for attempt in 1..=4 {
            let ceiling = Duration::from_secs(1 << (attempt - 1));
            for _ in 0..50 {
                let delay = client.backoff(attempt);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{attempt}: {delay:?}"
                );
            }
        }
    }

    #[test]
    fn the_usage_header_gives_the_longest_wait() {
        let header = r#"{"1140000000":[{"type":"whatsapp_business_management","call_count":100,"total_cputime":20,"total_time":20,"estimated_time_to_regain_access":3},{"type":"x","estimated_time_to_regain_access":7}]}"#;
        assert_eq!(regain_access_minutes(header), Some(7));
        assert_eq!(regain_access_minutes("{}"), None);
        assert_eq!(regain_access_minutes("not json"), None);
    }

    #[test]
    fn a_graph_error_prints_message_code_and_trace_id_on_one_line() {
        let error = api_error(&serde_json::json!({
            "message": "(#100) Invalid parameter", "type": "OAuthException",
            "code": 100, "error_subcode": 33, "fbtrace_id": "AbCdEf123"
        }));
        assert_eq!(
            error.to_string(),
            "Graph API error: (#100) Invalid parameter (code 100, subcode 33, fbtrace_id AbCdEf123)"
        );
    }
}
