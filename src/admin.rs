//! The admin listener: `/metrics`, `/healthz`, `/status`, `/entry`, `/top` and `POST /purge`
//! (the last three authorized like the `PURGE` method, by [`crate::purge_api`]).

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::{json_response, ProxyError};
use crate::instance::Shared;
use crate::purge::Verdict;
use crate::purge_api::{authorized, forbidden, purge_json};
use crate::top::By;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

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
        (Method::GET, "/status") => match crate::status::refresh_param(req.uri().query()) {
            Ok(refresh_s) => {
                let view = crate::status::View {
                    authorized: authorized(&cfg, req.headers(), peer),
                    refresh_s,
                };
                let ok = store_ok(&shared).await;
                Ok(crate::status::page(&shared, &cfg, ok, &view))
            }
            Err(e) => Err(ProxyError::BadRequest(e)),
        },
        (Method::GET | Method::POST, "/entry") => entry(&shared, &cfg, req, peer).await,
        (Method::GET, "/top") => top(&shared, &cfg, &req, peer),
        (Method::POST, "/purge") => purge_json(&shared, &cfg, req, peer).await,
        (_, "/healthz" | "/metrics" | "/status" | "/entry" | "/top" | "/purge") => Err(
            ProxyError::MethodNotAllowed("method not allowed here".into()),
        ),
        _ => Err(ProxyError::NotFound(
            "admin endpoints: GET /metrics /healthz /status /entry?url= /top?by=&n=, POST /purge"
                .into(),
        )),
    };
    r.unwrap_or_else(|e| e.response())
}

/// `GET /top?by=misses|fill_time|saved|hits&n=20`: the reports that cost the back end most
/// over the last hour (see [`crate::top`]).
fn top(
    shared: &Shared,
    cfg: &Config,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !authorized(cfg, req.headers(), peer) {
        return Err(forbidden(shared, peer, "/top", None));
    }
    let (by, n) = top_params(req.uri().query()).map_err(ProxyError::BadRequest)?;
    let ranking = shared.top.ranking(shared.clock.now_ms(), by, n);
    Ok(json_response(StatusCode::OK, &ranking.to_json(by)))
}

/// The most rows `/top` answers with.
pub(crate) const TOP_MAX_N: usize = 100;

/// `by` (default `fill_time`) and `n` (default 20) of `/top`; anything else is refused,
/// so that a misspelt parameter is not silently ignored.
fn top_params(query: Option<&str>) -> Result<(By, usize), String> {
    let (mut by, mut n) = (None, None);
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
        match k {
            "by" if by.is_none() => {
                let names: Vec<&str> = By::ALL.iter().map(|b| b.as_str()).collect();
                by =
                    Some(By::parse(&v).ok_or_else(|| {
                        format!("by must be one of {}, not {v:?}", names.join(", "))
                    })?);
            }
            "n" if n.is_none() => {
                let bad = || format!("n must be a whole number from 1 to {TOP_MAX_N}, not {v:?}");
                let parsed: usize = v.parse().map_err(|_| bad())?;
                if !(1..=TOP_MAX_N).contains(&parsed) {
                    return Err(bad());
                }
                n = Some(parsed);
            }
            "by" | "n" => return Err(format!("{k} given twice")),
            _ => return Err(format!("unknown parameter {k:?}: /top takes by and n")),
        }
    }
    Ok((by.unwrap_or(By::FillTime), n.unwrap_or(20)))
}

/// Gauges read at scrape time: the in-process tier, fills in flight, the purge log.
fn gauges(shared: &Shared, cfg: &Config) -> String {
    let mut g = Vec::new();
    let stats = shared.store.entries.stats();
    if let Some(l1) = &stats.l1 {
        g.push((
            "slate_l1_hits_total",
            "counter",
            "Lookups answered by the in-process tier.",
            l1.hits as f64,
        ));
        g.push((
            "slate_l1_misses_total",
            "counter",
            "Lookups the in-process tier sent on to the shared store.",
            l1.misses as f64,
        ));
        g.push((
            "slate_l1_invalidations_total",
            "counter",
            "In-process copies dropped because another instance wrote or deleted the key.",
            l1.invalidations as f64,
        ));
        g.push((
            "slate_l1_flushes_total",
            "counter",
            "Times the whole in-process tier was emptied (subscription lost or behind).",
            l1.flushes as f64,
        ));
        g.push((
            "slate_l1_evictions_total",
            "counter",
            "Entries the in-process tier evicted to stay within store.l1 bytes.",
            l1.evictions as f64,
        ));
        g.push((
            "slate_l1_bytes",
            "gauge",
            "Bytes held by the in-process tier.",
            l1.bytes as f64,
        ));
        g.push((
            "slate_l1_trusted",
            "gauge",
            "1 while the invalidation subscription is up and the tier is in use.",
            if l1.trusted { 1.0 } else { 0.0 },
        ));
    }
    if let Some(joined) = stats.reads_joined {
        g.push((
            "slate_store_reads_joined_total",
            "counter",
            "Store lookups answered by a read of the same key already in flight (no round trip of their own).",
            joined as f64,
        ));
    }
    let (waiting, running) = shared.queue.lengths();
    g.push((
        "slate_fill_queue_length",
        "gauge",
        "Fills on this instance waiting in the fill queue for their turn.",
        waiting as f64,
    ));
    g.push((
        "slate_fills_running",
        "gauge",
        "Fills on this instance holding a fill queue slot (running against the upstream).",
        running as f64,
    ));
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
        shared.store.entries.name()
    ));
    s
}

