//! Log set-up: `tracing` to standard error, text or JSON. `RUST_LOG` overrides
//! `log.level`. Log lines carry fields first, then a short sentence; secrets, payloads and
//! phone numbers are never logged.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(level: &str, format: LogFormat) {
    // A `RUST_LOG` that is no filter of levels (`warning`) would silence every line: the
    // command line says so, and `log.level` applies.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|filter| crate::config::log_filter_problem(filter).is_none());
    let filter = from_env
        .ok_or(())
        .and_then(|filter| EnvFilter::try_new(filter).map_err(drop))
        .or_else(|()| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonWithTrace(
                format::format()
                    .json()
                    .flatten_event(true)
                    .with_target(false),
            ))
            .try_init(),
    };
    // A subscriber may already exist when embedded in tests; that one keeps logging.
    drop(installed);
}

/// The trace span a log line is written for: a JSON line written while a request or a
/// record is handled carries its `trace_id` and `span_id` (the names of OpenTelemetry's
/// log data model), so that a log search and a trace view lead to each other.
#[derive(Debug, Clone, Copy)]
pub struct LogSpan {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The span.
    pub span_id: [u8; 8],
}

tokio::task_local! {
    static CURRENT: LogSpan;
}

/// Runs `work` with its log lines tied to `span` (none: as they are).
pub async fn within<F: Future>(span: Option<LogSpan>, work: F) -> F::Output {
    match span {
        Some(span) => CURRENT.scope(span, work).await,
        None => work.await,
    }
}

/// Runs `work` (not async) with its log lines tied to `span`.
pub fn within_sync<T>(span: Option<LogSpan>, work: impl FnOnce() -> T) -> T {
    match span {
        Some(span) => CURRENT.sync_scope(span, work),
        None => work(),
    }
}

/// tracing-subscriber's JSON lines, with `trace_id` and `span_id` first when the line is
/// written within a span.
struct JsonWithTrace(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> format::FormatFields<'a> + 'static,
    Format<Json>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Ok(span) = CURRENT.try_with(|span| *span) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                hex::encode(span.trace_id),
                hex::encode(span.span_id)
            ),
            None => writer.write_str(&line),
        }
    }
}

/// At most one log line per interval for something that repeats (a broker that stays
/// unreachable, a client refused again and again): the first is written at once, then
/// one per interval that says how many were held back.
#[derive(Debug)]
pub struct Throttle {
    interval: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    /// A throttle that lets one line through per `interval`.
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last line)` when a line may be written now; `None` when
    /// it is to be held back (and counted).
    pub fn admit(&self) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, held) = &mut *state;
        let now = std::time::Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < self.interval) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_the_first_line_through_then_one_per_interval_with_the_count() {
        let throttle = Throttle::new(std::time::Duration::from_millis(50));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(throttle.admit(), Some(2));
        assert_eq!(throttle.admit(), None);
    }
}
