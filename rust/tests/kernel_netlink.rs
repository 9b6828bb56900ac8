//! The core against a real kernel: ipset, NFLOG and ctnetlink round trips through the
//! crate's public API, no Python.
//!
//! Built into the static musl test binaries of `scripts/test-cross.sh`, so on mipsel it
//! runs the shipped soft-float code path on a real MIPS kernel (`scripts/test-vm.sh
//! mipsel`). Under qemu-user, which refuses NETLINK_NETFILTER sockets, every test skips
//! and says why; with HRNEO_REQUIRE_KERNEL=1 (the VM payload sets it) a skip is a
//! failure, and so is a missing requirement (root, `ip`, `iptables`) when CI=true.
//! Each test runs in a network namespace of its own (an unshare of its thread), so the
//! host's sets and rules are never touched and the tests can run in parallel.
//! A test that ran to the end says `hrneo-kernel-test: RAN <name>` on stderr, which the
//! VM payload counts.

// A test reports a failure by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The crate's public paths used here (kept in one place: the module layout may move).
use hrneo::{
    ConntrackFlusher, CreateSpec, DnsEventReader, Family, IpsetBatch, IpsetSession, NflogConfig,
};

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

const MARK: &str = "hrneo-kernel-test";

fn env_on(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("1" | "true" | "yes"))
}

/// Straight to stderr: libtest captures `eprintln!`, but a skip must be seen.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{MARK}: {line}");
}

/// Where the test cannot run: skip, unless the environment says it must run.
fn skip(test: &str, why: &str, kernel_refused: bool) {
    let required = env_on("HRNEO_REQUIRE_KERNEL") || (!kernel_refused && env_on("CI"));
    assert!(!required, "{test} cannot run here: {why}");
    say(&format!("SKIPPED {test}: {why}"));
}

fn find_program(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(name).is_file())
}

/// Run a program (no shell); panic with its stderr when it fails.
fn run(argv: &[&str]) {
    let out =
        Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Checks that the kernel and the environment allow the test, then moves the calling
/// thread into a fresh network namespace with `lo` up. `false`: skipped.
fn enter_kernel_netns(test: &str, programs: &[&str]) -> bool {
    // qemu-user translates only a few netlink protocols and refuses the others.
    if let Err(e) = IpsetSession::open() {
        let refused = [libc::EPROTONOSUPPORT, libc::EAFNOSUPPORT, libc::ESOCKTNOSUPPORT];
        if e.errno().is_some_and(|n| refused.contains(&n)) {
            skip(
                test,
                &format!("NETLINK_NETFILTER sockets are refused here, as qemu-user does ({e})"),
                true,
            );
            return false;
        }
        panic!("{test}: netlink socket: {e}");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root (network namespace, ipset, iptables)", false);
        return false;
    }
    for p in ["ip"].iter().chain(programs) {
        if !find_program(p) {
            skip(test, &format!("needs the `{p}` program"), false);
            return false;
        }
    }
    // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        skip(test, &format!("cannot make a network namespace: {e}"), false);
        return false;
    }
    run(&["ip", "link", "set", "lo", "up"]);
    true
}

fn ran(test: &str) {
    say(&format!("RAN {test}"));
}

