//! Routing and handlers of both listeners.
//!
//! Public listener: each app's path (GET verification, POST notification), `/healthz`,
//! `/readyz`. Admin listener: `/metrics`, `/healthz`, `/readyz`. Handlers take a
//! `Request` and return a `Response`; [`server`] accepts connections and serves them.

mod budget;
mod error;
mod notify;
mod server;
mod source;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};

pub use error::{ApiError, Cap};
pub use server::{Serving, serve};
pub use source::{Peer, SourceFilter};

use crate::config::Settings;
use crate::delivery::{Delivery, Intake};
use crate::metrics::Metrics;
use crate::shutdown::Readiness;
use crate::signature;
use crate::telemetry::{self, Throttle};
use crate::trace::{Kind, Span, SpanContext, Text, Tracer};
use budget::ReceiveBudget;

/// A request body the handlers can read: hyper's incoming body, or a full one in tests.
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: std::error::Error + Send + Sync + 'static> + Send
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: std::error::Error + Send + Sync + 'static> + Send
{
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Webhooks, `/healthz`, `/readyz`.
    Public,
    /// `/metrics`, `/healthz`, `/readyz`.
    Admin,
    /// A webhook-listener connection over `server.max_connections`: every request gets
    /// 503, and the connection is closed.
    OverCapacity,
}

/// One Meta app as the handlers see it.
pub struct AppRoute {
    /// The app's name (the `wa-app` header, the `app` label, its spans' `wa.app`).
    pub name: Arc<str>,
    /// Its path: the `http.route` of its spans.
    pub path: Arc<str>,
    /// The name of the SERVER span of a POST to it.
    pub post_span: Arc<str>,
    /// The current secret, then the previous ones, ready to check bodies with.
    pub keys: signature::Keys,
    /// Its `waba_gateway_signature_matches_total` counters: current, previous.
    pub matches: [prometheus::IntCounter; 2],
    /// The verification token.
    pub verify_token: SecretString,
}

/// Limits the handlers apply.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted body.
    pub max_body_bytes: u64,
    /// Time allowed for the body to arrive.
    pub request_timeout: Duration,
}

/// The state every handler shares.
pub struct Gateway {
    apps: HashMap<String, AppRoute>,
    limits: Limits,
    /// Where verified notifications go (the ack mode).
    intake: Intake,
    /// The requests' spans (off unless configured).
    tracer: Tracer,
    /// `https` with `[server.tls]`, else `http`: the spans' `url.scheme`.
    scheme: &'static str,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// One permit per notification being verified and accepted (its body read).
    in_flight: tokio::sync::Semaphore,
    /// Bytes of bodies held, from their first byte until accepted.
    receive_budget: ReceiveBudget,
    /// `server.allowed_source_cidrs`, when set.
    sources: Option<SourceFilter>,
    /// Rate limits of the log lines that any client can cause, one per kind.
    logs: OutsideLogs,
}

/// One throttle per log line that a client without the app secret can cause, so that no
/// client can flood the log: each is written at most once per 10 s, with how many were
/// held back.
struct OutsideLogs {
    /// Refused signatures.
    refusals: Throttle,
    /// Refused sources.
    sources: Throttle,
    /// Verification requests with the wrong mode or token.
    verifications: Throttle,
    /// 503s of a cap (connections, in flight, receive budget).
    overloads: Throttle,
    /// Authentic notifications that could not be accepted now (503).
    not_accepted: Throttle,
}

impl OutsideLogs {
    fn new() -> Self {
        let every = || Throttle::new(Duration::from_secs(10));
        Self {
            refusals: every(),
            sources: every(),
            verifications: every(),
            overloads: every(),
            not_accepted: every(),
        }
    }
}

