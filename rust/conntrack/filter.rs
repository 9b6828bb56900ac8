//! A socket filter (classic BPF) for the conntrack event socket that drops the
//! events of DNS flows (UDP or TCP to port 53) in the kernel.
//!
//! Every DNS query a client makes is a conntrack entry of its own (a fresh
//! source port each time), so without the filter the event index would pay a
//! NEW and a DESTROY event per answer, for flows it never needs to flush:
//! addresses that serve DNS are not routed by hrneo (and a DNS flow lasts one
//! query anyway). The filter runs where the event is sent, so such events never
//! reach the socket at all.
//!
//! The event layout it reads is the one every kernel since 2.6.14 writes
//! (`ctnetlink_dump_tuples`): nlmsghdr, nfgenmsg, then CTA_TUPLE_ORIG holding
//! CTA_TUPLE_IP and CTA_TUPLE_PROTO { PROTO_NUM, SRC_PORT, DST_PORT }. Every
//! attribute type and length on the way is checked; anything that does not
//! look exactly like that is let through, so an unexpected layout costs an
//! index entry, never a lost event.

use std::io;
use std::os::unix::io::RawFd;

use crate::nl::consts::{AF_INET, AF_INET6, NLA_TYPE_MASK};

// include/uapi/linux/bpf_common.h
const BPF_LD_W_LEN: u16 = 0x80; // BPF_LD | BPF_W | BPF_LEN
const BPF_LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const BPF_LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

// nfnetlink_conntrack.h
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const DNS_PORT: u32 = 53;

/// A 16-bit host-order header field as BPF's `ldh` (a big-endian load) sees it.
fn as_loaded(v: u16) -> u32 {
    u32::from(u16::from_be_bytes(v.to_ne_bytes()))
}

