"""Classic libpcap files (tcpdump -w): microsecond or nanosecond, either byte order, any link type
nicpath decodes (Ethernet per card, LINUX_SLL/SLL2 from ``tcpdump -i any``, raw IP).

Format: 24-byte global header (magic a1b2c3d4 us / a1b23c4d ns), then records of a 16-byte header
(ts_sec, ts_frac, incl_len, orig_len) and incl_len bytes. The walk over record headers is
sequential by nature; everything after it is vectorised in ``frames.decode``.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..schema import arrow_column
from .base import SourceReport
from .capture import (
    CHUNK_ROWS,
    MAX_RECORD,
    Blocks,
    assemble,
    concat,
    direction_from_pkttype,
    open_maybe_gzip,
    read_block,
    record_span,
)
from .frames import (
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NAMES,
    SUPPORTED_LINKTYPES,
    byte_rows,
    decode,
)

MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
HEADER_LEN = 24
RECORD_HEADER_LEN = 16


def looks_like_pcap(head: bytes) -> bool:
    return head[:4] in MAGICS


def _header(path: str, raw: bytes) -> tuple[str, int, int, int]:
    if len(raw) < 4 or raw[:4] not in MAGICS:
        raise InputError(path, "not a pcap file (unknown magic number)", offset=0)
    if len(raw) < HEADER_LEN:
        raise InputError(path, "truncated pcap global header", offset=len(raw))
    endian, ns_per_unit = MAGICS[raw[:4]]
    _major, _minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(endian + "HHiIII", raw[4:24])
    linktype &= 0x0FFFFFFF  # upper bits carry the FCS length flags
    return endian, ns_per_unit, snaplen, linktype


#: A capture file name's suffix: ``.pcap``, tcpdump -C's rotated ``.pcap1``, ``.pcap2``, ... and
#: ``.cap``, each optionally gzip-compressed. Card names may hold dots (``eth0.100``).
CAPTURE_SUFFIX = re.compile(r"\.(?:pcap|cap)\d*(?:\.gz)?$", re.IGNORECASE)


def card_from_filename(path: str | os.PathLike) -> str:
    """The card a per-card capture was taken on, from its file name.

    >>> card_from_filename("bundle/eth0.100.pcap3")
    'eth0.100'
    """
    name = os.path.basename(str(path))
    stem = CAPTURE_SUFFIX.sub("", name)
    return stem if stem and stem != name else name.split(".")[0]


def iter_chunks(
    path: str | os.PathLike,
    report: SourceReport,
    *,
    iface: str | None = None,
    chunk_rows: int | None = None,
) -> Iterator[pa.Table]:
    """Yield the capture as event-table chunks of at most ``chunk_rows`` packets
    (``CHUNK_ROWS`` when None) of one read block (bounded memory).

    ``iface`` names the card for Ethernet captures (default: the file's stem); for SLL/SLL2 the
    card is resolved later from the interface index.
    """
    spath = str(path)
    chunk_rows = chunk_rows or CHUNK_ROWS
    with open_maybe_gzip(path) as f:
        raw = read_block(f, spath, HEADER_LEN)
        endian, ns_per_unit, snaplen, linktype = _header(spath, raw)
        report.detail.update(
            linktype=linktype,
            linktype_name=LINKTYPE_NAMES.get(linktype, str(linktype)),
            snaplen=snaplen,
            ts_resolution="ns" if ns_per_unit == 1 else "us",
            byte_order="little" if endian == "<" else "big",
        )
        if linktype not in SUPPORTED_LINKTYPES:
            raise InputError(spath, f"unsupported link type {linktype}", offset=20)
        if iface is None and linktype not in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
            iface = card_from_filename(spath)
        limit = max(snaplen, 262144, 65535)
        limit = min(limit, MAX_RECORD)
        unpack_len = struct.Struct(endian + "I").unpack_from
        u32 = np.dtype(endian + "u4")

        blocks = Blocks(f, spath)
        base = HEADER_LEN  # file offset of data[0]
        record_no = 1
        pos = 0  # where the unfinished record of the last block starts in it
        while True:
            data = blocks.next(pos)
            pos = 0
            if not data:
                break
            buf = np.frombuffer(data, dtype=np.uint8)
            pos, walked = _walk(data, unpack_len, limit, spath, record_no, base)
            for lo in range(0, len(walked), chunk_rows):
                off = np.asarray(walked[lo : lo + chunk_rows], dtype=np.int64)
                hdr = byte_rows(buf, off, RECORD_HEADER_LEN).view(u32)
                ts_ns = (
                    hdr[:, 0].astype(np.int64) * 1_000_000_000
                    + hdr[:, 1].astype(np.int64) * ns_per_unit
                )
                caplen = hdr[:, 2].astype(np.int64)
                if (caplen > limit).any():
                    k = int(np.argmax(caplen > limit))
                    raise InputError(
                        spath,
                        f"corrupt record: captured length {caplen[k]} exceeds {limit}",
                        record=record_no + k,
                        offset=base + int(off[k]),
                    )
                decoded = decode(buf, off + RECORD_HEADER_LEN, caplen, linktype)
                decoded["wire_len"] = arrow_column(hdr[:, 3], pa.uint32())
                direction = None
                if "pkttype" in decoded:
                    direction = direction_from_pkttype(decoded["pkttype"])
                yield assemble(
                    decoded,
                    ts_ns=ts_ns,
                    source=spath,
                    records=np.arange(record_no, record_no + len(off)),
                    offsets=base + off,
                    iface=iface,
                    direction=direction,
                )
                record_no += len(off)
                report.records += len(off)
                report.used += len(off)
            base += pos
            if blocks.at_end:
                break
        if len(data) > pos:
            report.warnings.append(
                f"{spath}: truncated: last record cut short at byte offset {base} "
                f"({len(data) - pos} bytes ignored); read {record_no - 1} complete packets"
            )
            report.skip("truncated record at end of file")
            report.records += 1


def _walk(
    data: bytes, unpack_len, limit: int, path: str, record_no: int, base: int
) -> tuple[int, list[int]]:
    """Offsets of the complete records in ``data`` (the walk the format forces: each record's
    length says where the next one starts), and where the first incomplete one begins.

    The loop does the least per record; lengths over ``limit`` are checked on the whole block
    afterwards, or here when such a length runs past the block (it would never complete).
    """
    n = len(data)
    last = n - RECORD_HEADER_LEN
    starts: list[int] = []
    append = starts.append
    pos = 0
    while pos <= last:
        after = pos + RECORD_HEADER_LEN + unpack_len(data, pos + 8)[0]
        if after > n:
            if after - pos - RECORD_HEADER_LEN > limit:
                append(pos)  # the first corrupt record walked (maybe an earlier one) is named
                for k, at in enumerate(starts):
                    caplen = unpack_len(data, at + 8)[0]
                    if caplen > limit:
                        raise InputError(
                            path,
                            f"corrupt record: captured length {caplen} exceeds {limit}",
                            record=record_no + k,
                            offset=base + at,
                        )
            break
        append(pos)
        pos = after
    return pos, starts


def read(path: str | os.PathLike, *, iface: str | None = None) -> tuple[pa.Table, SourceReport]:
    """Read a classic pcap (or pcap.gz) into the event table."""
    report = SourceReport(path=str(path), format="pcap")
    table = concat(list(iter_chunks(path, report, iface=iface)))
    record_span(report, table)
    return table, report
