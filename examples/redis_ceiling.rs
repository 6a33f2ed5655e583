//! The Redis ceiling of bench/compare.sh: a bare hyper server that answers every request
//! with one Redis `GET` of one key, the body being the value. Nothing else: no key
//! derivation, no headers to parse, no entry to decode. What a cache hit served from Redis
//! would cost if the cache did no work of its own.
//!
//! ```sh
//! cargo build --release --example redis_ceiling
//! target/release/examples/redis_ceiling --listen 127.0.0.1:9100 \
//!     --redis redis://127.0.0.1:6379 --key bench:ceiling --body-size 20480
//! ```
//!
//! At start it stores `--body-size` bytes under `--key` (the same bytes as
//! `slate demo-origin --body-size N`), then serves. It uses what slate's Redis store uses:
//! one `redis::aio::ConnectionManager` (multiplexed, cloned per request), a
//! multi-threaded tokio runtime and hyper-util's auto (HTTP/1 + HTTP/2) server.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::process::ExitCode;
use tokio::net::TcpListener;

struct Args {
    listen: String,
    redis: String,
    key: String,
    body_size: usize,
}

fn usage() -> String {
    "usage: redis_ceiling --listen ADDR --redis URL [--key KEY] [--body-size BYTES]".into()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9100".into(),
        redis: "redis://127.0.0.1:6379".into(),
        key: "bench:redis-ceiling".into(),
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
            "--redis" => a.redis = value()?,
            "--key" => a.key = value()?,
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
fn body(size: usize) -> Vec<u8> {
    let mut s = String::from("{\"report\":\"bench\",\"rows\":[");
    while s.len() + 16 < size {
        s.push_str("[1,2,3,4,5,6],");
    }
    s.push_str("[0]]}");
    while s.len() < size {
        s.push(' ');
    }
    s.into_bytes()
}

async fn serve(a: Args) -> Result<(), String> {
    let client = redis::Client::open(a.redis.as_str()).map_err(|e| format!("--redis: {e}"))?;
    let conn = redis::aio::ConnectionManager::new(client)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", a.redis))?;
    {
        let mut c = conn.clone();
        redis::cmd("SET")
            .arg(&a.key)
            .arg(body(a.body_size))
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| format!("SET {}: {e}", a.key))?;
    }
    let listener = TcpListener::bind(&a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    eprintln!(
        "redis ceiling on {}: GET {} from {} ({} bytes)",
        a.listen, a.key, a.redis, a.body_size
    );
    let key: std::sync::Arc<str> = a.key.into();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (conn, key, builder) = (conn.clone(), key.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let (mut conn, key) = (conn.clone(), key.clone());
                async move {
                    let r = redis::cmd("GET")
                        .arg(&*key)
                        .query_async::<Option<Vec<u8>>>(&mut conn)
                        .await;
                    let resp = match r {
                        Ok(Some(v)) => Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(v))),
                        Ok(None) => Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"key not found\n"))),
                        Err(e) => Response::builder()
                            .status(502)
                            .body(Full::new(Bytes::from(format!("redis: {e}\n")))),
                    };
                    Ok::<_, Infallible>(resp.expect("a valid response"))
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
            eprintln!("redis_ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}
