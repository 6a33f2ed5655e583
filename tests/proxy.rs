//! The caching proxy end to end, against the memory store and a real Redis, with an
//! in-process origin that counts what reaches it.

mod common;

use common::*;
use std::time::Duration;

/// Only `/r/` is cached here (common's `RULE` caches every path): `/other` has no rule.
const RULE: &str = "[[rules]]\npath = \"/r/\"\nttl = \"1h\"\n";

async fn miss_then_hit(store: StoreUnderTest) {
    let origin = Origin::start(|p, n| Reply::ok(format!("report {} #{n}", p.uri))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    let a = get(&c, &slate.url("/r/sales?region=eu")).await;
    assert_eq!(a.status, 200);
    let miss = a.cache();
    assert!(
        miss.fwd() == Some("uri-miss") && miss.has("stored"),
        "{}",
        a.cache_status()
    );
    let b = get(&c, &slate.url("/r/sales?region=eu")).await;
    assert_eq!(b.status, 200);
    let hit = b.cache();
    assert!(hit.is_hit() && hit.ttl().is_some(), "{}", b.cache_status());
    assert_eq!(a.body, b.body);
    assert_eq!(b.header("content-type"), a.header("content-type"));
    assert!(!b.header("age").is_empty(), "a hit carries Age");
    assert_eq!(origin.hits("/r/sales?region=eu"), 1);
    slate.stop().await;
}

async fn normalization_shares_a_key(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    let first = get(&c, &slate.url("/r/x?b=2&a=1")).await;
    for u in [
        "/r/x?a=1&b=2",
        "/r/x?b=2&utm_source=mail&a=1&_=12345",
        "/r/x?a=%31&b=2&&",
    ] {
        let g = get(&c, &slate.url(u)).await;
        assert!(g.cache().is_hit(), "{u}: {}", g.cache_status());
        assert_eq!(g.body, first.body, "{u}");
    }
    // A different value is a different report.
    let other = get(&c, &slate.url("/r/x?a=1&b=3")).await;
    assert_eq!(other.cache().fwd(), Some("uri-miss"));
    assert_eq!(origin.total(), 2);
    slate.stop().await;
}

async fn head_uses_get_entry(store: StoreUnderTest) {
    let origin = Origin::start(|_, _| Reply::ok("0123456789")).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/r/h")).await;
    let h = send(&c, "HEAD", &slate.url("/r/h"), &[], "").await;
    assert_eq!(h.status, 200);
    assert!(h.cache().is_hit(), "{}", h.cache_status());
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), "10");
    assert_eq!(origin.total(), 1);
    // A HEAD miss fills the entry for GET.
    let h = send(&c, "HEAD", &slate.url("/r/h2"), &[], "").await;
    assert!(h.body.is_empty());
    let g = get(&c, &slate.url("/r/h2")).await;
    assert!(g.cache().is_hit(), "{}", g.cache_status());
    assert_eq!(g.text(), "0123456789");
    slate.stop().await;
}

async fn no_rule_no_freshness_not_stored(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    let a = get(&c, &slate.url("/other")).await;
    let b = get(&c, &slate.url("/other")).await;
    assert_eq!((a.text().as_str(), b.text().as_str()), ("#1", "#2"));
    assert_eq!(
        b.cache().detail(),
        Some("no-freshness"),
        "{}",
        b.cache_status()
    );
    assert_eq!(origin.hits("/other"), 2);
    slate.stop().await;
}

async fn origin_max_age_honored(store: StoreUnderTest) {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("#{n}")).header("cache-control", "max-age=60"))
            .await;
    let clock = slate::clock::Clock::system();
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .clock(clock.clone())
        .start()
        .await;
    let c = client();
    assert_eq!(get(&c, &slate.url("/m")).await.text(), "#1");
    let hit = get(&c, &slate.url("/m")).await;
    assert_eq!(hit.text(), "#1");
    let ttl = hit.cache().ttl().expect("a ttl");
    assert!((55..=60).contains(&ttl), "{}", hit.cache_status());
    clock.advance(Duration::from_secs(61));
    assert_eq!(get(&c, &slate.url("/m")).await.text(), "#2");
    assert_eq!(origin.hits("/m"), 2);
    slate.stop().await;
}

