//! The durable spool behind `ack = "spool"`: a local log of verified raw bodies. A request
//! is answered 200 once its body is on disk; the [`forwarder`] publishes it to Kafka behind
//! that, and the entry is released once Kafka has acknowledged every record from it.
//!
//! Why a segment log of our own rather than an embedded store: the spool needs exactly
//! three things — append with one `fdatasync` shared by every concurrent request (group
//! commit), read by position, and reclaim space by deleting whole files once released —
//! and nothing else (no keys, no updates, no transactions). A store such as redb or sled
//! would add a B-tree, its own write amplification and its own sync policy between the
//! request and the disk; these few hundred lines keep the fsync semantics explicit.
//!
//! Layout of `spool_dir`: segments `<first seq>.seg` holding [`frame`]s; `checkpoint`,
//! the first sequence number not yet released (everything below it is in Kafka); and
//! `quarantine/`, where bytes that fail their checksum are moved, never silently dropped.
//!
//! Invariants:
//! - `append` answers `Ok` only after the frame is written and `fdatasync`ed;
//! - an entry is removed from disk only with its whole segment, once every entry of the
//!   segment is released;
//! - on open, every entry at or above the checkpoint is replayed; a torn frame at the end
//!   of the newest segment (a crash mid-write, never acknowledged) is truncated with a
//!   warning; corrupt bytes elsewhere are quarantined, reported and counted.

mod checkpoint;
pub mod frame;
mod lock;
mod log;
mod recovery;
pub mod status;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{Notify, oneshot, watch};

pub use frame::Entry;
pub use lock::holder;

use crate::metrics::Metrics;
use log::{State, delete_released_segments, find, start_segment};
use recovery::{quarantine, recover_segment};
use writer::Append;

/// The checkpoint's file in a spool directory.
const CHECKPOINT_FILE: &str = "checkpoint";
/// The folder of a spool directory where corrupt bytes are moved.
const QUARANTINE_DIR: &str = "quarantine";

/// Whether `dir` holds a spool as `serve` leaves one: its lock, its checkpoint, a segment
/// or its quarantine. A folder with none of them (the spool's parent, a volume mounted at
/// the wrong place) is not a spool, and commands that read one refuse it.
pub fn is_spool(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            [lock::LOCK_FILE, CHECKPOINT_FILE, QUARANTINE_DIR].contains(&name.as_ref())
                || name.ends_with(".seg")
        })
    })
}

/// Below this share of `spool_max_bytes` a full spool takes notifications again.
const LOW_WATER_PERCENT: u64 = 80;

/// Why the spool cannot take or give an entry.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `spool_max_bytes` reached: answer 503 until the forwarder drains it.
    #[error("the spool is full ({bytes} of {max} bytes); waiting for Kafka to drain it")]
    Full {
        /// Bytes on disk.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The disk refused: full, read-only, failing.
    #[error("the spool cannot be written: {0}")]
    Io(#[from] std::io::Error),
    /// The spool is shutting down.
    #[error("the spool is closed")]
    Closed,
    /// Another process holds the directory.
    #[error(
        "{} is in use by {}: a spool directory serves one process at a time; stop that \
         process, or give this one a delivery.spool_dir of its own",
        .dir.display(),
        .pid.map_or("another process".to_owned(), |pid| format!("process {pid}"))
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
}

/// What opening the spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Entries not yet released: they are forwarded again.
    pub replayed: usize,
    /// Torn bytes truncated from the newest segment.
    pub torn_bytes: u64,
    /// Corrupt byte ranges moved to `quarantine/`.
    pub quarantined: usize,
}

