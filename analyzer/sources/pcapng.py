"""pcapng files with any number of interfaces and sections (dumpcap, tshark, mergecap).

nicpath reads the blocks itself because dpkt's reader keeps only the first Interface Description
Block (formats.md): here every Enhanced Packet Block keeps its interface (name from ``if_name``),
its own timestamp resolution (``if_tsresol``, offset ``if_tsoffset``) and its direction
(``epb_flags`` bits 0-1: 1 inbound, 2 outbound). Interface ids restart at each Section Header
Block. Simple Packet Blocks belong to the first interface of their section.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..schema import arrow_column, labels
from .base import SourceReport
from .capture import (
    CHUNK_ROWS,
    IN,
    MAX_RECORD,
    OUT,
    UNKNOWN,
    assemble,
    concat,
    direction_from_pkttype,
    open_maybe_gzip,
    read_after,
    read_block,
    record_span,
)
from .frames import LINKTYPE_NAMES, SUPPORTED_LINKTYPES, byte_rows, decode

SHB, IDB, SPB, EPB, OPB = 0x0A0D0D0A, 0x00000001, 0x00000003, 0x00000006, 0x00000002
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_IF_NAME, OPT_IF_TSRESOL, OPT_IF_TSOFFSET, OPT_EPB_FLAGS = 0, 2, 9, 14, 2
#: An EPB whose first option is epb_flags (what dumpcap writes): read it without the walk.
FLAGS_FIRST = {e: struct.pack(e + "HH", OPT_EPB_FLAGS, 4) for e in "<>"}
U32 = {e: struct.Struct(e + "I").unpack_from for e in "<>"}
BLOCK_HEAD = {e: struct.Struct(e + "II").unpack_from for e in "<>"}


def looks_like_pcapng(head: bytes) -> bool:
    return head[:4] == b"\x0a\x0d\x0d\x0a"


@dataclass
class Interface:
    """One IDB: link type, name, and how its timestamps convert to nanoseconds."""

    index: int  # global index over the whole file (ids restart per section)
    linktype: int
    snaplen: int
    name: str | None = None
    tsresol: int = 6  # raw if_tsresol byte; default 10^-6
    tsoffset: int = 0

    def ts_to_ns(self, units: np.ndarray) -> np.ndarray:
        if self.tsresol & 0x80:
            per_second = 1 << (self.tsresol & 0x7F)
            ns = (units.astype(np.float64) * (1e9 / per_second)).astype(np.int64)
        else:
            exp = self.tsresol
            if exp <= 9:
                ns = units.astype(np.int64) * (10 ** (9 - exp))
            else:
                ns = units.astype(np.int64) // (10 ** (exp - 9))
        return ns + self.tsoffset * 1_000_000_000


def _options(data: bytes, pos: int, end: int, endian: str) -> Iterator[tuple[int, bytes]]:
    hdr = struct.Struct(endian + "HH")
    while pos + 4 <= end:
        code, length = hdr.unpack_from(data, pos)
        if code == OPT_END:
            return
        value = data[pos + 4 : pos + 4 + length]
        if pos + 4 + length > end:
            return
        yield code, value
        pos += 4 + ((length + 3) & ~3)


def _interface(data: bytes, pos: int, end: int, endian: str, index: int) -> Interface:
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", data, pos + 8)
    iface = Interface(index=index, linktype=linktype, snaplen=snaplen)
    for code, value in _options(data, pos + 16, end - 4, endian):
        if code == OPT_IF_NAME:
            iface.name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif code == OPT_IF_TSRESOL and value:
            iface.tsresol = value[0]
        elif code == OPT_IF_TSOFFSET and len(value) == 8:
            iface.tsoffset = struct.unpack(endian + "q", value)[0]
    return iface


#: Per packet block: data start, captured and original length, global interface index,
#: timestamp units, epb_flags (-1: none), file offset.
PACKET_FIELDS = ("start", "cap", "orig", "iface", "ts", "flags", "offset")


class _Packets:
    """The packet blocks of one chunk, as columns: gathered a run of EPBs at a time, or one
    block at a time for the rare others (SPB, OPB, EPB options in another order)."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.rows: list[tuple[int, ...]] = []
        self.count = 0

    def add(self, *row: int) -> None:
        self.rows.append(row)
        self.count += 1

    def add_many(self, *columns: np.ndarray) -> None:
        self._flush_rows()
        self.parts.append(columns)
        self.count += len(columns[0])

    def _flush_rows(self) -> None:
        if self.rows:
            columns = zip(*self.rows, strict=True)
            self.parts.append(tuple(np.asarray(c, dtype=np.int64) for c in columns))
            self.rows = []

    def columns(self) -> dict[str, np.ndarray]:
        self._flush_rows()
        return {
            name: np.concatenate([p[i] for p in self.parts]).astype(np.int64, copy=False)
            for i, name in enumerate(PACKET_FIELDS)
        }


