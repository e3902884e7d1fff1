"""Where an engineer finds each evidence packet, and every evidence packet in one pcapng.

A finding's ``evidence`` lists every observation of its first packets: one packet may be in a
per-card capture, in ``all.pcapng``, in ``any.pcap`` and in the kernel log at once, and the
findings of one flow share packets. The engineer opens one file, in Wireshark, first: the
capture of the card (its frames are the card's alone, with their Ethernet headers), else a
pcapng of several cards, else the ``tcpdump -i any`` capture, else the LOG line. So each
evidence packet is named once per flow, in that file (``SOURCE_KINDS``), with a display filter
for the flow and one ``tshark`` command per file for its frames.

``write_evidence`` copies those packets out of the files they were captured in (found again by
record number, which is the frame number Wireshark shows) into one pcapng: original bytes,
lengths and timestamps (the source's resolution and offset kept), an Interface Description
Block per card and link type, each packet with an ``opt_comment`` naming the findings it
proves, so ``tshark -r evidence.pcapng -Y frame.comment`` lists them.
"""

from __future__ import annotations

import os
import shlex
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pandas as pd

from .. import __version__
from ..analysis.result import Analysis, translations
from ..detectors import Finding
from ..detectors.base import flow_text
from ..errors import InputError
from ..events.parquet import replaced
from ..render import count
from ..sources.capture import open_maybe_gzip
from ..sources.frames import LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2
from ..sources.pcap import MAGICS, link_type
from .timeline import timeline_rows

#: The files an evidence packet is named in, best first: the capture of one card, a pcapng of
#: several, a ``tcpdump -i any`` capture (cooked headers, every card mixed), a LOG line.
SOURCE_KINDS = ("card", "pcapng", "any", "log")
_ANY_LINKTYPES = (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2)


def source_kinds(counts: list[dict[str, Any]]) -> dict[str, str]:
    """Input path -> its ``SOURCE_KINDS`` entry, from the per-input counts (format and link
    type): a pcapng of one non-cooked interface is a card's capture too."""
    out: dict[str, str] = {}
    for r in counts:
        fmt, detail = r.get("format"), r.get("detail") or {}
        if fmt == "pcap":
            out[r["path"]] = "any" if detail.get("linktype") in _ANY_LINKTYPES else "card"
        elif fmt == "pcapng":
            ifaces = detail.get("interfaces") or []
            one_card = len(ifaces) == 1 and ifaces[0].get("linktype") not in _ANY_LINKTYPES
            out[r["path"]] = "card" if one_card else "pcapng"
        elif fmt == "kernlog":
            out[r["path"]] = "log"
    return out


@dataclass(frozen=True)
class Where:
    """One observation of an evidence packet: the file and its packet (or line) number."""

    source: str
    record: int
    point: str | None
    kind: str

    @property
    def captured(self) -> bool:
        return self.kind != "log"

    def text(self) -> str:
        """``eth1.pcap#6`` for a frame, ``kern.dmesg:86`` for a log line."""
        return f"{self.source}{'#' if self.captured else ':'}{self.record}"


@dataclass
class EvidencePacket:
    """One evidence packet of a flow's findings, in the file to open first."""

    #: a packet of the flow itself (else another flow's, a lead-in: no timeline row)
    own: bool
    ts: int
    direction: str
    card: str | None
    shown: Where
    elsewhere: list[Where]
    #: the labels (``finding_label``) of the flow's findings it is evidence of
    proves: list[str]
    #: its timeline row (addresses, flags, length, egress change), None when not at hand
    row: dict[str, Any] | None = None
    #: what another flow's packet is (``nat_pinned``: the newer flow's)
    other: str | None = None


