//! Lookup and classify: the entry stored for a request (and its variant), and how it
//! stands right now, which decides everything the cached path does next.

use super::request::Lookup;
use crate::entry::{self, Entry};
use crate::instance::Shared;
use crate::key;
use crate::otel;
use crate::phase::{Detail, Fwd};
use crate::policy::RequestDirectives;
use crate::purge::{PurgeTable, Verdict};
use std::sync::Arc;
use tracing::{field, Instrument, Span};

/// How a stored entry stands right now.
#[derive(Debug)]
pub(super) enum Found {
    Fresh(Arc<Entry>),
    /// Stale but servable at once (`soft-purged`, `stale-while-revalidate`, `max-stale`),
    /// with one refresh started.
    Revalidate(Arc<Entry>, Detail),
    /// Not servable as it is: a fetch is needed (`fwd=stale`, or `request` when the client
    /// asked for it), conditional if the entry has a validator; and it may still answer if
    /// the origin fails (`stale-if-error`).
    Expired(Arc<Entry>, Fwd),
    /// Nothing usable: `uri-miss`, or `vary-miss` when only other variants are stored.
    Miss(Fwd),
}

/// The entry under `key`; the tier that answers is said on `span` (the lookup's).
async fn store_get(shared: &Shared, key: &str, span: &Span) -> Option<Arc<Entry>> {
    // This thread's copy of a hot entry: no lookup to time (see `store::hot`).
    if let Some(e) = shared.store.entries.get_hot(key) {
        if !span.is_disabled() {
            span.record("slate.tier", "hot");
        }
        return Some(e);
    }
    if !span.is_disabled() {
        // Asked before the read: a copy in the tier now is the one the read finds.
        let entries = &shared.store.entries;
        let tier = if entries.in_l1(key) {
            "l1"
        } else {
            entries.name()
        };
        span.record("slate.tier", tier);
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
pub(super) async fn find(shared: &Shared, lookup: &Lookup) -> Result<Arc<Entry>, Fwd> {
    let span = otel::span!(
        "store lookup",
        slate.tier = field::Empty,
        slate.found = field::Empty
    );
    let found = find_in(shared, lookup, &span)
        .instrument(span.clone())
        .await;
    if !span.is_disabled() {
        span.record("slate.found", found.is_ok());
    }
    found
}

async fn find_in(shared: &Shared, lookup: &Lookup, span: &Span) -> Result<Arc<Entry>, Fwd> {
    let e = store_get(shared, &lookup.key.key, span)
        .await
        .ok_or(Fwd::UriMiss)?;
    if e.vary.is_empty() || e.vary_matches(&lookup.headers) {
        return Ok(e);
    }
    let mine: Vec<(String, String)> = e
        .vary
        .iter()
        .map(|(n, _)| (n.clone(), key::vary_value(&lookup.headers, n)))
        .collect();
    let v = store_get(shared, &key::variant_key(&lookup.key.key, &mine), span).await;
    v.filter(|v| v.vary_matches(&lookup.headers))
        .ok_or(Fwd::VaryMiss)
}

/// How the entry found for a request with `directives` stands at `now` (ms), given the
/// purge log `purges`. Pure: everything it weighs is in its arguments.
pub(super) fn classify_at(
    purges: &PurgeTable,
    found: Result<Arc<Entry>, Fwd>,
    directives: &RequestDirectives,
    now: u64,
) -> Found {
    let e = match found {
        Ok(e) => e,
        Err(why) => return Found::Miss(why),
    };
    let must_revalidate = e.flags & entry::MUST_REVALIDATE != 0;
    let no_cache = e.flags & entry::NO_CACHE != 0;
    match purges.verdict(&e) {
        Verdict::Gone => Found::Miss(Fwd::UriMiss),
        Verdict::Stale if !must_revalidate && !no_cache => Found::Revalidate(e, Detail::SoftPurged),
        Verdict::Stale => Found::Expired(e, Fwd::Stale),
        Verdict::Valid => {
            let ttl = e.ttl_ms(now);
            let d = directives;
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
                Found::Expired(e, Fwd::Request)
            } else if no_cache {
                Found::Expired(e, Fwd::Stale)
            } else if ttl > 0 {
                Found::Fresh(e)
            } else if must_revalidate {
                Found::Expired(e, Fwd::Stale)
            } else if stale_by < e.swr_ms {
                Found::Revalidate(e, Detail::StaleWhileRevalidate)
            } else if client_may_take_stale {
                Found::Revalidate(e, Detail::MaxStale)
            } else {
                Found::Expired(e, Fwd::Stale)
            }
        }
    }
}

/// Looks the request up and classifies what it finds, now.
pub(super) async fn look(shared: &Shared, lookup: &Lookup) -> Found {
    let found = find(shared, lookup).await;
    let now = shared.clock.now_ms();
    classify_at(&shared.purges.table(), found, &lookup.directives, now)
}

/// Whether an expired entry may still answer for an origin failure at `now`.
pub(super) fn usable_on_error(e: &Entry, now: u64) -> bool {
    let ttl = e.ttl_ms(now);
    if ttl > 0 {
        e.flags & entry::NO_CACHE == 0
    } else {
        ttl.unsigned_abs() < e.sie_ms
    }
}

/// Whether an expired entry may answer at `now` for an origin that cannot be reached, at
/// most `bound_ms` past its freshness: never one whose response forbade stale answers
/// (`must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache`).
pub(super) fn usable_when_unreachable(e: &Entry, now: u64, bound_ms: u64) -> bool {
    let forbidden = entry::MUST_REVALIDATE | entry::PROXY_REVALIDATE | entry::NO_CACHE;
    e.flags & forbidden == 0 && (-e.ttl_ms(now)).max(0) as u64 <= bound_ms
}

/// Whether an entry may answer when its refill could not get a turn in the fill queue: one
/// it could answer for an origin failure, or one still within `stale-while-revalidate`;
/// never one that must be revalidated.
pub(super) fn usable_when_busy(e: &Entry, now: u64) -> bool {
    if e.flags & (entry::MUST_REVALIDATE | entry::NO_CACHE) != 0 {
        return false;
    }
    let stale_by = (-e.ttl_ms(now)).max(0) as u64;
    usable_on_error(e, now) || stale_by < e.swr_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purge::{PurgeRecord, PurgeRequest, Target};

    /// Stored at 0, fresh for 10 s, stale-while-revalidate 5 s, stale-if-error 60 s.
    fn entry(flags: u8) -> Arc<Entry> {
        Arc::new(Entry {
            status: http::StatusCode::OK,
            flags,
            stored_at_ms: 0,
            initial_age_ms: 0,
            fresh_ms: 10_000,
            swr_ms: 5_000,
            sie_ms: 60_000,
            purge_seq: 0,
            fetch_ms: 0,
            url: "/r".into(),
            tags: vec!["t".into()],
            vary: Vec::new(),
            headers: Default::default(),
            body: Default::default(),
            coding: crate::coding::Coding::Identity,
            origin_coding: crate::coding::Coding::Identity,
            identity_len: 0,
        })
    }

    fn at(e: Arc<Entry>, d: &RequestDirectives, now: u64) -> Found {
        classify_at(&PurgeTable::default(), Ok(e), d, now)
    }

    fn none() -> RequestDirectives {
        RequestDirectives::default()
    }

    #[test]
    fn freshness_then_the_stale_windows() {
        assert!(matches!(at(entry(0), &none(), 9_999), Found::Fresh(_)));
        assert!(matches!(
            at(entry(0), &none(), 12_000),
            Found::Revalidate(_, Detail::StaleWhileRevalidate)
        ));
        assert!(matches!(
            at(entry(0), &none(), 15_001),
            Found::Expired(_, Fwd::Stale)
        ));
        // must-revalidate: no stale answer at all once expired.
        assert!(matches!(
            at(entry(entry::MUST_REVALIDATE), &none(), 12_000),
            Found::Expired(_, Fwd::Stale)
        ));
        // no-cache: validated before every use, even while fresh.
        assert!(matches!(
            at(entry(entry::NO_CACHE), &none(), 1_000),
            Found::Expired(_, Fwd::Stale)
        ));
    }

    #[test]
    fn what_the_client_asks_for() {
        let d = RequestDirectives {
            max_age: Some(1),
            ..none()
        };
        assert!(matches!(
            at(entry(0), &d, 2_000),
            Found::Expired(_, Fwd::Request)
        ));
        let d = RequestDirectives {
            max_stale: Some(30),
            ..none()
        };
        assert!(matches!(
            at(entry(0), &d, 30_000),
            Found::Revalidate(_, Detail::MaxStale)
        ));
        // proxy-revalidate: a client's max-stale does not stretch it.
        assert!(matches!(
            at(entry(entry::PROXY_REVALIDATE), &d, 30_000),
            Found::Expired(_, Fwd::Stale)
        ));
    }

    #[test]
    fn purges_and_misses() {
        let mut table = PurgeTable::default();
        let rec = |seq, soft, t: Target| PurgeRecord {
            seq,
            req: PurgeRequest {
                targets: vec![t],
                soft,
            },
            expires_ms: u64::MAX,
        };
        table.apply(&rec(1, true, Target::Tag("t".into())));
        let found = classify_at(&table, Ok(entry(0)), &none(), 1_000);
        assert!(matches!(found, Found::Revalidate(_, Detail::SoftPurged)));
        table.apply(&rec(2, false, Target::Url("/r".into())));
        let found = classify_at(&table, Ok(entry(0)), &none(), 1_000);
        assert!(matches!(found, Found::Miss(Fwd::UriMiss)));
        let found = classify_at(&table, Err(Fwd::VaryMiss), &none(), 1_000);
        assert!(matches!(found, Found::Miss(Fwd::VaryMiss)));
    }

    #[test]
    fn stale_if_error_window() {
        let e = entry(0);
        assert!(usable_on_error(&e, 5_000), "fresh");
        assert!(usable_on_error(&e, 69_999), "within 60 s of expiry");
        assert!(!usable_on_error(&e, 70_001));
        assert!(!usable_on_error(&entry(entry::NO_CACHE), 5_000));
    }
}
