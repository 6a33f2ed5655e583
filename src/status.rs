//! The `/status` page: server-rendered HTML for a person with a browser, with a small
//! inline-SVG chart and no external assets. A short inline script (the page reads whole
//! without it) refreshes the live parts in place every few seconds, by fetching the page
//! again, and looks entries up and purges them through the admin API (`/entry`,
//! `POST /purge`), a purge only once the operator confirms it. The costliest reports name
//! URLs, so they are shown only to a viewer the admin API authorizes: by source, or with the
//! token typed into the page (sent as `Authorization` by the script, never in a URL).

use crate::body::ProxyBody;
use crate::config::Config;
use crate::instance::Shared;
use crate::metrics::is_hit;
use crate::phase::Phase;
use crate::top::{By, Row};
use http::{header, HeaderValue, Response};
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Requests per second between consecutive samples: (seconds ago, req/s, hit ratio %).
fn rates(samples: &[(u64, u64, u64)], now_s: u64) -> Vec<(f64, f64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let (t0, n0, h0) = w[0];
            let (t1, n1, h1) = w[1];
            let dt = t1.checked_sub(t0).filter(|d| *d > 0)? as f64;
            let dn = n1.saturating_sub(n0) as f64;
            let dh = h1.saturating_sub(h0) as f64;
            let ratio = if dn > 0.0 { 100.0 * dh / dn } else { 0.0 };
            Some((now_s.saturating_sub(t1) as f64, dn / dt, ratio))
        })
        .collect()
}

