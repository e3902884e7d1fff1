"""Detectors: one module each, registered here, each resting on one kernel fact.

A detector is a function ``(ctx: Context) -> list[Finding]`` registered with ``@register``. The
registry is the single list every command runs; ``nicpath analyze`` reports which ran and, for
those whose inputs were missing (no address snapshot, say), that they did not run and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Context, Finding

Detector = Callable[[Context], list[Finding]]


@dataclass(frozen=True)
class Registered:
    kind: str
    fact: str
    run: Detector
    needs_addresses: bool = False
    doc: str = field(default="", compare=False)


REGISTRY: dict[str, Registered] = {}


def register(
    kind: str, *, fact: str, needs_addresses: bool = False
) -> Callable[[Detector], Detector]:
    """Add a detector to the registry under the finding kind it reports."""

    def wrap(fn: Detector) -> Detector:
        REGISTRY[kind] = Registered(kind, fact, fn, needs_addresses, (fn.__doc__ or "").strip())
        return fn

    return wrap


def run_all(ctx: Context, kinds: list[str] | None = None) -> tuple[list[Finding], dict[str, Any]]:
    """Run every registered detector (or those named); return findings and what ran."""
    findings: list[Finding] = []
    status: dict[str, Any] = {}
    for kind, det in REGISTRY.items():
        if kinds and kind not in kinds:
            continue
        if det.needs_addresses and not ctx.has_addresses:
            status[kind] = "not run: no ip addr snapshot (give --ip DIR or a bundle with ip/)"
            continue
        found = det.run(ctx)
        status[kind] = f"ran: {len(found)} finding{'s' if len(found) != 1 else ''}"
        findings.extend(found)
    findings.sort(key=lambda f: (f.first_ts, f.kind))
    return findings, status


# Importing the modules registers them; the order here is the order of the report.
from . import (  # noqa: E402
    asymmetric_return,
    egress_change,
    reply_address_mismatch,
    src_not_on_nic,
)

__all__ = [
    "REGISTRY",
    "Context",
    "Finding",
    "asymmetric_return",
    "egress_change",
    "register",
    "reply_address_mismatch",
    "run_all",
    "src_not_on_nic",
]
