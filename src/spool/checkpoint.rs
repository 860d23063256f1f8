//! The checkpoint: what is known to be in Kafka, so that a restart replays only the rest.
//!
//! Pure encoding, plus reading and writing the file. Two formats are read:
//! - v1 (the first release): `watermark u64 | crc32 u32`, little endian: every entry below
//!   the watermark is released;
//! - v2: `"WGC2" | watermark u64 | count u32 | count × seq u64 | crc32 u32`: also the
//!   entries above the watermark released out of order (one record waiting on Kafka no
//!   longer makes a restart replay every entry after it).
//!
//! v2 is written. An unreadable checkpoint means "replay everything": more duplicates,
//! never a loss.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Marks a v2 checkpoint.
const MAGIC: &[u8; 4] = b"WGC2";

/// What the checkpoint says is in Kafka.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every entry below this sequence number is released.
    pub watermark: u64,
    /// Entries at or above the watermark that are released too, ascending.
    pub released: Vec<u64>,
}

impl Checkpoint {
    /// Whether entry `seq` is known to be in Kafka.
    pub fn covers(&self, seq: u64) -> bool {
        seq < self.watermark || self.released.binary_search(&seq).is_ok()
    }

    /// The v2 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(20 + 8 * self.released.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.watermark.to_le_bytes());
        bytes.extend_from_slice(&(self.released.len() as u32).to_le_bytes());
        for seq in &self.released {
            bytes.extend_from_slice(&seq.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads v1 or v2 bytes; `None` when they are neither, or fail their checksum.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_last_chunk::<4>()?;
        if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
        };
        if body.len() == 8 {
            return Some(Self {
                watermark: u64_at(0)?,
                released: Vec::new(),
            });
        }
        let rest = body.strip_prefix(MAGIC)?;
        let count = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
        if rest.len() != 12 + 8 * count {
            return None;
        }
        Some(Self {
            watermark: u64_at(4)?,
            released: (0..count)
                .map(|n| u64_at(16 + 8 * n))
                .collect::<Option<_>>()?,
        })
    }
}

/// The checkpoint of `dir`; the default (replay everything) when there is none or it is
/// unreadable.
pub fn read(dir: &Path) -> Checkpoint {
    let Ok(bytes) = std::fs::read(dir.join(super::CHECKPOINT_FILE)) else {
        return Checkpoint::default();
    };
    Checkpoint::decode(&bytes).unwrap_or_else(|| {
        tracing::warn!("the spool checkpoint is unreadable; replaying every spooled entry");
        Checkpoint::default()
    })
}

/// Replaces the checkpoint of `dir` atomically (a temporary file, fsync, rename).
pub fn write(dir: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let temporary = dir.join("checkpoint.tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(&checkpoint.encode())?;
    file.sync_data()?;
    std::fs::rename(&temporary, dir.join(super::CHECKPOINT_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_checkpoint_round_trips_and_a_v1_one_still_reads() {
        let checkpoint = Checkpoint {
            watermark: 7,
            released: vec![9, 12],
        };
        assert_eq!(
            Checkpoint::decode(&checkpoint.encode()),
            Some(checkpoint.clone())
        );
        assert!(checkpoint.covers(6) && checkpoint.covers(9) && checkpoint.covers(12));
        assert!(!checkpoint.covers(7) && !checkpoint.covers(10));
        // The first release's format: the watermark and its CRC.
        let mut v1 = 5u64.to_le_bytes().to_vec();
        v1.extend_from_slice(&crc32fast::hash(&5u64.to_le_bytes()).to_le_bytes());
        assert_eq!(
            Checkpoint::decode(&v1),
            Some(Checkpoint {
                watermark: 5,
                released: Vec::new()
            })
        );
        let mut torn = checkpoint.encode();
        torn[6] ^= 1;
        assert_eq!(Checkpoint::decode(&torn), None);
        assert_eq!(Checkpoint::decode(&[1, 2, 3]), None);
    }
}
