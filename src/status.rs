//! The `/status` page: plain server-rendered HTML for a person with a browser.

use crate::body::ProxyBody;
use crate::config::Config;
use crate::phase::Phase;
use crate::proxy::Shared;
use http::{header, HeaderValue, Response};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn page(shared: &Shared, cfg: &Config) -> Response<ProxyBody> {
    let m = &shared.metrics;
    let hits = m.requests(Phase::Hit) + m.requests(Phase::Stale) + m.requests(Phase::Collapsed);
    let lookups = hits + m.requests(Phase::Miss);
    let ratio = if lookups == 0 {
        0.0
    } else {
        hits as f64 * 100.0 / lookups as f64
    };
    let mut rows = String::new();
    for p in Phase::ALL {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            p.label(),
            m.requests(p)
        ));
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>slate status</title>\
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:0 1em}}</style></head><body>\
<h1>slate</h1><p>Hit ratio: <strong id=\"hit-ratio\">{ratio:.1}%</strong></p>\
<p>Store: {} &middot; config version {} &middot; fills in flight: {}</p>\
<table><tr><th>outcome</th><th>requests</th></tr>{rows}</table></body></html>",
        esc(shared.store.name()),
        esc(&cfg.version),
        shared.flights.in_flight(),
    );
    let mut r = Response::new(ProxyBody::full(html));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}
