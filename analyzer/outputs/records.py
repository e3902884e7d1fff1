"""The event table as JSON records and text lines, and the per-input counts every report shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

import pyarrow as pa

from ..render import ARP_OPS, count, endpoint, proto_name, tcp_flags_text, ts_text
from ..schema import addr_text, mac_text

ADDR_COLUMNS = ("src", "dst", "inner_src", "inner_dst")
MAC_COLUMNS = ("eth_src", "eth_dst")


def event_records(table: pa.Table, *, batch_rows: int = 65536) -> Iterator[dict[str, Any]]:
    """Events as JSON-ready dicts: addresses and MACs as text, time as ISO and nanoseconds."""
    for batch in table.to_batches(max_chunksize=batch_rows):
        ts = batch.column("ts").cast(pa.int64()).to_pylist()
        d = batch.to_pydict()
        for i in range(batch.num_rows):
            row = {k: v[i] for k, v in d.items() if v[i] is not None}
            row["ts"] = ts_text(ts[i])
            row["ts_ns"] = ts[i]
            for c in ADDR_COLUMNS:
                if c in row:
                    row[c] = addr_text(row[c])
            for c in MAC_COLUMNS:
                if c in row:
                    row[c] = mac_text(row[c])
            yield row


def write_jsonl(table: pa.Table, out: TextIO) -> None:
    for row in event_records(table):
        out.write(json.dumps(row, separators=(",", ":")))
        out.write("\n")


def counts_lines(reports: list[dict[str, Any]], clock: dict[str, Any] | None = None) -> list[str]:
    """Per input: records read, rows used, skipped by reason; an optional input that could not
    be read (``{"path", "reason"}``, no counts) as ``unreadable PATH: REASON``; then clock
    alignment notes."""
    lines = ["inputs:"]
    for r in reports:
        if "reason" in r:
            lines.append(f"  unreadable {r['path']}: {r['reason']}")
            continue
        unit = "line" if r["format"] in ("kernlog", "conntrack", "sysctl") else "packet"
        skipped = sum(r["skipped"].values())
        lines.append(
            f"  {r['path']}: {count(r['records'], unit)} read, {r['used']} used, {skipped} skipped"
        )
        for reason, n in r["skipped"].items():
            lines.append(f"      {n} {reason}")
        for w in r["warnings"]:
            lines.append(f"      warning: {w}")
    if clock:
        if clock.get("boot_time_used") is not None:
            lines.append(
                f"clock: boot time {clock['boot_time_used']:.6f}"
                + (
                    f" (estimated from {clock['boot_matches']} matched LOG lines, "
                    f"spread {clock['boot_estimate_spread']:.6f} s)"
                    if clock.get("boot_estimate") is not None
                    else ""
                )
            )
        for log in clock.get("logs", []):
            lines.append(f"clock: {log_clock_line(log)}")
        for note in clock.get("notes", []):
            lines.append(f"clock: {note}")
    return lines


def log_clock_line(log: dict[str, Any]) -> str:
    """How one log file was put on the capture clock, in a line."""
    head = f"{log['path']} ({log['rendering']})"
    if log.get("duplicates"):
        head += (
            f" [{log['duplicates']} of its messages counted in {', '.join(log['duplicate_of'])}]"
        )
    if not log.get("trusted"):
        return f"{head}: not aligned ({log.get('note') or 'no offset found'}); basis {log['basis']}"
    drift = f", drift {log['drift_ppm']} ppm" if log.get("drift_ppm") else ""
    return (
        f"{head}: offset {log['offset']:+.6f} s, {log['paired']} of {log['lines']} LOG lines "
        f"paired with their packets, spread {log['spread']:.6f} s{drift}"
        + (f"; {log['note']}" if log.get("note") else "")
    )


def event_lines(table: pa.Table, *, batch_rows: int = 65536) -> Iterator[str]:
    """One line per event: time, point, direction, src -> dst, protocol details, length."""
    cols = [
        "ts",
        "point",
        "direction",
        "src",
        "sport",
        "dst",
        "dport",
        "proto",
        "tcp_flags",
        "icmp_type",
        "icmp_code",
        "ip_len",
        "ethertype",
        "arp_op",
        "wire_len",
        "vlan",
    ]
    for batch in table.select(cols).to_batches(max_chunksize=batch_rows):
        d = batch.to_pydict()
        ts = batch.column(0).cast(pa.int64()).to_pylist()
        for i in range(batch.num_rows):
            proto = d["proto"][i]
            if d["src"][i] is None and d["ethertype"][i] is not None:
                what = f"ethertype 0x{d['ethertype'][i]:04x}"
                detail = ""
            else:
                src = endpoint(d["src"][i], d["sport"][i])
                what = f"{src} -> {endpoint(d['dst'][i], d['dport'][i])}"
                if d["arp_op"][i] is not None:
                    detail = f"arp {ARP_OPS.get(d['arp_op'][i], d['arp_op'][i])}"
                else:
                    detail = proto_name(proto)
                    if d["tcp_flags"][i] is not None:
                        detail += f" [{tcp_flags_text(d['tcp_flags'][i])}]"
                    if d["icmp_type"][i] is not None:
                        detail += f" type {d['icmp_type'][i]} code {d['icmp_code'][i]}"
            length = d["ip_len"][i] if d["ip_len"][i] is not None else d["wire_len"][i]
            vlan = f" vlan {d['vlan'][i]}" if d["vlan"][i] is not None else ""
            yield (
                f"{ts_text(ts[i])}  {d['point'][i] or '?':<16} {d['direction'][i]:<7} "
                f"{what}  {detail}{vlan}  len {length if length is not None else '-'}"
            )
