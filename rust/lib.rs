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

#[cfg(test)]
mod fuzz_seeds;
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

/// The parsers of packets and kernel replies (and the writers they must agree
/// with), for the cargo-fuzz targets in `fuzz/`: they take any bytes. Not a
/// stable API; the daemon and the Python layer use the items above.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::conntrack::index::EntryIndex;
    pub use crate::conntrack::message::{
        parse_entry, parse_event, tally, write_delete, Event, Victim,
    };
    pub use crate::dns::decode::{decode, Chain, Decoded, MAX_CHAIN};
    pub use crate::dns::name::{match_key, name_text, text_match_key};
    pub use crate::dns::packet::{parse_ip, Segment};
    pub use crate::dns::TcpStreams;
    pub use crate::ipset::message::{classify_acks, parse_list_msg};
    pub use crate::nftables::message::{
        msg_newset, msg_newsetelem, parse_elems, parse_set, NewSet,
    };
    pub use crate::nftables::session::intervals;
    pub use crate::nl::{attrs, messages, Attr, AttrIter, Datagram, MsgWriter, Nfgenmsg, NlMsg};
}
