"""The text report of ``nicpath analyze``, in the order an engineer reads it at 3 a.m.

First the verdict: how many findings of which kind, worst first, and one line per flow (time,
flow, kinds and cards). Then each flow: its findings (summary, why, the lookups, kind-specific
lines such as conntrack's entries), then its evidence once, each packet in the file to open
first (``evidence.flow_evidence``), with a Wireshark filter for the flow and a ``tshark``
command per file for its frames. Then notes on flows, and last what was read: inputs, clocks
and detector status, one line each unless ``verbose`` (skip reasons, boot time, every
detector).

Each line comes with a style name (``STYLES``): the command colours whole lines on a terminal,
after the line's text was escaped, so no text from the inputs can carry a colour or a control
sequence of its own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from ..analysis.result import Analysis
from ..detectors import Finding
from ..detectors.base import flow_text
from ..render import count, endpoint, tcp_flags_text, ts_text
from .evidence import EvidencePacket, FlowEvidence, finding_label, flow_evidence
from .records import counts_lines, log_clock_line

#: Worst first: the order of the verdict's kinds and flows.
SEVERITIES = ("error", "warning", "info")

#: Line styles, as ``click.style`` keywords: what a terminal shows in colour.
STYLES: dict[str, dict[str, Any]] = {
    "title": {"bold": True},
    "bad": {"fg": "red", "bold": True},
    "error": {"fg": "red", "bold": True},
    "warning": {"fg": "yellow", "bold": True},
    "info": {"fg": "cyan"},
    "good": {"fg": "green", "bold": True},
    "flow": {"bold": True},
    "change": {"fg": "magenta"},
    "command": {"fg": "cyan"},
    "section": {"bold": True},
    "dim": {"dim": True},
}

Line = tuple[str | None, str]


def severity_rank(severity: str) -> int:
    """0 for the worst severity (error), then warning, info, anything else."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _worst(findings: list[Finding]) -> str:
    return min((f.severity for f in findings), key=severity_rank)


def flows_in_verdict_order(flows: list[FlowEvidence]) -> list[FlowEvidence]:
    """Flows with an error first, then by the time of their first finding."""
    return sorted(
        flows,
        key=lambda fe: (
            severity_rank(_worst(fe.findings)),
            min(f.first_ts for f in fe.findings),
        ),
    )


def verdict_lines(analysis: Analysis, flows: list[FlowEvidence]) -> list[Line]:
    """How many findings of which kind, worst first, then one line per flow."""
    fl = analysis.tables.flows
    n_flows = len(fl)
    n_nat = int(fl["nat_src_hi"].notna().sum()) if "nat_src_hi" in fl else 0
    nat = f" ({n_nat} translated by NAT)" if n_nat else ""
    findings = analysis.findings
    if not findings:
        return [("good", f"No findings in {count(n_flows, 'flow')}{nat}.")]
    kinds = Counter(f.kind for f in findings)
    severity = {k: _worst([f for f in findings if f.kind == k]) for k in kinds}
    order = sorted(kinds, key=lambda k: (severity_rank(severity[k]), -kinds[k], k))
    head = (
        f"{count(len(findings), 'finding')} in {len(flows)} of {count(n_flows, 'flow')}{nat}: "
        + ", ".join(f"{kinds[k]} {k} ({severity[k]})" for k in order)
    )
    lines: list[Line] = [("bad" if severity[order[0]] == "error" else "title", head)]
    for fe in flows:
        worst = _worst(fe.findings)
        first = min(f.first_ts for f in fe.findings)
        what = ", ".join(dict.fromkeys(finding_label(f) for f in fe.findings))
        lines.append(
            (
                worst,
                f"  {worst:<7}  {ts_text(round(first * 1e6) * 1000)}  flow {fe.flow_id}  "
                f"{flow_text(fe.flow)}  {what}",
            )
        )
    return lines


def explanation_lines(explanation: dict[str, Any] | None) -> list[str]:
    """``why:`` and the lookups it rests on, one per line, under a finding."""
    if not explanation:
        return []
    lines = [f"    why: {explanation['text']}"]
    for key in ("before", "after", "egress", "now"):
        d = explanation.get(key)
        if not d:
            continue
        answer = d.get("error") or f"dev {d.get('card')}" + (
            f" via {d['gateway']}" if d.get("gateway") else ""
        )
        lines.append(
            f"      {key:<6} {d.get('at', '')} ip route get {d.get('query', '')}: {answer}"
            f" | rule {d.get('rule') or '-'} | route {d.get('route') or '-'}"
            f" | snapshot {d.get('snapshot')}"
        )
    return lines


def detail_lines(f: Finding) -> list[str]:
    """What a finding's JSON holds beyond its sentence and that an engineer checks next: the
    conntrack entries of both flows (``nat_pinned``), the command that removed the route
    (``no_route_egress``)."""
    lines = []
    entries = f.extra.get("conntrack") or []
    if entries:
        lines.append("    conntrack -L:")
        lines += [f"      {entry}" for entry in entries]
    return lines


def finding_lines(f: Finding) -> list[Line]:
    """One finding: its head, summary, why and the lookups, kind-specific lines."""
    lines: list[Line] = [(f.severity, f"  [{f.severity}] {finding_label(f)}, {_packets(f)}")]
    lines.append((None, f"    {f.summary}"))
    lines += [(None, line) for line in explanation_lines(f.explanation)]
    lines += [(None, line) for line in detail_lines(f)]
    return lines


def _packets(f: Finding) -> str:
    return count(f.packets, "packet")


