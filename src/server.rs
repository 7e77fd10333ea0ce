//! The accept loop: one hyper HTTP/1.1 connection per accepted socket, with the
//! connection-level limits axum's own `serve` cannot set.
//!
//! What happens at each limit (checked by `tests/limits.rs`):
//! - request line + headers not complete within `header-read-timeout-secs` of the
//!   connection's last progress (accepted, a response handed over, bytes written): the
//!   connection is closed without a response, so that is the keep-alive idle timeout too.
//!   A [`Watchdog`] sweeps the open connections four times a timeout instead of hyper's
//!   header-read timer, which armed a tokio timer per request (the cost is in
//!   docs/PERFORMANCE.md). Unlike hyper's timer, it also closes a connection whose client
//!   reads none of a response for that long;
//! - request line + headers over [`MAX_HEADER_BYTES`]: hyper answers
//!   `431 Request Header Fields Too Large` and closes (more than 100 headers: 431 too,
//!   hyper's default; its 414 for a target over 64 KiB cannot be reached under this cap);
//! - more than `max-connections` open: the new connection gets a fixed
//!   `503 Service Unavailable` with `Retry-After: 1` and is closed, written by a small task
//!   of its own, never by the accept loop and without reading the request;
//! - the request timeout (408) and body limits (413) are layers in [`crate::http::router`].
//!
//! With HTTPS ([`run_listeners`]) both listeners share the one accept loop and the one
//! connection cap. A TLS handshake runs in the connection's own task (never in the accept
//! loop) and must finish within `header-read-timeout-secs`, else the connection is closed;
//! a TLS connection past the cap is closed at once (a plain-text 503 would be noise to a
//! TLS client, and a handshake to send it is the work the cap exists to refuse).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::AppState;
use crate::config::Limits;
use crate::http::Front;
use crate::watchdog::{Guarded, Watchdog};

/// Largest request line + headers accepted (431 past it).
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// The answer to a connection past the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
retry-after: 1\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 27\r\n\
connection: close\r\n\
\r\n\
too many connections, retry";

/// How long a 503 task may spend writing and then discarding what the client sent (so
/// the close is a FIN the client reads the 503 before, not a reset).
const BUSY_LINGER: Duration = Duration::from_secs(1);

/// At most this many bytes discarded by a 503 task.
const BUSY_DRAIN_BYTES: usize = 64 << 10;

/// At most this many 503 tasks at once; past that a connection is closed unanswered.
const BUSY_TASKS: usize = 256;

/// Waits for a connection on `listener`, or forever when there is none.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves connections from a plain-HTTP listener, an HTTPS one, or both (one loop, one
/// connection cap).
pub async fn run_listeners(
    listener: Option<TcpListener>,
    https: Option<(TcpListener, TlsAcceptor)>,
    state: AppState,
    routes: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let http = http_builder();
    let dog = Arc::new(Watchdog::new(limits.header_read_timeout));
    let sweeper = tokio::spawn(dog.clone().run());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let busy_tasks = Arc::new(Semaphore::new(BUSY_TASKS));
    let graceful = GracefulShutdown::new();
    let mut turned_away: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (accepted, tls) = tokio::select! {
            a = accept(listener.as_ref()) => (a, None),
            a = accept(https.as_ref().map(|(l, _)| l)) => (a, https.as_ref().map(|(_, t)| t)),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if turned_away == 0 {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached; answering new connections with 503"
                );
            }
            turned_away += 1;
            turn_away(stream, tls.is_some(), &busy_tasks);
            continue;
        };
        if turned_away > 0 {
            tracing::info!(turned_away, "below the connection limit again");
            turned_away = 0;
        }
        // Small responses on keep-alive connections: no Nagle delay (as axum::serve).
        let _ = stream.set_nodelay(true);
        let watch = dog.watch();
        let svc = Front::new(state.clone(), routes.clone(), peer).watched(watch.clone());
        let stream = Guarded { io: stream, watch };
        if let Some(tls) = tls {
            let conn = serve_tls(
                tls.clone(),
                http.clone(),
                graceful.watcher(),
                stream,
                svc,
                peer,
                limits.header_read_timeout,
            );
            tokio::spawn(async move {
                conn.await;
                drop(slot);
            });
            continue;
        }
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    drop(https);
    if tokio::time::timeout(limits.request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = limits.request_timeout.as_secs(),
            "connections still open after the shutdown grace; closing them"
        );
    }
    sweeper.abort();
    Ok(())
}

/// The HTTP/1.1 settings every connection is served with.
fn http_builder() -> http1::Builder {
    let mut http = http1::Builder::new();
    // The header-read timeout is the watchdog's: hyper's is off, and with it the only use
    // hyper's HTTP/1 server has for a timer, so none is given.
    http.header_read_timeout(None)
        .max_header_size(MAX_HEADER_BYTES)
        // Headers and body copied into one buffer and sent with one `write`, instead of a
        // `writev` of the header buffer and the queued body: a phone file is a few KiB,
        // and the queue is one more piece of per-connection state to walk and free per
        // response (measured in docs/PERFORMANCE.md). Buffering per connection is bounded
        // by hyper's `max_buf_size` either way; firmware chunks are copied too.
        .writev(false)
        .keep_alive(true);
    http
}

/// A connection past the cap: a TLS one is closed at once; a plain one gets [`BUSY`] from
/// a task of its own, or is closed unanswered while [`BUSY_TASKS`] such tasks run.
fn turn_away(stream: TcpStream, tls: bool, busy_tasks: &Arc<Semaphore>) {
    if tls {
        drop(stream);
        return;
    }
    if let Ok(task) = busy_tasks.clone().try_acquire_owned() {
        tokio::spawn(async move {
            busy(stream).await;
            drop(task);
        });
    }
}

/// Serves one TLS connection: the handshake must finish within `handshake` (else the
/// connection is closed), then HTTP/1.1 under the graceful shutdown's `watcher` until the
/// connection ends.
async fn serve_tls(
    tls: TlsAcceptor,
    http: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    stream: Guarded<TcpStream>,
    svc: Front,
    peer: SocketAddr,
    handshake: Duration,
) {
    match tokio::time::timeout(handshake, tls.accept(stream)).await {
        Ok(Ok(s)) => {
            let conn = watcher.watch(http.serve_connection(TokioIo::new(s), svc));
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Writes the 503, then reads and discards (bounded) until the client closes.
async fn busy(mut stream: TcpStream) {
    let _ = tokio::time::timeout(BUSY_LINGER, async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut seen = 0;
        while seen < BUSY_DRAIN_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => seen += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// A failed accept: per-connection errors are skipped; others (out of file descriptors)
/// are logged and the loop pauses a second so it does not spin (as axum::serve and hyper).
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_response_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("\r\nretry-after: 1\r\n"));
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), body.len());
    }
}
