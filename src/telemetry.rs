//! Subscriber setup (env filter, text or JSON) and the one-line-per-request log.
//! Installs nothing on import; `main` calls [`init`] once.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use axum::response::Response;

use crate::config::LogFormat;

/// Installs the global subscriber. Default filter `autoprov=info`, overridable with RUST_LOG.
/// Lines go to stderr through a [`LogSink`] (request handlers only append to a buffer;
/// nothing is dropped), without colour codes ([`TextLine`] writes none). Keep the returned
/// guard alive until exit: dropping it writes what is left.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("autoprov=info"));
    let (sink, guard) = LogSink::start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(sink.clone());
    match format {
        LogFormat::Text => {
            if builder.event_format(TextLine).try_init().is_ok() {
                // Set once: a second `init` (none is made) would keep the first sink.
                let _ = REQUEST_LINES.set(sink);
            }
        }
        LogFormat::Json => {
            let _ = builder.json().try_init();
        }
    }
    guard
}

/// Where request lines are written without going through tracing (set by [`init`] for the
/// text format; unset, as in tests and with the JSON format, a request line is a tracing
/// event like any other). The request line is the one event every request logs: tracing's
/// dispatch, its field visitor and the formatter's own buffer were most of its cost.
static REQUEST_LINES: std::sync::OnceLock<LogSink> = std::sync::OnceLock::new();

/// Log lines on their way out: each line is appended to one shared buffer, which a thread
/// of its own writes out every [`LogSink::EVERY`] (sooner once it holds [`LogSink::SOON`]
/// bytes), so a busy server makes ten writes a second instead of one a line, and a line
/// costs its handler one lock and a copy (tracing-appender's channel cost an allocation
/// and a message per line). Nothing is dropped:
/// past [`LogSink::FULL`] unwritten bytes (stderr blocked) writers wait for the thread.
#[derive(Clone)]
pub struct LogSink(Arc<Shared>);

/// Stops the [`LogSink`]'s thread when dropped, after it has written every line; lines
/// logged after that are written directly.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The thread waits here for [`LogSink::SOON`] bytes or its interval.
    ready: Condvar,
    /// Writers wait here while [`LogSink::FULL`] bytes are unwritten.
    drained: Condvar,
    /// Where lines go once the thread has stopped (and in its absence).
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The guard was dropped: the thread writes what is left and stops.
    closing: bool,
    /// The thread has stopped: writers write themselves.
    stopped: bool,
}

impl LogSink {
    /// How often the thread writes.
    pub const EVERY: std::time::Duration = std::time::Duration::from_millis(100);
    /// Buffered bytes that wake the thread before its interval.
    pub const SOON: usize = 128 << 10;
    /// Unwritten bytes at which writers wait.
    pub const FULL: usize = 4 << 20;

