//! Answers from the cache: a response built from an entry, the `Cache-Status` of stale
//! answers, and the finishing every answer gets in `handle` (a client's conditional
//! request, `Cache-Status`, `HEAD`).

use super::CACHE_STATUS;
use crate::body::ProxyBody;
use crate::coding::{self, Accepts, Coding, Decoder};
use crate::entry::Entry;
use crate::instance::Shared;
use crate::phase::{CacheStatus, Detail, Fwd, Phase};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

/// A response built from an entry at `now` (ms), for a request with `req` headers (its
/// `Accept-Encoding` picks what is sent). `from_store`: it was served from the store (so it
/// gets an `Age`), rather than just fetched.
pub(super) fn entry_response(
    shared: &Shared,
    e: &Entry,
    from_store: bool,
    now: u64,
    req: &HeaderMap,
) -> Response<ProxyBody> {
    // The stored bytes as they are, unless they are in a coding this client does not take.
    // A range is of the identity representation (see `range`): a ranged request is sent it.
    let ranged = req.contains_key(header::RANGE);
    let decode = e.coding != Coding::Identity && (ranged || !Accepts::of(req).accepts(e.coding));
    let (body, sent) = match decode.then(|| Decoder::new(e.body.clone(), e.coding, e.identity_len))
    {
        Some(Some(d)) => (ProxyBody::Decode(Box::new(d)), Coding::Identity),
        // A zstd stream whose header does not read: the transfer breaks at once.
        Some(None) => (ProxyBody::Broken, Coding::Identity),
        None => (ProxyBody::Full(Some(e.body.clone())), e.coding),
    };
    let sent_len = if sent == e.coding {
        e.body.len() as u64
    } else {
        e.identity_len
    };
    let mut r = Response::new(body);
    *r.status_mut() = e.status;
    *r.headers_mut() = e.headers.clone();
    let h = r.headers_mut();
    if sent != Coding::Identity {
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(sent.as_str()),
        );
    }
    // Other bytes than the origin's: its strong validator does not describe them.
    if sent != e.origin_coding {
        if let Some(tag) = h.get(header::ETAG).map(coding::weaken) {
            h.insert(header::ETAG, tag);
        }
    }
    // A response that is not new carries its age, also on a miss: an upstream cache's Age
    // must reach the next cache down (RFC 9111 §5.1).
    if from_store || e.initial_age_ms >= 1000 {
        let age = e.age_ms(now) / 1000;
        h.insert(header::AGE, HeaderValue::from(age));
    }
    if from_store {
        shared.metrics.bytes_from_cache.add(sent_len);
        shared.metrics.answered_in(sent);
    }
    h.append(header::VIA, HeaderValue::from_static("1.1 slate"));
    r
}

/// A stale entry served at once, and why it may be.
pub(super) fn stale_status(e: &Entry, detail: Detail, now: u64) -> CacheStatus {
    let ttl = e.ttl_ms(now).min(0);
    CacheStatus {
        ttl: Some(ttl.div_euclid(1000)),
        ..CacheStatus::new(Phase::Stale)
    }
    .detail(detail)
}

/// A stale entry served because the origin failed (`stale-if-error`) or could not be
/// reached (`upstream-unreachable`): it went upstream (`fwd=stale`), so it is not a `hit`
/// (RFC 9211 §2.1).
pub(super) fn stale_on_failure(
    e: &Entry,
    why: Detail,
    upstream_status: Option<u16>,
    now: u64,
) -> CacheStatus {
    let mut s = stale_status(e, why, now);
    s.fwd = Some(Fwd::Stale);
    s.fwd_status = upstream_status;
    s
}

/// A client's `If-None-Match` / `If-Modified-Since`.
#[derive(Debug)]
pub(super) struct Conditional {
    none_match: Option<String>,
    modified_since: Option<std::time::SystemTime>,
}

