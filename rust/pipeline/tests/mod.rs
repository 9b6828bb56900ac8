//! The pipeline on fakes: batching, matching, flushing, errors, plan swaps.
//! No kernel needed; the kernel tests drive the real sockets.

mod accounting;
mod fakes;
mod hold;
mod provenance;
mod state;

use std::net::IpAddr;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fakes::*;

use super::*;
use crate::ipset::Family;
use crate::testutil::{udp4_answer, Msg, TYPE_A, TYPE_AAAA};

#[test]
fn prepare_creates_sets_and_statics() {
    let r = rig();
    assert_eq!(r.kernel.members("hr_vpn1"), set(&["203.0.113.0/24"]));
    assert!(r.kernel.members("hr_vpn1_v6").is_empty());
    let sets = r.kernel.sets.lock().unwrap();
    assert_eq!(sets["hr_vpn1_v6"].family, Some(Family::Inet6));
    assert_eq!(sets["hr_vpn1"].members[&Entry::parse("203.0.113.0/24").unwrap()], Some(0));
}

#[test]
fn queries_and_error_answers_add_nothing() {
    let mut r = rig();
    let spoof =
        Msg::new(1, false, "www.example.org", TYPE_A, 1).a("www.example.org", 60, [192, 0, 2, 66]);
    let nx = Msg::new(2, true, "a.example.org", TYPE_A, 1)
        .a("a.example.org", 60, [192, 0, 2, 67])
        .rcode(3);
    r.feed(vec![udp4_answer(&spoof.buf), udp4_answer(&nx.buf)]);
    assert!(!r.kernel.members("hr_vpn1").contains("192.0.2.66"));
    assert!(!r.kernel.members("hr_vpn1").contains("192.0.2.67"));
    let c = r.p.counters();
    assert_eq!((c.events, c.answers, c.queries_ignored, c.rcode_skipped), (2, 1, 1, 1));
    assert!(r.flush_calls().is_empty());
}

#[test]
fn cname_both_ways_and_most_specific() {
    let mut r = rig();
    r.feed(vec![
        answer(&["video.example.org", "edge.cdn.test"], &["192.0.2.1"]), // watched alias
        answer(&["alias.test", "x.example.net"], &["192.0.2.2"]),        // watched target
        answer(&["www.example.org"], &["192.0.2.3"]),                    // plain is more specific
        answer(&["unrelated.test"], &["192.0.2.4"]),
        answer(&["badexample.org"], &["192.0.2.5"]),
    ]);
    assert_eq!(r.kernel.members("hr_vpn1"), set(&["203.0.113.0/24", "192.0.2.1"]));
    assert_eq!(r.kernel.members("hr_plain"), set(&["192.0.2.2", "192.0.2.3"]));
    assert_eq!((r.stats("vpn1").matched, r.stats("plain").matched), (1, 2));
    assert_eq!(r.p.counters().unwatched, 2);
}

#[test]
fn one_commit_per_set_per_wakeup_and_v6() {
    let mut r = rig();
    let mut packets: Vec<Vec<u8>> = (1..40)
        .map(|i| {
            answer(
                &[&format!("h{i}.example.org")],
                &[&format!("192.0.2.{i}"), &format!("2001:db8::{i}")],
            )
        })
        .collect();
    packets.push(answer(&["n.example.net"], &["2001:db8::99"]));
    r.feed(packets);
    let c4 = r.kernel.commits_to("hr_vpn1");
    assert_eq!(c4.len(), 1);
    assert_eq!(c4[0].len(), 39);
    assert_eq!(r.kernel.commits_to("hr_vpn1_v6").len(), 1);
    assert!(r.kernel.members("hr_vpn1_v6").contains("2001:db8::5"));
    // `plain` has no IPv6 set: its AAAA is dropped and counted, not sent anywhere.
    assert_eq!(r.stats("plain").v6_dropped, 1);
    assert!(r.kernel.commits_to("hr_plain").is_empty());
    // The same address twice in one wake-up is sent once.
    r.feed(vec![
        answer(&["a.example.org"], &["198.51.100.1"]),
        answer(&["b.example.org"], &["198.51.100.1"]),
    ]);
    assert_eq!(r.kernel.commits_to("hr_vpn1")[1].len(), 1);
}

