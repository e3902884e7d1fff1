"""A replay of the kernel's route lookup: what ``ip route get`` would have answered.

Kernel facts F2-F4: the route lookup decides the card a packet leaves through (F4), is repeated
for every packet (F3), and for a new outgoing connection also gives the source address (F2). To
say *why* a flow left through a card, nicpath answers the same question the kernel answered, from
the ``ip -j rule`` / ``ip -j route show table all`` / ``ip -j addr`` snapshot in force (and
``sysctl.txt`` where the bundle has it). The replay follows the kernel (6.x) step by step:

- rules (``fib_rules_lookup``): in priority order; selectors from, to, iif (``lo`` for locally
  generated packets), oif, fwmark/mask, ipproto, sport/dport ranges, uidrange, tos, ``not``;
  actions lookup (a missing or empty table, a ``throw`` route or ``suppress_prefixlength`` /
  ``suppress_ifgroup`` go on to the next rule), goto (to the first rule of that priority; an
  unresolved goto is skipped), nop, blackhole/unreachable/prohibit. No matching rule: Network is
  unreachable. ``l3mdev`` rules never match (no VRFs are modelled).
- IPv4 tables (``fib_table_lookup``): longest prefix first, then the routes of that prefix in the
  kernel's order (tos, then metric); a blackhole/unreachable/prohibit route answers with its
  error, ``throw`` hands back to the rules; with ``oif`` a route whose nexthops all use other
  cards is passed over for the next shorter prefix. IPv6 tables (``rt6_select``): the lowest
  metric with a usable nexthop, scored by output card and router preference, backtracking to
  shorter prefixes; gateways' neighbours are taken as reachable (they are not in the snapshot).
- multipath: the kernel picks a nexthop by a hash of the flow with a per-boot random key, so the
  replay cannot know which: ``dev``/``gateway`` name the first live nexthop and ``nexthops`` lists
  every one the kernel may use, each with its source address.
- the source: the route's ``src``, else IPv4 ``inet_select_addr`` (the first primary address of
  the output card whose scope fits the route, preferring one on the gateway's subnet, then other
  cards), IPv6 ``ipv6_dev_get_saddr`` (RFC 6724 rules 1, 2, 3, 5, 6, 7, 8 with the kernel's
  default label table).
- output path (``ip_route_output_key_hash_rcu``): a ``from`` that is not a local address is
  refused; with ``oif`` a failed lookup still answers "on link"; local, broadcast and multicast
  destinations. Input path (``--iif``, ``ip_route_input_slow``): martian sources and destinations,
  local delivery, forwarding (``forwarding`` sysctl; off: No route to host) and the source check
  (``rp_filter`` strict/loose, ``accept_local``): on this kernel all of these refusals read
  "Invalid argument".

Not modelled, and said so where it matters: VRFs (l3mdev), nexthop objects (``nhid``),
IPv6 source-specific routes (``from`` in a route), equal-metric IPv4 default routes chosen by
neighbour reachability, multicast group memberships (only 224.0.0.1 is taken as joined).

>>> from analyzer.sources.ipsnap import read_snapshots  # doctest: +SKIP
>>> snap = read_snapshots("samples/egress_switch_tcp").snapshots[-1]  # doctest: +SKIP
>>> route_get(snap, Query("172.16.70.15")).text().splitlines()[0]  # doctest: +SKIP
'172.16.70.15 dev eth1 src 172.16.70.14'
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import QueryError
from .render import ts_text
from .sources.ipsnap import (
    Address,
    HostState,
    Nexthop,
    Route,
    Rule,
    Snapshot,
    ipproto_number,
    read_snapshots,
)

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
_AGAIN = "EAGAIN"  # internal: this table has no answer, the rules go on
#: What a route of an error type answers (``fib_props`` / ``ip6_rt_type_to_error``).
ROUTE_TYPE_ERRORS = {
    "blackhole": "EINVAL",
    "unreachable": "EHOSTUNREACH",
    "prohibit": "EACCES",
    "throw": _AGAIN,
    "nat": "EINVAL",
}
RULE_ACTION_ERRORS = {"unreachable": "ENETUNREACH", "prohibit": "EACCES", "blackhole": "EINVAL"}
TABLE_NAMES = {"0": "unspec", "253": "default", "254": "main", "255": "local"}
#: Route scopes as numbers (``rtnetlink.h``): a smaller number is a wider scope.
SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
DEFAULT_RULES = {
    4: ((0, "local"), (32766, "main"), (32767, "default")),
    6: ((0, "local"), (32766, "main")),
}
LOOPBACK = "lo"
#: Protocol names as ``ip`` prints them.
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "ipv6-icmp", 132: "sctp"}
#: IPv6 address label table of the kernel (``net/ipv6/addrlabel.c``), longest prefix first.
IPV6_LABELS = [
    (ipaddress.ip_network(p), label)
    for p, label in (
        ("::1/128", 0),
        ("::ffff:0:0/96", 4),
        ("::/96", 3),
        ("2001::/32", 6),
        ("2001:10::/28", 7),
        ("2002::/16", 2),
        ("3ffe::/16", 12),
        ("fec0::/10", 11),
        ("fc00::/7", 5),
        ("::/0", 1),
    )
]
IPV6_LABELS.sort(key=lambda item: -item[0].prefixlen)
_ORCHID = ipaddress.ip_network("2001:10::/28")


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
        taken = f" (taken {ts_text(round(self.taken_at * 1e9))})" if self.taken_at else ""
        lines.append(f"    from   snapshot {self.snapshot}{taken}")
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
            "taken_at": self.taken_at,
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


# --- the host as the lookup sees it ------------------------------------------------------------


@dataclass
class _Flow:
    """The kernel's ``flowi``: what rules and tables match on."""

    family: int
    dst: IPAddress
    src: IPAddress | None
    iif: str  # lo for locally generated packets
    oif: str | None
    mark: int
    proto: int
    sport: int
    dport: int
    tos: int
    uid: int
    #: IPv6 tables score routes by this card (the output card; on input, the arrival card) and,
    #: when ``strict``, use no other (``RT6_LOOKUP_F_IFACE``).
    score_oif: str | None = None
    strict: bool = False


