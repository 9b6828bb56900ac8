//! The nf_tables requests hrneo sends, and the replies it reads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::consts::*;
use super::NftSetRef;
use crate::error::Result;
use crate::ipset::Entry;
use crate::nl::consts::{
    nfnl_msg_type, AF_UNSPEC, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
};
use crate::nl::{Attr, Datagram, MsgWriter, Nfgenmsg, NlMsg};

/// One element as nf_tables stores it: a key (4 or 16 bytes, network order),
/// whether it closes an interval, and its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NftElem {
    key: [u8; 16],
    klen: u8,
    /// NFT_SET_ELEM_INTERVAL_END: the first address after an interval.
    pub end: bool,
    /// Milliseconds; `None`: the set's default (or none).
    pub timeout_ms: Option<u64>,
}

impl NftElem {
    /// The element whose key is `addr`.
    pub fn of_addr(addr: IpAddr, end: bool, timeout_ms: Option<u64>) -> NftElem {
        let mut key = [0u8; 16];
        let klen = match addr {
            IpAddr::V4(a) => {
                key[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                key.copy_from_slice(&a.octets());
                16
            }
        };
        NftElem { key, klen, end, timeout_ms }
    }

    /// The key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.klen)]
    }

    /// The key as an address (keys of 4 or 16 bytes; None otherwise).
    pub fn addr(&self) -> Option<IpAddr> {
        key_addr(self.key())
    }
}

fn key_addr(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(key).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(key).ok()?))),
        _ => None,
    }
}

/// The first address after `e` (an address or network); None past the end of
/// the address space (an interval that runs to the last address has no end element).
pub(crate) fn after(e: &Entry) -> Option<IpAddr> {
    match e.addr {
        IpAddr::V4(a) => {
            let size = 1u64 << (32 - u32::from(e.prefix.unwrap_or(32)));
            let end = u64::from(u32::from(a)) + size;
            u32::try_from(end).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v)))
        }
        IpAddr::V6(a) => {
            let bits = 128 - u32::from(e.prefix.unwrap_or(128));
            let size = 1u128.checked_shl(bits)?;
            u128::from(a).checked_add(size).map(|v| IpAddr::V6(Ipv6Addr::from(v)))
        }
    }
}

/// The elements that stand for `e`: its key alone in a plain set; in an
/// interval set, its first address (with the timeout) and the first address
/// after it, flagged INTERVAL_END (the end carries no timeout: the kernel
/// expires the pair by its start).
pub(crate) fn elements(e: &Entry, interval: bool, timeout_ms: Option<u64>) -> Vec<NftElem> {
    let mut v = vec![NftElem::of_addr(e.addr, false, timeout_ms)];
    if interval {
        if let Some(end) = after(e) {
            v.push(NftElem::of_addr(end, true, None));
        }
    }
    v
}

fn nfgen(family: u8) -> Nfgenmsg {
    Nfgenmsg::new(family, 0)
}

fn msg_type(cmd: u8) -> u16 {
    nfnl_msg_type(NFNL_SUBSYS_NFTABLES, cmd)
}

fn ack(yes: bool) -> u16 {
    if yes {
        NLM_F_ACK
    } else {
        0
    }
}

/// NFNL_MSG_BATCH_BEGIN: opens a transaction of the nf_tables subsystem
/// (`res_id` names the subsystem, in network order).
pub(crate) fn batch_begin(d: &mut Datagram, seq: u32) {
    d.message(
        NFNL_MSG_BATCH_BEGIN,
        0,
        seq,
        Nfgenmsg::new(AF_UNSPEC, u16::from(NFNL_SUBSYS_NFTABLES)),
    )
    .finish();
}

/// NFNL_MSG_BATCH_END: the kernel commits (or, after a failure, aborts) here.
pub(crate) fn batch_end(d: &mut Datagram, seq: u32) {
    d.message(
        NFNL_MSG_BATCH_END,
        0,
        seq,
        Nfgenmsg::new(AF_UNSPEC, u16::from(NFNL_SUBSYS_NFTABLES)),
    )
    .finish();
}

