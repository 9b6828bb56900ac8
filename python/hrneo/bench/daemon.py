"""`python -m hrneo.bench daemon`: the whole daemon, end to end, on namespaced hosts.

    client --veth-- router (hrneo run, or dnsmasq; NAT) --veth-- wan (resolver)

Measured in one run on this machine, each beside its baseline:

- **CPU per answer** (`cpu_us_per_answer`): the client asks the wan resolver
  through the router at 1,000 queries/s, each from a fresh source port; the
  daemon's user + system time (every thread, from /proc) over the load, divided
  by the answers it saw. Three loads: every answer with 4 addresses new to the
  set (reconnect on), 4 addresses already there (timeout refresh only), and
  unwatched names. Baseline: dnsmasq `--ipset` in the router, doing the whole
  resolver job for the same client load.
- **throughput**: pre-built answers (4 new addresses each) replayed on one flow
  the router forwarded, at rising rates; the highest rate with every address in
  the set afterwards.
- **latency**: one answer at a time at 1,000/s on that flow: from `sendto()` on
  the wan host until `IpsetSession.test()` in the router sees the address (this
  includes the forward path and one netlink round trip of polling).
- **memory**: the daemon's resident set with 0, 100,000 and 1,000,000 domains,
  and its start-up time.
- **the old design** (`--skip-baseline` to leave out): tcpdump's text, a regex,
  one `ipset add` process per address.
- **hold mode** (`--capture nfqueue`): CPU per answer, added client DNS
  latency, the race of first connections and throughput, beside passive
  capture (see `hrneo.bench.hold`).

Measure a RELEASE build (`scripts/setup.sh`, or `pip install .`): the build kind
is printed. Every address is a documentation address.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from hrneo.bench import accounting, load
from hrneo.bench.report import Result, core_build, table
from hrneo.bench.topology import (
    ROUTER_LAN,
    VPN6,
    VPN_ADDR,
    WAN_ADDR,
    Hosts,
    cpu_seconds,
    rss_mb,
)

SET6 = "hr_bench6"
NF_SET6 = "hr_nf6"
DNSMASQ_SET6 = "hr_dnsmasq6"
ZONE, NF_ZONE, OTHER_ZONE = "bench.example.org", "noflush.example.org", "other.example.net"
CONFIG = """\
nflog_group: 100
{head}control_socket: {sock}
state_file: null  # every run starts from empty sets
firewall:
  dns_chains: [FORWARD, OUTPUT]
  recheck_interval: 0
