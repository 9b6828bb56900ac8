"""``python -m hrneo.bench core``: the compiled core against the programs it replaces.

Runs as root inside a private network namespace that it creates and removes,
so the host's sets and conntrack table are never touched. Measures, in one run:

- ``IpsetBatch`` add+commit of 1, 10 and 1000 new addresses, against
  ``ipset add`` once per address and ``ipset restore`` of the same lines
  (:mod:`hrneo.bench.ipset`; ``NftSetBatch`` against ``nft add element``:
  :mod:`hrneo.bench.nft`);
- ``ConntrackFlusher.flush`` of a few addresses among 10,000 entries, against
  ``conntrack -D -d ADDR`` per address (:mod:`hrneo.bench.conntrack`);
- ``parse_packet`` throughput on a DNS answer packet built here
  (:mod:`hrneo.bench.parse`).

Figures only: nothing here fails on speed. Iteration counts are fixed, so the
run time is bounded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict

from hrneo.bench.conntrack import bench_conntrack, conntrack_hashsize, setup_conntrack
from hrneo.bench.ipset import bench_ipset
from hrneo.bench.measure import Result, print_table
from hrneo.bench.parse import bench_parse
from hrneo.testing.netns import Netns

log = logging.getLogger("hrneo.bench.core")

PARTS = ("ipset", "nftables", "conntrack", "parse")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hrneo.bench core``."""
    p = argparse.ArgumentParser(
        prog="python -m hrneo.bench core", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--only", choices=PARTS, action="append", help="run only these")
    p.add_argument(
        "--ct-hashsize",
        type=int,
        metavar="N",
        help="also measure the conntrack flush with the kernel's conntrack hash resized to N "
        "buckets (a router-sized table, e.g. 16384); changes a host-wide setting for the "
        "duration of that run and restores it",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    parts = args.only or list(PARTS)
    needs_kernel = bool({"ipset", "nftables", "conntrack"} & set(parts))
    if needs_kernel:
        if os.geteuid() != 0:
            print("the ipset/conntrack benchmarks need root (network namespaces)", file=sys.stderr)
            return 2
        tools = ["ip", "ipset", "conntrack", "iptables"] + (["nft"] if "nftables" in parts else [])
        missing = [t for t in tools if not shutil.which(t)]
        if missing:
            print(f"missing programs: {', '.join(missing)}", file=sys.stderr)
            return 2
    results: list[Result] = []
    ns = Netns(prefix="hrneo-b") if needs_kernel else None
    try:
        if ns is not None:
            setup_conntrack(ns)
            # Everything below (sockets, the ipset/conntrack programs) runs in the namespace.
            with ns.enter():
                if "ipset" in parts:
                    log.info("ipset ...")
                    results += bench_ipset(args.quick)
                if "nftables" in parts:
                    from hrneo.bench.nft import bench_nftables

                    log.info("nftables ...")
                    results += bench_nftables(args.quick)
                if "conntrack" in parts:
                    log.info("conntrack ...")
                    results += bench_conntrack(args.quick)
            if "conntrack" in parts and args.ct_hashsize:
                # The hash size can only be set from the root namespace.
                log.info("conntrack with %d hash buckets ...", args.ct_hashsize)
                with conntrack_hashsize(args.ct_hashsize), ns.enter():
                    results += bench_conntrack(args.quick)
        if "parse" in parts:
            log.info("parse ...")
            results += bench_parse(args.quick)
    finally:
        if ns is not None:
            ns.delete()
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print_table(results)
    return 0
