//! nfnetlink_log: bind a group and receive the packets the NFLOG target copies.
//!
//! The instance is configured with NFULNL_CFG_F_SEQ, so every packet carries
//! its per-instance sequence number; a gap between two packets is exactly the
//! number the kernel could not deliver (socket buffer full), which makes
//! `dropped` precise instead of "at least one per ENOBUFS". A gap shows only
//! when a later packet arrives, so `dropped` is also at least the kernel's own
//! count of messages the socket refused (one packet each, with `qthresh` 1):
//! exact at any moment, the last drops of a flood included.

use std::os::unix::io::RawFd;
use std::time::Duration;

use super::bind::check_bind_acks;
use super::kernel::SocketDrops;
use super::{CaptureStats, Captured, PacketSource};
use crate::error::{Error, Result};
use crate::nl::consts::{nfnl_msg_type, AF_INET, AF_INET6, AF_UNSPEC, NFNL_SUBSYS_ULOG};
use crate::nl::consts::{NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK};
use crate::nl::{messages, Datagram, NetfilterSocket, Nfgenmsg};

// include/uapi/linux/netfilter/nfnetlink_log.h
const NFULNL_MSG_PACKET: u8 = 0;
const NFULNL_MSG_CONFIG: u8 = 1;

const NFULA_PAYLOAD: u16 = 9;
const NFULA_SEQ: u16 = 12;

const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_UNBIND: u8 = 2;
const NFULNL_CFG_CMD_PF_BIND: u8 = 3;
const NFULNL_CFG_CMD_PF_UNBIND: u8 = 4;

const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULA_CFG_FLAGS: u16 = 6;

const NFULNL_COPY_PACKET: u8 = 2;
const NFULNL_CFG_F_SEQ: u16 = 0x0001;

/// Datagrams read per recvmmsg(2), each into a slot of this size: the kernel
/// sends one packet (at most copy_range, 64 KiB, plus attributes) per datagram,
/// or several small ones up to nlbufsiz (8 KiB by default; hrneo never raises it).
const RECV_SLOTS: usize = 4;
const RECV_SLOT: usize = 72 * 1024;

/// How an NFLOG group is bound and delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NflogConfig {
    /// The NFLOG group (`--nflog-group`).
    pub group: u16,
    /// Socket receive buffer asked for, in bytes.
    pub rcvbuf: usize,
    /// Bytes of each packet copied.
    pub copy_range: u32,
    /// Packets the kernel queues before sending a datagram.
    pub qthresh: u32,
    /// Longest the kernel holds a partial datagram, in 1/100 s.
    pub flush_timeout: u32,
}

impl NflogConfig {
    /// Defaults that deliver each packet at once.
    pub fn new(group: u16) -> Self {
        NflogConfig {
            group,
            rcvbuf: 4 * 1024 * 1024,
            copy_range: 0xFFFF,
            qthresh: 1,
            flush_timeout: 0,
        }
    }
}

/// The config messages of a bind, in order, each with its own sequence number
/// and NLM_F_ACK. Returned with the seqs so acks can be matched to steps.
pub(crate) fn bind_messages(cfg: &NflogConfig, seqs: &[u32; 9]) -> Datagram {
    let ty = nfnl_msg_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG);
    let mut d = Datagram::with_capacity(512);
    let mut i = 0;
    // PF_UNBIND/PF_BIND: old kernels (< 3.17) need the family handler bound;
    // new ones treat both as no-ops.
    for cmd in [NFULNL_CFG_CMD_PF_UNBIND, NFULNL_CFG_CMD_PF_BIND] {
        for family in [AF_INET, AF_INET6] {
            d.message(ty, NLM_F_ACK, seqs[i], Nfgenmsg::new(family, 0)).attr_u8(NFULA_CFG_CMD, cmd);
            i += 1;
        }
    }
    let group = Nfgenmsg::new(AF_UNSPEC, cfg.group);
    d.message(ty, NLM_F_ACK, seqs[4], group).attr_u8(NFULA_CFG_CMD, NFULNL_CFG_CMD_BIND);
    // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
    let mut mode = [0u8; 6];
    mode[..4].copy_from_slice(&cfg.copy_range.to_be_bytes());
    mode[4] = NFULNL_COPY_PACKET;
    d.message(ty, NLM_F_ACK, seqs[5], group).attr(NFULA_CFG_MODE, &mode);
    d.message(ty, NLM_F_ACK, seqs[6], group).attr_be32(NFULA_CFG_QTHRESH, cfg.qthresh);
    d.message(ty, NLM_F_ACK, seqs[7], group).attr_be32(NFULA_CFG_TIMEOUT, cfg.flush_timeout);
    d.message(ty, NLM_F_ACK, seqs[8], group).attr_be16(NFULA_CFG_FLAGS, NFULNL_CFG_F_SEQ);
    d
}

