//! The raw ceiling of bench/compare.sh: the least a server can do to answer the benchmark's
//! request. One thread per core, each with its own `SO_REUSEPORT` listener and a
//! current-thread tokio runtime; requests are found by their blank line (no parsing, no
//! headers looked at) and answered with one `write` of a prebuilt response (head and the
//! same body as `slate demo-origin --body-size N`). No hyper, no routing, no cache.
//!
//! What it is for: on a machine where wrk and the server share the cores, it shows how many
//! requests/s *any* server can be answered at, so a target above it is beyond the machine,
//! not beyond slate. It is not an HTTP server to use: it ignores methods, paths and bodies.
//!
//! ```sh
//! cargo build --release --example raw_ceiling
//! target/release/examples/raw_ceiling --listen 127.0.0.1:9101 --body-size 20480
//! ```

// Only the command line and the body are used here.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const USAGE: &str = "usage: raw_ceiling --listen ADDR [--body-size BYTES] [--threads N]";

struct Args {
    listen: SocketAddr,
    body_size: usize,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
        body_size: 20480,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    common::parse_flags(USAGE, |flag, value| {
        match flag {
            "--listen" => a.listen = common::number(flag, value()?)?,
            "--body-size" => a.body_size = common::number(flag, value()?)?,
            "--threads" => a.threads = common::number(flag, value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if a.threads == 0 {
        return Err(format!("--threads must be at least 1\n{USAGE}"));
    }
    Ok(a)
}

fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

/// Answers every request on `stream` (a request ends at its first blank line) with
/// `response`, until the client closes. Pipelined requests get one answer each.
async fn connection(mut stream: TcpStream, response: Arc<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 << 10];
    let mut have = 0;
    loop {
        if have == buf.len() {
            return; // a request head over 16 KiB: not what this is for
        }
        match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            if stream.write_all(&response).await.is_err() {
                return;
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
    }
}

fn serve(a: Args) -> Result<(), String> {
    let body = common::body(a.body_size);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let response = Arc::new(response);
    let mut threads = Vec::new();
    for _ in 0..a.threads {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        // Bound here, so a bad address is reported before anything is served.
        let l = rt
            .block_on(async { listener(a.listen) })
            .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
        let response = response.clone();
        threads.push(std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        tokio::spawn(connection(s, response.clone()));
                    }
                }
            })
        }));
    }
    eprintln!(
        "raw ceiling on {}: {} threads, {} bytes",
        a.listen, a.threads, a.body_size
    );
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw_ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}
