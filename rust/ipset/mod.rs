//! ipset over netlink (nfnetlink subsystem 6): batched adds that tell which
//! addresses were new, and the set management the daemon needs.
//!
//! Message layout and codes follow `include/uapi/linux/netfilter/ipset/ip_set.h`
//! and `net/netfilter/ipset/ip_set_core.c`. No PyO3 here.

mod batch;
pub(crate) mod consts;
mod entry;
pub(crate) mod message;
mod session;

pub use batch::{Committed, IpsetBatch};
pub use entry::{Entry, SetHeader};
pub use message::{add_datagram, CreateSpec};
pub use session::IpsetSession;

use crate::error::{Error, Result};

/// An address family in ipset's words: "inet" (IPv4) or "inet6" (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
}

impl Family {
    /// Parse "inet" or "inet6".
    pub fn parse(text: &str) -> Result<Family> {
        match text {
            "inet" => Ok(Family::Inet),
            "inet6" => Ok(Family::Inet6),
            other => Err(Error::InvalidArgument(format!(
                "family must be 'inet' or 'inet6', not {other:?}"
            ))),
        }
    }

    /// "inet" or "inet6".
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }

    /// The NFPROTO_* code the kernel uses.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => consts::NFPROTO_IPV4,
            Family::Inet6 => consts::NFPROTO_IPV6,
        }
    }

    /// The family of an address.
    pub fn of(addr: &std::net::IpAddr) -> Family {
        if addr.is_ipv6() {
            Family::Inet6
        } else {
            Family::Inet
        }
    }
}
