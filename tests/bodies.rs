//! One report, one computation, however the request spells it: report queries POSTed as
//! JSON or GraphQL bodies are lookups keyed on their canonical form, and time windows are
//! rounded to their bucket in the key and upstream.

mod common;

use common::*;
use std::time::Duration;

const RULES: &str = r#"
[[rules]]
path = "/api/query"
ttl = "1h"
methods = ["GET", "POST"]
body_key = "json"
ignore_body_fields = ["requestId", "meta.sentAt"]
tags = ["reports"]
round_params = { from = "5m", to = "5m", "range.from" = "1h" }

[[rules]]
path = "/graphql"
ttl = "1h"
methods = ["POST"]
body_key = "graphql"
round_params = { since = "1h" }

[[rules]]
path = "/dash"
ttl = "1h"
round_params = { from = "5m", to = "5m" }
"#;

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// An origin that answers with the report the body asked for, echoing what reached it.
async fn echo_origin() -> Origin {
    Origin::start(|p, n| {
        Reply::ok(format!("{} {} #{n}", p.method, p.uri))
            .header("content-type", "application/json")
            .header("cache-tag", "sales")
    })
    .await
}

/// The echo origin, a slate with [`RULES`] in front of it, and a client.
async fn start(store: &StoreUnderTest) -> (Origin, Slate, HttpClient) {
    let origin = echo_origin().await;
    let slate = Slate::builder(&origin.url())
        .store(store)
        .config(RULES)
        .start()
        .await;
    (origin, slate, client())
}

async fn post(c: &HttpClient, url: &str, body: &str) -> Got {
    send(c, "POST", url, &JSON, body).await
}

fn last_body(o: &Origin) -> String {
    let b = o.last_body.lock().unwrap().clone().unwrap_or_default();
    String::from_utf8_lossy(&b).into_owned()
}

/// Two clients that order members differently, space them differently and differ only in
/// ignored fields make one fill; the origin gets the first client's body as it was sent;
/// another report is another fill; and a purge of the URL removes every body variant.
async fn json_bodies_share_a_fill(store: StoreUnderTest) {
    let (origin, slate, c) = start(&store).await;
    let url = slate.url("/api/query?v=1");
    let a = r#"{"report":"sales","params":{"region":"eu","year":2026},"requestId":"a1","meta":{"sentAt":1,"client":"bi"}}"#;
    let b = r#"{ "requestId" : "b2", "params" : { "year" : 2026, "region" : "eu" },
                 "meta": {"client": "bi", "sentAt": 99}, "report": "sales" }"#;
    let first = post(&c, &url, a).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.cache().fwd(),
        Some("uri-miss"),
        "{}",
        first.cache_status()
    );
    assert!(first.cache().has("stored"), "{}", first.cache_status());
    assert_eq!(last_body(&origin), a, "the client's body went up unchanged");
    let second = post(&c, &url, b).await;
    assert!(second.cache().is_hit(), "{}", second.cache_status());
    assert_eq!(second.text(), first.text());
    assert_eq!(origin.hits("/api/query?v=1"), 1);
    // Another report, and the same one keyed apart by what is not ignored.
    let other = r#"{"report":"sales","params":{"region":"us","year":2026}}"#;
    assert_eq!(post(&c, &url, other).await.cache().fwd(), Some("uri-miss"));
    let client_differs =
        r#"{"report":"sales","params":{"region":"eu","year":2026},"meta":{"client":"excel"}}"#;
    assert_eq!(
        post(&c, &url, client_differs).await.cache().fwd(),
        Some("uri-miss")
    );
    // A number is kept as written: 2026.0 is not 2026.
    let float = r#"{"report":"sales","params":{"region":"eu","year":2026.0}}"#;
    assert_eq!(post(&c, &url, float).await.cache().fwd(), Some("uri-miss"));
    assert_eq!(origin.hits("/api/query?v=1"), 4);
    // The GET of the URL is its own entry.
    let g = get(&c, &url).await;
    assert!(g.text().starts_with("GET "), "{}", g.text());
    // /entry finds a body variant when given the body.
    let e = send(
        &c,
        "POST",
        &slate.admin_url("/entry?url=/api/query%3Fv%3D1"),
        &JSON,
        b,
    )
    .await;
    assert_eq!(e.status, 200, "{}", e.text());
    let j: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(j["rule"], "/api/query", "{j}");
    assert_eq!(j["status"], "fresh", "{j}");
    // A purge of the URL (path and query) removes every body variant.
    let p = send(&c, "PURGE", &url, &[], "").await;
    assert_eq!(p.status, 200, "{}", p.text());
    for body in [a, other, client_differs] {
        let again = post(&c, &url, body).await;
        assert_eq!(
            again.cache().fwd(),
            Some("uri-miss"),
            "{}",
            again.cache_status()
        );
    }
    // Four POSTs and the GET, then the three again.
    assert_eq!(origin.hits("/api/query?v=1"), 8);
    // A soft purge of a tag marks body variants stale: served at once, one refresh each.
    let p = send(
        &c,
        "PURGE",
        &slate.url("/"),
        &[("cache-tag", "reports"), ("purge-mode", "soft")],
        "",
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text());
    let stale = post(&c, &url, b).await;
    assert_eq!(
        stale.cache().detail(),
        Some("soft-purged"),
        "{}",
        stale.cache_status()
    );
    let refreshed = eventually(
        "the soft-purged body variant is refreshed",
        Duration::from_secs(5),
        || async {
            let g = post(&c, &url, a).await;
            // Fresh again: a hit that is not the stale copy.
            (g.cache().is_hit() && g.cache().detail().is_none()).then_some(g)
        },
    )
    .await;
    assert!(refreshed.text().ends_with("#9"), "{}", refreshed.text());
    slate.stop().await;
}

