//! ctnetlink messages: the dump request, DELETE, and the entries and events the kernel sends.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::nl::consts::{
    nfnl_msg_type, AF_INET, AF_INET6, AF_UNSPEC, NFNL_SUBSYS_CTNETLINK, NLA_F_NESTED, NLM_F_ACK,
    NLM_F_DUMP,
};
use crate::nl::{attrs, Attr, Datagram, Nfgenmsg, NlMsg};
use crate::{Error, Result};

// include/uapi/linux/netfilter/nfnetlink_conntrack.h
pub(crate) const IPCTNL_MSG_CT_NEW: u8 = 0;
pub(crate) const IPCTNL_MSG_CT_GET: u8 = 1;
pub(crate) const IPCTNL_MSG_CT_DELETE: u8 = 2;
// enum ctattr_type
pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
pub(crate) const CTA_TUPLE_REPLY: u16 = 2;
pub(crate) const CTA_ID: u16 = 12;
pub(crate) const CTA_ZONE: u16 = 18;
// enum ctattr_tuple
pub(crate) const CTA_TUPLE_IP: u16 = 1;
pub(crate) const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
pub(crate) const CTA_IP_V4_SRC: u16 = 1;
pub(crate) const CTA_IP_V4_DST: u16 = 2;
pub(crate) const CTA_IP_V6_SRC: u16 = 3;
pub(crate) const CTA_IP_V6_DST: u16 = 4;
// enum nfnetlink_groups
pub(crate) const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub(crate) const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// Parse every address before anything is sent, so a typo deletes nothing.
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub(crate) fn parse_addrs<S: AsRef<str>>(ips: &[S]) -> Result<HashSet<IpAddr>> {
    ips.iter()
        .map(|s| {
            let s = s.as_ref();
            s.parse::<IpAddr>()
                .map_err(|_| Error::InvalidArgument(format!("not an IP address: {s:?}")))
        })
        .collect()
}

/// The dump request: IPCTNL_MSG_CT_GET with NLM_F_DUMP for one family.
pub(crate) fn write_dump_request(d: &mut Datagram, seq: u32, family: u8) {
    d.message(
        nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET),
        NLM_F_DUMP,
        seq,
        Nfgenmsg::new(family, 0),
    )
    .finish();
}

/// What a DELETE needs from a dumped entry; also the entry's identity in the index
/// (CTA_ID tells a replacement with the same tuple apart).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Victim {
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// Payload of CTA_TUPLE_ORIG (its nested attributes), as received.
    pub tuple: Vec<u8>,
    /// CTA_ID: tells a replacement with the same tuple apart.
    pub id: Option<u32>,
    /// CTA_ZONE (be16) as received: entries outside zone 0 are only found with it.
    pub zone: Option<[u8; 2]>,
    /// Original destination (what the client connected to).
    pub orig_dst: IpAddr,
    /// Source of the reply direction (differs from `orig_dst` behind DNAT).
    pub reply_src: Option<IpAddr>,
}

impl Victim {
    /// The address of `addrs` this entry is flushed for (original destination first).
    pub fn matched_in(&self, addrs: &HashSet<IpAddr>) -> Option<IpAddr> {
        if addrs.contains(&self.orig_dst) {
            Some(self.orig_dst)
        } else {
            self.reply_src.filter(|r| addrs.contains(r))
        }
    }
}

/// One DELETE message for `v` with its own sequence number; with `ack` the
/// kernel acks it whatever the outcome, without only when it fails.
pub fn write_delete(d: &mut Datagram, seq: u32, v: &Victim, ack: bool) {
    let mut m = d.message(
        nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE),
        if ack { NLM_F_ACK } else { 0 },
        seq,
        Nfgenmsg::new(v.family, 0),
    );
    // Re-emit the tuple as a nest around the bytes we got; old kernels did not
    // set NLA_F_NESTED in dumps, new ones do, all accept it.
    m.attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &v.tuple);
    if let Some(id) = v.id {
        m.attr_be32(CTA_ID, id);
    }
    if let Some(zone) = v.zone {
        m.attr(CTA_ZONE, &zone);
    }
    m.finish();
}

