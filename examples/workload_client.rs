//! The load driver of bench/realistic.sh (issue 18): the workload of
//! `examples/common/workload.rs` against one system (one or more `--target`s), over HTTP/1.1
//! keep-alive connections of hyper-util's client, printing one JSON object.
//!
//! ```sh
//! cargo build --release --example workload_client --example report_origin
//! target/release/examples/report_origin --listen 127.0.0.1:9300 --delay-ms 0 --reports 10000 --seed 1 &
//! # ... a cache in front of it on :8080, then:
//! target/release/examples/workload_client --phase warm --target http://127.0.0.1:8080
//! target/release/examples/workload_client --phase measure --target http://127.0.0.1:8080 --duration 60
//! ```
//!
//! - `--phase warm`: every warm report (`/report?id=1..=N`) fetched once, `--connections` at a
//!   time, with `Accept-Encoding: gzip, deflate, br, zstd`. Not measured beyond its errors.
//! - `--phase measure`: `--connections` closed-loop workers for `--duration` seconds. Each
//!   request is, seeded per worker: with probability `--cold-share` (0.02) a cold report never
//!   asked before (the next id above N + `--cold-start`), else a warm report drawn by Zipf
//!   (s = `--zipf`, 1.0) over ranks 1..=N; with probability `--gzip-share` (0.95) it sends
//!   `Accept-Encoding: gzip, deflate, br, zstd`, else none. A cold request runs on a task of
//!   its own and the worker goes on at once: in a closed loop, 2% of requests that take 1-5 s
//!   would hold the connections and cap any system near `connections / (0.02 × 3 s)`
//!   (about 1,000 req/s at 64), measuring the origin instead of the cache. Users whose report
//!   is slow do not stop the others either.
//! - Hit or miss: from the system's own header where it gives one (slate `Cache-Status` with a
//!   `hit` item, nginx `X-Cache-Status: HIT`, `X-Cache: HIT` as the bench's Varnish VCL sets
//!   it), else latency above `--miss-ms` (500) is a miss.
//! - Bytes on the wire per answer: status line, headers and body as received (compressed when
//!   the answer is), chunk framing left out. `identity_bytes`: the reports' own sizes.
//! - Errors: transport errors, timeouts (`--timeout-s`, 30), status other than 200, an
//!   identity answer whose length is not the report's.
//!
//! Targets are spread over the workers round-robin (worker i asks target i mod n); cold
//! requests round-robin too.

#[allow(dead_code)] // the servers' helpers are not used here
#[path = "common/mod.rs"]
mod common;
#[allow(dead_code)] // the origin's half of the workload is not used here
#[path = "common/workload.rs"]
mod workload;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderMap, ACCEPT_ENCODING};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workload::{Rng, Zipf};

const USAGE: &str = "usage: workload_client --phase warm|measure --target URL [--target URL...]
  [--reports N] [--seed S] [--connections C] [--duration SECS] [--cold-share F]
  [--gzip-share F] [--cold-start K] [--zipf S] [--miss-ms MS] [--timeout-s S]";
const ACCEPT_ALL: &str = "gzip, deflate, br, zstd";

#[derive(Clone)]
struct Args {
    measure: bool,
    targets: Vec<String>,
    reports: u64,
    seed: u64,
    connections: usize,
    duration: Duration,
    cold_share: f64,
    gzip_share: f64,
    cold_start: u64,
    zipf: f64,
    miss: Duration,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        measure: false,
        targets: Vec::new(),
        reports: 10_000,
        seed: 1,
        connections: 64,
        duration: Duration::from_secs(60),
        cold_share: 0.02,
        gzip_share: 0.95,
        cold_start: 0,
        zipf: 1.0,
        miss: Duration::from_millis(500),
        timeout: Duration::from_secs(30),
    };
    let mut phase = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag}: missing value\n{USAGE}"))?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--phase" => phase = Some(v),
            "--target" => a
                .targets
                .extend(v.split(',').map(|t| t.trim_end_matches('/').to_string())),
            "--reports" => a.reports = num(&v)? as u64,
            "--seed" => a.seed = v.parse().map_err(|e| format!("--seed: {e}"))?,
            "--connections" => a.connections = num(&v)? as usize,
            "--duration" => a.duration = Duration::from_secs_f64(num(&v)?),
            "--cold-share" => a.cold_share = num(&v)?,
            "--gzip-share" => a.gzip_share = num(&v)?,
            "--cold-start" => a.cold_start = num(&v)? as u64,
            "--zipf" => a.zipf = num(&v)?,
            "--miss-ms" => a.miss = Duration::from_secs_f64(num(&v)? / 1000.0),
            "--timeout-s" => a.timeout = Duration::from_secs_f64(num(&v)?),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    a.measure = match phase.as_deref() {
        Some("warm") => false,
        Some("measure") => true,
        _ => return Err(format!("--phase warm or --phase measure\n{USAGE}")),
    };
    if a.targets.is_empty() || a.reports == 0 || a.connections == 0 {
        return Err(format!(
            "need a --target, and --reports and --connections above 0\n{USAGE}"
        ));
    }
    Ok(a)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One answer, read to its end.
