"""The routing state of one snapshot as the kernel's lookup sees it: rules in priority order
(``fib_rules_lookup``), tables by prefix (``fib_table_lookup``, ``rt6_select``), source address
selection (``inet_select_addr``, ``ipv6_dev_get_saddr``) and the sysctls that bear on them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..sources.ipsnap import Address, Nexthop, Route, Rule, Snapshot
from .answer import IPAddress, IPNetwork, table_name

AGAIN = "EAGAIN"  # this table has no answer, the rules go on
#: What a route of an error type answers (``fib_props`` / ``ip6_rt_type_to_error``).
ROUTE_TYPE_ERRORS = {
    "blackhole": "EINVAL",
    "unreachable": "EHOSTUNREACH",
    "prohibit": "EACCES",
    "throw": AGAIN,
    "nat": "EINVAL",
}
RULE_ACTION_ERRORS = {"unreachable": "ENETUNREACH", "prohibit": "EACCES", "blackhole": "EINVAL"}
#: Route scopes as numbers (``rtnetlink.h``): a smaller number is a wider scope.
SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
DEFAULT_RULES = {
    4: ((0, "local"), (32766, "main"), (32767, "default")),
    6: ((0, "local"), (32766, "main")),
}
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


@dataclass
class Flowi:
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
class TableResult:
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


def strict_v6(addr: IPAddress) -> bool:
    """``rt6_need_strict``: multicast, link-local and loopback destinations need their card."""
    return addr.is_multicast or addr.is_link_local or addr == ipaddress.IPv6Address("::1")


# --- rules -----------------------------------------------------------------------------------


def _in_prefix(addr: IPAddress | None, base: str, plen: int) -> bool:
    if addr is None:
        return False
    return addr in ipaddress.ip_network(f"{base}/{plen}", strict=False)


def rule_matches(rule: Rule, flow: Flowi, has_src: bool = True) -> bool:
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


def lookup_rules(fib: Fib, flow: Flowi, notes: list[str]) -> TableResult:
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
            return TableResult(RULE_ACTION_ERRORS[rule.action], rule=rule)
        if rule.action != "table":
            i += 1
            continue
        table = table_name(rule.table)
        tried.append(table)
        res = _lookup_table(fib, table, flow)
        if res.error == AGAIN:
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
    return TableResult("ENETUNREACH")


def _suppressed(fib: Fib, rule: Rule, res: TableResult) -> bool:
    if rule.suppress_prefixlength is not None and res.prefixlen <= rule.suppress_prefixlength:
        return True
    if rule.suppress_ifgroup is not None and res.hops:
        link = fib.links.get(res.hops[0].dev or "")
        group = (link.group if link else None) or "default"
        want = rule.suppress_ifgroup
        return (group, want) in (("default", "0"), ("0", "default")) or group == want
    return False


def _lookup_table(fib: Fib, table: str, flow: Flowi) -> TableResult:
    entries = fib.tables[flow.family].get(table)
    if not entries:
        return TableResult(AGAIN)
    if flow.family == 4:
        return _table_v4(entries, flow)
    return _table_v6(entries, flow)


def _table_v4(entries, flow: Flowi) -> TableResult:
    """``fib_table_lookup``: longest prefix, then the prefix's routes in order."""
    for net, routes in entries:
        if flow.dst not in net:
            continue
        for r in routes:
            if r.tos and r.tos != flow.tos:
                continue
            err = ROUTE_TYPE_ERRORS.get(r.type)
            if err:
                return TableResult(err, r, (), net.prefixlen)
            if "dead" in r.flags:
                continue
            hops = r.nexthops or (Nexthop(r.dev, r.gateway, 1, r.flags),)
            live = [h for h in hops if "dead" not in h.flags]
            if flow.oif:
                live = [h for h in live if h.dev == flow.oif][:1]
            if live:
                return TableResult(None, r, tuple(live), net.prefixlen)
    return TableResult(AGAIN)


def _table_v6(entries, flow: Flowi) -> TableResult:
    """``fib6_table_lookup``: ``rt6_select`` at the longest prefix, backtracking."""
    for net, routes in entries:
        if flow.dst not in net:
            continue
        chosen = _rt6_select(routes, flow)
        if chosen is not None:
            route, hop = chosen
            hops = route.nexthops or (hop,)
            return TableResult(ROUTE_TYPE_ERRORS.get(route.type), route, tuple(hops), net.prefixlen)
    return TableResult(AGAIN)


_PREF = {"low": 1, "medium": 2, "high": 3}


def _rt6_select(routes: list[Route], flow: Flowi) -> tuple[Route, Nexthop] | None:
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
