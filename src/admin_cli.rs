//! `slate purge` and `slate inspect`: a client of a running instance's admin listener
//! (`POST /purge`, `GET /entry`), for operators and their scripts.
//!
//! Exit codes, which scripts may rely on (also in `slate --help` and README.md):
//! - 0: done (purged; the entry was found and shown);
//! - 1: slate said no: refused (403: source not allowed, no or wrong token), not found
//!   (404), or a request it rejected (400 and any other 4xx);
//! - 2: no answer: the admin listener could not be reached, or did not answer within
//!   `--timeout`;
//! - 3: slate answered but failed (5xx, e.g. its store did not take the purge, which is then
//!   not in force), or what answered is not slate (not HTTP, or not the JSON slate sends).
//!   Kept apart from 1 because it is worth retrying, and from 2 because something *did*
//!   answer at that address;
//! - 64 (`EX_USAGE`): the command line itself is wrong (set in `main.rs` for clap's errors).

use bytes::Bytes;
use clap::{ArgGroup, Args};
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::process::ExitCode;
use std::time::Duration;

/// How a `purge` or `inspect` ended; its exit code is the contract above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// A 4xx from slate.
    Refused,
    /// No answer within the timeout, or nothing to connect to.
    Unreachable,
    /// A 5xx, or an answer that is not slate's.
    Failed,
    /// The command line cannot make a request (a bad `--admin` URL or header).
    Usage,
}

impl Outcome {
    fn code(self) -> ExitCode {
        ExitCode::from(match self {
            Outcome::Done => 0,
            Outcome::Refused => 1,
            Outcome::Unreachable => 2,
            Outcome::Failed => 3,
            Outcome::Usage => USAGE,
        })
    }
}

/// `EX_USAGE` of sysexits.h: clap's own default, 2, would read as "unreachable".
pub const USAGE: u8 = 64;

/// What every admin subcommand takes.
#[derive(Args, Debug)]
pub struct Admin {
    /// The running instance's admin listener ([server] admin_listen), as an http:// URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9091")]
    admin: String,
    /// The bearer token ([purge] token), needed from a source outside purge.allow. Prefer the
    /// environment variable: a command line is visible to every user of the machine.
    #[arg(
        long,
        env = "SLATE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Print slate's JSON answer on stdout, one line, instead of the readable summary.
    #[arg(long)]
    json: bool,
    /// Give up when the admin listener has not answered within this long (e.g. "2s").
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    timeout: Duration,
}

fn duration(s: &str) -> Result<Duration, String> {
    slate::config::parse_duration(s)
}

/// `slate purge URL | --prefix PATH | --tag NAME... [--soft]`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("what").required(true).args(["url", "prefix", "tag"])))]
pub struct PurgeArgs {
    /// The URL to purge, path and query as clients ask for it ("/analytics/sales?region=eu"),
    /// normalized like a GET; a trailing '*' makes it a prefix, as with PURGE.
    url: Option<String>,
    /// Purge every entry whose path starts with PATH, whatever its query.
    #[arg(long, value_name = "PATH")]
    prefix: Option<String>,
    /// Purge every entry with this tag (repeat for several: any of them).
    #[arg(long, value_name = "NAME")]
    tag: Vec<String>,
    /// Mark the entries stale instead of removing them: the next request gets the stale copy
    /// at once while one refresh goes upstream.
    #[arg(long)]
    soft: bool,
    #[command(flatten)]
    admin: Admin,
}

/// `slate inspect URL`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The URL whose entry to show, path and query as clients ask for it.
    url: String,
    /// A request header selecting the variant, as "Name: value" (for a rule's key_headers);
    /// repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    header: Vec<String>,
    #[command(flatten)]
    admin: Admin,
}

