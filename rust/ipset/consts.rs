//! ipset's protocol numbers and error codes, spelled as in
//! `include/uapi/linux/netfilter/ipset/ip_set.h` (and `ip_set_hash.h`), and
//! the kernel's refusals in words.
#![allow(dead_code)]

use std::io;

use crate::error::{Error, Result};

// ip_set.h: protocol, commands, attributes, errors (names verbatim).
pub(crate) const IPSET_PROTOCOL: u8 = 6;
pub(crate) const IPSET_MAXNAMELEN: usize = 32; // including the NUL

pub(crate) const IPSET_CMD_PROTOCOL: u8 = 1;
pub(crate) const IPSET_CMD_CREATE: u8 = 2;
pub(crate) const IPSET_CMD_DESTROY: u8 = 3;
pub(crate) const IPSET_CMD_FLUSH: u8 = 4;
pub(crate) const IPSET_CMD_RENAME: u8 = 5;
pub(crate) const IPSET_CMD_SWAP: u8 = 6;
pub(crate) const IPSET_CMD_LIST: u8 = 7;
pub(crate) const IPSET_CMD_SAVE: u8 = 8;
pub(crate) const IPSET_CMD_ADD: u8 = 9;
pub(crate) const IPSET_CMD_DEL: u8 = 10;
pub(crate) const IPSET_CMD_TEST: u8 = 11;
pub(crate) const IPSET_CMD_HEADER: u8 = 12;
pub(crate) const IPSET_CMD_TYPE: u8 = 13;

pub(crate) const IPSET_ATTR_PROTOCOL: u16 = 1;
pub(crate) const IPSET_ATTR_SETNAME: u16 = 2;
pub(crate) const IPSET_ATTR_TYPENAME: u16 = 3;
pub(crate) const IPSET_ATTR_SETNAME2: u16 = IPSET_ATTR_TYPENAME;
pub(crate) const IPSET_ATTR_REVISION: u16 = 4;
pub(crate) const IPSET_ATTR_FAMILY: u16 = 5;
pub(crate) const IPSET_ATTR_FLAGS: u16 = 6;
pub(crate) const IPSET_ATTR_DATA: u16 = 7;
pub(crate) const IPSET_ATTR_ADT: u16 = 8;
pub(crate) const IPSET_ATTR_LINENO: u16 = 9;

// Inside IPSET_ATTR_DATA.
pub(crate) const IPSET_ATTR_IP: u16 = 1;
pub(crate) const IPSET_ATTR_CIDR: u16 = 3;
pub(crate) const IPSET_ATTR_TIMEOUT: u16 = 6;
pub(crate) const IPSET_ATTR_CADT_FLAGS: u16 = 8;
pub(crate) const IPSET_ATTR_HASHSIZE: u16 = 18;
pub(crate) const IPSET_ATTR_MAXELEM: u16 = 19;
pub(crate) const IPSET_ATTR_ELEMENTS: u16 = 24;
pub(crate) const IPSET_ATTR_REFERENCES: u16 = 25;
pub(crate) const IPSET_ATTR_MEMSIZE: u16 = 26;

// Inside IPSET_ATTR_IP.
pub(crate) const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
pub(crate) const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

// IPSET_ATTR_FLAGS of a LIST request.
pub(crate) const IPSET_FLAG_LIST_SETNAME: u32 = 1 << 1;
pub(crate) const IPSET_FLAG_LIST_HEADER: u32 = 1 << 2;

pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;

pub(crate) const IPSET_ERR_PRIVATE: i32 = 4096;
pub(crate) const IPSET_ERR_PROTOCOL: i32 = 4097;
pub(crate) const IPSET_ERR_FIND_TYPE: i32 = 4098;
pub(crate) const IPSET_ERR_MAX_SETS: i32 = 4099;
pub(crate) const IPSET_ERR_BUSY: i32 = 4100;
pub(crate) const IPSET_ERR_EXIST_SETNAME2: i32 = 4101;
pub(crate) const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
pub(crate) const IPSET_ERR_EXIST: i32 = 4103;
pub(crate) const IPSET_ERR_INVALID_CIDR: i32 = 4104;
pub(crate) const IPSET_ERR_INVALID_NETMASK: i32 = 4105;
pub(crate) const IPSET_ERR_INVALID_FAMILY: i32 = 4106;
pub(crate) const IPSET_ERR_TIMEOUT: i32 = 4107;
pub(crate) const IPSET_ERR_REFERENCED: i32 = 4108;
pub(crate) const IPSET_ERR_IPADDR_IPV4: i32 = 4109;
pub(crate) const IPSET_ERR_IPADDR_IPV6: i32 = 4110;
pub(crate) const IPSET_ERR_COUNTER: i32 = 4111;
pub(crate) const IPSET_ERR_COMMENT: i32 = 4112;
pub(crate) const IPSET_ERR_INVALID_MARKMASK: i32 = 4113;
pub(crate) const IPSET_ERR_SKBINFO: i32 = 4114;
pub(crate) const IPSET_ERR_TYPE_SPECIFIC: i32 = 4352;
// ip_set_hash.h
pub(crate) const IPSET_ERR_HASH_FULL: i32 = IPSET_ERR_TYPE_SPECIFIC;
pub(crate) const IPSET_ERR_HASH_ELEM: i32 = 4353;
pub(crate) const IPSET_ERR_INVALID_PROTO: i32 = 4354;
pub(crate) const IPSET_ERR_MISSING_PROTO: i32 = 4355;
pub(crate) const IPSET_ERR_HASH_RANGE_UNSUPPORTED: i32 = 4356;
pub(crate) const IPSET_ERR_HASH_RANGE: i32 = 4357;

/// CREATE asks for revision 0 of the type: every kernel since ipset entered
/// mainline (2.6.39) has it, so the same request works on 3.x router kernels.
pub(crate) const CREATE_REVISION: u8 = 0;

/// The kernel's reason for an IPSET_ERR_* or errno code (positive), in words.
pub(crate) fn reason(code: i32) -> String {
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
pub(crate) fn kernel_error(set: &str, code: i32) -> Error {
    if code >= IPSET_ERR_PRIVATE || code == libc::ENOENT {
        Error::Ipset { set: set.to_string(), code, reason: reason(code), new: Vec::new() }
    } else {
        Error::io(format!("ipset '{set}'"), io::Error::from_raw_os_error(code))
    }
}

pub(crate) fn io_error(set: &str, e: io::Error) -> Error {
    match e.raw_os_error() {
        // `dump` turns an error ack into a raw os error: give it its ipset meaning.
        Some(code) if code >= IPSET_ERR_PRIVATE || code == libc::ENOENT => kernel_error(set, code),
        _ => Error::io(format!("ipset '{set}': netlink"), e),
    }
}

/// Set names are at most 31 bytes (IPSET_MAXNAMELEN with the NUL).
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= IPSET_MAXNAMELEN || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid ipset name {name:?}: 1 to {} bytes, no NUL",
            IPSET_MAXNAMELEN - 1
        )));
    }
    Ok(())
}