/// NEWTABLE without NLM_F_EXCL: creates the table, or leaves an existing one as it is.
pub(crate) fn msg_newtable(d: &mut Datagram, seq: u32, family: u8, table: &str, ack_it: bool) {
    let mut m =
        d.message(msg_type(NFT_MSG_NEWTABLE), NLM_F_CREATE | ack(ack_it), seq, nfgen(family));
    m.attr_strz(NFTA_TABLE_NAME, table);
}

/// What NEWSET makes: an IPv4 or IPv6 address set.
pub struct NewSet<'a> {
    /// The set to create.
    pub set: &'a NftSetRef,
    /// IPv6 keys (else IPv4).
    pub ipv6: bool,
    /// NFT_SET_INTERVAL: networks and ranges.
    pub interval: bool,
    /// Elements time out (NFT_SET_TIMEOUT); `default_timeout_ms` is the set's default.
    pub timeout: bool,
    /// Milliseconds.
    pub default_timeout_ms: Option<u64>,
    /// Most elements (`size`); None: no limit.
    pub size: Option<u32>,
    /// NFTA_SET_ID (the kernel wants one to name the set within a transaction).
    pub id: u32,
}

/// NEWSET with NLM_F_EXCL (EEXIST for an existing set: the caller decides).
pub fn msg_newset(d: &mut Datagram, seq: u32, s: &NewSet<'_>, ack_it: bool) {
    let flags = NLM_F_CREATE | NLM_F_EXCL | ack(ack_it);
    let mut m = d.message(msg_type(NFT_MSG_NEWSET), flags, seq, nfgen(s.set.family));
    m.attr_strz(NFTA_SET_TABLE, &s.set.table);
    m.attr_strz(NFTA_SET_NAME, &s.set.name);
    let mut set_flags = 0;
    if s.interval {
        set_flags |= NFT_SET_INTERVAL;
    }
    if s.timeout {
        set_flags |= NFT_SET_TIMEOUT;
    }
    m.attr_be32(NFTA_SET_FLAGS, set_flags);
    m.attr_be32(NFTA_SET_KEY_TYPE, if s.ipv6 { NFT_TYPE_IP6ADDR } else { NFT_TYPE_IPADDR });
    m.attr_be32(NFTA_SET_KEY_LEN, if s.ipv6 { 16 } else { 4 });
    m.attr_be32(NFTA_SET_ID, s.id);
    if let (true, Some(t)) = (s.timeout, s.default_timeout_ms) {
        m.attr_be64(NFTA_SET_TIMEOUT, t);
    }
    if let Some(n) = s.size {
        m.nest_start(NFTA_SET_DESC);
        m.attr_be32(NFTA_SET_DESC_SIZE, n);
        m.nest_end();
    }
}

fn named_set<'a>(
    d: &'a mut Datagram,
    cmd: u8,
    flags: u16,
    seq: u32,
    set: &NftSetRef,
) -> MsgWriter<'a> {
    let mut m = d.message(msg_type(cmd), flags, seq, nfgen(set.family));
    m.attr_strz(NFTA_SET_TABLE, &set.table);
    m.attr_strz(NFTA_SET_NAME, &set.name);
    m
}

/// GETSET (not a dump): the kernel answers with the set's NEWSET, or ENOENT.
pub(crate) fn msg_getset(d: &mut Datagram, seq: u32, set: &NftSetRef) {
    named_set(d, NFT_MSG_GETSET, NLM_F_ACK, seq, set).finish();
}

/// DELSET (in a batch).
pub(crate) fn msg_delset(d: &mut Datagram, seq: u32, set: &NftSetRef, ack_it: bool) {
    named_set(d, NFT_MSG_DELSET, ack(ack_it), seq, set).finish();
}

