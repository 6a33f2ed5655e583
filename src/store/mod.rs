//! Where entries live, and how instances sharing them act as one.
//!
//! Three concerns, three traits, after pingora-cache's split of `Storage` from its cache
//! lock:
//! - [`Storage`]: entries (get, put, delete) and what the store counts of itself. The
//!   embedded [`memory`] store, [`redis`] (single server or cluster), and the in-process
//!   [`tiered`] L1 in front of Redis. The two in-process ones keep, when space runs out,
//!   what a miss would cost most ([`evict`]); Redis evicts by its own `maxmemory-policy`.
//! - [`PurgeLog`]: the numbered purge records ([`purge_log`]) every instance applies to
//!   entries at lookup time (see `crate::purge`).
//! - [`Coordination`]: what instances sharing a store tell each other and hold against each
//!   other: leases (the fill lock) and events. Only a shared store has it: "is there
//!   another instance to coordinate with" is `Stores::peers` being `Some`.
//!
//! Two ways to spare a lookup its work, both kept honest by per-key [`versions`]: [`hot`]
//! per-thread copies in front of the in-process tiers, and [`flights`]: Redis lookups of one
//! key in flight together share one `GET`.

pub mod events;
pub mod evict;
pub mod flights;
pub mod hot;
pub mod memory;
pub mod purge_log;
pub mod redis;
pub mod tiered;
pub mod versions;

pub use events::{Event, FillReport};
pub use purge_log::{PurgeLog, PurgeRecord, PurgeRequest, Target};

use crate::clock::Clock;
use crate::config::{StoreConfig, StoreKind};
use crate::entry::Entry;
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

/// The entries behind the cache, addressed by their full key string (made in `crate::key`).
pub trait Storage: Send + Sync + 'static {
    /// Short name for logs, metrics and `/entry`: `memory`, `redis`, `redis-cluster`.
    fn name(&self) -> &'static str;

    /// The entry under `key`. An undecodable value (corrupt, foreign, older format) is a
    /// miss, not an error: the next fill overwrites it.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<Arc<Entry>>>>;

    /// This thread's copy of the entry under `key`, when the store keeps per-thread copies
    /// of hot entries ([`hot`]) and has a current one: answered at once, no future, no
    /// lookup. `None` says nothing about the store: ask [`Storage::get`].
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

    /// What the store counts of itself, as plain numbers (for `/metrics` and `/status`).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// Whether the in-process tier holds `key` now (for `/entry`'s `found_in`).
    fn in_l1(&self, _key: &str) -> bool {
        false
    }
}

/// What a store reports of itself; `None` for what it does not have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Lookups answered by another lookup of the same key already in flight, without a
    /// round trip of their own ([`flights`]).
    pub reads_joined: Option<u64>,
    /// The in-process tier in front of a shared store.
    pub l1: Option<L1Stats>,
}

/// The in-process tier's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct L1Stats {
    pub hits: u64,
    pub misses: u64,
    /// Copies dropped because another instance wrote or deleted the key.
    pub invalidations: u64,
    /// Times the whole tier was emptied (subscription lost or behind).
    pub flushes: u64,
    /// Entries pushed out to stay within `store.l1` bytes.
    pub evictions: u64,
    /// Bytes held now (entries with their keys; at most `store.l1`).
    pub bytes: u64,
    /// The invalidation subscription is up and the tier is in use.
    pub trusted: bool,
}

/// What instances sharing a store hold against each other and tell each other.
///
/// Leases are the one primitive of holding: a named key that one token holds until it
/// releases it or the lease lapses (`SET NX PX`), so an instance that dies holding one
/// frees it within a lease. The fill lock is one lease per entry key; a semaphore over
/// fills is a handful of them. Events go to every instance, this one included.
pub trait Coordination: Send + Sync + 'static {
    /// Takes the lease `name` for `token` for `lease` if nobody holds it.
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Extends a lease we hold; `false` if it is no longer ours.
    fn renew<'a>(
        &'a self,
        name: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Releases a lease if it is still ours.
    fn release<'a>(&'a self, name: &'a str, token: &'a str) -> BoxFuture<'a, StoreResult<()>>;

    /// Whether anyone holds the lease `name` now.
    fn held<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<bool>>;

    /// Tells every instance sharing the store (including this one) about `event`.
    fn publish(&self, event: Event) -> BoxFuture<'_, StoreResult<()>>;

    /// Events published by any instance, and the state of the subscription.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// Whether the event subscription is up now. A listener subscribes first and then
    /// asks this, so it cannot miss a `Resubscribed` sent just before.
    fn subscribed(&self) -> bool;

    /// Takes a slot of a counted lease (a semaphore whose holders lapse): one of `slots`'
    /// `limit` slots, and of its rule's too when it has one, both or neither.
    fn acquire_slot<'a>(
        &'a self,
        slots: &'a Slots,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<SlotGrant>>;

    /// Extends a slot we hold; `false` if it lapsed.
    fn renew_slot<'a>(
        &'a self,
        slots: &'a Slots,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Gives a slot back.
    fn release_slot<'a>(
        &'a self,
        slots: &'a Slots,
        token: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>>;
}

/// The counted leases a fill takes a slot of: all fills' (`key`, `limit`), and its rule's
/// when the rule caps its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    pub key: String,
    pub limit: usize,
    pub rule: Option<(String, usize)>,
}

/// What asking for a slot got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotGrant {
    Granted,
    /// Every slot is held.
    Full,
    /// Every slot of the rule's share is held (others may be free).
    RuleFull,
}

/// One instance's store, by concern.
#[derive(Clone)]
pub struct Stores {
    pub entries: Arc<dyn Storage>,
    pub log: Arc<dyn PurgeLog>,
    /// The other instances sharing the store; `None` when this instance is alone with it.
    pub peers: Option<Arc<dyn Coordination>>,
}

impl Stores {
    /// Connects the store `cfg` names; `namespace` names its purge log and event channel.
    pub async fn open(cfg: &StoreConfig, namespace: &str, clock: &Clock) -> StoreResult<Stores> {
        let stores = match &cfg.kind {
            StoreKind::Memory => Stores::memory(cfg.memory_limit),
            StoreKind::Redis { url } => {
                Stores::shared(Arc::new(redis::connect(url, namespace, cfg.timeout)?))
            }
            StoreKind::RedisCluster { nodes } => Stores::shared(Arc::new(
                redis::connect_cluster(nodes, namespace, cfg.timeout).await?,
            )),
        };
        Ok(stores.with_l1(cfg.l1, clock))
    }

    /// The embedded store of one instance: nothing to coordinate.
    pub fn memory(limit: u64) -> Stores {
        let m = Arc::new(memory::MemoryStore::new(limit));
        Stores {
            entries: m.clone(),
            log: m,
            peers: None,
        }
    }

    fn shared<S: Storage + PurgeLog + Coordination>(s: Arc<S>) -> Stores {
        Stores {
            entries: s.clone(),
            log: s.clone(),
            peers: Some(s),
        }
    }

    /// Puts an in-process tier of `limit` bytes in front of a shared store's entries (a
    /// store of one instance is in process already).
    fn with_l1(mut self, limit: u64, clock: &Clock) -> Stores {
        if let (Some(peers), true) = (&self.peers, limit > 0) {
            self.entries = Arc::new(tiered::TieredStore::new(
                self.entries.clone(),
                peers.clone(),
                limit,
                clock.clone(),
            ));
        }
        self
    }
}
