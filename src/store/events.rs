//! What instances sharing a store tell each other, and its wire format (Redis pub/sub).
//!
//! A message is `<version>\t<kind>\t<fields...>`, tab-separated; fields never hold a tab
//! (keys are made in `crate::key`, error texts have theirs replaced). A message of another
//! version or kind is ignored, so instances of two releases can share a store during an
//! upgrade: the worst an unread message costs is a waiter polling instead of waking.

/// The wire format's version; bump it when a message's meaning changes.
const VERSION: &str = "1";

/// What instances sharing a store tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A fill of `key` finished.
    Filled { key: String, result: FillReport },
    /// `key` was overwritten or deleted by instance `from`: drop in-process copies.
    Invalidate { from: String, key: String },
    /// A purge numbered `seq` was logged.
    Purged { seq: u64 },
    /// A fill queue slot was freed: queued fills may try again.
    SlotFreed,
    /// The subscription was (re)established: anything cached in-process may have missed
    /// invalidations while it was down. (Local: never on the wire.)
    Resubscribed,
    /// The subscription is down: in-process copies can no longer be trusted. (Local.)
    Lost,
}

/// How a fill ended, as the instances that waited for it need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillReport {
    /// The entry is in the store: read it.
    Stored,
    /// The response was not shareable: each waiter goes upstream on its own.
    Pass,
    /// The upstream failed; nothing was stored.
    Failed(String),
    /// The fill waited `upstream.queue_timeout` for its turn and did not start.
    Busy,
}

impl Event {
    /// The message to publish; `None` for the local events.
    pub fn encode(&self) -> Option<String> {
        let fields: Vec<&str> = match self {
            Event::Filled { key, result } => match result {
                FillReport::Stored => vec!["f", key, "stored"],
                FillReport::Pass => vec!["f", key, "pass"],
                FillReport::Busy => vec!["f", key, "busy"],
                FillReport::Failed(why) => {
                    let why = why.replace(['\t', '\n'], " ");
                    return Some(format!("{VERSION}\tf\t{key}\terror\t{why}"));
                }
            },
            Event::Invalidate { from, key } => vec!["i", from, key],
            Event::Purged { seq } => return Some(format!("{VERSION}\tp\t{seq}")),
            Event::SlotFreed => vec!["q"],
            Event::Resubscribed | Event::Lost => return None,
        };
        Some(format!("{VERSION}\t{}", fields.join("\t")))
    }

    /// Parses [`Event::encode`]'s output; `None` for anything else.
    pub fn decode(s: &str) -> Option<Event> {
        let mut it = s.split('\t');
        if it.next()? != VERSION {
            return None;
        }
        let kind = it.next()?;
        let fields: Vec<&str> = it.collect();
        match (kind, fields.as_slice()) {
            ("f", [key, "stored"]) => Some(Event::Filled {
                key: key.to_string(),
                result: FillReport::Stored,
            }),
            ("f", [key, "pass"]) => Some(Event::Filled {
                key: key.to_string(),
                result: FillReport::Pass,
            }),
            ("f", [key, "busy"]) => Some(Event::Filled {
                key: key.to_string(),
                result: FillReport::Busy,
            }),
            ("f", [key, "error", why]) => Some(Event::Filled {
                key: key.to_string(),
                result: FillReport::Failed(why.to_string()),
            }),
            ("i", [from, key]) => Some(Event::Invalidate {
                from: from.to_string(),
                key: key.to_string(),
            }),
            ("p", [seq]) => seq.parse().ok().map(|seq| Event::Purged { seq }),
            ("q", []) => Some(Event::SlotFreed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips() {
        let events = [
            Event::Filled {
                key: "slate:v1:e:ab".into(),
                result: FillReport::Stored,
            },
            Event::Filled {
                key: "k".into(),
                result: FillReport::Pass,
            },
            Event::Filled {
                key: "k".into(),
                result: FillReport::Busy,
            },
            Event::Filled {
                key: "k".into(),
                result: FillReport::Failed("upstream timed out after 60s".into()),
            },
            Event::Invalidate {
                from: "0123".into(),
                key: "k".into(),
            },
            Event::Purged { seq: 42 },
            Event::SlotFreed,
        ];
        for e in events {
            let wire = e.encode().expect("published");
            assert_eq!(Event::decode(&wire), Some(e), "{wire:?}");
        }
        assert_eq!(Event::Lost.encode(), None);
        assert_eq!(Event::Resubscribed.encode(), None);
    }

    #[test]
    fn an_error_text_cannot_break_the_framing() {
        let e = Event::Filled {
            key: "k".into(),
            result: FillReport::Failed("a\tb\nc".into()),
        };
        let back = Event::decode(&e.encode().unwrap()).unwrap();
        assert_eq!(
            back,
            Event::Filled {
                key: "k".into(),
                result: FillReport::Failed("a b c".into())
            }
        );
    }

    #[test]
    fn other_versions_and_garbage_are_ignored() {
        // The format before versions, and a future one.
        assert_eq!(Event::decode("f\tk\tstored"), None);
        assert_eq!(Event::decode("2\tf\tk\tstored"), None);
        assert_eq!(Event::decode("1\tf\tk\tmaybe"), None);
        assert_eq!(Event::decode("1\tp\tx"), None);
        assert_eq!(Event::decode(""), None);
    }
}
