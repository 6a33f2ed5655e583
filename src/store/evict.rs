//! What the in-process stores keep when space runs out: what a miss would cost most.
//!
//! [`CostCache`] is the byte-bounded map under the memory store and the L1 tier. Each
//! entry is weighed by its fill time (`cost`, in ms: what the back end spends again if it is
//! missed), how often it is asked for, and its size. The policy is GreedyDual-Size-Frequency
//! (Cherkasova, 1998) with a TinyLFU-style admission guard (Einziger et al., 2017) that
//! weighs cost too:
//! - Every lookup, hit or miss, counts in a frequency `Sketch` (4-bit counters, halved
//!   every ten lookups per entry held, so that what was popular long ago fades). It
//!   remembers keys that are not held: a newcomer's `f` is its sketched frequency.
//! - An entry's priority is `clock + f × cost / size`, `f` its sketched frequency when it was
//!   last asked for and `clock` what the clock was then. The lowest priority goes first and
//!   the clock rises to it: entries nobody asks for fall behind the ones asked for since.
//! - A new entry that needs room gets in only if its `f × cost` is at least what the entries
//!   it would push out are worth: the sum of their `hits × cost` (hits counted while held,
//!   halved with the sketch), the last one for the share of it the newcomer needs. That
//!   is what their misses would cost, at the rate they are asked for, against what the
//!   newcomer's would. So a report that cost 20 s pushes out one that cost 20 ms, a new
//!   entry pushes out an old one asked for as often, and a burst of new one-hit entries
//!   cannot push out entries that are asked for more, however many arrive.
//!
//! Why not moka, which the stores used before: moka admits a new entry only if its frequency
//! beats the *sum* of the frequencies of the entries it would push out, and knows nothing of
//! cost, so new reports, expensive or not, lost to old one-hit ones. Its weigher cannot say
//! "expensive" without breaking the byte bound (an entry weighed at less than its size lets
//! the cache hold more bytes than its limit). `examples/eviction_sim.rs` measures both (see
//! `bench/RESULTS.md`, "Eviction policy (issue 15)").
//!
//! Costs: one mutex; a hit is a hash lookup, a sketch update and a clone, with no reordering
//! (the entry's new priority is worked out when it reaches the front of the eviction queue,
//! where it is filed again if it rose meanwhile). A write is O(log n) per entry it files or
//! pushes out. Values pushed out are dropped after the lock is released.
//!
//! Bounds: the sizes the caller gives sum to at most the limit after every call (the
//! bookkeeping, about 200 bytes per entry, comes on top). Entries are dropped once their
//! `keep` has passed (a lookup never returns them), measured on a monotonic clock.

