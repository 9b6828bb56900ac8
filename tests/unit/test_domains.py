"""hrneo.domains: the host name rules, shared by `hrneo check` and `hrneo import`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hrneo.config import ConfigError, load_config
from hrneo.config import normalize_domain as from_config
from hrneo.domains import address_of, normalize_domain


@pytest.mark.parametrize(
    "name",
    ["example.com", "_dmarc.example.com", "_sip._tcp.example.org", "my_host.example.org",
     "xn--bcher-kva.example", "a", "1password.com", "a-b.c-d.example", "123.example"],
)  # fmt: skip
def test_valid(name: str) -> None:
    assert normalize_domain(name) == (name, None)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("-", "starts or ends with '-'"),
        ("--", "starts or ends with '-'"),
        ("-x-.example", "label '-x-' starts or ends with '-'"),
        ("x-.example", "label 'x-' starts or ends with '-'"),
        ("_", "label '_' has no letter or digit"),
        ("_-_.example", "has no letter or digit"),
        ("a..b", "empty label"),
        ("exa mple.com", "' ' is not allowed"),
        ("x" * 64 + ".org", "longer than 63"),
        ("1.2.3", "the last label is all digits"),
        ("10", "the last label is all digits"),
        ("192.0.2.1", "is an IP address, not a domain: put it under `static`"),
        ("2001:db8::1", "is an IP address, not a domain: put it under `static`"),
        ("198.51.100.0/24", "is a network, not a domain: put it under `static`"),
        ("regexp:^ads", "not supported: regexp"),
        ("keyword:ads", "not supported: keyword"),
        ("full:example.com", "a v2fly full: rule; write the bare name"),
    ],
)
def test_invalid(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        normalize_domain(raw)


def test_still_importable_from_config() -> None:
    assert from_config is normalize_domain


def test_address_of() -> None:
    assert address_of("192.0.2.1") == ("192.0.2.1", False)
    assert address_of("192.0.2.1/32") == ("192.0.2.1", True)
    assert address_of("192.0.2.9/24") == ("192.0.2.0/24", True)
    assert address_of(" 2001:db8::/32 ") == ("2001:db8::/32", True)
    assert address_of("example.com") is None and address_of("1password.com") is None


def test_check_says_where_addresses_belong(tmp_path: Path) -> None:
    lst = tmp_path / "l.list"
    lst.write_text("ok.example\n192.0.2.1\n-bad-.example\n_\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "policies:\n  - name: a\n    ipset: a\n    domains:\n      - 198.51.100.0/24\n"
        f"      - '--'\n    domain_files: [{lst}]\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(str(cfg))
    errs = e.value.errors
    assert f"{cfg}:5: '198.51.100.0/24' is a network, not a domain: put it under `static`" in errs
    assert any(x.startswith(f"{cfg}:6: invalid domain '--'") for x in errs), errs
    assert f"{lst}:2: '192.0.2.1' is an IP address, not a domain: put it under `static`" in errs
    assert any(x.startswith(f"{lst}:3: invalid domain '-bad-.example'") for x in errs), errs
    assert any(x.startswith(f"{lst}:4: invalid domain '_'") for x in errs), errs
    assert len(errs) == 5
