//! nfnetlink_queue messages: the bind, the verdicts and the unbind hrneo
//! sends, and the packet datagrams it decodes.

use crate::nl::consts::{nfnl_msg_type, AF_INET, AF_INET6, AF_UNSPEC, NFNL_SUBSYS_QUEUE};
use crate::nl::consts::{NLMSG_ERROR, NLM_F_ACK};
use crate::nl::{messages, Datagram, Nfgenmsg};

// include/uapi/linux/netfilter/nfnetlink_queue.h
const NFQNL_MSG_PACKET: u8 = 0;
pub(crate) const NFQNL_MSG_VERDICT: u8 = 1;
const NFQNL_MSG_CONFIG: u8 = 2;
const NFQNL_MSG_VERDICT_BATCH: u8 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_CFG_CMD_PF_BIND: u8 = 3;
const NFQNL_CFG_CMD_PF_UNBIND: u8 = 4;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 0x01;
const NFQA_CFG_F_GSO: u32 = 0x04;

/// include/uapi/linux/netfilter.h
const NF_ACCEPT: u32 = 1;

/// How a queue is bound: the fields the bind messages carry.
pub(crate) struct BindSpec {
    pub queue: u16,
    pub copy_range: u32,
    pub maxlen: u32,
}

fn cfg_type() -> u16 {
    nfnl_msg_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG)
}

/// struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }
fn cmd(command: u8, pf: u8) -> [u8; 4] {
    let pf = u16::from(pf).to_be_bytes();
    [command, 0, pf[0], pf[1]]
}

/// The config messages of a bind, in order, each with its own sequence number
/// and NLM_F_ACK: PF_UNBIND and PF_BIND per family (old kernels need them), BIND,
/// copy mode, queue length, then the FAIL_OPEN and GSO flags one by one (a
/// kernel may lack one).
pub(crate) fn bind_messages(cfg: &BindSpec, seqs: &[u32; 9]) -> Datagram {
    let ty = cfg_type();
    let mut d = Datagram::with_capacity(512);
    let mut i = 0;
    for command in [NFQNL_CFG_CMD_PF_UNBIND, NFQNL_CFG_CMD_PF_BIND] {
        for family in [AF_INET, AF_INET6] {
            let unspec = Nfgenmsg::new(AF_UNSPEC, 0);
            d.message(ty, NLM_F_ACK, seqs[i], unspec).attr(NFQA_CFG_CMD, &cmd(command, family));
            i += 1;
        }
    }
    let q = Nfgenmsg::new(AF_UNSPEC, cfg.queue);
    d.message(ty, NLM_F_ACK, seqs[4], q).attr(NFQA_CFG_CMD, &cmd(NFQNL_CFG_CMD_BIND, 0));
    // struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } (packed)
    let mut params = [0u8; 5];
    params[..4].copy_from_slice(&cfg.copy_range.to_be_bytes());
    params[4] = NFQNL_COPY_PACKET;
    d.message(ty, NLM_F_ACK, seqs[5], q).attr(NFQA_CFG_PARAMS, &params);
    d.message(ty, NLM_F_ACK, seqs[6], q).attr_be32(NFQA_CFG_QUEUE_MAXLEN, cfg.maxlen);
    for (k, flag) in [(7, NFQA_CFG_F_FAIL_OPEN), (8, NFQA_CFG_F_GSO)] {
        d.message(ty, NLM_F_ACK, seqs[k], q)
            .attr_be32(NFQA_CFG_FLAGS, flag)
            .attr_be32(NFQA_CFG_MASK, flag);
    }
    d
}

/// One batch verdict: ACCEPT for every queued packet with an id up to `id`.
pub(crate) fn verdict_batch(queue: u16, id: u32) -> Datagram {
    let mut d = Datagram::with_capacity(32);
    push_verdict(&mut d, NFQNL_MSG_VERDICT_BATCH, queue, id);
    d
}

/// struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }; no ack asked:
/// the kernel still reports a failure.
pub(crate) fn push_verdict(d: &mut Datagram, msg: u8, queue: u16, id: u32) {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    let ty = nfnl_msg_type(NFNL_SUBSYS_QUEUE, msg);
    d.message(ty, 0, 0, Nfgenmsg::new(AF_UNSPEC, queue)).attr(NFQA_VERDICT_HDR, &hdr);
}

/// Accept every queued packet, whatever the ids: a batch verdict accepts the
/// queue's packets in id order up to its id, taken as the half of the (wrapping)
/// id space that ends there, and stops at the first packet past it. Four
/// batches a quarter apart: whichever quarter the packets' ids are in, one
/// batch's half holds them all.
pub(crate) fn release_all(queue: u16) -> Datagram {
    let mut d = Datagram::with_capacity(4 * 32 + 32);
    for k in 1..=4u32 {
        push_verdict(
            &mut d,
            NFQNL_MSG_VERDICT_BATCH,
            queue,
            k.wrapping_mul(1 << 30).wrapping_sub(1),
        );
    }
    d
}

