//! DNS names as text (for people and Python) and as match keys (for the watchlist).

use std::fmt::Write as _;

use hickory_proto::rr::Name;

/// A name as lower-case text without the trailing dot. Bytes that would be
/// ambiguous or unprintable are escaped as in zone files (`\.`, `\\`, `\DDD`).
pub fn name_text(name: &Name) -> String {
    let mut s = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        for &b in label {
            match b {
                b'A'..=b'Z' => s.push(char::from(b.to_ascii_lowercase())),
                b'.' | b'\\' => {
                    s.push('\\');
                    s.push(char::from(b));
                }
                0x21..=0x7e => s.push(char::from(b)),
                _ => {
                    let _ = write!(s, "\\{b:03}");
                }
            }
        }
    }
    s
}

/// Write `name` into `out` as the watchlist compares names: lower-case labels
/// joined by '.', no trailing dot. A byte no watchlist domain can contain
/// (anything but a-z 0-9 - _) becomes 0, so such a label can never match, and a
/// '.' inside a label never looks like a label boundary.
pub fn match_key(name: &Name, out: &mut Vec<u8>) {
    out.clear();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend(label.iter().map(|&b| match b.to_ascii_lowercase() {
            c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => c,
            _ => 0,
        }));
    }
}

/// `match_key` for a name given as text ("www.Example.com."): lower-cased,
/// the trailing dot dropped, any character no domain can contain made 0.
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub fn text_match_key(name: &str, out: &mut Vec<u8>) {
    out.clear();
    let name = name.strip_suffix('.').unwrap_or(name);
    out.extend(name.bytes().map(|b| match b.to_ascii_lowercase() {
        c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.') => c,
        _ => 0,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    #[test]
    fn keys_from_wire_and_text_agree() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let n = Name::from_ascii("WWW.Example.COM.").unwrap();
        match_key(&n, &mut a);
        text_match_key("www.example.com.", &mut b);
        assert_eq!(a, b"www.example.com");
        assert_eq!(a, b);
        // A '.' inside a label is no label boundary; odd bytes never match.
        let n = Name::from_labels(vec![&b"a.b"[..], &b"ex\xffample"[..], &b"org"[..]]).unwrap();
        match_key(&n, &mut a);
        assert_eq!(a, b"a\0b.ex\0ample.org");
        text_match_key("Ünïcode.example", &mut b);
        assert!(b.starts_with(&[0]) && b.ends_with(b".example"));
    }
}