#[test]
fn flush_only_new_addresses_of_reconnect_policies() {
    let mut r = rig();
    r.kernel
        .sets
        .lock()
        .unwrap()
        .get_mut("hr_vpn1")
        .unwrap()
        .members
        .insert(Entry::parse("192.0.2.10").unwrap(), Some(600));
    r.feed(vec![
        answer(&["a.example.org"], &["192.0.2.10", "192.0.2.11"]),
        answer(&["b.example.org"], &["2001:db8::11"]),
        answer(&["c.example.net"], &["198.51.100.7"]), // reconnect: false
    ]);
    assert_eq!(r.flush_calls(), vec![vec!["192.0.2.11".to_string(), "2001:db8::11".to_string()]]);
    let st = r.stats("vpn1");
    assert_eq!((st.added, st.new, st.refreshed, st.flushed), (3, 2, 1, 6));
    assert_eq!((r.stats("plain").flushed, r.stats("plain").new), (0, 1));
    assert_eq!(r.p.flush_totals().unwrap().race_misses, 2);
    // The same answer again: nothing new, no flush.
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.10", "192.0.2.11"])]);
    assert_eq!(r.flush_calls().len(), 1);
}

#[test]
fn flushes_coalesce_while_one_runs() {
    let f = FakeFlusher::default();
    f.gate_closed.store(true, Ordering::SeqCst);
    let mut r = rig_with(f);
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.50"])]);
    for _ in 0..2500 {
        if r.flusher.entered.load(Ordering::SeqCst) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(r.flusher.entered.load(Ordering::SeqCst), 1, "first flush in flight");
    // process_queued returned while the flush is blocked: it is off the hot path.
    r.feed(vec![answer(&["b.example.org"], &["192.0.2.51"])]);
    r.feed(vec![answer(&["c.example.org"], &["192.0.2.52", "2001:db8::52"])]);
    assert_eq!(r.p.flush_pending(), 4, "three waiting, one running");
    r.flusher.gate_closed.store(false, Ordering::SeqCst);
    let calls = r.flush_calls();
    assert_eq!(
        calls,
        vec![
            vec!["192.0.2.50".to_string()],
            vec!["192.0.2.51".to_string(), "192.0.2.52".to_string(), "2001:db8::52".to_string()]
        ]
    );
    assert_eq!(r.stats("vpn1").flushed, 12);
}

#[test]
fn flushes_only_addresses_already_in_their_sets() {
    let kernel = Kernel::default();
    let f = FakeFlusher { kernel: Some(kernel.clone()), ..Default::default() };
    let source = FakeSource::new();
    let mut p = Pipeline::new(
        Box::new(source.clone()),
        plan(&kernel, policies(), DOMAINS),
        Some(Box::new(f.clone())),
    )
    .unwrap();
    source.push([answer(&["a.example.org"], &["192.0.2.60", "2001:db8::60"])]);
    p.process_queued(10);
    p.close();
    assert_eq!(*f.in_set_at_flush.lock().unwrap(), vec![true, true]);
}

#[test]
fn flush_error_is_noted_and_the_thread_goes_on() {
    let mut r = rig_with(FakeFlusher { fail_first: 1, ..Default::default() });
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.1"])]);
    assert_eq!(r.flush_calls().len(), 1);
    r.feed(vec![answer(&["b.example.org"], &["192.0.2.2"])]);
    assert_eq!(r.flush_calls().len(), 2);
    let t = r.p.flush_totals().unwrap();
    assert_eq!((t.errors, t.flushed), (1, 3));
    let notes = r.p.take_notes();
    assert!(notes
        .iter()
        .any(|(l, n)| *l == Level::Error && n.contains("conntrack flush of 1 address")));
}

#[test]
fn close_flushes_what_is_pending_and_is_bounded() {
    let f = FakeFlusher::default();
    f.gate_closed.store(true, Ordering::SeqCst);
    let mut r = rig_with(f);
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.1"])]);
    while r.flusher.entered.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    r.feed(vec![answer(&["b.example.org"], &["192.0.2.2"])]);
    let mut w = r.p.flush.take().unwrap();
    assert!(!w.close(Duration::from_millis(50)), "the flush in flight never returns");
    r.flusher.gate_closed.store(false, Ordering::SeqCst);
    assert!(w.close(Duration::from_secs(5)));
    assert_eq!(r.flusher.calls.lock().unwrap().len(), 2, "pending flushed before exit");
}

#[test]
fn vanished_set_is_prepared_again_and_retried() {
    let mut r = rig();
    r.kernel.sets.lock().unwrap().remove("hr_vpn1"); // someone ran `ipset destroy`
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.20"])]);
    assert!(r.kernel.members("hr_vpn1").contains("192.0.2.20"));
    assert!(r.kernel.members("hr_vpn1").contains("203.0.113.0/24"), "statics re-added");
    assert_eq!((r.p.counters().commit_errors, r.p.counters().sets_recreated), (1, 1));
    // A set that cannot be created again: noted and counted, the pipeline goes on.
    r.kernel.sets.lock().unwrap().remove("hr_vpn1");
    r.kernel.refuse_create.store(true, Ordering::SeqCst);
    r.feed(vec![answer(&["b.example.org"], &["192.0.2.21"])]);
    assert_eq!(r.p.counters().commit_errors, 2);
    assert_eq!(r.stats("vpn1").errors, 1);
    r.feed(vec![answer(&["c.example.net"], &["192.0.2.22"])]);
    assert!(r.kernel.members("hr_plain").contains("192.0.2.22"));
    let notes = r.p.take_notes();
    assert!(notes.iter().any(|(_, n)| n.contains("cannot prepare it")), "{notes:?}");
}

#[test]
fn partly_failed_commit_counts_and_flushes_what_went_in() {
    let mut r = rig();
    {
        let mut sets = r.kernel.sets.lock().unwrap();
        let s = sets.get_mut("hr_vpn1").unwrap();
        s.limit = Some(s.members.len() + 2);
    }
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.30", "192.0.2.31", "192.0.2.32"])]);
    let m = r.kernel.members("hr_vpn1");
    assert!(m.contains("192.0.2.30") && m.contains("192.0.2.31") && !m.contains("192.0.2.32"));
    assert_eq!(r.p.counters().commit_errors, 1);
    assert_eq!(r.stats("vpn1").new, 2);
    assert_eq!(r.flush_calls(), vec![vec!["192.0.2.30".to_string(), "192.0.2.31".to_string()]]);
}

#[test]
fn swapped_plan_keeps_counters_by_name_and_routes_anew() {
    let mut r = rig();
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.40"])]);
    let mut pols = policies();
    pols.push(PolicySpec {
        name: "extra".into(),
        set4: Some("hr_extra".into()),
        set6: None,
        timeout: 0,
        maxelem: None,
        reconnect: false,
        statics: vec![],
    });
    pols.swap(0, 2); // extra first: plan indices change, names do not
    let domains = [("example.com", 0), ("example.org", 2), ("example.net", 1)];
    let old = r.p.swap_plan(plan(&r.kernel, pols, &domains));
    drop(old);
    r.feed(vec![
        answer(&["www.example.com"], &["192.0.2.41"]),
        answer(&["b.example.org"], &["192.0.2.42"]),
    ]);
    assert!(r.kernel.members("hr_extra").contains("192.0.2.41"));
    assert!(r.kernel.members("hr_vpn1").contains("192.0.2.40"), "sets are never flushed");
    assert_eq!(r.stats("vpn1").matched, 2);
    assert_eq!(r.stats("extra").matched, 1);
    let names: Vec<String> = r.p.policy_counters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["extra", "plain", "vpn1"]);
}

