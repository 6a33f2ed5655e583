//! Configuration: `config.toml` → [`file::FileConfig`] (serde, raw) → [`Config`] (validated).
//!
//! The running proxy only ever sees a validated [`Config`]; it is shared as an `Arc` and, on
//! reload, replaced whole (see [`reload`]), so a request always runs under one consistent
//! config from start to end.

pub mod file;
pub mod reload;
mod schema;
mod validate;

use http::HeaderName;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use validate::{parse_duration, MIN_WARM_EVERY};

/// One problem in a config file, located by line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

/// The validated configuration of one slate instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub cache: CacheConfig,
    pub warm: WarmConfig,
    pub purge: PurgeConfig,
    pub tracing: TracingConfig,
    /// Sorted longest path first, so the first match is the longest-prefix match.
    pub rules: Vec<std::sync::Arc<Rule>>,
    /// A short fingerprint of the file's text, shown on `/status` and in reload logs.
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_url_length: usize,
    pub max_header_size: usize,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `scheme://authority`, without a trailing slash; request paths are appended.
    pub base: String,
    pub authority: http::uri::Authority,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Fills of distinct keys running at once, over every instance sharing the store
    /// (0: no limit).
    pub max_fills: usize,
    /// How long a fill may wait for its turn; then stale if usable, else 503.
    pub queue_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis { url: String },
    RedisCluster { nodes: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub memory_limit: u64,
    pub l1: u64,
    pub max_object_size: u64,
    /// Bound on one store command; sized for large bodies (the redis crate's 500 ms default
    /// is too short for an 8 MiB entry on a busy link).
    pub timeout: Duration,
    /// Lease of a cross-instance fill lock; renewed while the fill runs, so it only bounds
    /// how long a dead instance's lock blocks the others.
    pub fill_lease: Duration,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub namespace: String,
    pub ignore_params: Vec<Glob>,
    /// Honor a client's `Cache-Control: no-cache` / `max-age` / `min-fresh` (as a
    /// revalidation). Off by default: a denial-of-service lever against the back end.
    pub honor_client_no_cache: bool,
    /// Request headers removed from every cacheable request before it goes upstream,
    /// besides the built-in list (`upstream::UNKEYED_REQUEST_HEADERS`): headers
    /// that could change the answer without being part of the key.
    pub strip_headers: Vec<HeaderName>,
    /// How compressible bodies are stored (`gzip`, `zstd`, `off`).
    pub compress: crate::coding::Compress,
    /// How long past its freshness a stored entry may answer while the origin cannot be
    /// reached at all (RFC 9111 §4.2.4), unless the response forbade stale answers.
    pub stale_if_unreachable: Duration,
}

#[derive(Debug, Clone)]
pub struct WarmConfig {
    pub urls: Vec<String>,
    /// Warmed requests with a method and a body (rules that key on bodies).
    pub requests: Vec<WarmRequest>,
    pub every: Duration,
}

/// One `[[warm.requests]]` entry.
#[derive(Debug, Clone)]
pub struct WarmRequest {
    pub url: String,
    pub method: http::Method,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone)]
pub struct PurgeConfig {
    pub allow: Vec<IpNet>,
    pub token: Option<String>,
}

/// `[tracing]`: where request traces go, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces URL (`/v1/traces` added to a bare
    /// `http://host:port`); `None`: tracing is off.
    pub otlp_endpoint: Option<String>,
    /// How often finished spans are sent in one batch. Not a file key: the OpenTelemetry
    /// default (5 s); tests set a short one in code to see their spans at once.
    pub export_every: Duration,
}

