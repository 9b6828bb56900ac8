//! DNS messages (hickory-proto) turned into plain events: the question, the
//! answers reachable from it through the CNAME chain, and their addresses.
//!
//! A hostile answer may carry records for names nobody asked about; only
//! records whose owner is the question name or a CNAME target on its chain are
//! kept, so an address can only ever be credited to a name that led to it.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::packet::{self, Skip, Transport};

/// Longest CNAME chain followed (question name included); real chains are 1-5.
pub const MAX_CHAIN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// Owner name, lower-case, no trailing dot.
    pub name: String,
    /// "A", "AAAA", "CNAME", ...; unknown types as "TYPE65".
    pub rtype: Cow<'static, str>,
    pub ttl: u32,
    /// Address text for A/AAAA, target name for CNAME, else the record's text.
    pub data: String,
}

/// The DNS part of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub is_response: bool,
    pub txid: u16,
    pub rcode: u16,
    /// Lower-case, no trailing dot; "" when the message has no question.
    pub qname: String,
    pub qtype: Cow<'static, str>,
    /// Answer records in wire order, only those reachable from `qname`.
    pub answers: Vec<DnsAnswer>,
    /// `qname` followed by every CNAME target on its chain, in order.
    pub chain: Vec<String>,
    /// A/AAAA data reachable from `qname`, deduplicated, in wire order.
    pub addresses: Vec<IpAddr>,
    /// Smallest TTL among `answers` (0 when there are none).
    pub min_ttl: u32,
}

/// A DNS message seen in a packet, with the packet's addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEvent {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub msg: DnsMessage,
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

fn event(seg: &packet::Segment<'_>, msg: DnsMessage) -> DnsEvent {
    DnsEvent {
        src: seg.src,
        dst: seg.dst,
        sport: seg.sport,
        dport: seg.dport,
        transport: seg.transport,
        msg,
    }
}

/// Decode one DNS message (no transport framing).
pub fn parse_message(raw: &[u8]) -> Result<DnsMessage, Skip> {
    // The header alone is 12 bytes; hickory would reject it too, this is just cheaper.
    if raw.len() < 12 {
        return Err(Skip::Malformed("DNS message shorter than its header"));
    }
    let msg = Message::from_vec(raw).map_err(|_| Skip::Malformed("DNS message does not decode"))?;
    Ok(digest(&msg))
}

fn digest(msg: &Message) -> DnsMessage {
    let meta = &msg.metadata;
    let question = msg.queries.first();
    let mut out = DnsMessage {
        is_response: meta.message_type == MessageType::Response,
        txid: meta.id,
        rcode: u16::from(meta.response_code),
        qname: question.map(|q| name_text(&q.name)).unwrap_or_default(),
        qtype: question.map(|q| type_text(q.query_type)).unwrap_or(Cow::Borrowed("")),
        answers: Vec::new(),
        chain: Vec::new(),
        addresses: Vec::new(),
        min_ttl: 0,
    };
    let Some(question) = question else {
        return out;
    };
    let chain = follow_chain(&question.name, &msg.answers);
    out.chain.reserve(chain.len());
    out.chain.push(out.qname.clone());
    out.chain.extend(chain.iter().skip(1).map(|n| name_text(n)));

    let mut min_ttl = u32::MAX;
    for r in msg.answers.iter().filter(|r| chain.contains(&&r.name)) {
        let data = match &r.data {
            RData::A(a) => {
                push_unique(&mut out.addresses, IpAddr::V4(a.0));
                a.0.to_string()
            }
            RData::AAAA(a) => {
                push_unique(&mut out.addresses, IpAddr::V6(a.0));
                a.0.to_string()
            }
            RData::CNAME(c) => name_text(&c.0),
            other => other.to_string(),
        };
        min_ttl = min_ttl.min(r.ttl);
        out.answers.push(DnsAnswer {
            name: name_text(&r.name),
            rtype: type_text(r.record_type()),
            ttl: r.ttl,
            data,
        });
    }
    out.min_ttl = if out.answers.is_empty() { 0 } else { min_ttl };
    out
}

