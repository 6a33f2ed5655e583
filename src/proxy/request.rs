//! Route and key: what a GET or HEAD (or, on a rule with `methods`, a POST or QUERY keyed
//! on its body) asks of the cache, resolved once. A rule that says `cache = false`,
//! credentials the rule does not key on, or a body that cannot be a key pass the request
//! through here.

use super::{pass, Answer, Routed};
use crate::body::{read_limited, ProxyBody, Read};
use crate::canon;
use crate::config::{BodyKey, Config, Rule};
use crate::error::ProxyError;
use crate::instance::Shared;
use crate::interim::Interim;
use crate::key::{self, CacheKey, NormalUrl};
use crate::otel;
use crate::phase::{BodyBypass, CacheStatus, Detail, Fwd, Phase};
use crate::policy::RequestDirectives;
use crate::upstream::UNKEYED_REQUEST_HEADERS;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{field, Instrument};

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
    /// A lookup keyed on its body (POST, QUERY): the method and the body sent upstream.
    pub body: Option<(Method, Bytes)>,
    /// `Slate-Debug: key` from a source allowed to see it: the store key and what it was
    /// made of, for the answer's `Slate-Key` and `Slate-Key-Inputs`.
    pub shown_key: Option<(String, String)>,
    /// A lookup keyed on its body: the canonical body's digest, naming the report in
    /// `/top` as in `Slate-Key-Inputs`.
    pub body_digest: Option<String>,
    /// The client connection, for the interim responses of the fill this lookup starts.
    pub interim: Option<Interim>,
}

/// Whether a request asks to see its key (`Slate-Debug: key`, among other tokens).
fn asks_for_key(headers: &HeaderMap) -> bool {
    headers.get_all("slate-debug").iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("key")))
    })
}

/// The largest body a lookup is keyed on; a larger one passes through.
pub(crate) const MAX_KEYED_BODY: u64 = 64 << 10;

/// A GET or HEAD: a lookup for the cache, or already answered by the origin.
pub(super) enum Cacheable {
    Lookup(Box<Lookup>),
    Passed((http::Response<ProxyBody>, CacheStatus)),
}

/// Whether the request carries credentials that the rule does not key on.
fn unkeyed_credentials(headers: &HeaderMap, rule: Option<&Rule>) -> bool {
    [header::AUTHORIZATION, header::COOKIE]
        .iter()
        .any(|h| headers.contains_key(h) && !rule.is_some_and(|r| r.key_headers.contains(h)))
}

/// Resolves a GET or HEAD (or a body-keyed POST or QUERY) into its lookup, or passes it
/// through when the cache must stay out of it.
pub(super) async fn lookup(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    routed: Routed<'_>,
) -> Result<Cacheable, ProxyError> {
    let (url, rule) = (routed.url?, routed.rule);
    let bypass = |detail| CacheStatus::fwd(Phase::Bypass, Fwd::Bypass).detail(detail);
    // A GET's body means nothing to it; a POST's goes up with it when it passes.
    let keyed_body = rule.is_some_and(|r| r.keys_body(req.method()));
    let passed = |req: Request<Incoming>| {
        if keyed_body {
            req.map(ProxyBody::Incoming)
        } else {
            req.map(|_| ProxyBody::Empty)
        }
    };
    if rule.is_some_and(|r| !r.cache) {
        let answer: Answer = pass::pass(shared, cfg, passed(req), peer, bypass(Detail::Rule)).await;
        return answer.map(Cacheable::Passed);
    }
    if rule.is_some_and(|r| r.ignore_cookies) {
        // As if the client had sent none: no credential, not upstream (the first viewer's
        // cookie must not shape what everyone is served), not in a `Vary: Cookie` match.
        req.headers_mut().remove(header::COOKIE);
    }
    if unkeyed_credentials(req.headers(), rule.map(|r| &**r)) {
        let s = bypass(Detail::Credentials);
        return pass::pass(shared, cfg, passed(req), peer, s)
            .await
            .map(Cacheable::Passed);
    }
    let show_key =
        asks_for_key(req.headers()) && crate::purge_api::authorized(cfg, req.headers(), peer);
    let (parts, body) = req.into_parts();
    // Making the key: reading a keyed body, canonical forms, the hash.
    let span = otel::span!("key", slate.key = field::Empty);
    let body = match (keyed_body, rule.and_then(|r| r.body_key)) {
        (true, Some(kind)) => {
            let r = rule.map(|r| &**r);
            match keyed(&parts, body, kind, r).instrument(span.clone()).await {
                Ok(b) => Some(b),
                Err((why, body)) => {
                    let req = Request::from_parts(parts, body);
                    let s = bypass(Detail::Body(why));
                    return pass::pass(shared, cfg, req, peer, s)
                        .await
                        .map(Cacheable::Passed);
                }
            }
        }
        _ => None,
    };
    let mut directives = RequestDirectives::parse(&parts.headers);
    if !cfg.cache.honor_client_no_cache {
        directives.ignore_requests_for_fresher();
    }
    let interim = parts.extensions.get::<Interim>().cloned();
    let mut lookup = span.in_scope(|| {
        Lookup::new(
            cfg,
            url,
            rule,
            parts.uri,
            parts.headers,
            directives,
            peer,
            body.map(|(b, canonical)| (parts.method, b, canonical)),
            show_key,
        )
    });
    lookup.interim = interim;
    if !span.is_disabled() {
        // The hash alone: the namespace is the same on every request.
        let hash = lookup.key.key.rsplit(':').next().unwrap_or_default();
        span.record("slate.key", hash);
        // The request's own span, which this one is a step of.
        tracing::Span::current().record("slate.key", hash);
    }
    Ok(Cacheable::Lookup(Box::new(lookup)))
}

