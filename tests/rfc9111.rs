//! HTTP caching conformance: slate with no `[[rules]]` on the memory store, as an RFC 9111
//! shared cache. One module per section of RFC 9111 (HTTP Caching), RFC 5861
//! (stale-while-revalidate, stale-if-error), RFC 9211 (Cache-Status) and RFC 9110
//! (conditional requests, HEAD). Each test names the rule it checks.
//!
//! Time moves with `clock.advance`; the test origin stamps `Date` from the same clock, so
//! an advanced clock never looks like a skewed origin. Documented choices of slate (not
//! RFC requirements) are marked "slate's choice".

mod common;

use common::*;
use http::request::Parts;
use slate::clock::Clock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The helpers (Env, env, ok, ...) are at the bottom of the file.

mod s3_storing {
    //! RFC 9111 §3: storing responses in caches.
    use super::*;

    /// §3 / §5.2.2.5: `no-store` forbids storing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_store_is_not_stored() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=600, no-store")).await;
        assert_eq!(t.get("/ns").await.text(), "body-1");
        let b = t.get("/ns").await;
        assert_eq!(b.text(), "body-2", "{}", b.cache_status());
        assert_eq!(t.hits("/ns"), 2);
        assert!(!b.cache().has("stored"), "{}", b.cache_status());
    }

    /// §3 / §5.2.2.7: a shared cache MUST NOT store a `private` response.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn private_is_not_stored() {
        let t = env(|_, n| ok(n).header("cache-control", "private, max-age=600")).await;
        t.get("/p").await;
        assert_eq!(t.get("/p").await.text(), "body-2");
        assert_eq!(t.hits("/p"), 2);
    }

    /// Directive names are case-insensitive (§5.2): `PRIVATE` is `private`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn private_in_upper_case_is_not_stored() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=600, PRIVATE")).await;
        t.get("/pu").await;
        assert_eq!(t.get("/pu").await.text(), "body-2");
    }

    /// Slate's choice (README): a response with `Set-Cookie` belongs to one client and is
    /// never stored, even with explicit freshness.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn set_cookie_is_not_stored() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "public, max-age=600")
                .header("set-cookie", "session=abc")
        })
        .await;
        let a = t.get("/sc").await;
        assert_eq!(a.header("set-cookie"), "session=abc");
        let b = t.get("/sc").await;
        assert_eq!(b.text(), "body-2", "{}", b.cache_status());
        assert_eq!(t.hits("/sc"), 2);
    }

    /// §5.2.2.4: `no-cache` may be stored but MUST NOT be reused without successful
    /// validation: every request goes to the origin with `If-None-Match`, and a 304 lets
    /// the stored 200 answer; with or without a freshness lifetime of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_cache_with_etag_is_revalidated_every_time() {
        for (path, cc) in [("/nc", "no-cache, max-age=3600"), ("/pnc", "no-cache")] {
            let t = env(move |p, n| {
                if n > 1 && hdr(p, "if-none-match") == "\"e1\"" {
                    Reply::ok("").status(304).header("etag", "\"e1\"")
                } else {
                    ok(n).header("cache-control", cc).header("etag", "\"e1\"")
                }
            })
            .await;
            assert_eq!(t.get(path).await.text(), "body-1");
            for i in 2..=4 {
                let g = t.get(path).await;
                assert_eq!(t.hits(path), i, "{cc}: request {i} was not revalidated");
                assert_eq!(t.seen("if-none-match"), "\"e1\"");
                assert_eq!(g.status, 200);
                assert_eq!(g.text(), "body-1", "{cc}: the stored body answers the 304");
                assert_eq!(g.cache().fwd_status(), Some(304), "{}", g.cache_status());
                assert!(!g.cache().is_hit(), "{}", g.cache_status());
            }
        }
    }

    /// §5.2.2.4: without a validator a `no-cache` response can only be refetched whole;
    /// it is never served from the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_cache_without_validator_is_never_reused() {
        let t = env(|_, n| ok(n).header("cache-control", "no-cache, max-age=3600")).await;
        t.get("/ncv").await;
        let b = t.get("/ncv").await;
        assert_eq!(b.text(), "body-2");
        assert_eq!(t.hits("/ncv"), 2);
    }

    /// §3 / RFC 9110 §15.3.7: slate does not implement range caching, so a 206 is never
    /// stored (§3.3 allows storing it only when the cache supports ranges).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partial_content_is_not_stored() {
        let t = env(|_, n| {
            ok(n)
                .status(206)
                .header("content-range", "bytes 0-5/100")
                .header("cache-control", "max-age=600")
        })
        .await;
        let a = t.get("/range").await;
        assert_eq!(a.status, 206);
        let b = t.get("/range").await;
        assert_eq!(b.text(), "body-2");
        assert_eq!(t.hits("/range"), 2);
    }

    /// §3: a shared cache may store any final response with explicit freshness, whatever
    /// its status: a `503` with `max-age=5` is an overloaded origin asking to be left alone
    /// five seconds. Reused while fresh, never once stale (no stale window was given).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_final_status_with_explicit_freshness_is_stored() {
        for status in [299u16, 303, 400, 499, 500, 502, 503, 504, 599] {
            let t =
                env(move |_, n| ok(n).status(status).header("cache-control", "max-age=5")).await;
            assert_eq!(t.get("/e").await.status, status);
            let b = t.get("/e").await;
            assert_eq!(
                (b.status, b.text().as_str()),
                (status, "body-1"),
                "{status}"
            );
            assert!(b.cache().is_hit(), "{status}: {}", b.cache_status());
            t.advance(6);
            let c = t.get("/e").await;
            assert_eq!(c.text(), "body-2", "{status} reused once stale");
            assert_eq!(t.hits("/e"), 2, "{status}");
        }
    }

    /// §3: an error without explicit freshness is not stored: heuristic freshness is for
    /// the statuses RFC 9110 §15.1 lists, and slate gives none to errors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_errors_without_freshness_are_not_stored() {
        for status in [500u16, 502, 503, 504] {
            let t = env(move |_, n| ok(n).status(status)).await;
            assert_eq!(t.get("/e").await.status, status);
            let b = t.get("/e").await;
            assert_eq!(b.text(), "body-2", "{status} was served from the cache");
        }
    }

    /// §5.2.2.3: `must-understand` with a status slate does not implement caching for means
    /// not stored (`no-store` is the fallback it comes with); with one it knows, the
    /// response's freshness decides as usual.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn must_understand_with_an_unknown_status_is_not_stored() {
        for (status, stored) in [(299u16, false), (599, false), (200, true), (404, true)] {
            let t = env(move |_, n| {
                ok(n)
                    .status(status)
                    .header("cache-control", "max-age=600, must-understand, no-store")
            })
            .await;
            t.get("/mu").await;
            let b = t.get("/mu").await;
            let want = if stored { "body-1" } else { "body-2" };
            assert_eq!(b.text(), want, "{status}: {}", b.cache_status());
        }
    }

    /// §3 / RFC 9110 §15.1: a 404 with explicit freshness is stored and reused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_found_with_max_age_is_stored() {
        let t = env(|_, n| ok(n).status(404).header("cache-control", "max-age=600")).await;
        assert_eq!(t.get("/missing").await.status, 404);
        let b = t.get("/missing").await;
        assert_eq!(b.status, 404);
        assert_eq!(b.text(), "body-1");
        assert!(b.cache().is_hit(), "{}", b.cache_status());
        assert_eq!(t.hits("/missing"), 1);
    }

    /// §3 / RFC 9110 §15.1: other statuses cacheable by default, given explicit freshness.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cacheable_statuses_with_max_age_are_stored() {
        for status in [203u16, 301, 308, 410] {
            let t = env(move |_, n| {
                ok(n)
                    .status(status)
                    .header("location", "/elsewhere")
                    .header("cache-control", "max-age=600")
            })
            .await;
            t.get("/s").await;
            let b = t.get("/s").await;
            assert_eq!(b.status, status);
            assert!(b.cache().is_hit(), "{status}: {}", b.cache_status());
            assert_eq!(t.hits("/s"), 1, "{status}");
        }
    }

    /// §4.2.2 permits heuristic freshness; slate's choice (README, SPEC) is none: without
    /// `s-maxage`, `max-age` or `Expires` nothing is stored, even with `Last-Modified`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_explicit_freshness_is_not_stored() {
        let t = env(|_, n| {
            ok(n)
                .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
                .header("cache-control", "public")
        })
        .await;
        let a = t.get("/h").await;
        assert!(!a.cache().has("stored"), "{}", a.cache_status());
        assert_eq!(t.get("/h").await.text(), "body-2");
        assert_eq!(t.hits("/h"), 2);
    }

    /// §3.5: a shared cache MUST NOT reuse a response to a request with `Authorization`
    /// (unless the response explicitly allows it; slate never does).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn response_to_authorized_request_is_not_reused() {
        let t = env(|p, n| {
            let who = if p.headers.contains_key("authorization") {
                "secret"
            } else {
                "public"
            };
            Reply::ok(format!("{who}-{n}")).header("cache-control", "max-age=600")
        })
        .await;
        let a = t
            .send("GET", "/auth", &[("authorization", "Bearer x")])
            .await;
        assert_eq!(a.text(), "secret-1");
        let b = t.get("/auth").await;
        assert_eq!(b.text(), "public-2", "an authorized answer was shared");
        let c = t.get("/auth").await;
        assert_eq!(c.text(), "public-2");
        assert!(c.cache().is_hit(), "{}", c.cache_status());
    }

    /// §3.1: header fields listed in `Connection` are hop-by-hop (RFC 9110 §7.6.1): not
    /// forwarded, and not stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_listed_headers_are_not_stored() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=600")
                .header("connection", "x-hop")
                .header("x-hop", "1")
                .header("x-kept", "1")
        })
        .await;
        let a = t.get("/hop").await;
        let b = t.get("/hop").await;
        assert!(b.cache().is_hit(), "{}", b.cache_status());
        for g in [&a, &b] {
            assert_eq!(g.header("x-hop"), "", "hop-by-hop header forwarded");
            assert_eq!(g.header("x-kept"), "1");
        }
    }

    /// §5.2.1.5: "The no-store request directive indicates that a cache MUST NOT store any
    /// part of either this request or any response to it."
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_no_store_is_not_stored() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=600")).await;
        let a = t
            .send("GET", "/rns", &[("cache-control", "no-store")])
            .await;
        assert_eq!(a.text(), "body-1");
        assert!(!a.cache().has("stored"), "{}", a.cache_status());
        let b = t.get("/rns").await;
        assert_eq!(b.text(), "body-2", "{}", b.cache_status());
        assert_eq!(t.hits("/rns"), 2);
    }
}

