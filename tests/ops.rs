//! Operating slate: live reload, check-config, metrics, health, the status page in a real
//! headless Chromium, JSON logs, graceful shutdown.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_slate");

fn write_config(dir: &TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.0.join("config.toml");
    // Save like an editor: write a temporary file, then rename it over the old one.
    let tmp = dir.0.join(".config.toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

fn config_text(origin: &str, port: u16, admin: u16, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[upstream]\nurl = \"{origin}\"\n{extra}"
    )
}

struct Proc {
    child: Child,
    port: u16,
    admin: u16,
}

impl Proc {
    async fn start(dir: &TempDir, origin: &str, extra: &str, args: &[&str]) -> Proc {
        let (port, admin) = (free_port(), free_port());
        let path = write_config(dir, &config_text(origin, port, admin, extra));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Killed on drop, should it not start.
        let p = Proc { child, port, admin };
        eventually("slate starts", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", admin))
                .await
                .ok()
        })
        .await;
        p
    }

    fn url(&self, pq: &str) -> String {
        format!("http://127.0.0.1:{}{pq}", self.port)
    }

    fn admin_url(&self, pq: &str) -> String {
        format!("http://127.0.0.1:{}{pq}", self.admin)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config version the instance reports (from `slate_info` in /metrics).
async fn config_version(c: &HttpClient, p: &Proc) -> String {
    let m = get(c, &p.admin_url("/metrics")).await.text();
    let line = m
        .lines()
        .find(|l| l.starts_with("slate_info{"))
        .expect("slate_info")
        .to_string();
    line.split("config=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_rename_save_and_broken_edits_keep_the_old_config() {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let dir = TempDir::new("reload");
    let p = Proc::start(&dir, &origin.url(), RULE, &[]).await;
    let c = client();
    get(&c, &p.url("/r")).await;
    assert!(get(&c, &p.url("/r")).await.cache().is_hit());
    let v1 = config_version(&c, &p).await;

    // A new rule: /r is no longer cached. The save is a rename; reload within 2 s.
    let text = config_text(
        &origin.url(),
        p.port,
        p.admin,
        "[[rules]]\npath = \"/\"\ncache = false\n",
    );
    let t = Instant::now();
    write_config(&dir, &text);
    eventually(
        "reload after a rename-save",
        Duration::from_secs(2),
        || async { (get(&c, &p.url("/r")).await.cache().fwd() == Some("bypass")).then_some(()) },
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(2));
    let v2 = config_version(&c, &p).await;
    assert_ne!(v1, v2);

    // A broken edit: logged, the running config stays, slate keeps serving.
    write_config(
        &dir,
        &format!("{text}[[rules]]\npath = \"/x\"\nttl = \"whenever\"\n"),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(config_version(&c, &p).await, v2);
    let g = get(&c, &p.url("/r")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.cache().fwd(), Some("bypass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let dir = TempDir::new("hup");
    let p = Proc::start(&dir, &origin.url(), "", &["--no-watch"]).await;
    let c = client();
    assert_eq!(
        get(&c, &p.url("/h")).await.cache().detail(),
        Some("no-freshness")
    );
    write_config(&dir, &config_text(&origin.url(), p.port, p.admin, RULE));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(&c, &p.url("/h")).await.cache().detail(),
        Some("no-freshness"),
        "--no-watch: the file alone changes nothing"
    );
    p.signal("-HUP");
    eventually("reload on SIGHUP", Duration::from_secs(2), || async {
        get(&c, &p.url("/h"))
            .await
            .cache()
            .has("stored")
            .then_some(())
    })
    .await;
}

/// Starts slate (`--no-watch`) on `store` while `redis` holds every command for
/// `pause_ms` (CLIENT PAUSE), so loading the purge log holds start-up that long. Returns
/// once the listeners are bound, which is before the store is reached.
async fn start_while_paused(
    redis: &RedisServer,
    pause_ms: u64,
    dir: &TempDir,
    origin: &str,
    store: &str,
) -> Proc {
    let pause = pause_ms.to_string();
    assert!(redis
        .cli(&["CLIENT", "PAUSE", &pause, "ALL"])
        .contains("OK"));
    Proc::start(dir, origin, store, &["--no-watch"]).await
}

/// Signal handlers come before the store: a SIGHUP while slate is still connecting does
/// not kill it, and is acted on once it serves; a SIGTERM then ends start-up at once, with
/// exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_during_start_up() {
    let redis = RedisServer::start();
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let store = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"5s\"\n",
        redis.url()
    );
    let c = client();

    let dir = TempDir::new("hup-start");
    let mut p = start_while_paused(&redis, 2000, &dir, &origin.url(), &store).await;
    let hup = Instant::now();
    p.signal("-HUP");
    let h = get(&c, &p.admin_url("/healthz")).await;
    assert_eq!(h.status, 200, "{}", h.text());
    assert!(
        hup.elapsed() > Duration::from_millis(800),
        "the SIGHUP came while slate was still starting ({:?} before it served)",
        hup.elapsed()
    );
    assert!(p.child.try_wait().unwrap().is_none(), "still running");
    p.signal("-TERM");
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut p.child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("SIGHUP: reloading the config"),
        "the held SIGHUP reloads once slate is up:\n{log}"
    );

    // SIGTERM while the store holds start-up: out at once, not after the store answers.
    let dir = TempDir::new("term-start");
    let mut p = start_while_paused(&redis, 4000, &dir, &origin.url(), &store).await;
    let term = Instant::now();
    p.signal("-TERM");
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        term.elapsed() < Duration::from_millis(2500),
        "stopped during start-up in {:?}",
        term.elapsed()
    );
}

/// `server.shutdown_timeout` bounds the whole drain: a request waiting on a fill that
/// outlasts it holds both its connection and the fill, and the two waits share one
/// deadline instead of taking one timeout each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_at_most_one_shutdown_timeout() {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("#{n}")).delay(Duration::from_secs(5))).await;
    let slate = Slate::builder(&origin.url())
        .config("[server]\nshutdown_timeout = \"1s\"\n")
        .config(RULE)
        .start()
        .await;
    let c = client();
    let inflight = tokio::spawn({
        let (c, u) = (c.clone(), slate.url("/slow"));
        async move { send(&c, "GET", &u, &[], "").await }
    });
    eventually(
        "the fill reaches the origin",
        Duration::from_secs(5),
        || async { (origin.hits("/slow") > 0).then_some(()) },
    )
    .await;
    assert_eq!(slate.instance.shared.flights.in_flight(), 1, "a fill runs");
    let t = Instant::now();
    slate.stop().await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1700),
        "drained in {took:?}: one shutdown_timeout (1s), not one for connections and one for fills"
    );
    inflight.abort();
}

