//! Many instances, one cache: three slate instances on one real redis-server, and on a real
//! three-node Redis Cluster.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The instances' config file (`{origin}` standing for the origin's URL): on `store` with
/// an in-process tier of `l1`, a fill lease of 1 s and `keys` in `[store]`.
fn config(store: &StoreUnderTest, l1: &str, keys: &str) -> String {
    let keys = format!("l1 = \"{l1}\"\nfill_lease = \"1s\"\n{keys}");
    format!(
        "[upstream]\nurl = \"{{origin}}\"\ntimeout = \"20s\"\n{}{RULE}",
        store.table(&keys)
    )
}

/// One instance started from `config(store, l1, keys)`.
async fn instance(origin: &Origin, store: &StoreUnderTest, l1: &str, keys: &str) -> Slate {
    Slate::builder(&origin.url())
        .whole_config(&config(store, l1, keys))
        .start()
        .await
}

async fn three(store: &StoreUnderTest, l1: &str, origin: &Origin) -> Vec<Slate> {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(instance(origin, store, l1, "").await);
    }
    v
}

/// 300 concurrent identical cold requests over three instances: one upstream request.
async fn stampede(slates: &[Slate], origin: &Origin, path: &str) {
    let c = client();
    let mut bodies = std::collections::HashSet::new();
    for g in get_all(&c, (0..300).map(|i| slates[i % 3].url(path))).await {
        assert_eq!(g.status, 200, "{}", g.text());
        bodies.insert(g.body);
    }
    assert_eq!(
        origin.hits(path),
        1,
        "exactly one upstream request across three instances"
    );
    assert_eq!(bodies.len(), 1, "all 300 got the same answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_one_upstream_request() {
    let redis = RedisServer::start();
    let origin =
        Origin::start(|_, n| Reply::ok(format!("report #{n}")).delay(Duration::from_millis(600)))
            .await;
    let store = StoreUnderTest::Redis(redis.url());
    let slates = three(&store, "64MiB", &origin).await;
    stampede(&slates, &origin, "/stampede?x=1").await;
    let waits: u64 = slates
        .iter()
        .map(|s| s.instance.shared.metrics.remote_waits.get())
        .sum();
    assert!(waits >= 1, "the other instances waited on the owner's lock");
    for s in slates {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fill_longer_than_the_lease_is_still_one_request() {
    let redis = RedisServer::start();
    // The lease is 1 s; the report takes 3.5 s: the owner must renew it.
    let origin =
        Origin::start(|_, n| Reply::ok(format!("slow #{n}")).delay(Duration::from_millis(3500)))
            .await;
    let store = StoreUnderTest::Redis(redis.url());
    let slates = three(&store, "0", &origin).await;
    let c = client();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (c, url) = (c.clone(), slates[i % 3].url("/long"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64 * 50)).await;
                get(&c, &url).await
            })
        })
        .collect();
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!((g.status, g.text().as_str()), (200, "slow #1"));
    }
    assert_eq!(origin.hits("/long"), 1);
    for s in slates {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_killed_mid_fill_a_waiter_takes_over() {
    let redis = RedisServer::start();
    let origin =
        Origin::start(|_, n| Reply::ok(format!("report #{n}")).delay(Duration::from_millis(1500)))
            .await;
    let store = StoreUnderTest::Redis(redis.url());
    // The owner is a real slate process, killed with SIGKILL mid-fill.
    let text = config(&store, "0", "").replace("{origin}", &origin.url());
    let (mut owner, port) = SlateProcess::start(&text).await;
    let c = client();
    let owner_url = format!("http://127.0.0.1:{port}/orphan");
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            let req = http::Request::get(owner_url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let _ = c.request(req).await;
        }
    });
    // Wait until the owner's request reached the origin: it holds the lock now.
    eventually(
        "the owner's request reaches the origin",
        Duration::from_secs(2),
        || async { (origin.hits("/orphan") == 1).then_some(()) },
    )
    .await;
    assert_eq!(origin.hits("/orphan"), 1);
    let waiter = instance(&origin, &store, "0", "").await;
    let w = tokio::spawn({
        let (c, url) = (c.clone(), waiter.url("/orphan"));
        async move {
            let t = Instant::now();
            (get(&c, &url).await, t.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    owner.kill();
    let (g, took) = w.await.unwrap();
    first.abort();
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(
        g.text(),
        "report #2",
        "the waiter took the lock over and fetched itself"
    );
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
    assert_eq!(waiter.instance.shared.metrics.lock_takeovers.get(), 1);
    waiter.stop().await;
}

/// Whether `s`'s in-process tier trusts its invalidation subscription (and is used).
fn trusted(s: &Slate) -> bool {
    let l1 = s.instance.shared.store.entries.stats().l1;
    l1.expect("an L1 tier").trusted
}

/// Waits until `s`'s in-process tier is used: once its invalidation subscription is up.
async fn l1_up(s: &Slate) {
    eventually(
        "the L1 subscription comes up",
        Duration::from_secs(10),
        || async { trusted(s).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_on_a_third_instance_clears_both_l1_tiers_within_100ms() {
    let redis = RedisServer::start();
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let store = StoreUnderTest::Redis(redis.url());
    let slates = three(&store, "64MiB", &origin).await;
    let c = client();
    for s in &slates {
        l1_up(s).await;
    }
    let mut old = std::collections::HashMap::new();
    for path in ["/l1/a", "/l1/b?x=1"] {
        old.insert(path, get(&c, &slates[0].url(path)).await.body);
        for s in &slates[..2] {
            for _ in 0..2 {
                let g = get(&c, &s.url(path)).await;
                assert!(g.cache().is_hit(), "{}", g.cache_status());
            }
        }
    }
    for s in &slates[..2] {
        let l1 = s.instance.shared.store.entries.stats().l1;
        assert!(l1.expect("an L1 tier").hits >= 2, "hits came from L1");
    }
    let e = get(&c, &slates[0].admin_url("/entry?url=/l1/a")).await;
    let j: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(j["found_in"], "l1", "{j}");
    let e = get(&c, &slates[2].admin_url("/entry?url=/l1/a")).await;
    let j: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(
        j["found_in"], "redis",
        "the third instance never read it: {j}"
    );
    let p = send(&c, "PURGE", &slates[2].url("/l1/*"), &[], "").await;
    assert_eq!(p.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for s in &slates[..2] {
        for path in ["/l1/a", "/l1/b?x=1"] {
            let g = get(&c, &s.url(path)).await;
            assert_eq!(g.status, 200);
            assert_ne!(
                g.body, old[path],
                "{path}: the purged answer is never served again"
            );
        }
    }
    for s in slates {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_shares_entries_across_shards_and_purges_every_shard() {
    let cluster = RedisCluster::start();
    let origin = Origin::start(|p, n| {
        Reply::ok(format!("{} #{n}", p.uri)).delay(Duration::from_millis(300))
    })
    .await;
    let slates = three(&cluster.store(), "0", &origin).await;
    let c = client();
    stampede(&slates, &origin, "/c/stampede").await;
    for i in 0..30 {
        let g = get(&c, &slates[i % 3].url(&format!("/c/r?id={i}"))).await;
        assert_eq!(g.status, 200);
    }
    for i in 0..30 {
        let g = get(&c, &slates[(i + 1) % 3].url(&format!("/c/r?id={i}"))).await;
        assert!(
            g.cache().is_hit(),
            "shared across instances: {}",
            g.cache_status()
        );
    }
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["--scan", "--pattern", "slate:v1:e:*"])
                .lines()
                .count()
        })
        .collect();
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "entries spread over shards: {per_node:?}"
    );
    let p = send(&c, "PURGE", &slates[1].url("/c/*"), &[], "").await;
    assert_eq!(p.status, 200, "{}", p.text());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..30 {
        let g = get(&c, &slates[i % 3].url(&format!("/c/r?id={i}"))).await;
        assert_eq!(
            g.cache().fwd(),
            Some("uri-miss"),
            "purged on every shard: {}",
            g.cache_status()
        );
    }
    for s in slates {
        s.stop().await;
    }
}

/// Calls of `cmd` Redis has answered so far (`INFO commandstats`).
fn redis_calls(redis: &RedisServer, cmd: &str) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Hits that arrive while a `GET` of their entry is on its way share that `GET`: Redis is
/// held (`CLIENT PAUSE`) so that every lookup finds the first one still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hits_arriving_together_share_one_redis_get() {
    let redis = RedisServer::start();
    let body = "r".repeat(20 << 10);
    let b = body.clone();
    let origin = Origin::start(move |_, _| Reply::ok(b.clone())).await;
    let store = StoreUnderTest::Redis(redis.url());
    let s = instance(&origin, &store, "0", "timeout = \"5s\"").await;
    // Until its event subscription is up, an instance polls the purge sequence number
    // (a GET) every 40 ms; after, once a second.
    let subscribed = || {
        let peers = s.instance.shared.store.peers.as_ref();
        peers.is_some_and(|p| p.subscribed())
    };
    eventually(
        "the subscription comes up",
        Duration::from_secs(10),
        || async { subscribed().then_some(()) },
    )
    .await;
    assert!(subscribed(), "the subscription came up");
    let c = client();
    get(&c, &s.url("/together")).await;
    assert!(get(&c, &s.url("/together")).await.cache().is_hit());
    let gets_before = redis_calls(&redis, "get");
    let joined = || s.instance.shared.store.entries.stats().reads_joined;
    let joined_before = joined().expect("Redis counts joined reads");

    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]).trim(), "OK");
    for g in get_all(&c, (0..50).map(|_| s.url("/together"))).await {
        assert_eq!(g.status, 200);
        assert!(g.cache().is_hit(), "{}", g.cache_status());
        assert_eq!(g.text(), body, "every hit has the whole report");
    }
    let gets = redis_calls(&redis, "get") - gets_before;
    // One GET for the 50 lookups, and at most three of the purge sequence number (polled
    // once a second, and perhaps once more as the poll slows down after subscribing).
    assert!(
        (1..=4).contains(&gets),
        "{gets} GETs answered 50 simultaneous hits"
    );
    let joined = joined().unwrap_or(0) - joined_before;
    assert_eq!(joined, 49, "49 lookups joined the first one's GET");
    assert_eq!(origin.hits("/together"), 1);
    s.stop().await;
}

/// A miss in the in-process tier is one Redis read, whatever the report cost to fill, so
/// the tier keeps what is asked for again: twenty popular reports stay in it through three
/// times its worth of reports that took the back end longer and are asked for once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l1_keeps_popular_reports_through_a_flood_of_slower_one_offs() {
    let redis = RedisServer::start();
    let origin = Origin::start(|req, _| {
        let r = Reply::ok(vec![b'x'; 10_000]).header("content-type", "application/octet-stream");
        if req.uri.path().starts_with("/once/") {
            r.delay(Duration::from_millis(20))
        } else {
            r
        }
    })
    .await;
    let store = StoreUnderTest::Redis(redis.url());
    let s = instance(&origin, &store, "1MiB", "").await;
    l1_up(&s).await;
    let c = client();
    for i in 0..300 {
        let popular = format!("/popular/{}", i % 20);
        assert_eq!(get(&c, &s.url(&popular)).await.status, 200);
        assert_eq!(get(&c, &s.url(&format!("/once/{i}"))).await.status, 200);
    }
    let l1 = s
        .instance
        .shared
        .store
        .entries
        .stats()
        .l1
        .expect("an L1 tier");
    assert!(l1.evictions >= 150, "the flood went through: {l1:?}");
    assert!(l1.bytes <= 1 << 20, "{l1:?}");
    for i in 0..20 {
        let popular = format!("/popular/{i}");
        let e = get(&c, &s.admin_url(&format!("/entry?url={popular}"))).await;
        let j: serde_json::Value = serde_json::from_slice(&e.body).expect("entry JSON");
        assert_eq!(j["found_in"], "l1", "{popular}: {j}");
        assert_eq!(origin.hits(&popular), 1);
    }
    s.stop().await;
}
