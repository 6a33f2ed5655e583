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
//! ```
//!
//! A request is counted when it arrives, before the delay: a client that gives up early
//! still counts as one upstream request.

#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::process::ExitCode;
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
    let fixed = common::body(a.body_size);
    let delay = a.delay;
    common::serve(listener, move |req: Request<Incoming>| {
        let (counts, fixed) = (counts.clone(), fixed.clone());
        async move {
            if req.uri().path() == "/__count" {
                let n = count_answer(&counts, req.uri().query());
                return Response::builder()
                    .header("content-type", "text/plain")
                    .header("cache-control", "no-store")
                    .body(Full::new(Bytes::from(n)))
                    .expect("a valid response");
            }
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