mod s4_reuse {
    //! RFC 9111 §4: constructing responses from caches (keys and methods).
    use super::*;

    /// §4 / §2: the cache key is the target URI; a different query is another response.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn query_is_part_of_the_key() {
        let t = env(|p, _| {
            Reply::ok(p.uri.query().unwrap_or("").to_string())
                .header("cache-control", "max-age=600")
        })
        .await;
        assert_eq!(t.get("/q?a=1").await.text(), "a=1");
        assert_eq!(t.get("/q?a=2").await.text(), "a=2");
        let again = t.get("/q?a=1").await;
        assert_eq!(again.text(), "a=1");
        assert!(again.cache().is_hit(), "{}", again.cache_status());
        assert_eq!(t.origin.total(), 2);
    }

    /// §4: a stored response is only used for a request with the same method; the answer
    /// to a POST never answers a GET.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn post_response_is_not_reused_for_get() {
        let t =
            env(|p, _| Reply::ok(format!("{}", p.method)).header("cache-control", "max-age=600"))
                .await;
        assert_eq!(t.send("POST", "/m", &[]).await.text(), "POST");
        let g = t.get("/m").await;
        assert_eq!(g.text(), "GET");
        assert_eq!(t.hits("/m"), 2);
    }
}

mod s4_1_vary {
    //! RFC 9111 §4.1: calculating cache keys with the Vary header field.
    use super::*;

    /// (Accept-Encoding is the one header slate leaves out of the variant selection:
    /// it serves every coding from one entry, see `tests/codings.rs`. These use others.)
    fn by_language(p: &Parts, n: usize) -> Reply {
        Reply::ok(format!("{}-{n}", hdr(p, "accept-language")))
            .header("cache-control", "max-age=600")
            .header("vary", "Accept-Language")
    }

    /// Two different values of a varying header: two stored responses, each served to the
    /// requests that match it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn variants_are_stored_apart() {
        let t = env(by_language).await;
        let en = [("accept-language", "en")];
        let fr = [("accept-language", "fr")];
        assert_eq!(t.send("GET", "/v", &en).await.text(), "en-1");
        assert_eq!(t.send("GET", "/v", &fr).await.text(), "fr-2");
        for _ in 0..2 {
            let a = t.send("GET", "/v", &en).await;
            assert_eq!(a.text(), "en-1");
            assert!(a.cache().is_hit(), "{}", a.cache_status());
            let b = t.send("GET", "/v", &fr).await;
            assert_eq!(b.text(), "fr-2");
            assert!(b.cache().is_hit(), "{}", b.cache_status());
        }
        assert_eq!(t.hits("/v"), 2);
    }

    /// A request without the header does not match a response selected with it, and the
    /// other way round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn absent_header_is_its_own_variant() {
        let t = env(by_language).await;
        assert_eq!(t.get("/va").await.text(), "-1");
        let en = t.send("GET", "/va", &[("accept-language", "en")]).await;
        assert_eq!(en.text(), "en-2");
        let none = t.get("/va").await;
        assert_eq!(none.text(), "-1");
        assert!(none.cache().is_hit(), "{}", none.cache_status());
        assert_eq!(t.hits("/va"), 2);
    }

    /// "normalizing both header values in a way that is known to have identical semantics"
    /// (whitespace after commas, several field lines combined) is allowed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whitespace_and_lines_are_normalized() {
        let t = env(by_language).await;
        t.send("GET", "/vn", &[("accept-language", "en, fr")]).await;
        let b = t.send("GET", "/vn", &[("accept-language", "en,fr")]).await;
        assert!(b.cache().is_hit(), "{}", b.cache_status());
        let c = t
            .send(
                "GET",
                "/vn",
                &[("accept-language", "en"), ("accept-language", "fr")],
            )
            .await;
        assert!(c.cache().is_hit(), "{}", c.cache_status());
        assert_eq!(t.hits("/vn"), 1);
    }

    /// Header field names in `Vary` are case-insensitive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vary_names_are_case_insensitive() {
        let t = env(|p, n| {
            Reply::ok(format!("{}-{n}", hdr(p, "accept-language")))
                .header("cache-control", "max-age=600")
                .header("vary", "ACCEPT-language")
        })
        .await;
        t.send("GET", "/vc", &[("accept-language", "en")]).await;
        let fr = t.send("GET", "/vc", &[("accept-language", "fr")]).await;
        assert_eq!(fr.text(), "fr-2");
        let en = t.send("GET", "/vc", &[("Accept-Language", "en")]).await;
        assert_eq!(en.text(), "en-1");
        assert!(en.cache().is_hit(), "{}", en.cache_status());
    }

    /// `Vary: *` always fails to match: never served from the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vary_star_is_never_reused() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=600")
                .header("vary", "*")
        })
        .await;
        t.get("/star").await;
        let b = t.get("/star").await;
        assert_eq!(b.text(), "body-2");
        assert!(!b.cache().is_hit(), "{}", b.cache_status());
        assert_eq!(t.hits("/star"), 2);
    }

    /// `Vary` with two headers: every listed header must match.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_varying_headers_must_both_match() {
        let t = env(|p, n| {
            Reply::ok(format!(
                "{}/{}-{n}",
                hdr(p, "accept"),
                hdr(p, "accept-language")
            ))
            .header("cache-control", "max-age=600")
            .header("vary", "Accept")
            .header("vary", "Accept-Language")
        })
        .await;
        let ask = |e: &'static str, l: &'static str| [("accept", e), ("accept-language", l)];
        assert_eq!(
            t.send("GET", "/v2", &ask("text/csv", "en")).await.text(),
            "text/csv/en-1"
        );
        assert_eq!(
            t.send("GET", "/v2", &ask("text/csv", "fr")).await.text(),
            "text/csv/fr-2"
        );
        assert_eq!(
            t.send("GET", "/v2", &ask("application/json", "en"))
                .await
                .text(),
            "application/json/en-3"
        );
        for (e, l, body) in [
            ("text/csv", "en", "text/csv/en-1"),
            ("text/csv", "fr", "text/csv/fr-2"),
            ("application/json", "en", "application/json/en-3"),
        ] {
            let g = t.send("GET", "/v2", &ask(e, l)).await;
            assert_eq!(g.text(), body);
            assert!(g.cache().is_hit(), "{e}/{l}: {}", g.cache_status());
        }
        assert_eq!(t.hits("/v2"), 3);
    }

    /// §4.1 allows normalizing "in a way that is known to have identical semantics": for
    /// `Accept-Language` slate selects variants by the language ranges in order of
    /// preference (qvalue, then position), case folded; qvalues only order, so
    /// `fr;q=0.5, EN-us` is `en-US, fr;q=0.5`, but `fr, en` is not `en, fr` (slate's choice).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accept_language_variants_by_normalized_list() {
        let t = env(by_language).await;
        let first = t
            .send("GET", "/al", &[("accept-language", "en-US, fr;q=0.5")])
            .await;
        assert_eq!(first.text(), "en-US, fr;q=0.5-1");
        for same in ["fr;q=0.5, EN-us", "en-us,FR;q=0.5", "EN-US ;q=1, fr;q=0.5"] {
            let g = t.send("GET", "/al", &[("accept-language", same)]).await;
            assert!(g.cache().is_hit(), "{same}: {}", g.cache_status());
            assert_eq!(g.text(), "en-US, fr;q=0.5-1", "{same}");
        }
        t.send("GET", "/al", &[("accept-language", "fr, en")]).await;
        let other = t.send("GET", "/al", &[("accept-language", "en, fr")]).await;
        assert_eq!(other.text(), "en, fr-3", "{}", other.cache_status());
        assert_eq!(t.hits("/al"), 3);
    }
}

mod s4_2_freshness {
    //! RFC 9111 §4.2: freshness.
    use super::*;

