//! The accept loop: one hyper HTTP/1.1 connection per accepted socket, with the
//! connection-level limits axum's own `serve` cannot set.
//!
//! What happens at each limit (checked by `tests/limits.rs`):
//! - request line + headers not complete within `header-read-timeout-secs` of the
//!   connection's last progress (accepted, a response handed over, bytes written): the
//!   connection is closed without a response, so that is the keep-alive idle timeout too.
//!   A [`Watchdog`] sweeps the open connections four times a timeout instead of hyper's
//!   header-read timer, which armed, registered and cancelled a tokio timer per request
//!   (with the timer off, 6-7 % more requests a second at 256 connections; with this
//!   watchdog in its place, about 2 %, alternating A/B). Unlike hyper's timer, it also
//!   closes a connection whose client reads none of a response for that long;
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
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::AppState;
use crate::config::Limits;
use crate::http::Front;

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
        // and the queue was one more piece of per-connection state to walk and free per
        // response (+3.5-6 % at 256 connections in four alternating series of five, -3.5 %
        // in the fifth; neutral at 64; docs/PERFORMANCE.md). Buffering per connection is
        // bounded by hyper's `max_buf_size` either way; firmware chunks are copied too.
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

/// Closes connections that make no progress for the header-read timeout: one that sends
/// no complete request head (slowloris, or an idle keep-alive connection) within that time
/// of being accepted or of its last response's bytes, or that stops reading a response for
/// that long. A request being handled is never cut here (the request timeout's 408 is).
#[derive(Debug)]
pub struct Watchdog {
    epoch: Instant,
    limit: Duration,
    conns: Mutex<Vec<Weak<Watch>>>,
}

/// One connection's progress, as the [`Watchdog`] sees it.
#[derive(Debug)]
pub struct Watch {
    /// The watchdog's epoch.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last progress.
    last: AtomicU64,
    /// Requests of this connection being handled.
    busy: AtomicU32,
    /// Set by the watchdog: the next read or write fails and the connection ends.
    cut: AtomicBool,
    /// The task to wake when cut (the last read or write that had to wait).
    waker: Mutex<Option<Waker>>,
}

impl Watchdog {
    /// A watchdog for `limit` (at least 100 ms).
    pub fn new(limit: Duration) -> Self {
        Watchdog {
            epoch: Instant::now(),
            limit: limit.max(Duration::from_millis(100)),
            conns: Mutex::default(),
        }
    }

    /// Starts watching a connection accepted now.
    pub fn watch(&self) -> Arc<Watch> {
        let w = Arc::new(Watch {
            epoch: self.epoch,
            last: AtomicU64::new(ms_since(self.epoch)),
            busy: AtomicU32::new(0),
            cut: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&w));
        w
    }

    /// Cuts the connections past the limit; forgets the closed ones. Returns how many it cut.
    fn sweep(&self) -> usize {
        self.sweep_at(ms_since(self.epoch))
    }

    fn sweep_at(&self, now: u64) -> usize {
        let limit = self.limit.as_millis() as u64;
        let mut cut = Vec::new();
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|weak| {
                let Some(w) = weak.upgrade() else {
                    return false;
                };
                if w.busy.load(Ordering::Relaxed) == 0
                    && now.saturating_sub(w.last.load(Ordering::Relaxed)) >= limit
                    && !w.cut.swap(true, Ordering::Relaxed)
                {
                    cut.push(w);
                }
                true
            });
        for w in &cut {
            let waker = w.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        cut.len()
    }

    /// Connections watched (closed ones until the next sweep).
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sweeps four times a limit until aborted.
    async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.limit / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = self.sweep();
            if n > 0 {
                tracing::debug!(connections = n, "closed connections without progress");
            }
        }
    }
}

fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Watch {
    /// The connection made progress now.
    fn touch(&self) {
        self.last.store(ms_since(self.epoch), Ordering::Relaxed);
    }

    /// A request of this connection is being handled until the guard is dropped (which
    /// counts as progress).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn check(&self) -> io::Result<()> {
        if self.cut.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head within the header-read timeout",
            ));
        }
        Ok(())
    }

    /// Remembers the task waiting on this connection's socket.
    fn waiting(&self, cx: &Context<'_>) {
        let mut w = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match &*w {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
    }
}

