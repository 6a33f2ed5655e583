//! Where entries live: one [`Store`] trait, an embedded [`memory`] store, and [`redis`]
//! (single server or cluster) shared by every instance.
//!
//! Besides entries, a store keeps the *purge log*: numbered purge records (exact URL, path
//! prefix or tag, hard or soft). Instances apply the log to entries at lookup time, which is
//! what makes a prefix or tag purge one write instead of a walk over the keyspace (see
//! [`crate::purge`]).

pub mod memory;
pub mod redis;

use crate::entry::Entry;
use crate::purge::{PurgeRecord, PurgeRequest};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

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
}
