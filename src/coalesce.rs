//! Single-flight: one upstream request per key, however many clients ask at once.
//!
//! A table of permits, after pingora's cache lock. The first request for a key that misses
//! gets the [`Permit`] (it is the *leader*) and starts the fill in a task of its own; every
//! later request for the key while the fill runs is a *follower* and waits for the fill's
//! [`Outcome`]. The permit is released by [`Permit::finish`] *after* the entry is stored, so
//! a request arriving after the release finds the entry in the store. A permit dropped
//! without an outcome (the fill task panicked or was cancelled) is *dangling*: followers see
//! [`Outcome::Abandoned`] and run their lookup again, and one of them becomes the new leader.

use crate::entry::Entry;
use crate::upstream::UpstreamError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What a fill produced, as followers see it.
#[derive(Debug)]
pub enum Outcome {
    /// A whole response every waiter may be given: stored, or an error status that no one
    /// stores but everyone waiting for it may see.
    Shared {
        entry: Arc<Entry>,
        stored: bool,
        /// Fetched by another instance (this one only waited for it).
        collapsed: bool,
        /// The origin answered 304 to a revalidation: the stored body was renewed.
        revalidated: bool,
    },
    /// The response was not shareable (private, too large to buffer, ...): each follower
    /// must go upstream on its own.
    Pass,
    /// The upstream failed; nothing was stored.
    Failed(UpstreamError),
    /// The leader went away without an outcome; look up again.
    Abandoned,
    /// The fill waited `upstream.queue_timeout` for its turn and did not start.
    Busy,
}

type Slot = watch::Receiver<Option<Arc<Outcome>>>;

/// The table of fills in flight on this instance.
#[derive(Default, Clone)]
pub struct Coalescer {
    flights: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Either the right to fill a key, or a place in the queue of those waiting for it.
pub enum Role {
    Leader(Permit),
    Follower(Follower),
}

impl Coalescer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the fill for `key`, starting one if none runs.
    pub fn join(&self, key: &str) -> Role {
        let mut map = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(Follower(rx.clone()));
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_string(), rx);
        Role::Leader(Permit {
            key: key.to_string(),
            tx: Arc::new(tx),
            table: self.clone(),
            done: false,
        })
    }

    /// Number of fills in flight (for `/status` and tests).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn release(&self, key: &str, tx: &watch::Sender<Option<Arc<Outcome>>>) {
        let mut map = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            map.remove(key);
        }
    }
}

/// The right to fill one key. Release it with [`Permit::finish`].
pub struct Permit {
    key: String,
    tx: Arc<watch::Sender<Option<Arc<Outcome>>>>,
    table: Coalescer,
    done: bool,
}

impl Permit {
    /// Publishes the outcome to every follower and releases the key.
    pub fn finish(mut self, outcome: Arc<Outcome>) {
        self.done = true;
        self.table.release(&self.key, &self.tx);
        self.tx.send_replace(Some(outcome));
    }

    /// How many followers wait on this fill now.
    #[cfg(test)]
    fn followers(&self) -> usize {
        self.interest().followers()
    }

    /// A handle that tells, while the fill waits for its turn, who still waits for it.
    pub fn interest(&self) -> Interest {
        Interest(self.tx.clone())
    }
}

/// Who waits for one fill (see [`Permit::interest`]).
#[derive(Clone)]
pub struct Interest(Arc<watch::Sender<Option<Arc<Outcome>>>>);

impl Interest {
    /// Followers waiting now (the table's own receiver is not one).
    pub fn followers(&self) -> usize {
        self.0.receiver_count().saturating_sub(1)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.table.release(&self.key, &self.tx);
            self.tx.send_replace(Some(Arc::new(Outcome::Abandoned)));
        }
    }
}

/// A place in the queue for one key's fill.
pub struct Follower(Slot);

impl Follower {
    /// Waits for the fill's outcome. A leader that vanished counts as `Abandoned`.
    pub async fn wait(mut self) -> Arc<Outcome> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| Arc::new(Outcome::Abandoned)),
            Err(_) => Arc::new(Outcome::Abandoned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_followers() {
        let c = Coalescer::new();
        let Role::Leader(permit) = c.join("k") else {
            panic!("first is leader")
        };
        let followers: Vec<_> = (0..5)
            .map(|_| match c.join("k") {
                Role::Follower(f) => tokio::spawn(f.wait()),
                Role::Leader(_) => panic!("second leader"),
            })
            .collect();
        assert_eq!(permit.followers(), 5);
        permit.finish(Arc::new(Outcome::Pass));
        for f in followers {
            assert!(matches!(*f.await.unwrap(), Outcome::Pass));
        }
        assert_eq!(c.in_flight(), 0);
        assert!(matches!(c.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn dropped_permit_is_abandoned_and_released() {
        let c = Coalescer::new();
        let Role::Leader(permit) = c.join("k") else {
            panic!()
        };
        let Role::Follower(f) = c.join("k") else {
            panic!()
        };
        drop(permit);
        assert!(matches!(*f.wait().await, Outcome::Abandoned));
        assert!(matches!(c.join("k"), Role::Leader(_)));
    }
}