    /// A sink writing to `out` from a thread of its own (named `log`).
    pub fn start(out: impl Write + Send + 'static) -> (LogSink, LogGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(Self::SOON),
                ..Pending::default()
            }),
            ready: Condvar::new(),
            drained: Condvar::new(),
            out: Mutex::new(Box::new(out)),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || s.run())
            .ok();
        if thread.is_none() {
            // No thread: lines are written as they come.
            lock(&shared.pending).stopped = true;
        }
        (LogSink(shared.clone()), LogGuard { shared, thread })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The thread: waits, takes the buffer, writes it, until closed.
    fn run(&self) {
        let mut spare = Vec::with_capacity(LogSink::SOON);
        loop {
            let closing = {
                let mut p = lock(&self.pending);
                if p.buf.len() < LogSink::SOON && !p.closing {
                    p = self
                        .ready
                        .wait_timeout(p, LogSink::EVERY)
                        .map_or_else(|e| e.into_inner().0, |(g, _)| g);
                }
                std::mem::swap(&mut p.buf, &mut spare);
                self.drained.notify_all();
                p.closing
            };
            if !spare.is_empty() {
                let mut out = lock(&self.out);
                // A log that cannot be written has nowhere to say so.
                let _ = out.write_all(&spare).and_then(|()| out.flush());
                spare.clear();
                if spare.capacity() > 4 * LogSink::SOON {
                    // A burst's buffer is not kept.
                    spare = Vec::with_capacity(LogSink::SOON);
                }
            }
            if closing {
                // Lines appended since the swap, then writers write themselves.
                let mut p = lock(&self.pending);
                let mut out = lock(&self.out);
                let _ = out.write_all(&p.buf).and_then(|()| out.flush());
                p.buf = Vec::new();
                p.stopped = true;
                self.drained.notify_all();
                return;
            }
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        lock(&self.shared.pending).closing = true;
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line's writer (tracing-subscriber formats a line, then writes it whole).
pub struct LineWriter<'a>(&'a Shared);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.append(|buf| buf.extend_from_slice(b))?;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    /// Appends what `line` writes to the buffer (waiting while it is full), or writes it
    /// out directly once the thread has stopped.
    fn append(&self, line: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
        let mut p = lock(&self.pending);
        while p.buf.len() >= LogSink::FULL && !p.stopped {
            p = self
                .drained
                .wait(p)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if p.stopped {
            let mut one = Vec::new();
            line(&mut one);
            let mut out = lock(&self.out);
            return out.write_all(&one).and_then(|()| out.flush());
        }
        let before = p.buf.len();
        line(&mut p.buf);
        if before < LogSink::SOON && p.buf.len() >= LogSink::SOON {
            self.ready.notify_one();
        }
        Ok(())
    }
}

/// The current time as RFC 3339 UTC with microseconds (`2026-12-01T12:42:32.922323Z`),
/// in `buf`. The part up to the second is formatted once a second per thread.
fn timestamp(buf: &mut [u8; 27]) -> &str {
    use std::cell::Cell;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    thread_local! {
        /// The second last formatted and its text up to the dot (`2026-12-01T12:42:32.`).
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    // A clock before 1970 shows 1970 (humantime cannot format it).
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
        // `YYYY-MM-DDTHH:MM:SSZ`: the 19 bytes before the `Z`, then the dot.
        let mut w = std::io::Cursor::new(&mut prefix[..]);
        let _ = write!(w, "{text}");
        prefix[19] = b'.';
        SECOND.set((secs, prefix));
    }
    buf[..20].copy_from_slice(&prefix);
    let mut m = since.subsec_micros();
    for d in buf[20..26].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    buf[26] = b'Z';
    std::str::from_utf8(buf).unwrap_or_default()
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
        w.write_str(timestamp(&mut [0; 27]))?;
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
#[derive(Debug, Clone, Copy, Default)]
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
    pub fn finish(self, resp: &Response, facts: Option<&RequestFacts>) {
        let mut mac = [0u8; 12];
        let line = Line {
            method: self.method.as_str(),
            path: self.uri.path(),
            status: resp.status().as_u16(),
            latency_us: self.start.elapsed().as_micros() as u64,
            mac: facts
                .and_then(|f| f.mac.as_ref())
                .map(|m| m.write_lower(&mut mac)),
            cache: facts.and_then(|f| f.cache),
        };
        match REQUEST_LINES.get() {
            // A line that cannot be written has nowhere to say so.
            Some(sink) => {
                let _ = sink.0.append(|buf| line.text(buf));
            }
            None => line.event(),
        }
    }
}

/// A request line's fields.
struct Line<'a> {
    method: &'a str,
    path: &'a str,
    status: u16,
    latency_us: u64,
    mac: Option<&'a str>,
    cache: Option<&'static str>,
}

