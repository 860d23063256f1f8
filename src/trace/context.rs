//! W3C Trace Context: the `traceparent` and `tracestate` headers, parsed and written.
//!
//! `traceparent` is `version-trace_id-parent_id-flags` in lowercase hex
//! (`00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`). A header that breaks the
//! rules (a wrong length, upper case, an all-zero id, version `ff`) is ignored and a new
//! trace starts, as the recommendation says.

use std::sync::Arc;

/// The header that carries the trace and parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The header that carries vendors' trace state.
pub const TRACESTATE: &str = "tracestate";

/// A `tracestate` longer than this is dropped (the recommendation's limit is 512).
const MAX_TRACESTATE: usize = 512;

/// The identity of one span, as it travels between processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace: 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The span: 8 bytes, not all zero.
    pub span_id: [u8; 8],
    /// The `sampled` flag: whether the trace is recorded.
    pub sampled: bool,
    /// `tracestate`, passed on as it came.
    pub state: Option<Arc<str>>,
}

impl SpanContext {
    /// The context of the `traceparent` (and `tracestate`) header values, when valid.
    pub fn from_headers(traceparent: &[u8], tracestate: Option<&[u8]>) -> Option<Self> {
        let text = std::str::from_utf8(traceparent).ok()?.trim();
        let bytes = text.as_bytes();
        // 2 + 1 + 32 + 1 + 16 + 1 + 2; a later version may append `-...`.
        if bytes.len() < 55 || !bytes.is_ascii() {
            return None;
        }
        let version = hex_array::<1>(&text[0..2])?[0];
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        let trace_id = hex_array::<16>(&text[3..35])?;
        let span_id = hex_array::<8>(&text[36..52])?;
        let flags = hex_array::<1>(&text[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let state = tracestate
            .and_then(|value| std::str::from_utf8(value).ok())
            .map(str::trim)
            .filter(|value| {
                !value.is_empty()
                    && value.len() <= MAX_TRACESTATE
                    && value.bytes().all(|b| (0x20..0x7f).contains(&b))
            })
            .map(Arc::from);
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            state,
        })
    }

    /// The `traceparent` header value of this span.
    pub fn traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push_str(if self.sampled { "-01" } else { "-00" });
        out
    }

    /// The trace id in hex, as logs and OpenTelemetry tools show it.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span id in hex.
    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }

    /// What log lines written for this span carry.
    pub fn log_span(&self) -> crate::telemetry::LogSpan {
        crate::telemetry::LogSpan {
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
    }

    /// A new span of the same trace.
    pub(crate) fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: new_span_id(),
            sampled: self.sampled,
            state: self.state.clone(),
        }
    }
}

/// A random, non-zero trace id.
pub(crate) fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A random, non-zero span id.
pub(crate) fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

/// `N` bytes of lowercase hex (upper case is not valid in `traceparent`).
fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_round_trips() {
        let context = SpanContext::from_headers(EXAMPLE.as_bytes(), Some(b"congo=t61rcWkgMzE"))
            .expect("valid");
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id_hex(), "00f067aa0ba902b7");
        assert!(context.sampled);
        assert_eq!(context.state.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(context.traceparent(), EXAMPLE);
        let unsampled = SpanContext::from_headers(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            None,
        )
        .expect("valid");
        assert!(!unsampled.sampled);
        assert!(unsampled.traceparent().ends_with("-00"));
    }

    #[test]
    fn a_header_that_breaks_the_rules_is_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                SpanContext::from_headers(bad.as_bytes(), None),
                None,
                "{bad}"
            );
        }
        // A later version may add fields after a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(SpanContext::from_headers(later.as_bytes(), None).is_some());
        // A tracestate that is too long or holds control characters is dropped.
        let long = "a=".to_owned() + &"b".repeat(600);
        for state in [long.as_str(), "a=b\u{1}"] {
            let context =
                SpanContext::from_headers(EXAMPLE.as_bytes(), Some(state.as_bytes())).expect("ok");
            assert_eq!(context.state, None);
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_its_own_span() {
        let parent = SpanContext::from_headers(EXAMPLE.as_bytes(), None).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(child.sampled, parent.sampled);
    }
}