/// One `[[rules]]` entry: how to cache the paths under `path`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub path: String,
    pub ttl: Option<Duration>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub override_origin: bool,
    /// The global `[cache].ignore_params` followed by this rule's own.
    pub ignore_params: Vec<Glob>,
    /// Lower-cased, in the order written: part of the key, in that order.
    pub key_headers: Vec<HeaderName>,
    pub tags: Vec<String>,
    pub cache: bool,
    /// Requests with a `Cookie` share entries like any other, and no cookie goes upstream
    /// on a fill (Varnish's `unset req.http.Cookie` for a route): for reports that do not
    /// depend on who asks. Off, a request with a cookie is passed through.
    pub ignore_cookies: bool,
    /// Methods besides GET and HEAD that are lookups, keyed on their body: POST, QUERY.
    pub body_methods: Vec<http::Method>,
    /// How a body becomes part of the key; `Some` exactly when `body_methods` is not empty.
    pub body_key: Option<BodyKey>,
    /// Members of a JSON body (dotted paths) never part of the key.
    pub ignore_body_fields: Vec<crate::canon::FieldPath>,
    /// Time parameters rounded down to their bucket, in the key and upstream.
    pub round_params: Vec<RoundParam>,
    /// This rule's share of `upstream.max_fills` (`None`: no cap of its own).
    pub max_fills: Option<usize>,
    /// Entries asked for during their life are refreshed this long before they expire.
    pub refresh_ahead: Option<Duration>,
}

/// `rules.body_key`: how a request body becomes part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKey {
    /// Canonical JSON: members sorted, whitespace and ignored members dropped.
    Json,
    /// A GraphQL request: the query's tokens, `variables` as canonical JSON.
    Graphql,
    /// The bytes as sent.
    Raw,
}

/// One `rules.round_params` entry: a query parameter named `name`, or the body member at
/// `path` (the same dotted name), rounded down to a multiple of `bucket`.
#[derive(Debug, Clone)]
pub struct RoundParam {
    pub name: String,
    pub path: Option<crate::canon::FieldPath>,
    pub bucket: Duration,
}

impl Rule {
    /// Whether a request with `method` is a lookup keyed on its body under this rule.
    pub fn keys_body(&self, method: &http::Method) -> bool {
        self.cache && self.body_methods.contains(method)
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::parse(&name, &text)
    }

    /// Parses and validates config text; `name` is used in error messages.
    pub fn parse(name: &str, text: &str) -> Result<Config, ConfigError> {
        validate::parse(text).map_err(|problems| ConfigError {
            file: name.to_string(),
            problems,
        })
    }

    /// The defaults: memory store, upstream on 127.0.0.1:9000, no rules.
    pub fn default_config() -> Config {
        match Self::parse("<defaults>", "") {
            Ok(c) => c,
            Err(e) => unreachable!("the empty config is valid: {e}"),
        }
    }

    /// The longest-prefix rule for a path, if any.
    pub fn rule_for(&self, path: &str) -> Option<&std::sync::Arc<Rule>> {
        self.rules.iter().find(|r| path.starts_with(&r.path))
    }
}

/// A glob over query parameter names: `*` matches any run of characters, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("an empty glob matches nothing".into());
        }
        if pattern.contains(['[', ']', '{', '}']) {
            return Err(format!(
                "glob {pattern:?}: only `*` and `?` are supported, not classes or braces"
            ));
        }
        Ok(Glob(pattern.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Iterative glob matching with single-star backtracking: linear for the patterns people
    /// write, and never exponential, whatever a client sends.
    pub fn matches(&self, name: &[u8]) -> bool {
        let p = self.0.as_bytes();
        let (mut pi, mut ni) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ni < name.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == name[ni]) {
                pi += 1;
                ni += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ni));
                pi += 1;
            } else if let Some((sp, sn)) = star {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = Glob::new("utm_*").unwrap();
        assert!(g.matches(b"utm_source"));
        assert!(g.matches(b"utm_"));
        assert!(!g.matches(b"xutm_source"));
        let g = Glob::new("_").unwrap();
        assert!(g.matches(b"_"));
        assert!(!g.matches(b"__"));
        let g = Glob::new("a*b?c").unwrap();
        assert!(g.matches(b"aXXbYc"));
        assert!(g.matches(b"abbc"));
        assert!(!g.matches(b"abc"));
        assert!(Glob::new("[ab]").is_err());
    }
}