class _Walker:
    """Walks pcapng blocks in order, keeping section state (byte order, interface ids)."""

    def __init__(self, spath: str, report: SourceReport, chunk_rows: int | None = None) -> None:
        self.spath = spath
        self.report = report
        self.chunk_rows = chunk_rows or CHUNK_ROWS
        self.interfaces: list[Interface] = []
        self.section: list[int] = []  # this section's interface ids -> global index
        self.endian = "<"
        report.detail["interfaces"] = []

    def walk(self, data: bytes, pos: int, base: int, record_no: int) -> tuple[int, _Packets]:
        """Read whole blocks from ``pos`` until the data ends or a chunk is full.

        Enhanced Packet Blocks, nearly every block of a real capture, are only located here
        (type and length); their fields are gathered for all of them at once in ``_epbs``.
        """
        n = len(data)
        out = _Packets()
        epb: list[int] = []
        found = epb.append
        head = BLOCK_HEAD[self.endian]
        room = self.chunk_rows
        while pos + 12 <= n and room:
            btype, blen = head(data, pos)
            if btype == EPB and 32 <= blen <= MAX_RECORD and not blen & 3:
                if pos + blen > n:
                    break
                found(pos)
                pos += blen
                room -= 1
                continue
            if epb:  # keep packet order and the interface table as of these packets
                self._epbs(data, epb, base, record_no, out)
                epb.clear()
            if btype == SHB:
                self._byte_order(data, pos, base)
                head = BLOCK_HEAD[self.endian]
                btype, blen = head(data, pos)
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                raise InputError(
                    self.spath,
                    f"corrupt block: impossible length {blen}",
                    record=record_no + out.count,
                    offset=base + pos,
                )
            if pos + blen > n:
                break
            if btype in (EPB, SPB, OPB):
                self._packet(data, pos, btype, blen, base, record_no + out.count, out)
                room -= 1
            elif btype == SHB:
                self.section = []
                self.report.detail["sections"] = self.report.detail.get("sections", 0) + 1
            elif btype == IDB:
                self._interface(data, pos, pos + blen)
            else:
                self.report.detail["other_blocks"] = self.report.detail.get("other_blocks", 0) + 1
            pos += blen
        if epb:
            self._epbs(data, epb, base, record_no, out)
        return pos, out

    def _epbs(self, data: bytes, positions: list[int], base: int, first: int, out: _Packets):
        """Fields of many Enhanced Packet Blocks at once: header words, epb_flags when it is
        the first option (else the options are walked for that block)."""
        endian = self.endian
        record0 = first + out.count
        buf = np.frombuffer(data, dtype=np.uint8)
        pos = np.asarray(positions, dtype=np.int64)
        words = byte_rows(buf, pos, 28).view(endian + "u4").astype(np.int64)
        blen, if_id, cap, orig = words[:, 1], words[:, 2], words[:, 5], words[:, 6]
        for bad, why in (
            (
                if_id >= len(self.section),
                "packet names interface {if_id}, which this section does not describe",
            ),
            (
                28 + cap > blen - 4,
                "corrupt packet block: captured length {cap} exceeds block length {blen}",
            ),
        ):
            if bad.any():
                k = int(np.argmax(bad))
                raise InputError(
                    self.spath,
                    why.format(if_id=if_id[k], cap=cap[k], blen=blen[k]),
                    record=record0 + k,
                    offset=base + int(pos[k]),
                )
        opt = pos + 28 + ((cap + 3) & ~3)
        end = pos + blen - 4
        flags = np.full(len(pos), -1, dtype=np.int64)
        room = np.flatnonzero(opt + 8 <= end)
        if room.size:
            at = opt[room]
            first_opt = byte_rows(buf, at, 4).view(endian + "u4")[:, 0]
            want = np.frombuffer(FLAGS_FIRST[endian], dtype=endian + "u4")[0]
            fast = first_opt == want
            value = byte_rows(buf, at[fast] + 4, 4).view(endian + "u4")[:, 0]
            flags[room[fast]] = value
            for k in room[~fast]:
                for code, val in _options(data, int(opt[k]), int(end[k]), endian):
                    if code == OPT_EPB_FLAGS and len(val) == 4:
                        flags[k] = struct.unpack(endian + "I", val)[0]
        section = np.asarray(self.section, dtype=np.int64)
        ts = (words[:, 3] << 32) | words[:, 4]
        out.add_many(pos + 28, cap, orig, section[if_id], ts, flags, base + pos)

    def _byte_order(self, data: bytes, pos: int, base: int) -> None:
        magic = data[pos + 8 : pos + 12]
        if magic == b"\x4d\x3c\x2b\x1a":
            self.endian = "<"
        elif magic == b"\x1a\x2b\x3c\x4d":
            self.endian = ">"
        else:
            raise InputError(
                self.spath, "corrupt Section Header Block byte-order magic", offset=base + pos
            )

    def _interface(self, data: bytes, pos: int, end: int) -> None:
        iface = _interface(data, pos, end, self.endian, len(self.interfaces))
        self.interfaces.append(iface)
        self.section.append(iface.index)
        self.report.detail["interfaces"].append(
            {
                "id": len(self.section) - 1,
                "name": iface.name,
                "linktype": iface.linktype,
                "linktype_name": LINKTYPE_NAMES.get(iface.linktype, str(iface.linktype)),
            }
        )

    def _packet(
        self, data: bytes, pos: int, btype: int, blen: int, base: int, record: int, out: _Packets
    ) -> None:
        endian, end = self.endian, pos + blen
        if btype == EPB:
            if_id, ts_hi, ts_lo, cap, orig = struct.unpack_from(endian + "IIIII", data, pos + 8)
            dstart = pos + 28
        elif btype == OPB:
            if_id, _drops, ts_hi, ts_lo, cap, orig = struct.unpack_from(
                endian + "HHIIII", data, pos + 8
            )
            dstart = pos + 28
        else:
            if_id, ts_hi, ts_lo = 0, 0, 0
            (orig,) = struct.unpack_from(endian + "I", data, pos + 8)
            dstart = pos + 12
            cap = min(orig, blen - 16)
            if self.section:
                cap = min(cap, self.interfaces[self.section[0]].snaplen or cap)
        if if_id >= len(self.section):
            raise InputError(
                self.spath,
                f"packet names interface {if_id}, which this section does not describe",
                record=record,
                offset=base + pos,
            )
        if dstart + cap > end - 4:
            raise InputError(
                self.spath,
                f"corrupt packet block: captured length {cap} exceeds block length {blen}",
                record=record,
                offset=base + pos,
            )
        flags = -1
        if btype != SPB:
            opt_pos = dstart + ((cap + 3) & ~3)
            if data[opt_pos : opt_pos + 4] == FLAGS_FIRST[endian] and opt_pos + 8 <= end - 4:
                flags = U32[endian](data, opt_pos + 4)[0]
            else:
                for code, value in _options(data, opt_pos, end - 4, endian):
                    if code == OPT_EPB_FLAGS and len(value) == 4:
                        flags = struct.unpack(endian + "I", value)[0]
        out.add(dstart, cap, orig, self.section[if_id], (ts_hi << 32) | ts_lo, flags, base + pos)


