//! ctnetlink: dump replies and events (`parse_entry`, `parse_event`), the
//! DELETE written back from an entry (`write_delete`), the event index
//! (`EntryIndex`) and the ack tally.
//!
//! The first byte is the index's cap (1-8 entries), the rest a datagram of
//! replies and events. An entry's addresses are of its message's family and
//! its tuple borrows the datagram; a dump entry is also a NEW event; the DELETE
//! written for it reads back as the same entry. Each event is applied to the
//! index and to a model (a set of entries, dropped past the cap, rebuilt at
//! NLMSG_DONE): both must hold the same entries and find the same ones for
//! an address.
#![no_main]

use std::collections::HashSet;
use std::net::IpAddr;

use hrneo::fuzzing::{
    messages, parse_entry, parse_event, tally, write_delete, Datagram, EntryIndex, Event, Victim,
};
use hrneo_fuzz::within;
use libfuzzer_sys::fuzz_target;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NLMSG_DONE: u16 = 3;
const CT_NEW: u16 = 0x0100; // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
const CT_DELETE: u16 = 0x0102;

fuzz_target!(|data: &[u8]| {
    let Some((&cap, d)) = data.split_first() else { return };
    let cap = usize::from(cap % 8) + 1;
    let mut index = EntryIndex::new(cap);
    index.rebuild();
    let mut model: Option<HashSet<Victim>> = Some(HashSet::new());
    let mut codes = Vec::new();
    for m in messages(d) {
        codes.extend(m.error_code());
        if m.msg_type == NLMSG_DONE {
            index.rebuild();
            model = Some(HashSet::new());
            continue;
        }
        let entry = parse_entry(&m);
        let event = parse_event(&m);
        if let Some(e) = &entry {
            assert_eq!(m.msg_type, CT_NEW, "a dump entry is a NEW message");
            assert_eq!(event.as_ref(), Some(&Event::New(e.clone())), "and the same as a NEW event");
        }
        let Some(event) = event else { continue };
        let e = match &event {
            Event::New(e) | Event::Destroy(e) => e,
        };
        assert_eq!(e.family, m.payload[0]);
        let v4 = e.family == AF_INET;
        assert!(v4 || e.family == AF_INET6, "only IPv4 and IPv6 entries");
        assert_eq!(e.orig_dst.is_ipv4(), v4);
        assert!(e.orig_src.is_none_or(|s| s.is_ipv4() == v4));
        assert!(e.reply_src.is_none_or(|r| r.is_ipv4() == v4));
        assert!(within(d, e.tuple), "the tuple borrows the datagram");
        assert!(e.matches(&HashSet::from([e.orig_dst])));
        round_trip(e.victim(), e.orig_src);

        // The index and the model.
        let v = e.victim();
        match &event {
            Event::New(_) => {
                index.apply(&event);
                if let Some(set) = &mut model {
                    if !set.contains(&v) {
                        if set.len() >= cap {
                            model = None; // past the cap the index is dropped
                        } else {
                            set.insert(v.clone());
                        }
                    }
                }
            }
            Event::Destroy(_) => {
                index.apply(&event);
                if let Some(set) = &mut model {
                    set.remove(&v);
                }
            }
        }
        assert_eq!(index.is_valid(), model.is_some());
        let held = model.as_ref().map_or(0, HashSet::len);
        assert_eq!((index.len(), index.is_empty()), (held, held == 0));
        let mut addrs = HashSet::from([v.orig_dst]);
        addrs.extend(v.reply_src);
        let found = index.lookup(&addrs).map(|f| {
            let n = f.len();
            let set: HashSet<Victim> = f.into_iter().collect();
            assert_eq!(set.len(), n, "each entry found once");
            set
        });
        let want = model.as_ref().map(|m| {
            m.iter()
                .filter(|x| x.matched_in(&addrs).is_some())
                .cloned()
                .collect::<HashSet<Victim>>()
        });
        assert_eq!(found, want);
    }
    let (ok, gone, failed) = tally(codes.iter().copied());
    assert_eq!(ok + gone + failed, codes.len() as u64);
    assert_eq!(ok, codes.iter().filter(|&&c| c == 0).count() as u64);
});

/// The DELETE written for an entry carries its tuple, id and zone: read as a
/// DESTROY event it is the same entry (without the reply tuple, not sent).
fn round_trip(v: Victim, orig_src: Option<IpAddr>) {
    let mut d = Datagram::new();
    write_delete(&mut d, 7, &v, true);
    let mut it = messages(d.as_bytes());
    let m = it.next().expect("one message");
    assert!(it.next().is_none() && !it.truncated());
    assert_eq!(m.msg_type, CT_DELETE);
    let Some(Event::Destroy(back)) = parse_event(&m) else {
        panic!("the DELETE of {v:?} does not read back");
    };
    assert_eq!((back.family, back.orig_dst, back.tuple), (v.family, v.orig_dst, &v.tuple[..]));
    assert_eq!(back.orig_src, orig_src, "the same tuple, the same source");
    assert_eq!((back.id, back.zone, back.reply_src), (v.id, v.zone, None::<IpAddr>));
}
