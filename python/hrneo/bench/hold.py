"""Hold mode in the daemon benchmark (`--capture nfqueue`), each figure beside
passive capture measured in the same run:

- **added DNS latency**: the client's round-trip time for queries through the
  router at 1,000/s (every answer with 4 addresses new to the set), with no
  daemon, with hrneo passive (nflog) and with hrneo holding (nfqueue). Hold
  mode's cost is its p50/p99 minus the no-daemon run's.
- **race**: the client resolves a fresh name and connects to its first address
  at once (0 ms), N times per mode; which host answered tells the path: "vpn"
  (the policy's route) or "wan" (the answer beat the set).
- **throughput** in hold mode: the highest replay rate with every address in
  the set and no answer let through unread (fail-open) or by the deadline.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

from hrneo.bench import load
from hrneo.bench.report import Result
from hrneo.bench.topology import WAN_ADDR, Hosts
from hrneo.testing.netns import Netns

RACE_PORT = 8081
CONNECT_TIMEOUT = 0.1  # seconds; a veth round trip takes microseconds
CLIENT_DROP = "INPUT -p udp --sport 53 -j DROP"


class LabelServer:
    """Answers every TCP connection to [::]:RACE_PORT of its host with `label`."""

    def __init__(self, ns: Netns, label: str) -> None:
        with ns.enter():
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("::", RACE_PORT))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.label = label.encode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(1)
                conn.recv(16)
                conn.sendall(self.label)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def client_hears_answers(h: Hosts) -> Iterator[None]:
    """Let answers reach the client's sockets (the load normally drops them)."""
    h.client.sh(f"iptables -w -D {CLIENT_DROP}", check=False)
    try:
        yield
    finally:
        h.client.sh(f"iptables -w -A {CLIENT_DROP}")


def race(h: Hosts, run: int, trials: int) -> dict[str, int]:
    """`trials` times: resolve a fresh name, connect to its first address at once
    (the answers' addresses are the wan resolver's for `run`: new to the set)."""
    prefix = f"2001:db8:{run & 0xFFFF:x}::/48"
    servers: list[LabelServer | load.Resolver] = [load.Resolver(h.wan, run)]
    for ns, label in ((h.wan, "wan"), (h.vpn, "vpn")):
        ns.sh(f"ip -6 route replace local {prefix} dev lo")
        servers.append(LabelServer(ns, label))
    paths: dict[str, int] = {}
    misses: list[str] = []  # the first trials that missed: "index:path"
    try:
        with client_hears_answers(h), h.client.enter():
            dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            dns.settimeout(1)
            for i in range(trials):
                label = _trial(dns, i, run)
                paths[label] = paths.get(label, 0) + 1
                if label != "vpn" and len(misses) < 20:
                    misses.append(f"{i}:{label}")
            dns.close()
        print(f"  race: first misses {misses}", file=sys.stderr)
    finally:
        for srv in servers:
            srv.close()
        for ns in (h.wan, h.vpn):
            ns.sh(f"ip -6 route del local {prefix} dev lo", check=False)
    return paths


def _trial(dns: socket.socket, i: int, run: int) -> str:
    txid = i & 0xFFFF
    try:
        dns.sendto(load.query(txid, f"q{i}.r{run}.bench.example.org"), (WAN_ADDR, 53))
        while dns.recv(4096)[:2] != txid.to_bytes(2, "big"):
            pass
    except OSError:
        return "no answer"
    addr = load.address_text(load.addresses(run, f"q{i}".encode())[0])
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    # A first SYN that took the wrong path is lost (its conntrack entry was
    # flushed under it) and retried after 1 s: waiting for that would only
    # hide the miss, so give up long before it.
    s.settimeout(CONNECT_TIMEOUT)
    try:
        s.connect((addr, RACE_PORT))
        s.sendall(b"?")
        return s.recv(16).decode() or "closed"
    except OSError as e:
        return f"error {e.errno}"
    finally:
        s.close()


def rtt(h: Hosts, names: list[str], rate: float) -> list[float]:
    """Client round-trip times (s) of queries for `names` at `rate`, on one socket."""
    sent: dict[int, float] = {}
    got: list[float] = []
    with client_hears_answers(h):
        with h.client.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.settimeout(0.2)
        done = threading.Event()

        def receive() -> None:
            while not done.is_set():
                try:
                    data = s.recv(4096)
                except OSError:
                    continue
                t = time.perf_counter()
                txid = int.from_bytes(data[:2], "big")
                if txid in sent:
                    got.append(t - sent.pop(txid))

        rx = threading.Thread(target=receive, daemon=True)
        rx.start()
        for i in load.paced(rate, len(names)):
            txid = i & 0xFFFF
            sent[txid] = time.perf_counter()
            with contextlib.suppress(OSError):
                s.sendto(load.query(txid, names[i]), (WAN_ADDR, 53))
        time.sleep(1.0)
        done.set()
        rx.join(2)
        s.close()
    return sorted(got)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def bench_rtt(
    h: Hosts, start: Callable[[str], int], stop: Callable[[], object], count: int, run: int
) -> list[Result]:
    """Client RTT with no daemon, passive and holding; hold's added p50/p99."""
    figures: dict[str, tuple[float, float, int]] = {}
    for k, mode in enumerate(("none", "nflog", "nfqueue")):
        if mode != "none":
            start(mode)
        # A resolver of its own per mode: every answer's addresses are new to the set.
        resolver = load.Resolver(h.wan, run + k)
        try:
            names = [f"q{i}.rtt.bench.example.org" for i in range(count)]
            lat = rtt(h, names, 1000)
        finally:
            resolver.close()
        if mode != "none":
            stop()
        p50, p99 = percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3
        figures[mode] = (p50, p99, count - len(lat))
        print(f"  rtt {mode}: p50 {p50:.3f} ms, p99 {p99:.3f} ms", file=sys.stderr)
    base50, base99, _ = figures["none"]
    results = [
        Result(
            f"client DNS round trip p50 / p99, {mode}", round(p50, 3), "ms",
            note=f"p99 {p99:.3f} ms, {lost} unanswered of {count}",
        )
        for mode, (p50, p99, lost) in figures.items()
    ]  # fmt: skip
    for mode in ("nflog", "nfqueue"):
        p50, p99, _ = figures[mode]
        added50, added99 = p50 - base50, p99 - base99
        target = "<= 0.1 ms p50, <= 0.3 ms p99" if mode == "nfqueue" else ""
        results.append(
            Result(
                f"added DNS latency p50, {mode} vs no daemon", round(added50, 3), "ms", target,
                (added50 <= 0.1 and added99 <= 0.3) if target else None,
                note=f"p99 added {added99:.3f} ms", extra={"p99_added_ms": round(added99, 3)},
            )
        )  # fmt: skip
    return results


