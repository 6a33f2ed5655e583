//! Accept loops for the proxy and admin listeners: connection limits, header timeouts,
//! HTTP/1.1 and HTTP/2, and graceful shutdown.

use crate::body::ProxyBody;
use crate::config::ServerConfig;
use crate::interim::InterimIo;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// An instance's stop signal: `None` while it serves, then the deadline of its drain.
///
/// One deadline for the whole drain, set once when the shutdown starts: the listeners wait
/// for their connections until it, and the instance then waits for fills until the same
/// instant, so a shutdown takes at most one `server.shutdown_timeout` in all, not one per
/// stage.
pub type Stop = watch::Receiver<Option<tokio::time::Instant>>;

/// Completes once `rx` says stop (or its sender is gone).
pub async fn stopped(rx: &mut Stop) {
    let _ = rx.wait_for(Option::is_some).await;
}

/// The deadline `rx` gave; `timeout` from now if it gave none (its sender went away).
pub fn deadline(rx: &Stop, timeout: Duration) -> tokio::time::Instant {
    let given = *rx.borrow();
    given.unwrap_or_else(|| tokio::time::Instant::now() + timeout)
}

/// Serves `listener` with `handler` until `shutdown` says stop, then stops accepting and
/// waits (until the deadline it carries) for open connections to finish their requests.
pub async fn serve<H, F>(listener: TcpListener, cfg: &ServerConfig, handler: H, mut shutdown: Stop)
where
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
    let open = Arc::new(OpenConnections::default());
    // One sweeper per listener closes idle keep-alive connections and, at shutdown, asks
    // every connection to finish: the connections themselves watch only a flag.
    let sweeper = tokio::spawn(open.clone().sweep(cfg.idle_timeout, shutdown.clone()));
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
        let ctl = open.add();
        let open = open.clone();
        connections.spawn(async move {
            let act = ctl.clone();
            // Interim responses are written on HTTP/1.1 only: HTTP/1.0 clients must not
            // get them (RFC 9110 §15.2), and hyper's HTTP/2 server sends none.
            let (io, interim) = InterimIo::new(stream);
            let svc = service_fn(move |mut req: Request<Incoming>| {
                if req.version() == http::Version::HTTP_11 {
                    req.extensions_mut().insert(interim.clone());
                }
                let (h, act) = (handler.clone(), act.clone());
                async move {
                    let _busy = act.begin();
                    Ok::<_, Infallible>(h(req, peer).await)
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                biased;
                r = conn.as_mut() => r,
                _ = ctl.closing() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            open.remove(&ctl);
            drop(permit);
        });
    }
    drop(listener);
    open.close_all();
    connections.close();
    let until = deadline(&shutdown, cfg.shutdown_timeout);
    if tokio::time::timeout_at(until, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown timeout; closing them");
    }
    sweeper.abort();
}

/// One open connection, as its sweeper sees it: what it is doing (for the idle timeout)
/// and a flag asking it to finish. Watching the flag costs the connection a few atomic
/// operations per wake-up; a shared channel or a timer per connection would cost a lock
/// or a timer-wheel update on every request.
struct Conn {
    id: u64,
    /// Requests in flight; an idle keep-alive connection is closed after `idle_timeout`,
    /// a busy one never (a client waiting 30 s for a report sends nothing, and that is
    /// not idleness).
    busy: AtomicUsize,
    /// When the last request ended, in ms since `start`.
    last_ms: AtomicU64,
    start: Instant,
    close: AtomicBool,
    waker: AtomicWaker,
}

struct Busy<'a>(&'a Conn);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let c = self.0;
        c.last_ms
            .store(c.start.elapsed().as_millis() as u64, Relaxed);
        c.busy.fetch_sub(1, Relaxed);
    }
}

impl Conn {
    fn begin(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Relaxed);
        Busy(self)
    }

    fn ask_to_close(&self) {
        self.close.store(true, Release);
        self.waker.wake();
    }

    /// Completes once the sweeper asks this connection to finish.
    fn closing(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.close.load(Acquire) {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Asked between the first look and the registration: seen now.
            if self.close.load(Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// Whether no request has been in flight for at least `d`.
    fn idle_for(&self, d: Duration) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        self.busy.load(Relaxed) == 0
            && now.saturating_sub(self.last_ms.load(Relaxed)) >= d.as_millis() as u64
    }
}

/// The open connections of one listener.
#[derive(Default)]
struct OpenConnections {
    next: AtomicU64,
    all: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl OpenConnections {
    fn add(&self) -> Arc<Conn> {
        let start = Instant::now();
        let c = Arc::new(Conn {
            id: self.next.fetch_add(1, Relaxed),
            busy: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            start,
            close: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.lock().insert(c.id, c.clone());
        c
    }

    fn remove(&self, c: &Conn) {
        self.lock().remove(&c.id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_all(&self) {
        for c in self.lock().values() {
            c.ask_to_close();
        }
    }

    /// Every `idle_timeout / 4` (10 ms at least), asks the connections idle for
    /// `idle_timeout` to close; at shutdown, asks them all.
    async fn sweep(self: Arc<Self>, idle_timeout: Duration, mut shutdown: Stop) {
        let step = (idle_timeout / 4).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = stopped(&mut shutdown) => {
                    self.close_all();
                    return;
                }
            }
            for c in self.lock().values() {
                if c.idle_for(idle_timeout) {
                    c.ask_to_close();
                }
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

/// Keeps transparent huge pages out of slate's memory, unless `MIMALLOC_ALLOW_THP` says
/// otherwise.
///
/// Why: mimalloc asks for huge pages (`madvise(MADV_HUGEPAGE)`), and a cache's heap is the
/// worst case for them: entries of every size are dropped one by one all over it, and a
/// 2 MiB page stays resident whole while one small entry on it lives. On the realistic
/// workload (bench/RESULTS.md, "RSS") huge pages were 600-740 MiB of 1.1 GiB of RSS at
/// `memory_limit = 256 MiB`, and grew while the store churned; without them RSS was 15-20%
/// lower at the same requests/s. `PR_SET_THP_DISABLE` holds for the whole process,
/// whichever allocator or library maps the memory, and for its children.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process; a kernel
        // without it returns EINVAL, which changes nothing, so the result is not needed.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
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
