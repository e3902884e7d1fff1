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


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    table: str
    type: str
    dst: str
    dev: str | None = None
    gateway: str | None = None
    prefsrc: str | None = None
    metric: int = 0
    scope: str | None = None
    protocol: str | None = None
    raw: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Rule:
    family: int
    priority: int
    selectors: dict = field(default_factory=dict, hash=False)
    action: str = "table"
    table: str | None = None
    goto: int | None = None
    suppress_prefixlength: int | None = None
    raw: dict = field(default_factory=dict, compare=False, hash=False)


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


# --- JSON -----------------------------------------------------------------------------------


def _links_json(data: list) -> list[Link]:
    out = []
    for d in data:
        kind = (d.get("linkinfo") or {}).get("info_kind")
        mac = d.get("address") if d.get("link_type") in (None, "ether") else None
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
            )
        )
    return out


def _addrs_json(data: list) -> list[Address]:
    out = []
    for d in data:
        for a in d.get("addr_info", []):
            if "local" not in a:
                continue
            fam = 6 if a.get("family") == "inet6" else 4
            out.append(
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
                )
            )
    return out


def _routes_json(data: list, family: int | None) -> list[Route]:
    out = []
    for d in data:
        dst = d.get("dst", "default")
        fam = family or _family(dst if dst != "default" else (d.get("gateway") or d.get("prefsrc")))
        dev = d.get("dev")
        if dev is None and d.get("nexthops"):
            dev = d["nexthops"][0].get("dev")
        out.append(
            Route(
                fam,
                str(d.get("table", "main")),
                d.get("type", "unicast"),
                _prefix(dst, fam),
                dev,
                d.get("gateway"),
                d.get("prefsrc"),
                int(d.get("metric", 0)),
                d.get("scope"),
                d.get("protocol"),
                d,
            )
        )
    return out


RULE_SELECTORS = (
    "src",
    "srclen",
    "dst",
    "dstlen",
    "iif",
    "oif",
    "fwmark",
    "fwmask",
    "ipproto",
    "sport",
    "dport",
    "not",
    "tos",
    "uidrange",
    "l3mdev",
)


def _rules_json(data: list, family: int | None) -> list[Rule]:
    out = []
    for d in data:
        sel = {k: d[k] for k in RULE_SELECTORS if k in d and d[k] != "all"}
        fam = family or _family(d.get("src") or d.get("dst"))
        action = d.get("action", "table" if "table" in d else "nop")
        if "goto" in d:
            action = "goto"
        out.append(
            Rule(
                fam,
                int(d.get("priority", 0)),
                sel,
                action,
                str(d["table"]) if "table" in d else None,
                d.get("goto"),
                d.get("suppress_prefixlength"),
                d,
            )
        )
    return out


# --- plain text ---------------------------------------------------------------------------

LINK_HEAD = re.compile(r"^(\d+): ([^:@\s]+)(?:@([^:\s]+))?: <[^>]*>(.*)$")


def _link_head(m: re.Match, path: str, no: int) -> tuple[int, str, str | None, dict]:
    rest = m.group(4).split()
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
            }
        elif cur is not None and line.strip().startswith("link/ether"):
            cur["mac"] = line.split()[1]
    if cur:
        out.append(Link(**cur))
    return out


def _addrs_text(lines: list[str], path: str) -> list[Address]:
    out = []
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
        out.append(
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
            )
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


def _routes_text(lines: list[str], path: str, family: int | None) -> list[Route]:
    out = []
    for line in lines:
        words = line.split()
        if not words or words[0] == "nexthop":
            continue
        rtype = "unicast"
        if words[0] in ROUTE_TYPES:
            rtype, words = words[0], words[1:]
        dst = words[0]
        kv = {words[i]: words[i + 1] for i in range(1, len(words) - 1)}
        fam = family or (6 if ":" in dst or ":" in kv.get("via", "") else 4)
        out.append(
            Route(
                fam,
                kv.get("table", "main"),
                rtype,
                _prefix(dst, fam),
                kv.get("dev"),
                kv.get("via"),
                kv.get("src"),
                int(kv.get("metric", 0)),
                kv.get("scope"),
                kv.get("proto"),
                {"text": line},
            )
        )
    return out


