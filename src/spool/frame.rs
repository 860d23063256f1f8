//! The spool's on-disk frame, and the scan that recovers frames from a segment.
//!
//! Pure: bytes in, frames out. A frame is
//! `magic u32 | payload length u32 | crc32 u32 | seq u64 | payload`, little endian, the
//! CRC covering the sequence number and the payload. The magic says the payload's format:
//!
//! - `WABA` (every release): `app length u8 | app | received_at ms u64 | raw body`;
//! - `WABT` (since traces): `app length u8 | app | received_at ms u64 | trace length u16 |
//!   trace | raw body`, the trace being the request span's `traceparent`, then a newline
//!   and its `tracestate` when it has one.
//!
//! An entry without a trace (tracing off) is written as `WABA`, so that a spool stays
//! readable by the releases before traces as long as tracing is off; both are read.

use crate::trace::SpanContext;

/// Marks the start of a frame without trace context ("WABA").
const MAGIC: u32 = 0x5741_4241;
/// Marks the start of a frame with trace context ("WABT").
const MAGIC_TRACED: u32 = 0x5741_4254;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 20;
/// No payload is larger: a body is at most 64 MiB (`server.max_body_bytes`), and the rest
/// at most 834 bytes (an app name of 255, the time, a trace of 2 + 55 + 1 + 512).
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024 + 1024;

/// One spooled notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The app it came in for.
    pub app: std::sync::Arc<str>,
    /// When it came in, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The verified raw body.
    pub body: bytes::Bytes,
    /// The span of the request that brought it, when tracing was on: the parent of its
    /// records' PRODUCER spans.
    pub trace: Option<SpanContext>,
}

/// The bytes an entry's trace is kept as.
fn trace_bytes(trace: &SpanContext) -> Vec<u8> {
    let mut text = trace.traceparent();
    if let Some(state) = &trace.state {
        text.push('\n');
        text.push_str(state);
    }
    text.into_bytes()
}

/// Appends the frame of `entry` with sequence number `seq` to `out`; returns its length.
pub fn encode(seq: u64, entry: &Entry, out: &mut Vec<u8>) -> usize {
    let app = &entry.app.as_bytes()[..entry.app.len().min(255)];
    let trace = entry.trace.as_ref().map(trace_bytes);
    let trace_len = trace.as_ref().map_or(0, |trace| 2 + trace.len());
    let payload_len = 1 + app.len() + 8 + trace_len + entry.body.len();
    let start = out.len();
    out.reserve(HEADER_BYTES + payload_len);
    let magic = if trace.is_some() { MAGIC_TRACED } else { MAGIC };
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(app.len() as u8);
    out.extend_from_slice(app);
    out.extend_from_slice(&entry.received_at_ms.to_le_bytes());
    if let Some(trace) = &trace {
        out.extend_from_slice(&(trace.len() as u16).to_le_bytes());
        out.extend_from_slice(trace);
    }
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
    if word(0) != MAGIC && word(0) != MAGIC_TRACED {
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

/// Whether `data`, what follows the last frame of a segment, is the zeroed room the writer
/// keeps ahead of its entries: zeros only. No frame starts with a zero byte.
pub fn is_room(data: &[u8]) -> bool {
    data.iter().all(|&byte| byte == 0)
}

/// The position of the next valid frame after a corrupt one, if any: resynchronises on
/// the magic number and a matching CRC.
pub fn resync(data: &[u8], from: usize) -> Option<usize> {
    let magics = [MAGIC.to_le_bytes(), MAGIC_TRACED.to_le_bytes()];
    (from + 1..data.len().saturating_sub(HEADER_BYTES - 1))
        .filter(|&at| magics.iter().any(|magic| data[at..at + 4] == *magic))
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
    let mut body_at = 1 + app_len + 8;
    let mut trace = None;
    if frame[0..4] == MAGIC_TRACED.to_le_bytes() {
        let len = payload.get(body_at..body_at + 2)?;
        let len = usize::from(u16::from_le_bytes(len.try_into().ok()?));
        let text = payload.get(body_at + 2..body_at + 2 + len)?;
        body_at += 2 + len;
        // A trace that no longer parses loses only the link to its request.
        trace = match text.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                SpanContext::from_headers(&text[..newline], Some(&text[newline + 1..]))
            }
            None => SpanContext::from_headers(text, None),
        };
    }
    Some((
        seq,
        Entry {
            app: app.into(),
            received_at_ms: u64::from_le_bytes(at.try_into().ok()?),
            body: bytes::Bytes::copy_from_slice(payload.get(body_at..)?),
            trace,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &[u8]) -> Entry {
        Entry {
            app: "default".into(),
            received_at_ms: 1_795_316_939_761,
            body: bytes::Bytes::copy_from_slice(body),
            trace: None,
        }
    }

    #[test]
    fn a_frame_with_a_trace_round_trips_and_one_without_is_written_as_before() {
        let traced = Entry {
            trace: SpanContext::from_headers(
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some(b"congo=t61rcWkgMzE"),
            ),
            ..entry(b"{\"entry\":[]}")
        };
        let mut out = Vec::new();
        let len = encode(9, &traced, &mut out);
        assert_eq!(&out[0..4], b"TBAW");
        assert_eq!(scan(&out), Scanned::Frame { seq: 9, len });
        assert_eq!(decode(&out), Some((9, traced.clone())));
        // A resync finds a traced frame after garbage.
        let mut damaged = b"garbage".to_vec();
        damaged.extend_from_slice(&out);
        assert_eq!(resync(&damaged, 0), Some(7));
        // Without a trace: the first release's bytes exactly.
        let mut plain = Vec::new();
        encode(9, &entry(b"{\"entry\":[]}"), &mut plain);
        assert_eq!(&plain[0..4], b"ABAW");
        assert_eq!(
            plain.len(),
            out.len() - 2 - 55 - 1 - "congo=t61rcWkgMzE".len()
        );
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
    fn the_largest_entry_with_the_longest_trace_is_one_valid_frame() {
        let state = format!("a={}", "b".repeat(510));
        let largest = Entry {
            app: "x".repeat(255).into(),
            received_at_ms: 1,
            body: bytes::Bytes::from(vec![b' '; 64 * 1024 * 1024]),
            trace: SpanContext::from_headers(
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some(state.as_bytes()),
            ),
        };
        assert!(largest.trace.as_ref().is_some_and(|t| t.state.is_some()));
        let mut out = Vec::new();
        let len = encode(1, &largest, &mut out);
        assert_eq!(scan(&out), Scanned::Frame { seq: 1, len });
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
