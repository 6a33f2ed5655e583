//! What the bench examples (counting_origin, redis_ceiling) share: the command line, the
//! demo-origin body, the hyper server loop and `main`. Each includes it with
//! `#[path = "common/mod.rs"] mod common;` (cargo does not take a file in a subdirectory of
//! examples/ for an example of its own unless it is a `main.rs`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::str::FromStr;
use tokio::net::TcpListener;

/// Reads the command line as `--flag value` pairs: `flag(name, value)` sets what `name`
/// stands for, taking its value from `value()`, and answers `false` for a flag it does not
/// know. `-h` or `--help` ends it with `usage` as the error.
pub fn parse_flags(
    usage: &str,
    mut flag: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String>,
) -> Result<(), String> {
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        if name == "-h" || name == "--help" {
            return Err(usage.into());
        }
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{name}: missing value\n{usage}"))
        };
        if !flag(&name, &mut value)? {
            return Err(format!("unknown argument {name}\n{usage}"));
        }
    }
    Ok(())
}

/// `value` of `flag` as a number (or whatever `T` parses), the error naming the flag.
pub fn number<T: FromStr>(flag: &str, value: String) -> Result<T, String>
where
    T::Err: Display,
{
    value.parse().map_err(|e| format!("{flag}: {e}"))
}

/// The same padded JSON body as `slate demo-origin --body-size N`.
pub fn body(size: usize) -> Bytes {
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

pub async fn listen(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Serves every connection `listener` accepts with hyper-util's auto (HTTP/1 + HTTP/2)
/// server, `handler` answering each request. Runs until the process ends.
pub async fn serve<H, F>(listener: TcpListener, handler: H) -> Result<(), String>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (handler, builder) = (handler.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// An example's `main`: `parse_args` (on error: the message, exit status 2), then `serve` on
/// a multi-threaded tokio runtime (on error: "NAME: message", exit status 1).
pub fn main<A, F>(
    name: &str,
    parse_args: fn() -> Result<A, String>,
    serve: impl FnOnce(A) -> F,
) -> ExitCode
where
    F: Future<Output = Result<(), String>>,
{
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
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The report of `id`, exactly `size` bytes: whole rows while they fit, then the closing
/// `]}` and spaces (valid JSON) up to `size`.
#[allow(dead_code)] // the report examples use it; the ceilings do not
pub fn report(id: u64, size: usize) -> Bytes {
    use std::fmt::Write;
    // splitmix64 of the id seeds a xorshift64.
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut x = (z ^ (z >> 31)) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let regions = ["emea", "amer", "apac", "latam", "anz"];
    let products = [
        "widget",
        "gadget",
        "gizmo",
        "sprocket",
        "doohickey",
        "thingamajig",
    ];
    let mut s = String::with_capacity(size + 256);
    let _ = write!(
        s,
        "{{\"report\":\"sales_by_region\",\"id\":{id},\"generated\":\"2026-12-02T09:00:00Z\",\"rows\":["
    );
    let mut row = String::with_capacity(160);
    let mut first = true;
    loop {
        let r = next();
        row.clear();
        let _ = write!(
            row,
            "{}{{\"date\":\"2026-{:02}-{:02}\",\"region\":\"{}\",\"product\":\"{}\",\"units\":{},\"revenue\":{}.{:02},\"margin\":0.{:04}}}",
            if first { "" } else { "," },
            r % 12 + 1,
            (r >> 8) % 28 + 1,
            regions[(r >> 16) as usize % regions.len()],
            products[(r >> 20) as usize % products.len()],
            (r >> 24) % 5000,
            (r >> 32) % 1_000_000,
            (r >> 40) % 100,
            (r >> 44) % 10000
        );
        if s.len() + row.len() + 2 > size {
            break;
        }
        s.push_str(&row);
        first = false;
    }
    s.push_str("]}");
    while s.len() < size {
        s.push(' ');
    }
    s.truncate(size); // a no-op: the header is shorter than MIN_SIZE
    Bytes::from(s)
}
