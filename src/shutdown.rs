//! Readiness and the shutdown signal (DESIGN §8).
//!
//! Ready means: Kafka answered once since start-up, and shutdown has not begun. From the
//! first moment of shutdown `/readyz` answers 503, so load balancers stop sending.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The readiness latch shared by the listeners and the start-up check.
#[derive(Debug, Default)]
pub struct Readiness {
    kafka_reached: AtomicBool,
    draining: AtomicBool,
    /// The spool's "full" signal, when there is a spool.
    spool_full: OnceLock<watch::Receiver<bool>>,
}

impl Readiness {
    /// Not ready until [`Readiness::kafka_reached`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kafka answered: ready, unless draining.
    pub fn kafka_reached(&self) {
        self.kafka_reached.store(true, Ordering::Release);
    }

    /// Shutdown began: never ready again.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Not ready while the spool says it is full (see `Spool::full`).
    pub fn follow_spool(&self, full: watch::Receiver<bool>) {
        if self.spool_full.set(full).is_err() {
            tracing::warn!("readiness already follows a spool; the second one is ignored");
        }
    }

    /// True while shutdown is under way.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// What `/readyz` reports: `Ok` or the reason it is not ready.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            Err("shutting down")
        } else if !self.kafka_reached.load(Ordering::Acquire) {
            Err("Kafka has not answered yet")
        } else if self.spool_full.get().is_some_and(|full| *full.borrow()) {
            Err("the spool is full")
        } else {
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("the SIGTERM handler installs once at start-up");
    tokio::select! {
        _ = interrupt => tracing::info!(signal = "SIGINT", "shutting down"),
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_kafka_answered_and_never_again_once_draining() {
        let readiness = Readiness::new();
        assert_eq!(readiness.check(), Err("Kafka has not answered yet"));
        readiness.kafka_reached();
        assert_eq!(readiness.check(), Ok(()));
        let spool_full = watch::Sender::new(false);
        readiness.follow_spool(spool_full.subscribe());
        spool_full.send_replace(true);
        assert_eq!(readiness.check(), Err("the spool is full"));
        spool_full.send_replace(false);
        assert_eq!(readiness.check(), Ok(()));
        readiness.start_draining();
        assert_eq!(readiness.check(), Err("shutting down"));
        readiness.kafka_reached();
        assert_eq!(readiness.check(), Err("shutting down"));
    }
}
