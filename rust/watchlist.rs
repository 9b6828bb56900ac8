//! Every policy's domains compiled into one suffix matcher.
//!
//! A name matches a domain when it equals it or ends with "." + domain (label
//! boundaries: `badexample.org` does not match `example.org`). Across an
//! answer's chain of names (question, CNAME and SVCB targets) each name picks
//! its most specific domain; the answer goes to the policy whose match is the
//! most specific overall: the most labels, then the longest text, then the
//! earliest name of the chain. One answer goes to one policy.
//!
//! Memory matters on 128 MB routers: the domains live in one byte arena, and
//! an open-addressing table of `u32` indices finds them (about 40 bytes per
//! domain in all, against ~240 for a Python dict of strings). Every suffix
//! of a name is hashed in one backward pass, so a lookup costs one probe per
//! label.

use crate::error::{Error, Result};

/// Longest domain name (RFC 1035, text form without the trailing dot).
const MAX_NAME: usize = 253;
/// Labels of a name that are looked at, from the right. Real names have < 10.
const MAX_LABELS: usize = 128;

/// Where a domain was written: an index into `sources`, and a line (0: unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Index into the watchlist's sources (the config file, list files).
    pub source: u32,
    /// 1-based line number.
    pub line: u32,
}

/// What `add` did with a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// It is new.
    New,
    /// It was already there, for `policy`, written at `origin`; that one keeps it.
    Present {
        /// The policy that has it.
        policy: u16,
        /// Where it was first written.
        origin: Origin,
    },
}

/// The most specific watched domain of a name or chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The domain's index (see `Watchlist::domain`).
    pub domain: u32,
    /// Its policy.
    pub policy: u16,
    /// For a chain: the position of the name that matched (0 = the question).
    pub name_index: usize,
}

/// The compiled watchlist; build it with `add`, then share it read-only.
#[derive(Debug, Clone, Default)]
pub struct Watchlist {
    arena: Vec<u8>,
    /// End offset in `arena` of domain i (its start is the end of i - 1).
    ends: Vec<u32>,
    policy: Vec<u16>,
    origin: Vec<Origin>,
    /// Open addressing, linear probing: domain index + 1, 0 for empty.
    slots: Vec<u32>,
    sources: Vec<String>,
    per_policy: Vec<u32>,
}

/// FNV-1a over the bytes from the last to the first, so that walking a name
/// backwards yields the hash of every suffix on the way.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn hash_back(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// Whether `d` is a domain as the watchlist stores them: lower-case labels of
/// a-z 0-9 - _, 1..63 bytes each, not starting or ending with '-', at most
/// 253 bytes in all.
fn is_domain(d: &[u8]) -> bool {
    !d.is_empty()
        && d.len() <= MAX_NAME
        && d.split(|&b| b == b'.').all(|l| {
            (1..=63).contains(&l.len())
                && l.first() != Some(&b'-')
                && l.last() != Some(&b'-')
                && l.iter().all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
        })
}

impl Watchlist {
    /// An empty watchlist.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a file domains come from; returns its index for `add`.
    pub fn add_source(&mut self, path: &str) -> u32 {
        self.sources.push(path.to_string());
        (self.sources.len() - 1) as u32
    }

    /// Name source `index` anew (the file was converted, or moved); false if there is none.
    pub fn set_source(&mut self, index: u32, path: &str) -> bool {
        match self.sources.get_mut(index as usize) {
            Some(s) => {
                *s = path.to_string();
                true
            }
            None => false,
        }
    }

    /// The files domains came from, by index.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no domains.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// One more than the highest policy index with domains (0 when empty).
    pub fn policy_span(&self) -> usize {
        self.per_policy.len()
    }

    /// Domains that belong to `policy`.
    pub fn count(&self, policy: u16) -> usize {
        self.per_policy.get(usize::from(policy)).map_or(0, |&n| n as usize)
    }

