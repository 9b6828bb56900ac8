"""`hrneo import list`: plain and v2fly lists, addresses among names, host name rules."""

from __future__ import annotations

import time
from pathlib import Path

from hrneo.config import load_config
from hrneo.importer import render, run_import, write_out
from import_helpers import FIX, roundtrip, warnings_about


def test_list_per_file_and_named(tmp_path: Path) -> None:
    other = tmp_path / "my list.txt"
    other.write_text("Example.ORG\nexample.com\n\n# c\nnot valid!\n")
    res = run_import("list", [str(FIX / "lists" / "video.list"), str(other)])
    assert [p.name for p in res.policies] == ["video", "my_list"]
    assert list(res.policies[0].domains) == ["example.com", "www.example.org", "example.net"]
    assert list(res.policies[1].domains) == ["example.org"]  # example.com: first file wins
    assert any(w.startswith(f"{other}:5: ") and "not valid!" in w for w in res.warnings)
    assert any(w.startswith(f"{FIX}/lists/video.list:4: leading '*.'") for w in res.warnings)
    roundtrip(tmp_path, res)
    res = run_import("list", [str(other)], policy="vpn", ipset="hr_vpn", timeout=0)
    p = res.policies[0]
    assert (p.name, p.ipset, p.ipset6, p.timeout) == ("vpn", "hr_vpn", "hr_vpnv6", 0)


def test_v2fly_rules(tmp_path: Path) -> None:
    f = tmp_path / "apple"
    f.write_text(
        "# v2fly data file\n"
        "full:www.example.com\n"
        "domain:example.org\n"
        "example.net @cn\n"
        "full:api.example.net @ads @cn\n"
        "regexp:^ads[0-9]+\\.example\\.com$\n"
        "keyword:tracker\n"
        "include:apple-cn\n"
        "Example.info   # trailing comment\n"
    )
    res = run_import("list", [str(f)])
    assert list(res.policies[0].domains) == [
        "www.example.com", "example.org", "example.net", "api.example.net", "example.info",
    ]  # fmt: skip
    assert warnings_about(
        res, f"{f}:6: 'regexp:^ads[0-9]+\\\\.example\\\\.com$': not supported: regexp"
    )
    assert warnings_about(res, f"{f}:7: 'keyword:tracker': not supported: keyword")
    assert warnings_about(res, f"{f}:8: 'include:apple-cn': not supported: include")
    assert not warnings_about(res, "labels")
    # once per file, not once per line
    assert warnings_about(res, f"{f}:2: 2 'full:' entries")
    assert warnings_about(res, f"{f}:4: 2 entries with @attributes")
    roundtrip(tmp_path, res)


def test_addresses_and_networks_go_to_static(tmp_path: Path) -> None:
    f = tmp_path / "mixed.lst"
    f.write_text(
        "example.com\n192.0.2.1\n198.51.100.0/24\n203.0.113.9/24\n2001:db8::1\n"
        "2001:db8:1::/48\n192.0.2.7/32\n0.0.0.0 blocked.example.org\n2001:db8::\n"
    )
    res = run_import("list", [str(f)])
    p = res.policies[0]
    assert list(p.domains) == ["example.com", "blocked.example.org"]
    assert list(p.static) == [
        "192.0.2.1", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::1", "2001:db8:1::/48",
        "192.0.2.7", "2001:db8::",  # a trailing ':' is quoted in the YAML
    ]  # fmt: skip
    assert warnings_about(res, "hosts-file lines")
    assert not warnings_about(res, "invalid domain")
    roundtrip(tmp_path, res)


def test_host_name_rules(tmp_path: Path) -> None:
    f = tmp_path / "names.list"
    f.write_text(
        "-\n--\n-x-.example\n_\nx-.example\n_dmarc.example.com\nmy_host.example.org\n1.2.3\n"
    )
    res = run_import("list", [str(f)])
    assert list(res.policies[0].domains) == ["_dmarc.example.com", "my_host.example.org"]
    for line in (1, 2, 3, 4, 5, 8):
        assert warnings_about(res, f"{f}:{line}: invalid domain"), (line, res.warnings)


def test_yaml_special_words_stay_strings(tmp_path: Path) -> None:
    f = tmp_path / "x.list"
    f.write_text("yes\nnull\non\n1e5\n0x10.example\n")
    res = run_import("list", [str(f)])
    data = roundtrip(tmp_path, res)
    assert data["policies"][0]["domains"] == ["yes", "null", "on", "1e5", "0x10.example"]  # type: ignore[index]


def test_out_dir_writes_big_lists_as_files(tmp_path: Path) -> None:
    big = tmp_path / "big.list"
    big.write_text("".join(f"d{i}.example.com\n" for i in range(1500)))
    small = tmp_path / "small.list"
    small.write_text("example.org\n192.0.2.1\n")
    res = run_import("list", [str(big), str(small)])
    out = tmp_path / "out"
    written = write_out(res, "test", str(out))
    assert written == [str(out / "hrneo.yaml"), str(out / "lists" / "big.list")]
    text = (out / "hrneo.yaml").read_text()
    assert "domain_files: [lists/big.list]" in text and "d1.example.com" not in text
    assert "      - example.org" in text  # small stays inline
    cfg, _ = load_config(str(out / "hrneo.yaml"))
    assert [len(p.domains) for p in cfg.policies] == [1500, 1]
    assert cfg.policies[1].static == ("192.0.2.1",)


def test_100k_domain_list_is_fast(tmp_path: Path) -> None:
    f = tmp_path / "big.list"
    f.write_text("".join(f"d{i}-x.example{i % 50}.com\n" for i in range(100_000)))
    t0 = time.perf_counter()
    res = run_import("list", [str(f)])
    text = render(res, "big")
    elapsed = time.perf_counter() - t0
    assert len(res.policies[0].domains) == 100_000 and text.count("\n") > 100_000
    # measured ~0.4 s here; the bound only catches a quadratic slip on a busy box
    assert elapsed < 3.0, elapsed
