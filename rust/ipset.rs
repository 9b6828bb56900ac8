//! ipset over netlink (nfnetlink subsystem 6): batched adds that tell which
//! addresses were new, and the set management the daemon needs.
//!
//! Message layout and codes follow `include/uapi/linux/netfilter/ipset/ip_set.h`
//! and `net/netfilter/ipset/ip_set_core.c`. No PyO3 here.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};
use crate::nl::consts::{
    nfnl_msg_type, AF_INET, NFNL_SUBSYS_IPSET, NLA_F_NET_BYTEORDER, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_EXCL,
};
use crate::nl::{Datagram, MsgWriter, NetfilterSocket, Nfgenmsg, NlMsg};

// ip_set.h: protocol, commands, attributes, errors (names verbatim).
pub const IPSET_PROTOCOL: u8 = 6;
pub const IPSET_MAXNAMELEN: usize = 32; // including the NUL

pub const IPSET_CMD_PROTOCOL: u8 = 1;
pub const IPSET_CMD_CREATE: u8 = 2;
pub const IPSET_CMD_DESTROY: u8 = 3;
pub const IPSET_CMD_FLUSH: u8 = 4;
pub const IPSET_CMD_RENAME: u8 = 5;
pub const IPSET_CMD_SWAP: u8 = 6;
pub const IPSET_CMD_LIST: u8 = 7;
pub const IPSET_CMD_SAVE: u8 = 8;
pub const IPSET_CMD_ADD: u8 = 9;
pub const IPSET_CMD_DEL: u8 = 10;
pub const IPSET_CMD_TEST: u8 = 11;
pub const IPSET_CMD_HEADER: u8 = 12;
pub const IPSET_CMD_TYPE: u8 = 13;

pub const IPSET_ATTR_PROTOCOL: u16 = 1;
pub const IPSET_ATTR_SETNAME: u16 = 2;
pub const IPSET_ATTR_TYPENAME: u16 = 3;
pub const IPSET_ATTR_SETNAME2: u16 = IPSET_ATTR_TYPENAME;
pub const IPSET_ATTR_REVISION: u16 = 4;
pub const IPSET_ATTR_FAMILY: u16 = 5;
pub const IPSET_ATTR_FLAGS: u16 = 6;
pub const IPSET_ATTR_DATA: u16 = 7;
pub const IPSET_ATTR_ADT: u16 = 8;
pub const IPSET_ATTR_LINENO: u16 = 9;

// Inside IPSET_ATTR_DATA.
pub const IPSET_ATTR_IP: u16 = 1;
pub const IPSET_ATTR_CIDR: u16 = 3;
pub const IPSET_ATTR_TIMEOUT: u16 = 6;
pub const IPSET_ATTR_CADT_FLAGS: u16 = 8;
pub const IPSET_ATTR_HASHSIZE: u16 = 18;
pub const IPSET_ATTR_MAXELEM: u16 = 19;
pub const IPSET_ATTR_ELEMENTS: u16 = 24;
pub const IPSET_ATTR_REFERENCES: u16 = 25;
pub const IPSET_ATTR_MEMSIZE: u16 = 26;

// Inside IPSET_ATTR_IP.
pub const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
pub const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

// IPSET_ATTR_FLAGS of a LIST request.
pub const IPSET_FLAG_LIST_SETNAME: u32 = 1 << 1;
pub const IPSET_FLAG_LIST_HEADER: u32 = 1 << 2;

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

pub const IPSET_ERR_PRIVATE: i32 = 4096;
pub const IPSET_ERR_PROTOCOL: i32 = 4097;
pub const IPSET_ERR_FIND_TYPE: i32 = 4098;
pub const IPSET_ERR_MAX_SETS: i32 = 4099;
pub const IPSET_ERR_BUSY: i32 = 4100;
pub const IPSET_ERR_EXIST_SETNAME2: i32 = 4101;
pub const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
pub const IPSET_ERR_EXIST: i32 = 4103;
pub const IPSET_ERR_INVALID_CIDR: i32 = 4104;
pub const IPSET_ERR_INVALID_NETMASK: i32 = 4105;
pub const IPSET_ERR_INVALID_FAMILY: i32 = 4106;
pub const IPSET_ERR_TIMEOUT: i32 = 4107;
pub const IPSET_ERR_REFERENCED: i32 = 4108;
pub const IPSET_ERR_IPADDR_IPV4: i32 = 4109;
pub const IPSET_ERR_IPADDR_IPV6: i32 = 4110;
pub const IPSET_ERR_COUNTER: i32 = 4111;
pub const IPSET_ERR_COMMENT: i32 = 4112;
pub const IPSET_ERR_INVALID_MARKMASK: i32 = 4113;
pub const IPSET_ERR_SKBINFO: i32 = 4114;
pub const IPSET_ERR_TYPE_SPECIFIC: i32 = 4352;
// ip_set_hash.h
pub const IPSET_ERR_HASH_FULL: i32 = IPSET_ERR_TYPE_SPECIFIC;
pub const IPSET_ERR_HASH_ELEM: i32 = 4353;
pub const IPSET_ERR_INVALID_PROTO: i32 = 4354;
pub const IPSET_ERR_MISSING_PROTO: i32 = 4355;
pub const IPSET_ERR_HASH_RANGE_UNSUPPORTED: i32 = 4356;
pub const IPSET_ERR_HASH_RANGE: i32 = 4357;

