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
use crate::clock::Clock;
use crate::coalesce::{Coalescer, Outcome, Role};
use crate::config::{reload::Live, Config, Rule};
use crate::entry::{self, Entry};
use crate::error::ProxyError;
use crate::key::{self, CacheKey};
use crate::metrics::Metrics;
use crate::phase::{CacheStatus, Phase};
use crate::policy::{self, Decision};
use crate::purge::{PurgeRequest, Purges, Target, Verdict};
use crate::store::{Event, Store};
use crate::upstream::{Upstream, UpstreamError, UNKEYED_REQUEST_HEADERS};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Everything one slate instance shares between its requests.
pub struct Shared {
    pub live: Live,
    pub store: Arc<dyn Store>,
    pub purges: Purges,
    pub flights: Coalescer,
    pub upstream: Upstream,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Fills and refreshes in flight; drained on shutdown.
    pub tasks: TaskTracker,
}

/// What the leader's client gets from the fill.
enum ForLeader {
    /// The same outcome followers get.
    Outcome(Arc<Outcome>),
    /// A response for the leader alone (not shareable, or streamed).
    Private(Response<ProxyBody>, CacheStatus),
}

/// A cacheable request, resolved: its rule, key and the headers to send upstream.
#[derive(Clone)]
struct Lookup {
    rule: Option<Rule>,
    key: CacheKey,
    /// The client's path and query, forwarded as sent.
    path_and_query: String,
    /// Request headers for the upstream (unkeyed and conditional headers removed).
    headers: HeaderMap,
    peer: SocketAddr,
}

/// Handles one client request; never fails (errors become answers).
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let cfg = shared.live.get();
    let head = req.method() == Method::HEAD;
    let (mut resp, status) = match route(&shared, &cfg, req, peer).await {
        Ok(r) => r,
        Err(e) => (e.response(), e.cache_status()),
    };
    shared.metrics.request(status.phase);
    if cfg.log.access_log {
        tracing::info!(target: "slate::access", peer = %peer, status = resp.status().as_u16(), cache = ?status.header());
    }
    resp.headers_mut()
        .insert(HeaderName::from_static("cache-status"), status.header());
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
    match *req.method() {
        Method::GET | Method::HEAD => cached(shared, cfg, req, peer).await,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            unsafe_method(shared, cfg, req, peer).await
        }
        Method::CONNECT => Err(ProxyError::MethodNotAllowed(
            "CONNECT is not supported by a reverse proxy".into(),
        )),
        _ if req.method().as_str() == "PURGE" => {
            crate::admin::purge_method(shared, cfg, req, peer).await
        }
        _ => {
            let req = req.map(ProxyBody::Incoming);
            pass(
                shared,
                cfg,
                req,
                peer,
                CacheStatus::fwd(Phase::Pass, "method"),
            )
            .await
        }
    }
}