#[derive(Clone, Copy)]
enum Jump {
    Next,
    To(&'static str),
}

enum Op {
    Stmt(u16, u32),
    Jeq(u32, Jump, Jump),
    Jge(u32, Jump, Jump),
    Label(&'static str),
}

/// The checks of one address family: `b` is how much longer its addresses make
/// CTA_TUPLE_IP than IPv4's.
fn family_checks(label: &'static str, b: u32, ip_len: u32, ops: &mut Vec<Op>) {
    use Jump::{Next, To};
    let mask = as_loaded(NLA_TYPE_MASK);
    let attr = |ops: &mut Vec<Op>, at: u32, ty: u16| {
        ops.push(Op::Stmt(BPF_LD_H_ABS, at));
        ops.push(Op::Stmt(BPF_ALU_AND_K, mask));
        ops.push(Op::Jeq(as_loaded(ty), Next, To("accept")));
    };
    ops.push(Op::Label(label));
    ops.push(Op::Stmt(BPF_LD_W_LEN, 0));
    ops.push(Op::Jge(70 + b, Next, To("accept")));
    attr(ops, 22, CTA_TUPLE_ORIG);
    attr(ops, 26, CTA_TUPLE_IP);
    ops.push(Op::Stmt(BPF_LD_H_ABS, 24));
    ops.push(Op::Jeq(as_loaded(ip_len as u16), Next, To("accept")));
    attr(ops, 46 + b, CTA_TUPLE_PROTO);
    attr(ops, 50 + b, CTA_PROTO_NUM);
    ops.push(Op::Stmt(BPF_LD_B_ABS, 52 + b));
    let port = if b == 0 { "port4" } else { "port6" };
    ops.push(Op::Jeq(IPPROTO_UDP, To(port), Next));
    ops.push(Op::Jeq(IPPROTO_TCP, To(port), To("accept")));
    ops.push(Op::Label(port));
    attr(ops, 66 + b, CTA_PROTO_DST_PORT);
    // The port is NLA_F_NET_BYTEORDER data: `ldh` reads it as it is meant.
    ops.push(Op::Stmt(BPF_LD_H_ABS, 68 + b));
    ops.push(Op::Jeq(DNS_PORT, To("drop"), To("accept")));
}

/// The filter program, as (code, jt, jf, k) instructions.
pub(crate) fn program() -> Vec<(u16, u8, u8, u32)> {
    use Jump::{Next, To};
    let mut ops = vec![
        Op::Stmt(BPF_LD_W_LEN, 0),
        Op::Jge(20, Next, To("accept")), // nlmsghdr + nfgenmsg
        Op::Stmt(BPF_LD_B_ABS, 16),      // nfgen_family
        Op::Jeq(u32::from(AF_INET), To("v4"), Next),
        Op::Jeq(u32::from(AF_INET6), To("v6"), To("accept")),
    ];
    family_checks("v4", 0, 20, &mut ops);
    family_checks("v6", 24, 44, &mut ops);
    ops.push(Op::Label("accept"));
    ops.push(Op::Stmt(BPF_RET_K, u32::MAX));
    ops.push(Op::Label("drop"));
    ops.push(Op::Stmt(BPF_RET_K, 0));
    // Resolve labels to instruction indices, then jumps to relative offsets.
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for op in &ops {
        match op {
            Op::Label(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let rel = |from: usize, j: Jump| -> u8 {
        match j {
            Jump::Next => 0,
            // Jumps only go forward and the program is short: no overflow.
            Jump::To(l) => u8::try_from(at[l] - from - 1).unwrap_or(0),
        }
    };
    let mut out = Vec::with_capacity(n);
    for op in &ops {
        let i = out.len();
        match *op {
            Op::Label(_) => {}
            Op::Stmt(code, k) => out.push((code, 0, 0, k)),
            Op::Jeq(k, t, f) => out.push((BPF_JMP_JEQ_K, rel(i, t), rel(i, f), k)),
            Op::Jge(k, t, f) => out.push((BPF_JMP_JGE_K, rel(i, t), rel(i, f), k)),
        }
    }
    out
}

/// Attach the filter to the event socket `fd`.
pub(crate) fn attach(fd: RawFd) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = program()
        .into_iter()
        .map(|(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    let prog = libc::sock_fprog { len: insns.len() as u16, filter: insns.as_mut_ptr() };
    // SAFETY: `prog` points at `insns`, which lives until after the call and holds
    // exactly `len` instructions; the kernel copies the program during setsockopt
    // and keeps no pointer to our memory.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast::<libc::c_void>(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::message::fixtures::{captured_v4, tuple_v4};
    use crate::conntrack::message::{CTA_TUPLE_ORIG as ORIG, CTA_TUPLE_REPLY};
    use crate::testutil::{nest, nla, nlmsg};

    /// A classic BPF interpreter for the instructions `program` uses, with the
    /// kernel's rule that a load past the end drops the packet.
    fn run(prog: &[(u16, u8, u8, u32)], pkt: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let (code, jt, jf, k) = prog[pc];
            let load = |w: usize| pkt.get(k as usize..k as usize + w);
            pc += 1;
            match code {
                BPF_LD_W_LEN => a = pkt.len() as u32,
                BPF_LD_H_ABS => match load(2) {
                    Some(b) => a = u32::from(u16::from_be_bytes([b[0], b[1]])),
                    None => return 0,
                },
                BPF_LD_B_ABS => match load(1) {
                    Some(b) => a = u32::from(b[0]),
                    None => return 0,
                },
                BPF_ALU_AND_K => a &= k,
                BPF_JMP_JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                BPF_JMP_JGE_K => pc += usize::from(if a >= k { jt } else { jf }),
                BPF_RET_K => return k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    fn v6_event(proto: u8, dport: u16) -> Vec<u8> {
        let a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let t = [
            nest(CTA_TUPLE_IP, &[nla(3, &a), nla(4, &a)]),
            nest(
                CTA_TUPLE_PROTO,
                &[nla(1, &[proto]), nla(2, &40000u16.to_be_bytes()), nla(3, &dport.to_be_bytes())],
            ),
        ]
        .concat();
        let payload = [
            vec![AF_INET6, 0, 0, 0],
            nest(ORIG, std::slice::from_ref(&t)),
            nest(CTA_TUPLE_REPLY, &[t]),
        ]
        .concat();
        nlmsg(0x0100, 0, 0, &payload)
    }

    fn v4_event(src: [u8; 4], dst: [u8; 4], proto: u8, dport: u16) -> Vec<u8> {
        let mut t = tuple_v4(src, dst, 40000, dport);
        // tuple_v4 writes udp; patch the protocol number (value at offset 4+4+... of PROTO_NUM).
        let at = t.len() - 24 + 4;
        t[at] = proto;
        let payload = [vec![AF_INET, 0, 0, 0], nest(ORIG, &[t])].concat();
        nlmsg(0x0100, 0, 0, &payload)
    }

    #[test]
    fn drops_dns_flows_only() {
        let p = program();
        assert!(p.len() < 80);
        let dns = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]); // udp to port 53
        assert_eq!(run(&p, &dns), 0);
        assert_eq!(run(&p, &v4_event([192, 0, 2, 1], [192, 0, 2, 9], 17, 53)), 0);
        assert_eq!(run(&p, &v4_event([192, 0, 2, 1], [192, 0, 2, 9], 6, 53)), 0);
        assert_eq!(run(&p, &v4_event([192, 0, 2, 1], [192, 0, 2, 9], 6, 443)), u32::MAX);
        assert_eq!(run(&p, &v4_event([192, 0, 2, 1], [192, 0, 2, 9], 132, 53)), u32::MAX, "sctp");
        assert_eq!(run(&p, &v6_event(17, 53)), 0);
        assert_eq!(run(&p, &v6_event(6, 853)), u32::MAX);
        // Anything too short to show the port, or shaped otherwise, is kept:
        // never dropped by accident.
        for cut in 0..70 {
            assert_eq!(run(&p, &dns[..cut]), u32::MAX, "cut at {cut}");
        }
        let mut other = dns.clone();
        other[16] = 7; // another family
        assert_eq!(run(&p, &other), u32::MAX);
        let mut moved = dns.clone();
        moved[26] ^= 0x02; // CTA_TUPLE_IP type changed
        assert_eq!(run(&p, &moved), u32::MAX);
    }
}
