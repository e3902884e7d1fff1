"""egress_change: a flow's outgoing packets leave through one card, then another.

Kernel fact F3: the route lookup is repeated for every outgoing packet. Add a better route in
the middle of a flow and the very next packet leaves through the new card, while the source
address stays the one pinned at the start (F2). One finding per switch; ``ifaces`` is
[before, after] and ``first_ts`` the first packet on the new card. The explanation replays
the route lookup before and after the switch (``explain.egress_change``), with the packet mark
the packets' LOG lines print, which policy rules match on (a mark-based reroute, F7).
"""

from __future__ import annotations

import numpy as np

from ..flows.tables import grouped_order
from ..kernel import explain
from . import register
from .base import Context, Finding, flow_text, when


@register("egress_change", fact="F3", moments=True)
def detect(ctx: Context) -> list[Finding]:
    """F3: every outgoing packet is routed again; a better route moves a live flow."""
    pk = ctx.tables.packets
    out = ctx.outgoing
    if not len(out):
        return []
    # Each flow's outgoing packets in order; a run is a stretch of packets on one card, and a
    # switch starts each run but the first. A run ends at the next switch or its flow's end.
    flow_of = pk["flow_id"].to_numpy(np.int64)
    out = out[grouped_order(flow_of[out])]  # packets, and so ``out``, are in order already
    card = ctx.card_codes[0][out]
    same_flow = flow_of[out][1:] == flow_of[out][:-1]
    switch = np.flatnonzero(same_flow & (card[1:] != card[:-1])) + 1
    flow_end = np.append(np.flatnonzero(~same_flow) + 1, len(out))
    run_end = np.minimum(
        np.append(switch[1:], len(out)), flow_end[np.searchsorted(flow_end, switch, side="right")]
    )
    if not len(switch):
        return []
    pk = ctx.packets  # with card names: only for what is reported
    egress, ts = pk["egress"], pk["ts"]
    findings = []
    for start, end in zip(switch.tolist(), run_end.tolist(), strict=True):
        stretch = pk.iloc[out[start:end]]
        flow_id, last_before = int(flow_of[out[start]]), int(out[start - 1])
        before, after = egress.iat[last_before], egress.iat[out[start]]
        flow = ctx.flow_info[flow_id]
        summary = (
            f"{flow_text(flow)} moved from {before} to {after} mid-flow at "
            f"{when(stretch['ts'].iat[0])}: the kernel routes every packet again, so a route "
            f"change sent the live flow out of {after}, still with source {flow['src']}."
        )
        why = explain.egress_change(
            ctx.host,
            flow,
            ctx.flow_role(flow_id),
            int(ts.iat[last_before]),
            int(stretch["ts"].iat[0]),
            before,
            after,
            marks=(
                ctx.marks.get(int(pk["packet_id"].iat[last_before]), 0),
                ctx.marks.get(int(stretch["packet_id"].iat[0]), 0),
            ),
        )
        findings.append(
            ctx.finding(
                "egress_change",
                "warning",
                flow_id,
                [before, after],
                stretch,
                summary,
                lead_in=[int(pk["packet_id"].iat[last_before])],
                explanation=why,
            )
        )
    return findings
