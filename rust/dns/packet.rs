//! IP/UDP/TCP decoding down to the DNS message, for packets the kernel hands us.
//!
//! Everything is bounds-checked and allocation-free: the result borrows the
//! input. Anything that is not whole DNS on port 53 is classified, never guessed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// include/uapi/linux/in.h, in6.h
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_NONE: u8 = 59;
const IPPROTO_DSTOPTS: u8 = 60;

const DNS_PORT: u16 = 53;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;
/// More IPv6 extension headers than this is hostile, not real traffic.
const MAX_EXT_HEADERS: usize = 8;

/// The transport a DNS message came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: one message per datagram.
    Udp,
    /// TCP: messages behind a 2-byte length prefix.
    Tcp,
}

impl Transport {
    /// "udp" or "tcp".
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Why a packet yields no DNS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Broken headers (or a DNS message that does not decode).
    Malformed(&'static str),
    /// Cut short: a first fragment, a truncated copy, a TCP segment without a
    /// whole length-prefixed message.
    Incomplete,
    /// Well-formed but not DNS: other protocol or port, non-first fragment,
    /// TCP segment without payload.
    NonDns,
}

/// The transport payload of a port-53 packet, with its addressing.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// UDP or TCP.
    pub transport: Transport,
    /// TCP: the sequence number of the payload's first byte (0 for UDP).
    pub seq: u32,
    /// TCP: FIN or RST, the sender is done (the payload may be empty then).
    pub closing: bool,
    /// UDP: the datagram payload. TCP: the segment payload (length-prefixed messages).
    pub payload: &'a [u8],
}

impl<'a> Segment<'a> {
    /// The DNS messages in the payload. UDP: exactly one. TCP: every whole
    /// length-prefixed message at the start of the segment; `Err(Incomplete)` if
    /// not even the first one is whole.
    pub fn dns_messages(&self) -> Result<DnsMessages<'a>, Skip> {
        match self.transport {
            Transport::Udp => Ok(DnsMessages { rest: self.payload, tcp: false }),
            // A bare FIN or RST ends a connection: no DNS in it.
            Transport::Tcp if self.payload.is_empty() => Err(Skip::NonDns),
            Transport::Tcp => {
                let first = tcp_message(self.payload).ok_or(Skip::Incomplete)?;
                if first.is_empty() {
                    return Err(Skip::Malformed("zero-length DNS message on TCP"));
                }
                Ok(DnsMessages { rest: self.payload, tcp: true })
            }
        }
    }
}

/// The message behind a 2-byte length prefix, if it is all there.
fn tcp_message(b: &[u8]) -> Option<&[u8]> {
    let len = usize::from(be16(b, 0)?);
    b.get(2..2 + len)
}

/// Iterator over the DNS messages of one segment (see `Segment::dns_messages`).
pub struct DnsMessages<'a> {
    rest: &'a [u8],
    tcp: bool,
}

impl<'a> Iterator for DnsMessages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if !self.tcp {
            let all = std::mem::take(&mut self.rest);
            return (!all.is_empty()).then_some(all);
        }
        let msg = tcp_message(self.rest)?;
        if msg.is_empty() {
            self.rest = &[];
            return None;
        }
        self.rest = self.rest.get(2 + msg.len()..).unwrap_or(&[]);
        Some(msg)
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Decode an IPv4 or IPv6 packet down to a UDP/TCP segment to or from port 53.
pub fn parse_ip(data: &[u8]) -> Result<Segment<'_>, Skip> {
    match data.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(data),
        Some(6) => parse_ipv6(data),
        Some(_) => Err(Skip::Malformed("not IPv4 or IPv6")),
        None => Err(Skip::Malformed("empty packet")),
    }
}

