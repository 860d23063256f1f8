//! Readiness and the shutdown signal (DESIGN §8).
//!
//! Ready means: Kafka answered once since start-up, and shutdown has not begun. From the
//! first moment of shutdown `/readyz` answers 503, so load balancers stop sending.

use std::sync::atomic::{AtomicBool, Ordering};

/// The readiness latch shared by the listeners and the start-up check.
#[derive(Debug, Default)]
pub struct Readiness {
    kafka_reached: AtomicBool,
    draining: AtomicBool,
    spool_full: AtomicBool,
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

    /// The spool filled up (`true`) or drained below its low-water mark (`false`).
    pub fn set_spool_full(&self, full: bool) {
        self.spool_full.store(full, Ordering::Release);
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
        } else if self.spool_full.load(Ordering::Acquire) {
            Err("the spool is full")
        } else {
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("the SIGTERM handler installs once at start-up");
        tokio::select! {
            _ = interrupt => tracing::info!(signal = "SIGINT", "shutting down"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!(signal = "SIGINT", "shutting down");
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
        readiness.set_spool_full(true);
        assert_eq!(readiness.check(), Err("the spool is full"));
        readiness.set_spool_full(false);
        assert_eq!(readiness.check(), Ok(()));
        readiness.start_draining();
        assert_eq!(readiness.check(), Err("shutting down"));
        readiness.kafka_reached();
        assert_eq!(readiness.check(), Err("shutting down"));
    }
}
