//! The fill queue: at most `upstream.max_fills` fills of distinct reports run against the
//! upstream at once, counted over every instance that shares the store; the rest wait
//! their turn.
//!
//! Single-flight spares the back end the same report asked twenty times; this spares it
//! twenty *different* reports asked at 9:00. A fill takes a [`Slot`] before it sends its
//! request and gives it back when the response is stored (dropping the slot does it).
//!
//! - **Counted where the fills are.** On the memory store, in this process. On a shared
//!   store, a counted lease in the store (`Coordination::acquire_slot`: a sorted set of
//!   holders scored by when their lease lapses, on the store's clock): an instance that dies
//!   holding slots frees them within a lease, as it does its fill locks. A holder renews its
//!   lease while its fill runs.
//! - **Order.** Client fills go first, then background refreshes, then warming. Within a
//!   class, waiting fills take turns by client (the address that asked): the client served
//!   longest ago goes next, and one client's fills go oldest first. So one dashboard firing
//!   50 distinct reports gets a slot in turn with everyone else waiting, not all of them
//!   until it is done; and a rule's `max_fills` caps that rule's share whoever asks.
//!   Across instances each one orders its own waiters; they meet at the store's slots, and
//!   a freed slot is announced so waiters elsewhere try again at once.
//! - **Bounded waits.** A fill waits at most `upstream.queue_timeout` ([`QueueError::Timeout`]:
//!   its clients then get a stale copy if there is one, else 503). A queued fill whose
//!   clients have all gone is dropped before it starts ([`QueueError::Abandoned`]); a running
//!   one is always finished and stored.
//! - **A store that does not answer** is no reason to stop filling: the slot is granted.

use crate::store::{Coordination, Event, SlotGrant, Slots};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, Notify};

/// Who waits for a fill, in the order they are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// A client is waiting for the answer.
    Client,
    /// A background refresh (stale-while-revalidate, soft purge, refresh-ahead).
    Background,
    /// Warming.
    Warm,
}

/// Why a fill did not get a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the fill waited longer than upstream.queue_timeout for its turn")]
    Timeout,
    #[error("every client of the queued fill went away")]
    Abandoned,
}

/// What a fill asks the queue for.
pub struct Ask {
    pub class: Class,
    pub client: Option<IpAddr>,
    /// The rule's path and its `max_fills`, when it caps its share.
    pub rule: Option<(String, usize)>,
    /// All fills' limit (`upstream.max_fills`; 0: none).
    pub limit: usize,
    pub timeout: Duration,
    /// Lease of a slot in a shared store (renewed while held).
    pub lease: Duration,
}

/// How often a queued fill looks whether its clients are still there, and a waiter on a
/// shared store tries for a slot again when no announcement came.
const RECHECK: Duration = Duration::from_millis(100);

/// One instance's fill queue.
#[derive(Clone)]
pub struct FillQueue {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// A slot was freed here or elsewhere, or a waiter came: grant what can be granted.
    wake: Arc<Notify>,
    peers: Option<Arc<dyn Coordination>>,
    namespace: String,
}

#[derive(Default)]
struct State {
    next_id: u64,
    waiting: Vec<Waiter>,
    running: usize,
    running_by_rule: HashMap<String, usize>,
    /// When each client was last served (a grant counter), for taking turns.
    served: HashMap<Option<IpAddr>, u64>,
    grants: u64,
}

struct Waiter {
    id: u64,
    class: Class,
    client: Option<IpAddr>,
    rule: Option<(String, usize)>,
    limit: usize,
    lease: Duration,
    tx: oneshot::Sender<Slot>,
}

/// The right to run one fill now. Dropping it gives the slot back.
pub struct Slot {
    inner: Option<Arc<Inner>>,
    rule: Option<String>,
    /// The slot in the shared store, and the task renewing its lease.
    shared: Option<(Slots, String, tokio::task::AbortHandle)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        {
            let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running = st.running.saturating_sub(1);
            if let Some(r) = &self.rule {
                if let Some(n) = st.running_by_rule.get_mut(r) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        st.running_by_rule.remove(r);
                    }
                }
            }
        }
        if let (Some((slots, token, renew)), Some(peers)) = (self.shared.take(), &inner.peers) {
            renew.abort();
            let peers = peers.clone();
            // A release that does not reach the store lapses with its lease.
            tokio::spawn(async move {
                let _ = peers.release_slot(&slots, &token).await;
            });
        }
        inner.wake.notify_one();
    }
}

