//! The forwarder: publishes spooled entries to Kafka, exactly as the `kafka` ack mode
//! would (the same records and `event_id`s: the envelope is built from the spooled
//! `received_at`), and releases each entry once Kafka has acknowledged all its records.
//!
//! Entries are enqueued in spool order, so one conversation keeps its order on its
//! partition; librdkafka retries a record until Kafka takes it. An entry whose records
//! fail anyway is retried with backoff; nothing is released before it is in Kafka.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Deliverer;
use crate::backoff::Backoff;
use crate::publish::PublishError;
use crate::spool::Spool;
use crate::telemetry::Throttle;

/// Entries being published at once, at most.
const MAX_IN_FLIGHT: usize = 1024;

/// The longest wait between two attempts at an entry Kafka did not take.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// A forwarder running on its own task, from start to drain.
pub struct Forwarding {
    spool: Arc<Spool>,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Forwarding {
    /// Starts forwarding `spool` through `deliverer`: for ever (`Mode::Run`), or until
    /// the spool is empty (`Mode::Drain`).
    pub fn start(spool: Arc<Spool>, deliverer: Deliverer, mode: Mode) -> Self {
        let (sender, watched) = watch::channel(mode);
        let task = tokio::spawn(run(spool.clone(), deliverer, watched));
        Self {
            spool,
            mode: sender,
            task,
        }
    }

    /// Closes the spool to appends, forwards what it holds until it is empty or
    /// `deadline` passes, writes the checkpoint, and returns the entries left (0: all in
    /// Kafka). `progress` is called every second with the entries left.
    pub async fn drain(self, deadline: Instant, mut progress: impl FnMut(usize)) -> usize {
        let Self {
            spool,
            mode,
            mut task,
        } = self;
        let closing = spool.clone();
        let _ = tokio::task::spawn_blocking(move || closing.close()).await;
        let _ = mode.send(Mode::Drain);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let finished = loop {
            tokio::select! {
                _ = &mut task => break true,
                () = tokio::time::sleep_until(deadline) => break false,
                _ = tick.tick() => progress(spool.unreleased()),
            }
        };
        if !finished {
            let _ = mode.send(Mode::Stop);
            let _ = task.await;
        }
        let checkpointing = spool.clone();
        if let Ok(Err(error)) =
            tokio::task::spawn_blocking(move || checkpointing.checkpoint()).await
        {
            tracing::warn!(%error, "could not write the spool checkpoint; more entries will be replayed");
        }
        spool.unreleased()
    }
}

/// What the forwarder is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything, forever.
    Run,
    /// Forward until the spool is empty, then return (shutdown).
    Drain,
    /// Return now; what is left stays on the spool for the next start.
    Stop,
}

