"""``python -m hrneo.bench core|daemon [options]``."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType

USAGE = "usage: python -m hrneo.bench {core|daemon} [options]   (--help after the name)"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a benchmark; each is imported only when asked for."""
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops its daemon and
    # removes its namespaces.
    signal.signal(signal.SIGTERM, _interrupt)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    which, rest = args[0], args[1:]
    if which == "core":
        from hrneo.bench import core

        return core.main(rest)
    if which == "daemon":
        # Written separately; imported lazily so `core` runs without it.
        from hrneo.bench import daemon  # type: ignore[attr-defined,unused-ignore]

        return int(daemon.main(rest))
    print(f"unknown benchmark {which!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