@dataclass
class _Result:
    """A table's (or the rules') answer: an error, or a route with the nexthops it may use."""

    error: str | None = None
    route: Route | None = None
    hops: tuple[Nexthop, ...] = ()
    prefixlen: int = 0
    rule: Rule | None = None
    table: str | None = None


class Fib:
    """The routing state of one snapshot, indexed for lookups (build once, ask many times)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.notes: dict[int, list[str]] = {4: [], 6: []}
        links = sorted(snap.links, key=lambda link: link.ifindex)
        self.links = {link.name: link for link in links}
        # Devices in the kernel's list order (ifindex order here), lo first.
        order = [link.name for link in links]
        for a in snap.addresses:
            if a.ifname not in order:
                order.append(a.ifname)
        self.devices = order
        self.addresses: dict[int, dict[str, list[Address]]] = {4: {}, 6: {}}
        for a in snap.addresses:
            self.addresses[a.family].setdefault(a.ifname, []).append(a)
        self.local_v4 = {ipaddress.ip_address(a.address) for a in snap.addresses if a.family == 4}
        self.tables: dict[int, dict[str, list[tuple[IPNetwork, list[Route]]]]] = {4: {}, 6: {}}
        for fam in (4, 6):
            by_prefix: dict[tuple[str, IPNetwork], list[Route]] = {}
            for r in snap.routes:
                if r.family != fam:
                    continue
                net = (
                    ipaddress.ip_network("::/0" if fam == 6 else "0.0.0.0/0")
                    if (r.dst == "default")
                    else ipaddress.ip_network(r.dst, strict=False)
                )
                by_prefix.setdefault((table_name(r.table), net), []).append(r)
            for (table, net), routes in by_prefix.items():
                # The kernel keeps a prefix's routes by tos (IPv4, highest first), then metric;
                # ip dumps them in that order, which a stable sort keeps for equal ones.
                routes = sorted(routes, key=lambda r: (-r.tos, r.metric))
                self.tables[fam].setdefault(table, []).append((net, routes))
            for entries in self.tables[fam].values():
                entries.sort(key=lambda item: -item[0].prefixlen)
        self.rules: dict[int, list[Rule]] = {}
        for fam in (4, 6):
            rules = sorted((r for r in snap.rules if r.family == fam), key=lambda r: r.priority)
            part = "rule" if fam == 4 else "rule6"
            if not rules and part not in snap.parts:
                rules = [Rule(fam, prio, {}, "table", table) for prio, table in DEFAULT_RULES[fam]]
                self.notes[fam].append(
                    f"no IPv{fam} rule snapshot ({part}.json): the kernel's default rules assumed"
                )
            self.rules[fam] = rules
        defaults = {(p, t) for p, t in DEFAULT_RULES[4]}
        self.custom_rules_v4 = any(
            (r.priority, table_name(r.table)) not in defaults or r.selectors or r.action != "table"
            for r in self.rules[4]
        )
        self.custom_local_v4 = any(
            r.family == 4 and r.type == "local" and r.protocol != "kernel" for r in snap.routes
        )
        self.fldissect = any(
            {"ipproto", "sport", "dport"} & set(r.selectors) for r in self.rules[4]
        )
        self.sysctls_known = bool(snap.sysctls)

    # -- sysctls

    def sysctl(self, key: str, default: int = 0) -> int:
        value = self.snap.sysctls.get(key)
        try:
            return int(value) if value is not None else default
        except ValueError:
            return default

    def conf4(self, dev: str, name: str, how: str = "dev", default: int = 0) -> int:
        """``net.ipv4.conf.<dev>.<name>`` combined with ``all`` as the kernel does: ``max`` for
        rp_filter, ``or`` for accept_local/src_valid_mark, ``and`` for send_redirects, the
        device's own for forwarding; ``default`` when the snapshot does not say."""
        every = self.sysctl(f"net.ipv4.conf.all.{name}", default)
        mine = self.sysctl(f"net.ipv4.conf.{dev}.{name}", -1)
        if mine < 0:
            mine = self.sysctl(f"net.ipv4.conf.default.{name}", every)
        if how == "max":
            return max(mine, every)
        if how == "or":
            return int(bool(mine or every))
        if how == "and":
            return int(bool(mine and every))
        return mine

    # -- source addresses

    def select_v4(self, dev: str | None, gateway: str | None, scope: int) -> str | None:
        """``inet_select_addr``: the first primary address of ``dev`` in scope, one on the
        gateway's subnet first; else the first fitting primary address of another card."""
        gw = ipaddress.ip_address(gateway) if gateway else None
        chosen = None
        for a in self.addresses[4].get(dev or "", []):
            if a.secondary or min(SCOPES.get(a.scope, 0), SCOPES["host"]) > scope:
                continue
            if gw is None or gw in ipaddress.ip_network(f"{a.address}/{a.prefixlen}", strict=False):
                return a.address
            chosen = chosen or a.address
        if chosen:
            return chosen
        for name in self.devices:
            for a in self.addresses[4].get(name, []):
                a_scope = SCOPES.get(a.scope, 0)
                if not a.secondary and a_scope != SCOPES["link"] and a_scope <= scope:
                    return a.address
        return None

    def select_v6(self, dev: str | None, dst: IPAddress) -> str | None:
        """``ipv6_dev_get_saddr`` (RFC 6724): the best-scoring candidate, the first on ties."""
        dst_scope = _v6_scope(dst)
        use_oif = (
            dst.is_multicast
            or dst_scope <= 2
            or self.sysctl(f"net.ipv6.conf.{dev}.use_oif_addrs_only") == 1
        )
        names = [dev] if use_oif else self.devices
        dst_label = _v6_label(dst)
        dst_index = self.links[dev].ifindex if dev in self.links else 0
        best, best_score = None, None
        for name in names:
            for a in self.addresses[6].get(name or "", []):
                if "dadfailed" in a.flags or (
                    "tentative" in a.flags and "optimistic" not in a.flags
                ):
                    continue
                addr = ipaddress.ip_address(a.address)
                if addr.is_unspecified or addr.is_multicast:
                    continue
                scope = _v6_scope(addr)
                a_index = self.links[name].ifindex if name in self.links else -1
                score = (
                    addr == dst,
                    -scope if scope >= dst_scope else scope - 128,
                    _v6_preferred(addr) or not {"deprecated", "optimistic"} & set(a.flags),
                    not dst_index or dst_index == a_index,
                    _v6_label(addr) == dst_label,
                    "temporary" not in a.flags,
                    (addr in _ORCHID) == (dst in _ORCHID),
                    min(_common_bits(addr, dst), a.prefixlen),
                    "optimistic" not in a.flags,
                )
                if best_score is None or score > best_score:
                    best, best_score = a.address, score
        return best

    def device_of(self, address: ipaddress.IPv4Address) -> str | None:
        """``__ip_dev_find``: the card holding an address, or the card of a local route
        (``local 127.0.0.0/8 dev lo``) covering it; None when the host does not own it."""
        for a in self.snap.addresses:
            if a.family == 4 and a.address == str(address):
                return a.ifname
        for net, routes in self.tables[4].get("local", []):
            if address in net:
                return routes[0].dev if routes[0].type == "local" else None
        return None

    def holds(self, address: IPAddress) -> bool:
        return address in self.local_v4

    def has_v4_addresses(self, dev: str) -> bool:
        return bool(self.addresses[4].get(dev))


