//! nf_tables protocol numbers, spelled as in `include/uapi/linux/netfilter/nf_tables.h`
//! and `nfnetlink.h`, and the kernel's refusals in words.
#![allow(dead_code)]

use std::io;

use crate::error::{Error, Result};

// nfnetlink.h
pub(crate) const NFNL_SUBSYS_NFTABLES: u8 = 10;
/// `NLMSG_MIN_TYPE`: a batch opens with this message type...
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// ... and closes with this one.
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;

// netfilter.h: the families nf_tables tables live in.
pub(crate) const NFPROTO_UNSPEC: u8 = 0;
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_ARP: u8 = 3;
pub(crate) const NFPROTO_NETDEV: u8 = 5;
pub(crate) const NFPROTO_BRIDGE: u8 = 7;
pub(crate) const NFPROTO_IPV6: u8 = 10;

// enum nf_tables_msg_types
pub(crate) const NFT_MSG_NEWTABLE: u8 = 0;
pub(crate) const NFT_MSG_GETTABLE: u8 = 1;
pub(crate) const NFT_MSG_DELTABLE: u8 = 2;
pub(crate) const NFT_MSG_NEWSET: u8 = 9;
pub(crate) const NFT_MSG_GETSET: u8 = 10;
pub(crate) const NFT_MSG_DELSET: u8 = 11;
pub(crate) const NFT_MSG_NEWSETELEM: u8 = 12;
pub(crate) const NFT_MSG_GETSETELEM: u8 = 13;
pub(crate) const NFT_MSG_DELSETELEM: u8 = 14;

/// `NFT_NAME_MAXLEN` (table and set names, with the NUL; 32 before Linux 4.14).
pub(crate) const NFT_NAME_MAXLEN: usize = 256;

// enum nft_list_attributes
pub(crate) const NFTA_LIST_ELEM: u16 = 1;

// enum nft_table_attributes
pub(crate) const NFTA_TABLE_NAME: u16 = 1;
pub(crate) const NFTA_TABLE_FLAGS: u16 = 2;
pub(crate) const NFTA_TABLE_USE: u16 = 3;

// enum nft_set_flags
pub(crate) const NFT_SET_ANONYMOUS: u32 = 0x1;
pub(crate) const NFT_SET_CONSTANT: u32 = 0x2;
pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
pub(crate) const NFT_SET_TIMEOUT: u32 = 0x10;
pub(crate) const NFT_SET_EVAL: u32 = 0x20;
pub(crate) const NFT_SET_OBJECT: u32 = 0x40;
pub(crate) const NFT_SET_CONCAT: u32 = 0x80;

// enum nft_set_desc_attributes
pub(crate) const NFTA_SET_DESC_SIZE: u16 = 1;

// enum nft_set_attributes
pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
pub(crate) const NFTA_SET_DATA_TYPE: u16 = 6;
pub(crate) const NFTA_SET_DATA_LEN: u16 = 7;
pub(crate) const NFTA_SET_POLICY: u16 = 8;
pub(crate) const NFTA_SET_DESC: u16 = 9;
pub(crate) const NFTA_SET_ID: u16 = 10;
pub(crate) const NFTA_SET_TIMEOUT: u16 = 11;
pub(crate) const NFTA_SET_GC_INTERVAL: u16 = 12;
pub(crate) const NFTA_SET_USERDATA: u16 = 13;
pub(crate) const NFTA_SET_HANDLE: u16 = 16;

// enum nft_set_elem_flags
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

// enum nft_set_elem_attributes
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(crate) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub(crate) const NFTA_SET_ELEM_EXPIRATION: u16 = 5;

// enum nft_set_elem_list_attributes
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;

// enum nft_data_attributes
pub(crate) const NFTA_DATA_VALUE: u16 = 1;

/// The key types of the `nft` program's datatypes (src/datatype.h: `TYPE_IPADDR`,
/// `TYPE_IP6ADDR`). The kernel keeps them for userspace only; `nft` needs them
/// to print a set and to type-check `ip daddr @set` against it.
pub(crate) const NFT_TYPE_IPADDR: u32 = 7;
pub(crate) const NFT_TYPE_IP6ADDR: u32 = 8;

/// The kernel's reason for an errno (positive) from an nf_tables request, in words.
pub(crate) fn reason(code: i32) -> String {
    let s = match code {
        libc::ENOENT => "no such set (or table)",
        libc::EPERM | libc::EACCES => "permission denied (needs CAP_NET_ADMIN)",
        // Without NLM_F_EXCL a present element is no error: EEXIST on an add is an
        // interval overlapping another (the kernel turns ENOTEMPTY into EEXIST).
        libc::EEXIST => "overlaps an interval already in the set",
        libc::ENFILE => "set is full (its size is reached)",
        libc::EBUSY => "set is in use (a rule references it) or the element clashes",
        libc::EINVAL => "the kernel refused the request as invalid for this set",
        libc::EOPNOTSUPP => "not supported by this kernel",
        libc::ENAMETOOLONG => "name too long for this kernel",
        libc::ERANGE => "timeout out of range",
        libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => "nf_tables is not available in this kernel",
        libc::ENOMEM => "out of kernel memory",
        _ => return io::Error::from_raw_os_error(code).to_string(),
    };
    s.to_string()
}

/// A kernel refusal (`code` positive) about `set`: "no such set", a full set and
/// other refusals of the set or its elements become `Error::Nftables`;
/// permission and availability problems stay `Error::Io` (PermissionError...).
pub(crate) fn kernel_error(set: &str, code: i32) -> Error {
    match code {
        libc::EPERM
        | libc::EACCES
        | libc::EAFNOSUPPORT
        | libc::EPROTONOSUPPORT
        | libc::ENOMEM
        | libc::ENOBUFS
        | libc::ETIMEDOUT => Error::io(
            format!("nftables set {set}: {}", reason(code)),
            io::Error::from_raw_os_error(code),
        ),
        _ => Error::Nftables { set: set.to_string(), code, reason: reason(code), new: Vec::new() },
    }
}

/// A failed netlink exchange about `set`.
pub(crate) fn io_error(set: &str, e: io::Error) -> Error {
    match e.raw_os_error() {
        // `dump` turns an error ack into a raw os error: give it its nf_tables meaning.
        Some(code) if code != libc::EAGAIN && code != libc::EINTR => kernel_error(set, code),
        _ => Error::io(format!("nftables set {set}: netlink"), e),
    }
}

/// Table and set names: 1 to 255 bytes, no NUL (the kernel checks the length;
/// kernels before 4.14 take at most 31).
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= NFT_NAME_MAXLEN || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid nftables {what} name {name:?}: 1 to {} bytes, no NUL",
            NFT_NAME_MAXLEN - 1
        )));
    }
    Ok(())
}
