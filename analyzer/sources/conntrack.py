"""``conntrack -L`` output: the kernel's connection table, each entry with its NAT mapping.

One entry per line (conntrack-tools; ``-o extended`` puts the family first, ``-o id`` appends
``id=``)::

    [ipv4     2] tcp      6 431999 ESTABLISHED src=A dst=B sport=P dport=Q [UNREPLIED]
        src=B' dst=A' sport=Q' dport=P' [ASSURED] mark=0 [zone=N] use=1

The first tuple is the original direction, as the initiator sent it; the second is the reply
direction as the peer sends it, so its reverse is the original direction after NAT (F5: the
mapping conntrack applies to every packet of the connection). ICMP tuples carry ``type= code=
id=`` instead of ports; the echo id stands for both ports, as in nicpath's flows.

conntrack prints its count line (``conntrack v1.4.7 (conntrack-tools): 3 flow entries have been
shown.``) on stderr: saved with ``2>&1`` it lands anywhere, often on the first line. It, the
other messages of conntrack-tools, comment lines (``# conntrack -L at ...``) and blank lines are
counted as skipped; any other line that is not an entry makes the file unreadable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from ..errors import InputError
from .base import SourceReport
from .capture import read_bytes

#: The summary conntrack prints (on stderr, but often captured with ``2>&1``).
SUMMARY = re.compile(r"^conntrack v\S+ \(conntrack-tools\): \d+ flow entries have been shown\.$")
#: Any other message of conntrack-tools (``Operation failed: ...``).
TOOL_MESSAGE = re.compile(r"^conntrack v\S+ \(conntrack-tools\): (.*)$")
ENTRY = re.compile(r"^(?:(ipv4|ipv6)\s+\d+\s+)?([a-z0-9-]+)\s+(\d+)\s+(\d+)\s+(.*)$")
TCP_STATES = {
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
    # SCTP / DCCP states print the same way
    "COOKIE_WAIT",
    "COOKIE_ECHOED",
    "SHUTDOWN_SENT",
    "SHUTDOWN_RECD",
    "SHUTDOWN_ACK_SENT",
    "HEARTBEAT_SENT",
    "REQUEST",
    "RESPOND",
    "PARTOPEN",
    "OPEN",
    "CLOSEREQ",
    "CLOSING",
    "TIMEWAIT",
}


@dataclass(frozen=True, slots=True)
class Tuple:
    """One direction of a connection: addresses as text, ports (ICMP: the echo id) or None."""

    src: str
    dst: str
    sport: int | None
    dport: int | None

    def reverse(self) -> Tuple:
        return Tuple(self.dst, self.src, self.dport, self.sport)


@dataclass(frozen=True, slots=True)
class ConntrackEntry:
    """One connection: ``original`` as its initiator sent it, ``reply`` as the peer answers."""

    proto: str
    protonum: int
    timeout: int
    state: str | None
    original: Tuple
    reply: Tuple
    flags: tuple[str, ...]
    mark: int | None
    zone: int | None
    line: int
    text: str

    @property
    def translated(self) -> Tuple:
        """The original direction after NAT: what the initiator's packets look like once
        conntrack has rewritten them (the reply tuple reversed)."""
        return self.reply.reverse()

    @property
    def snat(self) -> bool:
        return (self.original.src, self.original.sport) != (self.reply.dst, self.reply.dport)

    @property
    def dnat(self) -> bool:
        return (self.original.dst, self.original.dport) != (self.reply.src, self.reply.sport)

    @property
    def is_translated(self) -> bool:
        return self.snat or self.dnat


def looks_like_conntrack(head: bytes) -> bool:
    """True when the first line of ``head`` that is not blank or a comment is a conntrack
    entry or a message of conntrack-tools (its count line)."""
    for raw in head.decode("utf-8", "replace").splitlines()[:10]:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = ENTRY.match(line)
        return bool(TOOL_MESSAGE.match(line) or (m and "src=" in line and "dst=" in line))
    return False


def _addr(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _tuples(words: list[str]) -> tuple[list[dict[str, str]], list[str], dict[str, str]]:
    """Split the key=value words into the two tuples, the bracketed flags and the rest."""
    tuples: list[dict[str, str]] = []
    flags: list[str] = []
    rest: dict[str, str] = {}
    for word in words:
        if word.startswith("[") and word.endswith("]"):
            flags.append(word[1:-1])
            continue
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"unexpected word {word!r}")
        if key == "src":
            tuples.append({})
        if key in ("src", "dst", "sport", "dport", "type", "code", "id") and tuples:
            if key in tuples[-1] and key != "id":
                raise ValueError(f"{key}= twice in one tuple")
            tuples[-1].setdefault(key, value)
        else:
            rest[key] = value
    return tuples, flags, rest


def _tuple(d: dict[str, str]) -> Tuple:
    if "src" not in d or "dst" not in d:
        raise ValueError("a tuple without src= and dst=")
    if "sport" in d or "dport" in d:
        return Tuple(_addr(d["src"]), _addr(d["dst"]), int(d["sport"]), int(d["dport"]))
    echo = int(d["id"]) if "id" in d else None
    return Tuple(_addr(d["src"]), _addr(d["dst"]), echo, echo)


def parse_lines(lines: list[str], *, source: str) -> tuple[list[ConntrackEntry], SourceReport]:
    """Entries of ``conntrack -L`` lines; a line that is none of the skipped kinds and not an
    entry is an InputError naming the line."""
    report = SourceReport(path=source, format="conntrack")
    entries: list[ConntrackEntry] = []
    for no, raw in enumerate(lines, 1):
        report.records += 1
        line = raw.strip()
        if not line:
            report.skip("empty line")
            continue
        if line.startswith("#"):
            report.skip("comment line")
            continue
        if SUMMARY.match(line):
            report.skip("conntrack summary line")
            continue
        message = TOOL_MESSAGE.match(line)
        if message:
            report.skip("conntrack-tools message")
            report.warnings.append(f"line {no}: conntrack said {message.group(1)!r}")
            continue
        m = ENTRY.match(line)
        try:
            if not m:
                raise ValueError("expected 'PROTO NUMBER TIMEOUT [STATE] src=... dst=...'")
            words = m.group(5).split()
            state = words.pop(0) if words and words[0] in TCP_STATES else None
            tuples, flags, rest = _tuples(words)
            if len(tuples) != 2:
                raise ValueError(f"expected an original and a reply tuple, found {len(tuples)}")
            entry = ConntrackEntry(
                proto=m.group(2),
                protonum=int(m.group(3)),
                timeout=int(m.group(4)),
                state=state,
                original=_tuple(tuples[0]),
                reply=_tuple(tuples[1]),
                flags=tuple(flags),
                mark=int(rest["mark"], 0) if "mark" in rest else None,
                zone=int(rest["zone"]) if "zone" in rest else None,
                line=no,
                text=line,
            )
        except ValueError as exc:
            raise InputError(
                source, f"not a conntrack -L entry: {exc}: {line[:80]!r}", record=no, unit="line"
            ) from None
        entries.append(entry)
        report.used += 1
    report.detail["translated"] = sum(e.is_translated for e in entries)
    return entries, report


def read(path: str | os.PathLike) -> tuple[list[ConntrackEntry], SourceReport]:
    """Read a ``conntrack -L`` file (plain or gzip).

    >>> entries, report = read("samples/nat_pinned/conntrack.txt")  # doctest: +SKIP
    >>> [e.translated.src for e in entries if e.snat]  # doctest: +SKIP
    ['172.16.70.21', '172.16.70.22', '172.16.70.21']
    """
    spath = str(path)
    try:
        text = read_bytes(spath).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(spath, "not UTF-8 text", offset=exc.start) from None
    return parse_lines(text.splitlines(), source=spath)
