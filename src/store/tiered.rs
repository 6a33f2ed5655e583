//! The in-process tier (`store.l1`) in front of a shared store.
//!
//! Hot entries are answered from memory, decoded, with no Redis round trip. The tier is
//! never fresher than the shared store, because it only ever holds what the shared store
//! held: every write and delete by any instance is published, and every instance drops its
//! copy of that key. While the event subscription is down the tier is not trusted: it is
//! emptied, bypassed, and refilled once the subscription is back. Purges need no special
//! care here: they are applied above the store, to L1 and Redis entries alike.

use super::hot::HotCopies;
use super::{Coordination, Event, L1Stats, Storage, StoreResult, StoreStats};
use crate::clock::Clock;
use crate::entry::Entry;
use crate::metrics::Counter;
use futures_util::future::{BoxFuture, FutureExt};
use moka::future::Cache;
use moka::Expiry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

struct UntilGone(Clock);

impl UntilGone {
    fn left(&self, e: &Entry) -> Duration {
        let keep = e.fresh_ms.saturating_add(e.swr_ms.max(e.sie_ms));
        Duration::from_millis(keep.saturating_sub(e.age_ms(self.0.now_ms())).max(1))
    }
}

impl Expiry<String, Arc<Entry>> for UntilGone {
    fn expire_after_create(&self, _: &String, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(self.left(e))
    }
    fn expire_after_update(
        &self,
        _: &String,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.left(e))
    }
}

/// Counters of the in-process tier (see [`L1Stats`] for what each counts).
#[derive(Default)]
struct Counters {
    hits: Counter,
    misses: Counter,
    invalidations: Counter,
    flushes: Counter,
    evictions: Counter,
}

pub struct TieredStore {
    l1: Cache<String, Arc<Entry>>,
    inner: Arc<dyn Storage>,
    /// Where invalidations are published and heard.
    peers: Arc<dyn Coordination>,
    /// This instance, so it can ignore its own invalidations.
    id: String,
    trusted: Arc<AtomicBool>,
    /// Bumped on every invalidation and flush: a value read from the shared store is
    /// cached only if no invalidation arrived while it was being read.
    generation: Arc<AtomicU64>,
    listener: tokio::task::AbortHandle,
    stats: Arc<Counters>,
    /// Per-thread copies of the hottest L1 entries, 1/32 of the tier per thread; their
    /// versions are bumped after every change to the tier.
    hot: HotCopies,
}

impl Drop for TieredStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl TieredStore {
    /// An L1 of `limit` bytes in front of `inner`, kept current by the events of `peers`.
    pub fn new(
        inner: Arc<dyn Storage>,
        peers: Arc<dyn Coordination>,
        limit: u64,
        clock: Clock,
    ) -> TieredStore {
        let stats = Arc::new(Counters::default());
        let counted = stats.clone();
        let l1: Cache<String, Arc<Entry>> = Cache::builder()
            .max_capacity(limit)
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counted.evictions.inc();
                }
            })
            .weigher(|k: &String, e: &Arc<Entry>| {
                (k.len() as u64 + e.weight()).min(u32::MAX as u64) as u32
            })
            .expire_after(UntilGone(clock))
            .build();
        let id = format!("{:016x}", rand::random::<u64>());
        let trusted = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let hot = HotCopies::new(limit / 32);
        // Subscribed first, then asked: a subscription that came up before we listened is
        // not missed (and if it comes up now, we hear it too).
        let rx = peers.subscribe();
        if peers.subscribed() {
            trusted.store(true, Relaxed);
        }
        let l = Listener {
            l1: l1.clone(),
            id: id.clone(),
            trusted: trusted.clone(),
            generation: generation.clone(),
            stats: stats.clone(),
            hot: hot.clone(),
        };
        let listener = tokio::spawn(l.run(rx)).abort_handle();
        TieredStore {
            l1,
            inner,
            peers,
            id,
            trusted,
            generation,
            listener,
            stats,
            hot,
        }
    }
}

struct Listener {
    l1: Cache<String, Arc<Entry>>,
    id: String,
    trusted: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    stats: Arc<Counters>,
    hot: HotCopies,
}

impl Listener {
    fn flush(&self) {
        self.generation.fetch_add(1, Relaxed);
        self.l1.invalidate_all();
        self.hot.flush();
        self.stats.flushes.add(1);
    }

    async fn run(self, mut rx: broadcast::Receiver<Event>) {
        loop {
            match rx.recv().await {
                Ok(Event::Invalidate { from, key }) if from != self.id => {
                    self.generation.fetch_add(1, Relaxed);
                    self.l1.invalidate(&key).await;
                    self.hot.bump(&key);
                    self.stats.invalidations.add(1);
                }
                Ok(Event::Resubscribed) => {
                    self.flush();
                    self.trusted.store(true, Relaxed);
                }
                Ok(Event::Lost) => {
                    self.trusted.store(false, Relaxed);
                    self.flush();
                }
                Ok(_) => {}
                // We fell behind and missed invalidations: start over.
                Err(broadcast::error::RecvError::Lagged(_)) => self.flush(),
                Err(broadcast::error::RecvError::Closed) => {
                    self.trusted.store(false, Relaxed);
                    return;
                }
            }
        }
    }
}

impl Storage for TieredStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<Arc<Entry>>>> {
        async move {
            let trusted = self.trusted.load(Relaxed);
            let stamp = self.hot.stamp(key);
            if trusted {
                if let Some(e) = self.l1.get(key).await {
                    self.stats.hits.add(1);
                    self.hot.keep(key, &e, stamp);
                    return Ok(Some(e));
                }
                self.stats.misses.add(1);
            }
            let generation = self.generation.load(Relaxed);
            let found = self.inner.get(key).await?;
            let unchanged = self.generation.load(Relaxed) == generation;
            if let (true, true, Some(e)) = (trusted, unchanged, &found) {
                self.l1.insert(key.to_string(), e.clone()).await;
                self.hot.keep(key, e, stamp);
            }
            Ok(found)
        }
        .boxed()
    }

    fn get_hot(&self, key: &str) -> Option<Arc<Entry>> {
        if !self.trusted.load(Relaxed) {
            return None;
        }
        let e = self.hot.get(key)?;
        self.stats.hits.add(1);
        Some(e)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<Entry>,
        keep: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            self.inner.put(key, entry.clone(), keep).await?;
            if self.trusted.load(Relaxed) {
                self.l1.insert(key.to_string(), entry).await;
            }
            self.hot.bump(key);
            let ev = Event::Invalidate {
                from: self.id.clone(),
                key: key.to_string(),
            };
            let _ = self.peers.publish(ev).await;
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            self.l1.invalidate(key).await;
            let deleted = self.inner.delete(key).await;
            // After the shared store changed: a copy made from a read before is dead.
            self.hot.bump(key);
            deleted?;
            let ev = Event::Invalidate {
                from: self.id.clone(),
                key: key.to_string(),
            };
            let _ = self.peers.publish(ev).await;
            Ok(())
        }
        .boxed()
    }

    fn stats(&self) -> StoreStats {
        let st = &self.stats;
        StoreStats {
            l1: Some(L1Stats {
                hits: st.hits.get(),
                misses: st.misses.get(),
                invalidations: st.invalidations.get(),
                flushes: st.flushes.get(),
                evictions: st.evictions.get(),
                bytes: self.l1.weighted_size(),
                trusted: self.trusted.load(Relaxed),
            }),
            ..self.inner.stats()
        }
    }

    fn in_l1(&self, key: &str) -> bool {
        self.trusted.load(Relaxed) && self.l1.contains_key(key)
    }
}
