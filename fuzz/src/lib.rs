//! What the fuzz targets share: a reader that turns fuzz bytes into
//! structured choices, and the invariants of a parsed DNS message, checked
//! both by the packet target and by the DNS target.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::rr::rdata::svcb::SvcParamValue;
use hickory_proto::rr::{DNSClass, RData};
use hrneo::fuzzing::{match_key, name_text, Chain, Decoded, MAX_CHAIN};
use hrneo::DnsMessage;

/// Fuzz bytes read as numbers and slices; past the end everything reads as 0
/// (or empty), so any input decodes to some structure.
#[derive(Debug, Clone)]
pub struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { rest: data }
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> u16 {
        let b = self.take(2);
        let mut a = [0u8; 2];
        a[..b.len()].copy_from_slice(b);
        u16::from_be_bytes(a)
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> u32 {
        let b = self.take(4);
        let mut a = [0u8; 4];
        a[..b.len()].copy_from_slice(b);
        u32::from_be_bytes(a)
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    /// A slice whose length is the next byte (at most 255).
    pub fn bytes8(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.take(n)
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// Whether `inner` lies inside `outer` (parsers hand out borrowed slices of
/// their input, never of anything else). An empty slice is anywhere.
pub fn within(outer: &[u8], inner: &[u8]) -> bool {
    if inner.is_empty() {
        return true;
    }
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    i >= o && i + inner.len() <= o + outer.len()
}

/// Offset of `inner` in `outer` (which must hold it).
pub fn offset(outer: &[u8], inner: &[u8]) -> usize {
    assert!(within(outer, inner));
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

/// Round up to a multiple of 4, as netlink aligns messages and attributes.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The event form of a message (what Python and `hrneo replay` see) is
/// consistent with itself: the chain starts at the question, every answer
/// belongs to the chain, addresses are unique, hints are among them, the
/// minimal TTL is that of the answers, names are lower-case text.
pub fn check_message(m: &DnsMessage) {
    assert!(m.chain.len() <= MAX_CHAIN);
    if let Some(first) = m.chain.first() {
        assert_eq!(first, &m.qname, "the chain starts at the question");
    } else {
        assert!(m.answers.is_empty() && m.addresses.is_empty(), "no chain, nothing of it");
    }
    for a in &m.answers {
        assert!(m.chain.contains(&a.name), "answer {:?} is off the chain {:?}", a.name, m.chain);
    }
    let unique: HashSet<&IpAddr> = m.addresses.iter().collect();
    assert_eq!(unique.len(), m.addresses.len(), "addresses are deduplicated");
    let mut hints = m.hints.iter();
    let mut next = hints.next();
    for a in &m.addresses {
        if next == Some(a) {
            next = hints.next();
        }
    }
    assert!(next.is_none(), "hints are the hint-only addresses, in order");
    let min = m.answers.iter().map(|a| a.ttl).min().unwrap_or(0);
    assert_eq!(m.min_ttl, min);
    for name in std::iter::once(&m.qname).chain(&m.chain).chain(m.answers.iter().map(|a| &a.name)) {
        assert!(
            name.bytes().all(|b| (0x21..=0x7e).contains(&b) && !b.is_ascii_uppercase()),
            "name text {name:?} is lower-case printable ASCII"
        );
    }
}

/// `Chain::follow` on a decoded message: the names are unique, start at an IN
/// question and are each reached from the chain; the records are answers of
/// class IN owned by the chain, in wire order; every address given is an A/AAAA
/// record or an SVCB/HTTPS hint of such a record. Returns the addresses visited.
pub fn check_chain(d: &Decoded) -> Vec<(IpAddr, bool)> {
    let chain = Chain::follow(d);
    assert!(chain.names.len() <= MAX_CHAIN);
    match d.question.as_ref().filter(|q| q.query_class == DNSClass::IN) {
        Some(q) => assert!(chain.names.first() == Some(&&q.name)),
        None => assert!(chain.names.is_empty() && chain.records.is_empty()),
    }
    for (i, n) in chain.names.iter().enumerate() {
        assert!(!chain.names[..i].contains(n), "{n} twice on the chain");
    }
    for n in chain.names.iter().skip(1) {
        let reached = d.answers.iter().any(|r| {
            r.dns_class == DNSClass::IN
                && chain.names.contains(&&r.name)
                && match &r.data {
                    RData::CNAME(c) => &c.0 == *n,
                    RData::HTTPS(h) => &h.0.target_name == *n,
                    RData::SVCB(s) => &s.target_name == *n,
                    _ => false,
                }
        });
        assert!(reached, "{n} is on the chain but no chain record leads to it");
    }
    let mut last = None;
    for r in &chain.records {
        assert_eq!(r.dns_class, DNSClass::IN);
        assert!(chain.names.contains(&&r.name));
        let at =
            d.answers.iter().position(|a| std::ptr::eq(a, *r)).expect("a record of the answers");
        assert!(last < Some(at), "records in wire order, each once");
        last = Some(at);
    }
    let mut visited = Vec::new();
    chain.addresses(|ip, hint| visited.push((ip, hint)));
    let mut want = Vec::new();
    for r in &chain.records {
        match &r.data {
            RData::A(a) => want.push((IpAddr::V4(a.0), false)),
            RData::AAAA(a) => want.push((IpAddr::V6(a.0), false)),
            _ => {}
        }
    }
    for r in &chain.records {
        let s = match &r.data {
            RData::HTTPS(h) => &h.0,
            RData::SVCB(s) => s,
            _ => continue,
        };
        for (_, v) in s.svc_params.iter().filter(|_| s.svc_priority != 0) {
            match v {
                SvcParamValue::Ipv4Hint(h) => {
                    want.extend(h.0.iter().map(|a| (IpAddr::V4(a.0), true)))
                }
                SvcParamValue::Ipv6Hint(h) => {
                    want.extend(h.0.iter().map(|a| (IpAddr::V6(a.0), true)))
                }
                _ => {}
            }
        }
    }
    assert_eq!(visited, want, "addresses come from the chain's records, each once");
    let min = chain.records.iter().map(|r| r.ttl).min().unwrap_or(0);
    assert_eq!(chain.min_ttl(), min);
    let mut key = Vec::new();
    for n in &chain.names {
        match_key(n, &mut key);
        assert!(key
            .iter()
            .all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | 0)));
        let dots = key.iter().filter(|&&b| b == b'.').count();
        assert_eq!(dots, usize::from(n.num_labels()).saturating_sub(1), "a dot per label boundary");
    }
    visited
}

/// The event made of `raw` says what the chain says.
pub fn check_digest(d: &Decoded, visited: &[(IpAddr, bool)], m: &DnsMessage) {
    check_message(m);
    let chain = Chain::follow(d);
    let names: Vec<String> = chain.names.iter().map(|n| name_text(n)).collect();
    assert_eq!(m.chain, names);
    assert_eq!(m.answers.len(), chain.records.len());
    let mut addrs: Vec<IpAddr> = Vec::new();
    for (ip, _) in visited {
        if !addrs.contains(ip) {
            addrs.push(*ip);
        }
    }
    assert_eq!(m.addresses, addrs);
    assert_eq!((m.txid, m.is_response, m.rcode), (d.id, d.is_response, d.rcode));
}
