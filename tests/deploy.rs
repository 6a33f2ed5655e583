//! Packaging that runs: what of deploy/ can be checked without Docker or systemd is.
//! - The compose stack's slate: the binary started with deploy/slate.toml, the command and
//!   environment docker-compose.yml gives it, the `origin` service's own command, and a real
//!   redis-server (only hosts and ports rewritten), answers /healthz, on Redis, and serves.
//! - The Grafana dashboard names only metrics (and labels) slate exports.
//! - deploy/slate.service parses, is `Type=notify` and hardened, and its command lines are
//!   ones slate runs; the binary sends READY=1 once it listens and STOPPING=1 on SIGTERM.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A child process, killed on drop (a failing test leaves nothing running).
struct Running(Child);

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        Running(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the slate binary starts"),
        )
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("a pid");
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    /// Waits for it to exit by itself.
    fn wait(&mut self) -> std::process::ExitStatus {
        eventually_blocking("slate exits", Duration::from_secs(40), || {
            self.0.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `url` until it answers, for a process that is starting.
async fn answered(c: &HttpClient, url: &str) -> Got {
    let req = || {
        let c = c.clone();
        let url = url.to_string();
        async move {
            let req = http::Request::get(&url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .ok()?;
            let resp = c.request(req).await.ok()?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .ok()?
                .to_bytes();
            Some(Got {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        }
    };
    eventually(&format!("{url} answers"), Duration::from_secs(20), req).await
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

fn compose() -> Yaml {
    let text = read("deploy/docker-compose.yml");
    let mut docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what} is a list: {y:?}"))
        .iter()
        .map(|s| match s {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            other => panic!("{what}: {other:?} is not a string"),
        })
        .collect()
}

/// A service's `environment:`, in either of compose's forms (a map, or `KEY=value` lines).
fn environment(service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::BadValue => vec![],
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| {
                let k = k.as_str().expect("an environment name").to_string();
                let v = match v {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => panic!("environment {k}: {other:?}"),
                };
                (k, v)
            })
            .collect(),
        list @ Yaml::Array(_) => strings(list, "environment")
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect(),
        other => panic!("environment: {other:?}"),
    }
}

/// `"HOST:PORT"` → `"127.0.0.1:NEW"` when `s` is a socket address; else `None`.
fn local_addr(s: &str, port: u16) -> Option<String> {
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|_| format!("127.0.0.1:{port}"))
}

/// Rewrites, in every string of `v`, a URL's `host[:port]` that names a compose service to
/// the address standing in for it here. Nothing else changes.
fn rewrite_hosts(v: &mut toml::Value, hosts: &HashMap<String, String>) {
    match v {
        // Only URLs: a bare word ("redis", the store kind) is no host.
        toml::Value::String(s) if s.contains("://") => {
            let Ok(uri) = s.parse::<http::Uri>() else {
                return;
            };
            let Some(auth) = uri.authority() else { return };
            if let Some(local) = hosts.get(auth.host()) {
                *s = s.replacen(auth.as_str(), local, 1);
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| rewrite_hosts(v, hosts)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| rewrite_hosts(v, hosts)),
        _ => {}
    }
}

/// The container port a `ports:` entry publishes (`"127.0.0.1:8080:8080"` → 8080).
fn container_port(entry: &str) -> u16 {
    let p = entry.rsplit(':').next().unwrap_or(entry);
    let p = p.split('/').next().unwrap_or(p);
    p.parse()
        .unwrap_or_else(|_| panic!("ports entry {entry:?}"))
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr:?}: {e}"))
        .port()
}

/// The `ENTRYPOINT` or `CMD` of the Dockerfile's last stage, in exec form.
fn dockerfile(instruction: &str) -> Vec<String> {
    let text = read("Dockerfile");
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(instruction)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_slate_starts_and_answers() {
    let doc = compose();
    let services = &doc["services"];
    let slate_svc = &services["slate"];
    let origin_svc = &services["origin"];
    assert!(
        !slate_svc.is_badvalue() && !origin_svc.is_badvalue(),
        "services slate, origin"
    );

    // The image runs `slate ARGS`; the compose command is those ARGS.
    assert_eq!(dockerfile("ENTRYPOINT"), ["slate"]);
    let command = strings(&slate_svc["command"], "slate command");
    assert_eq!(
        dockerfile("CMD"),
        command,
        "compose runs the image's default command"
    );

    // The config the container gets: a volume mounted where the command points.
    let (host_file, in_container) = strings(&slate_svc["volumes"], "volumes")
        .into_iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            let (host, container) = (parts.next()?.to_string(), parts.next()?.to_string());
            command.contains(&container).then_some((host, container))
        })
        .expect("a volume holds the config the command names");
    let config_text = read(&format!("deploy/{host_file}"));
    let mut config: toml::Table = config_text.parse().expect("slate.toml is TOML");

    // The origin service, as compose runs it: the image with its own command, on a local
    // port instead of 0.0.0.0:9000.
    let origin_port = free_port();
    let mut origin_cmd = strings(&origin_svc["command"], "origin command");
    let listen = origin_cmd
        .iter()
        .position(|a| a == "--listen")
        .expect("the origin's --listen");
    let origin_container_port = port_of(&origin_cmd[listen + 1]);
    origin_cmd[listen + 1] = format!("127.0.0.1:{origin_port}");
    let _origin = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_slate"))
            .args(&origin_cmd)
            .env_clear()
            .envs(environment(origin_svc)),
    );

    // The config points at the redis service: a real redis-server stands in for it.
    let store = config["store"].as_table().expect("[store]");
    assert_eq!(
        store["kind"].as_str(),
        Some("redis"),
        "the compose config runs on Redis"
    );
    assert!(!services["redis"].is_badvalue(), "a redis service");
    let redis = RedisServer::start();
    let hosts = HashMap::from([
        ("redis".to_string(), format!("127.0.0.1:{}", redis.port)),
        ("origin".to_string(), format!("127.0.0.1:{origin_port}")),
    ]);
    let upstream = config["upstream"]["url"].as_str().expect("upstream.url");
    assert_eq!(
        upstream.parse::<http::Uri>().unwrap().port_u16(),
        Some(origin_container_port),
        "slate's upstream is the origin service's port"
    );
    let mut v = toml::Value::Table(config.clone());
    rewrite_hosts(&mut v, &hosts);
    config = v.try_into().expect("a table");

    // Listen addresses: the ports compose publishes are the ones slate listens on.
    let published: BTreeSet<u16> = strings(&slate_svc["ports"], "ports")
        .iter()
        .map(|p| container_port(p))
        .collect();
    let (proxy_port, admin_port) = (free_port(), free_port());
    let server = config["server"].as_table_mut().expect("[server]");
    let mut listening = BTreeSet::new();
    for (key, port) in [("listen", proxy_port), ("admin_listen", admin_port)] {
        let addr = server[key].as_str().expect("a listen address").to_string();
        listening.insert(port_of(&addr));
        server.insert(
            key.into(),
            local_addr(&addr, port).expect("a socket address").into(),
        );
    }
    assert_eq!(
        published, listening,
        "compose publishes slate's listen ports"
    );
    // Prometheus scrapes the admin port of the slate service.
    let prom = read("deploy/prometheus.yml");
    let admin_container = server_port(&config_text, "admin_listen");
    assert!(
        prom.contains(&format!("slate:{admin_container}")),
        "prometheus.yml scrapes slate:{admin_container}"
    );

    let dir = TempDir::new("compose");
    let path = dir.0.join("config.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let args: Vec<String> = command
        .iter()
        .map(|a| match a == &in_container {
            true => path.display().to_string(),
            false => a.clone(),
        })
        .collect();
    let check = Command::new(env!("CARGO_BIN_EXE_slate"))
        .args(["check-config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The container's environment is compose's, and nothing of this test's.
    let _slate = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_slate"))
            .args(&args)
            .env_clear()
            .envs(environment(slate_svc)),
    );

    let c = client();
    let h = answered(&c, &format!("http://127.0.0.1:{admin_port}/healthz")).await;
    assert_eq!(h.status, 200, "{}", h.text());
    let j: serde_json::Value = serde_json::from_slice(&h.body).expect("JSON");
    assert_eq!(
        (j["status"].as_str(), j["store"].as_str()),
        (Some("ok"), Some("redis")),
        "{j}"
    );
    // The [warm] URL comes from the origin service through Redis: a hit once warmed.
    let warm = config["warm"]["urls"][0].as_str().expect("a warm URL");
    let url = format!("http://127.0.0.1:{proxy_port}{warm}");
    eventually(
        "the warmed URL is a hit",
        Duration::from_secs(20),
        || async { get(&c, &url).await.cache().is_hit().then_some(()) },
    )
    .await;
    let keys = redis.cli(&["--scan", "--pattern", "slate:*"]);
    assert!(keys.contains("slate:v1:"), "entries in Redis: {keys}");
}

/// The port of `[server] key` in a config's text.
fn server_port(text: &str, key: &str) -> u16 {
    let t: toml::Table = text.parse().unwrap();
    port_of(t["server"][key].as_str().expect("a listen address"))
}

// ---------------------------------------------------------------------------------------
// The Grafana dashboard

/// The metric families of a Prometheus text exposition and the labels each carries.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = m.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let inner = &line[end + 1..line.rfind('}').expect("closing brace")];
            labels.extend(matchers(inner));
        }
    }
    m
}

