//! Micro-benchmarks of the hit path's own work: key normalization and hashing, entry
//! encode/decode, canonical request bodies and rounded times, and the in-process stores'
//! lookups (moka before issue 15, `CostCache` now), counting a request for `/top`,
//! encoding negotiation, and the fill queue's way through when it is not full.
//! `cargo bench --bench micro` (`cargo bench --bench micro -- store` for the stores alone,
//! `-- top` for `/top`'s, `-- negotiate`, `-- queue`).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, StatusCode};
use slate::canon::{self, FieldPath};
use slate::coding::{Accepts, Coding};
use slate::config::Glob;
use slate::entry::Entry;
use slate::evict::{CostCache, MissCost};
use slate::key;
use slate::queue::{Ask, Class, FillQueue};
use slate::top::{Event, Report, Top};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn keys(c: &mut Criterion) {
    let ignore: Vec<Glob> = ["utm_*", "_"]
        .iter()
        .map(|g| Glob::new(g).unwrap())
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let accept = [http::HeaderName::from_static("accept")];
    c.bench_function("normalize+key, 4 params", |b| {
        b.iter(|| {
            let u = key::normalize(
                black_box("/analytics/sales"),
                Some(black_box(
                    "year=2026&region=eu&utm_source=mail&currency=EUR",
                )),
                &ignore,
            )
            .unwrap();
            key::cache_key("v1", u, &accept, &headers, None)
        })
    });
    c.bench_function("normalize+key, no query", |b| {
        b.iter(|| {
            let u = key::normalize(black_box("/report"), None, &ignore).unwrap();
            key::cache_key("v1", u, &[], &headers, None)
        })
    });
}

/// A 20 KB report as the stores hold it.
fn report_entry() -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("cache-control", HeaderValue::from_static("max-age=3600"));
    headers.insert("etag", HeaderValue::from_static("\"abc123\""));
    Entry {
        status: StatusCode::OK,
        flags: 0,
        stored_at_ms: 1_700_000_000_000,
        initial_age_ms: 0,
        fresh_ms: 3_600_000,
        swr_ms: 600_000,
        sie_ms: 0,
        purge_seq: 7,
        fetch_ms: 15_000,
        url: "/analytics/sales?region=eu".into(),
        tags: vec!["sales".into()],
        vary: vec![],
        headers,
        body: Bytes::from(vec![b'x'; 20 * 1024]),
        coding: slate::coding::Coding::Identity,
        origin_coding: slate::coding::Coding::Identity,
        identity_len: 20 * 1024,
    }
}

fn entries(c: &mut Criterion) {
    let e = report_entry();
    let encoded = e.encode();
    c.bench_function("entry encode, 20 KB", |b| b.iter(|| black_box(&e).encode()));
    c.bench_function("entry decode, 20 KB", |b| {
        b.iter(|| Entry::decode(black_box(encoded.clone())).unwrap())
    });
}

/// A report query as a dashboard sends it: members in no particular order, pretty-printed,
/// a request id to ignore and a time window to round; `rows` filter clauses set its size.
fn report_body(rows: usize) -> String {
    let filters: Vec<String> = (0..rows)
        .map(|i| {
            format!(
                r#"    {{ "field": "region_{i}", "op": "in", "values": ["eu-west-{i}", "eu-central-{i}", "us-east-{i}"], "negate": false, "weight": {i}.5 }}"#
            )
        })
        .collect();
    format!(
        r#"{{
  "requestId": "0f8fad5b-d9cb-469f-a165-70867728950e",
  "report": "sales_by_region",
  "range": {{ "to": "2026-12-02T10:07:31.123+02:00", "from": 1764669451123 }},
  "metrics": ["revenue", "orders", "avg_basket", "returns"],
  "dimensions": ["region", "channel", "week"],
  "filters": [
{}
  ],
  "currency": "EUR",
  "options": {{ "totals": true, "limit": 500, "sort": {{ "by": "revenue", "desc": true }} }}
}}"#,
        filters.join(",\n")
    )
}

const GRAPHQL: &str = r##"{
  "operationName": "SalesReport",
  "query": "# Sales dashboard, top panel\nquery SalesReport($from: DateTime!, $to: DateTime!, $regions: [String!], $first: Int = 50) {\n  report(from: $from, to: $to, filter: { regions: $regions, channel: ONLINE }) {\n    totals { revenue orders avgBasket }\n    rows(first: $first, orderBy: { field: REVENUE, direction: DESC }) {\n      edges { node { region week revenue orders returns ...Trend } }\n      pageInfo { hasNextPage endCursor }\n    }\n  }\n}\n\nfragment Trend on ReportRow {\n  trend(window: 4) { week delta @include(if: true) }\n  note(format: \"\"\"plain, no \\\"\"\" markup\"\"\")\n}\n",
  "variables": { "to": "2026-12-02T10:07:31Z", "from": "2026-11-25T10:07:31Z", "regions": ["eu-west", "eu-central"], "traceId": "abc123", "first": 50 }
}"##;

