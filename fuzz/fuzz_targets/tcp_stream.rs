//! DNS over TCP put back together: `TcpStreams::feed` over segment sequences
//! derived from the input. Two modes, by the first byte:
//!
//! below 0x80, one connection in order: `[isn u32][n u8][n × (cut u16, how u8)]`
//! then the byte stream. The stream is cut at the cuts; a segment may be sent
//! as a retransmission that overlaps what was read, and again after it.
//! Whatever the cuts, the messages read are exactly the whole length-prefixed
//! messages of the stream, in order; what is left buffered is the unfinished
//! tail; a closing FIN frees it.
//!
//! 0x80 and up, anything: records of `[conn u8][flags u8][seq u32][len u16]
//! [prefix u16][time u8]` make segments of up to 2 KiB, or 64 KiB with a flag
//! (payload: the prefix, then filler) on up to 766 connections, at any sequence numbers, with
//! FIN/RST, times going back and forth. The caps must hold (2 MiB buffered,
//! 256 connections), every message is at most 65,535 bytes, nothing is read
//! that was not fed, and closing every connection frees everything.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hrneo::fuzzing::{Segment, TcpStreams};
use hrneo::Transport;
use hrneo_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

const MAX_BYTES: usize = 2 << 20;
const MAX_FLOWS: u64 = 256;

/// A segment of the DNS answers from 192.0.2.53:53 to 192.0.2.2:`port`.
fn segment(port: u16, seq: u32, closing: bool, payload: &[u8]) -> Segment<'_> {
    Segment {
        src: IpAddr::from([192, 0, 2, 53]),
        dst: IpAddr::from([192, 0, 2, 2]),
        sport: 53,
        dport: port,
        transport: Transport::Tcp,
        seq,
        closing,
        payload,
    }
}

struct Feeder {
    streams: TcpStreams,
    /// The messages read, when they are compared (`in_order`).
    msgs: Option<Vec<Vec<u8>>>,
    /// Bytes read: every message with its 2-byte prefix.
    read: usize,
    fed: usize,
}

impl Feeder {
    fn feed(&mut self, seg: &Segment<'_>, now: Instant) {
        let (msgs, read) = (&mut self.msgs, &mut self.read);
        self.streams.feed(seg, now, &mut |m| {
            assert!(m.len() <= 65_535);
            *read += 2 + m.len();
            if let Some(v) = msgs.as_mut() {
                v.push(m.to_vec());
            }
        });
        self.fed += seg.payload.len();
        assert!(self.streams.buffered() <= MAX_BYTES);
        assert!(self.streams.stats.flows <= MAX_FLOWS);
        assert!(
            self.read + self.streams.buffered() <= self.fed,
            "nothing read or kept that was not fed"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut f = Feeder { streams: TcpStreams::new(), msgs: None, read: 0, fed: 0 };
    if mode < 0x80 {
        f.msgs = Some(Vec::new());
        in_order(&mut f, rest);
    } else {
        anything(&mut f, rest);
    }
});

/// The whole messages of a stream, and the length of the unfinished tail.
fn whole_messages(mut b: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        if b.len() < 2 + n {
            break;
        }
        out.push(b[2..2 + n].to_vec());
        b = &b[2 + n..];
    }
    (out, b.len())
}

fn in_order(f: &mut Feeder, input: &[u8]) {
    let mut b = Bytes::new(input);
    let isn = b.u32();
    let n = b.u8();
    let raw_cuts: Vec<(u16, u8)> = (0..n).map(|_| (b.u16(), b.u8())).collect();
    let stream = b.rest();
    let mut cuts: Vec<(usize, u8)> =
        raw_cuts.iter().map(|&(c, how)| (usize::from(c) % (stream.len() + 1), how)).collect();
    cuts.sort_unstable();
    cuts.dedup_by_key(|c| c.0);
    cuts.push((stream.len(), 0));
    let now = Instant::now();
    let mut at = 0usize;
    for &(end, how) in &cuts {
        let seq = isn.wrapping_add(at as u32);
        if how & 1 == 1 && at > 0 {
            // A retransmission that also carries bytes already read.
            let back = usize::from(how >> 2) % at + 1;
            let s = isn.wrapping_add((at - back) as u32);
            f.feed(&segment(40_000, s, false, &stream[at - back..end]), now);
        }
        f.feed(&segment(40_000, seq, false, &stream[at..end]), now);
        if how & 2 == 2 {
            f.feed(&segment(40_000, seq, false, &stream[at..end]), now); // a duplicate
        }
        at = end;
    }
    let (want, tail) = whole_messages(stream);
    assert_eq!(f.msgs.as_ref(), Some(&want), "cut anywhere, the same messages");
    assert_eq!(f.streams.buffered(), tail, "only the unfinished message waits");
    assert_eq!(f.streams.stats.gaps, 0);
    f.feed(&segment(40_000, isn.wrapping_add(stream.len() as u32), true, &[]), now);
    assert_eq!(f.streams.buffered(), 0);
    assert_eq!(f.streams.stats.flows, 0);
    assert_eq!(f.streams.stats.unfinished, u64::from(tail > 0));
}

/// What a segment's payload continues with: zeros (empty messages), 0xff
/// (65,535-byte prefixes) or a mix; made once.
fn fillers() -> &'static [Vec<u8>; 3] {
    static FILLERS: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    FILLERS.get_or_init(|| {
        [vec![0; 65_536], vec![0xff; 65_536], (0..65_536u32).map(|i| (i % 7) as u8).collect()]
    })
}

fn anything(f: &mut Feeder, input: &[u8]) {
    let fillers = fillers();
    let base = Instant::now();
    let mut b = Bytes::new(input);
    let mut ports = Vec::new();
    let mut payload = Vec::new();
    while !b.is_empty() {
        let conn = b.u8();
        let flags = b.u8();
        let seq = b.u32();
        // Most segments are small (fast runs); with the flag, up to 64 KiB.
        let len =
            if flags & 0x20 != 0 { usize::from(b.u16()) } else { usize::from(b.u16() % 2048) };
        let prefix = b.u16();
        let time = b.u8();
        // 0-255, or spread wider to pass the 256-connection cap.
        let port = if flags & 0x10 != 0 {
            u16::from(conn) * 3 + u16::from(flags >> 6)
        } else {
            u16::from(conn)
        };
        payload.clear();
        if len > 0 {
            payload.extend_from_slice(&prefix.to_be_bytes()[..len.min(2)]);
            let filler = &fillers[usize::from(flags >> 2 & 3) % 3];
            payload.extend_from_slice(&filler[..len.saturating_sub(2)]);
        }
        let now = base + Duration::from_secs(u64::from(time) * 4);
        f.feed(&segment(port, seq, flags & 1 == 1, &payload), now);
        ports.push(port);
    }
    let end = base + Duration::from_secs(1024);
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        f.feed(&segment(port, 0, true, &[]), end);
    }
    assert_eq!(f.streams.buffered(), 0, "closing every connection frees everything");
    assert_eq!(f.streams.stats.flows, 0);
}