/// The label names of `a="x",b=~"y"` (values may hold commas and escaped quotes).
fn matchers(inner: &str) -> Vec<String> {
    let (mut names, mut cur, mut quoted, mut escaped, mut in_name) =
        (Vec::new(), String::new(), false, false, true);
    for ch in inner.chars() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                in_name = true;
                cur.clear();
            }
            '=' | '!' | '~' if !quoted && in_name => {
                names.push(cur.trim().to_string());
                in_name = false;
            }
            c if in_name && !quoted => cur.push(c),
            _ => {}
        }
    }
    names
}

/// What is wrong with one PromQL expression against `metrics`: a `slate_*` name slate does
/// not export, a label matcher or a `by (...)` label that none of its metrics carries.
fn check_expr(expr: &str, metrics: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    // Labels Prometheus adds to every series (target labels from prometheus.yml) and `le`.
    let added = ["instance", "job", "service"];
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("slate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        match metrics.get(name) {
            None => problems.push(format!("{name} is not exported, in: {expr}")),
            Some(labels) => {
                used.insert(name);
                if tail[end..].starts_with('{') {
                    let close = tail[end..].find('}').expect("closing brace") + end;
                    for l in matchers(&tail[end + 1..close]) {
                        if !labels.contains(&l) && !added.contains(&l.as_str()) {
                            problems.push(format!("{name} has no label {l:?}, in: {expr}"));
                        }
                    }
                }
            }
        }
        rest = &tail[end..];
    }
    let mut rest = expr;
    while let Some(i) = rest.find(" by (") {
        let tail = &rest[i + 5..];
        let close = tail.find(')').expect("by (...) closes");
        for l in tail[..close].split(',').map(str::trim) {
            let known = added.contains(&l)
                || used.iter().any(|m| metrics[*m].contains(l))
                || (l == "le" && used.iter().any(|m| m.ends_with("_bucket")));
            if !known {
                problems.push(format!(
                    "by ({l}): no metric of the expression has it: {expr}"
                ));
            }
        }
        rest = &tail[close..];
    }
    problems
}

