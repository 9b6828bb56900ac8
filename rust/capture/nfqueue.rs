//! nfnetlink_queue: hold mode. The kernel queues each DNS answer itself (not
//! a copy) until hrneo gives a verdict, so the addresses are in the sets before
//! the client sees the answer. The verdict is always ACCEPT: the answer is never
//! dropped or changed.
//!
//! Failing open is layered: `--queue-bypass` on the rule lets answers pass when
//! no socket is bound; NFQA_CFG_F_FAIL_OPEN accepts them when the socket or the
//! queue is full (each such packet still uses a packet id, so a gap in the ids
//! read counts it); the watchdog accepts whatever waits longer than `hold_max`;
//! and closing the reader accepts everything queued before it unbinds (the
//! kernel drops what is still queued when a queue is unbound).
//!
//! Packets passed unread are counted from the kernel's own numbers
//! (/proc/net/netfilter/nfnetlink_queue: the ids it gave out, less those read),
//! so the last ones of a flood count at once, not when a later id shows the gap.
//! One kind of fail-open no counter shows: a queue at `maxlen` passes packets
//! without giving them ids; `maxlen` is set above what the socket buffer holds,
//! so the socket fills (and counts) first.

use std::borrow::Cow;
use std::io;
use std::os::unix::io::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bind::check_bind_acks;
use super::hold::{id_before, HoldBook, HoldStats};
use super::keeper::Keeper;
use super::kernel::{portid, QueueCounters};
use super::queue_msg::{bind_messages, push_verdict, release_and_unbind, verdict_batch};
use super::queue_msg::{decode_queue_datagram, BindSpec, NFQNL_MSG_VERDICT};
use super::watchdog::Watchdog;
use super::{CaptureStats, Captured, PacketSource};
use crate::error::{Error, Result};
use crate::nl::{Datagram, NetfilterSocket};

/// Datagrams read per recvmmsg(2); the kernel sends one packet per datagram.
const RECV_SLOTS: usize = 8;
const RECV_SLOT: usize = 72 * 1024;

/// How a queue is bound and held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfqueueConfig {
    /// The queue number (`--queue-num`).
    pub queue: u16,
    /// Socket receive buffer asked for, in bytes.
    pub rcvbuf: usize,
    /// Bytes of each packet copied to us.
    pub copy_range: u32,
    /// Packets the kernel queues at most; past it, they pass unread (fail open).
    pub maxlen: u32,
    /// Longest a packet waits for its verdict; then it is accepted anyway.
    pub hold_max: Duration,
}

impl NfqueueConfig {
    /// Defaults: the whole packet, a queue longer than the socket buffer holds
    /// (so a full socket, which fails open with a counted id gap, comes first),
    /// 50 ms at most.
    pub fn new(queue: u16) -> Self {
        NfqueueConfig {
            queue,
            rcvbuf: 8 * 1024 * 1024,
            copy_range: 0xFFFF,
            maxlen: 65_536,
            hold_max: Duration::from_millis(50),
        }
    }
}

/// A socket bound to one queue, holding what it read until it is accepted.
pub struct NfqueueReader {
    sock: Arc<NetfilterSocket>,
    cfg: NfqueueConfig,
    slots: Vec<Vec<u8>>,
    lens: Vec<usize>,
    stats: CaptureStats,
    book: HoldBook,
    /// The id the next packet should carry, once known.
    next_id: Option<u32>,
    watchdog: Watchdog,
    /// None if it could not be started (noted): a kill -9 then drops what was queued.
    _keeper: Option<Keeper>,
    out: Datagram,
    /// Lines worth logging from the bind (a flag this kernel lacks).
    notes: Vec<String>,
    /// The kernel's counters of the queue.
    kernel: QueueCounters,
}

