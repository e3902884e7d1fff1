"""dropped_before_hook: packets on a card's wire, to the host, that never reach filter INPUT.

Kernel fact F4: routes decide only the way out, yet the input path consults them too. Before
filter INPUT the kernel looks the packet up (``ip_route_input``); with strict ``rp_filter`` it
also looks its source up, and when the route back to the source leaves through another card the
packet is dropped there: on the card's wire (capture), never in an INPUT LOG line. Raised only
where the log covers the packet: filter INPUT logged other packets of its protocol less than
``COVER_NS`` before and after it, so a missing line is not a log that ends early; no packet of
the flow on that card reached INPUT (the check is the same for each, so the others went
unlogged); and where the ruleset in force is known (``iptables.txt``), a LOG rule without a
``limit`` matches the packet (``kernel/logrules.py``), so it is not a sample's gap; where it is
not, every packet the flow sent has its OUTPUT line (two at least), so the log covers the flow
and is no sample. Packets of a flow
seen only on the wire are left alone when a flow seen only at the hooks could be its NAT twin
(the two tuples of one connection were not paired).

The finding says why the drop is likely: the card's ``rp_filter`` (``ip/<moment>/sysctl.txt``:
the larger of ``all`` and the card), the route back to the source (the route replay of
``kernel/lookup.py``: rules, tables, metrics, as ``ip route get SRC from DST`` answers), and the
kernel's martian lines for those packets (rate-limited: their absence proves nothing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import QueryError
from ..kernel import logrules
from ..kernel.answer import Query
from ..kernel.lookup import route_get
from ..render import count, proto_name
from ..schema import addr_text, words_to_bytes
from ..sources.ipsnap import Route, Snapshot
from ..sources.sysctl import RP_FILTER_MODES
from . import register
from .base import Context, Finding, flow_text, when

#: The log covers a packet when its hook logged that protocol this close before and after (ns).
COVER_NS = 1_000_000_000
#: A LOG line with a coarse time (whole-second syslog, btime) may be this far from its packet.
LOG_SLACK_NS = 2_000_000_000
#: Martian lines count for a flow's dropped packets within this margin of them (ns).
MARTIAN_NS = 2_000_000_000


def _text(hi: np.ndarray, lo: np.ndarray) -> list[str | None]:
    return [addr_text(b) for b in words_to_bytes(hi.astype(np.uint64), lo.astype(np.uint64))]


def reverse_route(snap: Snapshot, source: str, local: str) -> Route | None:
    """The route a reply from ``local`` to ``source`` would take, replayed with the rules and
    every table (``analyzer.routing``): what strict rp_filter compares with the arrival card.
    The packet's mark is not used (src_valid_mark off, the default)."""
    try:
        answer = route_get(snap, Query(source, local))
    except QueryError:
        return None
    return answer.route if answer.ok and answer.dev else None


def _route_text(r: Route) -> str:
    via = f" via {r.gateway}" if r.gateway else ""
    return f"{r.dst}{via} dev {r.dev}" + (f" metric {r.metric}" if r.metric else "")


def _covered(
    ts: np.ndarray, proto: np.ndarray, version: np.ndarray, logged: pd.DataFrame
) -> np.ndarray:
    """For each packet, whether INPUT logged its protocol within COVER_NS before and after."""
    out = np.zeros(len(ts), dtype=bool)
    for (p, v), group in logged.groupby(["proto", "ip_version"]):
        times = np.sort(group["ts"].to_numpy())
        sel = (proto == p) & (version == v)
        if not sel.any():
            continue
        t = ts[sel]
        before = np.searchsorted(times, t, side="right") - 1
        after = np.searchsorted(times, t, side="left")
        ok_before = (before >= 0) & (t - times[np.maximum(before, 0)] <= COVER_NS)
        has_after = after < len(times)
        ok_after = has_after & (times[np.minimum(after, len(times) - 1)] - t <= COVER_NS)
        out[sel] = ok_before & ok_after
    return out


