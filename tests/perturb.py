"""Real bundles made messy: a sample's kernel log rendered on a clock that is off, and bundles
holding one capture form with one or several renderings.

The renderings are rebuilt from the sample's own lines (the lab wrote every rendering from one
read of /dev/kmsg), so a shifted log holds exactly the messages of the real one, only stamped by
a clock ``seconds`` away from the capture's, as a journal read late, a ``dmesg -T`` computed from
a whole-second boot time or a syslog forwarded from another host are.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path

JOURNAL = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})\+0000 (.*)$")
DMESG = re.compile(r"^\[\s*(\d+\.\d{6})\] (.*)$")
#: The capture forms of a lab bundle: files by form.
FORMS = ("cards", "any", "pcapng")


def _stamp(line: str) -> tuple[float, str]:
    m = JOURNAL.match(line)
    when = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC)
    return when.timestamp(), m.group(2)


def journal(bundle: Path, seconds: float) -> str:
    """``kern.journal`` with every stamp moved by ``seconds`` (short-iso, microseconds)."""
    out = []
    for line in (bundle / "kern.journal").read_text().splitlines():
        ts, rest = _stamp(line)
        when = dt.datetime.fromtimestamp(round((ts + seconds) * 1e6) / 1e6, dt.UTC)
        out.append(f"{when:%Y-%m-%dT%H:%M:%S.%f}+0000 {rest}")
    return "\n".join(out) + "\n"


def syslog(bundle: Path, seconds: float) -> str:
    """The rsyslog rendering (whole seconds, no year) of the journal moved by ``seconds``."""
    out = []
    for line in (bundle / "kern.journal").read_text().splitlines():
        ts, rest = _stamp(line)
        when = dt.datetime.fromtimestamp(int(ts + seconds), dt.UTC)
        out.append(f"{when:%b} {when.day:2d} {when:%H:%M:%S} {rest}")
    return "\n".join(out) + "\n"


def dmesg_t(bundle: Path, seconds: float) -> str:
    """``dmesg -T``: boot time (btime) + uptime, whole seconds, moved by ``seconds`` (UTC)."""
    boot = float((bundle / "btime").read_text().split()[-1])
    out = []
    for line in (bundle / "kern.dmesg").read_text().splitlines():
        m = DMESG.match(line)
        when = dt.datetime.fromtimestamp(int(boot + float(m.group(1)) + seconds), dt.UTC)
        out.append(f"[{when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}] {m.group(2)}")
    return "\n".join(out) + "\n"


def capture_files(bundle: Path, form: str) -> list[Path]:
    if form == "any":
        return [bundle / "any.pcap"]
    if form == "pcapng":
        return [bundle / "all.pcapng"]
    return sorted(p for p in bundle.glob("*.pcap") if p.name != "any.pcap")


def variant(
    bundle: Path,
    dest: Path,
    *,
    form: str = "cards",
    logs: dict[str, str | Path] | None = None,
    btime: str | None = None,
) -> Path:
    """A bundle at ``dest`` holding ``bundle``'s captures of one form, its ip snapshots and
    kernel-state files, and the given ``logs`` (file name -> text, or a file to link)."""
    dest.mkdir(parents=True)
    for path in capture_files(bundle, form):
        os.symlink(path.resolve(), dest / path.name)
    for name in ("ip", "changes.log", "conntrack.txt"):
        if (bundle / name).exists():
            os.symlink((bundle / name).resolve(), dest / name)
    if btime is not None:
        (dest / "btime").write_text(btime)
    elif (bundle / "btime").exists():
        shutil.copy(bundle / "btime", dest / "btime")
    for name, content in (logs or {}).items():
        if isinstance(content, Path):
            os.symlink(content.resolve(), dest / name)
        else:
            (dest / name).write_text(content)
    return dest
