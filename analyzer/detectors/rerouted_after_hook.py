"""rerouted_after_hook: a flow's LOG lines name one card, the wire shows its packets on another.

Kernel fact F7: a filter OUTPUT LOG line prints the card of the routing decision made before
the hook; a reroute after it (mangle OUTPUT sets a mark, ``ip rule fwmark ... lookup T``, and
the packet is routed again) sends the packet out of another card while the log still names the
first. The wire is right; the disagreement is itself the evidence of the reroute, and of why a
log read alone misleads. One finding per flow and (logged card, wire card); ``ifaces`` is
[logged, wire], ``first_ts`` the first such packet, ``marks`` the marks its lines printed.
"""

from __future__ import annotations

import numpy as np

from ..render import count
from . import register
from .base import Context, Finding, flow_text, when


@register("rerouted_after_hook", fact="F7", needs=("captures", "log"))
def detect(ctx: Context) -> list[Finding]:
    """F7: the LOG line's OUT= is the first lookup's card; a reroute after the hook moved it."""
    pk = ctx.tables.packets
    if pk.empty or "logged_cards" not in pk:
        return []
    out = ctx.outgoing
    logged = pk["logged_cards"].to_numpy()[out]
    wire = ctx.card_codes[0][out]
    names = ctx.card_names
    # Most packets were not logged (a rule may log a sample): only the logged ones are looked at.
    was_logged = np.flatnonzero(np.fromiter(map(bool, logged), bool, len(logged)))
    odd = [k for k in was_logged.tolist() if names[wire[k]] not in logged[k]]
    if not odd:
        return []
    packets = ctx.packets
    groups: dict[tuple[int, str, str], list[int]] = {}
    for k in odd:
        row = int(out[k])
        key = (int(pk["flow_id"].iat[row]), ",".join(logged[k]), names[wire[k]])
        groups.setdefault(key, []).append(row)
    findings = []
    for (flow_id, logged_card, wire_card), rows in groups.items():
        shown = packets.iloc[np.array(rows)]
        marks = sorted({ctx.marks.get(int(p), 0) for p in shown["packet_id"]})
        flow = ctx.flow_info[flow_id]
        marked = ", ".join(f"{m:#x}" for m in marks if m)
        summary = (
            f"{flow_text(flow)}: {count(len(rows), 'packet')} from "
            f"{when(shown['ts'].iat[0])} {'was' if len(rows) == 1 else 'were'} logged leaving "
            f"{logged_card} but left through {wire_card}: routed again after the LOG rule"
            + (f" (their lines print MARK={marked}: a mark-based reroute)" if marked else "")
            + ". The wire is right; the log names the card of the first lookup."
        )
        findings.append(
            ctx.finding(
                "rerouted_after_hook",
                "warning",
                flow_id,
                [logged_card, wire_card],
                shown,
                summary,
                marks=[f"{m:#x}" for m in marks],
            )
        )
    return findings