def _ruleset_in_force(ctx: Context, ts: np.ndarray) -> np.ndarray:
    """Per time (ns), which of the moments that have netfilter rulesets is in force: the latest
    taken at or before it (one without a time counts as before), else the first; -1 where no
    moment has one."""
    chosen = np.full(len(ts), -1, dtype=np.int64)
    moments = [m for m in ctx.netstate.moments if m.rulesets]
    for k, m in enumerate(moments):
        later = chosen < 0
        if m.taken_at is None:
            later[:] = True
        else:
            later |= m.taken_at <= ts / 1e9
        chosen[later] = k
    return chosen


def _logged_in_full(ctx: Context, cand: pd.DataFrame) -> pd.DataFrame:
    """The candidates a LOG rule of the ruleset in force logs in full: a packet only a sampled
    rule (``limit``/``hashlimit``) or no rule covers has no line to miss. Without an iptables
    ruleset, every candidate stays (the flows' own coverage is all there is), and the status
    says so."""
    if cand.empty:
        return cand
    n = len(cand)
    keep = np.ones(n, dtype=bool)
    versions = ctx.flows.set_index("flow_id")["ip_version"].reindex(cand["flow_id"]).to_numpy()
    proto = cand["proto"].to_numpy()
    left: dict[str, int] = {}
    shares: dict[tuple[int, int], float] = {}
    ruled = _ruleset_in_force(ctx, cand["ts"].to_numpy())
    moments = [m for m in ctx.netstate.moments if m.rulesets]
    covers = {k: logrules.coverage(moments[k].rulesets) for k in np.unique(ruled[ruled >= 0])}
    mine = (ruled < 0) | np.isin(ruled, [k for k, c in covers.items() if c is None])
    unknown = bool(mine.any())
    if unknown:
        kinds = pd.DataFrame({"proto": proto[mine], "version": versions[mine]})
        share = np.full(int(mine.sum()), np.nan)
        for (p, v), at in kinds.groupby(["proto", "version"]).indices.items():
            found = (ctx.sent_share or {}).get((int(p), int(v)))
            if found is not None:
                share[at] = found
                if found < WHOLE_SHARE:
                    shares[(int(p), int(v))] = found
        sample = share < WHOLE_SHARE
        partial = ~sample & ~np.isin(
            cand["flow_id"].to_numpy()[mine], np.fromiter(_logged_whole(ctx), np.int64)
        )
        keep[np.flatnonzero(mine)[sample | partial]] = False
        left["sample"], left["flow"] = int(sample.sum()), int(partial.sum())
    for k, cov in covers.items():
        if cov is None:
            continue
        rows = np.flatnonzero(ruled == k)
        src = _text(cand["src_hi"].to_numpy()[rows], cand["src_lo"].to_numpy()[rows])
        dst = _text(cand["dst_hi"].to_numpy()[rows], cand["dst_lo"].to_numpy()[rows])
        # One question per distinct packet shape: a flow's packets ask the same.
        shapes = pd.DataFrame(
            {
                "version": versions[rows],
                "proto": proto[rows],
                "src": [a or "" for a in src],
                "dst": [b or "" for b in dst],
                "sport": cand["sport"].to_numpy()[rows],
                "dport": cand["dport"].to_numpy()[rows],
                "card": [c if isinstance(c, str) else None for c in cand["arrival"].iloc[rows]],
            }
        )
        for key, at in shapes.groupby(list(shapes.columns), dropna=False).indices.items():
            version, p, a, b, sport, dport, card = key
            packet = logrules.Packet(
                int(version),
                int(p),
                a,
                b,
                None if pd.isna(sport) else int(sport),
                None if pd.isna(dport) else int(dport),
                card if isinstance(card, str) else None,
            )
            how = cov.of(packet, "INPUT")
            if how in ("sampled", "none"):
                keep[rows[at]] = False
                left[how] = left.get(how, 0) + len(at)
    kind = "dropped_before_hook"
    if left.get("sampled"):
        ctx.note(
            kind,
            "{n} unlogged packets not counted: only a LOG rule with a limit (it logs a sample) "
            "covers them",
            left["sampled"],
        )
    if left.get("none"):
        ctx.note(
            kind, "{n} unlogged packets not counted: no LOG rule in INPUT covers them", left["none"]
        )
    if unknown:
        ctx.note(
            kind,
            "no iptables ruleset: which packets the LOG rules cover is judged from the flows "
            "and the log itself",
        )
    for (proto, version), share in sorted(shares.items()):
        ctx.note(
            kind,
            f"the log holds {share:.0%} of the packets the IPv{version} "
            f"{proto_name(proto)} flows it logs sent: a sample, in which a missing INPUT line "
            "proves nothing",
        )
    if left.get("sample"):
        ctx.note(kind, "{n} unlogged packets not counted as the log is a sample", left["sample"])
    if left.get("flow"):
        ctx.note(
            kind,
            "{n} unlogged packets not counted: the log does not hold every packet their flow "
            "sent (no LOG rule for it, or a sample)",
            left["flow"],
        )
    return cand[keep]


