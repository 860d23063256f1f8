//! `waba-gateway spool status`: what a spool directory holds, read without changing
//! anything and without taking its lock, so it is safe beside a running gateway.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checkpoint;
use super::frame::{self, Scanned};

/// What a spool directory holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The directory.
    pub dir: PathBuf,
    /// Entries the checkpoint does not cover: not known to be in Kafka. A running gateway may
    /// have released some since its last checkpoint (every few seconds).
    pub entries: usize,
    /// Bytes of the segment files.
    pub bytes: u64,
    /// Age of the oldest of those entries, in seconds.
    pub oldest_entry_age_seconds: Option<f64>,
    /// Files in `quarantine/`: corrupt bytes set aside.
    pub quarantined_files: usize,
    /// The process holding the directory, if one does.
    pub held_by: Option<u32>,
    /// Byte ranges of the segments that are not whole entries, so not counted in
    /// `entries`: a torn write at the end, or damage. The gateway or `spool drain` copies
    /// them to `quarantine/` when it opens the spool.
    pub unreadable: Vec<Unreadable>,
}

/// A byte range of a segment that holds no whole entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// The segment file's name.
    pub segment: String,
    /// Where the range starts in it.
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// Whether it runs to the end of the segment (what a crash mid-write leaves).
    pub at_end: bool,
}

impl Status {
    /// The lines a person reads.
    pub fn text(&self) -> String {
        let age = self
            .oldest_entry_age_seconds
            .map_or("-".to_owned(), |age| format!("{age:.0} s"));
        let holder = self
            .held_by
            .map_or("none (safe to drain)".to_owned(), |pid| {
                format!("process {pid}")
            });
        let mut text = format!(
            "spool {}\n  entries not yet in Kafka: {}\n  bytes on disk: {}\n  oldest entry: {age}\n  quarantined files: {}\n  held by: {holder}\n",
            self.dir.display(),
            self.entries,
            self.bytes,
            self.quarantined_files,
        );
        for range in &self.unreadable {
            let what = if range.at_end {
                "a torn write at the end (a crash mid-write) or damage"
            } else {
                "damage"
            };
            text.push_str(&format!(
                "  unreadable: {} at byte {}, {} bytes ({what}): the entries there are not \
                 counted above; opening the spool copies them to quarantine/\n",
                range.segment, range.offset, range.bytes
            ));
        }
        text
    }
}

/// Reads `dir`.
pub fn read(dir: &Path) -> std::io::Result<Status> {
    let checkpoint = checkpoint::read(dir);
    let mut status = Status {
        dir: dir.to_owned(),
        entries: 0,
        bytes: 0,
        oldest_entry_age_seconds: None,
        quarantined_files: std::fs::read_dir(dir.join(super::QUARANTINE_DIR))
            .map_or(0, Iterator::count),
        held_by: super::holder(dir),
        unreadable: Vec::new(),
    };
    let mut oldest: Option<u64> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "seg") {
            continue;
        }
        let data = std::fs::read(&path)?;
        let mut offset = 0;
        while offset < data.len() {
            if frame::is_room(&data[offset..]) {
                // The zeroed room ahead of the active segment's entries.
                break;
            }
            let Scanned::Frame { seq, len } = frame::scan(&data[offset..]) else {
                let next = frame::resync(&data, offset);
                let end = next.unwrap_or(data.len());
                status.unreadable.push(Unreadable {
                    segment: path
                        .file_name()
                        .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
                    offset: offset as u64,
                    bytes: (end - offset) as u64,
                    at_end: next.is_none(),
                });
                offset = end;
                continue;
            };
            if !checkpoint.covers(seq) {
                status.entries += 1;
                if let Some((_, entry)) = frame::decode(&data[offset..offset + len]) {
                    oldest = Some(
                        oldest.map_or(entry.received_at_ms, |at| at.min(entry.received_at_ms)),
                    );
                }
            }
            offset += len;
        }
        status.bytes += offset as u64;
    }
    status.oldest_entry_age_seconds = oldest.map(crate::epoch::age_secs);
    Ok(status)
}
