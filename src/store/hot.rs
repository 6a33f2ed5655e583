//! Per-thread copies of the hottest entries, in front of an in-process tier (the memory
//! store, or the L1 in front of Redis).
//!
//! Why: when every core answers the same report, every hit through a shared tier writes
//! the same few cache lines (the entry's reference count, its body's, each header value's,
//! the tier's own bookkeeping), and the cores pass those lines back and forth on each
//! request. A copy per thread keeps a hit on lines that thread alone writes, and answers
//! it without a lookup future, the tier's lock-free map or its access recording.
//!
//! Why it is never staler than the tier behind it: every key has a version
//! ([`super::versions`]), which the tier bumps *after* every write, delete or invalidation
//! of that key. A reader takes the version *before* it reads the tier and files its copy
//! under it; a copy is served only while its version is still current. So a copy made from a value that was replaced meanwhile is dead on arrival. A
//! flush (the tier was emptied: the invalidation stream was lost) bumps an epoch that
//! every copy also carries. Purges need nothing here: they are applied above the store, to
//! every entry however it was found.
//!
//! Bounds: at most `budget` bytes of copies per thread and instance (a copy larger than a
//! quarter of that is never made); beyond, the thread's oldest copies are dropped. The
//! copies are refreshed from the tier now and then ([`TOUCH_EVERY`] hits) so that the
//! tier's own eviction still sees what is hot.

use super::versions::{Stamp, Versions};
use crate::entry::Entry;
use crate::key::KeyHash;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

/// One hit in this many on a copy goes to the tier behind instead ([`HotCopies::get`] says
/// `None`), so that the tier's LRU and frequency sketch still see the entry as hot.
pub const TOUCH_EVERY: u32 = 64;

/// The versions of one instance's keys; shared by its threads (clones share them).
#[derive(Clone)]
pub struct HotCopies {
    inner: Arc<Versions>,
    budget: usize,
}

struct Slot {
    entry: Arc<Entry>,
    stamp: Stamp,
    weight: usize,
    hits: u32,
    /// Which record in `Table::order` is this slot's.
    seq: u64,
}

/// One thread's copies for one instance.
struct Table {
    owner: Weak<Versions>,
    slots: HashMap<Box<str>, Slot, KeyHash>,
    /// Copies in the order they were made, for dropping the oldest when over budget. A
    /// record whose `seq` is not its slot's any more (the copy was replaced or dropped
    /// since) is skipped, and trimmed away now and then.
    order: VecDeque<(Box<str>, u64)>,
    next_seq: u64,
    bytes: usize,
}

thread_local! {
    static TABLES: RefCell<Vec<Table>> = const { RefCell::new(Vec::new()) };
}

impl HotCopies {
    /// Copies of at most `budget` bytes per thread (0: none are made).
    pub fn new(budget: u64) -> Self {
        HotCopies {
            inner: Arc::new(Versions::default()),
            budget: budget.min(usize::MAX as u64) as usize,
        }
    }

    /// The versions of `key` now. Take it before reading the tier; file the copy under it
    /// with [`HotCopies::keep`].
    pub fn stamp(&self, key: &str) -> Stamp {
        self.inner.stamp(key)
    }

    /// The thread's current copy of `key`; `None` when there is none, and on every
    /// [`TOUCH_EVERY`]-th hit of a copy (read the tier then).
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        if self.budget == 0 {
            return None;
        }
        let now = self.stamp(key);
        self.with_table(|t| {
            let slot = t.slots.get_mut(key)?;
            if slot.stamp != now {
                t.bytes -= slot.weight;
                t.slots.remove(key);
                return None;
            }
            slot.hits = slot.hits.wrapping_add(1);
            (slot.hits % TOUCH_EVERY != 0).then(|| slot.entry.clone())
        })
    }

    /// Makes this thread's copy of `entry`, read from the tier under `stamp`.
    pub fn keep(&self, key: &str, entry: &Entry, stamp: Stamp) {
        let weight = entry.weight() as usize;
        if self.budget == 0 || weight > self.budget / 4 || stamp != self.stamp(key) {
            return;
        }
        // A copy filed under the same stamp is of the same value (nothing was written in
        // between): keep it rather than copy the entry again (the touch hits land here).
        if self.with_table(|t| t.slots.get(key).is_some_and(|s| s.stamp == stamp)) {
            return;
        }
        let copy = Arc::new(deep_copy(entry));
        self.with_table(|t| {
            if let Some(old) = t.slots.remove(key) {
                t.bytes -= old.weight;
            }
            while t.bytes + weight > self.budget {
                let Some((k, seq)) = t.order.pop_front() else {
                    break;
                };
                if t.slots.get(&k).is_some_and(|s| s.seq == seq) {
                    if let Some(old) = t.slots.remove(&k) {
                        t.bytes -= old.weight;
                    }
                }
            }
            let seq = t.next_seq;
            t.next_seq += 1;
            let k: Box<str> = key.into();
            t.order.push_back((k.clone(), seq));
            t.slots.insert(
                k,
                Slot {
                    entry: copy,
                    stamp,
                    weight,
                    hits: 0,
                    seq,
                },
            );
            t.bytes += weight;
            // Records of copies replaced or dropped since: trimmed once they outnumber
            // the live ones, so the list stays within twice the copies (plus a little).
            if t.order.len() > 2 * t.slots.len() + 64 {
                let slots = &t.slots;
                t.order
                    .retain(|(k, seq)| slots.get(k).is_some_and(|s| s.seq == *seq));
            }
        });
    }

    /// `key` was written, deleted or invalidated in the tier: every thread's copy is dead.
    /// Call it after the tier changed.
    pub fn bump(&self, key: &str) {
        self.inner.bump(key)
    }

    /// The tier was emptied: every copy of this instance is dead.
    pub fn flush(&self) {
        self.inner.flush()
    }

    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        TABLES.with(|tables| {
            let mut tables = tables.borrow_mut();
            let i = match tables
                .iter()
                .position(|t| t.owner.as_ptr() == Arc::as_ptr(&self.inner))
            {
                Some(i) => i,
                None => {
                    // Tables of instances that are gone (tests start many) go with them.
                    tables.retain(|t| t.owner.strong_count() > 0);
                    tables.push(Table {
                        owner: Arc::downgrade(&self.inner),
                        slots: HashMap::with_hasher(KeyHash),
                        order: VecDeque::new(),
                        next_seq: 0,
                        bytes: 0,
                    });
                    tables.len() - 1
                }
            };
            f(&mut tables[i])
        })
    }
}