@dataclass
class FlowEvidence:
    """The evidence of one flow's findings, each packet once."""

    flow_id: int
    flow: dict[str, Any]
    nat: dict[str, Any] | None
    findings: list[Finding]
    packets: list[EvidencePacket] = field(default_factory=list)

    def frames(self) -> dict[str, list[int]]:
        """Capture file -> the frame numbers of the evidence packets shown in it, in the
        order the files first appear."""
        out: dict[str, list[int]] = {}
        for p in self.packets:
            if p.shown.captured:
                out.setdefault(p.shown.source, []).append(p.shown.record)
        return {source: sorted(set(records)) for source, records in out.items()}

    def log_lines(self) -> dict[str, list[int]]:
        """Log file -> the line numbers of the evidence packets seen only there."""
        out: dict[str, list[int]] = {}
        for p in self.packets:
            if not p.shown.captured:
                out.setdefault(p.shown.source, []).append(p.shown.record)
        return {source: sorted(set(records)) for source, records in out.items()}

    def display_filter(self) -> str:
        """A Wireshark display filter for the flow (both tuples of a translated flow)."""
        return flow_filter(self.flow, self.nat)

    def tshark_commands(self) -> list[str]:
        """``tshark -r FILE -Y 'frame.number in {...}'`` for each capture file shown."""
        return [
            f"tshark -r {shlex.quote(source)} -Y 'frame.number in {{{','.join(map(str, nums))}}}'"
            for source, nums in self.frames().items()
        ]


def finding_label(f: Finding) -> str:
    """``egress_change (eth2 -> eth1)``: the kind and cards, as the report heads a finding."""
    return f"{f.kind} ({' -> '.join(f.ifaces)})" if f.ifaces else f.kind


def _tuple_filter(t: dict[str, Any]) -> str:
    ip = "ipv6" if ":" in str(t["src"]) else "ip"
    addresses = f"{ip}.addr == {t['src']} && {ip}.addr == {t['dst']}"
    proto = t["proto"]
    if proto in ("tcp", "udp", "sctp"):
        return f"{addresses} && {proto}.port == {t['sport']} && {proto}.port == {t['dport']}"
    if proto == "icmp":  # an echo flow: its ports are the echo id
        ident = "icmpv6.echo.identifier" if ip == "ipv6" else "icmp.ident"
        return f"{addresses} && {ident} == {t['sport']}"
    return addresses


def flow_filter(flow: dict[str, Any], nat: dict[str, Any] | None = None) -> str:
    """The Wireshark display filter of a flow (Wireshark's conversation filter form); a
    translated flow matches under its tuple at the hooks and its tuple on the wire."""
    first = _tuple_filter(flow)
    if not nat or nat.get("nat_src") is None:
        return first
    wire = {
        "proto": flow["proto"],
        "src": nat["nat_src"],
        "sport": nat["nat_sport"],
        "dst": nat["nat_dst"],
        "dport": nat["nat_dport"],
    }
    second = _tuple_filter(wire)
    return first if second == first else f"({first}) || ({second})"


def _chosen(seen: list[Where], card: str | None) -> Where:
    """The observation to name: the best kind of file, on the packet's card, then by name."""
    return min(
        seen,
        key=lambda w: (SOURCE_KINDS.index(w.kind), w.point != card, w.source, w.record),
    )


def _rows(analysis: Analysis, flow_ids: list[int]) -> dict[int, dict[int, dict[str, Any]]]:
    """The timeline row of each packet of the flows with findings. A finding's evidence may
    start with another flow's packet (``nat_pinned``: the newer flow's first one), whose row
    an analysis by parts does not keep: it is shown from its observations alone, always, so
    the report is the same whole or by parts."""
    if analysis.context.packets.empty:
        return {}
    return {
        flow_id: {
            int(r["packet_id"]): r for r in timeline_rows(analysis, flow_id).to_dict("records")
        }
        for flow_id in flow_ids
    }


