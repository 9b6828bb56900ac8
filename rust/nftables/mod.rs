//! nf_tables sets over netlink (nfnetlink subsystem 10): batched adds that tell
//! which addresses were new, and the set management the daemon needs.
//!
//! Message layout follows `include/uapi/linux/netfilter/nf_tables.h` and
//! `net/netfilter/nf_tables_api.c`. No PyO3 here.
//!
//! How a commit works, and what each part needs of the kernel (see `batch.rs`;
//! the README's "How the nftables backend adds" has the table):
//! 1. one GETSETELEM per queued entry, all in one datagram (Linux 4.15+; older
//!    kernels answer EOPNOTSUPP and the batch falls back to one dump of the set):
//!    the kernel answers the present ones with the element (and its time left)
//!    and the absent or expired ones with ENOENT. No transaction, no lock.
//! 2. one transaction (NFNL_MSG_BATCH_BEGIN ... END) adding the absent entries
//!    and the present ones of a timeout set whose time left is short of the
//!    timeout, consecutive ones in one NEWSETELEM. Without NLM_F_EXCL a present
//!    element is no error; Linux 6.12+ (commit 4201f3938914, "set element timeout
//!    update support") then resets its countdown, provided the add carries
//!    NFTA_SET_ELEM_EXPIRATION (an equal timeout alone changes nothing). Older
//!    kernels leave it as it was, so there the present ones are refreshed by a
//!    DELSETELEM and a NEWSETELEM in the same transaction (the packet path never
//!    sees them missing). Which kernel this is is learned once per process, from
//!    the first refresh: the element is looked up again after a plain add.
//! 3. only when the kernel refused something (a full set, an overlapping
//!    interval), which aborted the whole transaction without naming the element:
//!    the same again with a message per entry, then without the refused ones.

mod batch;
pub(crate) mod consts;
pub(crate) mod message;
pub(crate) mod session;

pub use batch::{kernel_refresh_mode, NftSetBatch, RefreshMode};
pub use message::{newsetelem_batch, NftElem};
pub use session::{NftSetInfo, NftSetSession, NftSetSpec};

use std::fmt;

use crate::error::{Error, Result};
use consts::{
    check_name, NFPROTO_ARP, NFPROTO_BRIDGE, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6,
    NFPROTO_NETDEV,
};

/// The table hrneo owns: `inet hrneo`. Sets named without a table live there.
pub const HRNEO_TABLE: &str = "hrneo";

/// An nf_tables set: the family and name of its table, and its own name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NftSetRef {
    /// NFPROTO_* of the table (inet, ip, ip6, ...).
    pub family: u8,
    /// The table's name.
    pub table: String,
    /// The set's name.
    pub name: String,
}

/// nft's word for a table family.
pub fn family_name(family: u8) -> &'static str {
    match family {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        NFPROTO_ARP => "arp",
        NFPROTO_BRIDGE => "bridge",
        NFPROTO_NETDEV => "netdev",
        _ => "unknown",
    }
}

/// The NFPROTO_* of nft's word for a table family.
pub fn parse_family(text: &str) -> Result<u8> {
    Ok(match text {
        "inet" => NFPROTO_INET,
        "ip" => NFPROTO_IPV4,
        "ip6" => NFPROTO_IPV6,
        "arp" => NFPROTO_ARP,
        "bridge" => NFPROTO_BRIDGE,
        "netdev" => NFPROTO_NETDEV,
        other => {
            return Err(Error::InvalidArgument(format!(
                "nftables family must be inet, ip, ip6, arp, bridge or netdev, not {other:?}"
            )))
        }
    })
}

impl NftSetRef {
    /// A set in table `family table`.
    pub fn new(family: u8, table: &str, name: &str) -> Result<NftSetRef> {
        check_name("table", table)?;
        check_name("set", name)?;
        family_name_checked(family)?;
        Ok(NftSetRef { family, table: table.to_string(), name: name.to_string() })
    }

    /// dnsmasq's notation: `family#table#set`, `table#set` (family inet), or a
    /// bare `set` in hrneo's own table `inet hrneo`.
    pub fn parse(text: &str) -> Result<NftSetRef> {
        let parts: Vec<&str> = text.split('#').collect();
        match parts.as_slice() {
            [name] => NftSetRef::new(NFPROTO_INET, HRNEO_TABLE, name),
            [table, name] => NftSetRef::new(NFPROTO_INET, table, name),
            [family, table, name] => NftSetRef::new(parse_family(family)?, table, name),
            _ => Err(Error::InvalidArgument(format!(
                "not an nftables set: {text:?} (use family#table#set, table#set or set)"
            ))),
        }
    }

    /// `family#table#set`, the form `parse` reads back.
    pub fn spec(&self) -> String {
        format!("{}#{}#{}", family_name(self.family), self.table, self.name)
    }
}

fn family_name_checked(family: u8) -> Result<()> {
    if family_name(family) == "unknown" {
        return Err(Error::InvalidArgument(format!("unknown nftables family {family}")));
    }
    Ok(())
}

impl fmt::Display for NftSetRef {
    /// As nft writes it: `inet hrneo vpn`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", family_name(self.family), self.table, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_refs_parse_in_dnsmasq_notation() {
        let r = NftSetRef::parse("inet#fw4#vpn_domains").unwrap();
        assert_eq!((r.family, r.table.as_str(), r.name.as_str()), (1, "fw4", "vpn_domains"));
        assert_eq!(r.to_string(), "inet fw4 vpn_domains");
        assert_eq!(r.spec(), "inet#fw4#vpn_domains");
        assert_eq!(NftSetRef::parse("vpn").unwrap().spec(), "inet#hrneo#vpn");
        assert_eq!(NftSetRef::parse("fw4#vpn").unwrap().spec(), "inet#fw4#vpn");
        assert_eq!(NftSetRef::parse("ip6#t#s").unwrap().family, 10);
        assert_eq!(NftSetRef::parse("ip#t#s").unwrap().family, 2);
        for bad in ["", "a#b#c#d", "bogus#t#s", "inet##s", "inet#t#", &"x".repeat(256)] {
            assert!(NftSetRef::parse(bad).is_err(), "{bad:?}");
        }
        assert!(NftSetRef::parse(&"x".repeat(255)).is_ok());
    }
}