fn elem_list<'a>(
    d: &'a mut Datagram,
    cmd: u8,
    flags: u16,
    seq: u32,
    set: &NftSetRef,
) -> MsgWriter<'a> {
    let mut m = d.message(msg_type(cmd), flags, seq, nfgen(set.family));
    m.attr_strz(NFTA_SET_ELEM_LIST_TABLE, &set.table);
    m.attr_strz(NFTA_SET_ELEM_LIST_SET, &set.name);
    m
}

fn put_elem(m: &mut MsgWriter<'_>, e: &NftElem, with_timeout: bool) {
    m.nest_start(NFTA_LIST_ELEM);
    m.nest_start(NFTA_SET_ELEM_KEY);
    m.attr(NFTA_DATA_VALUE, e.key());
    m.nest_end();
    if e.end {
        m.attr_be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
    }
    if let (true, Some(t)) = (with_timeout, e.timeout_ms) {
        m.attr_be64(NFTA_SET_ELEM_TIMEOUT, t);
        // The time left, from now: what resets a present element's countdown on
        // kernels that update elements (an equal timeout alone changes nothing).
        // Linux 5.3+ reads it on add; older kernels ignore it.
        if t > 0 {
            m.attr_be64(NFTA_SET_ELEM_EXPIRATION, t);
        }
    }
    m.nest_end();
}

/// NEWSETELEM of `elems` (one entry: an address, or an interval's start and end),
/// without NLM_F_EXCL: a present element is no error (and gets its timeout and
/// time left reset on Linux 6.12+; an equal timeout without the time left
/// would change nothing there).
pub fn msg_newsetelem(
    d: &mut Datagram,
    seq: u32,
    set: &NftSetRef,
    elems: &[NftElem],
    ack_it: bool,
) {
    let mut m = elem_list(d, NFT_MSG_NEWSETELEM, NLM_F_CREATE | ack(ack_it), seq, set);
    m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
    for e in elems {
        put_elem(&mut m, e, true);
    }
    m.nest_end();
}

/// DELSETELEM of `elems`; with none, the kernel flushes the whole set.
pub(crate) fn msg_delsetelem(
    d: &mut Datagram,
    seq: u32,
    set: &NftSetRef,
    elems: &[NftElem],
    ack_it: bool,
) {
    let mut m = elem_list(d, NFT_MSG_DELSETELEM, ack(ack_it), seq, set);
    if !elems.is_empty() {
        m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        for e in elems {
            put_elem(&mut m, e, false);
        }
        m.nest_end();
    }
}

/// GETSETELEM of one key (not a dump): the kernel answers with the element (in
/// an interval set: the interval that holds the key), or ENOENT when it is
/// absent or expired. Without `ack_it` nothing else comes back.
pub(crate) fn msg_getsetelem(
    d: &mut Datagram,
    seq: u32,
    set: &NftSetRef,
    key: &NftElem,
    ack_it: bool,
) {
    let mut m = elem_list(d, NFT_MSG_GETSETELEM, ack(ack_it), seq, set);
    m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
    put_elem(&mut m, key, false);
    m.nest_end();
}

/// GETSETELEM dump: every element of the set.
pub(crate) fn msg_dump_elems(d: &mut Datagram, seq: u32, set: &NftSetRef) {
    elem_list(d, NFT_MSG_GETSETELEM, NLM_F_DUMP, seq, set).finish();
}

