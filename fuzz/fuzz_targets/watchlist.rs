//! The watchlist: `add` of arbitrary names, `lookup` and `best` of arbitrary
//! (and of derived) names, against a model (a map of domains and a suffix walk).
//!
//! The input is a list of operations: add a name (any bytes), add a name under
//! a domain already in, look a name up (any bytes, or a label in front of a
//! domain already in), look up a chain of two names. A name is accepted iff it
//! is a normalized domain; a name added is found (itself and under it) with
//! the policy that added it first; a lookup finds the most specific domain the
//! name equals or is under, at a label boundary; `best` ranks by labels, then
//! length, then the earlier name. Match keys made from text hold only bytes a
//! domain can have, or 0.
#![no_main]

use std::collections::HashMap;

use hrneo::fuzzing::text_match_key;
use hrneo::{Added, Origin, Watchlist};
use hrneo_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

/// Lower-case labels of a-z 0-9 - _, 1-63 bytes, no '-' at either end, 253 bytes at most.
fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[derive(Default)]
struct Model {
    /// Domains in the order added, with their policy and line.
    order: Vec<(String, u16, u32)>,
    at: HashMap<String, usize>,
}

impl Model {
    /// The most specific domain `key` equals or is under.
    fn lookup(&self, key: &[u8]) -> Option<usize> {
        let whole = std::iter::once(0);
        let starts = whole.chain((1..key.len()).filter(|&i| key[i - 1] == b'.'));
        starts
            .filter_map(|i| {
                std::str::from_utf8(&key[i..]).ok().and_then(|s| self.at.get(s)).copied()
            })
            .next()
    }
}

fn key_of(text: &str) -> Vec<u8> {
    let mut key = Vec::new();
    text_match_key(text, &mut key);
    let stripped = text.strip_suffix('.').unwrap_or(text);
    assert_eq!(key.len(), stripped.len(), "one key byte per text byte");
    assert!(key.iter().all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | 0)));
    key
}

fuzz_target!(|data: &[u8]| {
    let mut w = Watchlist::new();
    assert_eq!(w.add_source("fuzz.list"), 0);
    let mut m = Model::default();
    let mut b = Bytes::new(data);
    let mut line = 0u32;
    while !b.is_empty() {
        let op = b.u8();
        let text = String::from_utf8_lossy(b.bytes8()).into_owned();
        let under = |m: &Model, k: u8| {
            m.order.get(usize::from(k) % m.order.len().max(1)).map(|d| d.0.clone())
        };
        match op % 5 {
            0 | 1 => {
                let name = if op % 5 == 1 {
                    match under(&m, b.u8()) {
                        Some(d) => format!("{text}.{d}"),
                        None => text,
                    }
                } else {
                    text
                };
                let policy = u16::from(op >> 3);
                line += 1;
                let origin = Origin { source: 0, line };
                let r = w.add(&name, policy, origin);
                assert_eq!(r.is_ok(), is_domain(&name), "{name:?}: {r:?}");
                match r {
                    Ok(Added::New) => {
                        assert!(!m.at.contains_key(&name));
                        m.at.insert(name.clone(), m.order.len());
                        m.order.push((name.clone(), policy, line));
                    }
                    Ok(Added::Present { policy: p, origin: o }) => {
                        let (_, mp, ml) = m.order[m.at[&name]];
                        assert_eq!(
                            (p, o),
                            (mp, Origin { source: 0, line: ml }),
                            "the first one keeps it"
                        );
                    }
                    Err(_) => continue,
                }
                // A name added is found: itself, and a name under it.
                let i = w.lookup(name.as_bytes()).expect("a name added is found");
                assert_eq!(w.domain(i), name);
                let (_, mp, ml) = m.order[m.at[&name]];
                assert_eq!((w.policy_of(i), w.origin(i)), (mp, Origin { source: 0, line: ml }));
                let below = format!("x-1.{name}");
                let j = w.lookup(below.as_bytes()).expect("a name under it is found");
                assert!(w.domain(j).len() >= name.len());
            }
            2 | 3 => {
                let query = if op % 5 == 3 {
                    match under(&m, b.u8()) {
                        Some(d) => format!("{text}.{d}"),
                        None => text,
                    }
                } else {
                    text
                };
                let key = key_of(&query);
                let got = w.lookup(&key).map(|i| w.domain(i).to_string());
                let want = m.lookup(&key).map(|i| m.order[i].0.clone());
                assert_eq!(got, want, "lookup of {query:?}");
            }
            _ => {
                // A chain of two names: the most labels, then the longest, then the first.
                let other = String::from_utf8_lossy(b.bytes8()).into_owned();
                let keys = [key_of(&text), key_of(&other)];
                let hit = w.best(keys.iter().map(Vec::as_slice));
                let mut want: Option<(usize, (usize, usize))> = None;
                for (n, k) in keys.iter().enumerate() {
                    if let Some(i) = m.lookup(k) {
                        let d = &m.order[i].0;
                        let rank = (d.matches('.').count(), d.len());
                        if want.is_none_or(|(_, r)| rank > r) {
                            want = Some((n, rank));
                        }
                    }
                }
                match (hit, want) {
                    (None, None) => {}
                    (Some(h), Some((n, _))) => {
                        assert_eq!(h.name_index, n);
                        let i = m.lookup(&keys[n]).expect("found");
                        assert_eq!(w.domain(h.domain), m.order[i].0);
                        assert_eq!(h.policy, m.order[i].1);
                    }
                    (h, w) => panic!("best {h:?}, the model {w:?}"),
                }
            }
        }
    }
    assert_eq!((w.len(), w.is_empty()), (m.order.len(), m.order.is_empty()));
    let span = m.order.iter().map(|d| usize::from(d.1) + 1).max().unwrap_or(0);
    assert_eq!(w.policy_span(), span);
    for p in 0..span as u16 {
        let want: Vec<&str> = m.order.iter().filter(|d| d.1 == p).map(|d| d.0.as_str()).collect();
        let got: Vec<&str> = w.domains_of(p).collect();
        assert_eq!(got, want);
        assert_eq!(w.count(p), want.len());
    }
    w.shrink_to_fit();
    for (name, _, _) in &m.order {
        assert!(w.lookup(name.as_bytes()).is_some(), "still found after shrink_to_fit");
    }
});
