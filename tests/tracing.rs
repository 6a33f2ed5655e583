//! Request traces over OTLP/HTTP (`[tracing] otlp_endpoint`): a test collector in process
//! (slate's own accept loop, the protobuf decoded with `opentelemetry-proto`) receives the
//! spans of misses and hits, and the test reads their structure and attributes; a client's
//! `traceparent` is continued and goes on to the origin; a dead collector costs no request.

mod common;

use common::*;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use slate::body::ProxyBody;
use slate::clock::Clock;
use slate::config::Config;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A client's trace: its trace id and the id of its span that called slate.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// How long spans may take to arrive (they are sent every 50 ms).
const ARRIVAL: Duration = Duration::from_secs(10);

/// An OTLP/HTTP collector: every span of every export it was sent, with the resource's
/// `service.name`.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    _stop: watch::Sender<Option<tokio::time::Instant>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Span>>> = Default::default();
        let services: Arc<Mutex<Vec<String>>> = Default::default();
        let (s2, v2) = (spans.clone(), services.clone());
        let handler = move |req: http::Request<hyper::body::Incoming>, _: SocketAddr| {
            let (spans, services) = (s2.clone(), v2.clone());
            async move {
                assert_eq!(req.uri().path(), "/v1/traces");
                assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for rs in export.resource_spans {
                    let resource = rs.resource.unwrap_or_default();
                    if let Some(name) = string_attr(&resource.attributes, "service.name") {
                        services.lock().unwrap().push(name);
                    }
                    for ss in rs.scope_spans {
                        spans.lock().unwrap().extend(ss.spans);
                    }
                }
                http::Response::new(ProxyBody::Empty)
            }
        };
        let (stop, stopped) = watch::channel(None);
        let cfg = Config::default_config().server;
        tokio::spawn(async move { slate::server::serve(listener, &cfg, handler, stopped).await });
        Collector {
            addr,
            spans,
            services,
            _stop: stop,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans of trace `trace` (hex), once there are `n` of them; panics after
    /// [`ARRIVAL`], naming those that came.
    async fn trace(&self, trace: &str, n: usize) -> Vec<Span> {
        let of_trace = || -> Vec<Span> {
            let spans = self.spans.lock().unwrap();
            spans
                .iter()
                .filter(|s| hex(&s.trace_id) == trace)
                .cloned()
                .collect()
        };
        let start = std::time::Instant::now();
        while start.elapsed() < ARRIVAL {
            let spans = of_trace();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got: Vec<(String, String, String)> = of_trace()
            .iter()
            .map(|s| (s.name.clone(), hex(&s.span_id), hex(&s.parent_span_id)))
            .collect();
        panic!("{n} spans of trace {trace}: not within {ARRIVAL:?}; got {got:?}")
    }

    /// The trace ids of the `request` spans received, in the order they arrived.
    fn requests(&self) -> Vec<String> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server as i32)
            .map(|s| hex(&s.trace_id))
            .collect()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attr(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match v.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// An attribute of `span` as text (numbers and flags written out).
fn attr(span: &Span, key: &str) -> Option<String> {
    string_attr(&span.attributes, key)
}

/// The one span named `name` among `spans`.
fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let named: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "one {name:?} span: {:#?}", names(spans));
    named[0]
}

fn names(spans: &[Span]) -> Vec<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

/// The names of the children of `parent`, sorted.
fn children(spans: &[Span], parent: &Span) -> Vec<String> {
    let mut c: Vec<String> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .map(|s| s.name.clone())
        .collect();
    c.sort();
    c
}

/// slate in front of `origin`, exporting to `endpoint` every 50 ms, with `more` config.
async fn traced_slate(origin: &Origin, endpoint: &str, more: &str) -> Slate {
    let text = format!(
        "[upstream]\nurl = \"{}\"\n[tracing]\notlp_endpoint = \"{endpoint}\"\n{more}",
        origin.url()
    );
    let mut config = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.tracing.export_every = Duration::from_millis(50);
    let instance = slate::Instance::start(config, Clock::system())
        .await
        .expect("slate starts");
    Slate::serve(instance, Clock::system()).await
}

fn cached_origin() -> impl Fn(&http::request::Parts, usize) -> Reply + Send + Sync {
    |_, _| Reply::ok("report").header("content-type", "text/csv")
}

/// A GET of `url` sent from the client's span `span` of trace `trace`: a miss, answered
/// with the origin's report.
async fn miss_in_trace(c: &HttpClient, url: &str, trace: &str, span: &str) -> Got {
    let traceparent = format!("00-{trace}-{span}-01");
    let miss = send(c, "GET", url, &[("traceparent", &traceparent)], "").await;
    assert_eq!((miss.status, miss.text().as_str()), (200, "report"));
    assert_eq!(
        miss.cache().fwd(),
        Some("uri-miss"),
        "{}",
        miss.cache_status()
    );
    miss
}