struct Answer {
    /// What the system's own header said (`Some(true)`: a hit), if it has one.
    marker: Option<bool>,
    wire: u64,
    encoded: bool,
}

fn hit_marker(h: &HeaderMap) -> Option<bool> {
    if let Some(v) = h.get("cache-status").and_then(|v| v.to_str().ok()) {
        return Some(v.split(';').any(|item| item.trim() == "hit"));
    }
    if let Some(v) = h.get("x-cache-status").and_then(|v| v.to_str().ok()) {
        return Some(v.eq_ignore_ascii_case("HIT"));
    }
    if let Some(v) = h.get("x-cache").and_then(|v| v.to_str().ok()) {
        return Some(v.eq_ignore_ascii_case("HIT"));
    }
    None
}

async fn fetch(
    client: &HttpClient,
    target: &str,
    id: u64,
    gzip: bool,
    size: usize,
) -> Result<Answer, String> {
    let mut req = Request::get(format!("{target}/report?id={id}"));
    if gzip {
        req = req.header(ACCEPT_ENCODING, ACCEPT_ALL);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let mut wire = 17u64 + 2; // "HTTP/1.1 200 OK\r\n" and the blank line
    for (name, value) in resp.headers() {
        wire += (name.as_str().len() + value.len() + 4) as u64;
    }
    let marker = hit_marker(resp.headers());
    let encoded = resp.headers().contains_key("content-encoding");
    let mut body = resp.into_body();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(d) = frame.data_ref() {
            len += d.len() as u64;
        }
    }
    if status != 200 {
        return Err(format!("status {status}"));
    }
    if !encoded && len != size as u64 {
        return Err(format!("identity body of {len} bytes, expected {size}"));
    }
    Ok(Answer {
        marker,
        wire: wire + len,
        encoded,
    })
}

#[derive(Default)]
struct Tally {
    hits: Vec<u32>,
    misses: Vec<u32>,
    wire: u64,
    identity: u64,
    hit_identity: u64,
    encoded: u64,
    by_header: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl Tally {
    /// Asks `target` for report `id` (within `a.timeout`) and records the outcome.
    async fn ask(&mut self, client: &HttpClient, a: &Args, target: &str, id: u64, gzip: bool) {
        let size = workload::size_of(a.seed, id);
        let t = Instant::now();
        let r = tokio::time::timeout(a.timeout, fetch(client, target, id, gzip, size))
            .await
            .unwrap_or_else(|_| Err("timeout".into()));
        self.add(a, t.elapsed(), size, r);
    }

    /// Records one request: `latency`, and its answer or error.
    fn add(&mut self, a: &Args, latency: Duration, size: usize, r: Result<Answer, String>) {
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        match r {
            Ok(ans) => {
                let hit = match ans.marker {
                    Some(h) => {
                        self.by_header += 1;
                        h
                    }
                    None => latency <= a.miss,
                };
                if hit {
                    self.hits.push(us);
                    self.hit_identity += size as u64;
                } else {
                    self.misses.push(us);
                }
                self.wire += ans.wire;
                self.identity += size as u64;
                self.encoded += ans.encoded as u64;
            }
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < 5 {
                    self.error_samples.push(e);
                }
            }
        }
    }

    fn merge(&mut self, o: Tally) {
        self.hits.extend(o.hits);
        self.misses.extend(o.misses);
        self.wire += o.wire;
        self.identity += o.identity;
        self.hit_identity += o.hit_identity;
        self.encoded += o.encoded;
        self.by_header += o.by_header;
        self.errors += o.errors;
        for e in o.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e);
            }
        }
    }
}

/// The `q` quantile of sorted latencies in µs, as ms (null when there are none).
fn quantile_ms(sorted: &[u32], q: f64) -> serde_json::Value {
    if sorted.is_empty() {
        return serde_json::Value::Null;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    serde_json::json!(sorted[i] as f64 / 1000.0)
}

fn client(a: &Args) -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(a.connections * 2 + 64)
        .build(conn)
}