async fn ttl_expiry(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let clock = slate::clock::Clock::system();
    let rule = "[[rules]]\npath = \"/r/\"\nttl = \"30s\"\n";
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(rule)
        .clock(clock.clone())
        .start()
        .await;
    let c = client();
    assert_eq!(get(&c, &slate.url("/r/t")).await.text(), "#1");
    clock.advance(Duration::from_secs(29));
    assert_eq!(get(&c, &slate.url("/r/t")).await.text(), "#1");
    clock.advance(Duration::from_secs(2));
    let g = get(&c, &slate.url("/r/t")).await;
    assert_eq!(g.text(), "#2");
    assert!(g.cache().has("stored"), "{}", g.cache_status());
    slate.stop().await;
}

async fn cache_false_passes_through(store: StoreUnderTest) {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("#{n}")).header("cache-control", "max-age=600"))
            .await;
    let rules = "[[rules]]\npath = \"/live/\"\ncache = false\n";
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(rules)
        .start()
        .await;
    let c = client();
    let a = get(&c, &slate.url("/live/x")).await;
    let b = get(&c, &slate.url("/live/x")).await;
    assert_eq!((a.text().as_str(), b.text().as_str()), ("#1", "#2"));
    assert_eq!(b.cache().fwd(), Some("bypass"), "{}", b.cache_status());
    slate.stop().await;
}

/// A rule's `ttl` never gives an error freshness its origin did not give it (a `503` with
/// its own `max-age` is stored: tests/rfc9111.rs `s3_every_status`).
async fn server_errors_not_stored(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| {
        if n == 1 {
            Reply::ok(format!("#{n}")).status(503)
        } else {
            Reply::ok(format!("#{n}")).header("cache-control", "max-age=600")
        }
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    let a = get(&c, &slate.url("/r/e")).await;
    assert_eq!(a.status, 503);
    let b = get(&c, &slate.url("/r/e")).await;
    assert_eq!((b.status, b.text().as_str()), (200, "#2"));
    assert_eq!(get(&c, &slate.url("/r/e")).await.text(), "#2");
    assert_eq!(origin.hits("/r/e"), 2);
    slate.stop().await;
}

async fn hundred_concurrent_cold_requests_one_upstream(store: StoreUnderTest) {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("report #{n}")).delay(Duration::from_millis(400)))
            .await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    let url = slate.url("/r/cold?q=1");
    let mut collapsed = 0;
    for g in get_all(&c, (0..100).map(|_| url.clone())).await {
        assert_eq!((g.status, g.text().as_str()), (200, "report #1"));
        if g.cache().has("collapsed") {
            collapsed += 1;
            assert!(!g.header("age").is_empty(), "a waiter's answer carries Age");
        }
    }
    assert_eq!(
        origin.hits("/r/cold?q=1"),
        1,
        "exactly one upstream request"
    );
    assert!(collapsed >= 50, "most waited for the one fill: {collapsed}");
    slate.stop().await;
}

async fn client_disconnect_still_stores(store: StoreUnderTest) {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("#{n}")).delay(Duration::from_millis(500))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    let url = slate.url("/r/gone");
    let t = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.abort(); // the client hangs up mid-fill
    let _ = t.await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let g = get(&c, &url).await;
    assert!(g.cache().is_hit(), "{}", g.cache_status());
    assert_eq!(g.text(), "#1");
    assert_eq!(origin.total(), 1);
    slate.stop().await;
}

async fn purge_then_miss(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/r/p?a=1&b=2")).await;
    get(&c, &slate.url("/r/p?a=2")).await;
    let p = send(&c, "PURGE", &slate.url("/r/p?b=2&a=1&utm_x=1"), &[], "").await;
    assert_eq!(p.status, 200, "{}", p.text());
    let j: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(j["scope"], "url");
    let g = get(&c, &slate.url("/r/p?a=1&b=2")).await;
    assert_eq!(g.text(), "#2");
    assert_eq!(g.cache().fwd(), Some("uri-miss"));
    // The sibling is untouched.
    assert!(get(&c, &slate.url("/r/p?a=2")).await.cache().is_hit());
    slate.stop().await;
}

