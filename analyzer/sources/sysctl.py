"""``sysctl`` output kept with an ip snapshot (``ip/<moment>/sysctl.txt``) or, as ``nicpath
collect`` writes it, at the top of a bundle.

``key = value`` lines as ``sysctl net.ipv4.conf`` or ``sysctl -a`` print them; keys may be written
with dots or slashes (``net/ipv4/conf/eth1/rp_filter``). Blank lines, comments and sysctl's own
messages (``sysctl: permission denied on key ...``, ``sysctl: reading key ...``, saved with
``2>&1``) are counted as skipped; any other line makes the file unreadable. The per-card
settings that decide drops before the filter hooks are read with the kernel's rule for combining
``all`` and the card: ``rp_filter`` is the larger of the two (``IN_DEV_RPFILTER`` uses max),
``log_martians`` is on when either is (``IN_DEV_ORCONF``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .base import SourceReport

FILE = "sysctl.txt"
RP_FILTER_MODES = {0: "off", 1: "strict", 2: "loose"}


@dataclass(frozen=True)
class Sysctls:
    """The values of one ``sysctl.txt``, as text, by dotted key."""

    path: str
    values: dict[str, str] = field(default_factory=dict)
    #: Lines read, used (``key = value``) and skipped by reason.
    report: SourceReport | None = field(default=None, compare=False)

    def conf(self, card: str, name: str) -> int | None:
        """``net.ipv4.conf.<card>.<name>`` as an integer, or None when not recorded."""
        value = self.values.get(f"net.ipv4.conf.{card}.{name}")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def rp_filter(self, card: str) -> int | None:
        """The reverse-path filter mode in force on ``card``: max(all, card)."""
        values = [
            v
            for v in (self.conf("all", "rp_filter"), self.conf(card, "rp_filter"))
            if v is not None
        ]
        return max(values) if values else None

    def log_martians(self, card: str) -> bool | None:
        values = [
            v
            for v in (self.conf("all", "log_martians"), self.conf(card, "log_martians"))
            if v is not None
        ]
        return any(values) if values else None


def parse_lines(lines: list[str], *, source: str) -> Sysctls:
    """The ``key = value`` lines; a line that is none of the skipped kinds is an InputError
    naming it."""
    report = SourceReport(path=source, format="sysctl")
    values = {}
    for no, raw in enumerate(lines, 1):
        report.records += 1
        line = raw.strip()
        if not line:
            report.skip("empty line")
            continue
        if line.startswith(("#", ";")):
            report.skip("comment line")
            continue
        if line.startswith("sysctl: "):
            report.skip("sysctl error message (permission denied, reading key, ...)")
            continue
        key, sep, value = line.partition("=")
        key = key.strip().replace("/", ".")
        if not sep or not key or " " in key:
            raise InputError(
                source,
                f"expected 'key = value' as sysctl prints: {line[:60]!r}",
                record=no,
                unit="line",
            )
        values[key] = value.strip()
        report.used += 1
    return Sysctls(source, values, report)


def read_sysctls(directory: str | os.PathLike) -> Sysctls | None:
    """``sysctl.txt`` of one moment directory, or None when there is none."""
    path = Path(directory) / FILE
    return read_file(path) if path.exists() else None


def read_file(path: str | os.PathLike) -> Sysctls:
    """One ``sysctl.txt``; a line that is not ``key = value`` is an InputError naming it."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(path, "not UTF-8 text", offset=exc.start) from None
    return parse_lines(lines, source=str(path))
