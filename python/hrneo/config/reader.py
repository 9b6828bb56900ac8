"""The config file to a YAML node tree, in bounded time and memory.

Whatever the file holds, :func:`compose_file` returns the root node or raises
:class:`ConfigError` with `file:line`: never RecursionError, MemoryError, a
constructor error, or a hang. The bounds:

- the file: a regular file (not a FIFO, device or directory) of at most
  :data:`~hrneo.safeio.MAX_CONFIG_BYTES`, UTF-8;
- nesting: at most :data:`MAX_DEPTH` levels (PyYAML's composer recurses once
  per level: a few thousand would end in RecursionError);
- size: at most :data:`MAX_NODES` nodes, counting every alias as the whole
  subtree it stands for (so ``[*a, *a, ...]`` of a big anchor cannot make the
  loader walk billions of entries);
- tags: only the plain YAML types; ``!!python/...``, ``!!binary``, ``!foo``
  are refused (nothing is ever constructed from them).

A file that cannot break those bounds (no anchor, alias or tag character at
all, few flow collections, few indentation levels, no long ``- - -`` runs) is
composed by libyaml where PyYAML has it: ten times faster on a config with
100,000 domains inline, with the same line numbers. Anything else takes the
bounded pure-Python composer.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from hrneo.errors import ConfigError
from hrneo.safeio import MAX_CONFIG_BYTES, FileRefused, read_capped

MAX_DEPTH = 64
MAX_NODES = 1_000_000

_Y = "tag:yaml.org,2002:"
# Explicit tags a config may carry, plus what plain scalars resolve to
# (timestamps, the merge key `<<`, `=`): those are read as text or refused later.
_PLAIN = ("null", "bool", "int", "float", "str", "seq", "map", "timestamp", "merge", "value")
ALLOWED_TAGS = frozenset(_Y + t for t in _PLAIN)


class _Limit(yaml.MarkedYAMLError):
    """A bound of this module was hit at a place in the file."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts depth, expanded nodes and checks tags."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._weight: dict[int, int] = {}  # id(anchored node) -> nodes under it

    def _count(self, n: int, mark: Any) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            msg = f"more than {MAX_NODES:,} YAML nodes (aliases count in full)"
            raise _Limit(None, None, f"{msg}: put long lists in domain_files", mark)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor) if event.anchor is not None else None
            # A node still being composed (a recursive alias) counts as one.
            self._count(self._weight.get(id(target), 1), event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        before = self._nodes
        self._count(1, event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            if node.tag not in ALLOWED_TAGS:
                msg = f"tag {node.tag!r} is not allowed (plain YAML only)"
                raise _Limit(None, None, msg, node.start_mark)
            if getattr(event, "anchor", None) is not None:
                self._weight[id(node)] = self._nodes - before
        return node


_INDENT = re.compile(r"^( *)\S", re.MULTILINE)
_DASH_RUN = re.compile(r"^ *(?:- +){8}", re.MULTILINE)


def _plain_enough(text: str) -> bool:
    """Whether `text` is safe for libyaml's composer, which has none of our
    bounds: no anchors, aliases or tags, and nesting far below MAX_DEPTH (each
    level needs a bracket, a deeper indentation, or a `- ` on one line).
    Conservative: a false answer only means the slower bounded composer."""
    if "&" in text or "*" in text or "!" in text:
        return False
    if text.count("[") + text.count("{") > MAX_DEPTH // 2:
        return False
    if len(set(_INDENT.findall(text))) > MAX_DEPTH // 2:
        return False
    return _DASH_RUN.search(text) is None


def _fast_compose(text: str) -> yaml.Node | None:
    c_loader: Any = getattr(yaml, "CSafeLoader", None)  # absent without libyaml
    if c_loader is None or not _plain_enough(text):
        raise LookupError
    return yaml.compose(text, Loader=c_loader)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, max(0, index)) + 1


def compose_file(path: str) -> yaml.Node | None:
    """The root node of the YAML file `path` (None for an empty document).

    Raises ConfigError (`path:line: what`) for anything else.
    """
    try:
        data = read_capped(path, MAX_CONFIG_BYTES)
    except FileRefused as e:
        raise ConfigError([f"{path}:0: cannot read config: {e}"]) from None
    except OSError as e:
        raise ConfigError([f"{path}:0: cannot read config: {e.strerror or e}"]) from None
    except ValueError as e:  # a NUL or a surrogate in the path
        raise ConfigError([f"{path!r}:0: cannot read config: {e}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError([f"{path}:{line}: config is not UTF-8 text"]) from None
    try:
        return _fast_compose(text)
    except LookupError:
        pass  # the bounded composer below
    except yaml.YAMLError:
        pass  # it says where, with the same words
    try:
        loader = _BoundedLoader(text)  # the reader checks every character here
    except yaml.reader.ReaderError as e:
        line = _line_of(text, e.position)
        msg = f"{e.reason}: character {e.character!r} is not allowed in YAML"
        raise ConfigError([f"{path}:{line}: {msg}"]) from None
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = (mark.line + 1) if mark else 0
        what = "YAML syntax error: " if not isinstance(e, _Limit) else ""
        raise ConfigError([f"{path}:{line}: {what}{e.problem or e}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}:0: cannot parse config: {e}"]) from None
    finally:
        loader.dispose()