    /// Add a normalized domain (lower-case, punycode, no trailing dot) for `policy`.
    /// A domain already present stays with the policy that added it first.
    pub fn add(&mut self, domain: &str, policy: u16, origin: Origin) -> Result<Added> {
        let d = domain.as_bytes();
        if !is_domain(d) {
            return Err(Error::InvalidArgument(format!("not a normalized domain: {domain:?}")));
        }
        if self.ends.len() >= u32::MAX as usize - 1
            || self.arena.len() + d.len() > u32::MAX as usize
        {
            return Err(Error::InvalidArgument("watchlist is full".to_string()));
        }
        if let Some(i) = self.find(d, hash_back(d)) {
            let i = i as usize;
            return Ok(Added::Present { policy: self.policy[i], origin: self.origin[i] });
        }
        if (self.ends.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.arena.extend_from_slice(d);
        self.ends.push(self.arena.len() as u32);
        self.policy.push(policy);
        self.origin.push(origin);
        let p = usize::from(policy);
        if self.per_policy.len() <= p {
            self.per_policy.resize(p + 1, 0);
        }
        self.per_policy[p] += 1;
        let index = (self.ends.len() - 1) as u32;
        self.place(index, hash_back(d));
        Ok(Added::New)
    }

    /// Give back memory reserved for growth once every domain is in.
    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.policy.shrink_to_fit();
        self.origin.shrink_to_fit();
        self.per_policy.shrink_to_fit();
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        self.slots = vec![0; size];
        for i in 0..self.ends.len() as u32 {
            let h = hash_back(self.domain_bytes(i));
            self.place(i, h);
        }
    }

    fn place(&mut self, index: u32, hash: u64) {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = index + 1;
    }

