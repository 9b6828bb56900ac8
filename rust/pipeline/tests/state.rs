//! What a state file keeps across a reboot: the learned entries a plan lists,
//! and how saved ones are put back.

use super::super::*;
use super::fakes::*;

fn e(text: &str) -> Entry {
    Entry::parse(text).unwrap()
}

fn learned_of(p: &mut Pipeline, set: &str) -> Vec<(String, u32)> {
    let all = p.learned().unwrap();
    let (_, entries) = all.into_iter().find(|(n, _)| n == set).unwrap();
    let mut v: Vec<(String, u32)> = entries.iter().map(|(e, t)| (e.to_string(), *t)).collect();
    v.sort();
    v
}

#[test]
fn learned_lists_timed_entries_but_no_statics() {
    let mut r = rig();
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.1", "2001:db8::1"])]);
    r.feed(vec![answer(&["b.example.net"], &["192.0.2.9"])]);
    {
        let mut sets = r.kernel.sets.lock().unwrap();
        // Added by hand with no timeout: permanent, not learned.
        sets.get_mut("hr_vpn1").unwrap().members.insert(e("198.51.100.0/24"), Some(0));
    }
    let names: Vec<String> = r.p.learned().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["hr_vpn1", "hr_vpn1_v6", "hr_plain"]);
    assert_eq!(learned_of(&mut r.p, "hr_vpn1"), [("192.0.2.1".to_string(), 600)]);
    assert_eq!(learned_of(&mut r.p, "hr_vpn1_v6"), [("2001:db8::1".to_string(), 600)]);
    assert_eq!(learned_of(&mut r.p, "hr_plain"), [("192.0.2.9".to_string(), 3600)]);
    // A static entry that happens to have a timeout (learned before it became
    // static) is still the config's, not learned.
    r.kernel
        .sets
        .lock()
        .unwrap()
        .get_mut("hr_vpn1")
        .unwrap()
        .members
        .insert(e("203.0.113.0/24"), Some(50));
    assert_eq!(learned_of(&mut r.p, "hr_vpn1").len(), 1);
    // A set that vanished lists nothing (prepare puts it back).
    r.kernel.sets.lock().unwrap().remove("hr_plain");
    assert!(learned_of(&mut r.p, "hr_plain").is_empty());
}

#[test]
fn restore_puts_entries_back_capped_filtered_and_never_shortens() {
    let mut r = rig();
    r.feed(vec![answer(&["a.example.org"], &["192.0.2.1"])]);
    let saved = vec![
        (
            "hr_vpn1".to_string(),
            vec![
                (e("192.0.2.1"), 30),      // present: keeps its 600
                (e("192.0.2.2"), 100),     // back with 100
                (e("192.0.2.3"), 99_999),  // capped at the policy's 600
                (e("203.0.113.0/24"), 50), // static: stays permanent
                (e("2001:db8::7"), 100),   // other family
                (e("192.0.2.4"), 0),       // no time left
            ],
        ),
        ("hr_gone".to_string(), vec![(e("192.0.2.5"), 100)]),
        ("hr_plain".to_string(), vec![(e("198.51.100.9"), 200)]),
    ];
    let (added, notes) = r.p.restore(&saved);
    assert_eq!(added, 3, "{notes:?}");
    assert!(notes.is_empty(), "{notes:?}");
    let sets = r.kernel.sets.lock().unwrap();
    let m = &sets["hr_vpn1"].members;
    assert_eq!(m[&e("192.0.2.1")], Some(600));
    assert_eq!(m[&e("192.0.2.2")], Some(100));
    assert_eq!(m[&e("192.0.2.3")], Some(600));
    assert_eq!(m[&e("203.0.113.0/24")], Some(0));
    assert!(!m.contains_key(&e("192.0.2.4")));
    assert!(sets["hr_vpn1_v6"].members.is_empty());
    assert_eq!(sets["hr_plain"].members[&e("198.51.100.9")], Some(200));
    assert!(!sets.contains_key("hr_gone"));
}

#[test]
fn restore_skips_forever_policies_and_reports_failed_sets() {
    let kernel = Kernel::default();
    let mut pols = policies();
    pols[1].timeout = 0;
    let mut p = plan(&kernel, pols, DOMAINS);
    kernel.sets.lock().unwrap().remove("hr_vpn1");
    let saved = vec![
        ("hr_plain".to_string(), vec![(e("198.51.100.9"), 200)]),
        ("hr_vpn1".to_string(), vec![(e("192.0.2.2"), 100)]),
        ("hr_vpn1_v6".to_string(), vec![(e("2001:db8::2"), 100)]),
    ];
    let (added, notes) = p.restore(&saved);
    assert_eq!(added, 1);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("set hr_vpn1: ")
            && notes[0].ends_with("its 1 saved entries not restored"),
        "{notes:?}"
    );
    assert!(kernel.members("hr_plain").is_empty());
    assert_eq!(kernel.members("hr_vpn1_v6"), set(&["2001:db8::2"]));
}