/// The spool. Cheap to share behind an `Arc`.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    appends: Mutex<Option<mpsc::Sender<Append>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    appended: Notify,
    metrics: Arc<Metrics>,
    /// Held for as long as the spool is open.
    _lock: lock::SpoolLock,
    /// The disk refused a write for want of space; cleared once space is reclaimed.
    disk_full: AtomicBool,
    /// True from the moment the spool refuses appends for want of room until it drains
    /// below its low-water mark; the app follows it for readiness.
    full: watch::Sender<bool>,
    /// Bytes of appended bodies kept in memory for the forwarder; as much again is what it
    /// publishes at once. 0 until [`Spool::read_ahead`] sets it: everything read back, and
    /// no bound in bytes on what the forwarder publishes at once.
    read_ahead: AtomicU64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating it if needed) and recovers the spool in `dir`, then starts its
    /// writer thread.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, Recovery), SpoolError> {
        std::fs::create_dir_all(dir)?;
        let lock = lock::acquire(dir)?;
        if let Err(error) = std::fs::create_dir_all(dir.join(QUARANTINE_DIR)) {
            tracing::error!(dir = %dir.display(), %error, "cannot create the spool's quarantine folder; corrupt segments will be kept in place");
        }
        let checkpoint = checkpoint::read(dir);
        let mut recovery = Recovery::default();
        let mut state = State {
            index: VecDeque::new(),
            segments: BTreeMap::new(),
            active: 0,
            bytes: 0,
            unreleased: 0,
            next_seq: checkpoint.watermark,
            checkpointed: checkpoint.clone(),
            doomed: Vec::new(),
            resident: HashMap::new(),
            resident_bytes: 0,
        };
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                let first = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()?;
                Some((first, path))
            })
            .collect();
        names.sort();
        let newest = names.last().map(|(first, _)| *first);
        for (first, path) in names {
            recover_segment(
                dir,
                first,
                &path,
                Some(first) == newest,
                &checkpoint,
                &mut state,
                &mut recovery,
            )?;
        }
        while state.index.front().is_some_and(|slot| slot.released) {
            state.index.pop_front();
        }
        state.unreleased = state.index.iter().filter(|slot| !slot.released).count();
        recovery.replayed = state.unreleased;
        // Segments holding nothing unreleased are gone already; start a fresh active one.
        let file = start_segment(dir, &mut state)?;
        metrics
            .spool_quarantined
            .inc_by(recovery.quarantined as u64);
        metrics.spool_max_bytes.set(max_bytes as i64);

        let (sender, receiver) = mpsc::channel();
        let spool = Arc::new(Self {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(state),
            appends: Mutex::new(Some(sender)),
            writer: Mutex::new(None),
            appended: Notify::new(),
            metrics,
            _lock: lock,
            disk_full: AtomicBool::new(false),
            full: watch::Sender::new(false),
            read_ahead: AtomicU64::new(0),
        });
        spool.update_gauges();
        let writer_spool = spool.clone();
        let writer = std::thread::Builder::new()
            .name("spool-writer".to_owned())
            .spawn(move || writer_spool.write_loop(receiver, file))?;
        *spool.writer.lock().expect("lock is never poisoned") = Some(writer);
        Ok((spool, recovery))
    }

    /// Appends `entry` durably. Resolves once it is written and `fdatasync`ed, with its
    /// sequence number.
    pub async fn append(&self, entry: Entry) -> Result<u64, SpoolError> {
        let (done, answer) = oneshot::channel();
        {
            let appends = self.appends.lock().expect("lock is never poisoned");
            let sender = appends.as_ref().ok_or(SpoolError::Closed)?;
            sender
                .send(Append { entry, done })
                .map_err(|_| SpoolError::Closed)?;
        }
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Stops taking appends and waits for the writer to finish what it holds.
    pub fn close(&self) {
        drop(self.appends.lock().expect("lock is never poisoned").take());
        if let Some(writer) = self.writer.lock().expect("lock is never poisoned").take() {
            let _ = writer.join();
        }
        if let Err(error) = self.checkpoint() {
            tracing::warn!(%error, "could not write the spool checkpoint; more entries will be replayed");
        }
    }

    /// The sequence number of the first unreleased entry at or after `from`, if any.
    pub fn next_at_or_after(&self, from: u64) -> Option<u64> {
        let state = self.state.lock().expect("lock is never poisoned");
        let start = state.index.partition_point(|slot| slot.seq < from);
        state
            .index
            .range(start..)
            .find(|slot| !slot.released)
            .map(|slot| slot.seq)
    }

    /// Waits until something is appended.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Unreleased entries.
    pub fn unreleased(&self) -> usize {
        self.state
            .lock()
            .expect("lock is never poisoned")
            .unreleased
    }

    /// Follows whether the spool is full: `true` while it refuses appends for want of
    /// room.
    pub fn full(&self) -> watch::Receiver<bool> {
        self.full.subscribe()
    }

    /// Keeps up to `bytes` of appended bodies in memory for the forwarder, and lets it
    /// publish as many bytes at once.
    pub fn read_ahead(&self, bytes: u64) {
        self.read_ahead.store(bytes, Ordering::Relaxed);
    }

    /// The bytes of entries the forwarder may publish at once (at least one entry; 0: no
    /// bound in bytes).
    pub fn read_ahead_bytes(&self) -> u64 {
        self.read_ahead.load(Ordering::Relaxed)
    }

    /// Reads entry `seq`: from memory when it is still there (once), else from disk. A
    /// frame that fails its checksum is quarantined and released, and `None` is returned.
    pub fn read(&self, seq: u64) -> Result<Option<Entry>, SpoolError> {
        let (slot, file) = {
            let mut state = self.state.lock().expect("lock is never poisoned");
            let Some(slot) = find(&state.index, seq).map(|at| state.index[at]) else {
                return Ok(None);
            };
            if let Some(entry) = state.take_resident(seq) {
                return Ok(Some(entry));
            }
            let file = state.segments[&slot.segment].file.clone();
            (slot, file)
        };
        let mut frame = vec![0; slot.len as usize];
        file.read_exact_at(&mut frame, slot.offset)?;
        match frame::decode(&frame) {
            Some((found, entry)) if found == seq => Ok(Some(entry)),
            _ => {
                let path = quarantine(&self.dir, slot.segment, slot.offset, &frame)?;
                tracing::error!(seq, path = %path.display(), "a spooled entry failed its checksum; moved to quarantine");
                self.metrics.spool_quarantined.inc();
                self.release(seq);
                Ok(None)
            }
        }
    }

    /// Marks `seq` as in Kafka; deletes segments that hold nothing unreleased any more.
    pub fn release(&self, seq: u64) {
        let mut state = self.state.lock().expect("lock is never poisoned");
        let Some(at) = find(&state.index, seq) else {
            return;
        };
        if state.index[at].released {
            return;
        }
        state.index[at].released = true;
        state.unreleased -= 1;
        state.take_resident(seq);
        while state.index.front().is_some_and(|slot| slot.released) {
            state.index.pop_front();
        }
        delete_released_segments(&mut state);
        // A full disk clears only once the space is reclaimed (see the writer).
        let disk_full = self.disk_full.load(Ordering::Acquire);
        if *self.full.borrow() && !disk_full && state.bytes < self.low_water() {
            self.full.send_replace(false);
            tracing::info!(
                bytes = state.bytes,
                "the spool drained below its low-water mark; taking notifications again"
            );
        }
        drop(state);
        self.update_gauges();
    }

    /// Below this many bytes a full spool takes notifications again.
    fn low_water(&self) -> u64 {
        self.max_bytes / 100 * LOW_WATER_PERCENT
    }

    /// Writes the release watermark, so that a restart replays less. Losing it only means
    /// more replays, never a loss.
    pub fn checkpoint(&self) -> std::io::Result<()> {
        if self
            .writer
            .lock()
            .expect("lock is never poisoned")
            .is_none()
        {
            // Closed: no writer sweeps any more, and no fdatasync can be stalled.
            self.sweep();
        }
        let checkpoint = {
            let state = self.state.lock().expect("lock is never poisoned");
            let checkpoint = state.checkpoint();
            if checkpoint == state.checkpointed {
                return Ok(());
            }
            checkpoint
        };
        checkpoint::write(&self.dir, &checkpoint)?;
        self.state
            .lock()
            .expect("lock is never poisoned")
            .checkpointed = checkpoint;
        Ok(())
    }

    /// Refreshes the spool gauges, the oldest entry's age included.
    pub fn update_gauges(&self) {
        let state = self.state.lock().expect("lock is never poisoned");
        self.metrics.spool_entries.set(state.unreleased as i64);
        self.metrics.spool_bytes.set(state.bytes as i64);
        let oldest = state
            .index
            .iter()
            .find(|slot| !slot.released)
            .map(|slot| slot.received_at_ms);
        let age = oldest.map_or(0.0, crate::epoch::age_secs);
        self.metrics.spool_oldest_age.set(age);
    }
}
