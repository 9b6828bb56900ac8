//! DNS messages: `decode`, `Chain::follow`, the chain's addresses and
//! `parse_message`, two ways.
//!
//! First byte below 0x80: the rest is a raw message. Whatever decodes must
//! give a chain that starts at the question and addresses that come from the
//! answer section's records on the chain (see `hrneo_fuzz::check_chain`).
//!
//! First byte 0x80 and up: the rest describes a message (a question and up to
//! 12 records of A, AAAA, CNAME, HTTPS, SVCB or TXT over a pool of 8 names, any
//! letter case, owners sometimes compressed); it is written out and must
//! decode, and the chain, answers, addresses, hints and TTL must be what a
//! plain model of the chain rules says.
#![no_main]

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use hrneo::fuzzing::decode;
use hrneo::parse_message;
use hrneo_fuzz::{check_chain, check_digest, Bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode < 0x80 {
        raw(rest);
    } else {
        modelled(rest);
    }
});

fn raw(msg: &[u8]) {
    let parsed = parse_message(msg);
    let Ok(d) = decode(msg) else {
        assert!(parsed.is_err(), "parse_message takes what decode refuses");
        return;
    };
    let visited = check_chain(&d);
    check_digest(&d, &visited, &parsed.expect("a decoded message parses"));
}

const POOL: [&str; 8] = [
    "a.example",
    "b.example",
    "cdn.example.net",
    "d.example.org",
    "e.test",
    "www.f.test",
    "g",
    "edge.h.example",
];
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SVCB: u16 = 64;
const TYPE_HTTPS: u16 = 65;
const CLASS_IN: u16 = 1;
const CLASS_CH: u16 = 3;

enum Data {
    Addr(IpAddr),
    Cname(usize),
    /// HTTPS or SVCB: priority, target (None: "."), hints.
    Svcb {
        https: bool,
        prio: u16,
        target: Option<usize>,
        hints: Vec<IpAddr>,
    },
    Txt(Vec<u8>),
}

struct Rec {
    owner: usize,
    class_in: bool,
    ttl: u32,
    data: Data,
}

/// A pool name in wire form, letters upper-cased where `case` has a bit set.
fn wire(i: usize, case: u8, out: &mut Vec<u8>) {
    for (k, label) in POOL[i].split('.').enumerate() {
        out.push(label.len() as u8);
        out.extend(label.bytes().enumerate().map(|(j, b)| {
            if case.rotate_left((k + j) as u32) & 1 == 1 {
                b.to_ascii_uppercase()
            } else {
                b
            }
        }));
    }
    out.push(0);
}

fn modelled(input: &[u8]) {
    let mut b = Bytes::new(input);
    let head = b.u8();
    let (response, ch_question) = (head & 1 == 1, head & 0x0e == 0);
    let rcode = (head >> 4) & 0x0f;
    let qname = usize::from(b.u8() % 8);
    let qtype = [TYPE_A, TYPE_AAAA, TYPE_HTTPS][usize::from(b.u8() % 3)];
    let mut recs = Vec::new();
    for _ in 0..b.u8() % 13 {
        let k = b.u8();
        let owner = usize::from(k % 8);
        let class_in = b.u8() & 15 != 0;
        let ttl = b.u32();
        let data = match (k >> 3) % 6 {
            0 => Data::Addr(IpAddr::from(b.u32().to_be_bytes())),
            1 => Data::Addr(IpAddr::from(
                (u128::from(b.u64()) << 64 | u128::from(b.u64())).to_be_bytes(),
            )),
            2 => Data::Cname(usize::from(b.u8() % 8)),
            kind @ (3 | 4) => {
                let t = b.u8();
                let target = (t & 8 == 0).then_some(usize::from(t % 8));
                let mut hints: Vec<IpAddr> = Vec::new();
                for _ in 0..(t >> 4) % 3 {
                    hints.push(IpAddr::from(b.u32().to_be_bytes()));
                }
                if t >> 6 == 3 {
                    hints.push(IpAddr::from((u128::from(b.u64()) << 64).to_be_bytes()));
                }
                Data::Svcb {
                    https: kind == 3,
                    prio: u16::from(t >> 4 & 1) + u16::from(t & 0x80 != 0),
                    target,
                    hints,
                }
            }
            _ => Data::Txt(b.bytes8().to_vec()),
        };
        recs.push(Rec { owner, class_in, ttl, data });
    }
    let case = b.u8();
    let compress = b.u8();

    let msg = write(response, rcode, qname, qtype, ch_question, &recs, case, compress);
    let d = decode(&msg).unwrap_or_else(|e| panic!("a well-formed message does not decode: {e:?}"));
    let visited = check_chain(&d);
    let m = parse_message(&msg).expect("it decoded");
    check_digest(&d, &visited, &m);

    // The model: names reachable from the question through IN records it owns.
    let mut chain: BTreeSet<usize> = BTreeSet::new();
    if !ch_question {
        chain.insert(qname);
        loop {
            let before = chain.len();
            let reached: Vec<usize> = recs
                .iter()
                .filter(|r| r.class_in && chain.contains(&r.owner))
                .filter_map(|r| match r.data {
                    Data::Cname(t) | Data::Svcb { target: Some(t), .. } => Some(t),
                    _ => None,
                })
                .collect();
            chain.extend(reached);
            if chain.len() == before {
                break;
            }
        }
    }
    let on: Vec<&Rec> = recs.iter().filter(|r| r.class_in && chain.contains(&r.owner)).collect();
    let mut plain = HashSet::new();
    let mut hinted = HashSet::new();
    for r in &on {
        match &r.data {
            Data::Addr(a) => {
                plain.insert(*a);
            }
            Data::Svcb { prio, hints, .. } if *prio != 0 => hinted.extend(hints.iter().copied()),
            _ => {}
        }
    }
    let names: BTreeSet<usize> =
        m.chain.iter().map(|n| POOL.iter().position(|p| p == n).expect("a pool name")).collect();
    assert_eq!(names, chain, "chain {:?}", m.chain);
    assert_eq!(m.qname, POOL[qname]);
    assert_eq!(m.answers.len(), on.len());
    assert_eq!(m.min_ttl, on.iter().map(|r| r.ttl).min().unwrap_or(0));
    let got: HashSet<IpAddr> = m.addresses.iter().copied().collect();
    assert_eq!(got, &plain | &hinted);
    let got_hints: HashSet<IpAddr> = m.hints.iter().copied().collect();
    assert_eq!(got_hints, &hinted - &plain);
    assert_eq!((m.is_response, m.rcode), (response, u16::from(rcode)));
}