#[test]
fn https_hints_are_routed_and_counted() {
    let mut r = rig();
    let m = Msg::new(3, true, "www.example.org", 65, 1).https(
        "www.example.org",
        60,
        1,
        ".",
        &[[192, 0, 2, 70]],
        &["2001:db8::70"],
    );
    // www.example.org is plain's (no IPv6 set): the v6 hint is dropped and counted.
    r.feed(vec![udp4_answer(&m.buf)]);
    assert!(r.kernel.members("hr_plain").contains("192.0.2.70"));
    let st = r.stats("plain");
    assert_eq!((st.hint_addresses, st.v6_dropped), (1, 1));
    // An HTTPS target under a watched domain routes the answer like a CNAME would.
    let m = Msg::new(4, true, "cdn.test", 65, 2)
        .https("cdn.test", 60, 1, "svc.example.net", &[], &[])
        .a("svc.example.net", 60, [192, 0, 2, 71]);
    r.feed(vec![udp4_answer(&m.buf)]);
    assert!(r.kernel.members("hr_plain").contains("192.0.2.71"));
}

#[test]
fn verbose_notes_tell_new_and_refreshed_with_the_question() {
    let mut r = rig();
    r.p.set_verbose(true);
    r.feed(vec![answer(&["a.example.org", "edge.cdn.test"], &["192.0.2.80"])]);
    r.feed(vec![answer(&["b.example.org"], &["192.0.2.80", "2001:db8::80"])]);
    let lines: Vec<String> =
        r.p.take_notes().into_iter().filter(|(l, _)| *l == Level::Debug).map(|(_, n)| n).collect();
    assert!(lines.contains(&"vpn1 +192.0.2.80 a.example.org".to_string()), "{lines:?}");
    assert!(lines.contains(&"vpn1 =192.0.2.80 b.example.org".to_string()), "{lines:?}");
    assert!(lines.contains(&"vpn1 +2001:db8::80 b.example.org".to_string()), "{lines:?}");
    r.p.set_verbose(false);
    r.feed(vec![answer(&["c.example.org"], &["192.0.2.81"])]);
    assert!(r.p.wait_flushed(Duration::from_secs(5)));
    // The conntrack thread's own DEBUG lines may come; per-address lines may not.
    assert!(r.p.take_notes().iter().all(|(_, n)| !n.starts_with("vpn1 ")));
}

