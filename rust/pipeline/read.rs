//! One captured packet read: trusted source, DNS over UDP or (put back
//! together) TCP, the answer's chain matched against the watchlist, and its
//! addresses collected per set for the wake-up's commits.

use std::collections::HashSet;
use std::time::Instant;

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
    /// With verbose notes: the index in `Scratch::qnames` of the answer that brought each.
    pub(super) why: Vec<usize>,
}

/// Buffers reused from one wake-up to the next.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) pending: Vec<Pending>,
    pub(super) qnames: Vec<String>,
}

/// What a packet is read against: the plan, the guard, the log verbosity, the time.
pub(super) struct Ctx<'a> {
    pub(super) plan: &'a Plan,
    pub(super) guard: &'a Guard,
    pub(super) verbose: bool,
    pub(super) now: Instant,
}

/// One IP packet: every DNS message in it.
pub(super) fn handle_packet(
    payload: &[u8],
    ctx: &Ctx<'_>,
    book: &mut PolicyBook,
    counters: &mut Counters,
    scratch: &mut Scratch,
    streams: &mut TcpStreams,
) {
    let seg = match packet::parse_ip(payload) {
        Ok(s) => s,
        Err(skip) => return count_skip(counters, skip),
    };
    if !ctx.guard.trusts(&seg.src) {
        counters.untrusted += 1;
        return;
    }
    if seg.transport == Transport::Tcp {
        if seg.payload.is_empty() {
            counters.non_dns += 1; // a bare FIN or RST
        }
        // Messages complete when their last segment arrives, maybe this one.
        return streams.feed(&seg, ctx.now, &mut |raw| match decode(raw) {
            Ok(d) => handle_message(&d, ctx, book, counters, scratch),
            Err(skip) => count_skip(counters, skip),
        });
    }
    match decode(seg.payload) {
        Ok(d) => handle_message(&d, ctx, book, counters, scratch),
        Err(skip) => count_skip(counters, skip),
    }
}

fn count_skip(counters: &mut Counters, skip: Skip) {
    match skip {
        Skip::Malformed(_) => counters.malformed += 1,
        Skip::Incomplete => counters.incomplete += 1,
        Skip::NonDns => counters.non_dns += 1,
    }
}

fn handle_message(
    d: &Decoded,
    ctx: &Ctx<'_>,
    book: &mut PolicyBook,
    counters: &mut Counters,
    scratch: &mut Scratch,
) {
    counters.events += 1;
    if !d.is_response {
        // A spoofed query may carry answer records: it must add nothing.
        counters.queries_ignored += 1;
        return;
    }
    counters.answers += 1;
    if d.rcode != 0 {
        counters.rcode_skipped += 1;
        return;
    }
    let chain = Chain::follow(d);
    let n = chain.names.len();
    if scratch.keys.len() < n {
        scratch.keys.resize_with(n, Vec::new);
    }
    for (name, key) in chain.names.iter().zip(&mut scratch.keys) {
        match_key(name, key);
    }
    let Some(hit) = ctx.plan.watchlist.best(scratch.keys[..n].iter().map(Vec::as_slice)) else {
        counters.unwatched += 1;
        return;
    };
    let policy = usize::from(hit.policy);
    let stats = book.of(policy);
    stats.matched += 1;
    let why = if ctx.verbose {
        scratch.qnames.push(chain.names.first().map(|q| name_text(q)).unwrap_or_default());
        scratch.qnames.len() - 1
    } else {
        0
    };
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
        let e = Entry::host(ip);
        if p.seen.insert(e) {
            p.entries.push(e);
            if ctx.verbose {
                p.why.push(why);
            }
        }
    });
}