#[allow(clippy::too_many_arguments)]
fn write(
    response: bool,
    rcode: u8,
    qname: usize,
    qtype: u16,
    ch_question: bool,
    recs: &[Rec],
    case: u8,
    compress: u8,
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&0x1234u16.to_be_bytes());
    let flags: u16 = if response { 0x8180 } else { 0x0100 } | u16::from(rcode);
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&(recs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    wire(qname, case, &mut m);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&(if ch_question { CLASS_CH } else { CLASS_IN }).to_be_bytes());
    for (i, r) in recs.iter().enumerate() {
        if r.owner == qname && compress.rotate_left(i as u32) & 1 == 1 {
            m.extend_from_slice(&[0xc0, 12]); // a pointer to the question's name
        } else {
            wire(r.owner, case.rotate_left(i as u32), &mut m);
        }
        let mut rdata = Vec::new();
        let rtype = match &r.data {
            Data::Addr(IpAddr::V4(a)) => {
                rdata.extend_from_slice(&a.octets());
                TYPE_A
            }
            Data::Addr(IpAddr::V6(a)) => {
                rdata.extend_from_slice(&a.octets());
                TYPE_AAAA
            }
            Data::Cname(t) => {
                wire(*t, case, &mut rdata);
                TYPE_CNAME
            }
            Data::Svcb { https, prio, target, hints } => {
                rdata.extend_from_slice(&prio.to_be_bytes());
                match target {
                    Some(t) => wire(*t, case, &mut rdata),
                    None => rdata.push(0),
                }
                if *prio != 0 {
                    // Keys in increasing order (RFC 9460): alpn, ipv4hint, ipv6hint.
                    rdata.extend_from_slice(&[0, 1, 0, 3, 2, b'h', b'2']);
                    for (key, width) in [(4u16, 4usize), (6, 16)] {
                        let of: Vec<[u8; 16]> = hints
                            .iter()
                            .filter(|h| (width == 4) == h.is_ipv4())
                            .map(|h| match h {
                                IpAddr::V4(a) => {
                                    let mut o = [0u8; 16];
                                    o[..4].copy_from_slice(&a.octets());
                                    o
                                }
                                IpAddr::V6(a) => a.octets(),
                            })
                            .collect();
                        if of.is_empty() {
                            continue;
                        }
                        rdata.extend_from_slice(&key.to_be_bytes());
                        rdata.extend_from_slice(&((of.len() * width) as u16).to_be_bytes());
                        of.iter().for_each(|o| rdata.extend_from_slice(&o[..width]));
                    }
                }
                if *https {
                    TYPE_HTTPS
                } else {
                    TYPE_SVCB
                }
            }
            Data::Txt(t) => {
                rdata.push(t.len() as u8);
                rdata.extend_from_slice(t);
                TYPE_TXT
            }
        };
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&(if r.class_in { CLASS_IN } else { CLASS_CH }).to_be_bytes());
        m.extend_from_slice(&r.ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
    }
    m
}
