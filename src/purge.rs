//! Invalidation by purge records, applied at lookup time.
//!
//! A purge never walks the keyspace. It appends one numbered record to the store's purge log
//! (for Redis: one `INCR` and one `ZADD`, in one script) and every instance keeps the whole
//! log in memory as a [`PurgeTable`]. Every entry carries the log's sequence number as it
//! was when its fill *started*; on lookup, a record that matches the entry (same URL, a
//! prefix of its path, or one of its tags) and is numbered above the entry's is in force:
//! a hard purge makes it a miss, a soft purge makes it stale (served at once while one
//! refresh runs). Consequences:
//! - exact, prefix and tag purges all cost one write, whatever the number of entries;
//! - a fill that started before a purge and finishes after it stores an entry that the
//!   purge already covers, so it is never served as fresh;
//! - records are kept as long as the longest an entry may live
//!   ([`crate::policy::MAX_ENTRY_LIFETIME`]), then dropped: nothing they covered survives.
//!
//! Every purge is published on the store's event channel, so a purge answered by one
//! instance is in force on the others within a round trip (and at once on the instance that
//! answered, which applies its record before answering). Under that, shared stores are
//! polled for a new sequence number: every [`POLL_EVERY`] while the event subscription is
//! down, every [`POLL_SUBSCRIBED`] while it is up.

use crate::entry::Entry;
use crate::store::{Coordination, Event, PurgeLog, StoreResult};
pub use crate::store::{PurgeRecord, PurgeRequest, Target};
use arc_swap::ArcSwap;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How often an instance on a shared store checks for purges issued elsewhere while its
/// event subscription is down.
pub const POLL_EVERY: Duration = Duration::from_millis(40);

/// The same, while the subscription is up and delivers every purge as it happens.
pub const POLL_SUBSCRIBED: Duration = Duration::from_secs(1);

/// What the purge log says of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Soft-purged: serve stale while one refresh runs.
    Stale,
    /// Purged: a miss.
    Gone,
}

/// The latest hard and soft purge numbers of one target.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    hard: u64,
    soft: u64,
    expires_ms: u64,
}

impl Marks {
    fn verdict(&self, seq: u64) -> Verdict {
        if self.hard > seq {
            Verdict::Gone
        } else if self.soft > seq {
            Verdict::Stale
        } else {
            Verdict::Valid
        }
    }
}

/// The purge log of one store, as one instance knows it.
#[derive(Debug, Clone, Default)]
pub struct PurgeTable {
    /// Every record numbered up to this is applied (records above it may be, too).
    pub seq: u64,
    /// The highest record number applied.
    top: u64,
    urls: HashMap<String, Marks>,
    prefixes: HashMap<String, Marks>,
    /// Lengths of the prefixes present, so a lookup tries only those.
    prefix_lens: BTreeSet<usize>,
    tags: HashMap<String, Marks>,
}

impl PurgeTable {
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.prefixes.is_empty() && self.tags.is_empty()
    }

    pub fn len(&self) -> usize {
        self.urls.len() + self.prefixes.len() + self.tags.len()
    }

    pub(crate) fn apply(&mut self, r: &PurgeRecord) {
        for t in &r.req.targets {
            let (map, key) = match t {
                Target::Url(u) => (&mut self.urls, u),
                Target::Prefix(p) => {
                    self.prefix_lens.insert(p.len());
                    (&mut self.prefixes, p)
                }
                Target::Tag(g) => (&mut self.tags, g),
            };
            let m = map.entry(key.clone()).or_default();
            if r.req.soft {
                m.soft = m.soft.max(r.seq);
            } else {
                m.hard = m.hard.max(r.seq);
            }
            m.expires_ms = m.expires_ms.max(r.expires_ms);
        }
        self.top = self.top.max(r.seq);
    }

    fn expire(&mut self, now_ms: u64) {
        let live = |_: &String, m: &mut Marks| m.expires_ms > now_ms;
        self.urls.retain(live);
        self.tags.retain(live);
        self.prefixes.retain(live);
        self.prefix_lens = self.prefixes.keys().map(String::len).collect();
    }

    /// The strongest verdict of every record that covers `entry`.
    pub fn verdict(&self, entry: &Entry) -> Verdict {
        if self.is_empty() || entry.purge_seq >= self.top {
            return Verdict::Valid;
        }
        let mut v = Verdict::Valid;
        let mut see = |m: Option<&Marks>| {
            if let Some(m) = m {
                match m.verdict(entry.purge_seq) {
                    Verdict::Gone => v = Verdict::Gone,
                    Verdict::Stale if v == Verdict::Valid => v = Verdict::Stale,
                    _ => {}
                }
            }
        };
        see(self.urls.get(&entry.url));
        let path = entry.url.split('?').next().unwrap_or("");
        for &len in &self.prefix_lens {
            if let Some(p) = path.get(..len) {
                see(self.prefixes.get(p));
            }
        }
        for t in &entry.tags {
            see(self.tags.get(t));
        }
        v
    }
}

/// One instance's view of the purge log, kept current with the store.
#[derive(Clone)]
pub struct Purges {
    table: Arc<ArcSwap<PurgeTable>>,
    log: Arc<dyn PurgeLog>,
    /// Other instances write to the log too: poll it, and listen for their purges.
    peers: Option<Arc<dyn Coordination>>,
    clock: crate::clock::Clock,
}

impl Purges {
    /// Loads the whole log from the store (an empty table when the store is down: the
    /// poller catches up once it answers).
    pub async fn load(
        log: Arc<dyn PurgeLog>,
        peers: Option<Arc<dyn Coordination>>,
        clock: crate::clock::Clock,
    ) -> Purges {
        let p = Purges {
            table: Arc::new(ArcSwap::from_pointee(PurgeTable::default())),
            log,
            peers,
            clock,
        };
        if let Err(e) = p.sync().await {
            tracing::warn!(error = %e, "could not load the purge log; will retry");
        }
        p
    }