def flow_evidence(analysis: Analysis) -> list[FlowEvidence]:
    """The evidence of each flow with findings, in the order the flows' first findings come:
    every packet once, in the file an engineer opens first, with the findings it proves."""
    kinds = source_kinds(analysis.events.counts())
    by_flow: dict[int, list[Finding]] = {}
    for f in analysis.findings:
        by_flow.setdefault(f.flow_id, []).append(f)
    rows = _rows(analysis, list(by_flow))
    fl = analysis.tables.flows
    nat = translations(fl[fl["flow_id"].isin(list(by_flow))]) if len(fl) else {}
    out = []
    for flow_id, findings in by_flow.items():
        seen: dict[int, dict[tuple[str, int], dict[str, Any]]] = {}
        proves: dict[int, list[str]] = {}
        whose: dict[int, str] = {}
        for f in findings:
            label = finding_label(f)
            newer = f.extra.get("newer_flow")
            for e in f.evidence:
                pid = int(e["packet"])
                if newer:
                    whose.setdefault(pid, f"a packet of the newer flow {flow_text(newer)}")
                seen.setdefault(pid, {})[(e["source"], int(e["record"]))] = e
                said = proves.setdefault(pid, [])
                if label not in said:
                    said.append(label)
        packets = []
        for pid, observations in seen.items():
            row = rows.get(flow_id, {}).get(pid)
            where = [
                Where(source, record, e.get("point"), kinds.get(source, "log"))
                for (source, record), e in observations.items()
            ]
            first = next(iter(observations.values()))
            if row is not None:
                card = row["card"] if isinstance(row["card"], str) else None
            else:  # another flow's packet: the card of its capture, if any
                card = next((w.point for w in sorted(where, key=_rank) if w.captured), None)
            shown = _chosen(where, card)
            packets.append(
                EvidencePacket(
                    own=row is not None,
                    ts=int(row["ts"]) if row else _ns(shown_ts(observations, shown)),
                    direction=row["direction"] if row else first["direction"],
                    card=card,
                    shown=shown,
                    elsewhere=sorted((w for w in where if w != shown), key=_rank),
                    proves=proves[pid],
                    row=row,
                    other=None if row else whose.get(pid, "a packet of another flow"),
                )
            )
        packets.sort(key=lambda p: (p.ts, p.shown.text()))
        out.append(FlowEvidence(flow_id, findings[0].flow, nat.get(flow_id), findings, packets))
    return out


def _rank(w: Where) -> tuple:
    return (SOURCE_KINDS.index(w.kind), w.source, w.record)


def shown_ts(observations: dict[tuple[str, int], dict[str, Any]], shown: Where) -> str:
    """The time of the observation shown (``ts_text``)."""
    return observations[(shown.source, shown.record)]["ts"]


def _ns(text: str) -> int:
    """Epoch ns of a ``ts_text`` time."""
    stamp = pd.Timestamp(text)
    return int(stamp.value)


# --- reading the packets back -----------------------------------------------------------------

SHB, IDB, SPB, EPB, OPB = 0x0A0D0D0A, 1, 3, 6, 2
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_COMMENT = 0, 1
IF_NAME, IF_TSRESOL, IF_FCSLEN, IF_TSOFFSET = 2, 9, 13, 14
EPB_FLAGS = 2
SHB_USERAPPL = 4


@dataclass
class RawPacket:
    """One packet as its file holds it: bytes, lengths, time in the file's own units."""

    data: bytes
    orig_len: int
    linktype: int
    snaplen: int
    tsresol: int  # the if_tsresol byte: 10^-n, or 2^-n with the top bit set
    tsoffset: int  # seconds (pcapng if_tsoffset)
    units: int  # the timestamp in 1/tsresol units since the epoch (+ tsoffset)
    fcslen: int | None = None
    flags: int | None = None  # epb_flags as captured

    def ns(self) -> int:
        """The time in epoch nanoseconds (for the order of the packets only)."""
        n = self.tsresol & 0x7F
        if self.tsresol & 0x80:
            return (self.units * 10**9 >> n) + self.tsoffset * 10**9
        return self.units * 10**9 // 10**n + self.tsoffset * 10**9


def _skip(f: BinaryIO, n: int) -> None:
    if n <= 0:
        return
    if f.seekable():
        f.seek(n, os.SEEK_CUR)
        return
    while n:
        got = f.read(min(n, 1 << 20))
        if not got:
            return
        n -= len(got)


def _pcap_records(path: str, wanted: set[int]) -> dict[int, RawPacket]:
    out: dict[int, RawPacket] = {}
    with open_maybe_gzip(path) as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] not in MAGICS:
            raise InputError(path, "not a pcap file any more (reading evidence back)", offset=0)
        endian, ns_per_unit = MAGICS[head[:4]]
        snaplen, linkfield = struct.unpack(endian + "II", head[16:24])
        linktype, fcs = link_type(linkfield)
        last, record = max(wanted), 0
        while record < last:
            header = f.read(16)
            if len(header) < 16:
                break
            record += 1
            sec, frac, incl, orig = struct.unpack(endian + "IIII", header)
            if record not in wanted:
                _skip(f, incl)
                continue
            resol = 9 if ns_per_unit == 1 else 6
            out[record] = RawPacket(
                f.read(incl), orig, linktype, snaplen, resol, 0, sec * 10**resol + frac, fcs
            )
    return out


