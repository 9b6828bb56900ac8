//! Where DNS packets come from: the kernel hands the daemon a copy of every
//! answer through NFLOG, or (hold mode) the answer itself through NFQUEUE,
//! held until it is accepted. A `PacketSource` is what the pipeline reads.

mod bind;
mod events;
mod hold;
mod keeper;
mod kernel;
mod nflog;
mod nfqueue;
mod queue_msg;
mod watchdog;

pub use events::DnsEventReader;
pub use hold::HoldStats;
pub use nflog::{decode_datagram, NflogConfig, NflogReader};
pub use nfqueue::{NfqueueConfig, NfqueueReader};
pub use queue_msg::{decode_queue_datagram, QueueDatagram};

use std::os::unix::io::RawFd;

use crate::error::Result;

/// One packet handed over by the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Captured<'a> {
    /// The IP packet (IPv4 or IPv6 header first).
    pub payload: &'a [u8],
    /// For a source that holds packets until released: the id to release it by.
    pub held: Option<u32>,
}

/// Counters of a packet source. Every packet the capture rule hands over is
/// either read (`packets`, each handed to the reader, payload or not) or
/// `dropped`: the kernel's count, exact at any moment, not only once a later
/// packet shows a gap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packet messages received.
    pub packets: u64,
    /// Packets the kernel handed over but could not queue on the socket (NFLOG:
    /// the socket was full; NFQUEUE: passed unread by fail-open, or dropped).
    pub dropped: u64,
    /// recv() failures with ENOBUFS (socket buffer overruns).
    pub enobufs: u64,
    /// Datagrams received.
    pub datagrams: u64,
    /// Datagrams or netlink messages cut short (their packets are in `dropped`).
    pub malformed: u64,
}

impl CaptureStats {
    /// Both sources' counts together (a source swapped out, and the new one).
    pub fn plus(self, o: CaptureStats) -> CaptureStats {
        CaptureStats {
            packets: self.packets + o.packets,
            dropped: self.dropped + o.dropped,
            enobufs: self.enobufs + o.enobufs,
            datagrams: self.datagrams + o.datagrams,
            malformed: self.malformed + o.malformed,
        }
    }
}

/// A non-blocking socket the kernel queues packets on.
pub trait PacketSource: Send {
    /// The socket, for poll(2).
    fn fd(&self) -> RawFd;

    /// Read what is queued without blocking, at most `max_datagrams` reads, and
    /// hand each packet to `on_packet`. Returns how many datagrams were read.
    fn drain(
        &mut self,
        max_datagrams: usize,
        on_packet: &mut dyn FnMut(Captured<'_>),
    ) -> Result<usize>;

    /// Counters so far.
    fn stats(&self) -> CaptureStats;

    /// Let held packets go on, by id (in the order read). Sources that hold
    /// nothing ignore it.
    fn accept(&mut self, _ids: &[u32]) -> Result<()> {
        Ok(())
    }

    /// Let every held packet up to and including `id` go on.
    fn accept_through(&mut self, _id: u32) -> Result<()> {
        Ok(())
    }

    /// Counters of holding: None for a source that holds nothing.
    fn hold_stats(&self) -> Option<HoldStats> {
        None
    }

    /// Lines worth logging about the source (kernel features it lacks); taken once.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// A new longest hold (a reload); false if the source holds nothing.
    fn set_hold_max(&mut self, _hold_max: std::time::Duration) -> bool {
        false
    }
}