def _v6_scope(addr: IPAddress) -> int:
    """``__ipv6_addr_src_scope``: 1 node, 2 link (also ::1), 5 site, 14 global; multicast: its
    scope field."""
    if addr.is_multicast:
        return addr.packed[1] & 0x0F
    if addr.is_link_local or addr == ipaddress.IPv6Address("::1"):
        return 2
    if addr in ipaddress.ip_network("fec0::/10"):
        return 5
    return 14


def _v6_preferred(addr: IPAddress) -> bool:
    """Mapped, compatible and loopback addresses are always 'preferred' (rule 3)."""
    return addr.packed[:10] == bytes(10) and (addr.packed[10:12] in (b"\xff\xff", b"\0\0"))


def _v6_label(addr: IPAddress) -> int:
    return next(label for net, label in IPV6_LABELS if addr in net)


def _common_bits(a: IPAddress, b: IPAddress) -> int:
    diff = int(a) ^ int(b)
    return 128 - diff.bit_length()


def _strict_v6(addr: IPAddress) -> bool:
    """``rt6_need_strict``: multicast, link-local and loopback destinations need their card."""
    return addr.is_multicast or addr.is_link_local or addr == ipaddress.IPv6Address("::1")


# --- rules -----------------------------------------------------------------------------------


def _in_prefix(addr: IPAddress | None, base: str, plen: int) -> bool:
    if addr is None:
        return False
    return addr in ipaddress.ip_network(f"{base}/{plen}", strict=False)