#[test]
fn garbage_is_counted_never_added() {
    let mut r = rig();
    let good = answer(&["a.example.org"], &["192.0.2.90"]);
    let mut packets = vec![vec![], vec![0x45, 0, 0], good[..good.len() - 3].to_vec()];
    let mut rng = crate::testutil::Rng(7);
    for _ in 0..2000 {
        let mut p = good.clone();
        let at = rng.below(p.len());
        p[at] ^= 1 << rng.below(8);
        packets.push(p);
    }
    r.feed(packets);
    let c = r.p.counters();
    assert!(c.malformed + c.incomplete + c.non_dns >= 3);
    // Mutants may still be valid answers of watched names; nothing else may appear.
    for m in r.kernel.members("hr_vpn1") {
        assert!(m == "203.0.113.0/24" || m.parse::<IpAddr>().is_ok(), "{m}");
    }
}

#[test]
fn class_ch_records_are_not_routed() {
    let mut r = rig();
    let m = Msg::new(5, true, "a.example.org", TYPE_A, 2)
        .rr_class("a.example.org", TYPE_A, crate::testutil::CLASS_CH, 60, &[192, 0, 2, 99])
        .rr(
            "a.example.org",
            TYPE_AAAA,
            60,
            &"2001:db8::99".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        );
    r.feed(vec![udp4_answer(&m.buf)]);
    assert!(!r.kernel.members("hr_vpn1").contains("192.0.2.99"));
    assert!(r.kernel.members("hr_vpn1_v6").contains("2001:db8::99"));
}

#[test]
fn run_returns_on_the_wake_fd_and_on_timeout() {
    let mut r = rig();
    let (a, b) = UnixDatagram::pair().unwrap();
    let t0 = Instant::now();
    assert_eq!(r.p.run(Duration::from_millis(30), Some(b.as_raw_fd())).unwrap(), Wake::Timeout);
    assert!(t0.elapsed() >= Duration::from_millis(30));
    r.source.push([answer(&["a.example.org"], &["192.0.2.95"])]);
    a.send(b"!").unwrap();
    assert_eq!(r.p.run(Duration::from_secs(5), Some(b.as_raw_fd())).unwrap(), Wake::WakeFd);
    assert!(r.kernel.members("hr_vpn1").contains("192.0.2.95"), "packets first, then the wake-up");
}

