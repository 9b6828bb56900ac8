//! DNS over TCP put back together: a message split over several segments
//! (the length prefix in a segment of its own, a 22 KB answer in 1,000-byte
//! segments) is read once its last byte arrived.
//!
//! Memory is bounded: at most `MAX_FLOWS` connections followed, at most one
//! partial message (≤ 65,537 bytes with its prefix) each, `MAX_BYTES` buffered
//! in all; a connection idle for `IDLE` is forgotten. Everything dropped on the
//! way is counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::Segment;

/// Connections followed at most; past it the longest idle one is forgotten.
const MAX_FLOWS: usize = 256;
/// Bytes buffered in all connections at most.
const MAX_BYTES: usize = 2 << 20;
/// A connection with no segment for this long is forgotten.
const IDLE: Duration = Duration::from_secs(30);
/// Segments between two sweeps for idle connections.
const SWEEP_EVERY: u32 = 1024;

/// What reassembly did and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Messages that needed more than one segment.
    pub reassembled: u64,
    /// Connections followed now.
    pub flows: u64,
    /// Gaps seen (a segment never arrived): the rest of that connection is not read.
    pub gaps: u64,
    /// Messages never completed: their connection closed, idled out or hit
    /// a cap with part of one waiting.
    pub unfinished: u64,
    /// Bytes not read: partial messages forgotten, data after a gap.
    pub dropped_bytes: u64,
}

impl TcpStats {
    /// Every counter with its name.
    pub fn as_pairs(&self) -> [(&'static str, u64); 5] {
        [
            ("reassembled", self.reassembled),
            ("flows", self.flows),
            ("gaps", self.gaps),
            ("unfinished", self.unfinished),
            ("dropped_bytes", self.dropped_bytes),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

#[derive(Debug)]
struct Flow {
    /// Sequence number of the byte that should come next.
    next_seq: u32,
    /// Bytes of a message not yet whole (its length prefix first).
    buf: Vec<u8>,
    last: Instant,
    /// A segment went missing: where messages start is unknown from here on,
    /// so nothing more of this connection is read.
    lost: bool,
}

/// Whole messages at the start of `b`, handed to `on_msg`; returns what is left.
fn whole_messages<'a>(mut b: &'a [u8], on_msg: &mut dyn FnMut(&[u8])) -> &'a [u8] {
    while b.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        if b.len() < 2 + n {
            break;
        }
        on_msg(&b[2..2 + n]);
        b = &b[2 + n..];
    }
    b
}

/// The TCP connections DNS answers arrive on.
#[derive(Debug, Default)]
pub struct TcpStreams {
    flows: HashMap<Key, Flow>,
    bytes: usize,
    since_sweep: u32,
    /// Counters.
    pub stats: TcpStats,
}

impl TcpStreams {
    /// An empty set of connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of partial messages waiting, in all connections (at most `MAX_BYTES`).
    pub fn buffered(&self) -> usize {
        self.bytes
    }

    /// Read one TCP segment of a DNS connection; `on_msg` gets every DNS
    /// message it completes (without the length prefix), in order. After a
    /// FIN or RST the connection is forgotten.
    pub fn feed(&mut self, seg: &Segment<'_>, now: Instant, on_msg: &mut dyn FnMut(&[u8])) {
        self.read(seg, now, on_msg);
        if seg.closing {
            self.forget(&Key { src: seg.src, dst: seg.dst, sport: seg.sport, dport: seg.dport });
        }
    }