def rule_matches(rule: Rule, flow: _Flow, has_src: bool = True) -> bool:
    """``fib_rule_match`` and the family's match; ``not`` inverts the whole result."""
    sel = rule.selectors
    ok = True
    if (
        ("iif" in sel and (sel.get("iif_detached") or sel["iif"] != flow.iif))
        or ("oif" in sel and (sel.get("oif_detached") or sel["oif"] != flow.oif))
        or (sel.get("fwmark", 0) ^ flow.mark) & sel.get("fwmask", 0)
        or ("uidrange" in sel and not sel["uidrange"][0] <= flow.uid <= sel["uidrange"][1])
        or sel.get("l3mdev")
        or ("ipproto" in sel and sel["ipproto"] != flow.proto)
        or ("sport" in sel and not sel["sport"][0] <= flow.sport <= sel["sport"][1])
        or ("dport" in sel and not sel["dport"][0] <= flow.dport <= sel["dport"][1])
        or ("dst" in sel and not _in_prefix(flow.dst, sel["dst"], sel["dstlen"]))
    ):
        ok = False
    elif "src" in sel:
        if flow.family == 6 and not has_src:
            ok = False  # IPv6 rules with a source never match a lookup without one
        else:
            src = flow.src or ipaddress.ip_address("0.0.0.0")
            ok = _in_prefix(src, sel["src"], sel["srclen"])
    if ok and "tos" in sel and sel["tos"] != flow.tos:
        ok = False
    return not ok if sel.get("not") else ok


def _lookup_rules(fib: Fib, flow: _Flow, notes: list[str]) -> _Result:
    """``fib_rules_lookup``: the first rule whose action gives an answer."""
    rules = fib.rules[flow.family]
    has_src = flow.src is not None
    tried: list[str] = []
    i = 0
    while i < len(rules):
        rule = rules[i]
        if not rule_matches(rule, flow, has_src):
            i += 1
            continue
        if rule.action == "goto":
            target = next(
                (j for j, r in enumerate(rules) if r.priority == rule.goto and j > i), None
            )
            if target is None:
                notes.append(f"rule {rule.priority}: goto {rule.goto} is unresolved, skipped")
                i += 1
            else:
                i = target
            continue
        if rule.action == "nop":
            i += 1
            continue
        if rule.action in RULE_ACTION_ERRORS:
            return _Result(RULE_ACTION_ERRORS[rule.action], rule=rule)
        if rule.action != "table":
            i += 1
            continue
        table = table_name(rule.table)
        tried.append(table)
        res = _lookup_table(fib, table, flow)
        if res.error == _AGAIN:
            if res.route is not None:
                notes.append(f"rule {rule.priority}: throw route {res.route.dst} in table {table}")
            i += 1
            continue
        if res.error is None and _suppressed(fib, rule, res):
            notes.append(
                f"rule {rule.priority}: route {res.route.dst if res.route else ''} in table "
                f"{table} suppressed"
            )
            i += 1
            continue
        res.rule, res.table = rule, table
        if flow.family == 4 and table == "local" and not fib.custom_rules_v4:
            res.table = "main"  # without policy rules the kernel merges local into main
        return res
    looked = ", ".join(dict.fromkeys(tried))
    notes.append(f"no rule gave a route (tables looked up: {looked or 'none'})")
    return _Result("ENETUNREACH")


def _suppressed(fib: Fib, rule: Rule, res: _Result) -> bool:
    if rule.suppress_prefixlength is not None and res.prefixlen <= rule.suppress_prefixlength:
        return True
    if rule.suppress_ifgroup is not None and res.hops:
        link = fib.links.get(res.hops[0].dev or "")
        group = (link.group if link else None) or "default"
        want = rule.suppress_ifgroup
        return (group, want) in (("default", "0"), ("0", "default")) or group == want
    return False


def _lookup_table(fib: Fib, table: str, flow: _Flow) -> _Result:
    entries = fib.tables[flow.family].get(table)
    if not entries:
        return _Result(_AGAIN)
    if flow.family == 4:
        return _table_v4(entries, flow)
    return _table_v6(entries, flow)


def _table_v4(entries, flow: _Flow) -> _Result:
    """``fib_table_lookup``: longest prefix, then the prefix's routes in order."""
    for net, routes in entries:
        if flow.dst not in net:
            continue
        for r in routes:
            if r.tos and r.tos != flow.tos:
                continue
            err = ROUTE_TYPE_ERRORS.get(r.type)
            if err:
                return _Result(err, r, (), net.prefixlen)
            if "dead" in r.flags:
                continue
            hops = r.nexthops or (Nexthop(r.dev, r.gateway, 1, r.flags),)
            live = [h for h in hops if "dead" not in h.flags]
            if flow.oif:
                live = [h for h in live if h.dev == flow.oif][:1]
            if live:
                return _Result(None, r, tuple(live), net.prefixlen)
    return _Result(_AGAIN)


