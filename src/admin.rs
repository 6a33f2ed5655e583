//! The admin listener (`/metrics`, `/healthz`, `/status`, `/entry`, `POST /purge`) and the
//! `PURGE` method of the proxy listener, which share one authorization and one purge path.
//!
//! Purge answers: 200 with `{"purged": true, "scope": "url"|"prefix"|"tags", "targets":
//! [...], "soft": bool, "seq": N}`; 400 with `{"error": ...}` for a malformed request; 403
//! when the source is neither in `purge.allow` nor holds `purge.token`.

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::{json_response, ProxyError};
use crate::key;
use crate::phase::{CacheStatus, Phase};
use crate::proxy::{normal_url, Shared};
use crate::purge::{PurgeRequest, Target};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Whether `peer` (or its bearer token) may purge and inspect entries.
pub fn authorized(cfg: &Config, headers: &HeaderMap, peer: SocketAddr) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if cfg.purge.allow.iter().any(|n| n.contains(&ip)) {
        return true;
    }
    let Some(token) = &cfg.purge.token else {
        return false;
    };
    let Some(given) = bearer_token(headers) else {
        return false;
    };
    use subtle::ConstantTimeEq;
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

/// The token of `Authorization: Bearer <token>`. The scheme name is case-insensitive
/// (RFC 9110 §11.1), so `bearer` and `BEARER` count too; only the token is secret, and the
/// caller compares it in constant time.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn forbidden(shared: &Shared, peer: SocketAddr, what: &str, form: Option<&str>) -> ProxyError {
    if let Some(form) = form {
        shared.metrics.purge(form, "refused");
    }
    tracing::warn!(peer = %peer, what, "purge refused: source not allowed and no valid token");
    ProxyError::Forbidden(
        "purging needs a source in purge.allow or `Authorization: Bearer <purge.token>`".into(),
    )
}

fn bad(shared: &Shared, form: &str, msg: impl Into<String>) -> ProxyError {
    shared.metrics.purge(form, "refused");
    ProxyError::BadRequest(msg.into())
}

/// A prefix pattern (`/path` or `/path*`) in normal form.
fn prefix_target(p: &str) -> Result<Target, String> {
    let p = p.strip_suffix('*').unwrap_or(p);
    if p.contains('*') || p.contains('?') {
        return Err("a prefix purge takes one trailing '*' and no query: PURGE /prefix*".into());
    }
    key::normalize_path(p)
        .map(Target::Prefix)
        .map_err(|e| e.to_string())
}

fn url_target(cfg: &Config, url: &str) -> Result<Target, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("not a URL path: {url:?}"))?;
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err("purge a path, not an absolute URL".into());
    }
    normal_url(cfg, &uri)
        .map(|(u, _)| Target::Url(u.url))
        .map_err(|e| e.to_string())
}

fn tag_targets(list: impl Iterator<Item = String>) -> Result<Vec<Target>, String> {
    let tags: Vec<Target> = list
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .map(Target::Tag)
        .collect();
    if tags.is_empty() {
        return Err("no tags given".into());
    }
    Ok(tags)
}

/// Applies a purge and answers it.
async fn apply(
    shared: &Arc<Shared>,
    cfg: &Config,
    req: PurgeRequest,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    let scope = match req.targets.first() {
        Some(Target::Url(_)) => "url",
        Some(Target::Prefix(_)) => "prefix",
        _ => "tags",
    };
    let targets: Vec<String> = req
        .targets
        .iter()
        .map(|t| match t {
            Target::Url(v) | Target::Prefix(v) | Target::Tag(v) => v.clone(),
        })
        .collect();
    let soft = req.soft;
    // An exact purge also deletes the plain variant at once, so the store itself (and
    // `redis-cli`) no longer shows it; the purge record covers every other variant.
    if let Some(Target::Url(u)) = req.targets.first() {
        let path = u.split('?').next().unwrap_or(u);
        let plain = cfg.rule_for(path).is_none_or(|r| r.key_headers.is_empty());
        if plain && !soft {
            let url = key::NormalUrl {
                path: path.to_string(),
                url: u.clone(),
            };
            let k = key::cache_key(&cfg.cache.namespace, url, &[], &HeaderMap::new());
            let _ = shared.store.delete(&k.key).await;
        }
    }
    let form = if scope == "tags" { "tags" } else { scope };
    let seq = match shared.purges.purge(req).await {
        Ok(seq) => seq,
        Err(e) => {
            shared.metrics.purge(form, "error");
            tracing::error!(peer = %peer, scope, ?targets, error = %e, "purge failed: the store did not take it");
            return Err(ProxyError::Store(e.to_string()));
        }
    };
    shared.metrics.purge(form, "ok");
    shared.metrics.note_purge(crate::metrics::PurgeNote {
        at_ms: shared.clock.now_ms(),
        scope,
        targets: targets.join(", "),
        soft,
        source: peer.ip().to_string(),
    });
    tracing::info!(peer = %peer, scope, ?targets, soft, seq, "purge");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "purged": true, "scope": scope, "targets": targets, "soft": soft, "seq": seq }),
    ))
}