    /// §4.2.1 / §5.2.2.10: for a shared cache `s-maxage` overrides `max-age`, whether
    /// longer or shorter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s_maxage_overrides_max_age() {
        let t = env(|p, n| {
            let cc = match p.uri.path() {
                "/long" => "max-age=10, s-maxage=100",
                "/zero" => "max-age=600, s-maxage=0",
                _ => "max-age=100, s-maxage=10",
            };
            ok(n).header("cache-control", cc)
        })
        .await;
        t.get("/long").await;
        t.get("/short").await;
        t.get("/zero").await;
        assert_eq!(
            t.get("/zero").await.text(),
            "body-2",
            "s-maxage=0 is stale at once"
        );
        t.advance(50);
        let long = t.get("/long").await;
        assert!(long.cache().is_hit(), "{}", long.cache_status());
        assert_eq!(t.hits("/long"), 1);
        let short = t.get("/short").await;
        assert!(!short.cache().is_hit(), "{}", short.cache_status());
        assert_eq!(t.hits("/short"), 2);
    }

    /// §5.3: with `max-age`, `Expires` MUST be ignored, whether earlier or later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_age_overrides_expires() {
        let clock = Clock::system();
        let ck = clock.clone();
        let t = env_at(clock, "", move |p, n| {
            if p.uri.path() == "/past" {
                ok(n)
                    .header("cache-control", "max-age=100")
                    .header("expires", &http_date(&ck, -3600))
            } else {
                ok(n)
                    .header("cache-control", "max-age=10")
                    .header("expires", &http_date(&ck, 3600))
            }
        })
        .await;
        t.get("/past").await;
        t.get("/future").await;
        t.advance(50);
        let past = t.get("/past").await;
        assert!(past.cache().is_hit(), "{}", past.cache_status());
        let future = t.get("/future").await;
        assert_eq!(future.text(), "body-2", "{}", future.cache_status());
    }

    /// §4.2.1: without `max-age`, the freshness lifetime is `Expires` minus `Date` (the
    /// origin's clock, not the cache's): an origin one hour ahead still gets 100 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expires_minus_date() {
        let clock = Clock::system();
        let ck = clock.clone();
        let t = env_at(clock, "", move |_, n| {
            ok(n)
                .header("date", &http_date(&ck, 3600))
                .header("expires", &http_date(&ck, 3700))
        })
        .await;
        t.get("/exp").await;
        t.advance(90);
        let a = t.get("/exp").await;
        assert!(a.cache().is_hit(), "{}", a.cache_status());
        t.advance(20);
        let b = t.get("/exp").await;
        assert_eq!(b.text(), "body-2", "{}", b.cache_status());
    }

    /// A response is fresh while its age is below its lifetime and stale after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fresh_until_max_age_then_stale() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=30")).await;
        t.get("/f").await;
        t.advance(28);
        let a = t.get("/f").await;
        assert_eq!(a.text(), "body-1");
        assert!(a.cache().is_hit(), "{}", a.cache_status());
        t.advance(4);
        let b = t.get("/f").await;
        assert_eq!(b.text(), "body-2");
        assert_eq!(t.hits("/f"), 2);
    }

    /// `max-age=0`: stale at once, never served without validation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_age_zero_is_never_served_from_cache() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=0")).await;
        for i in 1..=3 {
            let g = t.get("/z").await;
            assert_eq!(g.text(), format!("body-{i}"));
            assert!(!g.cache().is_hit(), "{}", g.cache_status());
        }
    }

    /// §4.2.1: invalid freshness values are treated as stale ("caches are encouraged to
    /// consider responses that have invalid freshness information to be stale").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_max_age_is_stale() {
        for cc in [
            "max-age=soon",
            "max-age=-5",
            "max-age=1.5",
            "max-age=",
            "max-age",
        ] {
            let t = env(move |_, n| ok(n).header("cache-control", cc)).await;
            t.get("/i").await;
            let b = t.get("/i").await;
            assert_eq!(b.text(), "body-2", "{cc:?} was served from the cache");
        }
    }

    /// §4.2.1: duplicate `max-age` with different values: slate treats the response as
    /// stale (the RFC's other option is using the first).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conflicting_duplicate_max_age_is_stale() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=600")
                .header("cache-control", "max-age=1200")
        })
        .await;
        t.get("/dup").await;
        assert_eq!(t.get("/dup").await.text(), "body-2");
    }

    /// §5.2: recipients SHOULD accept the quoted form of a delta (`max-age="60"`), and
    /// directive names are case-insensitive; several field lines combine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quoted_uppercase_and_split_directives() {
        let t = env(|p, n| match p.uri.path() {
            "/quoted" => ok(n).header("cache-control", "max-age=\"600\""),
            "/upper" => ok(n).header("cache-control", "MAX-AGE=600"),
            _ => ok(n)
                .header("cache-control", "public")
                .header("cache-control", "max-age=600"),
        })
        .await;
        for pq in ["/quoted", "/upper", "/split"] {
            t.get(pq).await;
            let b = t.get(pq).await;
            assert!(b.cache().is_hit(), "{pq}: {}", b.cache_status());
            assert_eq!(t.hits(pq), 1, "{pq}");
        }
    }

    /// §5.3: an `Expires` in the past means already expired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expires_in_the_past_is_stale() {
        let clock = Clock::system();
        let ck = clock.clone();
        let t = env_at(clock, "", move |_, n| {
            ok(n).header("expires", &http_date(&ck, -60))
        })
        .await;
        t.get("/old").await;
        assert_eq!(t.get("/old").await.text(), "body-2");
    }

    /// §5.3: "A cache recipient MUST interpret invalid date formats, especially the value
    /// "0", as representing a time in the past".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_expires_is_stale() {
        for v in ["0", "-1", "tomorrow"] {
            let t = env(move |_, n| ok(n).header("expires", v)).await;
            t.get("/ie").await;
            let b = t.get("/ie").await;
            assert_eq!(b.text(), "body-2", "Expires: {v} was served from the cache");
        }
    }
}

mod s4_2_3_age {
    //! RFC 9111 §4.2.3 (calculating age) and §5.1 (Age).
    use super::*;

    /// The `Age` an upstream sends counts against freshness: `Age: 50` with `max-age=60`
    /// leaves ten seconds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_age_counts_against_freshness() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=60")
                .header("age", "50")
        })
        .await;
        t.get("/a").await;
        let a = t.get("/a").await;
        assert!(a.cache().is_hit(), "{}", a.cache_status());
        let age = age_of(&a);
        assert!((50..=51).contains(&age), "Age {age}");
        t.advance(5);
        let b = t.get("/a").await;
        assert!(b.cache().is_hit(), "{}", b.cache_status());
        assert!((55..=56).contains(&age_of(&b)), "Age {}", age_of(&b));
        t.advance(10);
        let c = t.get("/a").await;
        assert_eq!(c.text(), "body-2", "{}", c.cache_status());
        assert_eq!(t.hits("/a"), 2);
    }

    /// §4.2.3: "apparent_age = max(0, response_time - date_value)": a `Date` 30 s behind
    /// the cache's clock makes the response 30 s old on arrival.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apparent_age_from_date_counts() {
        let clock = Clock::system();
        let ck = clock.clone();
        let t = env_at(clock, "", move |_, n| {
            ok(n)
                .header("cache-control", "max-age=60")
                .header("date", &http_date(&ck, -30))
        })
        .await;
        t.get("/d").await;
        let a = t.get("/d").await;
        assert!((30..=31).contains(&age_of(&a)), "Age {}", age_of(&a));
        t.advance(35);
        assert_eq!(t.get("/d").await.text(), "body-2");
    }

    /// §4.2.3: a response generated from a stored response MUST carry a single `Age`
    /// equal to its current age, which grows as time passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn age_on_hits_grows_with_time() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=600")).await;
        t.get("/g").await;
        let a = t.get("/g").await;
        assert!(age_of(&a) <= 1, "Age {}", age_of(&a));
        t.advance(30);
        let b = t.get("/g").await;
        assert!((30..=31).contains(&age_of(&b)), "Age {}", age_of(&b));
        t.advance(100);
        let c = t.get("/g").await;
        assert!((130..=131).contains(&age_of(&c)), "Age {}", age_of(&c));
        assert_eq!(c.headers.get_all("age").iter().count(), 1);
    }

    /// §5.1: `Age` is the sender's estimate of the time since the origin generated the
    /// response. A response that arrived with `Age: 50` is at least 50 s old when slate
    /// forwards it; dropping the field makes the next cache think it is new (fresh for 60 s
    /// instead of 10).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_age_is_forwarded_on_a_miss() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=60")
                .header("age", "50")
        })
        .await;
        let m = t.get("/am").await;
        assert_eq!(m.cache().fwd(), Some("uri-miss"), "{}", m.cache_status());
        let age: u64 = m.header("age").parse().unwrap_or(0);
        assert!(age >= 50, "Age {:?} on the miss", m.header("age"));
    }

    /// §5.1: Age is a single non-negative integer; "a cache SHOULD consider a response to
    /// be stale" otherwise (RFC 9111 §4.2.3 asks the invalid case to be conservative): a
    /// list, a word or a negative number make the stored response stale at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_age_is_stale() {
        for (i, bad) in ["old, 0", "1, 2", "-5", "3.5"].iter().enumerate() {
            let bad = *bad;
            let t = env(move |_, n| {
                ok(n)
                    .header("cache-control", "max-age=600")
                    .header("age", bad)
            })
            .await;
            let pq = format!("/ia{i}");
            assert_eq!(t.get(&pq).await.text(), "body-1");
            let b = t.get(&pq).await;
            assert_eq!(
                b.text(),
                "body-2",
                "Age: {bad} was reused: {}",
                b.cache_status()
            );
            assert!(!b.cache().is_hit(), "Age: {bad}: {}", b.cache_status());
        }
    }
}

