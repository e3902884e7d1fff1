"""Notes on flows that are not findings: what moved below a card without moving the flow.

Kernel fact F7: bridge ports and bond slaves are not cards at the routing level. A failover
between them (the switch takes one port down, the bridge forwards through the other) moves no
flow: its card stays the bridge, its source address stays on it. A report that called it an
egress change would send the engineer after a route that never changed; saying nothing would
hide why the packets now show on another port's capture. So it is a note on the flow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Context, flow_text, when


def port_failovers(ctx: Context) -> list[dict[str, Any]]:
    """Per flow, each time its packets stop showing on one member (port, slave) of their card
    and show on another: ``flow_id``, ``kind``, ``card``, ``from``, ``to``, ``at`` (ISO time),
    ``ts`` (epoch seconds), ``text``."""
    pk = ctx.tables.packets
    below = ctx._below
    members = {lower for lower, upper in below if any(u == upper for _, u in below)}
    if pk.empty or not below or "points" not in pk:
        return []
    egress, arrival = ctx.card_codes
    names = ctx.card_names
    notes = []
    last: dict[tuple[int, str], tuple[str, int]] = {}
    flows = pk["flow_id"].to_numpy(np.int64)
    times = pk["ts"].to_numpy(np.int64)
    for row, points in enumerate(pk["points"].tolist()):
        code = egress[row] if egress[row] >= 0 else arrival[row]
        if code < 0:
            continue
        card = names[code]
        seen = sorted(p for p in points if p in members and (p, card) in below)
        if len(seen) != 1:
            continue
        flow_id, member = int(flows[row]), seen[0]
        before = last.get((flow_id, card))
        last[(flow_id, card)] = (member, int(times[row]))
        if before is None or before[0] == member:
            continue
        flow = ctx.flow_info[flow_id]
        at = int(times[row])
        notes.append(
            {
                "flow_id": flow_id,
                "kind": "port_failover",
                "card": card,
                "from": before[0],
                "to": member,
                "at": when(at),
                "ts": round(at / 1e9, 6),
                "text": (
                    f"{flow_text(flow)}: on {card}, its packets moved from {before[0]} to "
                    f"{member} at {when(at)} (last on {before[0]} at {when(before[1])}). "
                    f"{before[0]} and {member} are members of {card}, not cards: the flow did "
                    "not change cards and keeps its source (F7)."
                ),
            }
        )
    return notes
