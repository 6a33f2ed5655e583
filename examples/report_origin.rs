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

#[allow(dead_code)] // not every helper of the shared module is used here
#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Args {
    listen: String,
    delay: Duration,
}

const USAGE: &str = "usage: report_origin --listen ADDR [--delay-ms MS]";
const DEFAULT_SIZE: usize = 150 << 10;
const MIN_SIZE: usize = 128;
const MAX_SIZE: usize = 64 << 20;
const KEPT_BODIES: usize = 64;

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9300".into(),
        delay: Duration::from_millis(200),
    };
    common::parse_flags(USAGE, |flag, value| {
        match flag {
            "--listen" => a.listen = value()?,
            "--delay-ms" => a.delay = Duration::from_millis(common::number(flag, value()?)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

/// `id` and `size` of the query (defaults 1 and [`DEFAULT_SIZE`]); an error names the bad one.
fn report_params(query: Option<&str>) -> Result<(u64, usize), String> {
    let (mut id, mut size) = (1u64, DEFAULT_SIZE);
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("id=") {
            id = v.parse().map_err(|_| format!("bad id {v:?}"))?;
        } else if let Some(v) = pair.strip_prefix("size=") {
            size = v.parse().map_err(|_| format!("bad size {v:?}"))?;
        }
    }
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(format!("size must be {MIN_SIZE}..={MAX_SIZE} bytes"));
    }
    Ok((id, size))
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
    let delay = a.delay;
    common::serve(listener, move |req: Request<Incoming>| {
        let bodies = bodies.clone();
        async move {
            match req.uri().path() {
                "/__ready" => return plain(StatusCode::OK, "ok\n".into()),
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
            let body = body_of(&bodies, id, size);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("a valid response")
        }
    })
    .await
}

fn main() -> ExitCode {
    common::main("report_origin", parse_args, serve)
}
