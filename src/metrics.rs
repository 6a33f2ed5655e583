//! Counters and histograms of one slate instance, rendered in the Prometheus text format.
//!
//! Plain atomics owned by the instance (not a process-global recorder), so that several
//! instances in one test process each count their own traffic, and the status page reads
//! the very numbers `/metrics` exports.

use crate::coding::Coding;
use crate::phase::Phase;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Stripes per counter: every request bumps several counters, and with one atomic each the
/// cores would pass the same cache lines back and forth on every hit.
const STRIPES: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// The stripe this thread writes to.
fn stripe() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    MINE.with(|m| *m)
}

/// A monotonic counter, striped across cache lines; reads sum the stripes.
#[derive(Default)]
pub struct Counter([Stripe; STRIPES]);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// A fixed-bucket histogram of seconds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<Counter>,
    count: Counter,
    sum_us: Counter,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| Counter::default()).collect(),
            count: Counter::default(),
            sum_us: Counter::default(),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_us.add(d.as_micros() as u64);
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }

    /// The mean of what was observed, in seconds (0 with nothing observed).
    pub fn mean_secs(&self) -> f64 {
        let n = self.count.get();
        if n == 0 {
            0.0
        } else {
            self.sum_us.get() as f64 / 1e6 / n as f64
        }
    }

    fn render(&self, s: &mut String, name: &str, help: &str) {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            acc += c.get();
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        let n = self.count.get();
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(s, "{name}_sum {}", self.sum_us.get() as f64 / 1e6);
        let _ = writeln!(s, "{name}_count {n}");
    }
}

pub(crate) const UPSTREAM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];
const STORE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Per-route (rule) counters: requests by outcome, and upstream time saved.
#[derive(Default)]
pub struct RouteStats {
    pub requests: [Counter; Phase::ALL.len()],
    pub saved_ms: Counter,
}

/// What a purge covers, as counted and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeForm {
    Url,
    Prefix,
    Tags,
    /// Refused before its form could be read (bad JSON, no authorization).
    Unknown,
}

impl PurgeForm {
    pub const ALL: [PurgeForm; 4] = [
        PurgeForm::Url,
        PurgeForm::Prefix,
        PurgeForm::Tags,
        PurgeForm::Unknown,
    ];

    /// Metric label, and the `scope` of a purge's answer.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeForm::Url => "url",
            PurgeForm::Prefix => "prefix",
            PurgeForm::Tags => "tags",
            PurgeForm::Unknown => "unknown",
        }
    }
}

/// How a purge ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeOutcome {
    Ok,
    /// Not authorized, or malformed.
    Refused,
    /// The store did not take it.
    Error,
}

impl PurgeOutcome {
    pub const ALL: [PurgeOutcome; 3] =
        [PurgeOutcome::Ok, PurgeOutcome::Refused, PurgeOutcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            PurgeOutcome::Ok => "ok",
            PurgeOutcome::Refused => "refused",
            PurgeOutcome::Error => "error",
        }
    }
}

/// One line of the recent-purges list on `/status`.
#[derive(Clone, Debug)]
pub struct PurgeNote {
    pub at_ms: u64,
    pub scope: PurgeForm,
    pub targets: String,
    pub soft: bool,
    pub source: String,
}

pub struct Metrics {
    requests: [Counter; Phase::ALL.len()],
    /// Read on every request, written once per new route: a lock-free snapshot.
    routes: arc_swap::ArcSwap<HashMap<String, Arc<RouteStats>>>,
    pub upstream_latency: Histogram,
    pub store_latency: Histogram,
    pub upstream_requests: Counter,
    pub upstream_errors: Counter,
    pub store_errors: Counter,
    pub bytes_from_cache: Counter,
    pub bytes_from_upstream: Counter,
    /// Upstream time that hits spared the back end (the fill time of what they served).
    pub saved_ms: Counter,
    /// Fills this instance waited for because another instance held the fill lock.
    pub remote_waits: Counter,
    /// Fill locks taken over from an instance that died or gave up.
    pub lock_takeovers: Counter,
    /// Body bytes of stored fills, as stored (compressed where that pays).
    pub stored_bytes: Counter,
    /// The same bodies, decoded: what storing them uncompressed would take.
    pub stored_identity_bytes: Counter,
    /// Time fills spent waiting in the fill queue.
    pub queue_waited: Histogram,
    /// Queued fills dropped before they started: every client had gone.
    pub queue_dropped: Counter,
    /// Fills that waited `upstream.queue_timeout` without a turn.
    pub queue_timeouts: Counter,
    /// Answers 503 because the fill queue was full (no stale copy to give).
    pub queue_refused: Counter,
    /// Refreshes started ahead of an entry's expiry (`refresh_ahead`).
    pub refreshed_ahead: Counter,
    /// Misses on entries that had been hit during their life: what refresh-ahead exists to
    /// drive to 0.
    pub misses_after_hits: Counter,
    /// Answers from the cache by the coding they were sent in.
    answers_by_coding: [Counter; Coding::ALL.len()],
    purges: [[Counter; PurgeOutcome::ALL.len()]; PurgeForm::ALL.len()],
    recent_purges: Mutex<VecDeque<PurgeNote>>,
    /// (unix seconds, total requests, hits) every few seconds, for the status chart.
    samples: Mutex<VecDeque<(u64, u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            routes: Default::default(),
            upstream_latency: Histogram::new(UPSTREAM_BUCKETS),
            store_latency: Histogram::new(STORE_BUCKETS),
            upstream_requests: Default::default(),
            upstream_errors: Default::default(),
            store_errors: Default::default(),
            bytes_from_cache: Default::default(),
            bytes_from_upstream: Default::default(),
            saved_ms: Default::default(),
            remote_waits: Default::default(),
            lock_takeovers: Default::default(),
            queue_waited: Histogram::new(UPSTREAM_BUCKETS),
            queue_dropped: Default::default(),
            queue_timeouts: Default::default(),
            queue_refused: Default::default(),
            refreshed_ahead: Default::default(),
            misses_after_hits: Default::default(),
            stored_bytes: Default::default(),
            stored_identity_bytes: Default::default(),
            answers_by_coding: Default::default(),
            purges: Default::default(),
            recent_purges: Default::default(),
            samples: Default::default(),
        }
    }
}

