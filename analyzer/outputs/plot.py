"""``nicpath plot``: one flow's picture, one lane per card and hook, time across.

Every observation of the flow's packets is a mark in the lane of the card it crossed and of
where it was seen there (the capture on that card, or the netfilter hook that logged it), so a
packet that left eth1 shows in ``eth1 capture`` and ``eth1 filter/OUTPUT`` at the same time.
Marks are coloured (and shaped) by direction. Each egress change (F3) is a dashed line across
the lanes labelled ``egress eth2 → eth1``; each finding of the flow is a bar in a lane of its
own, from its first to its last packet.

The chart is a Vega-Lite spec built with Altair: one spec gives both the static PNG or SVG
(rendered by vl-convert, no browser needed) and the interactive HTML (Vega-Embed with the
JavaScript inlined, so the file opens without a network; tooltips, zoom and pan on time). The
HTML page is nicpath's own, not Altair's ``save``: the spec holds card and file names from the
inputs, and Altair writes it into the page's script unescaped (a card named ``</script>...``
would be markup), where ``script_json`` escapes it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any

import pandas as pd

from ..analysis.result import Analysis
from ..detectors.base import flow_text
from ..errors import NicpathError
from ..events.parquet import replaced
from ..render import endpoint, tcp_flags_text, ts_text
from .escape import script_json, terminal_text
from .timeline import timeline_rows

#: Mark colour per direction (ColorBrewer Dark2: distinct in print and for colour-blind eyes).
DIRECTION_COLORS = {"out": "#d95f02", "in": "#1b9e77", "unknown": "#7570b3"}
DIRECTION_SHAPES = {"out": "triangle-right", "in": "triangle-left", "unknown": "circle"}
#: Netfilter hooks in the order a packet meets them.
HOOK_ORDER = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
FINDING_COLOR = "#c0392b"
CHANGE_COLOR = "#333333"
CHANGE_LANE = "egress change"
#: Output formats by file suffix.
FORMATS = (".html", ".png", ".svg")
LANE_HEIGHT = 26
WIDTH = 860


def _altair():
    try:
        import altair as alt
    except ImportError:
        raise NicpathError("pictures need the plot extra: pip install 'nicpath[plot]'") from None
    return alt


def _natural(text: str) -> list:
    """eth2 before eth10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _lane_key(card: str, hook: str | None) -> tuple:
    if hook is None:
        return (_natural(card), 0, "")
    chain = hook.rsplit("/", 1)[-1].upper()
    rank = HOOK_ORDER.index(chain) + 1 if chain in HOOK_ORDER else len(HOOK_ORDER) + 1
    return (_natural(card), rank, hook)


def lane_name(card: str, hook: str | None) -> str:
    """The lane's label. Card and hook names come from the inputs: shown as the terminal shows
    them (``terminal_text``), since a control character in a label aborts vl-convert's
    renderer (it panics building the SVG) and would be invisible in the browser."""
    return terminal_text(f"{card} {hook}" if hook else f"{card} capture")


