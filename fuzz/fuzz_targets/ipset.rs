//! ipset replies: LIST dumps (`parse_list_msg`) and the acks of an ADD round
//! (`classify_acks`), two ways.
//!
//! First byte below 0x80: the rest is a raw reply datagram. Every member read
//! is an `Entry` as `Entry::parse` would make it (a prefix shorter than the
//! address, host bits clear: it prints and parses back to itself); the acks,
//! collected as the session does, sort every request into exactly one of new,
//! present, or the first other error.
//!
//! 0x80 and up: the rest describes a set header and members (any address,
//! any CIDR, host bits set or not, with or without the seconds left), written as the kernel writes a LIST reply
//! with the core's netlink writer; reading it gives that header and those
//! members as the kernel would hold them.
#![no_main]

use std::collections::HashMap;
use std::net::IpAddr;

use hrneo::fuzzing::{classify_acks, messages, parse_list_msg, Datagram, Nfgenmsg};
use hrneo::{Entry, SetHeader};
use hrneo_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

// include/uapi/linux/netfilter/ipset/ip_set.h
const LIST: u16 = 0x0607; // NFNL_SUBSYS_IPSET << 8 | IPSET_CMD_LIST
const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_TYPENAME: u16 = 3;
const ATTR_REVISION: u16 = 4;
const ATTR_FAMILY: u16 = 5;
const ATTR_DATA: u16 = 7;
const ATTR_ADT: u16 = 8;
const ATTR_IP: u16 = 1;
const ATTR_CIDR: u16 = 3;
const ATTR_TIMEOUT: u16 = 6;
const ATTR_MAXELEM: u16 = 19;
const ATTR_ELEMENTS: u16 = 24;
const ATTR_IPADDR_IPV4: u16 = 1;
const ATTR_IPADDR_IPV6: u16 = 2;
const NET_BYTEORDER: u16 = 0x4000;
const ERR_EXIST: i32 = 4103;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode < 0x80 {
        raw(rest);
    } else {
        written(rest);
    }
});

fn check_member(e: &Entry) {
    let width = if e.addr.is_ipv4() { 32 } else { 128 };
    assert!(e.prefix.is_none_or(|p| p < width), "{e:?}: a prefix shorter than the address");
    let text = e.to_string();
    let again = Entry::parse(&text).unwrap_or_else(|err| panic!("{text}: {err}"));
    assert_eq!(&again, e, "{text} reads back as itself (host bits clear)");
}

fn raw(d: &[u8]) {
    let mut h = SetHeader::default();
    let mut members = Vec::new();
    let mut acks: HashMap<u32, i32> = HashMap::new();
    for m in messages(d) {
        parse_list_msg(&m, &mut h, &mut members);
        // As NetfilterSocket::request_acks collects them.
        if let (Some(code), Some(seq)) = (m.error_code(), m.acked_seq()) {
            acks.insert(seq, code);
        }
    }
    members.iter().for_each(|(e, _)| check_member(e));
    let _ = (h.family_name(), h.is_net());
    for (e, _) in &members {
        let _ = h.check_entry(e);
    }

    // Every ack's request, and as many that got no reply (= succeeded).
    let mut seqs: Vec<u32> = acks.keys().copied().collect();
    seqs.sort_unstable();
    let extra: Vec<u32> = seqs
        .iter()
        .map(|s| s.wrapping_add(0x8000_0000))
        .filter(|s| !acks.contains_key(s))
        .collect();
    seqs.extend(extra);
    let sent: Vec<(u32, usize)> = seqs.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let (new, present, err) = classify_acks(&sent, &acks);
    let mut first_err = None;
    for &(seq, idx) in &sent {
        let code = acks.get(&seq).copied().unwrap_or(0);
        let (is_new, is_present) = (new.contains(&idx), present.contains(&idx));
        match code {
            0 => assert!(is_new && !is_present),
            c if c == -ERR_EXIST => assert!(is_present && !is_new),
            c => {
                assert!(!is_new && !is_present);
                first_err.get_or_insert(c);
            }
        }
    }
    assert_eq!(err.is_some(), first_err.is_some());
    if let (Some(e), Some(c)) = (err, first_err.filter(|c| (i32::MIN + 1..0).contains(c))) {
        assert_eq!(e, -c, "a negative errno comes back as the errno");
    }
}

