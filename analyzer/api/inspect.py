"""``nicpath inspect``: what a bundle holds, read for real, before any analysis.

The event stream is read chunk by chunk and only counted (rows, interfaces, hooks, directions
per input file), never gathered: memory stays flat whatever the capture size, as for ``events``
(gathering the table took 675 MiB for 10^6 packets).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import NoRows
from ..events.stream import EventsResult, stream_events
from ..kernel.netstate import load
from ..render import count
from ..schema import empty_events

#: The range of a nanosecond time (int64): 1677-09-21 to 2262-04-11.
NS_MIN, NS_MAX = -(1 << 63), (1 << 63) - 1
#: Columns whose values ``inspect`` lists per input file.
COUNTED = ("iface", "in_iface", "out_iface", "hook", "direction")


def _iso(ns: int | None) -> str | None:
    if ns is None or not NS_MIN <= ns <= NS_MAX:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="microseconds")


def _seconds_iso(seconds: float | None) -> str | None:
    """Epoch seconds (a snapshot's ``taken_at``, ``btime``, a change) as ISO text; None when
    they are no date (nan, inf, before year 1 or after 9999)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat(timespec="microseconds")
    except (OverflowError, ValueError, OSError):
        return None


class _Counts:
    """Per input file and column: how many rows hold each value, added up chunk by chunk."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Counter] = {}

    def add(self, chunk: pa.Table) -> None:
        sources = pc.unique(chunk.column("source").combine_chunks().dictionary_decode())
        for source in sources.to_pylist():
            rows = chunk
            if len(sources) > 1:
                rows = chunk.filter(pc.equal(chunk.column("source"), source))
            for column in COUNTED:
                values = rows.column(column).combine_chunks().dictionary_decode()
                into = self.values.setdefault((source, column), Counter())
                for item in pc.value_counts(values).to_pylist():
                    into[item["values"]] += item["counts"]

    def distinct(self, source: str, column: str) -> list:
        return sorted(v for v in self.values.get((source, column), ()) if v is not None)

    def counted(self, source: str, column: str) -> dict[str, int]:
        got = self.values.get((source, column), Counter())
        return dict(sorted((v or "-", n) for v, n in got.items()))


def _read(paths: list[str] | tuple[str, ...]) -> tuple[EventsResult, _Counts]:
    """The inputs read as ``events`` streams them, counted, not kept: the result holds the
    first row only (the kernel state reader takes the year of syslog lines from it). A stream
    of no row (an idle card's capture) is listed, not an error: there is nothing to analyze,
    but there is something to inspect."""
    stream = stream_events(paths)
    counts = _Counts()
    first = None
    try:
        for chunk in stream.chunks:
            if not chunk.num_rows:
                continue
            if first is None:
                first = chunk.slice(0, 1)
            counts.add(chunk)
    except NoRows:
        pass
    result = EventsResult(
        events=first if first is not None else empty_events(),
        reports=stream.reports,
        clock=stream.clock,
        host=stream.host,
        inputs=stream.inputs,
    )
    return result, counts


def inspect_paths(paths: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Describe every input under ``paths``: format, link type, counts, time span, interfaces.

    Raises InputError when a path does not exist or holds nothing readable.
    """
    result, counts = _read(paths)
    state = load(result)
    host = result.host
    snapshots = []
    for snap in host.snapshots if host else ():
        snapshots.append(
            {
                "path": snap.path,
                "moment": snap.moment,
                "taken_at": snap.taken_at,
                "interfaces": [
                    {
                        "name": link.name,
                        "ifindex": link.ifindex,
                        "mac": link.mac,
                        "addresses": sorted(
                            f"{a.address}/{a.prefixlen}"
                            for a in snap.addresses
                            if a.ifname == link.name
                        ),
                    }
                    for link in snap.links
                ],
                "routes": len(snap.routes),
                "rules": len(snap.rules),
            }
        )
    extra = {m.path: m for m in state.moments}
    for entry in snapshots:
        moment = extra.get(entry["path"])
        entry["netfilter"] = [
            {
                "path": r.path,
                "form": r.form,
                "rules": len(r.rules),
                "nat_rules": len(r.nat_rules),
                "sampled_log_rules": len(r.sampled_log_rules),
                "notes": list(r.notes),
            }
            for r in (moment.rulesets if moment else ())
        ]
        entry["sysctl"] = moment.sysctls.path if moment and moment.sysctls else None
    files = []
    for report in result.reports:
        entry = report.to_dict()
        path = report.path
        if report.format == "pcapng":
            entry["interfaces"] = [i["name"] for i in report.detail.get("interfaces", [])]
        elif report.format == "kernlog":
            entry["interfaces"] = sorted(
                {v for c in ("in_iface", "out_iface") for v in counts.distinct(path, c) if v}
            )
            entry["hooks"] = counts.counted(path, "hook")
        else:
            entry["interfaces"] = counts.distinct(path, "iface")
        if report.format != "kernlog":
            entry["directions"] = counts.counted(path, "direction")
        files.append(entry)
    for entry in files:
        entry["first"] = _iso(entry.pop("first_ns"))
        entry["last"] = _iso(entry.pop("last_ns"))
    return {
        "files": files,
        "ip_snapshots": snapshots,
        "boot_time": result.inputs.boot_time,
        "changes": [{"at": t, "command": c} for t, c in result.inputs.changes],
        "conntrack": [r.to_dict() for r in state.reports if r.format == "conntrack"],
        "sysctl": [r.to_dict() for r in state.reports if r.format == "sysctl"],
        "martian_lines": len(state.martians),
        "scenarios": result.inputs.scenarios,
        "ignored": [{"path": p, "reason": r} for p, r in result.inputs.ignored],
        "unreadable": [{"path": p, "reason": r} for p, r in result.inputs.unreadable],
    }


def render_text(report: dict[str, Any]) -> str:
    """Human-readable form of ``inspect_paths``' result."""
    lines = []
    for f in report["files"]:
        kind = f["format"]
        detail = f["detail"]
        if kind == "pcap":
            kind = f"pcap {detail['linktype_name']} ({detail['ts_resolution']})"
        elif kind == "pcapng":
            kind = f"pcapng, {count(len(detail.get('interfaces', [])), 'interface')}"
        elif kind == "kernlog":
            rend = ", ".join(f"{k} {v}" for k, v in sorted(detail.get("renderings", {}).items()))
            kind = f"kernel log ({rend})"
        unit = "line" if f["format"] == "kernlog" else "packet"
        lines.append(f"{f['path']}: {kind}")
        used = "LOG line" if f["format"] == "kernlog" else "row"
        lines.append(f"    {count(f['records'], unit)} read, {count(f['used'], used)}")
        for reason, skipped in f["skipped"].items():
            lines.append(f"    skipped {skipped}: {reason}")
        if f["first"]:
            lines.append(f"    from {f['first']} to {f['last']}")
        if f.get("interfaces"):
            lines.append(f"    interfaces: {', '.join(map(str, f['interfaces']))}")
        if f.get("directions"):
            lines.append(
                "    directions: " + ", ".join(f"{k} {v}" for k, v in f["directions"].items())
            )
        if f.get("hooks"):
            lines.append("    hooks: " + ", ".join(f"{k} {v}" for k, v in f["hooks"].items()))
        for w in f["warnings"]:
            lines.append(f"    warning: {w}")
    for s in report["ip_snapshots"]:
        when = _seconds_iso(s["taken_at"]) or "time unknown"
        lines.append(
            f"{s['path']}: ip snapshot '{s['moment']}' taken {when}: "
            f"{len(s['interfaces'])} links, {s['routes']} routes, {s['rules']} rules"
        )
        for i in s["interfaces"]:
            addrs = " ".join(i["addresses"]) or "no address"
            lines.append(f"    {i['ifindex']}: {i['name']} {i['mac'] or ''} {addrs}")
        for r in s.get("netfilter", []):
            sampled = (
                f", {r['sampled_log_rules']} sampled LOG rules" if r["sampled_log_rules"] else ""
            )
            lines.append(
                f"    {r['path']}: {r['form']}, {r['rules']} rules, {r['nat_rules']} NAT rules"
                + sampled
            )
            for note in r["notes"]:
                lines.append(f"        note: {note}")
        if s.get("sysctl"):
            lines.append(f"    {s['sysctl']}: sysctls (rp_filter, log_martians)")
    for c in report.get("conntrack", []):
        lines.append(
            f"{c['path']}: conntrack -L, {c['used']} entries, "
            f"{c['detail'].get('translated', 0)} translated"
        )
        lines += _skipped_lines(c)
    for c in report.get("sysctl", []):
        lines.append(f"{c['path']}: sysctl, {c['used']} values")
        lines += _skipped_lines(c)
    if report.get("martian_lines"):
        lines.append(f"martian lines in the kernel logs: {report['martian_lines']}")
    if report["boot_time"] is not None:
        boot = report["boot_time"]
        lines.append(f"boot time: {boot:.0f} ({_seconds_iso(boot) or 'no date'})")
    for c in report["changes"]:
        lines.append(f"change at {_seconds_iso(c['at']) or c['at']}: {c['command']}")
    for i in report["ignored"]:
        lines.append(f"ignored {i['path']}: {i['reason']}")
    for i in report["unreadable"]:
        lines.append(f"unreadable {i['path']}: {i['reason']}")
    return "\n".join(lines)


def _skipped_lines(report: dict[str, Any]) -> list[str]:
    """A conntrack or sysctl file's skipped lines by reason, and its warnings."""
    lines = [f"    skipped {count}: {reason}" for reason, count in report["skipped"].items()]
    return lines + [f"    warning: {w}" for w in report["warnings"]]