/// A live check of the store, bounded by half a second.
async fn store_ok(shared: &Shared) -> bool {
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_millis(500),
            shared.store.log.purge_seq()
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
        &serde_json::json!({ "status": status, "store": shared.store.entries.name(), "store_ok": store_ok }),
    )
}

/// `GET /entry?url=/path%3Fquery`: what the cache holds for that URL; 200 with its fields,
/// or 404 when there is none (never stored, reclaimed, or removed by a hard purge).
/// `POST /entry?url=...` with a body: the entry that body selects on a rule keyed on
/// bodies (as a POST; `&method=QUERY` for QUERY).
async fn entry(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !authorized(cfg, req.headers(), peer) {
        return Err(forbidden(shared, peer, "/entry", None));
    }
    let param = |name: &str| -> Option<String> {
        let q = req.uri().query()?;
        let v = q
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    };
    let method = match param("method") {
        None => Method::POST,
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| ProxyError::BadRequest(format!("not a method: {m:?}")))?,
    };
    let posted = req.method() == Method::POST;
    let (parts, body) = req.into_parts();
    let body = match posted {
        false => None,
        true => {
            let limited = http_body_util::Limited::new(body, crate::proxy::MAX_KEYED_BODY as usize);
            let b = http_body_util::BodyExt::collect(limited)
                .await
                .map_err(|_| {
                    ProxyError::BadRequest("body unreadable or larger than 64 KiB".into())
                })?
                .to_bytes();
            Some(b)
        }
    };
    let req = Request::from_parts(parts, ());
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
    if uri.scheme().is_some() {
        return Err(ProxyError::BadRequest(
            "give a path, not an absolute URL".into(),
        ));
    }
    // The variant the admin request's own key_headers (e.g. `Accept`) select.
    let body = body.as_ref().map(|b| (&method, b));
    let (k, rule) = crate::proxy::key_of(cfg, &url, req.headers(), body)?;
    // Ask the in-process tier first: the lookup below would copy the entry into it.
    let in_l1 = shared.store.entries.in_l1(&k.key);
    let found = shared
        .store
        .entries
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
        Verdict::Gone => {
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
        Verdict::Stale => "soft-purged",
        Verdict::Valid if ttl > 0 => "fresh",
        Verdict::Valid => "stale",
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "key": k.key,
            "url": e.url,
            "rule": rule,
            "status": status,
            "http_status": e.status.as_u16(),
            "size": e.body.len(),
            "age_s": e.age_ms(now) / 1000,
            "ttl_s": ttl.div_euclid(1000),
            "stale_while_revalidate_s": e.swr_ms / 1000,
            "stale_if_error_s": e.sie_ms / 1000,
            "tags": e.tags,
            "found_in": if in_l1 { "l1" } else { shared.store.entries.name() },
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_params_take_by_and_n_and_refuse_anything_else() {
        assert_eq!(top_params(None), Ok((By::FillTime, 20)));
        assert_eq!(top_params(Some("by=misses&n=5")), Ok((By::Misses, 5)));
        assert_eq!(top_params(Some("n=100&by=saved")), Ok((By::Saved, 100)));
        assert_eq!(top_params(Some("by=hits&")), Ok((By::Hits, 20)));
        assert_eq!(top_params(Some("by=fill%5Ftime")), Ok((By::FillTime, 20)));
        for (q, says) in [
            (
                "by=slowest",
                "by must be one of hits, misses, fill_time, saved",
            ),
            ("by=", "by must be one of"),
            ("n=0", "n must be a whole number from 1 to 100"),
            ("n=101", "from 1 to 100"),
            ("n=-1", "from 1 to 100"),
            ("n=ten", "not \"ten\""),
            ("n=99999999999999999999999", "from 1 to 100"),
            ("by=hits&by=misses", "by given twice"),
            ("top=5", "unknown parameter \"top\""),
        ] {
            let e = top_params(Some(q)).unwrap_err();
            assert!(e.contains(says), "{q}: {e}");
        }
    }
}
