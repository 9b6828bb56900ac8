//! Reading netlink messages and attributes out of a received datagram.
//!
//! Everything here is bounds-checked: a truncated or lying length ends the
//! iteration instead of reading past the buffer.

use super::consts::{
    NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLA_HDRLEN, NLA_TYPE_MASK, NLMSG_ERROR, NLMSG_HDRLEN,
};

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One netlink message: the header fields and the payload after `nlmsghdr`.
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    /// `nlmsg_type`: NLMSG_* or the subsystem's `(subsys << 8) | command`.
    pub msg_type: u16,
    /// `nlmsg_flags` (NLM_F_*).
    pub flags: u16,
    /// `nlmsg_seq`: the request a reply answers.
    pub seq: u32,
    /// `nlmsg_pid`: the sender's port (0: the kernel).
    pub pid: u32,
    /// What follows the header, `nlmsg_len - 16` bytes.
    pub payload: &'a [u8],
}

impl<'a> NlMsg<'a> {
    /// For `NLMSG_ERROR`: the (negative) errno, 0 for a plain ack. Never
    /// `i32::MIN` (no kernel sends it; it reads as `-i32::MAX`), so callers can
    /// negate any code into an errno without overflow.
    pub fn error_code(&self) -> Option<i32> {
        if self.msg_type != NLMSG_ERROR {
            return None;
        }
        let code = i32::from_ne_bytes(self.payload.get(0..4)?.try_into().ok()?);
        Some(code.max(-i32::MAX))
    }

    /// For `NLMSG_ERROR`: the sequence number of the request it answers
    /// (the echoed request header's `nlmsg_seq`, which equals the ack's own seq).
    pub fn acked_seq(&self) -> Option<u32> {
        if self.msg_type != NLMSG_ERROR {
            return None;
        }
        ne_u32(self.payload, 4 + 8).or(Some(self.seq))
    }

    /// Attributes after a 4-byte `nfgenmsg`.
    pub fn nf_attrs(&self) -> AttrIter<'a> {
        attrs(self.payload.get(4..).unwrap_or(&[]))
    }
}

/// Iterate the messages in a datagram. Stops at the first malformed header;
/// `MessageIter::truncated()` tells whether that happened.
pub fn messages(buf: &[u8]) -> MessageIter<'_> {
    MessageIter { buf, pos: 0, truncated: false }
}

/// The messages of a datagram (see `messages`).
pub struct MessageIter<'a> {
    buf: &'a [u8],
    pos: usize,
    truncated: bool,
}

impl MessageIter<'_> {
    /// Whether the iteration stopped at a malformed header before the end.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = NlMsg<'a>;

    fn next(&mut self) -> Option<NlMsg<'a>> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let len = ne_u32(rest, 0).map(|l| l as usize);
        match len {
            Some(len) if len >= NLMSG_HDRLEN && len <= rest.len() => {
                let msg = NlMsg {
                    msg_type: ne_u16(rest, 4)?,
                    flags: ne_u16(rest, 6)?,
                    seq: ne_u32(rest, 8)?,
                    pid: ne_u32(rest, 12)?,
                    payload: &rest[NLMSG_HDRLEN..len],
                };
                self.pos += align4(len);
                Some(msg)
            }
            _ => {
                self.truncated = true;
                self.pos = self.buf.len();
                None
            }
        }
    }
}

/// One attribute; `ty` has the nested/byte-order flags removed.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    /// The attribute type, flags removed.
    pub ty: u16,
    /// NLA_F_NESTED was set.
    pub nested: bool,
    /// NLA_F_NET_BYTEORDER was set.
    pub net_byteorder: bool,
    /// The payload, `nla_len - 4` bytes (padding not included).
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The attributes inside this one.
    pub fn nested_attrs(&self) -> AttrIter<'a> {
        attrs(self.data)
    }

    /// The first byte.
    pub fn u8(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// The first 2 bytes, big-endian.
    pub fn be16(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.data.get(0..2)?.try_into().ok()?))
    }

    /// The first 4 bytes, big-endian.
    pub fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.data.get(0..4)?.try_into().ok()?))
    }

    /// The first 8 bytes, big-endian.
    pub fn be64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.data.get(0..8)?.try_into().ok()?))
    }

    /// A NUL-terminated (or unterminated) string attribute, lossily decoded.
    pub fn str(&self) -> String {
        let end = self.data.iter().position(|&c| c == 0).unwrap_or(self.data.len());
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }
}