/// An inline SVG line chart of requests/s (blue) and hit ratio % (green) over the samples.
fn chart(points: &[(f64, f64, f64)]) -> String {
    let (w, h) = (600.0, 160.0);
    let mut s = format!(
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"requests per second and hit ratio\">\
<rect width=\"{w}\" height=\"{h}\" fill=\"#fafafa\" stroke=\"#ddd\"/>"
    );
    if points.is_empty() {
        s.push_str(
            "<text x=\"20\" y=\"85\" fill=\"#888\">collecting samples (one every 5 s)</text></svg>",
        );
        return s;
    }
    let span = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_rate = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let xy = |ago: f64, v: f64, max: f64| {
        (
            w - 10.0 - (ago / span) * (w - 20.0),
            h - 10.0 - (v / max) * (h - 20.0),
        )
    };
    for (color, pick, max) in [("#1f6feb", 1usize, max_rate), ("#2da44e", 2usize, 100.0)] {
        let pts: Vec<String> = points
            .iter()
            .map(|p| {
                let v = if pick == 1 { p.1 } else { p.2 };
                let (x, y) = xy(p.0, v, max);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    let _ = write!(
        s,
        "<text x=\"12\" y=\"18\" font-size=\"12\" fill=\"#1f6feb\">req/s (max {max_rate:.0})</text>\
<text x=\"150\" y=\"18\" font-size=\"12\" fill=\"#2da44e\">hit ratio %</text></svg>"
    );
    s
}

/// Who looks at the page, and how often it refreshes itself.
pub struct View {
    /// The viewer may see what the admin API shows (`crate::purge_api::authorized`).
    pub authorized: bool,
    pub refresh_s: u64,
}

/// Seconds between refreshes unless `?refresh=` says otherwise.
const REFRESH_S: u64 = 10;

/// `?refresh=N` (seconds, 1 to 3600) of `/status`; other parameters are ignored.
pub fn refresh_param(query: Option<&str>) -> Result<u64, String> {
    let given = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("refresh="))
        .next_back();
    match given {
        None => Ok(REFRESH_S),
        Some(v) => v
            .parse()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .ok_or_else(|| format!("refresh must be whole seconds from 1 to 3600, not {v:?}")),
    }
}

/// The report a row names, as a button that looks it up.
fn report_cell(r: &Row) -> String {
    let body = r.body.as_deref().map_or(String::new(), |b| {
        format!(
            " <span class=\"body\" title=\"asked for with this body; purging the URL removes every body variant\">body {}</span>",
            esc(b)
        )
    });
    format!(
        "<td><button type=\"button\" class=\"u\" data-url=\"{u}\">{u}</button>{body}</td><td>{rule}</td>",
        u = esc(&r.url),
        rule = esc(r.rule.as_deref().unwrap_or("none")),
    )
}

/// The ten costliest reports of the last hour by `by`, as the rows of its table.
fn top_rows(shared: &Shared, view: &View, by: By) -> String {
    let cols = if by == By::FillTime { 7 } else { 4 };
    if !view.authorized {
        return format!(
            "<tr><td colspan=\"{cols}\" class=\"note\">shown to sources in purge.allow, or with the admin token (below)</td></tr>"
        );
    }
    let ranking = shared.top.ranking(shared.clock.now_ms(), by, 10);
    let mut s = String::new();
    for r in &ranking.rows {
        let st = &r.stats;
        let secs = |us: u64| us as f64 / 1e6;
        let cell = report_cell(r);
        let _ = match by {
            By::FillTime => write!(
                s,
                "<tr>{cell}<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2} s</td><td class=\"n\">{:.2} s</td><td class=\"n\">{:.1} s</td></tr>",
                st.misses,
                st.fills,
                secs(st.fill_us.checked_div(st.fills).unwrap_or(0)),
                secs(st.fill_max_us),
                secs(st.fill_us),
            ),
            _ => write!(
                s,
                "<tr>{cell}<td class=\"n\">{}</td><td class=\"n\">{:.1} s</td></tr>",
                st.hits,
                st.saved_ms as f64 / 1e3,
            ),
        };
    }
    if s.is_empty() {
        let _ = write!(
            s,
            "<tr><td colspan=\"{cols}\" class=\"note\">nothing in the last hour</td></tr>"
        );
    }
    s
}

/// Looks entries up and purges them through the admin API; refreshes the live parts.
const SCRIPT: &str = r#"
const $ = (id) => document.getElementById(id);
const tokenBox = $("token");
tokenBox.value = sessionStorage.getItem("slate-token") || "";
function auth() {
  const t = tokenBox.value.trim();
  return t ? { Authorization: "Bearer " + t } : {};
}
async function refresh() {
  try {
    const r = await fetch(location.pathname + location.search, { headers: auth(), cache: "no-store" });
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    for (const fresh of doc.querySelectorAll("[data-live]")) {
      const old = $(fresh.id);
      if (old) old.replaceWith(document.importNode(fresh, true));
    }
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("updated").textContent = "refresh failed: " + e;
  }
}
setInterval(refresh, REFRESH_MS);
tokenBox.addEventListener("change", () => {
  sessionStorage.setItem("slate-token", tokenBox.value.trim());
  refresh();
});
const out = $("lookup-result");
function say(text, cls) {
  out.replaceChildren();
  const p = document.createElement("p");
  p.id = "lookup-message";
  p.className = cls;
  p.textContent = text;
  out.append(p);
}
async function answer(r) {
  try { return await r.json(); } catch (e) { return { error: r.status + " " + r.statusText }; }
}
let shown = null;
async function lookup() {
  const url = $("lookup-url").value.trim();
  shown = null;
  $("purge").hidden = true;
  $("purge-result").textContent = "";
  if (!url) return say("type a URL path, e.g. /analytics/sales?region=eu", "bad");
  say("looking up " + url + "…", "");
  const r = await fetch("/entry?url=" + encodeURIComponent(url), { headers: auth() });
  const j = await answer(r);
  if (r.status === 404) return say(j.error || "no entry for " + url, "gone");
  if (!r.ok) return say(j.error || "error " + r.status, "bad");
  out.replaceChildren();
  const t = document.createElement("table");
  t.id = "entry";
  t.dataset.status = j.status;
  for (const k of ["url", "status", "rule", "http_status", "size", "age_s", "ttl_s",
                   "stale_while_revalidate_s", "stale_if_error_s", "tags", "found_in", "key"]) {
    const tr = t.insertRow();
    tr.insertCell().textContent = k;
    const v = j[k];
    tr.insertCell().textContent = Array.isArray(v) ? v.join(", ") : v === null || v === undefined ? "" : String(v);
  }
  out.append(t);
  shown = url;
  $("purge").hidden = false;
}
async function purge() {
  if (!shown) return;
  const url = shown;
  if (!confirm("Purge " + url + " from the cache? Every variant of it is removed, on every instance.")) {
    $("purge-result").textContent = "not purged";
    return;
  }
  const r = await fetch("/purge", {
    method: "POST",
    headers: Object.assign({ "Content-Type": "application/json" }, auth()),
    body: JSON.stringify({ url }),
  });
  const j = await answer(r);
  $("purge-result").textContent = r.ok ? "purged " + url : "purge refused: " + (j.error || r.status);
  if (r.ok) {
    await lookup();
    $("purge-result").textContent = "purged " + url;
  }
}
$("lookup").addEventListener("submit", (e) => { e.preventDefault(); lookup(); });
$("purge").addEventListener("click", purge);
document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-url]");
  if (!b) return;
  $("lookup-url").value = b.dataset.url;
  lookup();
});
"#;