def _table_v6(entries, flow: _Flow) -> _Result:
    """``fib6_table_lookup``: ``rt6_select`` at the longest prefix, backtracking."""
    for net, routes in entries:
        if flow.dst not in net:
            continue
        chosen = _rt6_select(routes, flow)
        if chosen is not None:
            route, hop = chosen
            hops = route.nexthops or (hop,)
            return _Result(ROUTE_TYPE_ERRORS.get(route.type), route, tuple(hops), net.prefixlen)
    return _Result(_AGAIN)


_PREF = {"low": 1, "medium": 2, "high": 3}


def _rt6_select(routes: list[Route], flow: _Flow) -> tuple[Route, Nexthop] | None:
    """``find_rr_leaf``: among the lowest metric the best score; else the best of the rest."""
    oif = flow.score_oif

    def score(route: Route, hop: Nexthop) -> int | None:
        if "dead" in hop.flags:
            return None
        m = 2 if not oif or hop.dev == oif else 0
        if m == 0 and flow.strict:
            return None
        return m | (_PREF.get(route.pref or "medium", 2) << 2)

    candidates = [(r, h) for r in routes for h in (r.nexthops or (Nexthop(r.dev, r.gateway),))]
    if not candidates:
        return None
    first_metric = candidates[0][0].metric
    best, best_m = None, -1
    for lowest in (True, False):
        for r, h in candidates:
            if (r.metric == first_metric) != lowest:
                continue
            m = score(r, h)
            if m is not None and m > best_m:
                best, best_m = (r, h), m
        if best is not None:
            return best
    return None


# --- output and input paths -----------------------------------------------------------------


def _flow(q: Query, iif: str, oif: str | None, src: IPAddress | None) -> _Flow:
    return _Flow(
        q.family,
        ipaddress.ip_address(q.to),
        src,
        iif,
        oif,
        q.mark,
        q.ipproto,
        q.sport,
        q.dport,
        q.tos,
        q.uid,
    )


def _scope_of(route: Route) -> int:
    return SCOPES.get(route.scope or "global", 0)


def route_get(snap: Snapshot | Fib, query: Query) -> RouteAnswer:
    """What ``ip route get QUERY`` answered on the host of this snapshot."""
    fib = snap if isinstance(snap, Fib) else fib_of(snap)
    s = fib.snap
    ans = RouteAnswer(query, s.moment, s.taken_at)
    ans.notes += fib.notes[query.family]
    for dev, what in ((query.iif, "iif"), (query.oif, "oif")):
        if dev and dev not in fib.links and dev not in fib.devices:
            raise QueryError(
                f"{what} {dev}: no such card in the snapshot {s.path or s.moment} "
                f"(cards: {', '.join(fib.devices) or 'none'})"
            )
    if query.family == 4:
        if query.iif:
            _input_v4(fib, query, ans)
        else:
            _output_v4(fib, query, ans)
    elif query.iif:
        _input_v6(fib, query, ans)
    else:
        _output_v6(fib, query, ans)
    return ans


_FIBS: dict[int, tuple[Snapshot, Fib]] = {}


def fib_of(snap: Snapshot) -> Fib:
    """The indexed routing state of a snapshot (cached while the snapshot lives)."""
    hit = _FIBS.get(id(snap))
    if hit is not None and hit[0] is snap:
        return hit[1]
    fib = Fib(snap)
    if len(_FIBS) > 64:
        _FIBS.clear()
    _FIBS[id(snap)] = (snap, fib)
    return fib


def _fail(ans: RouteAnswer, error: str, note: str | None = None, res: _Result | None = None):
    ans.error = error
    if res is not None:
        ans.rule, ans.route = res.rule, res.route
        ans.table = res.table
    if note:
        ans.notes.append(note)


