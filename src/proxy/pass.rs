//! Pass-through: methods the cache does not serve go upstream as they are, and a
//! successful unsafe method invalidates what it may have changed (RFC 9111 §4.4).

use super::Answer;
use crate::body::ProxyBody;
use crate::config::Config;
use crate::instance::Shared;
use crate::key::{self, NormalUrl};
use crate::otel;
use crate::phase::{CacheStatus, Fwd, Phase};
use crate::purge::{PurgeRequest, Target};
use http::{header, HeaderValue, Request};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{field, Instrument};

/// Sends a request upstream as is and streams the answer back.
pub(super) async fn pass(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    mut req: Request<ProxyBody>,
    peer: SocketAddr,
    mut status: CacheStatus,
) -> Answer {
    shared.metrics.upstream_requests.add(1);
    // Until the response head: its body streams to the client after.
    let span = otel::span!(
        "upstream request",
        otel.kind = "client",
        http.request.method = %req.method(),
        url.path = req.uri().path(),
        http.response.status_code = field::Empty,
    );
    otel::inject(&span, req.headers_mut());
    if let Some(to) = req.extensions().get::<crate::interim::Interim>().cloned() {
        crate::interim::forward(&mut req, to);
    }
    let resp = shared
        .upstream
        .send(&cfg.upstream, req, Some(peer.ip()))
        .instrument(span.clone())
        .await
        .inspect_err(|_| {
            shared.metrics.upstream_errors.add(1);
        })?;
    if !span.is_disabled() {
        span.record("http.response.status_code", resp.status().as_u16());
    }
    status.fwd_status = Some(resp.status().as_u16());
    let mut resp = resp.map(ProxyBody::Incoming);
    resp.headers_mut()
        .append(header::VIA, HeaderValue::from_static("1.1 slate"));
    Ok((resp, status))
}

/// A `Location`-style reference as a normalized URL, if it points at this same origin.
fn same_origin_url(cfg: &Config, v: &str, host: Option<&str>, base_path: &str) -> Option<String> {
    let v = v.trim();
    let path_and_query = if v.contains("://") || v.starts_with("//") {
        // Absolute (or scheme-relative): only when it names the request's own host.
        let uri: http::Uri = if v.starts_with("//") {
            format!("http:{v}").parse().ok()?
        } else {
            v.parse().ok()?
        };
        let authority = uri.authority()?.as_str().to_ascii_lowercase();
        if Some(authority.as_str()) != host {
            return None;
        }
        uri.path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string())
    } else if v.starts_with('/') {
        v.to_string()
    } else {
        // Relative to the request's directory (RFC 3986 §5.2, without dot segments).
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{v}")
    };
    let path_and_query = path_and_query.split('#').next().unwrap_or_default();
    let uri: http::Uri = path_and_query.parse().ok()?;
    key::route(cfg, &uri).ok().map(|(u, _)| u.url)
}

/// Unsafe methods (POST, PUT, PATCH, DELETE, and any unknown one): pass through; a success
/// invalidates the URL (RFC 9111 §4.4).
pub(super) async fn unsafe_method(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    req: Request<Incoming>,
    peer: SocketAddr,
    url: Option<NormalUrl>,
) -> Answer {
    let target = url.map(|u| u.url);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let base_path = req.uri().path().to_string();
    let req = req.map(ProxyBody::Incoming);
    let (resp, status) = pass(
        shared,
        cfg,
        req,
        peer,
        CacheStatus::fwd(Phase::Pass, Fwd::Method),
    )
    .await?;
    let ok = resp.status().is_success() || resp.status().is_redirection();
    if let (true, Some(url)) = (ok, target) {
        let mut targets = vec![Target::Url(url)];
        // RFC 9111 §4.4: also the URLs in Location and Content-Location, when they are on
        // the same origin (a relative reference, or the request's own host).
        for h in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(v) = resp.headers().get(&h).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(u) = same_origin_url(cfg, v, host.as_deref(), &base_path) {
                if !targets.contains(&Target::Url(u.clone())) {
                    targets.push(Target::Url(u));
                }
            }
        }
        let req = PurgeRequest {
            targets,
            soft: false,
        };
        if let Err(e) = shared.purges.purge(req).await {
            tracing::warn!(error = %e, "invalidation after an unsafe method failed");
        }
    }
    Ok((resp, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_references_to_this_origin_are_invalidated() {
        let cfg = Config::default_config();
        let host = Some("reports.example:8080");
        let same = |v| same_origin_url(&cfg, v, host, "/api/orders/7");
        assert_eq!(same("/r?b=2&a=1").as_deref(), Some("/r?a=1&b=2"));
        assert_eq!(same("http://reports.example:8080/x").as_deref(), Some("/x"));
        assert_eq!(same("//REPORTS.example:8080/x#frag").as_deref(), Some("/x"));
        assert_eq!(same("items/8").as_deref(), Some("/api/orders/items/8"));
        assert_eq!(same("http://other.example/x"), None);
        assert_eq!(same("//other.example/x"), None);
        assert_eq!(same("https://reports.example/x"), None, "another port");
        assert_eq!(same("/bad%zz"), None);
    }
}
