//! The report origin of bench/codings.sh: answers `GET /report?id=N&size=S` after `--delay-ms`
//! with a JSON sales report of exactly `S` bytes (rows of dates, regions, products and
//! numbers, the rows of `examples/codec_levels.rs`), the same bytes every time for the same
//! `id` and `size`, in identity (it never compresses, whatever the client accepts),
//! `Content-Type: application/json`. Other query parameters are ignored, so
//! `/report?id=1&size=2097152&n=17` is the report of `id=1` under another URL (the miss test
//! asks for a new URL every time without making the origin build a new body).
//!
//! ```sh
//! cargo build --release --example report_origin
//! target/release/examples/report_origin --listen 127.0.0.1:9300 --delay-ms 200
//! curl 'http://127.0.0.1:9300/report?id=3&size=153600' | head -c 300
//! ```
//!
//! `id` defaults to 1, `size` to 153600 (150 KiB); `size` must be 128 bytes to 64 MiB (else
//! 400). Bodies are built once per `(id, size)` and kept (at most 64 of them, then the set
//! starts over), so a hot report costs the origin no more than a copy of a `Bytes`.
//! `/__ready` answers 200 `ok` at once, without the delay.
//!
//! With `--reports N` (and `--seed S`) it is the origin of bench/realistic.sh (issue 18), the
//! workload of `examples/common/workload.rs`: `/report?id=K` without `size` answers report
//! `K` at its seeded log-normal size (2 KiB..2 MiB, median 40 KiB); ids above `N` are cold
//! and answer after their seeded 1-5 s (ids up to `N` after `--delay-ms`, 0 in the bench);
//! every report says `Cache-Control: public, max-age=86400`. In every mode `/stats` answers
//! JSON counts of the report requests it served: `{"requests":..,"warm":..,"cold":..,"bytes":..}`.

#[allow(dead_code)] // not every helper of the shared module is used here
#[path = "common/mod.rs"]
mod common;
#[path = "common/workload.rs"]
mod workload;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Args {
    listen: String,
    delay: Duration,
    /// The workload's warm reports (`--reports`); `None`: the plain report origin.
    reports: Option<u64>,
    seed: u64,
}

const USAGE: &str = "usage: report_origin --listen ADDR [--delay-ms MS] [--reports N [--seed S]]";
const DEFAULT_SIZE: usize = 150 << 10;
const MIN_SIZE: usize = 128;
const MAX_SIZE: usize = 64 << 20;
const KEPT_BODIES: usize = 64;

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9300".into(),
        delay: Duration::from_millis(200),
        reports: None,
        seed: 1,
    };
    common::parse_flags(USAGE, |flag, value| {
        match flag {
            "--listen" => a.listen = value()?,
            "--delay-ms" => a.delay = Duration::from_millis(common::number(flag, value()?)?),
            "--reports" => a.reports = Some(common::number(flag, value()?)?),
            "--seed" => a.seed = common::number(flag, value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

/// `id` and `size` of the query (id defaults to 1; size to `None`, when absent); an error
/// names the bad one.
fn report_params(query: Option<&str>) -> Result<(u64, Option<usize>), String> {
    let (mut id, mut size) = (1u64, None);
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("id=") {
            id = v.parse().map_err(|_| format!("bad id {v:?}"))?;
        } else if let Some(v) = pair.strip_prefix("size=") {
            let s: usize = v.parse().map_err(|_| format!("bad size {v:?}"))?;
            if !(MIN_SIZE..=MAX_SIZE).contains(&s) {
                return Err(format!("size must be {MIN_SIZE}..={MAX_SIZE} bytes"));
            }
            size = Some(s);
        }
    }
    Ok((id, size))
}

/// What `/stats` answers: report requests served, warm and cold, and body bytes.
#[derive(Default)]
struct Stats {
    warm: AtomicU64,
    cold: AtomicU64,
    bytes: AtomicU64,
}

impl Stats {
    fn json(&self) -> String {
        let (w, c) = (self.warm.load(Relaxed), self.cold.load(Relaxed));
        format!(
            "{{\"requests\":{},\"warm\":{w},\"cold\":{c},\"bytes\":{}}}\n",
            w + c,
            self.bytes.load(Relaxed)
        )
    }
}

type Bodies = Arc<Mutex<HashMap<(u64, usize), Bytes>>>;

fn body_of(bodies: &Bodies, id: u64, size: usize) -> Bytes {
    if let Some(b) = bodies.lock().expect("bodies lock").get(&(id, size)) {
        return b.clone();
    }
    let b = common::report(id, size);
    let mut kept = bodies.lock().expect("bodies lock");
    if kept.len() >= KEPT_BODIES {
        kept.clear();
    }
    kept.insert((id, size), b.clone());
    b
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response")
}

async fn serve(a: Args) -> Result<(), String> {
    let listener = common::listen(&a.listen).await?;
    eprintln!(
        "report origin on {}: {:?} a request, /report?id=N&size=S",
        a.listen, a.delay
    );
    let bodies: Bodies = Arc::default();
    let stats: Arc<Stats> = Arc::default();
    let (delay, reports, seed) = (a.delay, a.reports, a.seed);
    common::serve(listener, move |req: Request<Incoming>| {
        let (bodies, stats) = (bodies.clone(), stats.clone());
        async move {
            match req.uri().path() {
                "/__ready" => return plain(StatusCode::OK, "ok\n".into()),
                "/stats" => return plain(StatusCode::OK, stats.json()),
                "/report" => {}
                _ => {
                    return plain(
                        StatusCode::NOT_FOUND,
                        "not found: try /report?id=1\n".into(),
                    )
                }
            }
            let (id, size) = match report_params(req.uri().query()) {
                Ok(p) => p,
                Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            let cold = reports.is_some_and(|n| workload::is_cold(n, id));
            let size = match (size, reports) {
                (Some(s), _) => s,
                (None, Some(_)) => workload::size_of(seed, id),
                (None, None) => DEFAULT_SIZE,
            };
            let delay = match cold {
                true => Duration::from_millis(workload::cold_delay_ms(seed, id)),
                false => delay,
            };
            if cold { &stats.cold } else { &stats.warm }.fetch_add(1, Relaxed);
            let body = body_of(&bodies, id, size);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            stats.bytes.fetch_add(body.len() as u64, Relaxed);
            let mut answer = Response::builder().header("content-type", "application/json");
            if reports.is_some() {
                answer = answer.header("cache-control", "public, max-age=86400");
            }
            answer.body(Full::new(body)).expect("a valid response")
        }
    })
    .await
}

fn main() -> ExitCode {
    common::main("report_origin", parse_args, serve)
}
