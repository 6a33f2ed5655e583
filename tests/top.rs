//! `GET /top` on the admin listener: the reports that cost the back end most over the last
//! hour, ranked by hits, misses, fill time or seconds saved, in bounded memory; and the
//! status page that shows them, looks entries up and purges them, in headless Chromium.

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use common::*;
use serde_json::Value;
use slate::clock::Clock;
use slate::top::{Event, Report};
use std::time::Duration;

const SLOW: Duration = Duration::from_millis(300);

/// `/slow` takes 300 ms to compute, anything else answers at once.
async fn origin() -> Origin {
    Origin::start(|parts, n| {
        let r = Reply::ok(format!("{} #{n}", parts.uri.path()));
        if parts.uri.path() == "/slow" {
            r.delay(SLOW)
        } else {
            r
        }
    })
    .await
}

async fn top(c: &HttpClient, slate: &Slate, query: &str) -> Value {
    let g = get(c, &slate.admin_url(&format!("/top?{query}"))).await;
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(g.header("content-type"), "application/json");
    serde_json::from_slice(&g.body).unwrap_or_else(|e| panic!("{e}: {}", g.text()))
}

fn urls(v: &Value) -> Vec<&str> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["url"].as_str().expect("url"))
        .collect()
}

fn row<'v>(v: &'v Value, url: &str) -> &'v Value {
    v["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["url"] == url))
        .unwrap_or_else(|| panic!("{url} not in {v}"))
}

async fn ranks_a_slow_report_above_a_fast_one(store: StoreUnderTest) {
    let origin = origin().await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    // /slow: 1 miss, 2 hits. /fast?b=2&a=1 (spelled two ways): 1 miss, 5 hits.
    for _ in 0..3 {
        assert_eq!(get(&c, &slate.url("/slow")).await.status, 200);
    }
    for q in ["b=2&a=1", "a=1&b=2", "b=2&a=1&utm_source=x"].repeat(2) {
        get(&c, &slate.url(&format!("/fast?{q}"))).await;
    }
    let by_fill = top(&c, &slate, "by=fill_time&n=20").await;
    assert_eq!(urls(&by_fill), ["/slow", "/fast?a=1&b=2"], "{by_fill}");
    assert_eq!(by_fill["by"], "fill_time");
    assert_eq!(by_fill["window_s"], 3600);
    assert_eq!(by_fill["sketch"], "space-saving");
    let slow = row(&by_fill, "/slow");
    assert_eq!(
        (
            &slow["hits"],
            &slow["misses"],
            &slow["fills"],
            &slow["rule"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(1),
            &Value::from("/")
        )
    );
    assert!(slow["body"].is_null());
    let (mean, max) = (slow["mean_fill_s"].as_f64(), slow["max_fill_s"].as_f64());
    assert!(mean.unwrap() >= SLOW.as_secs_f64(), "{slow}");
    assert_eq!(mean, max, "one fill: its mean is its max");
    // Each hit spared the fill time of what it served.
    let saved = slow["saved_s"].as_f64().unwrap();
    assert!(saved >= 2.0 * SLOW.as_secs_f64() - 0.002, "{slow}");
    let fast = row(&by_fill, "/fast?a=1&b=2");
    assert_eq!((&fast["hits"], &fast["misses"]), (&5.into(), &1.into()));
    assert!(fast["mean_fill_s"].as_f64().unwrap() < mean.unwrap());

    assert_eq!(
        urls(&top(&c, &slate, "by=hits").await),
        ["/fast?a=1&b=2", "/slow"]
    );
    assert_eq!(urls(&top(&c, &slate, "by=saved").await)[0], "/slow");
    let by_misses = top(&c, &slate, "by=misses&n=1").await;
    assert_eq!(by_misses["rows"].as_array().map(Vec::len), Some(1), "n=1");
    // The default: by fill time.
    assert_eq!(urls(&top(&c, &slate, "").await)[0], "/slow");
    slate.stop().await;
}

on_both_stores!(ranks_a_slow_report_above_a_fast_one);

/// 100 000 distinct URLs in the hour (recorded straight into the instance's summaries, as
/// the request path does, plus 600 real ones through the proxy): the slow report still ranks
/// first, and what is tracked stays within the summaries' capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stays_bounded_with_100k_distinct_urls() {
    let origin = origin().await;
    let slate = Slate::builder(&origin.url()).config(RULE).start().await;
    let c = client();
    let shared = &slate.instance.shared;
    let now = shared.clock.now_ms();
    for i in 0..100_000 {
        let url = format!("/many?id={i}");
        let r = Report {
            url: &url,
            body: None,
            rule: Some("/"),
        };
        shared.top.record(now, &r, Event::Miss);
        shared.top.record(now, &r, Event::Fill { micros: 1_000 });
    }
    for chunk in (0..600).collect::<Vec<_>>().chunks(50) {
        let answers = get_all(
            &c,
            chunk.iter().map(|i| slate.url(&format!("/real?id={i}"))),
        )
        .await;
        assert!(answers.iter().all(|g| g.status == 200));
    }
    get(&c, &slate.url("/slow")).await;
    let v = top(&c, &slate, "by=fill_time&n=100").await;
    assert_eq!(urls(&v)[0], "/slow", "{}", v["rows"][0]);
    let capacity = v["capacity"].as_u64().unwrap();
    let tracked = v["tracked"].as_u64().unwrap();
    // Four summaries a slice; everything here fell in at most two slices.
    assert!(tracked <= 2 * 4 * capacity, "tracked {tracked}");
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(100));
    // W/k: 100 s of quick fills, and the rest, over 256 counters.
    let bound = v["max_undercount"].as_f64().unwrap();
    assert!(bound >= 100.0 / 256.0, "{bound}");
    let slow = row(&v, "/slow");
    assert_eq!(slow["fills"], 1, "tracked from its first fill on: {slow}");
    slate.stop().await;
}