#[test]
fn a_flush_from_a_valid_index_is_done_at_once_in_the_pipeline_thread() {
    let mut r = rig_with(FakeFlusher { ready: true, ..Default::default() });
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.1", "192.0.2.2"])]);
    // No waiting: the flush happened inside process_queued, after the commit.
    assert_eq!(r.flusher.calls.lock().unwrap().len(), 1);
    assert_eq!(*r.flusher.threads.lock().unwrap(), vec![std::thread::current().id()]);
    assert_eq!(r.stats("vpn1").flushed, 6);
    assert_eq!(r.p.flush_pending(), 0);
}

#[test]
fn untrusted_sources_and_protected_addresses_add_nothing() {
    let mut r = rig();
    // udp4_answer's packets come from 192.0.2.1.
    r.p.set_trusted(vec![Entry::parse("203.0.113.53").unwrap()]);
    r.feed(vec![answer(&["a.example.org"], &["198.51.100.1"])]);
    assert_eq!(r.p.counters().untrusted, 1);
    assert!(!r.kernel.members("hr_vpn1").contains("198.51.100.1"));
    r.p.set_trusted(vec![Entry::parse("192.0.2.0/24").unwrap()]);
    r.p.set_protected(vec![Entry::parse("198.51.100.0/28").unwrap()]);
    r.feed(vec![answer(
        &["b.example.org"],
        &["198.51.100.2", "198.51.100.20", "0.0.0.0", "127.0.0.1", "::", "fe80::1", "2001:db8::20"],
    )]);
    let m = r.kernel.members("hr_vpn1");
    assert!(m.contains("198.51.100.20") && !m.contains("198.51.100.2") && !m.contains("0.0.0.0"));
    assert!(r.kernel.members("hr_vpn1_v6").contains("2001:db8::20"));
    assert!(!r.kernel.members("hr_vpn1_v6").contains("::"));
    assert_eq!(r.stats("vpn1").protected, 5);
}

#[test]
fn a_full_set_is_counted_logged_once_and_still_refreshes() {
    let mut r = rig();
    {
        let mut sets = r.kernel.sets.lock().unwrap();
        let s = sets.get_mut("hr_vpn1").unwrap();
        s.members.insert(Entry::parse("198.51.100.9").unwrap(), Some(5));
        s.limit = Some(s.members.len());
    }
    for i in 0..5 {
        r.feed(vec![answer(
            &["a.example.org"],
            &["198.51.100.9", &format!("198.51.100.{}", 100 + i)],
        )]);
    }
    let st = r.stats("vpn1");
    assert_eq!((st.set_full, st.not_added, st.refreshed, st.new), (5, 5, 5, 0));
    // The present entry had its timeout refreshed each time.
    let sets = r.kernel.sets.lock().unwrap();
    assert_eq!(sets["hr_vpn1"].members[&Entry::parse("198.51.100.9").unwrap()], Some(600));
    drop(sets);
    let errors: Vec<String> =
        r.p.take_notes().into_iter().filter(|(l, _)| *l == Level::Error).map(|(_, n)| n).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("full") && errors[0].contains("1 not added"), "{errors:?}");
}

#[test]
fn a_tcp_answer_in_many_segments_is_routed_once_whole() {
    use crate::testutil::{ipv4, tcp_seq};
    let mut r = rig();
    let mut m = Msg::new(9, true, "big.example.org", TYPE_AAAA, 500);
    for i in 0..500u16 {
        m = m.aaaa("big.example.org", 60, &format!("2001:db8::{:x}", i + 1));
    }
    let mut stream = (m.buf.len() as u16).to_be_bytes().to_vec();
    stream.extend_from_slice(&m.buf);
    assert!(stream.len() > 20_000);
    let segments: Vec<Vec<u8>> = stream
        .chunks(1000)
        .enumerate()
        .map(|(i, c)| ipv4(6, &tcp_seq(53, 1 + 1000 * i as u32, c)))
        .collect();
    let (last, first) = segments.split_last().unwrap();
    r.feed(first.to_vec());
    assert!(r.kernel.members("hr_vpn1_v6").is_empty(), "nothing before the last byte");
    r.feed(vec![last.clone(), last.clone()]); // a retransmission adds nothing
    assert_eq!(r.kernel.members("hr_vpn1_v6").len(), 500);
    assert_eq!(r.p.counters().answers, 1);
    assert_eq!(r.p.tcp_stats().reassembled, 1);
    assert_eq!(r.p.counters().malformed + r.p.counters().incomplete, 0);
}