mod s4_2_4_serving_stale {
    //! RFC 9111 §4.2.4: serving stale responses, and the directives that forbid it.
    use super::*;

    /// Without an explicit allowance a stale response is not served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_is_not_served_by_default() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=10")).await;
        t.get("/s").await;
        t.advance(11);
        let b = t.get("/s").await;
        assert_eq!(b.text(), "body-2");
        assert!(!b.cache().is_hit(), "{}", b.cache_status());
    }

    /// §5.2.2.2: after `must-revalidate` goes stale it MUST NOT be reused without
    /// validation, even for a client that accepts stale responses (`max-stale`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn must_revalidate_beats_max_stale() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=10, must-revalidate")).await;
        t.get("/mr").await;
        let fresh = t.get("/mr").await;
        assert!(
            fresh.cache().is_hit(),
            "fresh is fresh: {}",
            fresh.cache_status()
        );
        t.advance(20);
        let b = t
            .send("GET", "/mr", &[("cache-control", "max-stale=600")])
            .await;
        assert_eq!(b.text(), "body-2", "{}", b.cache_status());
    }

    /// §5.2.2.2: a must-revalidate response that cannot be revalidated gives an error,
    /// never the stale response, even with `stale-if-error`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn must_revalidate_forbids_stale_on_error() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n).header(
                    "cache-control",
                    "max-age=10, must-revalidate, stale-if-error=600",
                )
            } else {
                Reply::ok("down").status(500)
            }
        })
        .await;
        t.get("/mre").await;
        t.advance(20);
        let b = t.get("/mre").await;
        assert_eq!(b.status, 500, "{}", b.cache_status());
        assert_eq!(b.text(), "down");
    }

    /// §5.2.2.4: a `no-cache` response MUST NOT be used without successful validation; a
    /// failed validation forwards the error rather than the stored response.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_cache_is_not_served_when_validation_fails() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n)
                    .header("cache-control", "no-cache, max-age=3600")
                    .header("etag", "\"n1\"")
            } else {
                Reply::ok("down").status(500)
            }
        })
        .await;
        t.get("/ncf").await;
        let b = t.get("/ncf").await;
        assert_eq!(b.status, 500, "{}", b.cache_status());
        assert_eq!(b.text(), "down");
    }

    /// A stale response is not served on a client's `max-stale` when the response forbids
    /// it: §5.2.2.8 (`proxy-revalidate` is `must-revalidate` for shared caches) and §5.2.2.10
    /// ("the s-maxage directive incorporates the semantics of the proxy-revalidate response
    /// directive for a shared cache"; §4.2.4: a cache MUST NOT generate a stale response if
    /// an applicable s-maxage prohibits it); nor beyond the client's own bound (§5.2.1.2).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_stale_refused_when_forbidden_or_exceeded() {
        for (path, cc, max_stale) in [
            ("/pr", "max-age=10, proxy-revalidate", "max-stale"),
            ("/sm", "s-maxage=10", "max-stale=600"),
            ("/msb", "max-age=10", "max-stale=5"),
        ] {
            let t = env(move |_, n| ok(n).header("cache-control", cc)).await;
            t.get(path).await;
            t.advance(20);
            let b = t.send("GET", path, &[("cache-control", max_stale)]).await;
            assert_eq!(
                b.text(),
                "body-2",
                "{cc} / {max_stale}: {}",
                b.cache_status()
            );
        }
    }
}

mod s4_2_4_disconnected_origin {
    //! RFC 9111 §4.2.4: "A cache MUST NOT generate a stale response unless it is
    //! disconnected or doing so is explicitly permitted by the client or origin server".
    //! slate serves a stored stale response when the origin cannot be reached (refused,
    //! reset, closed before answering), `detail=upstream-unreachable`, up to
    //! `cache.stale_if_unreachable` past its freshness (10m by default), unless the stored
    //! response forbade it.
    use super::*;

    /// An origin that answers the first connection with `body-1` and `cc`, then closes
    /// every later connection without a byte.
    async fn answers_once(cc: &'static str) -> RawOrigin {
        RawOrigin::start(move |i| {
            (i == 0).then(|| {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: 6\r\ncache-control: {cc}\r\n\
                     etag: \"e1\"\r\nconnection: close\r\n\r\nbody-1"
                )
            })
        })
        .await
    }

    async fn slate_for(origin: &str, extra: &str) -> (Slate, Clock) {
        let clock = Clock::system();
        let slate = Slate::builder(origin)
            .config(extra)
            .clock(clock.clone())
            .start()
            .await;
        (slate, clock)
    }

    /// Closed before a response: the stale entry answers, and Cache-Status says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_before_a_response_serves_stale() {
        let origin = answers_once("max-age=5").await;
        let (slate, clock) = slate_for(&origin.url(), "").await;
        let c = client();
        assert_eq!(get(&c, &slate.url("/d")).await.text(), "body-1");
        clock.advance(Duration::from_secs(60));
        let g = get(&c, &slate.url("/d")).await;
        assert_eq!(
            (g.status, g.text().as_str()),
            (200, "body-1"),
            "{}",
            g.cache_status()
        );
        assert_eq!(
            g.cache().detail(),
            Some("upstream-unreachable"),
            "{}",
            g.cache_status()
        );
        assert!(
            g.cache().ttl().is_some_and(|t| t < 0),
            "{}",
            g.cache_status()
        );
        assert!(origin.connections() >= 2, "the origin was tried");
        slate.stop().await;
    }

    /// Refused (nothing listens any more): the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_connection_serves_stale() {
        let origin = Origin::start(|_, n| {
            ok(n)
                .header("cache-control", "max-age=5")
                .header("connection", "close")
        })
        .await;
        let addr = origin.addr;
        let (slate, clock) = slate_for(&origin.url(), "").await;
        let c = client();
        assert_eq!(get(&c, &slate.url("/r")).await.text(), "body-1");
        drop(origin);
        wait_closed(addr).await;
        clock.advance(Duration::from_secs(60));
        let g = get(&c, &slate.url("/r")).await;
        assert_eq!(
            (g.status, g.text().as_str()),
            (200, "body-1"),
            "{}",
            g.cache_status()
        );
        assert_eq!(g.cache().detail(), Some("upstream-unreachable"));
        slate.stop().await;
    }

    /// Past the configured bound, a disconnected origin is a 502 again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_the_bound_is_502() {
        let origin = answers_once("max-age=5").await;
        let extra = "[cache]\nstale_if_unreachable = \"30s\"\n";
        let (slate, clock) = slate_for(&origin.url(), extra).await;
        let c = client();
        get(&c, &slate.url("/b")).await;
        clock.advance(Duration::from_secs(20));
        assert_eq!(get(&c, &slate.url("/b")).await.text(), "body-1");
        clock.advance(Duration::from_secs(30));
        let g = get(&c, &slate.url("/b")).await;
        assert_eq!(g.status, 502, "{}", g.cache_status());
        slate.stop().await;
    }

    /// §4.2.4 and §5.2.2: `must-revalidate`, `proxy-revalidate`, `s-maxage` (which
    /// carries proxy-revalidate's meaning) and `no-cache` forbid a stale answer even
    /// then: the client gets the 502.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forbidding_directives_give_502() {
        for cc in [
            "max-age=5, must-revalidate",
            "max-age=5, proxy-revalidate",
            "s-maxage=5",
            "max-age=600, no-cache",
        ] {
            let origin = answers_once(cc).await;
            let (slate, clock) = slate_for(&origin.url(), "").await;
            let c = client();
            assert_eq!(get(&c, &slate.url("/f")).await.text(), "body-1", "{cc}");
            clock.advance(Duration::from_secs(60));
            let g = get(&c, &slate.url("/f")).await;
            assert_eq!(g.status, 502, "{cc}: {} {}", g.cache_status(), g.text());
            slate.stop().await;
        }
    }

    /// A 5xx is an answer, not a disconnection: without `stale-if-error` it reaches the
    /// client (RFC 5861 decides the rest, see `rfc5861_stale_if_error`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_error_is_not_a_disconnection() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n).header("cache-control", "max-age=5")
            } else {
                Reply::ok("overloaded").status(503)
            }
        })
        .await;
        assert_eq!(t.get("/e").await.text(), "body-1");
        t.advance(60);
        let g = t.get("/e").await;
        assert_eq!(
            (g.status, g.text().as_str()),
            (503, "overloaded"),
            "{}",
            g.cache_status()
        );
        assert_ne!(g.cache().detail(), Some("upstream-unreachable"));
        assert_eq!(t.hits("/e"), 2);
    }
}

mod s4_3_validation {
    //! RFC 9111 §4.3: validation of stale responses with the origin.
    use super::*;