def _options(body: bytes, pos: int, end: int, endian: str) -> Iterator[tuple[int, bytes]]:
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == OPT_END or pos + 4 + length > end:
            return
        yield code, body[pos + 4 : pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    tsresol: int = 6
    tsoffset: int = 0
    fcslen: int | None = None


def _pcapng_interface(body: bytes, endian: str) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", body, 0)
    iface = _Interface(linktype, snaplen)
    for code, value in _options(body, 8, len(body) - 4, endian):
        if code == IF_TSRESOL and value:
            iface.tsresol = value[0]
        elif code == IF_TSOFFSET and len(value) == 8:
            iface.tsoffset = struct.unpack(endian + "q", value)[0]
        elif code == IF_FCSLEN and value:
            iface.fcslen = value[0]
    return iface


def _pcapng_records(path: str, wanted: set[int]) -> dict[int, RawPacket]:
    out: dict[int, RawPacket] = {}
    with open_maybe_gzip(path) as f:
        endian, section, last, record = "<", [], max(wanted), 0
        while record < last:
            head = f.read(8)
            if len(head) < 8:
                break
            if head[:4] == b"\x0a\x0d\x0d\x0a":
                magic = f.read(4)
                endian = "<" if magic == struct.pack("<I", BYTE_ORDER_MAGIC) else ">"
                (length,) = struct.unpack(endian + "I", head[4:8])
                _skip(f, length - 12)
                section = []
                continue
            btype, length = struct.unpack(endian + "II", head)
            if length < 12:
                raise InputError(path, f"corrupt block: length {length} (reading evidence back)")
            if btype in (EPB, OPB, SPB):
                record += 1
                if record not in wanted or btype == SPB:
                    _skip(f, length - 8)
                    continue
            elif btype != IDB:
                _skip(f, length - 8)
                continue
            body = f.read(length - 8)
            if btype == IDB:
                section.append(_pcapng_interface(body, endian))
                continue
            if btype == EPB:
                if_id, ts_hi, ts_lo, cap, orig = struct.unpack_from(endian + "IIIII", body, 0)
            else:
                if_id, _drops, ts_hi, ts_lo, cap, orig = struct.unpack_from(
                    endian + "HHIIII", body, 0
                )
            iface = section[if_id]
            flags = None
            for code, value in _options(body, 20 + ((cap + 3) & ~3), len(body) - 4, endian):
                if code == EPB_FLAGS and len(value) == 4:
                    flags = struct.unpack(endian + "I", value)[0]
            out[record] = RawPacket(
                body[20 : 20 + cap],
                orig,
                iface.linktype,
                iface.snaplen,
                iface.tsresol,
                iface.tsoffset,
                (ts_hi << 32) | ts_lo,
                iface.fcslen,
                flags,
            )
    return out


def read_records(path: str, records: set[int]) -> dict[int, RawPacket]:
    """The packets ``records`` (1-based, as Wireshark numbers frames) of a capture file, read
    back as captured; an InputError when one is not there any more."""
    with open_maybe_gzip(path) as f:
        magic = f.read(4)
    reader = _pcapng_records if magic == b"\x0a\x0d\x0d\x0a" else _pcap_records
    found = reader(path, records)
    missing = sorted(records - set(found))
    if missing:
        raise InputError(
            path, f"packet {missing[0]} is not in the file any more (changed since it was read?)"
        )
    return found


# --- writing the pcapng -----------------------------------------------------------------------


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "backslashreplace")


def _options_bytes(options: list[bytes]) -> bytes:
    return b"".join(options) + (_option(OPT_END, b"") if options else b"")


@dataclass
class EvidenceFile:
    """What ``write_evidence`` wrote: packets, interfaces (name, link type), and the evidence
    packets it could not hold (seen only in a log)."""

    path: str
    packets: int
    interfaces: list[tuple[str, int]]
    log_only: int

    def text(self) -> str:
        """One line for stderr: what the file holds, and what it could not."""
        names = ", ".join(dict.fromkeys(name for name, _ in self.interfaces))
        line = (
            f"wrote {self.path}: {count(self.packets, 'evidence packet')} on "
            f"{count(len(self.interfaces), 'interface')}" + (f" ({names})" if names else "")
        )
        if self.log_only:
            line += f"; {count(self.log_only, 'packet')} seen only in a kernel log left out"
        return line


