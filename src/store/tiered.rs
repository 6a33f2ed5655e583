//! The in-process tier (`store.l1`) in front of a shared store.
//!
//! Hot entries are answered from memory, decoded, with no Redis round trip. The tier is
//! never fresher than the shared store, because it only ever holds what the shared store
//! held: every write and delete by any instance is published, and every instance drops its
//! copy of that key. While the event subscription is down the tier is not trusted: it is
//! emptied, bypassed, and refilled once the subscription is back. Purges need no special
//! care here: they are applied above the store, to L1 and Redis entries alike.

use super::evict::{CostCache, MissCost};
use super::hot::HotCopies;
use super::{Coordination, Event, L1Stats, Storage, StoreResult, StoreStats};
use crate::clock::Clock;
use crate::entry::Entry;
use crate::metrics::Counter;
use futures_util::future::{BoxFuture, FutureExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long the tier keeps an entry: as long as it can be served at all (fresh, or stale
/// within its windows), by the clock the entry's age is measured with.
struct UntilGone(Clock);

impl UntilGone {
    fn left(&self, e: &Entry) -> Duration {
        let keep = e.fresh_ms.saturating_add(e.swr_ms.max(e.sie_ms));
        Duration::from_millis(keep.saturating_sub(e.age_ms(self.0.now_ms())).max(1))
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
    /// Byte-bounded and cost-aware ([`super::evict`]): `store.l1` bounds the bytes held.
    l1: Arc<CostCache<Arc<Entry>>>,
    until_gone: UntilGone,
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
        let l1 = Arc::new(CostCache::new(limit));
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
            until_gone: UntilGone(clock),
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
    l1: Arc<CostCache<Arc<Entry>>>,
    id: String,
    trusted: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    stats: Arc<Counters>,
    hot: HotCopies,
}

impl Listener {
    fn flush(&self) {
        self.generation.fetch_add(1, Relaxed);
        self.l1.clear();
        self.hot.flush();
        self.stats.flushes.add(1);
    }

    async fn run(self, mut rx: broadcast::Receiver<Event>) {
        loop {
            match rx.recv().await {
                Ok(Event::Invalidate { from, key }) if from != self.id => {
                    self.generation.fetch_add(1, Relaxed);
                    self.l1.remove(&key);
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

impl TieredStore {
    /// Copies `e` into the tier, counting what that pushed out.
    fn keep(&self, key: &str, e: Arc<Entry>) {
        let keep = self.until_gone.left(&e);
        let pushed = self.l1.insert_entry(key, e, keep, MissCost::Fetch);
        self.stats.evictions.add(pushed.count());
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
                if let Some(e) = self.l1.get(key) {
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
                self.keep(key, e.clone());
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
                self.keep(key, entry);
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
            self.l1.remove(key);
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
                bytes: self.l1.bytes(),
                trusted: self.trusted.load(Relaxed),
            }),
            ..self.inner.stats()
        }
    }

    fn in_l1(&self, key: &str) -> bool {
        self.trusted.load(Relaxed) && self.l1.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// An instance with no peers: its subscription is up and nobody else writes.
    struct Alone(broadcast::Sender<Event>);

    impl Coordination for Alone {
        fn acquire<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, StoreResult<bool>> {
            async { Ok(true) }.boxed()
        }
        // The trait's two lease calls share a signature; alone, both always succeed.
        fn renew<'a>(
            &'a self,
            name: &'a str,
            token: &'a str,
            lease: Duration,
        ) -> BoxFuture<'a, StoreResult<bool>> {
            self.acquire(name, token, lease)
        }
        fn release<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, StoreResult<()>> {
            async { Ok(()) }.boxed()
        }
        fn held<'a>(&'a self, _: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
            async { Ok(false) }.boxed()
        }
        fn publish(&self, _: Event) -> BoxFuture<'_, StoreResult<()>> {
            // Nobody to tell (and its own invalidations are ignored anyway).
            async { Ok(()) }.boxed()
        }
        fn subscribe(&self) -> broadcast::Receiver<Event> {
            self.0.subscribe()
        }
        fn subscribed(&self) -> bool {
            true
        }
        fn acquire_slot<'a>(
            &'a self,
            _: &'a crate::store::Slots,
            _: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, StoreResult<crate::store::SlotGrant>> {
            async { Ok(crate::store::SlotGrant::Granted) }.boxed()
        }
        fn renew_slot<'a>(
            &'a self,
            _: &'a crate::store::Slots,
            _: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, StoreResult<bool>> {
            async { Ok(true) }.boxed()
        }
        fn release_slot<'a>(
            &'a self,
            _: &'a crate::store::Slots,
            _: &'a str,
        ) -> BoxFuture<'a, StoreResult<()>> {
            async { Ok(()) }.boxed()
        }
    }

    /// An L1 of `limit` bytes in front of a shared store that keeps everything.
    fn tier(limit: u64) -> TieredStore {
        let inner = Arc::new(MemoryStore::new(1 << 32));
        let peers = Arc::new(Alone(broadcast::channel(16).0));
        TieredStore::new(inner, peers, limit, Clock::system())
    }

    fn l1(t: &TieredStore) -> L1Stats {
        t.stats().l1.expect("an L1 tier")
    }

    /// A request as the proxy makes it: a lookup, then on a miss the fill's write.
    async fn ask(t: &TieredStore, key: &str, len: usize, fetch_ms: u64) {
        if let Ok(Some(_)) = t.get(key).await {
            return;
        }
        let e = Arc::new(Entry::report(len, fetch_ms));
        t.put(key, e, Duration::from_secs(3600))
            .await
            .expect("memory writes");
    }

    /// A miss in the tier is one Redis read whatever the fill cost (`MissCost::Fetch`), so
    /// the tier keeps what is asked for again: 60 popular reports filled in 1 ms stay
    /// through a stream of reports that took seconds each and are asked for once. (The
    /// memory store, whose misses are fills, keeps the expensive ones: see its own test.)
    #[tokio::test]
    async fn keeps_popular_reports_through_a_flood_of_expensive_one_offs() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let t = tier(100 * 10_000);
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..10_000 {
            ask(&t, &format!("hot/{}", rng.random_range(0..60)), 10_000, 1).await;
            if i % 5 == 0 {
                let fill_ms = rng.random_range(1000..5000);
                ask(&t, &format!("cold/{i}"), 10_000, fill_ms).await;
            }
        }
        let kept = (0..60).filter(|i| t.in_l1(&format!("hot/{i}"))).count();
        assert!(kept >= 55, "the tier kept {kept} of 60 popular reports");
        let st = l1(&t);
        assert!(st.evictions > 1500, "{st:?}");
        assert!(st.bytes <= 100 * 10_000, "{st:?}");
    }

    #[tokio::test]
    async fn l1_bounds_its_bytes_and_counts_what_it_pushes_out() {
        let limit = 1 << 20;
        let t = tier(limit);
        for i in 0..2000u64 {
            ask(
                &t,
                &format!("r/{i}"),
                (i as usize * 7919) % 100_000,
                i * 17 % 30_000,
            )
            .await;
            assert!(l1(&t).bytes <= limit);
        }
        // Every key was written once: what is not held was pushed out (or turned away).
        let held = (0..2000).filter(|i| t.in_l1(&format!("r/{i}"))).count() as u64;
        assert_eq!(l1(&t).evictions, 2000 - held);
        // A copy pushed out is still in the shared store, and comes back on a lookup.
        let gone = (0..2000)
            .map(|i| format!("r/{i}"))
            .find(|k| !t.in_l1(k))
            .expect("some were pushed out");
        assert!(matches!(t.get(&gone).await, Ok(Some(_))));
    }

    #[tokio::test]
    async fn l1_copies_are_dropped_when_they_can_no_longer_be_served() {
        let t = tier(1 << 20);
        ask(&t, "a", 1000, 10).await;
        assert!(t.in_l1("a"));
        // Fresh for an hour, no stale windows: the tier keeps it for that hour.
        t.l1.advance(Duration::from_secs(3590));
        assert!(t.in_l1("a"));
        t.l1.advance(Duration::from_secs(20));
        assert!(!t.in_l1("a"));
    }
}
