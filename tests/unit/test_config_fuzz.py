"""Property: any config file, text or bytes, gives a Config or a ConfigError whose
lines start with `file:line:` — never another exception (RecursionError, a YAML
constructor error, TypeError from an odd value, MemoryError)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from hrneo.config import Config, ConfigError, load_config
from hrneo.config.loader import FIREWALL_KEYS, POLICY_KEYS, ROUTE_KEYS, TOP_KEYS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Scalars as YAML spells them, with the values that broke loaders before.
SCALARS = [
    "0", "1", "-1", "7", "65536", "0x1001", "0o17", "1e-9", "1e400", ".nan", ".inf", "-.inf",
    "true", "false", "yes", "null", "~", "''", '""', "example.org", "*.example.org", "bad..x",
    "192.0.2.1", "198.51.100.0/24", "2001:db8::1", "fe80::1%eth0", "wg0", "a/b", "2020-01-01",
    "<<", "=", "!!int abc", "!!float x", "!!python/object/apply:os.system [id]", "!foo x",
    "!!binary aGk=", "&a x", "*a", "*undefined", "/dev/zero", "/nonexistent/list", '"\\0"',
    '"\\ud800"', '"\\x00"', "'\u00fc.example'", "|\n  block", "{a: 1}", "[1, [2]]",
]  # fmt: skip
KEYS = [*sorted(set(TOP_KEYS + FIREWALL_KEYS + POLICY_KEYS + ROUTE_KEYS)), "<<", "x", "1"]

scalar = st.sampled_from(SCALARS) | st.text(max_size=12).map(lambda t: repr(t).replace("'", '"'))


def _block(value: object, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, dict):
        return "".join(f"\n{pad}{k}:{_block(v, indent + 2)}" for k, v in value.items()) or " {}"
    if isinstance(value, list):
        return "".join(f"\n{pad}- {_block(v, indent + 2).lstrip()}" for v in value) or " []"
    return f" {value}"


node = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
policy = st.dictionaries(st.sampled_from(POLICY_KEYS), node, max_size=6)
config_doc = st.builds(
    lambda top, pols: {**top, "policies": pols},
    st.dictionaries(st.sampled_from(TOP_KEYS), node, max_size=4),
    st.lists(policy, max_size=3),
).map(lambda d: _block(d, 0).lstrip("\n") + "\n")


@pytest.fixture(scope="module")
def cfg_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="hrneo-fuzz-") as d:
        yield os.path.join(d, "hrneo.yaml")


def check(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
    try:
        cfg, warnings = load_config(path)
    except ConfigError as e:
        errors: list[str] | None = e.errors
    else:
        errors = None
    if errors is None:
        assert isinstance(cfg, Config) and isinstance(warnings, list)
        return
    assert errors, "a ConfigError without lines"
    for line in errors:
        head, sep, _ = line.partition(": ")
        assert sep and ":" in head and head.rsplit(":", 1)[1].isdigit(), line


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes(cfg_path: str, data: bytes) -> None:
    check(cfg_path, data)


@SETTINGS
@given(st.text(max_size=300))
def test_any_text(cfg_path: str, text: str) -> None:
    check(cfg_path, text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(config_doc)
def test_config_shaped_yaml(cfg_path: str, text: str) -> None:
    check(cfg_path, text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(st.lists(st.sampled_from(["[", "]", "{", "}", "a: ", "- ", "\n  ", "&x ", "*x ", ", ",
                                 "!!str ", "? ", "|", ">", "'", '"', "#", "%YAML 1.1\n", "---\n"]),
                max_size=60).map("".join))  # fmt: skip
def test_yaml_punctuation_soup(cfg_path: str, text: str) -> None:
    check(cfg_path, text.encode())
