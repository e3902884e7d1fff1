"""The common shapes of netfilter LOG lines, parsed a block at a time with vectorised regular
expressions (RE2, in Arrow): a few microseconds a line instead of tens in Python.

A line is taken here when one expression of its rendering (raw dmesg, journald short-iso,
rsyslog, ``dmesg -T``) matches it whole: the prefix (no ``=`` in it), ``IN=``/``OUT=``, an
Ethernet ``MAC=``, an IPv4 or IPv6 header without options or fragments, and TCP, UDP or an
ICMP/ICMPv6 echo, then ``UID=``/``GID=``/``MARK=``. Every other line (an ICMP error quoting a
packet, ``PHYSIN=``, IP options, a fragment, a prefix holding ``=``, an rsyslog line keeping its
dmesg stamp, a value out of range) is left to the line-by-line reader (``kernlog``), which
knows every shape: the two give the same row for a line both can read (tests hold them to it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Where the message starts, per rendering (group names shared: one rendering per expression).
STAMPS = {
    "dmesg": r"^\[\s*(?P<sec>\d{1,9})\.(?P<frac>\d{1,9})\]\s?",
    "journal": r"^(?P<date>\d{4}-\d\d-\d\d)[T ](?P<time>\d\d:\d\d:\d\d)(?P<jfrac>\.\d{1,9})?"
    r"(?P<tz>Z|[+-]\d\d:?\d\d)?\s+\S+\s+(?:(?P<tag>[^:\s\[]+)(?:\[\d+\])?:\s?)?",
    "syslog": r"^(?P<mon>[A-Z][a-z]{2})\s+(?P<day>\d{1,2}) (?P<time>\d\d:\d\d:\d\d)\s+\S+\s+"
    r"(?:(?P<tag>[^:\s\[]+)(?:\[\d+\])?:\s?)?",
    "dmesg-T": r"^\[[A-Z][a-z]{2} (?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) "
    r"(?P<time>\d\d:\d\d:\d\d) (?P<year>\d{4})\]\s?",
}
HEAD = r"(?P<prefix>[^=]*)IN=(?P<in>[^=\s]*) OUT=(?P<out>[^=\s]*) (?P<rest>.*)$"
#: The groups of the stamps and of ``HEAD`` a line's columns are made of.
STAMP_GROUPS = sorted(
    {name for stamp in STAMPS.values() for name in re.compile(stamp + HEAD).groupindex}
    - {"prefix", "rest"}
)
MAC = r"^(?:MAC=(?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){13}) )?"
IPV4 = (
    r"SRC=(?P<s4>\d{1,3}(?:\.\d{1,3}){3}) DST=(?P<d4>\d{1,3}(?:\.\d{1,3}){3}) "
    r"LEN=(?P<len4>\d{1,5}) TOS=0x(?P<tos4>[0-9A-F]{2}) PREC=0x[0-9A-F]{2} TTL=(?P<ttl4>\d{1,3}) "
    r"ID=(?P<id>\d{1,5}) (?:CE )?(?P<df>DF )?(?P<mf>MF )?"
)
HEX4 = r"[0-9a-f]{4}"
IPV6 = (
    rf"SRC=(?P<s6>{HEX4}(?::{HEX4}){{7}}) DST=(?P<d6>{HEX4}(?::{HEX4}){{7}}) "
    r"LEN=(?P<len6>\d{1,5}) TC=(?P<tc>\d{1,3}) HOPLIMIT=(?P<hl>\d{1,3}) FLOWLBL=(?P<fl>\d{1,7}) "
)
TCP_FLAGS = ("AE", "CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN")
BITS = {"FIN": 0x1, "SYN": 0x2, "RST": 0x4, "PSH": 0x8, "ACK": 0x10, "URG": 0x20, "ECE": 0x40,
        "CWR": 0x80, "AE": 0x100}  # fmt: skip
TCP = (
    r"PROTO=TCP SPT=(?P<tsp>\d{1,5}) DPT=(?P<tdp>\d{1,5}) "
    r"(?:SEQ=(?P<seq>\d{1,10}) ACK=(?P<ack>\d{1,10}) )?WINDOW=(?P<win>\d{1,5}) RES=0x[0-9a-f]{2} "
    rf"(?P<flags>(?:(?:{'|'.join(TCP_FLAGS)}) )*)URGP=\d{{1,5}} ?(?:OPT \([0-9A-F]*\) ?)?"
)
UDP = r"PROTO=(?P<uproto>UDP|UDPLITE) SPT=(?P<usp>\d{1,5}) DPT=(?P<udp>\d{1,5}) LEN=\d{1,5} ?"
ICMP = (
    r"PROTO=(?P<iproto>ICMP|ICMPv6) TYPE=(?P<itype>0|8|128|129) CODE=(?P<icode>\d{1,3}) "
    r"ID=(?P<iid>\d{1,5}) SEQ=(?P<iseq>\d{1,5}) ?"
)
TAIL = r"(?:UID=(?P<uid>\d{1,10}) GID=(?P<gid>\d{1,10}) ?)?(?:MARK=0x(?P<mark>[0-9a-f]{1,8}) ?)?$"
#: The fields after ``OUT=`` of each shape taken here, told apart by a cheap look first.
SHAPES = {
    (ip, proto): MAC + header + transport + TAIL
    for ip, header in (("v4", IPV4), ("v6", IPV6))
    for proto, transport in (("tcp", TCP), ("udp", UDP), ("icmp", ICMP))
}
#: Every group the shape expressions name: a block without one shape lacks that shape's groups.
GROUPS = sorted({name for shape in SHAPES.values() for name in re.compile(shape).groupindex})
#: An rsyslog line can keep the dmesg stamp after its own: the line-by-line reader strips it.
KEPT_STAMP = r"^\[\s*\d+\.\d{1,9}\]"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: The range of a nanosecond time (int64): 1677-09-21 to 2262-04-11.
NS_MIN, NS_MAX = -(1 << 63), (1 << 63) - 1
NS = 1_000_000_000


@dataclass
class Parsed:
    """The lines of a block taken here: their positions, and per line what the line-by-line
    reader would give (``fields``: event columns as Arrow arrays; ``prefix``, ``tag``,
    ``rendering``, ``wall`` or ``uptime`` ns)."""

    rows: np.ndarray
    fields: dict[str, pa.Array]
    prefix: pa.Array
    in_iface: pa.Array
    out_iface: pa.Array
    tag: pa.Array
    rendering: list[str]
    wall: np.ndarray
    uptime: np.ndarray


def _rendering_of(lines: pa.Array) -> dict[str, np.ndarray]:
    """Which lines may be of which rendering, from their first character."""
    first = pc.utf8_slice_codeunits(lines, 0, 2)
    bracket = np.asarray(pc.starts_with(first, "["))
    digit_after = np.asarray(pc.match_substring_regex(first, r"^\[[\s\d]"))
    digit = np.asarray(pc.match_substring_regex(first, r"^\d"))
    upper = np.asarray(pc.match_substring_regex(first, r"^[A-Z]"))
    return {
        "dmesg": bracket & digit_after,
        "dmesg-T": bracket & ~digit_after,
        "journal": digit,
        "syslog": upper,
    }


def _ints(values: pa.Array, base: int = 10) -> np.ndarray:
    """Digits (or hex) as int64, -1 where empty or null."""
    if base == 16:
        texts = values.fill_null("").to_pylist()
        return np.array([int(t, 16) if t else -1 for t in texts], dtype=np.int64)
    empty = pc.or_kleene(pc.is_null(values), pc.equal(values, ""))
    numbers = pc.cast(pc.if_else(empty, "0", values), pa.int64())
    return np.where(np.asarray(empty.fill_null(True)), -1, numbers.to_numpy(zero_copy_only=False))


def _fixed_text(texts: pa.Array) -> np.ndarray:
    """Strings all of one width (the expressions make them so) as an (n, width) byte grid."""
    texts = pa.concat_arrays([texts.cast(pa.string())])
    n = len(texts)
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[: n + 1]
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(n, -1) if n else np.zeros((0, 0), dtype=np.uint8)


def _hex_bytes(texts: pa.Array, starts: list[int]) -> np.ndarray:
    """The byte of each pair of hex digits starting at ``starts`` (lower-case hex)."""
    grid = _fixed_text(texts)
    digit = np.where(grid >= ord("a"), grid - (ord("a") - 10), grid - ord("0")).astype(np.uint8)
    at = np.array(starts, dtype=np.int64)
    return (digit[:, at] << 4 | digit[:, at + 1]).astype(np.uint8)


#: Where each byte's two hex digits start: a MAC= (dst:src:type, 14 bytes) and an expanded IPv6
#: address (8 groups of 4).
MAC_STARTS = [3 * k for k in range(14)]
V6_STARTS = [5 * g + 2 * p for g in range(8) for p in range(2)]


def _v4_bytes(texts: pa.Array) -> np.ndarray:
    """Dotted IPv4 text as 16-byte IPv4-mapped IPv6 rows; rows with an octet above 255 are
    flagged by a -1 first byte in the returned mask."""
    parts = pc.split_pattern(texts, ".")
    flat = pc.cast(pc.list_flatten(parts), pa.int64()).to_numpy().reshape(-1, 4)
    out = np.zeros((len(texts), 16), dtype=np.uint8)
    out[:, 10:12] = 0xFF
    out[:, 12:] = np.minimum(flat, 255)
    out[(flat > 255).any(axis=1), 0] = 1  # not a mapped address: marks the row bad
    return out


def parse(lines: pa.Array, year: int) -> Parsed:
    """Parse a block of lines (``pa.string()``); see the module docstring for which."""
    positions, groups, kinds = [], [], []
    for rendering, maybe in _rendering_of(lines).items():
        rows = np.flatnonzero(maybe)
        if not len(rows):
            continue
        head = pc.extract_regex(lines.take(pa.array(rows)), STAMPS[rendering] + HEAD)
        ok = np.asarray(head.is_valid())
        if rendering != "dmesg" and ok.any():
            kept = pc.match_substring_regex(head.field("prefix").fill_null(""), KEPT_STAMP)
            ok &= ~np.asarray(kept)
        if not ok.any():
            continue
        head = head.filter(pa.array(ok))
        rows = rows[ok]
        rest = head.field("rest")
        v6 = np.asarray(pc.match_substring_regex(rest, r"^(?:MAC=\S+ )?SRC=[0-9a-f]{4}:"))
        proto = np.select(
            [
                np.asarray(pc.match_substring(rest, " PROTO=TCP ")),
                np.asarray(pc.match_substring_regex(rest, r" PROTO=UDP(?:LITE)? ")),
                np.asarray(pc.match_substring_regex(rest, r" PROTO=ICMP(?:v6)? ")),
            ],
            ["tcp", "udp", "icmp"],
            "",
        )
        for (ip, name), expression in SHAPES.items():
            mine = np.flatnonzero((v6 == (ip == "v6")) & (proto == name))
            if not len(mine):
                continue
            found = pc.extract_regex(rest.take(pa.array(mine)), expression)
            good = np.asarray(found.is_valid())
            if not good.any():
                continue
            at = pa.array(mine[good])
            fields = {"prefix": head.field("prefix").take(at)}
            for key in STAMP_GROUPS:
                if key in head.type.names:
                    fields[key] = head.field(key).take(at)
            found = found.filter(pa.array(good))
            for i, field in enumerate(found.type):
                fields[field.name] = found.field(i)
            positions.append(rows[mine[good]])
            groups.append(fields)
            kinds += [rendering] * int(good.sum())
    if not positions:
        return _empty()
    rows = np.concatenate(positions)
    order = np.argsort(rows, kind="stable")
    take = pa.array(order)
    names = set().union(*groups)
    column = {}
    for name in names:
        parts = [g[name] if name in g else pa.nulls(len(g["prefix"]), pa.string()) for g in groups]
        column[name] = pa.concat_arrays(parts).take(take)
    return _columns(rows[order], column, [kinds[k] for k in order.tolist()], year)


def _empty() -> Parsed:
    none, text = np.zeros(0, dtype=np.int64), pa.array([], pa.string())
    return Parsed(none, {}, text, text, text, text, [], none, none)


def _columns(rows: np.ndarray, g: dict[str, pa.Array], rendering: list[str], year: int) -> Parsed:
    """The event columns of the lines taken, from the groups their expressions found."""
    n = len(rows)
    for name in GROUPS:
        if name not in g:
            g[name] = pa.nulls(n, pa.string())
    kind = np.array(rendering, dtype=object)
    wall = np.full(n, NS_MIN, dtype=np.int64)
    uptime = np.full(n, -1, dtype=np.int64)
    good = np.ones(n, dtype=bool)
    if "sec" in g:
        sec, frac = _ints(g["sec"]), g["frac"].fill_null("")
        digits = pc.utf8_length(frac).to_numpy(zero_copy_only=False)
        mine = kind == "dmesg"
        fraction = _ints(frac) * (10 ** (9 - np.clip(digits, 0, 9)))
        uptime = np.where(mine, sec * NS + fraction, uptime)
    stamped, dated = _walls(g, kind, year)
    wall = np.where(dated, stamped, wall)
    good &= (kind == "dmesg") | dated
    out: dict[str, object] = {}
    v4 = np.asarray(pc.is_valid(g["s4"])) & np.asarray(pc.not_equal(g["s4"].fill_null(""), ""))
    src = np.zeros((n, 16), dtype=np.uint8)
    dst = np.zeros((n, 16), dtype=np.uint8)
    if v4.any():
        at = pa.array(np.flatnonzero(v4))
        s, d = _v4_bytes(g["s4"].take(at)), _v4_bytes(g["d4"].take(at))
        src[v4], dst[v4] = s, d
        good[v4] &= (s[:, 0] == 0) & (d[:, 0] == 0)
    v6 = ~v4
    if v6.any():
        at = pa.array(np.flatnonzero(v6))
        src[v6] = _hex_bytes(g["s6"].take(at), V6_STARTS)
        dst[v6] = _hex_bytes(g["d6"].take(at), V6_STARTS)
    out["src"] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(src)])
    out["dst"] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(dst)])
    out["ip_version"] = np.where(v4, 4, 6)
    out["ip_len"] = np.where(v4, _ints(g["len4"]), _ints(g["len6"]))
    out["tos"] = np.where(v4, _ints(g["tos4"], 16), _ints(g["tc"]))
    out["ttl"] = np.where(v4, _ints(g["ttl4"]), _ints(g["hl"]))
    out["ip_id"] = np.where(v4, _ints(g["id"]), -1)
    out["flow_label"] = np.where(v4, -1, _ints(g["fl"]))
    df = np.asarray(pc.not_equal(g["df"].fill_null(""), ""))
    mf = np.asarray(pc.not_equal(g["mf"].fill_null(""), ""))
    out["dont_fragment"] = pa.array(df, mask=~v4)
    out["more_fragments"] = pa.array(mf, mask=~v4)
    out["frag_offset"] = np.where(v4, 0, -1)
    tcp = np.asarray(pc.not_equal(g["tsp"].fill_null(""), ""))
    udp = np.asarray(pc.not_equal(g["usp"].fill_null(""), ""))
    icmp = ~tcp & ~udp
    lite = np.asarray(pc.equal(g["uproto"].fill_null(""), "UDPLITE"))
    icmp6 = np.asarray(pc.equal(g["iproto"].fill_null(""), "ICMPv6"))
    out["proto"] = np.where(tcp, 6, np.where(udp, np.where(lite, 136, 17), np.where(icmp6, 58, 1)))
    out["sport"] = np.where(tcp, _ints(g["tsp"]), np.where(udp, _ints(g["usp"]), -1))
    out["dport"] = np.where(tcp, _ints(g["tdp"]), np.where(udp, _ints(g["udp"]), -1))
    out["tcp_seq"] = np.where(tcp, _ints(g["seq"]), -1)
    out["tcp_ack"] = np.where(tcp, _ints(g["ack"]), -1)
    out["tcp_window"] = np.where(tcp, _ints(g["win"]), -1)
    flags = np.zeros(n, dtype=np.int64)
    words = g["flags"].fill_null("")
    for word, bit in BITS.items():
        flags |= np.where(np.asarray(pc.match_substring_regex(words, rf"(^| ){word} ")), bit, 0)
    out["tcp_flags"] = np.where(tcp, flags, -1)
    out["icmp_type"] = np.where(icmp, _ints(g["itype"]), -1)
    out["icmp_code"] = np.where(icmp, _ints(g["icode"]), -1)
    out["icmp_id"] = np.where(icmp, _ints(g["iid"]), -1)
    out["icmp_seq"] = np.where(icmp, _ints(g["iseq"]), -1)
    out["uid"] = _ints(g["uid"])
    out["gid"] = _ints(g["gid"])
    out["mark"] = _ints(g["mark"], 16)
    mac = np.asarray(pc.not_equal(g["mac"].fill_null(""), ""))
    eth_src = np.zeros((n, 6), dtype=np.uint8)
    eth_dst = np.zeros((n, 6), dtype=np.uint8)
    ethertype = np.full(n, -1, dtype=np.int64)
    if mac.any():
        at = np.flatnonzero(mac)
        raw = _hex_bytes(g["mac"].take(pa.array(at)), MAC_STARTS)
        eth_dst[at], eth_src[at] = raw[:, :6], raw[:, 6:12]
        ethertype[at] = raw[:, 12].astype(np.int64) << 8 | raw[:, 13]
    valid = pa.array(mac)
    out["eth_src"] = _fixed(eth_src, 6, valid)
    out["eth_dst"] = _fixed(eth_dst, 6, valid)
    out["ethertype"] = ethertype
    limits = {"ip_len": 0xFFFFFFFF, "ttl": 255, "tos": 255, "sport": 65535, "dport": 65535,
              "ip_id": 0xFFFFFFFF, "icmp_type": 255, "icmp_code": 255, "icmp_id": 65535,
              "icmp_seq": 65535, "tcp_window": 65535, "tcp_seq": 0xFFFFFFFF,
              "tcp_ack": 0xFFFFFFFF, "uid": 0xFFFFFFFF, "gid": 0xFFFFFFFF,
              "flow_label": 0xFFFFFFFF}  # fmt: skip
    for name, top in limits.items():
        good &= np.asarray(out[name]) <= top
    keep = np.flatnonzero(good)
    fields = {}
    for name, values in out.items():
        if isinstance(values, pa.Array):
            fields[name] = values.take(pa.array(keep))
        else:
            values = np.asarray(values)[keep]
            fields[name] = pa.array(values, mask=values < 0)
    at = pa.array(keep)
    return Parsed(
        rows[keep],
        fields,
        g["prefix"].take(at),
        g["in"].take(at),
        g["out"].take(at),
        (g["tag"] if "tag" in g else pa.nulls(n, pa.string())).take(pa.array(keep)),
        [rendering[k] for k in keep.tolist()],
        wall[keep],
        uptime[keep],
    )


def _fixed(raw: np.ndarray, width: int, valid: pa.Array) -> pa.Array:
    array = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(raw), [None, pa.py_buffer(raw.tobytes())]
    )
    return pc.if_else(valid, array, pa.nulls(len(raw), pa.binary(width)))


def _walls(g: dict[str, pa.Array], kind: np.ndarray, year: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock ns of journal, syslog and dmesg -T lines, and where there is one: a valid date
    whose time ``ts`` holds (1677-2262; other lines go to the line-by-line reader)."""
    n = len(kind)
    out = np.zeros(n, dtype=np.int64)
    dated = np.zeros(n, dtype=bool)
    lo, hi = NS_MIN // NS + 1, NS_MAX // NS - 1
    if "date" in g and (kind == "journal").any():
        text = pc.binary_join_element_wise(g["date"], g["time"], "T")
        secs, ok = _seconds(text, "%Y-%m-%dT%H:%M:%S", pc.utf8_slice_codeunits(g["date"], 8, 10))
        frac = g["jfrac"].fill_null("")
        digits = np.maximum(pc.utf8_length(frac).to_numpy(zero_copy_only=False) - 1, 0)
        whole = pc.utf8_slice_codeunits(frac, 1, 10)
        nanos = np.where(digits > 0, _ints(whole) * 10 ** (9 - np.clip(digits, 0, 9)), 0)
        shift = np.array([_tz_ns(z) for z in g["tz"].fill_null("").to_pylist()], dtype=np.int64)
        mine = (kind == "journal") & ok & (secs > lo + 86400) & (secs < hi - 86400)
        out = np.where(mine, secs * NS + nanos - shift, out)
        dated |= mine
    for name in ("syslog", "dmesg-T"):
        mine = kind == name
        if not mine.any() or "mon" not in g:
            continue
        years = g["year"].fill_null(str(year)) if "year" in g else pa.array([str(year)] * n)
        years = pc.if_else(pc.equal(years, ""), str(year), years)
        text = pc.binary_join_element_wise(years, g["mon"], g["day"], g["time"], " ")
        secs, ok = _seconds(text, "%Y %b %d %H:%M:%S", g["day"])
        mine &= ok & (secs > lo) & (secs < hi)
        out = np.where(mine, secs * NS, out)
        dated |= mine
    return out, dated


def _seconds(text: pa.Array, fmt: str, day: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Seconds since the epoch of each text in ``fmt``, and which parsed to a real date (Arrow
    rolls Feb 30 over to March: the day of month must come back)."""
    stamp = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    same_day = pc.equal(pc.day(stamp), pc.cast(day, pa.int64())).fill_null(False)
    ok = np.asarray(same_day)
    return stamp.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), ok


def _tz_ns(tz: str) -> int:
    if not tz or tz == "Z":
        return 0
    sign = 1 if tz[0] == "+" else -1
    return sign * (int(tz[1:3]) * 3600 + int(tz[-2:]) * 60) * NS
