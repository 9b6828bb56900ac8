"""Figures of the daemon benchmark: one `Result` per line, the table they
print as, and which build of the core was measured."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Result:
    """One figure, with its target and what it was measured against."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def table(results: Sequence[Result]) -> str:
    """The results as an aligned text table."""
    rows = [("measurement", "figure", "target", "ok", "note")]
    for r in results:
        fig = "n/a" if r.value is None else f"{r.value:,} {r.unit}".rstrip()
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        rows.append((r.name, fig, r.target, ok, r.note))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _elf_sections(data: bytes) -> set[str]:
    """Section names of a 64-bit little-endian ELF file."""
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    strtab_off = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
    names = set()
    for i in range(shnum):
        name_off = struct.unpack_from("<I", data, shoff + i * shentsize)[0]
        end = data.index(b"\0", strtab_off + name_off)
        names.add(data[strtab_off + name_off : end].decode(errors="replace"))
    return names


def core_build(python: str) -> Result:
    """Which hrneo._core the interpreter loads, and whether it looks like a debug build
    (the release profile strips symbols and debug info; a debug build keeps .debug_info)."""
    out = subprocess.run(
        [python, "-c", "import hrneo._core as c; print(c.__file__)"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    path = Path(out.stdout.strip())
    try:
        data = path.read_bytes()
        sections = _elf_sections(data)
    except (OSError, ValueError, struct.error):
        return Result("hrneo._core build", None, "", note="not found or not ELF")
    kind = (
        "debug (has .debug_info): figures are pessimistic"
        if ".debug_info" in sections
        else "release (no debug info)"
    )
    return Result("hrneo._core build", round(len(data) / 1e6, 2), "MB", "", None, note=kind)