/// `release_all`, then UNBIND, in one datagram: the window in which a packet
/// could be queued in between (and dropped by the unbind) is as short as the
/// kernel makes it.
pub(crate) fn release_and_unbind(queue: u16) -> Datagram {
    let mut d = release_all(queue);
    d.message(cfg_type(), 0, 0, Nfgenmsg::new(AF_UNSPEC, queue))
        .attr(NFQA_CFG_CMD, &cmd(NFQNL_CFG_CMD_UNBIND, 0));
    d
}

/// What one received datagram held: packets (with their ids) and errors.
pub struct QueueDatagram<'a> {
    /// (packet id, IP packet) in order.
    pub packets: Vec<(u32, &'a [u8])>,
    /// Packet messages without an id, and messages cut short.
    pub malformed: u64,
    /// Error codes the kernel sent (negative errno), e.g. for a late verdict.
    pub errors: Vec<i32>,
}

/// Decode one datagram of the queue's socket.
pub fn decode_queue_datagram(data: &[u8]) -> QueueDatagram<'_> {
    let packet_type = nfnl_msg_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET);
    let mut out = QueueDatagram { packets: Vec::new(), malformed: 0, errors: Vec::new() };
    let mut msgs = messages(data);
    for m in msgs.by_ref() {
        if m.msg_type == NLMSG_ERROR {
            match m.error_code() {
                Some(0) => {}
                Some(code) => out.errors.push(code),
                None => out.malformed += 1,
            }
            continue;
        }
        if m.msg_type != packet_type {
            continue;
        }
        let mut id = None;
        let mut payload = None;
        for a in m.nf_attrs() {
            match a.ty {
                // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }
                NFQA_PACKET_HDR => {
                    id = a.data.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                }
                NFQA_PAYLOAD => payload = Some(a.data),
                _ => {}
            }
        }
        // Without a payload the packet is still held: handed on empty, it is
        // accepted (and counted as malformed) like any packet with no DNS in it.
        match id {
            Some(id) => out.packets.push((id, payload.unwrap_or(&[]))),
            None => out.malformed += 1,
        }
    }
    if msgs.truncated() {
        out.malformed += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::consts::NLM_F_REQUEST;
    use crate::testutil::{nla, nlmsg};

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    #[test]
    fn bind_golden_bytes() {
        let spec = BindSpec { queue: 100, copy_range: 0xFFFF, maxlen: 65_536 };
        let seqs = [21, 22, 23, 24, 25, 26, 27, 28, 29];
        let d = bind_messages(&spec, &seqs);
        let msgs: Vec<_> = messages(d.as_bytes()).collect();
        assert_eq!(msgs.len(), 9);
        let ty = 0x0302u16; // NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_CONFIG
        for (m, s) in msgs.iter().zip(seqs) {
            assert_eq!((m.msg_type, m.flags, m.seq), (ty, NLM_F_REQUEST | NLM_F_ACK, s));
        }
        // Message 0: whole bytes. PF_UNBIND for AF_INET: cmd {4, pad, be16 2}, res_id 0.
        let b = d.as_bytes();
        let mut want = Vec::new();
        want.extend_from_slice(&28u32.to_ne_bytes());
        want.extend_from_slice(&ne16(ty));
        want.extend_from_slice(&ne16(NLM_F_REQUEST | NLM_F_ACK));
        want.extend_from_slice(&21u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 0]); // AF_UNSPEC, v0, res_id 0
        want.extend_from_slice(&ne16(8));
        want.extend_from_slice(&ne16(NFQA_CFG_CMD));
        want.extend_from_slice(&[4, 0, 0, 2]);
        assert_eq!(&b[..28], &want[..]);
        assert_eq!(&msgs[3].payload[8..12], &[3, 0, 0, 10], "PF_BIND AF_INET6");
        // BIND of queue 100 (res_id big-endian), pf 0.
        assert_eq!(&msgs[4].payload[..4], &[0, 0, 0, 100]);
        assert_eq!(&msgs[4].payload[4..12], &[&ne16(8)[..], &ne16(1), &[1, 0, 0, 0]].concat()[..]);
        // PARAMS: nla_len 9 (5 bytes packed), padded to 12.
        let params = [&ne16(9)[..], &ne16(2), &[0, 0, 0xff, 0xff, 2, 0, 0, 0]].concat();
        assert_eq!(&msgs[5].payload[4..], &params[..]);
        assert_eq!(&msgs[6].payload[4..], &[&ne16(8)[..], &ne16(3), &[0, 1, 0, 0]].concat()[..]);
        // FLAGS then MASK, FAIL_OPEN (1) and GSO (4) in messages of their own.
        for (m, flag) in [(7, 1u8), (8, 4)] {
            let want =
                [&ne16(8)[..], &ne16(5), &[0, 0, 0, flag], &ne16(8), &ne16(4), &[0, 0, 0, flag]];
            assert_eq!(&msgs[m].payload[4..], &want.concat()[..]);
        }
    }

    #[test]
    fn verdict_and_unbind_golden_bytes() {
        let d = verdict_batch(0x0102, 0xA0B0_C0D0);
        let b = d.as_bytes();
        assert_eq!(b.len(), 16 + 4 + 12);
        assert_eq!(&b[4..6], &ne16(0x0303), "VERDICT_BATCH");
        assert_eq!(&b[6..8], &ne16(NLM_F_REQUEST), "no ack asked");
        assert_eq!(&b[16..20], &[0, 0, 1, 2]);
        let hdr = [&ne16(12)[..], &ne16(2), &[0, 0, 0, 1, 0xA0, 0xB0, 0xC0, 0xD0]].concat();
        assert_eq!(&b[20..], &hdr[..]);
        let mut d = Datagram::new();
        push_verdict(&mut d, NFQNL_MSG_VERDICT, 7, 42);
        assert_eq!(&d.as_bytes()[4..6], &ne16(0x0301));
        assert_eq!(&d.as_bytes()[24..32], &[0, 0, 0, 1, 0, 0, 0, 42]);
        // Release everything (four batches a quarter of the id space apart), then UNBIND.
        let d = release_and_unbind(7);
        let msgs: Vec<_> = messages(d.as_bytes()).collect();
        assert_eq!(msgs.len(), 5);
        let ids: Vec<u32> = msgs[..4]
            .iter()
            .map(|m| u32::from_be_bytes(m.payload[12..16].try_into().unwrap()))
            .collect();
        assert_eq!(ids, [0x3FFF_FFFF, 0x7FFF_FFFF, 0xBFFF_FFFF, 0xFFFF_FFFF]);
        assert_eq!(msgs[4].msg_type, 0x0302);
        assert_eq!(&msgs[4].payload[8..12], &[2, 0, 0, 0]);
    }

    /// The kernel's rule: a batch up to `max` takes queued ids in order while
    /// `(id - max) as i32 <= 0`. Some batch of `release_all` takes every id of
    /// any run of queued ids shorter than a quarter of the id space.
    #[test]
    fn release_all_covers_any_run_of_ids() {
        let maxes: Vec<u32> = (1..=4u32).map(|k| k.wrapping_mul(1 << 30).wrapping_sub(1)).collect();
        let takes_all = |first: u32, len: u32, max: u32| {
            (0..len).all(|i| (first.wrapping_add(i).wrapping_sub(max) as i32) <= 0)
        };
        let mut rng = crate::testutil::Rng(5);
        // Sized to stay fast in a debug build under qemu-mips as well.
        for _ in 0..1_000 {
            let first = rng.next() as u32;
            let len = 1 + rng.below(10_000) as u32;
            assert!(maxes.iter().any(|&m| takes_all(first, len, m)), "{first} +{len}");
        }
        for first in [0, 1, 0x3FFF_FFFF, 0x4000_0000, 0x7FFF_FFFF, 0x8000_0000, u32::MAX - 5] {
            assert!(maxes.iter().any(|&m| takes_all(first, 1000, m)), "{first}");
        }
    }

    fn packet(id: Option<u32>, payload: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 100];
        if let Some(id) = id {
            let mut hdr = id.to_be_bytes().to_vec();
            hdr.extend_from_slice(&[0x08, 0x00, 1]); // ETH_P_IP, NF_INET_LOCAL_IN
            body.extend(nla(NFQA_PACKET_HDR, &hdr));
        }
        body.extend(nla(3, &7u32.to_be_bytes())); // NFQA_MARK: ignored
        if let Some(p) = payload {
            body.extend(nla(NFQA_PAYLOAD, p));
        }
        nlmsg(0x0300, 0, 0, &body)
    }

    #[test]
    fn decode_packets_errors_and_damage() {
        let mut dgram = packet(Some(5), Some(b"abc"));
        dgram.extend(packet(None, Some(b"x")));
        dgram.extend(packet(Some(6), None));
        let mut err = (-libc::ENOENT).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        dgram.extend(nlmsg(NLMSG_ERROR, 0, 0, &err));
        dgram.extend(nlmsg(NLMSG_ERROR, 0, 0, &[0; 20])); // an ack: not an error
        dgram.extend(packet(Some(u32::MAX), Some(b"")));
        let d = decode_queue_datagram(&dgram);
        // Id 6 has no payload: still held, so handed on (empty) to be accepted.
        assert_eq!(d.packets, vec![(5, &b"abc"[..]), (6, &b""[..]), (u32::MAX, &b""[..])]);
        assert_eq!(d.malformed, 1, "the packet without an id");
        assert_eq!(d.errors, vec![-libc::ENOENT]);
        // Cut anywhere: never a panic, the damage counted.
        for end in 0..dgram.len() {
            let d = decode_queue_datagram(&dgram[..end]);
            assert!(d.packets.len() <= 3);
        }
    }
}
