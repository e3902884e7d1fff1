"""Why a flow's packets went where they went: the rule and route behind a finding.

Kernel facts F2-F4: the route lookup picks the card every outgoing packet leaves through (F3),
gives a new outgoing connection its source once (F2), and has no say in where packets arrive
(F4). Findings report what the captures show; an explanation replays the kernel's lookup for the
flow's outgoing packets (``lookup.route_get``) on the ``ip`` snapshot in force at the time of
the evidence, before and after a change, and says which rule and route sent the flow to each
card. Each detector that reports where packets went calls the function for its kind here and
attaches the result as the finding's ``explanation``: a ``text`` sentence plus the structured
lookups it rests on.

A snapshot is taken just *after* a change, so a change can be in force a few milliseconds before
its snapshot: when the snapshot in force at a packet's time does not send the flow to the card
the packet was seen on, the next later snapshot (then the others) is tried, and the explanation
says which one agreed, or that none did (the cause is then not in the snapshots: a mark, a
neighbour, a multipath hash).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from ..errors import QueryError
from ..render import ts_text
from ..sources.ipsnap import HostState, Snapshot
from .answer import Query, RouteAnswer, route_text, rule_text
from .lookup import route_get
from .moments import explain_choice

PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136}


def outgoing_query(flow: dict[str, Any], local: str, *, with_source: bool = True) -> Query:
    """The lookup for the flow's packets that this host sends: to the remote end, from the local
    one (the pinned source) unless ``with_source`` is False (what a new connection would get).
    ``local`` is the flow's ``local`` column: initiator, responder (unknown counts as
    initiator)."""
    if local == "responder":
        here, here_port, there, there_port = flow["dst"], flow["dport"], flow["src"], flow["sport"]
    else:
        here, here_port, there, there_port = flow["src"], flow["sport"], flow["dst"], flow["dport"]
    proto = flow["proto"]
    v6 = ipaddress.ip_address(there).version == 6
    if proto in PROTOCOLS:
        return Query(
            there,
            here if with_source else None,
            ipproto=PROTOCOLS[proto],
            sport=here_port,
            dport=there_port,
        )
    number = 58 if proto in ("icmp", "icmp6") and v6 else 1 if proto == "icmp" else 0
    return Query(there, here if with_source else None, ipproto=number)


def incoming_query(flow: dict[str, Any], local: str, card: str) -> Query:
    """The input lookup for the flow's packets arriving on ``card``."""
    out = outgoing_query(flow, local)
    return Query(
        out.src or "", out.to, iif=card, ipproto=out.ipproto, sport=out.dport, dport=out.sport
    )


def _same_card(snap: Snapshot, routed: str | None, seen: str | None) -> bool:
    """The route's card is the card a packet was seen on, or stacked with it (a bridge and its
    port, a macvlan/VLAN and its parent)."""
    if routed is None or seen is None:
        return False
    if routed == seen:
        return True
    for a, b in ((seen, routed), (routed, seen)):
        link = snap.link_by_name(a)
        if link is not None and b in (link.master, link.parent):
            return True
    return False


def _agrees(snap: Snapshot, ans: RouteAnswer, card: str | None) -> bool:
    if card is None:
        return True
    return any(_same_card(snap, dev, card) for dev in [ans.dev, *(p.dev for p in ans.paths)])