/// Normalizes a request URL's path and query with the rule that applies to it.
pub fn normal_url<'c>(
    cfg: &'c Config,
    uri: &http::Uri,
) -> Result<(key::NormalUrl, Option<&'c Rule>), ProxyError> {
    let npath = key::normalize_path(uri.path())?;
    let rule = cfg.rule_for(&npath);
    let ignore = rule.map_or(&cfg.cache.ignore_params, |r| &r.ignore_params);
    Ok((key::normalize(uri.path(), uri.query(), ignore)?, rule))
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
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Answer {
    let (url, rule) = normal_url(cfg, req.uri())?;
    if rule.is_some_and(|r| !r.cache) {
        let req = req.map(|_| ProxyBody::Empty);
        let s = CacheStatus::fwd(Phase::Bypass, "bypass").detail("rule");
        return pass(shared, cfg, req, peer, s).await;
    }
    if unkeyed_credentials(req.headers(), rule) {
        let req = req.map(|_| ProxyBody::Empty);
        let s = CacheStatus::fwd(Phase::Bypass, "bypass").detail("credentials");
        return pass(shared, cfg, req, peer, s).await;
    }
    let key_headers = rule.map_or(&[][..], |r| &r.key_headers[..]);
    let key = key::cache_key(&cfg.cache.namespace, url, key_headers, req.headers());
    let (parts, _) = req.into_parts();
    let mut headers = parts.headers;
    for h in UNKEYED_REQUEST_HEADERS {
        headers.remove(h);
    }
    // A fill must fetch the whole representation, whatever this client already holds.
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
    let lookup = Lookup {
        rule: rule.cloned(),
        key,
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        headers,
        peer,
    };
    serve_cached(shared, cfg, lookup).await
}

/// How a stored entry stands right now.
enum Found {
    Fresh(Arc<Entry>),
    /// Stale but servable at once, with one refresh started.
    Revalidate(Arc<Entry>, &'static str),
    /// Stale beyond its windows: a miss, but servable if the origin fails (`stale-if-error`).
    Expired(Arc<Entry>),
    Miss,
}

async fn store_get(shared: &Shared, key: &str) -> Option<Arc<Entry>> {
    match shared.store.get(key).await {
        Ok(e) => e,
        Err(e) => {
            shared
                .metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "store lookup failed; going upstream");
            None
        }
    }
}

fn classify(shared: &Shared, entry: Option<Arc<Entry>>) -> Found {
    let Some(e) = entry else { return Found::Miss };
    let now = shared.clock.now_ms();
    let verdict = shared.purges.table().verdict(&e);
    let must_revalidate = e.flags & entry::MUST_REVALIDATE != 0;
    match verdict {
        Verdict::Gone => Found::Miss,
        Verdict::Stale if !must_revalidate => Found::Revalidate(e, "soft-purged"),
        Verdict::Stale => Found::Miss,
        Verdict::Valid => {
            let ttl = e.ttl_ms(now);
            if ttl > 0 {
                Found::Fresh(e)
            } else if (-ttl as u64) < e.swr_ms {
                Found::Revalidate(e, "stale-while-revalidate")
            } else if (-ttl as u64) < e.sie_ms {
                Found::Expired(e)
            } else {
                Found::Miss
            }
        }
    }
}

/// Whether an expired entry may still answer for an origin failure now.
fn usable_on_error(shared: &Shared, e: &Entry) -> bool {
    let ttl = e.ttl_ms(shared.clock.now_ms());
    ttl > 0 || ((-ttl) as u64) < e.sie_ms
}

/// A response built from an entry. `from_store`: it was served from the store (so it gets
/// an `Age`), rather than just fetched.
fn entry_response(shared: &Shared, e: &Entry, from_store: bool) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Full(Some(e.body.clone())));
    *r.status_mut() = e.status;
    *r.headers_mut() = e.headers.clone();
    if from_store {
        let age = e.age_ms(shared.clock.now_ms()) / 1000;
        r.headers_mut().insert(header::AGE, HeaderValue::from(age));
        shared
            .metrics
            .bytes_from_cache
            .fetch_add(e.body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    r.headers_mut()
        .append(header::VIA, HeaderValue::from_static("1.1 slate"));
    r
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
    // A few rounds at most: a round ends early only when a leader vanished without an outcome.
    for _ in 0..3 {
        let mut stale = None;
        let mut fwd = "uri-miss";
        match classify(shared, store_get(shared, &lookup.key.key).await) {
            Found::Fresh(e) => {
                let s = CacheStatus::hit(e.ttl_ms(shared.clock.now_ms()));
                return Ok((entry_response(shared, &e, true), s));
            }
            Found::Revalidate(e, why) => {
                refresh(shared, cfg, &lookup);
                return Ok((
                    entry_response(shared, &e, true),
                    stale_status(shared, &e, why),
                ));
            }
            Found::Expired(e) => {
                stale = Some(e);
                fwd = "stale";
            }
            Found::Miss => {}
        }
        let outcome = match shared.flights.join(&lookup.key.key) {
            Role::Leader(permit) => {
                // Double-checked: the previous fill may have stored the entry and released
                // its permit between our lookup and our join.
                if stale.is_none() {
                    if let Found::Fresh(e) =
                        classify(shared, store_get(shared, &lookup.key.key).await)
                    {
                        permit.finish(Arc::new(Outcome::Shared {
                            entry: e.clone(),
                            stored: true,
                            collapsed: true,
                        }));
                        let s = CacheStatus::hit(e.ttl_ms(shared.clock.now_ms()));
                        return Ok((entry_response(shared, &e, true), s));
                    }
                }
                let (tx, rx) = oneshot::channel();
                let job = Fill {
                    shared: shared.clone(),
                    cfg: cfg.clone(),
                    lookup: lookup.clone(),
                    leader: Some(tx),
                };
                shared.tasks.spawn(job.run(permit));
                match rx.await {
                    Ok(ForLeader::Private(resp, status)) => return Ok((resp, status)),
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
            Outcome::Shared {
                entry,
                stored,
                collapsed,
            } => {
                let phase = if *collapsed { Phase::Collapsed } else { phase };
                if entry.status.is_server_error() {
                    if let Some(s) = stale.as_ref().filter(|s| usable_on_error(shared, s)) {
                        let st = stale_status(shared, s, "stale-if-error");
                        return Ok((entry_response(shared, s, true), st));
                    }
                }
                let mut s = CacheStatus::fwd(phase, fwd);
                s.stored = *stored && phase == Phase::Miss;
                s.fwd_status = Some(entry.status.as_u16());
                return Ok((entry_response(shared, entry, false), s));
            }
            Outcome::Failed(err) => {
                if let Some(s) = stale.as_ref().filter(|s| usable_on_error(shared, s)) {
                    let st = stale_status(shared, s, "stale-if-error");
                    return Ok((entry_response(shared, s, true), st));
                }
                return Err(err.clone().into());
            }
            Outcome::Pass => {
                let mut req = Request::new(ProxyBody::Empty);
                *req.uri_mut() = lookup
                    .path_and_query
                    .parse()
                    .map_err(|_| ProxyError::BadRequest("unparseable request target".into()))?;
                *req.headers_mut() = lookup.headers.clone();
                let s = CacheStatus::fwd(Phase::Miss, fwd).detail("uncacheable");
                return pass(shared, cfg, req, lookup.peer, s).await;
            }
            Outcome::Abandoned => continue,
        }
    }
    Err(UpstreamError::Broken("the fill for this URL was abandoned repeatedly".into()).into())
}

/// Starts one background refresh of a stale entry, unless one already runs.
fn refresh(shared: &Arc<Shared>, cfg: &Arc<Config>, lookup: &Lookup) {
    if let Role::Leader(permit) = shared.flights.join(&lookup.key.key) {
        let job = Fill {
            shared: shared.clone(),
            cfg: cfg.clone(),
            lookup: lookup.clone(),
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
    let (nurl, rule) = normal_url(&cfg, &uri)?;
    if rule.is_some_and(|r| !r.cache) {
        return Err(ProxyError::BadRequest(format!(
            "{url}: its rule says cache = false"
        )));
    }
    let lookup = Lookup {
        key: key::cache_key(&cfg.cache.namespace, nurl, &[], &HeaderMap::new()),
        rule: rule.cloned(),
        path_and_query: url.to_string(),
        headers: HeaderMap::new(),
        peer: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    // Still fresh past the next round: nothing to do. Otherwise refill now, before it
    // expires, so the first client after the round never waits for the report.
    let horizon = cfg.warm.every.as_millis() as i64 + 5_000;
    if let Found::Fresh(e) = classify(shared, store_get(shared, &lookup.key.key).await) {
        if e.ttl_ms(shared.clock.now_ms()) > horizon {
            return Ok(e.status);
        }
    }
    let outcome = match shared.flights.join(&lookup.key.key) {
        Role::Leader(permit) => {
            let (tx, rx) = oneshot::channel();
            let job = Fill {
                shared: shared.clone(),
                cfg: cfg.clone(),
                lookup,
                leader: Some(tx),
            };
            job.run(permit).await;
            match rx.await {
                Ok(ForLeader::Outcome(o)) => o,
                Ok(ForLeader::Private(r, _)) => return Ok(r.status()),
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

type FillResult = (Arc<Outcome>, Option<(Response<ProxyBody>, CacheStatus)>);

/// How often a waiter on another instance's fill looks at the store, in case it missed
/// the owner's event.
const REMOTE_POLL: Duration = Duration::from_millis(250);

/// The fill lock of an entry key: `slate:<ns>:e:<hash>` → `slate:<ns>:l:<hash>`.
fn lock_key(key: &str) -> String {
    key.replacen(":e:", ":l:", 1)
}

/// The next `Filled` event for `key`; `None` when events are unavailable (then the caller's
/// poll is all there is).
async fn next_filled(
    events: &mut Option<tokio::sync::broadcast::Receiver<Event>>,
    key: &str,
) -> Option<String> {
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
        let (outcome, private) = if self.shared.store.shared() {
            self.across_instances().await
        } else {
            self.fetch().await
        };
        // Release the key only now: the entry (if any) is in the store already.
        permit.finish(outcome.clone());
        if let Some(tx) = leader {
            let _ = tx.send(match private {
                Some((r, s)) => ForLeader::Private(r, s),
                None => ForLeader::Outcome(outcome),
            });
        }
    }

    /// Single-flight across instances sharing the store: take the key's fill lock, or wait
    /// for whoever holds it. The owner renews its lease while it fetches and releases the
    /// lock when done; waiters wake on the owner's `Filled` event (or a bounded poll) and
    /// answer from the store. A lock whose owner died expires after one lease, and one
    /// waiter takes it over. A store that does not answer is no reason to fail: we fetch.
    async fn across_instances(&self) -> FillResult {
        let sh = &self.shared;
        let key = &self.lookup.key.key;
        let lock = lock_key(key);
        let token = format!("{:016x}", rand::random::<u64>());
        let lease = self.cfg.store.fill_lease;
        let deadline = tokio::time::Instant::now() + self.cfg.upstream.timeout + lease * 2;
        // Subscribe before trying the lock, so the owner's event cannot slip between.
        let mut events = sh.store.events();
        let mut waited = false;
        loop {
            match sh.store.lock(&lock, &token, lease).await {
                Ok(false) => {}
                Ok(true) => {
                    if waited {
                        sh.metrics.lock_takeovers.fetch_add(1, Relaxed);
                    }
                    // The previous owner may have stored it just before we got the lock.
                    if let Found::Fresh(e) = classify(sh, store_get(sh, key).await) {
                        let _ = sh.store.unlock(&lock, &token).await;
                        return (
                            Arc::new(Outcome::Shared {
                                entry: e,
                                stored: false,
                                collapsed: true,
                            }),
                            None,
                        );
                    }
                    let renew = async {
                        loop {
                            tokio::time::sleep(lease / 3).await;
                            if !matches!(sh.store.renew(&lock, &token, lease).await, Ok(true)) {
                                tracing::warn!(key, "lost the fill lock while fetching");
                            }
                        }
                    };
                    let result = tokio::select! {
                        r = self.fetch() => r,
                        _ = renew => unreachable!("the renew loop never ends"),
                    };
                    let _ = sh.store.unlock(&lock, &token).await;
                    let said = match &*result.0 {
                        Outcome::Shared { stored: true, .. } => "stored".to_string(),
                        Outcome::Failed(e) => format!("error:{e}"),
                        _ => "pass".to_string(),
                    };
                    let _ = sh
                        .store
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
            sh.metrics.remote_waits.fetch_add(1, Relaxed);
            // Someone else fills: wait for its event, or poll, until the lock is gone.
            loop {
                let said = tokio::select! {
                    e = next_filled(&mut events, key) => e,
                    _ = tokio::time::sleep(REMOTE_POLL) => None,
                };
                if let Found::Fresh(e) = classify(sh, store_get(sh, key).await) {
                    return (
                        Arc::new(Outcome::Shared {
                            entry: e,
                            stored: false,
                            collapsed: true,
                        }),
                        None,
                    );
                }
                match said.as_deref() {
                    Some("pass") => return (Arc::new(Outcome::Pass), None),
                    Some(s) if s.starts_with("error:") => {
                        let e = UpstreamError::Broken(format!(
                            "the instance that fetched it: {}",
                            &s[6..]
                        ));
                        return (Arc::new(Outcome::Failed(e)), None);
                    }
                    _ => {}
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
                if !matches!(sh.store.locked(&lock).await, Ok(true)) {
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
        let mut req = Request::new(ProxyBody::Empty);
        let Ok(uri) = self.lookup.path_and_query.parse() else {
            let e = UpstreamError::Unreachable("unparseable request target".into());
            return (Arc::new(Outcome::Failed(e)), None);
        };
        *req.uri_mut() = uri;
        *req.headers_mut() = self.lookup.headers.clone();
        sh.metrics
            .upstream_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = match sh
            .upstream
            .send(&cfg.upstream, req, Some(self.lookup.peer.ip()))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                sh.metrics
                    .upstream_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                sh.metrics
                    .upstream_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(url = %self.lookup.key.url.url, error = %e, "fill body failed; nothing stored");
                return (Arc::new(Outcome::Failed(e)), None);
            }
        };
        sh.metrics
            .bytes_from_upstream
            .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let response_ms = sh.clock.now_ms();
        let mut headers = parts.headers;
        headers.remove(header::CONTENT_LENGTH);
        let initial_age_ms = policy::initial_age_ms(&headers, request_ms, response_ms);
        headers.remove(header::AGE);
        let decision = policy::decide(
            self.lookup.rule.as_ref(),
            parts.status,
            &headers,
            response_ms,
        );
        let mut entry = Entry {
            status: parts.status,
            flags: 0,
            stored_at_ms: response_ms,
            initial_age_ms,
            fresh_ms: 0,
            swr_ms: 0,
            sie_ms: 0,
            purge_seq,
            url: self.lookup.key.url.url.clone(),
            tags: Vec::new(),
            headers,
            body,
        };
        match decision {
            Decision::Store(f) => {
                entry.fresh_ms = f.fresh_ms;
                entry.swr_ms = f.swr_ms;
                entry.sie_ms = f.sie_ms;
                entry.tags = f.tags.clone();
                if f.must_revalidate {
                    entry.flags |= entry::MUST_REVALIDATE;
                }
                let keep = f.keep_for(initial_age_ms);
                let entry = Arc::new(entry);
                // A purge that landed while we fetched covers this response: hand it to
                // those who asked before, but never store it as fresh.
                let purged = sh.purges.table().verdict(&entry) != Verdict::Valid;
                let stored = !purged
                    && match sh
                        .store
                        .put(&self.lookup.key.key, entry.clone(), keep)
                        .await
                    {
                        Ok(()) => true,
                        Err(e) => {
                            sh.metrics
                                .store_errors
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(error = %e, "store write failed; response served uncached");
                            false
                        }
                    };
                let collapsed = false;
                (
                    Arc::new(Outcome::Shared {
                        entry,
                        stored,
                        collapsed,
                    }),
                    None,
                )
            }
            Decision::NoStore(_) if parts.status.is_server_error() => (
                Arc::new(Outcome::Shared {
                    entry: Arc::new(entry),
                    stored: false,
                    collapsed: false,
                }),
                None,
            ),
            Decision::NoStore(why) => {
                let r = entry_response(sh, &entry, false);
                let mut s = CacheStatus::fwd(Phase::Miss, "uri-miss").detail(why);
                s.fwd_status = Some(parts.status.as_u16());
                (Arc::new(Outcome::Pass), Some((r, s)))
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
    shared
        .metrics
        .upstream_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let resp = shared
        .upstream
        .send(&cfg.upstream, req, Some(peer.ip()))
        .await
        .inspect_err(|_| {
            shared
                .metrics
                .upstream_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })?;
    status.fwd_status = Some(resp.status().as_u16());
    let mut resp = resp.map(ProxyBody::Incoming);
    resp.headers_mut()
        .append(header::VIA, HeaderValue::from_static("1.1 slate"));
    Ok((resp, status))
}

/// POST, PUT, PATCH, DELETE: pass through; a success invalidates the URL (RFC 9111 §4.4).
async fn unsafe_method(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Answer {
    let target = normal_url(cfg, req.uri()).ok().map(|(u, _)| u.url);
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
        let req = PurgeRequest {
            targets: vec![Target::Url(url)],
            soft: false,
        };
        if let Err(e) = shared.purges.purge(req).await {
            tracing::warn!(error = %e, "invalidation after an unsafe method failed");
        }
    }
    Ok((resp, status))
}