def iter_chunks(
    path: str | os.PathLike, report: SourceReport, *, chunk_rows: int | None = None
) -> Iterator[pa.Table]:
    """Yield the capture as event-table chunks of at most ``chunk_rows`` packets
    (``CHUNK_ROWS`` when None)."""
    spath = str(path)
    walker = _Walker(spath, report, chunk_rows)
    with open_maybe_gzip(path) as f:
        head = read_block(f, spath, 12)
        if len(head) < 12 or not looks_like_pcapng(head):
            raise InputError(spath, "not a pcapng file (no Section Header Block)", offset=0)
        carry = head
        base = 0
        record_no = 1
        while True:
            data = read_after(f, spath, carry)
            at_end = len(data) == len(carry)
            pos = 0
            while True:
                pos, packets = walker.walk(data, pos, base, record_no)
                if not packets.count:
                    break
                yield _chunk(data, walker.interfaces, spath, record_no, packets)
                count = packets.count
                record_no += count
                report.records += count
                report.used += count
            carry = data[pos:]
            base += pos
            if at_end:
                break
        if carry:
            report.warnings.append(
                f"{spath}: truncated: last block cut short at byte offset {base} "
                f"({len(carry)} bytes ignored); read {record_no - 1} complete packets"
            )
            report.skip("truncated block at end of file")
            report.records += 1
    unsupported = {i.linktype for i in walker.interfaces} - SUPPORTED_LINKTYPES
    if unsupported:
        report.warnings.append(
            f"{spath}: interfaces with unsupported link types {sorted(unsupported)}"
        )