/// Every PromQL query of the dashboard: panel targets (rows included) and variables.
fn queries(d: &serde_json::Value) -> Vec<String> {
    fn panels(p: &serde_json::Value, out: &mut Vec<String>) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(str::to_string));
        }
        for inner in p["panels"].as_array().into_iter().flatten() {
            panels(inner, out);
        }
    }
    let mut out = Vec::new();
    panels(d, &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        out.extend(v["definition"].as_str().map(str::to_string));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_names_only_metrics_slate_exports() {
    // Redis with the in-process tier: every metric family slate has is exported.
    let redis = RedisServer::start();
    let origin = Origin::start(tagged_origin()).await;
    let s = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Redis(redis.url()))
        .store_keys("l1 = \"64MiB\"")
        .upstream_keys("max_fills = 4")
        .config("[[rules]]\npath = \"/s/\"\nttl = \"1h\"\n")
        .start()
        .await;
    let c = client();
    fill(&c, &s, &["/s/a", "/s/b?x=1"]).await;
    get(&c, &s.url("/none")).await;
    send(&c, "PURGE", &s.url("/s/a"), &[], "").await;
    let scrape = get(&c, &s.admin_url("/metrics")).await;
    assert_eq!(scrape.status, 200);
    let metrics = exported(&scrape.text());
    assert!(metrics.contains_key("slate_l1_hits_total"), "{metrics:?}");

    let d: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/slate.json")).expect("JSON");
    let qs = queries(&d);
    assert!(qs.len() > 20, "the dashboard's queries: {qs:?}");
    let problems: Vec<String> = qs.iter().flat_map(|q| check_expr(q, &metrics)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The fill queue row.
    for m in [
        "slate_fill_queue_length",
        "slate_fills_running",
        "slate_fill_queue_wait_seconds_bucket",
        "slate_fill_queue_timeouts_total",
        "slate_fill_queue_refused_total",
    ] {
        assert!(qs.iter().any(|q| q.contains(m)), "the dashboard shows {m}");
    }
    // The check itself can fail.
    assert_eq!(check_expr("rate(slate_bogus_total[1m])", &metrics).len(), 1);
    assert_eq!(
        check_expr("slate_requests_total{rout=\"x\"}", &metrics).len(),
        1
    );
    assert_eq!(
        check_expr("sum by (form) (slate_requests_total)", &metrics).len(),
        1
    );
    assert!(check_expr(
        "sum by (route) (slate_requests_total{outcome=\"hit\"})",
        &metrics
    )
    .is_empty());
}

// ---------------------------------------------------------------------------------------
// The systemd unit

/// A unit file's `(section, key, value)` entries in order; panics on a line that is none of
/// a comment, a section header, or `Key=value` (continuation lines joined).
fn unit(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = None::<String>;
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("slate.service:{}: not Key=value: {raw:?}", n + 1));
        let k = k.trim();
        assert!(
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()),
            "slate.service:{}: bad key {k:?}",
            n + 1
        );
        let s = section
            .clone()
            .unwrap_or_else(|| panic!("slate.service:{}: a key before any section", n + 1));
        out.push((s, k.to_string(), v.trim().to_string()));
    }
    assert!(pending.is_empty(), "a continuation at the end of the file");
    out
}

