//! Which answers count, and which addresses never go into a set.
//!
//! The router trusts no packet: an answer counts only from a trusted source
//! (when the config names any), and an address the router needs or that
//! routes nowhere is never added, whatever an answer says: the router's own
//! addresses and neighbours, its resolvers and gateways (the daemon passes
//! those in and refreshes them), and the classes below, which are always out.

use std::net::{IpAddr, Ipv4Addr};

use crate::ipset::Entry;

/// Trusted answer sources and protected addresses.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    trusted: Vec<Entry>,
    protected: Vec<Entry>,
}

impl Guard {
    /// Only answers from `nets` count from now on (empty: any source).
    pub fn set_trusted(&mut self, nets: Vec<Entry>) {
        self.trusted = nets;
    }

    /// Addresses of `nets` are never added, besides the fixed classes.
    pub fn set_protected(&mut self, nets: Vec<Entry>) {
        self.protected = nets;
    }

    /// Whether an answer from `src` counts.
    pub fn trusts(&self, src: &IpAddr) -> bool {
        self.trusted.is_empty() || self.trusted.iter().any(|n| n.contains(src))
    }

    /// Whether `addr` must stay out of every set.
    pub fn protects(&self, addr: &IpAddr) -> bool {
        routes_nowhere(addr) || self.protected.iter().any(|n| n.contains(addr))
    }
}

/// Unspecified (what blocking resolvers answer), "this network", loopback,
/// link-local, multicast, limited broadcast, IPv4-mapped IPv6.
fn routes_nowhere(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 0
                || a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || *a == Ipv4Addr::BROADCAST
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || s[0] & 0xffc0 == 0xfe80
                || (s[..5] == [0; 5] && s[5] == 0xffff)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_classes_are_always_out() {
        let g = Guard::default();
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.251",
            "239.1.1.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:192.0.2.1",
        ] {
            assert!(g.protects(&ip(a)), "{a}");
        }
        for a in ["192.0.2.1", "198.51.100.255", "2001:db8::1", "fec0::1", "::2"] {
            assert!(!g.protects(&ip(a)), "{a}");
        }
    }

    #[test]
    fn protected_networks_and_trusted_sources() {
        let mut g = Guard::default();
        assert!(g.trusts(&ip("203.0.113.9")), "no list: any source");
        g.set_trusted(vec![
            Entry::parse("203.0.113.53").unwrap(),
            Entry::parse("2001:db8:53::/48").unwrap(),
        ]);
        assert!(g.trusts(&ip("203.0.113.53")) && g.trusts(&ip("2001:db8:53:1::9")));
        assert!(!g.trusts(&ip("203.0.113.54")) && !g.trusts(&ip("2001:db8:54::1")));
        g.set_protected(vec![
            Entry::parse("192.0.2.0/26").unwrap(),
            Entry::parse("198.51.100.1").unwrap(),
        ]);
        assert!(g.protects(&ip("192.0.2.63")) && g.protects(&ip("198.51.100.1")));
        assert!(!g.protects(&ip("192.0.2.64")) && !g.protects(&ip("198.51.100.2")));
    }
}
