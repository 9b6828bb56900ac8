//! The conntrack table as the events describe it, indexed by address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::message::{DumpedEntry, Event, Victim};

/// The conntrack table as the events describe it: entries by identity, and
/// entry identities by address (original destination and reply source).
///
/// It is either valid (holds every entry since its last rebuild, as far as the
/// events told) or invalid (empty; only a rebuild makes it valid again).
#[derive(Debug)]
pub struct EntryIndex {
    entries: HashSet<Arc<Victim>>,
    by_addr: HashMap<IpAddr, HashSet<Arc<Victim>>>,
    cap: usize,
    valid: bool,
    /// Times the cap was reached.
    pub overflows: u64,
}

impl EntryIndex {
    /// An invalid (never built) index that holds at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        EntryIndex {
            entries: HashSet::new(),
            by_addr: HashMap::new(),
            cap,
            valid: false,
            overflows: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether it holds every entry since the last `rebuild`.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// Forget everything; lookups are refused until `rebuild`.
    pub fn invalidate(&mut self) {
        self.entries = HashSet::new();
        self.by_addr = HashMap::new();
        self.valid = false;
    }

    /// Start over, empty and valid: the caller inserts a whole dump next.
    pub fn rebuild(&mut self) {
        self.invalidate();
        self.valid = true;
    }

    /// Add an entry (a duplicate is ignored). Past the cap the index is dropped:
    /// returns false then, and while invalid.
    pub fn insert(&mut self, e: &DumpedEntry<'_>) -> bool {
        if !self.valid {
            return false;
        }
        let v = e.victim();
        if self.entries.contains(&v) {
            return true;
        }
        if self.entries.len() >= self.cap {
            self.overflows += 1;
            self.invalidate();
            return false;
        }
        let v = Arc::new(v);
        self.by_addr.entry(e.orig_dst).or_default().insert(Arc::clone(&v));
        if let Some(r) = e.reply_src.filter(|r| *r != e.orig_dst) {
            self.by_addr.entry(r).or_default().insert(Arc::clone(&v));
        }
        self.entries.insert(v);
        true
    }

    /// Forget an entry (nothing happens if it is not held).
    pub fn remove(&mut self, v: &Victim) {
        let Some(key) = self.entries.take(v) else {
            return;
        };
        for addr in std::iter::once(key.orig_dst).chain(key.reply_src) {
            if let Some(set) = self.by_addr.get_mut(&addr) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_addr.remove(&addr);
                }
            }
        }
    }

    /// Every entry whose original destination or reply source is in `addrs`, once.
    /// None while invalid.
    pub fn lookup(&self, addrs: &HashSet<IpAddr>) -> Option<Vec<Victim>> {
        if !self.valid {
            return None;
        }
        let mut seen: HashSet<&Arc<Victim>> = HashSet::new();
        let mut out = Vec::new();
        for a in addrs {
            for v in self.by_addr.get(a).into_iter().flatten() {
                if seen.insert(v) {
                    out.push(Victim::clone(v));
                }
            }
        }
        Some(out)
    }

    /// Apply one event. Events are ignored while the index is invalid.
    pub fn apply(&mut self, ev: &Event<'_>) {
        match ev {
            Event::New(e) => {
                self.insert(e);
            }
            Event::Destroy(e) => {
                if self.valid {
                    self.remove(&e.victim());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::message::fixtures::*;
    use crate::conntrack::message::parse_event;
    use crate::nl::messages;

    #[test]
    fn index_finds_by_orig_dst_and_reply_src_once() {
        let by_dst = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        let by_reply = captured_v4([192, 0, 2, 99], [203, 0, 113, 250]);
        let other = tuple_msg([192, 0, 2, 1], [198, 51, 100, 8], 5);
        let mut ix = EntryIndex::new(10);
        assert!(ix.lookup(&addrs(&["198.51.100.7"])).is_none(), "never built: no answer");
        ix.rebuild();
        for b in [&by_dst, &by_reply, &other, &by_dst] {
            assert!(ix.insert(&entry_of(b)));
        }
        assert_eq!(ix.len(), 3, "a duplicate is one entry");
        let hit = |ix: &EntryIndex, a: &[&str]| ix.lookup(&addrs(a)).unwrap();
        assert_eq!(hit(&ix, &["198.51.100.7"]), vec![entry_of(&by_dst).victim()]);
        assert_eq!(hit(&ix, &["203.0.113.250"]), vec![entry_of(&by_reply).victim()]);
        assert_eq!(hit(&ix, &["192.0.2.99"]), vec![entry_of(&by_reply).victim()]);
        assert_eq!(hit(&ix, &["198.51.100.8", "198.51.100.7"]).len(), 2);
        assert!(hit(&ix, &["192.0.2.1", "2001:db8::1"]).is_empty(), "orig src is no match");
        ix.remove(&entry_of(&by_reply).victim());
        assert!(hit(&ix, &["203.0.113.250"]).is_empty());
        assert!(hit(&ix, &["192.0.2.99"]).is_empty());
        assert_eq!(ix.len(), 2);
        assert!(!ix.by_addr.contains_key(&"203.0.113.250".parse::<IpAddr>().unwrap()));
        ix.remove(&entry_of(&by_reply).victim()); // twice: no-op
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn events_keep_the_index_and_ids_tell_replacements_apart() {
        let old = tuple_msg([192, 0, 2, 1], [198, 51, 100, 7], 1);
        let new = tuple_msg([192, 0, 2, 1], [198, 51, 100, 7], 2); // same tuple, new entry
        let mut ix = EntryIndex::new(10);
        ix.rebuild();
        // The new entry is in the dump; the old one's end was queued before the dump
        // and is applied after it: it must not remove the new one.
        ix.insert(&entry_of(&new));
        let gone = as_destroy(old.clone());
        ix.apply(&parse_event(&messages(&gone).next().unwrap()).unwrap());
        let want = addrs(&["198.51.100.7"]);
        assert_eq!(ix.lookup(&want).unwrap(), vec![entry_of(&new).victim()]);
        let gone_new = as_destroy(new.clone());
        ix.apply(&parse_event(&messages(&gone_new).next().unwrap()).unwrap());
        assert!(ix.lookup(&want).unwrap().is_empty());
        assert!(ix.is_empty());
        // While invalid, events change nothing and lookups are refused.
        ix.invalidate();
        ix.apply(&parse_event(&messages(&new).next().unwrap()).unwrap());
        assert!(ix.is_empty() && ix.lookup(&want).is_none());
    }

    #[test]
    fn index_past_its_cap_is_dropped_until_rebuilt() {
        let mut ix = EntryIndex::new(3);
        ix.rebuild();
        for i in 0..3u8 {
            assert!(ix.insert(&entry_of(&tuple_msg([192, 0, 2, 1], [198, 51, 100, i], 0))));
        }
        let again = tuple_msg([192, 0, 2, 1], [198, 51, 100, 0], 0);
        assert!(ix.insert(&entry_of(&again)), "a duplicate does not count against the cap");
        let fourth = tuple_msg([192, 0, 2, 1], [198, 51, 100, 3], 0);
        assert!(!ix.insert(&entry_of(&fourth)));
        assert!(!ix.is_valid() && ix.is_empty() && ix.overflows == 1);
        assert!(!ix.insert(&entry_of(&again)), "no inserts while invalid");
        assert!(ix.lookup(&addrs(&["198.51.100.0"])).is_none());
        ix.rebuild();
        assert!(ix.insert(&entry_of(&fourth)));
        assert_eq!(ix.lookup(&addrs(&["198.51.100.3"])).unwrap().len(), 1);
    }
}
