"""Detectors: one module each, registered here, each resting on one kernel fact
(docs/kernel-facts.md) and filling its evidence from the flow tables.
May import: sources, events, flows, kernel.

A detector is a function ``(ctx: Context) -> list[Finding]`` registered with ``@register``. The
registry is the single list every command runs; ``nicpath analyze`` reports which ran and, for
those whose inputs were missing (no address snapshot, or no capture or no LOG line where the
finding needs the packet both on the wire and at a hook), that they did not run and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Context, Finding

Detector = Callable[[Context], list[Finding]]

#: What a detector may need besides flows, and how a report says it is missing.
NEEDS = {
    "captures": "a capture (the packets on the card)",
    "log": "a kernel log with LOG lines (the packets at the hooks)",
}


@dataclass(frozen=True)
class Registered:
    kind: str
    fact: str
    run: Detector
    needs_addresses: bool = False
    doc: str = field(default="", compare=False)
    needs: tuple[str, ...] = ()
    #: reads the snapshot in force at a packet's time (explanations, routes, rules, sysctls)
    moments: bool = False


REGISTRY: dict[str, Registered] = {}


def register(
    kind: str,
    *,
    fact: str,
    needs_addresses: bool = False,
    needs: tuple[str, ...] = (),
    moments: bool = False,
) -> Callable[[Detector], Detector]:
    """Add a detector to the registry under the finding kind it reports; ``needs`` names the
    inputs (keys of ``NEEDS``) without which it cannot see its finding; ``moments`` that it
    reads the snapshot in force at a packet's time (so the snapshots' times matter)."""

    def wrap(fn: Detector) -> Detector:
        unknown = set(needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"{kind}: unknown needs {sorted(unknown)}")
        REGISTRY[kind] = Registered(
            kind, fact, fn, needs_addresses, (fn.__doc__ or "").strip(), tuple(needs), moments
        )
        return fn

    return wrap


def run_all(ctx: Context, kinds: list[str] | None = None) -> tuple[list[Finding], dict[str, Any]]:
    """Run every registered detector (or those named); return findings and what ran."""
    findings: list[Finding] = []
    status: dict[str, Any] = {}
    ways = sorted({s.placed_by for s in (ctx.host.snapshots if ctx.host else ()) if s.placed_by})
    placed = ", ".join(ways)
    for kind, det in REGISTRY.items():
        if kinds and kind not in kinds:
            continue
        if det.needs_addresses and not ctx.has_addresses:
            status[kind] = "not run: no ip addr snapshot (give --ip DIR or a bundle with ip/)"
            continue
        missing = [NEEDS[n] for n in det.needs if not ctx.has_input(n)]
        if missing:
            status[kind] = f"not run: needs {' and '.join(missing)}"
            continue
        found = det.run(ctx)
        if det.moments and placed:
            ctx.note(kind, f"snapshot times without taken_at, placed by {placed}")
        status[kind] = ran_status(len(found), ctx.notes.get(kind, {}))
        findings.extend(found)
    findings.sort(key=finding_order)
    ctx.flow_notes = notes.port_failovers(ctx)
    return findings, status


def ran_status(count: int, notes: dict[str, int]) -> str:
    """``ran: N findings``, then what the detector assumed or left out (``Context.note``),
    ``; ``-separated."""
    said = "".join(f"; {text.replace('{n}', str(n))}" for text, n in notes.items())
    return f"ran: {count} finding{'s' if count != 1 else ''}{said}"


def finding_order(f: Finding) -> tuple:
    """Findings in time order; kind and flow break ties."""
    return (f.first_ts, f.kind, f.flow_id)


# Importing the modules registers them; the order here is the order of the report.
from . import (  # noqa: E402
    asymmetric_return,
    dropped_before_hook,
    egress_change,
    nat_pinned,
    no_route_egress,
    notes,
    reply_address_mismatch,
    rerouted_after_hook,
    src_not_on_nic,
)

__all__ = [
    "NEEDS",
    "REGISTRY",
    "Context",
    "Finding",
    "asymmetric_return",
    "dropped_before_hook",
    "egress_change",
    "finding_order",
    "nat_pinned",
    "no_route_egress",
    "notes",
    "ran_status",
    "register",
    "reply_address_mismatch",
    "rerouted_after_hook",
    "run_all",
    "src_not_on_nic",
]
