"""What every source reader reports besides its rows: counts, skips by reason, warnings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SourceReport:
    """Accounting of one input file: nothing read is lost without a count and a reason.

    ``records`` counts what was read (packets, or lines for logs); ``used`` those that became
    rows; ``skipped`` maps a reason to a count, so that ``records == used + sum(skipped)``.
    """

    path: str
    format: str
    records: int = 0
    used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    first_ns: int | None = None
    last_ns: int | None = None

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "records": self.records,
            "used": self.used,
            "skipped": dict(sorted(self.skipped.items())),
            "warnings": list(self.warnings),
            "detail": self.detail,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }
