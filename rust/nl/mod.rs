//! Netfilter netlink plumbing shared by the NFLOG, ipset and ctnetlink code:
//! constants, a message writer, a message/attribute parser and the socket.
//! No PyO3 here.

pub mod consts;
pub mod parse;
pub mod socket;
pub mod write;

pub use parse::{attrs, messages, Attr, AttrIter, NlMsg};
pub use socket::NetfilterSocket;
pub use write::{Datagram, MsgWriter, Nfgenmsg};
