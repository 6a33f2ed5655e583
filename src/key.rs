//! Cache keys: one request → one normalized URL → one blake3 key.
//!
//! What is normalized, and why each step is safe (two URLs share a key only when every
//! origin must treat them alike):
//! - **Percent-encoding** (RFC 3986 §6.2.2.1–2): `%XX` of an *unreserved* character
//!   (`A-Z a-z 0-9 - . _ ~`) is decoded (`/%7Euser` = `/~user`); every other `%xx` keeps its
//!   encoding with upper-case hex (`%2f` = `%2F`). Reserved characters are never decoded:
//!   `/a%2Fb` is not `/a/b`, and `%26` inside a value is not a parameter separator. Malformed
//!   escapes (`%zz`, `%4`) are rejected with 400 rather than guessed at.
//! - **Query**: split on `&`, empty pieces dropped, parameters whose (decoded) name matches
//!   an `ignore_params` glob dropped, the rest sorted by name then value. `a` and `a=` stay
//!   distinct, and so do `+` and `%20` (form decoding is the origin's business).
//! - **Not normalized**: dot segments and repeated slashes (origins disagree on them, and
//!   merging what an origin distinguishes would serve one report for another), letter case.
//!
//! The key hashes the namespace, the normalized URL and the values of the rule's
//! `key_headers`, each length-prefixed so that no two inputs can run together. Nothing else
//! from the client (Host, X-Forwarded-*, cookies) enters it.
//!
//! Every name slate gives to something in a store is made here, under `slate:<namespace>:`
//! so that `redis-cli --scan --pattern 'slate:*'` finds slate's data and nothing else's:
//! - `…:e:<blake3 hex>`: an entry ([`cache_key`]); `…:e:<hex>:v:<hex>`: one of its variants
//!   ([`variant_key`]); `…:l:<hex>`: its fill lock ([`lock_key`]);
//! - `…:{purge}:seq`, `…:{purge}:log`: the purge log, under one hash tag so the purge
//!   scripts run on one shard of a cluster;
//! - `…:events`: the event channel;
//! - `…:{queue}:all`, `…:{queue}:rule:<hex>`: the fill queue's slots (all fills, and one
//!   rule's), under one hash tag so its script runs on one shard.
//!
//! All of those keys end in hex digits of a blake3 hash, which is what [`shard_hash`] relies
//! on to spread them cheaply.

use crate::config::{Config, Glob, RoundParam, Rule};
use http::{HeaderMap, HeaderName, Method};
use std::sync::Arc;

/// Why a URL cannot be made into a key; answered with 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("malformed percent-encoding in the URL")]
    BadPercent,
    #[error("the request target must be a path starting with '/'")]
    NotAPath,
}

/// A request URL in normal form: `path` plus `?query` when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalUrl {
    /// The normalized path (always starts with `/`).
    pub path: String,
    /// `path` followed by `?` and the normalized query, or just `path`.
    pub url: String,
}

/// A cache key: the Redis/memory key string, plus the URL it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// `slate:<namespace>:e:<blake3 hex>`.
    pub key: String,
    pub url: NormalUrl,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `s` to `out` with percent-encoding normalized (see the module docs).
fn push_normalized(out: &mut String, s: &str) -> Result<(), KeyError> {
    let b = s.as_bytes();
    // The common case: nothing escaped, nothing to escape.
    if b.iter().all(|&c| c != b'%' && c.is_ascii_graphic()) {
        out.push_str(s);
        return Ok(());
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(KeyError::BadPercent);
            };
            let v = h << 4 | l;
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                out.push('%');
                out.push(HEX[(v >> 4) as usize] as char);
                out.push(HEX[(v & 15) as usize] as char);
            }
            i += 3;
        } else {
            // The URI parser only lets visible ASCII through, but be safe with anything else.
            let c = b[i];
            if c.is_ascii() && !c.is_ascii_control() && c != b' ' {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(HEX[(c >> 4) as usize] as char);
                out.push(HEX[(c & 15) as usize] as char);
            }
            i += 1;
        }
    }
    Ok(())
}

/// A parameter name as the `ignore_params` globs see it: fully percent-decoded.
fn decoded(s: &str) -> std::borrow::Cow<'_, [u8]> {
    if s.contains('%') {
        std::borrow::Cow::Owned(percent_encoding::percent_decode_str(s).collect())
    } else {
        std::borrow::Cow::Borrowed(s.as_bytes())
    }
}

