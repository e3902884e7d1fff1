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

import ipaddress

from ..errors import QueryError
from ..sources.ipsnap import Route, Snapshot
from .answer import IPAddress, Path, Query, RouteAnswer
from .fib import SCOPES, Fib, Flowi, TableResult, lookup_rules, strict_v6

LOOPBACK = "lo"


def _flow(q: Query, iif: str, oif: str | None, src: IPAddress | None) -> Flowi:
    return Flowi(
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


def _fail(ans: RouteAnswer, error: str, note: str | None = None, res: TableResult | None = None):
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
            return _make_output(fib, q, ans, None, holder, None, src, TableResult())
    if oif:
        dev_out = oif
        link = fib.links.get(oif)
        if link is not None and link.flags and "UP" not in link.flags:
            return _fail(ans, "ENETUNREACH", f"card {oif} is down")
        if (dst in ipaddress.ip_network("224.0.0.0/24")) or lbcast or q.ipproto == 2:
            src = src or _v4(fib.select_v4(dev_out, None, SCOPES["link"]))
            return _make_output(fib, q, ans, None, dev_out, None, src, TableResult())
        if src is None and dst.is_multicast:
            src = _v4(fib.select_v4(dev_out, None, 0))
    if int(dst) == 0:
        ans.type, ans.dev = "local", LOOPBACK
        ans.src = str(src) if src else "127.0.0.1"
        ans.prefsrc = ans.src if ans.src != q.src else None
        return None
    res = lookup_rules(fib, _flow(q, LOOPBACK, oif, src), ans.notes)
    if res.error:
        if oif:
            ans.notes.append(f"no route through {oif}: the kernel takes the destination as on link")
            src = src or _v4(fib.select_v4(dev_out, None, SCOPES["link"]))
            return _make_output(fib, q, ans, "unicast", dev_out, None, src, TableResult())
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
    res: TableResult,
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
    reverse = Flowi(
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
    res = lookup_rules(fib, reverse, [])
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
        return _broadcast_input(fib, q, ans, src, TableResult())
    martian = _martian_v4(fib, src, dst)
    if martian:
        return _fail(ans, "EINVAL", martian)
    res = lookup_rules(fib, _flow(q, q.iif or LOOPBACK, None, src), ans.notes)
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


def _broadcast_input(fib: Fib, q: Query, ans: RouteAnswer, src, res: TableResult) -> None:
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
    flow.strict = strict_v6(dst) or (bool(q.oif) and src is None)
    res = lookup_rules(fib, flow, ans.notes)
    _answer_v6(fib, q, ans, res, dst, src, output=True)


def _input_v6(fib: Fib, q: Query, ans: RouteAnswer) -> None:
    """``ip6_route_input_lookup``: a packet arriving on ``iif`` (the lookup prefers routes
    through that card)."""
    dst = ipaddress.IPv6Address(q.to)
    src = ipaddress.IPv6Address(q.src) if q.src else None
    flow = _flow(q, q.iif or LOOPBACK, None, src)
    flow.score_oif = q.iif
    flow.strict = strict_v6(dst)
    res = lookup_rules(fib, flow, ans.notes)
    if res.error is None and dst.is_multicast:
        return _fail(
            ans,
            "EMSGSIZE",
            "the kernel cannot describe a multicast input route without multicast routing",
            res,
        )
    _answer_v6(fib, q, ans, res, dst, src, output=False)
    return None


def _answer_v6(fib: Fib, q, ans: RouteAnswer, res: TableResult, dst, src, *, output: bool) -> None:
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