def lookup(host: HostState, query: Query, at_ns: int, card: str | None = None) -> dict[str, Any]:
    """The route lookup for ``query`` at a time, on the snapshot in force; when that snapshot
    does not send it to ``card`` (the card the packet was seen on), on the nearest snapshot that
    does, later ones first. ``agrees`` says whether the answer matches the card."""
    at = at_ns / 1e9
    in_force = host.at(at)
    try:
        first = route_get(in_force, query)
    except QueryError as exc:
        return {
            "at": ts_text(int(at_ns)),
            "snapshot": in_force.moment,
            "route": None,
            "error": None,
            "agrees": False,
            "note": str(exc),
        }
    chosen, chosen_snap, note = first, in_force, None
    if not _agrees(in_force, first, card):
        later = [s for s in host.snapshots if (s.taken_at or 0) > (in_force.taken_at or 0)]
        earlier = [s for s in host.snapshots if s not in later and s is not in_force]
        for snap in later + earlier[::-1]:
            ans = route_get(snap, query)
            if _agrees(snap, ans, card):
                gap = (snap.taken_at or at) - at
                note = (
                    f"the snapshot in force ({in_force.moment}) sends it to "
                    f"{first.dev or first.error_text}; {snap.moment}, taken {abs(gap) * 1000:.0f} "
                    f"ms {'after' if gap >= 0 else 'before'} the packet, agrees: the change "
                    "came between the two snapshots"
                )
                chosen, chosen_snap = ans, snap
                break
    out = decision(chosen)
    out["at"] = ts_text(int(at_ns))
    out["agrees"] = _agrees(chosen_snap, chosen, card)
    if note:
        out["note"] = note
    return out


def decision(ans: RouteAnswer) -> dict[str, Any]:
    """The parts of a route answer an explanation cites."""
    return {
        "snapshot": ans.snapshot,
        "query": ans.query.words(),
        "card": ans.dev,
        "gateway": ans.gateway,
        "src": ans.src,
        "table": ans.table,
        "rule": rule_text(ans.rule) if ans.rule is not None else None,
        "route": route_text(ans.route) if ans.route is not None else None,
        "error": ans.error_text,
        "paths": [p.dev for p in ans.paths] if ans.multipath else None,
        "notes": [n for n in ans.notes if not n.startswith("no IPv")],
        "_answer": ans,
    }