/// The path and query of `url`: a full `http(s)://host/...` URL, as pasted from a browser,
/// is cut to what slate keys on.
fn path_of(url: &str) -> Result<String, String> {
    if !url.contains("://") {
        return Ok(url.to_string());
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL: {url:?} ({e})"))?;
    Ok(uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

/// A request to the admin listener, relative to `--admin`.
struct Call {
    method: Method,
    path_and_query: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

/// Runs `slate purge`.
pub async fn purge(a: PurgeArgs) -> ExitCode {
    let mut body = match (&a.url, &a.prefix) {
        (Some(u), _) => match path_of(u) {
            // `PURGE /prefix*` is a prefix purge; the CLI reads a URL the same way.
            Ok(p) if p.ends_with('*') => serde_json::json!({ "prefix": p }),
            Ok(p) => serde_json::json!({ "url": p }),
            Err(e) => return usage(&e),
        },
        (None, Some(p)) => serde_json::json!({ "prefix": p }),
        (None, None) => serde_json::json!({ "tags": a.tag }),
    };
    if a.soft {
        body["soft"] = true.into();
    }
    let call = Call {
        method: Method::POST,
        path_and_query: "/purge".into(),
        headers: vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body: Bytes::from(body.to_string()),
    };
    run(&a.admin, call, |text| {
        let p = serde_json::from_str::<Purged>(text)
            .ok()
            .filter(|p| p.purged)?;
        let what = if p.soft { "marked stale" } else { "purged" };
        Some(format!(
            "{what}: {} {} (purge #{})",
            p.scope,
            p.targets.join(", "),
            p.seq
        ))
    })
    .await
}

/// Runs `slate inspect`.
pub async fn inspect(a: InspectArgs) -> ExitCode {
    let url = match path_of(&a.url) {
        Ok(u) => u,
        Err(e) => return usage(&e),
    };
    let mut headers = Vec::new();
    for h in &a.header {
        match parse_header(h) {
            Ok(h) => headers.push(h),
            Err(e) => return usage(&e),
        }
    }
    let encoded = percent_encoding::utf8_percent_encode(&url, percent_encoding::NON_ALPHANUMERIC);
    let call = Call {
        method: Method::GET,
        path_and_query: format!("/entry?url={encoded}"),
        headers,
        body: Bytes::new(),
    };
    run(&a.admin, call, |text| {
        serde_json::from_str::<Entry>(text).ok().map(|e| e.render())
    })
    .await
}

fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("--header {h:?}: write it as \"Name: value\""))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("--header {h:?}: not a header name"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("--header {h:?}: not a header value"))?;
    Ok((name, value))
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("slate: {msg}");
    Outcome::Usage.code()
}

/// The answer to a purge (see `purge_api`).
#[derive(Deserialize)]
struct Purged {
    purged: bool,
    scope: String,
    targets: Vec<String>,
    soft: bool,
    seq: u64,
}

/// The answer of `GET /entry` (see `admin::entry`).
#[derive(Deserialize)]
struct Entry {
    key: String,
    url: String,
    rule: Option<String>,
    status: String,
    http_status: u16,
    size: u64,
    age_s: i64,
    ttl_s: i64,
    stale_while_revalidate_s: u64,
    stale_if_error_s: u64,
    tags: Vec<String>,
    found_in: String,
}

/// Seconds as people read them: `1h 2m 5s`.
fn human(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

impl Entry {
    fn render(&self) -> String {
        let ttl = match u64::try_from(self.ttl_s) {
            Ok(s) => format!("{} left", human(s)),
            Err(_) => format!("stale for {}", human(self.ttl_s.unsigned_abs())),
        };
        let tags = match self.tags.is_empty() {
            true => "(none)".to_string(),
            false => self.tags.join(", "),
        };
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
        row("url", self.url.clone());
        row(
            "status",
            format!("{} (HTTP {})", self.status, self.http_status),
        );
        row("freshness", ttl);
        row("age", human(u64::try_from(self.age_s).unwrap_or(0)));
        row(
            "stale windows",
            format!(
                "while revalidating {}, on error {}",
                human(self.stale_while_revalidate_s),
                human(self.stale_if_error_s)
            ),
        );
        row("size", format!("{} bytes", self.size));
        row("tags", tags);
        row("rule", self.rule.clone().unwrap_or_else(|| "(none)".into()));
        row("found in", self.found_in.clone());
        row("key", self.key.clone());
        out.pop();
        out
    }
}

/// slate's error body, `{"error": ..., "status": N}`.
#[derive(Deserialize)]
struct Refusal {
    error: String,
}

/// The admin base URL: `http://host:port`, optionally with a path prefix (a proxy in front).
fn base(admin: &str) -> Result<String, String> {
    let uri: Uri = admin
        .parse()
        .map_err(|e| format!("--admin {admin:?}: not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
            "--admin {admin:?}: {other}:// is not supported; give the admin listener's http:// URL"
        ))
        }
        None => {
            return Err(format!(
                "--admin {admin:?}: give a URL like http://127.0.0.1:9091"
            ))
        }
    }
    if uri.authority().is_none() || uri.query().is_some() {
        return Err(format!(
            "--admin {admin:?}: give a URL like http://127.0.0.1:9091"
        ));
    }
    Ok(admin.trim_end_matches('/').to_string())
}

/// Sends `call` to the admin listener, prints the answer (`summary` of a 200's body, or the
/// body itself with `--json`), and says how it went as the exit code.
async fn run(a: &Admin, call: Call, summary: impl FnOnce(&str) -> Option<String>) -> ExitCode {
    let base = match base(&a.admin) {
        Ok(b) => b,
        Err(e) => return usage(&e),
    };
    let url = format!("{base}{}", call.path_and_query);
    let mut req = Request::builder().method(call.method).uri(&url);
    for (k, v) in call.headers {
        req = req.header(k, v);
    }
    if let Some(t) = a.token.as_deref().filter(|t| !t.is_empty()) {
        match HeaderValue::from_str(&format!("Bearer {t}")) {
            Ok(v) => req = req.header(header::AUTHORIZATION, v),
            Err(_) => return usage("the token holds characters a header cannot carry"),
        }
    }
    let req = match req.body(Full::new(call.body)) {
        Ok(r) => r,
        Err(e) => return usage(&format!("{url}: {e}")),
    };
    let (status, text) = match tokio::time::timeout(a.timeout, send(req)).await {
        Err(_) => {
            eprintln!(
                "slate: no answer from the admin listener {base} within {}",
                humantime::format_duration(a.timeout)
            );
            return Outcome::Unreachable.code();
        }
        Ok(Err((outcome, msg))) => {
            eprintln!("slate: {base}: {msg}");
            return outcome.code();
        }
        Ok(Ok(answer)) => answer,
    };
    let outcome = judge(status);
    let json = serde_json::from_str::<serde_json::Value>(&text).ok();
    if a.json {
        if let Some(j) = &json {
            println!("{j}");
        }
    }
    match outcome {
        Outcome::Done => match summary(&text) {
            Some(s) => {
                if !a.json {
                    println!("{s}");
                }
                Outcome::Done.code()
            }
            None => {
                eprintln!(
                    "slate: {base} answered 200 with something that is not slate's answer: {}",
                    snippet(&text)
                );
                Outcome::Failed.code()
            }
        },
        other => {
            let why = serde_json::from_str::<Refusal>(&text)
                .map(|r| r.error)
                .unwrap_or_else(|_| snippet(&text));
            let what = match other {
                Outcome::Refused if status == StatusCode::NOT_FOUND => "not found",
                Outcome::Refused => "refused",
                _ => "failed",
            };
            eprintln!("slate: {what} ({status}): {why}");
            other.code()
        }
    }
}

/// The outcome a status stands for.
fn judge(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200 => Outcome::Done,
        400..=499 => Outcome::Refused,
        // 5xx, and anything slate's admin listener never answers (1xx, 3xx, other 2xx).
        _ => Outcome::Failed,
    }
}

