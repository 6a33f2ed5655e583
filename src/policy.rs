//! Freshness and storability: what may be stored, for how long, and how stale it may be served.
//!
//! slate is an RFC 9111 *shared* cache. The origin's `Cache-Control`/`Expires` decide
//! freshness; a matching `[[rules]]` entry supplies the freshness the origin left out, or
//! replaces it with `override_origin = true`. Without either, nothing is stored.

use crate::config::Rule;
use http::header::{CACHE_CONTROL, DATE, EXPIRES, SET_COOKIE, VARY};
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// No entry is kept longer than this, whatever the origin says; purge records are kept as
/// long, so that a purge always outlives what it purged.
pub const MAX_ENTRY_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long past its stale windows an entry with a validator is kept for revalidation.
const REVALIDATION_GRACE_MS: u64 = 24 * 3600 * 1000;

/// The parsed `Cache-Control` directives slate acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// `Some(None)`: present but invalid or conflicting; treat as already stale.
    pub max_age: Option<Option<u64>>,
    pub s_maxage: Option<Option<u64>>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// `must-understand` (§5.2.2.3): store only statuses whose caching slate understands,
    /// and then even over `no-store`.
    pub must_understand: bool,
}

/// Which response field decided slate's caching (RFC 9213 §2.1: the first valid,
/// non-empty one of the targeted fields, else `Cache-Control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directives {
    /// `Slate-Cache-Control`: for slate alone, stripped before the response leaves it.
    Slate,
    /// `CDN-Cache-Control` (RFC 9213 §3), forwarded.
    Cdn,
    /// `Cache-Control` (with `Expires`).
    CacheControl,
}

/// slate's own targeted field: read, then stripped from every answer.
pub const SLATE_CACHE_CONTROL: &str = "slate-cache-control";
const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31 seconds
/// (68 years), the largest a recipient must handle, rather than overflowed or refused.
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// A delta-seconds: digits only, clamped; `None` when it is not one.
fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(MAX_DELTA_SECONDS, |n| n.min(MAX_DELTA_SECONDS)),
    )
}

impl CacheControl {
    /// The directives slate caches by, and the field they came from: `Slate-Cache-Control`,
    /// then `CDN-Cache-Control`, each used only when it is a valid, non-empty Structured
    /// Fields Dictionary whose members slate knows have the right types; else
    /// `Cache-Control`.
    pub fn for_slate(headers: &HeaderMap) -> (CacheControl, Directives) {
        for (name, source) in [
            (SLATE_CACHE_CONTROL, Directives::Slate),
            (CDN_CACHE_CONTROL, Directives::Cdn),
        ] {
            if let Some(cc) = CacheControl::targeted(headers, name) {
                return (cc, source);
            }
        }
        (CacheControl::parse(headers), Directives::CacheControl)
    }