/// Identical bodies asked at once make one fill.
async fn identical_bodies_collapse(store: StoreUnderTest) {
    let origin = Origin::start(|_, n| {
        Reply::ok(format!("report #{n}"))
            .header("content-type", "application/json")
            .delay(Duration::from_millis(300))
    })
    .await;
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config(RULES)
        .start()
        .await;
    let c = client();
    let url = slate.url("/api/query");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            // Ten spellings of one query.
            let body = format!(r#"{{"requestId":{i},"report":"sales" , "params":{{}}}}"#);
            tokio::spawn(async move { post(&c, &url, &body).await })
        })
        .collect();
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!(g.text(), "report #1");
    }
    assert_eq!(origin.hits("/api/query"), 1);
    slate.stop().await;
}

/// What cannot be a key passes through, uncached, saying why; never a 5xx.
async fn bodies_that_pass_through(store: StoreUnderTest) {
    let (origin, slate, c) = start(&store).await;
    let url = slate.url("/api/query");
    let big = format!(r#"{{"report":"x","pad":"{}"}}"#, "p".repeat(65 << 10));
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], String);
    let cases: [Case; 5] = [
        ("body-too-large", &JSON, big.clone()),
        ("body-invalid-json", &JSON, "{\"report\":".into()),
        ("body-duplicate-key", &JSON, r#"{"a":1,"a":2}"#.into()),
        (
            "body-content-type",
            &[("content-type", "text/plain")],
            "{}".into(),
        ),
        ("body-content-type", &[], "{}".into()),
    ];
    for (detail, headers, body) in &cases {
        for _ in 0..2 {
            let g = send(&c, "POST", &url, headers, body).await;
            assert_eq!(g.status, 200, "{detail}: {}", g.text());
            assert_eq!(g.cache().fwd(), Some("bypass"), "{}", g.cache_status());
            assert_eq!(g.cache().detail(), Some(*detail), "{}", g.cache_status());
            assert_eq!(
                last_body(&origin),
                *body,
                "{detail}: the origin got the whole body"
            );
        }
    }
    assert_eq!(origin.hits("/api/query"), 10);
    slate.stop().await;
}

/// GraphQL: queries spelled differently share; a mutation passes through every time and
/// leaves what is cached alone.
async fn graphql(store: StoreUnderTest) {
    let (origin, slate, c) = start(&store).await;
    let url = slate.url("/graphql");
    let q1 = r#"{"query":"query Sales($r: String) {\n  sales(region: $r) { total, units }\n}","variables":{"r":"eu"},"operationName":"Sales"}"#;
    let q2 = r##"{"operationName":"Sales","variables":{"r":"eu"},"query":"# dashboard tile\nquery Sales($r:String){sales(region:$r){total units}}"}"##;
    assert_eq!(post(&c, &url, q1).await.cache().fwd(), Some("uri-miss"));
    let b = post(&c, &url, q2).await;
    assert!(b.cache().is_hit(), "{}", b.cache_status());
    let m = r#"{"query":"mutation { refresh(report: \"sales\") }"}"#;
    for _ in 0..2 {
        let g = post(&c, &url, m).await;
        assert_eq!(
            g.cache().detail(),
            Some("graphql-mutation"),
            "{}",
            g.cache_status()
        );
    }
    assert!(
        post(&c, &url, q1).await.cache().is_hit(),
        "the mutation invalidated nothing"
    );
    assert_eq!(origin.hits("/graphql"), 3);
    slate.stop().await;
}

