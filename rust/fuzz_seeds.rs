//! Seeds for the cargo-fuzz targets in `fuzz/`: the packets captured from the
//! kernel (tests/fixtures/packets) and the messages the unit tests build, in
//! each target's input format (see the doc comment of each target).
//!
//! Not run by `cargo test`; write them with
//! `cargo test --lib fuzz_seeds -- --ignored` (into fuzz/corpus/<target>/).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use crate::conntrack::message::fixtures::{as_destroy, captured_v4, tuple_msg};
use crate::ipset::{add_datagram, Entry};
use crate::nftables::{newsetelem_batch, NftSetRef};
use crate::nl::consts::{NLA_F_NESTED, NLA_F_NET_BYTEORDER};
use crate::nl::{Datagram, Nfgenmsg};
use crate::testutil::{
    ipv4, ipv6, nest, nla, nlmsg, svcb_rdata, tcp, udp, udp4_answer, Msg, TYPE_A, TYPE_HTTPS,
    TYPE_SVCB,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

struct Corpus {
    dir: PathBuf,
    n: usize,
}

impl Corpus {
    fn new(target: &str) -> Corpus {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        Corpus { dir, n: 0 }
    }

    /// One seed: the mode byte of the target, then the bytes.
    fn put(&mut self, name: &str, mode: &[u8], bytes: &[u8]) {
        self.n += 1;
        let path = self.dir.join(format!("seed-{:02}-{name}", self.n));
        std::fs::write(path, [mode, bytes].concat()).unwrap();
    }
}

/// The packets tests/fixtures/capture.py captured from the kernel: (name, bytes).
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packets");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// DNS answers and queries: what the unit tests build, and the captured ones.
fn dns_messages() -> Vec<(String, Vec<u8>)> {
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets();
    let mut out = vec![
        (
            "a".into(),
            Msg::new(1, true, "www.example.com", TYPE_A, 1)
                .a("www.example.com", 300, [192, 0, 2, 80])
                .buf,
        ),
        (
            "cname-chain".into(),
            Msg::new(0x1234, true, "WWW.Example.COM", 1, 4)
                .cname("www.example.com", 300, "Edge.example.NET")
                .a("evil.example.org", 60, [198, 51, 100, 66])
                .cname("edge.example.net", 120, "a1.cdn.example")
                .aaaa("a1.cdn.example", 30, "2001:db8::7")
                .buf,
        ),
        (
            "https-hints".into(),
            Msg::new(7, true, "example.com", TYPE_HTTPS, 3)
                .https("example.com", 60, 1, "svc.cdn.example", &[[192, 0, 2, 9]], &["2001:db8::9"])
                .https("example.com", 60, 0, "alias.cdn.example", &[], &[])
                .a("svc.cdn.example", 60, [192, 0, 2, 9])
                .buf,
        ),
        (
            "svcb".into(),
            Msg::new(9, true, "_dns.resolver.example", TYPE_SVCB, 1)
                .rr(
                    "_dns.resolver.example",
                    TYPE_SVCB,
                    60,
                    &svcb_rdata(2, "", &[], &["2001:db8::9"]),
                )
                .buf,
        ),
        ("query".into(), Msg::new(5, false, "query.example", 28, 0).buf),
        ("nxdomain".into(), Msg::new(6, true, "gone.example", 1, 0).rcode(3).buf),
        (
            "aaaa".into(),
            Msg::new(8, true, "v6.example", 28, 1).rr("v6.example", 28, 30, &v6("2001:db8::1")).buf,
        ),
    ];
    // A compressed answer: the owner a pointer to the question.
    let mut c = Msg::new(10, true, "c.example", TYPE_A, 1).buf;
    c.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 10]);
    out.push(("compressed".into(), c));
    for (name, data) in fixtures() {
        if let Ok(seg) = crate::dns::packet::parse_ip(&data) {
            if let Ok(msgs) = seg.dns_messages() {
                out.extend(msgs.map(|m| (format!("captured-{name}"), m.to_vec())));
            }
        }
    }
    out
}

fn framed(msg: &[u8]) -> Vec<u8> {
    [&(msg.len() as u16).to_be_bytes()[..], msg].concat()
}

