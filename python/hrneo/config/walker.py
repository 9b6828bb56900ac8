"""The node-tree walker's tools: typed access to mappings, lists and scalars of a
composed YAML document, every problem recorded as `file:line: message`."""

from __future__ import annotations

from typing import Any, Callable

import yaml

# Lines of errors kept: a binary file or a runaway list must not fill memory.
MAX_ERRORS = 200
# Plain scalars that resolve to these tags are read as the text they are.
_AS_TEXT = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


class _Sentinel:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


NotScalar = _Sentinel("a list or mapping")
Invalid = _Sentinel("an unreadable value")


class Walker:
    """Errors and warnings of one file, and the helpers that record them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self.more_errors = 0  # beyond MAX_ERRORS: counted, not kept
        self.warnings: list[str] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def where(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def error(self, node: yaml.Node, msg: str) -> None:
        self.add_error(f"{self.where(node)}: {msg}")

    def add_error(self, line: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(line)
        else:
            self.more_errors += 1

    def warn(self, node: yaml.Node, msg: str) -> None:
        if len(self.warnings) < MAX_ERRORS:
            self.warnings.append(f"{self.where(node)}: {msg}")

    def scalar(self, node: yaml.Node) -> Any:
        """The Python value of a scalar node (YAML 1.1 resolution: 0x1001 is an int).

        NotScalar for a list or mapping; Invalid (error recorded) for a value
        its tag cannot make (`!!int abc`).
        """
        if not isinstance(node, yaml.ScalarNode):
            return NotScalar
        if node.tag in _AS_TEXT:
            return node.value
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            kind = node.tag.rsplit(":", 1)[-1]
            why = getattr(e, "problem", None) or e
            self.error(node, f"cannot read {node.value!r} as {kind}: {why}")
            return Invalid

    def mapping(
        self, node: yaml.Node, what: str, known: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Keys -> (key node, value node); unknown and duplicate keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping (key: value lines)")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode)
            if key is Invalid:
                continue
            if not isinstance(key, str):
                self.error(knode, f"{what}: key {key!r} is not a name")
                continue
            if key not in known:
                import difflib  # only for a misspelt key: not on every start

                hint = difflib.get_close_matches(key, known, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.error(knode, f"unknown key {key!r} in {what}{extra}")
                continue
            if key in out:
                self.error(knode, f"duplicate key {key!r} in {what}")
                continue
            out[key] = (knode, vnode)
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)

    def get(
        self,
        m: dict[str, tuple[yaml.Node, yaml.Node]],
        key: str,
        default: Any,
        conv: Callable[[Any], Any],
    ) -> Any:
        """Convert m[key] with `conv` (which raises ValueError with the reason)."""
        if key not in m:
            return default
        vnode = m[key][1]
        value = self.scalar(vnode)
        if value is NotScalar:
            self.error(vnode, f"{key} must be a single value")
            return default
        if value is Invalid:
            return default
        try:
            return conv(value)
        except (ValueError, TypeError) as e:
            self.error(vnode, f"{key}: {e}")
            return default
