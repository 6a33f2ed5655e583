//! Fill across instances: single-flight over every instance sharing the store.
//!
//! One instance takes the key's fill lock (a lease in the store) and fetches, renewing the
//! lease while it does and releasing it when done; it then publishes how the fill ended.
//! The others wait for that event (or a bounded poll) and answer from the store. A lock
//! whose owner died lapses after one lease, and one waiter takes it over. A store that does
//! not answer is no reason to fail: we fetch without the lock.

use super::fill::{Fill, FillResult};
use super::lookup::{look, Found};
use crate::coalesce::Outcome;
use crate::entry::Entry;
use crate::key;
use crate::otel;
use crate::store::{Coordination, Event, FillReport, StoreResult};
use crate::upstream::UpstreamError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{field, Instrument};

/// How often a waiter on another instance's fill looks at the store, in case it missed
/// the owner's event.
const REMOTE_POLL: Duration = Duration::from_millis(250);

/// The fill lock of one key, as this instance tries for it.
struct FillLock<'a> {
    peers: &'a dyn Coordination,
    name: String,
    token: String,
    lease: Duration,
}

impl<'a> FillLock<'a> {
    fn new(peers: &'a dyn Coordination, entry_key: &str, lease: Duration) -> FillLock<'a> {
        FillLock {
            peers,
            name: key::lock_key(entry_key),
            token: format!("{:016x}", rand::random::<u64>()),
            lease,
        }
    }

    async fn try_take(&self) -> StoreResult<bool> {
        self.peers
            .acquire(&self.name, &self.token, self.lease)
            .await
    }

    /// Whether anyone holds it now (a store that does not answer: nobody).
    async fn held(&self) -> bool {
        matches!(self.peers.held(&self.name).await, Ok(true))
    }

    /// Runs `work` holding the lock, renewing its lease every third of it, then releases it.
    async fn hold_while<T>(&self, work: impl Future<Output = T>) -> T {
        let renew = async {
            loop {
                tokio::time::sleep(self.lease / 3).await;
                let renewed = self.peers.renew(&self.name, &self.token, self.lease).await;
                if !matches!(renewed, Ok(true)) {
                    tracing::warn!(lock = %self.name, "lost the fill lock while fetching");
                }
            }
        };
        let out = tokio::select! {
            out = work => out,
            _ = renew => unreachable!("the renew loop never ends"),
        };
        self.release().await;
        out
    }

    async fn release(&self) {
        let _ = self.peers.release(&self.name, &self.token).await;
    }
}

/// An entry another instance (or an earlier fill) stored while we waited.
fn shared_by_another(entry: Arc<Entry>) -> Arc<Outcome> {
    Arc::new(Outcome::Shared {
        entry,
        stored: false,
        collapsed: true,
        revalidated: false,
    })
}

/// How waiting for another instance's fill ended.
enum Waited {
    Answer(FillResult),
    /// The lock is gone without an entry: its owner died (or stored nothing).
    LockGone,
}

/// How trying for the fill lock ended.
enum Tried {
    /// We hold it (`waited`: after another instance's fill ended without an answer).
    Taken { waited: bool },
    /// Another instance's fill answered.
    Answered(FillResult),
    /// The store does not answer: fetch without the lock.
    Unavailable,
}

impl Tried {
    fn name(&self) -> &'static str {
        match self {
            Tried::Taken { waited: false } => "taken",
            Tried::Taken { waited: true } => "taken-over",
            Tried::Answered(_) => "answered",
            Tried::Unavailable => "unavailable",
        }
    }
}

impl Fill {
    pub(super) async fn across_instances(&self, peers: &dyn Coordination) -> FillResult {
        let lock = FillLock::new(peers, &self.lookup.key.key, self.cfg.store.fill_lease);
        let span = otel::span!(
            "fill lock wait",
            slate.lock = "shared",
            slate.outcome = field::Empty
        );
        let tried = self.try_lock(peers, &lock).instrument(span.clone()).await;
        if !span.is_disabled() {
            span.record("slate.outcome", tried.name());
        }
        drop(span);
        match tried {
            Tried::Taken { waited } => self.fill_holding(&lock, waited).await,
            Tried::Answered(r) => r,
            Tried::Unavailable => self.fetch().await,
        }
    }

