//! Reads of one key that are in flight together share one store round trip.
//!
//! Why: twenty managers opening the same dashboard ask the shared store for the same entry
//! at the same moment, and on Redis each ask costs a command and moves the whole report
//! (20 KiB and more) over the network, into every instance. A lookup that finds a read of
//! the same key already on its way waits for that read's answer instead of sending its own:
//! one `GET` answers every lookup that arrived while it was in flight. Nothing is kept once
//! the answer is in: this is no cache, and a lookup that starts after it asks the store
//! again. (Single-flight for misses is [`crate::coalesce`]; this is its cousin for hits.)
//!
//! Why it never answers older than the store: a lookup joins a read only if nothing was
//! written to that key since the read started, as far as this instance can know. The
//! store bumps the key's version ([`super::versions`]) *after* each of its own writes and
//! deletes, and the whole epoch when it takes a fill lock or hears from another instance
//! (a fill, an invalidation, a lost subscription); a read in flight under an older stamp is
//! not joined, a new one starts. So once a write has completed here, or its announcement
//! has arrived, no lookup is answered by a read sent before it. A write by another
//! instance not announced yet may be missed, exactly as by a read sent a moment earlier.
//!
//! A read whose leader is dropped before the answer (its client hung up) is abandoned, like
//! a dangling permit in [`crate::coalesce`]: its waiters look again, and the first of them
//! sends the next read, which the others join.

use super::versions::{Stamp, Versions};
use super::StoreResult;
use crate::entry::Entry;
use crate::key::KeyHash;
use crate::metrics::Counter;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::Notify;

/// What a read answers.
pub type Answer = StoreResult<Option<Arc<Entry>>>;

/// Tables of reads in flight, by key hash; a few, so that two cores reading different
/// keys rarely meet on one lock.
const TABLES: usize = 64;

type Table = Mutex<HashMap<Box<str>, Arc<Flight>, KeyHash>>;

/// The reads in flight of one store.
pub struct ReadFlights {
    versions: Versions,
    tables: Box<[Table]>,
    /// Lookups answered by another lookup's read.
    pub joined: Counter,
}

struct Flight {
    stamp: Stamp,
    /// `Some(answer)` once read; `None` if the leader was dropped first.
    answer: OnceLock<Option<Answer>>,
    done: Notify,
}

impl Default for ReadFlights {
    fn default() -> Self {
        ReadFlights {
            versions: Versions::default(),
            tables: (0..TABLES).map(|_| Mutex::default()).collect(),
            joined: Counter::default(),
        }
    }
}

impl ReadFlights {
    /// The entry under `key`: the answer of a read of it already in flight (and still
    /// current), or of `read`, which then answers whoever joins meanwhile.
    pub async fn read<F>(&self, key: &str, read: impl FnOnce() -> F) -> Answer
    where
        F: Future<Output = Answer>,
    {
        let table = self.table(key);
        loop {
            let stamp = self.versions.stamp(key);
            let joined = {
                let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
                match t.get(key) {
                    Some(f) if f.stamp == stamp => Ok(f.clone()),
                    _ => {
                        // None, or one sent before a write: ours takes its place.
                        let f = Arc::new(Flight {
                            stamp,
                            answer: OnceLock::new(),
                            done: Notify::new(),
                        });
                        t.insert(key.into(), f.clone());
                        Err(f)
                    }
                }
            };
            let f = match joined {
                Ok(f) => f,
                Err(f) => {
                    let lead = Lead {
                        table,
                        key,
                        flight: f,
                    };
                    let answer = read().await;
                    lead.finish(Some(answer.clone()));
                    return answer;
                }
            };
            let done = f.done.notified();
            tokio::pin!(done);
            // Registered before looking, so the leader's wake-up cannot slip between.
            done.as_mut().enable();
            if f.answer.get().is_none() {
                done.await;
            }
            if let Some(Some(answer)) = f.answer.get() {
                self.joined.add(1);
                return answer.clone();
            }
            // The leader was dropped (it left the table first): look again.
        }
    }

    /// `key` was written or deleted (call it after the store changed).
    pub fn bump(&self, key: &str) {
        self.versions.bump(key);
    }

    /// Anything may have changed: no read in flight now is joined any more.
    pub fn flush(&self) {
        self.versions.flush();
    }

    fn table(&self, key: &str) -> &Table {
        &self.tables[crate::key::shard_hash(key) as usize % TABLES]
    }

    /// Reads in flight now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The leader's side of a flight: on finishing or on being dropped, the flight leaves the
/// table and its waiters wake.
struct Lead<'a> {
    table: &'a Table,
    key: &'a str,
    flight: Arc<Flight>,
}

