//! The fill queue protects the back end from many *different* reports at once: at most
//! `upstream.max_fills` fills run against it, counted over every instance sharing the
//! store; the rest wait their turn, bounded by `upstream.queue_timeout`.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// 9:00: 60 distinct cold reports, each opened by 5 viewers, through three instances on
/// one Redis with `max_fills = 4`: the origin computes each report once, never more than
/// four at a time, and every viewer gets its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_four_slots() {
    let redis = RedisServer::start();
    let origin = Origin::start(|p, _| {
        Reply::ok(format!("report {}", p.uri)).delay(Duration::from_millis(500))
    })
    .await;
    let store = StoreUnderTest::Redis(redis.url());
    let mut slates = Vec::new();
    for _ in 0..3 {
        let s = Slate::builder(&origin.url())
            .store(&store)
            .upstream_keys("max_fills = 4")
            .config(RULE)
            .start()
            .await;
        slates.push(s);
    }
    let c = client();
    let urls: Vec<String> = (0..60)
        .flat_map(|r| (0..5).map(move |v| (r, v)))
        .map(|(r, v)| slates[(r + v) % 3].url(&format!("/report/{r}")))
        .collect();
    let t = Instant::now();
    let answers = get_all(&c, urls).await;
    let took = t.elapsed();
    for (i, g) in answers.iter().enumerate() {
        assert_eq!(g.status, 200, "viewer {i}: {}", g.text());
        assert_eq!(g.text(), format!("report /report/{}", i / 5));
    }
    assert_eq!(origin.total(), 60, "each report computed once");
    assert!(
        origin.peak_concurrency() <= 4,
        "the origin saw {} at once",
        origin.peak_concurrency()
    );
    // 60 fills of 0.5 s, 4 at a time, take 7.5 s at least: the queue did hold them back.
    assert!(took >= Duration::from_millis(7000), "{took:?}");
    for s in slates {
        s.stop().await;
    }
}

/// A viewer that waits for another viewer's fill waits as long as that fill may take: its
/// time in the queue (up to `queue_timeout`) and then its request (up to
/// `upstream.timeout`). Ten reports of 0.7 s with one slot: the last one is computed 7 s in,
/// past `upstream.timeout` + 5 s, and its second viewer still gets it, not a 504 (what
/// bench/morning.sh saw once a 9:00 queue was longer than 65 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_waits_for_a_queued_fill_as_long_as_it_queues() {
    let origin = Origin::start(|p, _| {
        Reply::ok(format!("report {}", p.uri)).delay(Duration::from_millis(700))
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Memory)
        .upstream_timeout("1s")
        .upstream_keys("max_fills = 1\nqueue_timeout = \"30s\"")
        .config(RULE)
        .start()
        .await;
    let c = client();
    let urls: Vec<String> = (0..10)
        .flat_map(|r| [r, r])
        .map(|r| slate.url(&format!("/report/{r}")))
        .collect();
    let t = Instant::now();
    let answers = get_all(&c, urls).await;
    assert!(t.elapsed() >= Duration::from_secs(6), "{:?}", t.elapsed());
    for (i, g) in answers.iter().enumerate() {
        assert_eq!(
            g.status,
            200,
            "viewer {i}: {} {}",
            g.cache_status(),
            g.text()
        );
        assert_eq!(g.text(), format!("report /report/{}", i / 2));
    }
    assert_eq!(origin.total(), 10, "each report computed once");
    slate.stop().await;
}

/// The queue tests' origin: `<path> #<n>` at once, but `/hog` takes `hog`.
fn answer(p: &http::request::Parts, n: usize, hog: Duration) -> Reply {
    let r = Reply::ok(format!("{} #{n}", p.uri.path()));
    match p.uri.path() {
        "/hog" => r.delay(hog),
        _ => r,
    }
}

/// Asks for `/hog` (a slow report) and waits until it holds the only slot.
async fn hog(c: &HttpClient, slate: &Slate, origin: &Origin) -> tokio::task::JoinHandle<Got> {
    let hog = tokio::spawn({
        let (c, url) = (c.clone(), slate.url("/hog"));
        async move { get(&c, &url).await }
    });
    eventually(
        "the slow report holds the slot",
        Duration::from_secs(2),
        || async { (origin.hits("/hog") == 1).then_some(()) },
    )
    .await;
    hog
}

