//! Netlink iteration and acks: `messages`, `attrs` (every kernel reply and
//! packet datagram goes through them) and `error_code`/`acked_seq` (every
//! request's outcome does), two ways.
//!
//! First byte below 0x80: the rest is a raw datagram. Messages sit at 4-byte
//! aligned offsets, each one's fields are its header's bytes and its payload
//! is `nlmsg_len - 16` bytes right after the header; the iteration stops at
//! the end or at the first bad length, and `truncated()` says which. The same
//! for attributes, nested ones down to 4 levels; `find` is the first match.
//! Only NLMSG_ERROR has a code (never one that cannot be negated) and an
//! acked seq (the echoed header's, else its own).
//!
//! 0x80 and up: the rest describes requests (attributes and nests, written by
//! the core's writer), acks as the kernel writes them (capped or with the
//! request echoed, extended-ack TLVs) and NOOP/DONE/OVERRUN; reading them
//! back gives exactly what was written.
#![no_main]

use hrneo::fuzzing::{attrs, messages, Attr, AttrIter, Datagram, MsgWriter, Nfgenmsg, NlMsg};
use hrneo_fuzz::{align4, offset, Bytes};
use libfuzzer_sys::fuzz_target;

// include/uapi/linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode < 0x80 {
        raw(rest);
    } else {
        written(rest);
    }
});

fn ne16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn ne32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn raw(d: &[u8]) {
    let mut it = messages(d);
    let mut pos = 0;
    for m in it.by_ref() {
        let len = ne32(&d[pos..]) as usize;
        assert!(len >= NLMSG_HDRLEN && pos + len <= d.len());
        assert_eq!(m.msg_type, ne16(&d[pos + 4..]));
        assert_eq!(m.flags, ne16(&d[pos + 6..]));
        assert_eq!((m.seq, m.pid), (ne32(&d[pos + 8..]), ne32(&d[pos + 12..])));
        assert_eq!(m.payload.len(), len - NLMSG_HDRLEN);
        assert_eq!(offset(d, m.payload), pos + NLMSG_HDRLEN);
        check_ack(&m);
        walk_attrs(m.payload.get(4..).unwrap_or(&[]), 0);
        assert_eq!(m.nf_attrs().count(), attrs(m.payload.get(4..).unwrap_or(&[])).count());
        pos += align4(len);
    }
    assert_eq!(it.truncated(), pos < d.len(), "stopped early only at a bad header");
    assert!(it.next().is_none(), "an ended iteration stays ended");
}

/// `struct nlmsgerr { int error; struct nlmsghdr msg; }`: the code is the first
/// 4 bytes (i32::MIN read as -i32::MAX), the request's seq is at 12.
fn check_ack(m: &NlMsg<'_>) {
    let is_err = m.msg_type == NLMSG_ERROR;
    let code = m.payload.get(..4).map(|b| (ne32(b) as i32).max(-i32::MAX));
    assert_eq!(m.error_code(), code.filter(|_| is_err));
    assert!(m.error_code().is_none_or(|c| c.checked_neg().is_some()));
    let echoed = m.payload.get(12..16).map(ne32);
    assert_eq!(m.acked_seq(), is_err.then(|| echoed.unwrap_or(m.seq)));
}

