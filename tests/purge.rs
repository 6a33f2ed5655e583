//! Invalidation: every purge form on every store, soft purges, the purge-during-fill race,
//! authorization, the admin API, warming and the namespace.

mod common;

use common::*;
use std::time::Duration;

const RULES: &str = "[[rules]]\npath = \"/s/\"\nttl = \"1h\"\n[[rules]]\npath = \"/t/\"\nttl = \"1h\"\ntags = [\"analytics\"]\n";

/// `PURGE path` with `Purge-Mode: soft`.
async fn soft_purge(c: &HttpClient, slate: &Slate, path: &str) -> Got {
    send(c, "PURGE", &slate.url(path), &[("purge-mode", "soft")], "").await
}

async fn every_purge_form(store: StoreUnderTest) {
    let origin = Origin::start(tagged_origin()).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULES)
        .start()
        .await;
    let c = client();
    let all = ["/s/a?x=1", "/s/a?x=2", "/s/ab", "/s/b", "/t/z"];
    fill(&c, &slate, &all).await;

    // Exact: that URL only (normalized like a GET).
    assert_eq!(
        send(&c, "PURGE", &slate.url("/s/a?utm_campaign=q&x=1"), &[], "")
            .await
            .status,
        200
    );
    assert!(!hit(&c, &slate, "/s/a?x=1").await);
    assert!(hit(&c, &slate, "/s/a?x=2").await && hit(&c, &slate, "/s/ab").await);

    // Prefix: every path starting with it, any query; siblings stay.
    fill(&c, &slate, &all).await;
    let p = send(&c, "PURGE", &slate.url("/s/a*"), &[], "").await;
    assert_eq!(p.status, 200, "{}", p.text());
    let j: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(
        (j["scope"].as_str(), j["soft"].as_bool()),
        (Some("prefix"), Some(false))
    );
    for u in ["/s/a?x=1", "/s/a?x=2", "/s/ab"] {
        assert!(!hit(&c, &slate, u).await, "{u} purged by prefix");
    }
    assert!(
        hit(&c, &slate, "/s/b").await && hit(&c, &slate, "/t/z").await,
        "siblings untouched"
    );

    // Tag from the origin's Cache-Tag.
    fill(&c, &slate, &all).await;
    assert_eq!(
        send(
            &c,
            "PURGE",
            &slate.url("/"),
            &[("cache-tag", "finance")],
            ""
        )
        .await
        .status,
        200
    );
    for u in ["/s/a?x=1", "/s/a?x=2", "/s/ab", "/s/b"] {
        assert!(!hit(&c, &slate, u).await, "{u} purged by origin tag");
    }
    assert!(hit(&c, &slate, "/t/z").await);

    // Tag from the rule, and from Surrogate-Key; either of two tags.
    fill(&c, &slate, &all).await;
    let p = send(
        &c,
        "PURGE",
        &slate.url("/"),
        &[("cache-tag", "nothing, analytics")],
        "",
    )
    .await;
    assert_eq!(p.status, 200);
    assert!(!hit(&c, &slate, "/t/z").await, "purged by rule tag");
    assert!(hit(&c, &slate, "/s/b").await);
    fill(&c, &slate, &all).await;
    send(
        &c,
        "PURGE",
        &slate.url("/"),
        &[("cache-tag", "inventory")],
        "",
    )
    .await;
    assert!(!hit(&c, &slate, "/t/z").await, "purged by Surrogate-Key");
    slate.stop().await;
}

async fn soft_purge_serves_stale_to_all_and_refreshes_once(store: StoreUnderTest) {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("v{n}")).delay(Duration::from_millis(400))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULES)
        .start()
        .await;
    let c = client();
    assert_eq!(get(&c, &slate.url("/s/soft")).await.text(), "v1");
    let p = soft_purge(&c, &slate, "/s/soft").await;
    assert_eq!(p.status, 200, "{}", p.text());
    for g in get_all(&c, (0..20).map(|_| slate.url("/s/soft"))).await {
        assert_eq!(g.text(), "v1", "stale copy served at once");
        assert_eq!(
            g.cache().detail(),
            Some("soft-purged"),
            "{}",
            g.cache_status()
        );
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        origin.hits("/s/soft"),
        2,
        "exactly one refresh went upstream"
    );
    let g = get(&c, &slate.url("/s/soft")).await;
    assert_eq!(g.text(), "v2");
    assert!(g.cache().is_hit());
    slate.stop().await;
}