/// A GET of `url` that is a hit, and the spans of its trace (request, key, lookup): the
/// first trace other than `miss_trace`, the miss before it.
async fn hit_traced(
    c: &HttpClient,
    collector: &Collector,
    url: &str,
    miss_trace: &str,
) -> (Got, Vec<Span>) {
    let hit = get(c, url).await;
    assert!(hit.cache().is_hit(), "{}", hit.cache_status());
    let trace = eventually("the hit's trace", ARRIVAL, || async {
        collector.requests().into_iter().find(|t| t != miss_trace)
    })
    .await;
    (hit, collector.trace(&trace, 3).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_and_a_hit_are_traced_step_by_step_and_the_clients_trace_goes_on_upstream() {
    let collector = Collector::start().await;
    let origin = Origin::start(cached_origin()).await;
    let slate = traced_slate(&origin, &collector.endpoint(), RULE).await;
    let c = client();
    let miss = miss_in_trace(&c, &slate.url("/report?b=2&a=1"), CLIENT_TRACE, CLIENT_SPAN).await;

    // The origin got slate's span as the parent, in the client's trace.
    let sent = origin.last_headers.lock().unwrap().clone().unwrap();
    let up_parent = sent["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = up_parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{up_parent}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", CLIENT_TRACE, "01"));
    assert_ne!(parts[2], CLIENT_SPAN, "the origin's parent is slate's span");

    // request, key, store lookup (twice: the lookup and the leader's check), fill, queue
    // wait, upstream request, store write.
    let spans = collector.trace(CLIENT_TRACE, 8).await;
    let request = one(&spans, "GET /");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(
        hex(&request.parent_span_id),
        CLIENT_SPAN,
        "continues the client's span"
    );
    assert_eq!(
        children(&spans, request),
        ["fill", "key", "store lookup", "store lookup"]
    );
    let fill = one(&spans, "fill");
    assert_eq!(
        children(&spans, fill),
        ["queue wait", "store write", "upstream request"]
    );
    let upstream = one(&spans, "upstream request");
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(
        hex(&upstream.span_id),
        parts[2],
        "the origin's traceparent names it"
    );

    let status = attr(request, "slate.cache_status").unwrap();
    assert_eq!(status, miss.cache_status());
    let key = attr(request, "slate.key").unwrap();
    assert_eq!(key.len(), 64, "a blake3 hex digest: {key}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    assert_eq!(
        attr(one(&spans, "key"), "slate.key").as_deref(),
        Some(&*key)
    );
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/report"),
        ("http.response.status_code", "200"),
        ("slate.rule", "/"),
        ("slate.bytes", "6"),
        ("slate.upstream_status", "200"),
    ] {
        assert_eq!(attr(request, k).as_deref(), Some(v), "request {k}");
    }
    for s in spans.iter().filter(|s| s.name == "store lookup") {
        assert_eq!(attr(s, "slate.tier").as_deref(), Some("memory"));
        assert_eq!(attr(s, "slate.found").as_deref(), Some("false"));
    }
    assert_eq!(attr(fill, "slate.class").as_deref(), Some("client"));
    assert_eq!(attr(fill, "slate.outcome").as_deref(), Some("stored"));
    assert_eq!(
        attr(one(&spans, "queue wait"), "slate.queue").as_deref(),
        Some("turn")
    );
    assert_eq!(
        attr(upstream, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(upstream, "slate.bytes").as_deref(), Some("6"));
    assert_eq!(
        attr(one(&spans, "store write"), "slate.stored").as_deref(),
        Some("true")
    );
    assert!(collector
        .services
        .lock()
        .unwrap()
        .iter()
        .all(|s| s == "slate"));

    // A hit, the query spelled otherwise: a trace of its own, three spans.
    let (hit, spans) =
        hit_traced(&c, &collector, &slate.url("/report?a=1&b=2"), CLIENT_TRACE).await;
    let request = one(&spans, "GET /");
    assert!(
        request.parent_span_id.is_empty(),
        "a root: no traceparent was sent"
    );
    assert_eq!(children(&spans, request), ["key", "store lookup"]);
    assert_eq!(
        attr(request, "slate.cache_status"),
        Some(hit.cache_status())
    );
    assert_eq!(attr(request, "slate.key"), Some(key), "same key, same hash");
    assert_eq!(attr(request, "slate.upstream_status"), None);
    let lookup = one(&spans, "store lookup");
    assert_eq!(attr(lookup, "slate.found").as_deref(), Some("true"));
    let tier = attr(lookup, "slate.tier").unwrap();
    assert!(["hot", "memory"].contains(&tier.as_str()), "{tier}");
    assert_eq!(origin.total(), 1);
    slate.stop().await;
}

/// On Redis with the in-process tier: the shared fill lock's wait is a step of the fill,
/// and the lookups say which tier answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_the_fill_lock_and_the_tiers_are_traced() {
    let redis = RedisServer::start();
    let collector = Collector::start().await;
    let origin = Origin::start(cached_origin()).await;
    let store = StoreUnderTest::Redis(redis.url()).table("l1 = \"64MiB\"");
    let slate = traced_slate(&origin, &collector.endpoint(), &format!("{store}\n{RULE}")).await;
    let c = client();
    let trace = "0af7651916cd43dd8448eb211c80319c";
    miss_in_trace(&c, &slate.url("/r"), trace, "b7ad6b7169203331").await;
    // request, key, two lookups, fill, fill lock wait, the fill's own lookup once it holds
    // the lock, queue wait, upstream, store write.
    let spans = collector.trace(trace, 10).await;
    let fill = one(&spans, "fill");
    assert_eq!(
        children(&spans, fill),
        [
            "fill lock wait",
            "queue wait",
            "store lookup",
            "store write",
            "upstream request"
        ]
    );
    let lock = one(&spans, "fill lock wait");
    assert_eq!(attr(lock, "slate.lock").as_deref(), Some("shared"));
    assert_eq!(attr(lock, "slate.outcome").as_deref(), Some("taken"));
    for s in spans.iter().filter(|s| s.name == "store lookup") {
        assert_eq!(attr(s, "slate.tier").as_deref(), Some("redis"));
    }

    let (_, spans) = hit_traced(&c, &collector, &slate.url("/r"), trace).await;
    let tier = attr(one(&spans, "store lookup"), "slate.tier").unwrap();
    assert!(["hot", "l1"].contains(&tier.as_str()), "in process: {tier}");
    slate.stop().await;
}

