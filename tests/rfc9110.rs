//! HTTP semantics beyond caching proper, as slate's cache answers them: RFC 9110 §14
//! (ranges) and RFC 9213 (targeted cache control). slate with no `[[rules]]` on the
//! memory store; one module per section, each test named by what the RFC says.

mod common;

use common::*;
use http::request::Parts;
use std::time::Duration;

/// A 1000-byte report: byte `i` is `b'a' + i % 26`.
fn report() -> Vec<u8> {
    (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect()
}

async fn start(f: impl Fn(&Parts, usize) -> Reply + Send + Sync + 'static) -> (Origin, Slate) {
    let origin = Origin::start(f).await;
    let slate = Slate::builder(&origin.url()).start().await;
    (origin, slate)
}

mod s14_ranges {
    //! RFC 9110 §14: range requests answered from the stored representation.
    use super::*;

    fn stored_report(_: &Parts, _: usize) -> Reply {
        Reply::ok(report())
            .header("cache-control", "max-age=600")
            .header("content-type", "text/csv")
            .header("etag", "\"r1\"")
    }

    /// §14.2 / §15.3.7: one range of each form gets 206, `Content-Range` and only those
    /// bytes, from the cache; the origin is asked once, for the whole report, never with
    /// `Range`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_range_is_206_with_only_those_bytes() {
        let (origin, slate) = start(stored_report).await;
        let c = client();
        let full = report();
        for (range, first, last) in [
            ("bytes=0-9", 0usize, 9usize),
            ("bytes=990-", 990, 999),
            ("bytes=-5", 995, 999),
            ("bytes=500-5000", 500, 999),
        ] {
            let g = send(&c, "GET", &slate.url("/csv"), &[("range", range)], "").await;
            assert_eq!(g.status, 206, "{range}: {}", g.cache_status());
            assert_eq!(
                g.header("content-range"),
                format!("bytes {first}-{last}/1000")
            );
            assert_eq!(&g.body[..], &full[first..=last], "{range}");
            assert_eq!(g.header("content-length"), (last - first + 1).to_string());
        }
        assert_eq!(origin.hits("/csv"), 1, "one fill, of the whole report");
        let seen = origin.last_headers.lock().unwrap().clone().unwrap();
        assert!(seen.get("range").is_none(), "Range went upstream: {seen:?}");
        let whole = get(&c, &slate.url("/csv")).await;
        assert_eq!((whole.status, whole.body.len()), (200, 1000));
        assert_eq!(whole.header("accept-ranges"), "bytes");
        slate.stop().await;
    }

    /// §15.5.17: a range that cannot be satisfied is 416 with `Content-Range: bytes */len`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsatisfiable_range_is_416() {
        let (_origin, slate) = start(stored_report).await;
        let c = client();
        get(&c, &slate.url("/csv")).await;
        let g = send(
            &c,
            "GET",
            &slate.url("/csv"),
            &[("range", "bytes=1000-")],
            "",
        )
        .await;
        assert_eq!(g.status, 416, "{}", g.cache_status());
        assert_eq!(g.header("content-range"), "bytes */1000");
        assert!(g.body.is_empty());
        slate.stop().await;
    }

    /// §13.1.5: `If-Range` with the current strong validator → the range; with another →
    /// the whole 200.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn if_range_gives_the_range_only_on_a_match() {
        let (_origin, slate) = start(stored_report).await;
        let c = client();
        get(&c, &slate.url("/csv")).await;
        let url = slate.url("/csv");
        let same = [("range", "bytes=0-3"), ("if-range", "\"r1\"")];
        let g = send(&c, "GET", &url, &same, "").await;
        assert_eq!((g.status, g.text().as_str()), (206, "abcd"));
        let other = [("range", "bytes=0-3"), ("if-range", "\"r0\"")];
        let g = send(&c, "GET", &url, &other, "").await;
        assert_eq!((g.status, g.body.len()), (200, 1000));
        slate.stop().await;
    }

    /// §14.2 (slate's choice): several ranges get the whole representation, which a
    /// server may send instead (no `multipart/byteranges`); `HEAD` ignores `Range`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_ranges_and_head_get_the_whole() {
        let (_origin, slate) = start(stored_report).await;
        let c = client();
        get(&c, &slate.url("/csv")).await;
        let url = slate.url("/csv");
        let g = send(&c, "GET", &url, &[("range", "bytes=0-1,5-6")], "").await;
        assert_eq!((g.status, g.body.len()), (200, 1000));
        let h = send(&c, "HEAD", &url, &[("range", "bytes=0-1")], "").await;
        assert_eq!(
            (h.status, h.header("content-length").as_str()),
            (200, "1000")
        );
        slate.stop().await;
    }

    /// §14 applies to the representation selected: slate cuts ranges from the identity
    /// bytes, also of a report it stores gzip-compressed, whatever the client accepts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranges_are_of_the_identity_representation() {
        let big: Vec<u8> = std::iter::repeat_n(report(), 20).flatten().collect();
        let body = big.clone();
        let (_origin, slate) = start(move |_, _| {
            Reply::ok(body.clone())
                .header("cache-control", "max-age=600")
                .header("content-type", "application/json")
        })
        .await;
        let c = client();
        get(&c, &slate.url("/big")).await;
        let h = [("range", "bytes=10000-10009"), ("accept-encoding", "gzip")];
        let g = send(&c, "GET", &slate.url("/big"), &h, "").await;
        assert_eq!(g.status, 206, "{:?}", g.headers);
        assert!(g.header("content-encoding").is_empty(), "{:?}", g.headers);
        assert_eq!(&g.body[..], &big[10000..10010]);
        slate.stop().await;
    }
}

