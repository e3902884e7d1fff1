"""Martian lines of the kernel log: packets the input route lookup refused.

With ``log_martians`` on, a packet dropped by the reverse-path filter (``rp_filter``) or with an
impossible address is logged by ``net/ipv4/route.c`` as ``IPv4: martian source DST from SRC, on
dev IF`` (destination first) or ``martian destination DST from SRC, dev IF``, followed by an
``ll header:`` line. They are rate-limited, so their absence proves nothing; where present they
name the packets dropped before any filter hook. The LOG-line reader counts these lines as
skipped (they are no LOG lines); this module reads them from the same files, in any rendering.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .kernlog import in_ns_range, iter_lines, line_time

MARTIAN = re.compile(
    r"martian (?P<kind>source|destination) (?P<dst>\S+) from (?P<src>\S+), (?:on )?dev (?P<dev>\S+)"
)


@dataclass(frozen=True, slots=True)
class Martian:
    """One martian line: when (ns on the log's clock, None when unknown), the packet's
    addresses as the kernel wrote them, the card, and where the line is."""

    ts: int | None
    kind: str
    src: str
    dst: str
    dev: str
    source: str
    line: int
    text: str


def _when(line: str, boot_time: float | None, year: int) -> int | None:
    """A martian line's time in ns, or None: raw dmesg without a boot time, a stamp that is no
    date, or a time outside what a nanosecond clock holds (1677-2262)."""
    try:
        _rendering, _msg, _tag, wall, uptime = line_time(line, year)
    except (ValueError, KeyError, OverflowError):
        return None
    if uptime is not None:
        if boot_time is None or not math.isfinite(boot_ns := boot_time * 1e9):
            return None
        ts = uptime + round(boot_ns)
    else:
        ts = wall
    return ts if ts is not None and in_ns_range(ts) else None


def parse_lines(
    lines: Iterable[str], *, source: str, boot_time: float | None = None, year: int | None = None
) -> list[Martian]:
    """Martian lines of a kernel log; raw dmesg stamps need ``boot_time`` to be placed."""
    year = year or dt.datetime.now(dt.UTC).year
    out = []
    for no, line in enumerate(lines, 1):
        if "martian" not in line:
            continue
        m = MARTIAN.search(line)
        if not m:
            continue
        try:
            src, dst = str(ipaddress.ip_address(m["src"])), str(ipaddress.ip_address(m["dst"]))
        except ValueError:
            continue  # not an address: some other message that happens to say "martian"
        ts = _when(line, boot_time, year)
        out.append(Martian(ts, m["kind"], src, dst, m["dev"], source, no, line[m.start() :]))
    return out


def read(
    path: str | os.PathLike, *, boot_time: float | None = None, year: int | None = None
) -> list[Martian]:
    """Martian lines of a kernel log file (plain or gzip), read a block of lines at a time."""
    spath = str(path)
    return parse_lines(iter_lines(spath), source=spath, boot_time=boot_time, year=year)
