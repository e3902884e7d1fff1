"""``nicpath analyze``: events -> flows -> detectors -> one result the outputs render."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .detectors import Context, Finding, run_all
from .events import EventsResult, read_events
from .flows import FlowTables, build_flows, words_to_bytes
from .nat import join_translations
from .netstate import NetState, load
from .schema import addr_text


@dataclass
class Analysis:
    """Everything one analysis produced; ``to_dict`` is the JSON document."""

    events: EventsResult
    tables: FlowTables
    context: Context
    findings: list[Finding]
    detectors: dict[str, Any]
    netstate: NetState

    def counts(self) -> list[dict[str, Any]]:
        """Per input file: what was read, used and skipped (captures, logs, conntrack.txt)."""
        return self.events.counts() + [r.to_dict() for r in self.netstate.reports]

    def flows_records(self) -> list[dict[str, Any]]:
        info = self.context.flow_info
        fl = self.tables.flows
        nat = translations(fl)
        out = []
        for r in fl.itertuples(index=False):
            out.append(
                {
                    "flow_id": int(r.flow_id),
                    **info[int(r.flow_id)],
                    "local": r.local,
                    "first_ts": round(r.first_ns / 1e9, 6),
                    "last_ts": round(r.last_ns / 1e9, 6),
                    "packets": int(r.packets),
                    "observations": int(r.observations),
                    **nat.get(int(r.flow_id), NO_NAT),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": {
                "files": self.counts(),
                "clock": self.events.clock.to_dict(),
                "ignored": [{"path": p, "reason": r} for p, r in self.events.inputs.ignored],
            },
            "detectors": self.detectors,
            "flows": self.flows_records(),
            "findings": [f.to_dict() for f in self.findings],
        }


def analyze(paths=(), *, kinds: list[str] | None = None, **read_options) -> Analysis:
    """Read the inputs, build flows and run every registered detector.

    >>> a = analyze(["samples/egress_switch_tcp"])  # doctest: +SKIP
    >>> [f.kind for f in a.findings]  # doctest: +SKIP
    ['egress_change', 'src_not_on_nic']
    """
    return analyze_events(read_events(paths, **read_options), kinds=kinds)


def analyze_events(events: EventsResult, *, kinds: list[str] | None = None) -> Analysis:
    """Build flows from an event table already read (translated connections as one flow each,
    ``nat.join_translations``), read the kernel state beside it and run the detectors (all, or
    ``kinds``)."""
    tables = join_translations(events.events, build_flows(events.events))
    state = load(events)
    ctx = Context(tables, events.host, state)
    findings, status = run_all(ctx, kinds)
    return Analysis(events, tables, ctx, findings, status, state)


#: The flow-table columns of a flow that is not translated.
NO_NAT = {"nat_src": None, "nat_sport": None, "nat_dst": None, "nat_dport": None}


def translations(flows: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """flow id -> ``nat_src``/``nat_sport``/``nat_dst``/``nat_dport`` of translated flows."""
    if flows.empty or "nat_src_hi" not in flows:
        return {}
    done = flows[flows["nat_src_hi"].notna()]
    src = words_to_bytes(
        done["nat_src_hi"].to_numpy(np.uint64), done["nat_src_lo"].to_numpy(np.uint64)
    )
    dst = words_to_bytes(
        done["nat_dst_hi"].to_numpy(np.uint64), done["nat_dst_lo"].to_numpy(np.uint64)
    )
    return {
        int(fid): {
            "nat_src": addr_text(s),
            "nat_sport": int(sp),
            "nat_dst": addr_text(d),
            "nat_dport": int(dp),
        }
        for fid, s, sp, d, dp in zip(
            done["flow_id"], src, done["nat_sport"], dst, done["nat_dport"], strict=True
        )
    }