impl Line<'_> {
    /// As a tracing event (written by whatever subscriber is installed).
    fn event(&self) {
        tracing::info!(
            method = self.method,
            path = self.path,
            status = self.status,
            latency_us = self.latency_us,
            mac = self.mac,
            cache = self.cache,
            "request"
        );
    }

    /// As the text line [`TextLine`] writes for [`Line::event`], byte for byte.
    fn text(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(timestamp(&mut [0; 27]).as_bytes());
        out.extend_from_slice(b"  INFO request");
        let text = |out: &mut Vec<u8>, name: &str, value: &str| {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            if bare(value) {
                out.extend_from_slice(value.as_bytes());
            } else {
                let _ = write!(out, "{value:?}");
            }
        };
        text(out, "method", self.method);
        text(out, "path", self.path);
        text(out, "status", itoa::Buffer::new().format(self.status));
        text(
            out,
            "latency_us",
            itoa::Buffer::new().format(self.latency_us),
        );
        if let Some(mac) = self.mac {
            text(out, "mac", mac);
        }
        if let Some(cache) = self.cache {
            text(out, "cache", cache);
        }
        out.push(b'\n');
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
    fn the_direct_request_line_is_the_events_line_byte_for_byte() {
        let full = Line {
            method: "GET",
            path: "/001565aabbcc.cfg",
            status: 200,
            latency_us: 1234,
            mac: Some("001565aabbcc"),
            cache: Some("hit"),
        };
        let odd = Line {
            method: "PUT",
            path: "/a path/with \"quotes\"=and\\more/é",
            status: 404,
            latency_us: 0,
            mac: None,
            cache: None,
        };
        for line in [full, odd] {
            let event = lines(|| line.event());
            let mut direct = Vec::new();
            line.text(&mut direct);
            let direct = String::from_utf8(direct).unwrap();
            assert!(
                direct.ends_with('\n') && direct.lines().count() == 1,
                "{direct}"
            );
            assert!(humantime::parse_rfc3339(&direct[..27]).is_ok(), "{direct}");
            // Everything after the timestamp.
            assert_eq!(&direct[27..], &event[27..]);
        }
    }

    #[test]
    fn timestamps_are_now_in_rfc3339_with_microseconds() {
        for _ in 0..3 {
            let before = std::time::SystemTime::now();
            let stamp = timestamp(&mut [0; 27]).to_string();
            let after = std::time::SystemTime::now();
            let t = humantime::parse_rfc3339(&stamp).unwrap();
            assert!(
                stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
                "{stamp}"
            );
            // Microseconds are truncated, so `t` may be up to 1 µs before `before`.
            assert!(
                t + std::time::Duration::from_micros(1) >= before && t <= after,
                "{stamp}"
            );
            // Across a second's boundary too (the cached part changes).
            std::thread::sleep(std::time::Duration::from_millis(400));
        }
    }

    #[test]
    fn the_sink_writes_every_line_in_order() {
        let buf = Buf::default();
        let (sink, guard) = LogSink::start(buf.clone());
        use tracing_subscriber::fmt::MakeWriter;
        // Written by the thread on its interval, without the guard being dropped.
        sink.make_writer().write_all(b"first\n").unwrap();
        let start = std::time::Instant::now();
        while buf.0.lock().unwrap().is_empty() {
            assert!(start.elapsed().as_secs() < 10, "the thread never wrote");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(&*buf.0.lock().unwrap(), b"first\n");
        // Several writers, more than FULL in all: every line, each writer's in its order.
        let line = |w: usize, i: usize| format!("writer {w} line {i:06} {}\n", "x".repeat(100));
        let per = LogSink::FULL / 120 / 2 + 1000;
        std::thread::scope(|s| {
            for w in 0..4 {
                let sink = sink.clone();
                s.spawn(move || {
                    for i in 0..per {
                        sink.make_writer().write_all(line(w, i).as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        // After the guard: written directly.
        sink.make_writer().write_all(b"last\n").unwrap();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2 + 4 * per);
        assert_eq!(lines[0], "first");
        assert_eq!(lines[lines.len() - 1], "last");
        for w in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("writer {w} ")))
                .collect();
            let want: Vec<String> = (0..per).map(|i| line(w, i)).collect();
            assert_eq!(mine.len(), per);
            assert!(mine.iter().zip(&want).all(|(a, b)| *a == b.trim_end()));
        }
    }

    /// An output that takes its time: writers wait for it past FULL, and lose nothing.
    #[test]
    fn a_slow_output_holds_writers_back_without_losing_lines() {
        #[derive(Clone, Default)]
        struct Slow(Arc<Mutex<(usize, usize)>>);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let mut g = self.0.lock().unwrap();
                g.0 += b.len();
                g.1 += 1;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Slow::default();
        let (sink, guard) = LogSink::start(out.clone());
        use tracing_subscriber::fmt::MakeWriter;
        let chunk = vec![b'y'; 64 << 10];
        let n = 3 * LogSink::FULL / chunk.len();
        for _ in 0..n {
            sink.make_writer().write_all(&chunk).unwrap();
            assert!(lock(&sink.0.pending).buf.len() <= LogSink::FULL + chunk.len());
        }
        drop(guard);
        let (bytes, writes) = *out.0.lock().unwrap();
        assert_eq!(bytes, n * chunk.len());
        assert!(writes < n, "batched: {writes} writes for {n} lines");
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