impl FillQueue {
    /// The queue of an instance; `peers` when other instances share the store (the slots
    /// are then counted there), `namespace` names them.
    pub fn new(peers: Option<Arc<dyn Coordination>>, namespace: &str) -> FillQueue {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
            peers,
            namespace: namespace.to_string(),
        });
        let events = inner.peers.as_ref().map(|p| p.subscribe());
        tokio::spawn(pump(Arc::downgrade(&inner), events));
        FillQueue { inner }
    }

    /// Fills waiting for a slot on this instance, and running with one.
    pub fn lengths(&self) -> (usize, usize) {
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.waiting.len(), st.running)
    }

    /// Waits for a slot; `gone()` says whether every client of the fill went away (checked
    /// while it waits: such a fill is dropped).
    pub async fn acquire(&self, ask: Ask, gone: impl Fn() -> bool) -> Result<Slot, QueueError> {
        if ask.limit == 0 {
            return Ok(Slot {
                inner: None,
                rule: None,
                shared: None,
            });
        }
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.next_id += 1;
            let id = st.next_id;
            st.waiting.push(Waiter {
                id,
                class: ask.class,
                client: ask.client,
                rule: ask.rule,
                limit: ask.limit,
                lease: ask.lease,
                tx,
            });
            id
        };
        self.inner.wake.notify_one();
        let deadline = tokio::time::Instant::now() + ask.timeout;
        let outcome = loop {
            tokio::select! {
                slot = &mut rx => break slot.map_err(|_| QueueError::Abandoned),
                _ = tokio::time::sleep_until(deadline) => break Err(QueueError::Timeout),
                _ = tokio::time::sleep(RECHECK) => {
                    if ask.class == Class::Client && gone() {
                        break Err(QueueError::Abandoned);
                    }
                }
            }
        };
        if outcome.is_err() {
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.waiting.retain(|w| w.id != id);
            drop(st);
            // Granted just as we gave up: the slot goes back (when dropped) below.
            if let Ok(slot) = rx.try_recv() {
                drop(slot);
            }
        }
        outcome
    }
}

impl State {
    /// The waiter to serve next that is not held back by its rule (`blocked`): the first
    /// class, then the client served longest ago, then the oldest.
    fn next(&self, blocked: &[String]) -> Option<usize> {
        self.waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                w.rule
                    .as_ref()
                    .is_none_or(|(r, _)| !blocked.iter().any(|b| b == r))
            })
            .min_by_key(|(_, w)| {
                let served = self.served.get(&w.client).copied().unwrap_or(0);
                (w.class, served, w.id)
            })
            .map(|(i, _)| i)
    }

    /// Whether this process may run one more fill for waiter `i` (the local count; a
    /// shared store counts for itself).
    fn local_room(&self, w: &Waiter) -> SlotGrant {
        if self.running >= w.limit {
            return SlotGrant::Full;
        }
        match &w.rule {
            Some((r, max)) if self.running_by_rule.get(r).copied().unwrap_or(0) >= *max => {
                SlotGrant::RuleFull
            }
            _ => SlotGrant::Granted,
        }
    }
}

/// Grants slots as they come free, until the queue is dropped.
async fn pump(inner: std::sync::Weak<Inner>, mut events: Option<broadcast::Receiver<Event>>) {
    loop {
        let Some(q) = inner.upgrade() else {
            return;
        };
        grant(&q).await;
        let shared = q.peers.is_some();
        let waiting = !q
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .is_empty();
        let wake = q.wake.clone();
        // Not kept alive by its own pump: dropped with the instance.
        drop(q);
        // On a shared store, slots are freed elsewhere too: their announcement, or the
        // next try, whichever comes first.
        tokio::select! {
            _ = wake.notified() => {}
            _ = slot_freed(&mut events), if shared => {}
            _ = tokio::time::sleep(RECHECK), if shared && waiting => {}
        }
    }
}