/// One part of a query in normal form, borrowed when it already is.
fn normalized(s: &str) -> Result<std::borrow::Cow<'_, str>, KeyError> {
    if s.bytes().all(|c| c != b'%' && c.is_ascii_graphic()) {
        return Ok(std::borrow::Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    push_normalized(&mut out, s)?;
    Ok(std::borrow::Cow::Owned(out))
}

/// Normalizes a path alone (used for prefix purges as well as keys).
pub fn normalize_path(path: &str) -> Result<String, KeyError> {
    if !path.starts_with('/') {
        return Err(KeyError::NotAPath);
    }
    let mut out = String::with_capacity(path.len());
    push_normalized(&mut out, path)?;
    Ok(out)
}

/// Normalizes `path` and `query` (without the `?`), dropping ignored parameters.
pub fn normalize(path: &str, query: Option<&str>, ignore: &[Glob]) -> Result<NormalUrl, KeyError> {
    with_query(normalize_path(path)?, query, ignore, &[])
}

/// Characters a rounded time value keeps unescaped: the unreserved ones. Everything else
/// (`:` and `+` of RFC 3339 among them) is escaped, so every spelling of a window rounds to
/// one key, and the upstream gets exactly the value in the key (a `+` would be a space to
/// a form decoder).
const ROUNDED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The value of query parameter `name` rounded down to its bucket, escaped, when `name`
/// is a `round_params` one and the value reads as a time ([`crate::canon::round_time`]).
fn rounded(name: &[u8], value: &str, round: &[RoundParam]) -> Option<String> {
    let r = round.iter().find(|r| r.name.as_bytes() == name)?;
    let v = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?;
    let t = crate::canon::round_time(&v, r.bucket)?;
    Some(percent_encoding::utf8_percent_encode(&t, ROUNDED).to_string())
}

/// The request target to send upstream when `round` rounds some of its query values: the
/// client's own target with only those values replaced (by what the key holds). `None`
/// when nothing is rounded.
pub fn rounded_target(uri: &http::Uri, round: &[RoundParam]) -> Option<http::Uri> {
    let q = uri.query().filter(|_| !round.is_empty())?;
    let mut changed = false;
    let pieces: Vec<String> = q
        .split('&')
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            match rounded(&decoded(name), value, round) {
                Some(v) if piece.contains('=') => {
                    changed = true;
                    format!("{name}={v}")
                }
                _ => piece.to_string(),
            }
        })
        .collect();
    if !changed {
        return None;
    }
    format!("{}?{}", uri.path(), pieces.join("&")).parse().ok()
}

/// Adds the normalized query to a path already normalized by [`normalize_path`] (the
/// request path normalizes the path first, to find its rule and so its ignored params).
pub fn with_query(
    path: String,
    query: Option<&str>,
    ignore: &[Glob],
    round: &[RoundParam],
) -> Result<NormalUrl, KeyError> {
    let mut url = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    url.push_str(&path);
    if let Some(q) = query {
        let mut params = Vec::with_capacity(8);
        for piece in q.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = match piece.find('=') {
                Some(i) => (&piece[..i], &piece[i..]),
                None => (piece, ""),
            };
            if !ignore.is_empty() {
                let d = decoded(name);
                if ignore.iter().any(|g| g.matches(&d)) {
                    continue;
                }
            }
            if !round.is_empty() && !value.is_empty() {
                if let Some(v) = rounded(&decoded(name), &value[1..], round) {
                    let v = std::borrow::Cow::Owned(format!("={v}"));
                    params.push((normalized(name)?, v));
                    continue;
                }
            }
            params.push((normalized(name)?, normalized(value)?));
        }
        params.sort_unstable();
        for (i, (n, v)) in params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(n);
            url.push_str(v);
        }
    }
    Ok(NormalUrl { path, url })
}

/// Normalizes a request URL's path and query with the rule that applies to it: the rule is
/// matched on the normalized path, once per request, and its `ignore_params` apply.
pub fn route<'c>(
    cfg: &'c Config,
    uri: &http::Uri,
) -> Result<(NormalUrl, Option<&'c Arc<Rule>>), KeyError> {
    let npath = normalize_path(uri.path())?;
    let rule = cfg.rule_for(&npath);
    let ignore = rule.map_or(&cfg.cache.ignore_params, |r| &r.ignore_params);
    let round = rule.map_or(&[][..], |r| &r.round_params[..]);
    Ok((with_query(npath, uri.query(), ignore, round)?, rule))
}

/// What a request's body adds to its key: its method and the body as `body_key` made it
/// (canonical JSON, a GraphQL query's tokens, or the bytes as sent).
#[derive(Debug, Clone, Copy)]
pub struct BodyInput<'a> {
    pub method: &'a Method,
    pub canonical: &'a [u8],
}