fn tuple_addr(tuple: &Attr<'_>, family: u8, v4: u16, v6: u16) -> Option<IpAddr> {
    let ip = tuple.nested_attrs().find(CTA_TUPLE_IP)?;
    match family {
        AF_INET => {
            let b: [u8; 4] = ip.nested_attrs().find(v4)?.data.get(..4)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        AF_INET6 => {
            let b: [u8; 16] = ip.nested_attrs().find(v6)?.data.get(..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// A dumped conntrack entry, as far as flushing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedEntry<'a> {
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// Original source (the side that opened the connection).
    pub orig_src: Option<IpAddr>,
    /// Original destination.
    pub orig_dst: IpAddr,
    /// None when the kernel sent no reply tuple (it always does, but it is not needed).
    pub reply_src: Option<IpAddr>,
    /// Payload of CTA_TUPLE_ORIG.
    pub tuple: &'a [u8],
    /// CTA_ID.
    pub id: Option<u32>,
    /// CTA_ZONE.
    pub zone: Option<[u8; 2]>,
}

impl DumpedEntry<'_> {
    /// Whether the original destination or the reply source is in `addrs`.
    pub fn matches(&self, addrs: &HashSet<IpAddr>) -> bool {
        addrs.contains(&self.orig_dst) || self.reply_src.is_some_and(|a| addrs.contains(&a))
    }

    /// What a DELETE of this entry (and the index) keeps of it.
    pub fn victim(&self) -> Victim {
        Victim {
            family: self.family,
            tuple: self.tuple.to_vec(),
            id: self.id,
            zone: self.zone,
            orig_dst: self.orig_dst,
            reply_src: self.reply_src,
        }
    }
}

/// Parse one dump reply. None if it is not a conntrack entry or lacks what a
/// DELETE needs (an original tuple with a destination address of its family).
pub fn parse_entry<'a>(m: &NlMsg<'a>) -> Option<DumpedEntry<'a>> {
    if m.msg_type != nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) {
        return None;
    }
    parse_body(m)
}

/// A conntrack event: IPCTNL_MSG_CT_NEW (group NEW) or IPCTNL_MSG_CT_DELETE
/// (group DESTROY), with the same attributes a dump reply has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// An entry was confirmed.
    New(DumpedEntry<'a>),
    /// An entry went away.
    Destroy(DumpedEntry<'a>),
}

/// Parse one event of the NEW or DESTROY group; None for anything else, or
/// an entry without what a DELETE needs (as `parse_entry`).
pub fn parse_event<'a>(m: &NlMsg<'a>) -> Option<Event<'a>> {
    if m.msg_type == nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) {
        parse_body(m).map(Event::New)
    } else if m.msg_type == nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) {
        parse_body(m).map(Event::Destroy)
    } else {
        None
    }
}

fn parse_body<'a>(m: &NlMsg<'a>) -> Option<DumpedEntry<'a>> {
    let family = Nfgenmsg::from_bytes(m.payload)?.family;
    let (mut orig, mut reply, mut id, mut zone) = (None, None, None, None);
    for a in m.nf_attrs() {
        match a.ty {
            CTA_TUPLE_ORIG => orig = Some(a),
            CTA_TUPLE_REPLY => reply = Some(a),
            CTA_ID => id = a.be32(),
            CTA_ZONE => zone = a.data.get(..2).and_then(|z| z.try_into().ok()),
            _ => {}
        }
    }
    let orig = orig?;
    // A tuple without its protocol part would not identify the entry.
    attrs(orig.data).find(CTA_TUPLE_PROTO)?;
    let orig_src = tuple_addr(&orig, family, CTA_IP_V4_SRC, CTA_IP_V6_SRC);
    let orig_dst = tuple_addr(&orig, family, CTA_IP_V4_DST, CTA_IP_V6_DST)?;
    let reply_src = reply.and_then(|r| tuple_addr(&r, family, CTA_IP_V4_SRC, CTA_IP_V6_SRC));
    Some(DumpedEntry { family, orig_src, orig_dst, reply_src, tuple: orig.data, id, zone })
}

/// Group victims into datagrams of at most `batch` DELETE messages, the last
/// of each acked (the others are answered only if they fail).
/// Returns each datagram with the sequence numbers it carries.
pub(crate) fn delete_datagrams(
    victims: &[Victim],
    batch: usize,
    mut next_seq: impl FnMut() -> u32,
) -> Vec<(Datagram, Vec<u32>)> {
    victims
        .chunks(batch.max(1))
        .map(|chunk| {
            let mut d = Datagram::with_capacity(chunk.len() * 96);
            let seqs = chunk
                .iter()
                .enumerate()
                .map(|(k, v)| {
                    let seq = next_seq();
                    write_delete(&mut d, seq, v, k + 1 == chunk.len());
                    seq
                })
                .collect();
            (d, seqs)
        })
        .collect()
}

