"""``python -m hrneo.bench core --only ipset``: ``IpsetBatch`` add+commit of 1, 10
and 1000 new addresses, against ``ipset add`` once per address and ``ipset
restore`` of the same lines, in the namespace the core benchmark made."""

from __future__ import annotations

import statistics

from hrneo.bench.measure import Baseline, Result, fresh_addresses, percentile, run, timed_ms

SET4 = "hrneo_bench4"
SET6 = "hrneo_bench6"


def bench_ipset(quick: bool) -> list[Result]:
    """IpsetBatch add+commit vs `ipset add` per address vs `ipset restore`."""
    from hrneo import IpsetBatch

    run(["ipset", "create", SET4, "hash:ip", "family", "inet", "maxelem", "65536"])
    run(["ipset", "create", SET6, "hash:ip", "family", "inet6", "maxelem", "65536"])
    scale = 10 if quick else 1
    # (size, family, ours, restore, one add per address): IPv4 documentation space
    # holds 768 addresses, so the 1000-address case uses IPv6.
    plan = [
        (1, 4, 300, 40, 40),
        (10, 4, 300, 40, 15),
        (1000, 6, 40, 15, 3),
    ]
    results: list[Result] = []
    for size, family, n_ours, n_restore, n_add in plan:
        name = SET4 if family == 4 else SET6
        batch = IpsetBatch(name)
        not_new = 0

        def prepare(i: int, size: int = size, family: int = family, name: str = name) -> object:
            run(["ipset", "flush", name])
            return fresh_addresses(family, size, i)

        def ours(addrs: object, batch: IpsetBatch = batch) -> None:
            nonlocal not_new
            assert isinstance(addrs, list)
            batch.extend(addrs)
            new = batch.commit()
            not_new += len(addrs) - len(new)

        def restore(addrs: object, name: str = name) -> None:
            assert isinstance(addrs, list)
            run(["ipset", "restore"], stdin="".join(f"add {name} {a}\n" for a in addrs))

        def add_each(addrs: object, name: str = name) -> None:
            assert isinstance(addrs, list)
            for a in addrs:
                run(["ipset", "add", name, a])

        t_ours = timed_ms(max(3, n_ours // scale), prepare, ours)
        t_restore = timed_ms(max(2, n_restore // scale), prepare, restore)
        t_add = timed_ms(max(1, n_add // scale), prepare, add_each)
        fam = "inet" if family == 4 else "inet6"
        note = f"{not_new} addresses were not reported new" if not_new else ""
        med = statistics.median(t_ours)
        baselines = [
            Baseline(b_name, statistics.median(b), statistics.median(b) / med)
            for b_name, b in (("ipset restore", t_restore), ("ipset add per address", t_add))
        ]
        target: str | None = None
        met: bool | None = None
        if size == 10:
            target = ">= 20x faster than ipset restore"
            met = baselines[0].speedup >= 20
        results.append(
            Result(
                name=f"IpsetBatch commit {size} new ({fam})",
                unit="ms",
                median=med,
                p99=percentile(t_ours, 99),
                samples=len(t_ours),
                baselines=baselines,
                target=target,
                target_met=met,
                note=note,
            )
        )
    run(["ipset", "destroy", SET4], check=False)
    run(["ipset", "destroy", SET6], check=False)
    return results
