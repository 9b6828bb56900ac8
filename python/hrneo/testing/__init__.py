"""Helpers shared by hrneo's tests, benchmarks and smoke scripts: a DNS wire
builder (:mod:`hrneo.testing.dnswire`) and private network namespaces
(:mod:`hrneo.testing.netns`). Shipped with the package because the benchmarks
(``python -m hrneo.bench``) are."""
