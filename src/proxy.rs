//! The request path.
//!
//! ```text
//! GET/HEAD ─ normalize ─ rule ─ key ─ store.get ─┬─ fresh ─────────────────────── hit
//!                                                ├─ stale in window / soft-purged ─ stale (+ one refresh)
//!                                                └─ miss ─ coalesce ─┬─ leader: spawn fill, wait for it
//!                                                                    └─ follower: wait for the leader's fill
//! POST/PUT/PATCH/DELETE ─ pass through ─ success: purge the URL (RFC 9111 §4.4)
//! PURGE ─ authorize ─ purge log
//! anything else ─ pass through untouched
//! ```
//!
//! Every fill runs in a task of its own and reaches its clients through channels, so a
//! client that hangs up cancels nothing: the entry is still stored for the next one.

use crate::body::ProxyBody;
use crate::coalesce::{Outcome, Role};
use crate::config::{Config, Rule};
use crate::entry::{self, Entry};
use crate::error::ProxyError;
use crate::instance::Shared;
use crate::key::{self, CacheKey};
use crate::phase::{CacheStatus, Phase};
use crate::policy::{self, Decision};
use crate::purge::{PurgeRequest, Target, Verdict};
use crate::store::{Coordination, Event, FillReport};
use crate::upstream::{UpstreamError, UNKEYED_REQUEST_HEADERS};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the leader's client gets from the fill.
enum ForLeader {
    /// The same outcome followers get.
    Outcome(Arc<Outcome>),
    /// A response for the leader alone (not shareable, or streamed).
    Private(Box<(Response<ProxyBody>, CacheStatus)>),
}

/// A cacheable request, resolved: its rule, key and the headers to send upstream.
#[derive(Clone)]
struct Lookup {
    rule: Option<Arc<Rule>>,
    key: CacheKey,
    /// The client's request target, forwarded as sent.
    path_and_query: http::Uri,
    /// The client's request headers (see [`Lookup::upstream_request`] for what goes up).
    headers: HeaderMap,
    /// The client's own `Cache-Control` directives.
    directives: policy::RequestDirectives,
    peer: SocketAddr,
}

/// Handles one client request; never fails (errors become answers).
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let cfg = shared.live.guard();
    let head = req.method() == Method::HEAD;
    let route_idx = cfg
        .rules
        .iter()
        .position(|r| req.uri().path().starts_with(&r.path));
    let conditional = (head || req.method() == Method::GET)
        .then(|| Conditional::of(req.headers()))
        .flatten();
    let (mut resp, status) = match route(&shared, &cfg, req, peer).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = e.response();
            if r.status() == StatusCode::BAD_REQUEST {
                // After a malformed request the connection's framing cannot be trusted.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (r, e.cache_status())
        }
    };
    // A client's own conditional request, answered from what the cache serves (RFC 9111
    // §4.3.2); pass-through answers were the origin's to make.
    if let Some(c) = conditional {
        let from_cache = matches!(
            status.phase,
            Phase::Hit | Phase::Stale | Phase::Miss | Phase::Collapsed
        );
        if from_cache && resp.status() == StatusCode::OK && c.not_modified(resp.headers()) {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            *resp.body_mut() = ProxyBody::Empty;
            for h in [
                header::CONTENT_LENGTH,
                header::CONTENT_ENCODING,
                header::CONTENT_RANGE,
            ] {
                resp.headers_mut().remove(h);
            }
        }
    }
    let route = route_idx.map(|i| cfg.rules[i].path.as_str());
    shared.metrics.request(status.phase, route, status.saved_ms);
    if cfg.log.access_log {
        tracing::info!(target: "slate::access", peer = %peer, status = resp.status().as_u16(), cache = ?status.header());
    }
    // RFC 9211: caches add their member at the end of the list; an upstream cache's own
    // Cache-Status stays in front of ours.
    let ours = status.header();
    let value = match resp
        .headers()
        .get(&CACHE_STATUS)
        .and_then(|v| v.to_str().ok())
    {
        Some(theirs) => {
            let joined = format!("{theirs}, {}", ours.to_str().unwrap_or("slate"));
            HeaderValue::from_str(&joined).unwrap_or(ours)
        }
        None => ours,
    };
    resp.headers_mut().insert(CACHE_STATUS, value);
    if head {
        if let ProxyBody::Full(Some(b)) = resp.body() {
            let len = HeaderValue::from(b.len());
            resp.headers_mut().insert(header::CONTENT_LENGTH, len);
        }
        *resp.body_mut() = ProxyBody::Empty;
    }
    resp
}

use http::HeaderName;

/// RFC 9211 `Cache-Status`.
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A client's `If-None-Match` / `If-Modified-Since`.
struct Conditional {
    none_match: Option<String>,
    modified_since: Option<std::time::SystemTime>,
}

