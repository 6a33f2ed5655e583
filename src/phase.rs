//! What happened to a request, named once: it feeds both the `Cache-Status` header
//! (RFC 9211) and the metric labels, so the two can never disagree.

use crate::canon::BodyError;
use crate::policy::NoStoreReason;
use http::HeaderValue;
use std::fmt::Write;

/// The outcome of one request, as far as the cache is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Served fresh from the store.
    Hit,
    /// Served stale from the store (while revalidating, soft-purged, or on origin error).
    Stale,
    /// Went upstream for a cacheable request (this request led the fill).
    Miss,
    /// Waited for another request's fill and got its response.
    Collapsed,
    /// A cacheable method the cache was told to stay out of (rule `cache = false`,
    /// credentials in the request).
    Bypass,
    /// A method the cache does not serve (POST, ...), passed through.
    Pass,
    /// slate answered with an error of its own (400, 403, 502, 504, ...).
    Error,
    /// A purge (PURGE or admin API).
    Purge,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Hit,
        Phase::Stale,
        Phase::Miss,
        Phase::Collapsed,
        Phase::Bypass,
        Phase::Pass,
        Phase::Error,
        Phase::Purge,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Hit => "hit",
            Phase::Stale => "stale",
            Phase::Miss => "miss",
            Phase::Collapsed => "collapsed",
            Phase::Bypass => "bypass",
            Phase::Pass => "pass",
            Phase::Error => "error",
            Phase::Purge => "purge",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// RFC 9211 `fwd`: why a request went upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing stored for the URL.
    UriMiss,
    /// Only other variants stored (Vary).
    VaryMiss,
    /// What is stored is stale (or must be validated first).
    Stale,
    /// The client asked for a fresher answer than the one stored.
    Request,
    /// The cache was told to stay out (rule, credentials).
    Bypass,
    /// A method the cache does not serve.
    Method,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
        }
    }
}

/// `Cache-Status: ...; detail=`: slate's own word on what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Bypassed: the rule says `cache = false`.
    Rule,
    /// Bypassed: the request carries credentials the rule does not key on.
    Credentials,
    /// Stale, served at once while one refresh runs: soft-purged,
    SoftPurged,
    /// within `stale-while-revalidate`,
    StaleWhileRevalidate,
    /// or within the client's `max-stale`.
    MaxStale,
    /// Stale, served because the origin failed.
    StaleIfError,
    /// The response was not shareable: this request went upstream on its own.
    Uncacheable,
    /// Too large to store: streamed through.
    TooLarge,
    /// Fetched but not stored, and why.
    NotStored(NoStoreReason),
    UpstreamTimeout,
    UpstreamUnreachable,
    UpstreamBroken,
    /// Not in the cache, and the request said `only-if-cached`.
    OnlyIfCached,
    /// Bypassed: the body of a body-keyed request cannot be its key.
    Body(BodyBypass),
    /// The fill waited `upstream.queue_timeout` for its turn (a stale copy, or 503).
    QueueFull,
}

/// Why a request body did not become part of a key (the request passed through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyBypass {
    /// Larger than 64 KiB.
    TooLarge,
    /// `json` and `graphql` bodies must say `Content-Type: application/json` (or `+json`).
    ContentType,
    /// The client's body broke off.
    Unreadable,
    InvalidJson,
    DuplicateKey,
    TooDeep,
    GraphqlInvalid,
    GraphqlMutation,
    GraphqlSubscription,
}

impl BodyBypass {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyBypass::TooLarge => "body-too-large",
            BodyBypass::ContentType => "body-content-type",
            BodyBypass::Unreadable => "body-unreadable",
            BodyBypass::InvalidJson => "body-invalid-json",
            BodyBypass::DuplicateKey => "body-duplicate-key",
            BodyBypass::TooDeep => "body-too-deep",
            BodyBypass::GraphqlInvalid => "graphql-invalid",
            BodyBypass::GraphqlMutation => "graphql-mutation",
            BodyBypass::GraphqlSubscription => "graphql-subscription",
        }
    }
}