use crate::entry::Entry;
use crate::key::KeyHash;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The 64-bit hash a key is sketched under (the hash maps' own, mixed, since the sketch
/// takes its rows from different bits of it).
fn sketch_hash(key: &str) -> u64 {
    let mut x = KeyHash.hash_one(key);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How often each key was asked for, approximately: a count-min sketch of 4-bit counters
/// (at most 15) in four rows, sixteen counters to a word. Halving every counter after
/// `period` counts ages it (TinyLFU's reset): frequencies are of the recent past.
struct Sketch {
    words: Box<[u64]>,
    mask: usize,
    /// Counts since the last halving.
    counted: u64,
    /// Halvings so far: the age of the counts that resident entries keep themselves.
    halvings: u32,
}

/// The largest sketch: 32 MiB, for 4 million entries.
const MAX_WORDS: usize = 1 << 22;

const ROW_SEEDS: [u64; 4] = [
    0xc3a5_c85c_97cb_3127,
    0xb492_b66f_be98_f273,
    0x9ae1_6a3b_2f90_404f,
    0xcbf2_9ce4_8422_2325,
];

impl Sketch {
    /// A sketch of about `words` words (a power of two, 16 to [`MAX_WORDS`]).
    fn new(words: usize) -> Self {
        let n = words.clamp(16, MAX_WORDS).next_power_of_two();
        Sketch {
            words: vec![0; n].into_boxed_slice(),
            mask: n - 1,
            counted: 0,
            halvings: 0,
        }
    }

    /// Where row `row` keeps the counter of `h`: a word, and the shift of its counter in
    /// it (each row has its own four of the word's sixteen counters).
    fn cell(&self, h: u64, row: usize) -> (usize, u32) {
        let x = h.wrapping_add(ROW_SEEDS[row]).wrapping_mul(ROW_SEEDS[row]);
        let word = (x ^ (x >> 29)) as usize & self.mask;
        let counter = (row << 2) | ((h >> (40 + 2 * row)) & 3) as usize;
        (word, (counter as u32) << 2)
    }

    fn estimate(&self, h: u64) -> u32 {
        (0..4)
            .map(|row| {
                let (w, shift) = self.cell(h, row);
                ((self.words[w] >> shift) & 15) as u32
            })
            .min()
            .unwrap_or(0)
    }

    /// Counts one more of `h` and says its frequency now; halves everything after `period`
    /// counts.
    fn add(&mut self, h: u64, period: u64) -> u32 {
        let mut counted = false;
        let mut f = u32::MAX;
        for row in 0..4 {
            let (w, shift) = self.cell(h, row);
            let mut c = (self.words[w] >> shift) & 15;
            if c < 15 {
                self.words[w] += 1 << shift;
                c += 1;
                counted = true;
            }
            f = f.min(c as u32);
        }
        if counted {
            self.counted += 1;
            if self.counted >= period {
                for w in self.words.iter_mut() {
                    *w = (*w >> 1) & 0x7777_7777_7777_7777;
                }
                self.counted /= 2;
                self.halvings = self.halvings.wrapping_add(1);
            }
        }
        f
    }
}

/// What an insert pushed out to stay within the limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Entries evicted to make room.
    pub evicted: usize,
    /// The new entry itself was not kept: too large, or worth less than what it would
    /// have pushed out.
    pub rejected: bool,
}

impl Pushed {
    /// Entries that are not in the cache because of the limit (the new one included).
    pub fn count(&self) -> u64 {
        self.evicted as u64 + self.rejected as u64
    }
}

/// A byte-bounded, cost-aware map from keys to values that expire (see the module docs).
pub struct CostCache<V> {
    limit: u64,
    /// Expiry is measured from here (monotonic, like moka's `Instant`s: wall-clock steps
    /// and the test clock do not move it).
    origin: Instant,
    /// Tests move expiry time forward with [`CostCache::advance`], not by sleeping.
    #[cfg(test)]
    skew_ms: std::sync::atomic::AtomicU64,
    inner: Mutex<Inner<V>>,
}

struct Inner<V> {
    index: HashMap<Arc<str>, usize, KeyHash>,
    slots: Vec<Option<Slot<V>>>,
    /// Slots free for reuse.
    free: Vec<usize>,
    /// `(priority bits, seq, slot)`, lowest first: the eviction order. An entry's record
    /// holds the priority it was filed with, which is at most its priority now.
    queue: BTreeSet<(u64, u64, usize)>,
    /// `(expires at, seq, slot)`, soonest first.
    expiry: BTreeSet<(u64, u64, usize)>,
    sketch: Sketch,
    /// GreedyDual's clock: the priority of the last entry evicted.
    clock: f64,
    bytes: u64,
    /// Orders records of equal priority (older first) and tells records apart.
    seq: u64,
}

struct Slot<V> {
    key: Arc<str>,
    hash: u64,
    value: V,
    size: u64,
    /// Fill time in ms, at least 1 (so that frequency still tells free entries apart).
    cost: f64,
    /// Sketched frequency when last asked for.
    freq: f64,
    /// Times asked for while held (the fill's own lookup included), as of halving `epoch`.
    hits: u32,
    epoch: u32,
    /// The clock when last asked for.
    base: f64,
    /// Its record in `queue`: `(priority bits, seq)`.
    filed: (u64, u64),
    /// Its record in `expiry`: `(expires at, seq)`.
    expires: (u64, u64),
}

impl<V> Slot<V> {
    /// Its hits, halved with the sketch since it last counted them.
    fn hits_now(&self, halvings: u32) -> u32 {
        self.hits
            .checked_shr(halvings.wrapping_sub(self.epoch))
            .unwrap_or(0)
    }

    fn priority(&self) -> f64 {
        self.base + self.freq * self.cost / self.size as f64
    }
}

/// The bits of a priority, which order as the priorities do (they are never negative).
fn bits(p: f64) -> u64 {
    p.max(0.0).to_bits()
}

impl<V> Inner<V> {
    fn slot(&self, i: usize) -> &Slot<V> {
        match self.slots.get(i) {
            Some(Some(s)) => s,
            // Every record names a live slot: they are removed together.
            _ => unreachable!("record of a free slot {i}"),
        }
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot<V> {
        match self.slots.get_mut(i) {
            Some(Some(s)) => s,
            _ => unreachable!("record of a free slot {i}"),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Lookups between two halvings of the sketch: ten per entry held, as TinyLFU's.
    fn period(&self) -> u64 {
        10 * (self.index.len() as u64).max(64)
    }

    /// Files slot `i` in the eviction queue again, under its priority now.
    fn refile(&mut self, i: usize) {
        let seq = self.next_seq();
        let s = self.slot_mut(i);
        let old = s.filed;
        s.filed = (bits(s.priority()), seq);
        let new = s.filed;
        self.queue.remove(&(old.0, old.1, i));
        self.queue.insert((new.0, new.1, i));
    }

    /// Adds `slot` to the map and both queues.
    fn link(&mut self, mut slot: Slot<V>) {
        let seq = self.next_seq();
        slot.filed = (bits(slot.priority()), seq);
        slot.expires.1 = seq;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.queue.insert((slot.filed.0, seq, i));
        self.expiry.insert((slot.expires.0, seq, i));
        self.index.insert(slot.key.clone(), i);
        self.bytes += slot.size;
        self.slots[i] = Some(slot);
        if self.index.len() > self.sketch.words.len() && self.sketch.words.len() < MAX_WORDS {
            self.grow_sketch();
        }
    }

    /// A word (four counters a row) for each entry held, as TinyLFU sizes it: with fewer,
    /// one-hit keys collide with others and look popular. A sketch keeps no keys, so the
    /// larger one starts from what the entries held had when last asked for (the counts of
    /// keys not held are lost); this happens a few times while the cache fills, at most.
    fn grow_sketch(&mut self) {
        let mut sketch = Sketch::new(self.index.len() * 2);
        let halvings = self.sketch.halvings;
        for s in self.slots.iter().flatten() {
            for _ in 0..s.hits_now(halvings).min(15) {
                sketch.add(s.hash, u64::MAX);
            }
        }
        sketch.counted = 0;
        // The same age, so that the entries' own counts keep theirs.
        sketch.halvings = halvings;
        self.sketch = sketch;
    }

    /// Takes slot `i` out of the map and both queues; its value is the caller's to drop.
    fn unlink(&mut self, i: usize) -> Option<V> {
        let s = self.slots.get_mut(i)?.take()?;
        self.queue.remove(&(s.filed.0, s.filed.1, i));
        self.expiry.remove(&(s.expires.0, s.expires.1, i));
        self.index.remove(&s.key);
        self.bytes -= s.size;
        self.free.push(i);
        Some(s.value)
    }

    /// Drops every entry whose time has come.
    fn expire(&mut self, now: u64, dropped: &mut Vec<V>) {
        while let Some(&(at, _, i)) = self.expiry.first() {
            if at > now {
                break;
            }
            dropped.extend(self.unlink(i));
        }
    }

    /// The entries to evict, lowest priority first, so that `size` more bytes fit; `None`
    /// when `guard` (the newcomer's `f × cost`) is worth less than theirs: they stay where
    /// they are. (Filing the entry that tipped the scale again, as a second chance so that
    /// the next newcomer meets the ones behind it, cost 1.6 to 1.8 points of hit ratio in
    /// `examples/eviction_sim.rs`.)
    fn victims(&mut self, limit: u64, size: u64, guard: Option<f64>) -> Option<Vec<usize>> {
        let mut victims = Vec::new();
        let mut need = (self.bytes + size).saturating_sub(limit);
        let mut worth = 0.0;
        while need > 0 {
            let Some(&(filed, seq, i)) = self.queue.first() else {
                break;
            };
            let s = self.slot(i);
            if bits(s.priority()) > filed {
                // Asked for since it was filed: it goes back in line where it belongs now.
                self.refile(i);
                continue;
            }
            // Its own count, not the sketch's: a sketch errs upwards, and one held entry that
            // looked popular would turn away every newcomer of its cost.
            let f = s.hits_now(self.sketch.halvings);
            // What is pushed out beyond the need stays free for the next newcomer: only the
            // share used now counts against this one.
            let used = need.min(s.size);
            worth += f as f64 * s.cost * used as f64 / s.size as f64;
            need -= used;
            self.queue.remove(&(filed, seq, i));
            victims.push(i);
            if guard.is_some_and(|g| worth > g) {
                for &v in &victims {
                    let f = self.slot(v).filed;
                    self.queue.insert((f.0, f.1, v));
                }
                return None;
            }
        }
        Some(victims)
    }
}

impl<V: Clone> CostCache<V> {
    /// A cache holding entries of at most `limit` bytes in all.
    pub fn new(limit: u64) -> Self {
        // Sized for entries of 16 KiB on average to begin with; it grows with what is held.
        let words = (limit / (16 << 10)).min(MAX_WORDS as u64) as usize;
        CostCache {
            limit,
            origin: Instant::now(),
            #[cfg(test)]
            skew_ms: Default::default(),
            inner: Mutex::new(Inner {
                index: HashMap::default(),
                slots: Vec::new(),
                free: Vec::new(),
                queue: BTreeSet::new(),
                expiry: BTreeSet::new(),
                sketch: Sketch::new(words),
                clock: 0.0,
                bytes: 0,
                seq: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        // Nothing panics while holding it (no user code runs inside), but should anything
        // ever, the maps are still consistent between calls.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        let ms = self.origin.elapsed().as_millis() as u64;
        #[cfg(test)]
        let ms = ms + self.skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        ms
    }

    /// Moves expiry time forward (tests only: no sleeping).
    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        self.skew_ms
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The value under `key`, unless it expired. Counts as a request for `key` either way.
    pub fn get(&self, key: &str) -> Option<V> {
        let now = self.now_ms();
        let h = sketch_hash(key);
        let mut expired = None;
        let found = {
            let mut g = self.lock();
            let period = g.period();
            let f = g.sketch.add(h, period);
            match g.index.get(key).copied() {
                None => None,
                Some(i) if g.slot(i).expires.0 <= now => {
                    expired = g.unlink(i);
                    None
                }
                Some(i) => {
                    let clock = g.clock;
                    let halvings = g.sketch.halvings;
                    let s = g.slot_mut(i);
                    s.hits = s.hits_now(halvings).saturating_add(1);
                    s.epoch = halvings;
                    s.freq = f.max(1) as f64;
                    s.base = clock;
                    Some(s.value.clone())
                }
            }
        };
        drop(expired);
        found
    }

    /// Whether `key` is held and unexpired (not counted as a request).
    pub fn contains(&self, key: &str) -> bool {
        let now = self.now_ms();
        let g = self.lock();
        g.index.get(key).is_some_and(|&i| g.slot(i).expires.0 > now)
    }

    /// Stores `value` (`size` bytes, `cost_ms` to fill) under `key` for `keep`, pushing
    /// out what is worth least to make room. A new key is not stored when it is worth less
    /// than what it would push out; a key already held is replaced whatever its worth.
    pub fn insert(&self, key: &str, value: V, size: u64, cost_ms: u64, keep: Duration) -> Pushed {
        self.insert_weighed(key, value, size, cost_ms.max(1) as f64, keep)
    }

    /// [`CostCache::insert`] at a cost in ms that may be a fraction of one (a shared-store
    /// read, see [`MissCost`]). One cache must be given costs of one kind.
    fn insert_weighed(&self, key: &str, value: V, size: u64, cost: f64, keep: Duration) -> Pushed {
        let now = self.now_ms();
        let expires = now.saturating_add(keep.as_millis().min(u64::MAX as u128) as u64);
        let size = size.max(1);
        let h = sketch_hash(key);
        let mut dropped = Vec::new();
        let mut pushed = Pushed::default();
        {
            let mut g = self.lock();
            // Expired entries make room first: they push nobody out.
            g.expire(now, &mut dropped);
            let held = g.index.get(key).copied();
            let replacing = held.is_some();
            if let Some(i) = held {
                dropped.extend(g.unlink(i));
            }
            let freq = g.sketch.estimate(h).max(1) as f64;
            let cost = cost.max(1e-6);
            let guard = (!replacing).then_some(freq * cost);
            let victims = if size > self.limit {
                None
            } else {
                g.victims(self.limit, size, guard)
            };
            match victims {
                None => {
                    pushed.rejected = true;
                    dropped.push(value);
                }
                Some(victims) => {
                    for i in victims {
                        let p = g.slot(i).priority();
                        g.clock = g.clock.max(p);
                        dropped.extend(g.unlink(i));
                        pushed.evicted += 1;
                    }
                    let (base, epoch) = (g.clock, g.sketch.halvings);
                    g.link(Slot {
                        key: key.into(),
                        hash: h,
                        value,
                        size,
                        cost,
                        freq,
                        hits: 1,
                        epoch,
                        base,
                        filed: (0, 0),
                        expires: (expires, 0),
                    });
                }
            }
        }
        drop(dropped);
        pushed
    }

    /// Drops the entry under `key`, if any.
    pub fn remove(&self, key: &str) {
        let gone = {
            let mut g = self.lock();
            let i = g.index.get(key).copied();
            i.and_then(|i| g.unlink(i))
        };
        drop(gone);
    }

    /// Drops every entry (their frequencies stay in the sketch: popularity outlives them).
    pub fn clear(&self) {
        let gone = {
            let mut g = self.lock();
            g.index.clear();
            g.queue.clear();
            g.expiry.clear();
            g.free.clear();
            g.bytes = 0;
            std::mem::take(&mut g.slots)
        };
        drop(gone);
    }

    /// Bytes held now (the sizes given to [`CostCache::insert`]).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on [`CostCache::bytes`].
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// What missing an entry would cost, which is what a cache of entries weighs them by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissCost {
    /// The memory store: a miss is a fill, the back end computing the report again, so an
    /// entry is worth the time its fill took.
    Fill,
    /// The in-process tier in front of a shared store: the shared store still holds the
    /// entry, so a miss is one read of it, whatever the fill cost. Weighing L1 entries by
    /// their fill time filled the tier with reports asked for once (cold reports take
    /// seconds, popular ones were filled long ago in milliseconds) and left a third of the
    /// answers to Redis on `bench/realistic.sh`.
    Fetch,
}

impl MissCost {
    /// A shared-store read: a round trip and the work around it (about 25 µs of CPU
    /// between slate and Redis on `bench/realistic.sh`, where a Redis hit cost 26 µs more
    /// than a memory hit), plus reading, checking and copying the bytes (about 1 ns each).
    const FETCH_MS: f64 = 0.025;
    const FETCH_MS_PER_BYTE: f64 = 1e-6;

    /// The cost in ms of missing an entry of `size` bytes whose fill took `fill_ms`.
    pub fn ms(self, size: u64, fill_ms: u64) -> f64 {
        match self {
            MissCost::Fill => fill_ms.max(1) as f64,
            MissCost::Fetch => Self::FETCH_MS + size as f64 * Self::FETCH_MS_PER_BYTE,
        }
    }
}

impl CostCache<Arc<Entry>> {
    /// Stores a response, weighed with its key, at what missing it would cost.
    pub fn insert_entry(
        &self,
        key: &str,
        entry: Arc<Entry>,
        keep: Duration,
        miss: MissCost,
    ) -> Pushed {
        let size = key.len() as u64 + entry.weight();
        let cost = miss.ms(size, entry.fetch_ms);
        self.insert_weighed(key, entry, size, cost, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const HOUR: Duration = Duration::from_secs(3600);

    /// A miss as the stores see one: a lookup, then the fill's insert.
    fn ask(c: &CostCache<u32>, key: &str, size: u64, cost_ms: u64) -> bool {
        if c.get(key).is_some() {
            return true;
        }
        c.insert(key, 0, size, cost_ms, HOUR);
        false
    }

    #[test]
    fn keeps_a_1s_report_through_a_flood_of_0ms_ones() {
        let c = CostCache::new(100_000);
        for i in 0..50 {
            ask(&c, &format!("cheap/{i}"), 1000, 0);
        }
        ask(&c, "expensive", 1000, 1000);
        for i in 50..20_000 {
            ask(&c, &format!("cheap/{i}"), 1000, 0);
            assert!(c.bytes() <= 100_000);
        }
        assert!(c.contains("expensive"));
        // And the flood itself is cached as room allows: the newest of it is there.
        assert!(c.contains("cheap/19999"));
    }

    #[test]
    fn a_new_expensive_report_pushes_out_an_old_cheap_one() {
        let c = CostCache::new(10_000);
        for i in 0..10 {
            ask(&c, &format!("old/{i}"), 1000, 20);
        }
        assert!(!ask(&c, "new", 1000, 20_000));
        assert!(c.contains("new"));
        assert_eq!(c.len(), 10);
    }

    /// The workload `MissCost::Fetch` is for: popular reports filled once in milliseconds,
    /// then a stream of cold reports that took seconds each and are asked for once. The
    /// memory store keeps the cold ones (missing one costs the back end seconds); the L1
    /// keeps the popular ones (missing either costs one Redis read, and the popular ones
    /// are asked for again).
    #[test]
    fn the_l1_keeps_what_is_asked_for_whatever_it_cost_to_fill() {
        fn hot_kept(miss: MissCost) -> usize {
            let c = CostCache::new(100_000);
            let ask = |key: &str, fill_ms: u64| {
                if c.get(key).is_none() {
                    c.insert_weighed(key, 0u32, 1000, miss.ms(1000, fill_ms), HOUR);
                }
            };
            let mut rng = StdRng::seed_from_u64(7);
            for i in 0..5000 {
                // 60 popular reports asked for all along, one cold report in five asks.
                ask(&format!("hot/{}", rng.random_range(0..60)), 1);
                if i % 5 == 0 {
                    ask(&format!("cold/{i}"), rng.random_range(1000..5000));
                }
            }
            (0..60).filter(|i| c.contains(&format!("hot/{i}"))).count()
        }
        let (fetch, fill) = (hot_kept(MissCost::Fetch), hot_kept(MissCost::Fill));
        assert!(fetch >= 55, "the L1 kept {fetch} of 60 popular reports");
        assert!(
            fill < 30,
            "weighed by fill time, {fill} of 60 popular reports stayed"
        );
    }

    #[test]
    fn a_burst_of_one_hit_entries_does_not_flush_a_hot_set() {
        let c = CostCache::new(100_000);
        // A hot set of half the cache, asked for four times each.
        for _ in 0..4 {
            for i in 0..50 {
                ask(&c, &format!("hot/{i}"), 1000, 500);
            }
        }
        // Then ten times the cache's worth of entries nobody asks for again, as costly.
        for i in 0..1000 {
            ask(&c, &format!("burst/{i}"), 1000, 500);
        }
        let kept = (0..50).filter(|i| c.contains(&format!("hot/{i}"))).count();
        assert_eq!(kept, 50);
        // The burst went through the other half.
        assert_eq!(c.len(), 100);
    }

    #[test]
    fn the_byte_bound_holds() {
        let limit = 1 << 20;
        let c = CostCache::new(limit);
        let mut rng = StdRng::seed_from_u64(15);
        let mut sizes = HashMap::new();
        for _ in 0..20_000 {
            let k = format!("k/{}", rng.random_range(0..2000u32));
            match rng.random_range(0..10) {
                0 => c.remove(&k),
                1..=4 => {
                    let _ = c.get(&k);
                }
                _ => {
                    let size = rng.random_range(1..300_000u64);
                    sizes.insert(k.clone(), size);
                    c.insert(&k, 0, size, rng.random_range(0..30_000), HOUR);
                }
            }
            assert!(c.bytes() <= limit, "{} > {limit}", c.bytes());
        }
        let g = c.lock();
        let held: u64 = g.index.keys().map(|k| sizes[&**k]).sum();
        assert_eq!(held, g.bytes, "bytes is the sum of what is held");
        assert_eq!(g.queue.len(), g.index.len());
        assert_eq!(g.expiry.len(), g.index.len());
    }

    #[test]
    fn an_entry_larger_than_the_limit_is_not_kept() {
        let c = CostCache::new(1000);
        c.insert("small", 0, 500, 10, HOUR);
        let p = c.insert("huge", 0, 1001, 30_000, HOUR);
        assert_eq!(
            p,
            Pushed {
                evicted: 0,
                rejected: true
            }
        );
        assert!(c.contains("small") && !c.contains("huge"));
    }

    #[test]
    fn entries_expire_after_keep() {
        let c = CostCache::new(10_000);
        c.insert("short", 1, 100, 10, Duration::from_secs(10));
        c.insert("long", 2, 100, 10, HOUR);
        c.advance(Duration::from_secs(9));
        assert_eq!(c.get("short"), Some(1));
        c.advance(Duration::from_secs(2));
        assert_eq!(c.get("short"), None);
        assert!(!c.contains("short"));
        assert_eq!(c.get("long"), Some(2));
        // Gone from the byte count too, found or not, at the next write.
        c.insert("x", 3, 100, 10, Duration::from_secs(10));
        c.advance(Duration::from_secs(11));
        c.insert("y", 4, 100, 10, HOUR);
        assert_eq!((c.len(), c.bytes()), (2, 200));
    }

    #[test]
    fn replacing_keeps_one_entry_of_the_new_size() {
        let c = CostCache::new(1000);
        c.insert("a", 1, 300, 10, HOUR);
        c.insert("a", 2, 600, 10, HOUR);
        assert_eq!((c.get("a"), c.bytes(), c.len()), (Some(2), 600, 1));
        c.remove("a");
        assert_eq!((c.get("a"), c.bytes()), (None, 0));
        c.insert("b", 1, 300, 10, HOUR);
        c.clear();
        assert!(c.is_empty() && c.bytes() == 0 && c.get("b").is_none());
    }

    #[test]
    fn the_sketch_counts_and_forgets() {
        let mut s = Sketch::new(64);
        let (a, b) = (sketch_hash("a"), sketch_hash("b"));
        for _ in 0..5 {
            s.add(a, u64::MAX);
        }
        assert_eq!(s.estimate(a), 5);
        assert_eq!(s.estimate(b), 0);
        for _ in 0..20 {
            s.add(a, u64::MAX);
        }
        assert_eq!(s.estimate(a), 15, "4-bit counters stop at 15");
        // A halving after `period` counts.
        let mut s = Sketch::new(64);
        for _ in 0..8 {
            s.add(a, 10);
        }
        s.add(b, 10);
        s.add(b, 10);
        assert_eq!(s.estimate(a), 4);
        assert_eq!(s.estimate(b), 1);
    }
}