/// Past `queue_timeout`: a stale copy when one is usable, else 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_stale_or_503() {
    let origin = Origin::start(|p, n| answer(p, n, Duration::from_secs(3))).await;
    let clock = slate::clock::Clock::system();
    let slate = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Memory)
        .clock(clock.clone())
        .upstream_keys("max_fills = 1\nqueue_timeout = \"300ms\"")
        .config("[[rules]]\npath = \"/\"\nttl = \"10s\"\nstale_if_error = \"1h\"\n")
        .start()
        .await;
    let c = client();
    assert_eq!(get(&c, &slate.url("/kept")).await.text(), "/kept #1");
    clock.advance(Duration::from_secs(60));
    // One slot, taken by a slow report.
    let hog = hog(&c, &slate, &origin).await;
    let t = Instant::now();
    let stale = get(&c, &slate.url("/kept")).await;
    assert_eq!(stale.text(), "/kept #1", "the stale copy");
    assert_eq!(
        stale.cache().detail(),
        Some("queue-full"),
        "{}",
        stale.cache_status()
    );
    let busy = get(&c, &slate.url("/never-seen")).await;
    let waited = t.elapsed();
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), "1");
    assert_eq!(
        busy.cache().fwd(),
        Some("uri-miss"),
        "{}",
        busy.cache_status()
    );
    assert_eq!(busy.cache().detail(), Some("queue-full"));
    let j: serde_json::Value = serde_json::from_slice(&busy.body).unwrap();
    assert_eq!(j["status"], 503);
    assert!(
        waited < Duration::from_millis(2000),
        "two timeouts of 300 ms: {waited:?}"
    );
    assert_eq!(origin.hits("/never-seen"), 0);
    assert_eq!(hog.await.unwrap().status, 200, "the running fill finished");
    let m = get(&c, &slate.admin_url("/metrics")).await.text();
    assert!(m.contains("slate_fill_queue_timeouts_total 2"), "{m}");
    assert!(m.contains("slate_fill_queue_refused_total 1"), "{m}");
    slate.stop().await;
}

/// A queued fill whose client hung up never reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_fill_whose_client_left_is_dropped() {
    let origin = Origin::start(|p, n| answer(p, n, Duration::from_millis(1500))).await;
    let slate = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Memory)
        .upstream_keys("max_fills = 1")
        .config(RULE)
        .start()
        .await;
    let c = client();
    let hog = hog(&c, &slate, &origin).await;
    // A client that gives up while its report waits for a turn.
    let impatient = tokio::spawn({
        let (c, url) = (c.clone(), slate.url("/abandoned"));
        async move { get(&c, &url).await }
    });
    eventually("the report is queued", Duration::from_secs(2), || async {
        (slate.instance.shared.queue.lengths().0 == 1).then_some(())
    })
    .await;
    impatient.abort();
    eventually(
        "the queued fill is dropped",
        Duration::from_secs(2),
        || async {
            let m = get(&c, &slate.admin_url("/metrics")).await.text();
            m.contains("slate_fill_queue_dropped_total 1").then_some(())
        },
    )
    .await;
    assert_eq!(hog.await.unwrap().status, 200);
    // The slot is free again, and the dropped report was never asked for.
    assert_eq!(get(&c, &slate.url("/next")).await.status, 200);
    assert_eq!(origin.hits("/abandoned"), 0);
    slate.stop().await;
}

