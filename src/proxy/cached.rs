//! The cached path of a GET or HEAD: look up, answer from the cache when it may, and
//! otherwise join the one fill of the key (leading it, or waiting for it).
//!
//! Its state is a [`Missed`] request, and the outcome of its fill decides the answer. A
//! round ends early, and the next starts with a fresh lookup, for a reason named by
//! [`Again`].

use super::answer::{entry_response, stale_on_failure, stale_status};
use super::fill::{Fill, ForLeader};
use super::lookup::{
    classify_at, find, look, usable_on_error, usable_when_busy, usable_when_unreachable, Found,
};
use super::request::Lookup;
use super::{pass, Answer};
use crate::coalesce::{Outcome, Role};
use crate::config::Config;
use crate::entry::Entry;
use crate::error::ProxyError;
use crate::instance::Shared;
use crate::otel;
use crate::phase::{CacheStatus, Detail, Fwd, Phase};
use crate::upstream::UpstreamError;
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

/// Distinct fills one instance runs at once; past this, new misses get 503 at once.
const MAX_FILLS_IN_FLIGHT: usize = 4096;

/// Rounds at most, each a lookup and perhaps a fill: a lookup that keeps meeting fills
/// that end without an answer for it is given up on rather than looped on.
const MAX_ROUNDS: usize = 4;

/// Why a round of the cached path starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// The fill we waited for ended without an outcome (its task was dropped).
    Abandoned,
    /// The fill we waited for brought another variant than ours (Vary).
    OtherVariant,
}

/// How one round ended.
enum Round {
    Done(Answer),
    Again(Again),
}

/// A request the cache cannot answer as it stands: why it goes upstream, and the stored
/// entry it may revalidate, or fall back on if the origin fails.
struct Missed {
    fwd: Fwd,
    stale: Option<Arc<Entry>>,
}

/// Answers a cacheable GET or HEAD.
pub(super) async fn serve(shared: &Arc<Shared>, cfg: &Arc<Config>, lookup: &Lookup) -> Answer {
    let mut last = Again::Abandoned;
    for _ in 0..MAX_ROUNDS {
        match round(shared, cfg, lookup).await {
            Round::Done(answer) => return answer,
            Round::Again(why) => last = why,
        }
    }
    let why = match last {
        Again::Abandoned => "the fill for this URL was abandoned repeatedly",
        Again::OtherVariant => "the fills for this URL kept bringing other variants",
    };
    Err(UpstreamError::Broken(why.into()).into())
}

async fn round(shared: &Arc<Shared>, cfg: &Arc<Config>, lookup: &Lookup) -> Round {
    // One clock read serves the whole hit: freshness, `ttl` and `Age` agree.
    let now = shared.clock.now_ms();
    let found = find(shared, lookup).await;
    let missed = match classify_at(&shared.purges.table(), found, &lookup.directives, now) {
        Found::Fresh(e) => {
            note_hit(shared, cfg, lookup, &e, now);
            let s = CacheStatus::hit(e.ttl_ms(now)).saved(e.fetch_ms);
            return Round::Done(Ok((
                entry_response(shared, &e, true, now, &lookup.headers),
                s,
            )));
        }
        Found::Revalidate(e, why) => {
            refresh(shared, cfg, lookup, Some(e.clone()), false);
            let now = shared.clock.now_ms();
            let s = stale_status(&e, why, now).saved(e.fetch_ms);
            return Round::Done(Ok((
                entry_response(shared, &e, true, now, &lookup.headers),
                s,
            )));
        }
        Found::Expired(e, fwd) => Missed {
            fwd,
            stale: Some(e),
        },
        Found::Miss(fwd) => Missed { fwd, stale: None },
    };
    if lookup
        .rule
        .as_ref()
        .is_some_and(|r| r.refresh_ahead.is_some())
        && shared.ahead.was_hit(&lookup.key.key, now)
    {
        shared.metrics.misses_after_hits.inc();
    }
    if lookup.directives.only_if_cached {
        return Round::Done(Err(ProxyError::NotCached));
    }
    // A dead or blackholed upstream must not pile up fills without bound.
    if shared.flights.in_flight() >= MAX_FILLS_IN_FLIGHT {
        return Round::Done(Err(ProxyError::Overloaded));
    }
    let (outcome, phase) = match shared.flights.join(&lookup.key.key) {
        Role::Leader(permit) => {
            // Double-checked: the previous fill may have stored the entry and released
            // its permit between our lookup and our join.
            if let Found::Fresh(e) = look(shared, lookup).await {
                permit.finish(Arc::new(Outcome::Shared {
                    entry: e.clone(),
                    stored: true,
                    collapsed: true,
                    revalidated: false,
                }));
                let now = shared.clock.now_ms();
                // Asked for after it was stored, like any hit.
                note_hit(shared, cfg, lookup, &e, now);
                let s = CacheStatus::hit(e.ttl_ms(now));
                return Round::Done(Ok((
                    entry_response(shared, &e, true, now, &lookup.headers),
                    s,
                )));
            }
            let (tx, rx) = oneshot::channel();
            let fill = Fill::new(shared, cfg, lookup, missed.stale.clone(), Some(tx));
            shared
                .tasks
                .spawn(otel::under(shared.otel.as_ref(), fill.run(permit)));
            match rx.await {
                Ok(ForLeader::Private(p)) => return Round::Done(Ok(*p)),
                Ok(ForLeader::Outcome(o)) => (o, Phase::Miss),
                Err(_) => (Arc::new(Outcome::Abandoned), Phase::Miss),
            }
        }
        Role::Follower(f) => {
            // The fill may queue for its turn (up to queue_timeout), then fetch (up to
            // upstream.timeout): wait that long, as a waiter on another instance does.
            let bound = cfg.upstream.queue_timeout + cfg.upstream.timeout + Duration::from_secs(5);
            let span = otel::span!("fill lock wait", slate.lock = "local");
            let waited = tokio::time::timeout(bound, f.wait()).instrument(span).await;
            match waited {
                Ok(o) => (o, Phase::Collapsed),
                Err(_) => {
                    let e = UpstreamError::Timeout(cfg.upstream.timeout);
                    return Round::Done(Err(e.into()));
                }
            }
        }
    };
    missed.answer(shared, cfg, lookup, &outcome, phase).await
}

