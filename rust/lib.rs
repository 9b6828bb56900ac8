//! hrneo's compiled core: read DNS answers the kernel hands over, match their
//! names against the watchlist, add the addresses to the policies' sets and
//! learn which were new, delete the conntrack entries of the new ones.
//!
//! The modules are plain Rust (no PyO3), tested by `cargo test`, also under
//! qemu on big-endian MIPS; `py` wraps them as the Python module `hrneo._core`.
#![warn(missing_docs)]

mod blind;
mod capture;
mod conntrack;
mod dns;
mod error;
mod ipset;
mod nftables;
mod nl;
mod pipeline;
mod sys;
mod watchlist;

#[cfg(feature = "python")]
mod py;
#[cfg(test)]
mod testutil;

pub use blind::{Blind, ClientCount, MAX_CLIENTS};
pub use capture::{
    decode_datagram, decode_queue_datagram, CaptureStats, Captured, DnsEventReader, HoldStats,
    NflogConfig, NflogReader, NfqueueConfig, NfqueueReader, PacketSource, QueueDatagram,
};
pub use conntrack::{ConntrackFlusher, Flushed, FlusherStats};
pub use dns::{
    parse_message, parse_packet, parse_packet_into, DnsAnswer, DnsEvent, DnsMessage, ParseStats,
    Skip, Transport,
};
pub use error::{Error, Result};
pub use ipset::{
    add_datagram, Committed, CreateSpec, Entry, Family, IpsetBatch, IpsetSession, SetHeader,
};
pub use nftables::{
    kernel_refresh_mode, newsetelem_batch, NftElem, NftSetBatch, NftSetInfo, NftSetRef,
    NftSetSession, NftSetSpec, RefreshMode, HRNEO_TABLE,
};
pub use pipeline::{
    Counters, FlushTotals, Flusher, IpsetWriter, Learned, Level, Lister, NftWriter, Notes,
    Pipeline, Plan, PolicyCounters, PolicySpec, Prepared, SetWriter, Wake, WhyRecord, MAX_RECORDS,
};
pub use watchlist::{Added, Hit, Origin, Watchlist};

/// Parsers of what the kernel sends, for fuzzing: they take any bytes.
pub mod fuzzing {
    pub use crate::nl::{attrs, messages};
}
