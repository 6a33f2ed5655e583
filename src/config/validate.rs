//! [`FileConfig`] → [`Config`]: every value checked, every problem reported with its line.

use super::file::{FileConfig, FileRule, S};
use super::*;
use crate::coding::Compress;
use std::ops::Range;

/// Turns byte offsets into 1-based line and column numbers.
struct Locator<'a> {
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: Option<Range<usize>>, message: String) -> Problem {
        let (line, column) = match span {
            Some(r) => {
                let upto = &self.text[..r.start.min(self.text.len())];
                let line = upto.matches('\n').count() + 1;
                let column = upto.len() - upto.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                (line, column)
            }
            None => (1, 1),
        };
        Problem {
            line,
            column,
            message,
        }
    }
}

/// Collects problems while validating, so that one run reports all of them.
struct Checker<'a> {
    loc: Locator<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn bad(&mut self, s: &S, key: &str, why: impl std::fmt::Display) {
        let p = self.loc.at(
            Some(s.span()),
            format!("{key}: {why} (got {:?})", s.get_ref()),
        );
        self.problems.push(p);
    }

    fn duration(&mut self, v: &Option<S>, key: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => self.bounded_duration(s, key).unwrap_or(default),
        }
    }

    /// A duration of at most [`MAX_DURATION`]; `None` (and a problem) when it is not one.
    fn bounded_duration(&mut self, s: &S, key: &str) -> Option<Duration> {
        match parse_duration(s.get_ref()) {
            Ok(d) if d <= MAX_DURATION => Some(d),
            Ok(_) => {
                self.bad(s, key, "must be at most 365d");
                None
            }
            Err(e) => {
                self.bad(s, key, e);
                None
            }
        }
    }

    /// A timeout: a duration above zero (a zero timeout would fail everything at once: no
    /// client could send its headers, no store or upstream could answer).
    fn timeout(&mut self, v: &Option<S>, key: &str, default: Duration) -> Duration {
        let d = self.duration(v, key, default);
        match v {
            Some(s) if d.is_zero() => {
                self.bad(s, key, "must be more than 0");
                default
            }
            _ => d,
        }
    }

    fn size(&mut self, v: &Option<S>, key: &str, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => parse_size(s.get_ref()).unwrap_or_else(|e| {
                self.bad(s, key, e);
                default
            }),
        }
    }

    fn addr(&mut self, v: &Option<S>, key: &str, default: &str) -> Option<SocketAddr> {
        let Some(s) = v else {
            return default.parse().ok();
        };
        match s.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(s, key, "expected an address like \"127.0.0.1:8080\"");
                None
            }
        }
    }

    fn globs(&mut self, v: &[S], key: &str) -> Vec<Glob> {
        v.iter()
            .filter_map(|s| match Glob::new(s.get_ref()) {
                Ok(g) => Some(g),
                Err(e) => {
                    self.bad(s, key, e);
                    None
                }
            })
            .collect()
    }

    /// A whole number from `min` to 100000 (a count of fills, of slots).
    fn count(
        &mut self,
        v: &Option<toml::Spanned<i64>>,
        key: &str,
        default: usize,
        min: i64,
    ) -> usize {
        match v {
            None => default,
            Some(n) if (min..=100_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                let p = self.loc.at(
                    Some(n.span()),
                    format!("{key}: must be from {min} to 100000 (got {})", n.get_ref()),
                );
                self.problems.push(p);
                default
            }
        }
    }

    fn one_of(&mut self, v: &Option<S>, key: &str, allowed: &[&str], default: &str) -> String {
        match v {
            None => default.to_string(),
            Some(s) if allowed.contains(&s.get_ref().as_str()) => s.get_ref().clone(),
            Some(s) => {
                self.bad(s, key, format!("expected one of {allowed:?}"));
                default.to_string()
            }
        }
    }
}

