"""The measuring tools of ``python -m hrneo.bench core``: a measured line and
its baselines, timing, percentiles, running the programs compared against,
documentation addresses, and the human-readable table."""

from __future__ import annotations

import ipaddress
import math
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Baseline:
    """The same work done the old way, in the same run."""

    name: str
    median_ms: float
    speedup: float  # baseline median / our median


@dataclass
class Result:
    """One measured line: ours, with the baselines beside it."""

    name: str
    unit: str  # "ms" (lower is better) or "pkt/s" (higher is better)
    median: float
    p99: float  # for ms: the 99th percentile; for pkt/s: the slowest 1 % of rounds
    samples: int
    baselines: list[Baseline] = field(default_factory=list)
    target: str | None = None
    target_met: bool | None = None
    note: str = ""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def timed_ms(
    runs: int, prepare: Callable[[int], object], action: Callable[[object], object]
) -> list[float]:
    """`runs` timings of `action(prepare(i))`, in ms; `prepare` is not timed."""
    out: list[float] = []
    for i in range(runs):
        arg = prepare(i)
        t0 = time.perf_counter_ns()
        action(arg)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> None:
    """Run a program (inside the namespace the calling thread is in)."""
    proc = subprocess.run(
        list(argv), check=False, input=stdin, capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def fresh_addresses(family: int, size: int, iteration: int) -> list[str]:
    """`size` distinct documentation addresses; different per iteration where room allows."""
    if family == 4:
        pool = [
            str(a)
            for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
            for a in ipaddress.ip_network(net)
        ]
        start = (iteration * size) % len(pool)
        return [pool[(start + k) % len(pool)] for k in range(size)]
    base = int(ipaddress.IPv6Address("2001:db8:b::"))
    return [str(ipaddress.IPv6Address(base + (iteration << 16) + k + 1)) for k in range(size)]


def fmt(v: float, unit: str) -> str:
    return f"{v:,.0f} {unit}" if unit == "pkt/s" else f"{v:.3f} ms"


def print_table(results: Sequence[Result]) -> None:
    """Human-readable report: one line per measurement, baseline and target beside it."""
    for r in results:
        line = f"{r.name:<46} median {fmt(r.median, r.unit):>14}  p99 {fmt(r.p99, r.unit):>14}"
        line += f"  (n={r.samples})"
        for b in r.baselines:
            line += f"\n    vs {b.name}: {fmt(b.median_ms, 'ms')} -> ours {b.speedup:.1f}x faster"
        if r.target:
            line += f"\n    target {r.target}: {'MET' if r.target_met else 'NOT MET'}"
        if r.note:
            line += f"\n    note: {r.note}"
        print(line)
