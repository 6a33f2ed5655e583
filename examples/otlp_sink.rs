//! The trace collector of bench/tracing.sh: takes OTLP/HTTP protobuf exports (`POST
//! /v1/traces`), decodes them (`opentelemetry-proto`) and counts them, so the harness can
//! tell that spans did arrive while it measured slate with tracing on. With `--hang`, it
//! reads each export and never answers: a collector that is up but stuck, the worst kind of
//! dead for an exporter (each export waits out its timeout).
//!
//! ```sh
//! cargo build --release --example otlp_sink
//! target/release/examples/otlp_sink --listen 127.0.0.1:4318
//! curl 'http://127.0.0.1:4318/stats'     # {"exports":12,"spans":6144,"bad":0}
//! ```

// The sink takes no numbers and sends no demo bodies: not all of common is used here.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

struct Args {
    listen: String,
    hang: bool,
}

const USAGE: &str = "usage: otlp_sink --listen ADDR [--hang]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:4318".into(),
        hang: false,
    };
    common::parse_flags(USAGE, |flag, value| {
        match flag {
            "--listen" => a.listen = value()?,
            // A flag alone: no value read.
            "--hang" => a.hang = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

#[derive(Default)]
struct Counts {
    exports: AtomicU64,
    spans: AtomicU64,
    /// Bodies that were no OTLP protobuf.
    bad: AtomicU64,
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn handle(req: Request<Incoming>, counts: Arc<Counts>, hang: bool) -> Response<Full<Bytes>> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/stats") => {
            let n = |c: &AtomicU64| c.load(Relaxed);
            let body = format!(
                "{{\"exports\":{},\"spans\":{},\"bad\":{}}}\n",
                n(&counts.exports),
                n(&counts.spans),
                n(&counts.bad)
            );
            answer(StatusCode::OK, body)
        }
        ("POST", "/v1/traces") => {
            let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
                return answer(StatusCode::BAD_REQUEST, "");
            };
            match ExportTraceServiceRequest::decode(body) {
                Ok(export) => {
                    let spans: usize = export
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum();
                    counts.exports.fetch_add(1, Relaxed);
                    counts.spans.fetch_add(spans as u64, Relaxed);
                }
                Err(_) => {
                    counts.bad.fetch_add(1, Relaxed);
                    return answer(StatusCode::BAD_REQUEST, "not OTLP protobuf");
                }
            }
            if hang {
                std::future::pending::<()>().await;
            }
            answer(StatusCode::OK, "")
        }
        _ => answer(StatusCode::NOT_FOUND, ""),
    }
}

fn main() -> ExitCode {
    common::main("otlp_sink", parse_args, |a: Args| async move {
        let listener = common::listen(&a.listen).await?;
        let counts = Arc::new(Counts::default());
        eprintln!(
            "otlp_sink on {}{}",
            a.listen,
            if a.hang { " (never answering)" } else { "" }
        );
        common::serve(listener, move |req| handle(req, counts.clone(), a.hang)).await
    })
}
