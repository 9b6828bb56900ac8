//! Set elements (addresses and networks) and what the kernel says about a set.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::consts::{
    IPSET_ERR_HASH_RANGE_UNSUPPORTED, IPSET_ERR_INVALID_FAMILY, NFPROTO_IPV4, NFPROTO_IPV6,
};
use crate::error::{Error, Result};

/// One element: an address, or a network (`prefix` shorter than the address width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The address (host bits of a network cleared).
    pub addr: IpAddr,
    /// `None` for a single address (or a host-width prefix).
    pub prefix: Option<u8>,
}

impl Entry {
    /// Parse "192.0.2.1", "2001:db8::1", "203.0.113.0/24". Host bits of a
    /// network are cleared (as the kernel does); "/32" ("/128") is an address.
    pub fn parse(text: &str) -> Result<Entry> {
        let bad = || Error::InvalidArgument(format!("not an IP address or network: {text:?}"));
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            None => (text, None),
            Some((a, p)) => {
                let p: u8 = p.parse().map_err(|_| bad())?;
                (a, Some(p))
            }
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        match prefix {
            Some(p) if p > width => Err(bad()),
            Some(p) => Ok(Entry::network(addr, p)),
            None => Ok(Entry::host(addr)),
        }
    }

    /// A single address.
    pub fn host(addr: IpAddr) -> Entry {
        Entry { addr, prefix: None }
    }

    /// The network of the first `prefix` bits of `addr` (host bits cleared);
    /// a prefix of the address's width or more is the address itself.
    pub(crate) fn network(addr: IpAddr, prefix: u8) -> Entry {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if prefix < width {
            Entry { addr: mask(addr, prefix), prefix: Some(prefix) }
        } else {
            Entry::host(addr)
        }
    }

    /// Whether `ip` is this address, or inside this network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match self.prefix {
            None => self.addr == *ip,
            Some(p) => ip.is_ipv6() == self.is_ipv6() && mask(*ip, p) == self.addr,
        }
    }

    /// Whether this is an IPv6 element.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// "IPv4" or "IPv6", for messages.
    pub fn family_name(&self) -> &'static str {
        if self.is_ipv6() {
            "IPv6"
        } else {
            "IPv4"
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix {
            Some(p) => write!(f, "{}/{}", self.addr, p),
            None => write!(f, "{}", self.addr),
        }
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// What the kernel tells about a set (LIST with IPSET_FLAG_LIST_HEADER).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetHeader {
    /// The set's name.
    pub name: String,
    /// "hash:net", "hash:ip", ...
    pub typename: String,
    /// Revision of the set type.
    pub revision: u8,
    /// NFPROTO_IPV4 / NFPROTO_IPV6.
    pub family: u8,
    /// Default timeout; `None` when the set was created without timeout support.
    pub timeout: Option<u32>,
    /// Most elements the set takes.
    pub maxelem: Option<u32>,
    /// Hash buckets.
    pub hashsize: Option<u32>,
    /// Kernel memory the set uses, in bytes.
    pub memsize: Option<u32>,
    /// Rules and sets that reference it.
    pub references: Option<u32>,
    /// Number of entries (IPSET_ATTR_ELEMENTS, Linux 4.14+); `None` on older kernels.
    pub elements: Option<u32>,
}

impl SetHeader {
    /// "inet" or "inet6" (the vocabulary of the ipset program).
    pub fn family_name(&self) -> &'static str {
        match self.family {
            NFPROTO_IPV6 => "inet6",
            NFPROTO_IPV4 => "inet",
            _ => "unknown",
        }
    }

    /// Whether the set takes networks (hash:net and relatives).
    pub fn is_net(&self) -> bool {
        self.typename.starts_with("hash:net")
    }

    /// The user-facing check done before sending: the kernel would only say
    /// "protocol error" for an address of the wrong family.
    pub fn check_entry(&self, e: &Entry) -> Result<()> {
        let set_v6 = self.family == NFPROTO_IPV6;
        if set_v6 != e.is_ipv6() {
            return Err(Error::Ipset {
                set: self.name.clone(),
                code: IPSET_ERR_INVALID_FAMILY,
                reason: format!(
                    "set is {}, address {e} is {}",
                    self.family_name(),
                    e.family_name()
                ),
                new: Vec::new(),
            });
        }
        if e.prefix.is_some() && !self.is_net() {
            return Err(Error::Ipset {
                set: self.name.clone(),
                code: IPSET_ERR_HASH_RANGE_UNSUPPORTED,
                reason: format!(
                    "set is {}: the network {e} would be expanded; use a hash:net set",
                    self.typename
                ),
                new: Vec::new(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::consts::{check_name, reason, IPSET_ERR_HASH_FULL};

    #[test]
    fn entries_parse_and_check() {
        assert!(Entry::parse("300.1.1.1").is_err());
        assert!(Entry::parse("192.0.2.1/33").is_err());
        assert!(Entry::parse("192.0.2.1/x").is_err());
        assert!(Entry::parse("").is_err());
        assert_eq!(Entry::parse("192.0.2.9/32").unwrap().to_string(), "192.0.2.9");
        assert_eq!(Entry::parse("2001:DB8::1").unwrap().to_string(), "2001:db8::1");
        assert_eq!(Entry::parse("2001:db8::1/0").unwrap().to_string(), "::/0");
        let h = SetHeader {
            name: "s".into(),
            typename: "hash:ip".into(),
            family: NFPROTO_IPV4,
            ..Default::default()
        };
        assert!(h.check_entry(&Entry::parse("192.0.2.1").unwrap()).is_ok());
        let err = h.check_entry(&Entry::parse("2001:db8::1").unwrap()).unwrap_err();
        assert!(err.to_string().contains("set is inet, address 2001:db8::1 is IPv6"), "{err}");
        assert!(h.check_entry(&Entry::parse("192.0.2.0/24").unwrap()).is_err());
        assert!(check_name(&"x".repeat(31)).is_ok());
        assert!(check_name(&"x".repeat(32)).is_err());
        assert_eq!(reason(IPSET_ERR_HASH_FULL), "set is full (maxelem reached)");
    }
}