impl Conditional {
    pub fn of(h: &HeaderMap) -> Option<Conditional> {
        let none_match = h
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let modified_since = h
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::policy::http_date);
        (none_match.is_some() || modified_since.is_some()).then_some(Conditional {
            none_match,
            modified_since,
        })
    }

    /// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` (weak comparison) wins over
    /// `If-Modified-Since`.
    pub fn not_modified(&self, resp: &HeaderMap) -> bool {
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
                .and_then(crate::policy::http_date)
                .is_some_and(|lm| lm <= since),
            _ => false,
        }
    }
}

/// Turns a 200 into the 304 a matching conditional request gets: no body, and none of the
/// headers that describe one.
pub(super) fn not_modified(resp: &mut Response<ProxyBody>) {
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

/// Adds slate's `Cache-Status` member. RFC 9211: caches add their member at the end of the
/// list; an upstream cache's own stays in front of ours.
pub(super) fn add_cache_status(resp: &mut Response<ProxyBody>, status: &CacheStatus) {
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
}

/// `Accept-Ranges: bytes` on a complete `200` from the cache, which a range can be cut from
/// (download tools look for it before they resume), unless the origin said otherwise.
pub(super) fn accept_ranges(resp: &mut Response<ProxyBody>) {
    let whole = matches!(resp.body(), ProxyBody::Full(_) | ProxyBody::Decode(_));
    if resp.status() == StatusCode::OK && whole {
        let h = resp.headers_mut();
        if !h.contains_key(header::ACCEPT_RANGES) {
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
    }
}

/// The answer to a `HEAD`: the headers the `GET` gets (its `Content-Length` too), no body.
pub(super) fn strip_body(resp: &mut Response<ProxyBody>) {
    let len = match resp.body() {
        ProxyBody::Full(Some(b)) => Some(b.len() as u64),
        ProxyBody::Decode(d) => Some(d.remaining()),
        _ => None,
    };
    if let Some(len) = len {
        let len = HeaderValue::from(len);
        resp.headers_mut().insert(header::CONTENT_LENGTH, len);
    }
    *resp.body_mut() = ProxyBody::Empty;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(pairs: &[(&'static str, &'static str)]) -> Option<Conditional> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        Conditional::of(&h)
    }

    fn resp(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let c = cond(&[("if-none-match", "W/\"a\", \"b\"")]).unwrap();
        assert!(c.not_modified(&resp(&[("etag", "\"a\"")])));
        assert!(c.not_modified(&resp(&[("etag", "W/\"b\"")])));
        assert!(!c.not_modified(&resp(&[("etag", "\"c\"")])));
        assert!(!c.not_modified(&resp(&[])), "no ETag, no match");
        let star = cond(&[("if-none-match", "*")]).unwrap();
        assert!(star.not_modified(&resp(&[("etag", "\"z\"")])));
    }

    #[test]
    fn if_modified_since_and_precedence() {
        let lm = "Tue, 01 Dec 2026 10:00:00 GMT";
        let c = cond(&[("if-modified-since", "Tue, 01 Dec 2026 11:00:00 GMT")]).unwrap();
        assert!(c.not_modified(&resp(&[("last-modified", lm)])));
        let c = cond(&[("if-modified-since", "Tue, 01 Dec 2026 09:00:00 GMT")]).unwrap();
        assert!(!c.not_modified(&resp(&[("last-modified", lm)])));
        // If-None-Match decides alone when both are sent (RFC 9110 §13.1.3).
        let c = cond(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Tue, 01 Dec 2026 11:00:00 GMT"),
        ])
        .unwrap();
        assert!(!c.not_modified(&resp(&[("last-modified", lm), ("etag", "\"a\"")])));
        assert!(cond(&[("if-modified-since", "yesterday")]).is_none());
    }

    #[test]
    fn an_upstream_caches_member_stays_first() {
        let mut r = Response::new(ProxyBody::Empty);
        r.headers_mut()
            .insert(CACHE_STATUS, HeaderValue::from_static("edge; hit"));
        add_cache_status(&mut r, &CacheStatus::hit(5_000));
        assert_eq!(r.headers()[&CACHE_STATUS], "edge; hit, slate; hit; ttl=5");
    }
}
