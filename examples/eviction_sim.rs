//! Trace-driven comparison of eviction policies for the in-process stores (issue 15):
//! today's moka cache, moka's own knobs, textbook GreedyDual-Size-Frequency, and the policy
//! slate ships ([`slate::evict::CostCache`]), on one generated trace at two capacities.
//!
//! ```sh
//! cargo run --release --example eviction_sim                 # the table in bench/RESULTS.md
//! cargo run --release --example eviction_sim -- --seed 7 --requests 2000000
//! cargo run --release --example eviction_sim -- --repro      # issue 15's reproduction
//! ```
//!
//! The trace (deterministic for a seed): 10,000 reports live at a time, asked for with Zipf
//! popularity (s = 1.0); every 1,000 requests 10 ranks, anywhere in the popularity order,
//! go to brand-new reports (churn: new reports appear, old ones stop being asked for);
//! every 50,000 requests a burst of 2,000 reports asked for once and never again. Each report
//! has a fill time, log-uniform from 10 ms to 30 s, and a size, log-uniform from 2 KB to 2 MB,
//! drawn independently. Each request is a lookup and, on a miss, an insert, as the proxy
//! makes them. Capacities are fractions of the bytes of the 10,000 reports live at the start.
//!
//! Per policy: hit ratio, byte hit ratio, back-end seconds saved (the fill times of the hits)
//! and their share of what a cache without a bound would save, the hit ratio over the 5,000
//! requests after each burst, and the most bytes held (sampled every 1,000 requests) over
//! the limit: above 1.00 the limit is not a bound.

use moka::future::Cache;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slate::evict::CostCache;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::process::ExitCode;
use std::time::Duration;

const LIVE: usize = 10_000;
const CHURN_EVERY: usize = 1_000;
const CHURN: usize = 10;
const BURST_EVERY: usize = 50_000;
const BURST: usize = 2_000;
/// Requests after a burst whose hits say whether the burst flushed what was popular.
const AFTER_BURST: usize = 5_000;

#[derive(Clone, Copy)]
struct Report {
    size: u32,
    fill_ms: u32,
}

struct Trace {
    reports: Vec<Report>,
    requests: Vec<u32>,
    /// Whether request `i` is among the [`AFTER_BURST`] after a burst.
    after_burst: Vec<bool>,
}

fn log_uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    rng.random_range(lo.ln()..hi.ln()).exp()
}

fn new_report(rng: &mut StdRng, reports: &mut Vec<Report>) -> u32 {
    reports.push(Report {
        size: log_uniform(rng, 2e3, 2e6) as u32,
        fill_ms: log_uniform(rng, 10.0, 30e3) as u32,
    });
    (reports.len() - 1) as u32
}

fn trace(seed: u64, requests: usize) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reports = Vec::new();
    let mut ranks: Vec<u32> = (0..LIVE)
        .map(|_| new_report(&mut rng, &mut reports))
        .collect();
    let mut cdf = Vec::with_capacity(LIVE);
    let mut sum = 0.0;
    for r in 0..LIVE {
        sum += 1.0 / (r as f64 + 1.0);
        cdf.push(sum);
    }
    let mut t = Trace {
        reports: Vec::new(),
        requests: Vec::with_capacity(requests + requests / BURST_EVERY * BURST),
        after_burst: Vec::new(),
    };
    let mut since_burst = usize::MAX;
    for i in 0..requests {
        if i > 0 && i % CHURN_EVERY == 0 {
            for _ in 0..CHURN {
                let r = rng.random_range(0..LIVE);
                ranks[r] = new_report(&mut rng, &mut reports);
            }
        }
        if i % BURST_EVERY == BURST_EVERY / 2 {
            for _ in 0..BURST {
                t.requests.push(new_report(&mut rng, &mut reports));
                t.after_burst.push(false);
            }
            since_burst = 0;
        }
        let u = rng.random_range(0.0..sum);
        let r = cdf.partition_point(|&c| c < u).min(LIVE - 1);
        t.requests.push(ranks[r]);
        t.after_burst.push(since_burst < AFTER_BURST);
        since_burst = since_burst.saturating_add(1);
    }
    t.reports = reports;
    t
}

/// A cache as the replay drives it.
trait Policy {
    fn get(&mut self, id: u32) -> bool;
    fn put(&mut self, id: u32, r: Report);
    /// Bytes of the reports held now.
    fn bytes(&mut self) -> u64;
    /// Finishes deferred work (moka's admission and eviction run in batches).
    fn settle(&mut self) {}
}

/// A fixed hasher, so that moka's frequency sketch is the same from run to run.
type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// moka's future cache driven as `MemoryStore` drove it, weighed by `weigh`.
struct Moka {
    rt: tokio::runtime::Runtime,
    cache: Cache<u32, Report, Fixed>,
}

