//! A netlink session for nf_tables sets: create, info, list, test, flush,
//! destroy, and the lookup and transaction rounds `NftSetBatch` is built on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use super::consts::*;
use super::message::*;
use super::{family_name, NftSetRef};
use crate::error::{Error, Result};
use crate::ipset::Entry;
use crate::nl::consts::{nfnl_msg_type, NLMSG_ERROR, NLM_F_ACK};
use crate::nl::{Datagram, NetfilterSocket, Nfgenmsg};

/// Receive-buffer bytes budgeted per lookup: each present element comes back in
/// its own skb of about a page (NLMSG_GOODSIZE).
const GET_BUDGET: usize = 8192;
/// Receive-buffer bytes budgeted per operation of a transaction (an error ack).
const OP_BUDGET: usize = 2048;
const MAX_CHUNK: usize = 1024;
const WANT_RCVBUF: usize = 4 << 20;
const WANT_SNDBUF: usize = 1 << 20;

/// What the kernel tells about a set (GETSET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftSetInfo {
    /// Where the set lives.
    pub set: NftSetRef,
    /// NFT_SET_* flags (interval 0x4, timeout 0x10, map 0x8, ...).
    pub flags: u32,
    /// nft's key type (7 ipv4_addr, 8 ipv6_addr; informational for the kernel).
    pub key_type: u32,
    /// Key length in bytes (4 for IPv4 addresses, 16 for IPv6).
    pub key_len: u32,
    /// Default timeout of the elements in milliseconds (None: no default).
    pub timeout_ms: Option<u64>,
    /// Most elements (None: no limit).
    pub size: Option<u32>,
    /// The kernel's handle of the set.
    pub handle: Option<u64>,
}

impl NftSetInfo {
    /// Whether the set holds intervals (networks, ranges).
    pub fn is_interval(&self) -> bool {
        self.flags & NFT_SET_INTERVAL != 0
    }

    /// Whether elements can time out.
    pub fn has_timeout(&self) -> bool {
        self.flags & NFT_SET_TIMEOUT != 0
    }

    /// Whether the keys are IPv6 addresses.
    pub fn is_ipv6(&self) -> bool {
        self.key_len == 16
    }

    /// nft's name of the key type.
    pub fn type_name(&self) -> String {
        match (self.key_type, self.key_len) {
            (NFT_TYPE_IPADDR, 4) => "ipv4_addr".to_string(),
            (NFT_TYPE_IP6ADDR, 16) => "ipv6_addr".to_string(),
            (t, n) => format!("type {t} ({n} bytes)"),
        }
    }

    /// The set can hold addresses of one family: refuse maps, concatenations
    /// and keys that are no address.
    pub fn check_address_set(&self) -> Result<()> {
        let addr_key = matches!((self.key_type, self.key_len), (NFT_TYPE_IPADDR, 4) | (NFT_TYPE_IP6ADDR, 16))
            // `typeof` sets and sets made by other tools may leave the type out.
            || (self.key_type == 0 && matches!(self.key_len, 4 | 16));
        if !addr_key || self.flags & (NFT_SET_MAP | NFT_SET_OBJECT | NFT_SET_CONCAT) != 0 {
            return Err(refusal(
                &self.set,
                libc::EINVAL,
                format!("is a set of {}, not of IPv4 or IPv6 addresses", self.type_name()),
            ));
        }
        Ok(())
    }

    /// The check done before sending: the kernel would only say "invalid".
    pub fn check_entry(&self, e: &Entry) -> Result<()> {
        if self.is_ipv6() != e.is_ipv6() {
            return Err(refusal(
                &self.set,
                libc::EAFNOSUPPORT,
                format!("set is {}, address {e} is {}", self.type_name(), e.family_name()),
            ));
        }
        if e.prefix.is_some() && !self.is_interval() {
            return Err(refusal(
                &self.set,
                libc::EINVAL,
                format!("set has no `flags interval`: it cannot hold the network {e}"),
            ));
        }
        Ok(())
    }
}

fn refusal(set: &NftSetRef, code: i32, reason: String) -> Error {
    Error::Nftables { set: set.to_string(), code, reason, new: Vec::new() }
}

