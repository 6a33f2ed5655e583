//! The load driver of bench/morning.sh (issue 15): the 9:00 meeting. `--reports` distinct
//! reports, each opened by `--viewers` viewers at once, every request fired together; it
//! prints what each viewer waited, as one JSON object.
//!
//! ```sh
//! cargo build --release --example morning_client
//! target/release/examples/morning_client --targets http://127.0.0.1:8080,http://127.0.0.1:8081 \
//!     --reports 60 --viewers 5 --seed 9
//! ```
//!
//! Report `i` is `GET {prefix}{i}?delay_ms={ms}`: its fill time `ms` is drawn uniformly from
//! `--min-ms`..=`--max-ms` by a generator seeded with `--seed` and `i` (splitmix64), so every
//! run with the same seed asks for the same reports with the same fill times, and the
//! origin (examples/counting_origin.rs) takes that long to answer each.
//!
//! Every viewer has a connection of its own, opened (and the HTTP/1.1 handshake done) before
//! any request is sent; then all requests go at once, the viewers spread round-robin over
//! `--targets` (viewer `v` of report `i` asks target `(i * viewers + v) % targets`, so the
//! viewers of one report meet on different instances). A viewer's wait runs from that moment
//! until the last byte of its answer (or its error).
//!
//! The JSON: `count`; `status` (answers by status code, and transport errors as
//! `error:...`); `p50_ms`, `p99_ms`, `max_ms`, `mean_ms` of all viewers' waits; `hits`
//! (answered from the cache: slate's `Cache-Status` with `hit`, nginx's `X-Cache-Status`
//! `HIT`/`STALE`/`UPDATING`, Varnish's `X-Varnish` with two ids); `stale` (of those, past
//! their freshness: slate's `ttl=-N`, nginx's `STALE`/`UPDATING`, or an `Age` above
//! `--ttl-s` when given); `slow` (waited more than `--slow-ms`); `recompute` (not a hit, or
//! slow: waited on a recompute); `fill_ms_sum` and `fill_ms_max` of the reports asked;
//! `cache` (a tally of the cache headers, numbers replaced by `N`). `--dry 1` sends nothing
//! and prints only `fill_ms_sum` and `fill_ms_max`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

#[path = "common/mod.rs"]
#[allow(dead_code)] // the server half is the origins'
mod common;

struct Args {
    targets: Vec<String>,
    reports: u64,
    viewers: u64,
    seed: u64,
    min_ms: u64,
    max_ms: u64,
    prefix: String,
    timeout: Duration,
    slow_ms: f64,
    ttl_s: Option<u64>,
    dry: bool,
}

