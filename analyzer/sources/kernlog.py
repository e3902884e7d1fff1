"""Kernel logs holding netfilter LOG lines (iptables/ip6tables ``-j LOG``, nft ``log``).

The line format is the kernel's (``net/netfilter/nf_log_syslog.c``): ``<prefix>IN= OUT=`` then
``PHYSIN=/PHYSOUT=``, ``MAC=`` (input side only), the IP header (IPv4 ``SRC DST LEN TOS PREC TTL
ID`` + bare ``CE DF MF`` + ``FRAG:n``; IPv6 ``SRC DST LEN TC HOPLIMIT FLOWLBL``), ``PROTO=`` and the
transport fields, an ICMP error's quoted packet in brackets, then ``UID= GID= MARK=``. Keys repeat
(a UDP line has two ``LEN=``, an ICMP echo two ``ID=``), so fields are read in order with a small
state machine: what comes after ``PROTO=`` belongs to the transport header.

The prefix is the rule's text and may itself hold ``IN=x OUT=y`` (nft allows 128 characters):
the fields are those after the last ``IN=<dev> OUT=<dev>`` that is followed by what the kernel
writes next (``PHYSIN=``, ``PHYSOUT=``, ``MAC=``, ``MACSRC=``, ``SRC=``, ``ARP``, ``TRUNCATED`` or
the end of the line): nothing the kernel writes after the prefix holds such a pair, so a prefix
cannot supply the interfaces of its line.

Renderings, detected per line and possibly mixed: raw dmesg (seconds since boot), ``dmesg -T``,
rsyslog (no year, whole seconds), journald short-iso. The tag of a syslog or journal line is not
checked: ``logger -t kernel`` writes a line no text can tell from the kernel's, and router firmware
and ulogd write the same LOG body under their own tag (or none), so any line with a full LOG body
is read, and lines under another tag than ``kernel`` are counted in the report (docs/bundle.md:
which renderings a local user can forge). The hook is not in the line: it comes from the prefix
(``DEFAULT_HOOK_PREFIXES``, extended by ``--hook-prefix``).

A file is read a block of lines at a time (gzip decompressed as it is read) and turned into
event-table columns a chunk of lines at a time (``iter_read``), so memory holds the rows, not the
text and a Python object per line.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import os
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..schema import EVENT_SCHEMA, addr_bytes, conform
from . import logfast
from .base import SourceReport
from .capture import concat, cut_warning, open_maybe_gzip, read_block, record_span

#: A table word (optional, filter when absent) then a hook word, each a whole word.
DEFAULT_HOOK_PREFIXES = {
    "pattern": r"(?<![A-Za-z])(?:(FILTER|NAT|MANGLE|RAW|SECURITY)[-_ ./:]?)?"
    r"(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING)(?![A-Za-z])",
}
HOOK_RE = re.compile(DEFAULT_HOOK_PREFIXES["pattern"], re.IGNORECASE)
HOOK_DIRECTION = {
    "OUTPUT": "out",
    "POSTROUTING": "out",
    "INPUT": "in",
    "PREROUTING": "in",
    "FORWARD": "unknown",
}

DMESG = re.compile(r"^\[\s*(\d+)\.(\d{1,9})\]\s?(.*)$")
DMESG_T = re.compile(r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d \d{4})\]\s?(.*)$")
#: journald short-iso: time, host, then a tag (``kernel:``, ``prog[pid]:``) or none.
ISO = re.compile(
    r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?\s+(\S+)\s+"
    r"(?:([^:\s\[]+)(?:\[\d+\])?:\s?)?(.*)$"
)
#: rsyslog: month, day, time, host, then a tag or none (a router's ``host [RULE-1] IN=...``).
SYSLOG = re.compile(
    r"^([A-Z][a-z]{2})\s+(\d{1,2}) (\d\d):(\d\d):(\d\d)\s+(\S+)\s+"
    r"(?:([^:\s\[]+)(?:\[\d+\])?:\s?)?(.*)$"
)
#: Every ``IN=<dev> OUT=<dev>`` followed by what the kernel writes next (overlapping: a prefix
#: may end in ``IN=``); the last one found starts the fields.
LOG_FIELDS = re.compile(
    r"(?=IN=(?P<in>\S*) OUT=(?P<out>\S*)(?: |$)"
    r"(?:$|PHYSIN=|PHYSOUT=|MAC=|MACSRC=|SRC=|ARP |TRUNCATED))"
)
#: The range of a nanosecond time (int64): 1677-09-21 to 2262-04-11.
NS_MIN, NS_MAX = -(1 << 63), (1 << 63) - 1
#: Lines of a block read at once, and how many lines a chunk of rows holds at most.
READ_BYTES = 1 << 20
CHUNK_LINES = 1 << 14
#: Blocks parsed at once beside the reading (``iter_read``).
PARSE_THREADS = 2
#: A line longer than this is cut (kernel lines are at most 1 KiB): bounded memory.
MAX_LINE = 1 << 16
MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
TCP_FLAGS = {
    "FIN": 0x1,
    "SYN": 0x2,
    "RST": 0x4,
    "PSH": 0x8,
    "ACK": 0x10,
    "URG": 0x20,
    "ECE": 0x40,
    "CWR": 0x80,
    "AE": 0x100,
}
PROTOS = {
    "TCP": 6,
    "UDP": 17,
    "UDPLITE": 136,
    "ICMP": 1,
    "ICMPV6": 58,
    "AH": 51,
    "ESP": 50,
    "SCTP": 132,
    "GRE": 47,
}

COLUMNS = (
    "ts",
    "uptime_ns",
    "ts_basis",
    "record",
    "point",
    "hook",
    "iface",
    "direction",
    "in_iface",
    "out_iface",
    "phys_in",
    "phys_out",
    "log_prefix",
    "eth_dst",
    "eth_src",
    "ethertype",
    "ip_version",
    "src",
    "dst",
    "ip_len",
    "tos",
    "ttl",
    "ip_id",
    "flow_label",
    "dont_fragment",
    "more_fragments",
    "frag_offset",
    "proto",
    "sport",
    "dport",
    "tcp_flags",
    "tcp_seq",
    "tcp_ack",
    "tcp_window",
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "icmp_seq",
    "inner_src",
    "inner_dst",
    "inner_proto",
    "inner_sport",
    "inner_dport",
    "mark",
    "uid",
    "gid",
)


class BadLine(ValueError):
    """A LOG line whose fields do not parse."""


def looks_like_kernlog(head: bytes) -> bool:
    """True when some line of ``head`` is a kernel log line in a supported rendering."""
    text = head.decode("utf-8", "replace")
    for line in text.splitlines()[:400]:
        if DMESG.match(line) or DMESG_T.match(line):
            return True
        m = SYSLOG.match(line) or ISO.match(line)
        if m and (m.groups()[-2] == "kernel" or log_fields(m.groups()[-1])):
            return True
        if log_fields(line) and BARE_ADDRESSES.search(line):
            return True
    return False


def log_fields(message: str) -> tuple[str, str, str, str] | None:
    """(prefix, IN= device, OUT= device, the fields after them) of a LOG message, or None.

    >>> log_fields("IN=x OUT=y [FILTER-OUTPUT] IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2")
    ('IN=x OUT=y [FILTER-OUTPUT] ', '', 'eth1', 'SRC=10.0.0.1 DST=10.0.0.2')
    """
    if "IN=" not in message:
        return None
    last = None
    for last in LOG_FIELDS.finditer(message):  # noqa: B007 - the last one is wanted
        pass
    if last is None:
        return None
    return message[: last.start()], last["in"], last["out"], message[last.end("out") :].strip()


#: A bare LOG line (no timestamp) counts only with real addresses: source code or docs that
#: quote the LOG format (``SRC=(\S+)``) are not a kernel log.
BARE_ADDRESSES = re.compile(r"\bSRC=[0-9A-Fa-f:.]+ DST=[0-9A-Fa-f:.]+ ")


def _tokens(text: str) -> list[str]:
    """Split on spaces, keeping ``[...]`` (nested) and ``OPT (...)`` groups whole."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for word in text.split():
        if depth or word.startswith(("[", "(")):
            cur.append(word)
            depth += word.count("[") + word.count("(") - word.count("]") - word.count(")")
            if depth <= 0:
                out.append(" ".join(cur))
                cur, depth = [], 0
        else:
            out.append(word)
    if cur:
        out.append(" ".join(cur))
    return out


