//! Start-up and the run loop: [`App::build`] binds both listeners and creates the
//! publisher; [`App::run_until_stopped`] serves until the shutdown future resolves, then
//! stops in phases: not ready at once but still serving for `shutdown.lame_duck_ms`, then
//! listeners closed, in-flight requests finished, the spool forwarded, producer flushed,
//! all within `shutdown.drain_timeout_ms`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{ConfigError, Settings};
use crate::delivery::{Delivery, Mode, Purpose};
use crate::http::{Gateway, Listener, Serving, serve};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::publish::embedded::EmbeddedKafka;
use crate::publish::kafka::KafkaPublisher;
use crate::shutdown::Readiness;
use crate::tls::{self, Tls};

/// After the lame duck, how long connections accepted just before the listener closed may
/// take to send their request (see [`Serving::close_grace`]).
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// What the caller may supply instead of the defaults (tests use it).
#[derive(Default)]
pub struct Dependencies {
    /// Publish here instead of the Kafka of `[kafka]`.
    pub publisher: Option<Arc<dyn Publisher>>,
}

/// A gateway with its listeners bound, ready to run.
pub struct App {
    delivery: Delivery,
    public: TcpListener,
    admin: TcpListener,
    gateway: Arc<Gateway>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    tls: Option<Arc<Tls>>,
    header_read_timeout: Duration,
    max_connections: usize,
    lame_duck: Duration,
    drain_timeout: Duration,
    embedded: Option<EmbeddedKafka>,
}