fn written(input: &[u8]) {
    let mut b = Bytes::new(input);
    let name = String::from_utf8_lossy(b.bytes8()).replace('\0', "");
    let typename = ["hash:net", "hash:ip", "hash:net,iface"][usize::from(b.u8() % 3)];
    let (revision, family) = (b.u8(), [2u8, 10][usize::from(b.u8() % 2)]);
    let (timeout, maxelem, elements) = (b.u32(), b.u32(), b.u32());
    let mut raw_members = Vec::new();
    while !b.is_empty() && raw_members.len() < 64 {
        let k = b.u8();
        let addr = if k & 1 == 0 {
            IpAddr::from(b.u32().to_be_bytes())
        } else {
            IpAddr::from((u128::from(b.u64()) << 64 | u128::from(b.u64())).to_be_bytes())
        };
        let cidr = (k & 2 != 0).then(|| b.u8());
        let left = (k & 4 != 0).then(|| b.u32());
        raw_members.push((addr, cidr, left));
    }

    // One message with the header, then the members two per message, as a dump comes.
    let mut d = Datagram::new();
    {
        let mut m = d.message(LIST, 2, 1, Nfgenmsg::new(2, 0));
        m.attr_u8(ATTR_PROTOCOL, 6);
        m.attr_strz(ATTR_SETNAME, &name);
        m.attr_strz(ATTR_TYPENAME, typename);
        m.attr_u8(ATTR_REVISION, revision);
        m.attr_u8(ATTR_FAMILY, family);
        m.nest_start(ATTR_DATA);
        m.attr_be32(ATTR_TIMEOUT | NET_BYTEORDER, timeout);
        m.attr_be32(ATTR_MAXELEM | NET_BYTEORDER, maxelem);
        m.attr_be32(ATTR_ELEMENTS | NET_BYTEORDER, elements);
        m.nest_end();
    }
    for pair in raw_members.chunks(2) {
        let mut m = d.message(LIST, 2, 1, Nfgenmsg::new(2, 0));
        m.attr_u8(ATTR_PROTOCOL, 6);
        m.attr_strz(ATTR_SETNAME, &name);
        m.nest_start(ATTR_ADT);
        for (addr, cidr, left) in pair {
            m.nest_start(ATTR_DATA);
            m.nest_start(ATTR_IP);
            match addr {
                IpAddr::V4(a) => m.attr(ATTR_IPADDR_IPV4 | NET_BYTEORDER, &a.octets()),
                IpAddr::V6(a) => m.attr(ATTR_IPADDR_IPV6 | NET_BYTEORDER, &a.octets()),
            };
            m.nest_end();
            if let Some(c) = cidr {
                m.attr_u8(ATTR_CIDR, *c);
            }
            if let Some(t) = left {
                m.attr_be32(ATTR_TIMEOUT | NET_BYTEORDER, *t);
            }
            m.nest_end();
        }
        m.nest_end();
    }
    let mut h = SetHeader::default();
    let mut members = Vec::new();
    for m in messages(d.as_bytes()) {
        parse_list_msg(&m, &mut h, &mut members);
    }
    assert_eq!((h.name.as_str(), h.typename.as_str()), (name.as_str(), typename));
    assert_eq!((h.revision, h.family), (revision, family));
    assert_eq!((h.timeout, h.maxelem, h.elements), (Some(timeout), Some(maxelem), Some(elements)));
    // What the kernel would hold: the network of a CIDR shorter than the
    // address, the address alone for a full (or impossible) one.
    let want: Vec<(Entry, Option<u32>)> = raw_members
        .iter()
        .map(|(addr, cidr, left)| {
            let width = if addr.is_ipv4() { 32 } else { 128 };
            let e = match cidr.filter(|&c| c < width) {
                Some(c) => Entry::parse(&format!("{addr}/{c}")).expect("a network"),
                None => Entry::host(*addr),
            };
            (e, *left)
        })
        .collect();
    assert_eq!(members, want);
    members.iter().for_each(|(e, _)| check_member(e));
}
