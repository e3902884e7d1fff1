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
import pyarrow.compute as pc

from ..errors import InputError
from .base import SourceReport
from .capture import (
    MAX_RECORD,
    assemble,
    concat,
    direction_from_pkttype,
    open_maybe_gzip,
    read_block,
    record_span,
)
from .frames import LINKTYPE_NAMES, SUPPORTED_LINKTYPES, decode

SHB, IDB, SPB, EPB, OPB = 0x0A0D0D0A, 0x00000001, 0x00000003, 0x00000006, 0x00000002
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_IF_NAME, OPT_IF_TSRESOL, OPT_IF_TSOFFSET, OPT_EPB_FLAGS = 0, 2, 9, 14, 2


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


def iter_chunks(path: str | os.PathLike, report: SourceReport) -> Iterator[pa.Table]:
    """Yield the capture as event-table chunks, one per read block."""
    spath = str(path)
    interfaces: list[Interface] = []
    section: list[int] = []  # this section's interface ids -> global index
    report.detail["interfaces"] = []
    with open_maybe_gzip(path) as f:
        head = read_block(f, spath, 12)
        if len(head) < 12 or not looks_like_pcapng(head):
            raise InputError(spath, "not a pcapng file (no Section Header Block)", offset=0)
        carry = head
        base = 0
        endian = "<"
        record_no = 1
        while True:
            block = read_block(f, spath)
            data = carry + block if carry else block
            n = len(data)
            pos = 0
            # per packet: data start, caplen, origlen, global iface index, ts units, flags
            p_start: list[int] = []
            p_cap: list[int] = []
            p_orig: list[int] = []
            p_if: list[int] = []
            p_ts: list[int] = []
            p_flags: list[int] = []
            p_off: list[int] = []
            while pos + 12 <= n:
                btype_raw = data[pos : pos + 4]
                if btype_raw == b"\x0a\x0d\x0d\x0a":
                    magic = data[pos + 8 : pos + 12]
                    if magic == b"\x4d\x3c\x2b\x1a":
                        endian = "<"
                    elif magic == b"\x1a\x2b\x3c\x4d":
                        endian = ">"
                    else:
                        raise InputError(
                            spath,
                            "corrupt Section Header Block byte-order magic",
                            offset=base + pos,
                        )
                btype, blen = struct.unpack_from(endian + "II", data, pos)
                if blen < 12 or blen % 4 or blen > MAX_RECORD:
                    raise InputError(
                        spath,
                        f"corrupt block: impossible length {blen}",
                        record=record_no + len(p_start),
                        offset=base + pos,
                    )
                if pos + blen > n:
                    break
                end = pos + blen
                if btype == SHB:
                    section = []
                    report.detail.setdefault("sections", 0)
                    report.detail["sections"] += 1
                elif btype == IDB:
                    iface = _interface(data, pos, end, endian, len(interfaces))
                    interfaces.append(iface)
                    section.append(iface.index)
                    report.detail["interfaces"].append(
                        {
                            "id": len(section) - 1,
                            "name": iface.name,
                            "linktype": iface.linktype,
                            "linktype_name": LINKTYPE_NAMES.get(
                                iface.linktype, str(iface.linktype)
                            ),
                        }
                    )
                elif btype in (EPB, SPB, OPB):
                    if btype == EPB:
                        if_id, ts_hi, ts_lo, cap, orig = struct.unpack_from(
                            endian + "IIIII", data, pos + 8
                        )
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
                        if section and if_id < len(section):
                            cap = min(cap, interfaces[section[if_id]].snaplen or cap)
                    record = record_no + len(p_start)
                    if if_id >= len(section):
                        raise InputError(
                            spath,
                            f"packet names interface {if_id}, which this section does not describe",
                            record=record,
                            offset=base + pos,
                        )
                    if dstart + cap > end - 4:
                        raise InputError(
                            spath,
                            f"corrupt packet block: captured length {cap} "
                            f"exceeds block length {blen}",
                            record=record,
                            offset=base + pos,
                        )
                    flags = -1
                    if btype != SPB:
                        opt_pos = dstart + ((cap + 3) & ~3)
                        for code, value in _options(data, opt_pos, end - 4, endian):
                            if code == OPT_EPB_FLAGS and len(value) == 4:
                                flags = struct.unpack(endian + "I", value)[0]
                    p_start.append(dstart)
                    p_cap.append(cap)
                    p_orig.append(orig)
                    p_if.append(section[if_id])
                    p_ts.append((ts_hi << 32) | ts_lo)
                    p_flags.append(flags)
                    p_off.append(base + pos)
                else:
                    report.detail.setdefault("other_blocks", 0)
                    report.detail["other_blocks"] += 1
                pos = end
            if p_start:
                yield _chunk(
                    data,
                    interfaces,
                    spath,
                    record_no,
                    p_start,
                    p_cap,
                    p_orig,
                    p_if,
                    p_ts,
                    p_flags,
                    p_off,
                )
                record_no += len(p_start)
                report.records += len(p_start)
                report.used += len(p_start)
            carry = data[pos:]
            base += pos
            if not block:
                break
        if carry:
            report.warnings.append(
                f"{spath}: truncated: last block cut short at byte offset {base} "
                f"({len(carry)} bytes ignored); read {record_no - 1} complete packets"
            )
            report.skip("truncated block at end of file")
            report.records += 1
    unsupported = {i.linktype for i in interfaces} - SUPPORTED_LINKTYPES
    if unsupported:
        report.warnings.append(
            f"{spath}: interfaces with unsupported link types {sorted(unsupported)}"
        )


def _chunk(data, interfaces, spath, record_no, p_start, p_cap, p_orig, p_if, p_ts, p_flags, p_off):
    buf = np.frombuffer(data, dtype=np.uint8)
    start = np.asarray(p_start, dtype=np.int64)
    cap = np.asarray(p_cap, dtype=np.int64)
    orig = np.asarray(p_orig, dtype=np.uint32)
    ifx = np.asarray(p_if, dtype=np.int64)
    units = np.asarray(p_ts, dtype=np.uint64)
    flags = np.asarray(p_flags, dtype=np.int64)
    offs = np.asarray(p_off, dtype=np.int64)
    parts = []
    order = []
    for linktype in sorted({interfaces[i].linktype for i in set(p_if)}):
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
        decoded["wire_len"] = pa.array(orig[sel])
        ts_ns = np.zeros(sel.shape[0], dtype=np.int64)
        for i in np.unique(ifx[sel]):
            m = ifx[sel] == i
            ts_ns[m] = interfaces[i].ts_to_ns(units[sel][m])
        names = np.array([interfaces[i].name for i in range(len(interfaces))], dtype=object)
        iface = pa.array(names[ifx[sel]], type=pa.string())
        f = flags[sel]
        dirs = np.where(
            (f >= 0) & ((f & 3) == 1), "in", np.where((f >= 0) & ((f & 3) == 2), "out", "unknown")
        )
        direction = pa.array(dirs.astype(object), type=pa.string())
        if "pkttype" in decoded:
            by_type = direction_from_pkttype(decoded["pkttype"])
            direction = pc.if_else(pc.equal(direction, "unknown"), by_type, direction)
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
        table = table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
    return table


def read(path: str | os.PathLike) -> tuple[pa.Table, SourceReport]:
    """Read a pcapng (or pcapng.gz) into the event table."""
    report = SourceReport(path=str(path), format="pcapng")
    table = concat(list(iter_chunks(path, report)))
    record_span(report, table)
    return table, report
