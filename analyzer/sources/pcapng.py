"""pcapng files with any number of interfaces and sections (dumpcap, tshark, mergecap).

nicpath reads the blocks itself because dpkt's reader keeps only the first Interface Description
Block (formats.md): here every Enhanced Packet Block keeps its interface (name from ``if_name``),
its own timestamp resolution (``if_tsresol``, offset ``if_tsoffset``) and its direction
(``epb_flags`` bits 0-1: 1 inbound, 2 outbound). Interface ids restart at each Section Header
Block. Simple Packet Blocks belong to the first interface of their section; they carry no time,
and the event table's ``ts`` cannot be null, so their packets are counted as skipped, with a
warning. The packets of an interface whose link type nicpath does not decode are counted as
skipped too, and the other interfaces read (tshark reads every interface of a file).

Timestamps are converted with integer arithmetic (``if_tsresol`` 10^-n or 2^-n, ``if_tsoffset``
seconds): a time a nanosecond ``ts`` cannot hold (before 1677-09-21 or after 2262-04-11) is a
packet skipped with its reason, never a wrapped or rounded value.
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
    cut_warning,
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

    def ts_to_ns(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nanoseconds since the epoch of timestamps in this interface's units (uint64), and
        which of them a nanosecond time holds; exact, in integer arithmetic (float64 lost up to
        116 ns of a 2^-n resolution)."""
        ns, ok = units_to_ns(units.astype(np.uint64, copy=False), self.tsresol)
        return add_offset(ns, ok, self.tsoffset * NS)