mod rfc9213_targeted {
    //! RFC 9213: `CDN-Cache-Control`, and slate's own `Slate-Cache-Control`.
    use super::*;

    async fn twice_with(cdn: &'static str, cc: &'static str) -> (Got, Got, Origin) {
        twice(&[("cdn-cache-control", cdn), ("cache-control", cc)]).await
    }

    /// A report with headers `cc`, asked twice: the second is `body-1` when reused.
    async fn twice(cc: &[(&'static str, &'static str)]) -> (Got, Got, Origin) {
        let cc = cc.to_vec();
        let (origin, slate) = start(move |_, n| {
            let mut r = Reply::ok(format!("body-{n}"));
            for (k, v) in &cc {
                r = r.header(k, v);
            }
            r
        })
        .await;
        let c = client();
        let a = get(&c, &slate.url("/t")).await;
        let b = get(&c, &slate.url("/t")).await;
        slate.stop().await;
        (a, b, origin)
    }

    /// §2.2: a targeted field present decides alone: `max-age=0` there is not reused
    /// despite a long `Cache-Control` and a future `Expires`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn targeted_field_decides_over_cache_control() {
        let (_, b, _) = twice(&[
            ("cdn-cache-control", "max-age=0"),
            ("cache-control", "max-age=600"),
            ("expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
        ])
        .await;
        assert_eq!(b.text(), "body-2", "{}", b.cache_status());
        let (_, b, _) = twice(&[
            ("cdn-cache-control", "max-age=600"),
            ("cache-control", "no-store"),
        ])
        .await;
        assert_eq!(b.text(), "body-1", "{}", b.cache_status());
    }