fn ip_packet() {
    let mut c = Corpus::new("ip_packet");
    for (name, data) in fixtures() {
        c.put(&format!("captured-{name}"), &[], &data);
    }
    let msgs = dns_messages();
    for (name, m) in msgs.iter().take(4) {
        c.put(&format!("udp4-{name}"), &[], &udp4_answer(m));
        c.put(&format!("udp6-{name}"), &[], &ipv6(IPPROTO_UDP, &udp(53, 40000, m)));
    }
    let two = [framed(&msgs[0].1), framed(&msgs[1].1)].concat();
    c.put("tcp4-two", &[], &ipv4(IPPROTO_TCP, &tcp(53, &two)));
    c.put("tcp4-split", &[], &ipv4(IPPROTO_TCP, &tcp(53, &two[..40])));
    // IPv6 with hop-by-hop, destination options and a fragment header.
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0, 44, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[IPPROTO_UDP, 0, 0, 0, 0, 0, 0, 1]);
    ext.extend(udp(53, 1, &msgs[0].1));
    c.put("udp6-ext", &[], &ipv6(0, &ext));
}

fn dns_message() {
    let mut c = Corpus::new("dns_message");
    for (name, m) in dns_messages() {
        c.put(&name, &[0], &m);
    }
    // Modelled messages: header, qname, qtype, records (kind, class, ttl, data).
    c.put("model-a", &[0x80], &[1, 0, 0, 1, 0, 1, 0, 0, 0, 60, 192, 0, 2, 1]);
    c.put(
        "model-cname-a",
        &[0x80],
        &[1, 0, 0, 2, 16, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 30, 192, 0, 2, 2],
    );
    c.put(
        "model-https",
        &[0x80],
        &[3, 1, 2, 1, 25, 1, 0, 0, 0, 9, 0xd2, 203, 0, 113, 7, 0, 0, 0, 0, 0, 0, 0, 1],
    );
}

fn tcp_stream() {
    let mut c = Corpus::new("tcp_stream");
    let msgs = dns_messages();
    let stream = [framed(&msgs[1].1), framed(&msgs[2].1), framed(&msgs[0].1)].concat();
    // [isn][n][n x (cut, how)] then the stream.
    let mut cuts = vec![0xff, 0xff, 0xff, 0x00, 4];
    for (cut, how) in [(1u16, 0u8), (2, 1), (57, 2), (200, 3), (201, 0x21)] {
        cuts.extend_from_slice(&cut.to_be_bytes());
        cuts.push(how);
    }
    c.put("in-order", &[0], &[&cuts[..], &stream].concat());
    c.put("whole", &[0], &[&[0, 0, 0, 7, 0][..], &stream[..stream.len() - 5]].concat());
    // [conn][flags][seq][len][prefix][time] records.
    let rec = |conn: u8, flags: u8, seq: u32, len: u16, prefix: u16, time: u8| {
        let mut r = vec![conn, flags];
        r.extend_from_slice(&seq.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(&prefix.to_be_bytes());
        r.push(time);
        r
    };
    let anything = [
        rec(1, 0, 100, 1000, 3000, 0),
        rec(1, 0, 1100, 2002, 0, 1),
        rec(2, 4, 0, 65_000, 0xffff, 2),
        rec(1, 1, 5000, 0, 0, 3),
        rec(9, 0x18, 7, 300, 298, 200),
    ]
    .concat();
    c.put("anything", &[0x80], &anything);
}

/// An NFLOG packet message as the kernel sends it (see capture::nflog's tests).
fn nflog_packet(seq: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![2, 0, 0, 100];
    body.extend(nla(1, &[0x08, 0x00, 3, 0])); // NFULA_PACKET_HDR
    if let Some(s) = seq {
        body.extend(nla(12, &s.to_be_bytes())); // NFULA_SEQ
    }
    body.extend(nla(9, payload)); // NFULA_PAYLOAD
    nlmsg(0x0400, 0, 0, &body)
}

fn nflog() {
    let mut c = Corpus::new("nflog");
    let msgs = dns_messages();
    for (name, data) in fixtures().into_iter().take(4) {
        c.put(&format!("captured-{name}"), &[1], &nflog_packet(Some(0), &data));
    }
    let mut d = nflog_packet(Some(0), &udp4_answer(&msgs[0].1));
    d.extend(nflog_packet(Some(3), &udp4_answer(&msgs[1].1)));
    d.extend(nflog_packet(None, &[0x45, 0, 0]));
    d.extend(nlmsg(4, 0, 0, &[])); // NLMSG_OVERRUN
    d.extend(nlmsg(0x0400, 0, 0, &[2, 0, 0, 100]));
    c.put("three-and-damage", &[1], &d);
    c.put(
        "model",
        &[0x80],
        &[1, 0, 0, 0, 0, 0, 3, 0x45, 0, 0, 0x10, 1, 0, 0, 0, 5, 2, 1, 2, 6, 4, 0x20],
    );
}

/// An NFQUEUE packet message (see capture::queue_msg's tests).
fn queue_packet(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut hdr = id.to_be_bytes().to_vec();
    hdr.extend_from_slice(&[0x08, 0x00, 1]);
    let body =
        [vec![2, 0, 0, 100], nla(1, &hdr), nla(3, &7u32.to_be_bytes()), nla(10, payload)].concat();
    nlmsg(0x0300, 0, 0, &body)
}

fn nfqueue() {
    let mut c = Corpus::new("nfqueue");
    let msgs = dns_messages();
    for (i, (name, data)) in fixtures().into_iter().enumerate().take(4) {
        c.put(&format!("captured-{name}"), &[0], &queue_packet(i as u32, &data));
    }
    let mut d = queue_packet(5, &udp4_answer(&msgs[0].1));
    let mut err = (-libc::ENOENT).to_ne_bytes().to_vec();
    err.extend_from_slice(&[0; 16]);
    d.extend(nlmsg(2, 0, 0, &err));
    d.extend(nlmsg(2, 0, 0, &[0; 20]));
    d.extend(queue_packet(u32::MAX, b""));
    c.put("packets-errors", &[0], &d);
    c.put("model", &[0x80], &[0, 0, 0, 0, 9, 3, 1, 2, 3, 0x12, 0xff, 0xff, 0xff, 0xfe, 2, 3]);
}

fn netlink() {
    let mut c = Corpus::new("netlink");
    let e = |s: &str| Entry::parse(s).unwrap();
    let adds = add_datagram("hr_vpn", &[e("192.0.2.1"), e("2001:db8::/32")], Some(600), true, 9);
    c.put("ipset-adds", &[0], &adds.unwrap());
    let set = NftSetRef::parse("inet#fw4#vpn").unwrap();
    let batch =
        newsetelem_batch(&set, &[e("203.0.113.0/24"), e("192.0.2.7")], true, Some(60_000), 1, 1);
    c.put("nft-batch", &[0], &batch.unwrap());
    c.put("conntrack", &[0], &captured_v4([198, 51, 100, 7], [198, 51, 100, 7]));
    c.put("acks", &[0], &acks());
    // Written: [kind] then a request ([type u16][flags u16][seq u32][family u8]
    // [res_id u16][n attrs] then attrs), an ack ([seq u32][code u32][echoed
    // payload][n TLVs]...) or a DONE ([seq u32]).
    let mut w = vec![0, 6, 9, 0, 5, 0, 0, 0, 1, 2, 0, 0, 2, 0, 2, 3, b'a', b'b', b'c'];
    w.extend_from_slice(&[0x80, 7, 1, 0x40, 6, 4, 0, 0, 0x0e, 0x10]);
    w.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0, 0]);
    w.extend_from_slice(&[
        0x62, 0, 0, 0, 2, 0xff, 0xff, 0xef, 0xef, 4, 2, 0, 0, 1, 1, 0, 1, 2, b'x',
    ]);
    w.extend_from_slice(&[7, 0, 0, 0, 3]);
    c.put("written", &[0x80], &w);
}