policies:
  - name: bench
    ipset: hr_bench
    ipset6: {set6}
    timeout: 3600
    reconnect: true
    maxelem: 4194304
    domains: [{zone}]
    route:
      interface: r2
      gateway: {vpn}
      gateway6: "{vpn6}"
      table: 1001
      mark: 0x1001
  - name: noflush
    ipset: hr_nf
    ipset6: {nf_set6}
    timeout: 3600
    reconnect: false
    maxelem: 4194304
    domains: [{nf_zone}]
{extra}"""


def config(h: Hosts, extra: str = "", capture: str = "nflog") -> str:
    head = "capture: nfqueue\n" if capture == "nfqueue" else ""
    return CONFIG.format(
        sock=h.tmp / "hrneo.sock", set6=SET6, nf_set6=NF_SET6, zone=ZONE, nf_zone=NF_ZONE,
        extra=extra, head=head, vpn=VPN_ADDR, vpn6=VPN6,
    )  # fmt: skip


def status(h: Hosts, python: str) -> dict[str, object]:
    out = subprocess.run(
        [python, "-m", "hrneo", "status", "--json", "--socket", str(h.tmp / "hrneo.sock")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    try:
        parsed: dict[str, object] = json.loads(out.stdout)
    except ValueError:
        return {}
    return parsed


# ---------------------------------------------------------------- CPU per answer


def cpu_run(
    h: Hosts, pid: int, names: list[str], server: str, counted: Callable[[], int], rate: float
) -> tuple[float, int, float]:
    """Ask `names` at `rate`; returns (CPU µs per answer of `pid`, answers, rate achieved)."""
    n0, c0 = counted(), cpu_seconds(pid)
    took = load.ask(h.client, server, names, rate)
    time.sleep(0.5)  # the last answers' work, and the conntrack thread's
    n1, c1 = counted(), cpu_seconds(pid)
    answers = n1 - n0
    per = (c1 - c0) / answers * 1e6 if answers else float("nan")
    return per, answers, len(names) / took


def bench_cpu(
    h: Hosts, python: str, pid: int, resolver: load.Resolver, seconds: float, label: str = "hrneo"
) -> list[Result]:
    """The three loads through hrneo at 1,000 answers/s."""
    n = int(1000 * seconds)
    run = resolver.run

    def answers() -> int:
        got = status(h, python).get("answers", 0)
        return got if isinstance(got, int) else 0

    results = []
    loads = [
        ("4 new addresses each, reconnect on",
         [f"q{i}.r{run}.{ZONE}" for i in range(n)], "<= 25"),
        ("all addresses present (refresh only)",
         [f"p{i % 64}.r{run}.{ZONE}" for i in range(n)], "<= 10"),
        ("unwatched names", [f"q{i}.r{run}.{OTHER_ZONE}" for i in range(n)], "<= 3"),
    ]  # fmt: skip
    load.ask(h.client, WAN_ADDR, [f"p{i}.r{run}.{ZONE}" for i in range(64)], 1000)  # the pool
    time.sleep(0.5)
    for what, names, target in loads:
        per, got, rate = cpu_run(h, pid, names, WAN_ADDR, answers, 1000)
        results.append(
            Result(
                f"cpu_us_per_answer, {label}, {what}", round(per, 1), "µs", target,
                per <= float(target.split()[1]),
                note=f"{got} answers at {rate:,.0f}/s",
                extra={"answers": got, "rate": round(rate)},
            )
        )  # fmt: skip
        print(f"  {label} {what}: {per:.1f} µs/answer ({got} answers)", file=sys.stderr)
    return results


def bench_dnsmasq(h: Hosts, seconds: float, run: int, resolver: load.Resolver) -> list[Result]:
    """dnsmasq --ipset doing the resolver's job for the same client load."""
    try:
        pid = h.start_dnsmasq(ZONE, DNSMASQ_SET6)
    except RuntimeError as e:
        return [Result("cpu_us_per_answer, dnsmasq --ipset", None, "µs", note=str(e))]
    n = int(1000 * seconds)
    results = []
    try:
        for what, zone in (("4 new addresses each", ZONE), ("unwatched names", OTHER_ZONE)):
            names = [f"q{i}.r{run + 1000}.{zone}" for i in range(n)]
            before = load.set_size(h.router, DNSMASQ_SET6)
            per, got, rate = cpu_run(h, pid, names, ROUTER_LAN, lambda: resolver.answered, 1000)
            added = load.set_size(h.router, DNSMASQ_SET6) - before
            results.append(
                Result(
                    f"cpu_us_per_answer, dnsmasq --ipset (baseline), {what}",
                    round(per, 1), "µs", note=f"{got} answers at {rate:,.0f}/s, {added} added",
                )
            )  # fmt: skip
            print(f"  dnsmasq {what}: {per:.1f} µs/answer", file=sys.stderr)
    finally:
        h.stop_dnsmasq()
    return results


# ---------------------------------------------------------------- throughput, latency


def bench_throughput(
    h: Hosts,
    flow: load.Flow,
    rates: list[int],
    seconds: float,
    run: int,
    *,
    label: str = "",
    unclean: Callable[[], str] = lambda: "",
    target: int = 50_000,
) -> Result:
    """Highest replay rate with every address in the set afterwards (and
    nothing `unclean()` names). Each round also says where its answers went
    (`hrneo.bench.accounting`)."""
    best, tried = 0, {}

    def counters() -> accounting.Snapshot:
        return accounting.snapshot(h.router, lambda: status(h, h.python), "ipset")

    for k, rate in enumerate(rates):
        h.router.sh(f"ipset flush {SET6}")  # each rate starts from an empty set
        n = max(100, min(int(rate * seconds), 300_000))
        packets = [
            load.answer_for(load.query(i & 0xFFFF, f"q{i}.r{run}x{k}.{ZONE}"), run * 100 + k) or b""
            for i in range(n)
        ]
        want = load.ADDRESSES_PER_ANSWER * n
        before = counters()
        took = flow.send(packets, rate)
        got = load.wait_settled(lambda: load.set_size(h.router, SET6), want, timeout=60)
        after = counters()
        achieved = n / took if took > 0 else 0.0
        why = unclean()
        tried[str(rate)] = {
            "answers": n, "sent_per_s": round(achieved), "lost": want - got, "unclean": why,
        }  # fmt: skip
        print(
            f"  throughput{label}: {n} answers at {achieved:,.0f}/s -> {want - got} of {want} "
            f"lost {why}",
            file=sys.stderr,
        )
        figures = accounting.figures(n, before, after)
        tried[str(rate)]["where"] = figures
        print(f"    {accounting.describe(figures)}", file=sys.stderr)
        if got < want or why:
            break
        best = max(best, int(achieved))
    return Result(
        f"answers/s, 4 new addresses each, nothing lost{label}", best, "/s", f">= {target:,}",
        best >= target, note="highest replay rate tried with nothing lost", extra={"rounds": tried},
    )  # fmt: skip