    /// Takes the lock, or waits for the instance holding it to answer.
    async fn try_lock(&self, peers: &dyn Coordination, lock: &FillLock<'_>) -> Tried {
        // The owner may queue for its turn before it fetches.
        let up = &self.cfg.upstream;
        let deadline = tokio::time::Instant::now() + up.queue_timeout + up.timeout + lock.lease * 2;
        // Subscribe before trying the lock, so the owner's event cannot slip between.
        let mut events = Some(peers.subscribe());
        let mut waited = false;
        loop {
            match lock.try_take().await {
                Ok(true) => return Tried::Taken { waited },
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "fill lock unavailable; fetching without it");
                    return Tried::Unavailable;
                }
            }
            waited = true;
            self.shared.metrics.remote_waits.add(1);
            match self.wait_for_owner(lock, &mut events, deadline).await {
                Waited::Answer(r) => return Tried::Answered(r),
                Waited::LockGone => continue,
            }
        }
    }

    /// The fill, with the lock held: fetch, release, say how it ended.
    async fn fill_holding(&self, lock: &FillLock<'_>, took_over: bool) -> FillResult {
        if took_over {
            self.shared.metrics.lock_takeovers.add(1);
        }
        // The previous owner may have stored it just before we got the lock.
        if let Found::Fresh(e) = look(&self.shared, &self.lookup).await {
            if self.newer(&e) {
                lock.release().await;
                return (shared_by_another(e), None);
            }
        }
        let result = lock.hold_while(self.fetch()).await;
        let report = match &*result.0 {
            Outcome::Shared { stored: true, .. } => FillReport::Stored,
            Outcome::Failed(e) => FillReport::Failed(e.to_string()),
            Outcome::Busy => FillReport::Busy,
            // Dropped before it started (its clients went away): the lock is released,
            // and a waiter elsewhere takes it over, queueing for itself.
            Outcome::Abandoned => return result,
            _ => FillReport::Pass,
        };
        let event = Event::Filled {
            key: self.lookup.key.key.clone(),
            result: report,
        };
        let _ = lock.peers.publish(event).await;
        result
    }

    /// Someone else fills: wait for its event, or poll, until the lock is gone.
    async fn wait_for_owner(
        &self,
        lock: &FillLock<'_>,
        events: &mut Option<broadcast::Receiver<Event>>,
        deadline: tokio::time::Instant,
    ) -> Waited {
        let key = &self.lookup.key.key;
        loop {
            let said = tokio::select! {
                e = next_filled(events, key) => e,
                _ = tokio::time::sleep(REMOTE_POLL) => None,
            };
            if let Found::Fresh(e) = look(&self.shared, &self.lookup).await {
                if self.newer(&e) {
                    return Waited::Answer((shared_by_another(e), None));
                }
            }
            match said {
                Some(FillReport::Pass) => return Waited::Answer((Arc::new(Outcome::Pass), None)),
                Some(FillReport::Busy) => return Waited::Answer((Arc::new(Outcome::Busy), None)),
                Some(FillReport::Failed(why)) => {
                    let e = UpstreamError::Broken(format!("the instance that fetched it: {why}"));
                    return Waited::Answer((Arc::new(Outcome::Failed(e)), None));
                }
                Some(FillReport::Stored) | None => {}
            }
            if tokio::time::Instant::now() > deadline {
                let e = UpstreamError::Timeout(self.cfg.upstream.timeout);
                return Waited::Answer((Arc::new(Outcome::Failed(e)), None));
            }
            if !lock.held().await {
                return Waited::LockGone;
            }
        }
    }
}

/// The next `Filled` event for `key`; `None` when events are unavailable (then the caller's
/// poll is all there is).
async fn next_filled(
    events: &mut Option<broadcast::Receiver<Event>>,
    key: &str,
) -> Option<FillReport> {
    let Some(rx) = events else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(Event::Filled { key: k, result }) if k == key => return Some(result),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return None,
            Err(broadcast::error::RecvError::Closed) => {
                *events = None;
                return None;
            }
        }
    }
}
