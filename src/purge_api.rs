//! The HTTP face of purging, one for both listeners: the `PURGE` method of the proxy
//! listener and `POST /purge` of the admin listener, their authorization (shared with
//! `GET /entry`) and their answers.
//!
//! Answers: 200 with `{"purged": true, "scope": "url"|"prefix"|"tags", "targets": [...],
//! "soft": bool, "seq": N}`; 400 with `{"error": ...}` for a malformed request; 403 when the
//! source is neither in `purge.allow` nor holds `purge.token`.

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::{json_response, ProxyError};
use crate::instance::Shared;
use crate::key;
use crate::metrics::{PurgeForm, PurgeNote, PurgeOutcome};
use crate::purge::{PurgeRequest, Target};
use http::{HeaderMap, Request, Response, StatusCode};
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
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The refusal of an unauthorized source; counted as a refused purge of `form`, if a purge.
pub fn forbidden(
    shared: &Shared,
    peer: SocketAddr,
    what: &str,
    form: Option<PurgeForm>,
) -> ProxyError {
    if let Some(form) = form {
        shared.metrics.purge(form, PurgeOutcome::Refused);
    }
    tracing::warn!(peer = %peer, what, "purge refused: source not allowed and no valid token");
    ProxyError::Forbidden(
        "purging needs a source in purge.allow or `Authorization: Bearer <purge.token>`".into(),
    )
}

fn bad(shared: &Shared, form: PurgeForm, msg: impl Into<String>) -> ProxyError {
    shared.metrics.purge(form, PurgeOutcome::Refused);
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
    key::route(cfg, &uri)
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
    let form = match req.targets.first() {
        Some(Target::Url(_)) => PurgeForm::Url,
        Some(Target::Prefix(_)) => PurgeForm::Prefix,
        _ => PurgeForm::Tags,
    };
    let scope = form.as_str();
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
            let k = key::cache_key(&cfg.cache.namespace, url, &[], &HeaderMap::new(), None);
            let _ = shared.store.entries.delete(&k.key).await;
        }
    }
    let seq = match shared.purges.purge(req).await {
        Ok(seq) => seq,
        Err(e) => {
            shared.metrics.purge(form, PurgeOutcome::Error);
            tracing::error!(peer = %peer, scope, ?targets, error = %e, "purge failed: the store did not take it");
            return Err(ProxyError::Store(e.to_string()));
        }
    };
    shared.metrics.purge(form, PurgeOutcome::Ok);
    shared.metrics.note_purge(PurgeNote {
        at_ms: shared.clock.now_ms(),
        scope: form,
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
    cfg: &Config,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    let form = if req.headers().contains_key("cache-tag") {
        PurgeForm::Tags
    } else if req.uri().path().contains('*') {
        PurgeForm::Prefix
    } else {
        PurgeForm::Url
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
    let targets = match form {
        PurgeForm::Tags => {
            if uri.path() != "/" || uri.query().is_some() {
                return Err(bad(
                    shared,
                    form,
                    "a tag purge is `PURGE /` with a Cache-Tag header",
                ));
            }
            let s = req
                .headers()
                .get("cache-tag")
                .map_or(Ok(""), |v| v.to_str())
                .map_err(|_| bad(shared, form, "Cache-Tag is not text"))?;
            tag_targets(s.split(',').map(str::to_string)).map_err(|e| bad(shared, form, e))?
        }
        PurgeForm::Prefix => {
            if uri.query().is_some() {
                return Err(bad(shared, form, "a prefix purge takes no query"));
            }
            vec![prefix_target(uri.path()).map_err(|e| bad(shared, form, e))?]
        }
        PurgeForm::Url | PurgeForm::Unknown => {
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            vec![url_target(cfg, pq).map_err(|e| bad(shared, form, e))?]
        }
    };
    apply(shared, cfg, PurgeRequest { targets, soft }, peer).await
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

/// `POST /purge` with `{"url": ...}`, `{"prefix": ...}` or `{"tags": [...]}`, and
/// optionally `"soft": true`.
pub async fn purge_json(
    shared: &Arc<Shared>,
    cfg: &Config,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    let unknown = PurgeForm::Unknown;
    if !authorized(cfg, req.headers(), peer) {
        return Err(forbidden(shared, peer, "POST /purge", Some(unknown)));
    }
    let body = http_body_util::Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|_| bad(shared, unknown, "body unreadable or larger than 64 KiB"))?
        .to_bytes();
    let j: PurgeJson = serde_json::from_slice(&body).map_err(|e| {
        bad(
            shared,
            unknown,
            format!("malformed JSON ({e}); send {{\"url\": \"/...\"}}, {{\"prefix\": \"/...\"}} or {{\"tags\": [\"...\"]}}, with optional \"soft\": true"),
        )
    })?;
    let targets = match (j.url, j.prefix, j.tags) {
        (Some(u), None, None) => {
            vec![url_target(cfg, &u).map_err(|e| bad(shared, PurgeForm::Url, e))?]
        }
        (None, Some(p), None) => {
            vec![prefix_target(&p).map_err(|e| bad(shared, PurgeForm::Prefix, e))?]
        }
        (None, None, Some(t)) => {
            tag_targets(t.into_iter()).map_err(|e| bad(shared, PurgeForm::Tags, e))?
        }
        _ => {
            return Err(bad(
                shared,
                unknown,
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