impl Moka {
    fn new(limit: u64, policy: moka::policy::EvictionPolicy, weigh: fn(&Report) -> u32) -> Self {
        let cache = Cache::builder()
            .max_capacity(limit)
            .eviction_policy(policy)
            .weigher(move |_: &u32, r: &Report| weigh(r))
            .build_with_hasher(Fixed::default());
        let rt = tokio::runtime::Builder::new_current_thread().build();
        Moka {
            rt: rt.expect("a tokio runtime"),
            cache,
        }
    }
}

impl Policy for Moka {
    fn get(&mut self, id: u32) -> bool {
        self.rt.block_on(self.cache.get(&id)).is_some()
    }
    fn put(&mut self, id: u32, r: Report) {
        self.rt.block_on(self.cache.insert(id, r))
    }
    fn bytes(&mut self) -> u64 {
        self.cache.iter().map(|(_, r)| r.size as u64).sum()
    }
    fn settle(&mut self) {
        self.rt.block_on(self.cache.run_pending_tasks())
    }
}

/// Textbook GreedyDual-Size-Frequency: every miss is admitted; priority `clock + hits ×
/// cost / size`, the lowest evicted, the clock rising to it.
struct Gdsf {
    limit: u64,
    bytes: u64,
    clock: f64,
    held: HashMap<u32, (u64, f64, f64, u64)>,
    /// `(priority bits, id)`, lowest first (priorities are positive: bits order as they do).
    queue: BTreeSet<(u64, u32)>,
}