impl Conditional {
    fn of(h: &HeaderMap) -> Option<Conditional> {
        let none_match = h
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let modified_since = h
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok());
        (none_match.is_some() || modified_since.is_some()).then_some(Conditional {
            none_match,
            modified_since,
        })
    }

    /// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` (weak comparison) wins over
    /// `If-Modified-Since`.
    fn not_modified(&self, resp: &HeaderMap) -> bool {
        if let Some(inm) = &self.none_match {
            let Some(etag) = resp.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
            return inm
                .split(',')
                .any(|t| t.trim() == "*" || weak(t) == weak(etag));
        }
        match (self.modified_since, resp.get(header::LAST_MODIFIED)) {
            (Some(since), Some(lm)) => lm
                .to_str()
                .ok()
                .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
                .is_some_and(|lm| lm <= since),
            _ => false,
        }
    }
}

type Answer = Result<(Response<ProxyBody>, CacheStatus), ProxyError>;

async fn route(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Answer {
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
    match *req.method() {
        Method::GET | Method::HEAD => cached(shared, cfg, req, peer).await,
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
            let s = CacheStatus::fwd(Phase::Pass, "method");
            pass(shared, cfg, req, peer, s).await
        }
        // Anything else may change the resource, like methods whose safety is unknown
        // (RFC 9111 §4.4): pass through, and invalidate on success.
        _ => unsafe_method(shared, cfg, req, peer).await,
    }
}

/// Whether the request carries credentials that the rule does not key on.
fn unkeyed_credentials(headers: &HeaderMap, rule: Option<&Rule>) -> bool {
    [header::AUTHORIZATION, header::COOKIE]
        .iter()
        .any(|h| headers.contains_key(h) && !rule.is_some_and(|r| r.key_headers.contains(h)))
}

async fn cached(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Answer {
    let (url, rule) = key::route(cfg, req.uri())?;
    if rule.is_some_and(|r| !r.cache) {
        let req = req.map(|_| ProxyBody::Empty);
        let s = CacheStatus::fwd(Phase::Bypass, "bypass").detail("rule");
        return pass(shared, cfg, req, peer, s).await;
    }
    if rule.is_some_and(|r| r.ignore_cookies) {
        // As if the client had sent none: no credential, not upstream (the first viewer's
        // cookie must not shape what everyone is served), not in a `Vary: Cookie` match.
        req.headers_mut().remove(header::COOKIE);
    }
    if unkeyed_credentials(req.headers(), rule.map(|r| &**r)) {
        let req = req.map(|_| ProxyBody::Empty);
        let s = CacheStatus::fwd(Phase::Bypass, "bypass").detail("credentials");
        return pass(shared, cfg, req, peer, s).await;
    }
    let key_headers = rule.map_or(&[][..], |r| &r.key_headers[..]);
    let key = key::cache_key(&cfg.cache.namespace, url, key_headers, req.headers());
    let (parts, _) = req.into_parts();
    let mut directives = policy::RequestDirectives::parse(&parts.headers);
    if !cfg.cache.honor_client_no_cache {
        directives.ignore_requests_for_fresher();
    }
    let lookup = Lookup {
        rule: rule.cloned(),
        key,
        directives,
        path_and_query: parts.uri,
        headers: parts.headers,
        peer,
    };
    serve_cached(shared, cfg, lookup).await
}

impl Lookup {
    /// The request to send upstream for a fill: the client's path and query as sent, and
    /// its headers minus those that could change the answer without being in the key, and
    /// minus its conditionals (a fill fetches the whole representation). Built only when a
    /// request does go upstream, so hits pay nothing for it.
    fn upstream_request(&self, cfg: &Config) -> Request<ProxyBody> {
        let mut headers = self.headers.clone();
        for h in UNKEYED_REQUEST_HEADERS {
            headers.remove(h);
        }
        let key_headers = self.rule.as_ref().map_or(&[][..], |r| &r.key_headers[..]);
        for h in &cfg.cache.strip_headers {
            // A header that is part of the key is, by definition, safe to forward.
            if !key_headers.contains(h) {
                headers.remove(h);
            }
        }
        for h in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
        ] {
            headers.remove(h);
        }
        let mut req = Request::new(ProxyBody::Empty);
        *req.uri_mut() = self.path_and_query.clone();
        *req.headers_mut() = headers;
        req
    }
}

