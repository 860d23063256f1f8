//! The number check: a number beyond the range of a 64-bit float.

/// Whether valid JSON holds a number that overflows an `f64` (`1e400`, a 400-digit
/// integer). The parser that splits the body passes numbers through unread, so they are
/// looked for here, in one pass that skips strings.
pub(super) fn has_number_out_of_range(json: &[u8]) -> bool {
    let mut at = 0;
    while at < json.len() {
        match json[at] {
            b'"' => {
                // Skip to the closing quote, stepping over escapes.
                at += 1;
                while let Some(offset) = memchr::memchr2(b'"', b'\\', &json[at..]) {
                    at += offset;
                    if json[at] == b'"' {
                        break;
                    }
                    at += 2;
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                let mut exponent = false;
                while let Some(&byte) = json.get(at) {
                    match byte {
                        b'0'..=b'9' | b'-' | b'+' | b'.' => {}
                        b'e' | b'E' => exponent = true,
                        _ => break,
                    }
                    at += 1;
                }
                // Up to 300 digits without an exponent always fit.
                if exponent || at - start > 300 {
                    let finite = std::str::from_utf8(&json[start..at])
                        .ok()
                        .and_then(|number| number.parse::<f64>().ok())
                        .is_some_and(f64::is_finite);
                    if !finite {
                        return true;
                    }
                }
            }
            _ => at += 1,
        }
    }
    false
}
