//! A fill: fetch from upstream, decide, store, tell the waiters. One task per fill, holding
//! the key's [`Permit`]; across instances sharing a store it also holds the key's fill lock
//! ([`super::remote`]).

use super::answer::entry_response;
use super::lookup::usable_on_error;
use super::request::Lookup;
use crate::body::{read_limited, ProxyBody, Read};
use crate::coalesce::{Interest, Outcome, Permit};
use crate::coding::{self, Coding};
use crate::config::Config;
use crate::entry::{self, Entry};
use crate::instance::Shared;
use crate::key;
use crate::otel;
use crate::phase::{CacheStatus, Detail, Fwd, Phase};
use crate::policy::{self, Decision, Freshness, NoStoreReason};
use crate::purge::Verdict;
use crate::queue::{Ask, Class, QueueError, Slot};
use crate::upstream::UpstreamError;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{field, Instrument, Span};

/// Bodies larger than this are decoded and compressed on a blocking thread.
const BLOCKING_ABOVE: usize = 128 << 10;

/// What the leader's client gets from the fill.
pub(super) enum ForLeader {
    /// The same outcome followers get.
    Outcome(Arc<Outcome>),
    /// A response for the leader alone (not shareable, or streamed).
    Private(Box<(Response<ProxyBody>, CacheStatus)>),
}

/// What a fill ends with: the outcome for every waiter, and perhaps a response for the
/// leader alone.
pub(super) type FillResult = (Arc<Outcome>, Option<(Response<ProxyBody>, CacheStatus)>);

/// One fill of one key.
pub(super) struct Fill {
    pub shared: Arc<Shared>,
    pub cfg: Arc<Config>,
    pub lookup: Lookup,
    /// A stored entry to revalidate: its validators go upstream, and a 304 renews it.
    validate: Option<Arc<Entry>>,
    /// The stored entry this fill replaces (stale, soft-purged, or due for a refresh
    /// ahead): finding it in the store is no reason not to fetch.
    replaces: Option<Arc<Entry>>,
    leader: Option<oneshot::Sender<ForLeader>>,
    /// Its place in the fill queue: a client's, a refresh's, warming's.
    class: Class,
    /// Who waits for it on this instance (set when it runs).
    interest: Option<Interest>,
    /// A refresh ahead of expiry (`refresh_ahead`), counted when it goes upstream.
    pub ahead: bool,
    /// Its span: a step of the request that started it, if one did (made in `new`, where
    /// that request's span is the current one).
    span: Span,
}

/// The stored headers renewed by a 304 (RFC 9111 §3.2, §4.3.4): each header the 304 sends
/// replaces the stored ones of its name, except those that describe the body.
fn renewed_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut h = stored.clone();
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (name, value) in not_modified.iter() {
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
    h
}

impl Fill {
    /// A fill for `lookup`; `stale` is revalidated if it has a validator; `leader` gets
    /// the answer of the client that started it, if one did.
    pub fn new(
        shared: &Arc<Shared>,
        cfg: &Arc<Config>,
        lookup: &Lookup,
        stale: Option<Arc<Entry>>,
        leader: Option<oneshot::Sender<ForLeader>>,
    ) -> Fill {
        Fill {
            shared: shared.clone(),
            cfg: cfg.clone(),
            lookup: lookup.clone(),
            validate: stale.clone().filter(|e| e.has_validator()),
            replaces: stale,
            class: if leader.is_some() {
                Class::Client
            } else {
                Class::Background
            },
            leader,
            interest: None,
            ahead: false,
            span: otel::span!(
                "fill",
                slate.class = field::Empty,
                slate.outcome = field::Empty
            ),
        }
    }

    /// Whether `found` is an answer another fill stored, not the entry this one replaces.
    pub fn newer(&self, found: &Entry) -> bool {
        self.replaces
            .as_ref()
            .is_none_or(|old| old.stored_at_ms != found.stored_at_ms || old.url != found.url)
    }

    /// The same fill in another class of the fill queue (warming).
    pub fn class(mut self, class: Class) -> Fill {
        self.class = class;
        self
    }

