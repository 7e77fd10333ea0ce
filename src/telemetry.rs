//! Subscriber setup (env filter, text or JSON) and the one-line-per-request log.
//! Installs nothing on import; `main` calls [`init`] once.

use std::time::Instant;

use axum::response::Response;

use crate::config::LogFormat;

/// Installs the global subscriber. Default filter `autoprov=info`, overridable with RUST_LOG.
/// Lines are written to stderr by a background thread (request handlers only queue them;
/// nothing is dropped), in colour only when stderr is a terminal. Keep the returned guard alive until exit: dropping it flushes.
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
    // Colour only for a terminal: escape codes in a log file are noise (and cost a tenth of
    // a cached fetch's time to write).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
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
    path: String,
}

impl RequestLine {
    /// Notes the request if request lines are logged (level `info`).
    pub fn start<B>(req: &axum::http::Request<B>) -> Option<Self> {
        tracing::enabled!(tracing::Level::INFO).then(|| RequestLine {
            start: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
        })
    }

    /// Logs one line for the response: method, path, status, latency, and the handler's
    /// facts. Never the query string, headers or bodies (secrets live there).
    pub fn finish(self, resp: &Response) {
        let facts = resp.extensions().get::<RequestFacts>();
        tracing::info!(
            method = %self.method,
            path = %self.path,
            status = resp.status().as_u16(),
            latency_us = self.start.elapsed().as_micros() as u64,
            mac = facts.and_then(|f| f.mac.as_ref()).map(tracing::field::display),
            cache = facts.and_then(|f| f.cache),
            "request"
        );
    }
}