/// The dotted name (`server.listen`) of the key whose value is at byte `at`, from the line
/// it is on and the table header above it.
fn key_at(text: &str, at: usize) -> Option<String> {
    let upto = text.get(..at)?;
    let line_start = upto.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split('=').next()?.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = upto[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The longest duration any key takes. Far above any sensible setting, and far below what
/// breaks the arithmetic on them: a deadline is `Instant::now()` plus a timeout (plus twice
/// the fill lease), and `Instant + Duration` panics on overflow, which a value like
/// `"500000000000years"` (it parses) would cause on the first request.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most `server.max_connections` may be: each open connection is a file descriptor,
/// and the limit becomes a semaphore whose constructor panics above `usize::MAX >> 3`.
pub const MAX_CONNECTIONS: i64 = 1_000_000;

/// The most `server.max_header_size` may be: HTTP/2 takes it as a `u32`, and no client needs
/// more than a few MiB of headers.
pub const MAX_HEADER_SIZE: u64 = 16 << 20;

/// The shortest `warm.every`: the warm loop wakes once a round even with no URLs (a reload
/// may add some), so a zero round would spin a core.
pub const MIN_WARM_EVERY: Duration = Duration::from_secs(1);

/// Parses a duration: `"250ms"`, `"90s"`, `"1h"`, `"2d"`, `"1h 30m"`; `"0"` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("bad duration ({e}); write it like \"250ms\", \"90s\", \"1h\", \"2d\"")
    })
}

/// Parses a size: `"64MiB"`, `"8MB"`, `"512KiB"`, `"1GiB"`, `"1024"` (bytes); `"0"` is zero.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "bad size unit {unit:?}; write it like \"64MiB\", \"512KiB\", \"1GiB\""
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| "bad size; write it like \"64MiB\", \"512KiB\", \"1GiB\"".to_string())?;
    let bytes = n * mult as f64;
    if !(0.0..=(u64::MAX / 2) as f64).contains(&bytes) {
        return Err("size out of range".into());
    }
    Ok(bytes as u64)
}