/// The next announcement that a slot was freed somewhere.
async fn slot_freed(events: &mut Option<broadcast::Receiver<Event>>) {
    let Some(rx) = events else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(Event::SlotFreed) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => {
                *events = None;
                return std::future::pending().await;
            }
        }
    }
}

/// Grants every slot that is free now, in queue order.
async fn grant(q: &Arc<Inner>) {
    let mut blocked: Vec<String> = Vec::new();
    loop {
        let (id, local, rule, limit, lease) = {
            let st = q.state.lock().unwrap_or_else(|e| e.into_inner());
            let Some(i) = st.next(&blocked) else {
                return;
            };
            let w = &st.waiting[i];
            let local = st.local_room(w);
            (w.id, local, w.rule.clone(), w.limit, w.lease)
        };
        let mut shared = None;
        let room = match (&q.peers, local) {
            // The shared store counts every instance's fills; this one's count is only a
            // bound on what it may ask for.
            (Some(peers), SlotGrant::Granted) => {
                let slots = Slots {
                    key: crate::key::queue_key(&q.namespace),
                    limit,
                    rule: rule
                        .as_ref()
                        .map(|(r, n)| (crate::key::queue_rule_key(&q.namespace, r), *n)),
                };
                let token = format!("{:016x}", rand::random::<u64>());
                match peers.acquire_slot(&slots, &token, lease).await {
                    Ok(SlotGrant::Granted) => {
                        shared = Some((slots, token));
                        SlotGrant::Granted
                    }
                    Ok(other) => other,
                    Err(e) => {
                        tracing::warn!(error = %e, "fill queue slots unavailable; filling without one");
                        SlotGrant::Granted
                    }
                }
            }
            (_, local) => local,
        };
        match room {
            SlotGrant::Full => return,
            SlotGrant::RuleFull => {
                if let Some((r, _)) = rule {
                    blocked.push(r);
                }
                continue;
            }
            SlotGrant::Granted => {}
        }
        let renew = shared.as_ref().map(|(slots, token)| {
            let (peers, slots, token) = (q.peers.clone(), slots.clone(), token.clone());
            tokio::spawn(async move {
                let Some(peers) = peers else { return };
                loop {
                    tokio::time::sleep(lease / 3).await;
                    if !matches!(peers.renew_slot(&slots, &token, lease).await, Ok(true)) {
                        tracing::warn!("a fill queue slot lapsed while its fill ran");
                    }
                }
            })
            .abort_handle()
        });
        let mut st = q.state.lock().unwrap_or_else(|e| e.into_inner());
        st.running += 1;
        if let Some((r, _)) = &rule {
            *st.running_by_rule.entry(r.clone()).or_default() += 1;
        }
        let slot = Slot {
            inner: Some(q.clone()),
            rule: rule.as_ref().map(|(r, _)| r.clone()),
            shared: shared.zip(renew).map(|((s, t), a)| (s, t, a)),
        };
        match st.waiting.iter().position(|w| w.id == id) {
            Some(i) => {
                let w = st.waiting.remove(i);
                st.grants += 1;
                let n = st.grants;
                st.served.insert(w.client, n);
                drop(st);
                // A waiter that gave up just now drops the slot, which gives it back.
                let _ = w.tx.send(slot);
            }
            // It gave up while we asked the store.
            None => {
                drop(st);
                drop(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(class: Class, client: u8, limit: usize) -> Ask {
        Ask {
            class,
            client: Some(IpAddr::from([10, 0, 0, client])),
            rule: None,
            limit,
            timeout: Duration::from_secs(5),
            lease: Duration::from_secs(5),
        }
    }

    /// Queues `asks` behind one running fill, then frees slots one at a time: the order
    /// they were granted in.
    async fn order(asks: Vec<Ask>) -> Vec<usize> {
        let q = FillQueue::new(None, "t");
        let first = q
            .acquire(ask(Class::Client, 99, 1), || false)
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let n = asks.len();
        for (i, a) in asks.into_iter().enumerate() {
            let (q2, tx) = (q.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = q2.acquire(a, || false).await.unwrap();
                tx.send(i).unwrap();
                // Hold it until the test has seen who got it.
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(slot);
            });
            // Queued in this order.
            while q.lengths().0 < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        let mut got = Vec::new();
        for _ in 0..n {
            let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            got.push(next.expect("granted in time").expect("a grant"));
        }
        got
    }

    #[tokio::test]
    async fn at_most_the_limit_run() {
        let q = FillQueue::new(None, "t");
        let a = q.acquire(ask(Class::Client, 1, 2), || false).await.unwrap();
        let _b = q.acquire(ask(Class::Client, 1, 2), || false).await.unwrap();
        assert_eq!(q.lengths(), (0, 2));
        let q2 = q.clone();
        let third =
            tokio::spawn(async move { q2.acquire(ask(Class::Client, 1, 2), || false).await });
        while q.lengths().0 == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.lengths(), (1, 2), "the third waits");
        drop(a);
        let _c = third.await.unwrap().unwrap();
        assert_eq!(q.lengths(), (0, 2));
    }

    #[tokio::test]
    async fn clients_before_refreshes_before_warming() {
        let got = order(vec![
            ask(Class::Warm, 1, 1),
            ask(Class::Background, 1, 1),
            ask(Class::Client, 1, 1),
        ])
        .await;
        assert_eq!(got, [2, 1, 0]);
    }

    #[tokio::test]
    async fn clients_take_turns() {
        // Client 1 queues three fills, then client 2 one: client 2 is served second.
        let got = order(vec![
            ask(Class::Client, 1, 1),
            ask(Class::Client, 1, 1),
            ask(Class::Client, 1, 1),
            ask(Class::Client, 2, 1),
        ])
        .await;
        assert_eq!(got, [0, 3, 1, 2]);
    }

    #[tokio::test]
    async fn a_rules_cap_lets_others_pass() {
        let q = FillQueue::new(None, "t");
        let capped = |client| Ask {
            rule: Some(("/slow/".to_string(), 1)),
            ..ask(Class::Client, client, 4)
        };
        let _one = q.acquire(capped(1), || false).await.unwrap();
        let q2 = q.clone();
        let second = tokio::spawn(async move { q2.acquire(capped(2), || false).await });
        while q.lengths().0 == 0 {
            tokio::task::yield_now().await;
        }
        // Another rule's fill gets in past the capped one.
        let other = q.acquire(ask(Class::Client, 3, 4), || false).await;
        assert!(other.is_ok());
        assert_eq!(q.lengths(), (1, 2));
        second.abort();
    }

    #[tokio::test]
    async fn timeouts_and_abandoned_fills() {
        let q = FillQueue::new(None, "t");
        let _held = q.acquire(ask(Class::Client, 1, 1), || false).await.unwrap();
        let short = Ask {
            timeout: Duration::from_millis(50),
            ..ask(Class::Client, 2, 1)
        };
        assert_eq!(
            q.acquire(short, || false).await.err(),
            Some(QueueError::Timeout)
        );
        assert_eq!(
            q.acquire(ask(Class::Client, 2, 1), || true).await.err(),
            Some(QueueError::Abandoned)
        );
        // A background fill has no clients to lose: it waits its time out.
        let bg = Ask {
            timeout: Duration::from_millis(250),
            ..ask(Class::Background, 2, 1)
        };
        assert_eq!(
            q.acquire(bg, || true).await.err(),
            Some(QueueError::Timeout)
        );
        assert_eq!(q.lengths(), (0, 1), "nothing left queued");
    }

    #[tokio::test]
    async fn no_limit_no_queue() {
        let q = FillQueue::new(None, "t");
        let slots: Vec<_> = futures_util::future::join_all(
            (0..50).map(|_| q.acquire(ask(Class::Client, 1, 0), || false)),
        )
        .await;
        assert!(slots.iter().all(|s| s.is_ok()));
        assert_eq!(q.lengths(), (0, 0));
    }
}