impl Missed {
    /// The answer a fill's outcome makes for this request, led (`Miss`) or waited for
    /// (`Collapsed`).
    async fn answer(
        self,
        shared: &Arc<Shared>,
        cfg: &Arc<Config>,
        lookup: &Lookup,
        outcome: &Outcome,
        phase: Phase,
    ) -> Round {
        let now = shared.clock.now_ms();
        let on_error = self.stale.as_ref().filter(|s| usable_on_error(s, now));
        match outcome {
            Outcome::Shared { entry, .. } if !entry.vary_matches(&lookup.headers) => {
                Round::Again(Again::OtherVariant)
            }
            Outcome::Shared {
                entry,
                stored,
                collapsed,
                revalidated,
            } => {
                let phase = if *collapsed { Phase::Collapsed } else { phase };
                // A viewer who waited for someone else's fill (here, or on another instance
                // that stored it) asked for the entry as much as one who came a second
                // later and hit it: at 9:00 every viewer of a report waits for its one
                // fill, and none of them would count otherwise. The filler's own miss is
                // not one (`Miss`): a report nobody else asked for is not refreshed.
                if phase == Phase::Collapsed && (*stored || *collapsed) {
                    note_hit(shared, cfg, lookup, entry, now);
                }
                if let (true, Some(s)) = (entry.status.is_server_error(), on_error) {
                    let code = Some(entry.status.as_u16());
                    let st = stale_on_failure(s, Detail::StaleIfError, code, now);
                    return Round::Done(Ok((
                        entry_response(shared, s, true, now, &lookup.headers),
                        st,
                    )));
                }
                let mut s = CacheStatus::fwd(phase, self.fwd);
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
                Round::Done(Ok((
                    entry_response(shared, entry, not_new, now, &lookup.headers),
                    s,
                )))
            }
            Outcome::Busy => {
                let usable = self.stale.as_ref().filter(|s| usable_when_busy(s, now));
                Round::Done(match usable {
                    Some(s) => {
                        let st = stale_status(s, Detail::QueueFull, now);
                        Ok((entry_response(shared, s, true, now, &lookup.headers), st))
                    }
                    None => {
                        shared.metrics.queue_refused.inc();
                        Err(ProxyError::QueueFull(retry_after(cfg)))
                    }
                })
            }
            Outcome::Failed(err) => {
                // An origin that cannot be reached at all: a stored answer may stand in
                // for it a while longer than stale-if-error says (RFC 9111 §4.2.4).
                let bound = cfg.cache.stale_if_unreachable.as_millis() as u64;
                let unreachable = || {
                    let s = self.stale.as_ref();
                    s.filter(|s| err.is_disconnection() && usable_when_unreachable(s, now, bound))
                        .map(|s| (s, Detail::UpstreamUnreachable))
                };
                let on_error = on_error.map(|s| (s, Detail::StaleIfError));
                Round::Done(match on_error.or_else(unreachable) {
                    Some((s, why)) => {
                        let st = stale_on_failure(s, why, None, now);
                        Ok((entry_response(shared, s, true, now, &lookup.headers), st))
                    }
                    None => Err(err.clone().into()),
                })
            }
            Outcome::Pass => {
                let req = lookup.upstream_request(cfg);
                let s = CacheStatus::fwd(Phase::Miss, self.fwd).detail(Detail::Uncacheable);
                Round::Done(pass::pass(shared, cfg, req, lookup.peer, s).await)
            }
            Outcome::Abandoned => Round::Again(Again::Abandoned),
        }
    }
}