    /// §2.1: a field that is not a valid Dictionary is ignored, and the next one decides;
    /// huge values are clamped, not refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_field_falls_back_and_huge_values_clamp() {
        let (_, b, _) = twice(&[
            ("cdn-cache-control", "max-age=\"600\""),
            ("cache-control", "no-store"),
        ])
        .await;
        assert_eq!(
            b.text(),
            "body-2",
            "wrong type ignored: {}",
            b.cache_status()
        );
        let (_, b, _) = twice(&[("cdn-cache-control", "max-age=99999999999")]).await;
        assert_eq!(b.text(), "body-1", "clamped: {}", b.cache_status());
    }

    /// §2.1: freshness from the targeted field alone, against `Cache-Control` either way,
    /// and an `Age` beyond its `max-age` is stale; unknown members and parameters are
    /// ignored. Time moves on slate's clock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn targeted_max_age_decides_both_ways() {
        let origin = Origin::start(|p, n| {
            let (cdn, cc, age) = match p.uri.path() {
                "/long" => ("max-age=600", "max-age=1", "0"),
                "/short" => ("max-age=1", "max-age=600", "0"),
                "/aged" => ("max-age=60", "max-age=600", "100"),
                _ => ("max-age=600;foo=1, unknown=\"x\", ext", "no-store", "0"),
            };
            Reply::ok(format!("body-{n}"))
                .header("cdn-cache-control", cdn)
                .header("cache-control", cc)
                .header("age", age)
        })
        .await;
        let slate = Slate::builder(&origin.url()).start().await;
        let clock = &slate.clock;
        let c = client();
        for pq in ["/long", "/short", "/aged", "/unknown"] {
            get(&c, &slate.url(pq)).await;
        }
        clock.advance(Duration::from_secs(30));
        for (pq, reused) in [
            ("/long", true),
            ("/short", false),
            ("/aged", false),
            ("/unknown", true),
        ] {
            let g = get(&c, &slate.url(pq)).await;
            assert_eq!(g.text() == "body-1", reused, "{pq}: {}", g.cache_status());
        }
        slate.stop().await;
    }

    /// §2.1: the directives of `Cache-Control` have their meaning in the targeted field:
    /// `no-store`, `private`, `no-cache` keep a response from being reused as is, while
    /// `Cache-Control` would allow it; `must-revalidate` forbids the stale answer that
    /// `stale-if-error` there allows; `stale-while-revalidate` there answers stale at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn targeted_directives_are_honored() {
        for cdn in ["no-store", "private", "max-age=600, no-cache"] {
            let (_, b, _) = twice_with(cdn, "max-age=600").await;
            assert_eq!(b.text(), "body-2", "{cdn}: {}", b.cache_status());
        }
        let origin = Origin::start(|p, n| {
            let cdn = match p.uri.path() {
                "/mr" => "max-age=1, must-revalidate, stale-if-error=600",
                "/sie" => "max-age=1, stale-if-error=600",
                _ => "max-age=1, stale-while-revalidate=600",
            };
            let r = Reply::ok(format!("body-{n}")).header("cdn-cache-control", cdn);
            if n > 1 && p.uri.path() != "/swr" {
                Reply::ok("down").status(503)
            } else {
                r
            }
        })
        .await;
        let slate = Slate::builder(&origin.url()).start().await;
        let clock = &slate.clock;
        let c = client();
        for pq in ["/mr", "/sie", "/swr"] {
            get(&c, &slate.url(pq)).await;
        }
        clock.advance(Duration::from_secs(30));
        let mr = get(&c, &slate.url("/mr")).await;
        assert_eq!(mr.status, 503, "must-revalidate: {}", mr.cache_status());
        let sie = get(&c, &slate.url("/sie")).await;
        assert_eq!(
            (sie.status, sie.text().as_str()),
            (200, "body-1"),
            "{}",
            sie.cache_status()
        );
        let swr = get(&c, &slate.url("/swr")).await;
        assert_eq!(
            swr.text(),
            "body-1",
            "stale at once: {}",
            swr.cache_status()
        );
        eventually("the background refresh", Duration::from_secs(5), || async {
            (origin.hits("/swr") == 2).then_some(())
        })
        .await;
        slate.stop().await;
    }

    /// SPEC: `Slate-Cache-Control` beats `CDN-Cache-Control`, and is stripped before the
    /// answer leaves slate; `CDN-Cache-Control` is forwarded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slate_field_first_and_stripped() {
        let (a, b, _) = twice(&[
            ("slate-cache-control", "max-age=600"),
            ("cdn-cache-control", "no-store"),
        ])
        .await;
        assert_eq!(b.text(), "body-1", "{}", b.cache_status());
        for g in [&a, &b] {
            assert!(
                g.header("slate-cache-control").is_empty(),
                "{:?}",
                g.headers
            );
            assert_eq!(g.header("cdn-cache-control"), "no-store");
        }
    }
}

mod s5_6_7_dates {
    //! RFC 9110 §5.6.7: "Recipients of timestamp values are encouraged to be robust in
    //! parsing timestamps": IMF-fixdate, the obsolete RFC 850 and asctime forms, all three
    //! understood, whatever the letter case of day, month and zone names.
    use super::*;
    use std::time::SystemTime;

