"""nicpath: offline analyzer of multi-NIC Linux routing failures.

Joins packet captures, netfilter LOG lines and ``ip`` snapshots taken on one host into one event
table, per-flow timelines and findings (see README.md). The packages are the stages a packet
travels, in order; each may import only the stages before it (its docstring's second line says
which; ``tests/test_layout.py`` holds them to it):

- ``sources``: inputs found (bundle) and read, one module per format;
- ``events``: the event table on one clock (stream, clock) and its Parquet form;
- ``flows``: packets and flows (tables), translated connections (nat), parts (partitions);
- ``kernel``: the route lookup replayed, the host's state at each moment, explanations;
- ``detectors``: one module per finding kind, each resting on one kernel fact;
- ``analysis``: events to flows to detectors into one ``Analysis``, whole or by parts;
- ``outputs``: text, JSON, Parquet, HTML reports, pictures and timelines;
- ``api``: the command line, the library functions below, batch and inspect.

``errors``, ``schema`` (the event table's columns and address forms), ``render`` (text forms
of times, addresses and protocols) and ``memory`` (the C heap's freed memory given back) are
shared by every stage; ``collect`` runs on the affected
host, apart from the pipeline. The public names below are each defined once, in the stage they
belong to, and imported on first use, so ``import analyzer`` stays cheap for the command line.

>>> import analyzer  # doctest: +SKIP
>>> events = analyzer.read_events("samples/egress_switch_tcp")  # doctest: +SKIP
>>> analyzer.run_detectors(events).to_pandas()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: The pipeline's packages in the order a packet travels them.
STAGES = ("sources", "events", "flows", "kernel", "detectors", "analysis", "outputs", "api")
#: Modules every stage may import.
SHARED = ("errors", "schema", "render", "memory", "arrays")

#: Public name -> the module that defines it.
API = {
    "read_events": "api.library",
    "build_flows": "api.library",
    "run_detectors": "api.library",
    "detector_status": "api.library",
    "flow_timeline": "api.library",
    "write_outputs": "api.library",
    "plot_flow": "api.library",
    "analyze": "analysis.run",
    "run_batch": "api.batch",
    "route_lookup": "kernel.moments",
    "Query": "kernel.answer",
    "InputError": "errors",
    "NicpathError": "errors",
}

__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        return getattr(importlib.import_module(f".{API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