    /// A targeted field (RFC 9213 §2.1) as a Dictionary (RFC 9651, parsed by `sfv`): its
    /// field lines joined as one. `None` when absent, empty, not a Dictionary, or when a
    /// member slate acts on has a value of the wrong type: the whole field is then ignored.
    /// Unknown members and every parameter are ignored.
    fn targeted(headers: &HeaderMap, name: &str) -> Option<CacheControl> {
        use sfv::{BareItem, ListEntry};
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        let mut joined = Vec::new();
        for line in lines {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(line.as_bytes());
        }
        let dict: sfv::Dictionary = sfv::Parser::new(&joined).parse().ok()?;
        if dict.is_empty() {
            return None;
        }
        let mut cc = CacheControl::default();
        for (key, member) in &dict {
            let item = match member {
                ListEntry::Item(i) => Some(&i.bare_item),
                ListEntry::InnerList(_) => None,
            };
            // A delta: a non-negative Integer, clamped like Cache-Control's.
            let delta = || match item {
                Some(BareItem::Integer(n)) => u64::try_from(i64::from(*n))
                    .ok()
                    .map(|n| n.min(MAX_DELTA_SECONDS)),
                _ => None,
            };
            // A flag: `true` (a bare key), or `?0` for absent.
            let flag = || match item {
                Some(BareItem::Boolean(b)) => Some(*b),
                _ => None,
            };
            // `no-cache` and `private` may name fields (an Inner List of Strings): slate
            // treats the qualified form as unqualified, which is stricter.
            let qualified = || match member {
                ListEntry::InnerList(l) => l
                    .items
                    .iter()
                    .all(|i| matches!(i.bare_item, BareItem::String(_)))
                    .then_some(true),
                ListEntry::Item(_) => flag(),
            };
            match key.as_str() {
                "max-age" => cc.max_age = Some(Some(delta()?)),
                "s-maxage" => cc.s_maxage = Some(Some(delta()?)),
                "stale-while-revalidate" => cc.stale_while_revalidate = Some(delta()?),
                "stale-if-error" => cc.stale_if_error = Some(delta()?),
                "no-store" => cc.no_store = flag()?,
                "no-cache" => cc.no_cache = qualified()?,
                "private" => cc.private = qualified()?,
                "public" => cc.public = flag()?,
                "must-revalidate" => cc.must_revalidate = flag()?,
                "proxy-revalidate" => cc.proxy_revalidate = flag()?,
                "must-understand" => cc.must_understand = flag()?,
                _ => {}
            }
        }
        Some(cc)
    }

    /// Parses every `Cache-Control` field line. Directive names are case-insensitive;
    /// a duplicated delta directive with different values is "invalid" (RFC 9111 §4.2.1
    /// allows treating the response as stale), and so is a value that is not a number.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for_each_directive(headers, |name, value| {
            let delta = || value.and_then(delta_seconds);
            match name {
                "no-store" => cc.no_store = true,
                // `no-cache="Set-Cookie"` (qualified) is treated as unqualified: stricter.
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "public" => cc.public = true,
                "must-revalidate" => cc.must_revalidate = true,
                "proxy-revalidate" => cc.proxy_revalidate = true,
                "max-age" => cc.max_age = Some(merge(cc.max_age, delta())),
                "s-maxage" => cc.s_maxage = Some(merge(cc.s_maxage, delta())),
                "stale-while-revalidate" => cc.stale_while_revalidate = delta(),
                "stale-if-error" => cc.stale_if_error = delta(),
                "must-understand" => cc.must_understand = true,
                _ => {}
            }
        });
        cc
    }
}

/// The request `Cache-Control` directives slate honors (RFC 9111 §5.2.1).
///
/// `max-stale` and `only-if-cached` only ever make slate do *less* upstream work, so they
/// are always honored. `no-cache`, `max-age` and `min-fresh` (and `Pragma: no-cache`) ask
/// for *more*: honoring them by default would let any client force a 30-second report to
/// be recomputed on every request. They are honored only with
/// `cache.honor_client_no_cache = true`, and even then as a revalidation (a 304 is cheap
/// when the origin supports validators), never as a bypass of single-flight.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestDirectives {
    pub no_cache: bool,
    /// The response to this request must not be stored (§5.2.1.5).
    pub no_store: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u64>,
    pub min_fresh: Option<u64>,
    /// `max-stale` without a value accepts any staleness: `u64::MAX`.
    pub max_stale: Option<u64>,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        for_each_directive(headers, |name, value| {
            let delta = || value.and_then(delta_seconds);
            match name {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "only-if-cached" => d.only_if_cached = true,
                "max-age" => d.max_age = delta(),
                "min-fresh" => d.min_fresh = delta(),
                "max-stale" => {
                    d.max_stale = Some(if value.is_some() {
                        delta().unwrap_or(0)
                    } else {
                        u64::MAX
                    })
                }
                _ => {}
            }
        });
        if !headers.contains_key(CACHE_CONTROL) {
            let pragma = headers.get_all(http::header::PRAGMA).iter();
            d.no_cache = pragma
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains("no-cache"));
        }
        d
    }

    /// Drops the directives that ask for fresher answers than the cache holds
    /// (`no-cache`, `max-age`, `min-fresh`), when they are not to be honored.
    pub fn ignore_requests_for_fresher(&mut self) {
        self.no_cache = false;
        self.max_age = None;
        self.min_fresh = None;
    }
}