fn walk_attrs(buf: &[u8], depth: usize) {
    let mut pos = 0;
    let mut seen = Vec::new();
    for a in attrs(buf) {
        let len = usize::from(ne16(&buf[pos..]));
        let raw_ty = ne16(&buf[pos + 2..]);
        assert!(len >= 4 && pos + len <= buf.len());
        assert_eq!(a.ty, raw_ty & !(NLA_F_NESTED | NLA_F_NET_BYTEORDER));
        assert_eq!(
            (a.nested, a.net_byteorder),
            (raw_ty & NLA_F_NESTED != 0, raw_ty & NLA_F_NET_BYTEORDER != 0)
        );
        assert_eq!(offset(buf, a.data), pos + 4);
        assert_eq!(a.data.len(), len - 4);
        assert_eq!(a.be32(), a.data.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
        assert_eq!(a.u8(), a.data.first().copied());
        let s = a.str();
        assert!(!s.contains('\0') && s.len() <= 3 * a.data.len());
        if depth < 4 {
            walk_attrs(a.data, depth + 1);
        }
        seen.push((a.ty, pos));
        pos += align4(len);
    }
    // `find` returns the first attribute of a type.
    for &(ty, at) in &seen {
        let first = seen.iter().find(|s| s.0 == ty).map(|s| s.1);
        if first == Some(at) {
            let f = attrs(buf).find(ty).expect("present");
            assert_eq!(offset(buf, f.data), at + 4);
        }
    }
    let absent = (0..=0x3fffu16).find(|t| !seen.iter().any(|s| s.0 == *t)).expect("a free type");
    assert!(attrs(buf).find(absent).is_none());
}

/// An attribute to write: a leaf or a nest of leaves.
#[derive(Debug, PartialEq)]
enum Spec {
    Leaf(u16, Vec<u8>),
    Nest(u16, Vec<Spec>),
}

/// One message of the datagram to write.
enum Msg {
    /// A request, written by the core's writer.
    Request { ty: u16, flags: u16, seq: u32, nfgen: Nfgenmsg, attrs: Vec<Spec> },
    /// NLMSG_ERROR as netlink_ack() writes it: the code, the request's header,
    /// its payload unless capped, then extended-ack TLVs.
    Ack { seq: u32, code: i32, echo_seq: u32, echoed: Option<Vec<u8>>, tlvs: Vec<Spec> },
    /// NOOP, DONE (with its int) or OVERRUN.
    Control { ty: u16, seq: u32 },
}

fn spec(b: &mut Bytes<'_>, depth: usize) -> Spec {
    let head = b.u16();
    let ty = head & 0x3fff;
    if head & 0x8000 != 0 && depth < 3 {
        let n = b.u8() % 5;
        Spec::Nest(ty, (0..n).map(|_| spec(b, depth + 1)).collect())
    } else {
        // A flagged type keeps its byte-order flag: the parser reports it apart.
        Spec::Leaf(ty | (head & NLA_F_NET_BYTEORDER), b.bytes8().to_vec())
    }
}

fn specs(b: &mut Bytes<'_>) -> Vec<Spec> {
    (0..b.u8() % 8).map(|_| spec(b, 0)).collect()
}

fn put(w: &mut MsgWriter<'_>, s: &Spec) {
    match s {
        Spec::Leaf(ty, data) => {
            w.attr(*ty, data);
        }
        Spec::Nest(ty, inner) => {
            w.nest_start(*ty);
            inner.iter().for_each(|i| put(w, i));
            w.nest_end();
        }
    }
}

fn header(out: &mut Vec<u8>, len: usize, ty: u16, flags: u16, seq: u32) {
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
}

fn write(m: &Msg, out: &mut Vec<u8>) {
    match m {
        Msg::Request { ty, flags, seq, nfgen, attrs } => {
            let mut d = Datagram::new();
            let mut w = d.message(*ty, *flags, *seq, *nfgen);
            attrs.iter().for_each(|s| put(&mut w, s));
            w.finish();
            out.extend_from_slice(d.as_bytes());
        }
        Msg::Ack { seq, code, echo_seq, echoed, tlvs } => {
            // The TLVs as the core writes attributes (after its 4-byte nfgenmsg).
            let mut d = Datagram::new();
            let mut w = d.message(0, 0, 0, Nfgenmsg::new(0, 0));
            tlvs.iter().for_each(|s| put(&mut w, s));
            w.finish();
            let tlv = &d.as_bytes()[NLMSG_HDRLEN + 4..];
            let body = echoed.as_deref().unwrap_or(&[]);
            let len = NLMSG_HDRLEN + 4 + NLMSG_HDRLEN + align4(body.len()) + tlv.len();
            let mut flags = if echoed.is_none() { NLM_F_CAPPED } else { 0 };
            if !tlvs.is_empty() {
                flags |= NLM_F_ACK_TLVS;
            }
            header(out, len, NLMSG_ERROR, flags, *seq);
            out.extend_from_slice(&code.to_ne_bytes());
            header(out, NLMSG_HDRLEN + body.len(), 0x0609, NLM_F_REQUEST, *echo_seq);
            out.extend_from_slice(body);
            out.resize(align4(out.len()), 0);
            out.extend_from_slice(tlv);
        }
        Msg::Control { ty, seq } => {
            let body: &[u8] = if *ty == NLMSG_DONE { &[0; 4] } else { &[] };
            header(out, NLMSG_HDRLEN + body.len(), *ty, 0, *seq);
            out.extend_from_slice(body);
        }
    }
}

fn written(input: &[u8]) {
    let mut b = Bytes::new(input);
    let mut msgs = Vec::new();
    while !b.is_empty() && msgs.len() < 32 {
        let kind = b.u8();
        msgs.push(match kind % 4 {
            0 | 1 => {
                let (ty, flags, seq) = (b.u16(), b.u16(), b.u32());
                let nfgen = Nfgenmsg::new(b.u8(), b.u16());
                Msg::Request { ty, flags, seq, nfgen, attrs: specs(&mut b) }
            }
            2 => {
                let (seq, code) = (b.u32(), b.u32() as i32);
                // The kernel echoes the request's seq, which is the ack's own.
                let echo_seq = if kind & 0x10 == 0 { seq } else { b.u32() };
                let echoed = (kind & 0x20 != 0).then(|| b.bytes8().to_vec());
                let tlvs = if kind & 0x40 != 0 { specs(&mut b) } else { Vec::new() };
                Msg::Ack { seq, code, echo_seq, echoed, tlvs }
            }
            _ => {
                let ty = [NLMSG_NOOP, NLMSG_DONE, NLMSG_OVERRUN][usize::from(kind >> 2) % 3];
                Msg::Control { ty, seq: b.u32() }
            }
        });
    }
    let mut bytes = Vec::new();
    for m in &msgs {
        write(m, &mut bytes);
    }
    assert_eq!(bytes.len() % 4, 0, "messages are padded");
    let mut it = messages(&bytes);
    for m in &msgs {
        let got = it.next().expect("every message written is read");
        check_ack(&got);
        match m {
            Msg::Request { ty, flags, seq, nfgen, attrs } => {
                assert_eq!(
                    (got.msg_type, got.flags, got.seq, got.pid),
                    (*ty, flags | NLM_F_REQUEST, *seq, 0)
                );
                assert_eq!(Nfgenmsg::from_bytes(got.payload), Some(*nfgen));
                check_read(got.nf_attrs(), attrs);
            }
            Msg::Ack { seq, code, echo_seq, echoed, tlvs } => {
                assert_eq!((got.msg_type, got.seq), (NLMSG_ERROR, *seq));
                assert_eq!(got.flags & NLM_F_CAPPED != 0, echoed.is_none());
                assert_eq!(got.error_code(), Some((*code).max(-i32::MAX)));
                assert_eq!(got.acked_seq(), Some(*echo_seq));
                let body = echoed.as_ref().map_or(0, Vec::len);
                let tlv = &got.payload[4 + NLMSG_HDRLEN + align4(body)..];
                check_read(attrs(tlv), tlvs);
            }
            Msg::Control { ty, seq } => {
                assert_eq!((got.msg_type, got.seq), (*ty, *seq));
                assert_eq!((got.error_code(), got.acked_seq()), (None, None));
            }
        }
    }
    assert!(it.next().is_none() && !it.truncated());
}

fn check_read(got: AttrIter<'_>, want: &[Spec]) {
    let got: Vec<Attr<'_>> = got.collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        match w {
            Spec::Leaf(ty, data) => {
                assert_eq!(g.ty, ty & !NLA_F_NET_BYTEORDER);
                assert_eq!(g.net_byteorder, ty & NLA_F_NET_BYTEORDER != 0);
                assert!(!g.nested);
                assert_eq!(g.data, &data[..]);
            }
            Spec::Nest(ty, inner) => {
                assert_eq!((g.ty, g.nested), (*ty, true));
                check_read(g.nested_attrs(), inner);
            }
        }
    }
}
