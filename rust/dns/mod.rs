//! DNS on the wire: IP/UDP/TCP framing (`packet`), the message and the chain of
//! names an answer speaks for (`decode`), names as text and match keys
//! (`name`), DNS over TCP put back together (`tcp`), and the text-form events
//! Python sees (`event`).

pub(crate) mod decode;
pub(crate) mod event;
pub(crate) mod name;
pub(crate) mod packet;
pub(crate) mod tcp;

pub use event::{
    parse_message, parse_packet, parse_packet_into, DnsAnswer, DnsEvent, DnsMessage, ParseStats,
};
pub use packet::{Skip, Transport};
pub use tcp::{TcpStats, TcpStreams};
