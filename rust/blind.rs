//! DNS-blind traffic: new connections from LAN clients to addresses that no DNS
//! answer seen by hrneo contained. A client whose connections mostly go to such
//! addresses resolves some other way (DNS over HTTPS or TLS in the browser, or
//! addresses written into an app), and no DNS-based router can route it.
//!
//! The pipeline notes every address of every answer (`Blind::saw`); the
//! conntrack thread reports every new connection (`Blind::connection`).
//! Memory is bounded: the addresses seen are 32-bit fingerprints in two
//! generations of at most `SEEN_PER_GENERATION` (the older generation is
//! dropped when the newer fills), and at most `MAX_CLIENTS` clients are counted.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use crate::ipset::Entry;

/// Fingerprints per generation of the addresses seen in answers.
const SEEN_PER_GENERATION: usize = 65_536;
/// Clients counted at most; a new client past it is not counted.
pub const MAX_CLIENTS: usize = 256;

/// The counts of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCount {
    /// New connections to addresses outside the router's networks.
    pub connections: u64,
    /// Of those, to addresses no answer seen contained.
    pub blind: u64,
    /// The last such address.
    pub last_blind: Option<IpAddr>,
}

/// Addresses seen in answers, and per client the connections and the blind ones.
#[derive(Debug, Default)]
pub struct Blind {
    current: HashSet<u32>,
    previous: HashSet<u32>,
    clients: HashMap<IpAddr, ClientCount>,
    /// The router's networks: clients are in them, destinations outside them.
    local_nets: Vec<Entry>,
    /// The router's own addresses: never a client.
    own: Vec<IpAddr>,
    /// Connections not counted because `MAX_CLIENTS` clients are counted already.
    pub uncounted: u64,
    off: bool,
}

fn fingerprint(ip: &IpAddr) -> u32 {
    let mut h = DefaultHasher::new();
    ip.hash(&mut h);
    h.finish() as u32
}

impl Blind {
    /// Count (on) or not (off: the counts so far are dropped).
    pub fn set_enabled(&mut self, on: bool) {
        if !on {
            self.clients.clear();
            self.current.clear();
            self.previous.clear();
            self.uncounted = 0;
        }
        self.off = !on;
    }

    /// Whether counting is on.
    pub fn enabled(&self) -> bool {
        !self.off
    }

    /// The router's networks (host entries are its own addresses).
    pub fn set_local(&mut self, nets: &[Entry]) {
        self.own = nets.iter().filter(|e| e.prefix.is_none()).map(|e| e.addr).collect();
        self.local_nets = nets.iter().filter(|e| e.prefix.is_some()).copied().collect();
    }

    /// An answer contained `ip`.
    pub fn saw(&mut self, ip: &IpAddr) {
        if self.off {
            return;
        }
        if self.current.len() >= SEEN_PER_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(fingerprint(ip));
    }

    fn seen(&self, ip: &IpAddr) -> bool {
        let f = fingerprint(ip);
        self.current.contains(&f) || self.previous.contains(&f)
    }

    fn is_local(&self, ip: &IpAddr) -> bool {
        self.own.contains(ip) || self.local_nets.iter().any(|n| n.contains(ip))
    }

    /// A new connection from `src` to `dst` (the original direction).
    pub fn connection(&mut self, src: IpAddr, dst: IpAddr) {
        let routable = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => {
                !(a.is_loopback() || a.is_multicast() || a.is_broadcast() || a.is_unspecified())
            }
            IpAddr::V6(a) => !(a.is_loopback() || a.is_multicast() || a.is_unspecified()),
        };
        // From a client on one of the router's networks, to the outside.
        if self.off || self.own.contains(&src) || !self.local_nets.iter().any(|n| n.contains(&src))
        {
            return;
        }
        if !routable(&dst) || self.is_local(&dst) {
            return;
        }
        let blind = !self.seen(&dst);
        let full = self.clients.len() >= MAX_CLIENTS;
        let Some(c) = (match self.clients.get_mut(&src) {
            Some(c) => Some(c),
            None if full => None,
            None => Some(self.clients.entry(src).or_default()),
        }) else {
            self.uncounted += 1;
            return;
        };
        c.connections += 1;
        if blind {
            c.blind += 1;
            c.last_blind = Some(dst);
        }
    }

    /// Every client counted, most blind connections first.
    pub fn clients(&self) -> Vec<(IpAddr, ClientCount)> {
        let mut v: Vec<(IpAddr, ClientCount)> =
            self.clients.iter().map(|(a, c)| (*a, *c)).collect();
        v.sort_by(|a, b| b.1.blind.cmp(&a.1.blind).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn blind() -> Blind {
        let mut b = Blind::default();
        let nets: Vec<Entry> =
            ["192.0.2.0/26", "192.0.2.1", "2001:db8:1::/64", "198.51.100.0/24", "198.51.100.1"]
                .iter()
                .map(|s| Entry::parse(s).unwrap())
                .collect();
        b.set_local(&nets);
        b
    }

    #[test]
    fn counts_connections_to_unseen_addresses_per_client() {
        let mut b = blind();
        b.saw(&ip("203.0.113.10"));
        b.connection(ip("192.0.2.2"), ip("203.0.113.10")); // seen
        b.connection(ip("192.0.2.2"), ip("203.0.113.99")); // blind
        b.connection(ip("192.0.2.3"), ip("203.0.113.98")); // blind
        b.connection(ip("2001:db8:1::2"), ip("2001:db8:100::1")); // blind
                                                                  // Not counted: the router itself, a connection into the LAN, to the router,
                                                                  // from outside, to multicast.
        b.connection(ip("192.0.2.1"), ip("203.0.113.97"));
        b.connection(ip("192.0.2.2"), ip("192.0.2.3"));
        b.connection(ip("192.0.2.2"), ip("198.51.100.1"));
        b.connection(ip("203.0.113.5"), ip("192.0.2.2"));
        b.connection(ip("192.0.2.2"), ip("224.0.0.251"));
        let c = b.clients();
        assert_eq!(c.len(), 3);
        let two = c.iter().find(|(a, _)| *a == ip("192.0.2.2")).unwrap().1;
        assert_eq!((two.connections, two.blind, two.last_blind), (2, 1, Some(ip("203.0.113.99"))));
    }

    #[test]
    fn bounded_seen_generations_and_clients() {
        let mut b = blind();
        for i in 0..(2 * SEEN_PER_GENERATION as u32 + 10) {
            b.saw(&IpAddr::V4(std::net::Ipv4Addr::from(0xCB00_0000 + i)));
        }
        assert!(b.current.len() <= SEEN_PER_GENERATION && b.previous.len() <= SEEN_PER_GENERATION);
        // The newest addresses are still known.
        b.connection(
            ip("192.0.2.2"),
            IpAddr::V4(std::net::Ipv4Addr::from(0xCB00_0000 + 2 * SEEN_PER_GENERATION as u32)),
        );
        assert_eq!(b.clients()[0].1.blind, 0);
        let mut b = blind();
        b.set_local(&[Entry::parse("2001:db8:1::/64").unwrap()]);
        for i in 0..(MAX_CLIENTS as u128 + 5) {
            let client =
                std::net::Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_0000u128 + i + 1);
            b.connection(IpAddr::V6(client), ip("2001:db8:100::1"));
        }
        assert_eq!(b.clients().len(), MAX_CLIENTS);
        assert_eq!(b.uncounted, 5);
    }
}
