//! Versions of keys: what lets a reader tell whether a value it holds (a per-thread copy,
//! a read still in flight) may be older than a write that has completed since.
//!
//! Every key has a version (one of [`SHARDS`] counters, chosen by the key's hash), bumped
//! *after* every write, delete or invalidation of that key, and an epoch shared by all keys
//! (bumped when anything at all may have changed unseen). A reader takes a [`Stamp`]
//! *before* it reads; what it read is good for later readers only while the stamp is still
//! current. A shared counter only means a few values are thrown away that did not need to be.
//! Used by [`super::hot`] (per-thread copies) and [`super::flights`] (reads in flight).
//! Keys are spread over the counters by [`crate::key::shard_hash`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Version counters per instance and purpose.
pub const SHARDS: usize = 1024;

pub struct Versions {
    shards: Box<[AtomicU64]>,
    epoch: AtomicU64,
}

/// A read of the versions of one key, taken before reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    version: u64,
    epoch: u64,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            shards: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
        }
    }
}

impl Versions {
    /// The versions of `key` now.
    pub fn stamp(&self, key: &str) -> Stamp {
        Stamp {
            version: self.shards[shard_of(key)].load(Ordering::Acquire),
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// `key` was written, deleted or invalidated: every stamp of it taken before is stale.
    pub fn bump(&self, key: &str) {
        self.shards[shard_of(key)].fetch_add(1, Ordering::AcqRel);
    }

    /// Anything may have changed: every stamp taken before is stale.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

fn shard_of(key: &str) -> usize {
    (crate::key::shard_hash(key) as usize) % SHARDS
}
