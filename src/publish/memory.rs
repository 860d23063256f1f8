//! An in-memory [`Publisher`] for handler tests: it records what it is given and can be told
//! to fail the way Kafka does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{BoxFuture, Delivery, PublishError, Publisher};
use crate::envelope::Record;

/// How the memory publisher answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Acknowledge every record at once.
    #[default]
    Accept,
    /// Refuse to enqueue, as a dead broker does.
    Unavailable,
    /// Refuse to enqueue for want of room, as a full producer queue does.
    QueueFull,
    /// Enqueue but never acknowledge.
    Hang,
    /// Refuse records for this topic as too large; accept the rest.
    RejectTopic(String),
    /// Enqueue, and acknowledge once the behaviour changes again (a slow broker).
    Hold,
    /// Never finish creating topics, as a stalled broker does.
    StallTopicCreation,
}

/// Stores acknowledged records in order.
#[derive(Debug, Default)]
pub struct MemoryPublisher {
    records: Arc<Mutex<Vec<Record>>>,
    behaviour: Mutex<Behaviour>,
    /// Bumped whenever the behaviour changes: what [`Behaviour::Hold`] waits for.
    changes: tokio::sync::watch::Sender<u64>,
}

impl MemoryPublisher {
    /// A publisher that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes how later records are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("lock is never poisoned") = behaviour;
        self.changes.send_modify(|changes| *changes += 1);
    }

    /// Every acknowledged record so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().expect("lock is never poisoned").clone()
    }
}

impl Publisher for MemoryPublisher {
    fn prepare<'a>(&'a self, _topics: &'a [&'a str]) -> BoxFuture<'a, Result<(), PublishError>> {
        let behaviour = self.behaviour.lock().expect("lock is never poisoned");
        if *behaviour == Behaviour::StallTopicCreation {
            return Box::pin(std::future::pending());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn enqueue(&self, record: &Record) -> Result<Delivery, PublishError> {
        let behaviour = self
            .behaviour
            .lock()
            .expect("lock is never poisoned")
            .clone();
        match behaviour {
            Behaviour::Accept | Behaviour::StallTopicCreation => {}
            Behaviour::Unavailable => {
                return Err(PublishError::Retryable("the broker is down".to_owned()));
            }
            Behaviour::QueueFull => return Err(PublishError::QueueFull),
            Behaviour::Hang => return Ok(Box::pin(std::future::pending())),
            Behaviour::RejectTopic(topic) if topic == record.topic => {
                return Err(PublishError::Rejected {
                    reason: "record_too_large",
                    detail: "Broker: Message size too large".to_owned(),
                });
            }
            Behaviour::RejectTopic(_) => {}
            Behaviour::Hold => {
                let mut changes = self.changes.subscribe();
                let records = self.records.clone();
                let record = record.clone();
                return Ok(Box::pin(async move {
                    let _ = changes.changed().await;
                    records.lock().expect("lock is never poisoned").push(record);
                    Ok(())
                }));
            }
        }
        self.records
            .lock()
            .expect("lock is never poisoned")
            .push(record.clone());
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