fn bodies(c: &mut Criterion) {
    let ignore = vec![FieldPath::parse("requestId").unwrap()];
    let hour = Duration::from_secs(3600);
    let round = vec![
        (FieldPath::parse("range.from").unwrap(), hour),
        (FieldPath::parse("range.to").unwrap(), hour),
    ];
    for rows in [12, 220] {
        let body = report_body(rows);
        let name = format!("canonical_json, {:.1} KB", body.len() as f64 / 1000.0);
        c.bench_function(&name, |b| {
            b.iter(|| canon::canonical_json(black_box(body.as_bytes()), &ignore, &round).unwrap())
        });
    }
    let g_ignore = vec![FieldPath::parse("traceId").unwrap()];
    let g_round = vec![
        (FieldPath::parse("from").unwrap(), hour),
        (FieldPath::parse("to").unwrap(), hour),
    ];
    let name = format!("canonical_graphql, {:.1} KB", GRAPHQL.len() as f64 / 1000.0);
    c.bench_function(&name, |b| {
        b.iter(|| {
            canon::canonical_graphql(black_box(GRAPHQL.as_bytes()), &g_ignore, &g_round).unwrap()
        })
    });
    for (form, value) in [
        ("epoch s", "1764669451"),
        ("epoch ms", "1764669451123"),
        ("RFC 3339 Z", "2026-12-02T10:07:31Z"),
        ("RFC 3339 .ms+02:00", "2026-12-02T10:07:31.123+02:00"),
    ] {
        c.bench_function(&format!("round_time, {form}"), |b| {
            b.iter(|| canon::round_time(black_box(value), hour).unwrap())
        });
    }
}

/// The in-process stores' hit path, before (moka, as `MemoryStore` built it up to issue 15)
/// and after (`slate::evict::CostCache`): 4,000 reports of 20 KB held, looked up in a
/// scattered order, 1,000 lookups an iteration, on one thread and on two at once.
fn stores(c: &mut Criterion) {
    const HELD: usize = 4000;
    const BATCH: usize = 1000;
    let entry = Arc::new(report_entry());
    let keys: Vec<String> = (0..HELD)
        .map(|i| {
            format!(
                "slate:v1:{:032x}",
                (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect();
    // Every key once per 4,000 lookups, in an order that is not the insertion order.
    let order: Vec<usize> = (0..HELD).map(|i| i * 1543 % HELD).collect();
    let hour = Duration::from_secs(3600);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let moka: moka::future::Cache<String, Arc<Entry>> = moka::future::Cache::builder()
        .max_capacity(256 << 20)
        .weigher(|k: &String, e: &Arc<Entry>| (k.len() as u64 + e.weight()) as u32)
        .expire_after(KeepFor(hour))
        .build();
    let cost = Arc::new(CostCache::new(256 << 20));
    rt.block_on(async {
        for k in &keys {
            moka.insert(k.clone(), entry.clone()).await;
            cost.insert_entry(k, entry.clone(), hour, MissCost::Fill);
        }
        moka.run_pending_tasks().await;
    });
    assert_eq!(cost.len(), HELD);

    let mut g = c.benchmark_group("store hit, 20 KB, 4,000 held");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut at = 0;
    g.bench_function("moka future::Cache::get (before)", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    at = (at + 1) % HELD;
                    black_box(moka.get(&keys[order[at]]).await);
                }
            })
        })
    });
    g.bench_function("CostCache::get (now)", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    at = (at + 1) % HELD;
                    black_box(cost.get(&keys[order[at]]));
                }
            })
        })
    });
    // Two threads at once on one cache: time per lookup per thread. Each thread looks up
    // `lookups` keys from its own place in the order.
    let keys = Arc::new(keys);
    let (m, k) = (moka.clone(), keys.clone());
    let moka_two: Work = Arc::new(move |t, lookups| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..lookups {
                black_box(m.get(&k[(i * 1543 + t * 7) % HELD]).await);
            }
        })
    });
    g.bench_function("moka future::Cache::get, 2 threads (before)", |b| {
        b.iter_custom(|iters| two_threads(&moka_two, iters as usize * BATCH))
    });
    let (cc, k) = (cost.clone(), keys.clone());
    let cost_two: Work = Arc::new(move |t, lookups| {
        for i in 0..lookups {
            black_box(cc.get(&k[(i * 1543 + t * 7) % HELD]));
        }
    });
    g.bench_function("CostCache::get, 2 threads (now)", |b| {
        b.iter_custom(|iters| two_threads(&cost_two, iters as usize * BATCH))
    });
    g.finish();

    // A miss as the proxy makes one, into a full cache: lookup, insert, evict.
    let mut g = c.benchmark_group("store miss + insert into a full cache, 20 KB");
    g.throughput(Throughput::Elements(BATCH as u64));
    let full = 4000 * (entry.weight() + 41);
    let moka: moka::future::Cache<String, Arc<Entry>> = moka::future::Cache::builder()
        .max_capacity(full)
        .weigher(|k: &String, e: &Arc<Entry>| (k.len() as u64 + e.weight()) as u32)
        .expire_after(KeepFor(hour))
        .build();
    let cost = CostCache::new(full);
    let mut n = 0u64;
    g.bench_function("moka future::Cache (before)", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    n += 1;
                    let k = format!("slate:v1:{n:032x}");
                    if moka.get(&k).await.is_none() {
                        moka.insert(k, entry.clone()).await;
                    }
                }
            })
        })
    });
    g.bench_function("CostCache (now)", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                n += 1;
                let k = format!("slate:v1:{n:032x}");
                if cost.get(&k).is_none() {
                    cost.insert_entry(&k, entry.clone(), hour, MissCost::Fill);
                }
            }
        })
    });
    g.finish();
}

