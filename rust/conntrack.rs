//! Deleting conntrack entries by address over ctnetlink (nfnetlink subsystem 1).
//!
//! Router kernels (3.4 to 4.9) cannot filter a dump by address (CTA_FILTER is
//! 5.8+) and the flush command takes no filter, so one `flush` call does: one
//! dump (of the one family asked for, or AF_UNSPEC for both), a userspace filter against a
//! `HashSet` of all the addresses, then DELETE messages batched into as few
//! datagrams as the ack receive buffer allows. Each DELETE carries the
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
use std::sync::Arc;

use crate::nl::consts::{
    nfnl_msg_type, AF_INET, AF_INET6, AF_UNSPEC, NFNL_SUBSYS_CTNETLINK, NLA_F_NESTED, NLM_F_ACK,
    NLM_F_DUMP,
};
use crate::nl::{attrs, messages, Attr, Datagram, NetfilterSocket, Nfgenmsg, NlMsg};
use crate::{Error, Result};

// include/uapi/linux/netfilter/nfnetlink_conntrack.h
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
pub const IPCTNL_MSG_CT_GET: u8 = 1;
pub const IPCTNL_MSG_CT_DELETE: u8 = 2;
// enum ctattr_type
pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
pub const CTA_ID: u16 = 12;
pub const CTA_ZONE: u16 = 18;
// enum ctattr_tuple
pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;
// enum nfnetlink_groups
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

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
pub const EVENT_RCVBUF: usize = 8 * 1024 * 1024;
/// Index size beyond which it is dropped (dump mode) rather than grown.
pub const INDEX_CAP: usize = 1_000_000;
/// Reads per drain: far more than a full event buffer holds, so hitting it means
/// entries are made as fast as we read, and the queue cannot be emptied now.
const MAX_DRAIN_RECVS: usize = 262_144;
/// One event is one message of a few hundred bytes; room to spare.
const EVENT_BUF: usize = 64 * 1024;

/// Counters over the lifetime of one flusher.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// `flush` calls that reached the kernel (empty input does not).
    pub calls: u64,
    /// Entries received in dumps.
    pub dumped: u64,
    /// Dumped entries whose original destination or reply source matched.
    pub matched: u64,
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
}

impl Stats {
    pub fn as_pairs(&self) -> [(&'static str, u64); 14] {
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
        ]
    }
}

/// Parse every address before anything is sent, so a typo deletes nothing.
pub fn parse_addrs<S: AsRef<str>>(ips: &[S]) -> Result<HashSet<IpAddr>> {
    ips.iter()
        .map(|s| {
            let s = s.as_ref();
            s.parse::<IpAddr>()
                .map_err(|_| Error::InvalidArgument(format!("not an IP address: {s:?}")))
        })
        .collect()
}

/// The dump request: IPCTNL_MSG_CT_GET with NLM_F_DUMP for one family.
pub fn write_dump_request(d: &mut Datagram, seq: u32, family: u8) {
    d.message(
        nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET),
        NLM_F_DUMP,
        seq,
        Nfgenmsg::new(family, 0),
    )
    .finish();
}

/// What a DELETE needs from a dumped entry; also the entry's identity in the index
/// (CTA_ID tells a replacement with the same tuple apart).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Victim {
    pub family: u8,
    /// Payload of CTA_TUPLE_ORIG (its nested attributes), as received.
    pub tuple: Vec<u8>,
    pub id: Option<u32>,
    /// CTA_ZONE (be16) as received: entries outside zone 0 are only found with it.
    pub zone: Option<[u8; 2]>,
}

/// One DELETE message for `v`, acked, with its own sequence number.
pub fn write_delete(d: &mut Datagram, seq: u32, v: &Victim) {
    let mut m = d.message(
        nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE),
        NLM_F_ACK,
        seq,
        Nfgenmsg::new(v.family, 0),
    );
    // Re-emit the tuple as a nest around the bytes we got; old kernels did not
    // set NLA_F_NESTED in dumps, new ones do, all accept it.
    m.attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &v.tuple);
    if let Some(id) = v.id {
        m.attr_be32(CTA_ID, id);
    }
    if let Some(zone) = v.zone {
        m.attr(CTA_ZONE, &zone);
    }
    m.finish();
}

