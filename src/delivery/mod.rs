//! Delivery: everything that becomes of a notification once it is verified (DESIGN §5).
//!
//! [`Delivery::new`] is the one constructor: `serve`, `spool drain`, `replay` and the
//! handler tests build their producer, metrics, sink and deliverer through it. Only this
//! module reads `delivery.ack`:
//!
//! - [`Intake`] is what the handler hands a verified body to, one variant per ack mode;
//! - [`Deliverer`] is the one path from a body to Kafka;
//! - [`Forwarding`] publishes a spool's entries (`spool` mode, `spool drain`);
//! - [`producer`] tunes the Kafka producer to each purpose.
//!
//! The spool itself (`crate::spool`) is storage only.

mod deliverer;
mod forwarder;
mod intake;
pub mod producer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use deliverer::Deliverer;
#[cfg(test)]
pub(crate) use deliverer::carry;
pub use forwarder::{Forwarding, Mode};
pub use intake::{Intake, NotAccepted};
pub use producer::Purpose;

use crate::config::{AckMode, ConfigError, Settings};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::publish::kafka::{self, KafkaPublisher};
use crate::spool::{Recovery, Spool};
use crate::trace::Tracer;

/// A producer, the deliverer over it and, in `spool` mode, the spool: what a command
/// delivers with.
pub struct Delivery {
    deliverer: Deliverer,
    publisher: Arc<dyn Publisher>,
    kafka: Option<Arc<KafkaPublisher>>,
    spool: Option<Arc<Spool>>,
    metrics: Arc<Metrics>,
    tracer: Tracer,
    ack: AckMode,
    ack_timeout: Duration,
    spool_max_bytes: u64,
    read_ahead_bytes: u64,
}

impl Delivery {
    /// Creates the Kafka producer tuned to `purpose` (or takes `publisher`, in tests) and,
    /// for `serve` with `ack = "spool"`, opens the spool in `delivery.spool_dir`. Nothing
    /// connects yet. A property librdkafka refuses is a configuration error.
    pub fn new(
        settings: &Settings,
        purpose: Purpose,
        metrics: Arc<Metrics>,
        publisher: Option<Arc<dyn Publisher>>,
    ) -> anyhow::Result<Self> {
        let (publisher, kafka) = match publisher {
            Some(publisher) => (publisher, None),
            None => {
                let options = producer::options(settings, purpose);
                let problems = kafka::property_problems(&options);
                if !problems.is_empty() {
                    return Err(ConfigError::Invalid(problems).into());
                }
                let config = options.producer_config();
                // Only a gateway exports librdkafka's statistics and errors.
                let counted = (purpose == Purpose::Serve).then(|| metrics.clone());
                let kafka = KafkaPublisher::new(options, counted).map_err(|error| {
                    anyhow::anyhow!(
                        "creating the Kafka producer: {} (check [kafka.librdkafka])",
                        kafka::describe(&error, &config)
                    )
                })?;
                let kafka = Arc::new(kafka);
                (kafka.clone() as Arc<dyn Publisher>, Some(kafka))
            }
        };
        let tracer = Tracer::new(&settings.telemetry, &metrics);
        let mut delivery = Self {
            deliverer: Deliverer::new(
                publisher.clone(),
                settings.routing(),
                metrics.clone(),
                tracer.clone(),
            ),
            publisher,
            kafka,
            spool: None,
            metrics,
            tracer,
            ack: settings.delivery.ack,
            ack_timeout: Duration::from_millis(settings.delivery.kafka_ack_timeout_ms),
            spool_max_bytes: settings.delivery.spool_max_bytes,
            read_ahead_bytes: settings.delivery.forward_read_ahead_bytes(),
        };
        if purpose == Purpose::Serve && delivery.ack == AckMode::Spool {
            if let Some(problem) = spool_dir_problem(settings) {
                return Err(ConfigError::Invalid(vec![problem]).into());
            }
            let dir = &settings.delivery.spool_dir;
            let recovery = delivery.open_spool(dir).with_context(|| {
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
        }
        Ok(delivery)
    }

    /// Opens the spool in `dir` (taking its lock) to forward it: what `spool drain` does.
    pub fn open_spool(&mut self, dir: &Path) -> Result<Recovery, crate::spool::SpoolError> {
        let (spool, recovery) = Spool::open(dir, self.spool_max_bytes, self.metrics.clone())?;
        spool.read_ahead(self.read_ahead_bytes);
        self.spool = Some(spool);
        Ok(recovery)
    }

    /// What the handler hands verified notifications to, per `delivery.ack`.
    pub fn intake(&self) -> Intake {
        let deliverer = self.deliverer.clone();
        let timeout = self.ack_timeout;
        match (&self.spool, self.ack) {
            (Some(spool), _) => Intake::Spooled {
                spool: spool.clone(),
                tracer: self.tracer.clone(),
            },
            (None, AckMode::Queued) => Intake::Queued { deliverer, timeout },
            (None, AckMode::Kafka | AckMode::Spool) => Intake::Acknowledged { deliverer, timeout },
        }
    }

    /// Starts forwarding the spool, when there is one, in `mode`.
    pub fn forward(&self, mode: Mode) -> Option<Forwarding> {
        let spool = self.spool.clone()?;
        Some(Forwarding::start(spool, self.deliverer.clone(), mode))
    }

    /// The tracer: off unless `[telemetry]` or the `OTEL_*` variables configure an
    /// endpoint.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// The spool, when there is one.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    /// The deliverer.
    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    /// The publisher, to flush it at shutdown.
    pub fn publisher(&self) -> &Arc<dyn Publisher> {
        &self.publisher
    }

    /// The Kafka producer, unless a publisher was given.
    pub fn kafka(&self) -> Option<&Arc<KafkaPublisher>> {
        self.kafka.as_ref()
    }
}

/// Why delivery as `settings` configure it cannot start, one sentence per problem: the
/// spool's folder and size in `spool` mode, and the producer's librdkafka properties.
/// Nothing is created or connected.
pub fn problems(settings: &Settings) -> Vec<String> {
    let mut problems: Vec<String> = spool_dir_problem(settings).into_iter().collect();
    let delivery = &settings.delivery;
    let smallest_spool = 2 * (settings.server.max_body_bytes + 1024);
    if delivery.ack == AckMode::Spool && delivery.spool_max_bytes < smallest_spool {
        problems.push(format!(
            "delivery.spool_max_bytes = {} must hold at least two of the largest bodies: \
             {smallest_spool} or more (or lower server.max_body_bytes)",
            delivery.spool_max_bytes
        ));
    }
    problems.extend(kafka::property_problems(&producer::options(
        settings,
        Purpose::Serve,
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
        Some(path) if path.as_os_str().is_empty() => Path::new("."),
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