def _rules_text(lines: list[str], path: str, family: int | None) -> list[Rule]:
    out = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        prio, sep, rest = line.partition(":")
        if not sep or not prio.strip().isdigit():
            raise InputError(path, f"not an ip rule line: {line[:60]!r}", record=no, unit="line")
        words = rest.split()
        sel: dict[str, Any] = {}
        action, table, goto, suppress = "nop", None, None, None
        i = 0
        while i < len(words):
            w = words[i]
            nxt = words[i + 1] if i + 1 < len(words) else None
            if w == "not":
                sel["not"] = None
            elif w in ("from", "to") and nxt:
                key = "src" if w == "from" else "dst"
                if nxt != "all":
                    addr, _, plen = nxt.partition("/")
                    sel[key] = addr
                    sel[key + "len"] = int(plen) if plen else (128 if ":" in addr else 32)
                i += 1
            elif w == "fwmark" and nxt:
                mark, _, mask = nxt.partition("/")
                sel["fwmark"] = mark
                if mask:
                    sel["fwmask"] = mask
                i += 1
            elif w in ("iif", "oif", "ipproto", "sport", "dport", "tos", "uidrange") and nxt:
                sel[w] = nxt
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
            elif w in ("blackhole", "unreachable", "prohibit"):
                action = w
            i += 1
        fam = family or (6 if ":" in str(sel.get("src", "")) + str(sel.get("dst", "")) else 4)
        out.append(Rule(fam, int(prio), sel, action, table, goto, suppress, {"text": line}))
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


def _load(path: Path, part: str) -> list:
    family = 6 if part.endswith("6") else None
    base = part.rstrip("6")
    jfile, tfile = path / f"{part}.json", path / f"{part}.txt"
    source = jfile if jfile.exists() else tfile if tfile.exists() else None
    if source is None:
        return []
    try:
        text = source.read_bytes().decode("utf-8")
        if source is jfile:
            try:
                data = json.loads(text or "[]")
            except json.JSONDecodeError as exc:
                raise InputError(
                    jfile, f"not valid JSON: {exc.msg}", record=exc.lineno, unit="line"
                ) from None
            if not isinstance(data, list):
                raise InputError(jfile, "expected a JSON list, as ip -j prints")
            return {
                "addr": _addrs_json,
                "link": _links_json,
                "route": lambda d: _routes_json(d, family),
                "rule": lambda d: _rules_json(d, family),
            }[base](data)
        return {
            "addr": _addrs_text,
            "link": _links_text,
            "route": lambda ls, p: _routes_text(ls, p, family),
            "rule": lambda ls, p: _rules_text(ls, p, family),
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


def read_snapshot(path: str | os.PathLike) -> Snapshot:
    """One moment directory (``ip/before/``) holding any of the parts."""
    p = Path(path)
    taken = p / "taken_at"
    taken_at = None
    if taken.exists():
        try:
            taken_at = float(taken.read_text().strip())
        except ValueError:
            raise InputError(
                taken, "taken_at must hold epoch seconds", record=1, unit="line"
            ) from None
    parts = {part: _load(p, part) for part in PARTS}
    links = parts["link"]
    if not links and parts["addr"]:
        # ip addr lists every link too; use it when link.* is absent.
        txt = p / "addr.txt"
        if txt.exists():
            links = _links_text(txt.read_text().splitlines(), str(txt))
    routes = parts["route"] + [r for r in parts["route6"] if r not in parts["route"]]
    rules = parts["rule"] + [r for r in parts["rule6"] if r not in parts["rule"]]
    return Snapshot(
        p.name, taken_at, tuple(links), tuple(parts["addr"]), tuple(routes), tuple(rules), str(p)
    )


def read_snapshots(path: str | os.PathLike) -> HostState:
    """A bundle (reads ``ip/*/``), an ``ip/`` directory, or one moment directory."""
    p = Path(path)
    if (p / "ip").is_dir():
        p = p / "ip"
    if not p.is_dir():
        raise InputError(path, "not a directory of ip snapshots")
    has_parts = any((p / f"{part}.{ext}").exists() for part in PARTS for ext in ("json", "txt"))
    dirs = [p] if has_parts else sorted(d for d in p.iterdir() if d.is_dir())
    snaps = [read_snapshot(d) for d in dirs]
    snaps.sort(key=lambda s: (s.taken_at is not None, s.taken_at or 0.0))
    return HostState(tuple(snaps))


def host_to_json(host: HostState) -> str:
    """The snapshots as JSON, so a saved event table carries the host state it was read with."""
    return json.dumps([dataclasses.asdict(s) for s in host.snapshots], separators=(",", ":"))


def host_from_json(text: str | bytes) -> HostState:
    """The inverse of ``host_to_json``."""
    snaps = []
    for s in json.loads(text):
        snaps.append(
            Snapshot(
                moment=s["moment"],
                taken_at=s["taken_at"],
                links=tuple(Link(**d) for d in s["links"]),
                addresses=tuple(Address(**d) for d in s["addresses"]),
                routes=tuple(Route(**d) for d in s["routes"]),
                rules=tuple(Rule(**d) for d in s["rules"]),
                path=s["path"],
            )
        )
    return HostState(tuple(snaps))