/// Calls `f` with each `Cache-Control` directive of every field line: its lower-cased
/// name and its value, unquoted.
fn for_each_directive(headers: &HeaderMap, mut f: impl FnMut(&str, Option<&str>)) {
    for line in headers.get_all(CACHE_CONTROL) {
        let Ok(line) = line.to_str() else { continue };
        for d in split_directives(line) {
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d.trim(), None),
            };
            f(&name.to_ascii_lowercase(), value);
        }
    }
}

/// Splits on commas that are not inside a quoted string.
fn split_directives(line: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

fn merge(prev: Option<Option<u64>>, new: Option<u64>) -> Option<u64> {
    match prev {
        None => new,
        Some(p) if p == new => p,
        Some(_) => None,
    }
}

/// Statuses stored when the origin gives explicit freshness: every final status (RFC 9111
/// §3), a `503 max-age=5` being an origin's way to ask for five seconds of peace. Not 206
/// (a part) nor 304 (no representation of its own).
fn storable_with_origin_freshness(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200..=599) && !matches!(s.as_u16(), 206 | 304)
}

/// The statuses RFC 9110 defines, whose caching slate therefore understands: with
/// `must-understand`, any other is not stored (RFC 9111 §5.2.2.3).
fn understood(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Statuses a rule's `ttl` applies to when the origin says nothing: successful answers and
/// permanent redirects. A 404 for a report that does not exist *yet* must not stick for an
/// hour, so error statuses need the origin's own freshness.
fn storable_with_rule_ttl(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200 | 203 | 300 | 301 | 308)
}

/// What to do with a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Store(Freshness),
    /// Not stored, with the reason (shown in `Cache-Status: ...; detail=`).
    NoStore(NoStoreReason),
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStoreReason {
    /// The request said `no-store` (RFC 9111 §5.2.1.5).
    RequestNoStore,
    ServerError,
    /// 206 or an interim response.
    Partial,
    SetCookie,
    /// The response said `no-store`.
    NoStore,
    Private,
    /// `no-cache` without a validator: every use would be a full fetch.
    NoCache,
    VaryStar,
    /// Neither the origin nor a rule gave it freshness.
    NoFreshness,
    /// A status that may not be stored with the freshness it has.
    Status,
    /// Stale on arrival, with no stale window.
    Stale,
    /// The body does not decode in the coding it claims (or decodes past the size limit).
    BadCoding,
}

impl NoStoreReason {
    /// As shown in `Cache-Status: ...; detail=`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoStoreReason::RequestNoStore => "request-no-store",
            NoStoreReason::ServerError => "server-error",
            NoStoreReason::Partial => "partial",
            NoStoreReason::SetCookie => "set-cookie",
            NoStoreReason::NoStore => "no-store",
            NoStoreReason::Private => "private",
            NoStoreReason::NoCache => "no-cache",
            NoStoreReason::VaryStar => "vary-star",
            NoStoreReason::NoFreshness => "no-freshness",
            NoStoreReason::Status => "status",
            NoStoreReason::Stale => "stale",
            NoStoreReason::BadCoding => "bad-coding",
        }
    }
}

/// Freshness of a response about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    pub fresh_ms: u64,
    pub swr_ms: u64,
    pub sie_ms: u64,
    pub must_revalidate: bool,
    /// No stale answers on a client's say-so (`max-stale`).
    pub proxy_revalidate: bool,
    /// Stored, but validated with the origin before every use.
    pub no_cache: bool,
    pub tags: Vec<String>,
    /// Request headers the response varies on.
    pub vary: Vec<String>,
}