/// See [`Watch::busy`].
#[derive(Debug)]
pub struct Busy(Arc<Watch>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket, watched: reads and writes fail once the [`Watchdog`] cut it,
/// and a write that moves bytes is progress.
#[derive(Debug)]
struct Guarded<S> {
    io: S,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.watch.check()?;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if r.is_pending() {
            this.watch.waiting(cx);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    fn wrote(&self, cx: &Context<'_>, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => self.watch.touch(),
            Poll::Pending => self.watch.waiting(cx),
            _ => {}
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.watch.check()?;
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, &r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.watch.check()?;
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, &r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.watch.check()?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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
    fn the_watchdog_cuts_only_connections_without_progress_for_the_limit() {
        let mut dog = Watchdog::new(Duration::from_secs(10));
        // An epoch an hour ago: the clock reads about 3,600,000 ms, the times set below
        // are made up and far smaller.
        dog.epoch = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or(dog.epoch);
        let at = |w: &Watch, ms: u64| w.last.store(ms, Ordering::Relaxed);
        let idle = dog.watch();
        let busy = dog.watch();
        let writing = dog.watch();
        let closed = dog.watch();
        drop(closed);
        for w in [&idle, &busy, &writing] {
            at(w, 1_000);
        }
        // Not before the limit.
        assert_eq!(dog.sweep_at(10_999), 0);
        assert!(idle.check().is_ok());
        assert_eq!(dog.watched(), 3, "a closed connection is forgotten");
        let handling = busy.busy();
        at(&writing, 6_000);
        // Past it: the idle one is cut (once); the one handling a request and the one that
        // wrote since are not.
        assert_eq!(dog.sweep_at(11_000), 1);
        assert_eq!(dog.sweep_at(11_000), 0);
        let e = idle.check().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(busy.check().is_ok() && writing.check().is_ok());
        // The one that wrote is cut the limit after its write.
        assert_eq!(dog.sweep_at(15_999), 0);
        assert_eq!(dog.sweep_at(16_000), 1);
        assert!(writing.check().is_err());
        // A request's end is progress: the limit counts from then.
        at(&busy, 0);
        drop(handling);
        let end = busy.last.load(Ordering::Relaxed);
        assert!(end >= 3_600_000, "touched with the clock: {end}");
        assert_eq!(dog.sweep_at(end + 9_999), 0);
        assert!(busy.check().is_ok());
        assert_eq!(dog.sweep_at(end + 10_000), 1);
        assert!(busy.check().is_err());
    }

    #[tokio::test]
    async fn a_cut_connection_wakes_its_waiting_reader_with_an_error() {
        let dog = Arc::new(Watchdog::new(Duration::from_millis(100)));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (stream, _) = l.accept().await.unwrap();
        let mut g = Guarded {
            io: stream,
            watch: dog.watch(),
        };
        let sweeper = tokio::spawn(dog.clone().run());
        // The client sends nothing: the read waits until the watchdog cuts it.
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), g.read(&mut buf)).await;
        sweeper.abort();
        let e = r.expect("woken by the cut").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    /// A client that reads none of a response: the write waits on a full buffer until the
    /// watchdog cuts the connection, then fails.
    #[tokio::test]
    async fn a_cut_connection_wakes_its_waiting_writer_with_an_error() {
        let dog = Arc::new(Watchdog::new(Duration::from_millis(100)));
        // A pipe holding 64 bytes; its other end never reads.
        let (io, _client) = tokio::io::duplex(64);
        let mut g = Guarded {
            io,
            watch: dog.watch(),
        };
        let sweeper = tokio::spawn(dog.clone().run());
        let r = tokio::time::timeout(Duration::from_secs(5), g.write_all(&[b'x'; 4096])).await;
        sweeper.abort();
        let e = r.expect("woken by the cut").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

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