const USAGE: &str = "usage: morning_client --targets URL[,URL...] [--reports N] [--viewers M] \
[--seed S] [--min-ms MS] [--max-ms MS] [--prefix /morning/] [--timeout-s S] [--slow-ms MS] [--ttl-s S] \
[--dry 1]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        targets: Vec::new(),
        reports: 60,
        viewers: 5,
        seed: 9,
        min_ms: 1000,
        max_ms: 5000,
        prefix: "/morning/".into(),
        timeout: Duration::from_secs(180),
        slow_ms: 500.0,
        ttl_s: None,
        dry: false,
    };
    common::parse_flags(USAGE, |flag, value| {
        match flag {
            "--targets" => {
                a.targets = value()?
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(|t| t.trim_end_matches('/').to_string())
                    .collect()
            }
            "--reports" => a.reports = common::number(flag, value()?)?,
            "--viewers" => a.viewers = common::number(flag, value()?)?,
            "--seed" => a.seed = common::number(flag, value()?)?,
            "--min-ms" => a.min_ms = common::number(flag, value()?)?,
            "--max-ms" => a.max_ms = common::number(flag, value()?)?,
            "--prefix" => a.prefix = value()?,
            "--timeout-s" => a.timeout = Duration::from_secs(common::number(flag, value()?)?),
            "--slow-ms" => a.slow_ms = common::number(flag, value()?)?,
            "--ttl-s" => a.ttl_s = Some(common::number(flag, value()?)?),
            "--dry" => a.dry = value()? == "1",
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if a.targets.is_empty() && !a.dry {
        return Err(format!("--targets is required\n{USAGE}"));
    }
    if a.reports == 0 || a.viewers == 0 || a.min_ms > a.max_ms {
        return Err(format!(
            "--reports and --viewers must be at least 1, --min-ms at most --max-ms\n{USAGE}"
        ));
    }
    Ok(a)
}

/// splitmix64: the fill time of report `id` under `seed`, uniform in `min..=max` ms.
fn fill_ms(seed: u64, id: u64, min: u64, max: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(id.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    min + z % (max - min + 1)
}

/// What one viewer saw.
struct Seen {
    wait_ms: f64,
    /// The status code, or `error:...`.
    status: String,
    hit: bool,
    stale: bool,
    /// The cache headers, numbers as `N`.
    cache: String,
}

/// `v` with every run of digits replaced by `N`.
fn numbers_out(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut in_number = false;
    for c in v.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

/// Whether the answer came from the cache, whether it was stale, and the tally's label.
fn classify(h: &http::HeaderMap, ttl_s: Option<u64>) -> (bool, bool, String) {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(cs) = get("cache-status") {
        let hit = cs.split(';').any(|p| p.trim() == "hit");
        let stale = hit && cs.contains("ttl=-");
        return (hit, stale, numbers_out(cs));
    }
    if let Some(x) = get("x-cache-status") {
        let hit = matches!(x, "HIT" | "STALE" | "UPDATING");
        let stale = matches!(x, "STALE" | "UPDATING");
        return (hit, stale, format!("X-Cache-Status: {x}"));
    }
    if let Some(x) = get("x-varnish") {
        let hit = x.split_whitespace().count() == 2;
        let age: Option<u64> = get("age").and_then(|a| a.parse().ok());
        let stale = hit && matches!((age, ttl_s), (Some(a), Some(t)) if a > t);
        let label = match (hit, stale) {
            (true, true) => "X-Varnish: two ids (hit), Age > ttl (grace)",
            (true, false) => "X-Varnish: two ids (hit)",
            _ => "X-Varnish: one id (miss)",
        };
        return (hit, stale, label.to_string());
    }
    (false, false, "-".to_string())
}

/// One viewer: connect, wait for the start, ask, read the whole answer.
async fn viewer(target: String, path: String, start: Arc<Barrier>, a: Arc<Args>) -> Seen {
    let failed = |status: String, wait_ms: f64| Seen {
        wait_ms,
        status,
        hit: false,
        stale: false,
        cache: "-".into(),
    };
    let authority = target
        .strip_prefix("http://")
        .unwrap_or(&target)
        .to_string();
    let conn = async {
        let stream = TcpStream::connect(&authority).await?;
        let _ = stream.set_nodelay(true);
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)
    }
    .await;
    // Every viewer reaches the barrier, connected or not, or the others would wait forever.
    start.wait().await;
    let t0 = Instant::now();
    let elapsed = || t0.elapsed().as_secs_f64() * 1000.0;
    let (mut sender, conn) = match conn {
        Ok(c) => c,
        Err(e) => return failed(format!("error:connect ({})", e.kind()), elapsed()),
    };
    tokio::spawn(conn);
    let req = Request::get(path.as_str())
        .header("host", authority.as_str())
        .header("user-agent", "morning_client")
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let asked = async {
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        body.collect().await?;
        Ok::<_, hyper::Error>(parts)
    };
    match tokio::time::timeout(a.timeout, asked).await {
        Err(_) => failed("error:timeout".into(), elapsed()),
        Ok(Err(e)) => failed(format!("error:{}", numbers_out(&e.to_string())), elapsed()),
        Ok(Ok(parts)) => {
            let wait_ms = elapsed();
            let (hit, stale, cache) = classify(&parts.headers, a.ttl_s);
            Seen {
                wait_ms,
                status: parts.status.as_u16().to_string(),
                hit,
                stale,
                cache,
            }
        }
    }
}

/// The value at quantile `q` (nearest rank) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn json_map(m: &BTreeMap<String, u64>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
        .collect();
    format!("{{{}}}", items.join(","))
}

async fn run(a: Args) -> Result<(), String> {
    if a.dry {
        let fills: Vec<u64> = (0..a.reports)
            .map(|i| fill_ms(a.seed, i, a.min_ms, a.max_ms))
            .collect();
        let (sum, max) = (fills.iter().sum::<u64>(), fills.iter().max().copied());
        println!(
            "{{\"fill_ms_sum\":{sum},\"fill_ms_max\":{}}}",
            max.unwrap_or(0)
        );
        return Ok(());
    }
    let a = Arc::new(a);
    let total = a.reports * a.viewers;
    let start = Arc::new(Barrier::new(total as usize));
    let (mut fill_sum, mut fill_max) = (0u64, 0u64);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..a.reports {
        let ms = fill_ms(a.seed, i, a.min_ms, a.max_ms);
        fill_sum += ms;
        fill_max = fill_max.max(ms);
        let path = format!("{}{i}?delay_ms={ms}", a.prefix);
        for v in 0..a.viewers {
            let target = a.targets[((i * a.viewers + v) % a.targets.len() as u64) as usize].clone();
            tasks.push(tokio::spawn(viewer(
                target,
                path.clone(),
                start.clone(),
                a.clone(),
            )));
        }
    }
    let mut seen = Vec::with_capacity(tasks.len());
    for t in tasks {
        seen.push(t.await.map_err(|e| format!("a viewer task failed: {e}"))?);
    }
    let mut waits: Vec<f64> = seen.iter().map(|s| s.wait_ms).collect();
    waits.sort_by(|x, y| x.total_cmp(y));
    let mut status = BTreeMap::new();
    let mut cache = BTreeMap::new();
    for s in &seen {
        *status.entry(s.status.clone()).or_insert(0) += 1;
        *cache.entry(s.cache.clone()).or_insert(0) += 1;
    }
    let count = |f: &dyn Fn(&Seen) -> bool| seen.iter().filter(|s| f(s)).count();
    let slow = |s: &Seen| s.wait_ms > a.slow_ms;
    println!(
        "{{\"count\":{},\"ok\":{},\"status\":{},\"p50_ms\":{:.0},\"p99_ms\":{:.0},\"max_ms\":{:.0},\
\"mean_ms\":{:.0},\"hits\":{},\"stale\":{},\"slow\":{},\"recompute\":{},\"fill_ms_sum\":{fill_sum},\
\"fill_ms_max\":{fill_max},\"cache\":{}}}",
        seen.len(),
        count(&|s| s.status == "200"),
        json_map(&status),
        quantile(&waits, 0.5),
        quantile(&waits, 0.99),
        waits.last().copied().unwrap_or(0.0),
        waits.iter().sum::<f64>() / waits.len().max(1) as f64,
        count(&|s| s.hit),
        count(&|s| s.stale),
        count(&slow),
        count(&|s| !s.hit || slow(s)),
        json_map(&cache),
    );
    Ok(())
}

fn main() -> ExitCode {
    common::main("morning_client", parse_args, run)
}
