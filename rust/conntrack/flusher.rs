//! Deleting conntrack entries by address over ctnetlink (nfnetlink subsystem 1).
//!
//! Router kernels (3.4 to 4.9) cannot filter a dump by address (CTA_FILTER is
//! 5.8+) and the flush command takes no filter, so one `flush` call does: one
//! dump (of the one family asked for, or AF_UNSPEC for both), a userspace filter
//! against a `HashSet` of all the addresses, then DELETE messages batched into as
//! few datagrams as the ack receive buffer allows. Each DELETE carries the
//! entry's original tuple exactly as dumped plus its CTA_ID, so an entry that
//! was replaced in the meantime is not touched (the kernel answers ENOENT).
//!
//! With tracking on, a second socket listens to the NEW and DESTROY events and
//! keeps an [`EntryIndex`] (address -> entries), so a flush is a lookup plus the
//! DELETEs. The index is only trusted while no event was lost; otherwise the
//! flush does the one dump as before and rebuilds the index from it.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::filter;
use super::index::EntryIndex;
use super::message::*;
use crate::blind::Blind;
use crate::nl::consts::AF_UNSPEC;
use crate::nl::{messages, Datagram, NetfilterSocket, NlMsg};
use crate::{Error, Result};

/// Receive buffer asked for: dumps arrive in skbs of up to 32 KiB, and every
/// DELETE of a batch queues one ack skb before we read any of them.
const RCVBUF: usize = 4 * 1024 * 1024;
/// Send buffer: a datagram must fit in it whole (the kernel refuses larger ones).
const SNDBUF: usize = 1024 * 1024;
/// What one queued ack costs in the receive buffer (skb truesize), with margin.
const ACK_TRUESIZE: usize = 2048;
const MAX_BATCH: usize = 1024;
const MIN_BATCH: usize = 16;
/// Event socket receive buffer: a few seconds of a busy router's new and
/// destroyed entries (one skb of ~1 KiB truesize each) between two drains.
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub(crate) const EVENT_RCVBUF: usize = 8 * 1024 * 1024;
/// Index size beyond which it is dropped (dump mode) rather than grown.
pub(crate) const INDEX_CAP: usize = 1_000_000;
/// Reads per drain: far more than a full event buffer holds, so hitting it means
/// entries are made as fast as we read, and the queue cannot be emptied now.
const MAX_DRAIN_RECVS: usize = 262_144;
/// One event is one message of a few hundred bytes; room to spare.
const EVENT_BUF: usize = 64 * 1024;

/// Counters over the lifetime of one flusher.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlusherStats {
    /// `flush` calls that reached the kernel (empty input does not).
    pub calls: u64,
    /// Entries received in dumps.
    pub dumped: u64,
    /// Dumped entries whose original destination or reply source matched.
    pub matched: u64,
    /// Entries deleted.
    pub deleted: u64,
    /// DELETEs answered ENOENT: the entry went (or was replaced) after the dump.
    pub already_gone: u64,
    /// DELETEs refused with any other error.
    pub errors: u64,
    /// Dump or event messages that could not be parsed (skipped).
    pub unparsed: u64,
    /// 1 while the event socket is subscribed (track asked for and granted).
    pub tracking: u64,
    /// Entries in the index now (0 while it is invalid).
    pub index_entries: u64,
    /// Event messages read (NEW and DESTROY).
    pub events: u64,
    /// Dumps that (re)built the index, the initial one included.
    pub resyncs: u64,
    /// ENOBUFS on the event socket: events were dropped, the index was invalidated.
    pub lost: u64,
    /// Flushes answered from the index (no dump).
    pub index_lookups: u64,
    /// Times the index reached INDEX_CAP and was dropped.
    pub index_full: u64,
    /// 1 while the events of DNS flows are dropped in the kernel (see `filter`).
    pub dns_filtered: u64,
}