#[test]
fn check_config_reports_every_error_kind_with_its_line() {
    let dir = TempDir::new("check");
    let cases: &[(&str, &str, usize)] = &[
        ("[server]\nlisten = \"127.0.0.1:1\"\nlissen = 1\n", "lissen", 3),
        ("[upstream]\n\ntimeout = \"sometime\"\n", "upstream.timeout", 3),
        ("[store]\nmemory_limit = \"12 bananas\"\n", "store.memory_limit", 2),
        ("[cache]\nignore_params = [\"utm_[a-z]\"]\n", "cache.ignore_params", 2),
        ("[purge]\nallow = [\"10.0.0.0/33\"]\n", "purge.allow", 2),
        ("[[rules]]\npath = \"/a/\"\nttl = \"1m\"\n[[rules]]\npath = \"/a/\"\nttl = \"2m\"\n", "same path", 5),
        ("[server]\nlisten = 8080\n", "listen", 2),
        ("[store]\nkind = \"redis-cluster\"\n", "store.nodes", 2),
        ("[[rules]]\npath = \"/a/\"\noverride_origin = true\n", "rules.override_origin", 3),
        ("[server]\nmax_connections = 3000000000000000000\n", "server.max_connections", 2),
        ("[upstream]\ntimeout = \"500000000000years\"\n", "upstream.timeout", 2),
        ("[store]\nkind = \"memory\"\nfill_lease = \"100000000000y\"\n", "store.fill_lease", 3),
        ("[[rules]]\npath = \"/a/\"\nttl = \"2years\"\n", "rules.ttl", 3),
        ("[warm]\nevery = \"0\"\n", "warm.every", 2),
        ("[[rules]]\npath = \"/a/\"\nttl = \"1m\"\ncolour = \"red\"\n[[rules]]\npath = \"/b/\"\nshade = 1\n", "colour", 4),
    ];
    for (text, needle, line) in cases {
        let f = dir.0.join("c.toml");
        std::fs::write(&f, text).unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        let expect = format!("{}:{line}:", f.display());
        assert!(
            err.contains(&expect) && err.contains(needle),
            "{text:?}\n=> {err}"
        );
    }
    // Every unknown key at once.
    let two_unknown = cases.iter().find(|(_, needle, _)| *needle == "colour");
    std::fs::write(dir.0.join("c.toml"), two_unknown.unwrap().0).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(dir.0.join("c.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("colour") && err.contains("shade") && err.contains(":7:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_healthz_reports_the_store() {
    let mut redis = RedisServer::start();
    let origin =
        Origin::start(|_, n| Reply::ok(format!("#{n}")).delay(Duration::from_millis(20))).await;
    let store = StoreUnderTest::Redis(redis.url());
    let slate = Slate::builder(&origin.url())
        .store(&store)
        .config("[[rules]]\npath = \"/api/\"\nttl = \"1h\"\n")
        .start()
        .await;
    let c = client();
    for _ in 0..5 {
        get(&c, &slate.url("/api/x")).await;
    }
    // The same URL spelled with an escape: the rule is matched on the normalized path, and
    // the request is counted under that rule's route (it was counted under "none").
    assert!(get(&c, &slate.url("/%61pi/x")).await.cache().is_hit());
    send(&c, "PURGE", &slate.url("/api/*"), &[], "").await;
    let m = get(&c, &slate.admin_url("/metrics")).await;
    assert_eq!(m.status, 200);
    let t = m.text();
    let value = |line: &str| -> f64 {
        t.lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("{line} missing in\n{t}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("slate_requests_total{outcome=\"hit\",route=\"/api/\"}"),
        5.0
    );
    assert!(
        !t.contains("slate_requests_total{outcome=\"hit\",route=\"none\"}"),
        "every hit had its rule"
    );
    assert_eq!(
        value("slate_requests_total{outcome=\"miss\",route=\"/api/\"}"),
        1.0
    );
    assert_eq!(value("slate_upstream_duration_seconds_count"), 1.0);
    assert!(
        t.contains("slate_upstream_duration_seconds_bucket{le=\"300\"}"),
        "buckets up to minutes"
    );
    assert!(value("slate_store_duration_seconds_count") >= 5.0);
    assert!(value("slate_upstream_seconds_saved_total") >= 4.0 * 0.02);
    assert_eq!(
        value("slate_purges_total{form=\"prefix\",outcome=\"ok\"}"),
        1.0
    );
    assert!(value("slate_served_from_cache_bytes_total") >= 8.0);

    let h = get(&c, &slate.admin_url("/healthz")).await;
    assert_eq!(h.status, 200);
    let j: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(
        (j["status"].as_str(), j["store_ok"].as_bool()),
        (Some("ok"), Some(true))
    );
    redis.kill();
    let h = get(&c, &slate.admin_url("/healthz")).await;
    assert_eq!(h.status, 200, "still serving");
    let j: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(
        (j["status"].as_str(), j["store_ok"].as_bool()),
        (Some("degraded"), Some(false))
    );
    slate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_in_headless_chromium() {
    let origin = Origin::start(|_, n| Reply::ok(format!("#{n}"))).await;
    let slate = Slate::builder(&origin.url()).config(RULE).start().await;
    let c = client();
    for _ in 0..4 {
        get(&c, &slate.url("/dash")).await; // 1 miss, 3 hits: 75.0%
    }
    send(&c, "PURGE", &slate.url("/dash"), &[], "").await;
    let page = get(&c, &slate.admin_url("/status")).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let dir = TempDir::new("chromium");
    let browser = |args: &[&str]| {
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", dir.0.join("profile").display()))
            .args(args)
            .output()
            .expect("chromium is required for this test (apt-get install chromium); .ci/run installs it")
    };
    let url = slate.admin_url("/status");
    let dom = browser(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"hit-ratio\">75.0%"),
        "the rendered page shows the hit ratio:\n{dom}"
    );
    assert!(dom.contains("<svg"), "the chart rendered");
    assert!(dom.contains("/dash"), "the recent purge is listed");
    let shot = dir.0.join("status.png");
    let out = browser(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1000,1400",
        &url,
    ]);
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "a real screenshot ({} bytes)",
        png.len()
    );
    slate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_line_by_line_and_sigterm_drains() {
    let origin =
        Origin::start(|_, n| Reply::ok(format!("#{n}")).delay(Duration::from_millis(800))).await;
    let dir = TempDir::new("json");
    let extra = format!("[log]\nformat = \"json\"\nlevel = \"info\"\naccess_log = true\n{RULE}");
    let mut p = Proc::start(&dir, &origin.url(), &extra, &[]).await;
    let c = client();
    assert_eq!(send(&c, "PURGE", &p.url("/x*"), &[], "").await.status, 200);
    // An in-flight request when SIGTERM arrives still gets its answer.
    let inflight = tokio::spawn({
        let (c, u) = (c.clone(), p.url("/slow"));
        async move { get(&c, &u).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("-TERM");
    let g = inflight.await.unwrap();
    assert_eq!((g.status, g.text().as_str()), (200, "#1"));
    let status = p.child.wait().unwrap();
    assert!(status.success(), "exit 0 after draining: {status:?}");
    let lines: Vec<String> = BufReader::new(p.child.stderr.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    let mut saw_purge = false;
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        if v["message"] == "purge" {
            saw_purge = true;
            assert_eq!(v["scope"], "prefix");
            assert_eq!(
                v["peer"].as_str().map(|s| s.starts_with("127.0.0.1")),
                Some(true)
            );
        }
    }
    assert!(saw_purge, "one line per purge, with its source: {lines:?}");
}
