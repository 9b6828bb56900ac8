"""hrneo: DNS-driven selective routing for Linux routers.

The three core classes come from the compiled Rust module ``hrneo._core``:
:class:`NflogReader` (DNS answers copied by the kernel's NFLOG target),
:class:`IpsetBatch` (batched ipset adds that report which addresses were new)
and :class:`ConntrackFlusher` (deletes the conntrack entries of new addresses).
"""

from hrneo._core import (
    ConntrackFlusher,
    DnsAnswer,
    DnsEvent,
    IpsetBatch,
    IpsetError,
    NflogReader,
    __version__,
    ipset_create,
    ipset_destroy,
    ipset_exists,
    ipset_flush,
    ipset_info,
    ipset_list,
    ipset_swap,
    ipset_test,
    parse_packet,
)

__all__ = [
    "ConntrackFlusher",
    "DnsAnswer",
    "DnsEvent",
    "IpsetBatch",
    "IpsetError",
    "NflogReader",
    "__version__",
    "ipset_create",
    "ipset_destroy",
    "ipset_exists",
    "ipset_flush",
    "ipset_info",
    "ipset_list",
    "ipset_swap",
    "ipset_test",
    "parse_packet",
]