def _output_v4(fib: Fib, q: Query, ans: RouteAnswer) -> None:
    """``ip_route_output_key_hash_rcu``: a packet this host sends."""
    dst = ipaddress.IPv4Address(q.to)
    lbcast = dst == ipaddress.IPv4Address("255.255.255.255")
    src = ipaddress.IPv4Address(q.src) if q.src else None
    oif = q.oif
    dev_out: str | None = None
    if src is not None:
        if (
            src.is_multicast
            or src == ipaddress.IPv4Address("255.255.255.255")
            or (int(src) >> 24 == 0)
        ):
            return _fail(ans, "EINVAL", f"source {src} is a martian")
        holder = fib.device_of(src)
        if holder is None:
            return _fail(ans, "ENETUNREACH", f"source {src} is not an address of this host")
        if not oif and (dst.is_multicast or lbcast):
            return _make_output(fib, q, ans, None, holder, None, src, _Result())
    if oif:
        dev_out = oif
        link = fib.links.get(oif)
        if link is not None and link.flags and "UP" not in link.flags:
            return _fail(ans, "ENETUNREACH", f"card {oif} is down")
        if (dst in ipaddress.ip_network("224.0.0.0/24")) or lbcast or q.ipproto == 2:
            src = src or _v4(fib.select_v4(dev_out, None, SCOPES["link"]))
            return _make_output(fib, q, ans, None, dev_out, None, src, _Result())
        if src is None and dst.is_multicast:
            src = _v4(fib.select_v4(dev_out, None, 0))
    if int(dst) == 0:
        ans.type, ans.dev = "local", LOOPBACK
        ans.src = str(src) if src else "127.0.0.1"
        ans.prefsrc = ans.src if ans.src != q.src else None
        return None
    res = _lookup_rules(fib, _flow(q, LOOPBACK, oif, src), ans.notes)
    if res.error:
        if oif:
            ans.notes.append(f"no route through {oif}: the kernel takes the destination as on link")
            src = src or _v4(fib.select_v4(dev_out, None, SCOPES["link"]))
            return _make_output(fib, q, ans, "unicast", dev_out, None, src, _Result())
        return _fail(ans, res.error, None, res)
    route = res.route
    assert route is not None
    if route.type == "local":
        src = src or _v4(route.prefsrc) or dst
        return _make_output(fib, q, ans, "local", LOOPBACK, None, src, res)
    paths = []
    for hop in res.hops:
        hop_src = _v4(route.prefsrc) or _v4(fib.select_v4(hop.dev, hop.gateway, _scope_of(route)))
        paths.append((hop, src or hop_src))
    hop, hop_src = paths[0]
    _make_output(fib, q, ans, route.type, hop.dev, hop.gateway, hop_src, res)
    if ans.ok and len(paths) > 1:
        ans.paths = tuple(
            Path(h.dev, h.gateway, h.weight, _s(s), _s(s) if _s(s) != q.src else None)
            for h, s in paths
        )


def _v4(text: str | IPAddress | None) -> ipaddress.IPv4Address | None:
    if text is None:
        return None
    return ipaddress.IPv4Address(str(text))


def _s(addr: IPAddress | None) -> str | None:
    return str(addr) if addr is not None else None


def _make_output(
    fib: Fib,
    q: Query,
    ans: RouteAnswer,
    rtype: str | None,
    dev: str | None,
    gateway: str | None,
    src: IPAddress | None,
    res: _Result,
) -> None:
    """``__mkroute_output``: broadcast and multicast by address, loopback sources only on lo."""
    dst = ipaddress.IPv4Address(q.to)
    if src is not None and src.is_loopback and dev != LOOPBACK:
        return _fail(ans, "EINVAL", f"source {src} is a loopback address, card {dev} is not lo")
    if dst == ipaddress.IPv4Address("255.255.255.255"):
        rtype = "broadcast"
    elif dst.is_multicast:
        rtype = "multicast"
        if res.prefixlen < 4:
            gateway = None  # a multicast route from a default route is sent on link
    elif int(dst) >> 24 == 0:
        return _fail(ans, "EINVAL", f"destination {dst} is in 0.0.0.0/8")
    if rtype == "broadcast":
        gateway = None
    ans.type = rtype or "unicast"
    ans.dev = dev
    ans.gateway = gateway
    ans.src = _s(src)
    ans.prefsrc = ans.src if ans.src != q.src else None
    ans.rule, ans.route, ans.table = res.rule, res.route, res.table
    if res.hops:
        h = res.hops[0]
        ans.paths = (Path(h.dev, h.gateway, h.weight, ans.src, ans.prefsrc),)
    return None


def _martian_v4(fib: Fib, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address) -> str | None:
    if src.is_multicast or src == ipaddress.IPv4Address("255.255.255.255"):
        return f"martian source {src}"
    if int(src) >> 24 == 0:
        return f"martian source {src}"
    if int(dst) >> 24 == 0:
        return f"martian destination {dst}"
    if dst.is_loopback:
        return f"martian destination {dst} (loopback, route_localnet off)"
    if src.is_loopback:
        return f"martian source {src} (loopback, route_localnet off)"
    return None


def validate_source(
    fib: Fib, q: Query, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, oif: str | None
) -> str | None:
    """``fib_validate_source``: why the kernel refuses a packet's source on its arrival card
    (rp_filter, a local or broadcast source), or None when it accepts it."""
    dev = q.iif or LOOPBACK
    rpf = fib.conf4(dev, "rp_filter", "max")
    accept_local = fib.conf4(dev, "accept_local", "or")
    tx_redirects = fib.conf4(dev, "send_redirects", "and", default=1)
    if not rpf and (dev != oif or not tx_redirects):
        if accept_local:
            return None
        if not (fib.custom_local_v4 or fib.custom_rules_v4):
            if fib.holds(src):
                return f"source {src} is an address of this host (accept_local off)"
            return None
    reverse = _Flow(
        4,
        src,
        dst,
        oif or LOOPBACK,
        None,
        q.mark if fib.conf4(dev, "src_valid_mark", "or") else 0,
        q.ipproto if fib.fldissect else 0,
        q.dport if fib.fldissect else 0,
        q.sport if fib.fldissect else 0,
        q.tos,
        0,
    )
    res = _lookup_rules(fib, reverse, [])
    if res.error:
        if rpf:
            return f"rp_filter={rpf} on {dev}: no route back to {src}"
        return None
    rtype = res.route.type if res.route else "unicast"
    if rtype != "unicast" and not (rtype == "local" and accept_local):
        return f"source {src} routes back as {rtype}"
    devs = {h.dev for h in res.hops}
    if dev in devs or (rtype == "local" and dev == LOOPBACK):
        return None
    if not fib.has_v4_addresses(dev):
        return f"rp_filter={rpf} on {dev}: no route back to {src}" if rpf else None
    if rpf == 1:
        back = ", ".join(sorted(d for d in devs if d)) or "another card"
        return f"rp_filter=1 (strict) on {dev}: the route back to {src} leaves {back}"
    return None