fn parse_ipv4(data: &[u8]) -> Result<Segment<'_>, Skip> {
    if data.len() < 20 {
        return Err(Skip::Malformed("IPv4 header truncated"));
    }
    let ihl = usize::from(data[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Skip::Malformed("IPv4 IHL below 5"));
    }
    if ihl > data.len() {
        return Err(Skip::Malformed("IPv4 options truncated"));
    }
    let total = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if total < ihl {
        return Err(Skip::Malformed("IPv4 total length below header length"));
    }
    let frag = u16::from_be_bytes([data[6], data[7]]);
    let proto = data[9];
    if frag & 0x1fff != 0 {
        // A non-first fragment has no transport header.
        return Err(Skip::NonDns);
    }
    let src = IpAddr::V4(Ipv4Addr::new(data[12], data[13], data[14], data[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(data[16], data[17], data[18], data[19]));
    // A copy shorter than the IP length (copy_range) is cut short; extra bytes
    // after it (Ethernet padding) are not part of the packet.
    let cut = total > data.len();
    let body = &data[ihl..total.min(data.len())];
    let more_fragments = frag & 0x2000 != 0;
    transport(src, dst, proto, body, cut || more_fragments)
}

fn parse_ipv6(data: &[u8]) -> Result<Segment<'_>, Skip> {
    if data.len() < 40 {
        return Err(Skip::Malformed("IPv6 header truncated"));
    }
    let plen = usize::from(u16::from_be_bytes([data[4], data[5]]));
    let mut next = data[6];
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&data[8..24]);
    dst.copy_from_slice(&data[24..40]);
    let (src, dst) = (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)));
    // Payload length 0 is a jumbogram (hop-by-hop option): take what we have.
    let (mut body, mut cut) = if plen == 0 {
        (&data[40..], false)
    } else {
        (&data[40..(40 + plen).min(data.len())], 40 + plen > data.len())
    };
    for _ in 0..=MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                let (nh, len) = match (body.first(), body.get(1)) {
                    (Some(&nh), Some(&l)) => (nh, l),
                    _ => return Err(Skip::Malformed("IPv6 extension header truncated")),
                };
                let hdr_len = if next == IPPROTO_AH {
                    (usize::from(len) + 2) * 4
                } else {
                    (usize::from(len) + 1) * 8
                };
                body = body
                    .get(hdr_len..)
                    .ok_or(Skip::Malformed("IPv6 extension header truncated"))?;
                next = nh;
            }
            IPPROTO_FRAGMENT => {
                let hdr = body.get(..8).ok_or(Skip::Malformed("IPv6 fragment header truncated"))?;
                let off_flags = u16::from_be_bytes([hdr[2], hdr[3]]);
                if off_flags >> 3 != 0 {
                    return Err(Skip::NonDns);
                }
                cut |= off_flags & 1 != 0;
                next = hdr[0];
                body = &body[8..];
            }
            IPPROTO_NONE => return Err(Skip::NonDns),
            proto => return transport(src, dst, proto, body, cut),
        }
    }
    Err(Skip::Malformed("too many IPv6 extension headers"))
}

