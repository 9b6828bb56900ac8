//! NFLOG datagrams: `decode_datagram`, two ways.
//!
//! First byte below 0x80: the rest is a raw datagram (bit 0: the next sequence
//! number is known, 0). Every NFULNL_MSG_PACKET message is counted and handed
//! over, in order, as its NFULA_PAYLOAD (borrowed from the datagram) or empty
//! without one (the reader counts those); only a cut message is malformed.
//!
//! 0x80 and up: the rest describes messages (packets with or without a
//! sequence number or a payload, extra attributes, NOOP/DONE/ERROR/OVERRUN and
//! foreign messages), written with the core's netlink writer. The packets,
//! drops (sequence gaps, overruns) and the next sequence number must be what
//! the messages say; nothing is malformed.
#![no_main]

use hrneo::fuzzing::{messages, Datagram, Nfgenmsg};
use hrneo::{decode_datagram, CaptureStats};
use hrneo_fuzz::{offset, within, Bytes};
use libfuzzer_sys::fuzz_target;

// include/uapi/linux/netfilter/nfnetlink_log.h, netlink.h
const PACKET: u16 = 0x0400; // NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_MARK: u16 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_SEQ: u16 = 12;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode < 0x80 {
        raw(rest, (mode & 1 == 1).then_some(0));
    } else {
        modelled(rest);
    }
});

fn decode(d: &[u8], next: Option<u32>) -> (Vec<&[u8]>, CaptureStats, Option<u32>) {
    let mut stats = CaptureStats::default();
    let mut next_seq = next;
    // The callback's packets are borrowed for the call only: keep where they are.
    let mut at = Vec::new();
    decode_datagram(d, &mut stats, &mut next_seq, &mut |c| {
        assert!(c.held.is_none(), "NFLOG holds nothing");
        assert!(within(d, c.payload), "a packet borrows the datagram");
        // An empty payload may point anywhere (a message without one).
        let start = if c.payload.is_empty() { 0 } else { offset(d, c.payload) };
        at.push(start..start + c.payload.len());
    });
    (at.into_iter().map(|r| &d[r]).collect(), stats, next_seq)
}

fn raw(d: &[u8], next: Option<u32>) {
    let (got, stats, next_seq) = decode(d, next);
    // The same datagram read with the generic iterators.
    let mut want = Vec::new();
    let mut packets = 0;
    let mut last_seq = None;
    let mut it = messages(d);
    for m in it.by_ref().filter(|m| m.msg_type == PACKET) {
        packets += 1;
        // The last attribute of a type counts (a short NFULA_SEQ: no number).
        let (mut payload, mut seq) = (None, None);
        for a in m.nf_attrs() {
            match a.ty {
                NFULA_PAYLOAD => payload = Some(a.data),
                NFULA_SEQ => seq = a.be32(),
                _ => {}
            }
        }
        last_seq = seq.or(last_seq);
        want.push(payload.unwrap_or(&[]));
    }
    assert_eq!(got, want);
    assert_eq!(stats.packets, packets);
    assert_eq!(stats.malformed, u64::from(it.truncated()));
    assert_eq!(next_seq, last_seq.map(|s: u32| s.wrapping_add(1)).or(next));
    assert_eq!((stats.datagrams, stats.enobufs), (0, 0), "decoding receives nothing");
}

fn modelled(input: &[u8]) {
    let mut b = Bytes::new(input);
    let start = b.u8() & 1 == 1;
    let mut d = Datagram::new();
    let mut want_payloads: Vec<Vec<u8>> = Vec::new();
    let (mut packets, mut dropped) = (0u64, 0u64);
    let mut next: Option<u32> = start.then_some(0);
    let initial = next;
    while !b.is_empty() {
        let kind = b.u8();
        match kind % 8 {
            0..=3 => {
                packets += 1;
                let seq = (kind & 0x10 == 0).then(|| b.u32());
                let payload = (kind & 0x20 == 0).then(|| b.bytes8().to_vec());
                let mut m = d.message(PACKET, 0, 0, Nfgenmsg::new(2, 100));
                m.attr(NFULA_PACKET_HDR, &[0x08, 0x00, 3, 0]);
                if kind & 0x40 != 0 {
                    m.attr_be32(NFULA_MARK, 7);
                }
                if let Some(s) = seq {
                    m.attr_be32(NFULA_SEQ, s);
                    if let Some(e) = next {
                        let gap = s.wrapping_sub(e);
                        if gap < 1 << 31 {
                            dropped += u64::from(gap);
                        }
                    }
                    next = Some(s.wrapping_add(1));
                }
                if let Some(p) = &payload {
                    m.attr(NFULA_PAYLOAD, p);
                }
                want_payloads.push(payload.unwrap_or_default());
            }
            4 => d.message(NLMSG_NOOP, 0, 0, Nfgenmsg::new(0, 0)).finish(),
            5 => d.message(NLMSG_DONE, 0, 0, Nfgenmsg::new(0, 0)).finish(),
            6 => {
                d.message(NLMSG_OVERRUN, 0, 0, Nfgenmsg::new(0, 0)).finish();
                dropped += 1;
            }
            _ => {
                // An ack, or a message of another subsystem: not a packet.
                let ty = if kind & 0x10 == 0 { NLMSG_ERROR } else { 0x0401 };
                d.message(ty, 0, 0, Nfgenmsg::new(0, 0)).attr(NFULA_PAYLOAD, b"not a packet");
            }
        }
    }
    let (got, stats, next_seq) = decode(d.as_bytes(), initial);
    let got: Vec<Vec<u8>> = got.iter().map(|p| p.to_vec()).collect();
    assert_eq!(got, want_payloads);
    assert_eq!((stats.packets, stats.malformed, stats.dropped), (packets, 0, dropped));
    assert_eq!(next_seq, next);
}