    fn read(&mut self, seg: &Segment<'_>, now: Instant, on_msg: &mut dyn FnMut(&[u8])) {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        let key = Key { src: seg.src, dst: seg.dst, sport: seg.sport, dport: seg.dport };
        let end = seg.seq.wrapping_add(seg.payload.len() as u32);
        let Some(flow) = self.flows.get_mut(&key) else {
            if seg.payload.is_empty() {
                return;
            }
            // A new connection (or one forgotten): read it from this segment on.
            let rest = whole_messages(seg.payload, on_msg);
            return self.start(key, rest, end, now);
        };
        flow.last = now;
        // Where this segment starts relative to the byte expected (wrapping).
        let ahead = seg.seq.wrapping_sub(flow.next_seq) as i32;
        let overlap = ahead.min(0).unsigned_abs() as usize;
        if overlap >= seg.payload.len() {
            return; // a retransmission of bytes already read
        }
        flow.next_seq = end;
        if flow.lost {
            self.stats.dropped_bytes += (seg.payload.len() - overlap) as u64;
            return;
        }
        if ahead > 0 {
            // A segment was lost: the message it belonged to, and where the
            // next one starts, are unknown.
            self.stats.gaps += 1;
            self.stats.dropped_bytes += (flow.buf.len() + seg.payload.len()) as u64;
            self.bytes -= flow.buf.len();
            flow.buf = Vec::new();
            flow.lost = true;
            return;
        }
        self.append(key, &seg.payload[overlap..], on_msg);
    }

    /// In-order `data` of `key`: complete the message waiting, then read on.
    fn append(&mut self, key: Key, mut data: &[u8], on_msg: &mut dyn FnMut(&[u8])) {
        let TcpStreams { flows, bytes, stats, .. } = self;
        let Some(flow) = flows.get_mut(&key) else { return };
        if !flow.buf.is_empty() {
            // Take what the waiting message lacks (its prefix first), no more.
            let lacks = |buf: &[u8]| match buf {
                [hi, lo, rest @ ..] => usize::from(u16::from_be_bytes([*hi, *lo])) - rest.len(),
                _ => 2 - buf.len(),
            };
            while !data.is_empty() {
                let take = lacks(&flow.buf).min(data.len());
                if take == 0 {
                    break;
                }
                if *bytes + take > MAX_BYTES {
                    stats.dropped_bytes += data.len() as u64;
                    return self.forget(&key);
                }
                flow.buf.extend_from_slice(&data[..take]);
                *bytes += take;
                data = &data[take..];
            }
            if flow.buf.len() < 2 || lacks(&flow.buf) > 0 {
                return;
            }
            on_msg(&flow.buf[2..]);
            stats.reassembled += 1;
            *bytes -= flow.buf.len();
            flow.buf.clear();
        }
        let rest = whole_messages(data, on_msg);
        self.keep(key, rest);
    }

    /// Follow `key` from `end` on, with `rest` (the start of a message) waiting.
    fn start(&mut self, key: Key, rest: &[u8], end: u32, now: Instant) {
        if self.flows.len() >= MAX_FLOWS {
            self.sweep(now);
            if self.flows.len() >= MAX_FLOWS {
                self.evict_oldest();
            }
        }
        let flow = Flow { next_seq: end, buf: Vec::new(), last: now, lost: false };
        self.flows.insert(key, flow);
        self.stats.flows = self.flows.len() as u64;
        self.keep(key, rest);
    }

    /// Keep `rest` (a partial message) waiting in `key`'s buffer, within the caps.
    fn keep(&mut self, key: Key, rest: &[u8]) {
        if rest.is_empty() {
            return;
        }
        if self.bytes + rest.len() > MAX_BYTES {
            self.stats.dropped_bytes += rest.len() as u64;
            self.stats.unfinished += 1;
            return self.forget(&key);
        }
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.buf.extend_from_slice(rest);
            self.bytes += rest.len();
        }
    }

    /// Stop following `key`; a partial message it held is counted as dropped.
    fn forget(&mut self, key: &Key) {
        if let Some(f) = self.flows.remove(key) {
            if !f.buf.is_empty() {
                self.bytes -= f.buf.len();
                self.stats.unfinished += 1;
                self.stats.dropped_bytes += f.buf.len() as u64;
            }
        }
        self.stats.flows = self.flows.len() as u64;
    }