async fn warm(a: Args) -> Result<(), String> {
    let client = client(&a);
    let next = Arc::new(AtomicU64::new(1));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.connections {
        let (client, next, tally, a) = (client.clone(), next.clone(), tally.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let target = &a.targets[w % a.targets.len()];
            let mut mine = Tally::default();
            loop {
                let id = next.fetch_add(1, Relaxed);
                if id > a.reports {
                    break;
                }
                mine.ask(&client, &a, target, id, true).await;
            }
            tally.lock().unwrap().merge(mine);
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let t = std::mem::take(&mut *tally.lock().unwrap());
    let out = serde_json::json!({
        "phase": "warm",
        "reports": a.reports,
        "seconds": started.elapsed().as_secs_f64(),
        "answers": t.hits.len() + t.misses.len(),
        "hits_by_marker": t.hits.len(),
        "identity_bytes": t.identity,
        "errors": t.errors,
        "error_samples": t.error_samples,
    });
    println!("{out}");
    Ok(())
}

async fn measure(a: Args) -> Result<(), String> {
    let client = client(&a);
    let zipf = Arc::new(Zipf::new(a.reports, a.zipf));
    let first_cold = a.reports + a.cold_start + 1;
    let next_cold = Arc::new(AtomicU64::new(first_cold));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let cold_tasks = tokio_util::task::TaskTracker::new();
    let started = Instant::now();
    let deadline = started + a.duration;
    let mut tasks = Vec::new();
    for w in 0..a.connections {
        let (client, zipf, next_cold, tally, cold_tasks, a) = (
            client.clone(),
            zipf.clone(),
            next_cold.clone(),
            tally.clone(),
            cold_tasks.clone(),
            a.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let target = a.targets[w % a.targets.len()].clone();
            let mut rng = Rng::new(a.seed, w as u64);
            let mut mine = Tally::default();
            while Instant::now() < deadline {
                let cold = rng.next_f64() < a.cold_share;
                let rank = zipf.rank(rng.next_f64());
                let gzip = rng.next_f64() < a.gzip_share;
                if cold {
                    let id = next_cold.fetch_add(1, Relaxed);
                    let n = (id - first_cold) as usize;
                    let target = a.targets[n % a.targets.len()].clone();
                    let (client, tally, a) = (client.clone(), tally.clone(), a.clone());
                    cold_tasks.spawn(async move {
                        let mut one = Tally::default();
                        one.ask(&client, &a, &target, id, gzip).await;
                        tally.lock().unwrap().merge(one);
                    });
                    continue;
                }
                mine.ask(&client, &a, &target, rank, gzip).await;
            }
            tally.lock().unwrap().merge(mine);
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let measured = started.elapsed().as_secs_f64();
    cold_tasks.close();
    cold_tasks.wait().await;
    let mut t = std::mem::take(&mut *tally.lock().unwrap());
    t.hits.sort_unstable();
    t.misses.sort_unstable();
    let mut all: Vec<u32> = t.hits.iter().chain(&t.misses).copied().collect();
    all.sort_unstable();
    let answers = all.len() as u64;
    let per = |x: u64| x as f64 / answers.max(1) as f64;
    let cold = next_cold.load(Relaxed) - first_cold;
    let out = serde_json::json!({
        "phase": "measure",
        "targets": a.targets.len(),
        "connections": a.connections,
        "seconds": measured,
        "answers": answers,
        "req_per_s": answers as f64 / measured,
        "hits": t.hits.len(),
        "misses": t.misses.len(),
        "hit_ratio": per(t.hits.len() as u64),
        "hit_p50_ms": quantile_ms(&t.hits, 0.50),
        "hit_p99_ms": quantile_ms(&t.hits, 0.99),
        "hit_p999_ms": quantile_ms(&t.hits, 0.999),
        "miss_p50_ms": quantile_ms(&t.misses, 0.50),
        "miss_p99_ms": quantile_ms(&t.misses, 0.99),
        "miss_p999_ms": quantile_ms(&t.misses, 0.999),
        "p50_ms": quantile_ms(&all, 0.50),
        "p99_ms": quantile_ms(&all, 0.99),
        "p999_ms": quantile_ms(&all, 0.999),
        "bytes_per_answer": per(t.wire),
        "identity_bytes_per_answer": per(t.identity),
        "identity_bytes_per_hit": t.hit_identity as f64 / (t.hits.len().max(1)) as f64,
        "encoded_share": per(t.encoded),
        "classified_by_header": per(t.by_header),
        "cold_requests": cold,
        "cold_ids": [first_cold, first_cold + cold.saturating_sub(1)],
        "errors": t.errors,
        "error_samples": t.error_samples,
    });
    println!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    common::main("workload_client", parse_args, |a: Args| async move {
        if a.measure {
            measure(a).await
        } else {
            warm(a).await
        }
    })
}
