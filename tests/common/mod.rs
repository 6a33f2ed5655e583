//! Test harness: a real `redis-server` on a free port, an in-process slow origin on hyper,
//! and slate instances started in-process on port 0.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use slate::body::ProxyBody;
use slate::clock::Clock;
use slate::config::{Config, ServerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// One rule: every path is cached for an hour.
pub const RULE: &str = "[[rules]]\npath = \"/\"\nttl = \"1h\"\n";

/// How often `eventually` asks again.
const POLL: Duration = Duration::from_millis(20);

/// Asks `f` every 20 ms until it answers `Some`, and returns that answer; panics with
/// `what` when it has not within `limit`. For waiting until something holds, where a fixed
/// sleep would guess how long that takes.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(POLL).await;
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
    }
}

/// `eventually` for a caller that is not async (it blocks its thread between asks).
pub fn eventually_blocking<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(POLL);
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
    }
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A real redis-server, killed on drop. Panics (never skips) when redis-server is missing.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "slate-test-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        Self::spawn(port, &[])
    }

    /// Starts redis-server on `port` with `extra` arguments and waits for its PING.
    fn spawn(port: u16, extra: &[&str]) -> RedisServer {
        let dir = TempDir::new("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is required for these tests (apt-get install redis-server); it could not be started");
        let r = RedisServer {
            port,
            child,
            _dir: dir,
        };
        eventually_blocking(
            &format!("redis-server on port {port} answers PING"),
            Duration::from_secs(5),
            || (r.cli(&["PING"]).trim() == "PONG").then_some(()),
        );
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs redis-cli against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is required for these tests");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the test origin answers: status, headers, body, and how long it takes.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

pub type Handler = Arc<dyn Fn(&http::request::Parts, usize) -> Reply + Send + Sync>;

/// An in-process origin on hyper that counts the requests it gets, per path and query.
pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
    pub last_headers: Arc<Mutex<Option<HeaderMap>>>,
    /// The body of the last request, as it arrived.
    pub last_body: Arc<Mutex<Option<Bytes>>>,
    /// Requests being answered now, and the most there ever were at once.
    concurrency: Arc<(AtomicUsize, AtomicUsize)>,
    stop: watch::Sender<Option<tokio::time::Instant>>,
}

/// The origin's accept loop: slate's defaults, but with neither a header-read nor an idle
/// timeout (a test origin keeps slate's pooled connections open as long as slate likes),
/// and room for any header slate forwards.
fn origin_server_config() -> ServerConfig {
    let day = Duration::from_secs(24 * 3600);
    ServerConfig {
        header_read_timeout: day,
        idle_timeout: day,
        max_header_size: 1 << 20,
        ..Config::default_config().server
    }
}