/// Iterate the attributes in `buf`; stops at the first malformed one.
pub fn attrs(buf: &[u8]) -> AttrIter<'_> {
    AttrIter { buf, pos: 0 }
}

/// The attributes of a buffer (see `attrs`).
pub struct AttrIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> AttrIter<'a> {
    /// The first attribute of type `ty`.
    pub fn find(self, ty: u16) -> Option<Attr<'a>> {
        let mut it = self;
        Iterator::find(&mut it, |a| a.ty == ty)
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let rest = self.buf.get(self.pos..)?;
        let len = ne_u16(rest, 0)? as usize;
        let raw_ty = ne_u16(rest, 2)?;
        if len < NLA_HDRLEN || len > rest.len() {
            self.pos = self.buf.len();
            return None;
        }
        self.pos += align4(len);
        Some(Attr {
            ty: raw_ty & NLA_TYPE_MASK,
            nested: raw_ty & NLA_F_NESTED != 0,
            net_byteorder: raw_ty & NLA_F_NET_BYTEORDER != 0,
            data: &rest[NLA_HDRLEN..len],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::write::{Datagram, Nfgenmsg};

    #[test]
    fn round_trip_through_writer() {
        let mut d = Datagram::new();
        {
            let mut m = d.message(0x0609, 0, 1, Nfgenmsg::new(2, 0));
            m.attr_strz(2, "hr_vpn1");
            m.nest_start(7).attr_be32(6 | 0x4000, 3600).nest_end();
        }
        {
            let mut m = d.message(0x0609, 0, 2, Nfgenmsg::new(10, 0));
            m.attr_u8(1, 6);
        }
        let msgs: Vec<_> = messages(d.as_bytes()).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].seq, 2);
        let a: Vec<_> = msgs[0].nf_attrs().collect();
        assert_eq!(a[0].str(), "hr_vpn1");
        assert!(a[1].nested);
        let inner = a[1].nested_attrs().find(6).unwrap();
        assert!(inner.net_byteorder);
        assert_eq!(inner.be32(), Some(3600));
    }

    #[test]
    fn lying_lengths_stop_iteration() {
        let mut buf = vec![0u8; 20];
        buf[0..4].copy_from_slice(&200u32.to_ne_bytes());
        let mut it = messages(&buf);
        assert!(it.next().is_none());
        assert!(it.truncated());
        let attr = [0xff, 0xff, 1, 0, 1, 2];
        assert_eq!(attrs(&attr).count(), 0);
        assert_eq!(attrs(&[3, 0]).count(), 0);
    }

    /// Found by fuzz/fuzz_targets/ipset.rs: an ack with the code i32::MIN made
    /// every `-code` (ipset's classify_acks, the sessions, `dump`) overflow.
    #[test]
    fn error_code_is_never_i32_min() {
        let mut buf = Vec::new();
        for code in [i32::MIN, -i32::MAX, -2, 0, 7] {
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&[0; 10]);
            buf.extend_from_slice(&code.to_ne_bytes());
        }
        let codes: Vec<i32> = messages(&buf).filter_map(|m| m.error_code()).collect();
        assert_eq!(codes, [-i32::MAX, -i32::MAX, -2, 0, 7]);
        let acks = std::collections::HashMap::from([(1, codes[0])]);
        let (_, _, err) = crate::ipset::message::classify_acks(&[(1, 0)], &acks);
        assert_eq!(err, Some(i32::MAX));
    }
}
