//! A NETLINK_NETFILTER socket (neli's `NlSocket`) with the few extras the core
//! needs: forced buffer sizes, capped acks, poll, sequence numbers, and the two
//! exchanges every user of it does (a batch of acked requests, and a dump).

use std::collections::HashMap;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use super::consts::{NETLINK_CAP_ACK, NLMSG_DONE, NLMSG_ERROR, NLMSG_OVERRUN, SOL_NETLINK};
use super::parse::{messages, NlMsg};

/// How long a request may wait for the kernel before we call it lost.
/// The kernel answers netfilter requests synchronously, so this only trips
/// when acks were dropped (receive buffer overrun).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Datagrams read per recvmmsg(2), and the size of each slot: the kernel's
/// dump replies are at most 32 KiB per datagram, acks are small (even when
/// they echo the request).
const RECV_SLOTS: usize = 8;
const RECV_SLOT: usize = 32 * 1024;

pub struct NetfilterSocket {
    sock: NlSocket,
    seq: u32,
    recv_slots: Vec<Vec<u8>>,
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed exactly;
    // setsockopt does not keep the pointer.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast::<libc::c_void>(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: both pointers refer to live locals of the sizes given.
    let rc = unsafe {
        libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast::<libc::c_void>(), &mut len)
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl NetfilterSocket {
    /// Open and bind a NETLINK_NETFILTER socket (blocking).
    pub fn open() -> io::Result<Self> {
        let sock = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty())?;
        Ok(NetfilterSocket { sock, seq: initial_seq(), recv_slots: Vec::new() })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        if nonblocking {
            self.sock.nonblock()
        } else {
            self.sock.block()
        }
    }