def _forwarding(fib: Fib, dev: str) -> bool:
    value = fib.sysctl(f"net.ipv4.conf.{dev}.forwarding", -1)
    if value < 0:
        value = fib.sysctl("net.ipv4.ip_forward", 0)
    return bool(value)


def _input_v4(fib: Fib, q: Query, ans: RouteAnswer) -> None:
    """``ip_route_input_slow``: a packet arriving on ``iif``."""
    dst = ipaddress.IPv4Address(q.to)
    src = ipaddress.IPv4Address(q.src) if q.src else ipaddress.IPv4Address("0.0.0.0")
    if not fib.sysctls_known:
        ans.notes.append("no sysctl.txt: forwarding 0, rp_filter 0, accept_local 0 assumed")
    if dst.is_multicast:
        if dst != ipaddress.IPv4Address("224.0.0.1"):
            return _fail(ans, "EINVAL", f"{dst}: not a group this host is known to have joined")
        bad = None
        if src.is_multicast or src == ipaddress.IPv4Address("255.255.255.255") or src.is_loopback:
            bad = f"martian source {src}"
        elif int(src):
            bad = validate_source(fib, q, src, ipaddress.IPv4Address(0), None)
        if bad:
            return _fail(ans, "EINVAL", bad)
        ans.type, ans.dev = "multicast", LOOPBACK
        return None
    if src.is_multicast or src == ipaddress.IPv4Address("255.255.255.255"):
        return _fail(ans, "EINVAL", f"martian source {src}")
    if dst == ipaddress.IPv4Address("255.255.255.255") or (int(src) == 0 and int(dst) == 0):
        return _broadcast_input(fib, q, ans, src, _Result())
    martian = _martian_v4(fib, src, dst)
    if martian:
        return _fail(ans, "EINVAL", martian)
    res = _lookup_rules(fib, _flow(q, q.iif or LOOPBACK, None, src), ans.notes)
    dev = q.iif or LOOPBACK
    if res.error:
        if not _forwarding(fib, dev):
            return _fail(ans, "EHOSTUNREACH", f"forwarding is off on {dev}", res)
        return _fail(ans, res.error, None, res)
    route = res.route
    assert route is not None
    if route.type == "broadcast":
        return _broadcast_input(fib, q, ans, src, res)
    if route.type == "local":
        bad = validate_source(fib, q, src, dst, None)
        if bad:
            return _fail(ans, "EINVAL", bad, res)
        ans.type, ans.dev = "local", LOOPBACK
        ans.rule, ans.route, ans.table = res.rule, route, res.table
        return None
    if not _forwarding(fib, dev):
        return _fail(ans, "EHOSTUNREACH", f"forwarding is off on {dev}", res)
    if route.type != "unicast":
        return _fail(ans, "EINVAL", f"martian destination {dst} ({route.type} route)", res)
    paths = []
    for hop in res.hops:
        bad = validate_source(fib, q, src, dst, hop.dev)
        if bad:
            return _fail(ans, "EINVAL", bad, res)
        paths.append(Path(hop.dev, hop.gateway, hop.weight))
    ans.type, ans.dev, ans.gateway = "unicast", paths[0].dev, paths[0].gateway
    ans.rule, ans.route, ans.table = res.rule, route, res.table
    ans.paths = tuple(paths)
    return None


def _broadcast_input(fib: Fib, q: Query, ans: RouteAnswer, src, res: _Result) -> None:
    if int(src):
        bad = validate_source(fib, q, src, ipaddress.IPv4Address(0), None)
        if bad:
            return _fail(ans, "EINVAL", bad, res)
    ans.type, ans.dev = "broadcast", LOOPBACK
    ans.rule, ans.route, ans.table = res.rule, res.route, res.table
    return None


def _output_v6(fib: Fib, q: Query, ans: RouteAnswer) -> None:
    """``ip6_route_output``: a packet this host sends."""
    dst = ipaddress.IPv6Address(q.to)
    src = ipaddress.IPv6Address(q.src) if q.src else None
    flow = _flow(q, LOOPBACK, q.oif, src)
    flow.score_oif = q.oif
    flow.strict = _strict_v6(dst) or (bool(q.oif) and src is None)
    res = _lookup_rules(fib, flow, ans.notes)
    _answer_v6(fib, q, ans, res, dst, src, output=True)