    /// The table now; cheap, for the hit path.
    pub fn table(&self) -> arc_swap::Guard<Arc<PurgeTable>> {
        self.table.load()
    }

    /// The number a fill starting now records in its entry.
    pub fn seq(&self) -> u64 {
        self.table.load().seq
    }

    fn merge(&self, seq: u64, records: &[PurgeRecord]) {
        let now = self.clock.now_ms();
        self.table.rcu(|cur| {
            let mut t = PurgeTable::clone(cur);
            for r in records {
                t.apply(r);
            }
            t.seq = t.seq.max(seq);
            t.expire(now);
            t
        });
    }

    /// Fetches and applies records issued since the last one applied.
    pub async fn sync(&self) -> StoreResult<()> {
        let have = self.seq();
        let (seq, records) = self.log.purge_since(have).await?;
        if seq != have || !records.is_empty() {
            self.merge(seq, &records);
        }
        Ok(())
    }

    /// Logs a purge in the store and applies it here at once; returns its number.
    pub async fn purge(&self, req: PurgeRequest) -> StoreResult<u64> {
        let expires = self.clock.now_ms() + crate::policy::MAX_ENTRY_LIFETIME.as_millis() as u64;
        let seq = self.log.purge_add(&req, expires).await?;
        self.merge(
            0,
            &[PurgeRecord {
                seq,
                req,
                expires_ms: expires,
            }],
        );
        // Records numbered between what we had and `seq` were written by other instances.
        if let Err(e) = self.sync().await {
            tracing::warn!(error = %e, "purge log sync failed");
        }
        Ok(seq)
    }

    /// Polls a shared store for purges made by other instances, until `shutdown`.
    pub async fn poll(self, mut shutdown: crate::server::Stop) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        // Events make a purge take effect here within one round trip. The poll is the net
        // under them: every 40 ms while the event subscription is down (and at start, until
        // it is up), every second while it is up.
        let mut events = Some(peers.subscribe());
        let mut subscribed = peers.subscribed();
        loop {
            let every = if subscribed {
                POLL_SUBSCRIBED
            } else {
                POLL_EVERY
            };
            let nudged = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                e = next_event(&mut events) => match e {
                    Nudge::Purged => true,
                    Nudge::Subscription(up) => {
                        subscribed = up;
                        // (Re)subscribed: anything missed meanwhile is fetched now.
                        up
                    }
                },
                _ = shutdown.changed() => return,
            };
            let behind = nudged
                || match self.log.purge_seq().await {
                    Ok(seq) => seq != self.seq(),
                    Err(e) => {
                        tracing::debug!(error = %e, "purge log poll failed");
                        false
                    }
                };
            if behind {
                if let Err(e) = self.sync().await {
                    tracing::debug!(error = %e, "purge log sync failed");
                }
            }
        }
    }
}

/// What the store's event stream says about the purge log.
enum Nudge {
    /// A purge was logged.
    Purged,
    /// The subscription came up (`true`) or went down (`false`).
    Subscription(bool),
}

/// Waits for an event about the purge log.
async fn next_event(events: &mut Option<tokio::sync::broadcast::Receiver<Event>>) -> Nudge {
    let Some(rx) = events else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(Event::Purged { .. }) => return Nudge::Purged,
            Ok(Event::Resubscribed) => return Nudge::Subscription(true),
            Ok(Event::Lost) => return Nudge::Subscription(false),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return Nudge::Purged,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *events = None;
                return Nudge::Subscription(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, tags: &[&str], seq: u64) -> Entry {
        Entry {
            status: http::StatusCode::OK,
            flags: 0,
            stored_at_ms: 0,
            initial_age_ms: 0,
            fresh_ms: 1000,
            swr_ms: 0,
            sie_ms: 0,
            purge_seq: seq,
            fetch_ms: 0,
            url: url.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            vary: Vec::new(),
            headers: Default::default(),
            body: Default::default(),
            coding: crate::coding::Coding::Identity,
            origin_coding: crate::coding::Coding::Identity,
            identity_len: 0,
        }
    }

    fn rec(seq: u64, soft: bool, targets: Vec<Target>) -> PurgeRecord {
        PurgeRecord {
            seq,
            req: PurgeRequest { targets, soft },
            expires_ms: u64::MAX,
        }
    }

    #[test]
    fn verdicts() {
        let mut t = PurgeTable {
            seq: 3,
            ..Default::default()
        };
        t.apply(&rec(
            1,
            false,
            vec![Target::Prefix("/analytics/sal".into())],
        ));
        t.apply(&rec(2, true, vec![Target::Tag("finance".into())]));
        t.apply(&rec(3, false, vec![Target::Url("/x?a=1".into())]));
        assert_eq!(
            t.verdict(&entry("/analytics/sales?r=eu", &[], 0)),
            Verdict::Gone
        );
        assert_eq!(
            t.verdict(&entry("/analytics/sales?r=eu", &[], 1)),
            Verdict::Valid
        );
        assert_eq!(
            t.verdict(&entry("/analytics/other", &[], 0)),
            Verdict::Valid
        );
        assert_eq!(t.verdict(&entry("/a", &["finance"], 1)), Verdict::Stale);
        assert_eq!(t.verdict(&entry("/a", &["finance"], 2)), Verdict::Valid);
        assert_eq!(t.verdict(&entry("/x?a=1", &["finance"], 0)), Verdict::Gone);
        assert_eq!(t.verdict(&entry("/x?a=2", &[], 0)), Verdict::Valid);
    }
}