def _int_limits() -> dict[str, int]:
    """Largest value each integer event column holds, so a corrupt line is rejected, not cast."""
    out = {}
    for field in EVENT_SCHEMA:
        if pa.types.is_unsigned_integer(field.type):
            out[field.name] = (1 << field.type.bit_width) - 1
    return out


INT_LIMITS = _int_limits()


def _in_range(row: dict) -> dict:
    for key, value in row.items():
        limit = INT_LIMITS.get(key)
        if limit is not None and isinstance(value, int) and not 0 <= value <= limit:
            raise BadLine(f"{key}={value} out of range")
    return row


def _int(value: str, base: int = 10) -> int:
    try:
        return int(value, base)
    except ValueError:
        raise BadLine(f"bad number {value!r}") from None


def _packet(tokens: list[str], *, quoted: bool = False) -> dict:
    """Fields of one logged packet, or (``quoted``) of the packet an ICMP error quotes. The
    kernel quotes one level only (``nf_log_syslog.c`` dumps the quoted packet without its own
    quote), so brackets inside a quoted packet are not read: a line nesting 2,000 of them is
    read like one that nests one."""
    row: dict = {}
    l4 = False
    proto = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("[") and tok.endswith("]"):
            if not quoted and proto in (1, 58) and "inner_src" not in row:
                inner = _packet(_tokens(tok[1:-1]), quoted=True)
                for k in ("src", "dst", "proto", "sport", "dport"):
                    if k in inner:
                        row[f"inner_{k}"] = inner[k]
            continue
        if tok.startswith("("):
            continue  # OPT (...) contents
        key, eq, value = tok.partition("=")
        if not eq:
            if key.startswith("FRAG:"):
                row["frag_offset"] = _int(key[5:])
            elif key.startswith("ID:"):
                row["ip_id"] = _int(key[3:], 16)
            elif key == "DF":
                row["dont_fragment"] = True
            elif key == "MF":
                row["more_fragments"] = True
            elif l4 and key in TCP_FLAGS and proto == 6:
                row["tcp_flags"] = row.get("tcp_flags", 0) | TCP_FLAGS[key]
            continue
        if key == "SRC":
            row["src"] = _address(value)
            row["ip_version"] = 6 if ":" in value else 4
        elif key == "DST":
            row["dst"] = _address(value)
        elif key == "LEN" and not l4:
            row["ip_len"] = _int(value)
        elif key in ("TOS", "TC") and not l4:
            row["tos"] = _int(value, 16 if value.startswith("0x") else 10)
        elif key in ("TTL", "HOPLIMIT"):
            row["ttl"] = _int(value)
        elif key == "ID" and not l4:
            row["ip_id"] = _int(value)
        elif key == "FLOWLBL":
            row["flow_label"] = _int(value)
        elif key == "PROTO":
            l4 = True
            proto = PROTOS.get(value.upper())
            if proto is None:
                proto = _int(value)
            row["proto"] = proto
        elif l4 and key == "SPT":
            row["sport"] = _int(value)
        elif l4 and key == "DPT":
            row["dport"] = _int(value)
        elif l4 and key == "SEQ":
            row["tcp_seq" if proto == 6 else "icmp_seq"] = _int(value)
        elif l4 and key == "ACK" and proto == 6:
            row["tcp_ack"] = _int(value)
        elif l4 and key == "WINDOW":
            row["tcp_window"] = _int(value)
        elif l4 and key == "TYPE":
            row["icmp_type"] = _int(value)
        elif l4 and key == "CODE":
            row["icmp_code"] = _int(value)
        elif l4 and key == "ID":
            row["icmp_id"] = _int(value)
        elif key == "MARK":
            row["mark"] = _int(value, 16)
        elif key == "UID":
            row["uid"] = _int(value)
        elif key == "GID":
            row["gid"] = _int(value)
        elif key == "PHYSIN":
            row["phys_in"] = value
        elif key == "PHYSOUT":
            row["phys_out"] = value
        elif key == "MAC":
            parts = value.split(":")
            if len(parts) == 14:
                raw = bytes(_int(p, 16) for p in parts)
                row["eth_dst"], row["eth_src"] = raw[:6], raw[6:12]
                row["ethertype"] = int.from_bytes(raw[12:], "big")
        elif key in ("MACSRC", "MACDST"):
            parts = value.split(":")
            if len(parts) == 6:
                row["eth_src" if key == "MACSRC" else "eth_dst"] = bytes(_int(p, 16) for p in parts)
        elif key == "MACPROTO":
            row["ethertype"] = _int(value, 16)
    if row.get("ip_version") == 4:
        row.setdefault("dont_fragment", False)
        row.setdefault("more_fragments", False)
        row.setdefault("frag_offset", 0)
    if proto == 58 and row.get("icmp_type") not in (128, 129):
        row.pop("icmp_id", None)
        row.pop("icmp_seq", None)
    return _in_range(row)