impl Origin {
    /// An origin answering with `f(request, n)`, where n counts requests for that URL from 1.
    /// It is served by slate's own accept loop (`slate::server::serve`).
    pub async fn start(
        f: impl Fn(&http::request::Parts, usize) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let reply: Handler = Arc::new(f);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Default::default();
        let total = Arc::new(AtomicUsize::new(0));
        let last_headers: Arc<Mutex<Option<HeaderMap>>> = Default::default();
        let last_body: Arc<Mutex<Option<Bytes>>> = Default::default();
        let concurrency: Arc<(AtomicUsize, AtomicUsize)> = Default::default();
        let c2 = concurrency.clone();
        let (stop, stopped) = watch::channel(None);
        let (h2, t2, l2, b2) = (
            hits.clone(),
            total.clone(),
            last_headers.clone(),
            last_body.clone(),
        );
        let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
            let (reply, hits, total, last) = (reply.clone(), h2.clone(), t2.clone(), l2.clone());
            let last_body = b2.clone();
            let conc = c2.clone();
            async move {
                let now = conc.0.fetch_add(1, Ordering::SeqCst) + 1;
                conc.1.fetch_max(now, Ordering::SeqCst);
                // Counted until the answer is handed back (after the reply's delay).
                struct Leave(Arc<(AtomicUsize, AtomicUsize)>);
                impl Drop for Leave {
                    fn drop(&mut self) {
                        self.0 .0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _leave = Leave(conc);
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes()).ok();
                *last_body.lock().unwrap() = body;
                let pq = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let n = {
                    let mut m = hits.lock().unwrap();
                    let c = m.entry(pq).or_insert(0);
                    *c += 1;
                    *c
                };
                total.fetch_add(1, Ordering::SeqCst);
                *last.lock().unwrap() = Some(parts.headers.clone());
                let reply = reply(&parts, n);
                if !reply.delay.is_zero() {
                    tokio::time::sleep(reply.delay).await;
                }
                let mut r = Response::new(ProxyBody::full(reply.body));
                *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                for (k, v) in reply.headers {
                    r.headers_mut().append(
                        http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                r
            }
        };
        tokio::spawn(async move {
            slate::server::serve(listener, &origin_server_config(), handler, stopped).await
        });
        Origin {
            addr,
            hits,
            total,
            last_headers,
            last_body,
            concurrency,
            stop,
        }
    }

    /// Requests seen for this exact path and query.
    pub fn hits(&self, pq: &str) -> usize {
        self.hits.lock().unwrap().get(pq).copied().unwrap_or(0)
    }

    /// The most requests the origin was answering at once.
    pub fn peak_concurrency(&self) -> usize {
        self.concurrency.1.load(Ordering::SeqCst)
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Origin {
    /// Stops accepting at once; requests in flight still get their answers.
    fn drop(&mut self) {
        let _ = self.stop.send(Some(tokio::time::Instant::now()));
    }
}

/// Which store a test runs against.
#[derive(Clone, Debug)]
pub enum StoreUnderTest {
    Memory,
    Redis(String),
    /// The node URLs of a running Redis Cluster.
    Cluster(Vec<String>),
}

impl StoreUnderTest {
    /// This store's `[store]` table with `keys` (TOML) in it. A key in `keys` wins over the
    /// harness's own: `kind`, `url` or `nodes`, and `l1 = "0"` (no in-process tier unless
    /// a test asks for one).
    pub fn table(&self, keys: &str) -> String {
        let mut table = toml::Table::new();
        let kind = match self {
            StoreUnderTest::Memory => "memory",
            StoreUnderTest::Redis(url) => {
                table.insert("url".into(), url.as_str().into());
                "redis"
            }
            StoreUnderTest::Cluster(nodes) => {
                let nodes: Vec<toml::Value> = nodes.iter().map(|n| n.as_str().into()).collect();
                table.insert("nodes".into(), nodes.into());
                "redis-cluster"
            }
        };
        table.insert("kind".into(), kind.into());
        table.insert("l1".into(), "0".into());
        let keys: toml::Table = keys
            .parse()
            .unwrap_or_else(|e| panic!("store keys {keys:?}: {e}"));
        table.extend(keys);
        let mut doc = toml::Table::new();
        doc.insert("store".into(), table.into());
        doc.to_string()
    }
}

/// A slate instance running in-process on port 0.
pub struct Slate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub clock: Clock,
    pub instance: slate::Instance,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

/// How a test's slate is configured: see [`Slate::builder`].
#[must_use = "a builder does nothing until `start`"]
pub struct SlateBuilder {
    origin: String,
    store: Option<StoreUnderTest>,
    store_keys: String,
    upstream_timeout: Option<String>,
    upstream_keys: String,
    config: String,
    whole: Option<String>,
    clock: Clock,
}

impl SlateBuilder {
    /// The store (the memory store if not given).
    pub fn store(mut self, store: &StoreUnderTest) -> Self {
        self.store = Some(store.clone());
        self
    }

    /// More keys for `[store]` (TOML), e.g. `l1 = "64MiB"`: they win over the harness's.
    pub fn store_keys(mut self, keys: &str) -> Self {
        self.store_keys.push_str(keys);
        self.store_keys.push('\n');
        self
    }

    /// `upstream.timeout` (the harness's is 10 s).
    pub fn upstream_timeout(mut self, timeout: &str) -> Self {
        self.upstream_timeout = Some(timeout.into());
        self
    }

    /// More keys for `[upstream]` (TOML), e.g. `max_fills = 4`.
    pub fn upstream_keys(mut self, keys: &str) -> Self {
        self.upstream_keys.push_str(keys);
        self.upstream_keys.push('\n');
        self
    }

    /// More TOML after the harness's `[upstream]` and `[store]`: rules, `[server]`, ...
    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self
    }

    /// The whole config file instead of the harness's, `{origin}` standing for the
    /// origin's URL; nothing else but the clock may be given with it.
    pub fn whole_config(mut self, text: &str) -> Self {
        self.whole = Some(text.into());
        self
    }

    /// The clock slate runs on (the system's if not given).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The config file this builder starts slate with.
    fn text(&self) -> String {
        if let Some(whole) = &self.whole {
            assert!(
                self.store.is_none()
                    && self.store_keys.is_empty()
                    && self.upstream_timeout.is_none()
                    && self.upstream_keys.is_empty()
                    && self.config.is_empty(),
                "whole_config is the whole config: nothing but the clock goes with it"
            );
            return whole.replace("{origin}", &self.origin);
        }
        let store = self.store.as_ref().unwrap_or(&StoreUnderTest::Memory);
        format!(
            "[upstream]\nurl = \"{}\"\ntimeout = \"{}\"\n{}{}\n{}",
            self.origin,
            self.upstream_timeout.as_deref().unwrap_or("10s"),
            self.upstream_keys,
            store.table(&self.store_keys),
            self.config
        )
    }

    /// Starts slate in-process and serves it on port 0.
    pub async fn start(self) -> Slate {
        let text = self.text();
        let config = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let instance = slate::Instance::start(config, self.clock.clone())
            .await
            .expect("slate starts");
        Slate::serve(instance, self.clock).await
    }
}

impl Slate {
    /// A slate in front of `origin` (a URL), to configure and then `start`: by default on
    /// the memory store, with no rules, on the system clock.
    pub fn builder(origin: &str) -> SlateBuilder {
        SlateBuilder {
            origin: origin.into(),
            store: None,
            store_keys: String::new(),
            upstream_timeout: None,
            upstream_keys: String::new(),
            config: String::new(),
            whole: None,
            clock: Clock::system(),
        }
    }

    /// Serves an instance the test started itself (e.g. with `Instance::with_store`).
    pub async fn serve(instance: slate::Instance, clock: Clock) -> Slate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let inst = instance.clone();
        let done = tokio::spawn(async move {
            inst.serve(listener, Some(admin), async {
                let _ = stopped.await;
            })
            .await
        });
        Slate {
            addr,
            admin: admin_addr,
            clock,
            instance,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub fn url(&self, pq: &str) -> String {
        format!("http://{}{}", self.addr, pq)
    }

    pub fn admin_url(&self, pq: &str) -> String {
        format!("http://{}{}", self.admin, pq)
    }

    /// Stops it and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = d.await;
        }
    }
}

/// One member of a `Cache-Status` field (RFC 9211): a cache and what it did with the
/// request, e.g. `slate; fwd=uri-miss; stored; fwd-status=200`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub name: String,
    /// In order; a flag (`hit`, `stored`, `collapsed`) has no value.
    pub params: Vec<(String, Option<String>)>,
}

impl CacheStatus {
    /// The members of a field value, in order (several field lines: joined with ", ").
    pub fn parse_list(value: &str) -> Vec<CacheStatus> {
        split_unquoted(value, ',')
            .into_iter()
            .filter(|m| !m.trim().is_empty())
            .map(|member| {
                let mut parts = split_unquoted(member, ';').into_iter();
                let name = unquote(parts.next().unwrap_or_default().trim());
                let params = parts
                    .map(|p| match p.split_once('=') {
                        Some((k, v)) => (k.trim().to_string(), Some(unquote(v.trim()))),
                        None => (p.trim().to_string(), None),
                    })
                    .collect();
                CacheStatus { name, params }
            })
            .collect()
    }

