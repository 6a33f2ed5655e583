//! A slow report origin, built in: the back end of `slate --demo`, and the origin of the
//! benchmarks (`slate demo-origin`).

use crate::body::ProxyBody;
use crate::config::{Config, ServerConfig};
use crate::server;
use http::{header, HeaderValue, Response, StatusCode};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the demo origin behaves.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// How long each report takes to "compute".
    pub delay: Duration,
    /// Pad bodies to at least this many bytes (0: no padding).
    pub body_size: usize,
}

/// The accept loop's settings: slate's defaults, without a header-read or idle timeout
/// (a slow origin lets its clients keep their connections as long as they like).
fn server_config() -> ServerConfig {
    let day = Duration::from_secs(24 * 3600);
    ServerConfig {
        header_read_timeout: day,
        idle_timeout: day,
        ..Config::default_config().server
    }
}

/// Serves reports on `listener` until `shutdown`; returns the number of requests served.
pub async fn origin(
    listener: TcpListener,
    cfg: OriginConfig,
    shutdown: impl Future<Output = ()>,
) -> u64 {
    let count = Arc::new(AtomicU64::new(0));
    // One padded body, built once: with no delay this is the "bare hyper server answering
    // the same bytes from memory" that benchmarks compare against.
    let fixed: Option<bytes::Bytes> = (cfg.body_size > 0).then(|| {
        let mut s = String::from("{\"report\":\"bench\",\"rows\":[");
        while s.len() + 16 < cfg.body_size {
            s.push_str("[1,2,3,4,5,6],");
        }
        s.push_str("[0]]}");
        while s.len() < cfg.body_size {
            s.push(' ');
        }
        bytes::Bytes::from(s)
    });
    let count2 = count.clone();
    let handler = move |req: http::Request<hyper::body::Incoming>, _peer: SocketAddr| {
        let n = count2.fetch_add(1, Ordering::Relaxed) + 1;
        let (delay, fixed) = (cfg.delay, fixed.clone());
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let body = match fixed {
                Some(b) => b,
                None => report(req.uri(), n).into(),
            };
            let mut r = Response::new(ProxyBody::Full(Some(body)));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    };
    // slate's own accept loop (it backs off on EMFILE instead of spinning); `shutdown`
    // stops it at once, as the origin never waited for its connections.
    let server = server_config();
    let (stop, stopped) = watch::channel(None);
    let stop_on_shutdown = async move {
        shutdown.await;
        let _ = stop.send(Some(tokio::time::Instant::now()));
    };
    tokio::join!(
        server::serve(listener, &server, handler, stopped),
        stop_on_shutdown
    );
    count.load(Ordering::Relaxed)
}

/// A small JSON "report" that shows when it was computed, so a hit is easy to tell apart.
fn report(uri: &http::Uri, n: u64) -> String {
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let params: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| format!("{:?}", p))
        .collect();
    format!(
        "{{\"report\": {:?}, \"params\": [{}], \"computed_at\": {:?}, \"computation\": {n}, \"total\": {}}}\n",
        uri.path(),
        params.join(", "),
        now,
        (n * 7919) % 100_000
    )
}
