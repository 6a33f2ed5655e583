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

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

struct Args {
    listen: String,
    delay: Duration,
    body_size: usize,
}

fn usage() -> String {
    "usage: counting_origin --listen ADDR [--delay-ms MS] [--body-size BYTES]".into()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9200".into(),
        delay: Duration::from_millis(1000),
        body_size: 20480,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag}: missing value\n{}", usage()))
        };
        match flag.as_str() {
            "--listen" => a.listen = value()?,
            "--delay-ms" => {
                a.delay =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--delay-ms: {e}"))?)
            }
            "--body-size" => {
                a.body_size = value()?.parse().map_err(|e| format!("--body-size: {e}"))?
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(a)
}

/// The same padded JSON body as `slate demo-origin --body-size N`.
fn body(size: usize) -> Bytes {
    let mut s = String::from("{\"report\":\"bench\",\"rows\":[");
    while s.len() + 16 < size {
        s.push_str("[1,2,3,4,5,6],");
    }
    s.push_str("[0]]}");
    while s.len() < size {
        s.push(' ');
    }
    Bytes::from(s)
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
    let listener = TcpListener::bind(&a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    eprintln!(
        "counting origin on {}: {:?} a request, {} bytes",
        a.listen, a.delay, a.body_size
    );
    let counts: Counts = Arc::default();
    let fixed = body(a.body_size);
    let delay = a.delay;
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (counts, fixed, builder) = (counts.clone(), fixed.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (counts, fixed) = (counts.clone(), fixed.clone());
                async move {
                    if req.uri().path() == "/__count" {
                        let n = count_answer(&counts, req.uri().query());
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "text/plain")
                                .header("cache-control", "no-store")
                                .body(Full::new(Bytes::from(n)))
                                .expect("a valid response"),
                        );
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
                    Ok(Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(fixed))
                        .expect("a valid response"))
                }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counting_origin: {e}");
            ExitCode::FAILURE
        }
    }
}
