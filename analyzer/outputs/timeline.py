"""One flow's packets in time order, each with every point it crossed (``nicpath timeline``)."""

from __future__ import annotations

import ipaddress
import re

import numpy as np
import pandas as pd

from ..analysis.result import Analysis
from ..errors import NicpathError
from ..render import endpoint, tcp_flags_text, ts_text
from ..schema import addr_text, words_to_bytes

FLOW_SPEC = re.compile(
    r"^\s*(?P<proto>tcp|udp|icmp|icmp6|udplite|sctp)\s+(?P<a>\S+)\s+(?:->\s+)?(?P<b>\S+)\s*$", re.I
)


def _endpoint(text: str) -> tuple[str, int]:
    m = re.match(r"^\[(?P<h>[^\]]+)\]:(?P<p>\d+)$", text) or re.match(
        r"^(?P<h>[^:]+):(?P<p>\d+)$", text
    )
    if not m:
        raise NicpathError(f"flow endpoint {text!r}: expected ADDR:PORT or [IPv6]:PORT")
    host = str(ipaddress.ip_address(m.group("h")))
    return host, int(m.group("p"))


def select_flow(analysis: Analysis, spec: str) -> int:
    """The flow id for ``spec``: a flow id as ``analyze`` prints it, or
    ``"tcp 172.16.70.16:42244 172.16.70.15:5000"`` (either orientation; ``->`` optional; a
    translated flow as sent or as translated). With port reuse the first matching flow is
    taken."""
    info = analysis.context.flow_info
    if spec.strip().isdigit():
        fid = int(spec)
        if fid not in info:
            raise NicpathError(f"no flow {fid}: analyze lists flow ids 0..{len(info) - 1}")
        return fid
    m = FLOW_SPEC.match(spec)
    if not m:
        raise NicpathError(f"--flow {spec!r}: expected 'PROTO SRC:PORT DST:PORT' or a flow id")
    proto = m.group("proto").lower().replace("icmp6", "icmp")
    a, b = _endpoint(m.group("a")), _endpoint(m.group("b"))
    for fid, f in info.items():
        ends = {(f["src"], f["sport"]), (f["dst"], f["dport"])}
        if f["proto"] == proto and ends == {a, b}:
            return fid
    # A translated flow also answers to its tuple after NAT (what a capture on the card shows).
    for r in analysis.flows_records():
        if r["nat_src"] is None or r["proto"] != proto:
            continue
        if {(r["nat_src"], r["nat_sport"]), (r["nat_dst"], r["nat_dport"])} == {a, b}:
            return int(r["flow_id"])
    raise NicpathError(f"no flow {spec!r} in the inputs")


def timeline_rows(analysis: Analysis, flow_id: int) -> pd.DataFrame:
    """Packets of one flow: time, direction, points, addresses, flags, length, egress changes."""
    ctx = analysis.context
    pk = ctx.packets
    rows = pk[pk["flow_id"] == flow_id].sort_values("order").copy()
    src = words_to_bytes(rows["src_hi"].to_numpy(), rows["src_lo"].to_numpy())
    dst = words_to_bytes(rows["dst_hi"].to_numpy(), rows["dst_lo"].to_numpy())
    rows["src"] = [addr_text(s) for s in src]
    rows["dst"] = [addr_text(d) for d in dst]
    out_cards = rows["egress"].where(rows["direction"] == "out")
    prev = out_cards.ffill().shift()
    rows["egress_change"] = out_cards.notna() & prev.notna() & (out_cards != prev)
    rows["previous_card"] = prev
    rows["card"] = np.where(rows["direction"] == "out", rows["egress"], rows["arrival"])
    rows["points"] = rows["points"].astype(object)  # tuples, not the packets' categories
    return rows[
        [
            "packet_id",
            "ts",
            "direction",
            "card",
            "points",
            "src",
            "sport",
            "dst",
            "dport",
            "proto",
            "tcp_flags",
            "ip_len",
            "observations",
            "egress_change",
            "previous_card",
            "first_source",
            "first_record",
        ]
    ].reset_index(drop=True)


def timeline_lines(rows: pd.DataFrame) -> list[str]:
    lines = []
    for r in rows.itertuples(index=False):
        if r.egress_change:
            lines.append(f"---- egress changes: {r.previous_card} -> {r.card} ----")
        flags = tcp_flags_text(None if pd.isna(r.tcp_flags) else int(r.tcp_flags))
        points = ",".join(r.points)
        length = "-" if pd.isna(r.ip_len) else int(r.ip_len)
        card = r.card if isinstance(r.card, str) else "?"
        lines.append(
            f"{ts_text(int(r.ts))}  {r.direction:<7} {card:<8} "
            f"{endpoint(r.src, r.sport)} -> {endpoint(r.dst, r.dport)}"
            f"{'  [' + flags + ']' if flags else ''}  len {length}  seen at {points}"
        )
    return lines


__all__ = ["select_flow", "timeline_lines", "timeline_rows"]