fn texts<T: ToString>(v: Vec<T>) -> Vec<String> {
    v.iter().map(|e| e.to_string()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------ ipset

/// Create a set, commit twice: the second commit reports only what the first did not
/// add. Then the set as the kernel lists it.
fn commit_twice(
    ipset: &mut IpsetSession,
    spec: CreateSpec<'_>,
    first: &[&str],
    second: &[&str],
    new_in_second: &[&str],
) {
    ipset.create(&spec, false).unwrap_or_else(|e| panic!("create {}: {e}", spec.name));
    let mut batch = IpsetBatch::new(spec.name, spec.timeout).expect("IpsetBatch::new");
    for a in first {
        batch.add(a).expect("add");
    }
    let new = texts(batch.commit().unwrap_or_else(|e| panic!("{}: first commit: {e}", spec.name)));
    assert_eq!(new, strings(first), "{}: first commit: everything is new", spec.name);
    assert!(batch.is_empty(), "{}: the queue is emptied by a commit", spec.name);
    for a in second {
        batch.add(a).expect("add");
    }
    let new = texts(batch.commit().unwrap_or_else(|e| panic!("{}: second commit: {e}", spec.name)));
    assert_eq!(new, strings(new_in_second), "{}: second commit: only the new ones", spec.name);

    let (header, members) = ipset.list(spec.name).expect("list");
    assert_eq!(header.name, spec.name);
    assert_eq!(header.typename, spec.settype);
    assert_eq!(header.family, spec.family, "{}: family", spec.name);
    assert_eq!(header.timeout, spec.timeout, "{}: default timeout", spec.name);
    let want: BTreeSet<String> = first.iter().chain(second).map(|s| s.to_string()).collect();
    let got: BTreeSet<String> = members.iter().map(|e| e.to_string()).collect();
    assert_eq!(got, want, "{}: members as the kernel lists them", spec.name);
    if let Some(n) = header.elements {
        assert_eq!(n as usize, want.len(), "{}: element count (Linux 4.14+)", spec.name);
    }
    // A third commit of known entries: nothing new, and (timeout sets) a refresh round.
    for a in first {
        batch.add(a).expect("add");
    }
    assert_eq!(texts(batch.commit().expect("third commit")), Vec::<String>::new());
    ipset.destroy(spec.name).expect("destroy");
    assert!(!ipset.exists(spec.name).expect("exists"), "{} destroyed", spec.name);
}

#[test]
fn ipset_create_and_commit_twice_reports_new_entries() {
    let test = "ipset_create_and_commit_twice_reports_new_entries";
    if !enter_kernel_netns(test, &[]) {
        return;
    }
    let mut ipset = IpsetSession::open().expect("ipset socket");
    let spec = |name, settype, family, timeout| CreateSpec {
        name,
        settype,
        family,
        timeout,
        maxelem: None,
    };
    commit_twice(
        &mut ipset,
        spec("hrk_v4", "hash:net", Family::Inet.nfproto(), Some(600)),
        &["192.0.2.1", "198.51.100.0/24", "203.0.113.200"],
        &["198.51.100.0/24", "192.0.2.2", "192.0.2.1", "203.0.113.0/25"],
        &["192.0.2.2", "203.0.113.0/25"],
    );
    commit_twice(
        &mut ipset,
        spec("hrk_v6", "hash:net", Family::Inet6.nfproto(), Some(600)),
        &["2001:db8::1", "2001:db8:1::/48"],
        &["2001:db8::1", "2001:db8::2", "2001:db8:1::/48"],
        &["2001:db8::2"],
    );
    commit_twice(
        &mut ipset,
        spec("hrk_ip4", "hash:ip", Family::Inet.nfproto(), None),
        &["192.0.2.10", "192.0.2.11"],
        &["192.0.2.11", "192.0.2.12"],
        &["192.0.2.12"],
    );
    // The kernel's answer for a missing set comes back as ENOENT.
    let mut gone = IpsetBatch::new("hrk_missing", None).expect("IpsetBatch::new");
    gone.add("192.0.2.1").expect("add");
    let err = gone.commit().expect_err("commit to a missing set");
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    ran(test);
}

// ------------------------------------------------------------------ nflog

fn dns_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// A DNS response: question `qname`, a CNAME to `target`, then the address record.
fn dns_answer(txid: u16, qname: &str, target: &str, addr: IpAddr) -> Vec<u8> {
    let qtype: u16 = if addr.is_ipv6() { 28 } else { 1 };
    let mut m = Vec::new();
    for v in [txid, 0x8180, 1, 2, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    dns_name(&mut m, qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    let mut rdata = Vec::new();
    dns_name(&mut rdata, target);
    let data = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for (owner, rtype, ttl, rd) in [(qname, 5u16, 300u32, rdata), (target, qtype, 60, data)] {
        dns_name(&mut m, owner);
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        m.extend_from_slice(&rd);
    }
    m
}

#[test]
fn nflog_bind_and_read_dns_answers() {
    let test = "nflog_bind_and_read_dns_answers";
    if !enter_kernel_netns(test, &["iptables", "ip6tables"]) {
        return;
    }
    const GROUP: u16 = 4242;
    for prog in ["iptables", "ip6tables"] {
        run(&[
            prog,
            "-w",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "--sport",
            "53",
            "-j",
            "NFLOG",
            "--nflog-group",
            "4242",
        ]);
    }
    let mut reader = DnsEventReader::open(NflogConfig::new(GROUP)).expect("DnsEventReader::open");
    assert_eq!(reader.group(), GROUP);

    // "The resolver" answers from port 53 to a client socket, over IPv4 and IPv6.
    let v4 = Ipv4Addr::LOCALHOST;
    let v6 = Ipv6Addr::LOCALHOST;
    let mut sent = Vec::new();
    for (i, local) in [IpAddr::V4(v4), IpAddr::V6(v6)].into_iter().enumerate() {
        let server = UdpSocket::bind(SocketAddr::new(local, 53)).expect("bind port 53");
        let client = UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind client");
        let addr: IpAddr = if local.is_ipv6() {
            "2001:db8::10".parse().unwrap()
        } else {
            "192.0.2.10".parse().unwrap()
        };
        // A burst: every packet must arrive, numbered without gaps (NFULA_SEQ).
        for n in 0..20u16 {
            let txid = 0x1000 * (i as u16 + 1) + n;
            let msg = dns_answer(txid, "www.example.com", "edge.example.net", addr);
            server.send_to(&msg, client.local_addr().unwrap()).expect("send");
            sent.push((txid, local, client.local_addr().unwrap().port(), addr));
        }
    }

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.len() < sent.len() && Instant::now() < deadline {
        reader.wait(Some(Duration::from_millis(200))).expect("wait");
        events.extend(reader.drain(1024).expect("drain"));
    }
    assert_eq!(events.len(), sent.len(), "every answer was read; stats {:?}", reader.stats());
    for (ev, (txid, local, port, addr)) in events.iter().zip(&sent) {
        let m = &ev.msg;
        assert!(m.is_response, "{ev:?}");
        assert_eq!(m.txid, *txid, "packets in order");
        assert_eq!((ev.src, ev.dst), (*local, *local));
        assert_eq!((ev.sport, ev.dport), (53, *port), "ports decoded from network order");
        assert_eq!(m.qname, "www.example.com");
        assert_eq!(m.chain, strings(&["www.example.com", "edge.example.net"]));
        assert_eq!(m.addresses, vec![*addr]);
        assert_eq!(m.min_ttl, 60);
    }
    let (capture, parsed, _) = reader.stats();
    assert_eq!(capture.packets, sent.len() as u64, "{capture:?}");
    assert_eq!(parsed.responses, sent.len() as u64, "{parsed:?}");
    let lost = (capture.dropped, capture.enobufs, capture.malformed, parsed.malformed);
    assert_eq!(lost, (0, 0, 0, 0), "{capture:?} {parsed:?}");
    ran(test);
}

// ------------------------------------------------------------------ conntrack

/// One UDP flow from `from` to a listening socket at `to` (no ICMP error).
fn udp_flow(from: IpAddr, to: IpAddr) -> (UdpSocket, UdpSocket) {
    let server = UdpSocket::bind(SocketAddr::new(to, 0)).expect("bind server");
    let client = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind client");
    client.send_to(b"hrneo", server.local_addr().unwrap()).expect("send");
    let mut buf = [0u8; 16];
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    server.recv_from(&mut buf).expect("the packet arrives");
    (server, client)
}

#[test]
fn conntrack_dump_and_delete() {
    let test = "conntrack_dump_and_delete";
    if !enter_kernel_netns(test, &["iptables", "ip6tables"]) {
        return;
    }
    // Conntrack only tracks in a namespace where some rule needs it.
    for prog in ["iptables", "ip6tables"] {
        run(&[prog, "-w", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"]);
    }
    run(&["ip", "-6", "addr", "add", "2001:db8::53/128", "dev", "lo", "nodad"]);
    let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let victims: HashSet<IpAddr> =
        ["127.0.0.2", "2001:db8::53"].iter().map(|s| s.parse().unwrap()).collect();
    let bystanders: HashSet<IpAddr> = ["127.0.0.3".parse().unwrap(), lo6].into_iter().collect();

    let mut keep = Vec::new();
    for to in victims.iter().chain(&bystanders) {
        keep.push(udp_flow(if to.is_ipv6() { lo6 } else { lo4 }, *to));
    }
    let mut f = ConntrackFlusher::open().expect("ConntrackFlusher::open");
    assert_eq!(f.flush(&victims).expect("flush"), 2, "one flow per victim; {:?}", f.stats());
    let s = f.stats();
    assert!(s.dumped >= 4, "the dump saw every flow: {s:?}");
    assert_eq!((s.matched, s.deleted, s.errors), (2, 2, 0), "{s:?}");
    assert_eq!(f.flush(&victims).expect("flush again"), 0, "deleted entries stay deleted");
    // The others were left alone: a flush of them finds exactly them.
    assert_eq!(f.flush(&bystanders).expect("flush bystanders"), 2, "{:?}", f.stats());

    // Tracking mode: conntrack events feed an index, and a flush is a lookup.
    let mut t = ConntrackFlusher::open_tracking(1 << 20).expect("open_tracking");
    let target: HashSet<IpAddr> = ["127.0.0.4".parse().unwrap()].into_iter().collect();
    keep.push(udp_flow(lo4, "127.0.0.4".parse().unwrap()));
    t.poll_events().expect("poll_events");
    assert_eq!(t.flush(&target).expect("flush (tracking)"), 1, "{:?}", t.stats());
    let s = t.stats();
    if s.tracking == 1 {
        assert_eq!(s.index_lookups, 1, "answered from the event index: {s:?}");
        assert!(s.events >= 1 && s.lost == 0, "{s:?}");
    } else {
        // Kernels without CONFIG_NF_CONNTRACK_EVENTS: the flusher stays in dump mode.
        say(&format!("{test}: no conntrack events here, tracking fell back to dumps"));
        assert!(!env_on("HRNEO_REQUIRE_KERNEL"), "Debian's kernels have conntrack events");
    }
    drop(keep);
    ran(test);
}
