//! The log itself: where each unreleased entry is, the segments that hold them, and
//! which segments can go once everything in them is released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::Checkpoint;
use super::{Entry, SpoolError};

/// Where one unreleased entry is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) seq: u64,
    pub(super) segment: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) received_at_ms: u64,
    pub(super) released: bool,
}

pub(super) struct Segment {
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    pub(super) bytes: u64,
    pub(super) last_seq: Option<u64>,
    /// Holds corrupt bytes that could not be copied to quarantine: once released, the
    /// whole file is moved there instead of deleted.
    pub(super) keep: bool,
}

pub(super) struct State {
    /// Entries in sequence order, from the oldest unreleased one.
    pub(super) index: VecDeque<Slot>,
    pub(super) segments: BTreeMap<u64, Segment>,
    pub(super) active: u64,
    pub(super) bytes: u64,
    pub(super) unreleased: usize,
    /// The sequence number the next entry on disk takes: advanced only once a batch is
    /// synced and indexed, so the watermark never passes an entry still being written.
    pub(super) next_seq: u64,
    pub(super) checkpointed: Checkpoint,
    /// Released segments whose files the writer is to delete.
    pub(super) doomed: Vec<PathBuf>,
    /// Entries still in memory since they were appended: the forwarder takes them from here
    /// instead of reading them back from disk.
    pub(super) resident: HashMap<u64, Entry>,
    /// Bytes of the bodies in `resident`.
    pub(super) resident_bytes: u64,
}

impl State {
    /// Takes entry `seq` out of memory, if it is there.
    pub(super) fn take_resident(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.resident.remove(&seq)?;
        self.resident_bytes -= entry.body.len() as u64;
        Some(entry)
    }
}

impl State {
    /// The first sequence number not yet released.
    pub(super) fn watermark(&self) -> u64 {
        self.index.front().map_or(self.next_seq, |slot| slot.seq)
    }

    /// What a checkpoint written now records.
    pub(super) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            watermark: self.watermark(),
            released: self
                .index
                .iter()
                .filter(|slot| slot.released)
                .map(|slot| slot.seq)
                .collect(),
        }
    }
}

pub(super) fn find(index: &VecDeque<Slot>, seq: u64) -> Option<usize> {
    let at = index.partition_point(|slot| slot.seq < seq);
    (index.get(at)?.seq == seq).then_some(at)
}

/// Creates the segment that starts at the next sequence number and makes it the active
/// one; returns it for the writer. Older segments holding nothing unreleased go.
pub(super) fn start_segment(dir: &Path, state: &mut State) -> Result<File, SpoolError> {
    let first = state.next_seq;
    let path = dir.join(format!("{first:020}.seg"));
    let file = OpenOptions::new()
        .create(true)
        // Written by position; never emptied (see `write_loop` on a name already taken).
        .truncate(false)
        .write(true)
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
pub(super) fn delete_released_segments(state: &mut State) {
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
            let kept = segment
                .path
                .with_file_name(super::QUARANTINE_DIR)
                .join(name);
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