    fn etag_origin(p: &Parts, n: usize) -> Reply {
        if n == 1 {
            return Reply::ok("original")
                .header("cache-control", "max-age=10")
                .header("etag", "\"v1\"")
                .header("x-version", "1");
        }
        if hdr(p, "if-none-match") == "\"v1\"" {
            Reply::ok("")
                .status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=100")
                .header("x-version", "2")
        } else {
            Reply::ok(format!("full-{n}")).header("cache-control", "max-age=100")
        }
    }

    /// §4.3.1: a stale response with an entity tag is validated with `If-None-Match`;
    /// §4.3.3/§4.3.4: a 304 freshens it, its header fields replace the stored ones
    /// (§3.2), and the stored body answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etag_revalidation_and_304_updates_headers() {
        let t = env(etag_origin).await;
        assert_eq!(t.get("/r").await.header("x-version"), "1");
        t.advance(20);
        let r = t.get("/r").await;
        assert_eq!(t.hits("/r"), 2);
        assert_eq!(t.seen("if-none-match"), "\"v1\"");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "original");
        assert_eq!(r.header("x-version"), "2");
        assert_eq!(r.header("content-length"), "8");
        assert_eq!(r.cache().fwd(), Some("stale"), "{}", r.cache_status());
        assert_eq!(r.cache().fwd_status(), Some(304), "{}", r.cache_status());
        // Fresh again for the 304's max-age=100.
        t.advance(80);
        let h = t.get("/r").await;
        assert!(h.cache().is_hit(), "{}", h.cache_status());
        assert_eq!(h.text(), "original");
        assert_eq!(h.header("x-version"), "2");
        assert_eq!(h.header("cache-control"), "max-age=100");
        assert_eq!(t.hits("/r"), 2);
    }

    /// §4.3.1: with only `Last-Modified`, validation uses `If-Modified-Since` carrying it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn last_modified_revalidation() {
        const LM: &str = "Mon, 01 Jan 2024 00:00:00 GMT";
        let t = env(|p, n| {
            if n > 1 && hdr(p, "if-modified-since") == LM {
                Reply::ok("")
                    .status(304)
                    .header("cache-control", "max-age=100")
            } else {
                ok(n)
                    .header("cache-control", "max-age=10")
                    .header("last-modified", LM)
            }
        })
        .await;
        t.get("/lm").await;
        t.advance(20);
        let r = t.get("/lm").await;
        assert_eq!(t.seen("if-modified-since"), LM);
        assert_eq!(r.text(), "body-1");
        assert_eq!(r.cache().fwd_status(), Some(304), "{}", r.cache_status());
        t.advance(50);
        assert!(t.get("/lm").await.cache().is_hit());
        assert_eq!(t.hits("/lm"), 2);
    }

    /// §4.3.1: with both validators, both are sent (If-None-Match wins at the origin).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_validators_are_sent() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=10")
                .header("etag", "W/\"w1\"")
                .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        })
        .await;
        t.get("/b").await;
        t.advance(20);
        t.get("/b").await;
        assert_eq!(t.seen("if-none-match"), "W/\"w1\"");
        assert_eq!(t.seen("if-modified-since"), "Mon, 01 Jan 2024 00:00:00 GMT");
    }

    /// §4.3.3: a full 200 to the validation request replaces the stored response.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_response_to_validation_replaces_entry() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=10")
                .header("etag", &format!("\"v{n}\""))
        })
        .await;
        t.get("/full").await;
        t.advance(20);
        let r = t.get("/full").await;
        assert_eq!(t.seen("if-none-match"), "\"v1\"");
        assert_eq!(r.text(), "body-2");
        assert_eq!(r.cache().fwd_status(), Some(200), "{}", r.cache_status());
        let h = t.get("/full").await;
        assert_eq!(h.text(), "body-2");
        assert_eq!(h.header("etag"), "\"v2\"");
        assert!(h.cache().is_hit(), "{}", h.cache_status());
    }

    /// §4.3.3: a 5xx to the validation request is forwarded when nothing allows serving
    /// stale (§4.2.4).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_error_on_validation_is_forwarded() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n)
                    .header("cache-control", "max-age=10")
                    .header("etag", "\"v1\"")
            } else {
                Reply::ok("broken").status(503)
            }
        })
        .await;
        t.get("/se").await;
        t.advance(20);
        let r = t.get("/se").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "broken");
    }

    /// §4.3.4 (RFC 9110 §15.4.5: a 304's `Content-Length` describes the selected
    /// representation, it announces no body): a 304 carrying the full representation's
    /// length, or a wrong one, refreshes the stored response, whose own `Content-Length`
    /// and body are what the client gets, with status 200.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_modified_with_content_length_serves_the_stored_body() {
        for length in ["11", "3"] {
            let origin = RawOrigin::start(move |i| {
                let head = if i == 0 {
                    "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n"
                } else {
                    "HTTP/1.1 304 Not Modified\r\ncontent-length: LEN\r\n"
                };
                let body = if i == 0 { "report-body" } else { "" };
                Some(format!(
                    "{}etag: \"v1\"\r\ncache-control: max-age=5\r\nconnection: close\r\n\r\n{body}",
                    head.replace("LEN", length)
                ))
            })
            .await;
            let clock = Clock::system();
            let slate = Slate::builder(&origin.url())
                .clock(clock.clone())
                .start()
                .await;
            let c = client();
            assert_eq!(get(&c, &slate.url("/r")).await.text(), "report-body");
            clock.advance(Duration::from_secs(10));
            let g = get(&c, &slate.url("/r")).await;
            assert_eq!(
                g.status,
                200,
                "304 with Content-Length: {length}: {}",
                g.cache_status()
            );
            assert_eq!(g.text(), "report-body");
            assert_eq!(g.header("content-length"), "11");
            assert_eq!(origin.connections(), 2, "revalidated once");
            let h = get(&c, &slate.url("/r")).await;
            assert!(
                h.cache().is_hit(),
                "refreshed by the 304: {}",
                h.cache_status()
            );
            assert_eq!(h.text(), "report-body");
            slate.stop().await;
        }
    }
}

mod s4_3_2_client_conditionals {
    //! RFC 9111 §4.3.2 (handling a received validation request) with RFC 9110 §13.1.2
    //! (If-None-Match, weak comparison) and §13.1.3 (If-Modified-Since).
    use super::*;

    const LM: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

    async fn filled() -> Env {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=600")
                .header("etag", "\"abc\"")
                .header("last-modified", LM)
        })
        .await;
        assert_eq!(t.get("/c").await.text(), "body-1");
        t
    }

    async fn not_modified(t: &Env, h: &[(&str, &str)]) {
        let g = t.send("GET", "/c", h).await;
        assert_eq!(g.status, 304, "{h:?}: {}", g.cache_status());
        assert!(g.body.is_empty(), "a 304 has no body");
        // RFC 9110 §15.4.5: the 304 carries what a 200 would have: ETag, Cache-Control.
        assert_eq!(g.header("etag"), "\"abc\"");
        assert_eq!(g.header("cache-control"), "max-age=600");
        assert_eq!(t.hits("/c"), 1, "answered by the cache");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn matching_if_none_match_gets_304() {
        let t = filled().await;
        not_modified(&t, &[("if-none-match", "\"abc\"")]).await;
    }

    /// §13.1.2: If-None-Match uses the weak comparison, and takes a list or `*`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn weak_list_and_star_match() {
        let t = filled().await;
        not_modified(&t, &[("if-none-match", "W/\"abc\"")]).await;
        not_modified(&t, &[("if-none-match", "\"x\", \"abc\"")]).await;
        not_modified(&t, &[("if-none-match", "*")]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn non_matching_if_none_match_gets_200() {
        let t = filled().await;
        let g = t.send("GET", "/c", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.text(), "body-1");
        assert_eq!(t.hits("/c"), 1);
    }

    /// §13.1.3: not modified since a date at or after `Last-Modified`: 304.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn if_modified_since_later_gets_304() {
        let t = filled().await;
        not_modified(
            &t,
            &[("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")],
        )
        .await;
        not_modified(&t, &[("if-modified-since", LM)]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn if_modified_since_earlier_gets_200() {
        let t = filled().await;
        let g = t
            .send(
                "GET",
                "/c",
                &[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")],
            )
            .await;
        assert_eq!(g.status, 200);
        assert_eq!(g.text(), "body-1");
    }

    /// §13.1.3: "A recipient MUST ignore the If-Modified-Since header field if the received
    /// field value is not a valid HTTP-date".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_if_modified_since_is_ignored() {
        let t = filled().await;
        for v in ["yesterday", "0", "Tue, 02 Jan 2024"] {
            let g = t.send("GET", "/c", &[("if-modified-since", v)]).await;
            assert_eq!(g.status, 200, "{v}");
            assert_eq!(g.text(), "body-1");
        }
    }

    /// §13.1.3: "A recipient MUST ignore If-Modified-Since if the request contains an
    /// If-None-Match header field".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn if_none_match_takes_precedence() {
        let t = filled().await;
        let g = t
            .send(
                "GET",
                "/c",
                &[
                    ("if-none-match", "\"other\""),
                    ("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT"),
                ],
            )
            .await;
        assert_eq!(g.status, 200);
        assert_eq!(g.text(), "body-1");
    }

    /// A client's conditional request on a miss: the client gets its 304, and what is
    /// stored is the whole 200 (a later unconditional request gets the body).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conditional_miss_stores_the_full_response() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=600")
                .header("etag", "\"abc\"")
        })
        .await;
        let a = t.send("GET", "/cm", &[("if-none-match", "\"abc\"")]).await;
        assert_eq!(a.status, 304);
        let b = t.get("/cm").await;
        assert_eq!(b.status, 200);
        assert_eq!(b.text(), "body-1");
        assert!(b.cache().is_hit(), "{}", b.cache_status());
        assert_eq!(t.hits("/cm"), 1);
    }

    /// A client's conditional request on a stale entry: the cache validates with its own
    /// validator, then answers the client's condition from the freshened response.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conditional_on_stale_entry() {
        let t = env(|p, n| {
            if n > 1 && hdr(p, "if-none-match") == "\"abc\"" {
                Reply::ok("")
                    .status(304)
                    .header("etag", "\"abc\"")
                    .header("cache-control", "max-age=600")
            } else {
                ok(n)
                    .header("cache-control", "max-age=10")
                    .header("etag", "\"abc\"")
            }
        })
        .await;
        t.get("/cs").await;
        t.advance(20);
        let g = t.send("GET", "/cs", &[("if-none-match", "\"abc\"")]).await;
        assert_eq!(t.seen("if-none-match"), "\"abc\"");
        assert_eq!(g.status, 304);
        let h = t.get("/cs").await;
        assert_eq!(h.text(), "body-1");
        assert!(h.cache().is_hit(), "{}", h.cache_status());
    }
}

