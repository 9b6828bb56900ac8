//! Building netfilter netlink messages.
//!
//! Header fields of `nlmsghdr` and `nlattr` are in host byte order (the kernel
//! reads them natively); payload values that the protocol defines as
//! big-endian are written by the callers with `to_be_bytes()`.

use super::consts::{NLA_F_NESTED, NLA_HDRLEN, NLMSG_HDRLEN, NLM_F_REQUEST};

/// `struct nfgenmsg`: family, version, and `res_id` (big-endian; the NFLOG group).
///
/// neli's `Genlmsghdr` always writes 0 where `res_id` goes, so it cannot bind
/// an NFLOG group: this is the netfilter header written out by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nfgenmsg {
    /// AF_* (or NFPROTO_*) the message is about.
    pub family: u8,
    /// NFNETLINK_V0.
    pub version: u8,
    /// Group, queue or subsystem, per message type.
    pub res_id: u16,
}

impl Nfgenmsg {
    /// Bytes on the wire.
    pub const LEN: usize = 4;

    /// Version 0 (the only one).
    pub fn new(family: u8, res_id: u16) -> Self {
        Nfgenmsg { family, version: super::consts::NFNETLINK_V0, res_id }
    }

    /// The wire form.
    pub fn to_bytes(self) -> [u8; 4] {
        let id = self.res_id.to_be_bytes();
        [self.family, self.version, id[0], id[1]]
    }

    /// Read from the first 4 bytes of a payload; None if it is shorter.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(Nfgenmsg { family: b[0], version: b[1], res_id: u16::from_be_bytes([b[2], b[3]]) })
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A buffer holding one or more netlink messages, sent as one datagram.
#[derive(Debug, Default, Clone)]
pub struct Datagram {
    buf: Vec<u8>,
    messages: usize,
}

impl Datagram {
    /// An empty datagram.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty datagram with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Datagram { buf: Vec::with_capacity(bytes), messages: 0 }
    }

    /// Start a message; it is complete when the returned writer is dropped or finished.
    /// `NLM_F_REQUEST` is always set.
    pub fn message(
        &mut self,
        msg_type: u16,
        flags: u16,
        seq: u32,
        nfgen: Nfgenmsg,
    ) -> MsgWriter<'_> {
        self.messages += 1;
        MsgWriter::begin(&mut self.buf, msg_type, flags | NLM_F_REQUEST, seq, nfgen)
    }

    /// Messages started.
    #[cfg(test)]
    pub fn message_count(&self) -> usize {
        self.messages
    }

    /// The messages, ready to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empty it for reuse (the buffer is kept).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.messages = 0;
    }
}

/// Writes one message (header, nfgenmsg, attributes) at the end of a buffer.
/// The length fields are patched when the writer finishes (or is dropped).
pub struct MsgWriter<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    nests: Vec<usize>,
}

impl<'a> MsgWriter<'a> {
    fn begin(buf: &'a mut Vec<u8>, msg_type: u16, flags: u16, seq: u32, nfgen: Nfgenmsg) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in finish()
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
        buf.extend_from_slice(&nfgen.to_bytes());
        debug_assert_eq!(buf.len() - start, NLMSG_HDRLEN + Nfgenmsg::LEN);
        MsgWriter { buf, start, nests: Vec::new() }
    }

    /// An attribute with raw data (padded to 4 bytes).
    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + data.len();
        // nla_len is u16: callers only put small values here (names, addresses).
        debug_assert!(len <= u16::MAX as usize);
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A one-byte attribute.
    pub fn attr_u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.attr(ty, &[v])
    }

    /// A big-endian u16; the caller ORs in `NLA_F_NET_BYTEORDER` where the protocol wants it.
    pub fn attr_be16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    /// A big-endian u32; the caller ORs in `NLA_F_NET_BYTEORDER` where the protocol wants it.
    pub fn attr_be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    /// A big-endian u64 (nf_tables timeouts; no byte-order flag there).
    pub fn attr_be64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    /// A NUL-terminated string.
    pub fn attr_strz(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data)
    }

    /// Open a nested attribute (`NLA_F_NESTED` is added); close it with `nest_end`.
    pub fn nest_start(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Close the innermost open nest (its length is written now).
    pub fn nest_end(&mut self) -> &mut Self {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn pad(&mut self) {
        let padded = self.start + align4(self.buf.len() - self.start);
        self.buf.resize(padded, 0);
    }

    /// Close open nests and write the message length.
    pub fn finish(self) {
        // Drop does the work; this name makes the end of a message visible at call sites.
    }
}

impl Drop for MsgWriter<'_> {
    fn drop(&mut self) {
        while !self.nests.is_empty() {
            self.nest_end();
        }
        let len = (self.buf.len() - self.start) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfgenmsg_res_id_is_big_endian() {
        assert_eq!(Nfgenmsg::new(2, 100).to_bytes(), [2, 0, 0, 100]);
        assert_eq!(Nfgenmsg::new(10, 0x1234).to_bytes(), [10, 0, 0x12, 0x34]);
        assert_eq!(Nfgenmsg::from_bytes(&[10, 0, 0x12, 0x34]), Some(Nfgenmsg::new(10, 0x1234)));
    }

    #[test]
    fn message_lengths_and_padding() {
        let mut d = Datagram::new();
        {
            let mut m = d.message(0x0601, 0x0004, 7, Nfgenmsg::new(2, 0));
            m.attr_u8(1, 6);
            m.nest_start(7).attr_be32(6 | 0x4000, 600).nest_end();
            m.finish();
        }
        let b = d.as_bytes();
        // 16 header + 4 nfgen + 8 (u8 attr padded) + 4 nest + 8 be32
        assert_eq!(b.len(), 40);
        assert_eq!(&b[0..4], &40u32.to_ne_bytes());
        assert_eq!(&b[28..30], &12u16.to_ne_bytes());
        assert_eq!(&b[30..32], &(7u16 | NLA_F_NESTED).to_ne_bytes());
        assert_eq!(&b[36..40], &[0, 0, 0x02, 0x58]);
        assert_eq!(d.message_count(), 1);
    }
}
