//! The deliverer: the one path from a body to Kafka (split, enqueue, wait, count, log a
//! dead letter), shared by the `kafka` and `none` intakes, the forwarder, `spool drain` and
//! `replay`.

use std::sync::Arc;
use std::time::SystemTime;

use crate::envelope::{self, Record};
use crate::metrics::Metrics;
use crate::publish::{Publication, PublishError, Publisher, Sink};
use crate::routing::Routing;

/// Splits bodies and publishes their records. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    sink: Sink,
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    /// A deliverer producing to `publisher` as `routing` says, counting into `metrics`.
    pub(crate) fn new(
        publisher: Arc<dyn Publisher>,
        routing: Routing,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sink = Sink::new(publisher, metrics.clone(), routing.deadletter());
        Self {
            sink,
            routing: Arc::new(routing),
            metrics,
        }
    }

    /// The routing it splits by.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Whether Kafka is unreachable now (see [`Publisher::unreachable`]).
    pub fn kafka_unreachable(&self) -> bool {
        self.sink.unreachable().is_some()
    }

    /// Splits `body` and enqueues its records in order, without waiting for Kafka.
    pub async fn enqueue(
        &self,
        app: &str,
        body: &[u8],
        received_at: SystemTime,
    ) -> Result<Pending, PublishError> {
        let split = envelope::to_records(&self.routing, app, body, received_at);
        self.enqueue_records(app, split.records, split.deadletter)
            .await
    }

    /// Enqueues records made elsewhere (`replay` of a refused record), counted as one
    /// notification once Kafka has them.
    pub async fn enqueue_records(
        &self,
        app: &str,
        records: Vec<Record>,
        deadletter: Option<&'static str>,
    ) -> Result<Pending, PublishError> {
        let fields: Vec<&'static str> = records
            .iter()
            .filter(|record| record.counts_change)
            .map(|record| record.field)
            .collect();
        let publication = self.sink.enqueue(app, records).await?;
        Ok(Pending {
            publication,
            app: app.to_owned(),
            fields,
            deadletter,
            metrics: self.metrics.clone(),
        })
    }
}

/// One notification's records, enqueued and awaiting Kafka.
pub struct Pending {
    publication: Publication,
    app: String,
    fields: Vec<&'static str>,
    deadletter: Option<&'static str>,
    metrics: Arc<Metrics>,
}

impl Pending {
    /// Waits until Kafka has every record, then counts the notification: once accepted, so
    /// that Meta's retries of a refused request count once.
    pub async fn finish(self) -> Result<(), PublishError> {
        self.publication.finish().await?;
        if let Some(reason) = self.deadletter {
            tracing::warn!(app = %self.app, reason, "authentic body is not a notification; keeping it on the dead-letter topic");
        }
        self.metrics
            .count_accepted(&self.app, &self.fields, self.deadletter);
        Ok(())
    }
}