/// UNBIND of the group, sent on close so the group is free at once.
pub(crate) fn unbind_message(group: u16, seq: u32) -> Datagram {
    let ty = nfnl_msg_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG);
    let mut d = Datagram::with_capacity(32);
    d.message(ty, 0, seq, Nfgenmsg::new(AF_UNSPEC, group))
        .attr_u8(NFULA_CFG_CMD, NFULNL_CFG_CMD_UNBIND);
    d
}

/// A socket bound to one NFLOG group.
pub struct NflogReader {
    sock: NetfilterSocket,
    cfg: NflogConfig,
    slots: Vec<Vec<u8>>,
    stats: CaptureStats,
    /// The sequence number the next packet should carry, once known.
    next_seq: Option<u32>,
    /// Packets carry NFULA_SEQ (the FLAGS config was accepted).
    seq_available: bool,
    /// The kernel's count of messages the socket refused.
    socket_drops: SocketDrops,
}

impl NflogReader {
    /// Open a socket, bind `cfg.group` and configure it; the socket is non-blocking.
    pub fn open(cfg: NflogConfig) -> Result<Self> {
        let group = cfg.group;
        let mut sock =
            NetfilterSocket::open().map_err(|e| Error::io("nflog: netlink socket", e))?;
        sock.set_rcvbuf(cfg.rcvbuf)
            .map_err(|e| Error::io(format!("nflog group {group}: receive buffer"), e))?;
        sock.cap_acks();
        let seqs: [u32; 9] = std::array::from_fn(|_| sock.next_seq());
        let request = bind_messages(&cfg, &seqs);
        let acks = sock
            .request_acks(request.as_bytes(), &seqs)
            .map_err(|e| Error::io(format!("nflog group {group}: bind"), e))?;
        let code = |i: usize| acks.get(&seqs[i]).copied().unwrap_or(0);
        check_bind_acks(
            &format!("nflog group {group}"),
            code,
            &[(5, "copy mode"), (6, "queue threshold"), (7, "flush timeout")],
        )?;
        // Without sequence numbers drops are still counted, only less precisely.
        let seq_available = code(8) == 0;
        sock.set_nonblocking(true)
            .map_err(|e| Error::io(format!("nflog group {group}: non-blocking"), e))?;
        let socket_drops = SocketDrops::open(sock.fd());
        Ok(NflogReader {
            sock,
            cfg,
            slots: vec![vec![0; RECV_SLOT]; RECV_SLOTS],
            stats: CaptureStats::default(),
            // A fresh instance numbers its packets from 0.
            next_seq: seq_available.then_some(0),
            seq_available,
            socket_drops,
        })
    }

    /// The group this reader is bound to.
    pub fn group(&self) -> u16 {
        self.cfg.group
    }

    /// Wait until a datagram is queued. `None` waits forever.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.sock
            .wait_readable(timeout)
            .map_err(|e| Error::io(format!("nflog group {}: poll", self.cfg.group), e))
    }

    /// Unbind the group (best effort) so another reader can bind it at once.
    pub fn unbind(&mut self) {
        let seq = self.sock.next_seq();
        let _ = self.sock.send(unbind_message(self.cfg.group, seq).as_bytes());
    }
}

