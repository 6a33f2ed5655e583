//! The request path, one file a step, in the order a request takes them.
//!
//! ```text
//! handle ─ admit ─ route (key::route: normalize, the one rule match) ─┬─ GET/HEAD: cached
//!   request.rs  rule says pass? credentials? → key, directives ────────┤
//!   lookup.rs   find the entry (and its variant) → classify: Found ────┤
//!   answer.rs   fresh → hit; servable stale → stale (+ one refresh) ───┤
//!   cached.rs   miss → coalesce: leader spawns a fill, followers wait ─┤
//!   fill.rs     fetch, decide, store, tell the waiters ────────────────┤
//!   remote.rs   the fill lock across instances sharing the store ──────┘
//!   pass.rs     other methods: pass through; unsafe ones invalidate (RFC 9111 §4.4)
//! PURGE ─ crate::purge_api
//! ```
//!
//! Every fill runs in a task of its own and reaches its clients through channels, so a
//! client that hangs up cancels nothing: the entry is still stored for the next one.
//! Back here, [`handle`] finishes every answer the same way: a client's conditional
//! request answered from what the cache serves, `Cache-Status`, `HEAD`, metrics.

mod answer;
mod cached;
mod fill;
mod lookup;
mod pass;
mod range;
mod remote;
mod request;

pub(crate) use cached::{refresh_ahead, warm};
pub(crate) use request::{key_of, MAX_KEYED_BODY};

use crate::body::ProxyBody;
use crate::config::{Config, Rule};
use crate::error::ProxyError;
use crate::instance::Shared;
use crate::key::{self, KeyError, NormalUrl};
use crate::otel;
use crate::phase::{CacheStatus, Fwd, Phase};
use answer::Conditional;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{field, Instrument};

/// What slate answers a request with, and how the cache saw it.
type Answer = Result<(Response<ProxyBody>, CacheStatus), ProxyError>;

/// RFC 9211 `Cache-Status`.
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A request's URL in normal form, and the rule matched on it: made once per request and
/// used for the key, the invalidation targets and the metrics route alike.
struct Routed<'c> {
    url: Result<NormalUrl, KeyError>,
    rule: Option<&'c Arc<Rule>>,
}

/// Handles one client request; never fails (errors become answers). Its trace's root
/// span (a child of the client's, given a `traceparent`) is made here.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let span = otel::span!(
        "request",
        otel.kind = "server",
        otel.name = %req.method(),
        http.request.method = %req.method(),
        url.path = req.uri().path(),
        http.response.status_code = field::Empty,
        slate.cache_status = field::Empty,
        slate.rule = field::Empty,
        slate.key = field::Empty,
        slate.bytes = field::Empty,
        slate.upstream_status = field::Empty,
    );
    otel::continue_trace(&span, req.headers());
    let resp = respond(shared, req, peer).instrument(span.clone()).await;
    // Tracing on: what the trace says of the answer (the span is closed when dropped).
    if !span.is_disabled() {
        span.record("http.response.status_code", resp.status().as_u16());
        if let Some(n) = http_body::Body::size_hint(resp.body()).exact() {
            span.record("slate.bytes", n);
        }
    }
    resp
}

/// The answer to one request, with its `Cache-Status`.
async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let cfg = shared.live.guard();
    let traced = shared.otel.is_some().then(|| req.method().clone());
    let head = req.method() == Method::HEAD;
    let conditional = (head || req.method() == Method::GET)
        .then(|| Conditional::of(req.headers()))
        .flatten();
    // A range is cut from the cache's answer; kept before the request is consumed.
    let range = (req.method() == Method::GET)
        .then(|| range::RangeAsk::of(req.headers()))
        .flatten();
    let mut route = None;
    let answer = match admit(&cfg, &req) {
        Ok(()) => {
            let routed = match key::route(&cfg, req.uri()) {
                Ok((url, rule)) => Routed { url: Ok(url), rule },
                Err(e) => Routed {
                    url: Err(e),
                    rule: None,
                },
            };
            route = routed.rule.map(|r| r.path.as_str());
            dispatch(&shared, &cfg, req, peer, routed).await
        }
        Err(e) => Err(e),
    };
    let (mut resp, status) = match answer {
        Ok(r) => r,
        Err(e) => {
            let mut r = e.response();
            if e.closes_connection() {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (r, e.cache_status())
        }
    };
    // A client's own conditional request, answered from what the cache serves (RFC 9111
    // §4.3.2); pass-through answers were the origin's to make.
    let from_cache = matches!(
        status.phase,
        Phase::Hit | Phase::Stale | Phase::Miss | Phase::Collapsed
    );
    if let Some(c) = conditional {
        if from_cache && resp.status() == StatusCode::OK && c.not_modified(resp.headers()) {
            answer::not_modified(&mut resp);
        }
    }
    // Then a range of it (RFC 9110 §14); a 304 above has already won (§13.2.2).
    if from_cache {
        answer::accept_ranges(&mut resp);
        if let Some(r) = range {
            r.apply(&mut resp);
        }
    }
    // slate's own cache control is for slate alone (SPEC "Targeted cache control").
    resp.headers_mut()
        .remove(crate::policy::SLATE_CACHE_CONTROL);
    shared.metrics.request(status.phase, route, status.saved_ms);
    if cfg.log.access_log {
        tracing::info!(target: "slate::access", peer = %peer, status = resp.status().as_u16(), cache = ?status.header());
    }
    if let Some(m) = &traced {
        record_outcome(&status, route, m);
    }
    answer::add_cache_status(&mut resp, &status);
    if head {
        answer::strip_body(&mut resp);
    }
    resp
}