/// Acks with NETLINK_CAP_ACK as an ipset ADD round gets them: errno, then the
/// request's header.
fn acks() -> Vec<u8> {
    let ack = |seq: u32, errno: i32| {
        let mut p = errno.to_ne_bytes().to_vec();
        p.extend(crate::testutil::nlh(56, 0x0609, 0x0205, seq));
        nlmsg(2, 0x100, seq, &p)
    };
    [ack(11, 0), ack(13, -4103), ack(12, -4108)].concat()
}

fn ipset() {
    let mut c = Corpus::new("ipset");
    let mut d = Datagram::new();
    {
        let mut m = d.message(0x0607, 2, 1, Nfgenmsg::new(2, 0));
        m.attr_u8(1, 6);
        m.attr_strz(2, "hr_vpn6");
        m.attr_strz(3, "hash:net");
        m.attr_u8(4, 7);
        m.attr_u8(5, 10);
        m.nest_start(7)
            .attr_be32(6 | NLA_F_NET_BYTEORDER, 600)
            .attr_be32(24 | NLA_F_NET_BYTEORDER, 2);
        m.nest_end();
        m.nest_start(8);
        for (addr, cidr) in [
            ("2001:db8::".parse::<Ipv6Addr>().unwrap(), 64u8),
            ("2001:db8::5".parse().unwrap(), 128),
        ] {
            m.nest_start(7).nest_start(1).attr(2 | NLA_F_NET_BYTEORDER, &addr.octets()).nest_end();
            m.attr_u8(3, cidr).nest_end();
        }
        m.nest_start(7).nest_start(1).attr(1 | NLA_F_NET_BYTEORDER, &[192, 0, 2, 1]).nest_end();
        m.nest_end();
    }
    c.put("list", &[0], d.as_bytes());
    c.put("acks", &[0], &acks());
    c.put(
        "written",
        &[0x80],
        &[
            4, b'h', b'r', b'_', b'v', 0, 7, 2, 0, 0, 2, 88, 0, 1, 0, 0, 0, 0, 0, 9, 2, 192, 0, 2,
            77, 24, 6, 198, 51, 100, 7, 32, 0, 0, 0x0e, 0x10, 1,
        ],
    );
}