def flow_marks(analysis: Analysis, flow_id: int) -> tuple[pd.DataFrame, list[str], int]:
    """One row per observation of the flow's packets, with its lane and tooltip fields; the
    lanes in drawing order; the flow's first time (ns) that ``t`` counts from."""
    obs = analysis.tables.observations
    rows = obs[obs["flow_id"] == flow_id]
    packets = timeline_rows(analysis, flow_id).set_index("packet_id")
    start = int(rows["ts"].min())
    cards = [
        c if isinstance(c, str) and c else (p if isinstance(p, str) else "?")
        for c, p in zip(rows["iface"].astype(object), rows["point"].astype(object), strict=True)
    ]
    hooks = [h if isinstance(h, str) and h else None for h in rows["hook"].astype(object)]
    what = {}
    for pid, p in packets.iterrows():
        flags = tcp_flags_text(None if pd.isna(p["tcp_flags"]) else int(p["tcp_flags"]))
        length = "" if pd.isna(p["ip_len"]) else f" len {int(p['ip_len'])}"
        what[pid] = (
            f"{endpoint(p['src'], p['sport'])} → {endpoint(p['dst'], p['dport'])}"
            f"{' [' + flags + ']' if flags else ''}{length}"
        )
    ts = rows["ts"].astype("int64").to_numpy()
    marks = pd.DataFrame(
        {
            "t": (ts - start) / 1e9,
            "time": [ts_text(int(v)) for v in ts],
            "lane": [lane_name(c, h) for c, h in zip(cards, hooks, strict=True)],
            "direction": rows["direction"].astype(object).fillna("unknown").to_numpy(),
            "packet": [what.get(int(p), "") for p in rows["packet_id"]],
            "evidence": [
                terminal_text(f"{s}#{int(r)}")
                for s, r in zip(rows["source"], rows["record"], strict=True)
            ],
        }
    )
    lanes = [
        lane_name(c, h)
        for c, h in sorted(set(zip(cards, hooks, strict=True)), key=lambda x: _lane_key(*x))
    ]
    return marks, lanes, start


