//! Every packet read moves exactly one per-packet counter; every DNS message
//! one message counter: the sums that `status` documents.

use super::*;
use crate::testutil::{ipv4, tcp_seq, IPPROTO_UDP};

/// `payload` behind a 2-byte length prefix, as DNS over TCP sends it.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = (msg.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

fn assert_sums(r: &Rig) {
    let c = r.p.counters();
    assert_eq!(c.packets_read(), r.p.capture_stats().packets, "{c:?}");
    assert_eq!(c.events, c.answers + c.queries_ignored, "{c:?}");
    let matched: u64 = r.p.policy_counters().iter().map(|(_, pc)| pc.matched).sum();
    assert_eq!(c.answers, matched + c.unwatched + c.rcode_skipped, "{c:?}");
}

#[test]
fn each_packet_read_moves_one_counter() {
    let mut r = rig();
    let query = Msg::new(1, false, "a.example.org", TYPE_A, 0);
    let nx = Msg::new(2, true, "b.example.org", TYPE_A, 0).rcode(3);
    let good = answer(&["c.example.org"], &["192.0.2.10"]);
    let mut later_fragment = ipv4(IPPROTO_UDP, &[0; 16]);
    later_fragment[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    r.feed(vec![
        good.clone(),                                 // udp_dns: matched
        udp4_answer(&query.buf),                      // udp_dns: a query
        udp4_answer(&nx.buf),                         // udp_dns: rcode 3
        answer(&["unrelated.test"], &["192.0.2.11"]), // udp_dns: unwatched
        udp4_answer(&[0; 5]),                         // malformed: shorter than a header
        vec![],                                       // malformed: empty (no payload)
        vec![0x45, 0, 0],                             // malformed: IPv4 header cut
        good[..good.len() - 3].to_vec(),              // incomplete: a truncated copy
        later_fragment,                               // non_dns
    ]);
    let c = r.p.counters();
    let got = (c.udp_dns, c.malformed, c.incomplete, c.non_dns, c.tcp_segments, c.untrusted);
    assert_eq!(got, (4, 3, 1, 1, 0, 0));
    assert_sums(&r);

    // TCP: two messages in one segment, one in two, one that does not decode,
    // a bare ACK (not DNS before its source is even looked at).
    let a = framed(
        &Msg::new(3, true, "d.example.org", TYPE_A, 1).a("d.example.org", 60, [192, 0, 2, 12]).buf,
    );
    let b = framed(&Msg::new(4, false, "e.example.org", TYPE_A, 0).buf);
    let split = framed(
        &Msg::new(5, true, "f.example.org", TYPE_A, 1).a("f.example.org", 60, [192, 0, 2, 13]).buf,
    );
    let bad = framed(&[0xff; 4]);
    let mut seq = 1u32;
    let mut segs = Vec::new();
    for payload in [[a, b].concat(), split[..7].to_vec(), split[7..].to_vec(), bad, vec![]] {
        segs.push(ipv4(6, &tcp_seq(53, seq, &payload)));
        seq += payload.len() as u32;
    }
    r.feed(segs);
    let c = r.p.counters();
    assert_eq!((c.tcp_segments, c.non_dns, c.tcp_malformed), (4, 2, 1));
    assert_eq!((c.events, c.answers, c.queries_ignored), (7, 5, 2), "3 TCP messages decoded");
    assert_sums(&r);

    // An untrusted source: one packet, one counter, nothing decoded.
    r.p.set_trusted(vec![Entry::parse("203.0.113.53").unwrap()]);
    r.feed(vec![good.clone(), ipv4(6, &tcp_seq(53, seq, &[0, 0]))]);
    assert_eq!(r.p.counters().untrusted, 2, "{:?}", r.p.counters());
    assert_sums(&r);
    assert_eq!(r.p.capture_stats().packets, 16);
}

#[test]
fn garbage_still_sums() {
    let mut r = rig();
    let good = answer(&["a.example.org"], &["192.0.2.90"]);
    let mut rng = crate::testutil::Rng(11);
    let packets: Vec<Vec<u8>> = (0..3000)
        .map(|_| {
            let mut p = good.clone();
            let at = rng.below(p.len());
            p[at] ^= 1 << rng.below(8);
            p.truncate(p.len() - rng.below(8));
            p
        })
        .collect();
    r.feed(packets);
    assert_sums(&r);
    assert_eq!(r.p.capture_stats().packets, 3000);
}

#[test]
fn a_swapped_source_keeps_its_counts() {
    let mut r = rig();
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.20"])]);
    let next = FakeSource::new();
    let _old = r.p.swap_source(Box::new(next.clone()));
    next.push(vec![answer(&["b.example.org"], &["192.0.2.21"]), vec![]]);
    r.p.process_queued(usize::MAX);
    assert_eq!(r.p.capture_stats().packets, 3);
    assert_eq!(r.p.counters().packets_read(), 3);
}