def _packet_text(p: EvidencePacket, several: bool) -> str:
    """An evidence packet in a line: time, direction, card, addresses, flags, length, the file
    and frame to open, and (when the flow has several findings) which it proves."""
    r = p.row
    if r is not None:
        flags = tcp_flags_text(None if pd.isna(r["tcp_flags"]) else int(r["tcp_flags"]))
        length = "-" if pd.isna(r["ip_len"]) else int(r["ip_len"])
        what = (
            f"{endpoint(r['src'], r['sport'])} -> {endpoint(r['dst'], r['dport'])}"
            f"{'  [' + flags + ']' if flags else ''}  len {length}"
        )
    else:
        what = p.other or "a packet of another flow"
    proves = f"  {', '.join(label.split(' ', 1)[0] for label in p.proves)}" if several else ""
    return (
        f"    {ts_text(p.ts)}  {p.direction:<7} {p.card or '?':<8} {what}  {p.shown.text()}{proves}"
    )


def evidence_lines(fe: FlowEvidence, *, verbose: bool = False) -> list[Line]:
    """A flow's evidence once: each packet in the file to open first, then the Wireshark filter
    for the flow and a tshark command per file."""
    shown = len(fe.packets)
    first = "the first " if max(f.packets for f in fe.findings) > shown else ""
    lines: list[Line] = [
        ("section", f"  evidence: {first}{count(shown, 'packet')}, each in the file to open first:")
    ]
    several = len({label.split(" ", 1)[0] for p in fe.packets for label in p.proves}) > 1
    for p in fe.packets:
        r = p.row
        if r is not None and r.get("egress_change"):
            change = f"{r['previous_card']} -> {r['card']}"
            lines.append(("change", f"    ---- egress changes: {change} ----"))
        lines.append((None, _packet_text(p, several)))
        if verbose and p.elsewhere:
            lines.append(("dim", f"        also {', '.join(w.text() for w in p.elsewhere)}"))
    commands = fe.tshark_commands()
    if commands:
        lines.append((None, f"  Wireshark filter for the flow: {fe.display_filter()}"))
        lines += [("command", f"    {c}") for c in commands]
    return lines


def input_lines(analysis: Analysis, *, verbose: bool = False) -> list[Line]:
    """What was read: each input in a line (``verbose``: its skip reasons on lines of their
    own, the boot time), the clock of each log that counts, the detectors (``verbose``: all;
    else those that did not run or said something)."""
    counts = analysis.counts()
    clock = analysis.events.clock.to_dict()
    if verbose:
        lines = [("section" if t.endswith(":") else None, t) for t in counts_lines(counts, clock)]
    else:
        lines = [("section", "inputs:")]
        for r in counts:
            if "reason" in r:
                lines.append(("warning", f"  unreadable {r['path']}: {r['reason']}"))
                continue
            unit = "line" if r["format"] in ("kernlog", "conntrack", "sysctl") else "packet"
            skipped = sum(r["skipped"].values())
            why = ", ".join(f"{n} {reason}" for reason, n in r["skipped"].items())
            lines.append(
                (
                    None,
                    f"  {r['path']}: {count(r['records'], unit)} read, {r['used']} used, "
                    f"{skipped} skipped" + (f" ({why})" if why else ""),
                )
            )
            lines += [("warning", f"      warning: {w}") for w in r["warnings"]]
        for log in clock.get("logs", []):
            if log.get("trusted") and log.get("duplicates", 0) >= log.get("lines", 0) > 0:
                continue  # every message counted in another rendering: that one's line says it
            style = None if log.get("trusted") else "warning"
            lines.append((style, f"clock: {log_clock_line(log)}"))
        lines += [(None, f"clock: {note}") for note in clock.get("notes", [])]
    for path, reason in analysis.events.inputs.ignored:
        lines.append((None, f"  ignored {path}: {reason}"))
    status = analysis.detectors
    ran = [k for k, s in status.items() if str(s).startswith("ran:")]
    found = list(dict.fromkeys(f.kind for f in analysis.findings))
    head = f"detectors: {len(ran)} of {len(status)} ran" + (
        f", {len(found)} with findings ({', '.join(found)})" if found else ", none found anything"
    )
    lines.append(("section", head))
    for kind, s in status.items():
        plain = str(s).startswith("ran:") and ";" not in str(s)
        if verbose or not plain:
            lines.append(("dim" if plain else None, f"  {kind}: {s}"))
    return lines


def report_lines(analysis: Analysis, *, verbose: bool = False) -> list[Line]:
    """The report as (style, text) lines: verdict, findings and evidence by flow, notes on
    flows, then inputs, clocks and detectors."""
    flows = flows_in_verdict_order(flow_evidence(analysis))
    lines = verdict_lines(analysis, flows)
    for fe in flows:
        lines.append((None, ""))
        lines.append(("flow", f"flow {fe.flow_id}: {flow_text(fe.flow)}"))
        for f in sorted(fe.findings, key=lambda f: f.first_ts):
            lines += finding_lines(f)
        lines += evidence_lines(fe, verbose=verbose)
    if analysis.context.flow_notes:
        lines.append((None, ""))
        lines.append(("section", "notes on flows (not findings):"))
        for note in analysis.context.flow_notes:
            lines.append((None, f"  flow {note['flow_id']}: {note['text']}"))
    lines.append((None, ""))
    lines += input_lines(analysis, verbose=verbose)
    if not verbose:
        lines.append(("dim", "(--verbose: every input's skip reasons, the clocks, every detector)"))
    return lines


def text_report(analysis: Analysis, *, verbose: bool = False) -> list[str]:
    """The report's lines, without styles (``report_lines``)."""
    return [text for _style, text in report_lines(analysis, verbose=verbose)]


__all__ = [
    "STYLES",
    "detail_lines",
    "evidence_lines",
    "explanation_lines",
    "finding_lines",
    "flows_in_verdict_order",
    "input_lines",
    "report_lines",
    "severity_rank",
    "text_report",
    "verdict_lines",
]
