"""Inputs found and read: the bundle's files (bundle) and one module per input format, each
chosen by the file's content, never its name.
May import: nothing of the pipeline (only errors, schema and render, as every stage).

``sniff(path)`` names the format of a file from its first bytes (gzip is looked through);
``CAPTURE_READERS`` maps a capture format to its ``read(path) -> (table, report)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa

from ..errors import InputError
from . import pcap, pcapng
from .capture import read_head

CAPTURE_FORMATS = ("pcap", "pcapng")
LOG_FORMAT = "kernlog"
IP_FORMATS = ("ip-json", "ip-text")
CONNTRACK_FORMAT = "conntrack"


def sniff(path: str | os.PathLike) -> str:
    """The format of a file from its content: pcap, pcapng, kernlog, ip-json, ip-text or
    conntrack (``conntrack -L``).

    >>> sniff("samples/egress_switch_tcp/eth1.pcap")  # doctest: +SKIP
    'pcap'
    """
    from . import kernlog
    from .conntrack import looks_like_conntrack
    from .ipsnap import looks_like_ip_json, looks_like_ip_text

    if os.path.isdir(path):
        raise InputError(path, "is a directory, not a file")
    head = read_head(path)
    if not head:
        raise InputError(path, "empty file: nothing to read")
    if pcap.looks_like_pcap(head):
        return "pcap"
    if pcapng.looks_like_pcapng(head):
        return "pcapng"
    if looks_like_ip_json(head):
        return "ip-json"
    if kernlog.looks_like_kernlog(head):
        return LOG_FORMAT
    if looks_like_conntrack(head):
        return CONNTRACK_FORMAT
    if looks_like_ip_text(head):
        return "ip-text"
    raise InputError(
        path,
        "unrecognised content: not a pcap, pcapng, kernel log, ip snapshot or conntrack -L "
        f"(first bytes {head[:8].hex(' ')})",
        offset=0,
    )


def iter_capture(
    path: str | os.PathLike,
    fmt: str,
    report,
    *,
    iface: str | None = None,
    chunk_rows: int | None = None,
) -> Iterator[pa.Table]:
    """Yield a capture of a sniffed format as event-table chunks of at most ``chunk_rows``
    (``capture.CHUNK_ROWS`` when None)."""
    if fmt == "pcap":
        return pcap.iter_chunks(path, report, iface=iface, chunk_rows=chunk_rows)
    if fmt == "pcapng":
        return pcapng.iter_chunks(path, report, chunk_rows=chunk_rows)
    raise InputError(path, f"not a capture ({fmt})")


def read_capture(path: str | os.PathLike, fmt: str, *, iface: str | None = None):
    """Read a capture of a sniffed format into (event table, SourceReport)."""
    if fmt == "pcap":
        return pcap.read(path, iface=iface)
    if fmt == "pcapng":
        return pcapng.read(path)
    raise InputError(path, f"not a capture ({fmt})")