/// CREATE asks for revision 0 of the type: every kernel since ipset entered
/// mainline (2.6.39) has it, so the same request works on 3.x router kernels.
pub const CREATE_REVISION: u8 = 0;

/// Acks per datagram at most. Each ack is its own skb (~1 KiB of receive
/// buffer); the kernel drops acks silently once the buffer is full, so a
/// datagram never asks for more acks than the buffer can hold (see `chunk`).
const MAX_CHUNK: usize = 1024;
/// Receive-buffer bytes budgeted per ack.
const ACK_BUDGET: usize = 2048;
const WANT_RCVBUF: usize = 4 << 20;
const WANT_SNDBUF: usize = 1 << 20;

/// The kernel's reason for an IPSET_ERR_* or errno code (positive), in words.
pub fn reason(code: i32) -> String {
    let s = match code {
        libc::ENOENT => "no such set",
        libc::EPERM | libc::EACCES => "permission denied (needs CAP_NET_ADMIN)",
        IPSET_ERR_PRIVATE => "internal ipset error",
        IPSET_ERR_PROTOCOL => "kernel rejected the message (protocol error)",
        IPSET_ERR_FIND_TYPE => "set type not supported by the kernel",
        IPSET_ERR_MAX_SETS => "the kernel's maximum number of sets is reached",
        IPSET_ERR_BUSY => "set is busy (in use by iptables or another set)",
        IPSET_ERR_EXIST_SETNAME2 => "second set does not exist",
        IPSET_ERR_TYPE_MISMATCH => "sets have different types",
        IPSET_ERR_EXIST => "set or element already exists",
        IPSET_ERR_INVALID_CIDR => "invalid prefix length",
        IPSET_ERR_INVALID_NETMASK => "invalid netmask",
        IPSET_ERR_INVALID_FAMILY => "address family does not match the set",
        IPSET_ERR_TIMEOUT => "set has no timeout support",
        IPSET_ERR_REFERENCED => "set is referenced by a rule or another set",
        IPSET_ERR_IPADDR_IPV4 => "invalid IPv4 address",
        IPSET_ERR_IPADDR_IPV6 => "invalid IPv6 address",
        IPSET_ERR_COUNTER => "set has no counter support",
        IPSET_ERR_COMMENT => "set has no comment support",
        IPSET_ERR_INVALID_MARKMASK => "invalid markmask",
        IPSET_ERR_SKBINFO => "set has no skbinfo support",
        IPSET_ERR_HASH_FULL => "set is full (maxelem reached)",
        IPSET_ERR_HASH_ELEM => "null-valued element cannot be stored",
        IPSET_ERR_INVALID_PROTO => "invalid protocol",
        IPSET_ERR_MISSING_PROTO => "protocol missing",
        IPSET_ERR_HASH_RANGE_UNSUPPORTED => "range not supported by this set type",
        IPSET_ERR_HASH_RANGE => "invalid range",
        _ => return io::Error::from_raw_os_error(code).to_string(),
    };
    s.to_string()
}

/// A kernel refusal (`code` positive) as a core error: ipset codes and "no
/// such set" become `Error::Ipset`; other errnos (EPERM...) stay `Error::Io`
/// so Python sees PermissionError and friends.
pub fn kernel_error(set: &str, code: i32) -> Error {
    if code >= IPSET_ERR_PRIVATE || code == libc::ENOENT {
        Error::Ipset { set: set.to_string(), code, reason: reason(code) }
    } else {
        Error::io(format!("ipset '{set}'"), io::Error::from_raw_os_error(code))
    }
}

fn io_error(set: &str, e: io::Error) -> Error {
    match e.raw_os_error() {
        // `dump` turns an error ack into a raw os error: give it its ipset meaning.
        Some(code) if code >= IPSET_ERR_PRIVATE || code == libc::ENOENT => kernel_error(set, code),
        _ => Error::io(format!("ipset '{set}': netlink"), e),
    }
}

/// Set names are at most 31 bytes (IPSET_MAXNAMELEN with the NUL).
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= IPSET_MAXNAMELEN || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid ipset name {name:?}: 1 to {} bytes, no NUL",
            IPSET_MAXNAMELEN - 1
        )));
    }
    Ok(())
}

/// One element: an address, or a network (`prefix` shorter than the address width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub addr: IpAddr,
    /// `None` for a single address (or a host-width prefix).
    pub prefix: Option<u8>,
}