/// The value of `[Service] key` (the last one, as systemd reads a key given twice).
fn service<'a>(u: &'a [(String, String, String)], key: &str) -> Option<&'a str> {
    u.iter()
        .rev()
        .find(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.as_str())
}

/// A command line of the unit, as argv: its `-@:+!` prefixes dropped, `/usr/local/bin/slate`
/// the binary under test, `/etc/slate/config.toml` the given config.
fn argv(line: &str, config: &Path) -> Vec<String> {
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    assert!(
        !line.contains(['"', '\'', '%', '$']),
        "a plain command line (no quotes, specifiers or variables): {line}"
    );
    let mut words = line.split_whitespace().map(|w| match w {
        "/etc/slate/config.toml" => config.display().to_string(),
        w => w.to_string(),
    });
    let bin = words.next().expect("a command");
    assert_eq!(
        bin, "/usr/local/bin/slate",
        "the unit runs the installed slate"
    );
    std::iter::once(env!("CARGO_BIN_EXE_slate").to_string())
        .chain(words)
        .collect()
}

#[test]
fn the_unit_is_type_notify_and_hardened() {
    let u = unit(&read("deploy/slate.service"));
    let sections: BTreeSet<&str> = u.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(sections, BTreeSet::from(["Install", "Service", "Unit"]));
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectHome", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("DynamicUser", "yes"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(service(&u, key), Some(value), "[Service] {key}");
    }
    // The readiness message goes over a Unix datagram socket: AF_UNIX must stay allowed.
    let families = service(&u, "RestrictAddressFamilies").expect("RestrictAddressFamilies");
    for f in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(
            families.split_whitespace().any(|x| x == f),
            "{f} in {families}"
        );
    }
    // Longer than slate's drain (server.shutdown_timeout, 30 s by default).
    let stop = service(&u, "TimeoutStopSec").expect("TimeoutStopSec");
    assert!(
        humantime::parse_duration(stop).unwrap() > Duration::from_secs(30),
        "{stop}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_commands_run_and_slate_tells_systemd_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let u = unit(&read("deploy/slate.service"));
    let dir = TempDir::new("unit");
    // The example config, as installed at /etc/slate/config.toml, on free local ports.
    let (port, admin) = (free_port(), free_port());
    let mut config: toml::Table = read("config.toml").parse().unwrap();
    let server = config["server"].as_table_mut().unwrap();
    server.insert("listen".into(), format!("127.0.0.1:{port}").into());
    server.insert("admin_listen".into(), format!("127.0.0.1:{admin}").into());
    let path = dir.0.join("config.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    // ExecStartPre (check-config) passes on it.
    let pre = argv(service(&u, "ExecStartPre").expect("ExecStartPre"), &path);
    let out = Command::new(&pre[0]).args(&pre[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{pre:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ExecStart, with the socket systemd would give it.
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("a notify socket");
    // A bound on a broken start, not a speed expectation.
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let start = argv(service(&u, "ExecStart").expect("ExecStart"), &path);
    let mut slate = Running::spawn(
        Command::new(&start[0])
            .args(&start[1..])
            .env("NOTIFY_SOCKET", &sock_path),
    );
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = sock
            .recv(&mut buf)
            .expect("a notification before the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=serving on 127.0.0.1:{port}")),
        "{ready:?}"
    );
    // Ready means listening: both listeners answer at once, no retry.
    let c = client();
    assert_eq!(
        get(&c, &format!("http://127.0.0.1:{admin}/healthz"))
            .await
            .status,
        200
    );
    let r = send(&c, "GET", &format!("http://127.0.0.1:{port}/"), &[], "").await;
    assert!(r.status >= 200, "the proxy listener answers: {}", r.status);

    slate.signal(libc::SIGTERM);
    let stopping = recv();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(slate.wait().success(), "a clean exit after the drain");
}

/// A config in `dir` on free ports, its upstream nobody: the file and the admin port.
fn bare_config(dir: &TempDir) -> (PathBuf, u16) {
    let (port, admin) = (free_port(), free_port());
    let path = dir.0.join("config.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n"
    );
    std::fs::write(&path, text).unwrap();
    (path, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_notify_socket_does_not_stop_slate() {
    let dir = TempDir::new("nosock");
    let (path, admin) = bare_config(&dir);
    let _slate = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_slate"))
            .arg("--config")
            .arg(&path)
            .env("NOTIFY_SOCKET", dir.0.join("nobody-listens.sock")),
    );
    let c = client();
    let h = answered(&c, &format!("http://127.0.0.1:{admin}/healthz")).await;
    assert_eq!(h.status, 200, "{}", h.text());
}

/// `THP_enabled` of a running process, from /proc (Linux ≥ 5.0 shows it).
fn huge_pages_allowed(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("the kernel shows THP_enabled");
    line.trim() == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slate_keeps_huge_pages_out_of_its_heap_unless_mimalloc_is_told_otherwise() {
    // This test process has them, as every process does unless it opts out: what slate
    // reports below is its own doing.
    assert!(huge_pages_allowed(std::process::id()));
    let c = client();
    for (allow, expected) in [(None, false), (Some("1"), true)] {
        let dir = TempDir::new("thp");
        let (path, admin) = bare_config(&dir);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slate"));
        cmd.arg("--config")
            .arg(&path)
            .env_remove("MIMALLOC_ALLOW_THP");
        if let Some(v) = allow {
            cmd.env("MIMALLOC_ALLOW_THP", v);
        }
        let slate = Running::spawn(&mut cmd);
        let h = answered(&c, &format!("http://127.0.0.1:{admin}/healthz")).await;
        assert_eq!(h.status, 200, "{}", h.text());
        assert_eq!(
            huge_pages_allowed(slate.0.id()),
            expected,
            "MIMALLOC_ALLOW_THP={allow:?}"
        );
    }
}
