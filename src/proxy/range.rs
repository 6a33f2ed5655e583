//! Byte ranges from the cache (RFC 9110 §14): a download tool resuming a big CSV export
//! gets the bytes it lacks from the stored report, not the whole report again.
//!
//! Ranges are served from what the cache holds and never asked of the origin: a fill
//! fetches the whole representation (`Range` is not forwarded), stores it, and the range is
//! cut here from the answer. They apply to the identity representation: a ranged request
//! is answered decoded (see `answer::entry_response`), so offsets mean the same bytes
//! whatever coding the report is stored in.
//!
//! One range (`a-b`, `a-`, `-n`) → `206` with `Content-Range`; none satisfiable → `416`
//! with `Content-Range: bytes */len`; several ranges → the whole `200` (a server may ignore
//! `Range`, §14.2, and `multipart/byteranges` is for clients slate's users do not run);
//! a syntactically bad `Range`, or another unit → ignored, the whole `200`.

use crate::body::ProxyBody;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

/// What a request's `Range` asks of a representation `len` bytes long.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ranged {
    /// Bytes `first..=last`.
    One { first: u64, last: u64 },
    /// Nothing in it lies inside the representation: `416`.
    Unsatisfiable,
    /// Answer the whole representation: no `Range`, one slate ignores, or several ranges.
    Whole,
}

/// One `range-spec` of RFC 9110 §14.1.1.
enum Spec {
    /// `first-pos "-" [ last-pos ]`
    Int(u64, Option<u64>),
    /// `"-" suffix-length`
    Suffix(u64),
}

