"""A strict reader of the Prometheus text exposition format (0.0.4), for tests."""

from __future__ import annotations

import re

_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(-?[0-9.e+]+|NaN|[+-]Inf)$"
)


def parse_exposition(text: str) -> dict[str, list[tuple[str, float]]]:
    """A strict reader of text format 0.0.4: every sample's family has HELP and TYPE
    first, each once; returns family -> [(labels, value)]."""
    assert text.endswith("\n")
    helps: set[str] = set()
    types: dict[str, str] = {}
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"HELP twice: {name}"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _h, _t, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in types
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            assert name in helps and name in types, f"{name} before its HELP/TYPE"
            if types[name] == "counter":
                assert name.endswith("_total")
            out.setdefault(name, []).append((m.group(2) or "", float(m.group(3))))
    return out