impl Gateway {
    /// Builds the handlers' state from validated settings.
    pub fn new(
        settings: &Settings,
        delivery: &Delivery,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Self {
        let apps = settings
            .apps
            .iter()
            .map(|(name, app)| {
                let path = Settings::app_path(name, app);
                let route = AppRoute {
                    name: Arc::from(name.as_str()),
                    path: Arc::from(path.as_str()),
                    post_span: Arc::from(format!("POST {path}").as_str()),
                    keys: signature::Keys::new(
                        app.secrets()
                            .map(|secret| secret.expose_secret().as_bytes()),
                    ),
                    matches: metrics.signature_match_counters(name),
                    verify_token: app.verify_token.clone().unwrap_or_default(),
                };
                (path, route)
            })
            .collect();
        Self {
            apps,
            limits: Limits {
                max_body_bytes: settings.server.max_body_bytes,
                request_timeout: Duration::from_millis(settings.server.request_timeout_ms),
            },
            intake: delivery.intake(),
            tracer: delivery.tracer().clone(),
            scheme: if settings.server.tls.is_some() {
                "https"
            } else {
                "http"
            },
            readiness,
            in_flight: tokio::sync::Semaphore::new(settings.server.max_in_flight_requests),
            receive_budget: {
                let limit = settings.server.receive_budget_bytes;
                metrics.receive_budget_bytes.set(limit as i64);
                ReceiveBudget::new(limit, metrics.receive_budget_used.clone())
            },
            sources: SourceFilter::new(&settings.server),
            logs: OutsideLogs::new(),
            metrics,
        }
    }

    /// The source allowlist, for the accept loop.
    pub(crate) fn sources(&self) -> Option<&SourceFilter> {
        self.sources.as_ref()
    }

    /// Answers a request that came in on `listener`.
    pub async fn handle<B: RequestBody>(
        &self,
        listener: Listener,
        request: Request<B>,
    ) -> Response<Full<Bytes>> {
        match listener {
            Listener::Public => self.handle_public(request).await,
            Listener::Admin => self.handle_admin(request).await,
            Listener::OverCapacity => self.answer(
                "over_capacity",
                Instant::now(),
                Err(ApiError::Overloaded(Cap::Connections)),
            ),
        }
    }

    /// The app served at `path`; a trailing slash is the same path, as Meta may be given a
    /// callback URL with one.
    fn app(&self, path: &str) -> Option<&AppRoute> {
        self.apps.get(path).or_else(|| {
            let trimmed = path.strip_suffix('/')?;
            self.apps.get(trimmed)
        })
    }

    /// Whether requests are to carry their connection's [`Peer`]: for the allowlist, and
    /// for the SERVER span's `client.address`.
    pub(crate) fn reads_peer(&self) -> bool {
        self.sources.is_some() || self.tracer.enabled()
    }

    /// Refuses an app's request from a client outside the allowlist.
    fn check_source<B>(&self, request: &Request<B>) -> Result<(), ApiError> {
        let (Some(sources), Some(Peer(peer))) = (&self.sources, request.extensions().get()) else {
            return Ok(());
        };
        let client = sources.client(*peer, request.headers());
        if sources.allows(client) {
            Ok(())
        } else {
            self.source_refused(client);
            Err(ApiError::SourceNotAllowed)
        }
    }

    /// Counts a client refused for its source, and logs it at most once per interval.
    pub(crate) fn source_refused(&self, source: IpAddr) {
        self.metrics.source_refusals.inc();
        if let Some(held_back) = self.logs.sources.admit() {
            tracing::warn!(%source, held_back, "refused a source outside server.allowed_source_cidrs");
        }
    }

    /// Counts a 503 at `cap`, logs it at most once per interval, and gives the error.
    pub(crate) fn overloaded(&self, cap: Cap) -> ApiError {
        self.note_overload(cap);
        ApiError::Overloaded(cap)
    }

    /// Counts a 503 at `cap` and logs it at most once per interval: for the connections
    /// over the cap, whose 503 is answered by [`Listener::OverCapacity`].
    pub(crate) fn note_overload(&self, cap: Cap) {
        cap.count(&self.metrics);
        if let Some(held_back) = self.logs.overloads.admit() {
            tracing::warn!(
                limit = cap.setting(),
                held_back,
                "answered 503: a limit was reached"
            );
        }
    }

    /// The verification handshake, with a refusal logged at most once per interval.
    fn verify(
        &self,
        app: &AppRoute,
        query: Option<&str>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let answer = verify::verify(app, query);
        match &answer {
            Ok(_) => tracing::info!(app = %app.name, "verification request answered"),
            Err(ApiError::VerifyRefused) => {
                if let Some(held_back) = self.logs.verifications.admit() {
                    tracing::info!(app = %app.name, held_back, "verification request refused: wrong mode or verify token");
                }
            }
            Err(_) => {}
        }
        answer
    }

    /// Answers a request on the public listener.
    async fn handle_public<B: RequestBody>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        if let Some(app) = self.app(request.uri().path()) {
            let mut span = self.server_span(app, &request);
            let trace = span.as_ref().map(|span| span.context().clone());
            let handled = self.handle_app(app, request, trace.as_ref());
            let log_span = trace.as_ref().map(SpanContext::log_span);
            let (route, result) = telemetry::within(log_span, handled).await;
            let response = self.answer(route, started, result);
            if let Some(span) = &mut span {
                let status = response.status();
                span.set("http.response.status_code", i64::from(status.as_u16()));
                if status.is_client_error() || status.is_server_error() {
                    span.set("error.type", status.as_str().to_owned());
                    span.fail(status.canonical_reason().unwrap_or_default());
                }
            }
            return response;
        }
        let (route, result) = match request.uri().path() {
            "/healthz" => ("healthz", health(&request)),
            "/readyz" => ("readyz", self.ready(&request)),
            _ => ("not_found", Err(ApiError::NotFound)),
        };
        self.answer(route, started, result)
    }

