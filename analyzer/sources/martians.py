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
import os
import re
from dataclasses import dataclass

from .capture import read_bytes
from .kernlog import DMESG, DMESG_T, ISO, MONTHS, SYSLOG, _wall

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


def parse_lines(
    lines: list[str], *, source: str, boot_time: float | None = None, year: int | None = None
) -> list[Martian]:
    """Martian lines of a kernel log; raw dmesg stamps need ``boot_time`` to be placed."""
    year = year or dt.datetime.now(dt.UTC).year
    out = []
    for no, line in enumerate(lines, 1):
        m = MARTIAN.search(line)
        if not m:
            continue
        ts = None
        if d := DMESG.match(line):
            if boot_time is not None:
                uptime = int(d.group(1)) * 1_000_000_000 + int((d.group(2) + "000000000")[:9])
                ts = uptime + round(boot_time * 1e9)
        elif i := ISO.match(line):
            day, clock = i.group(1).replace(" ", "T").split("T")
            y, mo, dd = map(int, day.split("-"))
            h, mi, s = map(int, clock.split(":"))
            ts = _wall(y, mo, dd, h, mi, s, i.group(2) or "", i.group(3) or "")
        elif s := SYSLOG.match(line):
            ts = _wall(year, MONTHS[s.group(1)], *(int(s.group(k)) for k in (2, 3, 4, 5)))
        elif t := DMESG_T.match(line):
            stamp = dt.datetime.strptime(t.group(1), "%a %b %d %H:%M:%S %Y")
            ts = _wall(stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
        try:
            src, dst = str(ipaddress.ip_address(m["src"])), str(ipaddress.ip_address(m["dst"]))
        except ValueError:
            continue  # not an address: some other message that happens to say "martian"
        out.append(Martian(ts, m["kind"], src, dst, m["dev"], source, no, line[m.start() :]))
    return out


def read(
    path: str | os.PathLike, *, boot_time: float | None = None, year: int | None = None
) -> list[Martian]:
    """Martian lines of a kernel log file (plain or gzip)."""
    spath = str(path)
    raw = read_bytes(spath)
    return parse_lines(
        raw.decode("utf-8", "replace").splitlines(), source=spath, boot_time=boot_time, year=year
    )
