//! Compression levels on reporting JSON (the generated reports of `report_origin`): the size
//! and time of gzip and zstd at several levels, to choose `cache.compress`'s levels by
//! measurement (bench/RESULTS.md).
//!
//!     cargo run --release --example codec_levels

#[allow(dead_code)] // not every helper of the shared module is used here
#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::time::Instant;

fn gzip(b: &[u8], level: u32) -> usize {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).unwrap();
    e.finish().unwrap().len()
}

fn main() {
    let sizes = [20 << 10, 150 << 10, 2 << 20];
    // The reports of examples/report_origin.rs (bench/codings.sh's origin).
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&size| common::report(42, size).to_vec())
        .collect();
    println!("| codec | level | body | ratio | ms per body | MB/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    let codecs: Vec<(&str, u32)> = vec![
        ("gzip", 1),
        ("gzip", 3),
        ("gzip", 6),
        ("gzip", 9),
        ("zstd", 1),
        ("zstd", 3),
        ("zstd", 6),
    ];
    for (codec, level) in codecs {
        for b in &bodies {
            let runs = (40 << 20) / b.len().max(1);
            let t = Instant::now();
            let mut out = 0;
            for _ in 0..runs.max(3) {
                out = match codec {
                    "gzip" => gzip(b, level),
                    _ => zstd::bulk::compress(b, level as i32).unwrap().len(),
                };
            }
            let per = t.elapsed().as_secs_f64() / runs.max(3) as f64;
            println!(
                "| {codec} | {level} | {} KB | {:.3} | {:.2} | {:.0} |",
                b.len() >> 10,
                out as f64 / b.len() as f64,
                per * 1e3,
                b.len() as f64 / per / 1e6
            );
        }
    }
}
