"""Smoke test of an hrneo build against the real kernel of a test guest (scripts/test-vm.sh).

Runs as root in a network namespace of its own, in Debian's python3 of the guest's
architecture, with the build under test first on sys.path. Stdlib only. Sets are created
with the `ipset` program (argv, no shell); the core is driven through IpsetBatch,
NflogReader and ConntrackFlusher. Prints `ok: ...` per check and `smoke test passed` at
the end; any failure exits non-zero.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import re
import socket
import struct
import subprocess
import sys
import time

import hrneo
from hrneo import ConntrackFlusher, IpsetBatch, NflogReader

checks = 0


def check(cond: object, what: str) -> None:
    """Fail loudly with `what`, or count it as passed."""
    global checks
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


def sh(*argv: str) -> str:
    """Run a program (no shell); its stdout. Raises with its stderr on failure."""
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(argv)}: {p.stderr.strip()}")
    return p.stdout


# ---------------------------------------------------------------- DNS packets


def _name(text: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in text.split(".")) + b"\x00"


def dns_answer(txid: int, qname: str, target: str, addr: str) -> bytes:
    """A response: question `qname`, a CNAME to `target`, then its A or AAAA record."""
    ip = ipaddress.ip_address(addr)
    qtype = 28 if ip.version == 6 else 1
    out = struct.pack("!HHHHHH", txid, 0x8180, 1, 2, 0, 0) + _name(qname)
    out += struct.pack("!HH", qtype, 1)
    cname = _name(target)
    out += _name(qname) + struct.pack("!HHIH", 5, 1, 300, len(cname)) + cname
    out += _name(target) + struct.pack("!HHIH", qtype, 1, 60, len(ip.packed)) + ip.packed
    return out


# ---------------------------------------------------------------- parts


def platform_facts() -> None:
    core = hrneo._core.__file__ or ""
    print(f"python {platform.python_version()} on {platform.machine()} ({sys.byteorder}-endian)")
    print(f"hrneo {hrneo.__version__} from {core}")
    check(
        core.startswith(os.environ.get("PYTHONPATH", "/nonexistent")),
        "the build under test is imported",
    )
    with open(core, "rb") as f:
        head = f.read(20)
    machine = struct.unpack("<H", head[18:20])[0]
    want = {"aarch64": 183, "mips": 8}[platform.machine()]
    check(
        head[:4] == b"\x7fELF" and machine == want,
        f"_core is an ELF for this CPU (e_machine {machine})",
    )


def members(name: str) -> dict[str, int | None]:
    """The set's members as `ipset list` shows them, with their timeouts."""
    out = sh("ipset", "list", name)
    body = out.split("Members:\n", 1)[1]
    res: dict[str, int | None] = {}
    for line in body.splitlines():
        m = re.match(r"(\S+)(?: timeout (\d+))?", line)
        if m:
            res[m.group(1)] = int(m.group(2)) if m.group(2) else None
    return res


def ipset_new_list() -> None:
    sh("ipset", "create", "hrvm4", "hash:net", "timeout", "600")
    sh("ipset", "create", "hrvm6", "hash:net", "family", "inet6", "timeout", "600")
    sh("ipset", "create", "hrvm4p", "hash:ip")
    cases = [
        ("hrvm4", ["192.0.2.1", "198.51.100.0/24"], ["192.0.2.1", "192.0.2.2", "198.51.100.0/24"]),
        (
            "hrvm6",
            ["2001:db8::1", "2001:db8:1::/48"],
            ["2001:db8:1::/48", "2001:db8::2", "2001:db8::1"],
        ),
        ("hrvm4p", ["192.0.2.10", "192.0.2.11"], ["192.0.2.11", "192.0.2.12"]),
    ]
    for name, first, second in cases:
        timeout = None if name == "hrvm4p" else 600
        b = IpsetBatch(name, timeout=timeout)
        b.extend(first)
        new1 = b.commit()
        check(new1 == first, f"{name}: first commit, all new: {new1}")
        if timeout:
            # Let the kernel's countdown move, so a refresh is visible (597 -> 599).
            time.sleep(2.2)
        b.extend(second)
        new2 = b.commit()
        want = [a for a in second if a not in first]
        check(new2 == want, f"{name}: second commit reports only the new ones: {new2}")
        got = members(name)
        check(set(got) == set(first) | set(second), f"{name}: `ipset list` shows {sorted(got)}")
        if timeout:
            # Present entries were refreshed by the second commit: back at ~600 s.
            check(
                all(t is not None and t >= 598 for t in got.values()),
                f"{name}: timeouts refreshed {got}",
            )
    b = IpsetBatch("hrvm4", timeout=600)
    b.add("2001:db8::9")
    try:
        b.commit()
    except OSError as e:
        check(
            "inet" in str(e).lower() or "family" in str(e).lower(),
            f"IPv6 into an IPv4 set refused: {e}",
        )
    else:
        check(False, "IPv6 into an IPv4 set refused")


