"""egress_change: a flow's outgoing packets leave through one card, then another.

Kernel fact F3: the route lookup is repeated for every outgoing packet. Add a better route in
the middle of a flow and the very next packet leaves through the new card, while the source
address stays the one pinned at the start (F2). One finding per switch; ``ifaces`` is
[before, after] and ``first_ts`` the first packet on the new card. The explanation replays
the route lookup before and after the switch (``explain.egress_change``).
"""

from __future__ import annotations

from .. import explain
from . import register
from .base import Context, Finding, flow_text, when


@register("egress_change", fact="F3")
def detect(ctx: Context) -> list[Finding]:
    """F3: every outgoing packet is routed again; a better route moves a live flow."""
    pk = ctx.packets
    cols = ["packet_id", "flow_id", "order", "ts", "egress"]
    out = pk.loc[(pk["direction"] == "out") & pk["egress"].notna(), cols]
    out = out.sort_values(["flow_id", "order"])
    if out.empty:
        return []
    prev = out.groupby("flow_id")["egress"].shift()
    # A run is a stretch of packets on one card; a switch starts each run but the first.
    run = (out["egress"] != prev).groupby(out["flow_id"]).cumsum()
    by_flow = out.groupby("flow_id")
    out = out.assign(
        prev=prev,
        run=run,
        prev_packet=by_flow["packet_id"].shift(),
        prev_ts=by_flow["ts"].shift(fill_value=0),  # stays int64 ns
    )
    findings = []
    for (flow_id, _run), stretch in out[out["run"] > 1].groupby(["flow_id", "run"], sort=False):
        before, after = stretch["prev"].iat[0], stretch["egress"].iat[0]
        flow = ctx.flow_info[int(flow_id)]
        summary = (
            f"{flow_text(flow)} moved from {before} to {after} mid-flow at "
            f"{when(stretch['ts'].iat[0])}: the kernel routes every packet again, so a route "
            f"change sent the live flow out of {after}, still with source {flow['src']}."
        )
        last_before = [int(stretch["prev_packet"].iat[0])]
        why = explain.egress_change(
            ctx.host,
            flow,
            ctx.flow_role(flow_id),
            int(stretch["prev_ts"].iat[0]),
            int(stretch["ts"].iat[0]),
            before,
            after,
        )
        findings.append(
            ctx.finding(
                "egress_change",
                "warning",
                flow_id,
                [before, after],
                stretch,
                summary,
                lead_in=last_before,
                explanation=why,
            )
        )
    return findings
