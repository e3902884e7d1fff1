"""nicpath: offline analyzer of multi-NIC Linux routing failures.

Joins packet captures, netfilter LOG lines and ``ip`` snapshots taken on one host into one event
table, per-flow timelines and findings (see README.md). The library API is the steps of the
pipeline as functions over Arrow tables (``analyzer.pipeline``), ``run_batch``
(``analyzer.batch``) and ``route_lookup`` (``analyzer.routing``), imported on first use, so
``import analyzer`` stays cheap for the command line.

>>> import analyzer  # doctest: +SKIP
>>> events = analyzer.read_events("samples/egress_switch_tcp")  # doctest: +SKIP
>>> analyzer.run_detectors(events).to_pandas()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
API = {
    "read_events": "pipeline",
    "build_flows": "pipeline",
    "run_detectors": "pipeline",
    "detector_status": "pipeline",
    "flow_timeline": "pipeline",
    "write_outputs": "pipeline",
    "plot_flow": "pipeline",
    "run_batch": "batch",
    "route_lookup": "routing",
    "Query": "routing",
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
