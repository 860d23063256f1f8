//! The writer thread: group commit. Every append waiting is written with one `write` and
//! one `fdatasync`, then all of them are answered; released segments are deleted between
//! two commits.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::log::Slot;
use super::log::start_segment;
use super::{Entry, Spool, SpoolError, frame};

/// Appends larger than this go in the next write.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// An append written and synced: its answer, its entry and where it is.
type Accepted = (oneshot::Sender<Result<u64, SpoolError>>, Entry, Slot);

pub(super) struct Append {
    pub(super) entry: Entry,
    pub(super) done: oneshot::Sender<Result<u64, SpoolError>>,
}

impl Spool {
    fn segment_target_bytes(&self) -> u64 {
        (self.max_bytes / 16).clamp(16 * 1024, 64 * 1024 * 1024)
    }

    /// The writer thread: takes every append waiting, writes them with one `write` and one
    /// `fdatasync`, then answers them all.
    pub(super) fn write_loop(&self, appends: mpsc::Receiver<Append>, mut file: File) {
        let mut written: u64 = 0;
        let mut buffer = Vec::with_capacity(1024 * 1024);
        loop {
            self.sweep();
            if self.reclaim_if_stuck(written) {
                match self.roll() {
                    Ok(next) => {
                        file = next;
                        written = 0;
                        self.sweep();
                        self.reclaimed();
                    }
                    Err(error) => {
                        tracing::error!(%error, "could not start a new spool segment to reclaim the full one");
                    }
                }
            }
            let first = match appends.recv_timeout(Duration::from_secs(1)) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            let mut batch_bytes = batch[0].entry.body.len();
            while batch_bytes < MAX_BATCH_BYTES {
                let Ok(next) = appends.try_recv() else { break };
                batch_bytes += next.entry.body.len();
                batch.push(next);
            }
            buffer.clear();
            let mut accepted = Vec::with_capacity(batch.len());
            {
                let state = self.state.lock().expect("lock is never poisoned");
                for append in batch {
                    let needed = (frame::HEADER_BYTES + 64 + append.entry.body.len()) as u64;
                    let full = *self.full.borrow();
                    if full || state.bytes + buffer.len() as u64 + needed > self.max_bytes {
                        if !full {
                            self.full.send_replace(true);
                            tracing::warn!(
                                bytes = state.bytes,
                                max = self.max_bytes,
                                "the spool is full; answering 503 until it drains"
                            );
                        }
                        let _ = append.done.send(Err(SpoolError::Full {
                            bytes: state.bytes,
                            max: self.max_bytes,
                        }));
                        continue;
                    }
                    // Taken for good only once the batch is on disk and in the index: until
                    // then the checkpoint's watermark must not pass it.
                    let seq = state.next_seq + accepted.len() as u64;
                    let offset = written + buffer.len() as u64;
                    let len = frame::encode(seq, &append.entry, &mut buffer) as u32;
                    let slot = Slot {
                        seq,
                        segment: state.active,
                        offset,
                        len,
                        received_at_ms: append.entry.received_at_ms,
                        released: false,
                    };
                    accepted.push((append.done, append.entry, slot));
                }
            }
            if accepted.is_empty() {
                continue;
            }
            let synced = file.write_all(&buffer).and_then(|()| file.sync_data());
            self.metrics.spool_fsyncs.inc();
            if let Err(error) = synced {
                tracing::error!(%error, "writing the spool failed; answering 503");
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) {
                    self.disk_full();
                }
                // Cut off whatever part of the batch reached the file; none was acknowledged.
                if file.set_len(written).is_err() {
                    tracing::error!("could not cut the failed write off the spool segment");
                }
                let kind = error.kind();
                for (done, ..) in accepted {
                    let _ = done.send(Err(SpoolError::Io(std::io::Error::new(
                        kind,
                        error.to_string(),
                    ))));
                }
                continue;
            }
            written += buffer.len() as u64;
            let roll = {
                let mut state = self.state.lock().expect("lock is never poisoned");
                let active = state.active;
                state.index.extend(accepted.iter().map(|(.., slot)| *slot));
                state.next_seq += accepted.len() as u64;
                let count = accepted.len();
                state.unreleased += count;
                state.bytes += buffer.len() as u64;
                let segment = state
                    .segments
                    .get_mut(&active)
                    .expect("the active segment is registered");
                segment.bytes += buffer.len() as u64;
                segment.last_seq = accepted.last().map(|(.., slot)| slot.seq);
                written > self.segment_target_bytes()
            };
            self.keep_resident(&mut accepted);
            for (done, _, slot) in accepted {
                let _ = done.send(Ok(slot.seq));
            }
            self.appended.notify_one();
            self.update_gauges();
            if roll {
                match self.roll() {
                    Ok(next) => {
                        file = next;
                        written = 0;
                    }
                    Err(error) => {
                        tracing::error!(%error, "could not start a new spool segment; appending to the current one");
                    }
                }
            }
        }
    }

    /// Keeps the bodies just synced in memory for the forwarder, while they fit in the read
    /// ahead: it then publishes them without reading them back.
    fn keep_resident(&self, accepted: &mut [Accepted]) {
        let budget = self.read_ahead_bytes();
        if budget == 0 {
            return;
        }
        let mut state = self.state.lock().expect("lock is never poisoned");
        for (_, entry, slot) in accepted {
            let bytes = entry.body.len() as u64;
            if state.resident_bytes + bytes > budget {
                break;
            }
            state.resident_bytes += bytes;
            let entry = std::mem::take(entry);
            state.resident.insert(slot.seq, entry);
        }
    }

    /// Deletes the files of released segments. Runs on the writer thread between commits:
    /// unlinking a large file is journal work that would stall a concurrent `fdatasync`,
    /// and must not hold the state lock or an async worker either.
    pub(super) fn sweep(&self) {
        let doomed = std::mem::take(&mut self.state.lock().expect("lock is never poisoned").doomed);
        for path in doomed {
            // Left behind, a segment holds only released entries, below the checkpoint.
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "could not delete a released spool segment");
            }
        }
    }

    /// Whether the active segment must give way so that its space comes back: the spool
    /// refuses appends (its limit or its disk is full) and everything in it is released.
    /// Only then: rolling whenever the spool empties would churn files under normal load.
    fn reclaim_if_stuck(&self, written: u64) -> bool {
        let stuck = *self.full.borrow() || self.disk_full.load(Ordering::Acquire);
        stuck && written > 0 && self.unreleased() == 0
    }

    /// The disk refused a write: not ready, and every append refused, until the space the
    /// spool holds is reclaimed.
    fn disk_full(&self) {
        if !self.disk_full.swap(true, Ordering::AcqRel) {
            self.full.send_replace(true);
            tracing::error!(
                dir = %self.dir.display(),
                "the spool's disk is full; answering 503 and not ready until Kafka has taken what it holds and its space is reclaimed"
            );
        }
    }

    /// The released segments are gone: take notifications again if the space allows.
    fn reclaimed(&self) {
        let bytes = self.state.lock().expect("lock is never poisoned").bytes;
        self.disk_full.store(false, Ordering::Release);
        if bytes < self.low_water() && *self.full.borrow() {
            self.full.send_replace(false);
            tracing::info!(
                bytes,
                "the spool's space is reclaimed; taking notifications again"
            );
        }
        self.update_gauges();
    }

    fn roll(&self) -> Result<File, SpoolError> {
        start_segment(
            &self.dir,
            &mut self.state.lock().expect("lock is never poisoned"),
        )
    }
}