/// Counts leave the window an hour after they were made, on slate's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hour_slides() {
    let origin = origin().await;
    let clock = Clock::system();
    let slate = Slate::builder(&origin.url())
        .config("[[rules]]\npath = \"/\"\nttl = \"1d\"\n")
        .clock(clock.clone())
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/a")).await;
    get(&c, &slate.url("/a")).await;
    assert_eq!(urls(&top(&c, &slate, "by=hits").await), ["/a"]);
    clock.advance(Duration::from_secs(30 * 60));
    get(&c, &slate.url("/b")).await;
    get(&c, &slate.url("/b")).await;
    assert_eq!(urls(&top(&c, &slate, "by=hits").await), ["/a", "/b"]);
    clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(urls(&top(&c, &slate, "by=hits").await), ["/b"]);
    clock.advance(Duration::from_secs(60 * 60));
    let v = top(&c, &slate, "by=hits").await;
    assert_eq!((urls(&v).len(), &v["tracked"]), (0, &Value::from(0)));
    slate.stop().await;
}

/// Reports asked for with a body are one row per canonical body, named by the digest
/// `Slate-Key-Inputs` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_keyed_reports_carry_their_digest() {
    let origin = origin().await;
    let slate = Slate::builder(&origin.url())
        .config(
            "[[rules]]\npath = \"/api/query\"\nttl = \"1h\"\nmethods = [\"POST\"]\nbody_key = \"json\"\n",
        )
        .start()
        .await;
    let c = client();
    let post = |body: &'static str| {
        let (c, u) = (c.clone(), slate.url("/api/query"));
        async move {
            let h = [("content-type", "application/json"), ("slate-debug", "key")];
            send(&c, "POST", &u, &h, body).await
        }
    };
    let first = post(r#"{"a":1,"b":[1,2]}"#).await;
    assert!(post(r#"{ "b":[1,2], "a":1 }"#).await.cache().is_hit());
    post(r#"{"a":2}"#).await;
    let inputs = first.header("slate-key-inputs");
    let digest = inputs
        .split("; ")
        .find_map(|p| p.strip_prefix("body="))
        .unwrap_or_else(|| panic!("{inputs}"));
    let v = top(&c, &slate, "by=misses").await;
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let mine = rows
        .iter()
        .find(|r| r["body"] == digest)
        .expect("its digest");
    assert_eq!(
        (&mine["url"], &mine["rule"]),
        (&"/api/query".into(), &"/api/query".into())
    );
    assert_eq!((&mine["hits"], &mine["misses"]), (&1.into(), &1.into()));
    slate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_a_clear_400_and_authorization_is_the_admin_apis() {
    let origin = origin().await;
    let slate = Slate::builder(&origin.url())
        .config("[purge]\nallow = []\ntoken = \"s3cret-token\"\n")
        .start()
        .await;
    let c = client();
    let auth = [("authorization", "Bearer s3cret-token")];
    for (q, says) in [
        (
            "by=slowest",
            "by must be one of hits, misses, fill_time, saved",
        ),
        ("n=0", "n must be a whole number from 1 to 100"),
        ("n=1000", "from 1 to 100"),
        ("n=x", "n must be"),
        ("by=hits&limit=3", "unknown parameter \"limit\""),
    ] {
        let g = send(&c, "GET", &slate.admin_url(&format!("/top?{q}")), &auth, "").await;
        assert_eq!(g.status, 400, "{q}: {}", g.text());
        assert_eq!(g.header("content-type"), "application/json");
        let v: Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(v["status"], 400);
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(says), "{q}: {e}");
    }
    let g = get(&c, &slate.admin_url("/top?by=hits")).await;
    assert_eq!(g.status, 403, "no token, source not allowed: {}", g.text());
    let g = send(&c, "GET", &slate.admin_url("/top?by=hits"), &auth, "").await;
    assert_eq!(g.status, 200, "{}", g.text());
    let g = send(&c, "POST", &slate.admin_url("/top"), &auth, "").await;
    assert_eq!(g.status, 405);
    slate.stop().await;
}

/// The first report a table of the page lists, or null.
fn first_in(table: &str) -> String {
    format!("document.querySelector('#{table} button[data-url]')?.dataset.url ?? null")
}

/// Whether a table of the page lists `url`.
fn lists(table: &str, url: &str) -> String {
    format!("[...document.querySelectorAll('#{table} button[data-url]')].some(b => b.dataset.url === {url:?})")
}

/// Types `url` into the page's lookup box and clicks Look up.
async fn look_up(page: &cdp::Page, url: &str) {
    page.click("#lookup-url").await;
    page.type_text(url).await;
    page.click("#lookup-go").await;
}

/// The page as an operator uses it, in a real headless Chromium clicked over DevTools: the
/// slow report heads the fill-time table, which refreshes itself; a URL typed in is looked
/// up; Purge asks first (Cancel keeps the entry, OK removes it) and the entry is then gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_looks_up_and_purges_in_headless_chromium() {
    let origin = origin().await;
    let slate = Slate::builder(&origin.url()).config(RULE).start().await;
    let c = client();
    for u in ["/slow", "/slow", "/fast", "/fast", "/fast"] {
        assert_eq!(get(&c, &slate.url(u)).await.status, 200);
    }
    let dir = TempDir::new("cdp");
    let browser = cdp::Browser::launch(&dir);
    let page = browser.page(&c).await;
    page.navigate(&slate.admin_url("/status?refresh=1")).await;
    assert_eq!(page.eval(&first_in("top-fill")).await, "/slow");
    assert_eq!(page.eval(&first_in("top-saved")).await, "/slow");

    // It refreshes itself, in place: a report asked for after it loaded turns up.
    page.eval("window.stillHere = true").await;
    get(&c, &slate.url("/later")).await;
    page.until("/later listed by a refresh", &lists("top-fill", "/later"))
        .await;
    assert_eq!(
        page.eval("window.stillHere === true").await,
        true,
        "not reloaded"
    );

    // A row's report, clicked, is looked up.
    page.click("#top-fill button[data-url='/fast']").await;
    page.until(
        "/fast shown",
        "document.querySelector('#entry tr td + td')?.textContent === '/fast'",
    )
    .await;

    // A URL typed in is looked up.
    page.eval("document.getElementById('lookup-url').value = ''")
        .await;
    look_up(&page, "/slow").await;
    page.until(
        "/slow shown, fresh",
        "document.querySelector('#entry')?.dataset.status === 'fresh' && document.querySelector('#entry td + td').textContent === '/slow'",
    )
    .await;

    // Purge asks first; Cancel purges nothing.
    page.answer_dialogs(false);
    page.click("#purge").await;
    page.until(
        "cancelled",
        "document.getElementById('purge-result').textContent === 'not purged'",
    )
    .await;
    let dialogs = page.dialogs();
    assert_eq!(dialogs.len(), 1);
    assert!(dialogs[0].contains("Purge /slow"), "{dialogs:?}");
    assert_eq!(
        get(&c, &slate.admin_url("/entry?url=/slow")).await.status,
        200
    );

    // OK purges it: the page says it is gone, and so does the admin API.
    page.answer_dialogs(true);
    page.click("#purge").await;
    page.until(
        "purged and gone",
        "document.getElementById('purge-result').textContent === 'purged /slow' && (document.getElementById('lookup-message')?.textContent ?? '').includes('no entry for /slow')",
    )
    .await;
    assert_eq!(page.dialogs().len(), 2);
    assert_eq!(
        get(&c, &slate.admin_url("/entry?url=/slow")).await.status,
        404
    );
    assert_eq!(
        get(&c, &slate.url("/slow")).await.cache().fwd(),
        Some("uri-miss")
    );

    let png = page.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("SLATE_KEEP_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    slate.stop().await;
}

/// Off `purge.allow`, the page names no report until the admin token is typed into it; the
/// lookups then carry the token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_reports_only_with_the_admin_token() {
    let origin = origin().await;
    let slate = Slate::builder(&origin.url())
        .config(RULE)
        .config("[purge]\nallow = []\ntoken = \"s3cret-token\"\n")
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/slow")).await;
    let plain = get(&c, &slate.admin_url("/status")).await;
    assert_eq!(plain.status, 200);
    assert!(
        !plain.text().contains("data-url=\"/slow\""),
        "no report without the token"
    );
    let bad = get(&c, &slate.admin_url("/status?refresh=0")).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad
        .text()
        .contains("refresh must be whole seconds from 1 to 3600"));

    let dir = TempDir::new("cdp-token");
    let browser = cdp::Browser::launch(&dir);
    let page = browser.page(&c).await;
    page.navigate(&slate.admin_url("/status?refresh=1")).await;
    assert_eq!(
        page.eval(&first_in("top-fill")).await,
        serde_json::Value::Null
    );
    look_up(&page, "/slow").await;
    page.until(
        "refused without the token",
        "(document.getElementById('lookup-message')?.textContent ?? '').includes('purge.allow')",
    )
    .await;
    page.click("#token").await;
    page.type_text("s3cret-token").await;
    page.press("Tab", 9).await;
    page.until("listed with the token", &lists("top-fill", "/slow"))
        .await;
    page.click("#lookup-go").await;
    page.until(
        "found with the token",
        "document.querySelector('#entry')?.dataset.status === 'fresh'",
    )
    .await;
    slate.stop().await;
}
