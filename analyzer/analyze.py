"""``nicpath analyze``: events -> flows -> detectors -> one result the outputs render."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .detectors import Context, Finding, run_all
from .events import EventsResult, read_events
from .flows import FlowTables, build_flows


@dataclass
class Analysis:
    """Everything one analysis produced; ``to_dict`` is the JSON document."""

    events: EventsResult
    tables: FlowTables
    context: Context
    findings: list[Finding]
    detectors: dict[str, Any]

    def flows_records(self) -> list[dict[str, Any]]:
        info = self.context.flow_info
        fl = self.tables.flows
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
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": {
                "files": self.events.counts(),
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
    """Build flows from an event table already read and run the detectors (all, or ``kinds``)."""
    tables = build_flows(events.events)
    ctx = Context(tables, events.host)
    findings, status = run_all(ctx, kinds)
    return Analysis(events, tables, ctx, findings, status)