    fn sweep(&mut self, now: Instant) {
        self.since_sweep = 0;
        let idle: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) >= IDLE)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.forget(&k);
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self.flows.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
            self.forget(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::packet::Transport;
    use crate::testutil::Rng;

    const SRC: &str = "192.0.2.53";

    fn seg(sport: u16, seq: u32, payload: &[u8]) -> Segment<'_> {
        Segment {
            src: SRC.parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            sport: 53,
            dport: sport,
            transport: Transport::Tcp,
            seq,
            closing: false,
            payload,
        }
    }

    /// A message of `n` bytes (byte i is i mod 251), length prefix first.
    fn framed(n: usize, tag: u8) -> Vec<u8> {
        let mut v = (n as u16).to_be_bytes().to_vec();
        v.extend((0..n).map(|i| (i % 251) as u8 ^ tag));
        v
    }

    /// Feed `stream` cut at `cuts` (starting at `isn`); the messages read.
    fn run(t: &mut TcpStreams, stream: &[u8], cuts: &[usize], isn: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let now = Instant::now();
        let mut at = 0;
        for &end in cuts.iter().chain([&stream.len()]) {
            let s = seg(40000, isn.wrapping_add(at as u32), &stream[at..end]);
            t.feed(&s, now, &mut |m| out.push(m.to_vec()));
            at = end;
        }
        out
    }

    #[test]
    fn length_prefix_alone_then_the_message() {
        let mut t = TcpStreams::new();
        let m = framed(300, 0);
        assert_eq!(run(&mut t, &m, &[2], 7), vec![m[2..].to_vec()]);
        assert_eq!(t.stats.reassembled, 1);
        // A one-byte prefix split in two works too.
        let mut t = TcpStreams::new();
        assert_eq!(run(&mut t, &m, &[1, 2, 150], 7), vec![m[2..].to_vec()]);
    }

    #[test]
    fn big_answers_in_many_segments() {
        for (size, mss) in [(4096, 1000), (22_000, 1000), (65_535, 536)] {
            let mut t = TcpStreams::new();
            let m = framed(size, 1);
            let cuts: Vec<usize> = (1..=m.len() / mss).map(|i| i * mss).collect();
            assert_eq!(run(&mut t, &m, &cuts, u32::MAX - 3000), vec![m[2..].to_vec()], "{size}");
            assert_eq!(t.bytes, 0, "nothing left buffered");
        }
    }

    #[test]
    fn any_cut_of_a_pipelined_stream_reads_the_same_messages() {
        let mut rng = Rng(11);
        for round in 0..300 {
            let msgs: Vec<Vec<u8>> =
                (0..1 + rng.below(5)).map(|i| framed(1 + rng.below(3000), i as u8)).collect();
            let stream: Vec<u8> = msgs.concat();
            let mut cuts: Vec<usize> =
                (0..rng.below(20)).map(|_| rng.below(stream.len())).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut t = TcpStreams::new();
            let want: Vec<Vec<u8>> = msgs.iter().map(|m| m[2..].to_vec()).collect();
            assert_eq!(run(&mut t, &stream, &cuts, rng.next() as u32), want, "round {round}");
        }
    }

    #[test]
    fn retransmissions_are_read_once() {
        let mut t = TcpStreams::new();
        let m = framed(2500, 2);
        let now = Instant::now();
        let mut out = Vec::new();
        let mut feed = |t: &mut TcpStreams, from: usize, to: usize| {
            t.feed(&seg(1, 100 + from as u32, &m[from..to]), now, &mut |x| out.push(x.to_vec()))
        };
        feed(&mut t, 0, 1000);
        feed(&mut t, 0, 1000); // the same segment again
        feed(&mut t, 500, 1800); // overlaps what was read
        feed(&mut t, 1000, 1800); // wholly old
        feed(&mut t, 1800, m.len());
        feed(&mut t, 1800, m.len()); // the last one again: read already
        assert_eq!(out, vec![m[2..].to_vec()]);
    }

    #[test]
    fn a_gap_drops_the_rest_of_the_connection_and_counts() {
        let mut t = TcpStreams::new();
        let stream = [framed(2000, 3), framed(100, 4)].concat();
        let now = Instant::now();
        let mut out = Vec::new();
        t.feed(&seg(2, 0, &stream[..1000]), now, &mut |x| out.push(x.to_vec()));
        // 1000..1500 never arrives.
        t.feed(&seg(2, 1500, &stream[1500..]), now, &mut |x| out.push(x.to_vec()));
        assert!(out.is_empty());
        assert_eq!(t.stats.gaps, 1);
        assert_eq!(t.stats.dropped_bytes, 1000 + (stream.len() - 1500) as u64);
        assert_eq!(t.bytes, 0);
        // Another connection is unaffected.
        let m = framed(50, 5);
        t.feed(&seg(3, 9, &m), now, &mut |x| out.push(x.to_vec()));
        assert_eq!(out, vec![m[2..].to_vec()]);
    }

    #[test]
    fn memory_stays_within_the_caps() {
        let mut t = TcpStreams::new();
        let now = Instant::now();
        let big = framed(60_000, 6);
        // 400 connections each with 40 KB of a 60 KB message waiting.
        for port in 0..400u16 {
            t.feed(&seg(port, 0, &big[..40_000]), now, &mut |_| panic!("not whole"));
            assert!(t.bytes <= MAX_BYTES && t.flows.len() <= MAX_FLOWS);
        }
        assert!(t.stats.dropped_bytes >= (400 * 40_000 - MAX_BYTES) as u64);
        assert!(t.stats.unfinished > 0);
        // A segment that ends a 65,535-byte message and starts the next: both read.
        let mut t = TcpStreams::new();
        let stream = [framed(65_535, 7), framed(40_000, 8)].concat();
        let got = run(&mut t, &stream, &[30_000, 70_000], 5);
        assert_eq!(got, vec![stream[2..65_537].to_vec(), stream[65_539..].to_vec()]);
        assert_eq!(t.stats.dropped_bytes, 0);
    }

    #[test]
    fn fin_and_rst_forget_the_connection_and_count_a_cut_message() {
        let mut t = TcpStreams::new();
        let now = Instant::now();
        let m = framed(100, 9);
        let mut out = Vec::new();
        // The whole message with FIN on its segment: read, then forgotten.
        let fin = Segment { closing: true, ..seg(1, 0, &m) };
        t.feed(&fin, now, &mut |x| out.push(x.to_vec()));
        assert_eq!((out.len(), t.flows.len(), t.stats.unfinished), (1, 0, 0));
        // Half a message, then a bare RST.
        t.feed(&seg(2, 0, &m[..40]), now, &mut |x| out.push(x.to_vec()));
        t.feed(&Segment { closing: true, ..seg(2, 40, &[]) }, now, &mut |x| out.push(x.to_vec()));
        assert_eq!((out.len(), t.flows.len(), t.stats.unfinished, t.bytes), (1, 0, 1, 0));
        assert_eq!(t.stats.dropped_bytes, 40);
    }

    #[test]
    fn idle_connections_are_forgotten() {
        let mut t = TcpStreams::new();
        let now = Instant::now();
        let m = framed(1000, 8);
        t.feed(&seg(1, 0, &m[..500]), now, &mut |_| {});
        assert_eq!((t.flows.len(), t.bytes), (1, 498 + 2));
        let later = now + IDLE + Duration::from_secs(1);
        for i in 0..SWEEP_EVERY {
            t.feed(&seg(2, i * 3, &[0, 1, 9]), later, &mut |_| {});
        }
        assert_eq!(t.flows.len(), 1, "only the busy connection is left");
        assert_eq!(t.bytes, 0);
        assert_eq!(t.stats.unfinished, 1);
        assert_eq!(t.stats.dropped_bytes, 500);
    }
}
