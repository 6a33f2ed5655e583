//! The reports that cost the back end most, over the last hour, in bounded memory: what
//! `GET /top` and the status page show.
//!
//! Counting every distinct URL exactly would grow with the URLs clients invent, so each
//! measure (hits, misses, fill time, seconds saved) has a weighted **Space-Saving** summary
//! (Metwally, Agrawal, El Abbadi, 2005) of [`CAPACITY`] counters. An event for a report the
//! summary does not track takes the counter of the one with the least weight, and starts
//! from that weight. Space-Saving's guarantee, for a summary that has seen total weight W:
//! every report whose weight exceeds W / CAPACITY is tracked, and what is counted for a
//! tracked report falls short of its true weight by at most the weight it started from,
//! itself at most W / CAPACITY. Weighing by each measure (rather than one count of
//! requests) is what keeps a report asked for twice an hour that takes 30 s to compute in
//! the fill-time ranking among thousands of quick URLs asked for once.
//!
//! The hour slides in [`SLICES`] slices of [`SLICE_MS`], each with summaries of its own,
//! chosen by slate's clock: a slice is emptied when its time comes round again, and a query
//! adds up the live ones (the current slice and the five before it: between 50 and 60
//! minutes). The shortfall bound adds up too: W / CAPACITY over the window's whole weight,
//! reported with every answer as `max_undercount`.
//!
//! The four summaries of a slice share one record per report (its URL, rule and counts),
//! kept while any of them tracks it: a slice holds at most 4 × CAPACITY reports, the window
//! at most 6 × 4 × CAPACITY, whatever the number of distinct URLs.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

/// Counters per measure and slice.
pub const CAPACITY: usize = 256;
/// Slices in the window.
pub const SLICES: usize = 6;
/// One slice: ten minutes.
pub const SLICE_MS: u64 = 600_000;

/// What `/top` ranks by (`?by=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Hits,
    Misses,
    /// Total time the back end spent filling the report.
    FillTime,
    /// Total upstream time hits spared the back end.
    Saved,
}

impl By {
    pub const ALL: [By; 4] = [By::Hits, By::Misses, By::FillTime, By::Saved];

    pub fn as_str(self) -> &'static str {
        match self {
            By::Hits => "hits",
            By::Misses => "misses",
            By::FillTime => "fill_time",
            By::Saved => "saved",
        }
    }

    pub fn parse(s: &str) -> Option<By> {
        By::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// The field of a row (see [`Ranking::to_json`]) it ranks by.
    pub fn field(self) -> &'static str {
        match self {
            By::Hits => "hits",
            By::Misses => "misses",
            By::FillTime => "fill_time_s",
            By::Saved => "saved_s",
        }
    }

    /// A weight of this measure in the unit of its field.
    fn in_field_unit(self, w: u64) -> serde_json::Value {
        match self {
            By::Hits | By::Misses => w.into(),
            By::FillTime => (w as f64 / 1e6).into(),
            By::Saved => (w as f64 / 1e3).into(),
        }
    }
}

/// Which report an event is about: its normalized URL, the digest of its canonical body
/// (for a rule keyed on bodies), and its rule's path.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub url: &'a str,
    pub body: Option<&'a str>,
    pub rule: Option<&'a str>,
}

/// Something that happened to a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Answered from the cache, sparing the upstream the fill time of what it served.
    Hit { saved_ms: u64 },
    /// A client request that went upstream.
    Miss,
    /// A fill (a client's, a refresh's or warming's) that kept the upstream this long.
    Fill { micros: u64 },
}

/// A report's counts while it was tracked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub fills: u64,
    pub fill_us: u64,
    pub fill_max_us: u64,
    pub saved_ms: u64,
}

impl Stats {
    fn of(e: Event) -> Stats {
        match e {
            Event::Hit { saved_ms } => Stats {
                hits: 1,
                saved_ms,
                ..Stats::default()
            },
            Event::Miss => Stats {
                misses: 1,
                ..Stats::default()
            },
            Event::Fill { micros } => Stats {
                fills: 1,
                fill_us: micros,
                fill_max_us: micros,
                ..Stats::default()
            },
        }
    }