    /// `t` in each of the three forms and in case variants of them.
    fn forms(t: SystemTime) -> Vec<String> {
        let imf = httpdate::fmt_http_date(t); // "Thu, 03 Dec 2026 13:00:00 GMT"
        let p: Vec<&str> = imf.split(' ').collect();
        let (day, dd, mon, year, time) = (p[0].trim_end_matches(','), p[1], p[2], p[3], p[4]);
        let full = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ]
        .into_iter()
        .find(|d| d.starts_with(day))
        .unwrap();
        let rfc850 = format!("{full}, {dd}-{mon}-{} {time} GMT", &year[2..]);
        let d: u32 = dd.parse().unwrap();
        let asctime = format!("{day} {mon} {d:>2} {time} {year}");
        vec![
            imf.to_lowercase(),
            rfc850.to_uppercase(),
            asctime.to_lowercase(),
            imf,
            rfc850,
            asctime,
        ]
    }

    /// `Expires` (with `Date` in the same form) in any form: a future one is reused, a
    /// past one is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expires_and_date_in_every_form() {
        let now = SystemTime::now();
        let cases: Vec<(String, String, bool)> = forms(now)
            .into_iter()
            .zip(forms(now + Duration::from_secs(600)))
            .map(|(date, expires)| (date, expires, true))
            .chain(
                forms(now)
                    .into_iter()
                    .zip(forms(now - Duration::from_secs(600)))
                    .map(|(date, expires)| (date, expires, false)),
            )
            .collect();
        let table = std::sync::Arc::new(cases.clone());
        let (_origin, slate) = start(move |p, n| {
            let i: usize = p.uri.path()[2..].parse().unwrap();
            let (date, expires, _) = &table[i];
            Reply::ok(format!("body-{n}"))
                .header("date", date)
                .header("expires", expires)
        })
        .await;
        let c = client();
        for (i, (date, expires, fresh)) in cases.iter().enumerate() {
            let url = slate.url(&format!("/d{i}"));
            assert_eq!(get(&c, &url).await.text(), "body-1");
            let again = get(&c, &url).await;
            let reused = again.text() == "body-1";
            assert_eq!(
                reused,
                *fresh,
                "Date: {date} / Expires: {expires}: {}",
                again.cache_status()
            );
        }
        slate.stop().await;
    }

    /// `Last-Modified` in the RFC 850 form is compared with a client's IMF-fixdate
    /// `If-Modified-Since` (RFC 9110 §13.1.3).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn last_modified_in_an_obsolete_form() {
        let now = SystemTime::now();
        let modified = forms(now - Duration::from_secs(3600))[4].clone();
        let (_origin, slate) = start(move |_, n| {
            Reply::ok(format!("body-{n}"))
                .header("cache-control", "max-age=600")
                .header("last-modified", &modified)
        })
        .await;
        let c = client();
        let url = slate.url("/lm");
        get(&c, &url).await;
        let later = httpdate::fmt_http_date(now);
        let g = send(&c, "GET", &url, &[("if-modified-since", &later)], "").await;
        assert_eq!(g.status, 304, "{}", g.cache_status());
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7200));
        let g = send(&c, "GET", &url, &[("if-modified-since", &earlier)], "").await;
        assert_eq!((g.status, g.text().as_str()), (200, "body-1"));
        slate.stop().await;
    }
}

mod s15_2_informational {
    //! RFC 9110 §15.2: 1xx responses are interim, "the final response follows". slate
    //! reads past `102 Processing` and `103 Early Hints` from the origin to the final
    //! response, and stores that alone: no header of an interim response reaches the
    //! stored entry. The client whose request went upstream gets the 102 and 103 as they
    //! arrive, on HTTP/1.1 ("A server MUST NOT send a 1xx response to an HTTP/1.0
    //! client").
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Notify;

    const HINTS: &str = "HTTP/1.1 102 Processing\r\n\r\n\
        HTTP/1.1 103 Early Hints\r\nlink: </rows.css>; rel=preload\r\n\r\n";

