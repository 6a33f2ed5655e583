//! Refresh-ahead: entries that were asked for during their life, and when to refresh them.
//!
//! A hit on an entry whose rule has `refresh_ahead` notes the entry here with the moment it
//! is due (`refresh_ahead` before it expires); so does a client that waited for its fill
//! (here or on another instance) and was answered with it, since at 9:00 every viewer of a
//! report waits for its one fill. Only its filler's own miss does not count. A loop (in the crate root) takes what is due,
//! looks it up again and, if it still has that little to live, refreshes it in the
//! background through the fill queue, so the next client after its expiry gets a hit, not a
//! 20-second recompute. Across instances one refresh happens: the fill lock makes the
//! others wait for it, and once it is stored they find an entry with a long life left.
//!
//! What it remembers is what a refresh needs to ask again: the request target, its headers
//! (for `key_headers` and `Vary`) and, for a body-keyed rule, its method and body. Bounded:
//! beyond [`CAPACITY`] entries, new ones are not noted (the oldest due go first anyway).

use bytes::Bytes;
use http::{HeaderMap, Method};
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries remembered at most.
pub const CAPACITY: usize = 100_000;

/// How to ask for an entry again.
#[derive(Debug, Clone)]
pub struct Ask {
    pub target: String,
    pub headers: HeaderMap,
    pub body: Option<(Method, Bytes)>,
}

struct Noted {
    due_ms: u64,
    expires_ms: u64,
    /// Taken for a refresh, not yet seen renewed.
    taken: bool,
    ask: Ask,
}

/// The entries to refresh ahead of their expiry, by store key.
#[derive(Default)]
pub struct Ahead {
    noted: Mutex<HashMap<String, Noted>>,
}

impl Ahead {
    /// Notes a hit on `key`, which expires at `expires_ms` and is due for a refresh at
    /// `due_ms`. A hit on the same entry again changes nothing.
    pub fn hit(&self, key: &str, due_ms: u64, expires_ms: u64, ask: impl FnOnce() -> Ask) {
        let mut m = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        let full = m.len() >= CAPACITY;
        match m.get_mut(key) {
            Some(n) if n.expires_ms == expires_ms => {}
            // A new entry under the key (it was refreshed): due again, later.
            Some(n) => {
                (n.due_ms, n.expires_ms, n.taken) = (due_ms, expires_ms, false);
            }
            None if !full => {
                let ask = ask();
                m.insert(
                    key.to_string(),
                    Noted {
                        due_ms,
                        expires_ms,
                        taken: false,
                        ask,
                    },
                );
            }
            None => {}
        }
    }

    /// Takes what is due at `now_ms`; forgets entries long expired (nobody asked again).
    pub fn due(&self, now_ms: u64, forget_after_ms: u64) -> Vec<(String, Ask)> {
        let mut m = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, n| n.expires_ms.saturating_add(forget_after_ms) > now_ms);
        m.iter_mut()
            .filter(|(_, n)| !n.taken && n.due_ms <= now_ms)
            .map(|(k, n)| {
                n.taken = true;
                (k.clone(), n.ask.clone())
            })
            .collect()
    }

    /// Whether `key` was hit during a life that has ended by `now_ms`: a miss on it is one
    /// refresh-ahead exists to prevent.
    pub fn was_hit(&self, key: &str, now_ms: u64) -> bool {
        let m = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).is_some_and(|n| n.expires_ms <= now_ms)
    }

    pub fn len(&self) -> usize {
        self.noted.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask() -> Ask {
        Ask {
            target: "/r".into(),
            headers: HeaderMap::new(),
            body: None,
        }
    }

    #[test]
    fn due_once_then_again_after_renewal() {
        let a = Ahead::default();
        a.hit("k", 100, 200, ask);
        assert!(a.due(99, 1000).is_empty());
        assert_eq!(a.due(100, 1000).len(), 1);
        assert!(a.due(150, 1000).is_empty(), "taken once");
        // The refreshed entry is hit: due again at its own time.
        a.hit("k", 300, 400, ask);
        assert!(a.due(299, 1000).is_empty());
        assert_eq!(a.due(300, 1000).len(), 1);
    }

    #[test]
    fn misses_after_hits_and_forgetting() {
        let a = Ahead::default();
        a.hit("k", 100, 200, ask);
        assert!(!a.was_hit("k", 150), "still alive");
        assert!(a.was_hit("k", 200));
        assert!(!a.was_hit("other", 200));
        a.due(1_300, 1000);
        assert_eq!(a.len(), 0, "forgotten a while after it expired");
    }
}
