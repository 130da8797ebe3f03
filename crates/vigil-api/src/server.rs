//! Serving HTTP connections: the accept loop under the router, with the bounds that keep a
//! client from holding the process's descriptors or its shutdown.
//!
//! [`crate::serve`] and [`crate::serve_router`] land here. Each accepted TCP connection gets a
//! slot out of [`ServeConfig::max_connections`] (or is closed at once), carries its peer
//! address to the handlers as [`ConnectInfo`] (failed credentials are throttled by it), and is
//! served by hyper's HTTP/1 connection with a header-read timeout and a watchdog that closes it
//! when nothing moved for [`ServeConfig::idle_timeout`]. On shutdown the listener closes, every
//! connection finishes its request in flight and closes; whatever is still open after
//! [`ServeConfig::shutdown_timeout`] is dropped, so a client that never finishes its request
//! cannot keep the process (and the store's clean shutdown after it) waiting.

use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::Layer;

/// How connections are served: the bounds on each one and on their number, and how long
/// shutdown waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Longest a client may take to send a request's headers, counted from the connection's
    /// start or the end of the previous response (default 10 s). hyper restarts this timer
    /// whenever a keep-alive connection goes idle, so it also bounds the wait for the next
    /// request; a client that never sends, or trickles its headers, is closed by it.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved in either direction for this long is closed
    /// (default 60 s): a stalled request body, or a client that stopped reading its response.
    pub idle_timeout: Duration,
    /// Most connections open at once (default 1 024). One more is accepted and closed at once,
    /// so it holds no descriptor: clients cannot use up the descriptors the store needs.
    pub max_connections: usize,
    /// After the shutdown signal, how long requests in flight may take to finish (default
    /// 10 s); connections still open then are dropped. An acknowledged write is durable
    /// before its answer, so dropping loses nothing that was acknowledged.
    pub shutdown_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown` resolves,
/// then drains them within `config.shutdown_timeout`.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut refused = Refused::default();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set holds only open ones.
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    drop(stream);
                    refused.note(peer, config.max_connections);
                    continue;
                };
                let activity = Activity::new();
                let io = Tracked { inner: TokioIo::new(stream), activity: activity.clone() };
                // What `into_make_service_with_connect_info` does per connection.
                let service = axum::Extension(ConnectInfo(peer)).layer(router.clone());
                let connection = graceful.watch(
                    http.serve_connection(io, TowerToHyperService::new(service)),
                );
                let idle_timeout = config.idle_timeout;
                connections.spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        served = connection => {
                            if let Err(e) = served {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        }
                        () = activity.quiet_for(idle_timeout) => {
                            tracing::debug!(%peer, "idle connection closed");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        open = connections.len(),
        "http: no new connections; draining requests in flight"
    );
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            timeout = ?config.shutdown_timeout,
            "shutdown deadline passed; dropping the connections still open"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// A failed `accept`: the client's own trouble (reset before accepted) is skipped; anything
/// else, such as running out of descriptors, is logged and waited out briefly rather than
/// retried in a hot loop.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Connections closed for being over the cap, logged at most once per [`Refused::EVERY`]: a
/// flood of them must not flood the log as well.
#[derive(Debug, Default)]
struct Refused {
    /// Refused since the last warning.
    count: u64,
    last_warning: Option<Instant>,
}

impl Refused {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, peer: std::net::SocketAddr, max_connections: usize) {
        self.count += 1;
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < Self::EVERY)
        {
            return;
        }
        tracing::warn!(
            %peer,
            max_connections,
            refused = self.count,
            "connection closed: too many open connections"
        );
        self.count = 0;
        self.last_warning = Some(Instant::now());
    }
}

/// When a connection last moved a byte, shared by its I/O and its idle watchdog.
#[derive(Debug, Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read or write.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `limit`.
    async fn quiet_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// A connection's socket that records its activity.
#[derive(Debug)]
struct Tracked {
    inner: TokioIo<TcpStream>,
    activity: Activity,
}

impl Tracked {
    fn record<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(_)) = &poll {
            self.activity.touch();
        }
        poll
    }
}

impl hyper::rt::Read for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.record(poll)
    }
}

impl hyper::rt::Write for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
