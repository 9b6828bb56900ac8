"""``python -m hrneo.bench core --only nftables``: NftSetBatch against the `nft` program.

In the namespace the core benchmark made: commits of 10 and 1,000 new addresses
to a set such as the daemon creates (`flags interval, timeout`), against
`nft add element` (one process per commit, every address in it), in the same
run; then what the lookup round costs (a commit of present addresses, and a
bare transaction of the same elements sent without it: the floor, which cannot
tell new from present).
"""

from __future__ import annotations

import socket
import statistics
import struct
from collections.abc import Iterator, Sequence

from hrneo.bench.measure import Baseline, Result, fresh_addresses, percentile, run, timed_ms

TABLE = "hrneo_bench"
SET4 = f"inet#{TABLE}#s4"
SET6 = f"inet#{TABLE}#s6"
NETLINK_NETFILTER = 12
NLMSG_ERROR = 2


def _nft_elements(addrs: Sequence[str]) -> str:
    return ", ".join(f"{a} timeout 1h" for a in addrs)


def _bare_transaction(sock: socket.socket, spec: str, addrs: list[str], seq: int) -> None:
    """Send NftSetBatch's transaction for `addrs` as it is and wait for its one ack."""
    from hrneo import nftset_add_message

    sock.send(nftset_add_message(spec, addrs, timeout=3600, seq=seq))
    last = seq + (len(addrs) + 255) // 256  # the last NEWSETELEM is acked
    while True:
        data = sock.recv(65536)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _flags, mseq = struct.unpack_from("=IHHI", data, off)
            if mtype == NLMSG_ERROR and mseq == last:
                (code,) = struct.unpack_from("=i", data, off + 16)
                if code:
                    raise OSError(-code, "bare transaction refused")
                return
            off += (length + 3) & ~3


def bench_nftables(quick: bool) -> list[Result]:
    """NftSetBatch commit of new addresses vs `nft add element`, and the lookup's cost."""
    from hrneo import NftSetBatch, NftSetSession
    from hrneo._core import nft_refresh_mode

    session = NftSetSession()
    session.create(SET4, "ipv4_addr", interval=True, timeout=0, size=65536)
    session.create(SET6, "ipv6_addr", interval=True, timeout=0, size=65536)
    scale = 10 if quick else 1
    plan = [(10, 4, 300, 40), (1000, 6, 40, 10)]  # (size, family, ours, nft program)
    results: list[Result] = []
    seqs = iter(range(1_000_000, 2_000_000_000, 10_000))
    raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    raw.bind((0, 0))
    try:
        for size, family, n_ours, n_cli in plan:
            spec = SET4 if family == 4 else SET6
            name = spec.split("#")[2]
            batch = NftSetBatch(spec, timeout=3600)
            wrong = {"new": 0, "present": 0}

            def prepare(i: int, size: int = size, family: int = family, spec: str = spec) -> object:
                session.flush(spec)
                return fresh_addresses(family, size, i)

            def ours(
                addrs: object, batch: NftSetBatch = batch, wrong: dict[str, int] = wrong
            ) -> None:
                assert isinstance(addrs, list)
                batch.extend(addrs)
                wrong["new"] += len(addrs) - len(batch.commit())

            filler = NftSetBatch(spec, timeout=60)

            def fill(i: int, filler: NftSetBatch = filler) -> object:
                # The same addresses put in first (untimed) with a short timeout:
                # all present, and each is refreshed to the batch's hour.
                addrs = prepare(i)
                assert isinstance(addrs, list)
                filler.extend(addrs)
                filler.commit()
                return addrs

            def again(
                addrs: object, batch: NftSetBatch = batch, wrong: dict[str, int] = wrong
            ) -> None:
                assert isinstance(addrs, list)
                batch.extend(addrs)
                wrong["present"] += len(batch.commit())

            def cli(addrs: object, name: str = name) -> None:
                assert isinstance(addrs, list)
                run(["nft", "add", "element", "inet", TABLE, name,
                     "{ " + _nft_elements(addrs) + " }"])  # fmt: skip

            def bare(addrs: object, spec: str = spec, seqs: Iterator[int] = seqs) -> None:
                assert isinstance(addrs, list)
                _bare_transaction(raw, spec, addrs, next(seqs))

            runs = max(3, n_ours // scale)
            t_ours = timed_ms(runs, prepare, ours)
            t_cli = timed_ms(max(2, n_cli // scale), prepare, cli)
            t_bare = timed_ms(runs, prepare, bare)
            t_present = timed_ms(runs, fill, again)
            med = statistics.median(t_ours)
            fam = "inet" if family == 4 else "inet6"
            cli_med = statistics.median(t_cli)
            note = "".join(f"{n} addresses were misreported ({k}); " for k, n in wrong.items() if n)
            note += (
                f"all {size} present (lookup, then their refresh): "
                f"{statistics.median(t_present):.3f} ms; the same transaction sent alone, "
                f"with no lookup (cannot tell new from present): "
                f"{statistics.median(t_bare):.3f} ms; refresh by {nft_refresh_mode()}"
            )
            target = ">= 20x faster than nft add element" if size == 10 else None
            results.append(
                Result(
                    name=f"NftSetBatch commit {size} new ({fam}, interval+timeout set)",
                    unit="ms",
                    median=med,
                    p99=percentile(t_ours, 99),
                    samples=len(t_ours),
                    baselines=[Baseline("nft add element (one process)", cli_med, cli_med / med)],
                    target=target,
                    target_met=(cli_med / med >= 20) if target else None,
                    note=note,
                )
            )
            batch.close()
            filler.close()
    finally:
        raw.close()
        session.close()
        run(["nft", "delete", "table", "inet", TABLE], check=False)
    return results
