//! The book a holding source keeps: which packets were handed out and not yet
//! released, when each was read, and how long the last ones were held.

use std::collections::VecDeque;
use std::time::Instant;

/// Hold times kept for the percentiles (the most recent ones).
const SAMPLES: usize = 4096;

/// Counters of a source that holds packets until they are released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldStats {
    /// Packets read, each held until a verdict.
    pub held: u64,
    /// Released by a verdict of ours.
    pub released: u64,
    /// Read and not released yet.
    pub outstanding: u64,
    /// Released by the deadline (`hold_max`) instead: the reader was late.
    pub timeouts: u64,
    /// Let through by the kernel without being read (the socket was full).
    pub fail_opens: u64,
    /// Verdicts the kernel refused for a reason other than "already released".
    pub verdict_errors: u64,
    /// Hold time of the recent packets (read to verdict), in microseconds.
    pub p50_us: u64,
    /// 99th percentile of the same.
    pub p99_us: u64,
    /// Longest of the same.
    pub max_us: u64,
}

impl HoldStats {
    /// Every counter with its name.
    pub fn as_pairs(&self) -> [(&'static str, u64); 9] {
        [
            ("held", self.held),
            ("released", self.released),
            ("outstanding", self.outstanding),
            ("timeouts", self.timeouts),
            ("fail_opens", self.fail_opens),
            ("verdict_errors", self.verdict_errors),
            ("p50_us", self.p50_us),
            ("p99_us", self.p99_us),
            ("max_us", self.max_us),
        ]
    }
}

/// `a` comes before `b` in the kernel's wrapping packet id order.
pub(crate) fn id_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Packets handed out, in id order, with the time each was read.
#[derive(Debug, Default)]
pub(crate) struct HoldBook {
    outstanding: VecDeque<(u32, Instant)>,
    samples: Vec<u32>,
    next_sample: usize,
    pub(crate) stats: HoldStats,
}

impl HoldBook {
    /// Packet `id` was read at `at`.
    pub(crate) fn read(&mut self, id: u32, at: Instant) {
        self.outstanding.push_back((id, at));
        self.stats.held += 1;
    }

    /// The time the oldest outstanding packet was read.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.outstanding.front().map(|&(_, at)| at)
    }

    /// The newest outstanding id.
    pub(crate) fn newest(&self) -> Option<u32> {
        self.outstanding.back().map(|&(id, _)| id)
    }

    /// `ids` (in read order) were released at `now`; ids not outstanding are ignored.
    pub(crate) fn release(&mut self, ids: &[u32], now: Instant) {
        let mut k = 0;
        let mut done = Vec::new();
        self.outstanding.retain(|&(id, at)| {
            while k < ids.len() && id_before(ids[k], id) {
                k += 1;
            }
            if k < ids.len() && ids[k] == id {
                k += 1;
                done.push(at);
                return false;
            }
            true
        });
        for at in done {
            self.sample(now.saturating_duration_since(at).as_micros());
        }
    }

    /// Every outstanding packet up to `id` was released at `now` by a verdict of ours.
    pub(crate) fn release_through(&mut self, id: u32, now: Instant) {
        while let Some(&(first, at)) = self.outstanding.front() {
            if id_before(id, first) {
                break;
            }
            self.outstanding.pop_front();
            self.sample(now.saturating_duration_since(at).as_micros());
        }
    }

    /// The deadline released every outstanding packet up to `id` (counted there).
    pub(crate) fn forget_through(&mut self, id: u32) {
        while self.outstanding.front().is_some_and(|&(first, _)| !id_before(id, first)) {
            self.outstanding.pop_front();
        }
    }

    fn sample(&mut self, micros: u128) {
        self.stats.released += 1;
        let us = u32::try_from(micros).unwrap_or(u32::MAX);
        if self.samples.len() < SAMPLES {
            self.samples.push(us);
        } else {
            self.samples[self.next_sample] = us;
        }
        self.next_sample = (self.next_sample + 1) % SAMPLES;
    }

    /// The counters, with the percentiles of the recent hold times.
    pub(crate) fn snapshot(&self) -> HoldStats {
        let mut s = self.stats;
        s.outstanding = self.outstanding.len() as u64;
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> u64 {
            let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(i).map_or(0, |&v| u64::from(v))
        };
        s.p50_us = at(0.50);
        s.p99_us = at(0.99);
        s.max_us = sorted.last().map_or(0, |&v| u64::from(v));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn release_by_ids_and_through_an_id_across_the_wrap() {
        let t0 = Instant::now();
        let mut b = HoldBook::default();
        let ids = [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 2];
        for (i, id) in ids.iter().enumerate() {
            b.read(*id, t0 + Duration::from_micros(i as u64));
        }
        // Early release of some, one of them unknown (already released).
        b.release(&[u32::MAX - 1, 0, 7], t0 + Duration::from_micros(100));
        assert_eq!(b.snapshot().outstanding, 4);
        assert_eq!(b.oldest(), Some(t0));
        b.release_through(u32::MAX, t0 + Duration::from_micros(200));
        assert_eq!(b.snapshot().outstanding, 2);
        assert_eq!(b.newest(), Some(2));
        b.forget_through(1);
        let s = b.snapshot();
        assert_eq!((s.outstanding, s.held, s.released), (1, 6, 4));
        assert_eq!(s.max_us, 200);
        assert!(s.p50_us >= 96 && s.p50_us <= 200, "{s:?}");
    }

    #[test]
    fn percentiles_come_from_the_recent_samples_only() {
        let t0 = Instant::now();
        let mut b = HoldBook::default();
        for i in 0..(SAMPLES as u32 + 100) {
            b.read(i, t0);
            // The first 100 were slow; they fell out of the window.
            let held = if i < 100 { 50_000 } else { 10 + u64::from(i % 10) };
            b.release_through(i, t0 + Duration::from_micros(held));
        }
        let s = b.snapshot();
        assert_eq!(s.max_us, 19);
        assert!((10..=19).contains(&s.p50_us) && s.p99_us <= 19, "{s:?}");
    }
}
