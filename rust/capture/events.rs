//! Captured packets turned into `DnsEvent`s, for library users who want the
//! parsed messages themselves (the daemon's pipeline does not build these).
//! Over an NFLOG group the events are copies; over a queue (hold mode) each
//! event carries the id of its held packet, and packets with no DNS message in
//! them are accepted at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{CaptureStats, Captured, HoldStats, NflogConfig, NflogReader, PacketSource};
use super::{NfqueueConfig, NfqueueReader};
use crate::dns::{DnsEvent, ParseStats, TcpStats, TcpStreams};
use crate::error::{Error, Result};
use crate::sys::poll_readable;

/// How many datagrams one `drain` reads at most, so a flood of non-DNS
/// packets cannot keep the caller from getting back to its event loop.
const MAX_DATAGRAMS_PER_DRAIN: usize = 1024;

/// A packet source whose packets are parsed into DNS events.
pub struct DnsEventReader {
    source: Box<dyn PacketSource>,
    pending: VecDeque<DnsEvent>,
    parsed: ParseStats,
    streams: TcpStreams,
    scratch: Vec<DnsEvent>,
    /// Held packets read in this drain that carried no DNS message.
    no_dns: Vec<u32>,
    /// The newest held packet handed out.
    newest_held: Option<u32>,
}

impl DnsEventReader {
    /// Bind the NFLOG group of `cfg`.
    pub fn open(cfg: NflogConfig) -> Result<Self> {
        Ok(Self::over(Box::new(NflogReader::open(cfg)?)))
    }

    /// Bind the queue of `cfg` (hold mode).
    pub fn open_queue(cfg: NfqueueConfig) -> Result<Self> {
        Ok(Self::over(Box::new(NfqueueReader::open(cfg)?)))
    }

    /// Parse what `source` reads.
    pub fn over(source: Box<dyn PacketSource>) -> Self {
        DnsEventReader {
            source,
            pending: VecDeque::new(),
            parsed: ParseStats::default(),
            streams: TcpStreams::new(),
            scratch: Vec::new(),
            no_dns: Vec::new(),
            newest_held: None,
        }
    }

    /// The socket, for poll(2).
    pub fn fd(&self) -> i32 {
        self.source.fd()
    }

    /// Counters of the socket, of the parser and of DNS-over-TCP reassembly.
    pub fn stats(&self) -> (CaptureStats, ParseStats, TcpStats) {
        (self.source.stats(), self.parsed, self.streams.stats)
    }

    /// Counters of holding (None over NFLOG).
    pub fn hold_stats(&self) -> Option<HoldStats> {
        self.source.hold_stats()
    }

    /// Lines worth logging about the source (kernel features it lacks); taken once.
    pub fn take_notes(&mut self) -> Vec<String> {
        self.source.take_notes()
    }

    /// Wait until a datagram is queued (or events are pending). `None` waits
    /// forever; a signal ends the wait early (false).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        if !self.pending.is_empty() {
            return Ok(true);
        }
        match poll_readable(&[self.source.fd()], timeout) {
            Ok(r) => Ok(r != 0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(Error::io("capture: poll", e)),
        }
    }

    /// Return up to `max_events` events: first the pending ones, then from
    /// datagrams read without blocking until none is left. Events beyond
    /// `max_events` from the last datagram stay pending for the next call.
    pub fn drain(&mut self, max_events: usize) -> Result<Vec<DnsEvent>> {
        let max_events = max_events.max(1);
        let mut out = Vec::with_capacity(self.pending.len().min(max_events));
        while out.len() < max_events {
            match self.pending.pop_front() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        let mut reads = 0;
        while out.len() < max_events && reads < MAX_DATAGRAMS_PER_DRAIN {
            let DnsEventReader { parsed, streams, scratch, no_dns, newest_held, .. } = self;
            let now = Instant::now();
            let mut on_packet = |c: Captured<'_>| {
                let before = scratch.len();
                parsed.parse_stream(c.payload, streams, now, scratch);
                if let Some(id) = c.held {
                    *newest_held = Some(id);
                    if scratch.len() == before {
                        no_dns.push(id);
                    }
                    scratch[before..].iter_mut().for_each(|e| e.held = Some(id));
                }
            };
            let n = self.source.drain(1, &mut on_packet)?;
            if !self.no_dns.is_empty() {
                let ids = std::mem::take(&mut self.no_dns);
                self.source.accept(&ids)?;
            }
            if n == 0 {
                break;
            }
            reads += 1;
            for e in self.scratch.drain(..) {
                if out.len() < max_events {
                    out.push(e);
                } else {
                    self.pending.push_back(e);
                }
            }
        }
        Ok(out)
    }

    /// Let held packets go on, by id (in the order read).
    pub fn accept(&mut self, ids: &[u32]) -> Result<()> {
        self.source.accept(ids)
    }

    /// Let every held packet read so far go on.
    pub fn accept_all(&mut self) -> Result<()> {
        match self.newest_held {
            Some(id) => self.source.accept_through(id),
            None => Ok(()),
        }
    }
}