#: Without a ruleset, a log is whole for a protocol when it holds at least this share of the
#: packets its logged flows sent (``ClockReport.sent_share``); below it, a sample.
WHOLE_SHARE = 0.95
#: A flow shows the log covers it when at least this many of the packets it sent are logged.
LOGGED_WHOLE = 2


def _logged_whole(ctx: Context) -> set[int]:
    """Flows the log shows it covers without a ruleset to tell: every packet the flow sent on
    the wire has its OUTPUT line, two at least. A log of a sample (a ``limit``, every Nth
    packet) leaves some of them out, and its missing INPUT lines prove nothing."""
    pk = ctx.tables.packets
    if pk.empty:
        return set()
    sent = ctx.sent & pk["wired"].to_numpy(bool)
    logged = sent & _nonempty(pk["logged_cards"])
    flows = pk["flow_id"].to_numpy()
    n_sent = pd.Series(sent).groupby(flows).sum()
    n_logged = pd.Series(logged).groupby(flows).sum()
    whole = (n_logged >= LOGGED_WHOLE) & (n_logged == n_sent)
    return set(whole.index[whole.to_numpy()].tolist())


def _nonempty(sets: pd.Series) -> np.ndarray:
    """Which rows of a column of tuples (categorical: each distinct tuple once) hold any."""
    if isinstance(sets.dtype, pd.CategoricalDtype):
        has = np.array([bool(c) for c in sets.cat.categories] + [False], dtype=bool)
        return has[sets.cat.codes.to_numpy()]  # code -1 (missing) reads the last: False
    return np.fromiter((bool(c) for c in sets), bool, len(sets))


def _twins(ctx: Context, flow_ids: set[int]) -> set[int]:
    """Those of ``flow_ids`` seen only on the wire that a flow seen only at the hooks could be
    the NAT twin of: same protocol, one endpoint (address and port) the same, at the same time."""
    obs = ctx.tables.observations
    at_hook = obs["hook"].notna()
    hook_flows = set(obs.loc[at_hook, "flow_id"])
    wire_flows = set(obs.loc[~at_hook, "flow_id"])
    fl = ctx.flows
    wire_only = fl[fl["flow_id"].isin((wire_flows - hook_flows) & flow_ids)]
    hook_only = fl[fl["flow_id"].isin(hook_flows - wire_flows)]
    if wire_only.empty or hook_only.empty:
        return set()
    twins: set[int] = set()
    for side in ("src", "dst"):
        key = ["proto", f"{side}_hi", f"{side}_lo", f"{side[0]}port"]
        pairs = wire_only[[*key, "flow_id", "first_ns", "last_ns"]].merge(
            hook_only[[*key, "first_ns", "last_ns"]], on=key, suffixes=("", "_h")
        )
        near = (pairs["first_ns_h"] <= pairs["last_ns"] + LOG_SLACK_NS) & (
            pairs["last_ns_h"] >= pairs["first_ns"] - LOG_SLACK_NS
        )
        twins |= set(pairs.loc[near, "flow_id"].astype(int))
    return twins