def comment(entries: list[tuple[FlowEvidence, EvidencePacket]]) -> str:
    """A packet's ``opt_comment``: the findings it proves, by flow, and where it came from."""
    said = "; ".join(
        f"flow {fe.flow_id} {flow_text(fe.flow)}: {', '.join(p.proves)}" for fe, p in entries
    )
    shown = entries[0][1].shown
    return f"nicpath {said} [{shown.source} frame {shown.record}]"


def write_evidence(analysis: Analysis, path: str | os.PathLike) -> EvidenceFile:
    """Every captured evidence packet of the analysis into one pcapng at ``path``, written
    under a temporary name and renamed (whole or not at all)."""
    flows = flow_evidence(analysis)
    wanted: dict[str, dict[int, list[tuple[FlowEvidence, EvidencePacket]]]] = {}
    log_only = 0
    for fe in flows:
        for p in fe.packets:
            if p.shown.captured:
                wanted.setdefault(p.shown.source, {}).setdefault(p.shown.record, []).append((fe, p))
            else:
                log_only += 1
    packets = []
    for source, records in wanted.items():
        raw = read_records(source, set(records))
        for record, entries in records.items():
            point = entries[0][1].shown.point or entries[0][1].card or "?"
            packets.append((raw[record].ns(), source, record, point, raw[record], entries))
    packets.sort(key=lambda p: p[:3])
    interfaces: dict[tuple, int] = {}
    snaplens: dict[tuple, int] = {}
    for *_key, point, raw, _entries in packets:
        key = (point, raw.linktype, raw.tsresol, raw.tsoffset, raw.fcslen)
        interfaces.setdefault(key, len(interfaces))
        snap = snaplens.get(key, raw.snaplen)
        snaplens[key] = 0 if 0 in (snap, raw.snaplen) else max(snap, raw.snaplen)
    n_findings = len(analysis.findings)
    shb_options = [
        _option(SHB_USERAPPL, _text(f"nicpath {__version__}")),
        _option(
            OPT_COMMENT,
            _text(
                f"evidence of nicpath analyze: {count(n_findings, 'finding')} in "
                f"{count(len(flows), 'flow')}, {count(len(packets), 'packet')}"
            ),
        ),
    ]
    shb = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options_bytes(shb_options)
    with replaced(os.fspath(path)) as tmp, open(tmp, "wb") as out:
        out.write(_block(SHB, shb))
        for key, _index in interfaces.items():
            name, linktype, tsresol, tsoffset, fcslen = key
            options = [_option(IF_NAME, _text(name)), _option(IF_TSRESOL, bytes([tsresol]))]
            if tsoffset:
                options.append(_option(IF_TSOFFSET, struct.pack("<q", tsoffset)))
            if fcslen is not None:
                options.append(_option(IF_FCSLEN, bytes([fcslen])))
            head = struct.pack("<HHI", linktype, 0, snaplens[key])
            out.write(_block(IDB, head + _options_bytes(options)))
        for *_key, point, raw, entries in packets:
            if_id = interfaces[(point, raw.linktype, raw.tsresol, raw.tsoffset, raw.fcslen)]
            options = [_option(OPT_COMMENT, _text(comment(entries)))]
            if raw.flags is not None:
                options.append(_option(EPB_FLAGS, struct.pack("<I", raw.flags)))
            head = struct.pack(
                "<IIIII",
                if_id,
                raw.units >> 32 & 0xFFFFFFFF,
                raw.units & 0xFFFFFFFF,
                len(raw.data),
                raw.orig_len,
            )
            data = raw.data + b"\0" * (-len(raw.data) % 4)
            out.write(_block(EPB, head + data + _options_bytes(options)))
    return EvidenceFile(
        os.fspath(path),
        len(packets),
        [(key[0], key[1]) for key in interfaces],
        log_only,
    )


__all__ = [
    "EvidenceFile",
    "FlowEvidence",
    "count",
    "finding_label",
    "flow_evidence",
    "flow_filter",
    "read_records",
    "source_kinds",
    "write_evidence",
]