/// The start of a body, for a message.
fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{:?}...", &t[..i]),
        None => format!("{t:?}"),
    }
}

/// One request, its whole answer as text; on failure, the outcome it stands for and why.
async fn send(req: Request<Full<Bytes>>) -> Result<(StatusCode, String), (Outcome, String)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.map_err(|e| {
        // Refused, reset or closed before any answer: nothing answered. An answer that is
        // not HTTP: something did, and it is not slate.
        let parse = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(|h| h.is_parse() || h.is_parse_status());
        match (parse, e.is_connect()) {
            (true, false) => (
                Outcome::Failed,
                format!("not an HTTP answer: {}", slate::error_chain(&e)),
            ),
            (_, true) => (
                Outcome::Unreachable,
                format!("cannot connect: {}", slate::error_chain(&e)),
            ),
            _ => (
                Outcome::Unreachable,
                format!("no answer: {}", slate::error_chain(&e)),
            ),
        }
    })?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| (Outcome::Failed, format!("the answer broke off: {e}")))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_documented_outcomes() {
        assert_eq!(judge(StatusCode::OK), Outcome::Done);
        for s in [400, 403, 404, 405] {
            assert_eq!(judge(StatusCode::from_u16(s).unwrap()), Outcome::Refused);
        }
        for s in [500, 502, 503, 204, 301] {
            assert_eq!(judge(StatusCode::from_u16(s).unwrap()), Outcome::Failed);
        }
    }

    #[test]
    fn admin_urls_are_http_only() {
        assert_eq!(
            base("http://127.0.0.1:9091/").unwrap(),
            "http://127.0.0.1:9091"
        );
        assert_eq!(base("http://h:1/slate").unwrap(), "http://h:1/slate");
        assert!(base("https://h:1").unwrap_err().contains("not supported"));
        assert!(base("127.0.0.1:9091").is_err());
        assert!(base("http://h:1/?x=1").is_err());
    }

    #[test]
    fn a_pasted_full_url_is_cut_to_path_and_query() {
        assert_eq!(
            path_of("https://slate.example/a/b?x=1").unwrap(),
            "/a/b?x=1"
        );
        assert_eq!(path_of("/a?x=1").unwrap(), "/a?x=1");
        assert_eq!(path_of("http://h").unwrap(), "/");
    }

    #[test]
    fn headers_are_name_colon_value() {
        let (n, v) = parse_header("Accept:  text/csv ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("accept", "text/csv"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn an_entry_reads_as_rows() {
        let e: Entry = serde_json::from_value(serde_json::json!({
            "key": "slate:v1:e:ab", "url": "/a?x=1", "rule": "/a", "status": "stale",
            "http_status": 200, "size": 12, "age_s": 3700, "ttl_s": -100,
            "stale_while_revalidate_s": 600, "stale_if_error_s": 0, "tags": ["t1", "t2"],
            "found_in": "redis"
        }))
        .unwrap();
        let r = e.render();
        assert!(r.contains("stale for 1m 40s"), "{r}");
        assert!(r.contains("age             1h 1m 40s"), "{r}");
        assert!(r.contains("tags            t1, t2"), "{r}");
        assert!(r.contains("status          stale (HTTP 200)"), "{r}");
    }
}