/// What a request pays to be counted for `/top` (`Top::record`): a hit on a report the
/// summaries track (the hit path), and a fill of a URL never seen, into full summaries
/// (eviction); on one thread and on two at once.
fn top(c: &mut Criterion) {
    const REPORTS: usize = 200;
    const BATCH: usize = 1000;
    let urls: Arc<Vec<String>> = Arc::new(
        (0..REPORTS)
            .map(|i| format!("/analytics/sales?region=r{i}&year=2026"))
            .collect(),
    );
    let now = 1_700_000_000_000;
    let top = Arc::new(Top::default());
    for u in urls.iter() {
        top.record(now, &report(u), Event::Miss);
    }
    let mut g = c.benchmark_group("top record");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut at = 0;
    g.bench_function("hit, tracked report", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                at = (at + 1) % REPORTS;
                top.record(now, &report(&urls[at]), Event::Hit { saved_ms: 1200 });
            }
        })
    });
    let (t, u) = (top.clone(), urls.clone());
    let two: Work = Arc::new(move |th, n| {
        for i in 0..n {
            let url = &u[(i * 7 + th * 13) % REPORTS];
            t.record(now, &report(url), Event::Hit { saved_ms: 1200 });
        }
    });
    g.bench_function("hit, tracked report, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(&two, iters as usize * BATCH))
    });
    let full = Top::default();
    let mut n = 0u64;
    g.bench_function("fill, new URL, full summaries", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                n += 1;
                let u = format!("/analytics/sales?id={n}");
                full.record(
                    now,
                    &report(&u),
                    Event::Fill {
                        micros: 1500 + n % 1000,
                    },
                );
            }
        })
    });
    g.finish();
    black_box(top.ranking(now, slate::top::By::Hits, 10));
}

/// A report of the `/analytics/` rule, as the request path names it.
fn report(url: &str) -> Report<'_> {
    Report {
        url,
        body: None,
        rule: Some("/analytics/"),
    }
}

/// One thread's lookups: `(thread, how many)`.
type Work = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// How long two threads take to do `lookups` each, at once.
fn two_threads(work: &Work, lookups: usize) -> Duration {
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let work = work.clone();
            std::thread::spawn(move || work(t, lookups))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

/// The per-entry expiry `MemoryStore` gave moka.
struct KeepFor(Duration);

impl moka::Expiry<String, Arc<Entry>> for KeepFor {
    fn expire_after_create(&self, _: &String, _: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(self.0)
    }
}

/// What a client accepts, from the `Accept-Encoding` browsers send, and none.
fn negotiate(c: &mut Criterion) {
    let mut g = c.benchmark_group("negotiate");
    for (name, value) in [
        ("browser", Some("gzip, deflate, br, zstd")),
        ("with qvalues", Some("br;q=1.0, gzip;q=0.8, *;q=0.1")),
        ("none", None),
    ] {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(http::header::ACCEPT_ENCODING, HeaderValue::from_static(v));
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let a = Accepts::of(black_box(&h));
                black_box(a.accepts(Coding::Zstd) || a.accepts(Coding::Gzip))
            })
        });
    }
    g.finish();
}

/// A fill's turn in the queue when a slot is free (the common case): take it, give it
/// back. On the memory store (no peers); a shared store adds its own round trip.
fn queue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let q = rt.block_on(async { FillQueue::new(None, "bench") });
    let ask = || Ask {
        class: Class::Client,
        client: Some(std::net::IpAddr::from([10, 0, 0, 7])),
        rule: Some(("/analytics/".to_string(), 4)),
        limit: 16,
        timeout: Duration::from_secs(30),
        lease: Duration::from_secs(30),
    };
    c.bench_function("queue acquire+release, not full", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let slot = q.acquire(ask(), || false).await;
                    drop(black_box(slot));
                }
                start.elapsed()
            })
        })
    });
}

criterion_group!(benches, keys, entries, bodies, stores, top, negotiate, queue);
criterion_main!(benches);
