"""asymmetric_return: a flow's replies arrive on another card than the one it leaves through.

Kernel fact F4: routes decide only where packets leave. Where they arrive depends on which card
holds the destination address and which MAC the peer sends to, so a request can leave through
one card while its replies come back through another. Each arriving packet is compared with the
card the flow's latest outgoing packet left through; ``ifaces`` is [egress, arrival]. The
explanation names the rule and route behind the egress card and whether the kernel accepts the
packets on the arrival card (``explain.asymmetric_return``).
"""

from __future__ import annotations

import pandas as pd

from .. import explain
from . import register
from .base import Context, Finding, flow_text, when


@register("asymmetric_return", fact="F4")
def detect(ctx: Context) -> list[Finding]:
    """F4: routing picks the way out, not the way in."""
    pk = ctx.packets
    cols = ["packet_id", "flow_id", "order", "ts"]
    out = pk.iloc[ctx.outgoing][[*cols, "egress"]]
    inn = pk.loc[(pk["direction"] == "in") & pk["arrival"].notna(), [*cols, "arrival"]]
    if out.empty or inn.empty:
        return []
    latest = pd.merge_asof(
        inn.sort_values("order"),
        out[["order", "flow_id", "egress"]]
        .rename(columns={"egress": "left_via"})
        .sort_values("order"),
        on="order",
        by="flow_id",
        direction="backward",
        allow_exact_matches=False,
    )
    odd = latest[latest["left_via"].notna() & (latest["left_via"] != latest["arrival"])]
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
