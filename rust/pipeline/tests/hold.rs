//! Hold mode on fakes: which packets are accepted before the commits, which
//! after, and that the conntrack flush of new addresses comes before their release.

use std::sync::{Arc, Mutex};

use super::fakes::*;
use super::*;
use crate::testutil::{ipv4, tcp_seq};

/// A pipeline over a holding source; the timeline records commits, verdicts and flushes.
fn holding_rig() -> (Rig, Arc<Mutex<Vec<String>>>) {
    let kernel = Kernel::default();
    let timeline = kernel.timeline.clone();
    let mut source = FakeSource::new();
    source.holding = Some(timeline.clone());
    // No valid event index: hold mode still flushes in the pipeline's thread.
    let flusher = FakeFlusher { kernel: Some(kernel.clone()), ..Default::default() };
    let p = Pipeline::new(
        Box::new(source.clone()),
        plan(&kernel, policies(), DOMAINS),
        Some(Box::new(flusher.clone())),
    )
    .unwrap();
    (Rig { kernel, source, flusher, p }, timeline)
}

fn take(t: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *t.lock().unwrap())
}

#[test]
fn unwatched_and_garbage_go_at_once_watched_after_the_commit_and_the_flush() {
    let (mut r, t) = holding_rig();
    // Nothing watched: one batch verdict, no commit.
    r.feed(vec![answer(&["www.unwatched.test"], &["192.0.2.1"]), vec![0x45, 0, 0]]);
    assert_eq!(take(&t), ["through 2"]);
    // Ids 3..6: unwatched, watched (new), garbage, watched (same address again).
    r.feed(vec![
        answer(&["a.unwatched.test"], &["192.0.2.2"]),
        answer(&["a.example.org"], &["192.0.2.70"]),
        b"not an ip packet".to_vec(),
        answer(&["b.example.org"], &["192.0.2.70"]),
    ]);
    assert_eq!(take(&t), ["accept 3,5", "commit hr_vpn1", "flush 192.0.2.70", "through 6"]);
    // Present already: the commit still comes first (it refreshes the timeout), no flush.
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.70"])]);
    assert_eq!(take(&t), ["commit hr_vpn1", "through 7"]);
    assert!(r.kernel.members("hr_vpn1").contains("192.0.2.70"));
}

#[test]
fn untrusted_and_protected_answers_are_not_held_for_a_commit() {
    let (mut r, t) = holding_rig();
    r.p.set_trusted(vec![Entry::parse("198.51.100.53").unwrap()]);
    // testutil's packets come from 192.0.2.1: not trusted.
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.71"])]);
    assert_eq!(take(&t), ["through 1"]);
    r.p.set_trusted(vec![]);
    r.p.set_protected(vec![Entry::parse("192.0.2.0/24").unwrap()]);
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.72"])]);
    assert_eq!(take(&t), ["through 2"]);
}

#[test]
fn tcp_segments_before_the_last_go_at_once() {
    let (mut r, t) = holding_rig();
    let m = Msg::new(4, true, "t.example.org", TYPE_A, 1).a("t.example.org", 60, [192, 0, 2, 73]);
    let mut stream = (m.buf.len() as u16).to_be_bytes().to_vec();
    stream.extend_from_slice(&m.buf);
    let seg = |from: usize, to: usize| ipv4(6, &tcp_seq(53, 100 + from as u32, &stream[from..to]));
    r.feed(vec![seg(0, 2)]);
    assert_eq!(take(&t), ["through 1"]);
    r.feed(vec![seg(2, 20), seg(20, stream.len())]);
    assert_eq!(take(&t), ["accept 2", "commit hr_vpn1", "flush 192.0.2.73", "through 3"]);
}

#[test]
fn a_source_that_holds_nothing_gets_no_verdicts() {
    let mut r = rig();
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.74"])]);
    assert_eq!(r.kernel.timeline.lock().unwrap().as_slice(), ["commit hr_vpn1"]);
    assert!(r.p.hold_stats().is_none());
}