def bench_latency(h: Hosts, flow: load.Flow, count: int, run: int) -> Result:
    """sendto() on wan -> IpsetSession.test() true in the router, one answer at a time."""
    from hrneo import IpsetSession

    lat: list[float] = []
    missed = 0
    with h.router.enter(), IpsetSession() as ipset:
        for i in range(count):
            pkt = load.answer_for(load.query(i & 0xFFFF, f"q{i}.{ZONE}"), run)
            addr = load.address_text(load.addresses(run, f"q{i}".encode())[0])
            assert pkt is not None
            slot = time.perf_counter() + 0.001  # 1,000 answers/s
            t0 = time.perf_counter()
            flow.server.sendto(pkt, flow.peer)
            deadline = t0 + 0.2
            while not ipset.test(SET6, addr):
                if time.perf_counter() > deadline:
                    missed += 1
                    break
            else:
                lat.append(time.perf_counter() - t0)
            while time.perf_counter() < slot:
                pass
    lat.sort()
    if not lat:
        return Result("answer -> address in set, p99 @1,000/s", None, "ms", "<= 0.3 ms", False)
    p50, p99 = lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return Result(
        "answer -> address in set, p99 @1,000/s", round(p99, 3), "ms", "<= 0.3 ms",
        p99 <= 0.3 and missed == 0,
        note=f"p50 {p50:.3f} ms, max {lat[-1] * 1000:.3f} ms, {missed} missed",
        extra={"p50_ms": round(p50, 3), "samples": len(lat), "missed": missed},
    )  # fmt: skip


# ---------------------------------------------------------------- memory


def bench_memory(h: Hosts, python: str, sizes: list[int]) -> list[Result]:
    """The daemon's RSS and start-up time with N domains in a list file."""
    results = []
    for n in sizes:
        lst = h.tmp / f"big{n}.list"
        with open(lst, "w") as f:
            f.writelines(f"d{i}.example{i % 997}.com\n" for i in range(n))
        extra = f"  - name: big\n    ipset: hr_big\n    domain_files: [{lst}]\n"
        t0 = time.perf_counter()
        pid = h.start_daemon(python, config(h, extra))
        took = time.perf_counter() - t0
        time.sleep(0.5)
        rss = rss_mb(pid)
        h.stop_daemon()
        target = "<= 30 MB" if n == 100_000 else ""
        results.append(
            Result(
                f"daemon RSS with {n:,} domains", round(rss, 1), "MB", target,
                rss <= 30 if target else None, note=f"up in {took:.2f} s",
            )
        )  # fmt: skip
        print(f"  {n:,} domains: {rss:.1f} MB, up in {took:.2f} s", file=sys.stderr)
    return results


# ---------------------------------------------------------------- the old design

OLD_DESIGN = r"""
import re, subprocess, sys, time
# The old design: tcpdump's text, a regex, one `ipset add` process per address.
set_name, iface, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
rx = re.compile(r"\bAAAA? ([0-9a-fA-F:.]+)")
td = subprocess.Popen(["tcpdump", "-l", "-n", "-i", iface, "udp and src port 53"],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
print("ready", flush=True)
added = 0
deadline = time.monotonic() + float(sys.argv[4])
while added < want and time.monotonic() < deadline:
    line = td.stdout.readline()
    if not line:
        break
    for addr in rx.findall(line):
        subprocess.run(["ipset", "add", "-exist", set_name, addr], check=False)
        added += 1
td.terminate()
print("done", added, flush=True)
"""


