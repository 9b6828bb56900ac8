//! NFQUEUE datagrams: `decode_queue_datagram`, two ways.
//!
//! First byte below 0x80: the rest is a raw datagram. Every NFQNL_MSG_PACKET
//! message whose NFQA_PACKET_HDR gives an id is a packet (held by the kernel:
//! it must get a verdict), with its NFQA_PAYLOAD (borrowed from the datagram)
//! or empty without one; one without an id is malformed, as is every
//! NLMSG_ERROR too short for a code; the others are errors or acks.
//!
//! 0x80 and up: the rest describes messages (packets with or without an id or
//! a payload, kernel errors, acks, foreign messages), written with the core's
//! netlink writer; the decoded packets, errors and malformed count must be
//! what was written.
#![no_main]

use hrneo::decode_queue_datagram;
use hrneo::fuzzing::{messages, Datagram, Nfgenmsg};
use hrneo_fuzz::{within, Bytes};
use libfuzzer_sys::fuzz_target;

// include/uapi/linux/netfilter/nfnetlink_queue.h, netlink.h
const PACKET: u16 = 0x0300; // NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_MARK: u16 = 3;
const NFQA_PAYLOAD: u16 = 10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode < 0x80 {
        raw(rest);
    } else {
        modelled(rest);
    }
});

fn raw(d: &[u8]) {
    let q = decode_queue_datagram(d);
    let mut want = Vec::new();
    let (mut malformed, mut errors) = (0u64, Vec::new());
    let mut it = messages(d);
    for m in it.by_ref() {
        if m.msg_type == NLMSG_ERROR {
            match m.payload.get(..4) {
                Some(b) => {
                    // i32::MIN reads as -i32::MAX (see NlMsg::error_code).
                    let code = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).max(-i32::MAX);
                    if code != 0 {
                        errors.push(code);
                    }
                }
                None => malformed += 1,
            }
        } else if m.msg_type == PACKET {
            let (mut id, mut payload) = (None, None);
            for a in m.nf_attrs() {
                match a.ty {
                    NFQA_PACKET_HDR => id = a.be32(),
                    NFQA_PAYLOAD => payload = Some(a.data),
                    _ => {}
                }
            }
            match id {
                Some(id) => want.push((id, payload.unwrap_or(&[]))),
                None => malformed += 1,
            }
        }
    }
    for (_, p) in &q.packets {
        assert!(within(d, p), "a packet borrows the datagram");
    }
    assert_eq!(q.packets, want);
    assert_eq!(q.errors, errors);
    assert_eq!(q.malformed, malformed + u64::from(it.truncated()));
}

fn modelled(input: &[u8]) {
    let mut b = Bytes::new(input);
    let mut d = Datagram::new();
    let mut want: Vec<(u32, Vec<u8>)> = Vec::new();
    let (mut malformed, mut errors) = (0u64, Vec::new());
    while !b.is_empty() {
        let kind = b.u8();
        match kind % 4 {
            0 | 1 => {
                let id = (kind & 0x10 == 0).then(|| b.u32());
                let payload = (kind & 0x20 == 0).then(|| b.bytes8().to_vec());
                let mut m = d.message(PACKET, 0, 0, Nfgenmsg::new(2, u16::from(kind)));
                if let Some(id) = id {
                    // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }
                    let mut hdr = id.to_be_bytes().to_vec();
                    hdr.extend_from_slice(&[0x08, 0x00, 1]);
                    m.attr(NFQA_PACKET_HDR, &hdr);
                }
                if kind & 0x40 != 0 {
                    m.attr_be32(NFQA_MARK, 7);
                }
                if let Some(p) = &payload {
                    m.attr(NFQA_PAYLOAD, p);
                }
                match id {
                    Some(id) => want.push((id, payload.unwrap_or_default())),
                    None => malformed += 1,
                }
            }
            2 => {
                // struct nlmsgerr { int error; struct nlmsghdr msg; }: the code
                // (native order) where the writer puts nfgenmsg.
                let code = if kind & 0x10 == 0 { 0 } else { b.u32() as i32 };
                let hdr = Nfgenmsg::from_bytes(&code.to_ne_bytes()).expect("4 bytes");
                d.message(NLMSG_ERROR, 0, 0, hdr).attr(1, &[0; 12]);
                if code != 0 {
                    errors.push(code.max(-i32::MAX));
                }
            }
            _ => {
                let ty = if kind & 0x10 == 0 { NLMSG_DONE } else { 0x0302 };
                d.message(ty, 0, 0, Nfgenmsg::new(0, 0)).attr(NFQA_PAYLOAD, b"not a packet");
            }
        }
    }
    let q = decode_queue_datagram(d.as_bytes());
    let got: Vec<(u32, Vec<u8>)> = q.packets.iter().map(|(id, p)| (*id, p.to_vec())).collect();
    assert_eq!(got, want);
    assert_eq!(q.errors, errors);
    assert_eq!(q.malformed, malformed);
}