impl From<&BodyError> for BodyBypass {
    fn from(e: &BodyError) -> Self {
        match e {
            BodyError::InvalidJson(_) => BodyBypass::InvalidJson,
            BodyError::DuplicateKey => BodyBypass::DuplicateKey,
            BodyError::TooDeep => BodyBypass::TooDeep,
            BodyError::InvalidGraphql(_) => BodyBypass::GraphqlInvalid,
            BodyError::NotAQuery("subscription") => BodyBypass::GraphqlSubscription,
            BodyError::NotAQuery(_) => BodyBypass::GraphqlMutation,
        }
    }
}

impl Detail {
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::Rule => "rule",
            Detail::Credentials => "credentials",
            Detail::SoftPurged => "soft-purged",
            Detail::StaleWhileRevalidate => "stale-while-revalidate",
            Detail::MaxStale => "max-stale",
            Detail::StaleIfError => "stale-if-error",
            Detail::Uncacheable => "uncacheable",
            Detail::TooLarge => "too-large",
            Detail::NotStored(why) => why.as_str(),
            Detail::UpstreamTimeout => "upstream-timeout",
            Detail::UpstreamUnreachable => "upstream-unreachable",
            Detail::UpstreamBroken => "upstream-broken",
            Detail::OnlyIfCached => "only-if-cached",
            Detail::Body(why) => why.as_str(),
            Detail::QueueFull => "queue-full",
        }
    }
}

/// One `Cache-Status` entry for slate, with the parameters that apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub phase: Phase,
    pub fwd: Option<Fwd>,
    pub fwd_status: Option<u16>,
    /// Remaining freshness in seconds (negative when stale).
    pub ttl: Option<i64>,
    pub stored: bool,
    pub detail: Option<Detail>,
    /// Upstream time this answer spared (not part of the header; for metrics).
    pub saved_ms: u64,
}

impl CacheStatus {
    pub fn new(phase: Phase) -> Self {
        CacheStatus {
            phase,
            fwd: None,
            fwd_status: None,
            ttl: None,
            stored: false,
            detail: None,
            saved_ms: 0,
        }
    }

    pub fn hit(ttl_ms: i64) -> Self {
        CacheStatus {
            ttl: Some(ttl_ms.div_euclid(1000)),
            ..Self::new(Phase::Hit)
        }
    }

    pub fn fwd(phase: Phase, fwd: Fwd) -> Self {
        CacheStatus {
            fwd: Some(fwd),
            ..Self::new(phase)
        }
    }

    pub fn saved(mut self, ms: u64) -> Self {
        self.saved_ms = ms;
        self
    }

    pub fn detail(mut self, d: Detail) -> Self {
        self.detail = Some(d);
        self
    }

    /// The header value, e.g. `slate; hit; ttl=3512` or `slate; fwd=uri-miss; stored`.
    pub fn header(&self) -> HeaderValue {
        let mut s = String::with_capacity(64);
        s.push_str("slate");
        if matches!(self.phase, Phase::Hit | Phase::Stale) && self.fwd.is_none() {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={}", f.as_str());
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.phase == Phase::Collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if let Some(st) = self.fwd_status {
            let _ = write!(s, "; fwd-status={st}");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={}", d.as_str());
        }
        // Handed over, not copied: one allocation per answer.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
            .unwrap_or_else(|_| HeaderValue::from_static("slate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        assert_eq!(CacheStatus::hit(3_512_400).header(), "slate; hit; ttl=3512");
        let mut s = CacheStatus::fwd(Phase::Miss, Fwd::UriMiss);
        s.stored = true;
        assert_eq!(s.header(), "slate; fwd=uri-miss; stored");
        s.fwd_status = Some(200);
        assert_eq!(s.header(), "slate; fwd=uri-miss; stored; fwd-status=200");
        let c = CacheStatus::fwd(Phase::Collapsed, Fwd::UriMiss);
        assert_eq!(c.header(), "slate; fwd=uri-miss; collapsed");
        let n = CacheStatus::fwd(Phase::Miss, Fwd::UriMiss)
            .detail(Detail::NotStored(NoStoreReason::NoFreshness));
        assert_eq!(n.header(), "slate; fwd=uri-miss; detail=no-freshness");
        assert_eq!(CacheStatus::hit(-1).header(), "slate; hit; ttl=-1");
    }
}