/// The transaction `NftSetBatch::commit` sends for entries found absent:
/// BATCH_BEGIN (`first_seq`), their elements in NEWSETELEM messages of up to
/// `per_message` entries (the last message acked), BATCH_END. Pure (no
/// socket), for tools, tests and the cross-architecture smoke test.
pub fn newsetelem_batch(
    set: &NftSetRef,
    entries: &[Entry],
    interval: bool,
    timeout_ms: Option<u64>,
    first_seq: u32,
    per_message: usize,
) -> Result<Vec<u8>> {
    let per_message = per_message.max(1);
    let mut d = Datagram::with_capacity(64 + entries.len() * 96);
    batch_begin(&mut d, first_seq);
    let mut seq = first_seq;
    let parts = entries.chunks(per_message).count();
    let mut elems = Vec::new();
    for (i, part) in entries.chunks(per_message).enumerate() {
        seq = seq.wrapping_add(1);
        elems.clear();
        part.iter().for_each(|e| elems.extend(elements(e, interval, timeout_ms)));
        msg_newsetelem(&mut d, seq, set, &elems, i + 1 == parts);
    }
    batch_end(&mut d, seq.wrapping_add(1));
    Ok(d.as_bytes().to_vec())
}

// ------------------------------------------------------------------ parsing

/// What a set reply (NEWSET) says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttrs {
    pub table: String,
    pub name: String,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    pub timeout_ms: Option<u64>,
    pub size: Option<u32>,
    pub handle: Option<u64>,
}

/// The attributes of a NEWSET reply (a GETSET's answer).
pub fn parse_set(m: &NlMsg<'_>) -> SetAttrs {
    let mut s = SetAttrs::default();
    for a in m.nf_attrs() {
        match a.ty {
            NFTA_SET_TABLE => s.table = a.str(),
            NFTA_SET_NAME => s.name = a.str(),
            NFTA_SET_FLAGS => s.flags = a.be32().unwrap_or(0),
            NFTA_SET_KEY_TYPE => s.key_type = a.be32().unwrap_or(0),
            NFTA_SET_KEY_LEN => s.key_len = a.be32().unwrap_or(0),
            NFTA_SET_TIMEOUT => s.timeout_ms = a.be64(),
            NFTA_SET_HANDLE => s.handle = a.be64(),
            NFTA_SET_DESC => {
                s.size = a.nested_attrs().find(NFTA_SET_DESC_SIZE).and_then(|d| d.be32());
            }
            _ => {}
        }
    }
    s
}

/// One element of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElemAttrs {
    pub key: Vec<u8>,
    pub end: bool,
    pub timeout_ms: Option<u64>,
    /// Milliseconds left; None for an element that never expires.
    pub expiration_ms: Option<u64>,
}

impl ElemAttrs {
    pub fn addr(&self) -> Option<IpAddr> {
        key_addr(&self.key)
    }
}

fn parse_elem(a: &Attr<'_>) -> Option<ElemAttrs> {
    let mut e = ElemAttrs { key: Vec::new(), end: false, timeout_ms: None, expiration_ms: None };
    for f in a.nested_attrs() {
        match f.ty {
            NFTA_SET_ELEM_KEY => {
                e.key = f.nested_attrs().find(NFTA_DATA_VALUE)?.data.to_vec();
            }
            NFTA_SET_ELEM_FLAGS => {
                e.end = f.be32().unwrap_or(0) & NFT_SET_ELEM_INTERVAL_END != 0;
            }
            NFTA_SET_ELEM_TIMEOUT => e.timeout_ms = f.be64(),
            NFTA_SET_ELEM_EXPIRATION => e.expiration_ms = f.be64(),
            _ => {}
        }
    }
    (!e.key.is_empty()).then_some(e)
}

