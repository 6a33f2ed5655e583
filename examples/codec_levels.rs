//! Compression levels on reporting JSON: the size and time of gzip and zstd at several
//! levels, to choose `cache.compress`'s levels by measurement (bench/RESULTS.md).
//!
//!     cargo run --release --example codec_levels

use std::io::Write;
use std::time::Instant;

/// A JSON report of `rows` rows (dates, regions, products, numbers), like the benchmarks'.
fn report(rows: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
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
    let mut s = String::from(
        "{\"report\":\"sales_by_region\",\"generated\":\"2026-12-02T09:00:00Z\",\"rows\":[",
    );
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        let r = next();
        s.push_str(&format!(
            "{{\"date\":\"2026-{:02}-{:02}\",\"region\":\"{}\",\"product\":\"{}\",\"units\":{},\"revenue\":{}.{:02},\"margin\":0.{:04}}}",
            r % 12 + 1,
            (r >> 8) % 28 + 1,
            regions[(r >> 16) as usize % regions.len()],
            products[(r >> 20) as usize % products.len()],
            (r >> 24) % 5000,
            (r >> 32) % 1_000_000,
            (r >> 40) % 100,
            (r >> 44) % 10000
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

fn gzip(b: &[u8], level: u32) -> usize {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).unwrap();
    e.finish().unwrap().len()
}

fn main() {
    let sizes = [20 << 10, 150 << 10, 2 << 20];
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&target| {
            let mut rows = target / 130;
            loop {
                let b = report(rows, 42);
                if b.len() >= target {
                    return b;
                }
                rows += rows / 10 + 1;
            }
        })
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