def _public(value: Any) -> Any:
    """JSON-ready: without the ``_answer`` objects kept for building the text."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def _phrase(d: dict[str, Any]) -> str:
    """``the route 172.16.70.0/24 dev eth2 ... metric 100 (rule 32766, snapshot before)``, or
    how the lookup failed."""
    if d.get("route") is None and d.get("error") is None:
        return f"no replay ({d.get('note', 'no snapshot')})"
    rule = f"rule {d['rule'].split(':')[0]}, " if d.get("rule") else ""
    where = f"({rule}snapshot {d['snapshot']})"
    if d.get("error"):
        at = f" at the route {d['route']}" if d.get("route") else ""
        return f"the lookup failing with {d['error']}{at} {where}"
    return f"the route {d['route']} {where}"


def _finish(text: str, parts: dict[str, Any]) -> dict[str, Any]:
    return {"text": text, **_public(parts)}


def egress_change(
    host: HostState | None,
    flow: dict[str, Any],
    local: str,
    before_ns: int,
    after_ns: int,
    before_card: str,
    after_card: str,
    *,
    marks: tuple[int, int] = (0, 0),
) -> dict[str, Any] | None:
    """F3: the lookup for the flow's next packet gave another card. ``before_ns`` is the last
    packet on ``before_card``, ``after_ns`` the first on ``after_card``; ``marks`` the packet
    marks their LOG lines printed (0: none or not logged), which rules may match on."""
    if not host:
        return None
    q = outgoing_query(flow, local)
    before = lookup(host, dataclasses.replace(q, mark=marks[0]), before_ns, before_card)
    after = lookup(host, dataclasses.replace(q, mark=marks[1]), after_ns, after_card)
    assumed = None
    if not after["agrees"] and not marks[1]:
        assumed = _mark_that_agrees(host, q, after_ns, after_card)
        if assumed is not None:
            marks = (marks[0], assumed)
            after = lookup(host, dataclasses.replace(q, mark=assumed), after_ns, after_card)
    why = explain_choice(before["_answer"], after["_answer"])
    if why and marks[0] != marks[1]:
        unmarked = "unmarked" if not marks[0] else f"marked {marks[0]:#x}"
        seen = (
            "no LOG line shows their mark: assumed, the one mark whose rule sends them there"
            if assumed is not None
            else "their LOG lines' MARK="
        )
        why += f" for packets marked {marks[1]:#x} ({seen}; before, {unmarked})"
    src = q.src
    if before["agrees"] and after["agrees"] and why:
        text = (
            f"Before the switch {_phrase(before)} sent the flow out of {before_card}; then "
            f"{why}: {_phrase(after)} sends it out of {after_card}. The kernel routes every "
            f"packet again (F3), so the live flow moved, still from {src}: a socket keeps its "
            "source (F2)."
        )
    else:
        text = (
            f"The ip snapshots do not show why the flow moved from {before_card} to "
            f"{after_card}: before, {_phrase(before)}; after, {_phrase(after)}. The cause is "
            "not in them (a change between snapshots, a packet mark, a multipath hash)."
        )
    parts = {"fact": "F3", "query": q.words(), "before": before, "after": after, "why": why}
    if assumed is not None:
        parts["assumed_mark"] = f"{assumed:#x}"
    return _finish(text, parts)


def _mark_that_agrees(host: HostState, query: Query, at_ns: int, card: str) -> int | None:
    """The packet mark that policy rules of the snapshot in force match on (``fwmark``) and
    that sends the flow out of ``card``, when exactly one does: a mark set after the socket
    (mangle OUTPUT, F7) that no input shows."""
    snap = host.at(at_ns / 1e9)
    found = set()
    for rule in snap.rules:
        mark = rule.selectors.get("fwmark")
        if not mark or rule.selectors.get("not"):
            continue
        if _agrees(snap, route_get(snap, dataclasses.replace(query, mark=mark)), card):
            found.add(mark)
    return found.pop() if len(found) == 1 else None


def src_not_on_nic(
    host: HostState | None,
    flow: dict[str, Any],
    local: str,
    start_ns: int,
    at_ns: int,
    card: str,
    *,
    mark: int = 0,
) -> dict[str, Any] | None:
    """F2: why the packets on ``card`` carry a source the card does not hold: the source was
    chosen at the flow's start (``start_ns``) and is never chosen again; the route at ``at_ns``
    (for packets with ``mark``, their LOG lines' MARK=) sends the flow out of ``card``."""
    if not host:
        return None
    q = outgoing_query(flow, local)
    src = q.src
    if not mark and not lookup(host, q, at_ns, card)["agrees"]:
        mark = _mark_that_agrees(host, q, at_ns, card) or 0
    now = lookup(host, dataclasses.replace(q, mark=mark), at_ns, card)
    fresh = lookup(host, outgoing_query(flow, local, with_source=False), at_ns)
    snap = host.at(at_ns / 1e9)
    family = ipaddress.ip_address(src or "0.0.0.0").version
    held = sorted(a for a in snap.addresses_of(card) if ipaddress.ip_address(a).version == family)
    if local == "responder":
        how = "accepted"
        origin = (
            f"The host accepted this flow, so its source is the address the peer connected to, "
            f"{src}, whatever a route's src says (F2)"
        )
        start = None
    else:
        start = lookup(host, outgoing_query(flow, local, with_source=False), start_ns)
        if start.get("src") == src:
            how = "route"
            origin = (
                f"The source {src} was chosen when the flow started ({ts_text(int(start_ns))}): "
                f"{_phrase(start)} gave it, and a socket keeps its source (F2)"
            )
        else:
            how = "bound"
            origin = (
                f"The source {src} was chosen by the application (bind) when the flow started "
                f"({ts_text(int(start_ns))}; the route then would have given "
                f"{start.get('src') or start.get('error')}), and a socket keeps its source (F2)"
            )
    holds = ", ".join(held) if held else "no address of that family"
    marked = f" for packets marked {mark:#x}" if mark else ""
    text = (
        f"{origin}. Now {_phrase(now)}{marked} sends the flow out of {card}, which holds {holds}, "
    )
    text += f"not {src}"
    if fresh.get("src") and fresh.get("src") != src:
        text += f"; a new connection would get {fresh['src']}"
    text += "."
    return _finish(
        text,
        {
            "fact": "F2",
            "query": q.words(),
            "source": {"address": src, "chosen": how, "at_start": start},
            "now": now,
            "card_addresses": held,
            "new_connection_source": fresh.get("src"),
        },
    )


def asymmetric_return(
    host: HostState | None,
    flow: dict[str, Any],
    local: str,
    at_ns: int,
    egress: str,
    arrival: str,
) -> dict[str, Any] | None:
    """F4: the route sends the flow out of ``egress``; nothing in routing decides that its
    packets arrive on ``arrival``. Also says whether the kernel accepts them there (rp_filter)."""
    if not host:
        return None
    q = outgoing_query(flow, local)
    out = lookup(host, q, at_ns, egress)
    snap = host.at(at_ns / 1e9)
    local_addr = q.src or ""
    holders = snap.holder_of(local_addr)
    try:
        inbound = route_get(snap, incoming_query(flow, local, arrival))
        accepted = inbound.ok
        rule = f"rule {inbound.rule.priority}, " if inbound.rule else ""
        verdict = (
            f"arriving there they are accepted ({inbound.type}, {rule}snapshot {snap.moment})"
            if accepted
            else f"the kernel refuses them there: {'; '.join(inbound.notes) or inbound.error_text}"
        )
        if accepted and not snap.sysctls:
            # The replay took rp_filter as off; strict rp_filter would drop them (F4).
            accepted = None
            verdict = (
                f"whether the kernel accepts them there is unknown: rp_filter unknown (no sysctl "
                f"snapshot; with rp_filter off the input lookup accepts them, {rule}snapshot "
                f"{snap.moment})"
            )
        incoming = decision(inbound)
    except QueryError as exc:
        accepted, verdict, incoming = None, f"the input lookup could not be replayed ({exc})", {}
    where = f"{local_addr} is on {', '.join(holders)}" if holders else f"{local_addr} is on no card"
    text = (
        f"Packets to {q.to} leave {egress} by {_phrase(out)}. Routes decide only the way out "
        f"(F4): the peer sends its packets to {arrival} ({where}), and {verdict}."
    )
    return _finish(
        text,
        {
            "fact": "F4",
            "query": q.words(),
            "egress": out,
            "arrival": {
                "card": arrival,
                "local_address_on": holders,
                "accepted": accepted,
                "input": incoming,
            },
        },
    )


def no_route_egress(
    host: HostState | None,
    flow: dict[str, Any],
    local: str,
    last_out_ns: int,
    after_ns: int,
    card: str,
) -> dict[str, Any] | None:
    """F3/F4, for the ``no_route_egress`` detector: the lookup that sent the flow's last
    outgoing packet out of ``card`` (at ``last_out_ns``), and what it gives at ``after_ns``
    (when the peer's packets keep arriving): an error, or another card.

    >>> no_route_egress(host, flow, "initiator", last, first_in, "eth1")["text"]  # doctest: +SKIP
    'Until 2026-... the route 172.16.70.0/24 dev eth1 ... (rule 32766, snapshot before) sent...'
    """
    if not host:
        return None
    q = outgoing_query(flow, local)
    before = lookup(host, q, last_out_ns, card)
    after = lookup(host, q, after_ns)
    if after.get("error"):
        then = f"the lookup fails with {after['error']}"
        notes = [n for n in after.get("notes", []) if n.startswith("no rule gave")]
        if notes:
            then += f" ({notes[0]})"
    else:
        then = f"it gives {after.get('card')}"
    text = (
        f"Until {before['at']} {_phrase(before)} sent the flow out of {card}; then {then} "
        f"(snapshot {after.get('snapshot')}). Every packet is routed again (F3), so the flow's "
        "outgoing packets stop, while the peer's keep arriving: routes do not decide where "
        "packets arrive (F4)."
    )
    return _finish(text, {"fact": "F3", "query": q.words(), "before": before, "after": after})