fn tuple_addr(tuple: &Attr<'_>, family: u8, v4: u16, v6: u16) -> Option<IpAddr> {
    let ip = tuple.nested_attrs().find(CTA_TUPLE_IP)?;
    match family {
        AF_INET => {
            let b: [u8; 4] = ip.nested_attrs().find(v4)?.data.get(..4)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        AF_INET6 => {
            let b: [u8; 16] = ip.nested_attrs().find(v6)?.data.get(..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// A dumped conntrack entry, as far as flushing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedEntry<'a> {
    pub family: u8,
    pub orig_dst: IpAddr,
    /// None when the kernel sent no reply tuple (it always does, but it is not needed).
    pub reply_src: Option<IpAddr>,
    pub tuple: &'a [u8],
    pub id: Option<u32>,
    pub zone: Option<[u8; 2]>,
}

impl DumpedEntry<'_> {
    pub fn matches(&self, addrs: &HashSet<IpAddr>) -> bool {
        addrs.contains(&self.orig_dst) || self.reply_src.is_some_and(|a| addrs.contains(&a))
    }

    pub fn victim(&self) -> Victim {
        Victim { family: self.family, tuple: self.tuple.to_vec(), id: self.id, zone: self.zone }
    }
}

/// Parse one dump reply. None if it is not a conntrack entry or lacks what a
/// DELETE needs (an original tuple with a destination address of its family).
pub fn parse_entry<'a>(m: &NlMsg<'a>) -> Option<DumpedEntry<'a>> {
    if m.msg_type != nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) {
        return None;
    }
    parse_body(m)
}

/// A conntrack event: IPCTNL_MSG_CT_NEW (group NEW) or IPCTNL_MSG_CT_DELETE
/// (group DESTROY), with the same attributes a dump reply has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    New(DumpedEntry<'a>),
    Destroy(DumpedEntry<'a>),
}

pub fn parse_event<'a>(m: &NlMsg<'a>) -> Option<Event<'a>> {
    if m.msg_type == nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) {
        parse_body(m).map(Event::New)
    } else if m.msg_type == nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) {
        parse_body(m).map(Event::Destroy)
    } else {
        None
    }
}

fn parse_body<'a>(m: &NlMsg<'a>) -> Option<DumpedEntry<'a>> {
    let family = Nfgenmsg::from_bytes(m.payload)?.family;
    let (mut orig, mut reply, mut id, mut zone) = (None, None, None, None);
    for a in m.nf_attrs() {
        match a.ty {
            CTA_TUPLE_ORIG => orig = Some(a),
            CTA_TUPLE_REPLY => reply = Some(a),
            CTA_ID => id = a.be32(),
            CTA_ZONE => zone = a.data.get(..2).and_then(|z| z.try_into().ok()),
            _ => {}
        }
    }
    let orig = orig?;
    // A tuple without its protocol part would not identify the entry.
    attrs(orig.data).find(CTA_TUPLE_PROTO)?;
    let orig_dst = tuple_addr(&orig, family, CTA_IP_V4_DST, CTA_IP_V6_DST)?;
    let reply_src = reply.and_then(|r| tuple_addr(&r, family, CTA_IP_V4_SRC, CTA_IP_V6_SRC));
    Some(DumpedEntry { family, orig_dst, reply_src, tuple: orig.data, id, zone })
}

/// Group victims into datagrams of at most `batch` DELETE messages.
/// Returns each datagram with the sequence numbers it carries.
pub fn delete_datagrams(
    victims: &[Victim],
    batch: usize,
    mut next_seq: impl FnMut() -> u32,
) -> Vec<(Datagram, Vec<u32>)> {
    victims
        .chunks(batch.max(1))
        .map(|chunk| {
            let mut d = Datagram::with_capacity(chunk.len() * 96);
            let seqs = chunk
                .iter()
                .map(|v| {
                    let seq = next_seq();
                    write_delete(&mut d, seq, v);
                    seq
                })
                .collect();
            (d, seqs)
        })
        .collect()
}