impl Lead<'_> {
    fn finish(&self, answer: Option<Answer>) {
        let _ = self.flight.answer.set(answer);
        {
            let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            // Only ours: a newer read may have taken the key's place meanwhile.
            if t.get(self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                t.remove(self.key);
            }
        }
        self.flight.done.notify_waiters();
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if self.flight.answer.get().is_none() {
            self.finish(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const KEY: &str = "slate:v1:e:0123456789abcdef";

    /// Reads of one test: the flights, and how many reads reached the "store".
    #[derive(Clone, Default)]
    struct Bench {
        f: Arc<ReadFlights>,
        reads: Arc<AtomicUsize>,
    }

    impl Bench {
        /// A lookup of `key` in its own task; its read, if it makes one, answers what the
        /// returned sender sends ("dropped" if it is dropped).
        fn lookup(&self, key: &'static str) -> (oneshot::Sender<&'static str>, JoinHandle<Answer>) {
            let (tx, rx) = oneshot::channel();
            let b = self.clone();
            let task = tokio::spawn(async move {
                b.f.read(key, || async {
                    b.reads.fetch_add(1, SeqCst);
                    let body = rx.await.unwrap_or("dropped");
                    Ok(Some(Arc::new(Entry::with_body(body))))
                })
                .await
            });
            (tx, task)
        }

        fn reads(&self) -> usize {
            self.reads.load(SeqCst)
        }

        /// Lets every spawned lookup run as far as it can.
        async fn settle(&self) {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
    }

    async fn body(task: JoinHandle<Answer>) -> String {
        let a = task.await.expect("the lookup ran");
        let e = a.expect("no error").expect("an entry");
        String::from_utf8_lossy(&e.body).into_owned()
    }

    #[tokio::test]
    async fn lookups_during_a_read_share_it_and_the_next_one_reads_again() {
        let b = Bench::default();
        let (tx, leader) = b.lookup(KEY);
        b.settle().await;
        let waiters: Vec<_> = (0..10).map(|_| b.lookup(KEY)).collect();
        b.settle().await;
        tx.send("v1").unwrap();
        assert_eq!(body(leader).await, "v1");
        for (_tx, w) in waiters {
            assert_eq!(body(w).await, "v1");
        }
        assert_eq!(b.reads(), 1, "one read answered all eleven");
        assert_eq!(b.f.joined.get(), 10);
        assert_eq!(b.f.in_flight(), 0, "nothing kept after the answer");
        let (tx, later) = b.lookup(KEY);
        tx.send("v2").unwrap();
        assert_eq!(body(later).await, "v2");
        assert_eq!(b.reads(), 2, "a later lookup reads again");
    }

    #[tokio::test]
    async fn a_read_sent_before_a_write_is_not_joined_after_it() {
        for flush in [false, true] {
            let b = Bench::default();
            let (old_tx, old) = b.lookup(KEY);
            b.settle().await;
            // The key is written (or anything may have changed) while that read is out.
            if flush {
                b.f.flush();
            } else {
                b.f.bump(KEY);
            }
            let (new_tx, new) = b.lookup(KEY);
            b.settle().await;
            assert_eq!(b.reads(), 2, "the lookup after the write read for itself");
            // A third lookup joins the newer read, not the older.
            let (_tx, third) = b.lookup(KEY);
            b.settle().await;
            new_tx.send("after").unwrap();
            old_tx.send("before").unwrap();
            assert_eq!(body(old).await, "before");
            assert_eq!(body(new).await, "after", "flush={flush}");
            assert_eq!(body(third).await, "after", "flush={flush}");
            assert_eq!(b.reads(), 2);
            assert_eq!(b.f.in_flight(), 0);
        }
    }

    #[tokio::test]
    async fn other_keys_read_for_themselves() {
        let b = Bench::default();
        let (tx_a, a) = b.lookup(KEY);
        b.settle().await;
        let (tx_b, other) = b.lookup("slate:v1:e:fedcba9876543210");
        b.settle().await;
        assert_eq!(b.reads(), 2);
        tx_b.send("b").unwrap();
        tx_a.send("a").unwrap();
        assert_eq!(body(other).await, "b");
        assert_eq!(body(a).await, "a");
    }

    #[tokio::test]
    async fn when_the_leader_is_dropped_one_waiter_reads_for_all() {
        let b = Bench::default();
        let (_never, leader) = b.lookup(KEY);
        b.settle().await;
        let (tx1, w1) = b.lookup(KEY);
        let (tx2, w2) = b.lookup(KEY);
        b.settle().await;
        assert_eq!(b.reads(), 1, "the waiters joined the leader's read");
        // The leader's client hangs up.
        leader.abort();
        let _ = leader.await;
        b.settle().await;
        assert_eq!(b.reads(), 2, "one waiter took over, the other joined it");
        // Whichever took over answers both.
        let _ = tx1.send("again");
        let _ = tx2.send("again");
        assert_eq!(body(w1).await, "again");
        assert_eq!(body(w2).await, "again");
        assert_eq!(b.reads(), 2);
        assert_eq!(b.f.joined.get(), 1);
        assert_eq!(b.f.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_error_answers_and_leaves_nothing_behind() {
        let f = ReadFlights::default();
        let r: Answer = f
            .read(KEY, || async { Err(super::super::StoreError::Timeout) })
            .await;
        assert!(matches!(r, Err(super::super::StoreError::Timeout)));
        assert_eq!(f.in_flight(), 0);
    }
}