def flow_chart(analysis: Analysis, flow_id: int):
    """The flow's picture as an Altair layered chart (render with ``save_chart``)."""
    alt = _altair()
    marks, lanes, start = flow_marks(analysis, flow_id)
    timeline = timeline_rows(analysis, flow_id)
    changes = timeline[timeline["egress_change"]]
    change_rows = [
        {
            "t": (int(r.ts) - start) / 1e9,
            "time": ts_text(int(r.ts)),
            "label": terminal_text(f"{r.previous_card} → {r.card}"),
        }
        for r in changes.itertuples(index=False)
    ]
    finding_rows = []
    for f in analysis.findings:
        if f.flow_id != flow_id:
            continue
        finding_rows.append(
            {
                "lane": terminal_text(f"finding: {f.kind} ({' → '.join(f.ifaces)})"),
                "t": f.first_ts - start / 1e9,
                "t2": f.last_ts - start / 1e9,
                "time": ts_text(round(f.first_ts * 1e9)),
                "kind": f.kind,
                "packets": f.packets,
                "summary": terminal_text(f.summary),
            }
        )
    finding_lanes = list(dict.fromkeys(r["lane"] for r in finding_rows))
    # Marks are clipped to the plot (zooming needs it), so change labels get a lane of their own.
    domain = ([CHANGE_LANE] if change_rows else []) + finding_lanes + lanes
    height = LANE_HEIGHT * max(len(domain), 2)

    started = dt.datetime.fromtimestamp(start / 1e9, tz=dt.UTC)
    x = alt.X(
        "t:Q",
        title=f"seconds since the flow's first packet, {started:%Y-%m-%d %H:%M:%S.%f} UTC",
        scale=alt.Scale(nice=False, padding=12),
    )
    y = alt.Y(
        "lane:N",
        title=None,
        sort=domain,
        scale=alt.Scale(domain=domain),
        axis=alt.Axis(labelLimit=360, labelFontSize=12, grid=True),
    )
    directions = [d for d in DIRECTION_COLORS if d in set(marks["direction"])]
    packets = (
        alt.Chart(alt.Data(values=marks.to_dict("records")))
        .mark_point(filled=True, size=70, opacity=0.85)
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "direction:N",
                title="direction",
                scale=alt.Scale(domain=directions, range=[DIRECTION_COLORS[d] for d in directions]),
            ),
            shape=alt.Shape(
                "direction:N",
                scale=alt.Scale(domain=directions, range=[DIRECTION_SHAPES[d] for d in directions]),
            ),
            tooltip=["time:N", "lane:N", "direction:N", "packet:N", "evidence:N"],
        )
    )
    layers = [packets]
    if finding_rows:
        data = alt.Data(values=finding_rows)
        tooltip = ["kind:N", "time:N", "packets:Q", "summary:N"]
        layers.append(
            alt.Chart(data)
            .mark_rule(strokeWidth=10, color=FINDING_COLOR, opacity=0.75)
            .encode(x="t:Q", x2="t2:Q", y=y, tooltip=tooltip)
        )
        layers.append(
            alt.Chart(data)
            .mark_point(shape="diamond", filled=True, size=160, color=FINDING_COLOR)
            .encode(x="t:Q", y=y, tooltip=tooltip)
        )
    if change_rows:
        data = alt.Data(values=change_rows)
        layers.append(
            alt.Chart(data)
            .mark_rule(strokeDash=[6, 4], strokeWidth=1.5, color=CHANGE_COLOR)
            .encode(x="t:Q", tooltip=["label:N", "time:N"])
        )
        layers.append(
            alt.Chart(data)
            .transform_calculate(lane=f"'{CHANGE_LANE}'")
            .mark_text(align="left", baseline="middle", dx=5, fontSize=12, fontWeight="bold")
            .encode(x="t:Q", y=y, text="label:N", color=alt.value(CHANGE_COLOR))
        )
    title = alt.TitleParams(
        f"flow {flow_id}: {flow_text(analysis.context.flow_info[flow_id])}",
        subtitle=f"{_count(len(timeline), 'packet')}, {_count(len(marks), 'observation')}; "
        f"{_count(len(finding_rows), 'finding')}, {_count(len(change_rows), 'egress change')}",
        anchor="start",
        offset=18,
    )
    return (
        alt.layer(*layers)
        .properties(width=WIDTH, height=height, title=title)
        .configure_axis(titleFontSize=12, labelFontSize=11)
        .configure_legend(orient="top", titleFontSize=12, labelFontSize=12)
        .interactive(bind_y=False)
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def output_format(path: str | os.PathLike) -> str:
    """The picture's format from the file name: ``.html``, ``.png`` or ``.svg``."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        raise NicpathError(f"{path}: a picture is written as {', '.join(FORMATS)}")
    return suffix


#: Only what works offline: export to PNG/SVG, no links to the online editor.
EMBED_OPTIONS = {
    "mode": "vega-lite",
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
  body { font-family: sans-serif; margin: 1em; }
  #chart.vega-embed { width: 100%; display: flex; }
  #chart.vega-embed details, #chart.vega-embed details summary { position: relative; }
</style>
<script>{{ script }}</script>
</head>
<body>
<div id="chart"></div>
<script>
vegaEmbed("#chart", {{ spec }}, {{ embed_options }})
  .catch(err => { document.getElementById("chart").textContent = String(err); });
</script>
</body>
</html>
"""


def vega_embed_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script, from vl-convert (no download)."""
    alt = _altair()
    import vl_convert

    vl_version = "_".join(alt.SCHEMA_VERSION.split(".")[:2])
    return vl_convert.javascript_bundle(vl_version=vl_version).replace("</script", "<\\/script")


def chart_page(chart: Any) -> str:
    """The chart as one self-contained interactive page: every text of the spec escaped for
    the <script> it sits in, the title for HTML."""
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError:
        raise NicpathError("pictures need the plot extra: pip install 'nicpath[plot]'") from None
    spec = chart.to_dict()
    title = spec.get("title", {})
    text = title.get("text", "") if isinstance(title, dict) else str(title)
    return (
        jinja2.Environment(autoescape=True)
        .from_string(PAGE)
        .render(
            title=text or "nicpath",
            script=Markup(vega_embed_bundle()),
            spec=Markup(script_json(spec)),
            embed_options=Markup(script_json(EMBED_OPTIONS)),
        )
    )


def save_chart(chart: Any, path: str | os.PathLike) -> None:
    """Write the chart as ``.html`` (self-contained, interactive), ``.png`` or ``.svg``; the
    file appears whole or not at all (written under a temporary name, then renamed)."""
    suffix = output_format(path)
    with replaced(os.fspath(path)) as tmp:
        if suffix == ".html":
            with open(tmp, "w", encoding="utf-8") as out:
                out.write(chart_page(chart))
        elif suffix == ".png":
            chart.save(tmp, format="png", scale_factor=2)
        else:
            chart.save(tmp, format="svg")