/// Client fills go before background refreshes, even ones queued earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fills_go_before_refreshes() {
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let o2 = order.clone();
    let origin = Origin::start(move |p, n| {
        o2.lock().unwrap().push(p.uri.path().to_string());
        answer(p, n, Duration::from_millis(800))
    })
    .await;
    let clock = slate::clock::Clock::system();
    let slate = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Memory)
        .clock(clock.clone())
        .upstream_keys("max_fills = 1")
        .config("[[rules]]\npath = \"/\"\nttl = \"10s\"\nstale_while_revalidate = \"1h\"\n")
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/report")).await;
    clock.advance(Duration::from_secs(60));
    let hog = hog(&c, &slate, &origin).await;
    // A stale hit queues its refresh; then a client's miss queues behind it.
    let stale = get(&c, &slate.url("/report")).await;
    assert_eq!(stale.cache().detail(), Some("stale-while-revalidate"));
    eventually("the refresh is queued", Duration::from_secs(2), || async {
        (slate.instance.shared.queue.lengths().0 == 1).then_some(())
    })
    .await;
    let miss = tokio::spawn({
        let (c, url) = (c.clone(), slate.url("/client"));
        async move { get(&c, &url).await }
    });
    assert_eq!(hog.await.unwrap().status, 200);
    assert_eq!(miss.await.unwrap().status, 200);
    eventually("the refresh ran", Duration::from_secs(5), || async {
        (origin.hits("/report") == 2).then_some(())
    })
    .await;
    let seen = order.lock().unwrap().clone();
    assert_eq!(seen, ["/report", "/hog", "/client", "/report"], "{seen:?}");
    slate.stop().await;
}