@register(
    "dropped_before_hook", fact="F4", needs_addresses=True, needs=("captures", "log"), moments=True
)
def detect(ctx: Context) -> list[Finding]:
    """F4: a packet on the wire that the input route check dropped never reaches INPUT."""
    obs = ctx.tables.observations
    if obs.empty or ctx.host is None:
        return []
    hook = obs["hook"]
    # Decided once per distinct hook name, not per row.
    names = pd.Series(hook.dropna().unique(), dtype=object)
    inputs = names[names.str.upper().str.endswith("/INPUT")]
    at_input = hook.isin(inputs)
    logged = obs[at_input]
    every_line = ctx.input_lines if ctx.input_lines is not None else logged
    if every_line.empty:
        return []
    on_wire_in = obs[hook.isna() & (obs["direction"] == "in")]
    reached = obs.loc[at_input, "packet_id"].to_numpy()
    pk = ctx.packets
    cand = pk[pk["packet_id"].isin(on_wire_in["packet_id"]) & ~pk["packet_id"].isin(reached)]
    cand = cand.sort_values("packet_id", kind="stable").reset_index(drop=True)
    cand = cand[~cand["flow_id"].isin(_twins(ctx, set(cand["flow_id"])))]
    # A flow some of whose packets on a card reached INPUT is not dropped there: the route
    # check is the same for each of them; its other packets went unlogged (a sampled log).
    through = pk.loc[pk["packet_id"].isin(reached), ["flow_id", "arrival"]].drop_duplicates()
    seen = cand[["flow_id", "arrival"]].merge(through.assign(through=True), how="left")
    cand = cand[seen["through"].isna().to_numpy()]
    cand = _logged_in_full(ctx, cand)
    if cand.empty:
        return []
    versions = ctx.flows.set_index("flow_id")["ip_version"]
    covered = _covered(
        cand["ts"].to_numpy(),
        cand["proto"].to_numpy(),
        versions.reindex(cand["flow_id"]).to_numpy(),
        every_line[["ts", "proto", "ip_version"]],
    )
    cand = cand[covered]
    if cand.empty:
        return []
    # Addressed to the host: its destination is an address of the host in the snapshot in force.
    snaps = ctx.host.snapshots
    taken = np.array([s.taken_at if s.taken_at is not None else -np.inf for s in snaps])
    snap_idx = np.maximum(np.searchsorted(taken, cand["ts"].to_numpy() / 1e9, side="right") - 1, 0)
    cand = cand.assign(snap=snap_idx)
    combos = cand[["dst_hi", "dst_lo", "snap"]].drop_duplicates()
    local = set()
    for hi, lo, si in combos.itertuples(index=False):
        if snaps[si].holder_of(_text(np.array([hi]), np.array([lo]))[0]):
            local.add((hi, lo, si))
    keys = zip(cand["dst_hi"], cand["dst_lo"], cand["snap"], strict=True)
    cand = cand[np.array([k in local for k in keys], dtype=bool)]
    if cand.empty:
        return []
    # A LOG line that could be this packet despite a coarse time: not dropped.
    sig = ["flow_id", "from_initiator", "ip_len", "tcp_flags"]
    lines = logged.merge(cand[[*sig, "packet_id", "ts"]], on=sig, suffixes=("", "_pk"))
    lines = lines[(lines["ts"] - lines["ts_pk"]).abs() <= LOG_SLACK_NS]
    if not lines.empty:
        packet_ip_id = obs.groupby("packet_id")["ip_id"].first()
        lines = lines[
            lines["ip_id"].astype("float64").fillna(-1).to_numpy()
            == packet_ip_id.reindex(lines["packet_id_pk"]).astype("float64").fillna(-1).to_numpy()
        ]
    cand = cand[~cand["packet_id"].isin(set(lines["packet_id_pk"]))]
    findings = []
    for flow_id, rows in cand.sort_values("order").groupby("flow_id", sort=False):
        flow = ctx.flow_info[int(flow_id)]
        cards = list(dict.fromkeys(rows["arrival"].dropna()))
        first = rows.iloc[0]
        src = _text(rows["src_hi"].to_numpy()[:1], rows["src_lo"].to_numpy()[:1])[0]
        pdst = _text(rows["dst_hi"].to_numpy()[:1], rows["dst_lo"].to_numpy()[:1])[0]
        why = _why(ctx, cards[0] if cards else None, src, pdst, rows)
        summary = (
            f"{flow_text(flow)}: {count(len(rows), 'packet')} from {src} arrived on "
            f"{', '.join(cards)} addressed to {pdst}, from {when(first['ts'])}, and never "
            f"reached filter INPUT, which logged other {flow['proto']} packets meanwhile: "
            f"the kernel dropped them before the hook. {why['text']}"
        )
        findings.append(
            ctx.finding(
                "dropped_before_hook",
                "error",
                flow_id,
                cards,
                rows,
                summary,
                likely_cause=why["cause"],
                rp_filter=why["rp_filter"],
                reverse_route=why["reverse_route"],
                martians=why["martians"],
            )
        )
    return findings