impl FlusherStats {
    /// Every counter with its name, for status reports.
    pub fn as_pairs(&self) -> [(&'static str, u64); 15] {
        [
            ("calls", self.calls),
            ("dumped", self.dumped),
            ("matched", self.matched),
            ("deleted", self.deleted),
            ("already_gone", self.already_gone),
            ("errors", self.errors),
            ("unparsed", self.unparsed),
            ("tracking", self.tracking),
            ("index_entries", self.index_entries),
            ("events", self.events),
            ("resyncs", self.resyncs),
            ("lost", self.lost),
            ("index_lookups", self.index_lookups),
            ("index_full", self.index_full),
            ("dns_filtered", self.dns_filtered),
        ]
    }
}

/// What one flush deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// Entries deleted.
    pub deleted: u64,
    /// Entries deleted per address of the request (addresses with none are absent).
    pub per_address: HashMap<IpAddr, u32>,
}

/// The event socket (subscribed to NEW and DESTROY, non-blocking) and the index it feeds.
struct Tracker {
    sock: NetfilterSocket,
    buf: Vec<u8>,
    index: EntryIndex,
    filtered: bool,
    /// Where new connections are reported for DNS-blind counting.
    blind: Option<Arc<Mutex<Blind>>>,
    /// New connections of this drain: (source, destination).
    opened: Vec<(IpAddr, IpAddr)>,
}

impl Tracker {
    /// Subscribe, so that every entry confirmed from now on is queued to us.
    /// DNS flows are filtered out in the kernel (see `filter`); a kernel that
    /// refuses the filter only costs their events.
    fn open(rcvbuf: usize) -> io::Result<Self> {
        let sock = NetfilterSocket::open()?;
        let filtered = filter::attach(sock.fd()).is_ok();
        sock.join_groups(&[NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY])?;
        sock.set_rcvbuf(rcvbuf)?;
        sock.set_nonblocking(true)?;
        let index = EntryIndex::new(INDEX_CAP);
        Ok(Tracker {
            sock,
            buf: vec![0; EVENT_BUF],
            index,
            filtered,
            blind: None,
            opened: Vec::new(),
        })
    }

    /// Read every queued event into the index; returns how many were read.
    /// A lost event (ENOBUFS) or a queue that will not empty invalidates the index.
    fn drain(&mut self, stats: &mut FlusherStats) -> io::Result<u64> {
        let mut n = 0;
        let res = self.drain_counting(stats, &mut n);
        if let (Some(b), false) = (&self.blind, self.opened.is_empty()) {
            if let Ok(mut b) = b.lock() {
                self.opened.drain(..).for_each(|(src, dst)| b.connection(src, dst));
            }
            self.opened.clear();
        }
        stats.events += n;
        if res.is_err() {
            self.index.invalidate();
        }
        res.map(|()| n)
    }

