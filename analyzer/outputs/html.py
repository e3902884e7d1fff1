"""``nicpath analyze --html FILE``: the analysis as one self-contained page.

The page holds what the text report holds, in its order: the verdict and a table of the
findings, then each flow with findings: its picture (``analyzer.plot``, interactive), its
findings (summary, why, conntrack's entries) and its evidence once, each packet in the file to
open first, with the Wireshark filter and tshark commands; then what each input held and what
was skipped, and which detectors ran. Vega-Embed's JavaScript is inlined once and the charts'
data sit in their specs, so the file opens from disk without a network. Every text from the
inputs (card, file and hook names, summaries) is escaped for where it sits: by Jinja in the
HTML (its control characters first written as the terminal writes them), by ``script_json``
in the specs.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pandas as pd

from .. import __version__
from ..analysis.result import Analysis
from ..detectors.base import flow_text
from ..errors import NicpathError
from ..events.parquet import replaced
from ..render import count, endpoint, tcp_flags_text, ts_text
from .escape import script_json, terminal_text
from .evidence import FlowEvidence, flow_evidence
from .plot import EMBED_OPTIONS, flow_chart, vega_embed_bundle
from .records import counts_lines
from .text import flows_in_verdict_order, severity_rank, verdict_lines

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nicpath: {{ title }}</title>
<style>
  body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
  h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1.05em; }
  table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
  th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
  th { background: #f2f2f2; } td.n { text-align: right; }
  .error { color: #a61b1b; font-weight: bold; } .warning { color: #b35900; font-weight: bold; }
  .note { color: #555; font-size: 0.9em; } code { font-size: 0.95em; }
  .flow { border-top: 2px solid #ddd; padding-top: 0.5em; }
  .verdict { font-size: 1.15em; font-weight: bold; } .verdict.bad { color: #a61b1b; }
  .verdict.good { color: #1e7b34; }
  pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.9em; }
</style>
{% if charts %}<script>{{ script }}</script>{% endif %}
</head>
<body>
<h1>nicpath {{ version }}: {{ title }}</h1>
<p class="verdict {{ verdict_class }}">{{ verdict }}</p>
<p class="note">Written {{ written }} by <code>nicpath analyze --html</code>.</p>

{% if findings %}<table>
<tr><th>kind</th><th>severity</th><th>flow</th><th>cards</th><th>first packet</th>
<th>packets</th><th>summary</th></tr>
{% for f in findings %}<tr><td>{{ f.kind }}</td><td class="{{ f.severity }}">{{ f.severity }}</td>
<td><a href="#flow-{{ f.flow_id }}">{{ f.flow_id }}: {{ f.flow }}</a></td><td>{{ f.ifaces }}</td>
<td>{{ f.first }}</td><td class="n">{{ f.packets }}</td><td>{{ f.summary }}</td></tr>
{% endfor %}</table>
{% else %}<p>No findings in {{ n_flows }} flows.</p>{% endif %}

{% for c in charts %}<div class="flow" id="flow-{{ c.flow_id }}">
<h2>Flow {{ c.flow_id }}: {{ c.flow }}</h2>
<div id="chart-{{ c.flow_id }}"></div>
{% for f in c.findings %}<h3><span class="{{ f.severity }}">{{ f.severity }}</span>
{{ f.kind }} ({{ f.ifaces }}), {{ f.packets_text }}</h3>
<p>{{ f.summary }}</p>
{% if f.why %}<p>why: {{ f.why }}</p>{% endif %}
{% if f.conntrack %}<p>conntrack -L:</p><pre>{% for line in f.conntrack %}{{ line }}
{% endfor %}</pre>{% endif %}
{% endfor %}
<h3>Evidence: {{ c.evidence_text }}, each in the file to open first</h3>
<table><tr><th>time</th><th>direction</th><th>card</th><th>packet</th><th>open</th>
<th>evidence of</th></tr>
{% for e in c.evidence %}<tr><td>{{ e.ts }}</td><td>{{ e.direction }}</td><td>{{ e.card }}</td>
<td>{{ e.packet }}</td><td><code>{{ e.where }}</code></td><td>{{ e.proves }}</td></tr>
{% endfor %}</table>
{% if c.commands %}<p>Wireshark filter for the flow: <code>{{ c.filter }}</code></p>
<pre class="commands">{% for command in c.commands %}{{ command }}
{% endfor %}</pre>{% endif %}
</div>
{% endfor %}

<h2>Inputs</h2>
<table>
<tr><th>file</th><th>format</th><th>records read</th><th>used</th><th>skipped</th>
<th>warnings</th></tr>
{% for f in inputs %}<tr><td><code>{{ f.path }}</code></td><td>{{ f.format }}</td>
<td class="n">{{ f.records }}</td><td class="n">{{ f.used }}</td>
<td>{% for reason, n in f.skipped.items() %}{{ n }} {{ reason }}<br>{% endfor %}</td>
<td>{% for w in f.warnings %}{{ w }}<br>{% endfor %}</td></tr>
{% endfor %}</table>
{% for line in clock %}<p class="note">{{ line }}</p>{% endfor %}
{% for u in unreadable %}<p class="warning">unreadable <code>{{ u.path }}</code>: {{ u.reason }}</p>
{% endfor %}
{% for path, reason in ignored %}<p class="note">ignored <code>{{ path }}</code>: {{ reason }}</p>
{% endfor %}

<h2>Detectors</h2>
<table><tr><th>finding kind</th><th>status</th></tr>
{% for kind, status in detectors.items() %}<tr><td>{{ kind }}</td><td>{{ status }}</td></tr>
{% endfor %}</table>
{% if charts %}<script>
const embedOptions = {{ embed_options }};
{% for c in charts %}vegaEmbed("#chart-{{ c.flow_id }}", {{ c.spec }}, embedOptions)
  .catch(err => { document.getElementById("chart-{{ c.flow_id }}").textContent = String(err); });
{% endfor %}</script>{% endif %}
</body>
</html>
"""


