//! Recovery at open: the scan of each segment (a torn tail truncated,
//! corrupt ranges quarantined, never a failed start), and the quarantine itself.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::Checkpoint;
use super::log::{Segment, Slot, State};
use super::{Recovery, SpoolError, frame};

pub(super) fn quarantine(
    dir: &Path,
    segment: u64,
    offset: u64,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    let path = dir
        .join(super::QUARANTINE_DIR)
        .join(format!("{segment:020}.seg.at-{offset}.bin"));
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Scans one segment: indexes its entries at or above the checkpoint, truncates a torn
/// tail of the newest segment, quarantines corrupt ranges.
pub(super) fn recover_segment(
    dir: &Path,
    first: u64,
    path: &Path,
    newest: bool,
    checkpoint: &Checkpoint,
    state: &mut State,
    recovery: &mut Recovery,
) -> Result<(), SpoolError> {
    let data = std::fs::read(path)?;
    let mut offset = 0;
    let mut last_seq = None;
    let mut keep = false;
    let mut valid_bytes = data.len();
    while offset < data.len() {
        if frame::is_room(&data[offset..]) {
            // The zeroed room ahead of the last entry, left by a crash or a failed cut.
            valid_bytes = offset;
            break;
        }
        match frame::scan(&data[offset..]) {
            frame::Scanned::Frame { seq, len } => {
                if seq >= checkpoint.watermark {
                    let received_at_ms = frame::decode(&data[offset..offset + len])
                        .map_or(0, |(_, entry)| entry.received_at_ms);
                    state.index.push_back(Slot {
                        seq,
                        segment: first,
                        offset: offset as u64,
                        len: len as u32,
                        received_at_ms,
                        released: checkpoint.covers(seq),
                    });
                }
                last_seq = Some(seq);
                state.next_seq = state.next_seq.max(seq + 1);
                offset += len;
            }
            // A write cut short inside the zeroed room leaves a frame that ends in the
            // room's zeros rather than at the end of the file: a torn tail too.
            scanned @ (frame::Scanned::Torn | frame::Scanned::Corrupt)
                if newest
                    && (scanned == frame::Scanned::Torn || data.last() == Some(&0))
                    && frame::resync(&data, offset).is_none() =>
            {
                // A write cut short by a crash is never acknowledged (the answer waits for
                // the sync); damage to the end of an acknowledged entry looks the same. The
                // bytes are kept before the cut, so that neither is lost unseen.
                // Without the room's zeros after it (zeros that ended the torn frame itself
                // cannot be told from them).
                let torn = data[offset..]
                    .iter()
                    .rposition(|&byte| byte != 0)
                    .map_or(&data[offset..], |last| &data[offset..=offset + last]);
                let bytes = torn.len();
                match quarantine(dir, first, offset as u64, torn) {
                    Ok(at) => {
                        tracing::warn!(path = %path.display(), offset, bytes, quarantine = %at.display(), "the end of the newest spool segment is not a whole entry: copied to quarantine, then cut off. A write cut short by a crash was never acknowledged (Meta sends it again); if the disk was damaged instead, the copy holds what is left of an entry");
                        recovery.quarantined += 1;
                    }
                    Err(error) => {
                        tracing::error!(path = %path.display(), offset, bytes, %error, "the end of the newest spool segment is not a whole entry and could not be copied to quarantine; cut off (a write cut short by a crash was never acknowledged)");
                    }
                }
                recovery.torn_bytes += bytes as u64;
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