/// Builds the key for a normalized URL, the request's `key_headers` and, for a request
/// keyed on its body, that body. A request without one hashes exactly what it always did.
pub fn cache_key(
    namespace: &str,
    url: NormalUrl,
    key_headers: &[HeaderName],
    headers: &HeaderMap,
    body: Option<BodyInput<'_>>,
) -> CacheKey {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(namespace.as_bytes());
    field(url.url.as_bytes());
    for name in key_headers {
        field(name.as_str().as_bytes());
        // All values of the header, in order, trimmed; absent and empty are one variant.
        let mut joined: Vec<u8> = Vec::new();
        for (i, v) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes().trim_ascii());
        }
        field(&joined);
    }
    if let Some(b) = body {
        field(b"\0body");
        field(b.method.as_str().as_bytes());
        field(b.canonical);
    }
    let hash = h.finalize();
    let mut key = String::with_capacity(namespace.len() + 75);
    key.push_str("slate:");
    key.push_str(namespace);
    key.push_str(":e:");
    key.push_str(hash.to_hex().as_str());
    CacheKey { key, url }
}

/// The normalized value of request header `name` for Vary matching: every field line
/// joined, list members trimmed and joined by `,` (so `gzip, br` = `gzip,br`), absent = "".
pub fn vary_value(headers: &HeaderMap, name: &str) -> String {
    if name == "accept-language" {
        return language_list(headers);
    }
    let mut out = String::new();
    for v in headers.get_all(name) {
        let s = String::from_utf8_lossy(v.as_bytes());
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(part);
        }
    }
    out
}

/// `Accept-Language` in normal form, so that spellings of one preference select one
/// variant: tags lower-cased, whitespace and duplicates dropped, ordered by qvalue (highest
/// first, the client's order among equals), `q=1` left implicit, `q=0` (not acceptable)
/// dropped, qvalues written with their trailing zeros trimmed. `en-US, fr;q=0.8` and
/// `fr;q=0.80,en-us` are one variant; `fr, en` and `en, fr` are two (order is preference).
fn language_list(headers: &HeaderMap) -> String {
    let mut langs: Vec<(String, u16)> = Vec::new();
    for v in headers.get_all(http::header::ACCEPT_LANGUAGE) {
        let s = String::from_utf8_lossy(v.as_bytes());
        for part in s.split(',') {
            let mut params = part.split(';');
            let tag = params.next().unwrap_or("").trim().to_ascii_lowercase();
            if tag.is_empty() {
                continue;
            }
            // Thousandths; an unreadable qvalue counts as 1, as if absent.
            let q = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0).round() as u16);
            if q > 0 && !langs.iter().any(|(t, _)| *t == tag) {
                langs.push((tag, q));
            }
        }
    }
    langs.sort_by_key(|l| std::cmp::Reverse(l.1));
    let mut out = String::new();
    for (tag, q) in langs {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&tag);
        if q < 1000 {
            let digits = format!("{q:03}");
            out.push_str(";q=0.");
            out.push_str(digits.trim_end_matches('0'));
        }
    }
    out
}

/// The fill lock of the entry key `key` (`slate:<ns>:e:<hash>` → `slate:<ns>:l:<hash>`).
pub fn lock_key(key: &str) -> String {
    match key.rsplit_once(":e:") {
        Some((prefix, hash)) => format!("{prefix}:l:{hash}"),
        // Not an entry key (none is made elsewhere): a lock of its own all the same.
        None => format!("{key}:l"),
    }
}

/// The purge log's sequence number.
pub fn purge_seq_key(namespace: &str) -> String {
    format!("slate:{namespace}:{{purge}}:seq")
}

/// The purge log: a sorted set of records scored by their number.
pub fn purge_log_key(namespace: &str) -> String {
    format!("slate:{namespace}:{{purge}}:log")
}

/// The fill queue's slots of every fill.
pub fn queue_key(namespace: &str) -> String {
    format!("slate:{namespace}:{{queue}}:all")
}

/// The fill queue's slots of the rule for `path` (the rule's `max_fills`).
pub fn queue_rule_key(namespace: &str, path: &str) -> String {
    let h = blake3::hash(path.as_bytes());
    format!("slate:{namespace}:{{queue}}:rule:{}", &h.to_hex()[..16])
}

/// The channel instances sharing a store publish their events on.
pub fn events_channel(namespace: &str) -> String {
    format!("slate:{namespace}:events")
}