/// How a stored entry stands right now.
enum Found {
    Fresh(Arc<Entry>),
    /// Stale but servable at once, with one refresh started.
    Revalidate(Arc<Entry>, &'static str),
    /// Not servable as it is: a fetch is needed (RFC 9211 `fwd`: `stale`, or `request`
    /// when the client asked for it), conditional if the entry has a validator; and it may
    /// still answer if the origin fails (`stale-if-error`).
    Expired(Arc<Entry>, &'static str),
    /// Nothing usable: `uri-miss`, or `vary-miss` when only other variants are stored.
    Miss(&'static str),
}

async fn store_get(shared: &Shared, key: &str) -> Option<Arc<Entry>> {
    // This thread's copy of a hot entry: no lookup to time (see `store::hot`).
    if let Some(e) = shared.store.entries.get_hot(key) {
        return Some(e);
    }
    let t = std::time::Instant::now();
    let r = shared.store.entries.get(key).await;
    shared.metrics.store_latency.observe(t.elapsed());
    match r {
        Ok(e) => e,
        Err(e) => {
            shared.metrics.store_errors.add(1);
            tracing::warn!(error = %e, "store lookup failed; going upstream");
            None
        }
    }
}

/// The stored response for a request: the entry under its key, or, when that one varies on
/// request headers this request does not match, the variant stored for this request's
/// values (RFC 9111 §4.1). The primary key holds the most recent variant, so the common
/// case is one store read. `Err` names the kind of miss.
async fn find(shared: &Shared, lookup: &Lookup) -> Result<Arc<Entry>, &'static str> {
    let e = store_get(shared, &lookup.key.key).await.ok_or("uri-miss")?;
    if e.vary.is_empty() || e.vary_matches(&lookup.headers) {
        return Ok(e);
    }
    let mine: Vec<(String, String)> = e
        .vary
        .iter()
        .map(|(n, _)| (n.clone(), key::vary_value(&lookup.headers, n)))
        .collect();
    let v = store_get(shared, &key::variant_key(&lookup.key.key, &mine)).await;
    v.filter(|v| v.vary_matches(&lookup.headers))
        .ok_or("vary-miss")
}

/// How the entry found for `lookup` stands at `now` (ms, [`Clock::now_ms`]).
fn classify_at(
    shared: &Shared,
    found: Result<Arc<Entry>, &'static str>,
    lookup: &Lookup,
    now: u64,
) -> Found {
    let e = match found {
        Ok(e) => e,
        Err(why) => return Found::Miss(why),
    };
    let verdict = shared.purges.table().verdict(&e);
    let must_revalidate = e.flags & entry::MUST_REVALIDATE != 0;
    let no_cache = e.flags & entry::NO_CACHE != 0;
    match verdict {
        Verdict::Gone => Found::Miss("uri-miss"),
        Verdict::Stale if !must_revalidate && !no_cache => Found::Revalidate(e, "soft-purged"),
        Verdict::Stale => Found::Expired(e, "stale"),
        Verdict::Valid => {
            let ttl = e.ttl_ms(now);
            let d = &lookup.directives;
            let client_wants_fresher = d.no_cache
                || d.max_age
                    .is_some_and(|m| e.age_ms(now) > m.saturating_mul(1000))
                || d.min_fresh
                    .is_some_and(|m| ttl < m.saturating_mul(1000) as i64);
            let stale_by = (-ttl).max(0) as u64;
            let client_may_take_stale =
                e.flags & (entry::MUST_REVALIDATE | entry::PROXY_REVALIDATE) == 0
                    && d.max_stale
                        .is_some_and(|m| stale_by <= m.saturating_mul(1000));
            if client_wants_fresher {
                Found::Expired(e, "request")
            } else if no_cache {
                Found::Expired(e, "stale")
            } else if ttl > 0 {
                Found::Fresh(e)
            } else if must_revalidate {
                Found::Expired(e, "stale")
            } else if stale_by < e.swr_ms {
                Found::Revalidate(e, "stale-while-revalidate")
            } else if client_may_take_stale {
                Found::Revalidate(e, "max-stale")
            } else {
                Found::Expired(e, "stale")
            }
        }
    }
}

fn classify(shared: &Shared, found: Result<Arc<Entry>, &'static str>, lookup: &Lookup) -> Found {
    classify_at(shared, found, lookup, shared.clock.now_ms())
}

/// Whether an expired entry may still answer for an origin failure now.
fn usable_on_error(shared: &Shared, e: &Entry) -> bool {
    let ttl = e.ttl_ms(shared.clock.now_ms());
    if ttl > 0 {
        e.flags & entry::NO_CACHE == 0
    } else {
        ttl.unsigned_abs() < e.sie_ms
    }
}

/// A response built from an entry. `from_store`: it was served from the store (so it gets
/// an `Age`), rather than just fetched.
fn entry_response(shared: &Shared, e: &Entry, from_store: bool) -> Response<ProxyBody> {
    entry_response_at(shared, e, from_store, shared.clock.now_ms())
}

/// [`entry_response`] at `now` (ms), for callers that read the clock already.
fn entry_response_at(
    shared: &Shared,
    e: &Entry,
    from_store: bool,
    now: u64,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Full(Some(e.body.clone())));
    *r.status_mut() = e.status;
    *r.headers_mut() = e.headers.clone();
    // A response that is not new carries its age, also on a miss: an upstream cache's Age
    // must reach the next cache down (RFC 9111 §5.1).
    if from_store || e.initial_age_ms >= 1000 {
        let age = e.age_ms(now) / 1000;
        r.headers_mut().insert(header::AGE, HeaderValue::from(age));
    }
    if from_store {
        shared.metrics.bytes_from_cache.add(e.body.len() as u64);
    }
    r.headers_mut()
        .append(header::VIA, HeaderValue::from_static("1.1 slate"));
    r
}

/// A stale entry served because the origin failed: it went upstream (`fwd=stale`), so it
/// is not a `hit` (RFC 9211 §2.1).
fn stale_if_error(shared: &Shared, e: &Entry, upstream_status: Option<u16>) -> CacheStatus {
    let mut s = stale_status(shared, e, "stale-if-error");
    s.fwd = Some("stale");
    s.fwd_status = upstream_status;
    s
}

fn stale_status(shared: &Shared, e: &Entry, detail: &'static str) -> CacheStatus {
    let ttl = e.ttl_ms(shared.clock.now_ms()).min(0);
    CacheStatus {
        ttl: Some(ttl.div_euclid(1000)),
        ..CacheStatus::new(Phase::Stale)
    }
    .detail(detail)
}

async fn serve_cached(shared: &Arc<Shared>, cfg: &Arc<Config>, lookup: Lookup) -> Answer {
    // A few rounds at most: a round ends early when a leader vanished without an outcome,
    // or when the fill we waited for brought another variant than ours.
    for _ in 0..4 {
        let mut stale = None;
        // One clock read serves the whole hit: freshness, `ttl` and `Age` agree.
        let now = shared.clock.now_ms();
        let fwd = match classify_at(shared, find(shared, &lookup).await, &lookup, now) {
            Found::Fresh(e) => {
                let s = CacheStatus::hit(e.ttl_ms(now)).saved(e.fetch_ms);
                return Ok((entry_response_at(shared, &e, true, now), s));
            }
            Found::Revalidate(e, why) => {
                refresh(shared, cfg, &lookup, Some(e.clone()));
                let s = stale_status(shared, &e, why).saved(e.fetch_ms);
                return Ok((entry_response(shared, &e, true), s));
            }
            Found::Expired(e, why) => {
                stale = Some(e);
                why
            }
            Found::Miss(why) => why,
        };
        if lookup.directives.only_if_cached {
            return Err(ProxyError::NotCached);
        }
        // A dead or blackholed upstream must not pile up fills without bound.
        if shared.flights.in_flight() >= MAX_FILLS_IN_FLIGHT {
            return Err(ProxyError::Overloaded);
        }
        let outcome = match shared.flights.join(&lookup.key.key) {
            Role::Leader(permit) => {
                // Double-checked: the previous fill may have stored the entry and released
                // its permit between our lookup and our join.
                if let Found::Fresh(e) = classify(shared, find(shared, &lookup).await, &lookup) {
                    let collapsed = true;
                    let (stored, revalidated) = (true, false);
                    let o = Outcome::Shared {
                        entry: e.clone(),
                        stored,
                        collapsed,
                        revalidated,
                    };
                    permit.finish(Arc::new(o));
                    let s = CacheStatus::hit(e.ttl_ms(shared.clock.now_ms()));
                    return Ok((entry_response(shared, &e, true), s));
                }
                let (tx, rx) = oneshot::channel();
                let job = Fill {
                    shared: shared.clone(),
                    cfg: cfg.clone(),
                    lookup: lookup.clone(),
                    validate: stale.clone().filter(|e| e.has_validator()),
                    leader: Some(tx),
                };
                shared.tasks.spawn(job.run(permit));
                match rx.await {
                    Ok(ForLeader::Private(p)) => return Ok(*p),
                    Ok(ForLeader::Outcome(o)) => (o, Phase::Miss),
                    Err(_) => (Arc::new(Outcome::Abandoned), Phase::Miss),
                }
            }
            Role::Follower(f) => {
                let bound = cfg.upstream.timeout + Duration::from_secs(5);
                match tokio::time::timeout(bound, f.wait()).await {
                    Ok(o) => (o, Phase::Collapsed),
                    Err(_) => return Err(UpstreamError::Timeout(cfg.upstream.timeout).into()),
                }
            }
        };
        let (outcome, phase) = outcome;
        match &*outcome {
            Outcome::Shared { entry, .. } if !entry.vary_matches(&lookup.headers) => continue,
            Outcome::Shared {
                entry,
                stored,
                collapsed,
                revalidated,
            } => {
                let phase = if *collapsed { Phase::Collapsed } else { phase };
                if entry.status.is_server_error() {
                    if let Some(s) = stale.as_ref().filter(|s| usable_on_error(shared, s)) {
                        let st = stale_if_error(shared, s, Some(entry.status.as_u16()));
                        return Ok((entry_response(shared, s, true), st));
                    }
                }
                let mut s = CacheStatus::fwd(phase, fwd);
                if phase == Phase::Collapsed {
                    s.saved_ms = entry.fetch_ms;
                }
                s.stored = *stored && phase == Phase::Miss;
                s.fwd_status = Some(if *revalidated {
                    304
                } else {
                    entry.status.as_u16()
                });
                // A waiter's answer was not made for its request: it carries Age (RFC 9111
                // §5.1), like a hit; so does a revalidated entry.
                let not_new = *revalidated || phase == Phase::Collapsed;
                return Ok((entry_response(shared, entry, not_new), s));
            }
            Outcome::Failed(err) => {
                if let Some(s) = stale.as_ref().filter(|s| usable_on_error(shared, s)) {
                    let st = stale_if_error(shared, s, None);
                    return Ok((entry_response(shared, s, true), st));
                }
                return Err(err.clone().into());
            }
            Outcome::Pass => {
                let req = lookup.upstream_request(cfg);
                let s = CacheStatus::fwd(Phase::Miss, fwd).detail("uncacheable");
                return pass(shared, cfg, req, lookup.peer, s).await;
            }
            Outcome::Abandoned => continue,
        }
    }
    Err(UpstreamError::Broken("the fill for this URL was abandoned repeatedly".into()).into())
}

/// Starts one background refresh of a stale entry, unless one already runs.
fn refresh(shared: &Arc<Shared>, cfg: &Arc<Config>, lookup: &Lookup, stale: Option<Arc<Entry>>) {
    if let Role::Leader(permit) = shared.flights.join(&lookup.key.key) {
        let job = Fill {
            shared: shared.clone(),
            cfg: cfg.clone(),
            lookup: lookup.clone(),
            validate: stale.filter(|e| e.has_validator()),
            leader: None,
        };
        shared.tasks.spawn(job.run(permit));
    }
}

/// Fetches `url` through the normal coalesced fill path, as if a client asked (warming).
pub async fn warm(shared: &Arc<Shared>, url: &str) -> Result<StatusCode, ProxyError> {
    let cfg = shared.live.get();
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ProxyError::BadRequest(format!("bad warm URL {url:?}")))?;
    let (nurl, rule) = key::route(&cfg, &uri)?;
    if rule.is_some_and(|r| !r.cache) {
        return Err(ProxyError::BadRequest(format!(
            "{url}: its rule says cache = false"
        )));
    }
    let lookup = Lookup {
        // The variant a client sending none of the rule's key_headers would get.
        key: key::cache_key(
            &cfg.cache.namespace,
            nurl,
            rule.map_or(&[][..], |r| &r.key_headers[..]),
            &HeaderMap::new(),
        ),
        rule: rule.cloned(),
        path_and_query: uri,
        headers: HeaderMap::new(),
        directives: Default::default(),
        peer: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    // Still fresh past the next round: nothing to do. Otherwise refill now, before it
    // expires, so the first client after the round never waits for the report.
    let horizon = cfg.warm.every.as_millis() as i64 + 5_000;
    let found = classify(shared, find(shared, &lookup).await, &lookup);
    let mut validate = None;
    match found {
        Found::Fresh(e) if e.ttl_ms(shared.clock.now_ms()) > horizon => return Ok(e.status),
        Found::Fresh(e) | Found::Revalidate(e, _) | Found::Expired(e, _) => validate = Some(e),
        Found::Miss(_) => {}
    }
    let outcome = match shared.flights.join(&lookup.key.key) {
        Role::Leader(permit) => {
            let (tx, rx) = oneshot::channel();
            let job = Fill {
                shared: shared.clone(),
                cfg: cfg.clone(),
                lookup,
                validate: validate.filter(|e| e.has_validator()),
                leader: Some(tx),
            };
            job.run(permit).await;
            match rx.await {
                Ok(ForLeader::Outcome(o)) => o,
                Ok(ForLeader::Private(p)) => return Ok(p.0.status()),
                Err(_) => Arc::new(Outcome::Abandoned),
            }
        }
        Role::Follower(f) => f.wait().await,
    };
    match &*outcome {
        Outcome::Shared { entry, .. } if entry.status.is_server_error() => {
            Err(UpstreamError::Broken(format!("upstream answered {}", entry.status)).into())
        }
        Outcome::Shared { entry, .. } => Ok(entry.status),
        Outcome::Failed(e) => Err(e.clone().into()),
        Outcome::Pass => Ok(StatusCode::OK),
        Outcome::Abandoned => Err(UpstreamError::Broken("warm fill abandoned".into()).into()),
    }
}

/// Distinct fills one instance runs at once; past this, new misses get 503 at once.
const MAX_FILLS_IN_FLIGHT: usize = 4096;

type FillResult = (Arc<Outcome>, Option<(Response<ProxyBody>, CacheStatus)>);

/// An entry another instance (or an earlier fill) stored while we waited.
fn shared_by_another(entry: Arc<Entry>) -> Arc<Outcome> {
    Arc::new(Outcome::Shared {
        entry,
        stored: false,
        collapsed: true,
        revalidated: false,
    })
}

/// How often a waiter on another instance's fill looks at the store, in case it missed
/// the owner's event.
const REMOTE_POLL: Duration = Duration::from_millis(250);

/// The next `Filled` event for `key`; `None` when events are unavailable (then the caller's
/// poll is all there is).
async fn next_filled(
    events: &mut Option<tokio::sync::broadcast::Receiver<Event>>,
    key: &str,
) -> Option<FillReport> {
    let Some(rx) = events else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(Event::Filled { key: k, result }) if k == key => return Some(result),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return None,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *events = None;
                return None;
            }
        }
    }
}