pub(super) fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let loc = Locator { text };
    let unknown = super::schema::check(text);
    if !unknown.is_empty() {
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|(span, m)| loc.at(span, m))
            .collect();
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        let msg = match e.span().and_then(|s| key_at(text, s.start)) {
            Some(key) => format!("{key}: {msg}"),
            None => msg,
        };
        vec![loc.at(e.span(), msg)]
    })?;
    let mut c = Checker {
        loc,
        problems: Vec::new(),
    };

    let s = &file.server;
    let listen = c.addr(&s.listen, "server.listen", "127.0.0.1:8080");
    let admin_listen = match &s.admin_listen {
        Some(v) if v.get_ref().is_empty() => None,
        v => c.addr(v, "server.admin_listen", "127.0.0.1:9091"),
    };
    let max_connections = match &s.max_connections {
        None => 10_000,
        Some(v) if (1..=MAX_CONNECTIONS).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            let p = c.loc.at(
                Some(v.span()),
                format!(
                    "server.max_connections: must be from 1 to {MAX_CONNECTIONS} (got {})",
                    v.get_ref()
                ),
            );
            c.problems.push(p);
            10_000
        }
    };
    let max_url_length = match &s.max_url_length {
        None => 8192,
        Some(v) if *v.get_ref() >= 64 => *v.get_ref() as usize,
        Some(v) => {
            let p = c.loc.at(
                Some(v.span()),
                "server.max_url_length: must be at least 64".into(),
            );
            c.problems.push(p);
            8192
        }
    };
    // HTTP/2 takes the limit as a u32, and nothing needs headers of more than a few MiB.
    let max_header_size = match c.size(&s.max_header_size, "server.max_header_size", 64 << 10) {
        n if n <= MAX_HEADER_SIZE => n as usize,
        _ => {
            if let Some(v) = &s.max_header_size {
                c.bad(v, "server.max_header_size", "must be at most 16MiB");
            }
            64 << 10
        }
    };
    let server = ServerConfig {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        admin_listen,
        header_read_timeout: c.timeout(
            &s.header_read_timeout,
            "server.header_read_timeout",
            Duration::from_secs(10),
        ),
        max_connections,
        max_url_length,
        max_header_size,
        idle_timeout: c.timeout(
            &s.idle_timeout,
            "server.idle_timeout",
            Duration::from_secs(60),
        ),
        shutdown_timeout: c.duration(
            &s.shutdown_timeout,
            "server.shutdown_timeout",
            Duration::from_secs(30),
        ),
    };

    let format = c.one_of(&file.log.format, "log.format", &["text", "json"], "text");
    let level = c.one_of(
        &file.log.level,
        "log.level",
        &["trace", "debug", "info", "warn", "error"],
        "info",
    );
    let log = LogConfig {
        format: if format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        level,
        access_log: file.log.access_log.unwrap_or(false),
    };

    let u = &file.upstream;
    let default_authority = http::uri::Authority::from_static("127.0.0.1:9000");
    let authority = match &u.url {
        None => default_authority,
        Some(s) => match s.get_ref().parse::<http::Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && matches!(uri.path(), "" | "/")
                    && uri.query().is_none() =>
            {
                uri.authority().cloned().unwrap_or(default_authority)
            }
            _ => {
                c.bad(
                    s,
                    "upstream.url",
                    "expected \"http://host:port\" with no path (https upstreams are not supported)",
                );
                default_authority
            }
        },
    };
    let upstream = UpstreamConfig {
        base: format!("http://{authority}"),
        authority,
        timeout: c.timeout(&u.timeout, "upstream.timeout", Duration::from_secs(60)),
        connect_timeout: c.timeout(
            &u.connect_timeout,
            "upstream.connect_timeout",
            Duration::from_secs(5),
        ),
        max_fills: c.count(&u.max_fills, "upstream.max_fills", 16, 0),
        queue_timeout: c.timeout(
            &u.queue_timeout,
            "upstream.queue_timeout",
            Duration::from_secs(30),
        ),
    };

    let st = &file.store;
    let kind_name = c.one_of(
        &st.kind,
        "store.kind",
        &["memory", "redis", "redis-cluster"],
        "memory",
    );
    let kind = match kind_name.as_str() {
        "redis" => StoreKind::Redis {
            url: match &st.url {
                Some(s)
                    if s.get_ref().starts_with("redis://")
                        || s.get_ref().starts_with("rediss://") =>
                {
                    s.get_ref().clone()
                }
                Some(s) => {
                    c.bad(s, "store.url", "expected \"redis://host:port\"");
                    String::new()
                }
                None => "redis://127.0.0.1:6379".to_string(),
            },
        },
        "redis-cluster" => {
            let nodes: Vec<String> = st
                .nodes
                .iter()
                .flatten()
                .filter_map(|s| {
                    if s.get_ref().starts_with("redis://") {
                        Some(s.get_ref().clone())
                    } else {
                        c.bad(s, "store.nodes", "expected \"redis://host:port\"");
                        None
                    }
                })
                .collect();
            if nodes.is_empty() && st.nodes.as_ref().is_none_or(|n| n.is_empty()) {
                let p = c.loc.at(
                    st.kind.as_ref().map(|k| k.span()),
                    "store.nodes: kind = \"redis-cluster\" needs at least one seed node".into(),
                );
                c.problems.push(p);
            }
            StoreKind::RedisCluster { nodes }
        }
        _ => StoreKind::Memory,
    };
    let store = StoreConfig {
        kind,
        memory_limit: c.size(&st.memory_limit, "store.memory_limit", 256 << 20),
        l1: c.size(&st.l1, "store.l1", 64 << 20),
        max_object_size: c.size(&st.max_object_size, "store.max_object_size", 8 << 20),
        timeout: c.timeout(&st.timeout, "store.timeout", Duration::from_millis(500)),
        fill_lease: c.duration(&st.fill_lease, "store.fill_lease", Duration::from_secs(5)),
    };
    if store.fill_lease < Duration::from_millis(300) {
        if let Some(s) = &st.fill_lease {
            c.bad(s, "store.fill_lease", "must be at least 300ms");
        }
    }

    let namespace = match &file.cache.namespace {
        None => "v1".to_string(),
        Some(s) => {
            let ns = s.get_ref();
            if ns.is_empty()
                || ns.len() > 64
                || !ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                c.bad(
                    s,
                    "cache.namespace",
                    "use 1 to 64 letters, digits, '-', '_' or '.'",
                );
            }
            ns.clone()
        }
    };
    let default_ignore = ["utm_*", "_"];
    let global_ignore = match &file.cache.ignore_params {
        Some(v) => c.globs(v, "cache.ignore_params"),
        None => default_ignore
            .iter()
            .filter_map(|g| Glob::new(g).ok())
            .collect(),
    };
    let compress = match c
        .one_of(
            &file.cache.compress,
            "cache.compress",
            &["gzip", "zstd", "off"],
            "gzip",
        )
        .as_str()
    {
        "zstd" => Compress::Zstd,
        "off" => Compress::Off,
        _ => Compress::Gzip,
    };
    let stale_if_unreachable = c.duration(
        &file.cache.stale_if_unreachable,
        "cache.stale_if_unreachable",
        Duration::from_secs(600),
    );
    let cache = CacheConfig {
        compress,
        stale_if_unreachable,
        namespace,
        ignore_params: global_ignore.clone(),
        honor_client_no_cache: file.cache.honor_client_no_cache.unwrap_or(false),
        strip_headers: file
            .cache
            .strip_headers
            .iter()
            .filter_map(|h| {
                match HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes()) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        c.bad(h, "cache.strip_headers", "not a valid header name");
                        None
                    }
                }
            })
            .collect(),
    };

    let mut warm_urls = Vec::new();
    for u in &file.warm.urls {
        if u.get_ref().starts_with('/') {
            warm_urls.push(u.get_ref().clone());
        } else {
            c.bad(u, "warm.urls", "expected a path starting with '/'");
        }
    }
    let mut warm_requests = Vec::new();
    for w in &file.warm.requests {
        if !w.url.get_ref().starts_with('/') {
            c.bad(
                &w.url,
                "warm.requests.url",
                "expected a path starting with '/'",
            );
            continue;
        }
        let method = match &w.method {
            None => http::Method::POST,
            Some(m) => match http::Method::from_bytes(m.get_ref().as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    c.bad(m, "warm.requests.method", "not a method");
                    continue;
                }
            },
        };
        warm_requests.push(WarmRequest {
            url: w.url.get_ref().clone(),
            method,
            body: bytes::Bytes::from(w.body.as_ref().map_or("", |b| b.get_ref()).to_string()),
        });
    }
    let warm = WarmConfig {
        urls: warm_urls,
        requests: warm_requests,
        every: c.duration(&file.warm.every, "warm.every", Duration::from_secs(3600)),
    };
    if warm.every < MIN_WARM_EVERY {
        if let Some(s) = &file.warm.every {
            c.bad(s, "warm.every", "must be at least 1s");
        }
    }

    let allow = match &file.purge.allow {
        None => vec!["127.0.0.1/32", "::1/128"]
            .into_iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        Some(v) => v
            .iter()
            .filter_map(|s| {
                let t = s.get_ref();
                let parsed = t
                    .parse::<IpNet>()
                    .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from));
                match parsed {
                    Ok(n) => Some(n),
                    Err(_) => {
                        c.bad(s, "purge.allow", "expected a CIDR like \"10.0.0.0/8\"");
                        None
                    }
                }
            })
            .collect(),
    };
    let token = match &file.purge.token {
        Some(s) if s.get_ref().len() < 8 => {
            c.bad(s, "purge.token", "must be at least 8 characters");
            None
        }
        Some(s) => Some(s.get_ref().clone()),
        None => None,
    };
    let purge = PurgeConfig { allow, token };

    let tracing = TracingConfig {
        otlp_endpoint: file
            .tracing
            .otlp_endpoint
            .as_ref()
            .filter(|s| !s.get_ref().trim().is_empty())
            .and_then(|s| match otlp_endpoint(s.get_ref()) {
                Ok(url) => Some(url),
                Err(why) => {
                    c.bad(s, "tracing.otlp_endpoint", why);
                    None
                }
            }),
        export_every: DEFAULT_EXPORT_EVERY,
    };

    let mut rules: Vec<std::sync::Arc<Rule>> = Vec::new();
    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
    for r in &file.rules {
        if let Some(rule) = rule(&mut c, r, &global_ignore) {
            if let Some((_, _)) = seen.iter().find(|(p, _)| *p == rule.path) {
                c.bad(&r.path, "rules.path", "two rules have this same path");
            }
            seen.push((rule.path.clone(), r.path.span()));
            rules.push(std::sync::Arc::new(rule));
        }
    }
    rules.sort_by_key(|r| std::cmp::Reverse(r.path.len()));

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Config {
        server,
        log,
        upstream,
        store,
        cache,
        warm,
        purge,
        tracing,
        rules,
        version: blake3::hash(text.as_bytes()).to_hex()[..12].to_string(),
    })
}