/// The family to dump: the kernel skips other families' entries itself, and
/// when both are wanted one AF_UNSPEC dump walks the table once instead of twice
/// (the walk over every hash bucket, not the entries, is most of the cost).
pub fn dump_family(addrs: &HashSet<IpAddr>) -> u8 {
    match (addrs.iter().any(IpAddr::is_ipv4), addrs.iter().any(IpAddr::is_ipv6)) {
        (true, false) => AF_INET,
        (false, true) => AF_INET6,
        _ => AF_UNSPEC,
    }
}

/// Sort DELETE acks into (deleted, already gone, failed). ENOENT means the
/// entry expired, was deleted by someone else, or was replaced (CTA_ID differs)
/// since the dump: nothing left to do, so it is not an error.
pub fn tally(codes: impl IntoIterator<Item = i32>) -> (u64, u64, u64) {
    let (mut ok, mut gone, mut failed) = (0, 0, 0);
    for code in codes {
        match code.checked_neg() {
            Some(0) => ok += 1,
            Some(libc::ENOENT) => gone += 1,
            _ => failed += 1,
        }
    }
    (ok, gone, failed)
}

/// The conntrack table as the events describe it: entries by identity, and
/// entry identities by address (original destination and reply source).
///
/// It is either valid (holds every entry since its last rebuild, as far as the
/// events told) or invalid (empty; only a rebuild makes it valid again).
#[derive(Debug)]
pub struct EntryIndex {
    entries: HashMap<Arc<Victim>, (IpAddr, Option<IpAddr>)>,
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
            entries: HashMap::new(),
            by_addr: HashMap::new(),
            cap,
            valid: false,
            overflows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// Forget everything; lookups are refused until `rebuild`.
    pub fn invalidate(&mut self) {
        self.entries = HashMap::new();
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
        if self.entries.contains_key(&v) {
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
        self.entries.insert(v, (e.orig_dst, e.reply_src));
        true
    }

    pub fn remove(&mut self, v: &Victim) {
        let Some((key, (dst, reply))) = self.entries.remove_entry(v) else {
            return;
        };
        for addr in std::iter::once(dst).chain(reply) {
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

/// The event socket (subscribed to NEW and DESTROY, non-blocking) and the index it feeds.
struct Tracker {
    sock: NetfilterSocket,
    buf: Vec<u8>,
    index: EntryIndex,
}

impl Tracker {
    /// Subscribe, so that every entry confirmed from now on is queued to us.
    fn open(rcvbuf: usize) -> io::Result<Self> {
        let sock = NetfilterSocket::open()?;
        sock.join_groups(&[NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY])?;
        sock.set_rcvbuf(rcvbuf)?;
        sock.set_nonblocking(true)?;
        Ok(Tracker { sock, buf: vec![0; EVENT_BUF], index: EntryIndex::new(INDEX_CAP) })
    }

    /// Read every queued event into the index; returns how many were read.
    /// A lost event (ENOBUFS) or a queue that will not empty invalidates the index.
    fn drain(&mut self, stats: &mut Stats) -> io::Result<u64> {
        let mut n = 0;
        let res = self.drain_counting(stats, &mut n);
        stats.events += n;
        if res.is_err() {
            self.index.invalidate();
        }
        res.map(|()| n)
    }

    fn drain_counting(&mut self, stats: &mut Stats, n: &mut u64) -> io::Result<()> {
        for _ in 0..MAX_DRAIN_RECVS {
            match self.sock.recv_into(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(len) => {
                    for m in messages(self.buf.get(..len).unwrap_or(&[])) {
                        match parse_event(&m) {
                            Some(ev) => {
                                *n += 1;
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
    stats: Stats,
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
        Ok(ConntrackFlusher { sock, batch, stats: Stats::default(), tracker: None })
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

    /// The event socket's descriptor, when tracking.
    pub fn event_fd(&self) -> Option<i32> {
        self.tracker.as_ref().map(|t| t.sock.fd())
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        if let Some(t) = &self.tracker {
            s.tracking = 1;
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
        if addrs.is_empty() {
            return Ok(0);
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
            let acks = self
                .sock
                .request_acks(d.as_bytes(), &seqs)
                .map_err(|e| Error::io("ctnetlink: delete", e))?;
            let (ok, gone, failed) = tally(acks.values().copied());
            deleted += ok;
            self.stats.already_gone += gone;
            self.stats.errors += failed;
            // Deleted or already gone: out of the index now, so the next flush
            // does not try again before the DESTROY event is read.
            if let (Some(t), Some(chunk)) = (self.tracker.as_mut(), chunks.next()) {
                for (seq, v) in seqs.iter().zip(chunk) {
                    if matches!(acks.get(seq), Some(&c) if c == 0 || c == -libc::ENOENT) {
                        t.index.remove(v);
                    }
                }
            }
        }
        self.stats.deleted += deleted;
        Ok(deleted)
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

    /// An attribute: header in host order (as the kernel writes it), payload literal.
    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nest(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(ty | NLA_F_NESTED, &parts.concat())
    }

    fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// CTA_TUPLE_* for udp 192.0.2.1:40000 -> 198.51.100.7:53.
    fn tuple_v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        [
            nest(CTA_TUPLE_IP, &[nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)]),
            nest(
                CTA_TUPLE_PROTO,
                &[
                    nla(1, &[17]),                // CTA_PROTO_NUM: udp
                    nla(2, &sport.to_be_bytes()), // CTA_PROTO_SRC_PORT
                    nla(3, &dport.to_be_bytes()), // CTA_PROTO_DST_PORT
                ],
            ),
        ]
        .concat()
    }

    /// A dump reply the way the kernel sends one (with a few extra attributes).
    fn captured_v4(orig_dst: [u8; 4], reply_src: [u8; 4]) -> Vec<u8> {
        let orig = tuple_v4([192, 0, 2, 1], orig_dst, 40000, 53);
        let reply = tuple_v4(reply_src, [192, 0, 2, 1], 53, 40000);
        let payload = [
            vec![AF_INET, 0, 0, 0],
            nla(CTA_TUPLE_ORIG | NLA_F_NESTED, &orig),
            nla(CTA_TUPLE_REPLY | NLA_F_NESTED, &reply),
            nla(3, &[0, 0, 0, 8]),                  // CTA_STATUS
            nla(7, &[0, 0, 0, 30]),                 // CTA_TIMEOUT
            nla(CTA_ID, &[0xde, 0xad, 0xbe, 0xef]), // CTA_ID
        ]
        .concat();
        nlmsg(0x0100, 0x02, 99, &payload)
    }

    #[test]
    fn constants_match_the_kernel_header() {
        assert_eq!(nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET), 0x0101);
        assert_eq!(nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE), 0x0102);
        assert_eq!((CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ID, CTA_ZONE), (1, 2, 12, 18));
    }

    #[test]
    fn golden_dump_request() {
        let mut d = Datagram::new();
        write_dump_request(&mut d, 0x01020304, AF_INET6);
        let mut want = Vec::new();
        want.extend_from_slice(&20u32.to_ne_bytes());
        want.extend_from_slice(&0x0101u16.to_ne_bytes());
        want.extend_from_slice(&0x0301u16.to_ne_bytes()); // REQUEST | DUMP
        want.extend_from_slice(&0x01020304u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[10, 0, 0, 0]); // AF_INET6, NFNETLINK_V0, res_id 0
        assert_eq!(d.as_bytes(), &want[..]);
    }

    #[test]
    fn golden_delete_from_captured_tuple() {
        let cap = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        let m = messages(&cap).next().unwrap();
        let e = parse_entry(&m).unwrap();
        assert_eq!(e.orig_dst, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(e.id, Some(0xdeadbeef));
        let mut d = Datagram::new();
        write_delete(&mut d, 7, &e.victim());

        let orig = tuple_v4([192, 0, 2, 1], [198, 51, 100, 7], 40000, 53);
        let payload = [
            vec![2, 0, 0, 0],
            nla(CTA_TUPLE_ORIG | NLA_F_NESTED, &orig),
            nla(CTA_ID, &[0xde, 0xad, 0xbe, 0xef]),
        ]
        .concat();
        let want = nlmsg(0x0102, 0x0005, 7, &payload); // REQUEST | ACK
        assert_eq!(d.as_bytes(), &want[..]);
        // The payload bytes of the tuple, spelled out: ports and addresses big-endian.
        let b = d.as_bytes();
        assert_eq!(&b[20 + 4 + 4 + 4..20 + 4 + 4 + 4 + 4], &[192, 0, 2, 1]);
        assert_eq!(b.len(), 80); // 16 nlmsghdr + 4 nfgenmsg + 52 tuple + 8 id
        let port_at = b.windows(2).position(|w| w == [0x9c, 0x40]);
        assert!(port_at.is_some(), "source port 40000 as be16");
    }

    #[test]
    fn zone_is_carried_over() {
        let orig = tuple_v4([192, 0, 2, 1], [203, 0, 113, 5], 1, 2);
        let payload = [
            vec![AF_INET, 0, 0, 0],
            nla(CTA_TUPLE_ORIG, &orig), // old kernels: no NLA_F_NESTED
            nla(CTA_ZONE, &[0, 7]),
        ]
        .concat();
        let cap = nlmsg(0x0100, 0, 1, &payload);
        let e = parse_entry(&messages(&cap).next().unwrap()).unwrap();
        assert_eq!((e.zone, e.id, e.reply_src), (Some([0, 7]), None, None));
        let mut d = Datagram::new();
        write_delete(&mut d, 1, &e.victim());
        let tail = nla(CTA_ZONE, &[0, 7]);
        assert!(d.as_bytes().ends_with(&tail));
        let nested_ty = &d.as_bytes()[22..24];
        assert_eq!(nested_ty, &(CTA_TUPLE_ORIG | NLA_F_NESTED).to_ne_bytes());
    }

    #[test]
    fn matches_orig_dst_or_reply_src() {
        let set = parse_addrs(&["198.51.100.7", "2001:db8::1"]).unwrap();
        let by_dst = captured_v4([198, 51, 100, 7], [192, 0, 2, 50]);
        let by_reply = captured_v4([192, 0, 2, 99], [198, 51, 100, 7]);
        let neither = captured_v4([192, 0, 2, 99], [192, 0, 2, 98]);
        let hit = |b: &[u8]| parse_entry(&messages(b).next().unwrap()).unwrap().matches(&set);
        assert!(hit(&by_dst));
        assert!(hit(&by_reply));
        assert!(!hit(&neither));
    }

    #[test]
    fn ipv6_entry() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let t = [
            nest(CTA_TUPLE_IP, &[nla(CTA_IP_V6_SRC, &src), nla(CTA_IP_V6_DST, &dst)]),
            nest(CTA_TUPLE_PROTO, &[nla(1, &[17])]),
        ]
        .concat();
        let payload = [vec![AF_INET6, 0, 0, 0], nest(CTA_TUPLE_ORIG, &[t])].concat();
        let cap = nlmsg(0x0100, 0, 1, &payload);
        let e = parse_entry(&messages(&cap).next().unwrap()).unwrap();
        assert_eq!(e.orig_dst, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn broken_entries_are_rejected_not_panicking() {
        let good = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        // Every truncation of the payload, with the header length patched to match.
        for cut in 16..good.len() {
            let mut b = good[..cut].to_vec();
            b[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            if let Some(m) = messages(&b).next() {
                let _ = parse_entry(&m);
            }
        }
        // Wrong address length, missing proto, wrong message type.
        let bad_ip = [
            vec![AF_INET, 0, 0, 0],
            nest(
                CTA_TUPLE_ORIG,
                &[
                    nest(CTA_TUPLE_IP, &[nla(CTA_IP_V4_DST, &[1, 2, 3])]),
                    nest(CTA_TUPLE_PROTO, &[nla(1, &[6])]),
                ],
            ),
        ]
        .concat();
        let no_proto = [
            vec![AF_INET, 0, 0, 0],
            nest(CTA_TUPLE_ORIG, &[nest(CTA_TUPLE_IP, &[nla(CTA_IP_V4_DST, &[1, 2, 3, 4])])]),
        ]
        .concat();
        for p in [bad_ip, no_proto] {
            let b = nlmsg(0x0100, 0, 1, &p);
            assert!(parse_entry(&messages(&b).next().unwrap()).is_none());
        }
        let mut other = good.clone();
        other[4..6].copy_from_slice(&0x0601u16.to_ne_bytes());
        assert!(parse_entry(&messages(&other).next().unwrap()).is_none());
    }

    #[test]
    fn enoent_is_already_gone_not_an_error() {
        assert_eq!(tally([0, -libc::ENOENT, 0, -libc::EPERM, i32::MIN]), (2, 1, 2));
        assert_eq!(tally([]), (0, 0, 0));
    }

    #[test]
    fn one_dump_family_per_call() {
        let fam = |a: &[&str]| dump_family(&parse_addrs(a).unwrap());
        assert_eq!(fam(&["192.0.2.1", "198.51.100.1"]), AF_INET);
        assert_eq!(fam(&["2001:db8::1"]), AF_INET6);
        assert_eq!(fam(&["192.0.2.1", "2001:db8::1"]), AF_UNSPEC);
    }

    #[test]
    fn bad_address_is_named() {
        let err = parse_addrs(&["192.0.2.1", "192.0.2.300"]).unwrap_err();
        assert!(err.to_string().contains("192.0.2.300"), "{err}");
        assert!(parse_addrs::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn deletes_are_batched_with_own_seqs() {
        let cap = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        let v = parse_entry(&messages(&cap).next().unwrap()).unwrap().victim();
        let victims = vec![v; 5];
        let mut n = 100;
        let out = delete_datagrams(&victims, 2, || {
            n += 1;
            n
        });
        assert_eq!(out.len(), 3);
        let seqs: Vec<u32> = out.iter().flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(seqs, vec![101, 102, 103, 104, 105]);
        let (d, s) = &out[0];
        let parsed: Vec<u32> = messages(d.as_bytes()).map(|m| m.seq).collect();
        assert_eq!(&parsed, s);
    }

    fn entry_of(b: &[u8]) -> DumpedEntry<'_> {
        parse_entry(&messages(b).next().unwrap()).unwrap()
    }

    /// The same message as an event: NEW keeps type 0x0100, DESTROY is 0x0102.
    fn as_destroy(mut b: Vec<u8>) -> Vec<u8> {
        b[4..6].copy_from_slice(&0x0102u16.to_ne_bytes());
        b
    }

    fn addrs(a: &[&str]) -> HashSet<IpAddr> {
        parse_addrs(a).unwrap()
    }

    #[test]
    fn events_parse_as_new_or_destroy() {
        let new = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        let gone = as_destroy(new.clone());
        let e = entry_of(&new);
        assert_eq!(parse_event(&messages(&new).next().unwrap()), Some(Event::New(e.clone())));
        assert_eq!(parse_event(&messages(&gone).next().unwrap()), Some(Event::Destroy(e)));
        let mut other = new.clone();
        other[4..6].copy_from_slice(&0x0101u16.to_ne_bytes()); // a GET is no event
        assert!(parse_event(&messages(&other).next().unwrap()).is_none());
        // A dump never yields a DESTROY as an entry.
        assert!(parse_entry(&messages(&gone).next().unwrap()).is_none());
    }

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

    /// udp 192.0.2.1:40000 -> dst:53 with its reply from dst, CTA_ID `id`.
    fn tuple_msg(src: [u8; 4], dst: [u8; 4], id: u32) -> Vec<u8> {
        let payload = [
            vec![AF_INET, 0, 0, 0],
            nla(CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple_v4(src, dst, 40000, 53)),
            nla(CTA_TUPLE_REPLY | NLA_F_NESTED, &tuple_v4(dst, src, 53, 40000)),
            nla(CTA_ID, &id.to_be_bytes()),
        ]
        .concat();
        nlmsg(0x0100, 0, 0, &payload)
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

    #[test]
    fn stats_pairs_name_every_counter() {
        let s = Stats { lost: 3, resyncs: 2, ..Stats::default() };
        let pairs = s.as_pairs();
        let names: HashSet<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(names.len(), pairs.len());
        assert!(pairs.contains(&("lost", 3)) && pairs.contains(&("resyncs", 2)));
    }
}
