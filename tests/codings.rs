//! One report, one entry, whatever the client's Accept-Encoding: stored compressed once,
//! sent as stored to clients that accept it and decoded for the rest, byte for byte the
//! origin's body. Real codecs on both sides (the test decodes with flate2 and zstd itself).

mod common;

use bytes::Bytes;
use common::*;
use std::io::{Read, Write};

/// What browsers, scripts and tools send (Chrome and Firefox alike, Safari, Python's
/// requests, an integration, curl with none, and a client that refuses gzip).
const SPELLINGS: [Option<&str>; 7] = [
    Some("gzip, deflate, br, zstd"),
    Some("gzip, deflate, br"),
    Some("gzip, deflate"),
    Some("gzip"),
    None,
    Some("identity"),
    Some("br;q=1.0, gzip;q=0"),
];

/// A JSON report of `rows` rows, as a reporting API would produce it.
fn report(rows: usize) -> Bytes {
    let mut s = String::from("{\"report\":\"sales\",\"rows\":[");
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"date\":\"2026-11-{:02}\",\"region\":\"{}\",\"units\":{},\"revenue\":{}.{:02}}}",
            i % 28 + 1,
            ["emea", "amer", "apac", "latam"][i % 4],
            i * 37 % 1000,
            i * 7919 % 100_000,
            i % 100
        ));
    }
    s.push_str("]}");
    Bytes::from(s)
}

fn gzip(b: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    Bytes::from(e.finish().unwrap())
}

