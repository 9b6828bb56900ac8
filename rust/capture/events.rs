//! NFLOG packets turned into `DnsEvent`s, for library users who want the
//! parsed messages themselves (the daemon's pipeline does not build these).

use std::collections::VecDeque;
use std::time::Duration;

use super::{CaptureStats, NflogConfig, NflogReader, PacketSource};
use crate::dns::{DnsEvent, ParseStats, TcpStats, TcpStreams};
use crate::error::Result;

/// How many datagrams one `drain` reads at most, so a flood of non-DNS
/// packets cannot keep the caller from getting back to its event loop.
const MAX_DATAGRAMS_PER_DRAIN: usize = 1024;

/// An NFLOG reader that parses what it reads into DNS events.
pub struct DnsEventReader {
    reader: NflogReader,
    pending: VecDeque<DnsEvent>,
    parsed: ParseStats,
    streams: TcpStreams,
    scratch: Vec<DnsEvent>,
}

impl DnsEventReader {
    /// Bind the group of `cfg`.
    pub fn open(cfg: NflogConfig) -> Result<Self> {
        Ok(DnsEventReader {
            reader: NflogReader::open(cfg)?,
            pending: VecDeque::new(),
            parsed: ParseStats::default(),
            streams: TcpStreams::new(),
            scratch: Vec::new(),
        })
    }

    /// The socket, for poll(2).
    pub fn fd(&self) -> i32 {
        self.reader.fd()
    }

    /// The NFLOG group.
    pub fn group(&self) -> u16 {
        self.reader.group()
    }

    /// Counters of the socket, of the parser and of DNS-over-TCP reassembly.
    pub fn stats(&self) -> (CaptureStats, ParseStats, TcpStats) {
        (self.reader.stats(), self.parsed, self.streams.stats)
    }

    /// Wait until a datagram is queued (or events are pending). `None` waits forever.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        if !self.pending.is_empty() {
            return Ok(true);
        }
        self.reader.wait(timeout)
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
            let (parsed, streams, scratch) =
                (&mut self.parsed, &mut self.streams, &mut self.scratch);
            let now = std::time::Instant::now();
            let mut on_packet =
                |c: crate::Captured<'_>| parsed.parse_stream(c.payload, streams, now, scratch);
            if self.reader.drain(1, &mut on_packet)? == 0 {
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
}
