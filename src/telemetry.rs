//! Subscriber setup (env filter, text or JSON) and the one-line-per-request log.
//! Installs nothing on import; `main` calls [`init`] once.

use std::time::Instant;

use axum::response::Response;

use crate::config::LogFormat;

/// Installs the global subscriber. Default filter `autoprov=info`, overridable with RUST_LOG.
/// Lines are written to stderr by a background thread (request handlers only queue them;
/// nothing is dropped), without colour codes ([`TextLine`] writes none). Keep the returned
/// guard alive until exit: dropping it flushes.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("autoprov=info"));
    // The worker drains what is queued, then flushes: a buffer turns a burst of request
    // lines into a few writes instead of one system call each.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.event_format(TextLine).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}

/// The text log line: `2026-12-01T12:42:32.922323Z  INFO message key=value …`, the layout
/// of tracing-subscriber's default format (no spans are used), written without its
/// formatting machinery: numbers with `itoa`, and a text value as it is unless it needs
/// quotes (empty, or with a space, quote, `=`, backslash or anything not visible ASCII:
/// then Rust's debug quoting). With the default format the request line was a tenth of a
/// cached fetch's time.
#[derive(Debug, Clone, Copy)]
pub struct TextLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for TextLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(
            w,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )?;
        w.write_str(match *event.metadata().level() {
            tracing::Level::ERROR => " ERROR ",
            tracing::Level::WARN => "  WARN ",
            tracing::Level::INFO => "  INFO ",
            tracing::Level::DEBUG => " DEBUG ",
            tracing::Level::TRACE => " TRACE ",
        })?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// Writes an event's fields: the message as it is, then ` name=value` each.
struct Fields<'a, 'w> {
    w: &'a mut tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a field (a space before all but the first); `false` for the message.
    fn start(&mut self, field: &tracing::field::Field) -> bool {
        if !self.first {
            self.result = self.result.and_then(|()| self.w.write_char(' '));
        }
        self.first = false;
        if field.name() == "message" {
            return false;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .result
            .and_then(|()| self.w.write_str(name))
            .and_then(|()| self.w.write_char('='));
        true
    }

    fn number(&mut self, field: &tracing::field::Field, text: &str) {
        self.start(field);
        self.result = self.result.and_then(|()| self.w.write_str(text));
    }
}

/// A text value that can be written without quotes.
fn bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'))
}

impl tracing::field::Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let named = self.start(field);
        self.result = self.result.and_then(|()| {
            if !named || bare(value) {
                self.w.write_str(value)
            } else {
                write!(self.w, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.number(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.number(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.number(field, if value { "true" } else { "false" });
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.start(field);
        self.result = self.result.and_then(|()| write!(self.w, "{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.start(field);
        self.result = self.result.and_then(|()| write!(self.w, "{value:?}"));
    }
}

/// Facts a handler adds to its response for the request line.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The phone's MAC (formatted only when the line is written).
    pub mac: Option<crate::model::Mac>,
    /// `hit` or `miss`.
    pub cache: Option<&'static str>,
    /// The vendor the User-Agent names (phone requests), for the metrics.
    pub vendor: Option<&'static str>,
}

/// What the request line needs of a request, taken before it is handled (only when the
/// line will be written).
#[derive(Debug)]
pub struct RequestLine {
    start: Instant,
    method: axum::http::Method,
    /// The target (shares the request's bytes: no copy).
    uri: axum::http::Uri,
}

impl RequestLine {
    /// Notes the request if request lines are logged (level `info`).
    pub fn start<B>(req: &axum::http::Request<B>) -> Option<Self> {
        tracing::enabled!(tracing::Level::INFO).then(|| RequestLine {
            start: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
        })
    }

    /// Logs one line for the response: method, path, status, latency, and the handler's
    /// facts. Never the query string, headers or bodies (secrets live there).
    pub fn finish(self, resp: &Response) {
        let facts = resp.extensions().get::<RequestFacts>();
        let mut mac = [0u8; 12];
        let mac = facts
            .and_then(|f| f.mac.as_ref())
            .map(|m| m.write_lower(&mut mac));
        tracing::info!(
            method = self.method.as_str(),
            path = self.uri.path(),
            status = resp.status().as_u16(),
            latency_us = self.start.elapsed().as_micros() as u64,
            mac,
            cache = facts.and_then(|f| f.cache),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs through [`TextLine`].
    fn lines(emit: impl FnOnce()) -> String {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .event_format(TextLine)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_line_layout_and_values() {
        let mac = crate::model::Mac::parse("00:15:65:AA:BB:CC").unwrap();
        let out = lines(|| {
            tracing::info!(
                method = "GET",
                path = "/001565aabbcc.cfg",
                status = 200u16,
                latency_us = 42u64,
                delta = -3i64,
                ok = true,
                mac = %mac,
                empty = "",
                spaced = "two words",
                quote = "a\"b",
                "request"
            );
            tracing::warn!(error = %std::io::Error::other("disk full"), "flush failed");
            tracing::error!("plain {}", 1);
            tracing::debug!(r#type = "x", "raw name");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        // The timestamp is RFC 3339 with microseconds, UTC.
        let (stamp, rest) = lines[0].split_at(27);
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
            "{stamp}"
        );
        assert_eq!(
            rest,
            "  INFO request method=GET path=/001565aabbcc.cfg status=200 latency_us=42 \
             delta=-3 ok=true mac=001565aabbcc empty=\"\" spaced=\"two words\" quote=\"a\\\"b\""
        );
        assert_eq!(&lines[1][27..], "  WARN flush failed error=disk full");
        assert_eq!(&lines[2][27..], " ERROR plain 1");
        assert_eq!(&lines[3][27..], " DEBUG raw name type=x");
    }

    #[test]
    fn bare_values() {
        for v in ["hit", "/a/b.cfg", "001565aabbcc", "-1"] {
            assert!(bare(v), "{v}");
        }
        for v in ["", "a b", "a=b", "\"", "a\\b", "é", "tab\t"] {
            assert!(!bare(v), "{v}");
        }
    }
}
