//! What brought each learned address into its set: the answer's names, the
//! policy, when it was first and last seen. `hrneo why` reads it; a reload uses
//! it to take out the addresses no remaining rule would bring.
//!
//! Bounded: at most `MAX_RECORDS` (address, set) records; past that the one
//! learned longest ago is forgotten (it stays in its set; `why` then says it
//! knows nothing about it). Each record keeps at most `MAX_NAMES` names.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use super::Plan;
use crate::dns::name::text_match_key;

/// Records kept at most (~200 bytes each).
pub const MAX_RECORDS: usize = 20_000;
/// Names (question, CNAME and SVCB targets) kept per record at most.
const MAX_NAMES: usize = 8;

/// Why one address is in one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhyRecord {
    /// The set.
    pub set: Arc<str>,
    /// The policy whose rule matched.
    pub policy: Arc<str>,
    /// The question of the answer that brought it first.
    pub qname: String,
    /// The names of the answers that brought it (question first, then the
    /// chain), at most `MAX_NAMES`, oldest first.
    pub names: Vec<String>,
    /// The watchlist domain that matched, last time.
    pub rule: String,
    /// Unix time of the first answer that carried it (in this daemon's life).
    pub first_seen: u64,
    /// Unix time of the last one.
    pub last_seen: u64,
    /// Answers that carried it.
    pub answers: u64,
    /// Whether the first answer found it new to the set (false: it was there
    /// already, put by an earlier run or by someone else).
    pub added: bool,
}

/// What one matched answer tells about the addresses it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerInfo {
    /// Its question, as text.
    pub qname: String,
    /// Every name of its chain (question first).
    pub names: Vec<String>,
    /// The watchlist domain that matched.
    pub rule: String,
}

/// The bounded record.
#[derive(Debug, Default)]
pub struct Provenance {
    records: HashMap<(IpAddr, Arc<str>), WhyRecord>,
    /// Keys in the order they were first recorded, for eviction.
    order: VecDeque<(IpAddr, Arc<str>)>,
}

impl Provenance {
    /// Note that `addr` went into `set` (for `policy`) because of `answer`, at
    /// unix time `now`; `new`: the commit found it absent.
    pub fn note(
        &mut self,
        addr: IpAddr,
        set: &Arc<str>,
        policy: &Arc<str>,
        answer: &AnswerInfo,
        new: bool,
        now: u64,
    ) {
        let key = (addr, set.clone());
        if let Some(r) = self.records.get_mut(&key) {
            r.last_seen = now;
            r.answers += 1;
            r.policy = policy.clone();
            r.rule.clone_from(&answer.rule);
            for n in &answer.names {
                if !r.names.contains(n) {
                    if r.names.len() == MAX_NAMES {
                        r.names.remove(0);
                    }
                    r.names.push(n.clone());
                }
            }
            return;
        }
        if self.records.len() >= MAX_RECORDS {
            self.evict();
        }
        let mut names = answer.names.clone();
        names.truncate(MAX_NAMES);
        self.records.insert(
            key.clone(),
            WhyRecord {
                set: set.clone(),
                policy: policy.clone(),
                qname: answer.qname.clone(),
                names,
                rule: answer.rule.clone(),
                first_seen: now,
                last_seen: now,
                answers: 1,
                added: new,
            },
        );
        self.order.push_back(key);
    }

    fn evict(&mut self) {
        while let Some(k) = self.order.pop_front() {
            if self.records.remove(&k).is_some() {
                return;
            }
        }
    }

    /// Every record of `addr` (one per set it was learned into).
    pub fn of(&self, addr: &IpAddr) -> Vec<WhyRecord> {
        let mut out: Vec<WhyRecord> =
            self.records.iter().filter(|((a, _), _)| a == addr).map(|(_, r)| r.clone()).collect();
        out.sort_by(|a, b| a.set.cmp(&b.set));
        out
    }

    /// Records kept now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Remove and return the records `keep` refuses (a reload: their names no
    /// longer match their policy).
    pub fn take_unless(
        &mut self,
        mut keep: impl FnMut(&WhyRecord) -> bool,
    ) -> Vec<(IpAddr, WhyRecord)> {
        let gone: Vec<(IpAddr, Arc<str>)> =
            self.records.iter().filter(|(_, r)| !keep(r)).map(|(k, _)| k.clone()).collect();
        let out = gone.iter().filter_map(|k| self.records.remove(k).map(|r| (k.0, r))).collect();
        if !gone.is_empty() {
            self.order.retain(|k| self.records.contains_key(k));
        }
        out
    }
}

/// Whether answers with `r`'s names would still go to `r`'s policy under `plan`
/// (the names are matched together, as the pipeline matches an answer's chain).
pub(super) fn still_brought(plan: &Plan, r: &WhyRecord) -> bool {
    let Some(pi) = plan.policies.iter().position(|p| *p.name == *r.policy) else {
        return false;
    };
    let keys: Vec<Vec<u8>> = r
        .names
        .iter()
        .map(|n| {
            let mut k = Vec::new();
            text_match_key(n, &mut k);
            k
        })
        .collect();
    plan.watchlist.best(keys.iter().map(Vec::as_slice)).is_some_and(|h| usize::from(h.policy) == pi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(names: &[&str], rule: &str) -> AnswerInfo {
        AnswerInfo {
            qname: names[0].to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
            rule: rule.to_string(),
        }
    }

    #[test]
    fn first_answer_is_kept_later_ones_update() {
        let mut p = Provenance::default();
        let (set, pol): (Arc<str>, Arc<str>) = ("hr_vpn".into(), "vpn".into());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        p.note(
            a,
            &set,
            &pol,
            &answer(&["www.example.org", "cdn.example.net"], "example.org"),
            true,
            100,
        );
        p.note(a, &set, &pol, &answer(&["api.example.org"], "example.org"), false, 160);
        let r = &p.of(&a)[0];
        assert_eq!(
            (r.qname.as_str(), r.first_seen, r.last_seen, r.answers, r.added),
            ("www.example.org", 100, 160, 2, true)
        );
        assert_eq!(r.names, ["www.example.org", "cdn.example.net", "api.example.org"]);
        assert!(p.of(&"192.0.2.2".parse().unwrap()).is_empty());
    }

    #[test]
    fn bounded_oldest_first() {
        let mut p = Provenance::default();
        let (set, pol): (Arc<str>, Arc<str>) = ("s".into(), "p".into());
        for i in 0..(MAX_RECORDS as u32 + 10) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0000 + i));
            p.note(a, &set, &pol, &answer(&["a.example"], "example"), true, u64::from(i));
        }
        assert_eq!(p.len(), MAX_RECORDS);
        assert!(p.of(&IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0000u32))).is_empty());
        assert_eq!(p.of(&IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0000u32 + 10))).len(), 1);
    }

    #[test]
    fn take_unless_removes_and_returns() {
        let mut p = Provenance::default();
        let (s1, s2, pol): (Arc<str>, Arc<str>, Arc<str>) = ("s1".into(), "s2".into(), "p".into());
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        p.note(a, &s1, &pol, &answer(&["gone.example"], "gone.example"), true, 1);
        p.note(a, &s2, &pol, &answer(&["kept.example"], "kept.example"), true, 1);
        let gone = p.take_unless(|r| r.rule != "gone.example");
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].1.set, "s1");
        assert_eq!(p.of(&a).len(), 1);
        assert_eq!(p.len(), 1);
    }
}