/// `PURGE /path?query`, `PURGE /prefix*`, `PURGE /` + `Cache-Tag: a, b`; `Purge-Mode: soft`.
pub async fn purge_method(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<(Response<ProxyBody>, CacheStatus), ProxyError> {
    let form = if req.headers().contains_key("cache-tag") {
        "tags"
    } else if req.uri().path().contains('*') {
        "prefix"
    } else {
        "url"
    };
    if !authorized(cfg, req.headers(), peer) {
        return Err(forbidden(shared, peer, "PURGE", Some(form)));
    }
    let soft = match req.headers().get("purge-mode").map(|v| v.to_str()) {
        None => false,
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("soft") => true,
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("hard") => false,
        Some(_) => return Err(bad(shared, form, "Purge-Mode must be `soft` or `hard`")),
    };
    let uri = req.uri();
    let tags = req.headers().get("cache-tag");
    let targets = if let Some(tags) = tags {
        if uri.path() != "/" || uri.query().is_some() {
            return Err(bad(
                shared,
                form,
                "a tag purge is `PURGE /` with a Cache-Tag header",
            ));
        }
        let s = tags
            .to_str()
            .map_err(|_| bad(shared, form, "Cache-Tag is not text"))?;
        tag_targets(s.split(',').map(str::to_string)).map_err(|e| bad(shared, form, e))?
    } else if uri.path().contains('*') {
        if uri.query().is_some() {
            return Err(bad(shared, form, "a prefix purge takes no query"));
        }
        vec![prefix_target(uri.path()).map_err(|e| bad(shared, form, e))?]
    } else {
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        vec![url_target(cfg, pq).map_err(|e| bad(shared, form, e))?]
    };
    let resp = apply(shared, cfg, PurgeRequest { targets, soft }, peer).await?;
    Ok((resp, CacheStatus::new(Phase::Purge)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeJson {
    url: Option<String>,
    prefix: Option<String>,
    tags: Option<Vec<String>>,
    #[serde(default)]
    soft: bool,
}

/// Handles one admin request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let cfg = shared.live.get();
    let r = match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/healthz") => Ok(healthz(&shared).await),
        (Method::GET, "/metrics") => {
            let mut r = Response::new(ProxyBody::full(
                shared.metrics.render(&gauges(&shared, &cfg)),
            ));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(r)
        }
        (Method::GET, "/status") => {
            let ok = store_ok(&shared).await;
            Ok(crate::status::page(&shared, &cfg, ok))
        }
        (Method::GET, "/entry") => entry(&shared, &cfg, &req, peer).await,
        (Method::POST, "/purge") => purge_json(&shared, &cfg, req, peer).await,
        (_, "/healthz" | "/metrics" | "/status" | "/entry" | "/purge") => Err(
            ProxyError::MethodNotAllowed("method not allowed here".into()),
        ),
        _ => Err(ProxyError::NotFound(
            "admin endpoints: GET /metrics /healthz /status /entry?url=, POST /purge".into(),
        )),
    };
    r.unwrap_or_else(|e| e.response())
}

/// Gauges read at scrape time: the in-process tier, fills in flight, the purge log.
fn gauges(shared: &Shared, cfg: &Config) -> String {
    let mut g = Vec::new();
    if let Some(l1) = shared.store.l1() {
        let st = &l1.stats;
        g.push((
            "slate_l1_hits_total",
            "counter",
            "Lookups answered by the in-process tier.",
            st.hits.get() as f64,
        ));
        g.push((
            "slate_l1_misses_total",
            "counter",
            "Lookups the in-process tier sent on to the shared store.",
            st.misses.get() as f64,
        ));
        g.push((
            "slate_l1_invalidations_total",
            "counter",
            "In-process copies dropped because another instance wrote or deleted the key.",
            st.invalidations.get() as f64,
        ));
        g.push((
            "slate_l1_flushes_total",
            "counter",
            "Times the whole in-process tier was emptied (subscription lost or behind).",
            st.flushes.get() as f64,
        ));
        g.push((
            "slate_l1_evictions_total",
            "counter",
            "Entries the in-process tier evicted to stay within store.l1 bytes.",
            st.evictions.get() as f64,
        ));
        g.push((
            "slate_l1_bytes",
            "gauge",
            "Bytes held by the in-process tier.",
            l1.bytes() as f64,
        ));
        g.push((
            "slate_l1_trusted",
            "gauge",
            "1 while the invalidation subscription is up and the tier is in use.",
            if l1.is_trusted() { 1.0 } else { 0.0 },
        ));
    }
    if shared.store.shared() {
        g.push((
            "slate_store_reads_joined_total",
            "counter",
            "Store lookups answered by a read of the same key already in flight (no round trip of their own).",
            shared.store.reads_joined() as f64,
        ));
    }
    g.push((
        "slate_fills_in_flight",
        "gauge",
        "Fills running on this instance.",
        shared.flights.in_flight() as f64,
    ));
    g.push((
        "slate_purge_log_records",
        "gauge",
        "Purge targets in force (kept until every entry they cover has expired).",
        shared.purges.table().len() as f64,
    ));
    let mut s = String::new();
    for (name, kind, help, v) in g {
        s.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
    s.push_str(&format!(
        "# HELP slate_info Build and config version.\n# TYPE slate_info gauge\nslate_info{{version=\"{}\",config=\"{}\",store=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION"),
        cfg.version,
        shared.store.name()
    ));
    s
}

/// A live check of the store, bounded by half a second.
async fn store_ok(shared: &Shared) -> bool {
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_millis(500),
            shared.store.purge_seq()
        )
        .await,
        Ok(Ok(_))
    )
}