def _why(ctx: Context, card: str | None, src: str, dst: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Strict rp_filter with the route back through another card, from the snapshots."""
    t = float(rows["ts"].iat[0]) / 1e9
    sysctls = ctx.netstate.sysctls_at(t)
    mode = sysctls.rp_filter(card) if sysctls and card else None
    snap = ctx.host.at(t) if ctx.host else None
    route = reverse_route(snap, src, dst) if snap else None
    lo, hi = int(rows["ts"].min()) - MARTIAN_NS, int(rows["ts"].max()) + MARTIAN_NS
    found = [
        m
        for m in ctx.netstate.martians
        if m.src == src and m.dst == dst and m.dev == card and (m.ts is None or lo <= m.ts <= hi)
    ]
    # The same lines in several renderings of one log: count them in the file with most.
    by_file: dict[str, list] = {}
    for m in found:
        by_file.setdefault(m.source, []).append(m)
    martians = max(by_file.values(), key=len) if by_file else []
    parts = []
    cause = "unknown"
    if mode is not None:
        parts.append(f"{card} has rp_filter={mode} ({RP_FILTER_MODES.get(mode, '?')})")
    else:
        parts.append(f"rp_filter of {card} unknown (no sysctl.txt beside the ip snapshots)")
    if route is not None:
        parts.append(
            f"the route back to {src} leaves through {route.dev} ({_route_text(route)}, "
            f"table {route.table})"
        )
    elif snap is not None:
        parts.append(f"there is no route back to {src}")
    if mode == 1 and route is not None and route.dev != card:
        cause = "rp_filter"
        lead = "Likely strict reverse-path filtering: "
    elif mode == 2 and snap is not None and route is None:
        cause = "rp_filter"
        lead = "Likely loose reverse-path filtering: "
    else:
        lead = "The cause is not rp_filter as far as the snapshots tell: "
    if martians:
        lines = count(len(martians), "martian line")
        parts.append(f"the kernel logged {lines} for them ('{martians[0].text}')")
    return {
        "cause": cause,
        "text": lead + "; ".join(parts) + ".",
        "rp_filter": {card: mode} if card else {},
        "reverse_route": (
            {"route": _route_text(route), "dev": route.dev, "table": route.table} if route else None
        ),
        "martians": {
            "count": len(martians),
            "lines": [f"{m.source}:{m.line}" for m in martians[:5]],
        },
    }