impl NfqueueReader {
    /// Open a socket, bind `cfg.queue` and configure it; the socket is non-blocking.
    pub fn open(cfg: NfqueueConfig) -> Result<Self> {
        let q = cfg.queue;
        let mut sock =
            NetfilterSocket::open().map_err(|e| Error::io("nfqueue: netlink socket", e))?;
        sock.set_rcvbuf(cfg.rcvbuf)
            .map_err(|e| Error::io(format!("nfqueue {q}: receive buffer"), e))?;
        sock.cap_acks();
        let seqs: [u32; 9] = std::array::from_fn(|_| sock.next_seq());
        let spec = BindSpec { queue: q, copy_range: cfg.copy_range, maxlen: cfg.maxlen };
        let acks = sock
            .request_acks(bind_messages(&spec, &seqs).as_bytes(), &seqs)
            .map_err(|e| Error::io(format!("nfqueue {q}: bind"), e))?;
        let code = |i: usize| acks.get(&seqs[i]).copied().unwrap_or(0);
        check_bind_acks(&format!("nfqueue {q}"), code, &[(5, "copy mode"), (6, "queue length")])?;
        let mut notes = Vec::new();
        if code(7) != 0 {
            notes.push(format!(
                "nfqueue {q}: this kernel has no fail-open flag (Linux 3.6+): answers are \
                 dropped, not passed, when the queue is full"
            ));
        }
        if code(8) != 0 {
            notes.push(format!("nfqueue {q}: no GSO flag (Linux 3.10+): the kernel segments"));
        }
        sock.set_nonblocking(true)
            .map_err(|e| Error::io(format!("nfqueue {q}: non-blocking"), e))?;
        let keeper = match Keeper::spawn(sock.fd(), release_and_unbind(q).as_bytes()) {
            Ok(k) => Some(k),
            Err(e) => {
                notes.push(format!(
                    "nfqueue {q}: no keeper process ({e}): if hrneo is killed, the answers \
                     queued at that moment are dropped"
                ));
                None
            }
        };
        let kernel = QueueCounters::open(q, portid(sock.fd()).unwrap_or(0));
        let sock = Arc::new(sock);
        let watchdog = Watchdog::start(sock.clone(), q, cfg.hold_max)
            .map_err(|e| Error::io(format!("nfqueue {q}: deadline thread"), e))?;
        Ok(NfqueueReader {
            sock,
            cfg,
            slots: vec![vec![0; RECV_SLOT]; RECV_SLOTS],
            lens: Vec::with_capacity(RECV_SLOTS),
            stats: CaptureStats::default(),
            book: HoldBook::default(),
            // A fresh instance gives out ids from 1.
            next_id: Some(1),
            watchdog,
            _keeper: keeper,
            out: Datagram::with_capacity(4096),
            notes,
            kernel,
        })
    }

    /// The queue this reader is bound to.
    pub fn queue(&self) -> u16 {
        self.cfg.queue
    }

    /// Wait until a datagram is queued. `None` waits forever.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.sock
            .wait_readable(timeout)
            .map_err(|e| Error::io(format!("nfqueue {}: poll", self.cfg.queue), e))
    }

    /// Accept every packet read and not accepted yet.
    pub fn accept_all(&mut self) -> Result<()> {
        match self.book.newest() {
            Some(id) => self.accept_through(id),
            None => Ok(()),
        }
    }

    fn read_datagram(&mut self, i: usize, now: Instant, on_packet: &mut dyn FnMut(Captured<'_>)) {
        let n = self.lens[i];
        let data = self.slots[i].get(..n).unwrap_or(&[]);
        let d = decode_queue_datagram(data);
        self.stats.malformed += d.malformed;
        for code in d.errors {
            // ENOENT: the packet was released already (by the deadline).
            if -code != libc::ENOENT {
                self.book.stats.verdict_errors += 1;
            }
        }
        for (id, payload) in d.packets {
            self.stats.packets += 1;
            if let Some(expected) = self.next_id {
                // Ids the kernel used for packets it passed without us (fail-open).
                let gap = u64::from(id.wrapping_sub(expected));
                if id_before(expected, id) {
                    self.stats.dropped += gap;
                    self.book.stats.fail_opens += gap;
                }
            }
            self.next_id = Some(id.wrapping_add(1));
            self.book.read(id, now);
            on_packet(Captured { payload, held: Some(id) });
        }
    }

    /// Packets the kernel passed unread (fail-open), and those it dropped
    /// (a full queue, on a kernel without fail-open): ids given out and never
    /// read count at once, before a later id shows the gap.
    fn unread(&self) -> (u64, u64) {
        match self.kernel.read() {
            Some((ids, queue_dropped)) => (
                self.book.stats.fail_opens.max(ids.saturating_sub(self.stats.packets)),
                queue_dropped,
            ),
            None => (self.book.stats.fail_opens, 0),
        }
    }

    fn after_verdict(&mut self) {
        if let Some(id) = self.watchdog.take_fired() {
            self.book.forget_through(id);
        }
        self.watchdog.set_oldest(self.book.oldest());
    }
}

