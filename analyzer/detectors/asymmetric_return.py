"""asymmetric_return: a flow's replies arrive on another card than the one it leaves through.

Kernel fact F4: routes decide only where packets leave. Where they arrive depends on which card
holds the destination address and which MAC the peer sends to, so a request can leave through
one card while its replies come back through another. Each arriving packet is compared with the
card the flow's latest outgoing packet left through; ``ifaces`` is [egress, arrival]. The
explanation names the rule and route behind the egress card and whether the kernel accepts the
packets on the arrival card (``explain.asymmetric_return``).
"""

from __future__ import annotations

import numpy as np

from ..flows.tables import grouped_order
from ..kernel import explain
from . import register
from .base import Context, Finding, flow_text, when


@register("asymmetric_return", fact="F4", moments=True)
def detect(ctx: Context) -> list[Finding]:
    """F4: routing picks the way out, not the way in."""
    pk = ctx.tables.packets
    left_card, arrival_card = ctx.card_codes
    leaving = np.zeros(len(pk), dtype=bool)
    leaving[ctx.outgoing] = True
    arriving = ctx.received & (arrival_card >= 0)
    if not leaving.any() or not arriving.any():
        return []
    # Packets are in time order; grouped by flow (time order kept), the latest outgoing packet
    # before each arriving one is a running maximum of outgoing positions within the group.
    seen = np.flatnonzero(leaving | arriving)
    flow = pk["flow_id"].to_numpy()[seen]
    seen = seen[grouped_order(flow)]
    flow = pk["flow_id"].to_numpy()[seen]
    step = np.arange(len(seen))
    latest = np.maximum.accumulate(np.where(leaving[seen], step, -1))
    asks = np.flatnonzero(arriving[seen] & (latest >= 0))
    asks = asks[flow[latest[asks]] == flow[asks]]
    left_via = left_card[seen[latest[asks]]]  # cards as codes of ``ctx.card_names``
    came_on = arrival_card[seen[asks]]
    differ = left_via != came_on
    names = np.array(ctx.card_names, dtype=object)
    cols = ["packet_id", "flow_id", "order", "ts"]
    left_packet = pk["packet_id"].to_numpy()[seen[latest[asks[differ]]]]
    odd = (
        pk.iloc[seen[asks[differ]]][cols]
        .assign(
            arrival=names[came_on[differ]],
            left_via=names[left_via[differ]],
            left_packet=left_packet,
        )
        .sort_values("order", kind="stable")
    )
    wired = dict(zip(pk["packet_id"].tolist(), pk["wired"].tolist(), strict=True))
    findings = []
    for flow_id, rows in odd.groupby("flow_id", sort=False):
        rows = rows.sort_values("order")
        flow = ctx.flow_info[int(flow_id)]
        egress, arrival = rows["left_via"].iat[0], rows["arrival"].iat[0]
        summary = (
            f"{flow_text(flow)} leaves through {egress} but {len(rows)} of its packets came back "
            f"on {arrival}, from {when(rows['ts'].iat[0])}: the route chooses only the way out; "
            f"the peer sends to the MAC of {arrival}."
        )
        left = int(rows["left_packet"].iat[0])
        if not wired.get(left, True) and ctx.marks.get(left):
            summary += (
                f" Only its LOG lines show it leaving {egress}, and they print "
                f"MARK={ctx.marks[left]:#x}: a reroute after the hook (F7) may have sent it out "
                f"of {arrival}; a capture on the cards would tell."
            )
        why = explain.asymmetric_return(
            ctx.host, flow, ctx.flow_role(flow_id), int(rows["ts"].iat[0]), egress, arrival
        )
        findings.append(
            ctx.finding(
                "asymmetric_return",
                "warning",
                flow_id,
                [egress, arrival],
                rows,
                summary,
                explanation=why,
            )
        )
    return findings
