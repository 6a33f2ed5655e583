//! The embedded store, for one instance with no Redis: a byte-bounded map of decoded
//! entries (`Arc<Entry>`), so a hit costs no decoding.
//!
//! What stays when space runs out weighs what a miss would cost (fill time, hits, size):
//! see [`super::evict`]. `store.memory_limit` bounds the bytes of the entries held, keys
//! included, after every write.

use super::evict::{CostCache, MissCost};
use super::hot::HotCopies;
use super::{PurgeLog, PurgeRecord, PurgeRequest, Storage, StoreResult};
use crate::entry::Entry;
use futures_util::future::{BoxFuture, FutureExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct MemoryStore {
    cache: CostCache<Arc<Entry>>,
    /// Per-thread copies of the hottest entries, 1/32 of the bound per thread.
    hot: HotCopies,
    log: Mutex<(u64, Vec<PurgeRecord>)>,
}

impl MemoryStore {
    /// A store holding at most `limit` bytes of entries (keys and metadata included).
    pub fn new(limit: u64) -> Self {
        MemoryStore {
            cache: CostCache::new(limit),
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
            let found = self.cache.get(key);
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
            self.cache.insert_entry(key, entry, keep, MissCost::Fill);
            self.hot.bump(key);
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            self.cache.remove(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn report(len: usize, fetch_ms: u64) -> Arc<Entry> {
        Arc::new(Entry::report(len, fetch_ms))
    }

    /// A request as the proxy makes it: a lookup, then on a miss the fill's write.
    async fn ask(s: &MemoryStore, key: &str, e: &Arc<Entry>) -> bool {
        if matches!(s.get(key).await, Ok(Some(_))) {
            return true;
        }
        s.put(key, e.clone(), HOUR).await.expect("memory writes");
        false
    }

    #[tokio::test]
    async fn the_last_arrivals_into_a_full_store_are_kept() {
        // Issue 15: into a full 8 MiB store, 2,000 new 20 KB reports; moka kept none of the
        // last 80 (its admission kept the old one-hit entries).
        let s = MemoryStore::new(8 << 20);
        let e = report(20_000, 5);
        for i in 0..1000 {
            ask(&s, &format!("old/{i}"), &e).await;
        }
        for i in 0..2000 {
            ask(&s, &format!("new/{i}"), &e).await;
        }
        let kept = (1920..2000)
            .filter(|i| s.cache.contains(&format!("new/{i}")))
            .count();
        assert_eq!(kept, 80);
        assert!(s.cache.bytes() <= 8 << 20);
    }

    #[tokio::test]
    async fn keeps_a_1s_report_through_a_flood_of_0ms_ones() {
        let s = MemoryStore::new(1 << 20);
        ask(&s, "expensive", &report(10_000, 1000)).await;
        let cheap = report(10_000, 0);
        for i in 0..10_000 {
            ask(&s, &format!("cheap/{i}"), &cheap).await;
        }
        assert!(s.cache.contains("expensive"));
        assert!(matches!(s.get("expensive").await, Ok(Some(e)) if e.fetch_ms == 1000));
    }

    #[tokio::test]
    async fn memory_limit_bounds_the_bytes_held() {
        let limit = 1 << 20;
        let s = MemoryStore::new(limit);
        let mut held = std::collections::HashMap::new();
        for i in 0..3000u64 {
            let key = format!("r/{}", i % 700);
            let e = report((i as usize * 7919) % 200_000, i % 30_000);
            held.insert(key.clone(), key.len() as u64 + e.weight());
            s.put(&key, e, HOUR).await.expect("memory writes");
            assert!(s.cache.bytes() <= limit, "{} > {limit}", s.cache.bytes());
        }
        let counted: u64 = held
            .iter()
            .filter(|(k, _)| s.cache.contains(k))
            .map(|(_, w)| w)
            .sum();
        assert_eq!(s.cache.bytes(), counted, "every byte held is counted");
    }

    #[tokio::test]
    async fn entries_are_dropped_after_keep() {
        let s = MemoryStore::new(1 << 20);
        s.put("a", report(100, 10), Duration::from_secs(60))
            .await
            .expect("memory writes");
        s.cache.advance(Duration::from_secs(59));
        assert!(matches!(s.get("a").await, Ok(Some(_))));
        s.cache.advance(Duration::from_secs(2));
        assert!(matches!(s.get("a").await, Ok(None)));
        assert_eq!(s.cache.bytes(), 0);
    }
}
