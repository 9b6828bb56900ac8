//! A netlink session for ipset requests: create, list, test, flush, destroy,
//! swap, and the batched ADD rounds `IpsetBatch` is built on.

use std::io;

use super::consts::*;
use super::entry::{Entry, SetHeader};
use super::message::*;
use crate::error::{Error, Result};
use crate::nl::{Datagram, NetfilterSocket};

/// Acks per datagram at most. Each ack is its own skb (~1 KiB of receive
/// buffer); the kernel drops acks silently once the buffer is full, so a
/// datagram never asks for more acks than the buffer can hold (see `chunk`).
const MAX_CHUNK: usize = 1024;
/// Receive-buffer bytes budgeted per ack.
const ACK_BUDGET: usize = 2048;
const WANT_RCVBUF: usize = 4 << 20;
const WANT_SNDBUF: usize = 1 << 20;

/// A set's header and members, each with the seconds it has left.
type Listed = (SetHeader, Vec<(Entry, Option<u32>)>);

/// A netlink socket for ipset requests: the kernel's verbs on sets.
pub struct IpsetSession {
    sock: NetfilterSocket,
    /// Acks the receive buffer can hold; datagrams are cut to this many messages.
    chunk: usize,
    /// Reused for every request, so a commit allocates no message buffer.
    scratch: Datagram,
}

impl IpsetSession {
    /// Open the socket. Fails (EPROTONOSUPPORT, EACCES...) when netlink is unavailable.
    pub fn open() -> Result<IpsetSession> {
        let sock = NetfilterSocket::open().map_err(|e| Error::io("ipset: netlink socket", e))?;
        sock.cap_acks();
        let _ = sock.set_sndbuf(WANT_SNDBUF);
        let rcv = sock.set_rcvbuf(WANT_RCVBUF).unwrap_or(200 * 1024);
        let chunk = (rcv / ACK_BUDGET).clamp(16, MAX_CHUNK);
        Ok(IpsetSession { sock, chunk, scratch: Datagram::new() })
    }

    /// Most ADD messages sent in one datagram.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// One acked request; Ok(0) or the (negative) kernel code.
    fn ack(&mut self, build: impl FnOnce(&mut Datagram, u32), set: &str) -> Result<i32> {
        let seq = self.sock.next_seq();
        let mut d = std::mem::take(&mut self.scratch);
        d.clear();
        build(&mut d, seq);
        let acks = self.sock.request_acks(d.as_bytes(), &[seq]);
        self.scratch = d;
        let acks = acks.map_err(|e| io_error(set, e))?;
        Ok(acks.get(&seq).copied().unwrap_or(-libc::ETIMEDOUT))
    }

    fn ack_ok(&mut self, build: impl FnOnce(&mut Datagram, u32), set: &str) -> Result<()> {
        match self.ack(build, set)? {
            0 => Ok(()),
            c => Err(kernel_error(set, -c)),
        }
    }

    fn list_raw(&mut self, set: &str, header_only: bool) -> Result<Listed> {
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
        let (h, members) = self.list_raw(set, false)?;
        Ok((h, members.into_iter().map(|(e, _)| e).collect()))
    }

    /// Header and members, each with the seconds it has left (None: it never
    /// expires: a set without timeouts, or an entry added with timeout 0).
    pub fn list_timeouts(&mut self, set: &str) -> Result<Listed> {
        let (h, mut members) = self.list_raw(set, false)?;
        for (_, t) in &mut members {
            // The kernel says 0 for a permanent entry (IPSET_ELEM_PERMANENT).
            *t = t.filter(|&t| t > 0);
        }
        Ok((h, members))
    }

    /// Whether a set called `set` exists.
    pub fn exists(&mut self, set: &str) -> Result<bool> {
        check_name(set)?;
        match self.ack(|d, seq| msg_named(d, IPSET_CMD_HEADER, seq, set), set)? {
            0 => Ok(true),
            c if c == -libc::ENOENT => Ok(false),
            c => Err(kernel_error(set, -c)),
        }
    }

    /// Create a hash:ip or hash:net set; with `exist_ok` a set of that name is kept as it is.
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