impl App {
    /// Starts embedded Kafka if configured, creates the publisher and binds both listeners.
    pub async fn build(mut settings: Settings, dependencies: Dependencies) -> anyhow::Result<Self> {
        let embedded = if settings.kafka.is_embedded() && dependencies.publisher.is_none() {
            let embedded = EmbeddedKafka::start().context("starting embedded Kafka")?;
            tracing::warn!(
                bootstrap_servers = embedded.bootstrap_servers(),
                "running on embedded Kafka: an in-memory broker inside this process, for trying the gateway out; everything is lost when it stops"
            );
            settings.kafka.brokers = embedded.bootstrap_servers().to_owned();
            // The in-process broker creates topics on first use.
            settings.kafka.create_topics = false;
            Some(embedded)
        } else {
            None
        };
        for (name, app) in &settings.apps {
            if app.demo {
                tracing::warn!(
                    app = %name,
                    path = %Settings::app_path(name, app),
                    secret = crate::config::DEMO_SECRET,
                    verify_token = crate::config::DEMO_VERIFY_TOKEN,
                    "no app configured: serving a demo app with a public secret; configure [apps.<name>] before exposing the gateway"
                );
            }
        }

        let routing = settings.routing();
        let metrics = Arc::new(Metrics::new(routing.known_topics()));
        let delivery = Delivery::new(
            &settings,
            Purpose::Serve,
            metrics.clone(),
            dependencies.publisher,
        )?;
        let readiness = Arc::new(Readiness::new());
        if let Some(spool) = delivery.spool() {
            readiness.follow_spool(spool.full());
        }
        let gateway = Arc::new(Gateway::new(
            &settings,
            &delivery,
            metrics.clone(),
            readiness.clone(),
        ));
        let tls = load_tls(&settings)?.map(Arc::new);

        let public = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("binding server.listen = {}", settings.server.listen))?;
        let admin = TcpListener::bind(settings.admin.listen)
            .await
            .with_context(|| format!("binding admin.listen = {}", settings.admin.listen))?;
        // Written only once this process is sure to serve: a start that fails must not
        // point `tail` away from a gateway that is running.
        if let Some(embedded) = &embedded {
            write_address_file(
                &settings.kafka.embedded_address_file,
                embedded.bootstrap_servers(),
            );
        }
        Ok(Self {
            delivery,
            public,
            admin,
            gateway,
            readiness,
            metrics,
            tls,
            header_read_timeout: Duration::from_millis(settings.server.header_read_timeout_ms),
            max_connections: settings.server.max_connections,
            lame_duck: Duration::from_millis(settings.shutdown.lame_duck_ms),
            drain_timeout: Duration::from_millis(settings.shutdown.drain_timeout_ms),
            embedded,
        })
    }

    /// The bound address of the webhook listener.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains (DESIGN §8).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tracing::info!(
            public = %self.public.local_addr()?,
            admin = %self.admin.local_addr()?,
            https = self.tls.is_some(),
            "listening"
        );
        let tls_reloader = tokio::spawn(tls::reload(self.tls.clone(), self.metrics.clone()));
        let readiness_check = tokio::spawn(wait_for_kafka(
            self.delivery.kafka().cloned(),
            self.readiness.clone(),
        ));
        let forwarding = self.delivery.forward(Mode::Run);

        let (stop_public_tx, stop_public) = watch::channel(false);
        let (stop_admin_tx, stop_admin) = watch::channel(false);
        let public_task = tokio::spawn(serve(
            self.public,
            Serving {
                listener: Listener::Public,
                gateway: self.gateway.clone(),
                metrics: self.metrics.clone(),
                header_read_timeout: self.header_read_timeout,
                max_connections: Some(self.max_connections),
                tls: self.tls,
                // Only after a lame duck have clients been told to reconnect elsewhere.
                close_grace: self.lame_duck.min(CLOSE_GRACE),
            },
            stop_public,
        ));
        let admin_task = tokio::spawn(serve(
            self.admin,
            Serving {
                listener: Listener::Admin,
                gateway: self.gateway.clone(),
                metrics: self.metrics,
                header_read_timeout: self.header_read_timeout,
                max_connections: None,
                tls: None,
                close_grace: Duration::ZERO,
            },
            stop_admin,
        ));

        shutdown.await;
        self.readiness.start_draining();
        readiness_check.abort();
        if !self.lame_duck.is_zero() {
            // Load balancers and endpoints take a few seconds to see /readyz: until then
            // requests keep coming, and they are answered as before.
            tracing::info!(
                lame_duck_ms = self.lame_duck.as_millis() as u64,
                "lame duck: not ready, still serving until load balancers stop sending"
            );
            tokio::time::sleep(self.lame_duck).await;
        }
        let deadline = Instant::now() + self.drain_timeout;
        tls_reloader.abort();
        tracing::info!(
            drain_timeout_ms = self.drain_timeout.as_millis() as u64,
            "draining: not ready, no new connections, finishing requests in flight"
        );

        let _ = stop_public_tx.send(true);
        let drained = public_task
            .await
            .context("the webhook listener task failed")?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(remaining, drained).await.is_err() {
            tracing::warn!("requests still in flight at the drain deadline were cut off");
        }
        if let Some(forwarding) = forwarding {
            // No request is in flight any more: close the spool, then forward what it
            // holds until the deadline. What is left is sent after the next start.
            let left = forwarding
                .drain(tokio::time::Instant::from_std(deadline), drop)
                .await;
            if left > 0 {
                tracing::warn!(
                    entries = left,
                    "spooled notifications not yet in Kafka at the drain deadline stay on the spool for the next start"
                );
            } else {
                tracing::info!("spool drained");
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.delivery.publisher().flush(remaining).await {
            Ok(()) => tracing::info!("producer flushed"),
            Err(error) => {
                tracing::error!(%error, "records still unacknowledged at the drain deadline")
            }
        }
        // The spans of the last records, to the collector (bounded: never past the
        // deadline by more than the flush time).
        self.delivery
            .tracer()
            .shutdown(
                crate::trace::FLUSH.min(
                    deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1),
                ),
            )
            .await;
        let _ = stop_admin_tx.send(true);
        if let Ok(drained) = admin_task.await {
            let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
        }
        drop(self.gateway);
        drop(self.delivery);
        drop(self.embedded);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs the checks of start-up that need more than the settings themselves, without
/// binding or connecting: the TLS files, and librdkafka's reading of `[kafka.librdkafka]`.
/// What `check-config` adds to validation; `serve` fails on the same problems (exit 78).
pub fn check(settings: &Settings) -> Result<(), ConfigError> {
    let problems = check_problems(settings);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Loads the settings as every command does: [`Settings::load`] with [`check_problems`]
/// in the same run.
pub fn load_settings(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    Settings::load_checked(file, env, check_problems)
}

/// What [`check`] finds, as sentences: delivery's problems (spool, producer) and the TLS
/// files'.
pub fn check_problems(settings: &Settings) -> Vec<String> {
    let mut problems = crate::delivery::problems(settings);
    if let Err(ConfigError::Invalid(tls)) = load_tls(settings) {
        problems.extend(tls);
    }
    problems
}

/// Loads `[server.tls]`, if configured; a file that cannot be used is a configuration
/// error naming it.
fn load_tls(settings: &Settings) -> Result<Option<Tls>, ConfigError> {
    settings
        .server
        .tls
        .as_ref()
        .map(Tls::new)
        .transpose()
        .map_err(|error| ConfigError::Invalid(vec![format!("server.tls: {error}")]))
}

/// Polls Kafka until it answers, then marks the gateway ready.
async fn wait_for_kafka(kafka: Option<Arc<KafkaPublisher>>, readiness: Arc<Readiness>) {
    let Some(kafka) = kafka else {
        readiness.kafka_reached();
        return;
    };
    let backoff = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_secs(5),
        jitter: false,
    };
    let mut failures = 0;
    loop {
        match kafka.check_connection(Duration::from_secs(5)).await {
            Ok(brokers) => {
                tracing::info!(brokers, "Kafka answered; ready");
                readiness.kafka_reached();
                return;
            }
            Err(error) => {
                // The clients' log says, rate-limited, that the brokers are unreachable.
                tracing::debug!(%error, "Kafka does not answer yet; not ready");
                failures += 1;
                tokio::time::sleep(backoff.delay(failures)).await;
            }
        }
    }
}

fn write_address_file(path: &std::path::Path, address: &str) {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, address));
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "wrote the embedded broker's address for `waba-gateway tail`")
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "could not write the embedded broker's address; pass --brokers to tail")
        }
    }
}