NS = 1_000_000_000
U64_MAX = (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def units_to_ns(units: np.ndarray, tsresol: int) -> tuple[np.ndarray, np.ndarray]:
    """``units`` (uint64) of 10^-n or 2^-n seconds (the ``if_tsresol`` byte) as nanoseconds
    rounded down, and which rows fit in 64 bits."""
    if not tsresol & 0x80:
        exp = tsresol
        if exp <= 9:
            scale = 10 ** (9 - exp)
            ok = units <= np.uint64(U64_MAX // scale)
            return units * np.uint64(scale), ok
        divisor = 10 ** (exp - 9)
        if divisor > U64_MAX:
            return np.zeros_like(units), np.ones(units.shape, dtype=bool)
        return units // np.uint64(divisor), np.ones(units.shape, dtype=bool)
    bits = tsresol & 0x7F
    if bits >= 64:
        seconds, rest = np.zeros_like(units), units
    else:
        seconds = units >> np.uint64(bits)
        rest = units & np.uint64((1 << bits) - 1)
    ok = seconds <= np.uint64((U64_MAX - NS + 1) // NS)
    return seconds * np.uint64(NS) + _fraction_ns(rest, bits), ok


def _fraction_ns(rest: np.ndarray, bits: int) -> np.ndarray:
    """floor(rest * 10^9 / 2^bits) for rest < 2^bits, without overflowing 64 bits: the product
    is split into its high and low 32-bit halves when it would not fit."""
    if bits <= 34:  # rest * 10^9 < 2^34 * 10^9 < 2^64
        return (rest * np.uint64(NS)) >> np.uint64(bits)
    high = (rest >> np.uint64(32)) * np.uint64(NS)
    low = (rest & np.uint64(0xFFFFFFFF)) * np.uint64(NS)
    whole = high + (low >> np.uint64(32))
    shift = bits - 32
    return whole >> np.uint64(shift) if shift < 64 else np.zeros_like(rest)


def add_offset(ns: np.ndarray, ok: np.ndarray, offset_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """``ns`` (uint64) plus an offset as int64 nanoseconds, and which rows stay in range."""
    high = I64_MAX - offset_ns
    low = I64_MIN - offset_ns
    if high < 0:
        ok = np.zeros(ns.shape, dtype=bool)
    else:
        ok = ok & (ns <= np.uint64(min(high, U64_MAX)))
        if low > 0:
            ok &= ns >= np.uint64(min(low, U64_MAX))
    wrapped = (offset_ns + (1 << 63)) % (1 << 64) - (1 << 63)  # exact where the sum is in range
    out = ns.view(np.int64) + np.int64(wrapped)
    return np.where(ok, out, 0), ok


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
#: timestamp units (as int64 bits), epb_flags (-1: none), file offset, whether it has a time
#: (a Simple Packet Block has none).
PACKET_FIELDS = ("start", "cap", "orig", "iface", "ts", "flags", "offset", "timed")


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
        timed = np.ones(len(pos), dtype=np.int64)
        out.add_many(pos + 28, cap, orig, section[if_id], ts, flags, base + pos, timed)

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
        units = (ts_hi << 32) | ts_lo
        units -= (units >> 63) << 64  # the same 64 bits as int64
        timed = int(btype != SPB)
        out.add(dstart, cap, orig, self.section[if_id], units, flags, base + pos, timed)


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
                table = _chunk(data, walker.interfaces, record_no, packets, report)
                record_no += packets.count
                report.records += packets.count
                report.used += table.num_rows
                yield table
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
        report.warnings.extend(cut_warning(spath, f))
    unsupported = [i for i in walker.interfaces if i.linktype not in SUPPORTED_LINKTYPES]
    if unsupported:
        named = ", ".join(f"{_iface_text(i)} ({i.linktype})" for i in unsupported)
        report.warnings.append(
            f"{spath}: interfaces of a link type nicpath does not decode: {named}; "
            "their packets are counted as skipped"
        )
    untimed = report.skipped.get(NO_TIME, 0)
    if untimed:
        report.warnings.append(
            f"{spath}: {untimed} Simple Packet Blocks carry no time: counted as skipped"
        )
    late = report.skipped.get(OUT_OF_RANGE, 0)
    if late:
        report.warnings.append(
            f"{spath}: {late} packets have a time outside 1677-2262 (if_tsresol/if_tsoffset): "
            "counted as skipped"
        )


#: Skip reasons of packets the event table cannot hold.
NO_TIME = "Simple Packet Block: no timestamp"
OUT_OF_RANGE = "time outside 1677-2262"


def _iface_text(iface: Interface) -> str:
    return f"interface {iface.index} ({iface.name})" if iface.name else f"interface {iface.index}"


def _chunk(
    data: bytes, interfaces: list[Interface], record_no: int, packets: _Packets, report
) -> pa.Table:
    """The event rows of a chunk's packets: decoded per link type, each interface's times
    converted with its own resolution and offset; the packets that cannot be rows (no time, a
    time out of range, a link type not decoded) are counted as skipped by reason."""
    spath = report.path
    buf = np.frombuffer(data, dtype=np.uint8)
    cols = packets.columns()
    start, cap, ifx, flags, offs = (cols[c] for c in ("start", "cap", "iface", "flags", "offset"))
    orig = cols["orig"].astype(np.uint32)
    units = cols["ts"].view(np.uint64)
    ts_all = np.zeros(len(ifx), dtype=np.int64)
    keep = cols["timed"].astype(bool)
    if not keep.all():
        report.skip(NO_TIME, int((~keep).sum()))
    for i in np.unique(ifx).tolist():
        m = ifx == i
        iface = interfaces[i]
        if iface.linktype not in SUPPORTED_LINKTYPES:
            report.skip(
                f"link type {iface.linktype} not decoded ({_iface_text(iface)})",
                int((m & keep).sum()),
            )
            keep &= ~m
            continue
        ts_all[m], fits = iface.ts_to_ns(units[m])
        late = m & keep
        late[m] &= ~fits
        if late.any():
            report.skip(OUT_OF_RANGE, int(late.sum()))
            keep &= ~late
    names = list(dict.fromkeys(i.name for i in interfaces if i.name is not None)) or [""]
    code = np.array([names.index(i.name) if i.name is not None else 0 for i in interfaces])
    named = np.array([i.name is not None for i in interfaces])
    parts = []
    order = []
    for linktype in sorted({interfaces[i].linktype for i in np.unique(ifx[keep]).tolist()}):
        group_ifaces = [i.index for i in interfaces if i.linktype == linktype]
        sel = np.flatnonzero(keep & np.isin(ifx, group_ifaces))
        decoded = decode(buf, start[sel], cap[sel], linktype, orig[sel])
        decoded["wire_len"] = arrow_column(orig[sel], pa.uint32())
        iface = labels(code[ifx[sel]], names, named[ifx[sel]])
        f = flags[sel]
        # epb_flags bits 0-1: 1 inbound, 2 outbound; else (or no flags) unknown
        bits = np.where(f >= 0, f & 3, 0)
        direction = np.select([bits == 1, bits == 2], [IN, OUT], UNKNOWN)
        if "pkttype" in decoded:
            by_type = direction_from_pkttype(decoded["pkttype"])
            direction = np.where(direction == UNKNOWN, by_type, direction)
        table = assemble(
            decoded,
            ts_ns=ts_all[sel],
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
