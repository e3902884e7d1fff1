"""no_route_egress: after a route change a flow's outgoing packets stop; its incoming go on.

Kernel facts F4 and F3: every outgoing packet is routed again (F3), so when the routes that
carried a live flow disappear its next packets have nowhere to go and stop at once; but routes
decide only the way out (F4): the peer's packets (retransmissions, new data, datagrams) keep
arriving and are delivered. Raised for a flow whose host sent packets before a route change that
removed a route covering the flow's remote address (snapshots ``ip/<moment>/`` before and
after; ``changes.log`` gives the command and its time), whose last outgoing packet is no later
than the change (a log clock may be up to ``CLOCK_SLACK_NS`` off), and which received at least
``MIN_INCOMING`` packets after both. ``first_ts`` is its first incoming packet after its last
outgoing one; ``ifaces`` the card that packet left through.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from ..kernel import explain
from ..render import count
from ..sources.ipsnap import Route, Snapshot
from . import register
from .base import Context, Finding, flow_text, when

#: Incoming packets after the last outgoing one that show the flow went on without the host.
MIN_INCOMING = 2
#: How far after the snapshot that follows the change the last outgoing packet may seem to be
#: (ns): raw dmesg placed with btime alone is up to a second off (F7).
CLOCK_SLACK_NS = 1_000_000_000


def _route_key(r: Route) -> tuple:
    return (r.family, r.table, r.type, r.dst, r.dev, r.gateway, r.prefsrc, r.metric)


def _route_text(r: Route) -> str:
    via = f" via {r.gateway}" if r.gateway else ""
    table = "" if r.table == "main" else f" table {r.table}"
    return f"{r.dst}{via}" + (f" dev {r.dev}" if r.dev else "") + table


def _covers(r: Route, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if r.family != ip.version or r.type not in ("unicast", "local"):
        return False
    if r.dst == "default":
        return True
    return ip in ipaddress.ip_network(r.dst, strict=False)


def _route_changes(ctx: Context) -> list[dict[str, Any]]:
    """Consecutive snapshots whose routes lost some entries: when, what was removed, and the
    command of changes.log run in between."""
    if not ctx.host:
        return []
    snaps: list[Snapshot] = [s for s in ctx.host.snapshots if s.routes and s.taken_at is not None]
    out = []
    for before, after in itertools.pairwise(snaps):
        kept = {_route_key(r) for r in after.routes}
        removed = [r for r in before.routes if _route_key(r) not in kept]
        if not removed:
            continue
        commands = [
            (t, c) for t, c in ctx.netstate.changes if before.taken_at < t <= after.taken_at
        ]
        out.append(
            {
                "after": after,
                "removed": removed,
                "at": commands[-1][0] if commands else None,
                "command": commands[-1][1] if commands else None,
                "since": before.taken_at,
            }
        )
    return out


def _removal_text(change: dict[str, Any], removed: list[Route]) -> str:
    """What took the flow's route away, as a clause: the command of changes.log that removed
    it, or, without one, the snapshot that no longer holds it."""
    routes = f"the route {_route_text(removed[0])}"
    if len(removed) > 1:
        routes += f" (and {count(len(removed) - 1, 'other route')})"
    if change["command"]:
        return f"then '{change['command']}' removed {routes}"
    after = change["after"]
    return f"then {routes} disappeared (the snapshot {after.moment} no longer holds it)"


@register("no_route_egress", fact="F4", moments=True)
def detect(ctx: Context) -> list[Finding]:
    """F4/F3: a removed route stops a flow's outgoing packets; arrivals do not need routes."""
    changes = _route_changes(ctx)
    if not changes or ctx.tables.packets.empty:
        return []
    pk = ctx.packets
    pk = pk.sort_values("order")
    out = pk[(pk["direction"] == "out") & pk["egress"].notna()]
    inn = pk[pk["direction"] == "in"]
    if out.empty or inn.empty:
        return []
    # Per flow: its first and last outgoing packet, and whether enough arrived after the last.
    ends = out.groupby("flow_id").agg(first_out=("ts", "min"), last_out=("ts", "max"))
    after = inn.join(ends["last_out"], on="flow_id")
    after = after[after["ts"] > after["last_out"]]
    enough = after.groupby("flow_id").size()
    ends = ends.loc[ends.index.intersection(enough[enough >= MIN_INCOMING].index)]
    ends = ends[ends["first_out"] < max(int(ch["after"].taken_at * 1e9) for ch in changes)]
    if ends.empty:
        return []
    last_packet = out[out["flow_id"].isin(ends.index)].groupby("flow_id").tail(1)
    last_packet = last_packet.set_index("flow_id")
    arrivals = dict(list(after[after["flow_id"].isin(ends.index)].groupby("flow_id")))
    local = ctx.flows.set_index("flow_id")["local"]
    findings = []
    for flow_id in ends.index:
        flow = ctx.flow_info[int(flow_id)]
        remote = flow["src"] if local.at[flow_id] == "responder" else flow["dst"]
        last_out = int(ends.at[flow_id, "last_out"])
        inn_flow = arrivals[flow_id]
        for ch in changes:
            upper = int(ch["after"].taken_at * 1e9)
            removed = [r for r in ch["removed"] if _covers(r, remote)]
            if not removed or not int(ends.at[flow_id, "first_out"]) < upper:
                continue
            if last_out > upper + CLOCK_SLACK_NS:
                continue  # still sending after the change: a route still carried it
            start = int(ch["at"] * 1e9) if ch["at"] is not None else int(ch["since"] * 1e9)
            later = inn_flow
            if (later["ts"] > max(start, last_out)).sum() < MIN_INCOMING:
                continue
            card = last_packet.at[flow_id, "egress"]
            summary = (
                f"{flow_text(flow)}: the host's last packet left {card} at {when(last_out)}; "
                f"{_removal_text(ch, removed)}, yet {count(len(later), 'packet')} of the peer "
                f"kept arriving from {when(later['ts'].iat[0])} and the host answered none: "
                "every outgoing packet needs a route, arriving ones do not."
            )
            why = explain.no_route_egress(
                ctx.host, flow, local.at[flow_id], last_out, int(later["ts"].iat[0]), card
            )
            findings.append(
                ctx.finding(
                    "no_route_egress",
                    "error",
                    flow_id,
                    [card],
                    later,
                    summary,
                    lead_in=[int(last_packet.at[flow_id, "packet_id"])],
                    explanation=why,
                    last_egress_ts=round(last_out / 1e9, 6),
                    route_change={
                        "moment": ch["after"].moment,
                        "taken_at": ch["after"].taken_at,
                        "at": ch["at"],
                        "command": ch["command"],
                        "removed": [_route_text(r) for r in removed],
                    },
                )
            )
            break
    return findings
