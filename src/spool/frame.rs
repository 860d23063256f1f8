//! The spool's on-disk frame, and the scan that recovers frames from a segment.
//!
//! Pure: bytes in, frames out. A frame is
//! `magic u32 | payload length u32 | crc32 u32 | seq u64 | payload`, little endian, the
//! CRC covering the sequence number and the payload. The payload is
//! `app length u8 | app | received_at ms u64 | raw body`.

/// Marks the start of every frame ("WABA").
const MAGIC: u32 = 0x5741_4241;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 20;
/// No payload is larger: a body is at most 64 MiB (`server.max_body_bytes`).
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024 + 512;

/// One spooled notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The app it came in for.
    pub app: String,
    /// When it came in, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The verified raw body.
    pub body: bytes::Bytes,
}

/// Appends the frame of `entry` with sequence number `seq` to `out`; returns its length.
pub fn encode(seq: u64, entry: &Entry, out: &mut Vec<u8>) -> usize {
    let app = &entry.app.as_bytes()[..entry.app.len().min(255)];
    let payload_len = 1 + app.len() + 8 + entry.body.len();
    let start = out.len();
    out.reserve(HEADER_BYTES + payload_len);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(app.len() as u8);
    out.extend_from_slice(app);
    out.extend_from_slice(&entry.received_at_ms.to_le_bytes());
    out.extend_from_slice(&entry.body);
    let crc = crc32fast::hash(&out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// What is at one position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// A whole, valid frame of `len` bytes.
    Frame {
        /// Its sequence number.
        seq: u64,
        /// Its length, header included.
        len: usize,
    },
    /// A frame cut short by the end of the data: what a crash mid-write leaves.
    Torn,
    /// Bytes that are not a valid frame.
    Corrupt,
}

/// Reads the frame header at the start of `data` and checks it.
pub fn scan(data: &[u8]) -> Scanned {
    if data.len() < HEADER_BYTES {
        return Scanned::Torn;
    }
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
    if word(0) != MAGIC {
        return Scanned::Corrupt;
    }
    let payload_len = word(4) as usize;
    if !(9..=MAX_PAYLOAD_BYTES).contains(&payload_len) {
        return Scanned::Corrupt;
    }
    let len = HEADER_BYTES + payload_len;
    if data.len() < len {
        return Scanned::Torn;
    }
    if crc32fast::hash(&data[12..len]) != word(8) {
        return Scanned::Corrupt;
    }
    let seq = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
    Scanned::Frame { seq, len }
}

/// The position of the next valid frame after a corrupt one, if any: resynchronises on
/// the magic number and a matching CRC.
pub fn resync(data: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    (from + 1..data.len().saturating_sub(HEADER_BYTES - 1))
        .filter(|&at| data[at..at + 4] == magic)
        .find(|&at| matches!(scan(&data[at..]), Scanned::Frame { .. }))
}

/// Decodes a frame checked by [`scan`]. `None` if its payload is malformed.
pub fn decode(frame: &[u8]) -> Option<(u64, Entry)> {
    let Scanned::Frame { seq, len } = scan(frame) else {
        return None;
    };
    let payload = &frame[HEADER_BYTES..len];
    let app_len = usize::from(payload[0]);
    let app = std::str::from_utf8(payload.get(1..1 + app_len)?).ok()?;
    let at = payload.get(1 + app_len..1 + app_len + 8)?;
    Some((
        seq,
        Entry {
            app: app.to_owned(),
            received_at_ms: u64::from_le_bytes(at.try_into().ok()?),
            body: bytes::Bytes::copy_from_slice(&payload[1 + app_len + 8..]),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &[u8]) -> Entry {
        Entry {
            app: "default".to_owned(),
            received_at_ms: 1_795_316_939_761,
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn a_frame_round_trips() {
        let mut out = Vec::new();
        let len = encode(42, &entry(b"{\"entry\":[]}"), &mut out);
        assert_eq!(len, out.len());
        assert_eq!(scan(&out), Scanned::Frame { seq: 42, len });
        assert_eq!(decode(&out), Some((42, entry(b"{\"entry\":[]}"))));
        let mut empty = Vec::new();
        encode(1, &entry(b""), &mut empty);
        assert_eq!(
            decode(&empty).map(|(_, e)| e.body),
            Some(bytes::Bytes::new())
        );
    }

    #[test]
    fn a_frame_cut_anywhere_is_torn() {
        let mut out = Vec::new();
        encode(7, &entry(b"body bytes"), &mut out);
        for cut in 0..out.len() {
            assert_eq!(scan(&out[..cut]), Scanned::Torn, "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut out = Vec::new();
        encode(7, &entry(b"body bytes"), &mut out);
        for byte in 0..out.len() {
            let mut bad = out.clone();
            bad[byte] ^= 0x10;
            assert_ne!(
                scan(&bad),
                Scanned::Frame {
                    seq: 7,
                    len: out.len()
                },
                "byte {byte}"
            );
        }
    }

    #[test]
    fn resync_finds_the_next_good_frame_after_garbage() {
        let mut out = Vec::new();
        let first = encode(1, &entry(b"one"), &mut out);
        out[first - 1] ^= 0xff;
        out.extend_from_slice(b"garbage WABA garbage");
        let second_at = out.len();
        encode(2, &entry(b"two"), &mut out);
        assert_eq!(scan(&out), Scanned::Corrupt);
        assert_eq!(resync(&out, 0), Some(second_at));
        assert_eq!(resync(&out, second_at), None);
    }
}