impl Freshness {
    /// The longest time past its freshness the entry may still answer.
    fn stale_windows(&self, unreachable_ms: u64) -> u64 {
        let forbidden = self.must_revalidate || self.proxy_revalidate || self.no_cache;
        let unreachable = if forbidden { 0 } else { unreachable_ms };
        self.swr_ms.max(self.sie_ms).max(unreachable)
    }

    /// How long the store should keep the entry: fresh plus the longest stale window,
    /// capped by [`MAX_ENTRY_LIFETIME`].
    /// `unreachable_ms`: how long past its freshness it may stand in for an unreachable
    /// origin (`cache.stale_if_unreachable`), when its response allows stale answers.
    pub fn keep_for(&self, age_ms: u64, has_validator: bool, unreachable_ms: u64) -> Duration {
        // An entry with a validator stays useful after it goes stale: a 304 renews it
        // without the body crossing the wire again.
        let revalidation = if has_validator {
            REVALIDATION_GRACE_MS
        } else {
            0
        };
        let ms = self
            .fresh_ms
            .saturating_sub(age_ms)
            .saturating_add(self.stale_windows(unreachable_ms).max(revalidation))
            .max(1000);
        Duration::from_millis(ms).min(MAX_ENTRY_LIFETIME)
    }
}

/// An HTTP date in any of the three forms of RFC 9110 §5.6.7 (IMF-fixdate, RFC 850,
/// asctime), read as recipients must: tolerant of the letter case of day, month and zone
/// names (`tue, 01 DEC 2026 10:00:00 gmt`).
pub fn http_date(s: &str) -> Option<std::time::SystemTime> {
    let s = s.trim();
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    // Names in the case httpdate expects: `Tue`, `Tuesday`, `Dec`, `GMT`.
    let mut fixed = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            for (i, c) in word.chars().enumerate() {
                out.push(if i == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
            }
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut fixed);
            fixed.push(c);
        }
    }
    flush(&mut word, &mut fixed);
    httpdate::parse_http_date(&fixed).ok()
}

fn parse_http_date(headers: &HeaderMap, name: http::HeaderName) -> Option<Result<u64, ()>> {
    let v = headers.get(name)?;
    Some(
        v.to_str()
            .ok()
            .and_then(http_date)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .ok_or(()),
    )
}

/// The `Age` header as one non-negative integer of seconds (clamped like any
/// delta-seconds): `Some(None)` when absent, `None` when invalid (a list, a negative,
/// a word, several field lines).
fn age_seconds(headers: &HeaderMap) -> Option<Option<u64>> {
    let mut lines = headers.get_all(http::header::AGE).iter();
    let Some(first) = lines.next() else {
        return Some(None);
    };
    if lines.next().is_some() {
        return None;
    }
    first
        .to_str()
        .ok()
        .and_then(|s| delta_seconds(s.trim()))
        .map(Some)
}

/// Whether the response's `Age`, if any, can be believed (RFC 9111 §5.1).
pub fn age_is_valid(headers: &HeaderMap) -> bool {
    age_seconds(headers).is_some()
}

/// RFC 9111 §4.2.3: the corrected initial age of a response received at `response_ms`
/// for a request sent at `request_ms`.
pub fn initial_age_ms(headers: &HeaderMap, request_ms: u64, response_ms: u64) -> u64 {
    let date = parse_http_date(headers, DATE).and_then(|r| r.ok());
    let apparent = date.map_or(0, |d| response_ms.saturating_sub(d));
    // An invalid Age counts for nothing here; `decide` treats its response as stale.
    let age_value = age_seconds(headers)
        .flatten()
        .unwrap_or(0)
        .saturating_mul(1000);
    let delay = response_ms.saturating_sub(request_ms);
    apparent.max(age_value.saturating_add(delay))
}

