"""Put kernel log rows on the capture clock.

Raw dmesg stamps are seconds since boot; ``/proc/stat`` btime is whole seconds, so boot time +
uptime sits up to a second off the capture clock (F7: 0.38 s in one recording). syslog keeps whole
seconds only. The cure is the same for both: a LOG line and a captured packet that are the same
packet (addresses, ports, IP ID, length; TCP sequence numbers when logged) give the exact offset.
For raw dmesg the median offset over all matched lines is the boot time; a syslog line matched to
its packet takes the packet's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # pandas is imported when logs are aligned: `nicpath events` starts faster
    import pandas as pd

#: Columns that identify one packet in both a LOG line and a capture (nulls compare equal).
MATCH_KEYS = (
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "ip_id",
    "ip_len",
    "icmp_id",
    "icmp_seq",
    "tcp_seq",
)
#: Slack (seconds) around the second a syslog line names: the line is truncated to the second
#: and stamped by the same host clock the capture uses, so its packet lies within that second.
SYSLOG_WINDOW = 0.005
#: Captured candidates for one syslog line further apart than this (ns) make the match ambiguous.
AMBIGUOUS_NS = 10_000_000
#: A boot-time estimate further than this from the given btime is not trusted (seconds).
BTIME_TOLERANCE = 2.0


@dataclass
class ClockReport:
    """What was done to each log's times; shown in every report."""

    boot_time_given: float | None = None
    boot_time_source: str | None = None
    boot_time_used: float | None = None
    boot_estimate: float | None = None
    boot_estimate_spread: float | None = None
    boot_matches: int = 0
    syslog_matched: int = 0
    syslog_unmatched: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _keyed(table: pa.Table) -> pd.DataFrame:
    """Packet-identity columns as plain int64 (addresses as two words; null as -1)."""
    import pandas as pd

    from ..schema import addr_words

    df = pd.DataFrame(index=np.arange(table.num_rows))
    for name in ("src", "dst"):
        w = addr_words(table.column(name)).astype(np.int64)
        df[f"{name}_hi"], df[f"{name}_lo"] = w[:, 0], w[:, 1]
    for c in MATCH_KEYS[2:]:
        arr = table.column(c).combine_chunks()
        df[c] = pd.array(arr.to_pandas(), dtype="Int64").fillna(-1).to_numpy(np.int64)
    df["ts_ns"] = table.column("ts").cast(pa.int64()).to_numpy()
    return df


KEY_COLUMNS = [
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    *[c for c in MATCH_KEYS[2:] if c != "tcp_seq"],
]


def _matches(logs: pd.DataFrame, caps: pd.DataFrame) -> pd.DataFrame:
    """Pairs (log row, capture row) with the same packet key and, where the log has it, TCP seq."""
    pairs = (
        logs[[*KEY_COLUMNS, "tcp_seq"]]
        .reset_index(names="log_row")
        .merge(
            caps[[*KEY_COLUMNS, "tcp_seq", "ts_ns"]].rename(columns={"tcp_seq": "cap_seq"}),
            on=KEY_COLUMNS,
        )
    )
    if pairs.empty:
        return pairs
    return pairs[(pairs["tcp_seq"] == -1) | (pairs["tcp_seq"] == pairs["cap_seq"])]


