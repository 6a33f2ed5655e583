//! Micro-benchmarks of the hit path's own work: key normalization and hashing, entry
//! encode/decode. `cargo bench --bench micro`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, StatusCode};
use slate::config::Glob;
use slate::entry::Entry;
use slate::key;
use std::hint::black_box;

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

fn entries(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("cache-control", HeaderValue::from_static("max-age=3600"));
    headers.insert("etag", HeaderValue::from_static("\"abc123\""));
    let e = Entry {
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
    };
    let encoded = e.encode();
    c.bench_function("entry encode, 20 KB", |b| b.iter(|| black_box(&e).encode()));
    c.bench_function("entry decode, 20 KB", |b| {
        b.iter(|| Entry::decode(black_box(encoded.clone())).unwrap())
    });
}

criterion_group!(benches, keys, entries);
criterion_main!(benches);