def _finding_view(f) -> dict[str, Any]:
    return {
        "kind": f.kind,
        "severity": f.severity,
        "flow_id": f.flow_id,
        "flow": flow_text(f.flow),
        "ifaces": " → ".join(f.ifaces),
        "first": ts_text(round(f.first_ts * 1e6) * 1000),
        "packets": f.packets,
        "packets_text": count(f.packets, "packet"),
        "summary": f.summary,
        "why": f.explanation["text"] if f.explanation else None,
        "conntrack": f.extra.get("conntrack") or [],
    }


def _evidence_view(fe: FlowEvidence) -> list[dict[str, Any]]:
    """A flow's evidence packets as the text report lists them (``evidence.flow_evidence``)."""
    rows = []
    for p in fe.packets:
        r = p.row
        packet = p.other or ""
        if r is not None:
            flags = tcp_flags_text(None if pd.isna(r["tcp_flags"]) else int(r["tcp_flags"]))
            packet = (
                f"{endpoint(r['src'], r['sport'])} → {endpoint(r['dst'], r['dport'])}"
                + (f" [{flags}]" if flags else "")
                + ("" if pd.isna(r["ip_len"]) else f" len {int(r['ip_len'])}")
            )
        rows.append(
            {
                "ts": ts_text(p.ts),
                "direction": p.direction,
                "card": p.card or "?",
                "packet": packet,
                "where": p.shown.text(),
                "proves": ", ".join(p.proves),
            }
        )
    return rows


def _shown(value: Any) -> Any:
    """A text as the page shows it: as the terminal would (escapes for control characters);
    Markup (the scripts and specs, escaped for <script> already) as it is."""
    if isinstance(value, str) and not hasattr(value, "__html__"):
        return terminal_text(value)
    return value


def html_report(analysis: Analysis, *, title: str | None = None) -> str:
    """The page as text (see the module docstring)."""
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError:
        raise NicpathError("--html needs the plot extra: pip install 'nicpath[plot]'") from None
    worst_first = sorted(analysis.findings, key=lambda f: (severity_rank(f.severity), f.first_ts))
    findings = [_finding_view(f) for f in worst_first]
    flows = flows_in_verdict_order(flow_evidence(analysis))
    verdict = verdict_lines(analysis, flows)
    charts = []
    for fe in flows:
        charts.append(
            {
                "flow_id": fe.flow_id,
                "flow": flow_text(fe.flow),
                "spec": script_json(flow_chart(analysis, fe.flow_id).to_dict()),
                # in time order, as the text report lists them
                "findings": [
                    _finding_view(f) for f in sorted(fe.findings, key=lambda f: f.first_ts)
                ],
                "evidence": _evidence_view(fe),
                "evidence_text": count(len(fe.packets), "packet"),
                "filter": fe.display_filter(),
                "commands": fe.tshark_commands(),
            }
        )
    counts = analysis.events.counts()
    clock = [
        line
        for line in counts_lines(counts, analysis.events.clock.to_dict())
        if line.startswith("clock:")
    ]
    n_flows = len(analysis.tables.flows)
    # Every text shown goes through terminal_text (a control character in a card name shows as
    # \033, as in the terminal and the pictures), then Jinja's HTML escaping; the scripts and
    # specs are Markup, escaped for their <script> already.
    env = jinja2.Environment(autoescape=True, finalize=_shown)
    return env.from_string(PAGE).render(
        title=title or ", ".join(sorted({os.path.dirname(c["path"]) or c["path"] for c in counts})),
        version=__version__,
        verdict=verdict[0][1],
        verdict_class=verdict[0][0] or "",
        written=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        inputs=analysis.files(),
        unreadable=analysis.unreadable(),
        clock=clock,
        ignored=analysis.events.inputs.ignored,
        detectors=analysis.detectors,
        findings=findings,
        n_flows=n_flows,
        charts=[{**c, "spec": Markup(c["spec"])} for c in charts],
        script=Markup(vega_embed_bundle()) if charts else "",
        embed_options=Markup(script_json(EMBED_OPTIONS)),
    )


def write_html(analysis: Analysis, path: str | os.PathLike) -> None:
    """Write ``html_report`` to ``path`` (UTF-8), whole or not at all: under a temporary name,
    then renamed."""
    page = html_report(analysis)
    with replaced(os.fspath(path)) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(page)
