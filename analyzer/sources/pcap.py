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
    cut_warning,
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
    _major, _minor, _zone, _sigfigs, snaplen, field = struct.unpack(endian + "HHiIII", raw[4:24])
    return endian, ns_per_unit, snaplen, field


#: The link-type field's upper bits (libpcap's LT_FCS_LENGTH_PRESENT, LT_FCS_LENGTH): the frames
#: end with a frame check sequence of that many 16-bit words.
FCS_PRESENT = 0x04000000


def link_type(field: int) -> tuple[int, int | None]:
    """The link type and the FCS length in bytes (None: not given) of the header's field, as
    libpcap reads it (``LT_LINKTYPE(x) = x & 0xFFFF``).

    >>> link_type(0x04000001)
    (1, 0)
    >>> link_type(0x24000001)
    (1, 4)
    """
    fcs = (field >> 28) * 2 if field & FCS_PRESENT else None
    return field & 0xFFFF, fcs


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
        endian, ns_per_unit, snaplen, field = _header(spath, raw)
        linktype, fcs = link_type(field)
        report.detail.update(
            linktype=linktype,
            linktype_name=LINKTYPE_NAMES.get(linktype, str(linktype)),
            snaplen=snaplen,
            ts_resolution="ns" if ns_per_unit == 1 else "us",
            byte_order="little" if endian == "<" else "big",
        )
        if fcs is not None:
            report.detail["fcs_bytes"] = fcs
        if linktype not in SUPPORTED_LINKTYPES:
            raise InputError(spath, f"unsupported link type {linktype}", offset=20)
        if iface is None and linktype not in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
            iface = card_from_filename(spath)
        limit = max(snaplen, 262144, 65535)
        limit = min(limit, MAX_RECORD)
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
            pos, walked = walk_block(data, endian, ns_per_unit, limit, spath, record_no, base)
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
                decoded = decode(buf, off + RECORD_HEADER_LEN, caplen, linktype, hdr[:, 3])
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
        report.warnings.extend(cut_warning(spath, f))


#: Records walked one by one before a block is walked in lanes: they give the record sizes
#: and time span that size the lanes and check their starts.
PREFIX_RECORDS = 64
#: Records per lane: fewer lanes cost more numpy steps, more lanes more start searches.
LANE_RECORDS = 48
#: Below this many lanes a block is walked one record at a time (big records: few per block).
MIN_LANES = 128
#: A lane's start must have its time within this many seconds of the block's first records.
LANE_TIME_SLACK = 86400


def walk_block(
    data: memoryview,
    endian: str,
    ns_per_unit: int,
    limit: int,
    path: str,
    record_no: int,
    base: int,
) -> tuple[int, np.ndarray | list[int]]:
    """Offsets of the complete records in ``data`` and where the first incomplete one begins.

    Each record's length says where the next starts, so the walk is sequential by nature; one
    record at a time in Python took ~190 ns a record (1.9 s of 10^7 headers-only packets).
    When a block holds many small records it is cut into lanes instead: each lane's first
    record is found by a search for headers that look right (time near the block's first
    records, captured length within the original), then all lanes are walked at once with
    numpy. A lane must end exactly on the next lane's start, which proves that start is on the
    file's chain of records; if one does not (a payload that looks like a record header), the
    block is walked one record at a time. Either way the result is the sequential walk's.
    """
    unpack_len = struct.Struct(endian + "I").unpack_from
    pos, head = _walk_first(data, unpack_len, PREFIX_RECORDS)
    if len(head) == PREFIX_RECORDS:
        starts = _lane_starts(data, endian, ns_per_unit, limit, pos, head)
        walked = None if starts is None else _walk_lanes(data, endian, unpack_len, limit, starts)
        if walked is not None:
            end, offsets = walked
            return end, np.concatenate([np.asarray(head, dtype=np.int64), offsets])
    return _walk(data, unpack_len, limit, path, record_no, base)


def _u32_at_every_byte(data: memoryview, endian: str) -> np.ndarray:
    """The 32-bit word starting at each byte of ``data`` (an unaligned, zero-copy view)."""
    return np.ndarray((len(data) - 3,), dtype=endian + "u4", buffer=data, strides=(1,))