/// How often spans are exported by default: OpenTelemetry's own batch delay.
const DEFAULT_EXPORT_EVERY: Duration = Duration::from_secs(5);

/// The traces URL of `tracing.otlp_endpoint`: `http://host:port` gets OTLP/HTTP's
/// `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` would), a URL with a path is taken as the
/// traces URL itself. Only `http`: the exporter is built without TLS, and a collector is
/// normally a local agent.
fn otlp_endpoint(text: &str) -> Result<String, &'static str> {
    const WHAT: &str = "expected an OTLP/HTTP collector URL like \"http://127.0.0.1:4318\" (https is not supported)";
    let uri: http::Uri = text.trim().parse().map_err(|_| WHAT)?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) if !a.host().is_empty() => a,
        _ => return Err(WHAT),
    };
    if uri.query().is_some() {
        return Err("a collector URL takes no query");
    }
    Ok(match uri.path() {
        "" | "/" => format!("http://{authority}/v1/traces"),
        path => format!("http://{authority}{path}"),
    })
}

fn rule(c: &mut Checker<'_>, r: &FileRule, global_ignore: &[Glob]) -> Option<Rule> {
    let path = r.path.get_ref();
    if !path.starts_with('/') {
        c.bad(&r.path, "rules.path", "must start with '/'");
        return None;
    }
    let mut key_headers = Vec::new();
    for h in &r.key_headers {
        match HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes()) {
            Ok(n) if n == http::header::COOKIE && r.ignore_cookies => c.bad(
                h,
                "rules.key_headers",
                "cookie cannot be part of the key of a rule with ignore_cookies = true",
            ),
            Ok(n) => key_headers.push(n),
            Err(_) => c.bad(h, "rules.key_headers", "not a valid header name"),
        }
    }
    let mut ignore_params = global_ignore.to_vec();
    ignore_params.extend(c.globs(&r.ignore_params, "rules.ignore_params"));
    let mut tags = Vec::new();
    for t in &r.tags {
        let v = t.get_ref().trim();
        if v.is_empty() || v.contains([',', ' ']) {
            c.bad(
                t,
                "rules.tags",
                "a tag is one word with no commas or spaces",
            );
        } else {
            tags.push(v.to_string());
        }
    }
    // `override_origin` replaces the origin's freshness with the rule's `ttl`; without a
    // ttl there is nothing to replace it with, and the flag would silently do nothing.
    let override_origin = match &r.override_origin {
        Some(o) if *o.get_ref() && r.ttl.is_none() => {
            let p = c.loc.at(
                Some(o.span()),
                "rules.override_origin: true needs a `ttl` in the same rule (the ttl that replaces the origin's freshness)".into(),
            );
            c.problems.push(p);
            false
        }
        Some(o) => *o.get_ref(),
        None => false,
    };
    let ttl = r
        .ttl
        .as_ref()
        .map(|s| c.bounded_duration(s, "rules.ttl").unwrap_or(Duration::ZERO));
    let (body_methods, body_key, ignore_body_fields) = body_keys(c, r);
    let mut round_params = Vec::new();
    for (name, bucket) in &r.round_params {
        let Some(bucket) = c.bounded_duration(bucket, "rules.round_params") else {
            continue;
        };
        if bucket.is_zero() {
            c.bad(
                &r.round_params[name],
                "rules.round_params",
                "a bucket must be more than 0",
            );
            continue;
        }
        round_params.push(RoundParam {
            name: name.clone(),
            // A name that is no dotted path (`a..b`) still names a query parameter.
            path: crate::canon::FieldPath::parse(name).ok(),
            bucket,
        });
    }
    Some(Rule {
        path: path.clone(),
        ttl,
        stale_while_revalidate: c.duration(
            &r.stale_while_revalidate,
            "rules.stale_while_revalidate",
            Duration::ZERO,
        ),
        stale_if_error: c.duration(&r.stale_if_error, "rules.stale_if_error", Duration::ZERO),
        override_origin,
        ignore_params,
        key_headers,
        tags,
        cache: r.cache,
        ignore_cookies: r.ignore_cookies,
        body_methods,
        body_key,
        ignore_body_fields,
        round_params,
        max_fills: r
            .max_fills
            .as_ref()
            .map(|n| c.count(&Some(n.clone()), "rules.max_fills", 1, 1)),
        refresh_ahead: match &r.refresh_ahead {
            None => None,
            Some(s) => match c.bounded_duration(s, "rules.refresh_ahead") {
                Some(d) if d.is_zero() => {
                    c.bad(s, "rules.refresh_ahead", "must be more than 0");
                    None
                }
                d => d,
            },
        },
    })
}