    fn add(&mut self, o: &Stats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.fills += o.fills;
        self.fill_us += o.fill_us;
        self.fill_max_us = self.fill_max_us.max(o.fill_max_us);
        self.saved_ms += o.saved_ms;
    }

    /// Its weight in the summary of `by`.
    pub fn measure(&self, by: By) -> u64 {
        match by {
            By::Hits => self.hits,
            By::Misses => self.misses,
            By::FillTime => self.fill_us,
            By::Saved => self.saved_ms,
        }
    }
}

/// One row of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub url: String,
    pub body: Option<String>,
    pub rule: Option<String>,
    pub stats: Stats,
}

/// An answer: the rows, most first, and how far their counts may fall short.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub rows: Vec<Row>,
    /// Space-Saving's bound on what a row's count (of the measure ranked by) misses: the
    /// window's total weight of that measure over [`CAPACITY`], in [`By::unit`]s.
    pub max_undercount: u64,
    /// Reports tracked over the window (at most `SLICES × 4 × CAPACITY`).
    pub tracked: usize,
}

impl Ranking {
    /// The answer of `GET /top`.
    pub fn to_json(&self, by: By) -> serde_json::Value {
        let secs = |us: u64| us as f64 / 1e6;
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let s = &r.stats;
                let mean = s
                    .fill_us
                    .checked_div(s.fills)
                    .map_or(serde_json::Value::Null, |m| secs(m).into());
                serde_json::json!({
                    "url": r.url,
                    "body": r.body,
                    "rule": r.rule,
                    "hits": s.hits,
                    "misses": s.misses,
                    "fills": s.fills,
                    "fill_time_s": secs(s.fill_us),
                    "mean_fill_s": mean,
                    "max_fill_s": secs(s.fill_max_us),
                    "saved_s": s.saved_ms as f64 / 1e3,
                })
            })
            .collect();
        serde_json::json!({
            "by": by.as_str(),
            "ranked_by": by.field(),
            "window_s": SLICES as u64 * SLICE_MS / 1000,
            "slice_s": SLICE_MS / 1000,
            "sketch": "space-saving",
            "capacity": CAPACITY,
            "tracked": self.tracked,
            "max_undercount": by.in_field_unit(self.max_undercount),
            "rows": rows,
        })
    }
}

/// Report ids are hashes already: the index needs no second hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; this keeps the trait whole.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Index = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

/// Not in a summary.
const OUT: u32 = u32::MAX;

struct Item {
    id: u64,
    url: Box<str>,
    body: Option<Box<str>>,
    rule: Option<Box<str>>,
    stats: Stats,
    /// Per measure: where it sits in that summary's heap (or `OUT`), and its counter.
    pos: [u32; 4],
    weight: [u64; 4],
}

impl Item {
    fn tracked(&self) -> bool {
        self.pos.iter().any(|p| *p != OUT)
    }
}

/// One measure's Space-Saving counters: a binary min-heap of item slots by weight, so the
/// counter to take over is at the root.
#[derive(Default)]
struct Summary {
    heap: Vec<u32>,
    /// Everything this summary has counted (W).
    total: u64,
}

/// One slice of the window: the summaries and the reports they track.
struct Slice {
    /// `now_ms / SLICE_MS` of the time it holds.
    epoch: u64,
    index: Index,
    items: Vec<Item>,
    free: Vec<u32>,
    summaries: [Summary; 4],
}

impl Slice {
    fn new() -> Slice {
        Slice {
            epoch: u64::MAX,
            index: Index::default(),
            items: Vec::new(),
            free: Vec::new(),
            summaries: Default::default(),
        }
    }

    fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.index.clear();
        self.items.clear();
        self.free.clear();
        for s in &mut self.summaries {
            s.heap.clear();
            s.total = 0;
        }
    }

    fn record(&mut self, id: u64, report: &Report<'_>, delta: &Stats) {
        let slot = match self.index.get(&id) {
            Some(&slot) => {
                let it = &mut self.items[slot as usize];
                it.stats.add(delta);
                if it.rule.as_deref() != report.rule {
                    // The config was reloaded: the row says the rule in force.
                    it.rule = report.rule.map(Into::into);
                }
                slot
            }
            None => {
                let item = Item {
                    id,
                    url: report.url.into(),
                    body: report.body.map(Into::into),
                    rule: report.rule.map(Into::into),
                    stats: *delta,
                    pos: [OUT; 4],
                    weight: [0; 4],
                };
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.items[s as usize] = item;
                        s
                    }
                    None => {
                        self.items.push(item);
                        (self.items.len() - 1) as u32
                    }
                };
                self.index.insert(id, slot);
                slot
            }
        };
        for (m, by) in By::ALL.into_iter().enumerate() {
            let w = delta.measure(by);
            if w == 0 {
                continue;
            }
            self.summaries[m].total += w;
            let pos = self.items[slot as usize].pos[m];
            if pos != OUT {
                self.items[slot as usize].weight[m] += w;
                self.sift_down(m, pos as usize);
            } else {
                self.admit(m, slot, w);
            }
        }
        // An event that weighs nothing anywhere (a fill that took no time) for a report
        // not tracked: nothing to keep.
        if !self.items[slot as usize].tracked() {
            self.remove(slot);
        }
    }

    /// Space-Saving's step for a report summary `m` does not track: a free counter, or
    /// the least one, taken over with its weight.
    fn admit(&mut self, m: usize, slot: u32, w: u64) {
        let heap_len = self.summaries[m].heap.len();
        if heap_len < CAPACITY {
            self.summaries[m].heap.push(slot);
            let it = &mut self.items[slot as usize];
            it.weight[m] = w;
            it.pos[m] = heap_len as u32;
            self.sift_up(m, heap_len);
            return;
        }
        let old = self.summaries[m].heap[0];
        let floor = self.items[old as usize].weight[m];
        self.items[old as usize].pos[m] = OUT;
        self.summaries[m].heap[0] = slot;
        let it = &mut self.items[slot as usize];
        it.weight[m] = floor + w;
        it.pos[m] = 0;
        self.sift_down(m, 0);
        if !self.items[old as usize].tracked() {
            self.remove(old);
        }
    }

    fn remove(&mut self, slot: u32) {
        let id = self.items[slot as usize].id;
        self.index.remove(&id);
        // Its strings go now; the slot is reused by the next newcomer.
        let it = &mut self.items[slot as usize];
        it.url = Box::from("");
        it.body = None;
        it.rule = None;
        self.free.push(slot);
    }

    fn weight(&self, m: usize, i: usize) -> u64 {
        self.items[self.summaries[m].heap[i] as usize].weight[m]
    }

    fn swap(&mut self, m: usize, i: usize, j: usize) {
        let heap = &mut self.summaries[m].heap;
        heap.swap(i, j);
        let (a, b) = (heap[i], heap[j]);
        self.items[a as usize].pos[m] = i as u32;
        self.items[b as usize].pos[m] = j as u32;
    }

    fn sift_up(&mut self, m: usize, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.weight(m, parent) <= self.weight(m, i) {
                break;
            }
            self.swap(m, parent, i);
            i = parent;
        }
    }

    /// Weights only grow, so a counter only ever moves down the min-heap.
    fn sift_down(&mut self, m: usize, mut i: usize) {
        let n = self.summaries[m].heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < n && self.weight(m, l) < self.weight(m, least) {
                least = l;
            }
            if r < n && self.weight(m, r) < self.weight(m, least) {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(m, i, least);
            i = least;
        }
    }

    fn live(&self, now_epoch: u64) -> bool {
        self.epoch <= now_epoch && now_epoch - self.epoch < SLICES as u64
    }
}

/// The sliding hour of summaries, behind one short lock (see `bench/micro.rs` for what a
/// record costs).
pub struct Top {
    slices: Mutex<Vec<Slice>>,
    ids: RandomState,
}

impl Default for Top {
    fn default() -> Self {
        Top {
            slices: Mutex::new((0..SLICES).map(|_| Slice::new()).collect()),
            // Keyed per process: nobody can pick URLs that share a counter.
            ids: RandomState::new(),
        }
    }
}