def bench_old_design(h: Hosts, flow: load.Flow, python: str, answers: int, run: int) -> Result:
    """Answers at 1,000/s; rate = answers / time until their last address is in."""
    base = "hr_old6"
    h.router.sh(f"ipset create {base} hash:net family inet6 maxelem 65536 -exist")
    want = answers * load.ADDRESSES_PER_ANSWER
    proc = subprocess.Popen(
        h.router.argv([python, "-c", OLD_DESIGN, base, "r0", str(want), "60"]),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        time.sleep(1.0)  # tcpdump attaches after it printed nothing: give it its start-up
        packets = [
            load.answer_for(load.query(i, f"q{i}.old.example.net"), run) or b""
            for i in range(answers)
        ]
        t0 = time.perf_counter()
        flow.send(packets, rate=1000)
        got = load.wait_settled(lambda: load.set_size(h.router, base), want, timeout=60)
        took = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        h.router.sh(f"ipset destroy {base}", check=False)
    rate = (got / load.ADDRESSES_PER_ANSWER) / took if took > 0 else 0.0
    return Result(
        "old design (tcpdump + ipset add): answers/s", round(rate, 1), "/s",
        note=f"{got} of {want} addresses in {took:.1f} s",
    )  # fmt: skip


# ---------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hrneo.bench daemon",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller counts (about a minute)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs hrneo")
    p.add_argument("--skip-baseline", action="store_true", help="leave out the old design")
    p.add_argument(
        "--parts", default="cpu,throughput,latency,memory,race",
        help="comma-separated subset of cpu,throughput,latency,memory,race (default: all; "
        "race is hold mode's)",
    )  # fmt: skip
    p.add_argument(
        "--capture", choices=("nflog", "nfqueue"), default="nflog",
        help="nfqueue: also measure hold mode, each figure beside passive capture",
    )  # fmt: skip
    return p


def _cannot_run() -> str | None:
    """Why this host cannot run the benchmark (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, ipset)"
    for tool in ("ip", "ipset", "iptables", "tcpdump"):
        if shutil.which(tool) is None:
            return f"needs `{tool}`"
    return None


def _cpu_parts(h: Hosts, args: argparse.Namespace, run: int) -> list[Result]:
    """CPU per answer at 1,000/s: the daemon's, then dnsmasq's alone."""
    seconds = 2.0 if args.quick else 8.0
    print("CPU per answer at 1,000/s...", file=sys.stderr)
    resolver = load.Resolver(h.wan, run)
    try:
        pid = h.start_daemon(args.python, config(h))
        results = bench_cpu(h, args.python, pid, resolver, seconds)
        h.stop_daemon()
        results += bench_dnsmasq(h, seconds, run, resolver)
    finally:
        resolver.close()
    return results


def _flow_parts(h: Hosts, args: argparse.Namespace, parts: set[str], run: int) -> list[Result]:
    """Latency and throughput on one running daemon, its exit code, then the old design."""
    rates = [20_000, 50_000] if args.quick else [20_000, 30_000, 40_000, 50_000, 60_000, 80_000]
    results: list[Result] = []
    h.start_daemon(args.python, config(h))
    flow = load.Flow(h)
    try:
        if "latency" in parts:
            print("latency...", file=sys.stderr)
            results.append(bench_latency(h, flow, 500 if args.quick else 3000, run + 1))
        if "throughput" in parts:
            print("throughput...", file=sys.stderr)
            results.append(bench_throughput(h, flow, rates, 1.0 if args.quick else 3.0, run + 2))
        st = status(h, args.python)
        results.append(
            Result(
                "packets the kernel dropped (reader overflow)", st.get("dropped"), "",  # type: ignore[arg-type]
                note=", ".join(f"{k} {st.get(k)}" for k in ("answers", "commit_errors", "flushed")),
            )
        )  # fmt: skip
        code = h.stop_daemon()
        results.append(Result("daemon SIGTERM exit code", code, "", "0", code == 0))
        if not args.skip_baseline:
            print("the old design...", file=sys.stderr)
            results.append(
                bench_old_design(h, flow, args.python, 20 if args.quick else 60, run + 3)
            )
    finally:
        flow.close()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the daemon benchmark; print a table (or JSON). Exit 0 when it ran."""
    args = _parser().parse_args(argv)
    parts = set(args.parts.split(","))
    why_not = _cannot_run()
    if why_not:
        print(f"hrneo.bench daemon: {why_not}", file=sys.stderr)
        return 2
    run = int(time.time()) & 0xFFF
    results: list[Result] = [core_build(args.python)]
    print(f"core: {results[0].note}", file=sys.stderr)
    h = Hosts()
    try:
        if "cpu" in parts:
            results += _cpu_parts(h, args, run)
        if parts & {"throughput", "latency"}:
            results += _flow_parts(h, args, parts, run)
        if args.capture == "nfqueue":
            from hrneo.bench import hold

            results += hold.run_hold(h, args.python, parts, args.quick, run)
        if "memory" in parts:
            print("memory...", file=sys.stderr)
            sizes = [0, 100_000] if args.quick else [0, 100_000, 1_000_000]
            results += bench_memory(h, args.python, sizes)
    finally:
        h.close()
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        print(table(results))
    return 0