    /// Answers a request to an app's path: its route label and answer.
    async fn handle_app<B: RequestBody>(
        &self,
        app: &AppRoute,
        request: Request<B>,
        trace: Option<&SpanContext>,
    ) -> (&'static str, Result<Response<Full<Bytes>>, ApiError>) {
        match (self.check_source(&request), request.method()) {
            (Err(refused), _) => ("webhook_refused", Err(refused)),
            (Ok(()), &Method::GET) => ("webhook_verify", self.verify(app, request.uri().query())),
            (Ok(()), &Method::POST) => ("webhook_notify", self.notify(app, request, trace).await),
            (Ok(()), _) => (
                "webhook_other",
                Err(ApiError::MethodNotAllowed("GET, POST")),
            ),
        }
    }

    /// The SERVER span of a request to `app`, when tracing is on: the child of the
    /// request's `traceparent` when it comes from a hop that may set one (no allowlist, or
    /// a trusted proxy: SECURITY.md), else the root of a new trace.
    fn server_span<B>(&self, app: &AppRoute, request: &Request<B>) -> Option<Span> {
        if !self.tracer.enabled() {
            return None;
        }
        let headers = request.headers();
        let peer = request.extensions().get::<Peer>().map(|Peer(peer)| *peer);
        let trusted = match (&self.sources, peer) {
            (None, _) => true,
            (Some(sources), Some(peer)) => sources.is_trusted_proxy(peer),
            (Some(_), None) => false,
        };
        let parent = trusted
            .then(|| headers.get(crate::trace::TRACEPARENT))
            .flatten()
            .and_then(|parent| {
                SpanContext::from_headers(
                    parent.as_bytes(),
                    headers
                        .get(crate::trace::TRACESTATE)
                        .map(http::HeaderValue::as_bytes),
                )
            });
        let method = match *request.method() {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::HEAD => "HEAD",
            _ => "_OTHER",
        };
        let name = match method {
            "POST" => Text::from(&app.post_span),
            _ => Text::Owned(format!("{method} {}", app.path)),
        };
        let mut span = self.tracer.start(name, Kind::Server, parent.as_ref())?;
        if span.is_recording() {
            span.set("http.request.method", method);
            span.set("http.route", &app.path);
            let path = request.uri().path();
            span.set(
                "url.path",
                if *path == *app.path {
                    Text::from(&app.path)
                } else {
                    Text::Owned(path.to_owned())
                },
            );
            span.set("url.scheme", self.scheme);
            span.set("network.protocol.version", "1.1");
            if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
                let (address, port) = split_host(host);
                span.set("server.address", address.to_owned());
                if let Some(port) = port {
                    span.set("server.port", i64::from(port));
                }
            }
            if let Some(peer) = peer {
                let client = self
                    .sources
                    .as_ref()
                    .map_or(peer, |sources| sources.client(peer, headers));
                span.set("client.address", client.to_string());
            }
            if let Some(agent) = headers
                .get(header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
            {
                span.set("user_agent.original", agent.to_owned());
            }
            span.set("wa.app", &app.name);
        }
        Some(span)
    }

    /// Answers a request on the admin listener.
    async fn handle_admin<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (route, result) = match request.uri().path() {
            "/metrics" => ("metrics", self.metrics(&request)),
            "/healthz" => ("healthz", health(&request)),
            "/readyz" => ("readyz", self.ready(&request)),
            _ => ("not_found", Err(ApiError::NotFound)),
        };
        self.answer(route, started, result)
    }

    fn answer(
        &self,
        route: &'static str,
        started: Instant,
        result: Result<Response<Full<Bytes>>, ApiError>,
    ) -> Response<Full<Bytes>> {
        let mut response = result.unwrap_or_else(ApiError::into_response);
        if self.readiness.is_draining() {
            // The lame duck and the drain: the client opens its next connection, to a
            // replica that stays, instead of writing its next request on one this process
            // is about to close.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        self.metrics
            .count_answer(route, response.status(), started.elapsed().as_secs_f64());
        response
    }

    fn ready<B>(&self, request: &Request<B>) -> Result<Response<Full<Bytes>>, ApiError> {
        only_get(request)?;
        Ok(match self.readiness.check() {
            Ok(()) => error::text(StatusCode::OK, "ready\n"),
            Err(reason) => error::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        })
    }

    fn metrics<B>(&self, request: &Request<B>) -> Result<Response<Full<Bytes>>, ApiError> {
        only_get(request)?;
        let mut response = error::text(StatusCode::OK, self.metrics.render());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(response)
    }
}

/// The host and port of a `Host` header: `example.com:8443`, `[::1]:8080`, `example.com`.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        let (address, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (
            address,
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match host.rsplit_once(':') {
        Some((address, port)) if !address.contains(':') => (address, port.parse().ok()),
        _ => (host, None),
    }
}

fn health<B>(request: &Request<B>) -> Result<Response<Full<Bytes>>, ApiError> {
    only_get(request)?;
    Ok(error::text(StatusCode::OK, "ok\n"))
}

fn only_get<B>(request: &Request<B>) -> Result<(), ApiError> {
    match *request.method() {
        Method::GET | Method::HEAD => Ok(()),
        _ => Err(ApiError::MethodNotAllowed("GET")),
    }
}
