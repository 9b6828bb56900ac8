//! The pipeline's counters: of the whole, and of each policy (kept by name
//! across reloads).

use super::Plan;

/// Counters of one policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    /// Answers whose chain matched the policy.
    pub matched: u64,
    /// Addresses sent to its sets.
    pub added: u64,
    /// Of those, not present before.
    pub new: u64,
    /// Of those, present: their timeout was refreshed.
    pub refreshed: u64,
    /// Conntrack entries deleted for its new addresses.
    pub flushed: u64,
    /// Failed commits.
    pub errors: u64,
    /// IPv6 addresses with no IPv6 set to go to.
    pub v6_dropped: u64,
    /// Addresses that came from SVCB/HTTPS hints.
    pub hint_addresses: u64,
    /// Addresses left out: the router needs them, or they route nowhere.
    pub protected: u64,
    /// Commits that found a set full (maxelem reached).
    pub set_full: u64,
    /// Addresses a failed commit did not put into a set.
    pub not_added: u64,
}

impl PolicyCounters {
    /// Every counter with its name.
    pub fn as_pairs(&self) -> [(&'static str, u64); 11] {
        [
            ("matched", self.matched),
            ("added", self.added),
            ("new", self.new),
            ("refreshed", self.refreshed),
            ("flushed", self.flushed),
            ("errors", self.errors),
            ("v6_dropped", self.v6_dropped),
            ("hint_addresses", self.hint_addresses),
            ("protected", self.protected),
            ("set_full", self.set_full),
            ("not_added", self.not_added),
        ]
    }
}

/// Counters of the whole pipeline.
///
/// Per packet read, exactly one of `udp_dns`, `tcp_segments`, `untrusted`,
/// `malformed`, `incomplete`, `non_dns` moves (see `packets_read`). Per DNS
/// message (a UDP packet carries one, a TCP segment any number): `events`,
/// which is `answers` + `queries_ignored`; a TCP message that does not decode
/// is `tcp_malformed` instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// DNS messages seen.
    pub events: u64,
    /// Of those, answers.
    pub answers: u64,
    /// Queries (they may carry answer records; they add nothing).
    pub queries_ignored: u64,
    /// Answers with an error RCODE.
    pub rcode_skipped: u64,
    /// Answers on no watchlist.
    pub unwatched: u64,
    /// Packets from a source that is not a trusted resolver.
    pub untrusted: u64,
    /// Packets with broken headers, or a UDP DNS message that does not decode.
    pub malformed: u64,
    /// Packets cut short (first fragments, truncated copies).
    pub incomplete: u64,
    /// Packets that were not DNS (later fragments, TCP segments without payload).
    pub non_dns: u64,
    /// UDP packets that carried a DNS message (then counted in `events`).
    pub udp_dns: u64,
    /// TCP segments with payload, handed to reassembly (their messages are
    /// counted in `events` as they complete).
    pub tcp_segments: u64,
    /// DNS messages put together from TCP segments that did not decode.
    pub tcp_malformed: u64,
    /// Commits that failed (wholly or for some entries).
    pub commit_errors: u64,
    /// Sets re-created after they vanished.
    pub sets_recreated: u64,
    /// Socket read errors.
    pub read_errors: u64,
    /// Wake-ups that found packets.
    pub wakeups: u64,
}

impl Counters {
    /// Every counter with its name.
    pub fn as_pairs(&self) -> [(&'static str, u64); 16] {
        [
            ("events", self.events),
            ("answers", self.answers),
            ("queries_ignored", self.queries_ignored),
            ("rcode_skipped", self.rcode_skipped),
            ("unwatched", self.unwatched),
            ("untrusted", self.untrusted),
            ("malformed", self.malformed),
            ("incomplete", self.incomplete),
            ("non_dns", self.non_dns),
            ("udp_dns", self.udp_dns),
            ("tcp_segments", self.tcp_segments),
            ("tcp_malformed", self.tcp_malformed),
            ("commit_errors", self.commit_errors),
            ("sets_recreated", self.sets_recreated),
            ("read_errors", self.read_errors),
            ("wakeups", self.wakeups),
        ]
    }

    /// Packets read, by what each was: the sum of the per-packet counters.
    pub fn packets_read(&self) -> u64 {
        self.udp_dns
            + self.tcp_segments
            + self.untrusted
            + self.malformed
            + self.incomplete
            + self.non_dns
    }
}

/// Per-policy counters kept by policy name, so they survive a reload.
#[derive(Default)]
pub(super) struct PolicyBook {
    pub(super) slots: Vec<(String, PolicyCounters)>,
    /// Plan policy index -> slot.
    pub(super) slot_of: Vec<usize>,
}

impl PolicyBook {
    pub(super) fn attach(&mut self, plan: &Plan) {
        self.slot_of = plan
            .policies
            .iter()
            .map(|p| match self.slots.iter().position(|(n, _)| *n == p.name) {
                Some(i) => i,
                None => {
                    self.slots.push((p.name.clone(), PolicyCounters::default()));
                    self.slots.len() - 1
                }
            })
            .collect();
    }

    pub(super) fn of(&mut self, policy: usize) -> &mut PolicyCounters {
        &mut self.slots[self.slot_of[policy]].1
    }
}
