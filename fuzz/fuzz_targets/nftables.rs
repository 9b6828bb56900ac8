//! nf_tables replies: NEWSET (`parse_set`) and NEWSETELEM (`parse_elems`),
//! and the intervals a dump of an interval set is paired into (`intervals`,
//! `Interval::text`), two ways.
//!
//! First byte below 0x80: the rest is a raw reply datagram. Elements have a
//! key (an address when it is 4 or 16 bytes); intervals run from a start to a
//! later end of the same family, and their text reads back as an address, a
//! network or a range.
//!
//! 0x80 and up: the rest describes elements (addresses, interval ends,
//! timeouts) and a set; the core's writers write NEWSETELEM and NEWSET, and
//! the parsers read back what was written.
#![no_main]

use std::net::IpAddr;

use hrneo::fuzzing::{
    intervals, messages, msg_newset, msg_newsetelem, parse_elems, parse_set, Datagram, NewSet,
};
use hrneo::{Entry, NftElem, NftSetRef};
use hrneo_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

// include/uapi/linux/netfilter/nf_tables.h, nft's datatypes
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_TYPE_IPADDR: u32 = 7;
const NFT_TYPE_IP6ADDR: u32 = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode < 0x80 {
        raw(rest);
    } else {
        written(rest);
    }
});

fn as_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn raw(d: &[u8]) {
    let mut elems = Vec::new();
    for m in messages(d) {
        let s = parse_set(&m);
        assert!(!s.table.contains('\0') && !s.name.contains('\0'));
        parse_elems(&m, &mut elems);
    }
    for e in &elems {
        assert!(!e.key.is_empty(), "an element has a key");
        assert_eq!(e.addr().is_some(), matches!(e.key.len(), 4 | 16));
    }
    for iv in intervals(elems) {
        if let Some(end) = iv.end {
            assert_eq!(end.is_ipv4(), iv.start.is_ipv4(), "{iv:?}: one family");
            assert!(as_u128(end) > as_u128(iv.start), "{iv:?}: the end after the start");
        }
        let text = iv.text();
        let last = match text.split_once('-') {
            Some((a, b)) => {
                let (a, b): (IpAddr, IpAddr) =
                    (a.parse().expect("a range start"), b.parse().expect("a range end"));
                assert_eq!(a, iv.start);
                assert!(as_u128(b) > as_u128(a), "{text}: a range of more than one address");
                b
            }
            None => {
                let e = Entry::parse(&text).unwrap_or_else(|err| panic!("{text}: {err}"));
                assert_eq!(e.addr, iv.start, "{text}: a network from its first address");
                let width = if e.addr.is_ipv4() { 32 } else { 128 };
                let host = width - u32::from(e.prefix.unwrap_or(width as u8));
                let size = 1u128.checked_shl(host).unwrap_or(0);
                let last = as_u128(e.addr).wrapping_add(size.wrapping_sub(1));
                match e.addr {
                    IpAddr::V4(_) => IpAddr::from((last as u32).to_be_bytes()),
                    IpAddr::V6(_) => IpAddr::from(last.to_be_bytes()),
                }
            }
        };
        // The text covers the interval: up to the address before its end.
        match iv.end {
            Some(end) => assert_eq!(as_u128(last), as_u128(end) - 1, "{text} for {iv:?}"),
            None => assert!(
                matches!(last, IpAddr::V4(a) if u32::from(a) == u32::MAX)
                    || as_u128(last) == u128::MAX
            ),
        }
    }
}

fn written(input: &[u8]) {
    let mut b = Bytes::new(input);
    let set = NftSetRef::new(1, "hrneo", "vpn").expect("a valid set");
    let mut elems = Vec::new();
    while !b.is_empty() && elems.len() < 64 {
        let k = b.u8();
        let addr = if k & 1 == 0 {
            IpAddr::from(b.u32().to_be_bytes())
        } else {
            IpAddr::from((u128::from(b.u64()) << 64 | u128::from(b.u64())).to_be_bytes())
        };
        let timeout = (k & 4 != 0).then(|| if k & 8 != 0 { 0 } else { b.u64() });
        elems.push(NftElem::of_addr(addr, k & 2 != 0, timeout));
    }
    let mut d = Datagram::new();
    msg_newsetelem(&mut d, 1, &set, &elems, true);
    let mut got = Vec::new();
    for m in messages(d.as_bytes()) {
        assert_eq!(parse_set(&m).table, "hrneo", "NFTA_SET_TABLE is NFTA_SET_ELEM_LIST_TABLE");
        parse_elems(&m, &mut got);
    }
    assert_eq!(got.len(), elems.len());
    for (g, e) in got.iter().zip(&elems) {
        assert_eq!((&g.key[..], g.end, g.timeout_ms), (e.key(), e.end, e.timeout_ms));
        // The time left goes with a timeout, except 0 (never expires).
        assert_eq!(g.expiration_ms, e.timeout_ms.filter(|&t| t > 0));
        assert_eq!(g.addr(), e.addr());
    }

    // NEWSET, with the set's name and table from the input.
    let names = String::from_utf8_lossy(b.rest()).replace('\0', "");
    let mid = names.char_indices().nth(names.chars().count() / 2).map_or(names.len(), |(i, _)| i);
    let (table, name) = names.split_at(mid);
    let Ok(set) = NftSetRef::new(10, table, name) else { return };
    let k = elems.len();
    let s = NewSet {
        set: &set,
        ipv6: k & 1 == 1,
        interval: k & 2 == 2,
        timeout: k & 4 == 4,
        default_timeout_ms: (k & 8 == 8).then_some(k as u64 * 1000),
        size: (k & 16 == 16).then_some(k as u32),
        id: k as u32,
    };
    let mut d = Datagram::new();
    msg_newset(&mut d, 2, &s, true);
    let m = messages(d.as_bytes()).next().expect("a message");
    let got = parse_set(&m);
    assert_eq!((got.table.as_str(), got.name.as_str()), (table, name));
    let flags =
        if s.interval { NFT_SET_INTERVAL } else { 0 } | if s.timeout { NFT_SET_TIMEOUT } else { 0 };
    assert_eq!(got.flags, flags);
    let (key_type, key_len) = if s.ipv6 { (NFT_TYPE_IP6ADDR, 16) } else { (NFT_TYPE_IPADDR, 4) };
    assert_eq!((got.key_type, got.key_len), (key_type, key_len));
    assert_eq!(got.timeout_ms, s.default_timeout_ms.filter(|_| s.timeout));
    assert_eq!((got.size, got.handle), (s.size, None));
}