/// The question name and the CNAME targets reachable from it, in chain order.
/// Stops at `MAX_CHAIN` names and at a name already on the chain (a loop).
fn follow_chain<'m>(qname: &'m Name, answers: &'m [Record]) -> Vec<&'m Name> {
    let mut chain: Vec<&Name> = vec![qname];
    while chain.len() < MAX_CHAIN {
        let Some(&cur) = chain.last() else { break };
        // Name equality is case-insensitive, as DNS names are.
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name == *cur => Some(&c.0),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    chain
}

fn push_unique(v: &mut Vec<IpAddr>, ip: IpAddr) {
    if !v.contains(&ip) {
        v.push(ip);
    }
}

/// Record type as text: the mnemonic, or "TYPEnnn" (RFC 3597) for unknown ones.
fn type_text(t: RecordType) -> Cow<'static, str> {
    match t {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(<&'static str>::from(t)),
    }
}

/// A name as lower-case text without the trailing dot. Bytes that would be
/// ambiguous or unprintable are escaped as in zone files (`\.`, `\\`, `\DDD`).
pub fn name_text(name: &Name) -> String {
    let mut s = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        for &b in label {
            match b {
                b'A'..=b'Z' => s.push(char::from(b.to_ascii_lowercase())),
                b'.' | b'\\' => {
                    s.push('\\');
                    s.push(char::from(b));
                }
                0x21..=0x7e => s.push(char::from(b)),
                _ => {
                    let _ = write!(s, "\\{b:03}");
                }
            }
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny DNS message writer for tests (no compression unless asked).
    pub(crate) struct Msg {
        pub buf: Vec<u8>,
    }

    pub(crate) fn wire_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    impl Msg {
        pub fn new(txid: u16, response: bool, qname: &str, qtype: u16, ancount: u16) -> Msg {
            let mut buf = Vec::new();
            buf.extend_from_slice(&txid.to_be_bytes());
            buf.extend_from_slice(&(if response { 0x8180u16 } else { 0x0100 }).to_be_bytes());
            buf.extend_from_slice(&1u16.to_be_bytes());
            buf.extend_from_slice(&ancount.to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, 0]);
            buf.extend_from_slice(&wire_name(qname));
            buf.extend_from_slice(&qtype.to_be_bytes());
            buf.extend_from_slice(&1u16.to_be_bytes());
            Msg { buf }
        }

        pub fn rr(mut self, name: &str, rtype: u16, ttl: u32, rdata: &[u8]) -> Msg {
            self.buf.extend_from_slice(&wire_name(name));
            self.buf.extend_from_slice(&rtype.to_be_bytes());
            self.buf.extend_from_slice(&1u16.to_be_bytes());
            self.buf.extend_from_slice(&ttl.to_be_bytes());
            self.buf.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            self.buf.extend_from_slice(rdata);
            self
        }

        pub fn a(self, name: &str, ttl: u32, ip: [u8; 4]) -> Msg {
            self.rr(name, 1, ttl, &ip)
        }

        pub fn cname(self, name: &str, ttl: u32, target: &str) -> Msg {
            self.rr(name, 5, ttl, &wire_name(target))
        }
    }

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
        assert_eq!(d.min_ttl, 30);
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
        assert_eq!(d.chain.len(), MAX_CHAIN);
        assert_eq!(d.answers.len(), MAX_CHAIN);
    }

    #[test]
    fn unknown_types_and_no_question() {
        let m = Msg::new(3, true, "x.example", 65, 1).rr("x.example", 65, 5, &[0, 1, 0]);
        let d = parse_message(&m.buf).unwrap();
        assert_eq!(d.qtype, "HTTPS");
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

    /// The packets captured from the kernel by tests/fixtures/capture.py.
    fn fixtures() -> Vec<(String, String, String, Vec<u8>, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packets");
        let list = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        list.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let data = std::fs::read(dir.join(format!("{}.bin", f[0]))).unwrap();
                (f[0].to_string(), f[1].to_string(), f[2].to_string(), data, f[3].to_string())
            })
            .collect()
    }

    #[test]
    fn captured_fixtures() {
        let all = fixtures();
        assert!(all.len() >= 8);
        for (name, kind, qname, data, addrs) in all {
            let r = parse_packet(&data);
            match kind.as_str() {
                "dns" => {
                    let e = r.unwrap_or_else(|s| panic!("{name}: {s:?}"));
                    assert_eq!(e.msg.qname, qname, "{name}");
                    let got: Vec<String> = e.msg.addresses.iter().map(|a| a.to_string()).collect();
                    let want: Vec<String> =
                        addrs.split(',').filter(|a| *a != "-").map(String::from).collect();
                    assert_eq!(got, want, "{name}");
                }
                "malformed" => assert!(matches!(r, Err(Skip::Malformed(_))), "{name}: {r:?}"),
                "incomplete" => assert_eq!(r.err(), Some(Skip::Incomplete), "{name}"),
                "non_dns" => assert_eq!(r.err(), Some(Skip::NonDns), "{name}"),
                other => panic!("{name}: unknown kind {other}"),
            }
        }
    }

    #[test]
    fn tcp_fixture_yields_every_message() {
        let (_, _, _, data, _) =
            fixtures().into_iter().find(|f| f.0 == "tcp4_two_messages").unwrap();
        let mut out = Vec::new();
        assert_eq!(parse_packet_into(&data, &mut out), Ok(2));
        assert_eq!(out[1].msg.qname, "second.example");
    }

    /// xorshift64*: a deterministic PRNG, so a failure reproduces exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Mutate captured packets (bit flips, byte stores, truncation, splices,
    /// length-field clobbering) and feed random bytes: nothing may panic.
    /// Also asserts some mutants still parse, so the loop is not testing only
    /// the first bounds check.
    #[test]
    fn fuzz_mutations_never_panic() {
        let seeds: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.3).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut parsed = 0;
        let mut out = Vec::new();
        for i in 0..60_000 {
            let mut p = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                let len = p.len();
                match rng.below(6) {
                    0 if len > 0 => p[rng.below(len)] ^= 1 << rng.below(8),
                    1 if len > 0 => p[rng.below(len)] = rng.next() as u8,
                    2 => p.truncate(rng.below(len + 1)),
                    3 if len > 0 => {
                        let at = rng.below(len);
                        let n = rng.below(16);
                        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                        p.splice(at..at, bytes);
                    }
                    // DNS length fields and counts sit at small offsets after
                    // the headers: make them huge or zero.
                    4 if len > 2 => {
                        let at = rng.below(len - 1);
                        let v = [0x00, 0xff, 0xc0][rng.below(3)];
                        p[at] = v;
                        p[at + 1] = v;
                    }
                    _ => {
                        let n = rng.below(96);
                        p = (0..n).map(|_| rng.next() as u8).collect();
                        if n > 0 {
                            p[0] = [0x45, 0x46, 0x60, 0x4f][rng.below(4)];
                        }
                    }
                }
            }
            if parse_packet(&p).is_ok() {
                parsed += 1;
            }
            out.clear();
            let _ = parse_packet_into(&p, &mut out);
        }
        assert!(parsed > 1000, "only {parsed} mutants parsed");
    }
}
