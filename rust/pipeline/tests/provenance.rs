//! The provenance record on fakes: what `why` tells, and the addresses a reload
//! takes out because no rule of the new plan would bring them. And DNS-blind
//! counting: which addresses answers carried.

use std::sync::{Arc, Mutex};

use super::fakes::*;
use super::*;

#[test]
fn why_tells_the_set_policy_names_and_newness() {
    let mut r = rig();
    r.feed(vec![answer(&["www.example.org", "cdn.example.net"], &["192.0.2.50"])]);
    r.feed(vec![answer(&["www.example.org", "cdn.example.net"], &["192.0.2.50"])]);
    let addr: IpAddr = "192.0.2.50".parse().unwrap();
    let why = r.p.why(&addr);
    assert_eq!(why.len(), 1);
    let w = &why[0];
    // The most specific rule of the chain wins: www.example.org (plain).
    assert_eq!((&*w.set, &*w.policy, w.rule.as_str()), ("hr_plain", "plain", "www.example.org"));
    assert_eq!(w.qname, "www.example.org");
    assert_eq!(w.names, ["www.example.org", "cdn.example.net"]);
    assert_eq!((w.answers, w.added), (2, true));
    assert!(w.first_seen > 0 && w.first_seen <= w.last_seen);
    assert!(r.p.why(&"192.0.2.51".parse().unwrap()).is_empty());
    // An address that was in the set before any answer carried it.
    r.kernel
        .sets
        .lock()
        .unwrap()
        .get_mut("hr_vpn1")
        .unwrap()
        .members
        .insert(Entry::parse("192.0.2.52").unwrap(), Some(600));
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.52"])]);
    assert!(!r.p.why(&"192.0.2.52".parse().unwrap())[0].added);
}

#[test]
fn a_reload_takes_out_what_no_rule_brings_any_more() {
    let mut r = rig();
    r.feed(vec![
        answer(&["a.example.org"], &["192.0.2.60"]), // vpn1 through example.org
        answer(&["www.example.org"], &["192.0.2.61"]), // plain through www.example.org
        answer(&["x.example.net"], &["192.0.2.62"]), // plain through example.net
        answer(&["b.example.org"], &["203.0.113.9"]), // inside vpn1's static network
    ]);
    let before = r.p.why(&"192.0.2.60".parse().unwrap());
    assert_eq!(before.len(), 1);
    // New plan: example.org stays with vpn1, www.example.org is gone (its names now
    // go to vpn1 through example.org), example.net is gone.
    let old = r.p.swap_plan(plan(&r.kernel, policies(), &[("example.org", 0)]));
    drop(old);
    let vpn1 = r.kernel.members("hr_vpn1");
    let plain = r.kernel.members("hr_plain");
    assert!(vpn1.contains("192.0.2.60"), "still brought by example.org");
    assert!(!plain.contains("192.0.2.61"), "its names go to another policy now");
    assert!(!plain.contains("192.0.2.62"), "its rule is gone");
    assert!(vpn1.contains("203.0.113.0/24"), "static entries stay");
    assert!(r.p.why(&"192.0.2.62".parse().unwrap()).is_empty());
    assert_eq!(r.p.why(&"192.0.2.60".parse().unwrap()).len(), 1);
    let notes = r.p.take_notes();
    assert!(notes.iter().any(|(_, l)| l.contains("2 address(es) left their sets")), "{notes:?}");
}

#[test]
fn a_removed_policy_takes_its_addresses_out_of_its_old_set() {
    let mut r = rig();
    r.feed(vec![answer(&["x.example.net"], &["192.0.2.70"])]);
    assert!(r.kernel.members("hr_plain").contains("192.0.2.70"));
    let only_vpn1: Vec<PolicySpec> = policies().into_iter().take(1).collect();
    drop(r.p.swap_plan(plan(&r.kernel, only_vpn1, &[("example.org", 0)])));
    assert!(!r.kernel.members("hr_plain").contains("192.0.2.70"));
}

#[test]
fn every_answers_addresses_count_as_seen_for_dns_blind_counting() {
    let sink = Arc::new(Mutex::new(None));
    let mut r = rig_with(FakeFlusher { blind: Some(sink.clone()), ..Default::default() });
    r.p.set_protected(vec![
        Entry::parse("192.0.2.0/26").unwrap(),
        Entry::parse("192.0.2.1").unwrap(),
    ]);
    // A watched answer and an unwatched one: both addresses are "seen".
    r.feed(vec![
        answer(&["a.example.org"], &["203.0.113.30"]),
        answer(&["x.unwatched.test"], &["198.51.100.30"]),
    ]);
    let blind = sink.lock().unwrap().clone().expect("the pipeline handed its counter over");
    {
        let mut b = blind.lock().unwrap();
        b.connection("192.0.2.2".parse().unwrap(), "203.0.113.30".parse().unwrap());
        b.connection("192.0.2.2".parse().unwrap(), "198.51.100.30".parse().unwrap());
        b.connection("192.0.2.2".parse().unwrap(), "198.51.100.31".parse().unwrap());
    }
    let (clients, uncounted) = r.p.blind_clients().unwrap();
    assert_eq!(uncounted, 0);
    let c = clients[0].1;
    assert_eq!((clients[0].0.to_string().as_str(), c.connections, c.blind), ("192.0.2.2", 3, 1));
    r.p.set_dns_blind(false);
    assert!(r.p.blind_clients().is_none());
    // Without conntrack events there is nothing to count.
    assert!(rig().p.blind_clients().is_none());
}