mod s4_4_invalidation {
    //! RFC 9111 §4.4: invalidating stored responses after unsafe methods.
    use super::*;

    /// GETs: `get-N` fresh for an hour; other methods: `status` from `X-Answer` (default
    /// 200) with the `Location`/`Content-Location` the test asks for in `X-Loc`/`X-CLoc`.
    fn writable(p: &Parts, n: usize) -> Reply {
        if p.method == http::Method::GET {
            return Reply::ok(format!("get-{n}")).header("cache-control", "max-age=3600");
        }
        let status = hdr(p, "x-answer").parse().unwrap_or(200);
        let mut r = Reply::ok("done").status(status);
        if !hdr(p, "x-loc").is_empty() {
            r = r.header("location", &hdr(p, "x-loc"));
        }
        if !hdr(p, "x-cloc").is_empty() {
            r = r.header("content-location", &hdr(p, "x-cloc"));
        }
        r
    }

    async fn cached(t: &Env, pq: &str) {
        t.get(pq).await;
        let h = t.get(pq).await;
        assert!(h.cache().is_hit(), "{pq}: {}", h.cache_status());
    }

    async fn assert_invalidated(t: &Env, pq: &str) {
        let before = t.hits(pq);
        let g = t.get(pq).await;
        assert!(
            !g.cache().is_hit(),
            "{pq} still served from cache: {}",
            g.cache_status()
        );
        assert_eq!(t.hits(pq), before + 1, "{pq}");
    }

    async fn assert_kept(t: &Env, pq: &str) {
        let g = t.get(pq).await;
        assert!(
            g.cache().is_hit(),
            "{pq} was invalidated: {}",
            g.cache_status()
        );
    }

    /// "A cache MUST invalidate the target URI when it receives a non-error status code in
    /// response to an unsafe request method".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsafe_methods_invalidate_the_target() {
        let t = env(writable).await;
        for (m, status) in [
            ("POST", "201"),
            ("PUT", "204"),
            ("DELETE", "200"),
            ("PATCH", "303"),
        ] {
            let pq = format!("/w/{m}");
            cached(&t, &pq).await;
            let r = t.send(m, &pq, &[("x-answer", status)]).await;
            assert_eq!(r.status.to_string(), status);
            assert_invalidated(&t, &pq).await;
        }
    }

    /// Invalidation covers every stored response for the URI, all `Vary` variants.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalidation_covers_every_variant() {
        let t = env(|p, n| {
            if p.method == http::Method::GET {
                Reply::ok(format!("{}-{n}", hdr(p, "accept-language")))
                    .header("cache-control", "max-age=3600")
                    .header("vary", "accept-language")
            } else {
                Reply::ok("done")
            }
        })
        .await;
        for l in ["en", "fr", "en", "fr"] {
            t.send("GET", "/vi", &[("accept-language", l)]).await;
        }
        assert_eq!(t.hits("/vi"), 2);
        t.send("POST", "/vi", &[]).await;
        for l in ["en", "fr"] {
            let g = t.send("GET", "/vi", &[("accept-language", l)]).await;
            assert!(!g.cache().is_hit(), "{l}: {}", g.cache_status());
        }
        assert_eq!(t.hits("/vi"), 5);
    }

    /// §4.4: the URIs in `Location` and `Content-Location` MAY be invalidated (slate does,
    /// for same-origin references).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn location_and_content_location_are_invalidated() {
        let t = env(writable).await;
        for pq in ["/items", "/items/7", "/items/8", "/copy"] {
            cached(&t, pq).await;
        }
        t.send(
            "POST",
            "/items",
            &[("x-loc", "/items/7"), ("x-answer", "201")],
        )
        .await;
        assert_invalidated(&t, "/items").await;
        assert_invalidated(&t, "/items/7").await;
        assert_kept(&t, "/items/8").await;
        t.send(
            "PUT",
            "/items/new",
            &[("x-loc", "/items/8"), ("x-cloc", "/copy")],
        )
        .await;
        assert_invalidated(&t, "/items/8").await;
        assert_invalidated(&t, "/copy").await;
    }

    /// §4.4: "a cache MUST NOT trigger an invalidation under these conditions if the origin
    /// of the URI to be invalidated differs from that of the target URI"; an absolute URI
    /// on the request's own origin is fine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_origin_location_is_not_invalidated() {
        let t = env(writable).await;
        cached(&t, "/kept").await;
        cached(&t, "/same").await;
        t.send("POST", "/x", &[("x-loc", "http://elsewhere.example/kept")])
            .await;
        assert_kept(&t, "/kept").await;
        let own = format!("http://{}/same", t.slate.addr);
        t.send("POST", "/x", &[("x-loc", &own)]).await;
        assert_invalidated(&t, "/same").await;
    }

    /// A "non-error response" is 2xx or 3xx: a failed unsafe request invalidates nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_unsafe_request_invalidates_nothing() {
        let t = env(writable).await;
        cached(&t, "/f").await;
        cached(&t, "/f/loc").await;
        for status in ["400", "404", "409", "500", "503"] {
            let r = t
                .send("POST", "/f", &[("x-answer", status), ("x-loc", "/f/loc")])
                .await;
            assert_eq!(r.status.to_string(), status);
            assert_kept(&t, "/f").await;
            assert_kept(&t, "/f/loc").await;
        }
    }

    /// Safe methods invalidate nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn safe_methods_invalidate_nothing() {
        let t = env(writable).await;
        cached(&t, "/safe").await;
        for m in ["OPTIONS", "HEAD"] {
            t.send(m, "/safe", &[]).await;
            assert_kept(&t, "/safe").await;
        }
    }

    /// §4.4: "(including methods whose safety is unknown)": an extension method answered
    /// with 2xx invalidates the target URI too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_methods_invalidate_the_target() {
        let t = env(writable).await;
        for m in ["FROB", "PROPPATCH"] {
            let pq = format!("/u/{m}");
            cached(&t, &pq).await;
            let r = t.send(m, &pq, &[]).await;
            assert_eq!(r.status, 200);
            assert_invalidated(&t, &pq).await;
        }
    }

    /// §4.4 (MAY, slate implements it) with RFC 9110 §10.2.2 / RFC 3986 §5: a relative
    /// `Location` of "8" in answer to PUT /items/new names /items/8. slate's
    /// `same_origin_url` has a branch for relative references, but it is never reached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relative_location_is_invalidated() {
        let t = env(writable).await;
        cached(&t, "/items/8").await;
        t.send("PUT", "/items/new", &[("x-loc", "8")]).await;
        assert_invalidated(&t, "/items/8").await;
    }
}

mod head {
    //! RFC 9110 §9.3.2 with RFC 9111 §4: HEAD is answered from the stored GET response.
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn head_is_answered_from_the_get_entry() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=600")).await;
        let g = t.get("/hd").await;
        let h = t.send("HEAD", "/hd", &[]).await;
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-length"), g.body.len().to_string());
        assert!(h.cache().is_hit(), "{}", h.cache_status());
        assert_eq!(t.hits("/hd"), 1);
    }

    /// A HEAD miss may fill the GET entry (slate fetches with GET); a later GET gets the
    /// whole body from the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn head_miss_then_get_hit() {
        let t = env(|p, n| {
            Reply::ok(format!("{} body-{n}", p.method)).header("cache-control", "max-age=600")
        })
        .await;
        let h = t.send("HEAD", "/hm", &[]).await;
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-length"), "10");
        let g = t.get("/hm").await;
        assert_eq!(g.text(), "GET body-1");
        assert!(g.cache().is_hit(), "{}", g.cache_status());
        assert_eq!(t.hits("/hm"), 1);
    }
}

mod s5_2_1_request_directives {
    //! RFC 9111 §5.2.1: request directives, with slate's documented choices.
    use super::*;

