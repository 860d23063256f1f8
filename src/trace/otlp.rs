//! OTLP/HTTP's protobuf encoding of spans: `ExportTraceServiceRequest` from
//! `opentelemetry/proto/collector/trace/v1/trace_service.proto`, written by hand for the
//! few messages and fields the gateway sends (the field numbers below are the proto's).
//! The suite's receiver decodes it with the `opentelemetry-proto` Python package.

use super::{AttrValue, Kind, SpanData, Status};

/// A protobuf writer.
#[derive(Default)]
struct Buf(Vec<u8>);

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

impl Buf {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, LEN);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn text(&mut self, field: u32, text: &str) {
        if !text.is_empty() {
            self.bytes(field, text.as_bytes());
        }
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn fixed32(&mut self, field: u32, value: u32) {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn enumeration(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, VARINT);
            self.varint(value);
        }
    }

    /// A nested message, written by `write` in place: its length, known once written, is
    /// put before it (one byte reserved; a longer length moves the message up).
    fn message(&mut self, field: u32, write: impl FnOnce(&mut Buf)) {
        self.key(field, LEN);
        let at = self.0.len();
        self.0.push(0);
        write(self);
        let len = self.0.len() - at - 1;
        if len < 0x80 {
            self.0[at] = len as u8;
        } else {
            let mut prefix = Buf::default();
            prefix.varint(len as u64);
            self.0.splice(at..=at, prefix.0);
        }
    }

    /// `KeyValue { key = 1; AnyValue value = 2 }`.
    fn attribute(&mut self, field: u32, key: &str, value: &AttrValue) {
        self.message(field, |kv| {
            kv.text(1, key);
            // AnyValue { string_value = 1; bool_value = 2; int_value = 3; }
            kv.message(2, |any| match value {
                AttrValue::Text(text) => any.bytes(1, text.as_bytes()),
                AttrValue::Bool(flag) => {
                    any.key(2, VARINT);
                    any.varint(u64::from(*flag));
                }
                AttrValue::Int(number) => {
                    any.key(3, VARINT);
                    any.varint(*number as u64);
                }
            });
        });
    }
}

/// The instrumentation scope every span is reported under.
pub const SCOPE: &str = "waba-gateway";

/// The body of one export: `resource` describes this process, `spans` are ended spans.
pub fn encode(resource: &[(String, AttrValue)], spans: &[SpanData]) -> Vec<u8> {
    let mut request = Buf::default();
    // ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
    request.message(1, |resource_spans| {
        // ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
        resource_spans.message(1, |out| {
            for (key, value) in resource {
                out.attribute(1, key, value);
            }
        });
        resource_spans.message(2, |scope_spans| {
            // ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }
            scope_spans.message(1, |scope| {
                scope.text(1, SCOPE);
                scope.text(2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                scope_spans.message(2, |out| write_span(out, span));
            }
        });
    });
    request.0
}

fn write_span(out: &mut Buf, span: &SpanData) {
    out.bytes(1, &span.context.trace_id);
    out.bytes(2, &span.context.span_id);
    if let Some(state) = &span.context.state {
        out.text(3, state);
    }
    if let Some(parent) = &span.parent {
        out.bytes(4, parent);
    }
    out.text(5, &span.name);
    out.enumeration(
        6,
        match span.kind {
            Kind::Internal => 1,
            Kind::Server => 2,
            Kind::Producer => 4,
        },
    );
    out.fixed64(7, span.start_ns);
    out.fixed64(8, span.end_ns);
    for (key, value) in &span.attributes {
        out.attribute(9, key, value);
    }
    for link in &span.links {
        // Link { trace_id = 1; span_id = 2; trace_state = 3; flags = 6; }
        out.message(13, |out| {
            out.bytes(1, &link.trace_id);
            out.bytes(2, &link.span_id);
            if let Some(state) = &link.state {
                out.text(3, state);
            }
            out.fixed32(6, u32::from(link.sampled));
        });
    }
    // Status { string message = 2; StatusCode code = 3; } with UNSET 0, OK 1, ERROR 2.
    match &span.status {
        Status::Unset => {}
        Status::Error(message) => out.message(15, |status| {
            status.text(2, message);
            status.enumeration(3, 2);
        }),
    }
    // Span.flags = 16: the W3C trace flags in the low byte.
    out.fixed32(16, u32::from(span.context.sampled));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_base_128() {
        let mut buf = Buf::default();
        buf.varint(1);
        buf.varint(300);
        buf.varint(u64::MAX);
        assert_eq!(
            buf.0,
            [
                0x01, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]
        );
    }

    #[test]
    fn a_nested_message_longer_than_127_bytes_gets_a_two_byte_length() {
        let mut buf = Buf::default();
        buf.message(2, |inner| inner.bytes(1, &[7; 200]));
        // field 2 LEN 203 (0xcb 0x01) | field 1 LEN 200 (0xc8 0x01) | 200 bytes
        assert_eq!(buf.0[..5], [0x12, 0xcb, 0x01, 0x0a, 0xc8]);
        assert_eq!(buf.0.len(), 3 + 3 + 200);
        assert!(buf.0[6..].iter().all(|&b| b == 7));
    }

    #[test]
    fn an_attribute_is_a_key_value_with_an_any_value() {
        let mut buf = Buf::default();
        buf.attribute(9, "a", &AttrValue::Int(150));
        // field 9 LEN 8 | KeyValue: key "a" | value LEN 3 | AnyValue: int_value 150
        assert_eq!(
            buf.0,
            [0x4a, 0x08, 0x0a, 0x01, b'a', 0x12, 0x03, 0x18, 0x96, 0x01]
        );
    }
}