def nflog_round_trip() -> None:
    group = "77"
    for prog in ("iptables", "ip6tables"):
        sh(
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
            group,
        )
    sent = []
    with NflogReader(int(group)) as reader:
        for fam, lo, addr in (
            (socket.AF_INET, "127.0.0.1", "192.0.2.53"),
            (socket.AF_INET6, "::1", "2001:db8::53"),
        ):
            server = socket.socket(fam, socket.SOCK_DGRAM)
            server.bind((lo, 53))
            client = socket.socket(fam, socket.SOCK_DGRAM)
            client.bind((lo, 0))
            for i in range(10):
                txid = (0x4000 if fam == socket.AF_INET6 else 0x1000) + i
                server.sendto(
                    dns_answer(txid, "www.example.com", "edge.example.net", addr),
                    client.getsockname()[:2],
                )
                sent.append((txid, lo, client.getsockname()[1], addr))
            server.close()
            client.close()
        events = []
        deadline = time.monotonic() + 10
        while len(events) < len(sent) and time.monotonic() < deadline:
            events += reader.read(timeout=0.5)
        stats = reader.stats()
    check(
        len(events) == len(sent),
        f"NFLOG: {len(events)} of {len(sent)} answers read (stats {stats})",
    )
    for ev, (txid, lo, port, addr) in zip(events, sent):
        fields = (
            ev.is_response,
            ev.txid,
            ev.src,
            ev.dst,
            ev.sport,
            ev.dport,
            ev.chain,
            ev.addresses,
            ev.min_ttl,
        )
        want = (True, txid, lo, lo, 53, port, ["www.example.com", "edge.example.net"], [addr], 60)
        if fields != want:
            check(False, f"NFLOG event {fields} == {want}")
    check(
        True,
        "NFLOG: every event has the right id, addresses, ports, CNAME chain, TTL (IPv4 and IPv6)",
    )
    check(stats["dropped"] == 0 and stats["enobufs"] == 0, f"NFLOG: nothing dropped {stats}")


def udp_flow(lo: str, dst: str) -> tuple[socket.socket, socket.socket]:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    server = socket.socket(fam, socket.SOCK_DGRAM)
    server.bind((dst, 0))
    client = socket.socket(fam, socket.SOCK_DGRAM)
    client.bind((lo, 0))
    client.sendto(b"hrneo", server.getsockname()[:2])
    server.settimeout(5)
    server.recv(16)
    return server, client


def conntrack_entries(dst: str) -> int:
    fam = "ipv6" if ":" in dst else "ipv4"
    out = subprocess.run(
        ["conntrack", "-L", "-f", fam, "-d", dst], capture_output=True, text=True, check=False
    )
    return sum(1 for line in out.stdout.splitlines() if line.strip())


def conntrack_flush() -> None:
    # Conntrack only tracks in a namespace where some rule needs it.
    for prog in ("iptables", "ip6tables"):
        sh(prog, "-w", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT")
    sh("ip", "-6", "addr", "add", "2001:db8::80/128", "dev", "lo", "nodad")
    keep = [
        udp_flow(lo, dst)
        for lo, dst in (
            ("127.0.0.1", "127.0.0.2"),
            ("127.0.0.1", "127.0.0.3"),
            ("::1", "2001:db8::80"),
            ("::1", "::1"),
        )
    ]
    check(
        all(conntrack_entries(d) == 1 for d in ("127.0.0.2", "127.0.0.3", "2001:db8::80")),
        "conntrack -L shows one flow per destination",
    )
    f = ConntrackFlusher()
    n = f.flush(["127.0.0.2", "2001:db8::80"])
    check(n == 2, f"ConntrackFlusher.flush deleted {n} of 2 (stats {f.stats()})")
    check(
        conntrack_entries("127.0.0.2") == 0 and conntrack_entries("2001:db8::80") == 0,
        "conntrack -L: the flushed flows are gone",
    )
    check(conntrack_entries("127.0.0.3") == 1, "conntrack -L: the other flow is still there")
    t = ConntrackFlusher(track=True)
    keep.append(udp_flow("127.0.0.1", "127.0.0.4"))
    t.poll_events()
    n = t.flush(["127.0.0.4"])
    s = t.stats()
    check(
        n == 1 and s["tracking"] == 1 and s["index_lookups"] == 1,
        f"tracking flusher: deleted {n} from its event index (stats {s})",
    )
    for sock in (s for pair in keep for s in pair):
        sock.close()


def main() -> int:
    sh("ip", "link", "set", "lo", "up")
    platform_facts()
    ipset_new_list()
    nflog_round_trip()
    conntrack_flush()
    print(f"smoke test passed: {checks} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
