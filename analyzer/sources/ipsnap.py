"""Snapshots of the host's state: ``ip -j addr/link/route/rule`` (or their plain text forms).

They say which card holds which address (``src_not_on_nic``), which MAC a card has (direction of
a per-card capture), which ifindex names which card (``tcpdump -i any``), and what the routing
said at each moment. A bundle holds one directory per moment (``ip/before/``, ``ip/after-1/``)
with a ``taken_at`` file; ``HostState.at(ts)`` gives the snapshot in force at a time.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .bundle import is_clock_time, unreadable_entry

PARTS = ("addr", "link", "route", "rule", "route6", "rule6")


@dataclass(frozen=True, slots=True)
class Link:
    ifindex: int
    name: str
    mac: str | None = None
    kind: str | None = None
    master: str | None = None
    parent: str | None = None  # the lower device of a VLAN/macvlan (`eth0.10@eth0`)
    state: str | None = None
    mtu: int | None = None
    group: str | None = None  # device group (`default` is 0); rules can suppress by group
    flags: tuple[str, ...] = ()  # UP, LOWER_UP, ... (no UP: the card is down)
    vlan_id: int | None = None  # of a VLAN device (`ip -d`): its frames carry this tag below it


@dataclass(frozen=True, slots=True)
class Address:
    ifname: str
    ifindex: int
    family: int
    address: str
    prefixlen: int
    scope: str = "global"
    secondary: bool = False
    noprefixroute: bool = False
    label: str | None = None
    #: the state flags that source address selection reads: deprecated, tentative, optimistic,
    #: dadfailed, temporary (IPv6)
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Nexthop:
    """One path of a multipath route (``nexthop via G dev D weight W``)."""

    dev: str | None
    gateway: str | None = None
    weight: int = 1
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    table: str
    type: str
    dst: str
    dev: str | None = None  # of a multipath route: its first nexthop's
    gateway: str | None = None
    prefsrc: str | None = None
    metric: int = 0
    scope: str | None = None
    protocol: str | None = None
    raw: dict = field(default_factory=dict, compare=False, hash=False)
    nexthops: tuple[Nexthop, ...] = ()  # multipath routes only
    tos: int = 0
    flags: tuple[str, ...] = ()  # onlink, linkdown, dead, ...
    pref: str | None = None  # IPv6 router preference: low, medium, high


#: What a rule's ``selectors`` may hold, normalised by both readers: ``src``/``dst`` (address)
#: with ``srclen``/``dstlen`` (int), ``iif``/``oif`` (name) with ``iif_detached``/
#: ``oif_detached`` (True when no such device exists, so the rule never matches), ``fwmark`` and
#: ``fwmask`` (int), ``ipproto`` (int), ``sport``/``dport``/``uidrange`` ((low, high)), ``tos``
#: (int), ``not`` (True: the rule matches what its selectors do not), ``l3mdev`` (True).
RULE_KEYS = (
    "src", "srclen", "dst", "dstlen", "iif", "iif_detached", "oif", "oif_detached", "fwmark",
    "fwmask", "ipproto", "sport", "dport", "uidrange", "tos", "not", "l3mdev",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rule:
    family: int
    priority: int
    selectors: dict = field(default_factory=dict, hash=False)
    action: str = "table"  # table, goto, nop, blackhole, unreachable, prohibit
    table: str | None = None
    goto: int | None = None
    suppress_prefixlength: int | None = None
    raw: dict = field(default_factory=dict, compare=False, hash=False)
    suppress_ifgroup: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The host's state at one moment."""

    moment: str
    taken_at: float | None
    links: tuple[Link, ...] = ()
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    path: str = ""
    #: ``sysctl.txt`` when the bundle has it (``net.ipv4.conf.eth1.rp_filter`` -> ``"1"``):
    #: forwarding and rp_filter decide input route lookups.
    sysctls: dict = field(default_factory=dict, compare=False)
    #: which parts the directory held (``rule6`` absent: the IPv6 rules are not known)
    parts: tuple[str, ...] = ()
    #: how ``taken_at`` was found when the moment had no ``taken_at`` file (``changes.log``,
    #: file times, the moments' order); None when the file gave it
    placed_by: str | None = None

    def link_by_index(self, index: int) -> Link | None:
        return next((link for link in self.links if link.ifindex == index), None)

    def link_by_name(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def addresses_of(self, ifname: str, include_master: bool = True) -> set[str]:
        """Addresses a card holds; a bridge/bond master's addresses count for its members."""
        names = {ifname}
        link = self.link_by_name(ifname)
        if include_master and link is not None and link.master:
            names.add(link.master)
        return {a.address for a in self.addresses if a.ifname in names}

    def macs(self) -> dict[str, str]:
        return {link.name: link.mac for link in self.links if link.mac}

    def holder_of(self, address: str) -> list[str]:
        return sorted({a.ifname for a in self.addresses if a.address == address})


@dataclass(frozen=True)
class HostState:
    """All snapshots of one host, oldest first (those without a time first)."""

    snapshots: tuple[Snapshot, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.snapshots)

    def at(self, ts: float) -> Snapshot:
        """The latest snapshot taken at or before ``ts`` (epoch seconds); before all, the first."""
        chosen = self.snapshots[0]
        for snap in self.snapshots:
            if snap.taken_at is None or snap.taken_at <= ts:
                chosen = snap
        return chosen

    def links_by_index(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for snap in self.snapshots:
            out.update({link.ifindex: link.name for link in snap.links})
        return out

    def macs(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for snap in self.snapshots:
            out.update(snap.macs())
        return out


def _family(text: str | None) -> int:
    if not text or text in ("default", "all"):
        return 4
    try:
        return ipaddress.ip_network(text.split("/")[0], strict=False).version
    except ValueError:
        return 4


def _prefix(dst: str, family: int) -> str:
    if dst in ("default", "all"):
        return "default"
    if "/" in dst:
        return dst
    return f"{dst}/{32 if family == 4 else 128}"


# --- entries that name no address -----------------------------------------------------------

#: Entries of one file left out of its moment, each as (unit, number, why): ``entry`` N of an
#: ``ip -j`` list or ``line`` N of the plain form.
Skipped = list[tuple[str, int, str]]


def _not_address(text: Any, what: str, family: int | None = None) -> str | None:
    """Why ``text`` is not an address (of ``family`` when given), or None when it is one."""
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        addr = ipaddress.ip_address(text)
    except ValueError:
        return f"{what} {text!r} is not an IP address"
    if family is not None and addr.version != family:
        return f"{what} {text} is not an IPv{family} address"
    return None


def _not_prefix(text: Any, what: str, family: int) -> str | None:
    """Why ``text`` (``ADDR/LEN``) is not an IPv``family`` prefix, or None when it is one."""
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{what} {text!r} is not an IP prefix"
    if net.version != family:
        return f"{what} {text} is not an IPv{family} prefix"
    return None


def _entry_problem(item: Address | Route | Rule) -> str | None:
    """Why an entry names something that is not an address where the route lookup needs one
    (``999.1.1.1/99``, a gateway ``x``), or None: such an entry is skipped, never looked up."""
    if isinstance(item, Address):
        what = f"{item.ifname} address"
        return _not_address(item.address, what, item.family) or _not_prefix(
            f"{item.address}/{item.prefixlen}", what, item.family
        )
    if isinstance(item, Route):
        problem = None if item.dst == "default" else _not_prefix(item.dst, "dst", item.family)
        gateways = [item.gateway, *(hop.gateway for hop in item.nexthops)]
        for gateway in (g for g in gateways if g is not None):
            problem = problem or _not_address(gateway, "gateway")
        if item.prefsrc is not None:
            problem = problem or _not_address(item.prefsrc, "prefsrc", item.family)
        return problem
    for key in ("src", "dst"):
        if key in item.selectors:
            text = f"{item.selectors[key]}/{item.selectors[key + 'len']}"
            if problem := _not_prefix(text, "from" if key == "src" else "to", item.family):
                return problem
    return None


def _keep(out: list, item: Any, skipped: Skipped, unit: str, number: int) -> None:
    """Add ``item`` to ``out``, or to ``skipped`` with why when it names no address."""
    problem = _entry_problem(item)
    if problem is None:
        out.append(item)
    else:
        skipped.append((unit, number, problem))


def _skipped_text(part: str, skipped: Skipped, kept: int) -> str:
    """One reason for a file's skipped entries: how many of how many, the first few with why."""
    plural = {"addr": "addresses", "route": "routes", "rule": "rules"}[part]
    shown = "; ".join(f"{unit} {number}: {why}" for unit, number, why in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"{len(skipped)} of {len(skipped) + kept} {plural} skipped: {shown}{more}"


# --- JSON -----------------------------------------------------------------------------------

#: Address flags that source address selection reads (RFC 6724 rules 3 and 7, DAD).
ADDR_FLAGS = ("deprecated", "tentative", "optimistic", "dadfailed", "temporary")
#: Route flags kept: a dead nexthop is skipped by the lookup; the others are reported.
ROUTE_FLAGS = ("onlink", "linkdown", "dead")
#: ``ip`` prints these protocol names in rules (iproute2 ``inet_proto_n2a``), else ``ipproto-N``.
IPPROTO = {"icmp": 1, "tcp": 6, "udp": 17, "dccp": 33, "esp": 50, "ah": 51, "ipv6-icmp": 58,
           "icmpv6": 58, "sctp": 132}  # fmt: skip


def _int(value: Any) -> int:
    """``0x10``, ``16`` or 16."""
    return value if isinstance(value, int) else int(str(value), 0)


def ipproto_number(value: Any) -> int:
    """A protocol as ``ip`` writes it (``tcp``, ``ipproto-253``, ``6``) as its number."""
    text = str(value).lower()
    if text in IPPROTO:
        return IPPROTO[text]
    return int(text.removeprefix("ipproto-"))


def _links_json(data: list) -> list[Link]:
    out = []
    for d in data:
        info = d.get("linkinfo") or {}
        kind = info.get("info_kind")
        mac = d.get("address") if d.get("link_type") in (None, "ether") else None
        vlan = (info.get("info_data") or {}).get("id") if kind == "vlan" else None
        out.append(
            Link(
                int(d["ifindex"]),
                d["ifname"],
                mac,
                kind,
                d.get("master"),
                d.get("link"),
                d.get("operstate"),
                d.get("mtu"),
                d.get("group"),
                tuple(d.get("flags", ())),
                int(vlan) if vlan is not None else None,
            )
        )
    return out


def _addrs_json(data: list, skipped: Skipped) -> list[Address]:
    out: list[Address] = []
    for no, d in enumerate(data, 1):
        for a in d.get("addr_info", []):
            if "local" not in a:
                continue
            fam = 6 if a.get("family") == "inet6" else 4
            _keep(
                out,
                Address(
                    d["ifname"],
                    int(d["ifindex"]),
                    fam,
                    a["local"],
                    int(a["prefixlen"]),
                    a.get("scope", "global"),
                    bool(a.get("secondary")),
                    bool(a.get("noprefixroute")),
                    a.get("label") if a.get("label") != d["ifname"] else None,
                    tuple(f for f in ADDR_FLAGS if a.get(f)),
                ),
                skipped,
                "entry",
                no,
            )
    return out


def _route_family(d: dict, dst: str, family: int | None) -> int:
    """IPv4 or IPv6: ``ip route show table all`` lists both, and only IPv6 routes carry ``pref``."""
    if family:
        return family
    if "pref" in d:
        return 6
    hops = [nh.get("gateway") for nh in d.get("nexthops") or []]
    for text in (dst, d.get("gateway"), d.get("prefsrc"), *hops):
        if isinstance(text, str) and text not in ("default", "all"):
            return _family(text)
    return 4


def _gateway_json(d: dict) -> str | None:
    """``gateway``, or the ``via`` object ``ip -j`` prints for a gateway of another family
    (``via inet6 fe80::1`` on an IPv4 route)."""
    via = d.get("via")
    if d.get("gateway") is None and isinstance(via, dict):
        return via.get("host")
    return d.get("gateway")


def _routes_json(data: list, family: int | None, skipped: Skipped) -> list[Route]:
    out: list[Route] = []
    for no, d in enumerate(data, 1):
        dst = d.get("dst", "default")
        if not isinstance(dst, str):
            skipped.append(("entry", no, f"dst {dst!r} is not an IP prefix"))
            continue
        fam = _route_family(d, dst, family)
        hops = tuple(
            Nexthop(
                nh.get("dev"),
                _gateway_json(nh),
                int(nh.get("weight", 1)),
                tuple(f for f in ROUTE_FLAGS if f in nh.get("flags", [])),
            )
            for nh in d.get("nexthops") or []
        )
        dev = d.get("dev")
        if dev is None and hops:
            dev = hops[0].dev
        _keep(
            out,
            Route(
                fam,
                str(d.get("table", "main")),
                d.get("type", "unicast"),
                _prefix(dst, fam),
                dev,
                _gateway_json(d),
                d.get("prefsrc"),
                int(d.get("metric", 0)),
                d.get("scope"),
                d.get("protocol"),
                d,
                hops,
                _int(d.get("tos", 0)),
                tuple(f for f in ROUTE_FLAGS if f in d.get("flags", [])),
                d.get("pref"),
            ),
            skipped,
            "entry",
            no,
        )
    return out


def _rule_selectors_json(d: dict, fam: int) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    for key in ("src", "dst"):
        if key in d and d[key] != "all":
            sel[key] = d[key]
            sel[key + "len"] = int(d.get(key + "len", 32 if fam == 4 else 128))
    for key in ("iif", "oif"):
        if key in d:
            sel[key] = d[key]
            if f"{key}_detached" in d:
                sel[f"{key}_detached"] = True
    if "fwmark" in d:
        mark = _int(d["fwmark"])
        sel["fwmark"] = mark
        sel["fwmask"] = _int(d.get("fwmask", 0xFFFFFFFF))
    if "ipproto" in d:
        sel["ipproto"] = ipproto_number(d["ipproto"])
    for key in ("sport", "dport"):
        if key in d:
            sel[key] = (int(d[key]), int(d[key]))
        elif f"{key}_start" in d:
            sel[key] = (int(d[f"{key}_start"]), int(d[f"{key}_end"]))
    if "uid_start" in d:
        sel["uidrange"] = (int(d["uid_start"]), int(d["uid_end"]))
    if "tos" in d:
        sel["tos"] = _int(d["tos"])
    for key in ("not", "l3mdev"):
        if key in d:
            sel[key] = True
    return sel


def _rules_json(data: list, family: int | None, skipped: Skipped) -> list[Rule]:
    out: list[Rule] = []
    for no, d in enumerate(data, 1):
        fam = family or _family(d.get("src") or d.get("dst"))
        if "goto" in d:
            action = "goto"
        elif "action" in d:
            action = d["action"]
        elif "table" in d:
            action = "table"
        else:
            action = "nop"
        suppress = d.get("suppress_prefixlen", d.get("suppress_prefixlength"))
        _keep(
            out,
            Rule(
                fam,
                int(d.get("priority", 0)),
                _rule_selectors_json(d, fam),
                action,
                str(d["table"]) if "table" in d else None,
                int(d["goto"]) if "goto" in d else None,
                int(suppress) if suppress is not None else None,
                d,
                str(d["suppress_ifgroup"]) if "suppress_ifgroup" in d else None,
            ),
            skipped,
            "entry",
            no,
        )
    return out


# --- plain text ---------------------------------------------------------------------------

LINK_HEAD = re.compile(r"^(\d+): ([^:@\s]+)(?:@([^:\s]+))?: <([^>]*)>(.*)$")


def _link_head(m: re.Match, path: str, no: int) -> tuple[int, str, str | None, dict]:
    rest = m.group(5).split()
    kv = {rest[i]: rest[i + 1] for i in range(0, len(rest) - 1)}
    parent = m.group(3)
    if parent and parent.startswith("if"):  # veth peer in another namespace: no parent here
        parent = None
    return int(m.group(1)), m.group(2), parent, kv


def _links_text(lines: list[str], path: str) -> list[Link]:
    out: list[Link] = []
    cur: dict[str, Any] | None = None
    for no, line in enumerate(lines, 1):
        m = LINK_HEAD.match(line)
        if m:
            if cur:
                cur.pop("details", None)
                out.append(Link(**cur))
            idx, name, parent, kv = _link_head(m, path, no)
            cur = {
                "ifindex": idx,
                "name": name,
                "parent": parent,
                "master": kv.get("master"),
                "state": kv.get("state"),
                "mtu": int(kv["mtu"]) if "mtu" in kv else None,
                "mac": None,
                "kind": None,
                "group": kv.get("group"),
                "flags": tuple(f for f in m.group(4).split(",") if f),
            }
        elif cur is not None and line.strip().startswith("link/"):
            if line.strip().startswith("link/ether"):
                cur["mac"] = line.split()[1]
            cur["details"] = True
        elif cur is not None and cur.pop("details", False):
            # ``ip -d link``: the line after link/ names the kind (veth, macvlan, bridge, ...)
            word = line.split()[0] if line.split() else ""
            if word not in NOT_KINDS and not word.endswith("_slave"):
                cur["kind"] = word
                vlan = re.search(r"\bid (\d+)", line) if word == "vlan" else None
                if vlan:
                    cur["vlan_id"] = int(vlan.group(1))
    if cur:
        cur.pop("details", None)
        out.append(Link(**cur))
    return out


#: What ``ip -d link`` may print first on the line after ``link/...`` that is not a kind.
NOT_KINDS = {"addrgenmode", "altname", "alias", "vf", "prop", "promiscuity"}


def _addrs_text(lines: list[str], path: str, skipped: Skipped) -> list[Address]:
    out: list[Address] = []
    idx, name = 0, ""
    for no, line in enumerate(lines, 1):
        m = LINK_HEAD.match(line)
        if m:
            idx, name = int(m.group(1)), m.group(2)
            continue
        words = line.split()
        if not words or words[0] not in ("inet", "inet6"):
            continue
        if not name:
            raise InputError(path, "address line before any interface line", record=no, unit="line")
        addr, _, plen = words[1].partition("/")
        scope = words[words.index("scope") + 1] if "scope" in words else "global"
        label = (
            words[-1]
            if words[0] == "inet"
            and words[-1] not in ("secondary", "noprefixroute", "dynamic", "permanent")
            else None
        )
        _keep(
            out,
            Address(
                name,
                idx,
                6 if words[0] == "inet6" else 4,
                addr,
                int(plen or (128 if words[0] == "inet6" else 32)),
                scope,
                "secondary" in words,
                "noprefixroute" in words,
                label if label != name else None,
                tuple(f for f in ADDR_FLAGS if f in words),
            ),
            skipped,
            "line",
            no,
        )
    return out


ROUTE_TYPES = {
    "local",
    "broadcast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "multicast",
    "anycast",
    "unicast",
    "nat",
}


def _via_text(words: list[str]) -> tuple[str | None, bool]:
    """The gateway after ``via``, and whether ``ip`` named its family (``via inet6 fe80::1``:
    a gateway of another family than the route's)."""
    if "via" not in words[:-1]:
        return None, False
    at = words.index("via") + 1
    if words[at] in ("inet", "inet6") and at + 1 < len(words):
        return words[at + 1], True
    return words[at], False


def _nexthop_text(words: list[str]) -> Nexthop:
    """``nexthop via 10.0.0.1 dev eth1 weight 2 onlink`` (a line under a multipath route)."""
    kv = {words[i]: words[i + 1] for i in range(1, len(words) - 1)}
    return Nexthop(
        kv.get("dev"),
        _via_text(words)[0],
        int(kv.get("weight", 1)),
        tuple(f for f in ROUTE_FLAGS if f in words),
    )


def _routes_text(lines: list[str], path: str, family: int | None, skipped: Skipped) -> list[Route]:
    out: list[Route] = []
    hops: list[Nexthop] = []
    pending: dict[str, Any] | None = None
    pending_no = 0

    def flush() -> None:
        if pending is not None:
            if hops:
                pending["nexthops"] = tuple(hops)
                pending["dev"] = pending["dev"] or hops[0].dev
            _keep(out, Route(**pending), skipped, "line", pending_no)
        hops.clear()

    for no, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if words[0] == "nexthop":
            if pending is None:
                raise InputError(path, "nexthop line before any route", record=no, unit="line")
            hops.append(_nexthop_text(words))
            continue
        flush()
        rtype = "unicast"
        if words[0] in ROUTE_TYPES:
            rtype, words = words[0], words[1:]
        dst = words[0]
        kv = {words[i]: words[i + 1] for i in range(1, len(words) - 1)}
        gateway, other_family = _via_text(words)
        via6 = ":" in (gateway or "") and not other_family
        fam = family or (6 if "pref" in kv or ":" in dst or via6 else 4)
        pending_no = no
        pending = {
            "family": fam,
            "table": kv.get("table", "main"),
            "type": rtype,
            "dst": _prefix(dst, fam),
            "dev": kv.get("dev"),
            "gateway": gateway,
            "prefsrc": kv.get("src"),
            "metric": int(kv.get("metric", 0)),
            "scope": kv.get("scope"),
            "protocol": kv.get("proto"),
            "raw": {"text": line},
            "tos": _int(kv.get("tos", kv.get("dsfield", 0))),
            "flags": tuple(f for f in ROUTE_FLAGS if f in words),
            "pref": kv.get("pref"),
        }
    flush()
    return out


def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def _rules_text(lines: list[str], path: str, family: int | None, skipped: Skipped) -> list[Rule]:
    out: list[Rule] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        prio, sep, rest = line.partition(":")
        if not sep or not prio.strip().isdigit():
            raise InputError(path, f"not an ip rule line: {line[:60]!r}", record=no, unit="line")
        words = rest.split()
        sel: dict[str, Any] = {}
        action, table, goto, suppress, ifgroup = "nop", None, None, None, None
        i = 0
        while i < len(words):
            w = words[i]
            nxt = words[i + 1] if i + 1 < len(words) else None
            if w in ("not", "l3mdev"):
                sel[w] = True
            elif w in ("from", "to") and nxt:
                key = "src" if w == "from" else "dst"
                if nxt != "all":
                    addr, _, plen = nxt.partition("/")
                    sel[key] = addr
                    sel[key + "len"] = int(plen) if plen else (128 if ":" in addr else 32)
                i += 1
            elif w == "fwmark" and nxt:
                mark, _, mask = nxt.partition("/")
                sel["fwmark"] = _int(mark)
                sel["fwmask"] = _int(mask) if mask else 0xFFFFFFFF
                i += 1
            elif w in ("iif", "oif") and nxt:
                sel[w] = nxt
                if i + 2 < len(words) and words[i + 2] == "[detached]":
                    sel[f"{w}_detached"] = True
                    i += 1
                i += 1
            elif w == "ipproto" and nxt:
                sel["ipproto"] = ipproto_number(nxt)
                i += 1
            elif w in ("sport", "dport") and nxt:
                sel[w] = _port_range(nxt)
                i += 1
            elif w == "uidrange" and nxt:
                sel["uidrange"] = _port_range(nxt)
                i += 1
            elif w in ("tos", "dsfield") and nxt:
                sel["tos"] = _int(nxt)
                i += 1
            elif w in ("lookup", "table") and nxt:
                action, table = "table", nxt
                i += 1
            elif w == "goto" and nxt:
                action, goto = "goto", int(nxt)
                i += 1
            elif w == "suppress_prefixlength" and nxt:
                suppress = int(nxt)
                i += 1
            elif w == "suppress_ifgroup" and nxt:
                ifgroup = nxt
                i += 1
            elif w in ("blackhole", "unreachable", "prohibit", "nop"):
                action = w
            i += 1
        fam = family or (6 if ":" in str(sel.get("src", "")) + str(sel.get("dst", "")) else 4)
        rule = Rule(fam, int(prio), sel, action, table, goto, suppress, {"text": line}, ifgroup)
        _keep(out, rule, skipped, "line", no)
    return out


# --- files ----------------------------------------------------------------------------------


def looks_like_ip_json(head: bytes) -> str | None:
    """Which ``ip -j`` output this is (addr, link, route, rule), or None."""
    text = head.lstrip()
    if not text.startswith(b"["):
        return None
    if b'"addr_info"' in text:
        return "addr"
    if b'"ifindex"' in text and b'"ifname"' in text:
        return "link"
    if b'"priority"' in text:
        return "rule"
    if b'"dst"' in text and (b'"dev"' in text or b'"type"' in text):
        return "route"
    return None


def looks_like_ip_text(head: bytes) -> str | None:
    """Which plain ``ip`` output this is, or None."""
    lines = head.decode("utf-8", "replace").splitlines()[:20]
    if not lines:
        return None
    if LINK_HEAD.match(lines[0]):
        return "addr" if any(x.split()[:1] in (["inet"], ["inet6"]) for x in lines) else "link"
    if all(re.match(r"^\d+:\s", x) for x in lines if x.strip()):
        return "rule"
    if all(
        re.match(r"^(\w+ )?(default|[0-9a-f:.]+(/\d+)?)\s", x)
        for x in lines
        if x.strip() and not x.startswith((" ", "\t"))
    ):
        return "route"
    return None


def _load(
    path: Path, part: str, unreadable: list[tuple[str, str]] | None = None
) -> tuple[list, Path | None]:
    """One part of a moment, from ``PART.json``, else ``PART.txt``, and the file it came from
    (None: the part is not known).

    A file that cannot be read, or that holds an entry naming no address (a route to
    ``999.1.1.1/99``), raises InputError; with ``unreadable`` given the file is listed there
    instead and the other form, when there is one, is read; such entries are left out and
    listed with the file's name, the rest of it read: the moment keeps what can be read."""
    for source in (path / f"{part}.json", path / f"{part}.txt"):
        if not source.exists():
            continue
        skipped: Skipped = []
        try:
            items = _read_part(source, part, skipped)
        except (InputError, OSError) as exc:
            if unreadable is None:
                raise
            unreadable.append(unreadable_entry(source, exc))
            continue
        if skipped and unreadable is None:
            unit, number, why = skipped[0]
            raise InputError(source, why, record=number, unit=unit)
        if skipped and unreadable is not None:
            reason = _skipped_text(part.rstrip("6"), skipped, len(items))
            unreadable.append((str(source), reason))
        return items, source
    return [], None


def _read_part(source: Path, part: str, skipped: Skipped) -> list:
    """One file of a part, as ``ip -j`` (``.json``) or ``ip`` (``.txt``) prints it; entries
    that name no address go to ``skipped``."""
    family = 6 if part.endswith("6") else None
    base = part.rstrip("6")
    jfile = source if source.suffix == ".json" else None
    try:
        text = source.read_bytes().decode("utf-8")
        if source is jfile:
            try:
                data = json.loads(text or "[]")
            except json.JSONDecodeError as exc:
                raise InputError(
                    jfile, f"not valid JSON: {exc.msg}", record=exc.lineno, unit="line"
                ) from None
            except RecursionError:
                raise InputError(jfile, "JSON nested too deep to read (not ip -j output)") from None
            if not isinstance(data, list):
                raise InputError(jfile, "expected a JSON list, as ip -j prints")
            return {
                "addr": lambda d: _addrs_json(d, skipped),
                "link": _links_json,
                "route": lambda d: _routes_json(d, family, skipped),
                "rule": lambda d: _rules_json(d, family, skipped),
            }[base](data)
        return {
            "addr": lambda ls, p: _addrs_text(ls, p, skipped),
            "link": _links_text,
            "route": lambda ls, p: _routes_text(ls, p, family, skipped),
            "rule": lambda ls, p: _rules_text(ls, p, family, skipped),
        }[base](text.splitlines(), str(source))
    except UnicodeDecodeError as exc:
        raise InputError(source, "not UTF-8 text", offset=exc.start) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            source,
            f"not {'ip -j' if source is jfile else 'ip'} {base} output: {type(exc).__name__} {exc}",
        ) from None


def read_snapshot(
    path: str | os.PathLike, *, unreadable: list[tuple[str, str]] | None = None
) -> Snapshot:
    """One moment directory (``ip/before/``) holding any of the parts.

    A file that cannot be read raises InputError; with ``unreadable`` given it is listed there
    (file, why) instead and the moment is kept without it (``parts`` names only what was read;
    a ``taken_at`` that is unreadable or no time between 1677 and 2262 leaves the time unknown,
    so the moment is placed as one without it). An entry naming no address (a route to
    ``999.1.1.1/99``) is listed and left out the same way, the rest of its file kept."""
    p = Path(path)
    listed: list[tuple[str, str]] = []  # this moment's unreadable files

    def cannot_read(file: Path, exc: InputError | OSError) -> None:
        if unreadable is None:
            raise exc
        listed.append(unreadable_entry(file, exc))

    taken = p / "taken_at"
    taken_at = None
    if taken.exists():
        try:
            taken_at = _taken_at(taken)
        except (InputError, OSError) as exc:
            cannot_read(taken, exc)
    loaded = {part: _load(p, part, None if unreadable is None else listed) for part in PARTS}
    parts = {part: items for part, (items, _) in loaded.items()}
    links = parts["link"]
    if not links and parts["addr"]:
        # ip addr lists every link too; use it when link.* is absent.
        txt = p / "addr.txt"
        if txt.exists():
            try:
                links = _links_text(_utf8(txt).splitlines(), str(txt))
            except (InputError, OSError) as exc:
                cannot_read(txt, exc)
    # `ip route show table all` also lists the IPv6 routes that route6.* holds: keep one of each.
    known = set(parts["route"])
    routes = parts["route"] + [r for r in parts["route6"] if r not in known]
    rules = parts["rule"] + [r for r in parts["rule6"] if r not in parts["rule"]]
    found = [part for part, (_, source) in loaded.items() if source is not None]
    sysctls: dict[str, str] = {}
    if (p / "sysctl.txt").exists():
        try:
            sysctls = read_sysctls(p / "sysctl.txt")
        except (InputError, OSError) as exc:
            cannot_read(p / "sysctl.txt", exc)
    if sysctls:
        found.append("sysctl")
    if unreadable is not None:
        unreadable.extend(listed)
    return Snapshot(
        p.name,
        taken_at,
        tuple(links),
        tuple(parts["addr"]),
        tuple(routes),
        tuple(rules),
        str(p),
        sysctls,
        tuple(found),
    )


def _utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, "not UTF-8 text", offset=exc.start) from None


def _taken_at(path: Path) -> float:
    """``taken_at``: epoch seconds; a number no nanosecond clock holds (``nan``, ``1e300``) is
    no time, so the moment is placed as one without ``taken_at``."""
    text = _utf8(path).strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, "taken_at must hold epoch seconds", record=1, unit="line") from None
    if not is_clock_time(value):
        raise InputError(
            path,
            f"taken_at {text[:40]!r} is not a time between 1677 and 2262",
            record=1,
            unit="line",
        )
    return value


def read_sysctls(path: str | os.PathLike) -> dict[str, str]:
    """``sysctl.txt``: ``key = value`` lines, as ``sysctl net.ipv4.conf`` prints them."""
    from .sysctl import read_file

    return read_file(path).values


def read_snapshots(
    path: str | os.PathLike, *, unreadable: list[tuple[str, str]] | None = None
) -> HostState:
    """A bundle (reads ``ip/*/``), an ``ip/`` directory, or one moment directory.

    The snapshots are an optional input: a file that cannot be read is left out of its moment
    and listed in ``unreadable`` (file, why) when given, never an error."""
    p = Path(path)
    if (p / "ip").is_dir():
        p = p / "ip"
    if not p.is_dir():
        raise InputError(path, "not a directory of ip snapshots")
    has_parts = (
        any((p / f"{part}.{ext}").exists() for part in PARTS for ext in ("json", "txt"))
        or (p / "sysctl.txt").exists()
    )
    dirs = [p] if has_parts else sorted(d for d in p.iterdir() if d.is_dir())
    listed: list[tuple[str, str]] = []
    snaps = [read_snapshot(d, unreadable=listed) for d in dirs]
    # nicpath collect writes one sysctl.txt for the bundle; a moment's own wins.
    bundle_sysctl = p.parent / "sysctl.txt" if p.name == "ip" else None
    if bundle_sysctl is not None and bundle_sysctl.exists():
        try:
            shared = read_sysctls(bundle_sysctl)
        except (InputError, OSError) as exc:
            listed.append(unreadable_entry(bundle_sysctl, exc))
            shared = {}
        if shared:
            snaps = [
                s
                if s.sysctls
                else dataclasses.replace(s, sysctls=shared, parts=(*s.parts, "sysctl"))
                for s in snaps
            ]
    if unreadable is not None:
        unreadable.extend(listed)
    snaps.sort(key=lambda s: (s.taken_at is not None, s.taken_at or 0.0))
    return HostState(tuple(snaps))


def host_to_json(host: HostState) -> str:
    """The snapshots as JSON, so a saved event table carries the host state it was read with."""
    return json.dumps([dataclasses.asdict(s) for s in host.snapshots], separators=(",", ":"))


def host_from_json(text: str | bytes) -> HostState:
    """The inverse of ``host_to_json`` (JSON lists back into the tuples the readers make)."""

    def tuples(d: dict, *keys: str) -> dict:
        return {**d, **{k: tuple(d[k]) for k in keys if k in d}}

    def route(d: dict) -> Route:
        hops = tuple(Nexthop(**tuples(h, "flags")) for h in d.get("nexthops", ()))
        return Route(**{**tuples(d, "flags"), "nexthops": hops})

    def rule(d: dict) -> Rule:
        sel = {k: tuple(v) if isinstance(v, list) else v for k, v in d["selectors"].items()}
        return Rule(**{**d, "selectors": sel})

    snaps = []
    for s in json.loads(text):
        snaps.append(
            Snapshot(
                moment=s["moment"],
                taken_at=s["taken_at"],
                links=tuple(Link(**tuples(d, "flags")) for d in s["links"]),
                addresses=tuple(Address(**tuples(d, "flags")) for d in s["addresses"]),
                routes=tuple(route(d) for d in s["routes"]),
                rules=tuple(rule(d) for d in s["rules"]),
                path=s["path"],
                sysctls=s.get("sysctls", {}),
                parts=tuple(s.get("parts", ())),
            )
        )
    return HostState(tuple(snaps))