    /// Whether the parameter is there, flag or not (`has("stored")`, `has("ttl")`).
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    /// A parameter's value (`None` when absent, or a flag).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Answered from the cache, not forwarded: `hit`. RFC 9211 §2.1 makes `hit` and `fwd`
    /// exclusive, and a member with both panics here, so that neither `is_hit()` nor
    /// `!is_hit()` passes on one.
    pub fn is_hit(&self) -> bool {
        let hit = self.has("hit");
        assert!(
            !(hit && self.has("fwd")),
            "hit and fwd are exclusive: {self}"
        );
        hit
    }

    /// Why the request went forward (`uri-miss`, `stale`, `bypass`, `method`, ...).
    pub fn fwd(&self) -> Option<&str> {
        self.param("fwd")
    }

    pub fn fwd_status(&self) -> Option<u16> {
        self.number("fwd-status")
    }

    /// Seconds of freshness left (negative: stale).
    pub fn ttl(&self) -> Option<i64> {
        self.number("ttl")
    }

    pub fn detail(&self) -> Option<&str> {
        self.param("detail")
    }

    fn number<N: std::str::FromStr>(&self, key: &str) -> Option<N> {
        let v = self.param(key)?;
        Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v} is no number: {self}")),
        )
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, "; {k}={v}")?,
                None => write!(f, "; {k}")?,
            }
        }
        Ok(())
    }
}

