"""nat_pinned: flows of one kind carry different NAT translations at the same time.

Kernel fact F5: netfilter's NAT tables see only a connection's first packet; conntrack keeps the
mapping it chose and applies it to every later packet. Replace or delete a NAT rule mid-flow
and the live flow keeps its old translation while a new flow of the same kind (protocol,
original source, destination and destination port) gets the new one. Translations come from
``nat.join_translations`` (the packet at filter OUTPUT/INPUT and on the card), so both a capture
and a LOG line are needed; only flows whose translation is known (seen both ways) are compared.
Reported on the older flow, from its first packet once the newer one has appeared; ``ifaces`` are
the cards it crossed then. Extra fields: ``nat`` and ``newer_flow``/``newer_nat``; with the
bundle's ``ip/<moment>/iptables.txt`` (or ``nft.txt``) and ``changes.log``, ``rule_change``
names the NAT rules replaced in between; with ``conntrack.txt``, ``conntrack`` quotes both
entries.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from ..kernel.netstate import NetState
from ..render import ts_text
from ..schema import PORTED_PROTOS, addr_text, words_to_bytes
from ..sources.conntrack import Tuple
from ..sources.nfrules import nat_rule_changes
from . import register
from .base import Context, Finding, flow_text, when


def _addr(hi: int, lo: int) -> str:
    return addr_text(
        words_to_bytes(np.array([hi], dtype=np.uint64), np.array([lo], dtype=np.uint64))[0]
    )


def _translation(row: Any) -> dict[str, Any] | None:
    if pd.isna(row.nat_src_hi):
        return None
    return {
        "src": _addr(row.nat_src_hi, row.nat_src_lo),
        "sport": int(row.nat_sport),
        "dst": _addr(row.nat_dst_hi, row.nat_dst_lo),
        "dport": int(row.nat_dport),
    }


def _mapping(flow: dict[str, Any], nat: dict[str, Any] | None) -> tuple:
    """What a rule decides for a flow of its kind: the translated source address and the
    translated destination; source ports differ from flow to flow anyway."""
    seen = nat or flow
    return seen["src"], seen["dst"], seen["dport"]


def _endpoint_text(t: dict[str, Any] | None) -> str:
    if not t:
        return "untranslated"
    return flow_text({"proto": "", **t}).strip()


def _rule_change(state: NetState, since: float, until: float) -> dict[str, Any] | None:
    """NAT rules replaced between two moments around (since, until], and the command run."""
    moments = [m for m in state.moments if m.rulesets]
    change: dict[str, Any] = {}
    for before, after in itertools.pairwise(moments):
        if (
            after.taken_at is None
            or not since < after.taken_at
            or (before.taken_at is not None and before.taken_at >= until)
        ):
            continue
        removed, added = nat_rule_changes(list(before.rulesets), list(after.rulesets))
        if removed or added:
            change = {
                "between": [before.moment, after.moment],
                "taken_at": after.taken_at,
                "removed": [r.describe() for r in removed],
                "added": [r.describe() for r in added],
            }
            break
    commands = [(t, c) for t, c in state.changes if since < t <= until]
    if commands:
        change["at"], change["command"] = commands[-1]
    return change or None


def _conntrack_lines(state: NetState, flows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for f in flows:
        entry = state.conntrack_entry(f["proto"], Tuple(f["src"], f["dst"], f["sport"], f["dport"]))
        if entry:
            lines.append(entry.text)
    return lines


@register("nat_pinned", fact="F5", needs=("captures", "log"), moments=True)
def detect(ctx: Context) -> list[Finding]:
    """F5: NAT is decided once per flow; conntrack keeps an old mapping after the rule changes."""
    fl = ctx.flows
    if fl.empty or "nat_known" not in fl:
        return []
    fl = fl[fl["nat_known"] & fl["proto"].isin(PORTED_PROTOS)]
    kind = ["proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "dport"]
    # Only kinds with two flows or more compare anything: most flows are alone in theirs.
    fl = fl[fl.groupby(kind, sort=False)["flow_id"].transform("size").to_numpy() >= 2]
    groups = fl.groupby(kind, sort=False)
    obs = ctx.tables.observations
    on_wire = set(obs.loc[obs["hook"].isna(), "packet_id"])
    findings = []
    for _, group in groups:
        if len(group) < 2 or group["nat_src_hi"].isna().all():
            continue
        rows = list(group.sort_values("first_ns").itertuples(index=False))
        for i, old in enumerate(rows):
            old_flow, old_nat = ctx.flow_info[int(old.flow_id)], _translation(old)
            for new in rows[i + 1 :]:
                new_flow, new_nat = ctx.flow_info[int(new.flow_id)], _translation(new)
                if _mapping(old_flow, old_nat) == _mapping(new_flow, new_nat):
                    continue
                pk = ctx.packets
                later = pk[
                    (pk["flow_id"] == old.flow_id)
                    & (pk["ts"] >= new.first_ns)
                    & pk["packet_id"].isin(on_wire)
                ].sort_values("order")
                if later.empty:
                    continue
                cards = np.where(later["direction"] == "out", later["egress"], later["arrival"])
                ifaces = list(dict.fromkeys(c for c in cards if isinstance(c, str)))
                first_new = pk[(pk["flow_id"] == new.flow_id) & pk["packet_id"].isin(on_wire)]
                lead = (
                    [int(first_new.sort_values("order")["packet_id"].iat[0])]
                    if len(first_new)
                    else []
                )
                extra: dict[str, Any] = {
                    "nat": old_nat,
                    "newer_flow": new_flow,
                    "newer_nat": new_nat,
                }
                change = _rule_change(ctx.netstate, old.first_ns / 1e9, new.first_ns / 1e9)
                if change:
                    extra["rule_change"] = change
                entries = _conntrack_lines(ctx.netstate, [old_flow, new_flow])
                if entries:
                    extra["conntrack"] = entries
                rule = ""
                if change and change.get("removed") and change.get("added"):
                    rule = (
                        f" The rule changed in between: '{change['removed'][0]}' became "
                        f"'{change['added'][0]}'."
                    )
                elif change and change.get("command"):
                    rule = f" At {ts_text(int(change['at'] * 1e9))}: {change['command']}."
                summary = (
                    f"{flow_text(old_flow)} still leaves as {_endpoint_text(old_nat)} while "
                    f"{flow_text(new_flow)}, of the same kind and started at "
                    f"{when(new.first_ns)}, is {_endpoint_text(new_nat)}: NAT is decided on a "
                    "connection's first packet and conntrack keeps that mapping, so the older "
                    f"flow is pinned to a translation the rules no longer give.{rule}"
                )
                findings.append(
                    ctx.finding(
                        "nat_pinned",
                        "warning",
                        old.flow_id,
                        ifaces,
                        later,
                        summary,
                        lead_in=lead,
                        **extra,
                    )
                )
                break
    return findings