    /// §5.2.1.7: `only-if-cached` with nothing stored: 504, and the origin is not asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_if_cached_miss_is_504() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=600")).await;
        let g = t
            .send("GET", "/oic", &[("cache-control", "only-if-cached")])
            .await;
        assert_eq!(g.status, 504);
        assert_eq!(t.hits("/oic"), 0);
    }

    /// §5.2.1.7: `only-if-cached` with a fresh response stored: served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_if_cached_hit_is_served() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=600")).await;
        t.get("/oich").await;
        let g = t
            .send("GET", "/oich", &[("cache-control", "only-if-cached")])
            .await;
        assert_eq!(g.status, 200);
        assert_eq!(g.text(), "body-1");
        assert_eq!(t.hits("/oich"), 1);
    }

    /// §5.2.1.7: `only-if-cached` with only a stale response the constraints forbid
    /// serving: 504, still without asking the origin.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_if_cached_stale_is_504() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=10")).await;
        t.get("/oics").await;
        t.advance(20);
        let g = t
            .send("GET", "/oics", &[("cache-control", "only-if-cached")])
            .await;
        assert_eq!(g.status, 504);
        assert_eq!(t.hits("/oics"), 1);
    }

    /// §5.2.1.2: `max-stale=N` accepts a response stale by at most N seconds; without a
    /// value, any staleness.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_stale_serves_stale_within_its_bound() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=10")).await;
        // Serving stale this way may start a refresh, so each form gets its own URL.
        for pq in ["/ms1", "/ms2"] {
            t.get(pq).await;
        }
        t.advance(30);
        for (pq, cc) in [("/ms1", "max-stale=60"), ("/ms2", "max-stale")] {
            let g = t.send("GET", pq, &[("cache-control", cc)]).await;
            assert_eq!(g.text(), "body-1", "{cc}: {}", g.cache_status());
            assert!(g.cache().is_hit(), "{}", g.cache_status());
        }
    }

    /// Slate's choice (policy.rs, README): a client's `no-cache`, `max-age=0` or
    /// `Pragma: no-cache` does not force an origin request by default (one client must not
    /// be able to make every dashboard recompute a 30 s report); the entry is a hit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_no_cache_ignored_by_default() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=600")
                .header("etag", "\"e\"")
        })
        .await;
        t.get("/cnc").await;
        for h in [
            ("cache-control", "no-cache"),
            ("cache-control", "max-age=0"),
            ("pragma", "no-cache"),
        ] {
            let g = t.send("GET", "/cnc", &[h]).await;
            assert_eq!(g.text(), "body-1");
            assert!(g.cache().is_hit(), "{h:?}: {}", g.cache_status());
        }
        assert_eq!(t.hits("/cnc"), 1);
    }

    /// With `[cache] honor_client_no_cache = true`, a client's `no-cache` makes slate
    /// validate the stored response with the origin (§5.2.1.4); a 304 keeps the body.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_no_cache_honored_revalidates() {
        let t = env_with(HONOR, |p, n| {
            if n > 1 && hdr(p, "if-none-match") == "\"e\"" {
                Reply::ok("").status(304).header("etag", "\"e\"")
            } else {
                ok(n)
                    .header("cache-control", "max-age=600")
                    .header("etag", "\"e\"")
            }
        })
        .await;
        t.get("/cnh").await;
        let g = t
            .send("GET", "/cnh", &[("cache-control", "no-cache")])
            .await;
        assert_eq!(t.hits("/cnh"), 2);
        assert_eq!(t.seen("if-none-match"), "\"e\"");
        assert_eq!(g.status, 200);
        assert_eq!(g.text(), "body-1");
        assert_eq!(g.cache().fwd_status(), Some(304), "{}", g.cache_status());
        // Without the directive, it is a plain hit again.
        let h = t.get("/cnh").await;
        assert!(h.cache().is_hit(), "{}", h.cache_status());
        assert_eq!(t.hits("/cnh"), 2);
    }

    /// Honored `no-cache` without a validator: a full fetch that replaces the entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_no_cache_honored_without_validator_refetches() {
        let t = env_with(HONOR, |_, n| ok(n).header("cache-control", "max-age=600")).await;
        t.get("/cnf").await;
        let g = t.send("GET", "/cnf", &[("pragma", "no-cache")]).await;
        assert_eq!(g.text(), "body-2");
        let h = t.get("/cnf").await;
        assert_eq!(h.text(), "body-2");
        assert!(h.cache().is_hit(), "{}", h.cache_status());
    }

    const HONOR: &str = "[cache]\nhonor_client_no_cache = true\n";
}

mod rfc5861_stale_while_revalidate {
    //! RFC 5861 §3: stale-while-revalidate.
    use super::*;

    /// Within the window the stale response answers at once, and one background
    /// revalidation reaches the origin however many requests arrive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_served_at_once_with_one_refresh() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n).header("cache-control", "max-age=10, stale-while-revalidate=30")
            } else {
                ok(n)
                    .header("cache-control", "max-age=100")
                    .delay(Duration::from_millis(800))
            }
        })
        .await;
        t.get("/swr").await;
        t.advance(15);
        let started = Instant::now();
        let stale = futures_join(&t, "/swr", 5).await;
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "stale answers waited for the refresh: {:?}",
            started.elapsed()
        );
        for g in &stale {
            assert_eq!(g.status, 200);
            assert_eq!(g.text(), "body-1");
            assert!(g.cache().is_hit(), "{}", g.cache_status());
            assert!(
                g.cache().ttl().is_some_and(|ttl| ttl < 0),
                "{}",
                g.cache_status()
            );
        }
        // The refresh lands; from then on the new response is a fresh hit.
        let fresh = eventually("/swr becomes body-2", Duration::from_secs(3), || async {
            let g = t.get("/swr").await;
            (g.text() == "body-2").then_some(g)
        })
        .await;
        assert!(fresh.cache().is_hit(), "{}", fresh.cache_status());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(t.hits("/swr"), 2, "exactly one background refresh");
    }

    /// Beyond the window the stale response is not served: a normal fetch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_the_window_is_a_normal_fetch() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=10, stale-while-revalidate=30"))
            .await;
        t.get("/swo").await;
        t.advance(45);
        let g = t.get("/swo").await;
        assert_eq!(g.text(), "body-2");
        assert!(!g.cache().is_hit(), "{}", g.cache_status());
        assert_eq!(t.hits("/swo"), 2);
    }
}

mod rfc5861_stale_if_error {
    //! RFC 5861 §4: stale-if-error ("an error is any situation that would result in a 500,
    //! 502, 503, or 504 HTTP response status code being returned").
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_served_on_server_error_within_window() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n).header("cache-control", "max-age=10, stale-if-error=60")
            } else {
                Reply::ok("boom").status(500)
            }
        })
        .await;
        t.get("/sie").await;
        t.advance(30);
        let g = t.get("/sie").await;
        assert_eq!(t.hits("/sie"), 2, "the origin was asked first");
        assert_eq!(g.status, 200);
        assert_eq!(g.text(), "body-1");
        t.advance(45);
        let late = t.get("/sie").await;
        assert_eq!(late.status, 500, "{}", late.cache_status());
        assert_eq!(late.text(), "boom");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_served_on_502_503_504() {
        for status in [502u16, 503, 504] {
            let t = env(move |_, n| {
                if n == 1 {
                    ok(n).header("cache-control", "max-age=10, stale-if-error=60")
                } else {
                    Reply::ok("bad").status(status)
                }
            })
            .await;
            t.get("/e").await;
            t.advance(30);
            let g = t.get("/e").await;
            assert_eq!(g.status, 200, "{status}");
            assert_eq!(g.text(), "body-1");
        }
    }

    /// A 4xx is not an error in the RFC 5861 sense: it is forwarded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_errors_are_not_masked() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n).header("cache-control", "max-age=10, stale-if-error=60")
            } else {
                Reply::ok("gone").status(404)
            }
        })
        .await;
        t.get("/gone").await;
        t.advance(30);
        let g = t.get("/gone").await;
        assert_eq!(g.status, 404);
    }

    /// The origin stops answering: stale within the window, 502 beyond it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_served_when_origin_unreachable() {
        let clock = Clock::system();
        let ck = clock.clone();
        let origin = Origin::start(move |_, n| {
            ok(n)
                .header("cache-control", "max-age=10, stale-if-error=60")
                .header("date", &http_date(&ck, 0))
                // No keep-alive: once the origin is dropped nothing can reach it.
                .header("connection", "close")
        })
        .await;
        let addr = origin.addr;
        // stale-if-error alone decides here (`upstream-unreachable` has its own tests).
        let slate = Slate::builder(&origin.url())
            .config("[cache]\nstale_if_unreachable = \"0s\"\n")
            .clock(clock.clone())
            .start()
            .await;
        let c = client();
        assert_eq!(get(&c, &slate.url("/down")).await.text(), "body-1");
        drop(origin);
        wait_closed(addr).await;
        clock.advance(Duration::from_secs(30));
        let g = get(&c, &slate.url("/down")).await;
        assert_eq!(g.status, 200, "{}", g.cache_status());
        assert_eq!(g.text(), "body-1");
        clock.advance(Duration::from_secs(45));
        let late = get(&c, &slate.url("/down")).await;
        assert_eq!(late.status, 502, "{}", late.cache_status());
    }
}

