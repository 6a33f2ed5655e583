//! The legacy reporting service behind slate: a pooled hyper client and header hygiene.

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::error::Error as _;
use std::net::IpAddr;
use std::time::Duration;

/// Why the upstream gave no usable response. Mapped to 502/504 in [`crate::error`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
    #[error("upstream response broke off: {0}")]
    Broken(String),
}

impl UpstreamError {
    /// The origin could not be reached, or closed before answering (RFC 9111 §4.2.4's
    /// "disconnected"): not a slow origin, nor an answer that broke off.
    pub fn is_disconnection(&self) -> bool {
        matches!(self, UpstreamError::Unreachable(_))
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Request headers that can change what the origin answers without being part of the
/// cache key: stripped from every request whose answer may be stored (cache poisoning).
pub const UNKEYED_REQUEST_HEADERS: [&str; 8] = [
    // slate's own: for slate, never for the origin.
    "slate-debug",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-server",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "forwarded",
];

/// `headers` with every value in an allocation of its own. hyper's client parses a
/// response's header values as slices of the connection's read buffer, so a value kept
/// keeps that whole buffer alive (tens to hundreds of KiB once the buffer has grown for
/// large bodies): a stored entry that kept them held about 1.5 times its body in memory no
/// one counted (`memory_limit` 1 GiB, RSS 1.7 GiB after 10,000 reports).
pub fn detached(headers: HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut last = None;
    for (name, value) in headers {
        // `into_iter` names a header once, then gives its further values without a name.
        if let Some(n) = name {
            last = Some(n);
        }
        let Some(n) = &last else { continue };
        let copy = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value.as_bytes()))
            .unwrap_or(value);
        out.append(n.clone(), copy);
    }
    out
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
}

/// The upstream connections' read buffer bound; also the largest response head.
const UPSTREAM_BUF: usize = 64 << 10;

pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            // A connection keeps its read buffer while it is pooled, grown to the largest
            // read it made (hyper's default bound is ~400 KiB): with hundreds of fills of
            // multi-MB reports at once, that is memory no entry accounts for. 64 KiB is
            // still 16 times a response head nginx would accept (`proxy_buffer_size` 4k).
            .http1_max_buf_size(UPSTREAM_BUF)
            .build(conn);
        Upstream { client }
    }

    /// Sends `req` (whose URI is the path and query only) to the upstream, within `timeout`
    /// for the response head. A request without a body that fails because a pooled
    /// keep-alive connection was closed under it is retried once on a fresh connection.
    pub async fn send(
        &self,
        cfg: &UpstreamConfig,
        mut req: Request<ProxyBody>,
        client_ip: Option<IpAddr>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: http::Uri = format!("{}{}", cfg.base, pq)
            .parse()
            .map_err(|e| UpstreamError::Unreachable(format!("bad upstream URI: {e}")))?;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        let h = req.headers_mut();
        strip_hop_by_hop(h);
        if let Ok(v) = HeaderValue::from_str(cfg.authority.as_str()) {
            h.insert(header::HOST, v);
        }
        h.append(header::VIA, HeaderValue::from_static("1.1 slate"));
        if let Some(ip) = client_ip {
            let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&xff) {
                h.insert("x-forwarded-for", v);
            }
        }
        let retry = matches!(req.body(), ProxyBody::Empty).then(|| {
            let mut r = Request::new(ProxyBody::Empty);
            *r.method_mut() = req.method().clone();
            *r.uri_mut() = req.uri().clone();
            *r.headers_mut() = req.headers().clone();
            // Among them the callback for interim responses (`crate::interim`).
            *r.extensions_mut() = req.extensions().clone();
            r
        });
        let attempt = async {
            match self.client.request(req).await {
                Err(e) if retry.is_some() && is_stale_connection(&e) => {
                    tracing::debug!(error = %e, "pooled upstream connection was closed; retrying once");
                    match retry {
                        Some(r) => self.client.request(r).await,
                        None => unreachable!(),
                    }
                }
                r => r,
            }
        };
        match tokio::time::timeout(cfg.timeout, attempt).await {
            Err(_) => Err(UpstreamError::Timeout(cfg.timeout)),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(crate::error::error_chain(&e))),
            Ok(Ok(mut resp)) => {
                strip_hop_by_hop(resp.headers_mut());
                Ok(resp)
            }
        }
    }
}

/// The pooled connection was closed by the upstream before it answered.
fn is_stale_connection(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_canceled() || h.is_closed();
        }
        src = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values cut from a large buffer (as hyper parses them) come out in allocations of
    /// their own, every value of a repeated header kept, in order.
    #[test]
    fn detached_values_do_not_point_into_the_read_buffer() {
        let buf = bytes::Bytes::from(b"max-age=60tag-atag-b".repeat(4096));
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let mut h = HeaderMap::new();
        let cut = |a: usize, b: usize| HeaderValue::from_maybe_shared(buf.slice(a..b)).unwrap();
        h.insert(header::CACHE_CONTROL, cut(0, 10));
        h.append("x-tag", cut(10, 15));
        h.append("x-tag", cut(15, 20));
        let d = detached(h);
        let tags: Vec<&str> = d
            .get_all("x-tag")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(tags, ["tag-a", "tag-b"]);
        assert_eq!(d.get(header::CACHE_CONTROL).unwrap(), "max-age=60");
        for v in d.values() {
            assert!(
                !range.contains(&(v.as_bytes().as_ptr() as usize)),
                "{v:?} still in the buffer"
            );
        }
    }
}