/// Tags of a response: the origin's `Cache-Tag` and `Surrogate-Key` (comma- or
/// space-separated) and the rule's, deduplicated; at most 64 of at most 128 bytes each.
pub fn tags(headers: &HeaderMap, rule: Option<&Rule>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let origin = ["cache-tag", "surrogate-key"]
        .into_iter()
        .flat_map(|h| headers.get_all(h).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split([',', ' ']))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 128);
    for t in origin.chain(rule.iter().flat_map(|r| r.tags.iter().map(String::as_str))) {
        if tags.len() < 64 && !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    tags
}

/// Decides whether a response to a GET may be stored, and with what freshness.
///
/// `response_ms` is when it was received (for `Expires` without a `Date`).
pub fn decide(
    rule: Option<&Rule>,
    status: StatusCode,
    headers: &HeaderMap,
    response_ms: u64,
) -> Decision {
    if status == StatusCode::PARTIAL_CONTENT || status.is_informational() {
        return Decision::NoStore(NoStoreReason::Partial);
    }
    // A response that sets a cookie belongs to one client; no rule makes it shared.
    if headers.contains_key(SET_COOKIE) {
        return Decision::NoStore(NoStoreReason::SetCookie);
    }
    let (cc, source) = CacheControl::for_slate(headers);
    if cc.must_understand && !understood(status) {
        return Decision::NoStore(NoStoreReason::Status);
    }
    let validator = headers.contains_key(http::header::ETAG)
        || headers.contains_key(http::header::LAST_MODIFIED);
    // Config validation refuses `override_origin` without a `ttl`; a rule built in code
    // may still have one, and then there is nothing to override with.
    let overriding = rule.is_some_and(|r| r.override_origin && r.ttl.is_some());
    if !overriding {
        // `must-understand` on a status slate understands overrides `no-store` (§5.2.2.3).
        if cc.no_store && !cc.must_understand {
            return Decision::NoStore(NoStoreReason::NoStore);
        }
        if cc.private {
            return Decision::NoStore(NoStoreReason::Private);
        }
        // no-cache: may be stored, but every use must be validated first; without a
        // validator that is a full fetch every time, so storing would only waste space.
        if cc.no_cache && !validator {
            return Decision::NoStore(NoStoreReason::NoCache);
        }
    }
    let vary = match vary_names(headers) {
        Some(v) => v,
        None => return Decision::NoStore(NoStoreReason::VaryStar),
    };

    let rule_ttl = rule.and_then(|r| r.ttl).map(|d| d.as_millis() as u64);
    let rule_for_tags = rule;
    let origin_ms: Option<u64> = if let Some(v) = cc.s_maxage {
        Some(v.map_or(0, |s| s.saturating_mul(1000)))
    } else if let Some(v) = cc.max_age {
        Some(v.map_or(0, |s| s.saturating_mul(1000)))
    } else if source != Directives::CacheControl {
        // A targeted field decides alone: `Expires` is ignored with it (RFC 9213 §2.1).
        None
    } else {
        match parse_http_date(headers, EXPIRES) {
            None => None,
            Some(Err(())) => Some(0), // an invalid Expires means "already expired"
            Some(Ok(exp)) => {
                let date = parse_http_date(headers, DATE)
                    .and_then(|r| r.ok())
                    .unwrap_or(response_ms);
                Some(exp.saturating_sub(date))
            }
        }
    };

    // `no-cache` with a validator: stored to be revalidated on every use (§5.2.2.4), so
    // it needs no freshness of its own.
    let origin_ms = match origin_ms {
        None if !overriding && cc.no_cache && validator => Some(0),
        o => o,
    };
    let fresh_ms = match (overriding, origin_ms, rule_ttl) {
        (true, _, Some(t)) if storable_with_rule_ttl(status) || status == StatusCode::NOT_FOUND => {
            t
        }
        (false, Some(o), _) if storable_with_origin_freshness(status) => o,
        (false, None, Some(t)) if storable_with_rule_ttl(status) => t,
        // An error is stored only with the freshness its origin gave it.
        (_, None, _) if status.is_server_error() => {
            return Decision::NoStore(NoStoreReason::ServerError)
        }
        (_, None, None) => return Decision::NoStore(NoStoreReason::NoFreshness),
        _ => return Decision::NoStore(NoStoreReason::Status),
    };
    // An `Age` that is not one non-negative integer: as old as can be (§5.1), so stale.
    let fresh_ms = if age_is_valid(headers) { fresh_ms } else { 0 };
    let secs = |s: u64| s.saturating_mul(1000);
    // A rule's stale windows are for the answers its `ttl` is for: an error is served stale
    // only as long as its origin said.
    let rule = rule.filter(|_| overriding || status.as_u16() < 400);
    let rule_ms = |d: fn(&Rule) -> Duration| rule.map_or(0, |r| d(r).as_millis() as u64);
    let (mut swr_ms, mut sie_ms) = (
        rule_ms(|r| r.stale_while_revalidate),
        rule_ms(|r| r.stale_if_error),
    );
    if !overriding {
        if let Some(s) = cc.stale_while_revalidate {
            swr_ms = secs(s);
        }
        if let Some(s) = cc.stale_if_error {
            sie_ms = secs(s);
        }
    }
    let must_revalidate = !overriding && cc.must_revalidate;
    if must_revalidate {
        (swr_ms, sie_ms) = (0, 0);
    }
    // `proxy-revalidate`, and `s-maxage` which carries it (§5.2.2.10): no stale answer
    // beyond what the origin itself allowed (its own stale-while-revalidate/-if-error).
    let proxy_revalidate = !overriding && (cc.proxy_revalidate || cc.s_maxage.is_some());
    if proxy_revalidate {
        swr_ms = cc.stale_while_revalidate.map_or(0, secs);
        sie_ms = cc.stale_if_error.map_or(0, secs);
    }
    if fresh_ms == 0 && swr_ms == 0 && sie_ms == 0 && !(cc.no_cache && validator) {
        return Decision::NoStore(NoStoreReason::Stale);
    }
    Decision::Store(Freshness {
        fresh_ms,
        swr_ms,
        sie_ms,
        must_revalidate,
        proxy_revalidate,
        no_cache: !overriding && cc.no_cache,
        tags: tags(headers, rule_for_tags),
        vary,
    })
}

