"""``nicpath collect``: gather a bundle on the affected host, safely (docs/collect.md); it runs
apart from the pipeline and reads none of it.
May import: nothing of the pipeline (only errors, as every stage).

The bundle has the layout ``nicpath analyze`` reads (docs/bundle.md): a capture per card, ip
snapshots at the start, after each change and at the end, the kernel log since the start,
``btime``, the firewall rulesets, conntrack and a manifest. The same collector exists as one POSIX
sh script for hosts without Python (``script_text``, ``nicpath collect --print-script``).
"""

from __future__ import annotations

from importlib.resources import files

from .core import CollectOptions, CollectResult, collect

SCRIPT_NAME = "nicpath-collect.sh"


def script_text() -> str:
    """The sh form of the collector, shipped with the package.

    >>> script_text().startswith("#!/bin/sh")
    True
    """
    return files(__package__).joinpath(SCRIPT_NAME).read_text(encoding="utf-8")


__all__ = ["SCRIPT_NAME", "CollectOptions", "CollectResult", "collect", "script_text"]