/// One fill: fetch from upstream, decide, store, tell the waiters.
struct Fill {
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    lookup: Lookup,
    /// A stored entry to revalidate: its validators go upstream, and a 304 renews it.
    validate: Option<Arc<Entry>>,
    leader: Option<oneshot::Sender<ForLeader>>,
}

/// A body read in full, or the part read before it proved too large to buffer.
enum Read {
    Whole(Bytes),
    TooLarge(Vec<Bytes>, Incoming),
}

async fn read_limited(
    mut body: Incoming,
    limit: u64,
    declared: Option<u64>,
) -> Result<Read, UpstreamError> {
    if declared.is_some_and(|n| n > limit) {
        return Ok(Read::TooLarge(Vec::new(), body));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(16 << 10).min(limit) as usize);
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::Broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                chunks.push(buf.freeze());
                chunks.push(data);
                return Ok(Read::TooLarge(chunks, body));
            }
            buf.extend_from_slice(&data);
        }
    }
    if declared.is_some_and(|n| n != buf.len() as u64) {
        return Err(UpstreamError::Broken(
            "body shorter than its Content-Length".into(),
        ));
    }
    Ok(Read::Whole(buf.freeze()))
}

impl Fill {
    async fn run(mut self, permit: crate::coalesce::Permit) {
        let leader = self.leader.take();
        let (outcome, private) = match &self.shared.store.peers {
            Some(peers) => self.across_instances(&**peers).await,
            None => self.fetch().await,
        };
        // Release the key only now: the entry (if any) is in the store already.
        permit.finish(outcome.clone());
        if let Some(tx) = leader {
            let _ = tx.send(match private {
                Some(p) => ForLeader::Private(Box::new(p)),
                None => ForLeader::Outcome(outcome),
            });
        }
    }

