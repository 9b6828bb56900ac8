"""Watchlist matching: label boundaries, most specific wins, chains, duplicates."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hrneo import Watchlist, WatchMatch
from hrneo.config import load_config


def build(*policies: tuple[str, ...]) -> Watchlist:
    """Policy i gets the domains of policies[i], written on lines 1, 2, ... of 'p{i}.list'."""
    wl = Watchlist()
    for pi, domains in enumerate(policies):
        src = wl.add_source(f"p{pi}.list")
        for line, d in enumerate(domains, 1):
            wl.add(d, pi, src, line)
    return wl


def m(w: WatchMatch | None) -> tuple[int, str, str] | None:
    return None if w is None else (w.policy, w.name, w.domain)


WL = build(("example.org", "cdn.example.net"), ("www.example.org", "example.net"), ("org",))


def test_exact_and_subdomains() -> None:
    assert m(WL.match("example.org")) == (0, "example.org", "example.org")
    assert m(WL.match("a.b.example.org")) == (0, "a.b.example.org", "example.org")
    assert m(WL.match("A.B.Example.ORG.")) == (0, "A.B.Example.ORG.", "example.org")


def test_label_boundary() -> None:
    # `badexample.org` is not under `example.org`; only the TLD entry of p2 matches it.
    assert m(WL.match("badexample.org")) == (2, "badexample.org", "org")
    assert WL.match("example.com") is None
    assert WL.match("xexample.net") is None
    assert WL.match("net") is None
    assert WL.match("") is None
    assert WL.policy_of("xexample.net") == -1


def test_most_specific_wins_across_policies() -> None:
    assert m(WL.match("www.example.org")) == (1, "www.example.org", "www.example.org")
    for name, want in [
        ("img.www.example.org", 1),
        ("api.example.org", 0),
        ("x.cdn.example.net", 0),
        ("x.example.net", 1),
    ]:
        hit = WL.match(name)
        assert hit is not None and hit.policy == want == WL.policy_of(name), name


def test_origin_of_a_match() -> None:
    hit = WL.match("edge.cdn.example.net")
    assert hit is not None and (hit.source, hit.line) == ("p0.list", 2)


def test_chain_alias_watched_target_not() -> None:
    got = WL.match_chain(["media.example.net", "edge.unwatched.test"])
    assert m(got) == (1, "media.example.net", "example.net")


def test_chain_target_watched_alias_not() -> None:
    got = WL.match_chain(["unwatched.test", "x.cdn.example.net"])
    assert m(got) == (0, "x.cdn.example.net", "cdn.example.net")


def test_chain_most_specific_overall_and_tie_keeps_first() -> None:
    # example.org (p0, 2 labels) vs www.example.org (p1, 3 labels): p1 wins.
    got = WL.match_chain(["a.example.org", "www.example.org"])
    assert got is not None and got.policy == 1
    # Equally specific matches: the question name (first) keeps it.
    two = build(("aa.example",), ("bb.example",))
    got = two.match_chain(["x.aa.example", "y.bb.example"])
    assert got is not None and got.policy == 0
    assert two.match_chain(["nothing.test"]) is None
    assert two.match_chain([]) is None


def test_duplicates_stay_with_the_first_policy() -> None:
    wl = Watchlist()
    wl.add_source("a.yaml")
    assert wl.add("x.example", 0, 0, 1) is None
    assert wl.add("dup.example", 0, 0, 2) is None
    assert wl.add("dup.example", 1, 0, 9) == (0, 0, 2)
    assert m(wl.match("dup.example")) == (0, "dup.example", "dup.example")
    assert (len(wl), wl.count(0), wl.count(1), wl.domains(0)) == (
        2,
        2,
        0,
        ["x.example", "dup.example"],
    )


@pytest.mark.parametrize(
    "bad", ["Example.org", "a..b", "", "-", "x" * 64, "a b.example", "é.example"]
)
def test_only_normalized_domains_go_in(bad: str) -> None:
    with pytest.raises(ValueError, match="not a normalized domain"):
        Watchlist().add(bad, 0)


def test_loader_reports_duplicates_with_both_places(tmp_path: Path) -> None:
    cfg = tmp_path / "hrneo.yaml"
    cfg.write_text(
        textwrap.dedent(
            """\
            policies:
              - name: a
                ipset: sa
                domains: [x.example, dup.example]
              - name: b
                ipset: sb
                domains:
                  - dup.example
            """
        )
    )
    config, warnings = load_config(str(cfg))
    want = (
        f"{cfg}:8: domain 'dup.example' of policy 'b' is already in policy 'a' ({cfg}:4); "
        "'a' keeps it"
    )
    assert [w for w in warnings if "already in" in w] == [want]
    assert config.policies[1].domains == ()
    assert config.watchlist.policy_of("dup.example") == 0


def test_large_list_compiles_and_matches() -> None:
    doms = tuple(f"d{i}.example{i % 97}.com" for i in range(100_000))
    wl = build(doms)
    wl.shrink_to_fit()
    assert len(wl) == 100_000
    assert wl.match(f"www.d99999.example{99999 % 97}.com") is not None
    assert wl.match("www.d99999.example1.com") is None
    assert wl.match("d100000.example0.com") is None
    assert wl.heap_bytes() < 100_000 * 50  # ~21 bytes of text each, ~25 of index