impl PacketSource for NfqueueReader {
    fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    fn drain(
        &mut self,
        max_datagrams: usize,
        on_packet: &mut dyn FnMut(Captured<'_>),
    ) -> Result<usize> {
        let mut datagrams = 0;
        let now = Instant::now();
        while datagrams < max_datagrams {
            match self.sock.recv_many(&mut self.slots, &mut self.lens) {
                Ok(cut) => {
                    self.stats.malformed += cut as u64;
                    for i in 0..self.lens.len() {
                        self.read_datagram(i, now, on_packet);
                    }
                    datagrams += self.lens.len();
                    self.stats.datagrams += self.lens.len() as u64;
                    if self.lens.len() < self.slots.len() {
                        break;
                    }
                }
                // The kernel could not queue a packet message: with fail-open the
                // packet passed; its id gap counts it.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.stats.enobufs += 1,
                Err(e) => return Err(Error::io(format!("nfqueue {}: recv", self.cfg.queue), e)),
            }
        }
        if let Some(id) = self.watchdog.take_fired() {
            self.book.forget_through(id);
        }
        self.watchdog.drained(self.book.newest(), self.book.oldest());
        Ok(datagrams)
    }

    fn stats(&self) -> CaptureStats {
        let (passed, dropped) = self.unread();
        CaptureStats { dropped: passed + dropped, ..self.stats }
    }

    fn accept(&mut self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // The book wants them in read order; a library user may pass any order.
        let ids: Cow<'_, [u32]> = if ids.windows(2).all(|w| id_before(w[0], w[1])) {
            Cow::Borrowed(ids)
        } else {
            let mut v = ids.to_vec();
            v.sort_unstable_by(|a, b| match (a == b, id_before(*a, *b)) {
                (true, _) => std::cmp::Ordering::Equal,
                (_, true) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            });
            v.dedup();
            Cow::Owned(v)
        };
        self.out.clear();
        for &id in ids.iter() {
            push_verdict(&mut self.out, NFQNL_MSG_VERDICT, self.cfg.queue, id);
        }
        let sent = self.sock.send(self.out.as_bytes());
        self.book.release(&ids, Instant::now());
        self.after_verdict();
        self.verdict_sent(sent)
    }

    fn accept_through(&mut self, id: u32) -> Result<()> {
        let sent = self.sock.send(verdict_batch(self.cfg.queue, id).as_bytes());
        self.book.release_through(id, Instant::now());
        self.after_verdict();
        self.verdict_sent(sent)
    }

    fn hold_stats(&self) -> Option<HoldStats> {
        let mut s = self.book.snapshot();
        s.timeouts = self.watchdog.timeouts();
        s.fail_opens = self.unread().0;
        Some(s)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn set_hold_max(&mut self, hold_max: Duration) -> bool {
        self.cfg.hold_max = hold_max;
        self.watchdog.set_hold_max(hold_max);
        true
    }
}

impl NfqueueReader {
    /// A verdict that could not be sent is counted; the deadline releases those packets.
    fn verdict_sent(&mut self, sent: io::Result<()>) -> Result<()> {
        sent.map_err(|e| {
            self.book.stats.verdict_errors += 1;
            Error::io(format!("nfqueue {}: verdict", self.cfg.queue), e)
        })
    }
}

impl Drop for NfqueueReader {
    fn drop(&mut self) {
        let _ = self.sock.send(release_and_unbind(self.cfg.queue).as_bytes());
        // Then the keeper (dropped after this) sees its pipe close, and does the same.
    }
}
