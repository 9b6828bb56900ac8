"""keen-pbr: v2 (`keen-pbr.conf`, TOML) and v3 (`config.json`, JSON with comments).

v2: one policy per `[[ipset]]` (its `lists`, routed via the first of
`routing.interfaces` with its fwmark/table/priority). v3: one policy per
outbound that a `route.rules` entry sends lists to; `interface` outbounds get a
route, `ignore`/`table`/`blackhole` ones their sets only; the first rule that
takes a list keeps it, rules with other conditions are skipped. List entries
may be names, addresses or networks; local files are read; a `url` list goes to
`domain_urls` with a warning naming it, its entries read from a cached copy
when one is found. The README's import section lists what is not carried over.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from hrneo.importer.core import ImportFailure, ImportResult, ensure_ipset, read_text
from hrneo.importer.keenpbr_context import KeenPbrContext
from hrneo.importer.keenpbr_v2 import read_v2
from hrneo.importer.keenpbr_v3 import read_v3

_COMMENTS = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
_TRAILING_COMMA = re.compile(r'"(?:\\.|[^"\\\n])*"|,(?=\s*[}\]])')


def strip_jsonc(text: str) -> str:
    """JSON with `//` and `/* */` comments and trailing commas -> JSON, lines kept."""

    def comment(m: re.Match[str]) -> str:
        s = m.group(0)
        return s if s.startswith('"') else "\n" * s.count("\n")

    text = _COMMENTS.sub(comment, text)
    return _TRAILING_COMMA.sub(lambda m: m.group(0) if m.group(0) != "," else " ", text)


def _load_toml(path: str, text: str) -> dict[str, Any]:
    try:
        toml: Any = importlib.import_module("tomllib")  # Python 3.11+
    except ImportError:
        try:
            toml = importlib.import_module("tomli")
        except ImportError:
            raise ImportFailure(
                f"{path}:0: keen-pbr.conf is TOML: reading it needs Python 3.11 or later "
                "(tomllib), or the tomli package"
            ) from None
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as e:
        line = getattr(e, "lineno", 0) or 0
        raise ImportFailure(f"{path}:{line}: not valid TOML: {e}") from None
    assert isinstance(data, dict)
    return data


def find_config(path: str) -> str:
    """The config file: `path`, or keen-pbr.conf / config.json in the directory `path`."""
    if not os.path.isdir(path):
        return path
    for name in ("keen-pbr.conf", "config.json"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise ImportFailure(f"{path}:0: no keen-pbr.conf (v2) or config.json (v3) in this directory")


def import_keenpbr(
    path: str, *, cache_dirs: Sequence[str] = (), timeout: int | None = None
) -> ImportResult:
    """A keen-pbr config (v2 TOML or v3 JSON) -> policies (see the module docstring)."""
    path = find_config(path)
    text = read_text(path)
    ctx = KeenPbrContext(path, text, cache_dirs)
    v3 = path.endswith(".json") or text.lstrip()[:1] in ("{", "/")
    if v3:
        try:
            data = json.loads(strip_jsonc(text))
        except json.JSONDecodeError as e:
            raise ImportFailure(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
        if not isinstance(data, dict):
            raise ImportFailure(f"{path}:1: a keen-pbr config.json is a JSON object")
        read_v3(ctx, data, timeout)
    else:
        data = _load_toml(path, text)
        if "ipset" not in data and "list" not in data:
            raise ImportFailure(f"{path}:1: neither keen-pbr v2 ([[ipset]]) nor v3 (JSON)")
        read_v2(ctx, data)
    ensure_ipset(ctx.b)
    if timeout is not None:
        for pol in ctx.b.result.policies:
            pol.timeout = timeout
    elif not v3:
        for pol in ctx.b.result.policies:
            pol.timeout = 0  # keen-pbr v2 sets have no timeout: entries stay until a flush
    return ctx.b.result