#: Addresses seen recently, as column bytes: a log names few hosts, many times.
_ADDRESSES: dict[str, bytes] = {}


def _address(text: str) -> bytes:
    value = _ADDRESSES.get(text)
    if value is None:
        if len(_ADDRESSES) >= 1 << 16:
            _ADDRESSES.clear()
        value = _ADDRESSES[text] = addr_bytes(text)
    return value


class _Hooks:
    def __init__(self, user: dict[str, str] | None) -> None:
        self.user = sorted((user or {}).items(), key=lambda kv: -len(kv[0]))
        self.memo: dict[str, str | None] = {}

    def __call__(self, prefix: str) -> str | None:
        if prefix not in self.memo:
            hook = next((h for p, h in self.user if prefix.startswith(p)), None)
            if hook is None:
                m = HOOK_RE.search(prefix)
                if m:
                    hook = f"{(m.group(1) or 'filter').lower()}/{m.group(2).upper()}"
            if len(self.memo) >= 1 << 16:
                self.memo.clear()
            self.memo[prefix] = hook
        return self.memo[prefix]


def _wall(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str = "", tz: str = "") -> int:
    """Nanoseconds since the epoch of a wall-clock time (UTC unless ``tz``); ValueError for a
    date that does not exist."""
    stamp = dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)
    ns = int(stamp.timestamp()) * 1_000_000_000 + int((frac[1:] + "000000000")[:9] if frac else 0)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hh, mm = int(tz[1:3]), int(tz[-2:])
        ns -= sign * (hh * 3600 + mm * 60) * 1_000_000_000
    return ns