impl PacketSource for NflogReader {
    fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    fn drain(
        &mut self,
        max_datagrams: usize,
        on_packet: &mut dyn FnMut(Captured<'_>),
    ) -> Result<usize> {
        let mut datagrams = 0;
        let mut lens = Vec::with_capacity(self.slots.len());
        while datagrams < max_datagrams {
            match self.sock.recv_many(&mut self.slots, &mut lens) {
                Ok(cut) => {
                    // A datagram bigger than a slot cannot happen (one packet of at
                    // most copy_range bytes each); if it did, its packets are lost:
                    // the next sequence number counts them, or (without) count one.
                    self.stats.malformed += cut as u64;
                    if !self.seq_available {
                        self.stats.dropped += cut as u64;
                    }
                    for (slot, &n) in self.slots.iter().zip(&lens) {
                        let data = slot.get(..n).unwrap_or(&[]);
                        decode_datagram(data, &mut self.stats, &mut self.next_seq, on_packet);
                    }
                    datagrams += lens.len();
                    self.stats.datagrams += lens.len() as u64;
                    // Fewer than asked for: the queue is empty now. Not reading
                    // again saves a call that would only say so.
                    if lens.len() < self.slots.len() {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The kernel dropped what did not fit; the next packet's
                    // sequence number tells how many. Without it, count one.
                    self.stats.enobufs += 1;
                    if !self.seq_available {
                        self.stats.dropped += 1;
                    }
                }
                Err(e) => {
                    return Err(Error::io(format!("nflog group {}: recv", self.cfg.group), e))
                }
            }
        }
        Ok(datagrams)
    }

    fn stats(&self) -> CaptureStats {
        let mut s = self.stats;
        // Gaps count what a later packet revealed; the socket's own count also
        // what no packet followed yet. With one packet per datagram (qthresh 1)
        // the larger is exact; with more, the gaps are, once revealed.
        if let Some(d) = self.socket_drops.total(self.sock.fd()) {
            s.dropped = s.dropped.max(d);
        }
        s
    }
}

impl Drop for NflogReader {
    fn drop(&mut self) {
        // Closing the socket unbinds too (the kernel's netlink release hook);
        // the explicit UNBIND just makes it immediate and visible.
        self.unbind();
    }
}

/// Decode one received datagram: hand the IP payload of every
/// NFULNL_MSG_PACKET message to `on_packet`, counting packets and drops.
pub fn decode_datagram(
    data: &[u8],
    stats: &mut CaptureStats,
    next_seq: &mut Option<u32>,
    on_packet: &mut dyn FnMut(Captured<'_>),
) {
    let packet_type = nfnl_msg_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET);
    let mut msgs = messages(data);
    for m in msgs.by_ref() {
        match m.msg_type {
            t if t == packet_type => {}
            NLMSG_NOOP | NLMSG_DONE | NLMSG_ERROR => continue,
            NLMSG_OVERRUN => {
                stats.dropped += 1;
                continue;
            }
            _ => continue,
        }
        stats.packets += 1;
        let mut payload: Option<&[u8]> = None;
        let mut seq: Option<u32> = None;
        for a in m.nf_attrs() {
            match a.ty {
                NFULA_PAYLOAD => payload = Some(a.data),
                NFULA_SEQ => seq = a.be32(),
                _ => {}
            }
        }
        if let Some(s) = seq {
            if let Some(expected) = *next_seq {
                let gap = s.wrapping_sub(expected);
                // A "negative" gap is a reordering or a restart, not a drop.
                if gap < 1 << 31 {
                    stats.dropped += u64::from(gap);
                }
            }
            *next_seq = Some(s.wrapping_add(1));
        }
        // A packet message without a payload is handed on empty: the reader
        // counts it (as malformed), so every packet read is counted once there.
        on_packet(Captured { payload: payload.unwrap_or(&[]), held: None });
    }
    if msgs.truncated() {
        stats.malformed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::consts::NLM_F_REQUEST;
    use crate::testutil::{nla, nlmsg, udp4_answer, Msg};

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    #[test]
    fn bind_golden_bytes() {
        let cfg = NflogConfig {
            group: 100,
            rcvbuf: 0,
            copy_range: 0xFFFF,
            qthresh: 20,
            flush_timeout: 5,
        };
        let seqs = [11, 12, 13, 14, 15, 16, 17, 18, 19];
        let d = bind_messages(&cfg, &seqs);
        let msgs: Vec<_> = messages(d.as_bytes()).collect();
        assert_eq!(msgs.len(), 9);
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        let ty = 0x0401u16; // NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG
        let b = d.as_bytes();

        // Message 0: PF_UNBIND for AF_INET. 16 header + 4 nfgenmsg + 8 attr (u8 padded).
        let mut want = Vec::new();
        want.extend_from_slice(&28u32.to_ne_bytes());
        want.extend_from_slice(&ne16(ty));
        want.extend_from_slice(&ne16(flags));
        want.extend_from_slice(&11u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[2, 0, 0, 0]); // AF_INET, v0, res_id 0
        want.extend_from_slice(&ne16(5));
        want.extend_from_slice(&ne16(NFULA_CFG_CMD));
        want.extend_from_slice(&[4, 0, 0, 0]); // PF_UNBIND + pad
        assert_eq!(&b[..28], &want[..]);
        // Message 3: PF_BIND for AF_INET6.
        assert_eq!(&b[3 * 28 + 16..3 * 28 + 20], &[10, 0, 0, 0]);
        assert_eq!(b[3 * 28 + 24], NFULNL_CFG_CMD_PF_BIND);

        // Message 4: BIND, res_id = group 100 big-endian.
        let at = 4 * 28;
        assert_eq!(&b[at + 8..at + 12], &15u32.to_ne_bytes());
        assert_eq!(&b[at + 16..at + 20], &[0, 0, 0x00, 0x64]);
        let bind_attr = [&ne16(5)[..], &ne16(NFULA_CFG_CMD), &[NFULNL_CFG_CMD_BIND, 0, 0, 0]];
        assert_eq!(&b[at + 20..at + 28], &bind_attr.concat()[..]);

        // Message 5: MODE {be32 0x0000ffff, u8 2, pad}; nla_len 10, padded to 12.
        let m = msgs[5];
        assert_eq!(m.seq, 16);
        assert_eq!(m.payload.len(), 4 + 12);
        assert_eq!(&m.payload[4..8], &[ne16(10), ne16(NFULA_CFG_MODE)].concat()[..]);
        assert_eq!(&m.payload[8..16], &[0x00, 0x00, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00]);
        // Messages 6-8: QTHRESH 20, TIMEOUT 5 (be32), FLAGS SEQ (be16).
        assert_eq!(&msgs[6].payload[4..], &[&ne16(8)[..], &ne16(5), &[0, 0, 0, 20]].concat()[..]);
        assert_eq!(&msgs[7].payload[4..], &[&ne16(8)[..], &ne16(4), &[0, 0, 0, 5]].concat()[..]);
        assert_eq!(&msgs[8].payload[4..], &[&ne16(6)[..], &ne16(6), &[0, 1, 0, 0]].concat()[..]);
        for (m, s) in msgs.iter().zip(seqs) {
            assert_eq!(m.msg_type, ty);
            assert_eq!(m.flags, flags);
            assert_eq!(m.seq, s);
        }
        for m in &msgs[4..] {
            assert_eq!(&m.payload[..4], &[0, 0, 0, 100]);
        }
    }

    #[test]
    fn unbind_golden_bytes() {
        let d = unbind_message(0x1234, 7);
        let b = d.as_bytes();
        assert_eq!(b.len(), 28);
        assert_eq!(&b[6..8], &ne16(NLM_F_REQUEST));
        assert_eq!(&b[16..20], &[0, 0, 0x12, 0x34]);
        assert_eq!(b[24], NFULNL_CFG_CMD_UNBIND);
    }

    /// An NFULNL_MSG_PACKET message as the kernel sends it.
    fn packet_msg(seq: Option<u32>, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 100];
        body.extend(nla(1, &[0x08, 0x00, 3, 0])); // NFULA_PACKET_HDR
        if let Some(s) = seq {
            body.extend(nla(NFULA_SEQ, &s.to_be_bytes()));
        }
        body.extend(nla(NFULA_PAYLOAD, payload));
        nlmsg(0x0400, 0, 0, &body)
    }

    #[test]
    fn datagram_with_several_packets_and_seq_gaps() {
        let dns = Msg::new(9, true, "a.example", 1, 1).a("a.example", 60, [192, 0, 2, 7]).buf;
        let mut dgram = Vec::new();
        dgram.extend(packet_msg(Some(0), &udp4_answer(&dns)));
        dgram.extend(packet_msg(Some(1), &[0x45, 0, 0]));
        dgram.extend(packet_msg(Some(5), &udp4_answer(&dns))); // 2, 3, 4 lost
        dgram.extend(packet_msg(Some(6), &udp4_answer(&dns[..20])));
        let mut no_payload = nlmsg(0x0400, 0, 0, &[2, 0, 0, 100]);
        dgram.append(&mut no_payload);
        let mut stats = CaptureStats::default();
        let mut next = Some(0);
        let mut got: Vec<Vec<u8>> = Vec::new();
        decode_datagram(&dgram, &mut stats, &mut next, &mut |c| got.push(c.payload.to_vec()));
        assert_eq!(got.len(), 5, "every packet message is handed on");
        assert_eq!(got[0], udp4_answer(&dns));
        assert_eq!(got[1], [0x45, 0, 0]);
        assert!(got[4].is_empty(), "the message without a payload, handed on empty");
        assert_eq!(stats.packets, 5);
        assert_eq!(stats.malformed, 0, "malformed packets are the reader's to count");
        assert_eq!(stats.dropped, 3);
        assert_eq!(next, Some(7));
        // A truncated trailing message is counted, not a panic.
        let mut stats = CaptureStats::default();
        let end = dgram.len() - no_payload_len() - 3;
        decode_datagram(&dgram[..end], &mut stats, &mut next, &mut |_| {});
        assert_eq!(stats.packets, 3);
        assert_eq!(stats.malformed, 1);
    }

    fn no_payload_len() -> usize {
        nlmsg(0x0400, 0, 0, &[2, 0, 0, 100]).len()
    }
}
