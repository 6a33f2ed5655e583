//! A slow report origin, built in: the back end of `slate --demo`, and the origin of the
//! benchmarks (`slate demo-origin`).

use crate::body::ProxyBody;
use http::{header, HeaderValue, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How the demo origin behaves.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// How long each report takes to "compute".
    pub delay: Duration,
    /// Pad bodies to at least this many bytes (0: no padding).
    pub body_size: usize,
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
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (count, cfg, fixed, builder) =
            (count.clone(), cfg.clone(), fixed.clone(), builder.clone());
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                    let (cfg, fixed) = (cfg.clone(), fixed.clone());
                    async move {
                        if !cfg.delay.is_zero() {
                            tokio::time::sleep(cfg.delay).await;
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
                        Ok::<_, Infallible>(r)
                    }
                });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
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
