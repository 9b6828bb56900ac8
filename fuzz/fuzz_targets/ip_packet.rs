//! Any bytes as a captured IP packet (what NFLOG and NFQUEUE hand over):
//! `parse_ip` down to the UDP/TCP segment, the DNS messages of the segment,
//! `parse_packet`, `parse_packet_into`, `ParseStats` and a fresh `TcpStreams`.
//!
//! Invariants: the segment borrows the packet (addresses are the header's,
//! one port is 53); a TCP segment's messages are consecutive length-prefixed
//! slices of its payload, a UDP datagram is one message; the three ways of
//! parsing agree with one another; counters count each packet once.
#![no_main]

use std::net::IpAddr;
use std::time::Instant;

use hrneo::fuzzing::{parse_ip, TcpStreams};
use hrneo::{parse_packet, parse_packet_into, ParseStats, Skip, Transport};
use hrneo_fuzz::{check_message, offset, within};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = parse_packet(data);
    let mut all = Vec::new();
    let n = parse_packet_into(data, &mut all);
    match (&first, &n) {
        (Ok(e), Ok(n)) => {
            assert!(*n >= 1 && all.len() == *n);
            assert_eq!(&all[0], e, "the first event of a packet is parse_packet's");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "the same verdict"),
        _ => panic!("parse_packet {first:?} but parse_packet_into {n:?}"),
    }
    for e in &all {
        check_message(&e.msg);
    }
    check_stats(data, &n);

    let Ok(seg) = parse_ip(data) else {
        assert!(first.is_err());
        return;
    };
    assert!(within(data, seg.payload));
    assert!(seg.sport == 53 || seg.dport == 53);
    let (src, dst) = match data[0] >> 4 {
        4 => (ip(&data[12..16]), ip(&data[16..20])),
        6 => (ip(&data[8..24]), ip(&data[24..40])),
        v => panic!("IP version {v} parsed"),
    };
    assert_eq!((seg.src, seg.dst), (src, dst));
    for e in &all {
        assert_eq!((e.src, e.dst, e.sport, e.dport), (seg.src, seg.dst, seg.sport, seg.dport));
    }
    match seg.dns_messages() {
        Ok(msgs) => {
            let msgs: Vec<&[u8]> = msgs.collect();
            assert!(!msgs.is_empty() && !msgs[0].is_empty());
            match seg.transport {
                Transport::Udp => assert_eq!(msgs, [seg.payload], "a datagram is one message"),
                Transport::Tcp => {
                    let mut at = 0;
                    for m in &msgs {
                        let prefix = seg.payload.get(at..at + 2).expect("a length prefix");
                        assert_eq!(
                            usize::from(u16::from_be_bytes([prefix[0], prefix[1]])),
                            m.len()
                        );
                        assert_eq!(offset(seg.payload, m), at + 2, "messages are consecutive");
                        at += 2 + m.len();
                    }
                }
            }
        }
        Err(_) => assert!(first.is_err()),
    }

    // A fresh reassembler reads every whole message of the segment, the ones
    // parse_packet_into stops at too: what both read is the same.
    let mut streams = TcpStreams::new();
    let mut stats = ParseStats::default();
    let mut via_stream = Vec::new();
    stats.parse_stream(data, &mut streams, Instant::now(), &mut via_stream);
    if let Ok(n) = n {
        assert!(via_stream.len() >= n);
        assert_eq!(via_stream[..n], all[..]);
    }
    assert!(streams.buffered() <= seg.payload.len());
    if seg.closing {
        assert_eq!(streams.buffered(), 0, "a FIN or RST forgets the connection");
    }
});

fn ip(b: &[u8]) -> IpAddr {
    match b.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(b).expect("4 bytes")),
        _ => IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes")),
    }
}

/// `ParseStats::parse_into` counts a packet once: each message it yields, or its skip.
fn check_stats(data: &[u8], n: &Result<usize, Skip>) {
    let mut stats = ParseStats::default();
    let mut out = Vec::new();
    stats.parse_into(data, &mut out);
    let skipped = stats.malformed + stats.incomplete + stats.non_dns;
    match n {
        Ok(n) => {
            assert_eq!((stats.dns, skipped), (*n as u64, 0));
            assert_eq!(stats.responses + stats.queries, stats.dns);
            let responses = out.iter().filter(|e| e.msg.is_response).count();
            assert_eq!(stats.responses, responses as u64);
        }
        Err(skip) => {
            assert_eq!((stats.dns, skipped), (0, 1));
            let counted = match skip {
                Skip::Malformed(_) => stats.malformed,
                Skip::Incomplete => stats.incomplete,
                Skip::NonDns => stats.non_dns,
            };
            assert_eq!(counted, 1);
        }
    }
}
