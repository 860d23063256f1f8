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

pub mod forwarder;
pub mod frame;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, oneshot};

pub use frame::Entry;

use crate::metrics::Metrics;
use crate::shutdown::Readiness;

/// Appends larger than this go in the next write.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
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

/// Where one unreleased entry is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    segment: u64,
    offset: u64,
    len: u32,
    received_at_ms: u64,
    released: bool,
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    bytes: u64,
    last_seq: Option<u64>,
    /// Holds corrupt bytes that could not be copied to quarantine: once released, the
    /// whole file is moved there instead of deleted.
    keep: bool,
}

struct State {
    /// Entries in sequence order, from the oldest unreleased one.
    index: VecDeque<Slot>,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    bytes: u64,
    unreleased: usize,
    full: bool,
    next_seq: u64,
    checkpointed: u64,
    /// Released segments whose files the writer is to delete.
    doomed: Vec<PathBuf>,
}

impl State {
    /// The first sequence number not yet released.
    fn watermark(&self) -> u64 {
        self.index.front().map_or(self.next_seq, |slot| slot.seq)
    }
}

struct Append {
    entry: Entry,
    done: oneshot::Sender<Result<u64, SpoolError>>,
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
    readiness: Arc<Readiness>,
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
        readiness: Arc<Readiness>,
    ) -> Result<(Arc<Self>, Recovery), SpoolError> {
        std::fs::create_dir_all(dir)?;
        if let Err(error) = std::fs::create_dir_all(dir.join("quarantine")) {
            tracing::error!(dir = %dir.display(), %error, "cannot create the spool's quarantine folder; corrupt segments will be kept in place");
        }
        let checkpoint = read_checkpoint(dir);
        let mut recovery = Recovery::default();
        let mut state = State {
            index: VecDeque::new(),
            segments: BTreeMap::new(),
            active: 0,
            bytes: 0,
            unreleased: 0,
            full: false,
            next_seq: checkpoint,
            checkpointed: checkpoint,
            doomed: Vec::new(),
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
                checkpoint,
                &mut state,
                &mut recovery,
            )?;
        }
        recovery.replayed = state.index.len();
        state.unreleased = state.index.len();
        // Segments holding nothing unreleased are gone already; start a fresh active one.
        let file = start_segment(dir, &mut state)?;
        metrics
            .spool_quarantined
            .inc_by(recovery.quarantined as u64);

        let (sender, receiver) = mpsc::channel();
        let spool = Arc::new(Self {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(state),
            appends: Mutex::new(Some(sender)),
            writer: Mutex::new(None),
            appended: Notify::new(),
            metrics,
            readiness,
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

    /// Reads entry `seq`. A frame that fails its checksum is quarantined and released, and
    /// `None` is returned.
    pub fn read(&self, seq: u64) -> Result<Option<Entry>, SpoolError> {
        let (slot, file) = {
            let state = self.state.lock().expect("lock is never poisoned");
            let Some(slot) = find(&state.index, seq).map(|at| state.index[at]) else {
                return Ok(None);
            };
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
        while state.index.front().is_some_and(|slot| slot.released) {
            state.index.pop_front();
        }
        delete_released_segments(&mut state);
        let low_water = self.max_bytes / 100 * LOW_WATER_PERCENT;
        if state.full && state.bytes < low_water {
            state.full = false;
            self.readiness.set_spool_full(false);
            tracing::info!(
                bytes = state.bytes,
                "the spool drained below its low-water mark; taking notifications again"
            );
        }
        drop(state);
        self.update_gauges();
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
        let watermark = {
            let state = self.state.lock().expect("lock is never poisoned");
            if state.watermark() == state.checkpointed {
                return Ok(());
            }
            state.watermark()
        };
        let temporary = self.dir.join("checkpoint.tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(&watermark.to_le_bytes())?;
        file.write_all(&crc32fast::hash(&watermark.to_le_bytes()).to_le_bytes())?;
        file.sync_data()?;
        std::fs::rename(&temporary, self.dir.join("checkpoint"))?;
        self.state
            .lock()
            .expect("lock is never poisoned")
            .checkpointed = watermark;
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
        let age = oldest.map_or(0.0, |at| {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            now.saturating_sub(at) as f64 / 1000.0
        });
        self.metrics.spool_oldest_age.set(age);
    }

    fn segment_target_bytes(&self) -> u64 {
        (self.max_bytes / 16).clamp(16 * 1024, 64 * 1024 * 1024)
    }

    /// The writer thread: takes every append waiting, writes them with one `write` and one
    /// `fdatasync`, then answers them all.
    fn write_loop(&self, appends: mpsc::Receiver<Append>, mut file: File) {
        let mut written: u64 = 0;
        let mut buffer = Vec::with_capacity(1024 * 1024);
        loop {
            self.sweep();
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
                let mut state = self.state.lock().expect("lock is never poisoned");
                for append in batch {
                    let needed = (frame::HEADER_BYTES + 64 + append.entry.body.len()) as u64;
                    if state.full || state.bytes + buffer.len() as u64 + needed > self.max_bytes {
                        if !state.full {
                            state.full = true;
                            self.readiness.set_spool_full(true);
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
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    let offset = written + buffer.len() as u64;
                    let len = frame::encode(seq, &append.entry, &mut buffer) as u32;
                    accepted.push((
                        append.done,
                        Slot {
                            seq,
                            segment: state.active,
                            offset,
                            len,
                            received_at_ms: append.entry.received_at_ms,
                            released: false,
                        },
                    ));
                }
            }
            if accepted.is_empty() {
                continue;
            }
            let synced = file.write_all(&buffer).and_then(|()| file.sync_data());
            self.metrics.spool_fsyncs.inc();
            if let Err(error) = synced {
                tracing::error!(%error, "writing the spool failed; answering 503");
                // Cut off whatever part of the batch reached the file; none was acknowledged.
                if file.set_len(written).is_err() {
                    tracing::error!("could not cut the failed write off the spool segment");
                }
                let kind = error.kind();
                for (done, _) in accepted {
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
                state.index.extend(accepted.iter().map(|(_, slot)| *slot));
                let count = accepted.len();
                state.unreleased += count;
                state.bytes += buffer.len() as u64;
                let segment = state
                    .segments
                    .get_mut(&active)
                    .expect("the active segment is registered");
                segment.bytes += buffer.len() as u64;
                segment.last_seq = accepted.last().map(|(_, slot)| slot.seq);
                written > self.segment_target_bytes()
            };
            for (done, slot) in accepted {
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

    /// Deletes the files of released segments. Runs on the writer thread between commits:
    /// unlinking a large file is journal work that would stall a concurrent `fdatasync`,
    /// and must not hold the state lock or an async worker either.
    fn sweep(&self) {
        let doomed = std::mem::take(&mut self.state.lock().expect("lock is never poisoned").doomed);
        for path in doomed {
            // Left behind, a segment holds only released entries, below the checkpoint.
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "could not delete a released spool segment");
            }
        }
    }

    fn roll(&self) -> Result<File, SpoolError> {
        start_segment(
            &self.dir,
            &mut self.state.lock().expect("lock is never poisoned"),
        )
    }
}

fn find(index: &VecDeque<Slot>, seq: u64) -> Option<usize> {
    let at = index.partition_point(|slot| slot.seq < seq);
    (index.get(at)?.seq == seq).then_some(at)
}

/// Creates the segment that starts at the next sequence number and makes it the active
/// one; returns it for the writer. Older segments holding nothing unreleased go.
fn start_segment(dir: &Path, state: &mut State) -> Result<File, SpoolError> {
    let first = state.next_seq;
    let path = dir.join(format!("{first:020}.seg"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)?;
    File::open(dir)?.sync_all()?;
    state.segments.insert(
        first,
        Segment {
            path,
            file: Arc::new(file.try_clone()?),
            bytes: 0,
            last_seq: None,
            keep: false,
        },
    );
    state.active = first;
    delete_released_segments(state);
    Ok(file)
}

/// Takes every segment but the active one whose entries are all released off the books;
/// the writer thread deletes their files between two commits (see [`Spool::sweep`]).
fn delete_released_segments(state: &mut State) {
    let watermark = state.watermark();
    let done: Vec<u64> = state
        .segments
        .iter()
        .filter(|(first, segment)| {
            **first != state.active && segment.last_seq.is_none_or(|last| last < watermark)
        })
        .map(|(first, _)| *first)
        .collect();
    for first in done {
        let segment = state.segments.remove(&first).expect("listed above");
        state.bytes -= segment.bytes;
        if segment.keep {
            let name = segment.path.file_name().unwrap_or_default().to_owned();
            let kept = segment.path.with_file_name("quarantine").join(name);
            match std::fs::rename(&segment.path, &kept) {
                Ok(()) => {
                    tracing::warn!(path = %kept.display(), "a released segment holding corrupt bytes was moved to quarantine")
                }
                Err(error) => {
                    tracing::error!(path = %segment.path.display(), %error, "could not move a segment holding corrupt bytes to quarantine; leaving it in place")
                }
            }
        } else {
            state.doomed.push(segment.path);
        }
    }
}

fn read_checkpoint(dir: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(dir.join("checkpoint")) else {
        return 0;
    };
    match bytes.as_slice() {
        [watermark @ .., a, b, c, d]
            if watermark.len() == 8
                && crc32fast::hash(watermark) == u32::from_le_bytes([*a, *b, *c, *d]) =>
        {
            u64::from_le_bytes(watermark.try_into().expect("8 bytes"))
        }
        _ => {
            tracing::warn!("the spool checkpoint is unreadable; replaying every spooled entry");
            0
        }
    }
}

fn quarantine(dir: &Path, segment: u64, offset: u64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir
        .join("quarantine")
        .join(format!("{segment:020}.seg.at-{offset}.bin"));
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Scans one segment: indexes its entries at or above the checkpoint, truncates a torn
/// tail of the newest segment, quarantines corrupt ranges.
fn recover_segment(
    dir: &Path,
    first: u64,
    path: &Path,
    newest: bool,
    checkpoint: u64,
    state: &mut State,
    recovery: &mut Recovery,
) -> Result<(), SpoolError> {
    let data = std::fs::read(path)?;
    let mut offset = 0;
    let mut last_seq = None;
    let mut keep = false;
    let mut valid_bytes = data.len();
    while offset < data.len() {
        match frame::scan(&data[offset..]) {
            frame::Scanned::Frame { seq, len } => {
                if seq >= checkpoint {
                    let received_at_ms = frame::decode(&data[offset..offset + len])
                        .map_or(0, |(_, entry)| entry.received_at_ms);
                    state.index.push_back(Slot {
                        seq,
                        segment: first,
                        offset: offset as u64,
                        len: len as u32,
                        received_at_ms,
                        released: false,
                    });
                }
                last_seq = Some(seq);
                state.next_seq = state.next_seq.max(seq + 1);
                offset += len;
            }
            frame::Scanned::Torn if newest => {
                tracing::warn!(path = %path.display(), bytes = data.len() - offset, "truncating a torn write at the end of the spool (never acknowledged)");
                recovery.torn_bytes += (data.len() - offset) as u64;
                valid_bytes = offset;
                break;
            }
            frame::Scanned::Torn | frame::Scanned::Corrupt => {
                let next = frame::resync(&data, offset).unwrap_or(data.len());
                // Never fail the start over it (that would be a crash loop): when the copy
                // cannot be written, the segment itself is kept.
                match quarantine(dir, first, offset as u64, &data[offset..next]) {
                    Ok(at) => {
                        tracing::error!(path = %path.display(), offset, bytes = next - offset, quarantine = %at.display(), "corrupt bytes in the spool moved to quarantine")
                    }
                    Err(error) => {
                        tracing::error!(path = %path.display(), offset, bytes = next - offset, %error, "corrupt bytes in the spool could not be copied to quarantine; keeping the whole segment");
                        keep = true;
                    }
                }
                recovery.quarantined += 1;
                offset = next;
            }
        }
    }
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    if valid_bytes < data.len() {
        file.set_len(valid_bytes as u64)?;
        file.sync_all()?;
    }
    state.bytes += valid_bytes as u64;
    state.segments.insert(
        first,
        Segment {
            path: path.to_owned(),
            file: Arc::new(file),
            bytes: valid_bytes as u64,
            last_seq,
            keep,
        },
    );
    Ok(())
}

/// How long the forwarder waits between attempts after a failure, at most.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max_bytes: u64) -> (Arc<Spool>, Recovery, Arc<Metrics>, Arc<Readiness>) {
        let metrics = Arc::new(Metrics::new(Vec::new()));
        let readiness = Arc::new(Readiness::new());
        readiness.kafka_reached();
        let (spool, recovery) =
            Spool::open(dir, max_bytes, metrics.clone(), readiness.clone()).expect("opens");
        (spool, recovery, metrics, readiness)
    }

    fn entry(n: usize, size: usize) -> Entry {
        let mut body = format!("{{\"n\":{n}}}").into_bytes();
        body.resize(size.max(body.len()), b' ');
        Entry {
            app: "default".to_owned(),
            received_at_ms: 1_795_000_000_000 + n as u64,
            body,
        }
    }

    /// Spools three entries of 50 bytes in `dir`, closes the spool, and flips a byte in the
    /// middle of the second one's payload; returns the segment.
    async fn three_entries_with_the_second_corrupted(dir: &Path) -> PathBuf {
        let (spool, ..) = open(dir, 1 << 20);
        for n in 0..3 {
            spool.append(entry(n, 50)).await.expect("appended");
        }
        spool.close();
        drop(spool);
        let segment = segments(dir)[0].clone();
        let mut data = std::fs::read(&segment).expect("read");
        let second = frame::HEADER_BYTES + 1 + 7 + 8 + 50;
        data[second + 30] ^= 0xff;
        std::fs::write(&segment, &data).expect("write");
        segment
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        found.sort();
        found
    }

    #[tokio::test]
    async fn appended_entries_read_back_and_survive_a_reopen_until_released() {
        let dir = tempfile::tempdir().expect("dir");
        let (spool, ..) = open(dir.path(), 1 << 20);
        let mut seqs = Vec::new();
        for n in 0..5 {
            seqs.push(spool.append(entry(n, 100)).await.expect("appended"));
        }
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        assert_eq!(spool.read(3).expect("read"), Some(entry(3, 100)));
        spool.release(0);
        spool.release(2);
        spool.close();
        drop(spool);

        let (spool, recovery, ..) = open(dir.path(), 1 << 20);
        // The checkpoint covers entry 0 only (2 is above an unreleased entry): 1..=4 replay.
        assert_eq!(recovery.replayed, 4);
        assert_eq!(spool.next_at_or_after(0), Some(1));
        assert_eq!(spool.read(2).expect("read"), Some(entry(2, 100)));
        assert_eq!(spool.append(entry(9, 10)).await.expect("appended"), 5);
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().expect("dir");
        let (spool, _, metrics, _) = open(dir.path(), 64 << 20);
        let appends: Vec<_> = (0..200)
            .map(|n| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(entry(n, 1000)).await })
            })
            .collect();
        for append in appends {
            append.await.expect("task").expect("appended");
        }
        let fsyncs = metrics.spool_fsyncs.get();
        assert!(fsyncs < 200, "{fsyncs} fsyncs for 200 appends");
        assert_eq!(spool.unreleased(), 200);
    }

    #[tokio::test]
    async fn released_segments_are_deleted_and_their_space_reclaimed() {
        let dir = tempfile::tempdir().expect("dir");
        // 256 KiB spool: 16 KiB segments.
        let (spool, _, metrics, _) = open(dir.path(), 256 * 1024);
        for n in 0..40 {
            spool.append(entry(n, 2000)).await.expect("appended");
        }
        assert!(segments(dir.path()).len() >= 4);
        let bytes_before = metrics.spool_bytes.get();
        for seq in 0..40 {
            spool.release(seq);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while segments(dir.path()).len() > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "released segments stay on disk"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(metrics.spool_bytes.get() < bytes_before / 2);
        assert_eq!(metrics.spool_entries.get(), 0);
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_is_not_ready_until_below_the_low_water_mark() {
        let dir = tempfile::tempdir().expect("dir");
        let (spool, _, _, readiness) = open(dir.path(), 64 * 1024);
        let mut accepted = Vec::new();
        let refused = loop {
            match spool.append(entry(accepted.len(), 4000)).await {
                Ok(seq) => accepted.push(seq),
                Err(error) => break error,
            }
        };
        assert!(matches!(refused, SpoolError::Full { .. }), "{refused}");
        assert_eq!(readiness.check(), Err("the spool is full"));
        assert!(
            matches!(
                spool.append(entry(0, 10)).await,
                Err(SpoolError::Full { .. })
            ),
            "still full: no flapping"
        );
        for seq in &accepted {
            spool.release(*seq);
        }
        assert_eq!(readiness.check(), Ok(()));
        spool.append(entry(0, 4000)).await.expect("room again");
    }

    #[tokio::test]
    async fn a_torn_write_at_the_end_is_truncated_on_open() {
        let dir = tempfile::tempdir().expect("dir");
        let (spool, ..) = open(dir.path(), 1 << 20);
        for n in 0..3 {
            spool.append(entry(n, 50)).await.expect("appended");
        }
        spool.close();
        drop(spool);
        let newest = segments(dir.path()).pop().expect("a segment");
        let mut torn = Vec::new();
        frame::encode(3, &entry(3, 50), &mut torn);
        torn.truncate(torn.len() - 7);
        let mut file = OpenOptions::new().append(true).open(&newest).expect("open");
        file.write_all(&torn).expect("write");
        drop(file);

        let (spool, recovery, ..) = open(dir.path(), 1 << 20);
        assert_eq!(recovery.replayed, 3);
        assert_eq!(recovery.torn_bytes, torn.len() as u64);
        assert_eq!(recovery.quarantined, 0);
        assert_eq!(spool.read(2).expect("read"), Some(entry(2, 50)));
    }

    #[tokio::test]
    async fn corrupt_bytes_in_the_middle_are_quarantined_and_the_rest_replayed() {
        let dir = tempfile::tempdir().expect("dir");
        three_entries_with_the_second_corrupted(dir.path()).await;

        let (spool, recovery, metrics, _) = open(dir.path(), 1 << 20);
        assert_eq!(recovery.quarantined, 1);
        assert_eq!(recovery.replayed, 2);
        assert_eq!(metrics.spool_quarantined.get(), 1);
        assert_eq!(spool.read(0).expect("read"), Some(entry(0, 50)));
        assert_eq!(spool.read(2).expect("read"), Some(entry(2, 50)));
        assert_eq!(spool.next_at_or_after(1), Some(2));
        let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
            .expect("dir")
            .collect();
        assert_eq!(quarantined.len(), 1, "kept on disk");
    }

    #[tokio::test]
    async fn corruption_that_cannot_be_quarantined_keeps_its_segment_and_does_not_stop_the_start() {
        let dir = tempfile::tempdir().expect("dir");
        let segment = three_entries_with_the_second_corrupted(dir.path()).await;
        // The quarantine folder cannot take anything.
        std::fs::remove_dir_all(dir.path().join("quarantine")).expect("remove");
        std::fs::write(dir.path().join("quarantine"), b"not a folder").expect("write");

        let (spool, recovery, ..) = open(dir.path(), 1 << 20);
        assert_eq!(recovery.quarantined, 1);
        assert_eq!(recovery.replayed, 2);
        for seq in [0, 2] {
            spool.release(seq);
        }
        spool.close();
        assert!(
            segment.exists(),
            "the segment with the corrupt bytes is kept"
        );
    }

    #[tokio::test]
    async fn a_closed_spool_refuses_appends() {
        let dir = tempfile::tempdir().expect("dir");
        let (spool, ..) = open(dir.path(), 1 << 20);
        spool.close();
        assert!(matches!(
            spool.append(entry(0, 1)).await,
            Err(SpoolError::Closed)
        ));
    }
}

/// The on-disk format is a contract between releases: replicas are upgraded in place, and
/// a spool written by one release is replayed by the next. `tests/fixtures/spool-v1` was
/// written by the first release (five entries, the first two released and checkpointed, a
/// torn frame at the end); a change to the format keeps this test passing or adds a
/// tested migration.
#[cfg(test)]
mod format_v1 {
    use super::*;
    use crate::envelope;

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[tokio::test]
    async fn a_spool_written_by_the_first_release_replays_the_same_records() {
        let dir = tempfile::tempdir().expect("dir");
        for file in std::fs::read_dir(fixture("tests/fixtures/spool-v1")).expect("fixture") {
            let file = file.expect("entry");
            std::fs::copy(file.path(), dir.path().join(file.file_name())).expect("copy");
        }
        let metrics = Arc::new(Metrics::new(Vec::new()));
        let readiness = Arc::new(Readiness::new());
        let (spool, recovery) =
            Spool::open(dir.path(), 1 << 20, metrics, readiness).expect("opens");
        assert_eq!(
            recovery,
            Recovery {
                replayed: 3,
                torn_bytes: 75,
                quarantined: 0
            }
        );

        let routing = crate::config::KafkaSettings::default().routing();
        let expected_bodies = [
            (2, "shop", "multi_two_entries_three_fields_each.json"),
            (
                3,
                "default",
                "messages_image_escaped_unicode_and_slashes.json",
            ),
            (4, "default", "entry_without_changes.json"),
        ];
        let mut records = Vec::new();
        let mut next = 0;
        for (seq, app, name) in expected_bodies {
            assert_eq!(spool.next_at_or_after(next), Some(seq));
            let entry = spool.read(seq).expect("reads").expect("unreleased");
            assert_eq!(entry.app, app);
            assert_eq!(entry.received_at_ms, 1_795_000_000_000 + seq * 1000);
            let body = std::fs::read(fixture("tests/fixtures").join(name)).expect("body");
            assert_eq!(entry.body, body, "entry {seq} is {name} byte for byte");
            let received_at = SystemTime::UNIX_EPOCH + Duration::from_millis(entry.received_at_ms);
            let split = envelope::to_records(&routing, &entry.app, &entry.body, received_at);
            assert_eq!(split.deadletter, None);
            for record in split.records {
                records.push((
                    seq,
                    record.topic.clone(),
                    record.key.clone().unwrap_or_default(),
                    record.header("wa-event-id").unwrap_or_default().to_owned(),
                ));
            }
            next = seq + 1;
        }
        assert_eq!(spool.next_at_or_after(next), None);
        let expected = [
            (
                2,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "125ada5cae02a1e14bfea76691624814",
            ),
            (
                2,
                "whatsapp.phone_number_quality_update",
                "310987654321001",
                "14d7ea759173852bc7571cb3a49d1019",
            ),
            (
                2,
                "whatsapp.message_template_status_update",
                "310987654321001",
                "ea761e9db2eb506d1df350a9dfd9c812",
            ),
            (
                2,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "af815028d2b95a78f07600f31078aa26",
            ),
            (
                2,
                "whatsapp.account_review_update",
                "310987654321002",
                "d0a68013b89a4f7d2fa36b82abdfabf0",
            ),
            (
                2,
                "whatsapp.template_category_update",
                "310987654321002",
                "6f75f7295a68b13cf172495e3ef7b445",
            ),
            (
                3,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "1f3b496a09e94ac68f9338525d514b80",
            ),
            (
                4,
                "whatsapp.unrouted",
                "310987654321001",
                "dfe17cec19ea87c6463c28e459d2084a",
            ),
        ]
        .map(|(seq, topic, key, id)| (seq, topic.to_owned(), key.to_owned(), id.to_owned()));
        assert_eq!(records, expected);

        // Released, the replayed entries leave an empty spool that takes new entries after
        // the fixture's last sequence number.
        for seq in 2..=4 {
            spool.release(seq);
        }
        assert_eq!(spool.unreleased(), 0);
        let appended = spool
            .append(Entry {
                app: "default".to_owned(),
                received_at_ms: 1,
                body: b"{}".to_vec(),
            })
            .await
            .expect("appended");
        assert_eq!(appended, 5);
    }
}
