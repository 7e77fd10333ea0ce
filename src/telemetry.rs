//! Subscriber setup (env filter, text or JSON) and the one-line-per-request log.
//! Installs nothing on import; `main` calls [`init`] once.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::config::LogFormat;

/// Installs the global subscriber. Default filter `autoprov=info`, overridable with RUST_LOG.
/// Lines are written to stderr by a background thread (request handlers only queue them;
/// nothing is dropped). Keep the returned guard alive until exit: dropping it flushes.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("autoprov=info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
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

/// Logs one line per request when the response is ready: method, path, status, latency,
/// and the handler's facts. Never the query string, headers or bodies (secrets live there).
pub async fn log_requests(req: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::INFO) {
        return next.run(req).await;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let facts = resp
        .extensions()
        .get::<RequestFacts>()
        .cloned()
        .unwrap_or_default();
    let status = resp.status().as_u16();
    let micros = start.elapsed().as_micros() as u64;
    tracing::info!(
        method = %method,
        path = %path,
        status,
        latency_us = micros,
        mac = facts.mac.as_ref().map(tracing::field::display),
        cache = facts.cache,
        "request"
    );
    resp
}
