"""``nicpath inspect``: what a bundle holds, read for real, before any analysis."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..events.stream import gather_events
from ..kernel.netstate import load


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="microseconds")


def _distinct(table: pa.Table, column: str) -> list:
    values = pc.unique(table.column(column).combine_chunks()).to_pylist()
    return sorted(v for v in values if v is not None)


def inspect_paths(paths: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Describe every input under ``paths``: format, link type, counts, time span, interfaces.

    Raises InputError when a path does not exist or holds nothing readable.
    """
    result = gather_events(paths)
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
    events = result.events
    files = []
    for report in result.reports:
        entry = report.to_dict()
        rows = events.filter(pc.equal(events.column("source"), report.path))
        if report.format == "pcapng":
            entry["interfaces"] = [i["name"] for i in report.detail.get("interfaces", [])]
        elif report.format == "kernlog":
            entry["interfaces"] = sorted(
                {v for c in ("in_iface", "out_iface") for v in _distinct(rows, c) if v}
            )
            entry["hooks"] = dict(zip(*_value_counts(rows, "hook"), strict=True))
        else:
            entry["interfaces"] = _distinct(rows, "iface")
        if report.format != "kernlog":
            entry["directions"] = dict(zip(*_value_counts(rows, "direction"), strict=True))
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


def _value_counts(table: pa.Table, column: str) -> tuple[list, list]:
    if not table.num_rows:
        return [], []
    counts = pc.value_counts(table.column(column).combine_chunks().dictionary_decode())
    pairs = sorted((v["values"].as_py() or "-", v["counts"].as_py()) for v in counts)
    return [p[0] for p in pairs], [p[1] for p in pairs]


def render_text(report: dict[str, Any]) -> str:
    """Human-readable form of ``inspect_paths``' result."""
    lines = []
    for f in report["files"]:
        kind = f["format"]
        detail = f["detail"]
        if kind == "pcap":
            kind = f"pcap {detail['linktype_name']} ({detail['ts_resolution']})"
        elif kind == "pcapng":
            kind = f"pcapng, {len(detail.get('interfaces', []))} interfaces"
        elif kind == "kernlog":
            rend = ", ".join(f"{k} {v}" for k, v in sorted(detail.get("renderings", {}).items()))
            kind = f"kernel log ({rend})"
        unit = "lines" if f["format"] == "kernlog" else "packets"
        lines.append(f"{f['path']}: {kind}")
        used = "LOG lines" if f["format"] == "kernlog" else "rows"
        lines.append(f"    {f['records']} {unit} read, {f['used']} {used}")
        for reason, count in f["skipped"].items():
            lines.append(f"    skipped {count}: {reason}")
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
        when = _iso(int(s["taken_at"] * 1e9)) if s["taken_at"] else "time unknown"
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
        lines.append(
            f"boot time: {report['boot_time']:.0f} ({_iso(int(report['boot_time'] * 1e9))})"
        )
    for c in report["changes"]:
        lines.append(f"change at {_iso(int(c['at'] * 1e9))}: {c['command']}")
    for i in report["ignored"]:
        lines.append(f"ignored {i['path']}: {i['reason']}")
    for i in report["unreadable"]:
        lines.append(f"unreadable {i['path']}: {i['reason']}")
    return "\n".join(lines)


def _skipped_lines(report: dict[str, Any]) -> list[str]:
    """A conntrack or sysctl file's skipped lines by reason, and its warnings."""
    lines = [f"    skipped {count}: {reason}" for reason, count in report["skipped"].items()]
    return lines + [f"    warning: {w}" for w in report["warnings"]]
