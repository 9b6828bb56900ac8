//! `parse_packet` over the packets captured from the kernel by
//! tests/fixtures/capture.py, and over mutants of them: each parses as
//! expected.txt says, and no mutant makes the parser panic.

use super::event::{parse_packet, parse_packet_into};
use super::packet::Skip;
use crate::testutil::Rng;

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
    let (_, _, _, data, _) = fixtures().into_iter().find(|f| f.0 == "tcp4_two_messages").unwrap();
    let mut out = Vec::new();
    assert_eq!(parse_packet_into(&data, &mut out), Ok(2));
    assert_eq!(out[1].msg.qname, "second.example");
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
