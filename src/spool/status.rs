//! `waba-gateway spool status`: what a spool directory holds, read without changing
//! anything and without taking its lock, so it is safe beside a running gateway.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
        format!(
            "spool {}\n  entries not yet in Kafka: {}\n  bytes on disk: {}\n  oldest entry: {age}\n  quarantined files: {}\n  held by: {holder}\n",
            self.dir.display(),
            self.entries,
            self.bytes,
            self.quarantined_files,
        )
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
    };
    let mut oldest: Option<u64> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "seg") {
            continue;
        }
        let data = std::fs::read(&path)?;
        status.bytes += data.len() as u64;
        let mut offset = 0;
        while let Scanned::Frame { seq, len } = frame::scan(&data[offset..]) {
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
    }
    status.oldest_entry_age_seconds = oldest.map(|at| {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(at);
        SystemTime::now()
            .duration_since(at)
            .unwrap_or_default()
            .as_secs_f64()
    });
    Ok(status)
}