async fn purge_needs_authorization(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let extra = format!("{RULE}[purge]\nallow = [\"10.9.9.0/24\"]\ntoken = \"s3cret-token\"\n");
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(&extra)
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/r/a")).await;
    for h in [
        vec![],
        vec![("authorization", "Bearer wrong-token")],
        vec![("authorization", "Basic s3cret-token")],
        vec![("authorization", "Bearers3cret-token")],
        vec![("authorization", "Bearer S3CRET-TOKEN")],
    ] {
        let p = send(&c, "PURGE", &slate.url("/r/a"), &h, "").await;
        assert_eq!(p.status, 403, "{h:?}");
    }
    assert!(
        get(&c, &slate.url("/r/a")).await.cache().is_hit(),
        "a refused purge changes nothing"
    );
    // The scheme name is case-insensitive (RFC 9110 §11.1); the token is not (above).
    for (auth, next) in [
        ("Bearer s3cret-token", "#2"),
        ("bearer s3cret-token", "#3"),
        ("BEARER  s3cret-token", "#4"),
    ] {
        let p = send(
            &c,
            "PURGE",
            &slate.url("/r/a"),
            &[("authorization", auth)],
            "",
        )
        .await;
        assert_eq!(p.status, 200, "{auth}: {}", p.text());
        assert_eq!(get(&c, &slate.url("/r/a")).await.text(), next, "{auth}");
    }
    slate.stop().await;
}

async fn post_passes_through_and_invalidates(store: StoreUnderTest) {
    let origin = Origin::start(|p, n| Reply::ok(format!("{} #{n}", p.method))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    assert_eq!(get(&c, &slate.url("/r/doc")).await.text(), "GET #1");
    let p = send(&c, "POST", &slate.url("/r/doc"), &[], "payload").await;
    assert_eq!(p.text(), "POST #2");
    assert_eq!(p.cache().fwd(), Some("method"), "{}", p.cache_status());
    let g = get(&c, &slate.url("/r/doc")).await;
    assert_eq!(g.text(), "GET #3", "the POST invalidated the entry");
    // Other methods pass through untouched and invalidate nothing.
    let o = send(&c, "OPTIONS", &slate.url("/r/doc"), &[], "").await;
    assert_eq!(o.text(), "OPTIONS #4");
    assert!(get(&c, &slate.url("/r/doc")).await.cache().is_hit());
    slate.stop().await;
}

async fn oversize_streams_uncached(store: StoreUnderTest) {
    let big = "x".repeat(300_000);
    let origin = Origin::start(move |_, _| Reply::ok(big.clone())).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .store_keys("max_object_size = \"100KiB\"")
        .config(RULE)
        .start()
        .await;
    let c = client();
    for _ in 0..2 {
        let g = get(&c, &slate.url("/r/big")).await;
        assert_eq!(g.body.len(), 300_000);
        assert_eq!(
            g.cache().detail(),
            Some("too-large"),
            "{}",
            g.cache_status()
        );
    }
    assert_eq!(origin.hits("/r/big"), 2);
    slate.stop().await;
}

async fn memory_bound_holds_and_entries_survive_restart(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/r/keep")).await;
    slate.stop().await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let g = get(&c, &slate.url("/r/keep")).await;
    match store {
        StoreUnderTest::Redis(_) | StoreUnderTest::Cluster(_) => {
            assert!(g.cache().is_hit(), "Redis entries survive a restart");
            assert_eq!(g.text(), "#1");
        }
        StoreUnderTest::Memory => assert_eq!(g.text(), "#2", "a new memory store starts empty"),
    }
    slate.stop().await;
}

on_both_stores!(
    miss_then_hit,
    normalization_shares_a_key,
    head_uses_get_entry,
    no_rule_no_freshness_not_stored,
    origin_max_age_honored,
    ttl_expiry,
    cache_false_passes_through,
    server_errors_not_stored,
    hundred_concurrent_cold_requests_one_upstream,
    client_disconnect_still_stores,
    purge_then_miss,
    purge_needs_authorization,
    post_passes_through_and_invalidates,
    oversize_streams_uncached,
    memory_bound_holds_and_entries_survive_restart,
);