async fn purge_during_fill_is_not_undone(store: StoreUnderTest) {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("v{n}")).delay(Duration::from_millis(500))).await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULES)
        .start()
        .await;
    let c = client();
    let t = tokio::spawn({
        let (c, u) = (c.clone(), slate.url("/s/race"));
        async move { get(&c, &u).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        send(&c, "PURGE", &slate.url("/s/r*"), &[], "").await.status,
        200
    );
    // The request that was waiting gets its answer...
    assert_eq!(t.await.unwrap().text(), "v1");
    // ...but the data computed before the purge is not served as fresh afterwards.
    let g = get(&c, &slate.url("/s/race")).await;
    assert_eq!(g.text(), "v2", "{}", g.cache_status());
    slate.stop().await;
}

async fn admin_api_forms(store: StoreUnderTest) {
    let origin = Origin::start(tagged_origin()).await;
    let extra =
        format!("{RULES}[purge]\nallow = [\"192.0.2.0/24\"]\ntoken = \"back-office-token\"\n");
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(&extra)
        .start()
        .await;
    let c = client();
    let all = ["/s/a?x=1", "/s/b", "/t/z"];
    let post = |body: &'static str, h: &'static [(&'static str, &'static str)]| {
        let (c, u) = (c.clone(), slate.admin_url("/purge"));
        async move { send(&c, "POST", &u, h, body).await }
    };
    static AUTH: [(&str, &str); 2] = [
        ("authorization", "Bearer back-office-token"),
        ("content-type", "application/json"),
    ];
    fill(&c, &slate, &all).await;
    assert_eq!(
        post(r#"{"url": "/s/a?x=1"}"#, &[]).await.status,
        403,
        "not allowed, no token"
    );
    assert!(hit(&c, &slate, "/s/a?x=1").await);
    let r = post(r#"{"url": "/s/a?x=1"}"#, &AUTH).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!hit(&c, &slate, "/s/a?x=1").await && hit(&c, &slate, "/s/b").await);
    fill(&c, &slate, &all).await;
    assert_eq!(post(r#"{"prefix": "/s/"}"#, &AUTH).await.status, 200);
    assert!(!hit(&c, &slate, "/s/b").await && hit(&c, &slate, "/t/z").await);
    fill(&c, &slate, &all).await;
    assert_eq!(
        post(r#"{"tags": ["analytics"], "soft": true}"#, &AUTH)
            .await
            .status,
        200
    );
    let g = get(&c, &slate.url("/t/z")).await;
    assert_eq!(
        g.cache().detail(),
        Some("soft-purged"),
        "{}",
        g.cache_status()
    );
    for bad in [
        "{not json",
        r#"{"url": "/a", "prefix": "/b"}"#,
        r#"{"tags": []}"#,
        r#"{"urls": "/a"}"#,
        r#"{"prefix": "/a*b"}"#,
        r#"{"url": "http://elsewhere/a"}"#,
        "{}",
    ] {
        let r = send(&c, "POST", &slate.admin_url("/purge"), &AUTH, bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        let j: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON error");
        assert!(j["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // Malformed PURGE requests on the proxy listener.
    let t = [("authorization", "Bearer back-office-token")];
    for (path, h) in [
        ("/s/a*b", vec![]),
        ("/s/*?x=1", vec![]),
        ("/s/x", vec![("purge-mode", "sideways")]),
        ("/s/", vec![("cache-tag", "sales")]),
        ("/", vec![("cache-tag", " , ")]),
        ("/s/%zz", vec![]),
    ] {
        let mut hs = h.clone();
        hs.extend_from_slice(&t);
        let r = send(&c, "PURGE", &slate.url(path), &hs, "").await;
        assert_eq!(r.status, 400, "PURGE {path} {h:?}: {}", r.text());
    }
    slate.stop().await;
}

async fn warm_urls_fetched_before_anyone_asks(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("v{n}"))).await;
    let extra = format!("{RULES}[warm]\nurls = [\"/s/warm?region=global\"]\nevery = \"1h\"\n");
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(&extra)
        .start()
        .await;
    eventually(
        "the warm request reaches the origin",
        Duration::from_secs(2),
        || async { (origin.hits("/s/warm?region=global") == 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = client();
    let g = get(&c, &slate.url("/s/warm?region=global")).await;
    assert!(g.cache().is_hit(), "{}", g.cache_status());
    assert_eq!(g.text(), "v1");
    slate.stop().await;
}

/// `cache.namespace` is read when the store connects (its purge-log keys and event channel
/// are named after it), so a reload keeps the running namespace and only a restart drops
/// every entry at once.
async fn namespace_change_needs_a_restart_then_empties_the_cache(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| Reply::ok(format!("v{n}"))).await;
    let base = format!(
        "[upstream]\nurl = \"{}\"\n{}{RULES}",
        origin.url(),
        store.table("")
    );
    let slate = Slate::builder(&origin.url())
        .whole_config(&base)
        .start()
        .await;
    let c = client();
    fill(&c, &slate, &["/s/ns"]).await;

    // A reload that changes the namespace: the running one stays, entries stay reachable,
    // and purges still reach them.
    let dir = TempDir::new("ns");
    let path = dir.0.join("config.toml");
    let v2 = format!("{base}[cache]\nnamespace = \"v2\"\n");
    std::fs::write(&path, &v2).unwrap();
    let live = &slate.instance.shared.live;
    assert!(
        live.reload(&path).unwrap(),
        "the rest of the file is swapped in"
    );
    assert_eq!(live.get().cache.namespace, "v1", "kept until a restart");
    assert!(
        hit(&c, &slate, "/s/ns").await,
        "old entries still reachable"
    );
    assert_eq!(
        send(&c, "PURGE", &slate.url("/s/*"), &[], "").await.status,
        200
    );
    assert_eq!(get(&c, &slate.url("/s/ns")).await.text(), "v2", "purged");
    assert!(hit(&c, &slate, "/s/ns").await);

    // A restart on the same store under the new namespace: nothing old is reachable.
    let cfg = slate::config::Config::parse("v2.toml", &v2).unwrap();
    let shared_store = slate.instance.shared.store.clone();
    slate.stop().await;
    let clock = slate::clock::Clock::system();
    let instance = match store {
        // The memory store lives in the process: hand the same one to the new instance.
        StoreUnderTest::Memory => {
            slate::Instance::with_store(cfg, clock.clone(), shared_store).await
        }
        _ => slate::Instance::start(cfg, clock.clone()).await.unwrap(),
    };
    let slate = Slate::serve(instance, clock).await;
    let g = get(&c, &slate.url("/s/ns")).await;
    assert_eq!(g.text(), "v3", "old entries unreachable after the restart");
    assert_eq!(g.cache().fwd(), Some("uri-miss"), "{}", g.cache_status());
    slate.stop().await;
}

/// `GET /entry` after purges: an entry a hard purge removed is gone (404, saying so) even
/// while its bytes wait in the store for their expiry; a soft-purged one still exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_is_404_after_a_hard_purge_and_200_after_a_soft_one() {
    let origin = Origin::start(|_, n| Reply::ok(format!("v{n}"))).await;
    let slate = Slate::builder(&origin.url()).config(RULES).start().await;
    let c = client();
    fill(&c, &slate, &["/s/hard", "/s/soft"]).await;
    let entry = |pq: &str| {
        let (c, u) = (c.clone(), slate.admin_url(&format!("/entry?url={pq}")));
        async move { get(&c, &u).await }
    };
    assert_eq!(entry("/s/hard").await.status, 200);

    // A prefix purge deletes nothing in the store: the record alone removes the entry.
    assert_eq!(
        send(&c, "PURGE", &slate.url("/s/h*"), &[], "").await.status,
        200
    );
    let e = entry("/s/hard").await;
    assert_eq!(e.status, 404, "{}", e.text());
    let j: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(j["purged"], true, "{j}");
    assert!(j["error"].as_str().unwrap().contains("purge"), "{j}");
    assert!(j["key"].as_str().unwrap().starts_with("slate:v1:e:"), "{j}");

    assert_eq!(soft_purge(&c, &slate, "/s/soft").await.status, 200);
    let e = entry("/s/soft").await;
    assert_eq!(e.status, 200, "{}", e.text());
    let j: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(j["status"], "soft-purged", "{j}");
    slate.stop().await;
}

on_every_store!(
    every_purge_form,
    soft_purge_serves_stale_to_all_and_refreshes_once,
    purge_during_fill_is_not_undone,
    admin_api_forms,
    warm_urls_fetched_before_anyone_asks,
    namespace_change_needs_a_restart_then_empties_the_cache,
);