/// The request headers a response varies on, lower-cased; `None` for `Vary: *` (or an
/// unreadable `Vary`), which no later request can match.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for line in headers.get_all(VARY) {
        let line = line.to_str().ok()?;
        for name in line.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let n = name.to_ascii_lowercase();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn rules(toml: &str) -> Config {
        Config::parse("t", toml).unwrap()
    }

    #[test]
    fn cache_control_parsing() {
        let cc = CacheControl::parse(&h(&[
            ("cache-control", "Max-Age=60, s-maxage=\"30\", foo=\"a,b\""),
            ("cache-control", "stale-while-revalidate=5"),
        ]));
        assert_eq!(cc.max_age, Some(Some(60)));
        assert_eq!(cc.s_maxage, Some(Some(30)));
        assert_eq!(cc.stale_while_revalidate, Some(5));
        let dup = CacheControl::parse(&h(&[("cache-control", "max-age=60, max-age=70")]));
        assert_eq!(dup.max_age, Some(None));
        let bad = CacheControl::parse(&h(&[("cache-control", "max-age=soon")]));
        assert_eq!(bad.max_age, Some(None));
    }

    #[test]
    fn no_rule_needs_origin_freshness() {
        let ok = StatusCode::OK;
        assert_eq!(
            decide(None, ok, &h(&[]), 0),
            Decision::NoStore(NoStoreReason::NoFreshness)
        );
        let Decision::Store(f) = decide(
            None,
            ok,
            &h(&[("cache-control", "max-age=60, s-maxage=10")]),
            0,
        ) else {
            panic!()
        };
        assert_eq!(f.fresh_ms, 10_000);
        assert_eq!(
            decide(None, ok, &h(&[("cache-control", "max-age=60, private")]), 0),
            Decision::NoStore(NoStoreReason::Private)
        );
        let exp = h(&[
            ("date", "Tue, 24 Nov 2026 10:00:00 GMT"),
            ("expires", "Tue, 24 Nov 2026 10:05:00 GMT"),
        ]);
        let Decision::Store(f) = decide(None, ok, &exp, 0) else {
            panic!()
        };
        assert_eq!(f.fresh_ms, 300_000);
        // RFC 9111 §3: any final status with explicit freshness may be stored.
        let Decision::Store(f) = decide(
            None,
            StatusCode::BAD_GATEWAY,
            &h(&[("cache-control", "max-age=60")]),
            0,
        ) else {
            panic!()
        };
        assert_eq!(f.fresh_ms, 60_000);
        assert_eq!(
            decide(None, StatusCode::BAD_GATEWAY, &h(&[]), 0),
            Decision::NoStore(NoStoreReason::ServerError)
        );
    }

    #[test]
    fn rules_supply_and_override() {
        let c = rules("[[rules]]\npath=\"/\"\nttl=\"1h\"\nstale_while_revalidate=\"10m\"\n");
        let r = c.rule_for("/x").map(|r| &**r);
        let Decision::Store(f) = decide(r, StatusCode::OK, &h(&[]), 0) else {
            panic!()
        };
        assert_eq!((f.fresh_ms, f.swr_ms), (3_600_000, 600_000));
        // The origin's own freshness wins without override.
        let Decision::Store(f) =
            decide(r, StatusCode::OK, &h(&[("cache-control", "max-age=5")]), 0)
        else {
            panic!()
        };
        assert_eq!(f.fresh_ms, 5000);
        assert_eq!(
            decide(r, StatusCode::OK, &h(&[("cache-control", "no-store")]), 0),
            Decision::NoStore(NoStoreReason::NoStore)
        );
        let c = rules("[[rules]]\npath=\"/\"\nttl=\"1h\"\noverride_origin=true\n");
        let r = c.rule_for("/x").map(|r| &**r);
        let Decision::Store(f) = decide(
            r,
            StatusCode::OK,
            &h(&[("cache-control", "no-store, max-age=5")]),
            0,
        ) else {
            panic!()
        };
        assert_eq!(f.fresh_ms, 3_600_000);
        assert_eq!(
            decide(r, StatusCode::OK, &h(&[("set-cookie", "a=b")]), 0),
            Decision::NoStore(NoStoreReason::SetCookie)
        );
    }

    #[test]
    fn age_arithmetic() {
        let hd = h(&[("date", "Tue, 24 Nov 2026 10:00:00 GMT"), ("age", "30")]);
        let date_ms = httpdate::parse_http_date("Tue, 24 Nov 2026 10:00:00 GMT")
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Received 10 s after Date, request took 2 s, Age says 30 s: 32 s.
        assert_eq!(
            initial_age_ms(&hd, date_ms + 8000, date_ms + 10_000),
            32_000
        );
    }

    #[test]
    fn tags_merge() {
        let c = rules("[[rules]]\npath=\"/\"\ntags=[\"analytics\", \"sales\"]\n");
        let t = tags(
            &h(&[("cache-tag", "sales, finance"), ("surrogate-key", "a b")]),
            c.rule_for("/").map(|r| &**r),
        );
        assert_eq!(t, vec!["sales", "finance", "a", "b", "analytics"]);
    }
}