/// `s` split at every `sep` outside a quoted string.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, ch) in s.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A token as it is, a quoted string without its quotes and escapes.
fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or(c)
                } else {
                    c
                });
            }
            out
        }
        None => s.to_string(),
    }
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    /// The first `Cache-Status` field line as it came (for messages).
    pub fn cache_status(&self) -> String {
        self.header("cache-status")
    }

    /// Every `Cache-Status` member, over all its field lines, in order.
    pub fn cache_statuses(&self) -> Vec<CacheStatus> {
        let lines: Vec<&str> = self
            .headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().expect("Cache-Status is text"))
            .collect();
        CacheStatus::parse_list(&lines.join(", "))
    }

    /// slate's `Cache-Status` member (the last one named `slate`); panics if there is none.
    pub fn cache(&self) -> CacheStatus {
        self.cache_statuses()
            .into_iter()
            .rev()
            .find(|m| m.name == "slate")
            .unwrap_or_else(|| panic!("no slate member in Cache-Status: {:?}", self.headers))
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole answer.
pub async fn send(
    c: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = c
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn get(c: &HttpClient, url: &str) -> Got {
    send(c, "GET", url, &[], "").await
}

/// GETs every URL of `urls` at once (a task each); the answers in the same order.
pub async fn get_all(c: &HttpClient, urls: impl IntoIterator<Item = String>) -> Vec<Got> {
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let c = c.clone();
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("a GET task panicked"));
    }
    out
}

/// Like `on_both_stores!`, plus `cluster::name` on a fresh three-node Redis Cluster.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $crate::on_both_stores!($($name),*);
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let c = $crate::common::RedisCluster::start();
                    super::$name(c.store()).await
                }
            )*
        }
    };
}

/// Generates one `#[tokio::test]` per scenario and store: `memory::name` and `redis::name`
/// (each Redis test starts its own redis-server).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::StoreUnderTest::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let r = $crate::common::RedisServer::start();
                    super::$name($crate::common::StoreUnderTest::Redis(r.url())).await
                }
            )*
        }
    };
}

/// A real 3-master Redis Cluster (no replicas), created with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            // Relative to the node's own --dir.
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--cluster-config-file",
                "nodes.conf",
            ];
            nodes.push(RedisServer::spawn(port, &args));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        eventually_blocking(
            "the Redis Cluster is ready",
            Duration::from_secs(10),
            || {
                let ok = nodes
                    .iter()
                    .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
                ok.then_some(())
            },
        );
        RedisCluster { nodes }
    }

    /// This cluster as the store of a test.
    pub fn store(&self) -> StoreUnderTest {
        StoreUnderTest::Cluster(self.nodes.iter().map(|n| n.url()).collect())
    }
}

/// slate as its own process (so a test can SIGKILL it), on a free port, admin listener off.
pub struct SlateProcess {
    child: Child,
    _dir: TempDir,
}

impl SlateProcess {
    /// Starts the slate binary with `config` (everything but `[server]`) and waits until it
    /// listens; returns it and its port.
    pub async fn start(config: &str) -> (SlateProcess, u16) {
        let dir = TempDir::new("slate-process");
        let port = free_port();
        let text =
            format!("[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"\"\n{config}");
        let path = dir.0.join("config.toml");
        std::fs::write(&path, text).expect("config written");
        let child = Command::new(env!("CARGO_BIN_EXE_slate"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the slate binary starts");
        eventually("slate listens", Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        (SlateProcess { child, _dir: dir }, port)
    }

    /// SIGKILL: no drain, no release of anything it holds.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SlateProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An origin tagging `/s/...` answers `Cache-Tag: sales, finance` and the others
/// `Surrogate-Key: inventory`; its bodies name the request and count (`/s/a #2`).
pub fn tagged_origin() -> impl Fn(&http::request::Parts, usize) -> Reply + Send + Sync + 'static {
    |p, n| {
        let r = Reply::ok(format!("{} #{n}", p.uri));
        if p.uri.path().starts_with("/s/") {
            r.header("cache-tag", "sales, finance")
        } else {
            r.header("surrogate-key", "inventory")
        }
    }
}

/// Whether a GET of `pq` is answered from the cache.
pub async fn hit(c: &HttpClient, slate: &Slate, pq: &str) -> bool {
    get(c, &slate.url(pq)).await.cache().is_hit()
}

/// GETs every URL of `urls` and checks that it is then a hit.
pub async fn fill(c: &HttpClient, slate: &Slate, urls: &[&str]) {
    for u in urls {
        get(c, &slate.url(u)).await;
        assert!(hit(c, slate, u).await, "{u} is cached");
    }
}

/// An origin on a bare TCP socket, for what hyper's server will not send: informational
/// responses, a 304 with a `Content-Length`, a connection closed before any answer. For the
/// n-th connection (from 0) it reads one request and writes `f(n)` verbatim, then closes;
/// `None` closes without writing a byte.
pub struct RawOrigin {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawOrigin {
    pub async fn start(f: impl Fn(usize) -> Option<String> + Send + Sync + 'static) -> RawOrigin {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (n2, f) = (connections.clone(), Arc::new(f));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let i = n2.fetch_add(1, Ordering::SeqCst);
                let f = f.clone();
                tokio::spawn(async move {
                    // One request: its head ends with an empty line (tests send no bodies).
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Some(answer) = f(i) {
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        RawOrigin { addr, connections }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