async fn healthz(shared: &Shared) -> Response<ProxyBody> {
    let store_ok = store_ok(shared).await;
    let status = if store_ok { "ok" } else { "degraded" };
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "status": status, "store": shared.store.name(), "store_ok": store_ok }),
    )
}

async fn purge_json(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !authorized(cfg, req.headers(), peer) {
        return Err(forbidden(shared, peer, "POST /purge", Some("unknown")));
    }
    let body = http_body_util::Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|_| bad(shared, "unknown", "body unreadable or larger than 64 KiB"))?
        .to_bytes();
    let j: PurgeJson = serde_json::from_slice(&body).map_err(|e| {
        bad(
            shared,
            "unknown",
            format!("malformed JSON ({e}); send {{\"url\": \"/...\"}}, {{\"prefix\": \"/...\"}} or {{\"tags\": [\"...\"]}}, with optional \"soft\": true"),
        )
    })?;
    let targets = match (j.url, j.prefix, j.tags) {
        (Some(u), None, None) => vec![url_target(cfg, &u).map_err(|e| bad(shared, "url", e))?],
        (None, Some(p), None) => vec![prefix_target(&p).map_err(|e| bad(shared, "prefix", e))?],
        (None, None, Some(t)) => tag_targets(t.into_iter()).map_err(|e| bad(shared, "tags", e))?,
        _ => {
            return Err(bad(
                shared,
                "unknown",
                "give exactly one of \"url\", \"prefix\" or \"tags\"",
            ))
        }
    };
    apply(
        shared,
        cfg,
        PurgeRequest {
            targets,
            soft: j.soft,
        },
        peer,
    )
    .await
}

/// `GET /entry?url=/path%3Fquery`: what the cache holds for that URL; 200 with its fields,
/// or 404 when there is none (never stored, reclaimed, or removed by a hard purge).
async fn entry(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !authorized(cfg, req.headers(), peer) {
        return Err(forbidden(shared, peer, "GET /entry", None));
    }
    let url = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("url="))
        .ok_or_else(|| ProxyError::BadRequest("give ?url=/path%3Fquery".into()))?;
    let url = percent_encoding::percent_decode_str(url)
        .decode_utf8()
        .map_err(|_| ProxyError::BadRequest("url is not UTF-8".into()))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ProxyError::BadRequest(format!("not a URL path: {url:?}")))?;
    let (nurl, rule) = normal_url(cfg, &uri)?;
    // The variant the admin request's own key_headers (e.g. `Accept`) select.
    let key_headers = rule.map_or(&[][..], |r| &r.key_headers[..]);
    let k = key::cache_key(&cfg.cache.namespace, nurl, key_headers, req.headers());
    // Ask the in-process tier first: the lookup below would copy the entry into it.
    let in_l1 = shared.store.l1().is_some_and(|l1| l1.holds(&k.key));
    let found = shared
        .store
        .get(&k.key)
        .await
        .map_err(|e| ProxyError::Store(e.to_string()))?;
    let Some(e) = found else {
        return Err(ProxyError::NotFound(format!("no entry for {}", k.url.url)));
    };
    let now = shared.clock.now_ms();
    let verdict = shared.purges.table().verdict(&e);
    let ttl = e.ttl_ms(now);
    let status = match verdict {
        // A hard purge removed it: the store may still hold the bytes until they expire
        // (purges are applied at lookup, not by walking keys), but no request is ever
        // answered from them, so for the operator there is no entry: 404, as for a miss,
        // saying why.
        crate::purge::Verdict::Gone => {
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({
                    "error": format!("no entry for {}: removed by a purge", k.url.url),
                    "status": 404,
                    "purged": true,
                    "key": k.key,
                }),
            ));
        }
        crate::purge::Verdict::Stale => "soft-purged",
        crate::purge::Verdict::Valid if ttl > 0 => "fresh",
        crate::purge::Verdict::Valid => "stale",
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "key": k.key,
            "url": e.url,
            "rule": rule.map(|r| r.path.clone()),
            "status": status,
            "http_status": e.status.as_u16(),
            "size": e.body.len(),
            "age_s": e.age_ms(now) / 1000,
            "ttl_s": ttl.div_euclid(1000),
            "stale_while_revalidate_s": e.swr_ms / 1000,
            "stale_if_error_s": e.sie_ms / 1000,
            "tags": e.tags,
            "found_in": if in_l1 { "l1" } else { shared.store.name() },
        }),
    ))
}