impl Top {
    fn id(&self, r: &Report<'_>) -> u64 {
        let mut h = self.ids.build_hasher();
        h.write(r.url.as_bytes());
        // Separates "URL, no body" from any URL with one.
        h.write_u8(0xff);
        if let Some(b) = r.body {
            h.write(b.as_bytes());
        }
        h.finish()
    }

    /// Counts `event` for `report` at `now_ms` (slate's clock).
    pub fn record(&self, now_ms: u64, report: &Report<'_>, event: Event) {
        let id = self.id(report);
        let delta = Stats::of(event);
        let epoch = now_ms / SLICE_MS;
        let mut slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
        let slice = &mut slices[(epoch % SLICES as u64) as usize];
        if slice.epoch != epoch {
            slice.reset(epoch);
        }
        slice.record(id, report, &delta);
    }

    /// The `n` reports with the most of `by` over the window ending at `now_ms`.
    pub fn ranking(&self, now_ms: u64, by: By, n: usize) -> Ranking {
        let epoch = now_ms / SLICE_MS;
        let m = By::ALL.iter().position(|b| *b == by).unwrap_or(0);
        let slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<&Slice> = slices.iter().filter(|s| s.live(epoch)).collect();
        let total: u64 = live.iter().map(|s| s.summaries[m].total).sum();
        // Per report: the newest slice's record (its rule is the one in force), and the
        // counts of every slice.
        let mut merged: HashMap<u64, (u64, &Item, Stats)> = HashMap::new();
        for s in &live {
            for &slot in s.index.values() {
                let it = &s.items[slot as usize];
                let e = merged
                    .entry(it.id)
                    .or_insert((s.epoch, it, Stats::default()));
                e.2.add(&it.stats);
                if s.epoch > e.0 {
                    (e.0, e.1) = (s.epoch, it);
                }
            }
        }
        let tracked = merged.len();
        let mut rows: Vec<(&Item, Stats)> = merged
            .into_values()
            .map(|(_, it, st)| (it, st))
            .filter(|(_, st)| st.measure(by) > 0)
            .collect();
        rows.sort_by(|a, b| {
            b.1.measure(by)
                .cmp(&a.1.measure(by))
                .then_with(|| a.0.url.cmp(&b.0.url))
                .then_with(|| a.0.body.cmp(&b.0.body))
        });
        rows.truncate(n);
        let rows = rows
            .into_iter()
            .map(|(it, stats)| Row {
                url: it.url.to_string(),
                body: it.body.as_deref().map(String::from),
                rule: it.rule.as_deref().map(String::from),
                stats,
            })
            .collect();
        Ranking {
            rows,
            max_undercount: total.div_ceil(CAPACITY as u64),
            tracked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_700_000_400_000; // the start of a slice

    fn url(u: &str) -> Report<'_> {
        Report {
            url: u,
            body: None,
            rule: Some("/"),
        }
    }

    fn fill(ms: u64) -> Event {
        Event::Fill { micros: ms * 1000 }
    }

    fn urls(r: &Ranking) -> Vec<&str> {
        r.rows.iter().map(|r| r.url.as_str()).collect()
    }

    #[test]
    fn counts_are_exact_while_everything_fits_and_each_measure_ranks() {
        assert_eq!(T0 % SLICE_MS, 0);
        let top = Top::default();
        // /slow: one 30 s fill, two hits. /fast: ten 10 ms fills, twenty misses, 40 hits.
        top.record(T0, &url("/slow"), Event::Miss);
        top.record(T0, &url("/slow"), fill(30_000));
        for _ in 0..2 {
            top.record(T0 + 1, &url("/slow"), Event::Hit { saved_ms: 30_000 });
        }
        for i in 0..20 {
            top.record(T0, &url("/fast"), Event::Miss);
            if i % 2 == 0 {
                top.record(T0, &url("/fast"), fill(10));
            }
            top.record(T0, &url("/fast"), Event::Hit { saved_ms: 10 });
            top.record(T0, &url("/fast"), Event::Hit { saved_ms: 10 });
        }
        let r = top.ranking(T0 + 2, By::FillTime, 10);
        assert_eq!(urls(&r), ["/slow", "/fast"]);
        assert_eq!(r.max_undercount, (30_000_000 + 100_000u64).div_ceil(256));
        assert_eq!(r.tracked, 2);
        let slow = r.rows[0].stats;
        assert_eq!(
            slow,
            Stats {
                hits: 2,
                misses: 1,
                fills: 1,
                fill_us: 30_000_000,
                fill_max_us: 30_000_000,
                saved_ms: 60_000,
            }
        );
        assert_eq!(r.rows[0].rule.as_deref(), Some("/"));
        let fast = r.rows[1].stats;
        assert_eq!(
            (fast.fills, fast.fill_us, fast.fill_max_us),
            (10, 100_000, 10_000)
        );
        assert_eq!(urls(&top.ranking(T0, By::Misses, 10)), ["/fast", "/slow"]);
        assert_eq!(urls(&top.ranking(T0, By::Hits, 10)), ["/fast", "/slow"]);
        assert_eq!(urls(&top.ranking(T0, By::Saved, 10)), ["/slow", "/fast"]);
        assert_eq!(
            urls(&top.ranking(T0, By::Saved, 1)),
            ["/slow"],
            "n rows at most"
        );
    }

    #[test]
    fn a_body_is_a_report_of_its_own_and_a_report_without_the_measure_is_not_listed() {
        let top = Top::default();
        let q = |body| Report {
            url: "/api/query",
            body,
            rule: Some("/api/query"),
        };
        top.record(T0, &q(Some("blake3:aa")), fill(5));
        top.record(T0, &q(Some("blake3:bb")), fill(7));
        top.record(T0, &q(None), Event::Hit { saved_ms: 1 });
        let r = top.ranking(T0, By::FillTime, 10);
        let bodies: Vec<_> = r.rows.iter().map(|r| r.body.as_deref()).collect();
        assert_eq!(bodies, [Some("blake3:bb"), Some("blake3:aa")]);
        assert_eq!(r.tracked, 3);
        assert!(top.ranking(T0, By::Misses, 10).rows.is_empty());
    }

    #[test]
    fn the_hour_slides_with_the_clock() {
        let top = Top::default();
        top.record(T0, &url("/old"), Event::Miss);
        top.record(T0 + 3 * SLICE_MS, &url("/mid"), Event::Miss);
        top.record(T0 + 3 * SLICE_MS, &url("/old"), Event::Miss);
        let at = |t| urls(&top.ranking(t, By::Misses, 10)).join(" ");
        assert_eq!(at(T0 + 3 * SLICE_MS), "/old /mid");
        assert_eq!(
            top.ranking(T0 + 4 * SLICE_MS, By::Misses, 1).rows[0]
                .stats
                .misses,
            2
        );
        // The slice of T0 leaves the window an hour after it began.
        assert_eq!(at(T0 + 6 * SLICE_MS - 1), "/old /mid");
        let r = top.ranking(T0 + 6 * SLICE_MS, By::Misses, 10);
        assert_eq!((r.rows.len(), r.rows[0].stats.misses), (2, 1));
        assert_eq!(at(T0 + 9 * SLICE_MS), "");
        // Its slot is emptied when its time comes round again, not added to.
        top.record(T0 + 6 * SLICE_MS, &url("/new"), Event::Miss);
        let r = top.ranking(T0 + 6 * SLICE_MS, By::Misses, 10);
        assert_eq!(r.tracked, 3);
        assert_eq!(r.rows.iter().map(|r| r.stats.misses).sum::<u64>(), 3);
    }

    #[test]
    fn a_newer_rule_wins() {
        let top = Top::default();
        let r = |rule| Report {
            url: "/a",
            body: None,
            rule,
        };
        top.record(T0, &r(Some("/")), Event::Miss);
        top.record(T0 + SLICE_MS, &r(Some("/a")), Event::Miss);
        let got = top.ranking(T0 + SLICE_MS, By::Misses, 1);
        assert_eq!(got.rows[0].rule.as_deref(), Some("/a"));
        top.record(T0 + SLICE_MS, &r(None), Event::Miss);
        let got = top.ranking(T0 + SLICE_MS, By::Misses, 1);
        assert_eq!(
            (got.rows[0].rule.as_deref(), got.rows[0].stats.misses),
            (None, 3)
        );
    }

    /// 100 000 distinct quick URLs, once each, around a slow report asked for three
    /// times and a popular one: memory stays within the summaries, and both still rank
    /// first.
    #[test]
    fn bounded_with_100k_distinct_urls() {
        let top = Top::default();
        for i in 0..100_000u64 {
            let u = format!("/r?id={i}");
            top.record(T0, &url(&u), Event::Miss);
            top.record(T0, &url(&u), fill(2));
            if i % 1000 == 0 {
                top.record(T0, &url("/slow"), Event::Miss);
                top.record(T0, &url("/slow"), fill(20_000));
                top.record(T0, &url("/popular"), Event::Hit { saved_ms: 2 });
            }
            if i % 20 == 0 {
                top.record(T0, &url("/popular"), Event::Hit { saved_ms: 2 });
            }
        }
        {
            let slices = top.slices.lock().unwrap();
            let s = slices.iter().find(|s| s.epoch == T0 / SLICE_MS).unwrap();
            assert!(s.index.len() <= 4 * CAPACITY, "{}", s.index.len());
            assert!(s.items.len() <= 4 * CAPACITY + 1, "{}", s.items.len());
            for sm in &s.summaries {
                assert!(sm.heap.len() <= CAPACITY);
            }
        }
        let r = top.ranking(T0, By::FillTime, 20);
        assert!(r.tracked <= 4 * CAPACITY);
        assert_eq!(r.rows[0].url, "/slow");
        let slow = r.rows[0].stats;
        // W = 100 fills of 20 s and 100 000 of 2 ms: 2 200 s, over 256 counters.
        assert_eq!(r.max_undercount, 2_200_000_000u64.div_ceil(256));
        assert!(2_000_000_000 - slow.fill_us <= r.max_undercount);
        assert_eq!(slow.fill_max_us, 20_000_000);
        let hits = top.ranking(T0, By::Hits, 1);
        assert_eq!(hits.rows[0].url, "/popular");
        assert!(5_100 - hits.rows[0].stats.hits <= hits.max_undercount);
    }

    proptest! {
        /// Space-Saving's guarantee, checked against exact counts: every report heavier
        /// than W / CAPACITY is listed, and no row counts more than happened, nor falls
        /// short by more than W / CAPACITY.
        #[test]
        fn space_saving_bounds_hold(
            events in proptest::collection::vec((0u32..2_000, 0u8..3, 1u64..5_000), 1..6_000),
        ) {
            let top = Top::default();
            let mut exact: HashMap<String, Stats> = HashMap::new();
            for (id, kind, w) in &events {
                let u = format!("/p?{}", id % 50 * (id % 7 + 1) + id / 40);
                let e = match kind {
                    0 => Event::Hit { saved_ms: *w },
                    1 => Event::Miss,
                    _ => Event::Fill { micros: *w },
                };
                top.record(T0, &url(&u), e);
                exact.entry(u).or_default().add(&Stats::of(e));
            }
            for by in By::ALL {
                let r = top.ranking(T0, by, usize::MAX);
                let total: u64 = exact.values().map(|s| s.measure(by)).sum();
                prop_assert_eq!(r.max_undercount, total.div_ceil(CAPACITY as u64));
                let listed: HashMap<&str, &Row> =
                    r.rows.iter().map(|row| (row.url.as_str(), row)).collect();
                for (u, st) in &exact {
                    let truth = st.measure(by);
                    match listed.get(u.as_str()) {
                        Some(row) => {
                            let got = row.stats.measure(by);
                            prop_assert!(got <= truth, "{} {:?}: {} > {}", u, by, got, truth);
                            prop_assert!(truth - got <= r.max_undercount);
                        }
                        None => prop_assert!(
                            truth <= r.max_undercount,
                            "{} {:?}: {} > W/k = {} but not listed", u, by, truth, r.max_undercount
                        ),
                    }
                }
            }
        }
    }
}