    fn find(&self, key: &[u8], hash: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            match self.slots[at] {
                0 => return None,
                s if self.domain_bytes(s - 1) == key => return Some(s - 1),
                _ => at = (at + 1) & mask,
            }
        }
    }

    fn domain_bytes(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.arena[start..self.ends[i] as usize]
    }

    /// Domain `i` as text.
    pub fn domain(&self, i: u32) -> &str {
        // Only bytes checked by `is_domain` (ASCII) ever enter the arena.
        std::str::from_utf8(self.domain_bytes(i)).unwrap_or("")
    }

    /// The policy of domain `i`.
    pub fn policy_of(&self, i: u32) -> u16 {
        self.policy[i as usize]
    }

    /// Where domain `i` was written.
    pub fn origin(&self, i: u32) -> Origin {
        self.origin[i as usize]
    }

    /// The domains of `policy`, in the order they were added.
    pub fn domains_of(&self, policy: u16) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len() as u32)
            .filter(move |&i| self.policy_of(i) == policy)
            .map(|i| self.domain(i))
    }

    /// The most specific watched domain that `key` (a name in match-key form:
    /// lower-case labels joined by '.') equals or is under.
    pub fn lookup(&self, key: &[u8]) -> Option<u32> {
        if self.ends.is_empty() || key.is_empty() {
            return None;
        }
        // Suffix starts, and the hash of each suffix, collected right to left;
        // then probed longest first (the most specific domain wins).
        let mut starts = [(0usize, 0u64); MAX_LABELS];
        let mut n = 0;
        let mut h = FNV_OFFSET;
        for i in (0..key.len()).rev() {
            h = (h ^ u64::from(key[i])).wrapping_mul(FNV_PRIME);
            if i == 0 || key[i - 1] == b'.' {
                if n == MAX_LABELS {
                    break;
                }
                starts[n] = (i, h);
                n += 1;
            }
        }
        starts[..n].iter().rev().find_map(|&(at, h)| self.find(&key[at..], h))
    }

    /// The winning domain of a chain of names in match-key form: the most
    /// labels, then the longest, then the earliest name.
    pub fn best<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Option<Hit> {
        let mut best: Option<(Hit, (usize, usize))> = None;
        for (name_index, key) in keys.into_iter().enumerate() {
            let Some(domain) = self.lookup(key) else { continue };
            let d = self.domain_bytes(domain);
            let rank = (d.iter().filter(|&&b| b == b'.').count(), d.len());
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((Hit { domain, policy: self.policy_of(domain), name_index }, rank));
            }
        }
        best.map(|(h, _)| h)
    }

    /// Bytes of heap this watchlist holds (for the footprint figures).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.ends.capacity() * 4
            + self.policy.capacity() * 2
            + self.origin.capacity() * std::mem::size_of::<Origin>()
            + self.slots.capacity() * 4
            + self.sources.iter().map(|s| s.capacity() + 24).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32) -> Origin {
        Origin { source: 0, line }
    }

    fn wl(domains: &[(&str, u16)]) -> Watchlist {
        let mut w = Watchlist::new();
        w.add_source("cfg.yaml");
        for (i, (d, p)) in domains.iter().enumerate() {
            w.add(d, *p, at(i as u32 + 1)).unwrap();
        }
        w
    }

    fn hit<'a>(w: &'a Watchlist, name: &str) -> Option<&'a str> {
        w.lookup(name.as_bytes()).map(|i| w.domain(i))
    }

    #[test]
    fn label_boundaries_and_most_specific() {
        let w = wl(&[("example.org", 0), ("video.example.org", 1), ("org", 2)]);
        assert_eq!(hit(&w, "example.org"), Some("example.org"));
        assert_eq!(hit(&w, "www.example.org"), Some("example.org"));
        assert_eq!(hit(&w, "a.video.example.org"), Some("video.example.org"));
        assert_eq!(hit(&w, "badexample.org"), Some("org"));
        assert_eq!(hit(&w, "example.com"), None);
        assert_eq!(hit(&w, ""), None);
        let w = wl(&[("example.org", 0)]);
        assert_eq!(hit(&w, "badexample.org"), None);
        assert_eq!(hit(&w, "xexample.org"), None);
        assert_eq!(hit(&w, "example.org.evil"), None);
        // A label with a byte no domain has (0 from match_key) never matches itself.
        assert_eq!(hit(&w, "a\0b.example.org"), Some("example.org"));
    }

    #[test]
    fn duplicates_stay_with_the_first_policy() {
        let mut w = wl(&[("dup.example", 0)]);
        assert_eq!(
            w.add("dup.example", 1, at(9)).unwrap(),
            Added::Present { policy: 0, origin: at(1) }
        );
        assert_eq!((w.len(), w.count(0), w.count(1)), (1, 1, 0));
        assert!(w.add("Bad.Example", 0, at(1)).is_err());
        assert!(w.add("a..b", 0, at(1)).is_err());
        assert!(w.add(&"a".repeat(64), 0, at(1)).is_err());
        assert!(w.add("", 0, at(1)).is_err());
        assert!(w.add("-x-.example", 0, at(1)).is_err());
        assert!(w.add("x-.example", 0, at(1)).is_err());
        assert!(w.add("a-b.example", 0, at(1)).is_ok());
    }

    #[test]
    fn chain_picks_most_labels_then_longest_then_first() {
        let w = wl(&[("example.com", 0), ("cdn.example.net", 1), ("example.net", 2), ("b.io", 3)]);
        let keys: [&[u8]; 2] = [b"www.example.com", b"edge.cdn.example.net"];
        let h = w.best(keys).unwrap();
        assert_eq!((h.policy, h.name_index), (1, 1));
        let keys: [&[u8]; 2] = [b"x.example.com", b"y.example.net"];
        assert_eq!(w.best(keys).unwrap().policy, 0, "tie on labels and length: first name");
        let keys: [&[u8]; 2] = [b"q.b.io", b"example.com"];
        assert_eq!(w.best(keys).unwrap().policy, 0, "same labels, longer text wins");
        let keys: [&[u8]; 1] = [b"nothing.example"];
        assert!(w.best(keys).is_none());
    }

    #[test]
    fn many_domains_and_growth() {
        let mut w = Watchlist::new();
        for i in 0..20_000u32 {
            w.add(&format!("d{i}.example"), (i % 3) as u16, at(i)).unwrap();
        }
        assert_eq!(w.len(), 20_000);
        for i in (0..20_000).step_by(997) {
            let name = format!("www.d{i}.example");
            let d = w.lookup(name.as_bytes()).unwrap();
            assert_eq!(w.domain(d), format!("d{i}.example"));
            assert_eq!(w.origin(d).line, i);
        }
        assert!(w.lookup(b"d20000.example").is_none());
        assert_eq!(w.domains_of(1).count(), w.count(1));
        w.shrink_to_fit();
        assert!(w.heap_bytes() < 20_000 * 48, "{} bytes", w.heap_bytes());
    }
}