    pub fn run(self, permit: Permit) -> impl std::future::Future<Output = ()> + Send {
        let span = self.span.clone();
        self.run_in(permit).instrument(span)
    }

    async fn run_in(mut self, permit: Permit) {
        self.interest = Some(permit.interest());
        if !self.span.is_disabled() {
            self.span.record("slate.class", class_name(self.class));
        }
        let (outcome, private) = match &self.shared.store.peers {
            Some(peers) => self.across_instances(&**peers).await,
            None => self.fetch().await,
        };
        if !self.span.is_disabled() {
            self.span.record("slate.outcome", outcome_name(&outcome));
        }
        // Release the key only now: the entry (if any) is in the store already.
        permit.finish(outcome.clone());
        if let Some(tx) = self.leader.take() {
            let _ = tx.send(match private {
                Some(p) => ForLeader::Private(Box::new(p)),
                None => ForLeader::Outcome(outcome),
            });
        }
    }

    fn failed(&self, e: UpstreamError, what: &str) -> FillResult {
        self.shared.metrics.upstream_errors.add(1);
        tracing::warn!(url = %self.lookup.key.url.url, error = %e, "{what}");
        (Arc::new(Outcome::Failed(e)), None)
    }

    /// Waits for this fill's turn in the fill queue ([`crate::queue`]).
    async fn take_turn(&self) -> Result<Slot, QueueError> {
        let cfg = &self.cfg;
        let ask = Ask {
            class: self.class,
            client: Some(self.lookup.peer.ip()),
            rule: self
                .lookup
                .rule
                .as_ref()
                .and_then(|r| r.max_fills.map(|n| (r.path.clone(), n))),
            limit: cfg.upstream.max_fills,
            timeout: cfg.upstream.queue_timeout,
            lease: cfg.store.fill_lease,
        };
        // Nobody left to answer: the client that started it hung up, and no one joined.
        let gone = || {
            self.leader.as_ref().is_none_or(|tx| tx.is_closed())
                && self.interest.as_ref().is_none_or(|i| i.followers() == 0)
        };
        let started = std::time::Instant::now();
        let m = &self.shared.metrics;
        let span = otel::span!("queue wait", slate.queue = field::Empty);
        let turn = self
            .shared
            .queue
            .acquire(ask, gone)
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            let how = match &turn {
                Ok(_) => "turn",
                Err(QueueError::Timeout) => "timeout",
                Err(QueueError::Abandoned) => "abandoned",
            };
            span.record("slate.queue", how);
        }
        match &turn {
            Ok(_) => m.queue_waited.observe(started.elapsed()),
            Err(QueueError::Timeout) => {
                m.queue_timeouts.inc();
                tracing::warn!(url = %self.lookup.key.url.url, "fill queue full past upstream.queue_timeout");
            }
            Err(QueueError::Abandoned) => m.queue_dropped.inc(),
        }
        turn
    }

    /// Fetches the response, decides what to keep of it and stores it.
    pub async fn fetch(&self) -> FillResult {
        // Held until the response is stored (or passed on): the fill's place among the
        // fills the upstream runs at once.
        let _slot = match self.take_turn().await {
            Ok(slot) => slot,
            Err(QueueError::Timeout) => return (Arc::new(Outcome::Busy), None),
            Err(QueueError::Abandoned) => return (Arc::new(Outcome::Abandoned), None),
        };
        let sh = &self.shared;
        let cfg = &self.cfg;
        let purge_seq = sh.purges.seq();
        let request_ms = sh.clock.now_ms();
        let deadline = tokio::time::Instant::now() + cfg.upstream.timeout;
        let started = std::time::Instant::now();
        // What the upstream spent on it, for `/top`: failures too (a report that times
        // out costs the back end the whole timeout).
        let count = |took: Duration| {
            let micros = took.as_micros().min(u64::MAX as u128) as u64;
            let ev = crate::top::Event::Fill { micros };
            sh.top.record(sh.clock.now_ms(), &self.lookup.report(), ev);
        };
        // From the request sent to the whole body read: the back end's computation.
        let upstream = otel::span!(
            "upstream request",
            otel.kind = "client",
            http.request.method = self.lookup.body.as_ref().map_or("GET", |(m, _)| m.as_str()),
            url.path = self.lookup.path_and_query.path(),
            http.response.status_code = field::Empty,
            slate.bytes = field::Empty,
        );
        let resp = match self.send(&upstream).instrument(upstream.clone()).await {
            Ok(r) => r,
            Err(e) => {
                count(started.elapsed());
                return upstream.in_scope(|| self.failed(e, "fill failed"));
            }
        };
        if !upstream.is_disabled() {
            upstream.record("http.response.status_code", resp.status().as_u16());
        }
        let (parts, body) = resp.into_parts();
        // A 304's (or 204's) Content-Length describes the representation, not a body that
        // follows (RFC 9110 §8.6): there is none to expect.
        let bodiless = matches!(
            parts.status,
            StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT
        );
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .filter(|_| !bodiless)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        let limit = cfg.store.max_object_size;
        let read = tokio::time::timeout_at(deadline, read_limited(body, limit, declared))
            .instrument(upstream.clone())
            .await;
        let read = match read {
            Ok(r) => r.map_err(|e| UpstreamError::Broken(e.to_string())),
            Err(_) => Err(UpstreamError::Timeout(cfg.upstream.timeout)),
        };
        let body = match read {
            Ok(Read::Whole(b)) => b,
            Ok(Read::TooLarge(chunks, rest)) => {
                let private = self.stream(parts, chunks, rest);
                return (Arc::new(Outcome::Pass), Some(private));
            }
            Err(e) => {
                count(started.elapsed());
                return upstream.in_scope(|| self.failed(e, "fill body failed; nothing stored"));
            }
        };
        if !upstream.is_disabled() {
            upstream.record("slate.bytes", body.len() as u64);
        }
        drop(upstream);
        sh.metrics.bytes_from_upstream.add(body.len() as u64);
        let fetch_time = started.elapsed();
        sh.metrics.upstream_latency.observe(fetch_time);
        count(fetch_time);
        let response_ms = sh.clock.now_ms();
        let (status, headers, body, revalidated) = match (&self.validate, parts.status) {
            (Some(old), StatusCode::NOT_MODIFIED) => {
                let h = renewed_headers(&old.headers, &parts.headers);
                (old.status, h, old.body.clone(), true)
            }
            _ => (parts.status, parts.headers, body, false),
        };
        // Stored, or shared with waiters: not pinning the upstream connection's buffer.
        let mut headers = crate::upstream::detached(headers);
        headers.remove(header::CONTENT_LENGTH);
        let initial_age_ms = policy::initial_age_ms(&headers, request_ms, response_ms);
        let decision = if self.lookup.directives.no_store {
            Decision::NoStore(NoStoreReason::RequestNoStore)
        } else {
            policy::decide(self.lookup.rule.as_deref(), status, &headers, response_ms)
        };
        // The entry carries its age in `initial_age_ms`; each answer gets its own `Age`.
        headers.remove(header::AGE);
        let identity_len = body.len() as u64;
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
            // As the origin sent it, opaque, until `recode` says otherwise.
            coding: Coding::Identity,
            origin_coding: Coding::Identity,
            identity_len,
        };
        if revalidated {
            if let Some(old) = &self.validate {
                (entry.coding, entry.origin_coding) = (old.coding, old.origin_coding);
                entry.identity_len = old.identity_len;
                // A 304 is quick; what a miss would cost is still the computation's time.
                entry.fetch_ms = old.fetch_ms;
            }
        }
        let shared_entry = |entry: Arc<Entry>, stored| Outcome::Shared {
            entry,
            stored,
            collapsed: false,
            revalidated,
        };
        match decision {
            Decision::Store(f) => {
                if !revalidated && !self.recode(&mut entry, true).await {
                    let why = NoStoreReason::BadCoding;
                    return self.not_stored(entry, why, parts.status);
                }
                let (entry, keep) = self.fresh(entry, &f);
                // A purge that landed while we fetched covers this response: hand it to
                // those who asked before, but never store it as fresh.
                let purged = sh.purges.table().verdict(&entry) != Verdict::Valid;
                // An error with freshness of its own does not replace a stored answer that
                // may still stand in for it: that is stale-if-error's to serve.
                let now = sh.clock.now_ms();
                let covered = status.is_server_error()
                    && self
                        .replaces
                        .as_ref()
                        .is_some_and(|old| usable_on_error(old, now));
                let stored = !purged && !covered && self.store_traced(&entry, keep).await;
                if stored && !revalidated {
                    // What compressing saves, as the operator sees it.
                    let m = &sh.metrics;
                    m.stored_bytes.add(entry.body.len() as u64);
                    m.stored_identity_bytes.add(entry.identity_len);
                }
                (Arc::new(shared_entry(entry, stored)), None)
            }
            // An error every waiter may see, though no one stores it: in the origin's
            // coding, which each waiter's answer is decoded from if it must be.
            Decision::NoStore(_) if status.is_server_error() => {
                if !revalidated {
                    self.recode(&mut entry, false).await;
                }
                (Arc::new(shared_entry(Arc::new(entry), false)), None)
            }
            Decision::NoStore(why) => self.not_stored(entry, why, parts.status),
        }
    }

    /// The response as the origin sent it, for the leader alone.
    fn not_stored(&self, entry: Entry, why: NoStoreReason, status: StatusCode) -> FillResult {
        let sh = &self.shared;
        let r = entry_response(sh, &entry, false, sh.clock.now_ms(), &self.lookup.headers);
        let mut s = CacheStatus::fwd(Phase::Miss, Fwd::UriMiss).detail(Detail::NotStored(why));
        s.fwd_status = Some(status.as_u16());
        (Arc::new(Outcome::Pass), Some((r, s)))
    }

    /// Puts the body of a fresh response in the coding it is shared in (see
    /// [`crate::coding`]); `compress`: and compresses it when that pays. A body in a coding
    /// slate does not read stays as it came, opaque, its `Content-Encoding` kept (and its
    /// `Vary: Accept-Encoding` selecting variants as before). `false`: the body does not
    /// decode (or decodes past the size limit), and must not be shared.
    async fn recode(&self, entry: &mut Entry, compress: bool) -> bool {
        let headers = &mut entry.headers;
        let Some(origin) = Coding::from_content_encoding(headers.get(header::CONTENT_ENCODING))
        else {
            return true;
        };
        let (body, ct) = (
            entry.body.clone(),
            headers.get(header::CONTENT_TYPE).cloned(),
        );
        let (config, limit) = (self.cfg.cache.compress, self.cfg.store.max_object_size);
        let prepare = move || coding::prepare(body, origin, ct.as_ref(), config, compress, limit);
        // A large report takes milliseconds to compress: off the workers that serve hits.
        let prepared = if entry.body.len() > BLOCKING_ABOVE {
            match tokio::task::spawn_blocking(prepare).await {
                Ok(p) => p,
                Err(e) => Err(coding::CodingError::Compress(e.to_string())),
            }
        } else {
            prepare()
        };
        let p = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(url = %self.lookup.key.url.url, error = %e, "origin body does not decode; not stored");
                return false;
            }
        };
        headers.remove(header::CONTENT_ENCODING);
        if p.coding != Coding::Identity || p.origin_coding != Coding::Identity {
            coding::vary_on_accept_encoding(headers);
        }
        (entry.body, entry.coding, entry.origin_coding) = (p.body, p.coding, p.origin_coding);
        entry.identity_len = p.identity_len;
        true
    }

    /// Sends the fill's request upstream, conditional when it revalidates, as a step of
    /// `span` (in its `traceparent`).
    async fn send(&self, span: &Span) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = self.lookup.upstream_request(&self.cfg);
        otel::inject(span, req.headers_mut());
        // A client's fill passes interim responses to that client (see `interim`).
        if let (Some(_), Some(to)) = (&self.leader, &self.lookup.interim) {
            crate::interim::forward(&mut req, to.clone());
        }
        if let Some(old) = &self.validate {
            let h = req.headers_mut();
            if let Some(etag) = old.headers.get(header::ETAG) {
                h.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = old.headers.get(header::LAST_MODIFIED) {
                h.insert(header::IF_MODIFIED_SINCE, lm.clone());
            }
        }
        self.shared.metrics.upstream_requests.add(1);
        if self.ahead {
            self.shared.metrics.refreshed_ahead.inc();
        }
        let peer = Some(self.lookup.peer.ip());
        self.shared
            .upstream
            .send(&self.cfg.upstream, req, peer)
            .await
    }

    /// The entry with the freshness it is stored with, and how long the store keeps it.
    fn fresh(&self, mut entry: Entry, f: &Freshness) -> (Arc<Entry>, Duration) {
        entry.fresh_ms = f.fresh_ms;
        entry.swr_ms = f.swr_ms;
        entry.sie_ms = f.sie_ms;
        entry.tags = f.tags.clone();
        // One entry whatever the client's Accept-Encoding, unless the body is in a coding
        // slate does not read (then still in `Content-Encoding`): each spelling its variant.
        let opaque = entry.headers.contains_key(header::CONTENT_ENCODING);
        entry.vary = f
            .vary
            .iter()
            .filter(|n| opaque || *n != "accept-encoding")
            .map(|n| (n.clone(), key::vary_value(&self.lookup.headers, n)))
            .collect();
        for (on, flag) in [
            (f.must_revalidate, entry::MUST_REVALIDATE),
            (f.proxy_revalidate, entry::PROXY_REVALIDATE),
            (f.no_cache, entry::NO_CACHE),
        ] {
            if on {
                entry.flags |= flag;
            }
        }
        let unreachable = self.cfg.cache.stale_if_unreachable.as_millis() as u64;
        let keep = f.keep_for(entry.initial_age_ms, entry.has_validator(), unreachable);
        (Arc::new(entry), keep)
    }

    /// [`Fill::store`], as a step of the trace.
    async fn store_traced(&self, entry: &Arc<Entry>, keep: Duration) -> bool {
        let span = otel::span!("store write", slate.stored = field::Empty);
        let stored = self.store(entry, keep).instrument(span.clone()).await;
        if !span.is_disabled() {
            span.record("slate.stored", stored);
        }
        stored
    }

    /// Writes an entry under its key, and under its variant key when it varies.
    async fn store(&self, entry: &Arc<Entry>, keep: Duration) -> bool {
        let sh = &self.shared;
        let key = &self.lookup.key.key;
        let mut result = Ok(());
        if !entry.vary.is_empty() {
            let variant = key::variant_key(key, &entry.vary);
            result = sh.store.entries.put(&variant, entry.clone(), keep).await;
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
        let mut s = CacheStatus::fwd(Phase::Miss, Fwd::UriMiss).detail(Detail::TooLarge);
        s.fwd_status = Some(r.status().as_u16());
        (r, s)
    }
}