/// Renders the page; `store_ok` is the result of a live store check.
pub fn page(shared: &Shared, cfg: &Config, store_ok: bool, view: &View) -> Response<ProxyBody> {
    let m = &shared.metrics;
    let now_s = shared.clock.now_ms() / 1000;
    let samples = m.samples();
    let points = rates(&samples, now_s);
    let rps = points.last().map_or(0.0, |p| p.1);
    let mut outcomes = String::new();
    for p in Phase::ALL {
        let _ = write!(
            outcomes,
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            p.label(),
            m.requests(p)
        );
    }
    let routes = m.routes();
    let mut by_hits = String::new();
    for (r, hits, saved) in routes.iter().take(10) {
        let _ = write!(
            by_hits,
            "<tr><td>{}</td><td class=\"n\">{hits}</td><td class=\"n\">{saved:.1}</td></tr>",
            esc(r)
        );
    }
    let mut by_saved = routes.clone();
    by_saved.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut saved_rows = String::new();
    for (r, hits, saved) in by_saved.iter().take(10) {
        let _ = write!(
            saved_rows,
            "<tr><td>{}</td><td class=\"n\">{saved:.1}</td><td class=\"n\">{hits}</td></tr>",
            esc(r)
        );
    }
    let mut purges = String::new();
    for p in m.recent_purges() {
        let when = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(p.at_ms),
        );
        let _ = write!(
            purges,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when),
            p.scope.as_str(),
            esc(&p.targets),
            if p.soft { "soft" } else { "hard" },
            esc(&p.source)
        );
    }
    if purges.is_empty() {
        purges.push_str("<tr><td colspan=\"5\">none yet</td></tr>");
    }
    let l1 = match shared.store.entries.stats().l1 {
        Some(l1) => {
            let (h, mi) = (l1.hits, l1.misses);
            let ratio = if h + mi == 0 {
                0.0
            } else {
                100.0 * h as f64 / (h + mi) as f64
            };
            format!(
                "in-process tier: {} &middot; {:.1} MiB &middot; L1 hit ratio {ratio:.1}%",
                if l1.trusted {
                    "in use"
                } else {
                    "bypassed (no invalidation subscription)"
                },
                l1.bytes as f64 / 1048576.0
            )
        }
        None => "no in-process tier".to_string(),
    };
    let queue = shared.queue.lengths();
    let hits: u64 = Phase::ALL
        .iter()
        .filter(|p| is_hit(**p))
        .map(|p| m.requests(*p))
        .sum();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>slate status</title>\