/// An instance killed (SIGKILL) while it holds slots: they come back within a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_slots_lapse() {
    let redis = RedisServer::start();
    let origin = Origin::start(|p, _| {
        let r = Reply::ok(format!("report {}", p.uri.path()));
        match p.uri.path() {
            "/after" => r,
            _ => r.delay(Duration::from_secs(30)),
        }
    })
    .await;
    let store = StoreUnderTest::Redis(redis.url());
    let upstream = format!(
        "[upstream]\nurl = \"{}\"\ntimeout = \"60s\"\nmax_fills = 2\n",
        origin.url()
    );
    let store_table = store.table("fill_lease = \"1s\"");
    let (mut owner, port) = SlateProcess::start(&format!("{upstream}{store_table}{RULE}")).await;
    let c = client();
    let held: Vec<_> = ["/slow/1", "/slow/2"]
        .iter()
        .map(|p| {
            let (c, url) = (c.clone(), format!("http://127.0.0.1:{port}{p}"));
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    eventually(
        "the owner holds both slots",
        Duration::from_secs(5),
        || async { (origin.total() == 2).then_some(()) },
    )
    .await;
    let key = "slate:v1:{queue}:all";
    assert_eq!(redis.cli(&["ZCARD", key]).trim(), "2");
    owner.kill();
    for h in held {
        h.abort();
    }
    let other = Slate::builder(&origin.url())
        .store(&store)
        .store_keys("fill_lease = \"1s\"")
        .upstream_keys("max_fills = 2")
        .config(RULE)
        .start()
        .await;
    let t = Instant::now();
    let g = get(&c, &other.url("/after")).await;
    assert_eq!(g.status, 200, "{}", g.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the dead instance's slots lapsed within a lease or so: {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "it did wait for them"
    );
    other.stop().await;
}

const AHEAD: &str =
    "[[rules]]\npath = \"/\"\nttl = \"10s\"\nrefresh_ahead = \"5s\"\nstale_while_revalidate = \"0s\"\n";

/// An origin whose `Date` is slate's (advanced) clock, so a response is not as old as
/// the clock was moved forward.
async fn dated_origin(clock: &slate::clock::Clock, delay: Duration) -> Origin {
    let clock = clock.clone();
    Origin::start(move |_, n| {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(clock.now_ms());
        Reply::ok(format!("report #{n}"))
            .header("date", &httpdate::fmt_http_date(now))
            .delay(delay)
    })
    .await
}

/// One instance on `store` with `rules`, its clock, and a dated origin taking `delay`.
async fn dated_slate(
    store: &StoreUnderTest,
    delay: Duration,
    rules: &str,
) -> (slate::clock::Clock, Origin, Slate) {
    let clock = slate::clock::Clock::system();
    let origin = dated_origin(&clock, delay).await;
    let slate = Slate::builder(&origin.url())
        .store(store)
        .clock(clock.clone())
        .config(rules)
        .start()
        .await;
    (clock, origin, slate)
}

/// Refresh-ahead: an entry hit during its life is refreshed before it expires, and the
/// next client after its expiry gets a hit, not a miss.
async fn refresh_ahead_keeps_a_popular_report_warm(store: StoreUnderTest) {
    let (clock, origin, slate) = dated_slate(&store, Duration::ZERO, AHEAD).await;
    let c = client();
    let url = slate.url("/popular");
    assert_eq!(get(&c, &url).await.text(), "report #1");
    assert!(
        get(&c, &url).await.cache().is_hit(),
        "asked again during its life"
    );
    // 6 s later it has 4 s to live: within refresh_ahead, so it is refreshed.
    clock.advance(Duration::from_secs(6));
    eventually(
        "the report is refreshed ahead and stored",
        Duration::from_secs(5),
        || async { (get(&c, &url).await.text() == "report #2").then_some(()) },
    )
    .await;
    // Past the old entry's expiry: a hit on the new one.
    clock.advance(Duration::from_secs(6));
    let g = get(&c, &url).await;
    assert!(g.cache().is_hit(), "{}", g.cache_status());
    assert_eq!(g.text(), "report #2");
    // Asked for once and never again: not refreshed (it may expire).
    assert_eq!(get(&c, &slate.url("/once")).await.text(), "report #1");
    clock.advance(Duration::from_secs(11));
    let m = get(&c, &slate.admin_url("/metrics")).await.text();
    // The loop's refresh, and perhaps one more: the new entry is within its window too.
    assert!(!m.contains("slate_refreshed_ahead_total 0\n"), "{m}");
    assert!(m.contains("slate_misses_after_hits_total 0\n"), "{m}");
    assert_eq!(origin.hits("/once"), 1);
    slate.stop().await;
}

/// Refresh-ahead with room to look twice: 20 s of life, refreshed in its last 5 s.
const AHEAD_20: &str =
    "[[rules]]\npath = \"/\"\nttl = \"20s\"\nrefresh_ahead = \"5s\"\nstale_while_revalidate = \"0s\"\n";

/// How long the 9:00 origin computes a report: long enough for the other viewers to join.
const COMPUTE: Duration = Duration::from_millis(1500);

/// 9:00 for one report: `first` opens it and starts its fill; once the origin computes it,
/// `others` open it too, and wait for that fill. The answers: the filler's, then theirs.
async fn nine_o_clock(
    c: &HttpClient,
    origin: &Origin,
    path: &str,
    first: String,
    others: Vec<String>,
) -> (Got, Vec<Got>) {
    let filler = tokio::spawn({
        let c = c.clone();
        async move { get(&c, &first).await }
    });
    eventually("the fill reaches the origin", COMPUTE, || async {
        (origin.hits(path) == 1).then_some(())
    })
    .await;
    let waiters = get_all(c, others).await;
    let filler = filler.await.expect("the filler's GET");
    assert!(
        !filler.cache().is_hit() && !filler.cache().has("collapsed"),
        "{}",
        filler.cache_status()
    );
    for (i, w) in waiters.iter().enumerate() {
        assert_eq!(w.status, 200, "viewer {i}: {}", w.text());
        assert!(
            w.cache().has("collapsed"),
            "viewer {i} waited for the fill: {}",
            w.cache_status()
        );
    }
    assert_eq!(origin.hits(path), 1, "one fill");
    (filler, waiters)
}

/// Moves 16 s on, into the last 5 s of `/report`'s life (`AHEAD_20`), and waits until it
/// is refreshed ahead once and the refresh is stored.
async fn refreshed_in_its_window(clock: &slate::clock::Clock, origin: &Origin, slates: &[Slate]) {
    clock.advance(Duration::from_secs(16));
    eventually(
        "the report is refreshed ahead",
        Duration::from_secs(10),
        || async { (origin.hits("/report") == 2).then_some(()) },
    )
    .await;
    eventually("the refresh is stored", Duration::from_secs(5), || async {
        let idle = slates
            .iter()
            .all(|s| s.instance.shared.flights.in_flight() == 0);
        idle.then_some(())
    })
    .await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Viewers who opened a report while its one fill ran, and got that fill's answer, asked
/// for it as much as a hit would have: refresh-ahead refreshes it, and the first viewer
/// after its expiry gets a hit.
async fn viewers_who_waited_for_the_fill_make_it_popular(store: StoreUnderTest) {
    let (clock, origin, slate) = dated_slate(&store, COMPUTE, AHEAD_20).await;
    let c = client();
    let url = slate.url("/report");
    let (filler, _) = nine_o_clock(&c, &origin, "/report", url.clone(), vec![url.clone(); 4]).await;
    assert_eq!(filler.text(), "report #1");
    assert_eq!(slate.instance.shared.ahead.len(), 1, "noted for a refresh");
    refreshed_in_its_window(&clock, &origin, std::slice::from_ref(&slate)).await;
    // Past the first entry's expiry: the next viewer is not the one who waits.
    clock.advance(Duration::from_secs(5));
    let g = get(&c, &url).await;
    assert!(g.cache().is_hit(), "{}", g.cache_status());
    assert_eq!(g.text(), "report #2");
    let m = get(&c, &slate.admin_url("/metrics")).await.text();
    assert_eq!(metric(&m, "slate_misses_after_hits_total"), 0, "{m}");
    assert_eq!(metric(&m, "slate_refreshed_ahead_total"), 1, "{m}");
    assert_eq!(origin.hits("/report"), 2);
    slate.stop().await;
}

/// A report opened once is filled once, and that one ask is its filler's: it is not also
/// an ask after it was stored, so refresh-ahead leaves it to expire.
async fn one_refresh_is_counted_once(store: StoreUnderTest) {
    let (clock, origin, slate) = dated_slate(&store, Duration::ZERO, AHEAD_20).await;
    let c = client();
    let url = slate.url("/once");
    let g = get(&c, &url).await;
    assert_eq!(g.text(), "report #1");
    assert!(g.cache().has("stored"), "{}", g.cache_status());
    assert_eq!(slate.instance.shared.ahead.len(), 0, "not popular");
    // Within what would be its refresh window, and then past its expiry: nothing was
    // noted, so nothing refreshed it; the next viewer recomputes it, and that miss is not
    // one on a report asked for during its life.
    clock.advance(Duration::from_secs(16));
    assert_eq!(slate.instance.shared.ahead.len(), 0);
    clock.advance(Duration::from_secs(5));
    let g = get(&c, &url).await;
    assert_eq!(g.text(), "report #2", "{}", g.cache_status());
    assert!(!g.cache().is_hit());
    let m = get(&c, &slate.admin_url("/metrics")).await.text();
    assert_eq!(metric(&m, "slate_refreshed_ahead_total"), 0, "{m}");
    assert_eq!(metric(&m, "slate_misses_after_hits_total"), 0, "{m}");
    assert_eq!(origin.hits("/once"), 2);
    slate.stop().await;
}

on_both_stores!(
    refresh_ahead_keeps_a_popular_report_warm,
    viewers_who_waited_for_the_fill_make_it_popular,
    one_refresh_is_counted_once,
);

/// `n` instances on `store`, all on `clock`, with `rules`.
async fn instances(
    n: usize,
    origin: &Origin,
    store: &StoreUnderTest,
    clock: &slate::clock::Clock,
    rules: &str,
) -> Vec<Slate> {
    let mut slates = Vec::new();
    for _ in 0..n {
        let s = Slate::builder(&origin.url())
            .store(store)
            .clock(clock.clone())
            .config(rules)
            .start()
            .await;
        slates.push(s);
    }
    slates
}

/// Three instances on one Redis: one fills, and viewers on every instance wait for it (on
/// its own instance, and on the others through the fill lock). Each instance notes the
/// report as popular; it is refreshed once between them, and after its first expiry every
/// instance answers it with a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_on_every_instance_make_it_popular() {
    let redis = RedisServer::start();
    let store = StoreUnderTest::Redis(redis.url());
    let clock = slate::clock::Clock::system();
    let origin = dated_origin(&clock, COMPUTE).await;
    let slates = instances(3, &origin, &store, &clock, AHEAD_20).await;
    let c = client();
    let others = vec![
        slates[0].url("/report"),
        slates[1].url("/report"),
        slates[1].url("/report"),
        slates[2].url("/report"),
    ];
    nine_o_clock(&c, &origin, "/report", slates[0].url("/report"), others).await;
    for (i, s) in slates.iter().enumerate() {
        assert_eq!(s.instance.shared.ahead.len(), 1, "instance {i} noted it");
    }
    let m = get(&c, &slates[1].admin_url("/metrics")).await.text();
    assert!(metric(&m, "slate_remote_fill_waits_total") >= 1, "{m}");
    refreshed_in_its_window(&clock, &origin, &slates).await;
    clock.advance(Duration::from_secs(5));
    for (i, s) in slates.iter().enumerate() {
        let g = get(&c, &s.url("/report")).await;
        assert!(g.cache().is_hit(), "instance {i}: {}", g.cache_status());
        assert_eq!(g.text(), "report #2", "instance {i}");
        let m = get(&c, &s.admin_url("/metrics")).await.text();
        assert_eq!(metric(&m, "slate_misses_after_hits_total"), 0, "{m}");
    }
    assert_eq!(origin.hits("/report"), 2, "one refresh between the three");
    for s in slates {
        s.stop().await;
    }
}

/// Three instances that all hit an entry refresh it once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_ahead_across_instances() {
    let redis = RedisServer::start();
    let origin =
        Origin::start(|_, n| Reply::ok(format!("report #{n}")).delay(Duration::from_millis(300)))
            .await;
    let store = StoreUnderTest::Redis(redis.url());
    let clock = slate::clock::Clock::system();
    let slates = instances(3, &origin, &store, &clock, AHEAD).await;
    let c = client();
    get(&c, &slates[0].url("/shared")).await;
    for s in &slates {
        assert!(get(&c, &s.url("/shared")).await.cache().is_hit());
    }
    clock.advance(Duration::from_secs(6));
    eventually(
        "every instance looked at it",
        Duration::from_secs(5),
        || async {
            let mut seen = 0;
            for s in &slates {
                let m = get(&c, &s.admin_url("/metrics")).await.text();
                if !m.contains("slate_refreshed_ahead_total 0\n") {
                    seen += 1;
                }
            }
            (seen >= 1 && origin.hits("/shared") == 2).then_some(())
        },
    )
    .await;
    // Every instance's loop has had its turn (they tick every second).
    let t = Instant::now();
    eventually("two more ticks", Duration::from_secs(5), || async {
        (t.elapsed() >= Duration::from_millis(2100)).then_some(())
    })
    .await;
    assert_eq!(origin.hits("/shared"), 2, "one refresh between the three");
    // And the three count it once: refreshes that reached the upstream, not attempts.
    let mut counted = 0;
    for s in &slates {
        let m = get(&c, &s.admin_url("/metrics")).await.text();
        counted += metric(&m, "slate_refreshed_ahead_total");
    }
    assert_eq!(counted, 1, "refreshes counted over the three instances");
    for s in slates {
        s.stop().await;
    }
}

/// The same on a Redis Cluster: two instances, two slots, twelve reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_shares_its_slots_too() {
    let cluster = RedisCluster::start();
    let store = cluster.store();
    let origin = Origin::start(|p, _| {
        Reply::ok(format!("report {}", p.uri)).delay(Duration::from_millis(300))
    })
    .await;
    let mut slates = Vec::new();
    for _ in 0..2 {
        let s = Slate::builder(&origin.url())
            .store(&store)
            .upstream_keys("max_fills = 2")
            .config(RULE)
            .start()
            .await;
        slates.push(s);
    }
    let c = client();
    let urls: Vec<String> = (0..24)
        .map(|i| slates[i % 2].url(&format!("/report/{}", i / 2)))
        .collect();
    for (i, g) in get_all(&c, urls).await.iter().enumerate() {
        assert_eq!(g.status, 200, "viewer {i}: {}", g.text());
        assert_eq!(g.text(), format!("report /report/{}", i / 2));
    }
    assert_eq!(origin.total(), 12);
    assert!(
        origin.peak_concurrency() <= 2,
        "{}",
        origin.peak_concurrency()
    );
    for s in slates {
        s.stop().await;
    }
}
