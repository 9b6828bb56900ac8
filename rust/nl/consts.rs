//! Kernel constants, spelled as in the kernel headers so they can be grepped
//! (`include/uapi/linux/netlink.h`, `netfilter/nfnetlink*.h`, `netfilter/ipset/ip_set.h`).
#![allow(dead_code)]

// netlink.h
pub const NETLINK_NETFILTER: i32 = 12;
pub const NLMSG_HDRLEN: usize = 16;
pub const NLA_HDRLEN: usize = 4;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP: u16 = 0x300; // NLM_F_ROOT | NLM_F_MATCH
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
pub const NETLINK_CAP_ACK: i32 = 10;
pub const NETLINK_NO_ENOBUFS: i32 = 5;
pub const SOL_NETLINK: i32 = 270;

// nfnetlink.h
pub const NFNETLINK_V0: u8 = 0;
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
pub const NFNL_SUBSYS_QUEUE: u8 = 3;
pub const NFNL_SUBSYS_ULOG: u8 = 4;
pub const NFNL_SUBSYS_IPSET: u8 = 6;

pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// `(subsystem << 8) | command`, the nfnetlink message type.
pub const fn nfnl_msg_type(subsys: u8, cmd: u8) -> u16 {
    ((subsys as u16) << 8) | cmd as u16
}
