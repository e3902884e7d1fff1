"""Kernel logs holding netfilter LOG lines (iptables/ip6tables ``-j LOG``, nft ``log``).

The line format is the kernel's (``net/netfilter/nf_log_syslog.c``): ``<prefix>IN= OUT=`` then
``PHYSIN=/PHYSOUT=``, ``MAC=`` (input side only), the IP header (IPv4 ``SRC DST LEN TOS PREC TTL
ID`` + bare ``CE DF MF`` + ``FRAG:n``; IPv6 ``SRC DST LEN TC HOPLIMIT FLOWLBL``), ``PROTO=`` and the
transport fields, an ICMP error's quoted packet in brackets, then ``UID= GID= MARK=``. Keys repeat
(a UDP line has two ``LEN=``, an ICMP echo two ``ID=``), so fields are read in order with a small
state machine: what comes after ``PROTO=`` belongs to the transport header.

Renderings, detected per line and possibly mixed: raw dmesg (seconds since boot), ``dmesg -T``,
rsyslog (no year, whole seconds), journald short-iso. The hook is not in the line: it comes from
the prefix (``DEFAULT_HOOK_PREFIXES``, extended by ``--hook-prefix``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import re
from collections import Counter
from collections.abc import Iterable

import pyarrow as pa

from ..errors import InputError
from ..schema import EVENT_SCHEMA, addr_bytes, conform
from .base import SourceReport
from .capture import read_bytes, record_span

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
ISO = re.compile(
    r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?\s+(\S+)\s+"
    r"([^:\s\[]+)(?:\[\d+\])?:\s?(.*)$"
)
SYSLOG = re.compile(
    r"^([A-Z][a-z]{2})\s+(\d{1,2}) (\d\d):(\d\d):(\d\d)\s+(\S+)\s+"
    r"([^:\s\[]+)(?:\[\d+\])?:\s?(.*)$"
)
LOG_LINE = re.compile(r"^(?P<prefix>.*?)IN=(?P<in>\S*) OUT=(?P<out>\S*)(?: (?P<rest>.*))?$")
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
        if m and ("kernel" in m.groups() or LOG_LINE.match(m.groups()[-1])):
            return True
        if LOG_LINE.match(line) and BARE_ADDRESSES.search(line):
            return True
    return False


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


def _packet(tokens: list[str]) -> dict:
    """Fields of one logged packet (the quoted one of an ICMP error too)."""
    row: dict = {}
    l4 = False
    proto = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("[") and tok.endswith("]"):
            if proto in (1, 58) and "inner_src" not in row:
                inner = _packet(_tokens(tok[1:-1]))
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
            row["src"] = addr_bytes(value)
            row["ip_version"] = 6 if ":" in value else 4
        elif key == "DST":
            row["dst"] = addr_bytes(value)
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
            self.memo[prefix] = hook
        return self.memo[prefix]


def _wall(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str = "", tz: str = "") -> int:
    stamp = dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)
    ns = int(stamp.timestamp()) * 1_000_000_000 + int((frac[1:] + "000000000")[:9] if frac else 0)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hh, mm = int(tz[1:3]), int(tz[-2:])
        ns -= sign * (hh * 3600 + mm * 60) * 1_000_000_000
    return ns


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
    renderings: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    unparsable: list[int] = []
    hooks = _Hooks(hook_prefixes)
    year = year or dt.datetime.now(dt.UTC).year
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    no_boot_warned = False
    for no, line in enumerate(lines, 1):
        report.records += 1
        line = line.rstrip("\r\n")
        if not line.strip():
            report.skip("empty line")
            continue
        uptime = wall = None
        msg = line
        tag = "kernel"
        try:
            if m := DMESG.match(line):
                uptime = int(m.group(1)) * 1_000_000_000 + int((m.group(2) + "000000000")[:9])
                msg, rendering = m.group(3), "dmesg"
            elif m := ISO.match(line):
                d, t = m.group(1).replace(" ", "T").split("T")
                y, mo, dd = map(int, d.split("-"))
                h, mi, s = map(int, t.split(":"))
                wall = _wall(y, mo, dd, h, mi, s, m.group(2) or "", m.group(3) or "")
                tag, msg, rendering = m.group(5), m.group(6), "journal"
            elif m := SYSLOG.match(line):
                wall = _wall(
                    year,
                    MONTHS[m.group(1)],
                    int(m.group(2)),
                    int(m.group(3)),
                    int(m.group(4)),
                    int(m.group(5)),
                )
                tag, msg, rendering = m.group(7), m.group(8), "syslog"
            elif m := DMESG_T.match(line):
                stamp = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
                wall = _wall(
                    stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second
                )
                msg, rendering = m.group(2), "dmesg-T"
            else:
                rendering = "bare"
        except (ValueError, KeyError):
            report.skip("not a LOG line")
            continue
        if tag != "kernel":
            report.skip("not a LOG line")
            continue
        if wall is not None and (m := DMESG.match(msg)):  # rsyslog keeps the dmesg stamp
            msg = m.group(3)
        log = LOG_LINE.match(msg)
        if not log or not log.group("rest"):
            report.skip("not a LOG line")
            continue
        try:
            pkt = _packet(_tokens(log.group("rest")))
            if "src" not in pkt and "eth_src" not in pkt and "ethertype" not in pkt:
                raise BadLine("no SRC= or MAC")
        except (BadLine, ValueError):
            report.skip("unparsable LOG line")
            if len(unparsable) < 20:
                unparsable.append(no)
            continue
        renderings[rendering] += 1
        prefix = log.group("prefix")
        hook = hooks(prefix)
        in_dev, out_dev = log.group("in"), log.group("out")
        if hook is None:
            unknown[prefix] += 1
            hook_name = "unknown"
            direction = (
                "out" if out_dev and not in_dev else "in" if in_dev and not out_dev else "unknown"
            )
        else:
            hook_name = hook
            direction = HOOK_DIRECTION.get(hook.split("/")[-1].upper(), "unknown")
        if uptime is not None:
            if boot_time is None and not no_boot_warned:
                report.warnings.append(
                    f"{source}: raw dmesg times are seconds since boot; no boot time given"
                )
                no_boot_warned = True
            ts = uptime + round((boot_time or 0) * 1e9)
            basis = "boot"
        elif wall is not None:
            ts, basis = wall, "wallclock"
        else:
            ts, basis = 0, "wallclock"
        row = {
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
        for c in COLUMNS:
            cols[c].append(row.get(c))
        report.used += 1
    report.detail["renderings"] = dict(renderings)
    if unknown:
        report.detail["unknown_prefixes"] = dict(unknown)
    if unparsable:
        report.detail["unparsable_lines"] = unparsable
    n = report.used
    columns: dict = {c: cols[c] for c in COLUMNS}
    columns["ts"] = pa.array(cols["ts"], pa.int64()).cast(EVENT_SCHEMA.field("ts").type)
    for name in ("src", "dst", "inner_src", "inner_dst"):
        columns[name] = pa.array(cols[name], pa.binary(16))
    for name in ("eth_src", "eth_dst"):
        columns[name] = pa.array(cols[name], pa.binary(6))
    columns["source"] = [source] * n
    table = conform(columns, n)
    record_span(report, table)
    return table, report


def read(
    path: str | os.PathLike,
    *,
    boot_time: float | None = None,
    year: int | None = None,
    hook_prefixes: dict[str, str] | None = None,
) -> tuple[pa.Table, SourceReport]:
    """Read a kernel log file (plain or gzip) into event rows."""
    spath = str(path)
    raw = read_bytes(spath)
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        raise InputError(spath, "empty file: no lines")
    return parse_lines(
        text.splitlines(), source=spath, boot_time=boot_time, year=year, hook_prefixes=hook_prefixes
    )
