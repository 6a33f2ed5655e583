//! Micro-benchmarks of the hit path's own work: key normalization and hashing, entry
//! encode/decode, canonical request bodies and rounded times. `cargo bench --bench micro`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, StatusCode};
use slate::canon::{self, FieldPath};
use slate::config::Glob;
use slate::entry::Entry;
use slate::key;
use std::hint::black_box;
use std::time::Duration;

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

criterion_group!(benches, keys, entries, bodies);
criterion_main!(benches);
