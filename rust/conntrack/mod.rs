//! Deleting the conntrack entries of addresses new to a set, so the next
//! packets of those connections are routed anew (ctnetlink, nfnetlink subsystem 1).

mod filter;
mod flusher;
pub(crate) mod index;
pub(crate) mod message;

#[cfg(feature = "python")]
pub(crate) use flusher::EVENT_RCVBUF;
pub use flusher::{ConntrackFlusher, Flushed, FlusherStats};
#[cfg(feature = "python")]
pub(crate) use message::parse_addrs;
