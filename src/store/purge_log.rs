//! The purge log's records and their storage format.
//!
//! A purge is one numbered record in the store's log (see `crate::purge` for how records
//! are applied). Each store keeps the log its own way: the memory store as a list, Redis as
//! a sorted set whose members are the text form below ([`PurgeRequest::encode`]).

use super::StoreResult;
use futures_util::future::BoxFuture;

/// The numbered purge records of one store.
pub trait PurgeLog: Send + Sync + 'static {
    /// Appends a purge record; returns its sequence number (strictly increasing).
    fn purge_add<'a>(
        &'a self,
        req: &'a PurgeRequest,
        expires_ms: u64,
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// The current purge sequence number and every record numbered above `seq`.
    fn purge_since(&self, seq: u64) -> BoxFuture<'_, StoreResult<(u64, Vec<PurgeRecord>)>>;

    /// Just the current purge sequence number (cheap; polled by shared stores).
    fn purge_seq(&self) -> BoxFuture<'_, StoreResult<u64>>;
}

/// What a purge covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One normalized URL (path and query), every `key_headers` variant of it.
    Url(String),
    /// Every entry whose normalized path starts with this.
    Prefix(String),
    /// Every entry carrying this tag.
    Tag(String),
}

/// One purge as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRequest {
    pub targets: Vec<Target>,
    pub soft: bool,
}

/// A purge as logged: numbered, and dropped after `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRecord {
    pub seq: u64,
    pub req: PurgeRequest,
    pub expires_ms: u64,
}

impl PurgeRequest {
    /// Text form used as a Redis sorted-set member: `h|s`, then one `u/p/t` + target per
    /// line. Targets are normalized URLs, paths or tags, which hold no newline.
    pub fn encode(&self, expires_ms: u64) -> String {
        let mut s = format!("{}{}", if self.soft { 's' } else { 'h' }, expires_ms);
        for t in &self.targets {
            let (c, v) = match t {
                Target::Url(v) => ('u', v),
                Target::Prefix(v) => ('p', v),
                Target::Tag(v) => ('t', v),
            };
            s.push('\n');
            s.push(c);
            s.push_str(v);
        }
        s
    }

    /// Parses [`Self::encode`]'s output; `None` for anything else.
    pub fn decode(s: &str) -> Option<(PurgeRequest, u64)> {
        let mut lines = s.split('\n');
        let head = lines.next()?;
        let soft = match head.as_bytes().first()? {
            b's' => true,
            b'h' => false,
            _ => return None,
        };
        let expires_ms = head[1..].parse().ok()?;
        let mut targets = Vec::new();
        for l in lines {
            let v = l.get(1..)?.to_string();
            targets.push(match l.as_bytes().first()? {
                b'u' => Target::Url(v),
                b'p' => Target::Prefix(v),
                b't' => Target::Tag(v),
                _ => return None,
            });
        }
        Some((PurgeRequest { targets, soft }, expires_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_text_round_trip() {
        let r = PurgeRequest {
            targets: vec![Target::Url("/a?b=1".into()), Target::Tag("t".into())],
            soft: true,
        };
        assert_eq!(PurgeRequest::decode(&r.encode(99)), Some((r, 99)));
        assert_eq!(PurgeRequest::decode("x1\nq"), None);
    }
}
