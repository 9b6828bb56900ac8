//! DNS messages as plain events with text fields: what `parse_packet` and the
//! NFLOG reader hand to Python and tools. The daemon's hot path does not build
//! these (see `pipeline`); both read the same `decode::Chain`.

use std::borrow::Cow;
use std::net::IpAddr;

use hickory_proto::rr::{RData, RecordType};

use super::decode::{decode, Chain, Decoded};
use super::name::name_text;
use super::packet::{self, Skip, Transport};

/// One answer record reachable from the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// Owner name, lower-case, no trailing dot.
    pub name: String,
    /// "A", "AAAA", "CNAME", ...; unknown types as "TYPE65".
    pub rtype: Cow<'static, str>,
    /// Seconds the record may be cached.
    pub ttl: u32,
    /// Address text for A/AAAA, target name for CNAME, else the record's text.
    pub data: String,
}

/// The DNS part of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    /// QR bit: an answer, not a query.
    pub is_response: bool,
    /// Transaction id.
    pub txid: u16,
    /// RCODE (NOERROR = 0).
    pub rcode: u16,
    /// Lower-case, no trailing dot; "" when the message has no question.
    pub qname: String,
    /// Question type ("A", "AAAA", "HTTPS", ...).
    pub qtype: Cow<'static, str>,
    /// Answer records in wire order, only those reachable from `qname`.
    pub answers: Vec<DnsAnswer>,
    /// `qname` followed by every CNAME and SVCB/HTTPS target on its chain, in order.
    pub chain: Vec<String>,
    /// A/AAAA data reachable from `qname`, then SVCB/HTTPS address hints; deduplicated.
    pub addresses: Vec<IpAddr>,
    /// The addresses that came only from SVCB/HTTPS hints.
    pub hints: Vec<IpAddr>,
    /// Smallest TTL among `answers` (0 when there are none).
    pub min_ttl: u32,
}

/// A DNS message seen in a packet, with the packet's addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEvent {
    /// Source address of the packet.
    pub src: IpAddr,
    /// Destination address of the packet.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// UDP or TCP.
    pub transport: Transport,
    /// The message.
    pub msg: DnsMessage,
    /// Hold mode: the id of the queued packet it came in, to accept it by.
    pub held: Option<u32>,
}

/// Parse one IP packet (UDP or TCP, port 53) into the event of its first DNS message.
pub fn parse_packet(data: &[u8]) -> Result<DnsEvent, Skip> {
    let seg = packet::parse_ip(data)?;
    let first = seg.dns_messages()?.next().ok_or(Skip::Incomplete)?;
    Ok(event(&seg, parse_message(first)?))
}