def _chunk(
    data: bytes, interfaces: list[Interface], spath: str, record_no: int, packets: _Packets
) -> pa.Table:
    buf = np.frombuffer(data, dtype=np.uint8)
    cols = packets.columns()
    start, cap, ifx, flags, offs = (cols[c] for c in ("start", "cap", "iface", "flags", "offset"))
    orig = cols["orig"].astype(np.uint32)
    units = cols["ts"].astype(np.uint64)
    parts = []
    order = []
    for linktype in sorted({interfaces[i].linktype for i in np.unique(ifx).tolist()}):
        group_ifaces = [i.index for i in interfaces if i.linktype == linktype]
        sel = np.nonzero(np.isin(ifx, group_ifaces))[0]
        if linktype not in SUPPORTED_LINKTYPES:
            raise InputError(
                spath,
                f"unsupported link type {linktype}",
                record=record_no + int(sel[0]),
                offset=int(offs[sel[0]]),
            )
        decoded = decode(buf, start[sel], cap[sel], linktype)
        decoded["wire_len"] = arrow_column(orig[sel], pa.uint32())
        ts_ns = np.zeros(sel.shape[0], dtype=np.int64)
        for i in np.unique(ifx[sel]):
            m = ifx[sel] == i
            ts_ns[m] = interfaces[i].ts_to_ns(units[sel][m])
        named = np.array([i.name is not None for i in interfaces])
        iface = labels(ifx[sel], [i.name or "" for i in interfaces], named[ifx[sel]])
        f = flags[sel]
        # epb_flags bits 0-1: 1 inbound, 2 outbound; else (or no flags) unknown
        code = np.where(f >= 0, f & 3, 0)
        direction = np.select([code == 1, code == 2], [IN, OUT], UNKNOWN)
        if "pkttype" in decoded:
            by_type = direction_from_pkttype(decoded["pkttype"])
            direction = np.where(direction == UNKNOWN, by_type, direction)
        table = assemble(
            decoded,
            ts_ns=ts_ns,
            source=spath,
            records=record_no + sel,
            offsets=offs[sel],
            iface=iface,
            direction=direction,
        )
        parts.append(table)
        order.append(sel)
    table = concat(parts)
    if len(parts) > 1:
        table = table.take(
            arrow_column(np.argsort(np.concatenate(order), kind="stable"), pa.int64())
        )
    return table


def read(path: str | os.PathLike) -> tuple[pa.Table, SourceReport]:
    """Read a pcapng (or pcapng.gz) into the event table."""
    report = SourceReport(path=str(path), format="pcapng")
    table = concat(list(iter_chunks(path, report)))
    record_span(report, table)
    return table, report