/// Whether a `Content-Type` says JSON (`application/json`, `*/*+json`).
fn is_json(ct: Option<&HeaderValue>) -> bool {
    let Some(mime) = crate::coding::mime(ct) else {
        return false;
    };
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Reads a body to key a lookup on: the bytes to send upstream and what goes into the key.
/// `Err`: why it cannot be a key, and the body to pass on (what was read, then the rest).
async fn keyed(
    parts: &http::request::Parts,
    body: Incoming,
    kind: BodyKey,
    rule: Option<&Rule>,
) -> Result<(Bytes, Vec<u8>), (BodyBypass, ProxyBody)> {
    let ct = parts.headers.get(header::CONTENT_TYPE);
    if kind != BodyKey::Raw && !is_json(ct) {
        return Err((BodyBypass::ContentType, ProxyBody::Incoming(body)));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    let bytes = match read_limited(body, MAX_KEYED_BODY, declared).await {
        Ok(Read::Whole(b)) => b,
        Ok(Read::TooLarge(read, rest)) => {
            let resumed = ProxyBody::Resumed(Box::new((read.into(), rest)));
            return Err((BodyBypass::TooLarge, resumed));
        }
        // The client broke off: what the origin would get is broken too.
        Err(_) => return Err((BodyBypass::Unreadable, ProxyBody::Broken)),
    };
    let (ignore, round) = match rule {
        Some(r) => (&r.ignore_body_fields[..], body_rounds(r)),
        None => (&[][..], Vec::new()),
    };
    let canonical = match kind {
        BodyKey::Json => canon::canonical_json(&bytes, ignore, &round),
        BodyKey::Graphql => canon::canonical_graphql(&bytes, ignore, &round),
        BodyKey::Raw => {
            let k = raw_key(ct, &bytes);
            return Ok((bytes, k));
        }
    };
    match canonical {
        Ok(c) => {
            let upstream = c.upstream.map_or(bytes, Bytes::from);
            Ok((upstream, c.key))
        }
        Err(e) => Err((BodyBypass::from(&e), ProxyBody::full(bytes))),
    }
}

/// What a key is made of, for `Slate-Key-Inputs`: method, normalized path and query, the
/// rule's key headers with this request's values, and the body's digest.
fn key_inputs(
    url: &NormalUrl,
    key_headers: &[http::HeaderName],
    headers: &HeaderMap,
    body: Option<&(Method, Bytes, Vec<u8>)>,
) -> String {
    let (path, query) = url.url.split_once('?').unwrap_or((&url.url, ""));
    let method = body.map_or("GET", |(m, _, _)| m.as_str());
    let mut s = format!("method={method}; path={path}; query={query}");
    for h in key_headers {
        let v = key::vary_value(headers, h.as_str());
        s.push_str(&format!("; {h}={v:?}"));
    }
    if let Some((_, _, canonical)) = body {
        s.push_str(&format!("; body={}", body_digest(canonical)));
    }
    s
}

/// A canonical body's digest as operators see it: `blake3:` and 32 hex digits.
fn body_digest(canonical: &[u8]) -> String {
    format!("blake3:{}", &blake3::hash(canonical).to_hex()[..32])
}

/// A raw body's part of the key: the bytes as sent, and the type they say they are.
fn raw_key(ct: Option<&HeaderValue>, bytes: &[u8]) -> Vec<u8> {
    [ct.map_or(&b""[..], |v| v.as_bytes()), b"\0", bytes].concat()
}

/// A rule's `round_params` as body paths.
fn body_rounds(r: &Rule) -> Vec<(canon::FieldPath, std::time::Duration)> {
    r.round_params
        .iter()
        .filter_map(|p| p.path.clone().map(|path| (path, p.bucket)))
        .collect()
}

impl Lookup {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: &Config,
        url: NormalUrl,
        rule: Option<&Arc<Rule>>,
        target: http::Uri,
        headers: HeaderMap,
        directives: RequestDirectives,
        peer: SocketAddr,
        body: Option<(Method, Bytes, Vec<u8>)>,
        show_key: bool,
    ) -> Lookup {
        let key_headers = rule.map_or(&[][..], |r| &r.key_headers[..]);
        let inputs = show_key.then(|| key_inputs(&url, key_headers, &headers, body.as_ref()));
        let body_digest = body
            .as_ref()
            .map(|(_, _, canonical)| body_digest(canonical));
        let input = body
            .as_ref()
            .map(|(method, _, canonical)| key::BodyInput { method, canonical });
        let key = key::cache_key(&cfg.cache.namespace, url, key_headers, &headers, input);
        // Rounded time windows go upstream as the key has them, so the answer stored is the
        // answer to its key.
        let round = rule.map_or(&[][..], |r| &r.round_params[..]);
        let path_and_query = key::rounded_target(&target, round).unwrap_or(target);
        Lookup {
            rule: rule.cloned(),
            path_and_query,
            headers,
            directives,
            peer,
            shown_key: inputs.map(|i| (key.key.clone(), i)),
            body: body.map(|(m, b, _)| (m, b)),
            body_digest,
            key,
            interim: None,
        }
    }

    /// The report this lookup is for, as `/top` names it.
    pub fn report(&self) -> crate::top::Report<'_> {
        crate::top::Report {
            url: &self.key.url.url,
            body: self.body_digest.as_deref(),
            rule: self.rule.as_deref().map(|r| r.path.as_str()),
        }
    }

    /// The lookup of a warmed URL: the variant a client sending none of the rule's
    /// key_headers would get; with `body`, the request a client sending it would make.
    pub fn warm(
        cfg: &Config,
        url: &str,
        body: Option<(&Method, &Bytes)>,
    ) -> Result<Lookup, ProxyError> {
        Lookup::made(cfg, url, HeaderMap::new(), body)
    }

    /// A lookup slate makes itself (warming, `/entry`) for `url` with request `headers`
    /// and, for a rule that keys on bodies, a `body` (a JSON one said to be JSON).
    pub fn made(
        cfg: &Config,
        url: &str,
        mut headers: HeaderMap,
        body: Option<(&Method, &Bytes)>,
    ) -> Result<Lookup, ProxyError> {
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
        let body = match (body, rule) {
            (None, _) => None,
            (Some((method, bytes)), Some(r)) if r.keys_body(method) => {
                let kind = r.body_key.unwrap_or(BodyKey::Raw);
                if kind != BodyKey::Raw && !is_json(headers.get(header::CONTENT_TYPE)) {
                    let json = HeaderValue::from_static("application/json");
                    headers.insert(header::CONTENT_TYPE, json);
                }
                let round = body_rounds(r);
                let ignore = &r.ignore_body_fields[..];
                let canonical = match kind {
                    BodyKey::Json => canon::canonical_json(bytes, ignore, &round),
                    BodyKey::Graphql => canon::canonical_graphql(bytes, ignore, &round),
                    BodyKey::Raw => Ok(canon::Canonical {
                        key: raw_key(headers.get(header::CONTENT_TYPE), bytes),
                        upstream: None,
                    }),
                };
                let c = canonical
                    .map_err(|e| ProxyError::BadRequest(format!("warm body of {url}: {e}")))?;
                let up = c.upstream.map_or_else(|| bytes.clone(), Bytes::from);
                Some((method.clone(), up, c.key))
            }
            (Some((method, _)), _) => {
                return Err(ProxyError::BadRequest(format!(
                    "{url}: its rule does not key {method} requests on their body"
                )))
            }
        };
        Ok(Lookup::new(
            cfg,
            nurl,
            rule,
            uri,
            headers,
            RequestDirectives::default(),
            peer,
            body,
            false,
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
        let mut req = match &self.body {
            Some((method, body)) => {
                // The body may have been rewritten (rounded): its length is the new one's.
                headers.remove(header::CONTENT_LENGTH);
                let mut r = Request::new(ProxyBody::full(body.clone()));
                *r.method_mut() = method.clone();
                r
            }
            None => Request::new(ProxyBody::Empty),
        };
        *req.uri_mut() = self.path_and_query.clone();
        *req.headers_mut() = headers;
        req
    }
}

/// The key a request for `url` (with `headers`, and `body` on a body-keyed rule) is looked
/// up under, and the path of its rule (for `GET`/`POST /entry`).
pub(crate) fn key_of(
    cfg: &Config,
    url: &str,
    headers: &HeaderMap,
    body: Option<(&Method, &Bytes)>,
) -> Result<(CacheKey, Option<String>), ProxyError> {
    let l = Lookup::made(cfg, url, headers.clone(), body)?;
    Ok((l.key, l.rule.map(|r| r.path.clone())))
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
        let mut l = Lookup::warm(&cfg, "/r?b=2&a=1", None).unwrap();
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
