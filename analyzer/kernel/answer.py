"""The question ``ip route get`` is asked and the answer it gives, with the text forms of rules
and routes as ``ip`` prints them: what the rest of nicpath reads of a route lookup."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..errors import QueryError
from ..render import ts_text
from ..sources.bundle import is_clock_time
from ..sources.ipsnap import Route, Rule, ipproto_number

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The errors ``ip route get`` reports, by errno name, with the text it prints.
ERRORS = {
    "ENETUNREACH": "Network is unreachable",
    "EHOSTUNREACH": "No route to host",
    "EACCES": "Permission denied",
    "EINVAL": "Invalid argument",
    "EMSGSIZE": "Message too long",
    "ENODEV": "No such device",
}
TABLE_NAMES = {"0": "unspec", "253": "default", "254": "main", "255": "local"}
#: Protocol names as ``ip`` prints them.
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "ipv6-icmp", 132: "sctp"}


def table_name(table: str | int | None) -> str:
    """``254`` and ``main`` are one table; so are 255/local, 253/default."""
    text = str(table if table is not None else "main")
    return TABLE_NAMES.get(text, text)


@dataclass(frozen=True)
class Query:
    """One ``ip route get`` question. ``src`` is ``from``; ``iif`` makes it an input lookup
    (a packet arriving on that card), otherwise the packet is sent by this host."""

    to: str
    src: str | None = None
    iif: str | None = None
    oif: str | None = None
    mark: int = 0
    ipproto: int = 0
    sport: int = 0
    dport: int = 0
    tos: int = 0
    uid: int = 0

    @classmethod
    def parse(
        cls,
        to: str,
        src: str | None = None,
        *,
        iif: str | None = None,
        oif: str | None = None,
        mark: str | int | None = None,
        proto: str | int | None = None,
        sport: int | None = None,
        dport: int | None = None,
        tos: str | int | None = None,
        uid: int | None = None,
    ) -> Query:
        """A query from the words a user types (``--mark 0x10``, ``--proto tcp``); QueryError
        names what is wrong."""
        dst = _address(to, "destination")
        if src is not None and _address(src, "source").version != dst.version:
            raise QueryError(f"source {src} and destination {to} are not of one IP version")
        try:
            mark_n = int(str(mark), 0) if mark is not None else 0
            tos_n = int(str(tos), 0) if tos is not None else 0
        except ValueError:
            raise QueryError(
                f"mark and tos are numbers (0x10 or 16), got {mark!r}/{tos!r}"
            ) from None
        try:
            proto_n = ipproto_number(proto) if proto is not None else 0
        except ValueError:
            raise QueryError(f"unknown protocol {proto!r} (tcp, udp, icmp, or a number)") from None
        for name, value, top in (
            ("mark", mark_n, 2**32 - 1),
            ("tos", tos_n, 255),
            ("proto", proto_n, 255),
            ("sport", sport or 0, 65535),
            ("dport", dport or 0, 65535),
            ("uid", uid or 0, 2**32 - 1),
        ):
            if not 0 <= value <= top:
                raise QueryError(f"{name} {value} is out of range (0..{top})")
        return cls(
            str(dst),
            str(_address(src, "source")) if src else None,
            iif,
            oif,
            mark_n,
            proto_n,
            sport or 0,
            dport or 0,
            tos_n,
            uid or 0,
        )

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.to).version

    def words(self) -> str:
        """The query as ``ip route get`` arguments."""
        out = [self.to]
        for name, value in (("from", self.src), ("iif", self.iif), ("oif", self.oif)):
            if value:
                out += [name, value]
        if self.mark:
            out += ["mark", hex(self.mark)]
        if self.ipproto:
            out += ["ipproto", PROTOCOL_NAMES.get(self.ipproto, str(self.ipproto))]
        for name, value in (("sport", self.sport), ("dport", self.dport)):
            if value:
                out += [name, str(value)]
        if self.tos:
            out += ["tos", hex(self.tos)]
        if self.uid:
            out += ["uid", str(self.uid)]
        return " ".join(out)


def _address(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise QueryError(f"{what} {text!r} is not an IPv4 or IPv6 address") from None


@dataclass(frozen=True)
class Path:
    """One nexthop the answer may use, with the source address a packet through it gets."""

    dev: str | None
    gateway: str | None
    weight: int = 1
    src: str | None = None
    prefsrc: str | None = None  # the src as ip route get prints it


@dataclass
class RouteAnswer:
    """What the kernel answers: a route (type, card, gateway, source, table, and the rule and
    route that chose it) or an error (``error`` errno name, ``error_text`` as ``ip`` prints it,
    and the rule or route that gave it, when one did)."""

    query: Query
    snapshot: str = ""
    taken_at: float | None = None
    type: str | None = None
    dev: str | None = None
    gateway: str | None = None
    src: str | None = None  # the source a packet of this query carries (output lookups)
    prefsrc: str | None = None  # the ``src`` ip route get prints
    table: str | None = None
    rule: Rule | None = None
    route: Route | None = None
    error: str | None = None
    paths: tuple[Path, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_text(self) -> str | None:
        return ERRORS.get(self.error, self.error) if self.error else None

    @property
    def multipath(self) -> bool:
        return len(self.paths) > 1

    def text(self) -> str:
        """Like ``ip route get``, then the rule and the route that decided."""
        q = self.query
        if self.error:
            lines = [f"{q.words()}: {self.error_text} ({self.error})"]
        else:
            words = [] if self.type in (None, "unicast") else [self.type]
            words.append(q.to)
            if q.src:
                words += ["from", q.src]
            if self.gateway:
                words += ["via", self.gateway]
            if self.dev:
                words += ["dev", self.dev]
            if self.table and self.table != "main":
                words += ["table", self.table]
            if self.prefsrc:
                words += ["src", self.prefsrc]
            if q.mark:
                words += ["mark", hex(q.mark)]
            if q.iif:
                words += ["iif", q.iif]
            lines = [" ".join(words)]
            if self.multipath:
                lines.append("    multipath: the kernel hashes each flow onto one of:")
                lines += [
                    f"      via {p.gateway or '-'} dev {p.dev} weight {p.weight} src {p.src}"
                    for p in self.paths
                ]
        if self.rule is not None:
            lines.append(f"    rule   {rule_text(self.rule)}")
        if self.route is not None:
            lines.append(f"    route  {route_text(self.route)}")
        lines += [f"    note   {n}" for n in self.notes]
        lines.append(f"    from   snapshot {self.snapshot}{_taken_text(self.taken_at)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        return {
            "query": {
                "to": q.to,
                "from": q.src,
                "iif": q.iif,
                "oif": q.oif,
                "mark": q.mark,
                "proto": q.ipproto,
                "sport": q.sport,
                "dport": q.dport,
                "tos": q.tos,
                "uid": q.uid,
            },
            "snapshot": self.snapshot,
            "taken_at": self.taken_at if _is_time(self.taken_at) else None,
            "type": self.type,
            "dev": self.dev,
            "gateway": self.gateway,
            "src": self.src,
            "prefsrc": self.prefsrc,
            "table": self.table,
            "error": self.error,
            "error_text": self.error_text,
            "rule": rule_dict(self.rule),
            "route": route_dict(self.route),
            "multipath": self.multipath,
            "paths": [
                {"dev": p.dev, "gateway": p.gateway, "weight": p.weight, "src": p.src}
                for p in self.paths
            ],
            "notes": list(self.notes),
        }


def _is_time(taken_at: float | None) -> bool:
    return taken_at is not None and is_clock_time(taken_at)


def _taken_text(taken_at: float | None) -> str:
    """When the snapshot was taken, for its answer; a snapshot built by hand or read back from
    a table may hold a time no clock shows (the readers give None for such a ``taken_at``)."""
    if taken_at is None:
        return ""
    if not is_clock_time(taken_at):
        return f" (taken_at {taken_at!r} is not a time between 1677 and 2262)"
    return f" (taken {ts_text(round(taken_at * 1e9))})"


def rule_text(rule: Rule) -> str:
    """A rule as ``ip rule`` prints it."""
    raw = rule.raw.get("text") if isinstance(rule.raw, dict) else None
    if raw:
        return " ".join(raw.split())
    sel = rule.selectors
    words = [f"{rule.priority}:"]
    if sel.get("not"):
        words.append("not")
    words += ["from", _prefix_text(sel, "src")]
    if "dst" in sel:
        words += ["to", _prefix_text(sel, "dst")]
    if "tos" in sel:
        words += ["tos", hex(sel["tos"])]
    if "fwmark" in sel:
        mask = sel.get("fwmask", 0xFFFFFFFF)
        words += ["fwmark", hex(sel["fwmark"]) + ("" if mask == 0xFFFFFFFF else f"/{mask:#x}")]
    for key in ("iif", "oif"):
        if key in sel:
            words += [key, sel[key]] + (["[detached]"] if sel.get(f"{key}_detached") else [])
    if "uidrange" in sel:
        words += ["uidrange", "{}-{}".format(*sel["uidrange"])]
    if "ipproto" in sel:
        words += ["ipproto", PROTOCOL_NAMES.get(sel["ipproto"], f"ipproto-{sel['ipproto']}")]
    for key in ("sport", "dport"):
        if key in sel:
            low, high = sel[key]
            words += [key, str(low) if low == high else f"{low}-{high}"]
    if rule.action == "table":
        words += ["lookup", rule.table or "main"]
    elif rule.action == "goto":
        words += ["goto", str(rule.goto)]
    else:
        words.append(rule.action)
    if rule.suppress_prefixlength is not None:
        words += ["suppress_prefixlength", str(rule.suppress_prefixlength)]
    if rule.suppress_ifgroup is not None:
        words += ["suppress_ifgroup", rule.suppress_ifgroup]
    return " ".join(words)


def _prefix_text(sel: dict, key: str) -> str:
    if key not in sel:
        return "all"
    full = 128 if ":" in sel[key] else 32
    plen = sel.get(f"{key}len", full)
    return sel[key] if plen == full else f"{sel[key]}/{plen}"


def route_text(route: Route) -> str:
    """A route as ``ip route show table all`` prints it."""
    raw = route.raw.get("text") if isinstance(route.raw, dict) else None
    if raw:
        return " ".join(raw.split())
    words = [] if route.type == "unicast" else [route.type]
    words.append(route.dst)
    if route.tos:
        words += ["tos", hex(route.tos)]
    if route.gateway:
        words += ["via", route.gateway]
    if route.dev and not route.nexthops:
        words += ["dev", route.dev]
    if table_name(route.table) != "main":
        words += ["table", route.table]
    for key, value in (("proto", route.protocol), ("scope", route.scope)):
        if value:
            words += [key, value]
    if route.prefsrc:
        words += ["src", route.prefsrc]
    if route.metric or route.family == 6:
        words += ["metric", str(route.metric)]
    words += list(route.flags)
    for hop in route.nexthops:
        words += [
            "nexthop",
            "via",
            hop.gateway or "-",
            "dev",
            str(hop.dev),
            "weight",
            str(hop.weight),
        ]
    return " ".join(words)


def rule_dict(rule: Rule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {
        "priority": rule.priority,
        "action": rule.action,
        "table": rule.table,
        "text": rule_text(rule),
    }


def route_dict(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {
        "dst": route.dst,
        "table": table_name(route.table),
        "type": route.type,
        "dev": route.dev,
        "gateway": route.gateway,
        "prefsrc": route.prefsrc,
        "metric": route.metric,
        "text": route_text(route),
    }
