"""Benchmarks: ``python -m hrneo.bench core`` (the compiled core against the
ipset/conntrack programs) and ``python -m hrneo.bench daemon``.

They are measurements, not tests: they print figures and targets and never
fail a build on speed.
"""
