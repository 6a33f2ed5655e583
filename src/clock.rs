//! Wall-clock time for freshness arithmetic, in milliseconds since the Unix epoch.
//!
//! Stored entries are shared between instances through Redis, so their timestamps must be wall
//! clock, not `Instant`. Tests need to move time forward without sleeping, and without pausing
//! tokio (a paused runtime would also fire the Redis client's I/O timeouts), so every instance
//! reads time through a [`Clock`] that carries an adjustable offset.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A shareable clock: the system clock plus an offset that tests can advance.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Milliseconds since the Unix epoch, as this clock sees them.
    pub fn now_ms(&self) -> u64 {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (sys + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}