    /// Single-flight across instances sharing the store: take the key's fill lock, or wait
    /// for whoever holds it. The owner renews its lease while it fetches and releases the
    /// lock when done; waiters wake on the owner's `Filled` event (or a bounded poll) and
    /// answer from the store. A lock whose owner died expires after one lease, and one
    /// waiter takes it over. A store that does not answer is no reason to fail: we fetch.
    async fn across_instances(&self, peers: &dyn Coordination) -> FillResult {
        let sh = &self.shared;
        let key = &self.lookup.key.key;
        let lock = key::lock_key(key);
        let token = format!("{:016x}", rand::random::<u64>());
        let lease = self.cfg.store.fill_lease;
        let deadline = tokio::time::Instant::now() + self.cfg.upstream.timeout + lease * 2;
        // Subscribe before trying the lock, so the owner's event cannot slip between.
        let mut events = Some(peers.subscribe());
        let mut waited = false;
        loop {
            match peers.acquire(&lock, &token, lease).await {
                Ok(false) => {}
                Ok(true) => {
                    if waited {
                        sh.metrics.lock_takeovers.add(1);
                    }
                    // The previous owner may have stored it just before we got the lock.
                    if let Found::Fresh(e) =
                        classify(sh, find(sh, &self.lookup).await, &self.lookup)
                    {
                        let _ = peers.release(&lock, &token).await;
                        return (shared_by_another(e), None);
                    }
                    let renew = async {
                        loop {
                            tokio::time::sleep(lease / 3).await;
                            if !matches!(peers.renew(&lock, &token, lease).await, Ok(true)) {
                                tracing::warn!(key, "lost the fill lock while fetching");
                            }
                        }
                    };
                    let result = tokio::select! {
                        r = self.fetch() => r,
                        _ = renew => unreachable!("the renew loop never ends"),
                    };
                    let _ = peers.release(&lock, &token).await;
                    let said = match &*result.0 {
                        Outcome::Shared { stored: true, .. } => FillReport::Stored,
                        Outcome::Failed(e) => FillReport::Failed(e.to_string()),
                        _ => FillReport::Pass,
                    };
                    let _ = peers
                        .publish(Event::Filled {
                            key: key.clone(),
                            result: said,
                        })
                        .await;
                    return result;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fill lock unavailable; fetching without it");
                    return self.fetch().await;
                }
            }
            waited = true;
            sh.metrics.remote_waits.add(1);
            // Someone else fills: wait for its event, or poll, until the lock is gone.
            loop {
                let said = tokio::select! {
                    e = next_filled(&mut events, key) => e,
                    _ = tokio::time::sleep(REMOTE_POLL) => None,
                };
                if let Found::Fresh(e) = classify(sh, find(sh, &self.lookup).await, &self.lookup) {
                    return (shared_by_another(e), None);
                }
                match said {
                    Some(FillReport::Pass) => return (Arc::new(Outcome::Pass), None),
                    Some(FillReport::Failed(why)) => {
                        let e =
                            UpstreamError::Broken(format!("the instance that fetched it: {why}"));
                        return (Arc::new(Outcome::Failed(e)), None);
                    }
                    Some(FillReport::Stored) | None => {}
                }
                if tokio::time::Instant::now() > deadline {
                    return (
                        Arc::new(Outcome::Failed(UpstreamError::Timeout(
                            self.cfg.upstream.timeout,
                        ))),
                        None,
                    );
                }
                // The lock gone without an entry: its owner died (or stored nothing); try
                // to take it over.
                if !matches!(peers.held(&lock).await, Ok(true)) {
                    break;
                }
            }
        }
    }