def in_ns_range(ns: int) -> bool:
    """True when a nanosecond time fits the event table's ``ts`` (1677-09-21 to 2262-04-11)."""
    return NS_MIN <= ns <= NS_MAX


def line_time(line: str, year: int) -> tuple[str, str, str | None, int | None, int | None]:
    """(rendering, message, tag, wall-clock ns, uptime ns) of a log line; ValueError (or
    KeyError: a month name) when its stamp is no valid date. A line of no known rendering is
    'bare', without a time."""
    if m := DMESG.match(line):
        uptime = int(m.group(1)) * 1_000_000_000 + int((m.group(2) + "000000000")[:9])
        return "dmesg", m.group(3), None, None, uptime
    if m := ISO.match(line):
        d, t = m.group(1).replace(" ", "T").split("T")
        y, mo, dd = map(int, d.split("-"))
        h, mi, s = map(int, t.split(":"))
        wall = _wall(y, mo, dd, h, mi, s, m.group(2) or "", m.group(3) or "")
        return "journal", m.group(6), m.group(5), wall, None
    if m := SYSLOG.match(line):
        wall = _wall(year, MONTHS[m.group(1)], *(int(m.group(k)) for k in (2, 3, 4, 5)))
        return "syslog", m.group(8), m.group(7), wall, None
    if m := DMESG_T.match(line):
        stamp = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        wall = _wall(stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
        return "dmesg-T", m.group(2), None, wall, None
    return "bare", line, None, None, None


#: Skip reasons of lines that hold a LOG body but cannot be rows.
BAD_STAMP = "time stamp is no valid date"
OUT_OF_RANGE = "time outside 1677-2262"


def _counts(values: pa.Array, codes: bool = False) -> tuple[list, np.ndarray]:
    """The distinct values of a string array and their counts, or (``codes``) each row's
    position among them."""
    if codes:
        encoded = values.dictionary_encode()
        return encoded.dictionary.to_pylist(), np.asarray(encoded.indices)
    found = pc.value_counts(values)
    return found.field("values").to_pylist(), np.asarray(found.field("counts"))


class _Parser:
    """LOG lines to event rows, a chunk of lines at a time; the report is filled as it goes."""

    def __init__(
        self,
        report: SourceReport,
        *,
        boot_time: float | None,
        year: int | None,
        hook_prefixes: dict[str, str] | None,
    ) -> None:
        self.report = report
        self.source = report.path
        self.renderings: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()
        self.tags: Counter[str] = Counter()
        self.unparsable: list[int] = []
        self.hooks = _Hooks(hook_prefixes)
        self.year = year or dt.datetime.now(dt.UTC).year
        self.boot_ns = self._boot_ns(boot_time)
        self.no_boot_warned = False
        self.text_lines = 0  # lines that are not blank

    def _boot_ns(self, boot_time: float | None) -> int | None:
        """The boot time in ns, or None (with a warning) when it is no time ``ts`` can hold."""
        if boot_time is None:
            return None
        if math.isfinite(ns := boot_time * 1e9) and in_ns_range(round(ns)):
            return round(ns)
        self.report.warnings.append(
            f"{self.source}: boot time {boot_time!r} is no time between 1677 and 2262: "
            "raw dmesg lines are placed as without a boot time"
        )
        self.no_boot_warned = True
        return None

    def chunk(self, lines: Iterable[tuple[int, str]]) -> pa.Table:
        """Event rows of numbered lines; every line is used or counted as skipped. The common
        shapes are read a block at a time (``logfast``), the rest line by line."""
        numbered, texts = _block(lines)
        return self.rows(numbered, logfast.parse(texts, self.year))

    def rows(self, numbered: list[tuple[int, str]], fast: logfast.Parsed) -> pa.Table:
        """``chunk`` of a block (``_block``) whose common shapes ``logfast`` read already."""
        report = self.report
        fast_rows, taken = self._fast(fast, np.array([no for no, _ in numbered], np.int64))
        cols: dict[str, list] = {c: [] for c in COLUMNS}
        used = 0
        for k, (no, line) in enumerate(numbered):
            report.records += 1
            if taken[k]:
                continue
            row = self._row(no, line)
            if row is None:
                continue
            for c in COLUMNS:
                cols[c].append(row.get(c))
            used += 1
        report.used += used + fast_rows.num_rows
        self._detail()
        columns: dict = dict(cols)
        columns["ts"] = pa.array(cols["ts"], pa.int64()).cast(EVENT_SCHEMA.field("ts").type)
        for name in ("src", "dst", "inner_src", "inner_dst"):
            columns[name] = pa.array(cols[name], pa.binary(16))
        for name in ("eth_src", "eth_dst"):
            columns[name] = pa.array(cols[name], pa.binary(6))
        columns["source"] = [self.source] * used
        table = conform(columns, used)
        if fast_rows.num_rows:
            table = concat([table, fast_rows]).sort_by("record")
        record_span(report, table)
        return table

    def _fast(self, fast: logfast.Parsed, numbers: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        """The rows of the lines ``logfast`` read, and which lines of the block those are; what
        ``_row`` would give them (a line whose time ``ts`` cannot hold is left to ``_row``)."""
        taken = np.zeros(len(numbers), dtype=bool)
        raw = fast.uptime >= 0
        boot = self.boot_ns or 0
        fits = ~raw | (fast.uptime <= NS_MAX - max(boot, 0))
        keep = np.flatnonzero(fits)
        n = len(keep)
        if not n:
            return conform({}, 0), taken
        taken[fast.rows[keep]] = True
        at = pa.array(keep)
        raw = raw[keep]
        if raw.any() and self.boot_ns is None and not self.no_boot_warned:
            self.report.warnings.append(
                f"{self.source}: raw dmesg times are seconds since boot; no boot time given"
            )
            self.no_boot_warned = True
        self.text_lines += n
        self.renderings.update(fast.rendering[k] for k in keep.tolist())
        tags = fast.tag.take(at)  # an expression's group that matched nothing is empty
        for tag, count in zip(*_counts(tags.filter(pc.not_equal(tags, ""))), strict=True):
            self.tags[tag] += int(count)
        prefix = fast.prefix.take(at)
        in_dev, out_dev = fast.in_iface.take(at), fast.out_iface.take(at)
        names, index = _counts(prefix, codes=True)
        hooks = [self.hooks(name) for name in names]
        counts = np.bincount(index, minlength=len(names))
        for name, hook, count in zip(names, hooks, counts, strict=True):
            if hook is None:
                self.unknown[name] += int(count)
        known = np.array([h is not None for h in hooks], dtype=bool)[index]
        hook = np.array([h or "unknown" for h in hooks], dtype=object)[index]
        by_hook = np.array(
            [HOOK_DIRECTION.get(h.split("/")[-1].upper(), "unknown") if h else "" for h in hooks],
            dtype=object,
        )[index]
        has_in = np.asarray(pc.not_equal(in_dev, ""))
        has_out = np.asarray(pc.not_equal(out_dev, ""))
        by_devs = np.where(has_out & ~has_in, "out", np.where(has_in & ~has_out, "in", "unknown"))
        direction = np.where(known, by_hook, by_devs)
        uptime = fast.uptime[keep]
        columns: dict = {name: values.take(at) for name, values in fast.fields.items()}
        columns |= {
            "ts": np.where(raw, uptime + boot, fast.wall[keep]),
            "uptime_ns": pa.array(uptime, mask=~raw),
            "ts_basis": np.where(raw, "boot", "wallclock"),
            "record": numbers[fast.rows[keep]],
            "point": hook,
            "hook": hook,
            "iface": pc.if_else(pa.array(direction != "in"), out_dev, in_dev),
            "direction": direction,
            "in_iface": in_dev,
            "out_iface": out_dev,
            "log_prefix": prefix,
            "source": pa.array([self.source]).take(pa.array(np.zeros(n, np.int64))),
        }
        columns["ts"] = pa.array(columns["ts"]).cast(EVENT_SCHEMA.field("ts").type)
        return conform(columns, n), taken

    def _row(self, no: int, line: str) -> dict | None:
        report = self.report
        if not line.strip():
            report.skip("empty line")
            return None
        self.text_lines += 1
        try:
            rendering, msg, tag, wall, uptime = line_time(line, self.year)
            bad_stamp = False
        except (ValueError, KeyError, OverflowError):
            rendering, msg, tag, wall, uptime = "bare", line, None, None, None
            bad_stamp = True
        if wall is not None and (m := DMESG.match(msg)):  # rsyslog keeps the dmesg stamp
            msg = m.group(3)
        found = log_fields(msg)
        if found is None or not found[3]:
            report.skip("not a LOG line")
            return None
        if bad_stamp:  # a LOG body under a stamp that is no date: not a time to guess
            report.skip(BAD_STAMP)
            return None
        prefix, in_dev, out_dev, rest = found
        try:
            pkt = _packet(_tokens(rest))
            if "src" not in pkt and "eth_src" not in pkt and "ethertype" not in pkt:
                raise BadLine("no SRC= or MAC")
        except (BadLine, ValueError):
            report.skip("unparsable LOG line")
            if len(self.unparsable) < 20:
                self.unparsable.append(no)
            return None
        if uptime is not None:
            if self.boot_ns is None and not self.no_boot_warned:
                report.warnings.append(
                    f"{self.source}: raw dmesg times are seconds since boot; no boot time given"
                )
                self.no_boot_warned = True
            ts, basis = uptime + (self.boot_ns or 0), "boot"
        elif wall is not None:
            ts, basis = wall, "wallclock"
        else:
            ts, basis = 0, "wallclock"
        if not in_ns_range(ts) or (uptime is not None and not in_ns_range(uptime)):
            report.skip(OUT_OF_RANGE)
            return None
        self.renderings[rendering] += 1
        if tag is not None:
            self.tags[tag] += 1
        hook = self.hooks(prefix)
        if hook is None:
            self.unknown[prefix] += 1
            hook_name = "unknown"
            direction = (
                "out" if out_dev and not in_dev else "in" if in_dev and not out_dev else "unknown"
            )
        else:
            hook_name = hook
            direction = HOOK_DIRECTION.get(hook.split("/")[-1].upper(), "unknown")
        return {
            "ts": ts,
            "uptime_ns": uptime,
            "ts_basis": basis,
            "record": no,
            "point": hook_name,
            "hook": hook_name,
            "iface": out_dev if direction != "in" else in_dev,
            "direction": direction,
            "in_iface": in_dev,
            "out_iface": out_dev,
            "log_prefix": prefix,
            **pkt,
        }

    def _detail(self) -> None:
        detail = self.report.detail
        detail["renderings"] = dict(self.renderings)
        if self.unknown:
            detail["unknown_prefixes"] = dict(self.unknown)
        if self.unparsable:
            detail["unparsable_lines"] = list(self.unparsable)
        other = {t: n for t, n in self.tags.items() if t != "kernel"}
        if other:
            detail["other_tags"] = other

    def finish(self) -> None:
        """Warnings that need the whole file: LOG lines under other tags than ``kernel``."""
        other = self.report.detail.get("other_tags")
        if other:
            tags = ", ".join(f"{t} {n}" for t, n in sorted(other.items()))
            self.report.warnings.append(
                f"{self.source}: LOG lines under other tags than kernel ({tags}): read as LOG "
                "lines; a syslog or journal text cannot prove who wrote a line"
            )


def _block(lines: Iterable[tuple[int, str]]) -> tuple[list[tuple[int, str]], pa.Array]:
    """Numbered lines without their line ends, and their texts as one Arrow array."""
    numbered = [(no, raw.rstrip("\r\n")) for no, raw in lines]
    return numbered, pa.array([line for _, line in numbered], pa.string())


def _numbered(lines: Iterable[str], first: int = 1) -> Iterator[list[tuple[int, str]]]:
    """Lines numbered from ``first``, in lists of at most ``CHUNK_LINES``."""
    block: list[tuple[int, str]] = []
    for no, line in enumerate(lines, first):
        block.append((no, line))
        if len(block) >= CHUNK_LINES:
            yield block
            block = []
    if block:
        yield block


def parse_lines(
    lines: Iterable[str],
    *,
    source: str,
    boot_time: float | None = None,
    year: int | None = None,
    hook_prefixes: dict[str, str] | None = None,
) -> tuple[pa.Table, SourceReport]:
    """Parse kernel log lines into event rows; every line is used or counted as skipped."""
    report = SourceReport(path=source, format="kernlog")
    parser = _Parser(report, boot_time=boot_time, year=year, hook_prefixes=hook_prefixes)
    tables = [parser.chunk(block) for block in _numbered(lines)]
    parser._detail()
    parser.finish()
    table = concat(tables)
    record_span(report, table)
    return table, report


def iter_lines(path: str | os.PathLike, report: SourceReport | None = None) -> Iterator[str]:
    """The lines of a text file (plain or gzip), read a block at a time: split at ``\\n``,
    decoded as UTF-8 (bad bytes replaced), a line longer than ``MAX_LINE`` bytes cut there.
    A gzip stream cut short ends the lines where its data ends, with a warning in ``report``."""
    spath = str(path)
    with open_maybe_gzip(spath) as f:
        carry = b""
        skipping = False  # inside a line longer than MAX_LINE: drop until its end
        while block := read_block(f, spath, READ_BYTES):
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:
                if not skipping and len(data) > MAX_LINE:
                    yield _cut_line(data, report, spath)
                    skipping, data = True, b""
                carry = b"" if skipping else data
                continue
            parts = data[:cut].split(b"\n")
            if skipping:
                parts.pop(0)
                skipping = False
            for part in parts:
                yield (
                    part.decode("utf-8", "replace")
                    if len(part) <= MAX_LINE
                    else _cut_line(part, report, spath)
                )
            carry = data[cut + 1 :]
        if carry and not skipping:
            yield carry.decode("utf-8", "replace")
        if report is not None:
            report.warnings.extend(cut_warning(spath, f))


def _cut_line(data: bytes, report: SourceReport | None, path: str) -> str:
    if report is not None and not report.detail.get("long_lines"):
        report.warnings.append(f"{path}: a line longer than {MAX_LINE} bytes: read its start")
    if report is not None:
        report.detail["long_lines"] = report.detail.get("long_lines", 0) + 1
    return data[:MAX_LINE].decode("utf-8", "replace")


def iter_read(
    path: str | os.PathLike,
    report: SourceReport,
    *,
    boot_time: float | None = None,
    year: int | None = None,
    hook_prefixes: dict[str, str] | None = None,
    chunk_lines: int | None = None,
) -> Iterator[pa.Table]:
    """Yield a kernel log file (plain or gzip) as event-table chunks of the LOG lines of at most
    ``chunk_lines`` lines (``CHUNK_LINES`` when None), filling ``report`` as it goes: memory
    holds a few blocks of text and one chunk of rows. InputError for a file without a line."""
    parser = _Parser(report, boot_time=boot_time, year=year, hook_prefixes=hook_prefixes)
    size = chunk_lines or CHUNK_LINES
    # The common shapes of the next blocks are parsed in two threads while this one reads
    # lines and makes rows of the block before: Arrow's regular expressions run without the
    # GIL (861 k lines: 8.5 s one block after the other, 5.0 s with one thread, 4.1 s two).
    with ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="nicpath-log") as ahead:
        waiting: deque[tuple[list[tuple[int, str]], Future[logfast.Parsed]]] = deque()

        def parse(block: list[tuple[int, str]]) -> None:
            numbered, texts = _block(block)
            waiting.append((numbered, ahead.submit(logfast.parse, texts, parser.year)))

        block: list[tuple[int, str]] = []
        for no, line in enumerate(iter_lines(path, report), 1):
            block.append((no, line))
            if len(block) >= size:
                parse(block)
                block = []
                if len(waiting) > PARSE_THREADS:
                    numbered, fast = waiting.popleft()
                    yield parser.rows(numbered, fast.result())
        if block or not (waiting or report.records):
            parse(block)
        while waiting:
            numbered, fast = waiting.popleft()
            yield parser.rows(numbered, fast.result())
    parser.finish()
    if not parser.text_lines:
        raise InputError(path, "empty file: no lines")


def read(
    path: str | os.PathLike,
    *,
    boot_time: float | None = None,
    year: int | None = None,
    hook_prefixes: dict[str, str] | None = None,
) -> tuple[pa.Table, SourceReport]:
    """Read a kernel log file (plain or gzip) into event rows: ``iter_read`` gathered."""
    report = SourceReport(path=str(path), format="kernlog")
    chunks = iter_read(path, report, boot_time=boot_time, year=year, hook_prefixes=hook_prefixes)
    table = concat(list(chunks))
    return table, report
