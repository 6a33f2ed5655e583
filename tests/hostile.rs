//! Reliability and security: store and origin outages, hostile input over raw sockets,
//! slow and many clients.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and returns the status code answered, or `None` if the connection was
/// closed (or reset) without an answer. Bounded by 5 s.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_or_a_closed_connection_never_5xx() {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let slate = Slate::builder(&origin.url()).config(RULE).start().await;
    let a = slate.addr;
    let long_url = format!("GET /r/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000));
    let huge_header = format!(
        "GET /r/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let many_headers = format!(
        "GET /r/a HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..300)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    // 2,000 parameters in just under the 8 KiB URL limit.
    let params: String = (0..2000)
        .map(|i| format!("{}=1&", (b'a' + (i % 26) as u8) as char))
        .collect();
    let many_params =
        format!("GET /r/many?{params} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "bad percent-encoding",
            b"GET /r/%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "truncated escape",
            b"GET /r/a%4 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        ("over-long URL", long_url.into_bytes(), Some(414)),
        ("huge header", huge_header.into_bytes(), None),
        ("300 headers", many_headers.into_bytes(), None),
        (
            "non-UTF-8 path",
            b"GET /r/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            None,
        ),
        (
            "garbage request line",
            b"HELLO THERE\r\n\r\n".to_vec(),
            None,
        ),
        (
            "binary garbage",
            vec![0u8, 159, 146, 150, 13, 10, 13, 10],
            None,
        ),
        (
            "absolute-form for another host",
            b"GET http://evil.example/r/a HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "CONNECT",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(),
            None,
        ),
        (
            "two Content-Lengths",
            b"POST /r/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            None,
        ),
        (
            "header without colon",
            b"GET /r/a HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n".to_vec(),
            None,
        ),
        (
            "malformed PURGE",
            b"PURGE /r/*a*b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "PURGE with a bad mode",
            b"PURGE /r/a HTTP/1.1\r\nHost: x\r\nPurge-Mode: maybe\r\n\r\n".to_vec(),
            Some(400),
        ),
    ];
    for (what, bytes, want) in cases {
        let got = raw(a, &bytes).await;
        match (want, got) {
            (Some(w), g) => assert_eq!(g, Some(w), "{what}"),
            (None, Some(code)) => assert!(
                (400..500).contains(&code),
                "{what}: got {code}, want 4xx or closed"
            ),
            (None, None) => {}
        }
    }
    assert_eq!(
        raw(a, many_params.as_bytes()).await,
        Some(200),
        "thousands of query parameters are fine"
    );
    // Content-Length with Transfer-Encoding (RFC 9112 §6.1, §6.3): the chunked framing wins,
    // and the connection is closed after the one answer, so nothing rides behind it.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"POST /r/a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /r/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the connection is closed after the answer");
    let text = String::from_utf8_lossy(&all);
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {text}"
    );
    assert!(!text.starts_with("HTTP/1.1 5"), "{text}");
    assert_eq!(
        origin.hits("/r/smuggled"),
        0,
        "nothing was smuggled through"
    );
    // slate still serves.
    let c = client();
    assert_eq!(get(&c, &slate.url("/r/ok")).await.status, 200);
    slate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_and_connections_are_bounded() {
    let origin = Origin::start(|p, n| {
        if p.uri.path() == "/r/slow" {
            Reply::ok("slow report").delay(Duration::from_millis(1200))
        } else {
            Reply::ok(format!("#{n}"))
        }
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .config("[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"1s\"\nmax_connections = 3\n")
        .config(RULE)
        .start()
        .await;

    // A client that never finishes its headers is dropped.
    let mut slow = TcpStream::connect(slate.addr).await.unwrap();
    slow.write_all(b"GET /r/a HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(_)) | Ok(Err(_))),
        "the connection was closed, not left hanging"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "dropped after the header timeout: {:?}",
        t.elapsed()
    );

    // An idle keep-alive connection is closed after idle_timeout...
    let mut idle = TcpStream::connect(slate.addr).await.unwrap();
    idle.write_all(b"GET /r/idle HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed when idle");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // ...but a connection waiting for a slow report is not idle.
    let mut waiting = TcpStream::connect(slate.addr).await.unwrap();
    waiting
        .write_all(b"GET /r/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("slow report"),
        "{head}"
    );
    drop(waiting);

    // max_connections = 3: a fourth waits until one of the three goes away.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(slate.addr).await.unwrap();
        s.write_all(b"GET /r/held HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s); // kept open (keep-alive)
    }
    let mut fourth = TcpStream::connect(slate.addr).await.unwrap();
    fourth
        .write_all(b"GET /r/fourth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(150), fourth.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "not served while three connections are open"
    );
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "served once a slot freed"
    );
    slate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections_are_served() {
    slate::server::raise_fd_limit();
    let origin = Origin::start(|_, _| Reply::ok("report")).await;
    let slate = Slate::builder(&origin.url()).config(RULE).start().await;
    let addr = slate.addr;
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            tokio::spawn(async move {
                let req = format!(
                    "GET /r/c?i={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    i % 10
                );
                raw(addr, req.as_bytes()).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == Some(200) {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    assert_eq!(
        origin.total(),
        10,
        "ten distinct reports, each fetched once"
    );
    slate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_under_load_every_request_answered() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let store = StoreUnderTest::Redis(redis.url());
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .store_keys("l1 = \"64MiB\"")
        .config(RULE)
        .start()
        .await;
    let c = client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (c, stop) = (c.clone(), stop.clone());
            let base = slate.url("/r/load?w=");
            tokio::spawn(async move {
                let (mut n, mut worst) = (0, Duration::ZERO);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let g = get(&c, &format!("{base}{w}&i={}", i % 20)).await;
                    worst = worst.max(t.elapsed());
                    assert_eq!(g.status, 200, "{}", g.text());
                    n += 1;
                    i += 1;
                }
                (n, worst)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let redis = RedisServer::start_on(port);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for l in load {
        let (n, worst) = l.await.unwrap();
        total += n;
        assert!(
            worst < Duration::from_secs(2),
            "no request hung on the dead store: {worst:?}"
        );
    }
    assert!(total > 50, "{total} requests answered, all 200");
    // Caching resumes on its own.
    let url = slate.url("/r/after");
    eventually(
        "caching resumed after Redis came back",
        Duration::from_secs(15),
        || async {
            get(&c, &url).await;
            get(&c, &url).await.cache().is_hit().then_some(())
        },
    )
    .await;
    assert!(redis
        .cli(&["--scan", "--pattern", "slate:*"])
        .contains("slate:v1:e:"));
    slate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_no_request_more_than_its_timeout() {
    let redis = RedisServer::start();
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let store = StoreUnderTest::Redis(redis.url());
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .store_keys("timeout = \"200ms\"")
        .config(RULE)
        .start()
        .await;
    let c = client();
    get(&c, &slate.url("/r/h")).await;
    let pid = redis_pid(&redis);
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        let g = get(&c, &slate.url(&format!("/r/h{i}"))).await;
        worst = worst.max(t.elapsed());
        assert_eq!(g.status, 200);
    }
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    assert!(
        worst < Duration::from_millis(1500),
        "the breaker keeps requests off a hung store: {worst:?}"
    );
    slate.stop().await;
}

fn redis_pid(r: &RedisServer) -> String {
    r.cli(&["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|s| s.trim().to_string())
        .expect("redis pid")
}
