//! The connection watchdog: closes connections that make no progress for the header-read
//! timeout (no complete request head, or a response nobody reads), without a timer per
//! request. `server` watches each accepted socket ([`Guarded`]); `http::Front` marks the
//! time a request is being handled ([`Watch::busy`]), which is never cut here.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    pub async fn run(self: Arc<Self>) {
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
pub struct Guarded<S> {
    /// The socket (or TLS stream).
    pub io: S,
    /// Its watch.
    pub watch: Arc<Watch>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

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
}
