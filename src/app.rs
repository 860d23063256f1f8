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
use crate::config::{AckMode, ConfigError, Settings};
use crate::delivery::{Deliverer, Intake};
use crate::http::{Gateway, Listener, Serving, serve};
use crate::metrics::Metrics;
use crate::publish::embedded::EmbeddedKafka;
use crate::publish::kafka::{KafkaOptions, KafkaPublisher};
use crate::publish::{Publisher, Sink};
use crate::shutdown::Readiness;
use crate::spool::{Spool, forwarder};
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
    /// In `spool` mode: the spool and what its forwarder publishes with.
    forwarding: Option<(Arc<Spool>, Deliverer)>,
    public: TcpListener,
    admin: TcpListener,
    gateway: Arc<Gateway>,
    publisher: Arc<dyn Publisher>,
    kafka: Option<Arc<KafkaPublisher>>,
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
        let (publisher, kafka) = match dependencies.publisher {
            Some(publisher) => (publisher, None),
            None => {
                let options = kafka_options(&settings);
                let problems = crate::publish::kafka::property_problems(&options);
                if !problems.is_empty() {
                    return Err(ConfigError::Invalid(problems).into());
                }
                let producer_config = options.producer_config();
                let kafka =
                    KafkaPublisher::new(options, Some(metrics.clone())).map_err(|error| {
                        anyhow::anyhow!(
                            "creating the Kafka producer: {} (check [kafka.librdkafka])",
                            crate::publish::kafka::describe(&error, &producer_config)
                        )
                    })?;
                let kafka = Arc::new(kafka);
                (kafka.clone() as Arc<dyn Publisher>, Some(kafka))
            }
        };

        let readiness = Arc::new(Readiness::new());
        let sink = Sink::new(publisher.clone(), metrics.clone(), routing.deadletter());
        if let Some(problem) = spool_dir_problem(&settings) {
            return Err(ConfigError::Invalid(vec![problem]).into());
        }
        let spool = match settings.delivery.ack {
            AckMode::Spool => {
                let dir = &settings.delivery.spool_dir;
                let (spool, recovery) =
                    Spool::open(dir, settings.delivery.spool_max_bytes, metrics.clone())
                        .with_context(|| {
                            format!(
                                "opening the spool in delivery.spool_dir = {}",
                                dir.display()
                            )
                        })?;
                tracing::info!(
                    dir = %dir.display(),
                    replayed = recovery.replayed,
                    torn_bytes = recovery.torn_bytes,
                    quarantined = recovery.quarantined,
                    "spool open"
                );
                spool.read_ahead(settings.delivery.forward_read_ahead_bytes());
                readiness.follow_spool(spool.full());
                Some(spool)
            }
            _ => None,
        };
        let deliverer = Deliverer::new(sink, routing, metrics.clone());
        let timeout = Duration::from_millis(settings.delivery.kafka_ack_timeout_ms);
        let intake = match spool.clone() {
            Some(spool) => Intake::Spool(spool),
            None if settings.delivery.ack == AckMode::None => Intake::None {
                deliverer: deliverer.clone(),
                timeout,
            },
            None => Intake::Kafka {
                deliverer: deliverer.clone(),
                timeout,
            },
        };
        let gateway = Arc::new(Gateway::new(
            &settings,
            intake,
            metrics.clone(),
            readiness.clone(),
        ));
        let forwarding = spool.map(|spool| (spool, deliverer));
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
            forwarding,
            public,
            admin,
            gateway,
            publisher,
            kafka,
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
        let readiness_check = tokio::spawn(wait_for_kafka(self.kafka, self.readiness.clone()));
        let (forwarder_mode, forwarder) = match self.forwarding {
            Some((spool, deliverer)) => {
                let (mode, watched) = watch::channel(forwarder::Mode::Run);
                let task = tokio::spawn(forwarder::run(spool.clone(), deliverer, watched));
                (Some(mode), Some((task, spool)))
            }
            None => (None, None),
        };

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
        if let (Some(mode), Some((task, spool))) = (forwarder_mode, forwarder) {
            // No request is in flight any more: close the spool, then forward what it
            // holds until the deadline. What is left is sent after the next start.
            let closing = spool.clone();
            let _ = tokio::task::spawn_blocking(move || closing.close()).await;
            let _ = mode.send(forwarder::Mode::Drain);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut task = task;
            if tokio::time::timeout(remaining, &mut task).await.is_err() {
                let _ = mode.send(forwarder::Mode::Stop);
                let _ = task.await;
            }
            let left = spool.unreleased();
            if left > 0 {
                tracing::warn!(
                    entries = left,
                    "spooled notifications not yet in Kafka at the drain deadline stay on the spool for the next start"
                );
            } else {
                tracing::info!("spool drained");
            }
            let checkpointing = spool.clone();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || checkpointing.checkpoint()).await
            {
                tracing::warn!(%error, "could not write the spool checkpoint; more entries will be replayed");
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.publisher.flush(remaining).await {
            Ok(()) => tracing::info!("producer flushed"),
            Err(error) => {
                tracing::error!(%error, "records still unacknowledged at the drain deadline")
            }
        }
        let _ = stop_admin_tx.send(true);
        if let Ok(drained) = admin_task.await {
            let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
        }
        drop(self.publisher);
        drop(self.gateway);
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

/// What [`check`] finds, as sentences; [`Settings::load`] adds them to its own.
pub fn check_problems(settings: &Settings) -> Vec<String> {
    let mut problems: Vec<String> = spool_dir_problem(settings).into_iter().collect();
    if let Err(ConfigError::Invalid(tls)) = load_tls(settings) {
        problems.extend(tls);
    }
    problems.extend(crate::publish::kafka::property_problems(&kafka_options(
        settings,
    )));
    problems
}

/// Why `delivery.spool_dir` cannot hold the spool, with `ack = "spool"`: empty, a file,
/// under a file, or not writable (checked by creating and removing a file in it, or in
/// the nearest folder that exists when it is still to be created).
fn spool_dir_problem(settings: &Settings) -> Option<String> {
    if settings.delivery.ack != AckMode::Spool {
        return None;
    }
    let dir = &settings.delivery.spool_dir;
    let problem = |what: String| {
        Some(format!(
            "delivery.spool_dir = {:?} {what}; point it at a writable folder (a volume of \
             its own in production)",
            dir.display().to_string()
        ))
    };
    if dir.as_os_str().is_empty() {
        return problem("is empty".to_owned());
    }
    let existing = dir
        .ancestors()
        .find(|path| path.as_os_str().is_empty() || std::fs::symlink_metadata(path).is_ok());
    let existing = match existing {
        Some(path) if path.as_os_str().is_empty() => std::path::Path::new("."),
        Some(path) => path,
        None => return problem("has no folder above it that exists".to_owned()),
    };
    if !existing.is_dir() {
        return problem(if existing == dir.as_path() {
            "is a file, not a folder".to_owned()
        } else {
            format!("is under {}, which is not a folder", existing.display())
        });
    }
    let probe = existing.join(format!(".waba-gateway-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(error) => problem(format!("cannot be written ({error})")),
    }
}

/// The producer's options from `[kafka]` and `[delivery]`.
fn kafka_options(settings: &Settings) -> KafkaOptions {
    let message_timeout = match settings.delivery.ack {
        AckMode::Kafka => Duration::from_millis(settings.delivery.kafka_ack_timeout_ms),
        // The spool keeps every entry until Kafka has it: librdkafka retries without a
        // deadline (0), in order, and the forwarder waits.
        AckMode::Spool => Duration::ZERO,
        AckMode::None => Duration::from_secs(300),
    };
    KafkaOptions::from_settings(settings, message_timeout)
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

/// What the forwarder needs, from build to run.
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
