//! Where entries live: one [`Store`] trait, an embedded [`memory`] store, and [`redis`]
//! (single server or cluster) shared by every instance, optionally behind the in-process
//! [`tiered`] L1. Two ways to spare a lookup its work, both kept honest by per-key
//! [`versions`]: [`hot`] per-thread copies in front of the in-process tiers, and [`flights`]:
//! Redis lookups of one key in flight together share one `GET`.
//!
//! Besides entries, a store keeps the *purge log*: numbered purge records (exact URL, path
//! prefix or tag, hard or soft). Instances apply the log to entries at lookup time, which is
//! what makes a prefix or tag purge one write instead of a walk over the keyspace (see
//! [`crate::purge`]).

pub mod flights;
pub mod hot;
pub mod memory;
pub mod redis;
pub mod tiered;
pub mod versions;

use crate::entry::Entry;
use crate::purge::{PurgeRecord, PurgeRequest};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// A store failure. Callers treat it as a miss (fail open) and count it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage behind the cache. Entries are addressed by their full key string
/// (`slate:<namespace>:e:<hash>`).
pub trait Store: Send + Sync + 'static {
    /// Short name for logs, metrics and `/entry`: `memory`, `redis`, `redis-cluster`.
    fn name(&self) -> &'static str;

    /// Whether other instances share this store (and so may write purges we must poll for).
    fn shared(&self) -> bool;

    /// The entry under `key`. An undecodable value (corrupt, foreign, older format) is a
    /// miss, not an error: the next fill overwrites it.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<Arc<Entry>>>>;

    /// This thread's copy of the entry under `key`, when the store keeps per-thread copies
    /// of hot entries ([`hot`]) and has a current one: answered at once, no future, no
    /// lookup. `None` says nothing about the store: ask [`Store::get`].
    fn get_hot(&self, _key: &str) -> Option<Arc<Entry>> {
        None
    }

    /// Stores `entry` under `key`, to be dropped by the store after `keep`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<Entry>,
        keep: Duration,
    ) -> BoxFuture<'a, StoreResult<()>>;

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<()>>;

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

    /// Takes the fill lock `lock` for `lease` if nobody holds it (`SET NX PX`).
    /// A store that only one instance uses has nothing to coordinate: always `true`.
    fn lock<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Extends a lock we hold; `false` if it is no longer ours.
    fn renew<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Releases a lock if it is still ours.
    fn unlock<'a>(&'a self, lock: &'a str, token: &'a str) -> BoxFuture<'a, StoreResult<()>>;

    /// Whether anyone holds `lock` now.
    fn locked<'a>(&'a self, lock: &'a str) -> BoxFuture<'a, StoreResult<bool>>;

    /// Tells every instance sharing the store (including this one) about `event`.
    fn publish(&self, event: Event) -> BoxFuture<'_, StoreResult<()>>;

    /// Events published by any instance, and the state of the subscription. `None` for a
    /// store no other instance shares.
    fn events(&self) -> Option<broadcast::Receiver<Event>>;

    /// Whether the event subscription is up now. A listener subscribes to [`Store::events`]
    /// first and then asks this, so it cannot miss a `Resubscribed` sent just before.
    fn events_up(&self) -> bool {
        false
    }

    /// Lookups answered by another lookup of the same key already in flight, without a
    /// round trip of their own ([`flights`]).
    fn reads_joined(&self) -> u64 {
        0
    }

    /// The in-process tier's counters, when this store has one.
    fn l1(&self) -> Option<&tiered::TieredStore> {
        None
    }
}

/// What instances sharing a store tell each other (Redis pub/sub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A fill of `key` finished: `stored`, `pass` (not shareable), or `error:<why>`.
    Filled { key: String, result: String },
    /// `key` was overwritten or deleted by instance `from`: drop in-process copies.
    Invalidate { from: String, key: String },
    /// A purge numbered `seq` was logged.
    Purged { seq: u64 },
    /// The subscription was (re)established: anything cached in-process may have missed
    /// invalidations while it was down.
    Resubscribed,
    /// The subscription is down: in-process copies can no longer be trusted.
    Lost,
}

impl Event {
    pub fn encode(&self) -> Option<String> {
        match self {
            Event::Filled { key, result } => Some(format!("f\t{key}\t{result}")),
            Event::Invalidate { from, key } => Some(format!("i\t{from}\t{key}")),
            Event::Purged { seq } => Some(format!("p\t{seq}")),
            Event::Resubscribed | Event::Lost => None,
        }
    }

    pub fn decode(s: &str) -> Option<Event> {
        let mut it = s.splitn(3, '\t');
        match (it.next()?, it.next(), it.next()) {
            ("f", Some(key), Some(result)) => Some(Event::Filled {
                key: key.into(),
                result: result.into(),
            }),
            ("i", Some(from), Some(key)) => Some(Event::Invalidate {
                from: from.into(),
                key: key.into(),
            }),
            ("p", Some(seq), None) => seq.parse().ok().map(|seq| Event::Purged { seq }),
            _ => None,
        }
    }
}
