//! DNS on the wire: IP/UDP/TCP framing (`packet`), the message and the chain of
//! names an answer speaks for (`decode`), names as text and match keys
//! (`name`), DNS over TCP put back together (`tcp`), the text-form events
//! Python sees (`event`), and the counts of what packets turned into (`stats`).

pub(crate) mod decode;
pub(crate) mod event;
pub(crate) mod name;
pub(crate) mod packet;
mod stats;
pub(crate) mod tcp;
#[cfg(test)]
mod tests;

pub use event::{parse_message, parse_packet, parse_packet_into, DnsAnswer, DnsEvent, DnsMessage};
pub use packet::{Skip, Transport};
pub use stats::ParseStats;
pub use tcp::{TcpStats, TcpStreams};
