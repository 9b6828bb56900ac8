//! One captured packet read: trusted source, DNS over UDP or (put back
//! together) TCP, the answer's chain matched against the watchlist, and its
//! addresses collected per set for the wake-up's commits.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Instant;

use super::provenance::AnswerInfo;
use super::stats::{Counters, PolicyBook};
use super::{Guard, Plan};
use crate::dns::decode::{decode, Chain, Decoded};
use crate::dns::name::{match_key, name_text};
use crate::dns::packet::{self, Skip, Transport};
use crate::dns::TcpStreams;
use crate::ipset::Entry;

/// Addresses of one set collected during a wake-up.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) entries: Vec<Entry>,
    pub(super) seen: HashSet<Entry>,
    /// The index in `Scratch::answers` of the answer that brought each entry.
    pub(super) why: Vec<usize>,
}

/// Buffers reused from one wake-up to the next.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) pending: Vec<Pending>,
    /// The matched answers of this wake-up (for the provenance record and notes).
    pub(super) answers: Vec<AnswerInfo>,
    /// Every address of every answer of this wake-up (for DNS-blind counting).
    pub(super) seen: Vec<IpAddr>,
}

/// What a packet is read against: the plan, the guard, the time.
pub(super) struct Ctx<'a> {
    pub(super) plan: &'a Plan,
    pub(super) guard: &'a Guard,
    /// Note every answer's addresses for DNS-blind counting.
    pub(super) note_seen: bool,
    pub(super) now: Instant,
}

/// One IP packet: every DNS message in it. True if an answer in it sent
/// addresses to a set: in hold mode it waits for the commit.
pub(super) fn handle_packet(
    payload: &[u8],
    ctx: &Ctx<'_>,
    book: &mut PolicyBook,
    counters: &mut Counters,
    scratch: &mut Scratch,
    streams: &mut TcpStreams,
) -> bool {
    let seg = match packet::parse_ip(payload) {
        Ok(s) => s,
        Err(skip) => return count_skip(counters, skip),
    };
    if !ctx.guard.trusts(&seg.src) {
        counters.untrusted += 1;
        return false;
    }
    if seg.transport == Transport::Tcp {
        // The packet is counted once here; its messages (none, or several)
        // are counted as they complete, maybe with this segment.
        if seg.payload.is_empty() {
            counters.non_dns += 1; // a bare SYN-ACK, ACK, FIN or RST
        } else {
            counters.tcp_segments += 1;
        }
        let mut routed = false;
        streams.feed(&seg, ctx.now, &mut |raw| {
            routed |= match decode(raw) {
                Ok(d) => handle_message(&d, ctx, book, counters, scratch),
                Err(_) => {
                    counters.tcp_malformed += 1;
                    false
                }
            }
        });
        return routed;
    }
    match decode(seg.payload) {
        Ok(d) => {
            counters.udp_dns += 1;
            handle_message(&d, ctx, book, counters, scratch)
        }
        Err(skip) => count_skip(counters, skip),
    }
}

/// Count a packet that yielded nothing; false (nothing routed).
fn count_skip(counters: &mut Counters, skip: Skip) -> bool {
    match skip {
        Skip::Malformed(_) => counters.malformed += 1,
        Skip::Incomplete => counters.incomplete += 1,
        Skip::NonDns => counters.non_dns += 1,
    }
    false
}

/// One DNS message; true if it sent addresses to a set.
fn handle_message(
    d: &Decoded,
    ctx: &Ctx<'_>,
    book: &mut PolicyBook,
    counters: &mut Counters,
    scratch: &mut Scratch,
) -> bool {
    counters.events += 1;
    if !d.is_response {
        // A spoofed query may carry answer records: it must add nothing.
        counters.queries_ignored += 1;
        return false;
    }
    counters.answers += 1;
    if d.rcode != 0 {
        counters.rcode_skipped += 1;
        return false;
    }
    let chain = Chain::follow(d);
    if ctx.note_seen {
        chain.addresses(|ip, _| scratch.seen.push(ip));
    }
    let n = chain.names.len();
    if scratch.keys.len() < n {
        scratch.keys.resize_with(n, Vec::new);
    }
    for (name, key) in chain.names.iter().zip(&mut scratch.keys) {
        match_key(name, key);
    }
    let Some(hit) = ctx.plan.watchlist.best(scratch.keys[..n].iter().map(Vec::as_slice)) else {
        counters.unwatched += 1;
        return false;
    };
    let policy = usize::from(hit.policy);
    let stats = book.of(policy);
    stats.matched += 1;
    let names: Vec<String> = chain.names.iter().map(|n| name_text(n)).collect();
    scratch.answers.push(AnswerInfo {
        qname: names.first().cloned().unwrap_or_default(),
        names,
        rule: ctx.plan.watchlist.domain(hit.domain).to_string(),
    });
    let why = scratch.answers.len() - 1;
    let mut routed = false;
    chain.addresses(|ip, from_hint| {
        if ctx.guard.protects(&ip) {
            stats.protected += 1;
            return;
        }
        let Some(si) = ctx.plan.set_for(policy, &ip) else {
            stats.v6_dropped += u64::from(ip.is_ipv6());
            return;
        };
        stats.hint_addresses += u64::from(from_hint);
        // process_queued sized `pending` for the plan: always there.
        let Some(p) = scratch.pending.get_mut(si) else { return };
        routed = true;
        let e = Entry::host(ip);
        if p.seen.insert(e) {
            p.entries.push(e);
            p.why.push(why);
        }
    });
    routed
}