/// The family to dump: the kernel skips other families' entries itself, and
/// when both are wanted one AF_UNSPEC dump walks the table once instead of twice
/// (the walk over every hash bucket, not the entries, is most of the cost).
pub(crate) fn dump_family(addrs: &HashSet<IpAddr>) -> u8 {
    match (addrs.iter().any(IpAddr::is_ipv4), addrs.iter().any(IpAddr::is_ipv6)) {
        (true, false) => AF_INET,
        (false, true) => AF_INET6,
        _ => AF_UNSPEC,
    }
}

/// Sort DELETE acks into (deleted, already gone, failed). ENOENT means the
/// entry expired, was deleted by someone else, or was replaced (CTA_ID differs)
/// since the dump: nothing left to do, so it is not an error.
pub fn tally(codes: impl IntoIterator<Item = i32>) -> (u64, u64, u64) {
    let (mut ok, mut gone, mut failed) = (0, 0, 0);
    for code in codes {
        match code.checked_neg() {
            Some(0) => ok += 1,
            Some(libc::ENOENT) => gone += 1,
            _ => failed += 1,
        }
    }
    (ok, gone, failed)
}

/// Conntrack messages as the kernel sends them, for the tests of this module and `index`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::nl::messages;
    use crate::testutil::{nest, nla, nlmsg};

    /// CTA_TUPLE_* for udp 192.0.2.1:40000 -> 198.51.100.7:53.
    pub(crate) fn tuple_v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        [
            nest(CTA_TUPLE_IP, &[nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)]),
            nest(
                CTA_TUPLE_PROTO,
                &[
                    nla(1, &[17]),                // CTA_PROTO_NUM: udp
                    nla(2, &sport.to_be_bytes()), // CTA_PROTO_SRC_PORT
                    nla(3, &dport.to_be_bytes()), // CTA_PROTO_DST_PORT
                ],
            ),
        ]
        .concat()
    }

    /// A dump reply the way the kernel sends one (with a few extra attributes).
    pub(crate) fn captured_v4(orig_dst: [u8; 4], reply_src: [u8; 4]) -> Vec<u8> {
        let orig = tuple_v4([192, 0, 2, 1], orig_dst, 40000, 53);
        let reply = tuple_v4(reply_src, [192, 0, 2, 1], 53, 40000);
        let payload = [
            vec![AF_INET, 0, 0, 0],
            nla(CTA_TUPLE_ORIG | NLA_F_NESTED, &orig),
            nla(CTA_TUPLE_REPLY | NLA_F_NESTED, &reply),
            nla(3, &[0, 0, 0, 8]),                  // CTA_STATUS
            nla(7, &[0, 0, 0, 30]),                 // CTA_TIMEOUT
            nla(CTA_ID, &[0xde, 0xad, 0xbe, 0xef]), // CTA_ID
        ]
        .concat();
        nlmsg(0x0100, 0x02, 99, &payload)
    }

    /// udp 192.0.2.1:40000 -> dst:53 with its reply from dst, CTA_ID `id`.
    pub(crate) fn tuple_msg(src: [u8; 4], dst: [u8; 4], id: u32) -> Vec<u8> {
        let payload = [
            vec![AF_INET, 0, 0, 0],
            nla(CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple_v4(src, dst, 40000, 53)),
            nla(CTA_TUPLE_REPLY | NLA_F_NESTED, &tuple_v4(dst, src, 53, 40000)),
            nla(CTA_ID, &id.to_be_bytes()),
        ]
        .concat();
        nlmsg(0x0100, 0, 0, &payload)
    }

    pub(crate) fn entry_of(b: &[u8]) -> DumpedEntry<'_> {
        parse_entry(&messages(b).next().unwrap()).unwrap()
    }

    /// The same message as an event: NEW keeps type 0x0100, DESTROY is 0x0102.
    pub(crate) fn as_destroy(mut b: Vec<u8>) -> Vec<u8> {
        b[4..6].copy_from_slice(&0x0102u16.to_ne_bytes());
        b
    }

    pub(crate) fn addrs(a: &[&str]) -> HashSet<IpAddr> {
        parse_addrs(a).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::nl::messages;
    use crate::testutil::{nest, nla, nlmsg};

    #[test]
    fn constants_match_the_kernel_header() {
        assert_eq!(nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET), 0x0101);
        assert_eq!(nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE), 0x0102);
        assert_eq!((CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ID, CTA_ZONE), (1, 2, 12, 18));
    }

    #[test]
    fn golden_dump_request() {
        let mut d = Datagram::new();
        write_dump_request(&mut d, 0x01020304, AF_INET6);
        let mut want = Vec::new();
        want.extend_from_slice(&20u32.to_ne_bytes());
        want.extend_from_slice(&0x0101u16.to_ne_bytes());
        want.extend_from_slice(&0x0301u16.to_ne_bytes()); // REQUEST | DUMP
        want.extend_from_slice(&0x01020304u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[10, 0, 0, 0]); // AF_INET6, NFNETLINK_V0, res_id 0
        assert_eq!(d.as_bytes(), &want[..]);
    }

    #[test]
    fn golden_delete_from_captured_tuple() {
        let cap = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        let m = messages(&cap).next().unwrap();
        let e = parse_entry(&m).unwrap();
        assert_eq!(e.orig_dst, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(e.id, Some(0xdeadbeef));
        let mut d = Datagram::new();
        write_delete(&mut d, 7, &e.victim(), true);

        let orig = tuple_v4([192, 0, 2, 1], [198, 51, 100, 7], 40000, 53);
        let payload = [
            vec![2, 0, 0, 0],
            nla(CTA_TUPLE_ORIG | NLA_F_NESTED, &orig),
            nla(CTA_ID, &[0xde, 0xad, 0xbe, 0xef]),
        ]
        .concat();
        let want = nlmsg(0x0102, 0x0005, 7, &payload); // REQUEST | ACK
        assert_eq!(d.as_bytes(), &want[..]);
        // The payload bytes of the tuple, spelled out: ports and addresses big-endian.
        let b = d.as_bytes();
        assert_eq!(&b[20 + 4 + 4 + 4..20 + 4 + 4 + 4 + 4], &[192, 0, 2, 1]);
        assert_eq!(b.len(), 80); // 16 nlmsghdr + 4 nfgenmsg + 52 tuple + 8 id
        let port_at = b.windows(2).position(|w| w == [0x9c, 0x40]);
        assert!(port_at.is_some(), "source port 40000 as be16");
    }

    #[test]
    fn zone_is_carried_over() {
        let orig = tuple_v4([192, 0, 2, 1], [203, 0, 113, 5], 1, 2);
        let payload = [
            vec![AF_INET, 0, 0, 0],
            nla(CTA_TUPLE_ORIG, &orig), // old kernels: no NLA_F_NESTED
            nla(CTA_ZONE, &[0, 7]),
        ]
        .concat();
        let cap = nlmsg(0x0100, 0, 1, &payload);
        let e = parse_entry(&messages(&cap).next().unwrap()).unwrap();
        assert_eq!((e.zone, e.id, e.reply_src), (Some([0, 7]), None, None));
        let mut d = Datagram::new();
        write_delete(&mut d, 1, &e.victim(), true);
        let tail = nla(CTA_ZONE, &[0, 7]);
        assert!(d.as_bytes().ends_with(&tail));
        let nested_ty = &d.as_bytes()[22..24];
        assert_eq!(nested_ty, &(CTA_TUPLE_ORIG | NLA_F_NESTED).to_ne_bytes());
    }

    #[test]
    fn matches_orig_dst_or_reply_src() {
        let set = parse_addrs(&["198.51.100.7", "2001:db8::1"]).unwrap();
        let by_dst = captured_v4([198, 51, 100, 7], [192, 0, 2, 50]);
        let by_reply = captured_v4([192, 0, 2, 99], [198, 51, 100, 7]);
        let neither = captured_v4([192, 0, 2, 99], [192, 0, 2, 98]);
        let hit = |b: &[u8]| parse_entry(&messages(b).next().unwrap()).unwrap().matches(&set);
        assert!(hit(&by_dst));
        assert!(hit(&by_reply));
        assert!(!hit(&neither));
    }

    #[test]
    fn ipv6_entry() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let t = [
            nest(CTA_TUPLE_IP, &[nla(CTA_IP_V6_SRC, &src), nla(CTA_IP_V6_DST, &dst)]),
            nest(CTA_TUPLE_PROTO, &[nla(1, &[17])]),
        ]
        .concat();
        let payload = [vec![AF_INET6, 0, 0, 0], nest(CTA_TUPLE_ORIG, &[t])].concat();
        let cap = nlmsg(0x0100, 0, 1, &payload);
        let e = parse_entry(&messages(&cap).next().unwrap()).unwrap();
        assert_eq!(e.orig_dst, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn broken_entries_are_rejected_not_panicking() {
        let good = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        // Every truncation of the payload, with the header length patched to match.
        for cut in 16..good.len() {
            let mut b = good[..cut].to_vec();
            b[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            if let Some(m) = messages(&b).next() {
                let _ = parse_entry(&m);
            }
        }
        // Wrong address length, missing proto, wrong message type.
        let bad_ip = [
            vec![AF_INET, 0, 0, 0],
            nest(
                CTA_TUPLE_ORIG,
                &[
                    nest(CTA_TUPLE_IP, &[nla(CTA_IP_V4_DST, &[1, 2, 3])]),
                    nest(CTA_TUPLE_PROTO, &[nla(1, &[6])]),
                ],
            ),
        ]
        .concat();
        let no_proto = [
            vec![AF_INET, 0, 0, 0],
            nest(CTA_TUPLE_ORIG, &[nest(CTA_TUPLE_IP, &[nla(CTA_IP_V4_DST, &[1, 2, 3, 4])])]),
        ]
        .concat();
        for p in [bad_ip, no_proto] {
            let b = nlmsg(0x0100, 0, 1, &p);
            assert!(parse_entry(&messages(&b).next().unwrap()).is_none());
        }
        let mut other = good.clone();
        other[4..6].copy_from_slice(&0x0601u16.to_ne_bytes());
        assert!(parse_entry(&messages(&other).next().unwrap()).is_none());
    }

    #[test]
    fn enoent_is_already_gone_not_an_error() {
        assert_eq!(tally([0, -libc::ENOENT, 0, -libc::EPERM, i32::MIN]), (2, 1, 2));
        assert_eq!(tally([]), (0, 0, 0));
    }

    #[test]
    fn one_dump_family_per_call() {
        let fam = |a: &[&str]| dump_family(&parse_addrs(a).unwrap());
        assert_eq!(fam(&["192.0.2.1", "198.51.100.1"]), AF_INET);
        assert_eq!(fam(&["2001:db8::1"]), AF_INET6);
        assert_eq!(fam(&["192.0.2.1", "2001:db8::1"]), AF_UNSPEC);
    }

    #[test]
    fn bad_address_is_named() {
        let err = parse_addrs(&["192.0.2.1", "192.0.2.300"]).unwrap_err();
        assert!(err.to_string().contains("192.0.2.300"), "{err}");
        assert!(parse_addrs::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn deletes_are_batched_with_own_seqs() {
        let cap = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        let v = parse_entry(&messages(&cap).next().unwrap()).unwrap().victim();
        let victims = vec![v; 5];
        let mut n = 100;
        let out = delete_datagrams(&victims, 2, || {
            n += 1;
            n
        });
        assert_eq!(out.len(), 3);
        let seqs: Vec<u32> = out.iter().flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(seqs, vec![101, 102, 103, 104, 105]);
        let (d, s) = &out[0];
        let parsed: Vec<u32> = messages(d.as_bytes()).map(|m| m.seq).collect();
        assert_eq!(&parsed, s);
    }

    #[test]
    fn events_parse_as_new_or_destroy() {
        let new = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
        let gone = as_destroy(new.clone());
        let e = entry_of(&new);
        assert_eq!(parse_event(&messages(&new).next().unwrap()), Some(Event::New(e.clone())));
        assert_eq!(parse_event(&messages(&gone).next().unwrap()), Some(Event::Destroy(e)));
        let mut other = new.clone();
        other[4..6].copy_from_slice(&0x0101u16.to_ne_bytes()); // a GET is no event
        assert!(parse_event(&messages(&other).next().unwrap()).is_none());
        // A dump never yields a DESTROY as an entry.
        assert!(parse_entry(&messages(&gone).next().unwrap()).is_none());
    }
}