/// Parse every DNS message of one IP packet (a TCP segment may carry several)
/// and append the events to `out`. Returns how many were appended; an error
/// only if not even the first message could be had.
pub fn parse_packet_into(data: &[u8], out: &mut Vec<DnsEvent>) -> Result<usize, Skip> {
    let seg = packet::parse_ip(data)?;
    let mut n = 0;
    for raw in seg.dns_messages()? {
        match parse_message(raw) {
            Ok(m) => {
                out.push(event(&seg, m));
                n += 1;
            }
            // Later messages of a segment are a bonus; the first decides the verdict.
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    if n == 0 {
        return Err(Skip::Incomplete);
    }
    Ok(n)
}

/// The event of message `msg`, with the addressing of the packet it came in.
pub(super) fn event(seg: &packet::Segment<'_>, msg: DnsMessage) -> DnsEvent {
    DnsEvent {
        src: seg.src,
        dst: seg.dst,
        sport: seg.sport,
        dport: seg.dport,
        transport: seg.transport,
        msg,
        held: None,
    }
}

/// Decode one DNS message (no transport framing).
pub fn parse_message(raw: &[u8]) -> Result<DnsMessage, Skip> {
    Ok(digest(&decode(raw)?))
}

fn digest(d: &Decoded) -> DnsMessage {
    let question = d.question.as_ref();
    let chain = Chain::follow(d);
    let mut addresses = Vec::new();
    let mut hints = Vec::new();
    chain.addresses(|ip, from_hint| {
        if !addresses.contains(&ip) {
            addresses.push(ip);
            if from_hint {
                hints.push(ip);
            }
        }
    });
    let answers = chain
        .records
        .iter()
        .map(|r| DnsAnswer {
            name: name_text(&r.name),
            rtype: type_text(r.record_type()),
            ttl: r.ttl,
            data: match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::CNAME(c) => name_text(&c.0),
                other => other.to_string(),
            },
        })
        .collect();
    DnsMessage {
        is_response: d.is_response,
        txid: d.id,
        rcode: d.rcode,
        qname: question.map(|q| name_text(&q.name)).unwrap_or_default(),
        qtype: question.map(|q| type_text(q.query_type)).unwrap_or(Cow::Borrowed("")),
        answers,
        chain: chain.names.iter().map(|n| name_text(n)).collect(),
        addresses,
        hints,
        min_ttl: chain.min_ttl(),
    }
}

/// Record type as text: the mnemonic, or "TYPEnnn" (RFC 3597) for unknown ones.
fn type_text(t: RecordType) -> Cow<'static, str> {
    match t {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(<&'static str>::from(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{self, Msg, CLASS_CH, TYPE_A, TYPE_HTTPS, TYPE_SVCB};

    #[test]
    fn cname_chain_filters_unrelated_records() {
        let m = Msg::new(0x1234, true, "WWW.Example.COM", 1, 5)
            .cname("www.example.com", 300, "Edge.example.NET")
            .a("evil.example.org", 60, [198, 51, 100, 66])
            .cname("edge.example.net", 120, "a1.cdn.example")
            .a("A1.cdn.example", 30, [192, 0, 2, 10])
            .a("a1.cdn.example", 30, [192, 0, 2, 10]);
        let d = parse_message(&m.buf).unwrap();
        assert!(d.is_response);
        assert_eq!(d.txid, 0x1234);
        assert_eq!(d.qname, "www.example.com");
        assert_eq!(d.qtype, "A");
        assert_eq!(d.chain, ["www.example.com", "edge.example.net", "a1.cdn.example"]);
        assert_eq!(d.answers.len(), 4);
        assert_eq!(d.answers[0].rtype, "CNAME");
        assert_eq!(d.answers[0].data, "edge.example.net");
        assert_eq!(d.answers[2].name, "a1.cdn.example");
        assert_eq!(d.addresses, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert!(d.hints.is_empty());
        assert_eq!(d.min_ttl, 30);
    }

    #[test]
    fn records_before_the_cname_that_leads_to_them_still_count() {
        let m = Msg::new(1, true, "a.example", TYPE_A, 2).a("b.example", 10, [192, 0, 2, 5]).cname(
            "a.example",
            10,
            "b.example",
        );
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.chain, ["a.example", "b.example"]);
        assert_eq!(d.addresses, vec!["192.0.2.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn cname_loop_and_long_chain_are_bounded() {
        let m = Msg::new(1, true, "a.example", 1, 3)
            .cname("a.example", 10, "b.example")
            .cname("b.example", 10, "a.example")
            .a("b.example", 10, [192, 0, 2, 1]);
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.chain, ["a.example", "b.example"]);
        assert_eq!(d.addresses.len(), 1);

        let mut m = Msg::new(2, true, "n0.example", 1, 40);
        for i in 0..40 {
            m = m.cname(&format!("n{i}.example"), 10, &format!("n{}.example", i + 1));
        }
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.chain.len(), crate::dns::decode::MAX_CHAIN);
        assert_eq!(d.answers.len(), crate::dns::decode::MAX_CHAIN);
    }

    #[test]
    fn only_class_in_counts() {
        // An IN question answered with a CH-class A record: the record is ignored.
        let m = Msg::new(1, true, "a.example", TYPE_A, 2)
            .rr_class("a.example", TYPE_A, CLASS_CH, 10, &[192, 0, 2, 66])
            .a("a.example", 10, [192, 0, 2, 1]);
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.addresses, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.answers.len(), 1);
        // A CH-class question: nothing of it counts, whatever the records say.
        let m = Msg::with_class(2, true, "a.example", TYPE_A, CLASS_CH, 1).a(
            "a.example",
            10,
            [192, 0, 2, 1],
        );
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.qname, "a.example");
        assert!(d.chain.is_empty());
        assert!(d.addresses.is_empty());
    }

    /// An HTTPS answer shaped like the ones large CDNs serve: ServiceMode, target
    /// ".", alpn "h3,h2", both hint kinds and an opaque ech blob (key 5).
    fn cdn_https_rdata() -> Vec<u8> {
        let mut r = vec![0, 1, 0]; // priority 1, target "."
        r.extend_from_slice(&[0, 1, 0, 6, 2, b'h', b'3', 2, b'h', b'2']); // alpn
        r.extend_from_slice(&[0, 4, 0, 8, 192, 0, 2, 80, 192, 0, 2, 81]); // ipv4hint
        r.extend_from_slice(&[0, 5, 0, 4, 0xfe, 0x0d, 0x00, 0x00]); // ech (opaque)
        r.extend_from_slice(&[0, 6, 0, 16]); // ipv6hint
        r.extend_from_slice(&"2001:db8::80".parse::<std::net::Ipv6Addr>().unwrap().octets());
        r
    }

    #[test]
    fn https_hints_count_as_addresses_of_the_chain() {
        let m = Msg::new(7, true, "www.example.com", TYPE_HTTPS, 1).rr(
            "www.example.com",
            TYPE_HTTPS,
            300,
            &cdn_https_rdata(),
        );
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.qtype, "HTTPS");
        assert_eq!(d.chain, ["www.example.com"]);
        let want: Vec<IpAddr> = ["192.0.2.80", "192.0.2.81", "2001:db8::80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(d.addresses, want);
        assert_eq!(d.hints, want);
        assert_eq!(d.answers[0].rtype, "HTTPS");
        assert!(d.answers[0].data.contains("ipv4hint"), "{}", d.answers[0].data);
    }

    #[test]
    fn https_target_joins_the_chain_like_a_cname() {
        // ServiceMode with a target, AliasMode, and SVCB: each target is a chain name;
        // the target's A record counts, a hint already given by an A record is kept once.
        let m = Msg::new(8, true, "example.com", TYPE_HTTPS, 4)
            .https("example.com", 60, 1, "svc.cdn.example", &[[192, 0, 2, 9]], &[])
            .https("example.com", 60, 0, "alias.cdn.example", &[], &[])
            .a("svc.cdn.example", 60, [192, 0, 2, 9])
            .a("unrelated.example", 60, [198, 51, 100, 1]);
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.chain, ["example.com", "svc.cdn.example", "alias.cdn.example"]);
        assert_eq!(d.addresses, vec!["192.0.2.9".parse::<IpAddr>().unwrap()]);
        assert!(d.hints.is_empty(), "the hint was also an A record");
        let svcb = testutil::svcb_rdata(2, "", &[], &["2001:db8::9"]);
        let m = Msg::new(9, true, "_dns.resolver.example", TYPE_SVCB, 1).rr(
            "_dns.resolver.example",
            TYPE_SVCB,
            60,
            &svcb,
        );
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.hints, vec!["2001:db8::9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn unknown_types_and_no_question() {
        let m = Msg::new(3, true, "x.example", 4242, 1).rr("x.example", 4242, 5, &[9, 9]);
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.qtype, "TYPE4242");
        assert_eq!(d.answers[0].rtype, "TYPE4242");
        let mut empty = Msg::new(4, false, "q.example", 1, 0).buf;
        empty[5] = 0; // qdcount 0
        empty.truncate(12);
        let d = parse_message(&empty).unwrap();
        assert_eq!(d.qname, "");
        assert!(d.chain.is_empty());
        assert!(!d.is_response);
    }

    #[test]
    fn compression_loop_and_short_inputs_are_malformed() {
        // Question name is a pointer to itself.
        let mut m = Msg::new(5, true, "", 1, 0).buf;
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse_message(&m), Err(Skip::Malformed(_))));
        // Forward pointer.
        let mut m = Msg::new(5, true, "", 1, 0).buf;
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse_message(&m), Err(Skip::Malformed(_))));
        assert!(matches!(parse_message(&[]), Err(Skip::Malformed(_))));
        assert!(matches!(parse_message(&[0; 11]), Err(Skip::Malformed(_))));
        // Header promises an answer that is not there.
        let m = Msg::new(6, true, "a.example", 1, 1).buf;
        assert!(matches!(parse_message(&m), Err(Skip::Malformed(_))));
    }

    #[test]
    fn odd_label_bytes_are_escaped() {
        let mut m = Msg::new(7, false, "", 1, 0).buf;
        m.truncate(12);
        m.extend_from_slice(&[3, b'A', b'.', 0x07, 2, b'Z', b'\\', 0, 0, 1, 0, 1]);
        let d = parse_message(&m).unwrap();
        assert_eq!(d.qname, "a\\.\\007.z\\\\");
    }
}
