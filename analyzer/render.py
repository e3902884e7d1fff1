"""Readable one-line forms of events and addresses, shared by every text output."""

from __future__ import annotations

import datetime as dt

from .schema import addr_text

PROTO_NAMES = {
    1: "icmp",
    6: "tcp",
    17: "udp",
    58: "icmp6",
    132: "sctp",
    136: "udplite",
    50: "esp",
    51: "ah",
    47: "gre",
}
TCP_FLAG_NAMES = (
    (0x02, "SYN"),
    (0x01, "FIN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x10, "ACK"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
    (0x100, "AE"),
)


ARP_OPS = {1: "request", 2: "reply"}


def proto_name(proto: int | None) -> str:
    if proto is None:
        return "-"
    return PROTO_NAMES.get(proto, str(proto))


def tcp_flags_text(flags: int | None) -> str:
    """Flag names in the order a network engineer reads them (SYN,ACK; PSH,ACK; RST)."""
    if flags is None:
        return ""
    names = [name for bit, name in TCP_FLAG_NAMES if flags & bit]
    return ",".join(names)


def ts_text(ns: int) -> str:
    stamp = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000 // 1000:06d}Z"


def endpoint(addr: bytes | str | None, port: int | None) -> str:
    """``10.0.0.1:80`` or ``[fd00::1]:80``; the address as column bytes or as text."""
    text = (addr_text(addr) if isinstance(addr, bytes) else addr) or "?"
    if port is None or port != port:  # None or NaN
        return text
    return f"[{text}]:{int(port)}" if ":" in text else f"{text}:{int(port)}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 finding``, ``2 findings``: every count a sentence gives, with its noun agreeing.

    >>> count(1, "reply", "replies"), count(3, "reply", "replies")
    ('1 reply', '3 replies')
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