/// The elements of a NEWSETELEM reply (a get, or one message of a dump).
pub fn parse_elems(m: &NlMsg<'_>, out: &mut Vec<ElemAttrs>) {
    for a in m.nf_attrs() {
        if a.ty == NFTA_SET_ELEM_LIST_ELEMENTS {
            for el in a.nested_attrs().filter(|el| el.ty == NFTA_LIST_ELEM) {
                if let Some(e) = parse_elem(&el) {
                    out.push(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::consts::NLM_F_REQUEST;
    use crate::nl::messages;
    use crate::testutil::{nest, nla, nlh};

    fn set() -> NftSetRef {
        NftSetRef::parse("inet#hrneo#vpn").unwrap()
    }

    fn built(f: impl FnOnce(&mut Datagram)) -> Vec<u8> {
        let mut d = Datagram::new();
        f(&mut d);
        d.as_bytes().to_vec()
    }

    fn msg(ty: u16, flags: u16, seq: u32, nfgen: [u8; 4], attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = [nfgen.to_vec(), attrs.concat()].concat();
        let mut v = nlh((16 + body.len()) as u32, ty, flags | NLM_F_REQUEST, seq);
        v.extend_from_slice(&body);
        v
    }

    fn list_hdr() -> Vec<Vec<u8>> {
        vec![nla(NFTA_SET_ELEM_LIST_TABLE, b"hrneo\0"), nla(NFTA_SET_ELEM_LIST_SET, b"vpn\0")]
    }

    #[test]
    fn batch_begin_end_name_the_subsystem_big_endian() {
        let b = built(|d| {
            batch_begin(d, 7);
            batch_end(d, 9);
        });
        let want =
            [msg(0x10, 0, 7, [0, 0, 0, 10], &[]), msg(0x11, 0, 9, [0, 0, 0, 10], &[])].concat();
        assert_eq!(b, want);
    }

    #[test]
    fn newsetelem_v4_host_in_interval_set_with_timeout() {
        let e = Entry::parse("192.0.2.1").unwrap();
        let b = built(|d| msg_newsetelem(d, 5, &set(), &elements(&e, true, Some(3_600_000)), true));
        let start = nest(
            NFTA_LIST_ELEM,
            &[
                nest(NFTA_SET_ELEM_KEY, &[nla(NFTA_DATA_VALUE, &[192, 0, 2, 1])]),
                nla(NFTA_SET_ELEM_TIMEOUT, &[0, 0, 0, 0, 0, 0x36, 0xee, 0x80]),
                nla(NFTA_SET_ELEM_EXPIRATION, &[0, 0, 0, 0, 0, 0x36, 0xee, 0x80]),
            ],
        );
        let end = nest(
            NFTA_LIST_ELEM,
            &[
                nest(NFTA_SET_ELEM_KEY, &[nla(NFTA_DATA_VALUE, &[192, 0, 2, 2])]),
                nla(NFTA_SET_ELEM_FLAGS, &[0, 0, 0, 1]),
            ],
        );
        let mut attrs = list_hdr();
        attrs.push(nest(NFTA_SET_ELEM_LIST_ELEMENTS, &[start, end]));
        let want = msg(0x0a0c, NLM_F_CREATE | NLM_F_ACK, 5, [1, 0, 0, 0], &attrs);
        assert_eq!(b, want);
    }

    #[test]
    fn newsetelem_v6_network_plain_set_no_ack() {
        let e = Entry::parse("2001:db8::/32").unwrap();
        let b = built(|d| msg_newsetelem(d, 6, &set(), &elements(&e, false, None), false));
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let el = nest(NFTA_LIST_ELEM, &[nest(NFTA_SET_ELEM_KEY, &[nla(NFTA_DATA_VALUE, &key)])]);
        let mut attrs = list_hdr();
        attrs.push(nest(NFTA_SET_ELEM_LIST_ELEMENTS, &[el]));
        assert_eq!(b, msg(0x0a0c, NLM_F_CREATE, 6, [1, 0, 0, 0], &attrs));
    }

    #[test]
    fn interval_ends_and_the_top_of_the_space() {
        let end = |t: &str| after(&Entry::parse(t).unwrap()).map(|a| a.to_string());
        assert_eq!(end("203.0.113.0/24").as_deref(), Some("203.0.114.0"));
        assert_eq!(end("192.0.2.255").as_deref(), Some("192.0.3.0"));
        assert_eq!(end("255.255.255.255"), None);
        assert_eq!(end("0.0.0.0/0"), None);
        assert_eq!(end("2001:db8::/32").as_deref(), Some("2001:db9::"));
        assert_eq!(end("::/0"), None);
        assert_eq!(end("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), None);
        // No end element past the top: the interval runs to the last address.
        assert_eq!(elements(&Entry::parse("255.255.255.255").unwrap(), true, None).len(), 1);
    }

    #[test]
    fn getsetelem_and_delsetelem_carry_no_timeout() {
        let e = NftElem::of_addr("198.51.100.7".parse().unwrap(), false, Some(1000));
        let b = built(|d| msg_getsetelem(d, 3, &set(), &e, false));
        let el = nest(
            NFTA_LIST_ELEM,
            &[nest(NFTA_SET_ELEM_KEY, &[nla(NFTA_DATA_VALUE, &[198, 51, 100, 7])])],
        );
        let mut attrs = list_hdr();
        attrs.push(nest(NFTA_SET_ELEM_LIST_ELEMENTS, std::slice::from_ref(&el)));
        assert_eq!(b, msg(0x0a0d, 0, 3, [1, 0, 0, 0], &attrs));
        let b = built(|d| msg_delsetelem(d, 4, &set(), &[e], true));
        assert_eq!(b, msg(0x0a0e, NLM_F_ACK, 4, [1, 0, 0, 0], &attrs));
        // No elements: a flush of the set.
        let b = built(|d| msg_delsetelem(d, 4, &set(), &[], false));
        assert_eq!(b, msg(0x0a0e, 0, 4, [1, 0, 0, 0], &list_hdr()));
    }

    #[test]
    fn newset_interval_timeout_v6_with_size() {
        let r = NftSetRef::parse("ip6#t#s6").unwrap();
        let s = NewSet {
            set: &r,
            ipv6: true,
            interval: true,
            timeout: true,
            default_timeout_ms: Some(60_000),
            size: Some(65536),
            id: 1,
        };
        let b = built(|d| msg_newset(d, 2, &s, true));
        let attrs = vec![
            nla(NFTA_SET_TABLE, b"t\0"),
            nla(NFTA_SET_NAME, b"s6\0"),
            nla(NFTA_SET_FLAGS, &[0, 0, 0, 0x14]),
            nla(NFTA_SET_KEY_TYPE, &[0, 0, 0, 8]),
            nla(NFTA_SET_KEY_LEN, &[0, 0, 0, 16]),
            nla(NFTA_SET_ID, &[0, 0, 0, 1]),
            nla(NFTA_SET_TIMEOUT, &[0, 0, 0, 0, 0, 0, 0xea, 0x60]),
            nest(NFTA_SET_DESC, &[nla(NFTA_SET_DESC_SIZE, &[0, 1, 0, 0])]),
        ];
        let want = msg(0x0a09, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, 2, [10, 0, 0, 0], &attrs);
        assert_eq!(b, want);
    }

    #[test]
    fn newtable_and_getset() {
        let b = built(|d| msg_newtable(d, 1, NFPROTO_INET, "hrneo", false));
        assert_eq!(
            b,
            msg(0x0a00, NLM_F_CREATE, 1, [1, 0, 0, 0], &[nla(NFTA_TABLE_NAME, b"hrneo\0")])
        );
        let b = built(|d| msg_getset(d, 2, &set()));
        let attrs = [nla(NFTA_SET_TABLE, b"hrneo\0"), nla(NFTA_SET_NAME, b"vpn\0")];
        assert_eq!(b, msg(0x0a0a, NLM_F_ACK, 2, [1, 0, 0, 0], &attrs));
        let b = built(|d| msg_dump_elems(d, 3, &set()));
        assert_eq!(b, msg(0x0a0d, NLM_F_DUMP, 3, [1, 0, 0, 0], &list_hdr()));
    }

    #[test]
    fn whole_batch_numbers_messages_and_acks_the_last() {
        let es = [Entry::parse("192.0.2.1").unwrap(), Entry::parse("192.0.2.2").unwrap()];
        let one = newsetelem_batch(&set(), &es, false, None, 100, 256).unwrap();
        let ms: Vec<_> = messages(&one).collect();
        assert_eq!(ms.len(), 3, "both entries in one message");
        assert_eq!(ms[1].flags & NLM_F_ACK, NLM_F_ACK);
        let b = newsetelem_batch(&set(), &es, false, None, 100, 1).unwrap();
        let ms: Vec<_> = messages(&b).collect();
        let seqs: Vec<u32> = ms.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [100, 101, 102, 103]);
        let acked: Vec<bool> = ms.iter().map(|m| m.flags & NLM_F_ACK != 0).collect();
        assert_eq!(acked, [false, false, true, false]);
        assert_eq!(ms[0].msg_type, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(ms[3].msg_type, NFNL_MSG_BATCH_END);
    }

    #[test]
    fn replies_parse() {
        // A NEWSET reply as the kernel writes it (nfgenmsg, then attributes).
        let body = [
            vec![1, 0, 0, 0],
            nla(NFTA_SET_TABLE, b"fw4\0"),
            nla(NFTA_SET_NAME, b"vpn\0"),
            nla(NFTA_SET_FLAGS, &[0, 0, 0, 0x14]),
            nla(NFTA_SET_KEY_TYPE, &[0, 0, 0, 7]),
            nla(NFTA_SET_KEY_LEN, &[0, 0, 0, 4]),
            nla(NFTA_SET_TIMEOUT, &600_000u64.to_be_bytes()),
            nest(NFTA_SET_DESC, &[nla(NFTA_SET_DESC_SIZE, &[0, 0, 4, 0])]),
        ]
        .concat();
        let raw = [nlh((16 + body.len()) as u32, 0x0a09, 0, 1), body].concat();
        let m = messages(&raw).next().unwrap();
        let s = parse_set(&m);
        assert_eq!(
            (s.table.as_str(), s.name.as_str(), s.flags, s.key_len),
            ("fw4", "vpn", 0x14, 4)
        );
        assert_eq!((s.timeout_ms, s.size, s.key_type), (Some(600_000), Some(1024), 7));

        let el = |key: &[u8], extra: Vec<Vec<u8>>| {
            let mut parts = vec![nest(NFTA_SET_ELEM_KEY, &[nla(NFTA_DATA_VALUE, key)])];
            parts.extend(extra);
            nest(NFTA_LIST_ELEM, &parts)
        };
        let body = [
            vec![1, 0, 0, 0],
            nla(NFTA_SET_ELEM_LIST_TABLE, b"fw4\0"),
            nla(NFTA_SET_ELEM_LIST_SET, b"vpn\0"),
            nest(
                NFTA_SET_ELEM_LIST_ELEMENTS,
                &[
                    el(
                        &[192, 0, 2, 1],
                        vec![nla(NFTA_SET_ELEM_EXPIRATION, &5000u64.to_be_bytes())],
                    ),
                    el(&[192, 0, 2, 2], vec![nla(NFTA_SET_ELEM_FLAGS, &[0, 0, 0, 1])]),
                    nest(NFTA_LIST_ELEM, &[nla(NFTA_SET_ELEM_FLAGS, &[0, 0, 0, 1])]), // no key: skipped
                ],
            ),
        ]
        .concat();
        let raw = [nlh((16 + body.len()) as u32, 0x0a0c, 0, 1), body].concat();
        let mut out = Vec::new();
        parse_elems(&messages(&raw).next().unwrap(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].addr(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!((out[0].end, out[0].expiration_ms), (false, Some(5000)));
        assert!(out[1].end);
        assert_eq!(out[1].expiration_ms, None);
    }
}