/// The cache's outcome, on the request's span (the current one).
fn record_outcome(status: &CacheStatus, route: Option<&str>, method: &Method) {
    let span = tracing::Span::current();
    if let Ok(v) = status.header().to_str() {
        span.record("slate.cache_status", v);
    }
    if let Some(r) = route {
        span.record("slate.rule", r);
        // As OpenTelemetry names server spans: the method and the route (the rule).
        otel::rename(&span, format!("{method} {r}"));
    }
    if let Some(s) = status.fwd_status {
        span.record("slate.upstream_status", s);
    }
}

/// A request the cache may answer: its lookup, then the cached path; with its key shown
/// when it asked for it (`Slate-Debug: key`) and may see it.
async fn cacheable(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
    routed: Routed<'_>,
) -> Answer {
    let lookup = match request::lookup(shared, cfg, req, peer, routed).await? {
        request::Cacheable::Lookup(l) => l,
        request::Cacheable::Passed(answer) => return Ok(answer),
    };
    let mut answer = cached::serve(shared, cfg, &lookup).await;
    if let Ok((_, status)) = &answer {
        count_for_top(shared, &lookup, status);
    }
    if let (Some((key, inputs)), Ok((resp, _))) = (lookup.shown_key, &mut answer) {
        let h = resp.headers_mut();
        for (name, value) in [("slate-key", key), ("slate-key-inputs", inputs)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    answer
}

/// A hit or a miss of a report, for `/top` (its fills are counted where they run).
fn count_for_top(shared: &Shared, lookup: &request::Lookup, status: &CacheStatus) {
    let event = match status.phase {
        p if crate::metrics::is_hit(p) => crate::top::Event::Hit {
            saved_ms: status.saved_ms,
        },
        Phase::Miss => crate::top::Event::Miss,
        _ => return,
    };
    shared
        .top
        .record(shared.clock.now_ms(), &lookup.report(), event);
}

/// What is refused before the URL is even read.
fn admit(cfg: &Config, req: &Request<Incoming>) -> Result<(), ProxyError> {
    let pq_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if pq_len > cfg.server.max_url_length {
        return Err(ProxyError::UriTooLong(cfg.server.max_url_length));
    }
    // HTTP/1.x absolute-form (`GET http://other.example/x`) is for forward proxies: a
    // reverse proxy answers for its own origin only. (HTTP/2 always carries an authority.)
    if req.version() < http::Version::HTTP_2
        && req.uri().scheme().is_some()
        && req.method() != Method::OPTIONS
    {
        return Err(ProxyError::BadRequest(
            "absolute-form request targets are for forward proxies; send the path only".into(),
        ));
    }
    Ok(())
}

async fn dispatch(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
    routed: Routed<'_>,
) -> Answer {
    match *req.method() {
        Method::GET | Method::HEAD => cacheable(shared, cfg, req, peer, routed).await,
        Method::CONNECT => Err(ProxyError::MethodNotAllowed(
            "CONNECT is not supported by a reverse proxy".into(),
        )),
        _ if req.method().as_str() == "PURGE" => {
            let resp = crate::purge_api::purge_method(shared, cfg, req, peer).await?;
            Ok((resp, CacheStatus::new(Phase::Purge)))
        }
        // Safe methods pass through untouched.
        Method::OPTIONS | Method::TRACE => {
            let req = req.map(ProxyBody::Incoming);
            let s = CacheStatus::fwd(Phase::Pass, Fwd::Method);
            pass::pass(shared, cfg, req, peer, s).await
        }
        // A rule's `methods`: lookups keyed on their body.
        ref m if routed.rule.is_some_and(|r| r.keys_body(m)) => {
            cacheable(shared, cfg, req, peer, routed).await
        }
        // Anything else may change the resource, like methods whose safety is unknown
        // (RFC 9111 §4.4): pass through, and invalidate on success.
        _ => pass::unsafe_method(shared, cfg, req, peer, routed.url.ok()).await,
    }
}