/// `methods`, `body_key` and `ignore_body_fields` of a rule: each needs the others.
fn body_keys(
    c: &mut Checker<'_>,
    r: &FileRule,
) -> (
    Vec<http::Method>,
    Option<BodyKey>,
    Vec<crate::canon::FieldPath>,
) {
    let mut methods = Vec::new();
    for m in &r.methods {
        match m.get_ref().as_str() {
            // Always lookups; listing them changes nothing.
            "GET" | "HEAD" => {}
            "POST" => methods.push(http::Method::POST),
            "QUERY" => methods.extend(http::Method::from_bytes(b"QUERY").ok()),
            _ => c.bad(m, "rules.methods", "expected GET, HEAD, POST or QUERY"),
        }
    }
    let key = match &r.body_key {
        None => None,
        Some(k) => match k.get_ref().as_str() {
            "json" => Some(BodyKey::Json),
            "graphql" => Some(BodyKey::Graphql),
            "raw" => Some(BodyKey::Raw),
            _ => {
                c.bad(
                    k,
                    "rules.body_key",
                    "expected one of \"json\", \"graphql\", \"raw\"",
                );
                None
            }
        },
    };
    match (&r.body_key, methods.is_empty()) {
        (None, false) => {
            if let Some(m) = r.methods.first() {
                c.bad(
                    m,
                    "rules.methods",
                    "POST and QUERY are keyed on their body: give `body_key` (json, graphql or raw)",
                );
            }
        }
        (Some(k), true) => c.bad(
            k,
            "rules.body_key",
            "needs `methods` with POST or QUERY (GET and HEAD have no body)",
        ),
        _ => {}
    }
    let mut ignore = Vec::new();
    for f in &r.ignore_body_fields {
        if !matches!(key, Some(BodyKey::Json | BodyKey::Graphql)) {
            c.bad(
                f,
                "rules.ignore_body_fields",
                "needs body_key = \"json\" or \"graphql\"",
            );
            continue;
        }
        match crate::canon::FieldPath::parse(f.get_ref()) {
            Ok(p) => ignore.push(p),
            Err(e) => c.bad(f, "rules.ignore_body_fields", e),
        }
    }
    (methods, key, ignore)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("8MB").unwrap(), 8_000_000);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn unknown_key_names_line() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(err[0].line, 3, "{err:?}");
        assert!(err[0].message.contains("lisen"), "{err:?}");
    }

    #[test]
    fn all_bad_values_reported() {
        let err = parse(
            "[upstream]\ntimeout = \"forever\"\n[store]\nl1 = \"lots\"\n[[rules]]\npath = \"x\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 4, 6], "{err:?}");
        assert!(err[0].message.contains("upstream.timeout"));
    }

    /// What README promises: serde stops at the first value of the wrong type, so it is
    /// reported alone, before the checks that report every bad value at once.
    #[test]
    fn a_wrong_type_is_reported_first_and_alone() {
        let err = parse(
            "[server]\nlisten = 8080\nmax_connections = \"many\"\n[upstream]\ntimeout = \"forever\"\n",
        )
        .unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert_eq!(err[0].line, 2, "{err:?}");
        assert!(err[0].message.contains("server.listen"), "{err:?}");
    }

    /// Values that parse but would panic at run time (a semaphore too large, a deadline
    /// past the end of `Instant`) are refused, every one at once, each with its key.
    #[test]
    fn out_of_range_values_refused() {
        let err = parse(
            "[server]\nmax_connections = 3000000000000000000\nidle_timeout = \"400d\"\n\
             [upstream]\ntimeout = \"500000000000years\"\n\
             [store]\nfill_lease = \"100000000000y\"\ntimeout = \"366d\"\n\
             [warm]\nevery = \"0\"\n\
             [[rules]]\npath = \"/\"\nttl = \"2years\"\nstale_if_error = \"9999d\"\n",
        )
        .unwrap_err();
        let zero = parse(
            "[server]\nheader_read_timeout = \"0\"\nmax_header_size = \"5GiB\"\n\
             [upstream]\nconnect_timeout = \"0\"\n",
        )
        .unwrap_err();
        for key in [
            "server.header_read_timeout",
            "server.max_header_size",
            "upstream.connect_timeout",
        ] {
            assert!(
                zero.iter().any(|p| p.message.starts_with(key)),
                "{key}: {zero:?}"
            );
        }
        let keys = [
            "server.max_connections",
            "server.idle_timeout",
            "upstream.timeout",
            "store.fill_lease",
            "store.timeout",
            "warm.every",
            "rules.ttl",
            "rules.stale_if_error",
        ];
        assert_eq!(err.len(), keys.len(), "{err:?}");
        for key in keys {
            assert!(
                err.iter().any(|p| p.message.starts_with(key)),
                "{key}: {err:?}"
            );
        }
        let ok = parse("[server]\nmax_connections = 1000000\n[upstream]\ntimeout = \"365d\"\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn cookie_cannot_be_keyed_and_ignored() {
        let err = parse(
            "[[rules]]\npath = \"/\"\nttl = \"1h\"\nignore_cookies = true\nkey_headers = [\"Cookie\"]\n",
        )
        .unwrap_err();
        assert!(err[0].message.starts_with("rules.key_headers"), "{err:?}");
        let ok = parse("[[rules]]\npath = \"/\"\nttl = \"1h\"\nignore_cookies = true\n").unwrap();
        assert!(ok.rules[0].ignore_cookies);
    }

    #[test]
    fn otlp_endpoints() {
        let off = parse("[tracing]\notlp_endpoint = \"\"\n").unwrap();
        assert_eq!(off.tracing.otlp_endpoint, None);
        assert_eq!(parse("").unwrap().tracing.otlp_endpoint, None);
        let on = |v: &str| {
            parse(&format!("[tracing]\notlp_endpoint = {v:?}\n"))
                .map(|c| c.tracing.otlp_endpoint.unwrap_or_default())
        };
        assert_eq!(
            on("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            on("http://otel:4318/").unwrap(),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            on("http://otel:4318/custom/traces").unwrap(),
            "http://otel:4318/custom/traces"
        );
        for bad in [
            "127.0.0.1:4318",
            "https://otel:4318",
            "grpc://otel:4317",
            "http://",
            "http://otel:4318/v1/traces?x=1",
            "not a url",
        ] {
            let err = on(bad).unwrap_err();
            assert_eq!(err.len(), 1, "{bad}: {err:?}");
            assert_eq!(err[0].line, 2, "{bad}: {err:?}");
            assert!(
                err[0].message.starts_with("tracing.otlp_endpoint: "),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn rules_sorted_longest_first() {
        let c = parse(
            "[[rules]]\npath = \"/a/\"\nttl = \"1m\"\n[[rules]]\npath = \"/a/b/\"\nttl = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(c.rules[0].path, "/a/b/");
        assert_eq!(c.rules[0].ignore_params.len(), 2);
    }
}