/// The body a client reads, decoded as its Content-Encoding says.
fn decoded(g: &Got) -> Vec<u8> {
    let mut out = Vec::new();
    match g.header("content-encoding").as_str() {
        "" => out.extend_from_slice(&g.body),
        "gzip" => {
            flate2::read::GzDecoder::new(&g.body[..])
                .read_to_end(&mut out)
                .expect("gzip decodes");
        }
        "zstd" => out = zstd::decode_all(&g.body[..]).expect("zstd decodes"),
        other => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

fn accepts_gzip(ae: Option<&str>) -> bool {
    ae.is_some_and(|v| v.contains("gzip") && !v.contains("gzip;q=0"))
}

async fn ask(c: &HttpClient, url: &str, ae: Option<&str>) -> Got {
    match ae {
        Some(v) => send(c, "GET", url, &[("accept-encoding", v)], "").await,
        None => get(c, url).await,
    }
}

/// An origin that gzips for clients that ask, with `Vary: Accept-Encoding` (what most
/// frameworks do): every spelling is one fill, and every client reads the origin's report.
async fn every_spelling_is_one_fill(store: StoreUnderTest) {
    let body = report(800);
    let b = body.clone();
    let origin = Origin::start(move |p, _| {
        let ae = p
            .headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let r = Reply::ok(b.clone())
            .header("content-type", "application/json")
            .header("vary", "Accept-Encoding")
            .header("etag", "\"r1\"");
        if ae.contains("gzip") {
            Reply {
                body: gzip(&b),
                ..r.header("content-encoding", "gzip")
            }
        } else {
            r
        }
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    for round in 0..2 {
        for ae in SPELLINGS {
            let g = ask(&c, &slate.url("/sales?region=eu"), ae).await;
            assert_eq!(g.status, 200, "{ae:?}");
            assert_eq!(decoded(&g), body, "{ae:?} reads the origin's report");
            let gz = accepts_gzip(ae);
            assert_eq!(g.header("content-encoding") == "gzip", gz, "{ae:?}");
            assert!(
                g.header("vary")
                    .to_ascii_lowercase()
                    .contains("accept-encoding"),
                "{ae:?}: {:?}",
                g.header("vary")
            );
            assert_eq!(
                g.header("content-length"),
                g.body.len().to_string(),
                "{ae:?}"
            );
            // The origin's ETag named its gzip bytes; identity bytes were made by slate.
            let etag = if gz { "\"r1\"" } else { "W/\"r1\"" };
            assert_eq!(g.header("etag"), etag, "{ae:?}");
            if round == 1 || ae != SPELLINGS[0] {
                assert!(g.cache().is_hit(), "{ae:?}: {}", g.cache_status());
            }
        }
    }
    assert_eq!(
        origin.hits("/sales?region=eu"),
        1,
        "one fill for every spelling"
    );
    slate.stop().await;
}

/// An origin that does not compress (most legacy reporting services): the report is stored
/// gzipped, sent as stored to gzip clients and decoded for the rest; HEAD says what GET
/// sends; the operator sees the saving in /metrics.
async fn identity_origin_is_stored_compressed(store: StoreUnderTest) {
    let body = report(2000);
    let b = body.clone();
    let origin = Origin::start(move |_, _| {
        Reply::ok(b.clone())
            .header("content-type", "application/json; charset=utf-8")
            .header("etag", "\"plain\"")
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    let url = slate.url("/big");
    let plain = get(&c, &url).await;
    assert_eq!(plain.body, body);
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(
        plain.header("etag"),
        "\"plain\"",
        "the origin's own bytes: strong"
    );
    let gz = ask(&c, &url, Some("gzip, deflate, br")).await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gz.header("etag"), "W/\"plain\"", "bytes slate made: weak");
    assert!(
        gz.body.len() * 4 < body.len(),
        "{} of {}",
        gz.body.len(),
        body.len()
    );
    assert_eq!(decoded(&gz), body);
    assert!(gz.cache().is_hit());
    // HEAD: the headers the GET gets, Content-Length included.
    for (ae, len) in [(None, body.len()), (Some("gzip"), gz.body.len())] {
        let mut h = vec![];
        if let Some(v) = ae {
            h.push(("accept-encoding", v));
        }
        let head = send(&c, "HEAD", &url, &h, "").await;
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), len.to_string(), "{ae:?}");
        assert_eq!(head.header("content-encoding"), ae.unwrap_or(""));
    }
    // A conditional request with the weak tag is answered 304 for either spelling.
    for ae in ["gzip", "identity"] {
        let h = [("accept-encoding", ae), ("if-none-match", "W/\"plain\"")];
        let nm = send(&c, "GET", &url, &h, "").await;
        assert_eq!(nm.status, 304, "{ae}");
        assert!(nm.body.is_empty());
    }
    let m = get(&c, &slate.admin_url("/metrics")).await.text();
    let value = |name: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(
        value("slate_stored_identity_bytes_total"),
        body.len() as u64
    );
    assert_eq!(value("slate_stored_body_bytes_total"), gz.body.len() as u64);
    assert!(value("slate_cache_answers_by_coding_total{coding=\"gzip\"}") >= 2);
    assert!(value("slate_cache_answers_by_coding_total{coding=\"identity\"}") >= 1);
    assert_eq!(origin.hits("/big"), 1);
    slate.stop().await;
}

/// `cache.compress = "zstd"`: a zstd client gets the stored bytes, a gzip-only client the
/// decoded report; a gzip origin body is decoded and stored as zstd.
async fn zstd_storage(store: StoreUnderTest) {
    let body = report(600);
    let b = body.clone();
    let origin = Origin::start(move |_, _| {
        Reply {
            body: gzip(&b),
            ..Reply::ok("")
        }
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(&format!("{RULE}[cache]\ncompress = \"zstd\"\n"))
        .start()
        .await;
    let c = client();
    let url = slate.url("/z");
    for (ae, coding) in [
        (Some("gzip, zstd"), "zstd"),
        (Some("gzip"), ""),
        (None, ""),
        (Some("zstd"), "zstd"),
    ] {
        let g = ask(&c, &url, ae).await;
        assert_eq!(g.header("content-encoding"), coding, "{ae:?}");
        assert_eq!(decoded(&g), body, "{ae:?}");
    }
    assert_eq!(origin.hits("/z"), 1);
    slate.stop().await;
}

/// Small bodies and types that do not compress are stored and sent as they are.
async fn what_is_not_compressed(store: StoreUnderTest) {
    let image: Vec<u8> = (0..4000u32).map(|i| (i * 31 % 251) as u8).collect();
    let img = Bytes::from(image);
    let i2 = img.clone();
    let origin = Origin::start(move |p, _| match p.uri.path() {
        "/tiny" => Reply::ok("{\"ok\":true}").header("content-type", "application/json"),
        _ => Reply::ok(i2.clone()).header("content-type", "image/png"),
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULE)
        .start()
        .await;
    let c = client();
    for _ in 0..2 {
        let t = ask(&c, &slate.url("/tiny"), Some("gzip")).await;
        assert_eq!(
            (t.header("content-encoding"), t.text()),
            ("".into(), "{\"ok\":true}".into())
        );
        let p = ask(&c, &slate.url("/img"), Some("gzip")).await;
        assert_eq!(p.header("content-encoding"), "");
        assert_eq!(p.body, img);
    }
    assert_eq!(origin.total(), 2);
    slate.stop().await;
}

on_both_stores!(
    every_spelling_is_one_fill,
    identity_origin_is_stored_compressed,
    zstd_storage,
    what_is_not_compressed,
);

/// On a Redis Cluster too: one fill for every spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_is_one_fill_on_a_cluster() {
    let cluster = RedisCluster::start();
    every_spelling_is_one_fill(cluster.store()).await;
}

/// What Redis holds is the compressed report (a quarter of it or less), and a corrupt
/// value there (a torn write, a foreign writer) is a miss that the next fill overwrites:
/// never a broken body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_compressed_bytes_and_a_corrupt_value_is_refilled() {
    let redis = RedisServer::start();
    let body = report(3000);
    let b = body.clone();
    let origin =
        Origin::start(move |_, _| Reply::ok(b.clone()).header("content-type", "application/json"))
            .await;
    let slate = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Redis(redis.url()))
        .config(RULE)
        .start()
        .await;
    let c = client();
    let url = slate.url("/stored");
    assert_eq!(get(&c, &url).await.body, body);
    let entry = get(&c, &slate.admin_url("/entry?url=/stored")).await;
    let j: serde_json::Value = serde_json::from_slice(&entry.body).unwrap();
    let key = j["key"].as_str().expect("a key").to_string();
    let held: usize = redis.cli(&["STRLEN", &key]).trim().parse().unwrap();
    assert!(
        held * 4 <= body.len(),
        "Redis holds {held} bytes for a {} byte report",
        body.len()
    );
    // Flip the last byte of the stored value (inside the compressed body).
    let last = held - 1;
    let byte = redis.cli(&["GETRANGE", &key, &last.to_string(), &last.to_string()]);
    let flipped = if byte.trim_end_matches('\n') == "x" {
        "y"
    } else {
        "x"
    };
    redis.cli(&["SETRANGE", &key, &last.to_string(), flipped]);
    for ae in [Some("gzip"), None] {
        let g = ask(&c, &url, ae).await;
        assert_eq!(decoded(&g), body, "{ae:?}: the report, never a broken body");
    }
    assert_eq!(
        origin.hits("/stored"),
        2,
        "the corrupt value was a miss, then refilled"
    );
    let g = ask(&c, &url, Some("gzip")).await;
    assert!(g.cache().is_hit(), "{}", g.cache_status());
    assert_eq!(origin.hits("/stored"), 2);
    slate.stop().await;
}

/// A body that does not decode in the coding it claims is passed on, never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_decode_is_not_stored() {
    let origin = Origin::start(|_, _| {
        Reply::ok(vec![0x1fu8, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Memory)
        .config(RULE)
        .start()
        .await;
    let c = client();
    for _ in 0..2 {
        let g = ask(&c, &slate.url("/broken"), Some("gzip")).await;
        assert_eq!(g.status, 200);
        assert_eq!(
            g.cache().detail(),
            Some("bad-coding"),
            "{}",
            g.cache_status()
        );
    }
    assert_eq!(origin.hits("/broken"), 2);
    slate.stop().await;
}
