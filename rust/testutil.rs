//! Builders for the bytes unit tests feed the core: netlink messages and
//! attributes as the kernel writes them, DNS messages, and IP/UDP/TCP packets.
//! One copy for every test module.

use std::net::Ipv6Addr;

use crate::nl::consts::NLA_F_NESTED;

// ------------------------------------------------------------------ netlink

/// An attribute: header in host order (as the kernel writes it), payload literal, padded.
pub fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// A nested attribute around `parts`.
pub fn nest(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    nla(ty | NLA_F_NESTED, &parts.concat())
}

/// An attribute header alone (len, type), for golden bytes written out by hand.
pub fn nla_hdr(len: u16, ty: u16) -> Vec<u8> {
    let mut v = len.to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v
}

/// `nlmsghdr` in host order, as the kernel reads it.
pub fn nlh(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&len.to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

/// A whole netlink message around `payload`.
pub fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = nlh((16 + payload.len()) as u32, ty, flags, seq);
    v.extend_from_slice(payload);
    v
}

// ------------------------------------------------------------------ DNS

/// A DNS name in wire form (no compression).
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A DNS message writer: header, one question, then records in the order added.
pub struct Msg {
    pub buf: Vec<u8>,
}

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SVCB: u16 = 64;
pub const TYPE_HTTPS: u16 = 65;
pub const CLASS_IN: u16 = 1;
pub const CLASS_CH: u16 = 3;

impl Msg {
    /// `ancount` is written as given, so tests can make it lie.
    pub fn new(txid: u16, response: bool, qname: &str, qtype: u16, ancount: u16) -> Msg {
        Msg::with_class(txid, response, qname, qtype, CLASS_IN, ancount)
    }

    pub fn with_class(
        txid: u16,
        response: bool,
        qname: &str,
        qtype: u16,
        qclass: u16,
        ancount: u16,
    ) -> Msg {
        let mut buf = Vec::new();
        buf.extend_from_slice(&txid.to_be_bytes());
        buf.extend_from_slice(&(if response { 0x8180u16 } else { 0x0100 }).to_be_bytes());
        buf.extend_from_slice(&1u16.to_be_bytes());
        buf.extend_from_slice(&ancount.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 0]);
        buf.extend_from_slice(&wire_name(qname));
        buf.extend_from_slice(&qtype.to_be_bytes());
        buf.extend_from_slice(&qclass.to_be_bytes());
        Msg { buf }
    }

    /// Set the RCODE (low 4 bits of the flags).
    pub fn rcode(mut self, rcode: u8) -> Msg {
        self.buf[3] = (self.buf[3] & 0xf0) | (rcode & 0x0f);
        self
    }

    pub fn rr_class(mut self, name: &str, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Msg {
        self.buf.extend_from_slice(&wire_name(name));
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&class.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(rdata);
        self
    }

    pub fn rr(self, name: &str, rtype: u16, ttl: u32, rdata: &[u8]) -> Msg {
        self.rr_class(name, rtype, CLASS_IN, ttl, rdata)
    }

    pub fn a(self, name: &str, ttl: u32, ip: [u8; 4]) -> Msg {
        self.rr(name, TYPE_A, ttl, &ip)
    }

    pub fn aaaa(self, name: &str, ttl: u32, ip: &str) -> Msg {
        let ip: Ipv6Addr = ip.parse().expect("test address");
        self.rr(name, TYPE_AAAA, ttl, &ip.octets())
    }

    pub fn cname(self, name: &str, ttl: u32, target: &str) -> Msg {
        self.rr(name, TYPE_CNAME, ttl, &wire_name(target))
    }

    /// An HTTPS record: priority, target ("" or "." for the owner), ipv4/ipv6 hints.
    pub fn https(
        self,
        name: &str,
        ttl: u32,
        prio: u16,
        target: &str,
        v4: &[[u8; 4]],
        v6: &[&str],
    ) -> Msg {
        let rdata = svcb_rdata(prio, target, v4, v6);
        self.rr(name, TYPE_HTTPS, ttl, &rdata)
    }
}

/// SVCB/HTTPS RDATA (RFC 9460): priority, target, alpn "h2" and the address hints.
pub fn svcb_rdata(prio: u16, target: &str, v4: &[[u8; 4]], v6: &[&str]) -> Vec<u8> {
    let mut r = prio.to_be_bytes().to_vec();
    r.extend(wire_name(target));
    if prio == 0 {
        return r; // AliasMode carries no parameters
    }
    // key 1 alpn: one protocol id "h2"
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&3u16.to_be_bytes());
    r.extend_from_slice(&[2, b'h', b'2']);
    if !v4.is_empty() {
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&((v4.len() * 4) as u16).to_be_bytes());
        for a in v4 {
            r.extend_from_slice(a);
        }
    }
    if !v6.is_empty() {
        r.extend_from_slice(&6u16.to_be_bytes());
        r.extend_from_slice(&((v6.len() * 16) as u16).to_be_bytes());
        for a in v6 {
            r.extend_from_slice(&a.parse::<Ipv6Addr>().expect("test address").octets());
        }
    }
    r
}

// ------------------------------------------------------------------ IP packets

pub const IPPROTO_UDP: u8 = 17;

/// An IPv4 packet 192.0.2.1 -> 192.0.2.2 around `body`.
pub fn ipv4(proto: u8, body: &[u8]) -> Vec<u8> {
    let total = (20 + body.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// An IPv6 packet 2001:db8::1 -> 2001:db8::2 around `body`, `next` being the first header.
pub fn ipv6(next: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("addr").octets());
    p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().expect("addr").octets());
    p.extend_from_slice(body);
    p
}

/// A UDP header (checksum 0) and payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A TCP header (PSH|ACK, no options) from `sport` to 40000, and payload.
pub fn tcp(sport: u16, payload: &[u8]) -> Vec<u8> {
    tcp_seq(sport, 0, payload)
}

/// `tcp` with the sequence number of the payload's first byte.
pub fn tcp_seq(sport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// A DNS message as a UDP/IPv4 answer from port 53.
pub fn udp4_answer(msg: &[u8]) -> Vec<u8> {
    ipv4(IPPROTO_UDP, &udp(53, 40000, msg))
}

/// xorshift64*: a deterministic PRNG, so a failure reproduces exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