    /// Destroy the set (the kernel refuses while a rule references it).
    pub fn destroy(&mut self, set: &str) -> Result<()> {
        check_name(set)?;
        self.ack_ok(|d, seq| msg_named(d, IPSET_CMD_DESTROY, seq, set), set)
    }

    /// Remove every element.
    pub fn flush(&mut self, set: &str) -> Result<()> {
        check_name(set)?;
        self.ack_ok(|d, seq| msg_named(d, IPSET_CMD_FLUSH, seq, set), set)
    }

    /// Exchange the contents (and names) of two sets of the same type.
    pub fn swap(&mut self, a: &str, b: &str) -> Result<()> {
        check_name(a)?;
        check_name(b)?;
        match self.ack(|d, seq| msg_swap(d, seq, a, b), a)? {
            0 => Ok(()),
            c if c == -IPSET_ERR_EXIST_SETNAME2 => Err(kernel_error(b, libc::ENOENT)),
            c => Err(kernel_error(a, -c)),
        }
    }

    /// Whether `e` is in the set.
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

    /// Remove `entries` from the set; returns how many were there. Chunked,
    /// only the last DEL of a datagram acked (the others answer only when absent).
    pub fn delete(&mut self, set: &str, entries: &[Entry]) -> Result<usize> {
        check_name(set)?;
        let mut removed = 0;
        let mut d = Datagram::new();
        for part in entries.chunks(self.chunk.max(1)) {
            d.clear();
            let first = self.sock.next_seq();
            let mut last = first;
            for (k, e) in part.iter().enumerate() {
                last = if k == 0 { first } else { self.sock.next_seq() };
                msg_del(&mut d, last, set, e, k + 1 == part.len());
            }
            let replies = self
                .sock
                .request_failures(d.as_bytes(), first, last)
                .map_err(|e| io_error(set, e))?;
            let mut absent = 0;
            for &code in replies.values() {
                match code {
                    0 => {}
                    c if c == -IPSET_ERR_EXIST => absent += 1,
                    c => return Err(kernel_error(set, -c)),
                }
            }
            removed += part.len() - absent;
        }
        Ok(removed)
    }

    /// Send ADDs of `entries` (indices into `all`), chunked; return seq -> ack.
    /// Send ADDs of `idx` (indices into `all`), chunked; returns the indices
    /// that were new, those that were present, and the first other error code.
    /// Only the last ADD of a datagram asks for an ack: the kernel answers the
    /// others only when they fail (with EXCL: -IPSET_ERR_EXIST for a present
    /// element), so a batch of new entries costs one reply, not one per entry.
    pub(crate) fn add_round(
        &mut self,
        set: &str,
        all: &[Entry],
        idx: &[usize],
        timeout: Option<u32>,
        excl: bool,
    ) -> Result<(Vec<usize>, Vec<usize>, Option<i32>)> {
        self.add_round_with(set, all, idx, |_| timeout, excl)
    }

    /// `add_round` with a timeout per entry: `timeout(i)` for `all[i]`.
    pub(crate) fn add_round_with(
        &mut self,
        set: &str,
        all: &[Entry],
        idx: &[usize],
        timeout: impl Fn(usize) -> Option<u32>,
        excl: bool,
    ) -> Result<(Vec<usize>, Vec<usize>, Option<i32>)> {
        let (mut new, mut present, mut err) = (Vec::new(), Vec::new(), None);
        let mut d = std::mem::take(&mut self.scratch);
        let mut sent = Vec::with_capacity(idx.len().min(self.chunk));
        let mut res = Ok(());
        for part in idx.chunks(self.chunk) {
            d.clear();
            sent.clear();
            for (k, &i) in part.iter().enumerate() {
                let seq = self.sock.next_seq();
                msg_add(&mut d, seq, set, &all[i], timeout(i), excl, k + 1 == part.len());
                sent.push((seq, i));
            }
            let (first, last) = (sent[0].0, sent[sent.len() - 1].0);
            let replies = match self.sock.request_failures(d.as_bytes(), first, last) {
                Ok(r) => r,
                Err(e) => {
                    res = Err(io_error(set, e));
                    break;
                }
            };
            let (n, p, e) = classify_acks(&sent, &replies);
            new.extend(n);
            present.extend(p);
            err = err.or(e);
        }
        self.scratch = d;
        res.map(|()| (new, present, err))
    }
}