/// The key of one variant of `key`: what its selecting header values were.
pub fn variant_key(key: &str, vary: &[(String, String)]) -> String {
    let mut h = blake3::Hasher::new();
    for (n, v) in vary {
        h.update(&(n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    format!("{key}:v:{}", &h.finalize().to_hex()[..32])
}

/// A cheap hash of a key made here, for spreading keys over shards and hash maps: the
/// FNV-1a of its last 8 characters, which are hex digits of a blake3 hash for every key
/// made in this module, and so as good as a hash.
pub fn shard_hash(key: &str) -> u64 {
    tail_hash(FNV_OFFSET, key.as_bytes(), 8)
}

/// FNV-1a over the last `n` bytes of `b`, continuing from `h`.
fn tail_hash(mut h: u64, b: &[u8], n: usize) -> u64 {
    for &c in &b[b.len().saturating_sub(n)..] {
        h = (h ^ c as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A `HashMap` hasher for keys made here: hashing their last 16 characters is enough, and
/// much cheaper than SipHash over the whole key.
#[derive(Default, Clone, Copy)]
pub struct KeyHash;

pub struct KeyHasher(u64);

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(FNV_OFFSET)
    }
}

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = tail_hash(self.0, bytes, 16);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(pq: &str, ignore: &[&str]) -> Result<String, KeyError> {
        let g: Vec<Glob> = ignore.iter().map(|s| Glob::new(s).unwrap()).collect();
        let (p, q) = match pq.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (pq, None),
        };
        normalize(p, q, &g).map(|u| u.url)
    }

    #[test]
    fn sorts_and_drops() {
        assert_eq!(
            n("/r?b=2&a=1&utm_source=x&_=123", &["utm_*", "_"]).unwrap(),
            "/r?a=1&b=2"
        );
        assert_eq!(n("/r?a=2&a=1", &[]).unwrap(), "/r?a=1&a=2");
        assert_eq!(n("/r?&&a=1&", &[]).unwrap(), "/r?a=1");
        assert_eq!(n("/r?utm_x=1", &["utm_*"]).unwrap(), "/r");
        assert_ne!(n("/r?a", &[]).unwrap(), n("/r?a=", &[]).unwrap());
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(n("/%7euser/%41", &[]).unwrap(), "/~user/A");
        assert_eq!(n("/a%2fb", &[]).unwrap(), "/a%2Fb");
        assert_ne!(n("/a%2fb", &[]).unwrap(), n("/a/b", &[]).unwrap());
        assert_eq!(n("/r?q=a%2cb", &[]).unwrap(), "/r?q=a%2Cb");
        assert_eq!(n("/r?q=%zz", &[]), Err(KeyError::BadPercent));
        assert_eq!(n("/r%4", &[]), Err(KeyError::BadPercent));
        assert_ne!(n("/r?q=a+b", &[]).unwrap(), n("/r?q=a%20b", &[]).unwrap());
        // An ignored name is matched decoded.
        assert_eq!(n("/r?utm%5Fsource=1", &["utm_*"]).unwrap(), "/r");
    }

    #[test]
    fn keys() {
        let url = normalize("/r", Some("a=1"), &[]).unwrap();
        let mut h = HeaderMap::new();
        let k1 = cache_key("v1", url.clone(), &[], &h, None);
        let k2 = cache_key("v2", url.clone(), &[], &h, None);
        assert_ne!(k1.key, k2.key);
        assert!(k1.key.starts_with("slate:v1:e:"));
        let accept = HeaderName::from_static("accept");
        let a = cache_key("v1", url.clone(), std::slice::from_ref(&accept), &h, None);
        h.insert("accept", "text/csv".parse().unwrap());
        let b = cache_key("v1", url.clone(), std::slice::from_ref(&accept), &h, None);
        assert_ne!(a.key, b.key);
        // Headers outside key_headers never matter.
        h.insert("x-forwarded-host", "evil".parse().unwrap());
        assert_eq!(b.key, cache_key("v1", url, &[accept], &h, None).key);
    }

    #[test]
    fn every_store_name_is_under_the_namespace() {
        let url = normalize("/r", None, &[]).unwrap();
        let k = cache_key("a:e:b", url, &[], &HeaderMap::new(), None).key;
        let hash = k.rsplit(':').next().unwrap().to_string();
        // A namespace that looks like a key's own separator does not confuse the lock.
        assert_eq!(lock_key(&k), format!("slate:a:e:b:l:{hash}"));
        assert!(variant_key(&k, &[("accept".into(), "text/csv".into())])
            .starts_with(&format!("{k}:v:")));
        for name in [
            purge_seq_key("v1"),
            purge_log_key("v1"),
            events_channel("v1"),
        ] {
            assert!(name.starts_with("slate:v1:"), "{name}");
        }
        // A key and its lock end in the same hash, so they share a shard.
        assert_eq!(shard_hash(&k), shard_hash(&lock_key(&k)));
    }
}
