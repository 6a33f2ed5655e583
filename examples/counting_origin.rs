//! The counting origin of bench/compare.sh's cold-stampede test: answers every GET with 200
//! and `--body-size` bytes after `--delay`, like `slate demo-origin`, and counts the
//! requests it received per request target, so the harness can ask how many requests a
//! cache in front of it let through.
//!
//! ```sh
//! cargo build --release --example counting_origin
//! target/release/examples/counting_origin --listen 127.0.0.1:9200 --delay-ms 1000 --body-size 20480
//! curl 'http://127.0.0.1:9200/__count'                     # all requests so far (not counting /__count)
//! curl 'http://127.0.0.1:9200/__count?prefix=/cold/nginx'  # requests whose target starts with the prefix
//! curl 'http://127.0.0.1:9200/r/7?delay_ms=3200'           # this request takes 3.2 s, whatever --delay-ms
//! curl 'http://127.0.0.1:9200/stats'                       # {"requests":N,"peak":P,"in_flight":F}
//! ```
//!
//! A request is counted when it arrives, before the delay: a client that gives up early
//! still counts as one upstream request. A `delay_ms` query parameter sets the delay of that
//! request (bench/morning.sh: each report's own fill time, drawn by the load driver).
//! `/stats` answers, as JSON, the requests so far (neither `/__count` nor `/stats` counted),
//! the most that were in progress at once (`peak`: the back end's concurrency, what a fill
//! queue must bound) and how many are in progress now; a request is in progress from its
//! arrival until its response is handed to hyper, or until the client hangs up.

#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Args {
    listen: String,
    delay: Duration,
    body_size: usize,
}

const USAGE: &str = "usage: counting_origin --listen ADDR [--delay-ms MS] [--body-size BYTES]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9200".into(),
        delay: Duration::from_millis(1000),
        body_size: 20480,
    };
    common::parse_flags(USAGE, |flag, value| {
        match flag {
            "--listen" => a.listen = value()?,
            "--delay-ms" => a.delay = Duration::from_millis(common::number(flag, value()?)?),
            "--body-size" => a.body_size = common::number(flag, value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

type Counts = Arc<Mutex<HashMap<String, u64>>>;

/// Requests in all, in progress now, and the most in progress at once.
#[derive(Default)]
struct Load {
    requests: AtomicU64,
    in_flight: AtomicU64,
    peak: AtomicU64,
}

/// One request in progress: counted in `in_flight` until dropped (answered, or its client
/// gone and the handler future with it).
struct InFlight(Arc<Load>);

impl InFlight {
    fn new(load: &Arc<Load>) -> InFlight {
        load.requests.fetch_add(1, Ordering::SeqCst);
        let now = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        load.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(load.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn stats_answer(load: &Load) -> String {
    format!(
        "{{\"requests\":{},\"peak\":{},\"in_flight\":{}}}\n",
        load.requests.load(Ordering::SeqCst),
        load.peak.load(Ordering::SeqCst),
        load.in_flight.load(Ordering::SeqCst)
    )
}

/// The `delay_ms` query parameter, if there is one that is a number.
fn query_delay(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|p| p.strip_prefix("delay_ms="))
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

fn count_answer(counts: &Counts, query: Option<&str>) -> String {
    let prefix = query
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("prefix="))
        .unwrap_or("");
    let counts = counts.lock().expect("counts lock");
    let n: u64 = counts
        .iter()
        .filter(|(target, _)| target.starts_with(prefix))
        .map(|(_, n)| n)
        .sum();
    format!("{n}\n")
}

async fn serve(a: Args) -> Result<(), String> {
    let listener = common::listen(&a.listen).await?;
    eprintln!(
        "counting origin on {}: {:?} a request, {} bytes",
        a.listen, a.delay, a.body_size
    );
    let counts: Counts = Arc::default();
    let load: Arc<Load> = Arc::default();
    let fixed = common::body(a.body_size);
    let default_delay = a.delay;
    common::serve(listener, move |req: Request<Incoming>| {
        let (counts, load, fixed) = (counts.clone(), load.clone(), fixed.clone());
        async move {
            let own = match req.uri().path() {
                "/__count" => Some(("text/plain", count_answer(&counts, req.uri().query()))),
                "/stats" => Some(("application/json", stats_answer(&load))),
                _ => None,
            };
            if let Some((kind, answer)) = own {
                return Response::builder()
                    .header("content-type", kind)
                    .header("cache-control", "no-store")
                    .body(Full::new(Bytes::from(answer)))
                    .expect("a valid response");
            }
            let _in_flight = InFlight::new(&load);
            let delay = query_delay(req.uri().query()).unwrap_or(default_delay);
            let target = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            *counts
                .lock()
                .expect("counts lock")
                .entry(target)
                .or_insert(0) += 1;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(fixed))
                .expect("a valid response")
        }
    })
    .await
}

fn main() -> ExitCode {
    common::main("counting_origin", parse_args, serve)
}