/// Runs until `mode` says `Stop`, or says `Drain` and the spool is empty.
async fn run(spool: Arc<Spool>, deliverer: Deliverer, mut mode: watch::Receiver<Mode>) {
    let mut cursor = 0;
    let mut retries: VecDeque<(u64, Instant)> = VecDeque::new();
    // Polled by this task itself: an acknowledgement wakes the forwarder, with no task of
    // its own per entry to spawn and to join.
    let mut in_flight: FuturesUnordered<Publication> = FuturesUnordered::new();
    let mut in_flight_bytes: u64 = 0;
    let mut failures: u32 = 0;
    let mut blocked_until: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // While Kafka is down every retry fails: one line per interval says so.
    let retrying = Throttle::new(Duration::from_secs(30));
    loop {
        let now = *mode.borrow();
        if now == Mode::Stop
            || (now == Mode::Drain && spool.unreleased() == 0 && in_flight.is_empty())
        {
            break;
        }
        let ready = blocked_until.is_none_or(|until| Instant::now() >= until);
        // Bounded in entries and in bytes (`delivery.memory_budget_bytes`), but never below
        // one entry, however large.
        let byte_limit = spool.read_ahead_bytes();
        let room = in_flight.len() < MAX_IN_FLIGHT
            && (in_flight.is_empty() || byte_limit == 0 || in_flight_bytes < byte_limit);
        if ready && room {
            let due_retry = retries
                .front()
                .is_some_and(|(_, at)| Instant::now() >= *at)
                .then(|| retries.pop_front().map(|(seq, _)| seq))
                .flatten();
            let next = due_retry.or_else(|| spool.next_at_or_after(cursor));
            if let Some(seq) = next {
                if due_retry.is_none() {
                    cursor = seq + 1;
                }
                match dispatch(&spool, &deliverer, seq).await {
                    Ok(Some((bytes, publication))) => {
                        in_flight_bytes += bytes;
                        in_flight.push(publication);
                        blocked_until = None;
                        // Dispatching never waits when Kafka keeps up: give the worker
                        // thread back once the task's budget is spent, so that requests
                        // are not queued behind a backlog (a yield per entry would poll
                        // the I/O driver per entry).
                        tokio::task::consume_budget().await;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let at = retry_at(
                            &mut failures,
                            &retrying,
                            &deliverer,
                            seq,
                            &error,
                            "cannot publish a spooled entry yet; it stays on the spool",
                        );
                        retries.push_front((seq, at));
                        blocked_until = Some(at);
                    }
                }
                continue;
            }
        }
        let next_retry = retries.front().map(|(_, at)| *at).into_iter();
        let wake_at = next_retry.chain(blocked_until).min();
        tokio::select! {
            Some((seq, bytes, result)) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_bytes -= bytes;
                match result {
                    Ok(()) => {
                        failures = 0;
                        spool.release(seq);
                    }
                    Err(error) => {
                        let at = retry_at(&mut failures, &retrying, &deliverer, seq, &error, "Kafka did not take a spooled entry; retrying");
                        retries.push_back((seq, at));
                    }
                }
            }
            () = spool.appended() => {}
            _ = tick.tick() => {
                spool.update_gauges();
                // Every second: a checkpoint is an fsync and a rename (none when nothing was
                // released), and what it saves is replays after a crash.
                let checkpointing = spool.clone();
                let _ = tokio::task::spawn_blocking(move || checkpointing.checkpoint()).await;
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = sleep_until(wake_at), if wake_at.is_some() => {}
        }
    }
    spool.update_gauges();
}

/// After entry `seq` failed with `error`: counts the failure in a row, says `what`
/// happened (once per interval, and not while the publisher says Kafka is unreachable),
/// and returns when to try again.
fn retry_at(
    failures: &mut u32,
    retrying: &Throttle,
    deliverer: &Deliverer,
    seq: u64,
    error: &PublishError,
    what: &str,
) -> Instant {
    *failures += 1;
    let delay = RETRY.delay(*failures);
    if !deliverer.kafka_unreachable()
        && let Some(held_back) = retrying.admit()
    {
        tracing::warn!(seq, %error, held_back, retry_in_ms = delay.as_millis() as u64, "{what}");
    }
    Instant::now() + delay
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Resolves with the entry's sequence number, its body's bytes, and whether Kafka took it.
type Publication = std::pin::Pin<
    Box<dyn std::future::Future<Output = (u64, u64, Result<(), PublishError>)> + Send>,
>;

/// Reads entry `seq` (from memory when the spool still has it), splits it and enqueues its
/// records: its body's bytes and its publication. `Ok(None)` when there is nothing to
/// publish (released already, or quarantined).
async fn dispatch(
    spool: &Spool,
    deliverer: &Deliverer,
    seq: u64,
) -> Result<Option<(u64, Publication)>, PublishError> {
    let entry = match spool.read(seq) {
        Ok(Some(entry)) => entry,
        Ok(None) => return Ok(None),
        Err(error) => return Err(PublishError::Retryable(error.to_string())),
    };
    let received_at = crate::epoch::at(entry.received_at_ms);
    let pending = deliverer
        .enqueue(&entry.app, &entry.body, received_at, entry.trace.as_ref())
        .await?;
    // The records hold what they need: the body goes now, not once Kafka acknowledged.
    let bytes = entry.body.len() as u64;
    drop(entry);
    Ok(Some((
        bytes,
        Box::pin(async move { (seq, bytes, pending.finish().await) }),
    )))
}

/// After a failure: 200 ms, doubling up to [`MAX_RETRY_DELAY`].
const RETRY: Backoff = Backoff {
    first: Duration::from_millis(200),
    max: MAX_RETRY_DELAY,
    jitter: false,
};
