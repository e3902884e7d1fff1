"""Find the inputs in what a user names: bundle directories, single files, explicit options.

A bundle (the layout of ``samples/``, see docs/bundle.md) holds captures and logs at its top
level, found by content; ``ip/<moment>/`` snapshot directories; three metadata files read by
name: ``btime`` (boot time, epoch seconds), ``changes.log`` and ``scenario.json``; and the
connection table ``conntrack.txt`` (``conntrack -L``; any ``conntrack*.txt``, and any other file
whose content is ``conntrack -L``); rulesets and sysctls at the top (``sysctl.txt``,
``iptables-save.txt``, ``nft-ruleset.txt``, ...: the state at the start, as ``nicpath collect``
writes them). Anything else is listed as ignored with a reason, never dropped silently.

Only captures and kernel logs are needed. An optional input that cannot be read (a malformed
``btime`` or ``changes.log``, a ruleset, sysctl, conntrack or ip snapshot file a reader rejects)
is listed in ``Inputs.unreadable`` with why, and the analysis goes on without it.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import CAPTURE_FORMATS, CONNTRACK_FORMAT, IP_FORMATS, LOG_FORMAT, sniff

#: ``conntrack -L`` by name at the top of a bundle (``conntrack.txt``, ``conntrack-start.txt``,
#: ``conntrack-end.txt``, ...); other top-level text files are ``conntrack -L`` by content.
CONNTRACK_NAMES = ("conntrack*.txt", "conntrack*.txt.gz")
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
#: Bundle metadata that is JSON: checked to be readable, else listed as unreadable.
JSON_METADATA = {"scenario.json", "manifest.json"}
DOC_SUFFIXES = {".md", ".txt", ".rst"}
#: The range of a nanosecond time (int64): 1677-09-21 to 2262-04-11.
NS_MIN, NS_MAX = -(1 << 63), (1 << 63) - 1
#: A ``changes.log`` line: the time (ISO 8601, whose date and time a space may separate, or
#: epoch seconds), then a tab or any run of spaces, then the command.
CHANGE_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?|\S+)"
    r"(?:\s+(?P<command>.*))?$"
)


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
    #: Optional inputs that could not be read, with why: the analysis went on without them.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.captures or self.logs)

    def list_unreadable(self, path: str, reason: str) -> None:
        """List an optional input that could not be read, once: the ip snapshots and sysctls
        are read by more than one stage."""
        if all(listed != path for listed, _ in self.unreadable):
            self.unreadable.append((path, reason))


def unreadable_entry(path: str | os.PathLike, exc: InputError | OSError) -> tuple[str, str]:
    """(file, why) of an input that could not be read: the line or byte where one is known."""
    if isinstance(exc, InputError):
        where = [f"{exc.unit} {exc.record}"] if exc.record is not None else []
        if exc.offset is not None:
            where.append(f"byte offset {exc.offset}")
        return exc.path, f"{', '.join(where)}: {exc.message}" if where else exc.message
    return str(path), exc.strerror or str(exc)


def _text(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, "not UTF-8 text", offset=exc.start) from None


def is_clock_time(seconds: float) -> bool:
    """True when epoch seconds are a time the event table's nanosecond clock holds (1677-09-21
    to 2262-04-11): a boot time or a snapshot time outside it would overflow every time
    computed from it, so it is no time at all."""
    ns = seconds * 1e9
    return math.isfinite(ns) and NS_MIN <= round(ns) <= NS_MAX


def read_btime(path: str | os.PathLike) -> float:
    """``btime``: the boot time in epoch seconds (``/proc/stat``'s ``btime N`` line or N)."""
    text = _text(path).strip()
    try:
        value = float(text.split()[-1])
    except (ValueError, IndexError):
        raise InputError(
            path, f"btime must hold epoch seconds, got {text[:40]!r}", record=1, unit="line"
        ) from None
    if not is_clock_time(value):
        raise InputError(
            path,
            f"btime {text.split()[-1][:40]!r} is not a time between 1677 and 2262",
            record=1,
            unit="line",
        )
    return value


def _change_time(stamp: str) -> float:
    """Epoch seconds of a ``changes.log`` time: a number, or ISO 8601 (without a zone, UTC)."""
    try:
        value = float(stamp)
    except ValueError:
        when = dt.datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    if not math.isfinite(value):
        raise ValueError(stamp)
    return value


def read_changes(path: str | os.PathLike) -> list[tuple[float, str]]:
    """``changes.log``: one ``TIME<TAB>command`` line per mid-flow change; any run of spaces
    may stand for the tab, and the time may be ISO 8601 instead of epoch seconds."""
    out = []
    for no, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        m = CHANGE_LINE.match(line.strip())
        try:
            when = _change_time(m["time"])
        except ValueError:
            raise InputError(
                path,
                f"expected TIME<TAB>command (epoch seconds or ISO 8601), got {line[:60]!r}",
                record=no,
                unit="line",
            ) from None
        if not is_clock_time(when):
            raise InputError(
                path,
                f"{m['time'][:40]!r} is not a time between 1677 and 2262",
                record=no,
                unit="line",
            )
        out.append((when, (m["command"] or "").strip()))
    return out


def check_json(path: str | os.PathLike) -> None:
    """Raise InputError unless ``path`` holds one JSON document (scenario.json, manifest.json)."""
    try:
        json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(
            path, f"not valid JSON: {exc.msg}", record=exc.lineno, unit="line"
        ) from None
    except RecursionError:
        raise InputError(path, "JSON nested too deep to read") from None


def _is_conntrack(path: str) -> bool:
    """True when a text file that is not named like one holds ``conntrack -L``."""
    try:
        return sniff(path) == CONNTRACK_FORMAT
    except InputError:
        return False


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
        try:
            if _add_optional(inputs, root, entry.name, path):
                continue
        except (InputError, OSError) as exc:
            inputs.list_unreadable(*unreadable_entry(path, exc))
            continue
        if entry.name in METADATA_FILES or Path(entry.name).suffix in DOC_SUFFIXES:
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


def _add_optional(inputs: Inputs, root: str, name: str, path: str) -> bool:
    """Take a top-level file that is an optional input (metadata, conntrack, state), found by
    its name or, for a text file, as ``conntrack -L`` by its content; False for any other.
    Raises InputError or OSError when it cannot be read."""
    if name == "btime":
        inputs.boot_time = read_btime(path)
        inputs.boot_time_source = path
    elif name == "changes.log":
        inputs.changes.extend(read_changes(path))
    elif name in JSON_METADATA:
        check_json(path)
        if name == "scenario.json":
            inputs.scenarios.append(path)
        else:
            inputs.ignored.append((path, "bundle metadata or documentation"))
    elif any(fnmatch.fnmatchcase(name, pattern) for pattern in CONNTRACK_NAMES):
        inputs.conntrack.append(path)
    elif name in STATE_FILES:
        if root not in inputs.state_dirs:
            inputs.state_dirs.append(root)
    elif Path(name).suffix == ".txt" and _is_conntrack(path):
        inputs.conntrack.append(path)
    else:
        return False
    return True


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