/// What `create` makes: an address set of one family.
#[derive(Debug, Clone, Copy)]
pub struct NftSetSpec<'a> {
    /// Where.
    pub set: &'a NftSetRef,
    /// IPv6 addresses (else IPv4).
    pub ipv6: bool,
    /// `flags interval`: networks too (an rbtree); else single addresses (a hash).
    pub interval: bool,
    /// None: elements never time out. Some(0): they can, with no default
    /// (an element added without a timeout stays). Some(t): default t seconds.
    pub timeout: Option<u32>,
    /// Most elements (None: no limit).
    pub size: Option<u32>,
}

/// One operation of a transaction: an entry's elements added or deleted.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub del: bool,
    pub elems: Vec<NftElem>,
}

/// Ops one message carries at most when they go together: its element list is
/// one attribute (at most 64 KiB); 256 IPv6 intervals with timeouts take ~23 KiB.
const GROUP: usize = 256;

/// Consecutive ops of one kind (add or delete), at most `max` a message.
fn groups(ops: &[Op], max: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        let mut j = i + 1;
        while j < ops.len() && j - i < max && ops[j].del == ops[i].del {
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// A netlink socket for nf_tables set requests.
pub struct NftSetSession {
    sock: NetfilterSocket,
    get_chunk: usize,
    op_chunk: usize,
    scratch: Datagram,
    set_id: u32,
}

impl NftSetSession {
    /// Open the socket. Fails (EPROTONOSUPPORT, EACCES...) when netlink is unavailable.
    pub fn open() -> Result<NftSetSession> {
        let sock = NetfilterSocket::open().map_err(|e| Error::io("nftables: netlink socket", e))?;
        sock.cap_acks();
        let _ = sock.set_sndbuf(WANT_SNDBUF);
        let rcv = sock.set_rcvbuf(WANT_RCVBUF).unwrap_or(200 * 1024);
        Ok(NftSetSession {
            sock,
            get_chunk: (rcv / GET_BUDGET).clamp(16, MAX_CHUNK),
            op_chunk: (rcv / OP_BUDGET).clamp(16, MAX_CHUNK),
            scratch: Datagram::new(),
            set_id: 0,
        })
    }

    /// Requests `build` writes numbered from the returned first seq; `stop_on_first`
    /// for a batch (BEGIN's number answers a refused batch or a failed commit).
    /// Returns seq -> kernel code (0 or negative) of every error ack, and the
    /// data replies handed to `on_data`.
    fn exchange(
        &mut self,
        count: usize,
        batch: bool,
        build: impl FnOnce(&mut Datagram, u32),
        on_data: &mut dyn FnMut(u32, &crate::nl::NlMsg<'_>),
    ) -> std::io::Result<(u32, HashMap<u32, i32>)> {
        let first = self.sock.next_seq();
        // Reserve the numbers the datagram uses (BEGIN, the requests, END).
        let extra = if batch { 2 } else { 0 };
        for _ in 1..count + extra {
            self.sock.next_seq();
        }
        let mut d = std::mem::take(&mut self.scratch);
        d.clear();
        build(&mut d, first);
        let last = first.wrapping_add((count + extra / 2).saturating_sub(1) as u32);
        let mut codes = HashMap::new();
        let stop_on = batch.then_some(first);
        let res = self.sock.exchange(d.as_bytes(), first, last, stop_on, &mut |m| {
            if m.msg_type == NLMSG_ERROR {
                if let (Some(code), Some(seq)) = (m.error_code(), m.acked_seq()) {
                    codes.insert(seq, code);
                }
            } else {
                on_data(m.seq, m);
            }
        });
        self.scratch = d;
        res.map(|()| (first, codes))
    }

    /// One transaction of `ops` on `set`: BEGIN, the messages (the last acked),
    /// END; `groups` says which ops each message carries. Returns per message
    /// the kernel's refusal (positive errno), or Err when the whole transaction
    /// was refused. Any refusal aborts it all.
    fn transaction(
        &mut self,
        set: &NftSetRef,
        ops: &[Op],
        groups: &[Range<usize>],
    ) -> Result<Vec<Option<i32>>> {
        let n = groups.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (first, codes) = self
            .exchange(
                n,
                true,
                |d, first| {
                    batch_begin(d, first);
                    let mut elems = Vec::new();
                    for (i, g) in groups.iter().enumerate() {
                        let seq = first.wrapping_add(1 + i as u32);
                        let last = i + 1 == n;
                        elems.clear();
                        elems.extend(ops[g.clone()].iter().flat_map(|o| o.elems.iter().copied()));
                        if ops[g.start].del {
                            msg_delsetelem(d, seq, set, &elems, last);
                        } else {
                            msg_newsetelem(d, seq, set, &elems, last);
                        }
                    }
                    batch_end(d, first.wrapping_add(1 + n as u32));
                },
                &mut |_, _| {},
            )
            .map_err(|e| io_error(&set.to_string(), e))?;
        if let Some(&code) = codes.get(&first) {
            if code != 0 {
                return Err(kernel_error(&set.to_string(), -code));
            }
        }
        Ok((0..n)
            .map(|i| match codes.get(&first.wrapping_add(1 + i as u32)) {
                Some(&c) if c != 0 => Some(-c),
                _ => None,
            })
            .collect())
    }

    /// Run `ops` as transactions of at most `op_chunk` operations. First with
    /// consecutive ops of a kind sent together, a few hundred elements per
    /// message (the kernel's cost is mostly per message); if anything is refused,
    /// the kernel aborted it all without saying which element: the chunk goes
    /// again with a message per op, so the refused ones are named, and then
    /// without them (twice at most, as the set may change in between). Returns
    /// per op the refusal that kept it out, if any.
    pub(crate) fn apply(&mut self, set: &NftSetRef, ops: &[Op]) -> Result<Vec<Option<i32>>> {
        let mut out = vec![None; ops.len()];
        let idx: Vec<usize> = (0..ops.len()).collect();
        for part in idx.chunks(self.op_chunk) {
            let chunk = &ops[part[0]..part[0] + part.len()];
            let grouped = groups(chunk, GROUP);
            if grouped.len() < chunk.len() {
                let refused = self.transaction(set, chunk, &grouped)?;
                if refused.iter().all(Option::is_none) {
                    continue;
                }
            }
            let mut left: Vec<usize> = part.to_vec();
            for _round in 0..3 {
                let batch: Vec<Op> = left.iter().map(|&i| ops[i].clone()).collect();
                let single = groups(&batch, 1);
                let refused = self.transaction(set, &batch, &single)?;
                if refused.iter().all(Option::is_none) {
                    left.clear();
                    break;
                }
                let mut keep = Vec::with_capacity(left.len());
                for (&i, r) in left.iter().zip(refused) {
                    match r {
                        Some(code) => out[i] = Some(code),
                        None => keep.push(i),
                    }
                }
                left = keep;
                if left.is_empty() {
                    break;
                }
            }
            for i in left {
                // Still refused after the retries: the set keeps changing under us.
                out[i].get_or_insert(libc::EAGAIN);
            }
        }
        Ok(out)
    }

    /// Look `keys` up, one GETSETELEM each in one datagram per chunk: the
    /// element found (in an interval set, the interval holding the key), or
    /// None when absent or expired. Err(EOPNOTSUPP) on kernels before 4.15.
    pub(crate) fn lookup(
        &mut self,
        set: &NftSetRef,
        keys: &[NftElem],
    ) -> Result<Vec<Option<ElemAttrs>>> {
        let mut out: Vec<Option<ElemAttrs>> = vec![None; keys.len()];
        let mut at = 0;
        for part in keys.chunks(self.get_chunk) {
            let n = part.len();
            let mut found: HashMap<u32, ElemAttrs> = HashMap::new();
            let (first, codes) = self
                .exchange(
                    n,
                    false,
                    |d, first| {
                        for (i, k) in part.iter().enumerate() {
                            msg_getsetelem(d, first.wrapping_add(i as u32), set, k, i + 1 == n);
                        }
                    },
                    &mut |seq, m| {
                        let mut v = Vec::with_capacity(1);
                        parse_elems(m, &mut v);
                        if let Some(e) = v.into_iter().next() {
                            found.insert(seq, e);
                        }
                    },
                )
                .map_err(|e| io_error(&set.to_string(), e))?;
            for i in 0..n {
                let seq = first.wrapping_add(i as u32);
                match codes.get(&seq).copied().unwrap_or(0) {
                    0 => out[at + i] = found.remove(&seq),
                    c if c == -libc::ENOENT => {}
                    c => return Err(kernel_error(&set.to_string(), -c)),
                }
            }
            at += n;
        }
        Ok(out)
    }

    /// The set's flags, key, default timeout, size (one GETSET).
    pub fn info(&mut self, set: &NftSetRef) -> Result<NftSetInfo> {
        let mut got: Option<SetAttrs> = None;
        let (first, codes) = self
            .exchange(1, false, |d, seq| msg_getset(d, seq, set), &mut |_, m| {
                got = Some(parse_set(m));
            })
            .map_err(|e| io_error(&set.to_string(), e))?;
        match codes.get(&first).copied().unwrap_or(0) {
            0 => {}
            c => return Err(kernel_error(&set.to_string(), -c)),
        }
        let s = got.ok_or_else(|| kernel_error(&set.to_string(), libc::ENOENT))?;
        Ok(NftSetInfo {
            set: set.clone(),
            flags: s.flags,
            key_type: s.key_type,
            key_len: s.key_len,
            timeout_ms: s.timeout_ms,
            size: s.size,
            handle: s.handle,
        })
    }

    /// Whether the set exists.
    pub fn exists(&mut self, set: &NftSetRef) -> Result<bool> {
        match self.info(set) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether table `family name` exists.
    pub fn table_exists(&mut self, family: u8, table: &str) -> Result<bool> {
        check_name("table", table)?;
        let what = format!("table {} {table}", family_name(family));
        let (first, codes) = self
            .exchange(
                1,
                false,
                |d, seq| {
                    let ty = nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE);
                    let mut m = d.message(ty, NLM_F_ACK, seq, Nfgenmsg::new(family, 0));
                    m.attr_strz(NFTA_TABLE_NAME, table);
                },
                &mut |_, _| {},
            )
            .map_err(|e| io_error(&what, e))?;
        match codes.get(&first).copied().unwrap_or(0) {
            0 => Ok(true),
            c if c == -libc::ENOENT => Ok(false),
            c => Err(kernel_error(&what, -c)),
        }
    }

    /// Create table `family name` unless it exists.
    pub fn create_table(&mut self, family: u8, table: &str) -> Result<()> {
        check_name("table", table)?;
        let what = format!("table {} {table}", family_name(family));
        let (first, codes) = self
            .exchange(
                1,
                true,
                |d, first| {
                    batch_begin(d, first);
                    msg_newtable(d, first.wrapping_add(1), family, table, true);
                    batch_end(d, first.wrapping_add(2));
                },
                &mut |_, _| {},
            )
            .map_err(|e| io_error(&what, e))?;
        for seq in [first, first.wrapping_add(1)] {
            if let Some(&c) = codes.get(&seq) {
                if c != 0 {
                    return Err(kernel_error(&what, -c));
                }
            }
        }
        Ok(())
    }

    /// Create the set (and its table, if missing); with `exist_ok` a set of that
    /// name is kept as it is, whatever its type.
    pub fn create(&mut self, spec: &NftSetSpec<'_>, exist_ok: bool) -> Result<()> {
        let set = spec.set;
        self.set_id = self.set_id.wrapping_add(1);
        let new = NewSet {
            set,
            ipv6: spec.ipv6,
            interval: spec.interval,
            timeout: spec.timeout.is_some(),
            default_timeout_ms: spec.timeout.filter(|&t| t > 0).map(|t| u64::from(t) * 1000),
            size: spec.size,
            id: self.set_id,
        };
        let (first, codes) = self
            .exchange(
                2,
                true,
                |d, first| {
                    batch_begin(d, first);
                    msg_newtable(d, first.wrapping_add(1), set.family, &set.table, false);
                    msg_newset(d, first.wrapping_add(2), &new, true);
                    batch_end(d, first.wrapping_add(3));
                },
                &mut |_, _| {},
            )
            .map_err(|e| io_error(&set.to_string(), e))?;
        let code =
            (0..3).find_map(|i| codes.get(&first.wrapping_add(i)).copied().filter(|&c| c != 0));
        match code {
            None => Ok(()),
            Some(c) if c == -libc::EEXIST && exist_ok => Ok(()),
            Some(c) if c == -libc::EEXIST => Err(Error::io(
                format!("nftables set {set}: a set of this name already exists"),
                std::io::Error::from_raw_os_error(libc::EEXIST),
            )),
            Some(c) => Err(kernel_error(&set.to_string(), -c)),
        }
    }

    fn one_op(&mut self, set: &NftSetRef, build: impl FnOnce(&mut Datagram, u32)) -> Result<()> {
        let (first, codes) = self
            .exchange(
                1,
                true,
                |d, first| {
                    batch_begin(d, first);
                    build(d, first.wrapping_add(1));
                    batch_end(d, first.wrapping_add(2));
                },
                &mut |_, _| {},
            )
            .map_err(|e| io_error(&set.to_string(), e))?;
        for seq in [first, first.wrapping_add(1)] {
            if let Some(&c) = codes.get(&seq) {
                if c != 0 {
                    return Err(kernel_error(&set.to_string(), -c));
                }
            }
        }
        Ok(())
    }

    /// Destroy the set (the kernel refuses while a rule references it: EBUSY).
    pub fn destroy(&mut self, set: &NftSetRef) -> Result<()> {
        self.one_op(set, |d, seq| msg_delset(d, seq, set, true))
    }

    /// Remove every element.
    pub fn flush(&mut self, set: &NftSetRef) -> Result<()> {
        self.one_op(set, |d, seq| msg_delsetelem(d, seq, set, &[], true))
    }

    /// Every element as the kernel lists it (interval sets: starts and ends).
    pub(crate) fn elements(&mut self, set: &NftSetRef) -> Result<Vec<ElemAttrs>> {
        let seq = self.sock.next_seq();
        let mut d = Datagram::new();
        msg_dump_elems(&mut d, seq, set);
        let mut out = Vec::new();
        self.sock
            .dump(d.as_bytes(), seq, &mut |m| parse_elems(m, &mut out))
            .map_err(|e| io_error(&set.to_string(), e))?;
        Ok(out)
    }

    /// The members as text: addresses, networks as `a/len`, other ranges as `a-b`;
    /// with the milliseconds each has left (None: it never expires).
    pub fn members_with_expiry(&mut self, set: &NftSetRef) -> Result<Vec<(String, Option<u64>)>> {
        let info = self.info(set)?;
        let elems = self.elements(set)?;
        Ok(if info.is_interval() {
            intervals(elems).iter().map(|iv| (iv.text(), iv.expiration_ms)).collect()
        } else {
            elems
                .into_iter()
                .filter_map(|e| Some((e.addr()?.to_string(), e.expiration_ms)))
                .collect()
        })
    }

    /// Whether `e` is in the set (in an interval set: inside an interval of it).
    pub fn test(&mut self, set: &NftSetRef, e: &Entry) -> Result<bool> {
        let info = self.info(set)?;
        info.check_entry(&Entry { prefix: None, ..*e })?;
        let key = NftElem::of_addr(e.addr, false, None);
        Ok(self.lookup(set, &[key])?.into_iter().next().flatten().is_some())
    }
}

/// An interval of an interval set, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub start: IpAddr,
    /// The first address after it; None: it runs to the last address.
    pub end: Option<IpAddr>,
    pub expiration_ms: Option<u64>,
}

fn as_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Interval {
    /// `a`, `a/len` for an aligned power-of-two block, else `a-b` (b the last address).
    pub fn text(&self) -> String {
        let width: u32 = if self.start.is_ipv4() { 32 } else { 128 };
        let s = as_u128(self.start);
        let last = match self.end {
            Some(e) => as_u128(e).wrapping_sub(1),
            None if width == 32 => u128::from(u32::MAX),
            None => u128::MAX,
        };
        // size - 1: no overflow even for the whole IPv6 space.
        let span = last.wrapping_sub(s);
        if span == 0 {
            return self.start.to_string();
        }
        if span & span.wrapping_add(1) == 0 && s & span == 0 {
            let bits = 128 - span.leading_zeros();
            return format!("{}/{}", self.start, width - bits);
        }
        let last = match self.start {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(last as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(last)),
        };
        format!("{}-{last}", self.start)
    }
}

/// Pair the starts and ends a dump of an interval set gives (in any order)
/// into intervals. An end with no start of its family before it (the `0.0.0.0`
/// end some `nft` versions add) is skipped; a start with no end runs to the
/// last address.
pub fn intervals(mut elems: Vec<ElemAttrs>) -> Vec<Interval> {
    // A set has one key length, but a reply is not trusted to: one family after
    // the other. At one key the end of an interval sorts before the start of the next.
    elems.sort_by(|a, b| (a.key.len(), &a.key).cmp(&(b.key.len(), &b.key)).then(b.end.cmp(&a.end)));
    let mut out = Vec::new();
    let mut open: Option<&ElemAttrs> = None;
    for e in &elems {
        if e.end {
            let Some(s) = open.filter(|s| s.key.len() == e.key.len()) else { continue };
            open = None;
            if let (Some(start), Some(end)) = (s.addr(), e.addr()) {
                out.push(Interval { start, end: Some(end), expiration_ms: s.expiration_ms });
            }
        } else {
            if let Some(s) = open.replace(e) {
                if let Some(start) = s.addr() {
                    out.push(Interval { start, end: None, expiration_ms: s.expiration_ms });
                }
            }
        }
    }
    if let Some(s) = open {
        if let Some(start) = s.addr() {
            out.push(Interval { start, end: None, expiration_ms: s.expiration_ms });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(key: &str, end: bool) -> ElemAttrs {
        let a: IpAddr = key.parse().unwrap();
        let key = match a {
            IpAddr::V4(v) => v.octets().to_vec(),
            IpAddr::V6(v) => v.octets().to_vec(),
        };
        ElemAttrs { key, end, timeout_ms: None, expiration_ms: None }
    }

    #[test]
    fn intervals_pair_up_in_any_order() {
        // As a dump of an rbtree gives them: highest key first.
        let got = intervals(vec![
            el("203.0.114.0", true),
            el("203.0.113.0", false),
            el("192.0.2.2", true),
            el("192.0.2.1", false),
            el("192.0.2.1", true), // adjacent: the end of [192.0.2.0, .1)
            el("192.0.2.0", false),
            el("0.0.0.0", true), // an end with no start: skipped
            el("255.255.255.255", false),
        ]);
        let texts: Vec<String> = got.iter().map(Interval::text).collect();
        assert_eq!(texts, ["192.0.2.0", "192.0.2.1", "203.0.113.0/24", "255.255.255.255"]);
        let odd = intervals(vec![el("192.0.2.1", false), el("192.0.2.8", true)]);
        assert_eq!(odd[0].text(), "192.0.2.1-192.0.2.7");
        let all = intervals(vec![el("0.0.0.0", false)]);
        assert_eq!(all[0].text(), "0.0.0.0/0");
        assert_eq!(intervals(vec![el("::", false)])[0].text(), "::/0");
        let v6 = intervals(vec![el("2001:db8::", false), el("2001:db9::", true)]);
        assert_eq!(v6[0].text(), "2001:db8::/32");
    }

    /// Found by fuzz/fuzz_targets/nftables.rs: keys of both lengths in one reply
    /// (no kernel sends that: a set has one key type) paired an IPv6 start with
    /// the IPv4 end after it in byte order, an interval with nonsense for its text.
    #[test]
    fn intervals_never_mix_families() {
        let got = intervals(vec![
            el("192.0.3.0", true),
            el("c000:300::", true),
            el("c000:200::", false),
            el("192.0.2.0", false),
        ]);
        let texts: Vec<String> = got.iter().map(Interval::text).collect();
        assert_eq!(texts, ["192.0.2.0/24", "c000:200::/24"]);
        let open = intervals(vec![el("192.0.2.0", false), el("2001:db8::", true)]);
        assert_eq!(
            open.iter().map(Interval::text).collect::<Vec<_>>(),
            ["192.0.2.0-255.255.255.255"]
        );
    }

    #[test]
    fn ops_group_by_kind_and_size() {
        let op = |del| Op { del, elems: Vec::new() };
        let ops = [op(true), op(true), op(false), op(false), op(false), op(true)];
        assert_eq!(groups(&ops, 256), [0..2, 2..5, 5..6]);
        assert_eq!(groups(&ops, 2), [0..2, 2..4, 4..5, 5..6]);
        assert_eq!(groups(&ops, 1).len(), 6);
        assert!(groups(&[], 4).is_empty());
    }

    #[test]
    fn info_checks_entries_and_types() {
        let info = NftSetInfo {
            set: NftSetRef::parse("s").unwrap(),
            flags: NFT_SET_TIMEOUT,
            key_type: NFT_TYPE_IPADDR,
            key_len: 4,
            timeout_ms: None,
            size: None,
            handle: None,
        };
        assert!(info.check_address_set().is_ok());
        assert!(info.check_entry(&Entry::parse("192.0.2.1").unwrap()).is_ok());
        let e = info.check_entry(&Entry::parse("2001:db8::1").unwrap()).unwrap_err();
        assert!(e.to_string().contains("set is ipv4_addr, address 2001:db8::1 is IPv6"), "{e}");
        let e = info.check_entry(&Entry::parse("192.0.2.0/24").unwrap()).unwrap_err();
        assert!(e.to_string().contains("flags interval"), "{e}");
        let map = NftSetInfo { flags: NFT_SET_MAP, ..info.clone() };
        assert!(map.check_address_set().is_err());
        let mark = NftSetInfo { key_type: 19, ..info };
        assert!(mark.check_address_set().unwrap_err().to_string().contains("type 19"));
    }
}
