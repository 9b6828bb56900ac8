//! Where DNS packets come from: the kernel hands the daemon a copy of every
//! answer through NFLOG. A `PacketSource` is what the pipeline reads; the
//! NFLOG reader is one (the NFQUEUE reader of hold mode is the other kind).

mod events;
mod nflog;

pub use events::DnsEventReader;
pub use nflog::{decode_datagram, NflogConfig, NflogReader};

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

/// Counters of a packet source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packet messages received.
    pub packets: u64,
    /// Packets the kernel logged but could not deliver (sequence gaps).
    pub dropped: u64,
    /// recv() failures with ENOBUFS (socket buffer overruns).
    pub enobufs: u64,
    /// Datagrams received.
    pub datagrams: u64,
    /// Netlink messages that were cut short or carried no packet.
    pub malformed: u64,
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
}
