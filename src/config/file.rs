//! The raw shape of `config.toml`, exactly as serde reads it.
//!
//! Every table denies unknown keys, so a typo is an error with a line number instead of a
//! silently ignored setting. Values that need checking (durations, sizes, addresses, globs,
//! CIDRs) are kept as [`Spanned`] strings here so that `validate` can point at the
//! offending line when it rejects them.

use serde::Deserialize;
use toml::Spanned;

pub type S = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: FileServer,
    pub log: FileLog,
    pub upstream: FileUpstream,
    pub store: FileStore,
    pub cache: FileCache,
    pub warm: FileWarm,
    pub purge: FilePurge,
    pub tracing: FileTracing,
    pub rules: Vec<FileRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileServer {
    pub listen: Option<S>,
    pub admin_listen: Option<S>,
    pub header_read_timeout: Option<S>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_url_length: Option<Spanned<i64>>,
    pub max_header_size: Option<S>,
    pub idle_timeout: Option<S>,
    pub shutdown_timeout: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileLog {
    pub format: Option<S>,
    pub level: Option<S>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileUpstream {
    pub url: Option<S>,
    pub timeout: Option<S>,
    pub connect_timeout: Option<S>,
    pub max_fills: Option<Spanned<i64>>,
    pub queue_timeout: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStore {
    pub kind: Option<S>,
    pub url: Option<S>,
    pub nodes: Option<Vec<S>>,
    pub memory_limit: Option<S>,
    pub l1: Option<S>,
    pub max_object_size: Option<S>,
    pub timeout: Option<S>,
    pub fill_lease: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileCache {
    pub namespace: Option<S>,
    pub ignore_params: Option<Vec<S>>,
    pub honor_client_no_cache: Option<bool>,
    pub strip_headers: Vec<S>,
    pub compress: Option<S>,
    pub stale_if_unreachable: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileWarm {
    pub urls: Vec<S>,
    /// Warmed requests with a body: `{ url = "/api/query", method = "POST", body = "{...}" }`.
    pub requests: Vec<FileWarmRequest>,
    pub every: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilePurge {
    pub allow: Option<Vec<S>>,
    pub token: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileTracing {
    pub otlp_endpoint: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub path: S,
    pub ttl: Option<S>,
    pub stale_while_revalidate: Option<S>,
    pub stale_if_error: Option<S>,
    /// Spanned, so that `true` without a `ttl` can be refused at its line.
    pub override_origin: Option<Spanned<bool>>,
    #[serde(default)]
    pub ignore_params: Vec<S>,
    #[serde(default)]
    pub key_headers: Vec<S>,
    #[serde(default)]
    pub tags: Vec<S>,
    #[serde(default = "yes")]
    pub cache: bool,
    #[serde(default)]
    pub ignore_cookies: bool,
    #[serde(default)]
    pub methods: Vec<S>,
    pub body_key: Option<S>,
    #[serde(default)]
    pub ignore_body_fields: Vec<S>,
    /// Spanned, so that a problem in it points at its line.
    #[serde(default)]
    pub round_params: std::collections::BTreeMap<String, S>,
    pub max_fills: Option<Spanned<i64>>,
    pub refresh_ahead: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWarmRequest {
    pub url: S,
    pub method: Option<S>,
    pub body: Option<S>,
}

fn yes() -> bool {
    true
}