mod rfc9211_cache_status {
    //! RFC 9211: the Cache-Status response header field.
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn miss_then_hit() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=100")).await;
        let m = t.get("/cs").await;
        assert_eq!(cs_names(&m), ["slate"]);
        assert_eq!(m.cache().fwd(), Some("uri-miss"), "{}", m.cache_status());
        assert!(m.cache().has("stored"), "{}", m.cache_status());
        assert_eq!(m.cache().fwd_status(), Some(200), "{}", m.cache_status());
        assert!(
            !m.cache().is_hit(),
            "hit and fwd are exclusive: {}",
            m.cache_status()
        );
        let h = t.get("/cs").await;
        assert_eq!(cs_names(&h), ["slate"]);
        let hit = h.cache();
        assert!(hit.is_hit(), "{}", h.cache_status());
        assert!(
            !hit.has("fwd") && !hit.has("fwd-status"),
            "{}",
            h.cache_status()
        );
        let ttl = hit.ttl().expect("ttl on a hit");
        assert!((98..=100).contains(&ttl), "ttl={ttl}");
        t.advance(30);
        let later = t.get("/cs").await.cache().ttl().expect("ttl");
        assert!((68..=70).contains(&later), "ttl={later}");
        assert_eq!(
            t.get("/cs")
                .await
                .headers
                .get_all("cache-status")
                .iter()
                .count(),
            1
        );
    }

    /// `stored` only when the response was stored; `fwd-status` is the origin's status.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_stored_and_fwd_status() {
        let t = env(|p, n| match p.uri.path() {
            "/nostore" => ok(n).header("cache-control", "no-store"),
            _ => ok(n).status(404).header("cache-control", "max-age=100"),
        })
        .await;
        let a = t.get("/nostore").await;
        assert_eq!(a.cache().fwd(), Some("uri-miss"), "{}", a.cache_status());
        assert!(!a.cache().has("stored"), "{}", a.cache_status());
        assert_eq!(a.cache().fwd_status(), Some(200), "{}", a.cache_status());
        let b = t.get("/nf").await;
        assert_eq!(b.cache().fwd_status(), Some(404), "{}", b.cache_status());
        assert!(b.cache().has("stored"), "{}", b.cache_status());
    }

    /// `fwd=method` for a request forwarded because of its method.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsafe_method_is_fwd_method() {
        let t = env(|_, n| ok(n)).await;
        let p = t.send("POST", "/post", &[]).await;
        assert_eq!(cs_names(&p), ["slate"]);
        assert_eq!(p.cache().fwd(), Some("method"), "{}", p.cache_status());
        assert_eq!(p.cache().fwd_status(), Some(200), "{}", p.cache_status());
    }

    /// A stale hit served while revalidating: `hit` with a negative `ttl`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_hit_has_negative_ttl() {
        let t = env(|_, n| ok(n).header("cache-control", "max-age=10, stale-while-revalidate=60"))
            .await;
        t.get("/neg").await;
        t.advance(25);
        let g = t.get("/neg").await;
        assert!(g.cache().is_hit(), "{}", g.cache_status());
        let ttl = g.cache().ttl().expect("ttl");
        assert!((-16..=-14).contains(&ttl), "ttl={ttl}");
    }

    /// RFC 9211 §2.1: `hit` means "it was not forwarded"; a stale response served because
    /// the forwarded request failed (stale-if-error) was forwarded: `fwd=stale` with the
    /// origin's `fwd-status`, and no `hit` (hit and fwd are exclusive).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_if_error_is_a_forward_not_a_hit() {
        let t = env(|_, n| {
            if n == 1 {
                ok(n).header("cache-control", "max-age=10, stale-if-error=60")
            } else {
                Reply::ok("boom").status(500)
            }
        })
        .await;
        t.get("/sief").await;
        t.advance(30);
        let g = t.get("/sief").await;
        assert_eq!(g.text(), "body-1");
        assert_eq!(g.cache().fwd(), Some("stale"), "{}", g.cache_status());
        assert_eq!(g.cache().fwd_status(), Some(500), "{}", g.cache_status());
        assert!(!g.cache().is_hit(), "{}", g.cache_status());
    }

    /// RFC 9211 §2.2: a response stored for the URI whose `Vary` does not match is a
    /// `vary-miss` (or `miss`), not a `uri-miss`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vary_mismatch_is_not_a_uri_miss() {
        let t = env(|p, n| {
            Reply::ok(format!("{}-{n}", hdr(p, "accept-language")))
                .header("cache-control", "max-age=600")
                .header("vary", "accept-language")
        })
        .await;
        t.send("GET", "/vm", &[("accept-language", "en")]).await;
        let g = t.send("GET", "/vm", &[("accept-language", "fr")]).await;
        assert!(
            matches!(g.cache().fwd(), Some("vary-miss" | "miss")),
            "{}",
            g.cache_status()
        );
    }

    /// RFC 9211 §2.2: a fresh response the request's directives did not allow (honored
    /// client `no-cache`) is forwarded with `fwd=request`, not `fwd=stale`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn honored_client_no_cache_is_fwd_request() {
        let t = env_with("[cache]\nhonor_client_no_cache = true\n", |_, n| {
            ok(n).header("cache-control", "max-age=600")
        })
        .await;
        t.get("/fr").await;
        let g = t.send("GET", "/fr", &[("cache-control", "no-cache")]).await;
        assert_eq!(g.text(), "body-2");
        assert_eq!(g.cache().fwd(), Some("request"), "{}", g.cache_status());
    }

    /// RFC 9211 §2: "When adding a value to the Cache-Status header field, caches SHOULD
    /// preserve the existing field value": an upstream cache's member stays first, slate's
    /// is appended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_cache_status_is_preserved() {
        let t = env(|_, n| {
            ok(n)
                .header("cache-control", "max-age=600")
                .header("cache-status", "OriginCache; hit; ttl=1100")
        })
        .await;
        for _ in 0..2 {
            let g = t.get("/chain").await;
            let all: Vec<String> = g
                .headers
                .get_all("cache-status")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            let joined = all.join(", ");
            assert!(
                joined.starts_with("OriginCache; hit; ttl=1100, slate;"),
                "{joined}"
            );
            assert_eq!(cs_names(&g), ["OriginCache", "slate"], "{joined}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// A test origin and a slate in front of it, sharing one clock.
struct Env {
    origin: Origin,
    slate: Slate,
    clock: Clock,
    c: HttpClient,
}

impl Env {
    async fn get(&self, pq: &str) -> Got {
        get(&self.c, &self.slate.url(pq)).await
    }

    async fn send(&self, method: &str, pq: &str, headers: &[(&str, &str)]) -> Got {
        send(&self.c, method, &self.slate.url(pq), headers, "").await
    }

    /// Requests the origin got for this path and query.
    fn hits(&self, pq: &str) -> usize {
        self.origin.hits(pq)
    }

    /// A header of the last request the origin got ("" when absent).
    fn seen(&self, name: &str) -> String {
        self.origin
            .last_headers
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

async fn env(f: impl Fn(&Parts, usize) -> Reply + Send + Sync + 'static) -> Env {
    env_at(Clock::system(), "", f).await
}

async fn env_with(extra: &str, f: impl Fn(&Parts, usize) -> Reply + Send + Sync + 'static) -> Env {
    env_at(Clock::system(), extra, f).await
}

/// Starts the origin (which stamps `Date` from `clock` unless the reply has one) and a
/// slate with no rules on the memory store, `extra` TOML appended.
async fn env_at(
    clock: Clock,
    extra: &str,
    f: impl Fn(&Parts, usize) -> Reply + Send + Sync + 'static,
) -> Env {
    let ck = clock.clone();
    let origin = Origin::start(move |p, n| {
        let r = f(p, n);
        if r.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("date"))
        {
            r
        } else {
            r.header("date", &http_date(&ck, 0))
        }
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .config(extra)
        .clock(clock.clone())
        .start()
        .await;
    Env {
        origin,
        slate,
        clock,
        c: client(),
    }
}

/// `body-N`.
fn ok(n: usize) -> Reply {
    Reply::ok(format!("body-{n}"))
}

/// A request header as a string ("" when absent).
fn hdr(p: &Parts, name: &str) -> String {
    p.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// An HTTP date `offset_secs` from `clock`'s now.
fn http_date(clock: &Clock, offset_secs: i64) -> String {
    let now = UNIX_EPOCH + Duration::from_millis(clock.now_ms());
    let t: SystemTime = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

/// The names of the `Cache-Status` members, in order.
fn cs_names(g: &Got) -> Vec<String> {
    g.cache_statuses().into_iter().map(|m| m.name).collect()
}

fn age_of(g: &Got) -> u64 {
    g.header("age")
        .parse()
        .unwrap_or_else(|_| panic!("no Age: {:?}", g.headers))
}

/// `n` concurrent GETs of `pq`.
async fn futures_join(t: &Env, pq: &str, n: usize) -> Vec<Got> {
    let url = t.slate.url(pq);
    get_all(&t.c, (0..n).map(|_| url.clone())).await
}

/// Waits until nothing accepts connections on `addr` (at most 2 s).
async fn wait_closed(addr: std::net::SocketAddr) {
    eventually(
        &format!("{addr} stops accepting connections"),
        Duration::from_secs(2),
        || async { tokio::net::TcpStream::connect(addr).await.err() },
    )
    .await;
}
