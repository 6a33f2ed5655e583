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

#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::process::ExitCode;
use std::sync::Arc;

struct Args {
    listen: String,
    redis: String,
    key: String,
    body_size: usize,
}

const USAGE: &str =
    "usage: redis_ceiling --listen ADDR --redis URL [--key KEY] [--body-size BYTES]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:9100".into(),
        redis: "redis://127.0.0.1:6379".into(),
        key: "bench:redis-ceiling".into(),
        body_size: 20480,
    };
    common::parse_flags(USAGE, |flag, value| {
        match flag {
            "--listen" => a.listen = value()?,
            "--redis" => a.redis = value()?,
            "--key" => a.key = value()?,
            "--body-size" => a.body_size = common::number(flag, value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
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
            .arg(&common::body(a.body_size)[..])
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| format!("SET {}: {e}", a.key))?;
    }
    let listener = common::listen(&a.listen).await?;
    eprintln!(
        "redis ceiling on {}: GET {} from {} ({} bytes)",
        a.listen, a.key, a.redis, a.body_size
    );
    let key: Arc<str> = a.key.into();
    common::serve(listener, move |_req: Request<Incoming>| {
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
            resp.expect("a valid response")
        }
    })
    .await
}

fn main() -> ExitCode {
    common::main("redis_ceiling", parse_args, serve)
}