/// A copy that shares no reference-counted buffer with `e`: its body and header values
/// are this thread's own.
fn deep_copy(e: &Entry) -> Entry {
    let mut headers = HeaderMap::with_capacity(e.headers.len() + 4);
    for (name, value) in &e.headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut v = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        v.set_sensitive(value.is_sensitive());
        headers.append(name, v);
    }
    Entry {
        headers,
        body: bytes::Bytes::copy_from_slice(&e.body),
        ..e.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str) -> Entry {
        Entry::with_body(body)
    }

    const KEY: &str = "slate:v1:e:0123456789abcdef";

    /// The thread's copy, looking past the touch hits.
    fn copy_of(h: &HotCopies, key: &str) -> Option<Arc<Entry>> {
        h.get(key).or_else(|| h.get(key))
    }

    #[test]
    fn a_copy_is_equal_and_shares_nothing() {
        let h = HotCopies::new(1 << 20);
        let e = entry("sales");
        h.keep(KEY, &e, h.stamp(KEY));
        let c = copy_of(&h, KEY).expect("a copy");
        assert_eq!(*c, e);
        assert_ne!(
            c.body.as_ptr(),
            e.body.as_ptr(),
            "the body is this thread's own"
        );
    }

    #[test]
    fn a_write_after_the_stamp_makes_the_copy_dead_on_arrival() {
        let h = HotCopies::new(1 << 20);
        let stamp = h.stamp(KEY);
        // The tier is written between the reader's stamp and its copy.
        h.bump(KEY);
        h.keep(KEY, &entry("old"), stamp);
        assert!(copy_of(&h, KEY).is_none());
    }

    #[test]
    fn bump_and_flush_end_copies() {
        let h = HotCopies::new(1 << 20);
        h.keep(KEY, &entry("a"), h.stamp(KEY));
        assert!(copy_of(&h, KEY).is_some());
        h.bump(KEY);
        assert!(copy_of(&h, KEY).is_none(), "dead after a write of its key");
        h.keep(KEY, &entry("b"), h.stamp(KEY));
        assert_eq!(copy_of(&h, KEY).unwrap().body, "b");
        h.flush();
        assert!(copy_of(&h, KEY).is_none(), "dead after a flush");
    }

    #[test]
    fn other_threads_and_instances_have_their_own() {
        let h = Arc::new(HotCopies::new(1 << 20));
        h.keep(KEY, &entry("a"), h.stamp(KEY));
        let h2 = h.clone();
        let seen = std::thread::spawn(move || copy_of(&h2, KEY).is_some())
            .join()
            .unwrap();
        assert!(!seen, "another thread makes its own copy");
        let other = HotCopies::new(1 << 20);
        assert!(
            copy_of(&other, KEY).is_none(),
            "another instance has its own"
        );
    }

    #[test]
    fn the_budget_holds() {
        let one = entry(&"x".repeat(1000)).weight() as usize;
        let h = HotCopies::new((one * 4) as u64);
        for i in 0..20 {
            let k = format!("slate:v1:e:{i:016x}");
            h.keep(&k, &entry(&"x".repeat(1000)), h.stamp(&k));
        }
        let held = h.with_table(|t| t.bytes);
        assert!(held <= one * 4, "{held} bytes held, budget {}", one * 4);
        assert!(
            h.with_table(|t| t.slots.len()) >= 3,
            "the newest copies stay"
        );
        let big = entry(&"y".repeat(2 * one));
        h.keep(KEY, &big, h.stamp(KEY));
        assert!(
            copy_of(&h, KEY).is_none(),
            "over a quarter of the budget: not copied"
        );
    }

    #[test]
    fn copying_one_key_again_and_again_keeps_the_order_list_short() {
        let h = HotCopies::new(1 << 20);
        for i in 0..10_000 {
            h.keep(KEY, &entry("a"), h.stamp(KEY));
            if i % 3 == 0 {
                h.bump(KEY);
                assert!(copy_of(&h, KEY).is_none());
            }
        }
        let (records, slots) = h.with_table(|t| (t.order.len(), t.slots.len()));
        assert!(slots <= 1);
        assert!(
            records <= 2 * slots + 65,
            "{records} order records for {slots} copies"
        );
    }

    #[test]
    fn every_touch_every_th_hit_asks_to_touch_the_tier() {
        let h = HotCopies::new(1 << 20);
        h.keep(KEY, &entry("a"), h.stamp(KEY));
        let touches = (0..TOUCH_EVERY * 3)
            .filter(|_| h.get(KEY).is_none())
            .count();
        assert_eq!(touches, 3);
        // The touch reads the tier, which offers the same value again: the copy stays.
        let before = copy_of(&h, KEY).unwrap();
        h.keep(KEY, &entry("a"), h.stamp(KEY));
        assert!(
            Arc::ptr_eq(&before, &copy_of(&h, KEY).unwrap()),
            "not copied again"
        );
    }
}