fn spec(s: &str) -> Option<Spec> {
    let (a, b) = s.trim().split_once('-')?;
    let num = |t: &str| {
        let t = t.trim();
        (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => num(b).map(Spec::Suffix),
        (false, true) => num(a).map(|f| Spec::Int(f, None)),
        (false, false) => {
            let (f, l) = (num(a)?, num(b)?);
            // `last-pos` before `first-pos` makes the whole field invalid (§14.1.1).
            (l >= f).then_some(Spec::Int(f, Some(l)))
        }
        (true, true) => None,
    }
}

/// Reads `Range` (one field value) against a representation of `len` bytes.
pub(super) fn ranged(range: &str, len: u64) -> Ranged {
    let Some((unit, set)) = range.split_once('=') else {
        return Ranged::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranged::Whole;
    }
    let specs: Option<Vec<Spec>> = set
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(spec)
        .collect();
    let specs = match specs {
        Some(s) if !s.is_empty() => s,
        _ => return Ranged::Whole,
    };
    let satisfiable = |s: &Spec| match *s {
        Spec::Int(first, last) => (first < len).then(|| (first, last.unwrap_or(u64::MAX))),
        Spec::Suffix(n) => (n > 0 && len > 0).then(|| (len.saturating_sub(n), u64::MAX)),
    };
    let mut hits = specs.iter().filter_map(satisfiable);
    match (hits.next(), specs.len()) {
        (None, _) => Ranged::Unsatisfiable,
        (Some((first, last)), 1) => Ranged::One {
            first,
            last: last.min(len - 1),
        },
        _ => Ranged::Whole,
    }
}

/// Whether `If-Range` lets the range through for a response with `resp` headers: a strong
/// entity tag equal to the response's strong `ETag`, or a date equal to its
/// `Last-Modified` (RFC 9110 §13.1.5); anything else, the whole representation.
fn if_range_holds(if_range: &HeaderValue, resp: &HeaderMap) -> bool {
    let Ok(v) = if_range.to_str().map(str::trim) else {
        return false;
    };
    if v.starts_with('"') || v.starts_with("W/") {
        let strong = |t: &str| t.starts_with('"') && t.len() >= 2 && t.ends_with('"');
        let etag = resp.get(header::ETAG).and_then(|e| e.to_str().ok());
        return strong(v) && etag.is_some_and(|e| strong(e.trim()) && e.trim() == v);
    }
    let lm = resp
        .get(header::LAST_MODIFIED)
        .and_then(|l| l.to_str().ok());
    match (
        crate::policy::http_date(v),
        lm.and_then(crate::policy::http_date),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The request headers of a range that the cache will answer, when there is one: a `GET`
/// with `Range`. Kept from the request before it is consumed.
pub(super) struct RangeAsk {
    range: HeaderValue,
    if_range: Option<HeaderValue>,
}

impl RangeAsk {
    pub(super) fn of(h: &HeaderMap) -> Option<RangeAsk> {
        Some(RangeAsk {
            range: h.get(header::RANGE)?.clone(),
            if_range: h.get(header::IF_RANGE).cloned(),
        })
    }

    /// Cuts the range out of a complete `200` from the cache; any other answer, a body not
    /// held whole (a report too big to store streams through), an `If-Range` that does not
    /// hold: unchanged.
    pub(super) fn apply(&self, resp: &mut Response<ProxyBody>) {
        if resp.status() != StatusCode::OK || resp.headers().contains_key(header::CONTENT_ENCODING)
        {
            return;
        }
        if let Some(ir) = &self.if_range {
            if !if_range_holds(ir, resp.headers()) {
                return;
            }
        }
        let Ok(range) = self.range.to_str() else {
            return;
        };
        let len = match resp.body() {
            ProxyBody::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            ProxyBody::Decode(d) => d.remaining(),
            _ => return,
        };
        let ranged = ranged(range, len);
        if ranged == Ranged::Whole {
            return;
        }
        let Some(body) = whole(resp.body_mut()) else {
            // The stored body does not decode: the whole answer breaks as it would anyway.
            return;
        };
        match ranged {
            Ranged::One { first, last } => {
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                let h = resp.headers_mut();
                let cr = format!("bytes {first}-{last}/{len}");
                h.insert(header::CONTENT_RANGE, header_value(&cr));
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
                *resp.body_mut() = ProxyBody::full(body.slice(first as usize..=last as usize));
            }
            Ranged::Unsatisfiable => {
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{len}")),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                h.remove(header::CONTENT_TYPE);
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                *resp.body_mut() = ProxyBody::Empty;
            }
            Ranged::Whole => {}
        }
    }
}

fn header_value(s: &str) -> HeaderValue {
    // Digits, `-`, `/`, `*` and a space: always a valid header value.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// The whole body, decoded when it is stored in a coding; `None` when it does not decode.
fn whole(body: &mut ProxyBody) -> Option<Bytes> {
    match std::mem::replace(body, ProxyBody::Empty) {
        ProxyBody::Full(b) => Some(b.unwrap_or_default()),
        ProxyBody::Decode(mut d) => {
            let mut out = BytesMut::with_capacity(d.remaining() as usize);
            while let Some(chunk) = d.next_chunk() {
                out.extend_from_slice(&chunk.ok()?);
            }
            Some(out.freeze())
        }
        other => {
            *body = other;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_in_each_form() {
        assert_eq!(ranged("bytes=0-9", 100), Ranged::One { first: 0, last: 9 });
        assert_eq!(
            ranged("bytes=90-", 100),
            Ranged::One {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            ranged("bytes=-10", 100),
            Ranged::One {
                first: 90,
                last: 99
            }
        );
        // A last-pos past the end, a suffix longer than the body: cut to what there is.
        assert_eq!(
            ranged("bytes=50-500", 100),
            Ranged::One {
                first: 50,
                last: 99
            }
        );
        assert_eq!(
            ranged("bytes=-500", 100),
            Ranged::One { first: 0, last: 99 }
        );
        assert_eq!(
            ranged("Bytes = 1-1", 100),
            Ranged::One { first: 1, last: 1 }
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(ranged("bytes=100-", 100), Ranged::Unsatisfiable);
        assert_eq!(ranged("bytes=-0", 100), Ranged::Unsatisfiable);
        assert_eq!(ranged("bytes=0-0", 0), Ranged::Unsatisfiable);
        for ignored in [
            "bytes=9-1",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "items=0-9",
            "0-9",
            "bytes=0-9,20-29",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(ranged(ignored, 100), Ranged::Whole, "{ignored}");
        }
    }

    #[test]
    fn if_range_wants_a_strong_match() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let lm = "Tue, 01 Dec 2026 10:00:00 GMT";
        h.insert(header::LAST_MODIFIED, HeaderValue::from_static(lm));
        let holds =
            |v: &'static str, h: &HeaderMap| if_range_holds(&HeaderValue::from_static(v), h);
        assert!(holds("\"v1\"", &h));
        assert!(!holds("\"v2\"", &h));
        assert!(!holds("W/\"v1\"", &h), "a weak tag never matches");
        assert!(holds(lm, &h));
        assert!(!holds("Tue, 01 Dec 2026 09:00:00 GMT", &h));
        h.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
        assert!(!holds("\"v1\"", &h), "nor does a weak ETag");
    }
}