def _lane_starts(
    data: memoryview, endian: str, ns_per_unit: int, limit: int, pos: int, head: list[int]
) -> np.ndarray | None:
    """``pos`` (a record the walk reached) and the first plausible record header in a window at
    the start of each later lane; None when the block is too small for lanes to pay or too few
    lanes found a start."""
    n = len(data)
    first = np.asarray(head, dtype=np.int64)
    gap = max(1, pos * LANE_RECORDS // len(head))
    widest = int(np.diff(np.append(first, pos)).max())
    window = min(gap, widest)
    at0 = pos + gap
    lanes = (n - RECORD_HEADER_LEN - window - at0) // gap
    if lanes < MIN_LANES:
        return None
    words = _u32_at_every_byte(data, endian)
    ts = words[first]
    lo = np.uint32((int(ts.min()) - LANE_TIME_SLACK) & 0xFFFFFFFF)
    span = np.uint32(int(ts.max()) - int(ts.min()) + 2 * LANE_TIME_SLACK)
    grid = np.lib.stride_tricks.as_strided(
        words[at0:], shape=(lanes, window), strides=(gap, 1), writeable=False
    )
    lane, col = np.nonzero(grid - lo <= span)
    at = at0 + lane * gap + col
    start = at
    frac_limit = 1_000_000_000 // ns_per_unit
    for _ in range(2):  # the header and the one it leads to must both look right
        ok = at <= n - RECORD_HEADER_LEN
        at, lane, start = at[ok], lane[ok], start[ok]
        cap = words[at + 8].astype(np.int64)
        ok = (cap <= words[at + 12]) & (cap <= limit) & (words[at + 4] < frac_limit)
        ok &= words[at] - lo <= span
        at, lane, start = (at + RECORD_HEADER_LEN + cap)[ok], lane[ok], start[ok]
    _, first_of_lane = np.unique(lane, return_index=True)
    if len(first_of_lane) < MIN_LANES:
        return None
    return np.concatenate([[pos], start[first_of_lane]])


def _walk_lanes(
    data: memoryview, endian: str, unpack_len, limit: int, starts: np.ndarray
) -> tuple[int, np.ndarray] | None:
    """Walk every lane but the last from its start to the next lane's, a record of every lane
    per numpy step, then the last lane to the end of the block one record at a time. None when
    a lane does not land exactly on the next start, or when the block's last record runs past
    it with a length over ``limit`` (the one-by-one walk names that error)."""
    caplen_at = _u32_at_every_byte(data[8:], endian)
    at, goal = starts[:-1].copy(), starts[1:]
    steps = []
    while True:
        live = at < goal
        if not live.any():
            break
        steps.append(np.where(live, at, -1))
        at = np.where(live, at + RECORD_HEADER_LEN + caplen_at[np.where(live, at, 0)], at)
    if not np.array_equal(at, goal):
        return None
    tail = int(starts[-1])
    end, rest = _walk_first(data[tail:], unpack_len, len(data))
    end += tail
    if end + RECORD_HEADER_LEN <= len(data) and unpack_len(data, end + 8)[0] > limit:
        return None
    offsets = np.stack(steps, axis=1).ravel()
    return end, np.concatenate([offsets[offsets >= 0], np.asarray(rest, dtype=np.int64) + tail])


def _walk_first(data: memoryview, unpack_len, most: int) -> tuple[int, list[int]]:
    """The first ``most`` complete records of ``data`` (fewer if the block has fewer)."""
    last = len(data) - RECORD_HEADER_LEN
    starts: list[int] = []
    pos = 0
    while pos <= last and len(starts) < most:
        after = pos + RECORD_HEADER_LEN + unpack_len(data, pos + 8)[0]
        if after > len(data):
            break
        starts.append(pos)
        pos = after
    return pos, starts


def _walk(
    data: memoryview, unpack_len, limit: int, path: str, record_no: int, base: int
) -> tuple[int, list[int]]:
    """Offsets of the complete records in ``data``, one at a time, and where the first
    incomplete one begins.

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
