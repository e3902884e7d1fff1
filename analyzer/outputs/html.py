"""``nicpath analyze --html FILE``: the analysis as one self-contained page.

The page holds what the text report holds (what each input held and what was skipped, which
detectors ran, every finding with its evidence) and, for each flow with findings, its picture
(``analyzer.plot``), interactive. Vega-Embed's JavaScript is inlined once and the charts'
data sit in their specs, so the file opens from disk without a network. Every text from the
inputs (card, file and hook names, summaries) is escaped for where it sits: by Jinja in the
HTML (its control characters first written as the terminal writes them), by ``script_json``
in the specs.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from .. import __version__
from ..analysis.result import Analysis
from ..detectors.base import flow_text
from ..errors import NicpathError
from ..events.parquet import replaced
from ..render import ts_text
from .escape import script_json, terminal_text
from .plot import EMBED_OPTIONS, flow_chart, vega_embed_bundle
from .records import counts_lines

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
</style>
{% if charts %}<script>{{ script }}</script>{% endif %}
</head>
<body>
<h1>nicpath {{ version }}: {{ title }}</h1>
<p class="note">{{ summary }}. Written {{ written }} by <code>nicpath analyze --html</code>.</p>

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
{% for path, reason in ignored %}<p class="note">ignored <code>{{ path }}</code>: {{ reason }}</p>
{% endfor %}

<h2>Detectors</h2>
<table><tr><th>finding kind</th><th>status</th></tr>
{% for kind, status in detectors.items() %}<tr><td>{{ kind }}</td><td>{{ status }}</td></tr>
{% endfor %}</table>

<h2>Findings</h2>
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
{% for f in c.findings %}<h3>{{ f.kind }} ({{ f.ifaces }}), {{ f.packets }} packets</h3>
<p>{{ f.summary }}</p>
{% if f.why %}<p>why: {{ f.why }}</p>{% endif %}
<details><summary>evidence: {{ f.evidence | length }} observations of the first packets</summary>
<table><tr><th>time</th><th>seen at</th><th>direction</th><th>evidence</th></tr>
{% for e in f.evidence %}<tr><td>{{ e.ts }}</td><td>{{ e.point }}</td><td>{{ e.direction }}</td>
<td><code>{{ e.source }}#{{ e.record }}</code></td></tr>
{% endfor %}</table></details>
{% endfor %}</div>
{% endfor %}
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
        "first": ts_text(round(f.first_ts * 1e9)),
        "packets": f.packets,
        "summary": f.summary,
        "why": f.explanation["text"] if f.explanation else None,
        "evidence": f.evidence,
    }


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
    findings = [_finding_view(f) for f in analysis.findings]
    charts = []
    for flow_id in dict.fromkeys(f.flow_id for f in analysis.findings):
        charts.append(
            {
                "flow_id": flow_id,
                "flow": flow_text(analysis.context.flow_info[flow_id]),
                "spec": script_json(flow_chart(analysis, flow_id).to_dict()),
                "findings": [f for f in findings if f["flow_id"] == flow_id],
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
        summary=f"{n_flows} flows, {len(findings)} findings",
        written=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        inputs=counts,
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
