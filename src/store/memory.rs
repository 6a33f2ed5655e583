//! The embedded store: a byte-weighted moka cache, for one instance with no Redis.
//!
//! Entries are kept decoded (`Arc<Entry>`), so a hit costs no decoding. moka's TinyLFU
//! admission and LRU eviction keep the total weight under `memory_limit`.

use super::hot::HotCopies;
use super::{PurgeLog, PurgeRecord, PurgeRequest, Storage, StoreResult};
use crate::entry::Entry;
use futures_util::future::{BoxFuture, FutureExt};
use moka::future::Cache;
use moka::Expiry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Value {
    entry: Arc<Entry>,
    keep: Duration,
}

struct KeepFor;

impl Expiry<String, Value> for KeepFor {
    fn expire_after_create(&self, _: &String, v: &Value, _: Instant) -> Option<Duration> {
        Some(v.keep)
    }
    fn expire_after_update(
        &self,
        _: &String,
        v: &Value,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.keep)
    }
}

pub struct MemoryStore {
    cache: Cache<String, Value>,
    /// Per-thread copies of the hottest entries, 1/32 of the bound per thread.
    hot: HotCopies,
    log: Mutex<(u64, Vec<PurgeRecord>)>,
}

impl MemoryStore {
    /// A store holding at most `limit` bytes of entries (keys and metadata included).
    pub fn new(limit: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(limit)
            .weigher(|k: &String, v: &Value| {
                (k.len() as u64 + v.entry.weight()).min(u32::MAX as u64) as u32
            })
            .expire_after(KeepFor)
            .build();
        MemoryStore {
            cache,
            hot: HotCopies::new(limit / 32),
            log: Mutex::new((0, Vec::new())),
        }
    }
}

impl Storage for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<Arc<Entry>>>> {
        async move {
            let stamp = self.hot.stamp(key);
            let found = self.cache.get(key).await.map(|v| v.entry);
            if let Some(e) = &found {
                self.hot.keep(key, e, stamp);
            }
            Ok(found)
        }
        .boxed()
    }

    fn get_hot(&self, key: &str) -> Option<Arc<Entry>> {
        self.hot.get(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<Entry>,
        keep: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            self.cache
                .insert(key.to_string(), Value { entry, keep })
                .await;
            self.hot.bump(key);
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            self.cache.invalidate(key).await;
            self.hot.bump(key);
            Ok(())
        }
        .boxed()
    }
}

impl PurgeLog for MemoryStore {
    fn purge_add<'a>(
        &'a self,
        req: &'a PurgeRequest,
        expires_ms: u64,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.0 += 1;
        let seq = log.0;
        log.1.retain(|r| {
            r.expires_ms
                > expires_ms.saturating_sub(crate::policy::MAX_ENTRY_LIFETIME.as_millis() as u64)
        });
        log.1.push(PurgeRecord {
            seq,
            req: req.clone(),
            expires_ms,
        });
        async move { Ok(seq) }.boxed()
    }

    fn purge_since(&self, seq: u64) -> BoxFuture<'_, StoreResult<(u64, Vec<PurgeRecord>)>> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let recs = log.1.iter().filter(|r| r.seq > seq).cloned().collect();
        let cur = log.0;
        async move { Ok((cur, recs)) }.boxed()
    }

    fn purge_seq(&self) -> BoxFuture<'_, StoreResult<u64>> {
        let cur = self.log.lock().unwrap_or_else(|e| e.into_inner()).0;
        async move { Ok(cur) }.boxed()
    }
}
