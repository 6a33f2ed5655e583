//! Accept loops for the proxy and admin listeners: connection limits, header timeouts,
//! HTTP/1.1 and HTTP/2, and graceful shutdown.

use crate::body::ProxyBody;
use crate::config::ServerConfig;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Completes once `rx` says stop (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves `listener` with `handler` until `shutdown` turns true, then stops accepting and
/// waits (at most `cfg.shutdown_timeout`) for open connections to finish their requests.
pub async fn serve<H, F>(
    listener: TcpListener,
    cfg: &ServerConfig,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer, hyper's header_read_timeout silently does nothing.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.max_header_size.max(8192) as u32)
        .keep_alive_interval(Some(cfg.idle_timeout / 2));
    let builder = Arc::new(builder);
    let connections = tokio_util::task::TaskTracker::new();
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let idle_timeout = cfg.idle_timeout;
    loop {
        // A slot first: at the limit, we stop accepting and the kernel queues new clients.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            // Requests in flight on this connection, and when the last one ended: an idle
            // keep-alive connection is closed after `idle_timeout`, a busy one never (a
            // client waiting 30 s for a report sends nothing, and that is not idleness).
            let activity = Arc::new(Activity::default());
            let act = activity.clone();
            let svc = service_fn(move |req| {
                let (h, act) = (handler.clone(), act.clone());
                async move {
                    let _busy = act.begin();
                    Ok::<_, Infallible>(h(req, peer).await)
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    r = conn.as_mut() => break r,
                    _ = stopped(&mut stop), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = activity.idle_for(idle_timeout), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(cfg.shutdown_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown timeout; closing them");
    }
}

/// What one connection is doing, for its idle timeout. Plain atomics: a request costs two
/// increments and a clock read, and the watcher wakes only a few times per timeout.
struct Activity {
    busy: std::sync::atomic::AtomicUsize,
    /// When the last request ended, in ms since `start`.
    last_ms: std::sync::atomic::AtomicU64,
    start: std::time::Instant,
}

struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let a = self.0;
        a.last_ms
            .store(a.start.elapsed().as_millis() as u64, Relaxed);
        a.busy.fetch_sub(1, Relaxed);
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            busy: Default::default(),
            last_ms: Default::default(),
            start: std::time::Instant::now(),
        }
    }
}

impl Activity {
    fn begin(&self) -> Busy<'_> {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(self)
    }

    /// Completes once no request has been in flight for about `d` (checked every `d/4`).
    async fn idle_for(&self, d: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let step = (d / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(step).await;
            let idle_since = self.last_ms.load(Relaxed);
            let now = self.start.elapsed().as_millis() as u64;
            if self.busy.load(Relaxed) == 0
                && now.saturating_sub(idle_since) >= d.as_millis() as u64
            {
                return;
            }
        }
    }
}

/// Raises the open-files limit to its hard maximum, as nginx does with
/// `worker_rlimit_nofile`: every client connection is a descriptor, and so is its upstream.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Binds a listening socket with a deep accept queue (4096, like nginx's `backlog` on Linux
/// distributions; the kernel caps it at `net.core.somaxconn`): a burst of a thousand
/// dashboards connecting at 9:00 must not overflow it into one-second SYN retries.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
