//! Route and key: what a GET or HEAD asks of the cache, resolved once. A rule that says
//! `cache = false`, or credentials the rule does not key on, pass the request through here.

use super::{pass, Answer, Routed};
use crate::body::ProxyBody;
use crate::config::{Config, Rule};
use crate::error::ProxyError;
use crate::instance::Shared;
use crate::key::{self, CacheKey, NormalUrl};
use crate::phase::{CacheStatus, Detail, Fwd, Phase};
use crate::policy::RequestDirectives;
use crate::upstream::UNKEYED_REQUEST_HEADERS;
use http::{header, HeaderMap, Request};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// A cacheable request, resolved: its rule, key and the headers to send upstream.
#[derive(Clone)]
pub(super) struct Lookup {
    pub rule: Option<Arc<Rule>>,
    pub key: CacheKey,
    /// The client's request target, forwarded as sent.
    pub path_and_query: http::Uri,
    /// The client's request headers (see [`Lookup::upstream_request`] for what goes up).
    pub headers: HeaderMap,
    /// The client's own `Cache-Control` directives.
    pub directives: RequestDirectives,
    pub peer: SocketAddr,
}

/// A GET or HEAD: a lookup for the cache, or already answered by the origin.
pub(super) enum Cacheable {
    Lookup(Lookup),
    Passed((http::Response<ProxyBody>, CacheStatus)),
}

/// Whether the request carries credentials that the rule does not key on.
fn unkeyed_credentials(headers: &HeaderMap, rule: Option<&Rule>) -> bool {
    [header::AUTHORIZATION, header::COOKIE]
        .iter()
        .any(|h| headers.contains_key(h) && !rule.is_some_and(|r| r.key_headers.contains(h)))
}

/// Resolves a GET or HEAD into its lookup, or passes it through when the cache must stay
/// out of it.
pub(super) async fn lookup(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    routed: Routed<'_>,
) -> Result<Cacheable, ProxyError> {
    let (url, rule) = (routed.url?, routed.rule);
    let bypass = |detail| CacheStatus::fwd(Phase::Bypass, Fwd::Bypass).detail(detail);
    if rule.is_some_and(|r| !r.cache) {
        let req = req.map(|_| ProxyBody::Empty);
        let answer: Answer = pass::pass(shared, cfg, req, peer, bypass(Detail::Rule)).await;
        return answer.map(Cacheable::Passed);
    }
    if rule.is_some_and(|r| r.ignore_cookies) {
        // As if the client had sent none: no credential, not upstream (the first viewer's
        // cookie must not shape what everyone is served), not in a `Vary: Cookie` match.
        req.headers_mut().remove(header::COOKIE);
    }
    if unkeyed_credentials(req.headers(), rule.map(|r| &**r)) {
        let req = req.map(|_| ProxyBody::Empty);
        let s = bypass(Detail::Credentials);
        return pass::pass(shared, cfg, req, peer, s)
            .await
            .map(Cacheable::Passed);
    }
    let (parts, _) = req.into_parts();
    let mut directives = RequestDirectives::parse(&parts.headers);
    if !cfg.cache.honor_client_no_cache {
        directives.ignore_requests_for_fresher();
    }
    Ok(Cacheable::Lookup(Lookup::new(
        cfg,
        url,
        rule,
        parts.uri,
        parts.headers,
        directives,
        peer,
    )))
}

impl Lookup {
    fn new(
        cfg: &Config,
        url: NormalUrl,
        rule: Option<&Arc<Rule>>,
        path_and_query: http::Uri,
        headers: HeaderMap,
        directives: RequestDirectives,
        peer: SocketAddr,
    ) -> Lookup {
        let key_headers = rule.map_or(&[][..], |r| &r.key_headers[..]);
        Lookup {
            key: key::cache_key(&cfg.cache.namespace, url, key_headers, &headers),
            rule: rule.cloned(),
            path_and_query,
            headers,
            directives,
            peer,
        }
    }

    /// The lookup of a warmed URL: the variant a client sending none of the rule's
    /// key_headers would get.
    pub fn warm(cfg: &Config, url: &str) -> Result<Lookup, ProxyError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| ProxyError::BadRequest(format!("bad warm URL {url:?}")))?;
        let (nurl, rule) = key::route(cfg, &uri)?;
        if rule.is_some_and(|r| !r.cache) {
            return Err(ProxyError::BadRequest(format!(
                "{url}: its rule says cache = false"
            )));
        }
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(Lookup::new(
            cfg,
            nurl,
            rule,
            uri,
            HeaderMap::new(),
            RequestDirectives::default(),
            peer,
        ))
    }

    /// The request to send upstream for a fill: the client's path and query as sent, and
    /// its headers minus those that could change the answer without being in the key, and
    /// minus its conditionals (a fill fetches the whole representation). Built only when a
    /// request does go upstream, so hits pay nothing for it.
    pub fn upstream_request(&self, cfg: &Config) -> Request<ProxyBody> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rule(key_headers: &[&str]) -> Rule {
        let cfg = Config::parse(
            "t.toml",
            &format!("[[rules]]\npath = \"/\"\nttl = \"1h\"\nkey_headers = {key_headers:?}\n"),
        )
        .unwrap();
        Rule::clone(&cfg.rules[0])
    }

    #[test]
    fn credentials_pass_unless_keyed() {
        let mut h = HeaderMap::new();
        assert!(!unkeyed_credentials(&h, None));
        h.insert(header::COOKIE, HeaderValue::from_static("s=1"));
        assert!(unkeyed_credentials(&h, None));
        assert!(unkeyed_credentials(&h, Some(&rule(&["accept"]))));
        assert!(!unkeyed_credentials(&h, Some(&rule(&["cookie"]))));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(unkeyed_credentials(&h, Some(&rule(&["cookie"]))));
    }

    #[test]
    fn a_fill_sends_no_conditionals_and_no_unkeyed_headers() {
        let cfg = Config::default_config();
        let mut l = Lookup::warm(&cfg, "/r?b=2&a=1").unwrap();
        for (k, v) in [
            ("if-none-match", "\"x\""),
            ("range", "bytes=0-1"),
            ("x-forwarded-host", "evil.example"),
            ("accept", "text/csv"),
        ] {
            l.headers.insert(k, HeaderValue::from_static(v));
        }
        let up = l.upstream_request(&cfg);
        assert_eq!(
            up.uri(),
            "/r?b=2&a=1",
            "the target goes up as the client sent it"
        );
        assert!(up.headers().get("if-none-match").is_none());
        assert!(up.headers().get("range").is_none());
        assert!(up.headers().get("x-forwarded-host").is_none());
        assert_eq!(up.headers()["accept"], "text/csv");
        assert_eq!(l.key.url.url, "/r?a=1&b=2");
    }
}