impl Entry {
    /// Parse "192.0.2.1", "2001:db8::1", "203.0.113.0/24". Host bits of a
    /// network are cleared (as the kernel does); "/32" ("/128") is an address.
    pub fn parse(text: &str) -> Result<Entry> {
        let bad = || Error::InvalidArgument(format!("not an IP address or network: {text:?}"));
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            None => (text, None),
            Some((a, p)) => {
                let p: u8 = p.parse().map_err(|_| bad())?;
                (a, Some(p))
            }
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        match prefix {
            Some(p) if p > width => Err(bad()),
            Some(p) if p < width => Ok(Entry { addr: mask(addr, p), prefix: Some(p) }),
            _ => Ok(Entry { addr, prefix: None }),
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    pub fn family_name(&self) -> &'static str {
        if self.is_ipv6() {
            "IPv6"
        } else {
            "IPv4"
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix {
            Some(p) => write!(f, "{}/{}", self.addr, p),
            None => write!(f, "{}", self.addr),
        }
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// What the kernel tells about a set (LIST with IPSET_FLAG_LIST_HEADER).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetHeader {
    pub name: String,
    pub typename: String,
    pub revision: u8,
    /// NFPROTO_IPV4 / NFPROTO_IPV6.
    pub family: u8,
    /// Default timeout; `None` when the set was created without timeout support.
    pub timeout: Option<u32>,
    pub maxelem: Option<u32>,
    pub hashsize: Option<u32>,
    pub memsize: Option<u32>,
    pub references: Option<u32>,
    /// Number of entries (IPSET_ATTR_ELEMENTS, Linux 4.14+); `None` on older kernels.
    pub elements: Option<u32>,
}

impl SetHeader {
    pub fn family_name(&self) -> &'static str {
        match self.family {
            NFPROTO_IPV6 => "inet6",
            NFPROTO_IPV4 => "inet",
            _ => "unknown",
        }
    }

    pub fn is_net(&self) -> bool {
        self.typename.starts_with("hash:net")
    }

    /// The user-facing check done before sending: the kernel would only say
    /// "protocol error" for an address of the wrong family.
    pub fn check_entry(&self, e: &Entry) -> Result<()> {
        let set_v6 = self.family == NFPROTO_IPV6;
        if set_v6 != e.is_ipv6() {
            return Err(Error::Ipset {
                set: self.name.clone(),
                code: IPSET_ERR_INVALID_FAMILY,
                reason: format!(
                    "set is {}, address {e} is {}",
                    self.family_name(),
                    e.family_name()
                ),
            });
        }
        if e.prefix.is_some() && !self.is_net() {
            return Err(Error::Ipset {
                set: self.name.clone(),
                code: IPSET_ERR_HASH_RANGE_UNSUPPORTED,
                reason: format!(
                    "set is {}: the network {e} would be expanded; use a hash:net set",
                    self.typename
                ),
            });
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ messages

fn nfgen() -> Nfgenmsg {
    // The kernel's ipset code ignores nfgen_family; libipset sends AF_INET.
    Nfgenmsg::new(AF_INET, 0)
}

fn begin<'a>(d: &'a mut Datagram, cmd: u8, flags: u16, seq: u32, set: &str) -> MsgWriter<'a> {
    let mut m = d.message(nfnl_msg_type(NFNL_SUBSYS_IPSET, cmd), flags, seq, nfgen());
    m.attr_u8(IPSET_ATTR_PROTOCOL, IPSET_PROTOCOL);
    m.attr_strz(IPSET_ATTR_SETNAME, set);
    m
}

fn put_entry(m: &mut MsgWriter<'_>, e: &Entry) {
    m.nest_start(IPSET_ATTR_IP);
    match e.addr {
        IpAddr::V4(a) => m.attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets()),
        IpAddr::V6(a) => m.attr(IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets()),
    };
    m.nest_end();
    if let Some(p) = e.prefix {
        m.attr_u8(IPSET_ATTR_CIDR, p);
    }
}

/// ADD (or TEST with `cmd`) of one element. `excl` makes the kernel answer
/// -IPSET_ERR_EXIST for a present element; without it a present element's
/// timeout is refreshed.
pub fn msg_add(d: &mut Datagram, seq: u32, set: &str, e: &Entry, timeout: Option<u32>, excl: bool) {
    let flags = NLM_F_ACK | if excl { NLM_F_EXCL } else { 0 };
    let mut m = begin(d, IPSET_CMD_ADD, flags, seq, set);
    m.nest_start(IPSET_ATTR_DATA);
    put_entry(&mut m, e);
    if let Some(t) = timeout {
        m.attr_be32(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, t);
    }
    m.nest_end();
}

/// The first datagram `IpsetBatch::commit` sends for `entries`: one ADD each
/// (`excl`: with NLM_F_EXCL), sequence numbers counting up from `first_seq`.
/// Pure (no socket), for tools, tests and the cross-architecture smoke test.
pub fn add_datagram(
    set: &str,
    entries: &[Entry],
    timeout: Option<u32>,
    excl: bool,
    first_seq: u32,
) -> Result<Vec<u8>> {
    check_name(set)?;
    let mut d = Datagram::with_capacity(entries.len() * 64);
    for (i, e) in entries.iter().enumerate() {
        msg_add(&mut d, first_seq.wrapping_add(i as u32), set, e, timeout, excl);
    }
    Ok(d.as_bytes().to_vec())
}

/// TEST: acked 0 when present, -IPSET_ERR_EXIST when not.
pub fn msg_test(d: &mut Datagram, seq: u32, set: &str, e: &Entry) {
    let mut m = begin(d, IPSET_CMD_TEST, NLM_F_ACK, seq, set);
    m.nest_start(IPSET_ATTR_DATA);
    put_entry(&mut m, e);
    m.nest_end();
}

/// CREATE name type family [timeout] [maxelem]; always EXCL (exist_ok is decided on the ack).
pub fn msg_create(d: &mut Datagram, seq: u32, spec: &CreateSpec<'_>) {
    let mut m = begin(d, IPSET_CMD_CREATE, NLM_F_ACK | NLM_F_EXCL, seq, spec.name);
    m.attr_strz(IPSET_ATTR_TYPENAME, spec.settype);
    m.attr_u8(IPSET_ATTR_REVISION, CREATE_REVISION);
    m.attr_u8(IPSET_ATTR_FAMILY, spec.family);
    m.nest_start(IPSET_ATTR_DATA);
    if let Some(t) = spec.timeout {
        m.attr_be32(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, t);
    }
    if let Some(n) = spec.maxelem {
        m.attr_be32(IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER, n);
    }
    m.nest_end();
}

/// DESTROY / FLUSH / HEADER: just the set name. DESTROY carries EXCL: without
/// it (IPSET_FLAG_EXIST) the kernel acks 0 for a set that does not exist.
pub fn msg_named(d: &mut Datagram, cmd: u8, seq: u32, set: &str) {
    let excl = if cmd == IPSET_CMD_DESTROY { NLM_F_EXCL } else { 0 };
    begin(d, cmd, NLM_F_ACK | excl, seq, set).finish();
}

pub fn msg_swap(d: &mut Datagram, seq: u32, a: &str, b: &str) {
    let mut m = begin(d, IPSET_CMD_SWAP, NLM_F_ACK, seq, a);
    m.attr_strz(IPSET_ATTR_SETNAME2, b);
}

/// LIST dump of one set; `header_only` asks for the header without members.
pub fn msg_list(d: &mut Datagram, seq: u32, set: &str, header_only: bool) {
    let mut m = begin(d, IPSET_CMD_LIST, NLM_F_DUMP, seq, set);
    if header_only {
        m.attr_be32(IPSET_ATTR_FLAGS | NLA_F_NET_BYTEORDER, IPSET_FLAG_LIST_HEADER);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CreateSpec<'a> {
    pub name: &'a str,
    pub settype: &'a str,
    pub family: u8,
    pub timeout: Option<u32>,
    pub maxelem: Option<u32>,
}

// ------------------------------------------------------------------ parsing

/// Fill `h` and `members` from one LIST reply message (header attributes come
/// in the first message of a set, members in IPSET_ATTR_ADT of any).
pub fn parse_list_msg(m: &NlMsg<'_>, h: &mut SetHeader, members: &mut Vec<Entry>) {
    for a in m.nf_attrs() {
        match a.ty {
            IPSET_ATTR_SETNAME => h.name = a.str(),
            IPSET_ATTR_TYPENAME => h.typename = a.str(),
            IPSET_ATTR_REVISION => h.revision = a.u8().unwrap_or(0),
            IPSET_ATTR_FAMILY => h.family = a.u8().unwrap_or(0),
            IPSET_ATTR_DATA => {
                for d in a.nested_attrs() {
                    match d.ty {
                        IPSET_ATTR_TIMEOUT => h.timeout = d.be32(),
                        IPSET_ATTR_MAXELEM => h.maxelem = d.be32(),
                        IPSET_ATTR_HASHSIZE => h.hashsize = d.be32(),
                        IPSET_ATTR_MEMSIZE => h.memsize = d.be32(),
                        IPSET_ATTR_REFERENCES => h.references = d.be32(),
                        IPSET_ATTR_ELEMENTS => h.elements = d.be32(),
                        _ => {}
                    }
                }
            }
            IPSET_ATTR_ADT => {
                for d in a.nested_attrs().filter(|d| d.ty == IPSET_ATTR_DATA) {
                    if let Some(e) = parse_member(d.nested_attrs()) {
                        members.push(e);
                    }
                }
            }
            _ => {}
        }
    }
}

fn parse_member(attrs: crate::nl::parse::AttrIter<'_>) -> Option<Entry> {
    let mut addr = None;
    let mut cidr = None;
    for a in attrs {
        match a.ty {
            IPSET_ATTR_IP => {
                let ip = a.nested_attrs().next()?;
                addr = match ip.ty {
                    IPSET_ATTR_IPADDR_IPV4 => {
                        let b: [u8; 4] = ip.data.get(..4)?.try_into().ok()?;
                        Some(IpAddr::V4(Ipv4Addr::from(b)))
                    }
                    IPSET_ATTR_IPADDR_IPV6 => {
                        let b: [u8; 16] = ip.data.get(..16)?.try_into().ok()?;
                        Some(IpAddr::V6(Ipv6Addr::from(b)))
                    }
                    _ => None,
                };
            }
            IPSET_ATTR_CIDR => cidr = a.u8(),
            _ => {}
        }
    }
    let addr = addr?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = cidr.filter(|&c| c < width);
    Some(Entry { addr, prefix })
}

/// Sort the acks of one ADD round: which entries were new, which present,
/// and the first other error. `acks` maps seq -> errno (0 or negative).
pub fn classify_acks(
    sent: &[(u32, usize)],
    acks: &HashMap<u32, i32>,
) -> (Vec<usize>, Vec<usize>, Option<i32>) {
    let (mut new, mut present, mut err) = (Vec::new(), Vec::new(), None);
    for &(seq, idx) in sent {
        match acks.get(&seq).copied() {
            Some(0) => new.push(idx),
            Some(c) if c == -IPSET_ERR_EXIST => present.push(idx),
            Some(c) => {
                err.get_or_insert(-c);
            }
            None => {
                err.get_or_insert(libc::ETIMEDOUT);
            }
        }
    }
    (new, present, err)
}

// ------------------------------------------------------------------ session

/// A netlink socket for ipset requests.
pub struct Ipset {
    sock: NetfilterSocket,
    /// Acks the receive buffer can hold; datagrams are cut to this many messages.
    chunk: usize,
}

impl Ipset {
    /// Open the socket. Fails (EPROTONOSUPPORT, EACCES...) when netlink is unavailable.
    pub fn open() -> Result<Ipset> {
        let sock = NetfilterSocket::open().map_err(|e| Error::io("ipset: netlink socket", e))?;
        sock.cap_acks();
        let _ = sock.set_sndbuf(WANT_SNDBUF);
        let rcv = sock.set_rcvbuf(WANT_RCVBUF).unwrap_or(200 * 1024);
        let chunk = (rcv / ACK_BUDGET).clamp(16, MAX_CHUNK);
        Ok(Ipset { sock, chunk })
    }

    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// One acked request; Ok(0) or the (negative) kernel code.
    fn ack(&mut self, build: impl FnOnce(&mut Datagram, u32), set: &str) -> Result<i32> {
        let seq = self.sock.next_seq();
        let mut d = Datagram::new();
        build(&mut d, seq);
        let acks = self.sock.request_acks(d.as_bytes(), &[seq]).map_err(|e| io_error(set, e))?;
        Ok(acks.get(&seq).copied().unwrap_or(-libc::ETIMEDOUT))
    }

    fn ack_ok(&mut self, build: impl FnOnce(&mut Datagram, u32), set: &str) -> Result<()> {
        match self.ack(build, set)? {
            0 => Ok(()),
            c => Err(kernel_error(set, -c)),
        }
    }

    fn list_raw(&mut self, set: &str, header_only: bool) -> Result<(SetHeader, Vec<Entry>)> {
        check_name(set)?;
        let seq = self.sock.next_seq();
        let mut d = Datagram::new();
        msg_list(&mut d, seq, set, header_only);
        let mut h = SetHeader::default();
        let mut members = Vec::new();
        self.sock
            .dump(d.as_bytes(), seq, &mut |m| parse_list_msg(m, &mut h, &mut members))
            .map_err(|e| io_error(set, e))?;
        if h.name.is_empty() {
            // A header-only dump that produced nothing: the set vanished in between.
            return Err(kernel_error(set, libc::ENOENT));
        }
        Ok((h, members))
    }

    /// The set's type, family, timeout... (one LIST of the header only).
    pub fn header(&mut self, set: &str) -> Result<SetHeader> {
        self.list_raw(set, true).map(|(h, _)| h)
    }

    /// Header and members.
    pub fn list(&mut self, set: &str) -> Result<(SetHeader, Vec<Entry>)> {
        self.list_raw(set, false)
    }

    pub fn exists(&mut self, set: &str) -> Result<bool> {
        check_name(set)?;
        match self.ack(|d, seq| msg_named(d, IPSET_CMD_HEADER, seq, set), set)? {
            0 => Ok(true),
            c if c == -libc::ENOENT => Ok(false),
            c => Err(kernel_error(set, -c)),
        }
    }

    pub fn create(&mut self, spec: &CreateSpec<'_>, exist_ok: bool) -> Result<()> {
        check_name(spec.name)?;
        if !matches!(spec.settype, "hash:ip" | "hash:net") {
            return Err(Error::InvalidArgument(format!(
                "set type {:?} not supported: hash:ip or hash:net",
                spec.settype
            )));
        }
        match self.ack(|d, seq| msg_create(d, seq, spec), spec.name)? {
            0 => Ok(()),
            // EEXIST (what the kernel says here) or IPSET_ERR_EXIST: a set of that
            // name exists, whatever its type; exist_ok takes it as it is.
            c if (c == -libc::EEXIST || c == -IPSET_ERR_EXIST) && exist_ok => Ok(()),
            c if c == -libc::EEXIST || c == -IPSET_ERR_EXIST => Err(Error::io(
                format!("ipset '{}': a set of this name already exists", spec.name),
                io::Error::from_raw_os_error(libc::EEXIST),
            )),
            c => Err(kernel_error(spec.name, -c)),
        }
    }

    pub fn destroy(&mut self, set: &str) -> Result<()> {
        check_name(set)?;
        self.ack_ok(|d, seq| msg_named(d, IPSET_CMD_DESTROY, seq, set), set)
    }

    pub fn flush(&mut self, set: &str) -> Result<()> {
        check_name(set)?;
        self.ack_ok(|d, seq| msg_named(d, IPSET_CMD_FLUSH, seq, set), set)
    }

    pub fn swap(&mut self, a: &str, b: &str) -> Result<()> {
        check_name(a)?;
        check_name(b)?;
        match self.ack(|d, seq| msg_swap(d, seq, a, b), a)? {
            0 => Ok(()),
            c if c == -IPSET_ERR_EXIST_SETNAME2 => Err(kernel_error(b, libc::ENOENT)),
            c => Err(kernel_error(a, -c)),
        }
    }

    pub fn test(&mut self, set: &str, e: &Entry) -> Result<bool> {
        check_name(set)?;
        // Family first: the kernel would only say "protocol error".
        self.header(set)?.check_entry(&Entry { prefix: None, ..*e })?;
        match self.ack(|d, seq| msg_test(d, seq, set, e), set)? {
            0 => Ok(true),
            c if c == -IPSET_ERR_EXIST => Ok(false),
            c => Err(kernel_error(set, -c)),
        }
    }

    /// Send ADDs of `entries` (indices into `all`), chunked; return seq -> ack.
    fn add_round(
        &mut self,
        set: &str,
        all: &[Entry],
        idx: &[usize],
        timeout: Option<u32>,
        excl: bool,
    ) -> Result<(Vec<usize>, Vec<usize>, Option<i32>)> {
        let (mut new, mut present, mut err) = (Vec::new(), Vec::new(), None);
        let mut d = Datagram::with_capacity(self.chunk.min(idx.len()) * 96);
        for part in idx.chunks(self.chunk) {
            d.clear();
            let mut sent = Vec::with_capacity(part.len());
            let mut seqs = Vec::with_capacity(part.len());
            for &i in part {
                let seq = self.sock.next_seq();
                msg_add(&mut d, seq, set, &all[i], timeout, excl);
                sent.push((seq, i));
                seqs.push(seq);
            }
            let acks = self.sock.request_acks(d.as_bytes(), &seqs).map_err(|e| io_error(set, e))?;
            let (n, p, e) = classify_acks(&sent, &acks);
            new.extend(n);
            present.extend(p);
            if err.is_none() {
                err = e;
            }
        }
        Ok((new, present, err))
    }
}

/// Queued adds for one set; `commit` reports which were new.
pub struct IpsetBatch {
    set: String,
    timeout: Option<u32>,
    queue: Vec<Entry>,
    queued: HashSet<Entry>,
    session: Ipset,
    header: Option<SetHeader>,
    /// After a commit that failed part-way: the entries that were new all the same.
    partial_new: Vec<String>,
}

impl IpsetBatch {
    pub fn new(set: &str, timeout: Option<u32>) -> Result<IpsetBatch> {
        check_name(set)?;
        Ok(IpsetBatch {
            set: set.to_string(),
            timeout,
            queue: Vec::new(),
            queued: HashSet::new(),
            session: Ipset::open()?,
            header: None,
            partial_new: Vec::new(),
        })
    }

    pub fn set_name(&self) -> &str {
        &self.set
    }

    pub fn timeout(&self) -> Option<u32> {
        self.timeout
    }

    /// Queue an address or network; duplicates are kept once, in first-seen order.
    pub fn add(&mut self, text: &str) -> Result<()> {
        let e = Entry::parse(text)?;
        if self.queued.insert(e) {
            self.queue.push(e);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued.clear();
    }

    /// The set's header, asked once and cached.
    pub fn header(&mut self) -> Result<&SetHeader> {
        if self.header.is_none() {
            self.header = Some(self.session.header(&self.set)?);
        }
        self.header.as_ref().ok_or_else(|| kernel_error(&self.set, libc::ENOENT))
    }

    /// Add everything queued. Returns the entries that were new (absent or
    /// expired), in queue order. One round trip when all are new; present
    /// entries of a timeout set get a second one that refreshes their timeout.
    /// The queue is emptied once sent; entries the set cannot take are dropped
    /// from it and reported as an error, the rest stay queued.
    pub fn commit(&mut self) -> Result<Vec<String>> {
        self.partial_new.clear();
        if self.queue.is_empty() {
            return Ok(Vec::new());
        }
        let header = self.header()?.clone();
        // Entries the set cannot take (family, network into hash:ip) leave the
        // queue and are reported; the others stay queued for the next commit, so
        // one bad address neither poisons the batch nor loses the good ones.
        let mut refused: Option<(Error, usize)> = None;
        self.queue.retain(|e| match header.check_entry(e) {
            Ok(()) => true,
            Err(err) => {
                refused.get_or_insert((err, 0)).1 += 1;
                false
            }
        });
        if let Some((err, n)) = refused {
            self.queued = self.queue.iter().copied().collect();
            return Err(match err {
                Error::Ipset { set, code, reason } => Error::Ipset {
                    set,
                    code,
                    reason: format!(
                        "{reason} ({n} refused entr{}; {} still queued)",
                        if n == 1 { "y" } else { "ies" },
                        self.queue.len()
                    ),
                },
                other => other,
            });
        }
        // timeout 0 on a set without timeouts means "forever", which it is anyway.
        let timeout = match self.timeout {
            Some(0) if header.timeout.is_none() => None,
            Some(_) if header.timeout.is_none() => {
                return Err(kernel_error(&self.set, IPSET_ERR_TIMEOUT));
            }
            t => t,
        };
        let queue = std::mem::take(&mut self.queue);
        self.queued.clear();
        let all: Vec<usize> = (0..queue.len()).collect();
        let res = self.session.add_round(&self.set, &queue, &all, timeout, true);
        let (new, present, mut err) = match res {
            Ok(r) => r,
            Err(e) => {
                self.forget_header_on(&e);
                return Err(e);
            }
        };
        if header.timeout.is_some() && !present.is_empty() {
            // Without EXCL the kernel sets IPSET_FLAG_EXIST and resets the timeout.
            // Without EXCL every success acks 0, so this round tells nothing about
            // newness (an entry expiring between the rounds is re-added, unreported).
            let (_, _, e2) = self.session.add_round(&self.set, &queue, &present, timeout, false)?;
            if err.is_none() {
                err = e2;
            }
        }
        let new: Vec<String> = new.into_iter().map(|i| queue[i].to_string()).collect();
        if let Some(code) = err {
            // The kernel took the other entries: keep which of them were new, so a
            // caller can still act on them (see `take_partial_new`).
            self.partial_new = new;
            let e = kernel_error(&self.set, code);
            self.forget_header_on(&e);
            return Err(e);
        }
        Ok(new)
    }

    /// The entries that were new in the last commit although it failed for
    /// others (set full, ...); empty after a successful commit or once taken.
    pub fn take_partial_new(&mut self) -> Vec<String> {
        std::mem::take(&mut self.partial_new)
    }

    fn forget_header_on(&mut self, e: &Error) {
        // The set may have been destroyed and re-created: ask again next time.
        if e.errno() == Some(libc::ENOENT) {
            self.header = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::messages;

    /// nlmsghdr in host order, as the kernel reads it.
    fn nlh(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    /// nlattr header (len, type) in host order.
    fn nla(len: u16, ty: u16) -> Vec<u8> {
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// nfgenmsg (AF_INET, v0, res_id 0) + PROTOCOL 6 + SETNAME "hr_vpn1".
    fn prologue() -> Vec<u8> {
        cat(&[&[2, 0, 0, 0], &nla(5, 1), &[6, 0, 0, 0], &nla(12, 2), b"hr_vpn1\0"])
    }

    fn built(f: impl FnOnce(&mut Datagram)) -> Vec<u8> {
        let mut d = Datagram::new();
        f(&mut d);
        d.as_bytes().to_vec()
    }

    #[test]
    fn add_v4_excl_no_timeout() {
        let e = Entry::parse("192.0.2.1").unwrap();
        let got = built(|d| msg_add(d, 1, "hr_vpn1", &e, None, true));
        let want = cat(&[
            &nlh(56, 0x0609, 0x0205, 1),
            &prologue(),
            &nla(16, 7 | 0x8000),
            &nla(12, 1 | 0x8000),
            &nla(8, 1 | 0x4000),
            &[192, 0, 2, 1],
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn add_v4_timeout_3600_is_big_endian() {
        let e = Entry::parse("198.51.100.7").unwrap();
        let got = built(|d| msg_add(d, 7, "hr_vpn1", &e, Some(3600), false));
        let want = cat(&[
            &nlh(64, 0x0609, 0x0005, 7),
            &prologue(),
            &nla(24, 7 | 0x8000),
            &nla(12, 1 | 0x8000),
            &nla(8, 1 | 0x4000),
            &[198, 51, 100, 7],
            &nla(8, 6 | 0x4000),
            &[0, 0, 0x0e, 0x10],
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn add_v6_with_and_without_timeout() {
        let e = Entry::parse("2001:db8::1").unwrap();
        let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let got = built(|d| msg_add(d, 2, "hr_vpn1", &e, None, true));
        let want = cat(&[
            &nlh(68, 0x0609, 0x0205, 2),
            &prologue(),
            &nla(28, 7 | 0x8000),
            &nla(24, 1 | 0x8000),
            &nla(20, 2 | 0x4000),
            &v6,
        ]);
        assert_eq!(got, want);
        let got = built(|d| msg_add(d, 3, "hr_vpn1", &e, Some(0x01020304), true));
        let want = cat(&[
            &nlh(76, 0x0609, 0x0205, 3),
            &prologue(),
            &nla(36, 7 | 0x8000),
            &nla(24, 1 | 0x8000),
            &nla(20, 2 | 0x4000),
            &v6,
            &nla(8, 6 | 0x4000),
            &[1, 2, 3, 4],
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn add_network_carries_cidr() {
        let e = Entry::parse("203.0.113.77/24").unwrap();
        assert_eq!(e.to_string(), "203.0.113.0/24");
        let got = built(|d| msg_add(d, 4, "hr_vpn1", &e, None, true));
        let want = cat(&[
            &nlh(64, 0x0609, 0x0205, 4),
            &prologue(),
            &nla(24, 7 | 0x8000),
            &nla(12, 1 | 0x8000),
            &nla(8, 1 | 0x4000),
            &[203, 0, 113, 0],
            &nla(5, 3),
            &[24, 0, 0, 0],
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn create_hash_net_with_timeout_and_maxelem() {
        let spec = CreateSpec {
            name: "hr_vpn1",
            settype: "hash:net",
            family: NFPROTO_IPV4,
            timeout: Some(600),
            maxelem: Some(65536),
        };
        let got = built(|d| msg_create(d, 9, &spec));
        let want = cat(&[
            &nlh(92, 0x0602, 0x0205, 9),
            &prologue(),
            &nla(13, 3),
            b"hash:net\0\0\0\0",
            &nla(5, 4),
            &[0, 0, 0, 0],
            &nla(5, 5),
            &[2, 0, 0, 0],
            &nla(20, 7 | 0x8000),
            &nla(8, 6 | 0x4000),
            &[0, 0, 0x02, 0x58],
            &nla(8, 19 | 0x4000),
            &[0, 1, 0, 0],
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn header_list_and_swap_requests() {
        let got = built(|d| msg_named(d, IPSET_CMD_HEADER, 5, "hr_vpn1"));
        assert_eq!(got, cat(&[&nlh(40, 0x060c, 0x0005, 5), &prologue()]));
        let got = built(|d| msg_named(d, IPSET_CMD_DESTROY, 5, "hr_vpn1"));
        assert_eq!(got, cat(&[&nlh(40, 0x0603, 0x0205, 5), &prologue()]));
        let got = built(|d| msg_list(d, 6, "hr_vpn1", true));
        let want =
            cat(&[&nlh(48, 0x0607, 0x0301, 6), &prologue(), &nla(8, 6 | 0x4000), &[0, 0, 0, 4]]);
        assert_eq!(got, want);
        let got = built(|d| msg_list(d, 6, "hr_vpn1", false));
        assert_eq!(got, cat(&[&nlh(40, 0x0607, 0x0301, 6), &prologue()]));
        let got = built(|d| msg_swap(d, 8, "hr_vpn1", "b"));
        assert_eq!(got, cat(&[&nlh(48, 0x0606, 0x0005, 8), &prologue(), &nla(6, 3), b"b\0\0\0"]));
    }

    /// An ack as the kernel sends it with NETLINK_CAP_ACK: errno + the request header.
    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut v = nlh(36, 2, 0x100, seq);
        v.extend_from_slice(&errno.to_ne_bytes());
        v.extend_from_slice(&nlh(56, 0x0609, 0x0205, seq));
        v
    }

    #[test]
    fn acks_are_matched_by_sequence() {
        let buf = cat(&[&ack(11, 0), &ack(13, -IPSET_ERR_EXIST), &ack(12, -IPSET_ERR_HASH_FULL)]);
        let acks: HashMap<u32, i32> =
            messages(&buf).map(|m| (m.acked_seq().unwrap(), m.error_code().unwrap())).collect();
        assert_eq!(acks.len(), 3);
        let sent = [(11, 0), (12, 1), (13, 2), (14, 3)];
        let (new, present, err) = classify_acks(&sent, &acks);
        assert_eq!(new, vec![0]);
        assert_eq!(present, vec![2]);
        assert_eq!(err, Some(IPSET_ERR_HASH_FULL));
        let (_, _, err) = classify_acks(&sent[3..], &acks);
        assert_eq!(err, Some(libc::ETIMEDOUT));
    }

    #[test]
    fn list_reply_parses_header_and_members() {
        let mut d = Datagram::new();
        {
            let mut m = d.message(0x0607, 2, 1, Nfgenmsg::new(2, 0));
            m.attr_u8(IPSET_ATTR_PROTOCOL, 6);
            m.attr_strz(IPSET_ATTR_SETNAME, "s");
            m.attr_strz(IPSET_ATTR_TYPENAME, "hash:net");
            m.attr_u8(IPSET_ATTR_REVISION, 7);
            m.attr_u8(IPSET_ATTR_FAMILY, NFPROTO_IPV6);
            m.nest_start(IPSET_ATTR_DATA);
            m.attr_be32(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, 600);
            m.attr_be32(IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER, 2);
            m.attr_be32(IPSET_ATTR_ELEMENTS | NLA_F_NET_BYTEORDER, 2);
            m.nest_end();
            m.nest_start(IPSET_ATTR_ADT);
            for (text, cidr) in [("2001:db8::", 64u8), ("2001:db8::5", 128)] {
                let e = Entry::parse(text).unwrap();
                m.nest_start(IPSET_ATTR_DATA);
                put_entry(&mut m, &e);
                m.attr_u8(IPSET_ATTR_CIDR, cidr);
                m.nest_end();
            }
            m.nest_end();
        }
        let mut h = SetHeader::default();
        let mut members = Vec::new();
        for m in messages(d.as_bytes()) {
            parse_list_msg(&m, &mut h, &mut members);
        }
        assert_eq!(
            (h.name.as_str(), h.typename.as_str(), h.family_name()),
            ("s", "hash:net", "inet6")
        );
        assert_eq!((h.timeout, h.maxelem, h.elements), (Some(600), Some(2), Some(2)));
        let texts: Vec<String> = members.iter().map(|e| e.to_string()).collect();
        assert_eq!(texts, ["2001:db8::/64", "2001:db8::5"]);
        // Truncated copies never panic.
        let b = d.as_bytes();
        for cut in 0..b.len() {
            let mut m2 = Vec::new();
            for m in messages(&b[..cut]) {
                parse_list_msg(&m, &mut h, &mut m2);
            }
        }
    }

    #[test]
    fn entries_parse_and_check() {
        assert!(Entry::parse("300.1.1.1").is_err());
        assert!(Entry::parse("192.0.2.1/33").is_err());
        assert!(Entry::parse("192.0.2.1/x").is_err());
        assert!(Entry::parse("").is_err());
        assert_eq!(Entry::parse("192.0.2.9/32").unwrap().to_string(), "192.0.2.9");
        assert_eq!(Entry::parse("2001:DB8::1").unwrap().to_string(), "2001:db8::1");
        assert_eq!(Entry::parse("2001:db8::1/0").unwrap().to_string(), "::/0");
        let h = SetHeader {
            name: "s".into(),
            typename: "hash:ip".into(),
            family: NFPROTO_IPV4,
            ..Default::default()
        };
        assert!(h.check_entry(&Entry::parse("192.0.2.1").unwrap()).is_ok());
        let err = h.check_entry(&Entry::parse("2001:db8::1").unwrap()).unwrap_err();
        assert!(err.to_string().contains("set is inet, address 2001:db8::1 is IPv6"), "{err}");
        assert!(h.check_entry(&Entry::parse("192.0.2.0/24").unwrap()).is_err());
        assert!(check_name(&"x".repeat(31)).is_ok());
        assert!(check_name(&"x".repeat(32)).is_err());
        assert_eq!(reason(IPSET_ERR_HASH_FULL), "set is full (maxelem reached)");
    }
}