<meta name=\"viewport\" content=\"width=device-width\">\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}h1{{margin:0 0 .3em}}\
.big{{font-size:2.2em;font-weight:600}}.card{{display:inline-block;margin:0 2em 1em 0;vertical-align:top}}\
table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left}}\
td.n{{text-align:right;font-variant-numeric:tabular-nums}}.ok{{color:#2da44e}}.bad{{color:#cf222e}}\
.note,.body,#updated{{color:#888}}.gone{{color:#9a6700}}button.u{{all:unset;cursor:pointer;color:#0969da}}button.u:hover{{text-decoration:underline}}\
#lookup input{{font:inherit;padding:.2em .4em}}#lookup-url{{width:32em}}</style></head><body>\
<h1>slate</h1><p>version {ver} &middot; config {cv} &middot; upstream {up} &middot; <span id=\"updated\">refreshes every {refresh} s</span></p>\
<div id=\"live-head\" data-live><div class=\"card\"><div>Hit ratio</div><div class=\"big\" id=\"hit-ratio\">{ratio:.1}%</div><div>{hits} hits</div></div>\
<div class=\"card\"><div>Requests per second</div><div class=\"big\" id=\"rps\">{rps:.1}</div><div>{total} requests</div></div>\
<div class=\"card\"><div>Upstream time saved</div><div class=\"big\" id=\"saved\">{saved:.0} s</div><div>by answers from cache</div></div>\
<div class=\"card\"><div>Store</div><div class=\"big {sc}\" id=\"store\">{store} {sh}</div><div>{l1}</div></div>\
<h2>Last 10 minutes</h2>{chart}\
<h2>Costliest reports, last hour</h2>\
<h3>By fill time</h3><table id=\"top-fill\"><tr><th>report</th><th>rule</th><th>misses</th><th>fills</th><th>mean fill</th><th>max fill</th><th>fill time</th></tr>{top_fill}</table>\
<h3>By time saved</h3><table id=\"top-saved\"><tr><th>report</th><th>rule</th><th>hits</th><th>saved</th></tr>{top_saved}</table></div>\
<h2>Look up an entry</h2><form id=\"lookup\"><input id=\"lookup-url\" name=\"url\" placeholder=\"/path?query\" autocomplete=\"off\"> \
<button id=\"lookup-go\" type=\"submit\">Look up</button> <button id=\"purge\" type=\"button\" hidden>Purge&hellip;</button> <span id=\"purge-result\"></span>\
<p><label>admin token <input id=\"token\" type=\"password\" autocomplete=\"off\" placeholder=\"only off purge.allow\"></label></p></form>\
<div id=\"lookup-result\"></div>\
<div id=\"live-rest\" data-live><h2>Outcomes</h2><table><tr><th>outcome</th><th>requests</th></tr>{outcomes}</table>\
<h2>Top routes by hits</h2><table><tr><th>route</th><th>hits</th><th>seconds saved</th></tr>{by_hits}</table>\
<h2>Top routes by time saved</h2><table><tr><th>route</th><th>seconds saved</th><th>hits</th></tr>{saved_rows}</table>\
<h2>Recent purges</h2><table><tr><th>when</th><th>scope</th><th>targets</th><th>mode</th><th>source</th></tr>{purges}</table>\
<h2>Fill queue</h2><table id=\"queue\"><tr><th>waiting</th><th>running</th><th>limit</th><th>dropped</th><th>timed out</th><th>refused (503)</th><th>mean wait</th></tr>\
<tr><td class=\"n\">{qwait}</td><td class=\"n\">{qrun}</td><td class=\"n\">{qmax}</td><td class=\"n\">{qdrop}</td><td class=\"n\">{qto}</td><td class=\"n\">{qref}</td><td class=\"n\">{qmean:.2} s</td></tr></table>\
<p>fills in flight: {fills} &middot; purge targets in force: {ptargets}</p></div>\
<script>{script}</script></body></html>",
        ver = env!("CARGO_PKG_VERSION"),
        cv = esc(&cfg.version),
        up = esc(&cfg.upstream.base),
        ratio = m.hit_ratio() * 100.0,
        total = m.total(),
        saved = m.saved_ms.get() as f64 / 1000.0,
        sc = if store_ok { "ok" } else { "bad" },
        store = esc(shared.store.entries.name()),
        sh = if store_ok { "ok" } else { "degraded" },
        chart = chart(&points),
        fills = shared.flights.in_flight(),
        qwait = queue.0,
        qrun = queue.1,
        qmax = if cfg.upstream.max_fills == 0 {
            "none".to_string()
        } else {
            cfg.upstream.max_fills.to_string()
        },
        qdrop = m.queue_dropped.get(),
        qto = m.queue_timeouts.get(),
        qref = m.queue_refused.get(),
        qmean = m.queue_waited.mean_secs(),
        ptargets = shared.purges.table().len(),
        refresh = view.refresh_s,
        top_fill = top_rows(shared, view, By::FillTime),
        top_saved = top_rows(shared, view, By::Saved),
        script = SCRIPT.replace("REFRESH_MS", &(view.refresh_s * 1000).to_string()),
    );
    let mut r = Response::new(ProxyBody::full(html));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