def _input_v6(fib: Fib, q: Query, ans: RouteAnswer) -> None:
    """``ip6_route_input_lookup``: a packet arriving on ``iif`` (the lookup prefers routes
    through that card)."""
    dst = ipaddress.IPv6Address(q.to)
    src = ipaddress.IPv6Address(q.src) if q.src else None
    flow = _flow(q, q.iif or LOOPBACK, None, src)
    flow.score_oif = q.iif
    flow.strict = _strict_v6(dst)
    res = _lookup_rules(fib, flow, ans.notes)
    if res.error is None and dst.is_multicast:
        return _fail(
            ans,
            "EMSGSIZE",
            "the kernel cannot describe a multicast input route without multicast routing",
            res,
        )
    _answer_v6(fib, q, ans, res, dst, src, output=False)
    return None


def _answer_v6(fib: Fib, q, ans: RouteAnswer, res: _Result, dst, src, *, output: bool) -> None:
    if res.error:
        return _fail(ans, res.error, None, res)
    route = res.route
    assert route is not None
    paths = []
    for hop in res.hops:
        if route.prefsrc:
            prefsrc = route.prefsrc
        elif output:
            prefsrc = fib.select_v6(hop.dev, dst)
        else:
            prefsrc = None
        paths.append(Path(hop.dev, hop.gateway, hop.weight, q.src or prefsrc, prefsrc))
    first = paths[0]
    local = route.type in ("local", "anycast")
    ans.type = route.type
    ans.dev = LOOPBACK if local else first.dev
    ans.gateway = None if local else first.gateway
    ans.src = first.src if output else None
    ans.prefsrc = first.prefsrc
    ans.rule, ans.route, ans.table = res.rule, route, res.table
    ans.paths = tuple(paths)
    return None


# --- the host over time ---------------------------------------------------------------------


def snapshot_at(host: HostState, at: float | str | None = None) -> Snapshot:
    """The snapshot in force at ``at`` (epoch seconds), the one named ``at`` (``before``,
    ``after-1``), or the latest."""
    if not host:
        raise QueryError("no ip snapshot to answer from")
    if at is None:
        return host.snapshots[-1]
    if isinstance(at, str):
        named = [s for s in host.snapshots if s.moment == at]
        if named:
            return named[0]
        raise QueryError(
            f"no snapshot named {at!r} (snapshots: {', '.join(s.moment for s in host.snapshots)})"
        )
    return host.at(at)


def route_at(host: HostState, query: Query, at: float | str | None = None) -> RouteAnswer:
    """``route_get`` on the snapshot in force at ``at`` (default: the latest)."""
    snap = snapshot_at(host, at)
    answer = route_get(snap, query)
    if isinstance(at, float | int) and snap.taken_at is not None and at < snap.taken_at:
        answer.notes.append(
            f"{ts_text(round(at * 1e9))} is before the first snapshot: {snap.moment}'s answer"
        )
    return answer


def parse_at(text: str | None) -> float | str | None:
    """``--at``: epoch seconds, an ISO 8601 time (``2026-11-25T03:22:47Z``; without a zone,
    UTC), or a snapshot's name (``before``, ``after-1``)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def route_lookup(path: str | os.PathLike, query: Query, at: str | None = None) -> RouteAnswer:
    """``nicpath route``: the answer from a bundle, its ``ip/`` or one ``ip/<moment>/``, with
    the snapshot in force at ``at`` (``parse_at``; default the latest).

    >>> route_lookup("samples/egress_switch_tcp", Query("172.16.70.15"), "before").dev
    'eth2'
    """
    return route_at(read_snapshots(path), query, parse_at(at))


def explain_choice(before: RouteAnswer, after: RouteAnswer) -> str | None:
    """Why the answer changed between two lookups of one flow: another rule, a longer prefix,
    a lower metric, a route that disappeared. None when nothing changed."""
    if (before.dev, before.gateway, before.error) == (after.dev, after.gateway, after.error):
        return None
    if after.error and not before.error:
        return f"the lookup now fails: {after.error_text}"
    if before.error and not after.error:
        return "a route now exists where the lookup failed before"
    if (
        before.rule is not None
        and after.rule is not None
        and (before.rule.priority != after.rule.priority)
    ):
        return f"rule {after.rule.priority} now decides instead of rule {before.rule.priority}"
    b, a = before.route, after.route
    if a is None or b is None:
        return None
    b_len = _plen(b.dst)
    a_len = _plen(a.dst)
    if a_len > b_len:
        return f"a longer prefix ({a.dst}) now matches"
    if a.dst == b.dst and a.metric < b.metric:
        return f"a route with a lower metric ({a.metric} < {b.metric})"
    return f"the route {route_text(b)} is gone"


def _plen(dst: str) -> int:
    return 0 if dst == "default" else int(dst.rpartition("/")[2] or 0)