/// `cut`: the IP payload we hold is not the whole of it (truncated copy or a first fragment).
fn transport(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    body: &[u8],
    cut: bool,
) -> Result<Segment<'_>, Skip> {
    match proto {
        IPPROTO_UDP => {
            let hdr = body.get(..8).ok_or(if cut {
                Skip::Incomplete
            } else {
                Skip::Malformed("UDP header truncated")
            })?;
            let sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            let dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            if sport != DNS_PORT && dport != DNS_PORT {
                return Err(Skip::NonDns);
            }
            let ulen = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
            if ulen < 8 {
                return Err(Skip::Malformed("UDP length below 8"));
            }
            if ulen > body.len() {
                return Err(if cut {
                    Skip::Incomplete
                } else {
                    Skip::Malformed("UDP length beyond the IP packet")
                });
            }
            if cut {
                return Err(Skip::Incomplete);
            }
            let payload = &body[8..ulen];
            if payload.is_empty() {
                return Err(Skip::Malformed("empty UDP payload on port 53"));
            }
            let transport = Transport::Udp;
            Ok(Segment { src, dst, sport, dport, transport, seq: 0, closing: false, payload })
        }
        IPPROTO_TCP => {
            let hdr = body.get(..20).ok_or(if cut {
                Skip::Incomplete
            } else {
                Skip::Malformed("TCP header truncated")
            })?;
            let sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            let dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            if sport != DNS_PORT && dport != DNS_PORT {
                return Err(Skip::NonDns);
            }
            let doff = usize::from(hdr[12] >> 4) * 4;
            if doff < 20 {
                return Err(Skip::Malformed("TCP data offset below 5"));
            }
            let payload = body.get(doff..).ok_or(Skip::Malformed("TCP options truncated"))?;
            let closing = hdr[13] & (TCP_FIN | TCP_RST) != 0;
            if payload.is_empty() && !closing {
                // SYN, ACK: part of a DNS connection, but no DNS in it.
                return Err(Skip::NonDns);
            }
            let seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            // A cut TCP payload may still hold whole messages: dns_messages decides.
            let transport = Transport::Tcp;
            Ok(Segment { src, dst, sport, dport, transport, seq, closing, payload })
        }
        _ => Err(Skip::NonDns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ipv4, ipv6, tcp, udp};

    #[test]
    fn udp_v4() {
        let p = ipv4(IPPROTO_UDP, &udp(53, 40000, b"0123456789ab"));
        let s = parse_ip(&p).unwrap();
        assert_eq!(s.src.to_string(), "192.0.2.1");
        assert_eq!(s.sport, 53);
        assert_eq!(s.payload, b"0123456789ab");
        assert_eq!(s.dns_messages().unwrap().collect::<Vec<_>>(), vec![&b"0123456789ab"[..]]);
    }

    #[test]
    fn ipv4_options_and_bad_ihl() {
        let mut p = ipv4(IPPROTO_UDP, &udp(53, 1, b"x"));
        // IHL 6 with a 4-byte NOP option.
        p[0] = 0x46;
        p.splice(20..20, [1u8, 1, 1, 0]);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(parse_ip(&p).unwrap().payload, b"x");
        p[0] = 0x44;
        assert_eq!(parse_ip(&p).unwrap_err(), Skip::Malformed("IPv4 IHL below 5"));
        p[0] = 0x4f;
        assert_eq!(parse_ip(&p).unwrap_err(), Skip::Malformed("IPv4 options truncated"));
    }

    #[test]
    fn truncations_never_read_past() {
        let p = ipv4(IPPROTO_UDP, &udp(53, 1, b"0123456789ab"));
        for n in 0..p.len() {
            let r = parse_ip(&p[..n]);
            assert!(r.is_err(), "prefix {n} parsed");
        }
        assert_eq!(parse_ip(&p[..30]).unwrap_err(), Skip::Incomplete);
        assert!(matches!(parse_ip(&[]), Err(Skip::Malformed(_))));
    }

    #[test]
    fn non_dns_and_fragments() {
        assert_eq!(parse_ip(&ipv4(IPPROTO_UDP, &udp(123, 1, b"x"))).unwrap_err(), Skip::NonDns);
        assert_eq!(parse_ip(&ipv4(1, &[8, 0, 0, 0])).unwrap_err(), Skip::NonDns);
        let mut p = ipv4(IPPROTO_UDP, &udp(53, 1, b"x"));
        p[6] = 0x00;
        p[7] = 0x10; // offset 16*8
        assert_eq!(parse_ip(&p).unwrap_err(), Skip::NonDns);
        p[6] = 0x20; // MF, offset 0: first fragment
        p[7] = 0;
        assert_eq!(parse_ip(&p).unwrap_err(), Skip::Incomplete);
    }

    #[test]
    fn tcp_length_prefix() {
        let mut two = vec![0, 3];
        two.extend_from_slice(b"abc");
        two.extend_from_slice(&[0, 2]);
        two.extend_from_slice(b"de");
        let p = ipv4(IPPROTO_TCP, &tcp(53, &two));
        let s = parse_ip(&p).unwrap();
        assert_eq!(s.transport, Transport::Tcp);
        let m: Vec<_> = s.dns_messages().unwrap().collect();
        assert_eq!(m, vec![&b"abc"[..], &b"de"[..]]);
        let p = ipv4(IPPROTO_TCP, &tcp(53, &[0, 9, 1, 2]));
        assert_eq!(parse_ip(&p).unwrap().dns_messages().err(), Some(Skip::Incomplete));
        let p = ipv4(IPPROTO_TCP, &tcp(53, &[0]));
        assert_eq!(parse_ip(&p).unwrap().dns_messages().err(), Some(Skip::Incomplete));
        let p = ipv4(IPPROTO_TCP, &tcp(53, &[]));
        assert_eq!(parse_ip(&p).unwrap_err(), Skip::NonDns);
        let p = ipv4(IPPROTO_TCP, &tcp(53, &[0, 0, 0, 0]));
        assert!(matches!(parse_ip(&p).unwrap().dns_messages(), Err(Skip::Malformed(_))));
        // TCP header shorter than 20 bytes.
        let p = ipv4(IPPROTO_TCP, &[0, 53, 1, 1, 0, 0]);
        assert!(matches!(parse_ip(&p), Err(Skip::Malformed(_))));
    }

    #[test]
    fn ipv6_extension_headers() {
        let u = udp(53, 1, b"hello");
        let mut body = vec![IPPROTO_DSTOPTS, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop, PadN
        body.extend_from_slice(&[IPPROTO_FRAGMENT, 0, 1, 4, 0, 0, 0, 0]); // dest opts
        body.extend_from_slice(&[IPPROTO_UDP, 0, 0, 0, 0, 0, 0, 1]); // fragment, offset 0, M=0
        body.extend_from_slice(&u);
        let p = ipv6(IPPROTO_HOPOPTS, &body);
        let s = parse_ip(&p).unwrap();
        assert_eq!(s.payload, b"hello");
        assert_eq!(s.src.to_string(), "2001:db8::1");
        // Non-first fragment.
        let mut nf = p.clone();
        nf[40 + 16 + 3] = 0x08;
        assert_eq!(parse_ip(&nf).unwrap_err(), Skip::NonDns);
        // First fragment with more to come.
        let mut ff = p.clone();
        ff[40 + 16 + 3] = 0x01;
        assert_eq!(parse_ip(&ff).unwrap_err(), Skip::Incomplete);
        // A long chain of destination-options headers is refused, not walked forever.
        let mut chain = Vec::new();
        for _ in 0..40 {
            chain.extend_from_slice(&[IPPROTO_DSTOPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        assert!(matches!(parse_ip(&ipv6(IPPROTO_DSTOPTS, &chain)), Err(Skip::Malformed(_))));
        // An extension header claiming more than the packet holds.
        let bad = ipv6(IPPROTO_HOPOPTS, &[IPPROTO_UDP, 200, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(parse_ip(&bad), Err(Skip::Malformed(_))));
        assert_eq!(parse_ip(&ipv6(IPPROTO_NONE, &[])).unwrap_err(), Skip::NonDns);
    }
}