    fn drain_counting(&mut self, stats: &mut FlusherStats, n: &mut u64) -> io::Result<()> {
        for _ in 0..MAX_DRAIN_RECVS {
            match self.sock.recv_into(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(len) => {
                    for m in messages(self.buf.get(..len).unwrap_or(&[])) {
                        match parse_event(&m) {
                            Some(ev) => {
                                *n += 1;
                                if let (Event::New(e), Some(_)) = (&ev, &self.blind) {
                                    self.opened.extend(e.orig_src.map(|s| (s, e.orig_dst)));
                                }
                                self.index.apply(&ev);
                            }
                            None => stats.unparsed += 1,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The queue went on after the drop: keep reading to empty it.
                    stats.lost += 1;
                    self.index.invalidate();
                }
                Err(e) => return Err(e),
            }
        }
        self.index.invalidate();
        Ok(())
    }
}

/// Deletes conntrack entries by address; owns one netlink socket, and a second
/// one for events when tracking.
pub struct ConntrackFlusher {
    sock: NetfilterSocket,
    batch: usize,
    stats: FlusherStats,
    tracker: Option<Tracker>,
}

impl ConntrackFlusher {
    /// A dump-mode flusher (one table walk per flush).
    pub fn open() -> Result<Self> {
        let sock = NetfilterSocket::open().map_err(|e| Error::io("ctnetlink: open socket", e))?;
        // A failed resize still leaves a usable socket; the batch size follows what we got.
        let rcvbuf = sock.set_rcvbuf(RCVBUF).unwrap_or(208 * 1024);
        let _ = sock.set_sndbuf(SNDBUF);
        // Error acks then carry only the header instead of echoing each DELETE.
        sock.cap_acks();
        let batch = (rcvbuf / 2 / ACK_TRUESIZE).clamp(MIN_BATCH, MAX_BATCH);
        Ok(ConntrackFlusher { sock, batch, stats: FlusherStats::default(), tracker: None })
    }

    /// A flusher that keeps an index from conntrack events (receive buffer
    /// `event_rcvbuf`). If the kernel refuses the subscription (no
    /// CONFIG_NF_CONNTRACK_EVENTS, no permission) it quietly stays in dump mode.
    pub fn open_tracking(event_rcvbuf: usize) -> Result<Self> {
        let mut f = Self::open()?;
        if let Ok(t) = Tracker::open(event_rcvbuf) {
            f.tracker = Some(t);
            // Subscribed first, dumped second: an entry made in between is in the
            // dump, the event queue, or both (a duplicate is harmless).
            if f.resync(&HashSet::new()).is_err() {
                // The first flush dumps and tries again.
                if let Some(t) = f.tracker.as_mut() {
                    t.index.invalidate();
                }
            }
        }
        Ok(f)
    }

    /// Whether a flush now would be answered from the event index (no dump):
    /// tracking, and no event lost since the index was last built.
    pub fn index_ready(&self) -> bool {
        self.tracker.as_ref().is_some_and(|t| t.index.is_valid())
    }

    /// Report every new connection to `blind` (DNS-blind counting); false when
    /// not tracking (no conntrack events to learn them from).
    pub fn watch_blind(&mut self, blind: Arc<Mutex<Blind>>) -> bool {
        match self.tracker.as_mut() {
            Some(t) => {
                t.blind = Some(blind);
                true
            }
            None => false,
        }
    }

    /// The event socket's descriptor, when tracking.
    pub fn event_fd(&self) -> Option<i32> {
        self.tracker.as_ref().map(|t| t.sock.fd())
    }

    /// Counters so far (the index's size included).
    pub fn stats(&self) -> FlusherStats {
        let mut s = self.stats;
        if let Some(t) = &self.tracker {
            s.tracking = 1;
            s.dns_filtered = u64::from(t.filtered);
            s.index_entries = t.index.len() as u64;
            s.index_full = t.index.overflows;
        }
        s
    }

    /// Read the queued events into the index (call when `event_fd` is readable,
    /// so the buffer never overflows between flushes). Returns the events read.
    pub fn poll_events(&mut self) -> Result<u64> {
        match self.tracker.as_mut() {
            Some(t) => t.drain(&mut self.stats).map_err(|e| Error::io("ctnetlink: read events", e)),
            None => Ok(0),
        }
    }

    /// Delete every entry whose original destination or reply source is in
    /// `addrs`. Returns how many were deleted (ENOENT ones are not counted).
    pub fn flush(&mut self, addrs: &HashSet<IpAddr>) -> Result<u64> {
        self.flush_counted(addrs).map(|f| f.deleted)
    }

    /// `flush`, telling also how many entries were deleted for each address.
    pub fn flush_counted(&mut self, addrs: &HashSet<IpAddr>) -> Result<Flushed> {
        let mut out = Flushed::default();
        if addrs.is_empty() {
            return Ok(out);
        }
        self.stats.calls += 1;
        let victims = match self.tracker.as_mut() {
            Some(t) => {
                // Every entry confirmed before this call is queued by now: after
                // the drain the index knows it, unless events were lost. A read
                // error has invalidated the index, and the dump below covers it.
                let _ = t.drain(&mut self.stats);
                match t.index.lookup(addrs) {
                    Some(v) => {
                        self.stats.index_lookups += 1;
                        v
                    }
                    None => self.resync(addrs)?,
                }
            }
            None => {
                let mut v = Vec::new();
                self.collect(dump_family(addrs), addrs, &mut v)?;
                v
            }
        };
        self.stats.matched += victims.len() as u64;
        let mut deleted = 0;
        let sock = &mut self.sock;
        let batches = delete_datagrams(&victims, self.batch, || sock.next_seq());
        let mut chunks = victims.chunks(self.batch.max(1));
        for (d, seqs) in batches {
            let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else { continue };
            let replies = self
                .sock
                .request_failures(d.as_bytes(), first, last)
                .map_err(|e| Error::io("ctnetlink: delete", e))?;
            // Only failures are answered (and the last request): the rest were deleted.
            let codes: Vec<i32> =
                seqs.iter().map(|s| replies.get(s).copied().unwrap_or(0)).collect();
            let (ok, gone, failed) = tally(codes.iter().copied());
            deleted += ok;
            let chunk = chunks.next().unwrap_or(&[]);
            for (code, v) in codes.iter().zip(chunk) {
                if *code == 0 {
                    if let Some(a) = v.matched_in(addrs) {
                        *out.per_address.entry(a).or_insert(0) += 1;
                    }
                }
            }
            self.stats.already_gone += gone;
            self.stats.errors += failed;
            // Deleted or already gone: out of the index now, so the next flush
            // does not try again before the DESTROY event is read.
            if let Some(t) = self.tracker.as_mut() {
                for (&code, v) in codes.iter().zip(chunk) {
                    if code == 0 || code == -libc::ENOENT {
                        t.index.remove(v);
                    }
                }
            }
        }
        self.stats.deleted += deleted;
        out.deleted = deleted;
        Ok(out)
    }

    /// One dump of both families that rebuilds the index from every entry and
    /// returns the ones matching `addrs`; then the events queued meanwhile are applied.
    fn resync(&mut self, addrs: &HashSet<IpAddr>) -> Result<Vec<Victim>> {
        let Some(t) = self.tracker.as_mut() else {
            return Ok(Vec::new());
        };
        // What is queued now predates the dump, which supersedes it.
        t.index.invalidate();
        let _ = t.drain(&mut self.stats);
        t.index.rebuild();
        let seq = self.sock.next_seq();
        let mut req = Datagram::new();
        write_dump_request(&mut req, seq, AF_UNSPEC);
        let stats = &mut self.stats;
        let index = &mut t.index;
        let mut out = Vec::new();
        let mut on_msg = |m: &NlMsg<'_>| match parse_entry(m) {
            Some(e) => {
                stats.dumped += 1;
                if e.matches(addrs) {
                    out.push(e.victim());
                }
                index.insert(&e);
            }
            None => stats.unparsed += 1,
        };
        let res = self.sock.dump(req.as_bytes(), seq, &mut on_msg);
        self.stats.resyncs += 1;
        if let Err(e) = res {
            t.index.invalidate();
            return Err(Error::io("ctnetlink: dump conntrack table", e));
        }
        // Entries made or gone during the dump; a lost event invalidates again.
        let _ = t.drain(&mut self.stats);
        Ok(out)
    }

    fn collect(
        &mut self,
        family: u8,
        addrs: &HashSet<IpAddr>,
        out: &mut Vec<Victim>,
    ) -> Result<()> {
        let seq = self.sock.next_seq();
        let mut req = Datagram::new();
        write_dump_request(&mut req, seq, family);
        let stats = &mut self.stats;
        let mut on_msg = |m: &NlMsg<'_>| match parse_entry(m) {
            Some(e) => {
                stats.dumped += 1;
                if (family == AF_UNSPEC || e.family == family) && e.matches(addrs) {
                    out.push(e.victim());
                }
            }
            None => stats.unparsed += 1,
        };
        self.sock
            .dump(req.as_bytes(), seq, &mut on_msg)
            .map_err(|e| Error::io("ctnetlink: dump conntrack table", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_pairs_name_every_counter() {
        let s = FlusherStats { lost: 3, resyncs: 2, ..FlusherStats::default() };
        let pairs = s.as_pairs();
        let names: HashSet<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(names.len(), pairs.len());
        assert!(pairs.contains(&("lost", 3)) && pairs.contains(&("resyncs", 2)));
    }
}