def bench_race(
    h: Hosts,
    start: Callable[[str], int],
    stop: Callable[[], object],
    trials: int,
    run: int,
    counters: Callable[[], str],
) -> list[Result]:
    """First connections 0 ms after their answer, in both modes; `counters()`
    tells what the daemon counted (its race misses, hold timeouts)."""
    results = []
    for k, mode in enumerate(("nflog", "nfqueue")):
        start(mode)
        try:
            paths = race(h, run + 16 * (k + 1), trials)
            seen = counters()
        finally:
            stop()
        through = paths.get("vpn", 0)
        target = f"{trials} of {trials}" if mode == "nfqueue" else ""
        results.append(
            Result(
                f"first connection 0 ms after the answer through the tunnel, {mode}",
                round(100 * through / trials, 2), "%", target,
                (through == trials) if target else None,
                note=", ".join(f"{v} {k2}" for k2, v in sorted(paths.items())) + f"; {seen}",
                extra={"paths": paths, "daemon": seen},
            )
        )  # fmt: skip
        print(f"  race {mode}: {paths}; daemon: {seen}", file=sys.stderr)
    return results


def warm_up(h: Hosts, flow: load.Flow, answers: int, run: int) -> None:
    """Grow the set's hash table to the size the rounds need, then empty it: ipset
    doubles a full hash table inside the commit that fills it, which stalls that
    commit (and the answers it holds) for as long as the rehash takes; a set that
    has been in use for a while has grown already."""
    from hrneo.bench.daemon import SET6, ZONE

    packets = [
        load.answer_for(load.query(i & 0xFFFF, f"w{i}.r{run}.{ZONE}"), run) or b""
        for i in range(answers)
    ]
    t0 = time.perf_counter()
    flow.send(packets, 20_000)
    load.wait_settled(lambda: load.set_size(h.router, SET6), 4 * answers, timeout=60)
    h.router.sh(f"ipset flush {SET6}")
    print(f"  warm-up: {answers} answers in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def run_hold(h: Hosts, python: str, parts: set[str], quick: bool, run: int) -> list[Result]:
    """Every hold-mode figure of `parts`, each beside passive capture."""
    from hrneo.bench import daemon as d  # the shared parts of the daemon benchmark

    def start(mode: str) -> int:
        return h.start_daemon(python, d.config(h, capture=mode))

    def hold_counts(st: dict[str, object]) -> dict[str, int]:
        """The daemon's early releases ({} when it does not hold)."""
        hold = st.get("hold")
        counts = hold if isinstance(hold, dict) else {}
        return {k: counts.get(k, 0) for k in ("timeouts", "fail_opens")} if counts else {}

    def daemon_counters() -> str:
        st = d.status(h, python)
        held = "".join(f", {k} {v}" for k, v in hold_counts(st).items())
        return f"race_misses {st.get('race_misses', 0)}{held}"

    results: list[Result] = []
    if "cpu" in parts:
        print("CPU per answer at 1,000/s, hold mode...", file=sys.stderr)
        resolver = load.Resolver(h.wan, run + 40)
        try:
            pid = start("nfqueue")
            results += d.bench_cpu(h, python, pid, resolver, 2.0 if quick else 8.0, "hrneo hold")
            h.stop_daemon()
        finally:
            resolver.close()
    if "latency" in parts:
        print("client DNS round trip: none, nflog, nfqueue...", file=sys.stderr)
        results += bench_rtt(h, start, h.stop_daemon, 1000 if quick else 3000, run + 48)
    if "race" in parts:
        trials = 1000 if quick else 10_000
        print(f"race, {trials} trials per mode...", file=sys.stderr)
        results += bench_race(h, start, h.stop_daemon, trials, run + 64, daemon_counters)
    if "throughput" in parts:
        print("throughput, hold mode...", file=sys.stderr)
        start("nfqueue")
        flow = load.Flow(h)

        def unclean() -> str:
            bad = hold_counts(d.status(h, python))
            return ", ".join(f"{k} {v}" for k, v in bad.items() if v)

        try:
            rates = [10_000, 20_000] if quick else [10_000, 20_000, 30_000, 40_000, 50_000]
            warm_up(h, flow, rates[-1] * (1 if quick else 3), run + 79)
            results.append(
                d.bench_throughput(
                    h, flow, rates, 1.0 if quick else 3.0, run + 80,
                    label=", hold mode", unclean=unclean, target=30_000,
                )
            )  # fmt: skip
        finally:
            flow.close()
            h.stop_daemon()
    return results