    /// Raise the receive buffer: SO_RCVBUFFORCE (root, ignores rmem_max), else SO_RCVBUF.
    /// Returns the size the kernel reports (it doubles the request for bookkeeping).
    pub fn set_rcvbuf(&self, bytes: usize) -> io::Result<usize> {
        let want = i32::try_from(bytes).unwrap_or(i32::MAX);
        if setsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want).is_err() {
            setsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, want)?;
        }
        Ok(getsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_RCVBUF)? as usize)
    }

    /// Raise the send buffer, so one datagram can carry a large batch.
    pub fn set_sndbuf(&self, bytes: usize) -> io::Result<usize> {
        let want = i32::try_from(bytes).unwrap_or(i32::MAX);
        if setsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want).is_err() {
            setsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, want)?;
        }
        Ok(getsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_SNDBUF)? as usize)
    }

    /// Join netlink multicast groups (numbered from 1, as NFNLGRP_* are).
    pub fn join_groups(&self, groups: &[u32]) -> io::Result<()> {
        self.sock.add_mcast_membership(Groups::new_groups(groups))
    }

    /// Error acks normally echo the whole request; NETLINK_CAP_ACK (Linux 4.3+)
    /// trims them to the header. Older kernels just echo: harmless, so failure is ignored.
    pub fn cap_acks(&self) -> bool {
        setsockopt_int(self.fd(), SOL_NETLINK, NETLINK_CAP_ACK, 1).is_ok()
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        loop {
            match self.sock.send(buf, Msg::empty()) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("netlink sent {n} of {} bytes", buf.len()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One `recv` into `buf`. `WouldBlock` on a non-blocking socket with nothing
    /// queued; `ENOBUFS` (raw os error) when the kernel dropped messages.
    pub fn recv_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_flags(buf, Msg::empty())
    }

    fn recv_flags(&self, buf: &mut [u8], flags: Msg) -> io::Result<usize> {
        loop {
            match self.sock.recv(&mut *buf, flags) {
                Ok((n, _)) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive what is queued, up to `slots.len()` (at most 16) datagrams, in one
    /// recvmmsg(2) without blocking; `lens` gets the length of each (empty when
    /// nothing is queued). A datagram larger than its slot is cut: its length is
    /// given as 0 and it is counted in the returned number (callers size slots for
    /// the largest datagram the kernel sends them, so this is a bug, not load).
    /// `ENOBUFS` (raw os error) when the kernel dropped messages.
    pub fn recv_many(&self, slots: &mut [Vec<u8>], lens: &mut Vec<usize>) -> io::Result<usize> {
        const MAX: usize = 16;
        lens.clear();
        let n = slots.len().min(MAX);
        // SAFETY: all-zero is a valid iovec and mmsghdr (null pointers, zero lengths).
        let mut iov: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
        for (i, slot) in slots.iter_mut().take(n).enumerate() {
            iov[i] = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: slot.len() };
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let got = loop {
            // SAFETY: `hdrs[..n]` are initialised; each points at its own `iov[i]`,
            // which points at `slots[i]`, all alive and unmoved for the call, with
            // the exact lengths given; the kernel writes only within them.
            let rc = unsafe {
                libc::recvmmsg(
                    self.fd(),
                    hdrs.as_mut_ptr(),
                    n as _,
                    libc::MSG_DONTWAIT as _,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        };
        let mut cut = 0;
        for h in &hdrs[..got] {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                cut += 1;
                lens.push(0);
            } else {
                lens.push(h.msg_len as usize);
            }
        }
        Ok(cut)
    }

    /// Wait until the socket is readable. `None` waits forever; EINTR is retried.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        loop {
            match crate::sys::poll_readable(&[self.fd()], timeout) {
                Ok(ready) => return Ok(ready != 0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive what is queued (waiting at most until `deadline` for the first
    /// datagram) and hand each message to `on_msg`. Returns false on timeout.
    fn recv_batch(
        &mut self,
        deadline: Instant,
        on_msg: &mut dyn FnMut(&NlMsg<'_>),
    ) -> io::Result<bool> {
        let mut slots = std::mem::take(&mut self.recv_slots);
        if slots.is_empty() {
            // Allocated on first use: sockets that only send never pay for it.
            slots = vec![vec![0; RECV_SLOT]; RECV_SLOTS];
        }
        let mut lens = Vec::with_capacity(slots.len());
        // Replies to a request are queued by the time send() returns (the kernel
        // answers synchronously): read first, poll only when nothing is there.
        let mut res = self.recv_many(&mut slots, &mut lens);
        if res.is_ok() && lens.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            res = match self.wait_readable(Some(left)) {
                Ok(true) => self.recv_many(&mut slots, &mut lens),
                Ok(false) => {
                    self.recv_slots = slots;
                    return Ok(false);
                }
                Err(e) => Err(e),
            };
        }
        if res.is_ok() {
            for (slot, &n) in slots.iter().zip(&lens) {
                for m in messages(&slot[..n]) {
                    on_msg(&m);
                }
            }
        }
        self.recv_slots = slots;
        // Nothing read after a poll that said readable: a race; the caller loops.
        // A cut reply (impossible with 32 KiB slots) loses its messages: the
        // caller's wait for them ends in its time-out.
        res.map(|_| true)
    }

    /// Send a datagram of requests that all carry NLM_F_ACK and collect the ack
    /// of every sequence number in `seqs`: 0 for success, or the negative errno.
    /// Non-ack replies (e.g. NLMSG_DONE) are ignored; messages answering other
    /// sequence numbers (stale replies) are skipped.
    pub fn request_acks(&mut self, datagram: &[u8], seqs: &[u32]) -> io::Result<HashMap<u32, i32>> {
        let mut acks: HashMap<u32, i32> = HashMap::with_capacity(seqs.len());
        let wanted: std::collections::HashSet<u32> = seqs.iter().copied().collect();
        self.send(datagram)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while acks.len() < wanted.len() {
            let mut on_msg = |m: &NlMsg<'_>| {
                if let (Some(code), Some(seq)) = (m.error_code(), m.acked_seq()) {
                    if wanted.contains(&seq) {
                        acks.insert(seq, code);
                    }
                }
            };
            match self.recv_batch(deadline, &mut on_msg) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "netlink: {} of {} acks never arrived",
                            wanted.len() - acks.len(),
                            wanted.len()
                        ),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(acks)
    }

    /// Send a datagram of requests numbered `first..=last` (wrapping), of which
    /// only the last carries NLM_F_ACK, and collect the replies: the kernel acks
    /// a request without NLM_F_ACK only when it fails, and handles requests in
    /// order, so once the last one's ack is in every failure is known. Returns
    /// seq -> negative errno for the failed ones, and the last one's code
    /// (0 when it succeeded). One reply datagram when nothing fails.
    pub fn request_failures(
        &mut self,
        datagram: &[u8],
        first: u32,
        last: u32,
    ) -> io::Result<HashMap<u32, i32>> {
        let span = last.wrapping_sub(first);
        let mut replies: HashMap<u32, i32> = HashMap::new();
        self.send(datagram)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !replies.contains_key(&last) {
            let mut on_msg = |m: &NlMsg<'_>| {
                if let (Some(code), Some(seq)) = (m.error_code(), m.acked_seq()) {
                    if seq.wrapping_sub(first) <= span && (code != 0 || seq == last) {
                        replies.insert(seq, code);
                    }
                }
            };
            if !self.recv_batch(deadline, &mut on_msg)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "netlink: the ack of the last request never arrived",
                ));
            }
        }
        Ok(replies)
    }

    /// Send a datagram of requests numbered `first..=last` (wrapping), of which
    /// only the last carries NLM_F_ACK, and hand every reply numbered in that
    /// range to `on_reply` (data replies and error acks alike) until the last
    /// request is answered by an ack or an error: the kernel handles the
    /// requests of a datagram in order. An error for `stop_on` ends the wait
    /// as well (an nf_tables batch whose BEGIN was refused gets nothing more,
    /// and a failed commit is answered with BEGIN's number); what is queued
    /// behind it is read and handed over too, so no stale reply stays queued.
    pub fn exchange(
        &mut self,
        datagram: &[u8],
        first: u32,
        last: u32,
        stop_on: Option<u32>,
        on_reply: &mut dyn FnMut(&NlMsg<'_>),
    ) -> io::Result<()> {
        let span = last.wrapping_sub(first);
        self.send(datagram)?;
        let mut deadline = Instant::now() + REPLY_TIMEOUT;
        let mut done = false;
        let mut stopped = false;
        while !done {
            let mut each = |m: &NlMsg<'_>| {
                if m.seq.wrapping_sub(first) > span {
                    return;
                }
                on_reply(m);
                if let (Some(code), Some(seq)) = (m.error_code(), m.acked_seq()) {
                    if seq == last {
                        done = true;
                    } else if code != 0 && Some(seq) == stop_on {
                        stopped = true;
                    }
                }
            };
            let got = self.recv_batch(deadline, &mut each)?;
            if stopped && !done {
                // Everything the kernel had to say is queued already: read it, don't wait.
                deadline = Instant::now();
                if !got {
                    return Ok(());
                }
            } else if !got {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "netlink: the ack of the last request never arrived",
                ));
            }
        }
        Ok(())
    }

    /// Send a dump request (which must carry `seq`) and pass every reply
    /// message to `on_msg` until NLMSG_DONE. An error reply becomes `Err`.
    pub fn dump(
        &mut self,
        request: &[u8],
        seq: u32,
        on_msg: &mut dyn FnMut(&NlMsg<'_>),
    ) -> io::Result<()> {
        self.send(request)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut done = false;
        let mut failure: Option<i32> = None;
        while !done {
            let mut each = |m: &NlMsg<'_>| {
                if m.seq != seq || done {
                    return;
                }
                match m.msg_type {
                    NLMSG_DONE => done = true,
                    NLMSG_OVERRUN => {
                        failure = Some(-libc::ENOBUFS);
                        done = true;
                    }
                    NLMSG_ERROR => {
                        if let Some(code) = m.error_code() {
                            if code != 0 {
                                failure = Some(code);
                            }
                        }
                        done = true;
                    }
                    _ => on_msg(m),
                }
            };
            if !self.recv_batch(deadline, &mut each)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "netlink dump did not finish"));
            }
        }
        match failure {
            Some(code) => Err(io::Error::from_raw_os_error(-code)),
            None => Ok(()),
        }
    }
}

/// Start sequence numbers somewhere unpredictable-ish so two sockets of one
/// process (or a restarted daemon) do not mistake each other's stale replies.
fn initial_seq() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(1);
    now ^ std::process::id().rotate_left(16)
}

impl AsRawFd for NetfilterSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}