    async fn fetch(&self) -> FillResult {
        let sh = &self.shared;
        let cfg = &self.cfg;
        let purge_seq = sh.purges.seq();
        let request_ms = sh.clock.now_ms();
        let deadline = tokio::time::Instant::now() + cfg.upstream.timeout;
        let mut req = self.lookup.upstream_request(cfg);
        if let Some(old) = &self.validate {
            let h = req.headers_mut();
            if let Some(etag) = old.headers.get(header::ETAG) {
                h.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = old.headers.get(header::LAST_MODIFIED) {
                h.insert(header::IF_MODIFIED_SINCE, lm.clone());
            }
        }
        sh.metrics.upstream_requests.add(1);
        let started = std::time::Instant::now();
        let resp = match sh
            .upstream
            .send(&cfg.upstream, req, Some(self.lookup.peer.ip()))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                sh.metrics.upstream_errors.add(1);
                tracing::warn!(url = %self.lookup.key.url.url, error = %e, "fill failed");
                return (Arc::new(Outcome::Failed(e)), None);
            }
        };
        let (parts, body) = resp.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        let read = tokio::time::timeout_at(
            deadline,
            read_limited(body, cfg.store.max_object_size, declared),
        )
        .await;
        let read = match read {
            Err(_) => Err(UpstreamError::Timeout(cfg.upstream.timeout)),
            Ok(r) => r,
        };
        let body = match read {
            Ok(Read::Whole(b)) => b,
            Ok(Read::TooLarge(chunks, rest)) => {
                return (
                    Arc::new(Outcome::Pass),
                    Some(self.stream(parts, chunks, rest)),
                );
            }
            Err(e) => {
                sh.metrics.upstream_errors.add(1);
                tracing::warn!(url = %self.lookup.key.url.url, error = %e, "fill body failed; nothing stored");
                return (Arc::new(Outcome::Failed(e)), None);
            }
        };
        sh.metrics.bytes_from_upstream.add(body.len() as u64);
        let fetch_time = started.elapsed();
        sh.metrics.upstream_latency.observe(fetch_time);
        let response_ms = sh.clock.now_ms();
        let (status, mut headers, body, revalidated) = match (&self.validate, parts.status) {
            // Not modified: the stored response, with its headers updated from the 304
            // (RFC 9111 §3.2, §4.3.4).
            (Some(old), StatusCode::NOT_MODIFIED) => {
                let mut h = old.headers.clone();
                let mut replaced: Vec<HeaderName> = Vec::new();
                for (name, value) in parts.headers.iter() {
                    if matches!(
                        *name,
                        header::CONTENT_LENGTH
                            | header::CONTENT_ENCODING
                            | header::CONTENT_RANGE
                            | header::TRANSFER_ENCODING
                    ) {
                        continue;
                    }
                    if !replaced.contains(name) {
                        h.remove(name);
                        replaced.push(name.clone());
                    }
                    h.append(name.clone(), value.clone());
                }
                (old.status, h, old.body.clone(), true)
            }
            _ => (parts.status, parts.headers, body, false),
        };
        headers.remove(header::CONTENT_LENGTH);
        let initial_age_ms = policy::initial_age_ms(&headers, request_ms, response_ms);
        headers.remove(header::AGE);
        let decision = if self.lookup.directives.no_store {
            // The request said its answer must not be stored (RFC 9111 §5.2.1.5).
            Decision::NoStore("request-no-store")
        } else {
            policy::decide(self.lookup.rule.as_deref(), status, &headers, response_ms)
        };
        let mut entry = Entry {
            status,
            flags: 0,
            stored_at_ms: response_ms,
            initial_age_ms,
            fresh_ms: 0,
            swr_ms: 0,
            sie_ms: 0,
            purge_seq,
            fetch_ms: fetch_time.as_millis() as u64,
            url: self.lookup.key.url.url.clone(),
            tags: Vec::new(),
            vary: Vec::new(),
            headers,
            body,
        };
        match decision {
            Decision::Store(f) => {
                entry.fresh_ms = f.fresh_ms;
                entry.swr_ms = f.swr_ms;
                entry.sie_ms = f.sie_ms;
                entry.tags = f.tags.clone();
                entry.vary = f
                    .vary
                    .iter()
                    .map(|n| (n.clone(), key::vary_value(&self.lookup.headers, n)))
                    .collect();
                if f.must_revalidate {
                    entry.flags |= entry::MUST_REVALIDATE;
                }
                if f.proxy_revalidate {
                    entry.flags |= entry::PROXY_REVALIDATE;
                }
                if f.no_cache {
                    entry.flags |= entry::NO_CACHE;
                }
                let keep = f.keep_for(initial_age_ms, entry.has_validator());
                let entry = Arc::new(entry);
                // A purge that landed while we fetched covers this response: hand it to
                // those who asked before, but never store it as fresh.
                let purged = sh.purges.table().verdict(&entry) != Verdict::Valid;
                let stored = !purged && self.store(&entry, keep).await;
                let o = Outcome::Shared {
                    entry,
                    stored,
                    collapsed: false,
                    revalidated,
                };
                (Arc::new(o), None)
            }
            Decision::NoStore(_) if status.is_server_error() => {
                let o = Outcome::Shared {
                    entry: Arc::new(entry),
                    stored: false,
                    collapsed: false,
                    revalidated,
                };
                (Arc::new(o), None)
            }
            Decision::NoStore(why) => {
                let r = entry_response(sh, &entry, false);
                let mut s = CacheStatus::fwd(Phase::Miss, "uri-miss").detail(why);
                s.fwd_status = Some(parts.status.as_u16());
                (Arc::new(Outcome::Pass), Some((r, s)))
            }
        }
    }

    /// Writes an entry under its key, and under its variant key when it varies.
    async fn store(&self, entry: &Arc<Entry>, keep: Duration) -> bool {
        let sh = &self.shared;
        let key = &self.lookup.key.key;
        let mut result = Ok(());
        if !entry.vary.is_empty() {
            result = sh
                .store
                .entries
                .put(&key::variant_key(key, &entry.vary), entry.clone(), keep)
                .await;
        }
        if result.is_ok() {
            result = sh.store.entries.put(key, entry.clone(), keep).await;
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                sh.metrics.store_errors.add(1);
                tracing::warn!(error = %e, "store write failed; response served uncached");
                false
            }
        }
    }

    /// A response too large to store: stream it to the leader's client through a channel.
    fn stream(
        &self,
        parts: http::response::Parts,
        chunks: Vec<Bytes>,
        mut rest: Incoming,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let (tx, rx) = mpsc::channel(16);
        self.shared.tasks.spawn(async move {
            for c in chunks.into_iter().filter(|c| !c.is_empty()) {
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            while let Some(frame) = rest.frame().await {
                let item = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => Ok(d),
                        Err(_) => continue,
                    },
                    Err(e) => Err(e.into()),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut r = Response::from_parts(parts, ProxyBody::Channel(rx));
        r.headers_mut()
            .append(header::VIA, HeaderValue::from_static("1.1 slate"));
        let mut s = CacheStatus::fwd(Phase::Miss, "uri-miss").detail("too-large");
        s.fwd_status = Some(r.status().as_u16());
        (r, s)
    }
}

/// Sends a request upstream as is and streams the answer back.
async fn pass(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<ProxyBody>,
    peer: SocketAddr,
    mut status: CacheStatus,
) -> Answer {
    shared.metrics.upstream_requests.add(1);
    let resp = shared
        .upstream
        .send(&cfg.upstream, req, Some(peer.ip()))
        .await
        .inspect_err(|_| {
            shared.metrics.upstream_errors.add(1);
        })?;
    status.fwd_status = Some(resp.status().as_u16());
    let mut resp = resp.map(ProxyBody::Incoming);
    resp.headers_mut()
        .append(header::VIA, HeaderValue::from_static("1.1 slate"));
    Ok((resp, status))
}

/// A `Location`-style reference as a normalized URL, if it points at this same origin.
fn same_origin_url(cfg: &Config, v: &str, host: Option<&str>, base_path: &str) -> Option<String> {
    let v = v.trim();
    let path_and_query = if v.contains("://") || v.starts_with("//") {
        // Absolute (or scheme-relative): only when it names the request's own host.
        let uri: http::Uri = if v.starts_with("//") {
            format!("http:{v}").parse().ok()?
        } else {
            v.parse().ok()?
        };
        let authority = uri.authority()?.as_str().to_ascii_lowercase();
        if Some(authority.as_str()) != host {
            return None;
        }
        uri.path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string())
    } else if v.starts_with('/') {
        v.to_string()
    } else {
        // Relative to the request's directory (RFC 3986 §5.2, without dot segments).
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{v}")
    };
    let path_and_query = path_and_query.split('#').next().unwrap_or_default();
    let uri: http::Uri = path_and_query.parse().ok()?;
    key::route(cfg, &uri).ok().map(|(u, _)| u.url)
}

/// Unsafe methods (POST, PUT, PATCH, DELETE, and any unknown one): pass through; a success
/// invalidates the URL (RFC 9111 §4.4).
async fn unsafe_method(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Answer {
    let target = key::route(cfg, req.uri()).ok().map(|(u, _)| u.url);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let base_path = req.uri().path().to_string();
    let req = req.map(ProxyBody::Incoming);
    let (resp, status) = pass(
        shared,
        cfg,
        req,
        peer,
        CacheStatus::fwd(Phase::Pass, "method"),
    )
    .await?;
    let ok = resp.status().is_success() || resp.status().is_redirection();
    if let (true, Some(url)) = (ok, target) {
        let mut targets = vec![Target::Url(url)];
        // RFC 9111 §4.4: also the URLs in Location and Content-Location, when they are on
        // the same origin (a relative reference, or the request's own host).
        for h in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(v) = resp.headers().get(&h).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(u) = same_origin_url(cfg, v, host.as_deref(), &base_path) {
                if !targets.contains(&Target::Url(u.clone())) {
                    targets.push(Target::Url(u));
                }
            }
        }
        let req = PurgeRequest {
            targets,
            soft: false,
        };
        if let Err(e) = shared.purges.purge(req).await {
            tracing::warn!(error = %e, "invalidation after an unsafe method failed");
        }
    }
    Ok((resp, status))
}
