//! Counters of one slate instance, rendered in the Prometheus text format.
//!
//! Plain atomics owned by the instance (not a process-global recorder), so that several
//! instances in one test process each count their own traffic.

use crate::phase::Phase;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; Phase::ALL.len()],
    pub upstream_requests: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub store_errors: AtomicU64,
    pub bytes_from_cache: AtomicU64,
    pub bytes_from_upstream: AtomicU64,
    pub purges: AtomicU64,
    pub purges_refused: AtomicU64,
    /// Fills this instance waited for because another instance held the fill lock.
    pub remote_waits: AtomicU64,
    /// Fill locks taken over from an instance that died or gave up.
    pub lock_takeovers: AtomicU64,
}

impl Metrics {
    pub fn request(&self, phase: Phase) {
        self.requests[phase.index()].fetch_add(1, Relaxed);
    }

    pub fn requests(&self, phase: Phase) -> u64 {
        self.requests[phase.index()].load(Relaxed)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP slate_requests_total Requests by cache outcome.\n");
        s.push_str("# TYPE slate_requests_total counter\n");
        for p in Phase::ALL {
            let _ = writeln!(
                s,
                "slate_requests_total{{outcome=\"{}\"}} {}",
                p.label(),
                self.requests(p)
            );
        }
        let counters = [
            (
                "slate_upstream_requests_total",
                "Requests sent upstream.",
                &self.upstream_requests,
            ),
            (
                "slate_upstream_errors_total",
                "Upstream requests that failed.",
                &self.upstream_errors,
            ),
            (
                "slate_store_errors_total",
                "Store commands that failed or timed out.",
                &self.store_errors,
            ),
            (
                "slate_served_from_cache_bytes_total",
                "Body bytes served from the store.",
                &self.bytes_from_cache,
            ),
            (
                "slate_served_from_upstream_bytes_total",
                "Body bytes fetched from upstream.",
                &self.bytes_from_upstream,
            ),
            ("slate_purges_total", "Purges accepted.", &self.purges),
            (
                "slate_purges_refused_total",
                "Purges refused (403/400).",
                &self.purges_refused,
            ),
            (
                "slate_remote_fill_waits_total",
                "Fills waited for on another instance.",
                &self.remote_waits,
            ),
            (
                "slate_fill_lock_takeovers_total",
                "Fill locks taken over from a dead owner.",
                &self.lock_takeovers,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        s
    }
}