impl Gdsf {
    fn new(limit: u64) -> Self {
        Gdsf {
            limit,
            bytes: 0,
            clock: 0.0,
            held: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Files `id` (size, cost, hits) under its priority now.
    fn file(&mut self, id: u32, size: u64, cost: f64, hits: f64) {
        let p = self.clock + hits * cost / size as f64;
        self.queue.insert((p.to_bits(), id));
        self.held.insert(id, (size, cost, hits, p.to_bits()));
    }
}

impl Policy for Gdsf {
    fn get(&mut self, id: u32) -> bool {
        let Some(&(size, cost, hits, filed)) = self.held.get(&id) else {
            return false;
        };
        self.queue.remove(&(filed, id));
        self.file(id, size, cost, hits + 1.0);
        true
    }
    fn put(&mut self, id: u32, r: Report) {
        let size = r.size as u64;
        if size > self.limit {
            return;
        }
        while self.bytes + size > self.limit {
            let Some((filed, victim)) = self.queue.pop_first() else {
                break;
            };
            if let Some((s, ..)) = self.held.remove(&victim) {
                self.bytes -= s;
            }
            self.clock = f64::from_bits(filed);
        }
        self.bytes += size;
        self.file(id, size, (r.fill_ms as f64).max(1.0), 1.0);
    }
    fn bytes(&mut self) -> u64 {
        self.bytes
    }
}

/// The policy slate ships.
struct Shipped(CostCache<()>);

impl Policy for Shipped {
    fn get(&mut self, id: u32) -> bool {
        self.0.get(&id.to_string()).is_some()
    }
    fn put(&mut self, id: u32, r: Report) {
        let (size, cost) = (r.size as u64, r.fill_ms as u64);
        self.0
            .insert(&id.to_string(), (), size, cost, Duration::MAX);
    }
    fn bytes(&mut self) -> u64 {
        self.0.bytes()
    }
}

struct Row {
    hits: u64,
    hit_bytes: u64,
    saved_ms: u64,
    burst_hits: u64,
    max_bytes: u64,
}

fn replay(t: &Trace, p: &mut dyn Policy) -> Row {
    let mut row = Row {
        hits: 0,
        hit_bytes: 0,
        saved_ms: 0,
        burst_hits: 0,
        max_bytes: 0,
    };
    for (i, &id) in t.requests.iter().enumerate() {
        let r = t.reports[id as usize];
        if p.get(id) {
            row.hits += 1;
            row.hit_bytes += r.size as u64;
            row.saved_ms += r.fill_ms as u64;
            row.burst_hits += t.after_burst[i] as u64;
        } else {
            p.put(id, r);
        }
        if i % 1000 == 0 {
            row.max_bytes = row.max_bytes.max(p.bytes());
        }
    }
    row
}

/// moka's weight for "expensive weighs less": size over the fill time in units of 10 ms.
fn size_over_cost(r: &Report) -> u32 {
    (r.size as f64 / (r.fill_ms as f64 / 10.0).max(1.0)).max(1.0) as u32
}

/// moka's weight that keeps the byte bound: 4 × size over the fill time's decade class
/// (1: under 100 ms … 4: 10 s and more), so no entry weighs less than its size.
fn size_by_class(r: &Report) -> u32 {
    let class = ((r.fill_ms as f64 / 10.0).log10().floor() as u32 + 1).clamp(1, 4);
    r.size * 4 / class
}

fn table(seed: u64, requests: usize) {
    let t = trace(seed, requests);
    let live: u64 = t.reports[..LIVE].iter().map(|r| r.size as u64).sum();
    let mut seen = HashSet::new();
    let mut unbounded_ms = 0u64;
    for &id in &t.requests {
        if !seen.insert(id) {
            unbounded_ms += t.reports[id as usize].fill_ms as u64;
        }
    }
    let n = t.requests.len() as f64;
    let all_bytes: u64 = t
        .requests
        .iter()
        .map(|&id| t.reports[id as usize].size as u64)
        .sum();
    let after: u64 = t.after_burst.iter().map(|&a| a as u64).sum();
    println!(
        "seed {seed}: {} requests, {} distinct reports, {:.0} MB live at the start; \
         an unbounded cache saves {:.0} s",
        t.requests.len(),
        seen.len(),
        live as f64 / 1e6,
        unbounded_ms as f64 / 1e3
    );
    println!();
    println!("| capacity | policy | hit ratio | byte hit ratio | back-end s saved | of unbounded | hit ratio after bursts | max bytes / limit |");
    println!("|---|---|---|---|---|---|---|---|");
    for share in [0.05, 0.20] {
        let limit = (live as f64 * share) as u64;
        let tiny = moka::policy::EvictionPolicy::tiny_lfu;
        let policies: Vec<(&str, Box<dyn Policy>)> = vec![
            (
                "moka TinyLFU, weight = size (today)",
                Box::new(Moka::new(limit, tiny(), |r| r.size)),
            ),
            (
                "moka LRU, weight = size",
                Box::new(Moka::new(limit, moka::policy::EvictionPolicy::lru(), |r| {
                    r.size
                })),
            ),
            (
                "moka TinyLFU, weight = size / (fill / 10 ms)",
                Box::new(Moka::new(limit, tiny(), size_over_cost)),
            ),
            (
                "moka TinyLFU, weight = 4 × size / fill class",
                Box::new(Moka::new(limit, tiny(), size_by_class)),
            ),
            ("GDSF, no admission", Box::new(Gdsf::new(limit))),
            (
                "**GDSF + cost-weighted TinyLFU guard (shipped)**",
                Box::new(Shipped(CostCache::new(limit))),
            ),
        ];
        for (name, mut p) in policies {
            let r = replay(&t, p.as_mut());
            println!(
                "| {:.0}% ({:.0} MB) | {name} | {:.1}% | {:.1}% | {:.0} | {:.1}% | {:.1}% | {:.2} |",
                share * 100.0,
                limit as f64 / 1e6,
                r.hits as f64 / n * 100.0,
                r.hit_bytes as f64 / all_bytes as f64 * 100.0,
                r.saved_ms as f64 / 1e3,
                r.saved_ms as f64 / unbounded_ms as f64 * 100.0,
                r.burst_hits as f64 / after as f64 * 100.0,
                r.max_bytes as f64 / limit as f64,
            );
        }
    }
}

/// Issue 15: into a full 8 MiB store, 2,000 new 20 KB reports; how many of the last 80 stay.
fn repro() {
    let size = 20_700u32;
    let moka = Moka::new(8 << 20, moka::policy::EvictionPolicy::tiny_lfu(), |r| {
        r.size
    });
    let shipped = Shipped(CostCache::new(8 << 20));
    let mut policies: Vec<(&str, Box<dyn Policy>)> = vec![
        ("moka TinyLFU", Box::new(moka)),
        ("shipped", Box::new(shipped)),
    ];
    for (name, p) in policies.iter_mut() {
        let r = Report { size, fill_ms: 5 };
        for id in 0..3000 {
            if !p.get(id) {
                p.put(id, r);
            }
        }
        p.settle();
        // Lookups insert nothing: counting changes who is held no more than it would.
        let kept = (2920..3000).filter(|&id| p.get(id)).count();
        println!("{name}: {kept} of the last 80 new reports kept");
    }
}

fn main() -> ExitCode {
    let mut seed = 15;
    let mut requests = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(what.to_string())
        };
        let parsed = match a.as_str() {
            "--repro" => {
                repro();
                return ExitCode::SUCCESS;
            }
            "--seed" => num("--seed takes a number").map(|v| seed = v),
            "--requests" => num("--requests takes a number").map(|v| requests = v as usize),
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = parsed {
            eprintln!("eviction_sim: {e}");
            return ExitCode::from(2);
        }
    }
    table(seed, requests);
    ExitCode::SUCCESS
}
