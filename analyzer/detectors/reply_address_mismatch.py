"""reply_address_mismatch: an answer to a flow comes from another address than it went to.

Kernel fact F1: a connected socket holds LOCAL_IP:LPORT / REMOTE_IP:RPORT and gets only packets
carrying exactly that pair, swapped. A "reply" to the flow's local address and port, from its
remote port, at the time of the flow, but from another address, reaches the host and never the
socket: TCP answers it with a RST, UDP with ICMP port unreachable. Reported on the request's flow
(started by this host), naming the foreign address. A packet that opens a conversation the host
takes part in (it answers with anything but a RST) is a flow of its own, not a stray reply.
"""

from __future__ import annotations

import numpy as np

from ..flows.tables import key_hash
from ..render import count
from ..schema import addr_text, words_to_bytes
from . import register
from .base import Context, Finding, flow_text, when

#: A stray reply is counted against a flow if it arrives up to this long after its last packet.
LATE_REPLY_NS = 5_000_000_000


@register("reply_address_mismatch", fact="F1")
def detect(ctx: Context) -> list[Finding]:
    """F1: a socket pins both addresses; an answer from another address never reaches it."""
    fl, pk = ctx.flows, ctx.tables.packets
    if fl.empty:
        return []
    ends = ["flow_id", "proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport"]
    fl = fl[[*ends, "first_ns", "last_ns", "local"]]
    is_request = (fl["local"] == "initiator").to_numpy()
    # Flows the host only receives (a RST back is allowed): candidates for stray replies.
    flags = pk["tcp_flags"].to_numpy(dtype=np.float64, na_value=0).astype(np.int64)
    sent = ctx.sent & ((flags & 0x04) == 0)
    answered = np.isin(fl["flow_id"].to_numpy(), pk["flow_id"].to_numpy()[sent])
    is_stray = ~is_request & ~answered
    if not is_request.any() or not is_stray.any():
        return []
    has_pair = _paired(fl, np.flatnonzero(is_stray), np.flatnonzero(is_request))
    if not has_pair.any():
        return []
    requests = fl[is_request]
    strays = fl[has_pair]
    left = requests.rename(columns=lambda c: f"req_{c}")
    pairs = strays.merge(
        left,
        left_on=["proto", "dst_hi", "dst_lo", "dport", "sport"],
        right_on=["req_proto", "req_src_hi", "req_src_lo", "req_sport", "req_dport"],
    )
    pairs = pairs[
        ((pairs["src_hi"] != pairs["req_dst_hi"]) | (pairs["src_lo"] != pairs["req_dst_lo"]))
        & (pairs["first_ns"] >= pairs["req_first_ns"])
        & (pairs["first_ns"] <= pairs["req_last_ns"] + LATE_REPLY_NS)
    ]
    findings = []
    for req_id, group in pairs.groupby("req_flow_id", sort=False):
        flow = ctx.flow_info[int(req_id)]
        stray_ids = group["flow_id"].to_numpy()
        rows = ctx.packets[pk["flow_id"].isin(stray_ids)].sort_values("order")
        foreign = sorted(
            {
                addr_text(b)
                for b in words_to_bytes(group["src_hi"].to_numpy(), group["src_lo"].to_numpy())
            }
        )
        cards = list(dict.fromkeys(rows["arrival"].dropna()))
        bounced = _bounces(ctx, group)
        answer = "RST" if flow["proto"] == "tcp" else "ICMP port unreachable"
        summary = (
            f"{flow_text(flow)}: {count(len(rows), 'reply', 'replies')} arrived from "
            f"{', '.join(foreign)} instead of "
            f"{flow['dst']}, from {when(rows['ts'].iat[0])}; the socket is connected to "
            f"{flow['dst']} and never gets them"
            + (f" (the host sent {count(bounced, answer)} back)." if bounced else ".")
        )
        findings.append(
            ctx.finding(
                "reply_address_mismatch",
                "error",
                req_id,
                cards,
                rows,
                summary,
                foreign_addr=foreign[0] if len(foreign) == 1 else foreign,
            )
        )
    return findings


def _paired(fl, strays: np.ndarray, requests: np.ndarray) -> np.ndarray:
    """Which flows (rows of ``fl``) among ``strays`` answer one of ``requests`` from another
    address in its time: matched by a hash of the ends first, so the merge below runs only on
    strays that do (none, in traffic without the fault)."""
    col = {c: fl[c].to_numpy() for c in fl.columns if c != "local"}
    reply = key_hash([col[c][strays] for c in ("proto", "dst_hi", "dst_lo", "dport", "sport")])
    asked = key_hash([col[c][requests] for c in ("proto", "src_hi", "src_lo", "sport", "dport")])
    by_hash = np.argsort(asked, kind="stable")
    lo = np.searchsorted(asked[by_hash], reply, side="left")
    hi = np.searchsorted(asked[by_hash], reply, side="right")
    out = np.zeros(len(fl), dtype=bool)
    for s, a, b in zip(strays.tolist(), lo.tolist(), hi.tolist(), strict=True):
        out[s] = any(_answers(col, s, r) for r in requests[by_hash[a:b]].tolist())
    return out


#: (stray's, request's) columns that must be equal: the stray comes back to the request's ends.
_REVERSED_ENDS = (
    ("proto", "proto"),
    ("dst_hi", "src_hi"),
    ("dst_lo", "src_lo"),
    ("dport", "sport"),
    ("sport", "dport"),
)


def _answers(col: dict[str, np.ndarray], s: int, r: int) -> bool:
    """Flow ``s`` comes to flow ``r``'s source address and port from its destination port, but
    from another address, while ``r`` lasts (or up to ``LATE_REPLY_NS`` after)."""
    if any(col[mine][s] != col[theirs][r] for mine, theirs in _REVERSED_ENDS):
        return False
    other = col["src_hi"][s] != col["dst_hi"][r] or col["src_lo"][s] != col["dst_lo"][r]
    return bool(
        other and col["first_ns"][r] <= col["first_ns"][s] <= col["last_ns"][r] + LATE_REPLY_NS
    )


def _bounces(ctx: Context, strays) -> int:
    """How many ICMP errors or RSTs the host sent back for the stray packets."""
    errors = ctx.tables.errors
    count = 0
    if not errors.empty:
        for s in strays.itertuples(index=False):
            hit = errors[
                (errors["inner_src_hi"] == s.src_hi)
                & (errors["inner_src_lo"] == s.src_lo)
                & (errors["inner_sport"] == s.sport)
                & (errors["inner_dport"] == s.dport)
            ]
            # The same error seen at several points: count it at the point that saw most.
            count += int(hit.groupby("source").size().max()) if len(hit) else 0
    pk = ctx.tables.packets
    flags = pk["tcp_flags"].fillna(0).astype(np.int64)
    count += int(((pk["flow_id"].isin(strays["flow_id"])) & ctx.sent & ((flags & 0x04) != 0)).sum())
    return count
