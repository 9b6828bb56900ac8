"""Reading a composed YAML node tree: scalars, mappings and lists, each error
and warning with the `file:line` of its node (the base of the config loader)."""

from __future__ import annotations

import difflib
from typing import Any, Callable

import yaml


class NotScalarType:
    """The value of a node that is not a scalar."""


NotScalar = NotScalarType()


class NodeReader:
    """Collects errors and warnings about the nodes of one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._constructor = yaml.constructor.SafeConstructor()

    # -- helpers ---------------------------------------------------------------
    def where(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def error(self, node: yaml.Node, msg: str) -> None:
        self.errors.append(f"{self.where(node)}: {msg}")

    def warn(self, node: yaml.Node, msg: str) -> None:
        self.warnings.append(f"{self.where(node)}: {msg}")

    def scalar(self, node: yaml.Node) -> Any:
        """The Python value of a scalar node (YAML 1.1 resolution: 0x1001 is an int)."""
        if not isinstance(node, yaml.ScalarNode):
            return NotScalar
        return self._constructor.construct_object(node, deep=True)

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
            if not isinstance(key, str):
                self.error(knode, f"{what}: key {key!r} is not a name")
                continue
            if key not in known:
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
        try:
            return conv(value)
        except (ValueError, TypeError) as e:
            self.error(vnode, f"{key}: {e}")
            return default