/// A request that waits for another's fill: its wait is a step of its own trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collapsed_request_traces_its_wait_for_the_fill() {
    let collector = Collector::start().await;
    // Slow enough that the second request, sent once the first reached the origin, finds
    // the fill still running.
    let slow =
        Origin::start(|_, _| Reply::ok("slow report").delay(Duration::from_millis(500))).await;
    let slate = traced_slate(&slow, &collector.endpoint(), RULE).await;
    let c = client();
    let leader = tokio::spawn({
        let (c, url) = (c.clone(), slate.url("/slow"));
        async move { get(&c, &url).await }
    });
    eventually("the fill reached the origin", ARRIVAL, || async {
        (slow.total() == 1).then_some(())
    })
    .await;
    let follower = get(&c, &slate.url("/slow")).await;
    let leader = leader.await.unwrap();
    assert_eq!(leader.cache().fwd(), Some("uri-miss"));
    assert!(
        follower.cache().has("collapsed"),
        "{}",
        follower.cache_status()
    );
    assert_eq!(slow.total(), 1);
    let traces = eventually("two request traces", ARRIVAL, || async {
        let t = collector.requests();
        (t.len() >= 2).then_some(t)
    })
    .await;
    let mut waits = Vec::new();
    for t in &traces {
        let spans = collector.trace(t, 1).await;
        let request = one(&spans, "GET /");
        if children(&spans, request).contains(&"fill lock wait".to_string()) {
            waits.push(attr(one(&spans, "fill lock wait"), "slate.lock"));
            assert!(
                !names(&spans).contains(&"fill".to_string()),
                "the follower fills nothing"
            );
        }
    }
    assert_eq!(waits, [Some("local".to_string())]);
    slate.stop().await;
}

/// A collector that is not there: every request is answered as usual, and shutting down
/// does not hang on the spans it could not send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_fails_no_request() {
    let origin = Origin::start(cached_origin()).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let slate = traced_slate(&origin, &dead, RULE).await;
    let c = client();
    for i in 0..20 {
        for _ in 0..5 {
            let got = get(&c, &slate.url(&format!("/r{i}"))).await;
            assert_eq!((got.status, got.text().as_str()), (200, "report"));
        }
    }
    assert_eq!(origin.total(), 20, "one fill a URL, hits after");
    slate.stop().await;
}

#[test]
fn check_config_refuses_a_bad_collector_url() {
    let dir = TempDir::new("tracing-check");
    let f = dir.0.join("c.toml");
    let check = |text: &str| {
        std::fs::write(&f, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_slate"))
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap()
    };
    for bad in [
        "https://collector:4318",
        "collector:4318",
        "http://collector:4318/?a=1",
    ] {
        let out = check(&format!("[tracing]\notlp_endpoint = {bad:?}\n"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(
            err.contains(&format!("{}:2:17: tracing.otlp_endpoint: ", f.display())),
            "{bad}: {err}"
        );
        assert!(err.contains(bad), "the value is quoted: {err}");
    }
    let out = check("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("[tracing]\nendpoint = \"http://127.0.0.1:4318\"\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown key `endpoint` in [tracing]"),
        "{err}"
    );
}