/// Dashboards asking for "the last 24 hours" within one bucket share one answer; the
/// origin sees the rounded window, in the key's own spelling, in the query and in a body.
async fn time_windows(store: StoreUnderTest) {
    let (origin, slate, c) = start(&store).await;
    // 2026-12-02 10:07:31.123 and 10:09:59.999 UTC, epoch ms: one 5-minute bucket.
    let a = get(
        &c,
        &slate.url("/dash?to=1764670051123&from=1764583651123&tz=utc"),
    )
    .await;
    let b = get(
        &c,
        &slate.url("/dash?from=1764583799999&to=1764670199999&tz=utc"),
    )
    .await;
    assert!(b.cache().is_hit(), "{}", b.cache_status());
    assert_eq!(a.text(), b.text());
    let rounded = "/dash?to=1764669900000&from=1764583500000&tz=utc";
    assert_eq!(
        origin.hits(rounded),
        1,
        "the origin saw the rounded window: {}",
        a.text()
    );
    // The next bucket is another report.
    let next = get(
        &c,
        &slate.url("/dash?from=1764583800000&to=1764670200000&tz=utc"),
    )
    .await;
    assert_eq!(next.cache().fwd(), Some("uri-miss"));
    // RFC 3339, and a value that is no time (kept as it is).
    let r1 = get(&c, &slate.url("/dash?from=2026-12-02T10:07:31Z")).await;
    let r2 = get(&c, &slate.url("/dash?from=2026-12-02T10%3A09%3A00Z")).await;
    assert_eq!(r1.cache().fwd(), Some("uri-miss"));
    assert!(r2.cache().is_hit(), "{}", r2.cache_status());
    assert_eq!(origin.hits("/dash?from=2026-12-02T10%3A05%3A00Z"), 1);
    get(&c, &slate.url("/dash?from=yesterday")).await;
    assert_eq!(origin.hits("/dash?from=yesterday"), 1);
    // In a JSON body: by path, and the upstream body keeps the client's member order.
    let url = slate.url("/api/query");
    let b1 = r#"{"report":"sales","range":{"from":"2026-12-02T10:07:31+02:00","to":"now"}}"#;
    let b2 = r#"{"range":{"to":"now","from":"2026-12-02T10:59:00+02:00"},"report":"sales"}"#;
    assert_eq!(post(&c, &url, b1).await.cache().fwd(), Some("uri-miss"));
    assert_eq!(
        last_body(&origin),
        r#"{"report":"sales","range":{"from":"2026-12-02T10:00:00+02:00","to":"now"}}"#
    );
    assert!(post(&c, &url, b2).await.cache().is_hit());
    // GraphQL variables.
    let g = slate.url("/graphql");
    let v1 = r#"{"query":"query($since: Int) { sales(since: $since) { total } }","variables":{"since":1764669000}}"#;
    let v2 = r#"{"query":"query($since: Int) { sales(since: $since) { total } }","variables":{"since":1764669500}}"#;
    assert_eq!(post(&c, &g, v1).await.cache().fwd(), Some("uri-miss"));
    assert!(
        last_body(&origin).contains("1764666000"),
        "{}",
        last_body(&origin)
    );
    assert!(post(&c, &g, v2).await.cache().is_hit());
    slate.stop().await;
}

on_both_stores!(
    json_bodies_share_a_fill,
    identical_bodies_collapse,
    bodies_that_pass_through,
    graphql,
    time_windows,
);

/// On a Redis Cluster too, with two instances: one fill for the two spellings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_across_instances_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = cluster.store();
    let origin = echo_origin().await;
    let one = Slate::builder(&origin.url())
        .store(&store)
        .config(RULES)
        .start()
        .await;
    let two = Slate::builder(&origin.url())
        .store(&store)
        .config(RULES)
        .start()
        .await;
    let c = client();
    let a = r#"{"report":"sales","params":{"region":"eu"}}"#;
    let b = r#"{"params":{"region":"eu"},"report":"sales","requestId":"x"}"#;
    assert_eq!(
        post(&c, &one.url("/api/query"), a).await.cache().fwd(),
        Some("uri-miss")
    );
    let g = post(&c, &two.url("/api/query"), b).await;
    assert!(g.cache().is_hit(), "{}", g.cache_status());
    assert_eq!(origin.hits("/api/query"), 1);
    one.stop().await;
    two.stop().await;
}

/// A warmed request can carry a body: the first client with that query gets a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_with_a_body() {
    let origin = echo_origin().await;
    let warm = r#"
[[warm.requests]]
url = "/api/query"
body = '{"report":"sales","params":{"region":"global"}}'
"#;
    let slate = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Memory)
        .config(&format!("{RULES}{warm}"))
        .start()
        .await;
    eventually(
        "the warm request reaches the origin",
        Duration::from_secs(5),
        || async { (origin.hits("/api/query") == 1).then_some(()) },
    )
    .await;
    let c = client();
    let hit = eventually(
        "the warmed entry is stored",
        Duration::from_secs(5),
        || async {
            let g = post(
                &c,
                &slate.url("/api/query"),
                r#"{"params":{"region":"global"},"report":"sales"}"#,
            )
            .await;
            g.cache().is_hit().then_some(g)
        },
    )
    .await;
    assert!(hit.text().starts_with("POST "), "{}", hit.text());
    assert_eq!(origin.hits("/api/query"), 1);
    slate.stop().await;
}

/// Config: each body key needs the others, and what does not parse is refused at its line.
#[test]
fn body_keys_are_checked() {
    let bad = [
        ("[[rules]]\npath = \"/a\"\nmethods = [\"POST\"]\n", "body_key"),
        ("[[rules]]\npath = \"/a\"\nbody_key = \"json\"\n", "methods"),
        ("[[rules]]\npath = \"/a\"\nmethods = [\"PUT\"]\nbody_key = \"json\"\n", "rules.methods"),
        ("[[rules]]\npath = \"/a\"\nmethods = [\"POST\"]\nbody_key = \"xml\"\n", "rules.body_key"),
        ("[[rules]]\npath = \"/a\"\nmethods = [\"POST\"]\nbody_key = \"raw\"\nignore_body_fields = [\"a\"]\n", "ignore_body_fields"),
        ("[[rules]]\npath = \"/a\"\nmethods = [\"POST\"]\nbody_key = \"json\"\nignore_body_fields = [\"a..b\"]\n", "ignore_body_fields"),
        ("[[rules]]\npath = \"/a\"\nround_params = { from = \"0s\" }\n", "round_params"),
        ("[[rules]]\npath = \"/a\"\nround_params = { from = \"soon\" }\n", "round_params"),
    ];
    for (text, key) in bad {
        let e = slate::config::Config::parse("t.toml", text).expect_err(text);
        let msg = e.to_string();
        assert!(
            msg.contains(key) && msg.contains("t.toml:"),
            "{text}: {msg}"
        );
    }
    assert!(slate::config::Config::parse("t.toml", RULES).is_ok());
}

/// `Slate-Debug: key` from a source allowed to purge shows the key and what it is made of,
/// for body-keyed lookups too; from anywhere else it is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_can_be_seen_by_those_allowed() {
    let (origin, slate, c) = start(&StoreUnderTest::Memory).await;
    let url = slate.url("/api/query?v=2");
    let body = r#"{"report":"sales","requestId":"z"}"#;
    let h = [("content-type", "application/json"), ("slate-debug", "key")];
    let g = send(&c, "POST", &url, &h, body).await;
    let key = g.header("slate-key");
    assert!(key.starts_with("slate:v1:e:"), "{key:?}");
    let inputs = g.header("slate-key-inputs");
    assert!(
        inputs.starts_with("method=POST; path=/api/query; query=v=2; body=blake3:"),
        "{inputs}"
    );
    let e = send(
        &c,
        "POST",
        &slate.admin_url("/entry?url=/api/query%3Fv%3D2"),
        &JSON,
        body,
    )
    .await;
    let j: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(j["key"], key.as_str(), "the key /entry shows");
    assert!(
        origin
            .last_headers
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|h| !h.contains_key("slate-debug")),
        "not sent upstream"
    );
    slate.stop().await;
    let elsewhere = Slate::builder(&origin.url())
        .config(&format!("{RULES}[purge]\nallow = [\"192.0.2.0/24\"]\n"))
        .start()
        .await;
    let g = send(
        &c,
        "GET",
        &elsewhere.url("/dash?x=1"),
        &[("slate-debug", "key")],
        "",
    )
    .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.header("slate-key"), "", "nothing revealed");
    assert_eq!(g.header("slate-key-inputs"), "");
    elsewhere.stop().await;
}