/// Hits of any kind: fresh, stale, or collapsed onto another request's fill.
pub fn is_hit(p: Phase) -> bool {
    matches!(p, Phase::Hit | Phase::Stale | Phase::Collapsed)
}

impl Metrics {
    /// Counts one request, under its route (`None`: no rule matched) and the upstream
    /// time it saved.
    pub fn request(&self, phase: Phase, route: Option<&str>, saved_ms: u64) {
        self.requests[phase.index()].add(1);
        self.saved_ms.add(saved_ms);
        let route = route.unwrap_or("none");
        // Known route (every request after the first): counted through the snapshot, with
        // no reference count touched.
        if let Some(stats) = self.routes.load().get(route) {
            stats.requests[phase.index()].add(1);
            stats.saved_ms.add(saved_ms);
            return;
        }
        self.routes.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(route.to_string()).or_default();
            m
        });
        let Some(stats) = self.routes.load().get(route).cloned() else {
            return;
        };
        stats.requests[phase.index()].add(1);
        stats.saved_ms.add(saved_ms);
    }

    pub fn requests(&self, phase: Phase) -> u64 {
        self.requests[phase.index()].get()
    }

    pub fn total(&self) -> u64 {
        Phase::ALL.iter().map(|p| self.requests(*p)).sum()
    }

    pub fn hits(&self) -> u64 {
        Phase::ALL
            .iter()
            .filter(|p| is_hit(**p))
            .map(|p| self.requests(*p))
            .sum()
    }

    /// Hits over cacheable lookups (hits and misses), in [0, 1].
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.hits();
        let lookups = hits + self.requests(Phase::Miss);
        if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        }
    }

    /// Routes with their hits and saved seconds, most hits first.
    pub fn routes(&self) -> Vec<(String, u64, f64)> {
        let m = self.routes.load();
        let mut v: Vec<(String, u64, f64)> = m
            .iter()
            .map(|(k, s)| {
                let hits = Phase::ALL
                    .iter()
                    .filter(|p| is_hit(**p))
                    .map(|p| s.requests[p.index()].get())
                    .sum();
                (k.clone(), hits, s.saved_ms.get() as f64 / 1000.0)
            })
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Counts an answer from the cache sent in `coding`.
    pub fn answered_in(&self, coding: Coding) {
        self.answers_by_coding[coding as usize].inc();
    }

    pub fn purge(&self, form: PurgeForm, outcome: PurgeOutcome) {
        self.purges[form as usize][outcome as usize].add(1);
    }

    pub fn note_purge(&self, n: PurgeNote) {
        let mut q = self.recent_purges.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == 20 {
            q.pop_back();
        }
        q.push_front(n);
    }

    pub fn recent_purges(&self) -> Vec<PurgeNote> {
        let q = self.recent_purges.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }

    /// Records a (time, requests, hits) sample; keeps the last 120.
    pub fn sample(&self, unix_s: u64) {
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == 120 {
            q.pop_front();
        }
        q.push_back((unix_s, self.total(), self.hits()));
    }

    pub fn samples(&self) -> Vec<(u64, u64, u64)> {
        let q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().copied().collect()
    }

    /// The Prometheus text exposition. `extra` is appended (store and L1 gauges).
    pub fn render(&self, extra: &str) -> String {
        let mut s = String::with_capacity(8192);
        s.push_str("# HELP slate_requests_total Requests by cache outcome and route (the matching rule's path, or \"none\").\n");
        s.push_str("# TYPE slate_requests_total counter\n");
        {
            let m = self.routes.load();
            let mut routes: Vec<_> = m.iter().collect();
            routes.sort_by(|a, b| a.0.cmp(b.0));
            for (route, st) in routes {
                for p in Phase::ALL {
                    let n = st.requests[p.index()].get();
                    let route = route.replace('\\', "\\\\").replace('"', "\\\"");
                    let _ = writeln!(
                        s,
                        "slate_requests_total{{outcome=\"{}\",route=\"{route}\"}} {n}",
                        p.label()
                    );
                }
            }
        }
        let counters = [
            (
                "slate_upstream_requests_total",
                "Requests sent upstream.",
                self.upstream_requests.get(),
            ),
            (
                "slate_upstream_errors_total",
                "Upstream requests that failed (unreachable, timeout, broken body).",
                self.upstream_errors.get(),
            ),
            (
                "slate_store_errors_total",
                "Store commands that failed or timed out.",
                self.store_errors.get(),
            ),
            (
                "slate_served_from_cache_bytes_total",
                "Body bytes served from the store.",
                self.bytes_from_cache.get(),
            ),
            (
                "slate_fetched_from_upstream_bytes_total",
                "Body bytes fetched from upstream by fills.",
                self.bytes_from_upstream.get(),
            ),
            (
                "slate_coalesced_waits_total",
                "Requests that waited for another request's fill on this instance.",
                self.requests(Phase::Collapsed),
            ),
            (
                "slate_remote_fill_waits_total",
                "Fills waited for on another instance.",
                self.remote_waits.get(),
            ),
            (
                "slate_fill_lock_takeovers_total",
                "Fill locks taken over from a dead owner.",
                self.lock_takeovers.get(),
            ),
            (
                "slate_fill_queue_dropped_total",
                "Queued fills dropped before they started because every client had gone.",
                self.queue_dropped.get(),
            ),
            (
                "slate_fill_queue_timeouts_total",
                "Fills that waited upstream.queue_timeout without a turn.",
                self.queue_timeouts.get(),
            ),
            (
                "slate_fill_queue_refused_total",
                "Answers 503 because the fill queue was full and no stale copy was usable.",
                self.queue_refused.get(),
            ),
            (
                "slate_refreshed_ahead_total",
                "Refreshes started ahead of an entry's expiry (rules with refresh_ahead).",
                self.refreshed_ahead.get(),
            ),
            (
                "slate_misses_after_hits_total",
                "Misses on entries of refresh_ahead rules that had been hit during their life.",
                self.misses_after_hits.get(),
            ),
            (
                "slate_stored_body_bytes_total",
                "Body bytes of stored fills, as stored (compressed where that pays).",
                self.stored_bytes.get(),
            ),
            (
                "slate_stored_identity_bytes_total",
                "The same bodies decoded: what they would take stored uncompressed.",
                self.stored_identity_bytes.get(),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let saved = self.saved_ms.get() as f64 / 1000.0;
        let _ = writeln!(
            s,
            "# HELP slate_upstream_seconds_saved_total Upstream time spared by hits: the fill time of every response served from cache.\n# TYPE slate_upstream_seconds_saved_total counter\nslate_upstream_seconds_saved_total {saved}"
        );
        s.push_str("# HELP slate_cache_answers_by_coding_total Answers from the cache by the content coding they were sent in.\n# TYPE slate_cache_answers_by_coding_total counter\n");
        for c in Coding::ALL {
            let n = self.answers_by_coding[c as usize].get();
            let _ = writeln!(
                s,
                "slate_cache_answers_by_coding_total{{coding=\"{}\"}} {n}",
                c.as_str()
            );
        }
        s.push_str("# HELP slate_purges_total Purges by form and outcome.\n# TYPE slate_purges_total counter\n");
        for f in PurgeForm::ALL {
            for o in PurgeOutcome::ALL {
                let _ = writeln!(
                    s,
                    "slate_purges_total{{form=\"{}\",outcome=\"{}\"}} {}",
                    f.as_str(),
                    o.as_str(),
                    self.purges[f as usize][o as usize].get()
                );
            }
        }
        self.upstream_latency.render(
            &mut s,
            "slate_upstream_duration_seconds",
            "Time from sending a request upstream to its whole body.",
        );
        self.store_latency.render(
            &mut s,
            "slate_store_duration_seconds",
            "Time of one store lookup.",
        );
        self.queue_waited.render(
            &mut s,
            "slate_fill_queue_wait_seconds",
            "Time fills waited in the fill queue for their turn against the upstream.",
        );
        s.push_str(extra);
        s
    }
}