def align(captures: pa.Table, logs: pa.Table, report: ClockReport) -> pa.Table:
    """Return ``logs`` with ``ts``/``ts_basis`` moved onto the capture clock where possible."""
    if not logs.num_rows:
        return logs
    up = logs.column("uptime_ns").combine_chunks()
    is_raw = np.asarray(up.is_valid())
    uptime = up.fill_null(0).to_numpy().astype(np.int64)
    ts = logs.column("ts").cast(pa.int64()).to_numpy().copy()
    basis = np.asarray(logs.column("ts_basis").to_pylist(), dtype=object)
    # Whole-second wall clock rows (syslog); journald and dmesg -T rows keep their own time.
    is_wall = (basis == "wallclock") & ~is_raw & (ts % 1_000_000_000 == 0)
    has_captures = captures.num_rows > 0

    if has_captures and (is_raw.any() or is_wall.any()):
        caps = _keyed(captures.filter(pa.compute.is_valid(captures.column("ip_version"))))
        logdf = _keyed(logs)
    else:
        caps = logdf = None

    if is_raw.any():
        given = report.boot_time_given
        estimate = None
        if caps is not None:
            pairs = _matches(logdf[is_raw], caps)
            if not pairs.empty:
                offsets = pairs["ts_ns"].to_numpy() - uptime[pairs["log_row"].to_numpy()]
                pairs = pairs.assign(offset=offsets)
                # Each log line's nearest candidate to the first-guess boot time (median of all).
                guess = np.median(offsets)
                pairs["dist"] = np.abs(pairs["offset"] - guess)
                best = pairs.sort_values("dist").drop_duplicates("log_row")
                estimate = float(np.median(best["offset"])) / 1e9
                q1, q3 = np.percentile(best["offset"], [25, 75]) / 1e9
                report.boot_estimate = estimate
                report.boot_estimate_spread = float(q3 - q1)
                report.boot_matches = len(best)
        if estimate is not None and (given is None or abs(estimate - given) <= BTIME_TOLERANCE):
            boot, tag = estimate, "boot-estimated"
        elif given is not None:
            boot, tag = given, "boot"
            if estimate is not None:
                report.notes.append(
                    f"boot time estimated from packets ({estimate:.6f}) is more than "
                    f"{BTIME_TOLERANCE:.0f} s from the given {given:.0f}; kept the given one"
                )
        else:
            boot, tag = None, None
            report.notes.append(
                "raw dmesg lines but no boot time and no LOG line matched a captured packet: "
                "their times are seconds since boot, not on the capture clock"
            )
        if boot is not None:
            report.boot_time_used = boot
            ts[is_raw] = round(boot * 1e9) + uptime[is_raw]
            basis[is_raw] = tag

    if is_wall.any() and caps is not None:
        sub = logdf[is_wall]
        pairs = _matches(sub, caps)
        if not pairs.empty:
            log_ts = ts[pairs["log_row"].to_numpy()]
            delta = pairs["ts_ns"].to_numpy() - log_ts
            # syslog truncates to the second: the packet is at or after the line's second.
            ok = (delta > -SYSLOG_WINDOW * 1e9) & (delta < (1 + SYSLOG_WINDOW) * 1e9)
            pairs = pairs[ok].assign(dist=np.abs(delta[ok] - 5e8))
            # A line whose key fits packets far apart in time (repeated neighbour discovery,
            # say) is ambiguous: it keeps its own whole second rather than a guess.
            spread = pairs.groupby("log_row")["ts_ns"].agg(lambda t: t.max() - t.min())
            clear = spread.index[spread <= AMBIGUOUS_NS]
            pairs = pairs[pairs["log_row"].isin(clear)]
            best = pairs.sort_values("dist").drop_duplicates("log_row")
            rows_ = best["log_row"].to_numpy()
            ts[rows_] = best["ts_ns"].to_numpy()
            basis[rows_] = "matched"
            report.syslog_matched = len(best)
        report.syslog_unmatched = int(is_wall.sum()) - report.syslog_matched

    out = logs.set_column(
        logs.schema.get_field_index("ts"),
        logs.schema.field("ts"),
        pa.array(ts, type=pa.int64()).cast(logs.schema.field("ts").type),
    )
    basis_arr = (
        pa.array(basis.tolist(), type=pa.string())
        .dictionary_encode()
        .cast(logs.schema.field("ts_basis").type)
    )
    return out.set_column(
        logs.schema.get_field_index("ts_basis"), logs.schema.field("ts_basis"), basis_arr
    )