fn conntrack() {
    let mut c = Corpus::new("conntrack");
    let new = captured_v4([198, 51, 100, 7], [198, 51, 100, 7]);
    let dnat = captured_v4([192, 0, 2, 99], [198, 51, 100, 8]);
    c.put("dump", &[3], &[new.clone(), dnat.clone(), nlmsg(3, 2, 99, &[0; 4])].concat());
    let events = [
        tuple_msg([192, 0, 2, 1], [203, 0, 113, 5], 1),
        tuple_msg([192, 0, 2, 1], [203, 0, 113, 6], 2),
        as_destroy(tuple_msg([192, 0, 2, 1], [203, 0, 113, 5], 1)),
        nlmsg(3, 0, 0, &[0; 4]),
        tuple_msg([192, 0, 2, 2], [203, 0, 113, 5], 3),
    ]
    .concat();
    c.put("events", &[1], &events);
    let src = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
    let dst = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
    let t = [nest(1, &[nla(3, &src), nla(4, &dst)]), nest(2, &[nla(1, &[17])])].concat();
    let v6 = [vec![10, 0, 0, 0], nest(1, &[t]), nla(18, &[0, 7])].concat();
    c.put("ipv6-zone", &[0], &nlmsg(0x0100, 0, 1, &v6));
}

fn nftables() {
    let mut c = Corpus::new("nftables");
    let elem = |key: &[u8], extra: Vec<Vec<u8>>| {
        let mut parts = vec![nest(1, &[nla(1, key)])];
        parts.extend(extra);
        nla(1 | NLA_F_NESTED, &parts.concat())
    };
    let body = [
        vec![1, 0, 0, 0],
        nla(1, b"fw4\0"),
        nla(2, b"vpn\0"),
        nest(
            3,
            &[
                elem(&[203, 0, 114, 0], vec![nla(3, &[0, 0, 0, 1])]),
                elem(&[203, 0, 113, 0], vec![nla(5, &5000u64.to_be_bytes())]),
                elem(&[192, 0, 2, 2], vec![nla(3, &[0, 0, 0, 1])]),
                elem(&[192, 0, 2, 1], vec![nla(4, &60_000u64.to_be_bytes())]),
                elem(&[0, 0, 0, 0], vec![nla(3, &[0, 0, 0, 1])]),
            ],
        ),
    ]
    .concat();
    c.put("elements", &[0], &nlmsg(0x0a0c, 2, 1, &body));
    let set = [
        vec![1, 0, 0, 0],
        nla(1, b"fw4\0"),
        nla(2, b"vpn\0"),
        nla(3, &[0, 0, 0, 0x14]),
        nla(4, &[0, 0, 0, 7]),
        nla(5, &[0, 0, 0, 4]),
        nla(8, &600_000u64.to_be_bytes()),
        nest(9, &[nla(1, &[0, 0, 4, 0])]),
    ]
    .concat();
    c.put("set", &[0], &nlmsg(0x0a09, 0, 1, &set));
    c.put(
        "written",
        &[0x80],
        &[
            0, 192, 0, 2, 1, 6, 203, 0, 113, 0, 4, 0, 0, 0, 0, 0, 0, 0x0e, 0x10, b'f', b'w', b'4',
            b'v',
        ],
    );
}

fn watchlist() {
    let mut c = Corpus::new("watchlist");
    // [op][len][text]...: 0 add, 1 add under a domain in, 2 lookup, 3 lookup under, 4 a chain.
    let op = |code: u8, text: &str, extra: &[u8]| {
        [&[code, text.len() as u8][..], text.as_bytes(), extra].concat()
    };
    let ops = [
        op(0, "example.org", &[]),
        op(8, "video.example.org", &[]),
        op(1, "cdn", &[0]),
        op(2, "www.Example.ORG.", &[]),
        op(3, "a.b", &[1]),
        op(2, "badexample.org", &[]),
        op(4, "x.example.org", &[20]),
    ]
    .concat();
    c.put("ops", &[], &[&ops[..], b"edge.cdn.example.org"].concat());
    c.put("invalid", &[], &[op(0, "Bad..Name-", &[]), op(0, "-x.example", &[])].concat());
}

#[test]
#[ignore = "writes the seed corpora of fuzz/; run on purpose"]
fn fuzz_seeds() {
    ip_packet();
    dns_message();
    tcp_stream();
    nflog();
    nfqueue();
    netlink();
    ipset();
    conntrack();
    nftables();
    watchlist();
}