    /// An origin that sends the interim responses at once and the final one only when
    /// `go` is notified: what the client reads before that came ahead of the report.
    async fn hinting_origin(go: Arc<Notify>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let go = go.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(HINTS.as_bytes()).await;
                    go.notified().await;
                    let last = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\
                        cache-control: max-age=600\r\nconnection: close\r\n\r\nreport";
                    let _ = s.write_all(last.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// Reads from `s` until `text` has arrived (at most 5 s); all that was read.
    async fn read_until(s: &mut TcpStream, text: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&got).contains(text) {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => panic!(
                    "{text:?} never came ({other:?}): {}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// §15.2: the 102 and 103 reach the client before the final response exists; the
    /// answer from the store afterwards has none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interim_responses_reach_the_client_first() {
        let go = Arc::new(Notify::new());
        let slate = Slate::builder(&hinting_origin(go.clone()).await)
            .start()
            .await;
        let mut s = TcpStream::connect(slate.addr).await.unwrap();
        s.write_all(b"GET /early HTTP/1.1\r\nhost: slate\r\n\r\n")
            .await
            .unwrap();
        let early = read_until(&mut s, "rel=preload\r\n\r\n").await;
        assert!(
            early.starts_with("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n"),
            "{early}"
        );
        assert!(!early.contains("200 OK"), "{early}");
        go.notify_one();
        let rest = read_until(&mut s, "report").await;
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
        assert!(!rest.to_ascii_lowercase().contains("link:"), "{rest}");
        // From the store: the final response alone.
        s.write_all(b"GET /early HTTP/1.1\r\nhost: slate\r\n\r\n")
            .await
            .unwrap();
        let hit = read_until(&mut s, "report").await;
        assert!(hit.starts_with("HTTP/1.1 200 OK\r\n"), "{hit}");
        assert!(hit.contains("hit"), "{hit}");
        slate.stop().await;
    }

    /// A request slate does not cache (here a POST) gets them as well.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_passed_request_gets_them_too() {
        let go = Arc::new(Notify::new());
        let slate = Slate::builder(&hinting_origin(go.clone()).await)
            .start()
            .await;
        let mut s = TcpStream::connect(slate.addr).await.unwrap();
        let post = b"POST /run HTTP/1.1\r\nhost: slate\r\ncontent-length: 2\r\n\r\n{}";
        s.write_all(post).await.unwrap();
        let early = read_until(&mut s, "rel=preload\r\n\r\n").await;
        assert!(early.contains("HTTP/1.1 103 Early Hints\r\n"), "{early}");
        go.notify_one();
        let rest = read_until(&mut s, "report").await;
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
        slate.stop().await;
    }

    /// An HTTP/1.0 client gets the final response alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_interim_response_to_http_1_0() {
        let go = Arc::new(Notify::new());
        let slate = Slate::builder(&hinting_origin(go.clone()).await)
            .start()
            .await;
        let mut s = TcpStream::connect(slate.addr).await.unwrap();
        s.write_all(b"GET /old HTTP/1.0\r\nhost: slate\r\n\r\n")
            .await
            .unwrap();
        // Give slate the interim responses before the final one exists.
        let c = client();
        let metrics = slate.admin_url("/metrics");
        eventually("the origin was asked", Duration::from_secs(5), || async {
            let m = get(&c, &metrics).await.text();
            m.contains("slate_upstream_requests_total 1").then_some(())
        })
        .await;
        go.notify_one();
        let got = read_until(&mut s, "report").await;
        assert!(
            got.starts_with("HTTP/1.0 200 OK\r\n") || got.starts_with("HTTP/1.1 200 OK\r\n"),
            "{got}"
        );
        assert!(!got.contains(" 103 "), "{got}");
        slate.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interim_responses_are_not_stored_nor_mixed_in() {
        let origin = RawOrigin::start(|_| {
            Some(
                "HTTP/1.1 102 Processing\r\nx-interim: 102\r\n\r\n\
                 HTTP/1.1 103 Early Hints\r\nlink: </rows.css>; rel=preload\r\n\
                 x-interim: 103\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 6\r\ncache-control: max-age=600\r\n\
                 connection: close\r\n\r\nreport"
                    .to_string(),
            )
        })
        .await;
        let slate = Slate::builder(&origin.url()).start().await;
        let c = client();
        for i in 0..2 {
            let g = get(&c, &slate.url("/hints")).await;
            assert_eq!((g.status, g.text().as_str()), (200, "report"), "{i}");
            assert!(g.header("x-interim").is_empty(), "{i}: {:?}", g.headers);
            assert!(g.header("link").is_empty(), "{i}: {:?}", g.headers);
            if i == 1 {
                assert!(g.cache().is_hit(), "stored: {}", g.cache_status());
            }
        }
        assert_eq!(origin.connections(), 1);
        slate.stop().await;
    }
}