/// A fill's class, as its trace says it.
fn class_name(c: Class) -> &'static str {
    match c {
        Class::Client => "client",
        Class::Background => "background",
        Class::Warm => "warm",
    }
}

/// How a fill ended, as its trace says it.
fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Shared { stored: true, .. } => "stored",
        Outcome::Shared { .. } => "shared",
        Outcome::Pass => "pass",
        Outcome::Failed(_) => "failed",
        Outcome::Abandoned => "abandoned",
        Outcome::Busy => "busy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_304_renews_headers_but_not_the_body_description() {
        let mut stored = HeaderMap::new();
        stored.insert("etag", HeaderValue::from_static("\"v1\""));
        stored.insert("content-encoding", HeaderValue::from_static("gzip"));
        stored.append("x-a", HeaderValue::from_static("1"));
        stored.append("x-a", HeaderValue::from_static("2"));
        let mut nm = HeaderMap::new();
        nm.insert("etag", HeaderValue::from_static("\"v2\""));
        nm.insert("content-encoding", HeaderValue::from_static("br"));
        nm.append("x-a", HeaderValue::from_static("3"));
        let h = renewed_headers(&stored, &nm);
        assert_eq!(h["etag"], "\"v2\"");
        assert_eq!(h["content-encoding"], "gzip");
        let xa: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(xa, ["3"]);
    }
}
