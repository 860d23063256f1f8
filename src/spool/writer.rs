//! The writer thread: group commit. Every append waiting is written with one `write` and
//! one `fdatasync`, then all of them are answered; released segments are deleted between
//! two commits.
//!
//! Room ahead: the active segment is kept zeroed (written and synced) up to a mebibyte
//! beyond its last entry, and a batch overwrites that room. A write that grows the file
//! makes `fdatasync` write the inode and allocate blocks too, a second synchronous write
//! per commit; a write into room already on disk makes it flush the data alone. The room
//! is cut off when the segment is left and when the spool closes; after a crash, recovery
//! takes zeros after the last entry as the room they are (`frame::is_room`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::log::Slot;
use super::log::start_segment;
use super::{Entry, Spool, SpoolError, frame};

/// Appends larger than this go in the next write.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// At most this much zeroed room is kept ahead of the active segment's last entry.
const ROOM_BYTES: u64 = 1024 * 1024;

/// Zeros to write the room with, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

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

    /// The zeroed room kept ahead of the active segment's last entry: a mebibyte, or the
    /// target size of a segment when that is smaller.
    fn room_bytes(&self) -> u64 {
        ROOM_BYTES.min(self.segment_target_bytes())
    }

    /// The writer thread: takes every append waiting, writes them with one `write` and one
    /// `fdatasync`, then answers them all.
    pub(super) fn write_loop(&self, appends: mpsc::Receiver<Append>, mut file: File) {
        // A new segment is empty; should its name have been taken, what is there stays.
        let mut written: u64 = file_length(&file);
        // Where the active segment's file ends: `written` plus the zeroed room.
        let mut length: u64 = written;
        let mut buffer = Vec::with_capacity(1024 * 1024);
        loop {
            self.sweep();
            if self.reclaim_if_stuck(written) {
                match self.roll(&file, written, length) {
                    Ok(next) => {
                        file = next;
                        written = file_length(&file);
                        length = written;
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
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    cut_room(&file, written, length);
                    break;
                }
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
            let end = written + buffer.len() as u64;
            let synced = file.write_all_at(&buffer, written).and_then(|()| {
                if end > length {
                    length = self.make_room(&file, end);
                }
                file.sync_data()
            });
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
                length = written;
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
                match self.roll(&file, written, length) {
                    Ok(next) => {
                        file = next;
                        written = file_length(&file);
                        length = written;
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

    /// Zeroes the room ahead of `end`, the end of the entries just written, so that the
    /// next commits overwrite blocks already on disk; the `fdatasync` that follows makes
    /// it durable with them. Returns where the file ends now. Room is an optimisation
    /// only: when the disk refuses it, the file ends at `end` and the commit goes on.
    fn make_room(&self, file: &File, end: u64) -> u64 {
        let target = end + self.room_bytes();
        let mut at = end;
        while at < target {
            let piece = (target - at).min(ZEROS.len() as u64) as usize;
            if let Err(error) = file.write_all_at(&ZEROS[..piece], at) {
                tracing::debug!(%error, "no room ahead of the spool segment's end");
                cut_room(file, end, at);
                return end;
            }
            at += piece as u64;
        }
        target
    }

    /// Leaves the active segment (`file`, entries up to `written`, its file up to `length`)
    /// for a new one.
    fn roll(&self, file: &File, written: u64, length: u64) -> Result<File, SpoolError> {
        cut_room(file, written, length);
        start_segment(
            &self.dir,
            &mut self.state.lock().expect("lock is never poisoned"),
        )
    }
}

/// Cuts the zeroed room off a segment whose entries end at `written` and whose file ends at
/// `length`: a segment left behind holds its entries alone. Not synced: should a crash
/// keep the room, recovery takes it for what it is.
fn cut_room(file: &File, written: u64, length: u64) {
    if length > written
        && let Err(error) = file.set_len(written)
    {
        tracing::warn!(%error, "could not cut the zeroed room off a spool segment; recovery will");
    }
}

fn file_length(file: &File) -> u64 {
    file.metadata().map_or(0, |metadata| metadata.len())
}