/// What a 503 from a full fill queue tells the client to wait: a sixth of the queue
/// timeout (5 s by default), at least 1 s and at most 30 s.
fn retry_after(cfg: &Config) -> u64 {
    (cfg.upstream.queue_timeout.as_secs() / 6).clamp(1, 30)
}

/// A hit on an entry of a `refresh_ahead` rule (or a wait for its fill by anyone but its
/// filler): noted, to be refreshed that long before it expires; at once when it has that
/// little to live already.
fn note_hit(shared: &Arc<Shared>, cfg: &Arc<Config>, lookup: &Lookup, e: &Arc<Entry>, now: u64) {
    let Some(ahead) = lookup.rule.as_ref().and_then(|r| r.refresh_ahead) else {
        return;
    };
    let ttl = e.ttl_ms(now).max(0) as u64;
    let expires = now + ttl;
    let due = expires.saturating_sub(ahead.as_millis() as u64);
    shared
        .ahead
        .hit(&lookup.key.key, due, expires, || crate::ahead::Ask {
            target: lookup.path_and_query.to_string(),
            headers: lookup.headers.clone(),
            body: lookup.body.clone(),
        });
    if due <= now {
        refresh(shared, cfg, lookup, Some(e.clone()), true);
    }
}

/// Refreshes an entry noted by [`note_hit`] when it is due, if it still has
/// `refresh_ahead` or less to live (another instance may have refreshed it already).
pub(crate) async fn refresh_ahead(shared: &Arc<Shared>, ask: crate::ahead::Ask) {
    let cfg = shared.live.get();
    let body = ask.body.as_ref().map(|(m, b)| (m, b));
    let Ok(lookup) = Lookup::made(&cfg, &ask.target, ask.headers.clone(), body) else {
        return;
    };
    let Some(ahead) = lookup.rule.as_ref().and_then(|r| r.refresh_ahead) else {
        return;
    };
    let now = shared.clock.now_ms();
    match look(shared, &lookup).await {
        Found::Fresh(e) if e.ttl_ms(now) > ahead.as_millis() as i64 => {}
        Found::Fresh(e) | Found::Revalidate(e, _) | Found::Expired(e, _) => {
            refresh(shared, &cfg, &lookup, Some(e), true);
        }
        Found::Miss(_) => {}
    }
}

/// Starts one background refresh of a stale entry, unless one already runs; `ahead` for
/// a refresh ahead of expiry (counted when it reaches the upstream: across instances the
/// fill lock lets one of them go).
fn refresh(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    lookup: &Lookup,
    stale: Option<Arc<Entry>>,
    ahead: bool,
) {
    if let Role::Leader(permit) = shared.flights.join(&lookup.key.key) {
        let mut fill = Fill::new(shared, cfg, lookup, stale, None);
        fill.ahead = ahead;
        shared
            .tasks
            .spawn(otel::under(shared.otel.as_ref(), fill.run(permit)));
    }
}

/// Fetches `url` (with `body`, for a rule that keys on bodies) through the normal
/// coalesced fill path, as if a client asked (warming).
pub(crate) async fn warm(
    shared: &Arc<Shared>,
    url: &str,
    body: Option<(&http::Method, &bytes::Bytes)>,
) -> Result<StatusCode, ProxyError> {
    let cfg = shared.live.get();
    let lookup = Lookup::warm(&cfg, url, body)?;
    // Still fresh past the next round: nothing to do. Otherwise refill now, before it
    // expires, so the first client after the round never waits for the report.
    let horizon = cfg.warm.every.as_millis() as i64 + 5_000;
    let validate = match look(shared, &lookup).await {
        Found::Fresh(e) if e.ttl_ms(shared.clock.now_ms()) > horizon => return Ok(e.status),
        Found::Fresh(e) | Found::Revalidate(e, _) | Found::Expired(e, _) => Some(e),
        Found::Miss(_) => None,
    };
    let outcome = match shared.flights.join(&lookup.key.key) {
        Role::Leader(permit) => {
            let (tx, rx) = oneshot::channel();
            Fill::new(shared, &cfg, &lookup, validate, Some(tx))
                .class(crate::queue::Class::Warm)
                .run(permit)
                .await;
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
        Outcome::Busy => Err(ProxyError::QueueFull(retry_after(&cfg))),
    }
}
