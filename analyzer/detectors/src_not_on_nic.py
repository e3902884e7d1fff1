"""src_not_on_nic: an outgoing packet leaves a card that does not hold its source address.

Kernel facts F2 and F3: the source address is chosen once, when the flow starts (from the route,
or from the SYN's destination for an accepted connection), and never changes; the egress card is
chosen again for every packet. After a route change the two disagree and a card emits packets
with another card's address. Addresses come from the ``ip addr`` snapshot in force at the
packet's time; a bridge or bond master's addresses count for its members. Packets whose source
is no address of this host (forwarded traffic) are not this host's sockets and are left alone.
The explanation says where the source came from and which route now picks the card
(``explain.src_not_on_nic``).
"""

from __future__ import annotations

import numpy as np

from ..flows.tables import first_appearances, group_codes
from ..kernel import explain
from ..render import count
from ..schema import addr_text, words_to_bytes
from . import register
from .base import Context, Finding, flow_text, when


@register("src_not_on_nic", fact="F2", needs_addresses=True, moments=True)
def detect(ctx: Context) -> list[Finding]:
    """F2/F3: the pinned source stays while the egress card changes."""
    pk = ctx.tables.packets
    sel = ctx.outgoing
    if not len(sel) or not ctx.host:
        return []
    snaps = ctx.host.snapshots
    taken = np.array([s.taken_at if s.taken_at is not None else -np.inf for s in snaps])
    ts = pk["ts"].to_numpy()[sel]
    snap_idx = np.maximum(np.searchsorted(taken, ts / 1e9, side="right") - 1, 0)
    hi, lo = pk["src_hi"].to_numpy()[sel], pk["src_lo"].to_numpy()[sel]
    card_code, card_names = ctx.card_codes[0][sel], ctx.card_names
    # One verdict per distinct (source, card, snapshot); each packet takes its combination's.
    combo = group_codes([hi, lo, card_code, snap_idx])
    bad, holders = [], []
    for at in first_appearances(combo).tolist():
        addr = addr_text(words_to_bytes(hi[at : at + 1], lo[at : at + 1])[0])
        snap, card = snaps[snap_idx[at]], card_names[card_code[at]]
        local = {a.address for a in snap.addresses}
        on_card = addr in snap.addresses_of(card, include_master=True)
        bad.append(addr in local and not on_card)
        holders.append(", ".join(h for h in snap.holder_of(addr) if h != card))
    shown = np.array(bad, dtype=bool)[combo]
    if not shown.any():
        return []
    pk = ctx.packets  # with card names: only for what is reported
    cols = ["packet_id", "flow_id", "order", "ts", "egress", "src_hi", "src_lo"]
    out = pk.iloc[sel[shown]][cols].assign(holder=np.array(holders, dtype=object)[combo[shown]])
    out = out.sort_values("order", kind="stable")
    findings = []
    for flow_id, rows in out.groupby("flow_id", sort=False):
        flow = ctx.flow_info[int(flow_id)]
        cards = list(dict.fromkeys(rows["egress"]))
        first = rows.iloc[0]
        src = addr_text(words_to_bytes(np.array([first["src_hi"]]), np.array([first["src_lo"]]))[0])
        owner = f" (it belongs to {first['holder']})" if first["holder"] else ""
        summary = (
            f"{flow_text(flow)}: {count(len(rows), 'packet')} left {', '.join(cards)} "
            f"with source {src}, "
            f"which {cards[0]} does not hold{owner}, from {when(first['ts'])}: the source was "
            "pinned when the flow started and the route now picks another card."
        )
        why = explain.src_not_on_nic(
            ctx.host,
            flow,
            ctx.flow_role(flow_id),
            ctx.flow_start(flow_id),
            int(first["ts"]),
            cards[0],
            mark=ctx.marks.get(int(first["packet_id"]), 0),
        )
        findings.append(
            ctx.finding(
                "src_not_on_nic",
                "error",
                flow_id,
                cards,
                rows,
                summary,
                explanation=why,
                src_addr=src,
            )
        )
    return findings
