"""Find the inputs in what a user names: bundle directories, single files, explicit options.

A bundle (the layout of ``samples/``, see docs/bundle.md) holds captures and logs at its top
level, found by content; ``ip/<moment>/`` snapshot directories; three metadata files read by
name: ``btime`` (boot time, epoch seconds), ``changes.log`` and ``scenario.json``; and the
connection table ``conntrack.txt`` (``conntrack -L``; also found by content when named as a
file); rulesets and sysctls at the top (``sysctl.txt``, ``iptables-save.txt``, ``nft-ruleset.txt``,
...: the state at the start, as ``nicpath collect`` writes them). Anything else is listed as
ignored with a reason, never dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import CAPTURE_FORMATS, CONNTRACK_FORMAT, IP_FORMATS, LOG_FORMAT, sniff

CONNTRACK_FILES = {"conntrack.txt", "conntrack.txt.gz"}
#: Rulesets and sysctls at the top of a bundle (``nicpath collect`` takes them at the start);
#: read as the host's state from the start of the bundle, beside the ``ip/<moment>/`` ones.
STATE_FILES = {
    "sysctl.txt",
    "iptables-save.txt",
    "ip6tables-save.txt",
    "nft-ruleset.txt",
    "iptables.txt",
    "ip6tables.txt",
    "nft.txt",
}
METADATA_FILES = {"btime", "changes.log", "scenario.json", "taken_at", "manifest.json"}
DOC_SUFFIXES = {".md", ".txt", ".rst"}


@dataclass
class InputFile:
    path: str
    format: str
    iface: str | None = None  # card name given by the user (IFACE=FILE) for a per-card pcap


@dataclass
class Inputs:
    """Everything one analysis reads, sorted into kinds."""

    captures: list[InputFile] = field(default_factory=list)
    logs: list[InputFile] = field(default_factory=list)
    ip_dirs: list[str] = field(default_factory=list)
    conntrack: list[str] = field(default_factory=list)
    state_dirs: list[str] = field(default_factory=list)
    boot_time: float | None = None
    boot_time_source: str | None = None
    changes: list[tuple[float, str]] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.captures or self.logs)


def read_btime(path: str | os.PathLike) -> float:
    text = Path(path).read_text().strip()
    try:
        return float(text.split()[-1])
    except (ValueError, IndexError):
        raise InputError(
            path, f"btime must hold epoch seconds, got {text[:40]!r}", record=1, unit="line"
        ) from None


def read_changes(path: str | os.PathLike) -> list[tuple[float, str]]:
    """``changes.log``: one ``EPOCH<TAB>command`` line per mid-flow change."""
    out = []
    for no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        stamp, _, command = line.partition("\t")
        try:
            out.append((float(stamp), command.strip()))
        except ValueError:
            raise InputError(
                path, f"expected EPOCH<TAB>command, got {line[:60]!r}", record=no, unit="line"
            ) from None
    return out


def _add_file(inputs: Inputs, path: str, iface: str | None = None) -> None:
    fmt = sniff(path)
    if fmt in CAPTURE_FORMATS:
        inputs.captures.append(InputFile(path, fmt, iface))
    elif fmt == LOG_FORMAT:
        inputs.logs.append(InputFile(path, fmt))
    elif fmt == CONNTRACK_FORMAT:
        inputs.conntrack.append(path)
    elif fmt in IP_FORMATS:
        parent = os.path.dirname(path) or "."
        if parent not in inputs.ip_dirs:
            inputs.ip_dirs.append(parent)


def _add_bundle(inputs: Inputs, root: str) -> None:
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = os.path.join(root, entry.name)
        if entry.is_dir():
            if entry.name == "ip":
                inputs.ip_dirs.append(path)
            else:
                inputs.ignored.append((path, "subdirectory that is not ip/"))
            continue
        if entry.name == "btime":
            inputs.boot_time = read_btime(path)
            inputs.boot_time_source = path
        elif entry.name == "changes.log":
            inputs.changes.extend(read_changes(path))
        elif entry.name == "scenario.json":
            inputs.scenarios.append(path)
        elif entry.name in CONNTRACK_FILES:
            inputs.conntrack.append(path)
        elif entry.name in STATE_FILES:
            if root not in inputs.state_dirs:
                inputs.state_dirs.append(root)
        elif entry.name in METADATA_FILES or Path(entry.name).suffix in DOC_SUFFIXES:
            inputs.ignored.append((path, "bundle metadata or documentation"))
        elif entry.stat().st_size == 0:
            inputs.ignored.append((path, "empty file"))
        else:
            try:
                _add_file(inputs, path)
            except InputError as exc:
                if "unrecognised content" not in exc.message:
                    raise
                inputs.ignored.append((path, "unrecognised content"))


def collect(
    paths: list[str] | tuple[str, ...] = (),
    *,
    pcaps: list[tuple[str, str]] | tuple = (),
    logs: list[str] | tuple = (),
    ip_dirs: list[str] | tuple = (),
    boot_time: float | None = None,
) -> Inputs:
    """Sort bundle directories, single files and explicit inputs into an ``Inputs``.

    ``pcaps`` are ``(iface, file)`` pairs from ``--pcap IFACE=FILE``. Raises InputError for a path
    that does not exist or when nothing readable is found.
    """
    inputs = Inputs()
    for p in paths:
        if not os.path.exists(p):
            raise InputError(p, "no such file or directory")
        if os.path.isdir(p):
            _add_bundle(inputs, p)
        else:
            _add_file(inputs, p)
    for iface, p in pcaps:
        if not os.path.exists(p):
            raise InputError(p, "no such file")
        fmt = sniff(p)
        if fmt not in CAPTURE_FORMATS:
            raise InputError(p, f"--pcap expects a capture, this is {fmt}")
        inputs.captures.append(InputFile(p, fmt, iface))
    for p in logs:
        if not os.path.exists(p):
            raise InputError(p, "no such file")
        inputs.logs.append(InputFile(p, LOG_FORMAT))
    for p in ip_dirs:
        if not os.path.isdir(p):
            raise InputError(p, "--ip expects a directory of ip snapshots")
        inputs.ip_dirs.append(p)
    if boot_time is not None:
        inputs.boot_time = boot_time
        inputs.boot_time_source = "--boot-time"
    if not inputs:
        names = ", ".join(paths) or "the given inputs"
        raise InputError(names, "holds no capture or kernel log that nicpath can read")
    return inputs
