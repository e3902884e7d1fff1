"""Texts from the inputs are shown escaped (issue 25): card names from a pcapng's if_name or an
``ip -j link`` snapshot, file names and LOG prefixes reach the terminal with their control
characters written as tshark writes them, and the HTML pages (``plot -o flow.html``,
``analyze --html``) as text, never as markup, whatever they hold: the pages are parsed, and
opened in a headless Chromium when one is installed."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import dpkt
import pytest
from click.testing import CliRunner

from analyzer.api.cli import main
from analyzer.outputs.escape import script_json, terminal_text
from tests import synth

ROOT = Path(__file__).resolve().parent.parent
TCP = ROOT / "samples" / "egress_switch_tcp"
#: The names of the issue: one closes the page's script and adds markup, one (a valid Linux
#: card name) puts the script parser into its escaped state, which blanked every chart.
CLOSES_SCRIPT = "</script><img src=x onerror=document.title='pwned'>"
OPENS_COMMENT = "<!--<script>"
#: Sets the terminal's window title, clears the screen.
TERMINAL = "<!--<script>\x1b]0;owned\x07\x1b[2J"
ESCAPED_TERMINAL = "<!--<script>\\033]0;owned\\a\\033[2J"


def run(*args):
    """The command as on a terminal: ``color=True`` keeps any escape sequence in the output
    (click strips CSI sequences when it writes to something else)."""
    return CliRunner().invoke(main, [str(a) for a in args], color=True)


def raw_controls(text: str) -> list[str]:
    """Lines of ``text`` holding a character that is not printable (line breaks aside)."""
    return [line for line in text.split("\n") if not line.isprintable()]


def pcapng_bundle(root: Path, names: list[str]) -> Path:
    """A pcapng whose two cards have ``names``: a TCP flow leaves by the first, then by the
    second (an egress_change finding), with replies on each."""
    packets = []
    t0 = 1_764_040_967.0
    for i in range(20):
        card = 0 if i < 10 else 1
        flags = dpkt.tcp.TH_SYN if i == 0 else dpkt.tcp.TH_ACK
        out = synth.tcp4("10.0.0.1", "10.0.0.2", 40000, 80, flags=flags, seq=1000 + i, ip_id=i + 1)
        back = synth.tcp4("10.0.0.2", "10.0.0.1", 80, 40000, flags=dpkt.tcp.TH_ACK, ip_id=100 + i)
        packets.append({"iface": card, "ts": t0 + i / 10, "frame": synth.eth(out), "flags": 2})
        frame = synth.eth(back, src=synth.MAC_B, dst=synth.MAC_A)
        packets.append({"iface": card, "ts": t0 + i / 10 + 0.01, "frame": frame, "flags": 1})
    root.mkdir(parents=True, exist_ok=True)
    path = root / "all.pcapng"
    path.write_bytes(synth.pcapng_bytes([{"name": n} for n in names], packets))
    return path


def ip_bundle(root: Path, eth1: str, eth2: str, capture_name: str = "any.pcap") -> Path:
    """egress_switch_tcp's ``tcpdump -i any`` capture and ``ip -j`` snapshots, its cards named
    ``eth1`` and ``eth2`` in the snapshots (the capture names cards by index)."""
    root.mkdir(parents=True)
    shutil.copy(TCP / "any.pcap", root / capture_name)
    for path in (TCP / "ip").glob("*/*"):
        if path.suffix == ".txt":
            continue
        target = root / "ip" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        if path.suffix == ".json":
            text = text.replace('"eth1"', json.dumps(eth1)).replace('"eth2"', json.dumps(eth2))
        target.write_text(text)
    return root


def log_bundle(root: Path) -> Path:
    """egress_switch_tcp's capture and kernel log, its OUTPUT lines' LOG prefix holding an
    escape sequence."""
    root.mkdir(parents=True)
    for name in ("any.pcap", "btime"):
        shutil.copy(TCP / name, root / name)
    log = (TCP / "kern.dmesg").read_text()
    (root / "kern.dmesg").write_text(log.replace("] [FILTER-OUTPUT ", "] \x1b]2;x\x07[OUT "))
    return root


def test_terminal_text_escapes_as_tshark_does():
    assert terminal_text("eth1 -> eth2: café, 10\\n") == "eth1 -> eth2: café, 10\\n"
    assert terminal_text("a\x1b[2Jb") == "a\\033[2Jb"
    assert terminal_text("\x1b]0;title\x07") == "\\033]0;title\\a"
    assert terminal_text("\t\n\r\b\f\v\0\x7f") == "\\t\\n\\r\\b\\f\\v\\000\\177"
    # C1 controls (CSI U+009B acts as ESC [ on some terminals), bidi overrides, separators,
    # a lone surrogate (an undecodable byte), a tag character.
    assert terminal_text("\x9b2J\u202eeth\u2028\udcff\U000e0001") == (
        "\\u009b2J\\u202eeth\\u2028\\udcff\\U000e0001"
    )
    assert terminal_text(terminal_text("\x1b")) == "\\033"  # escaped text stays as it is


def test_script_json_cannot_end_or_confuse_a_script():
    text = script_json({"lane": CLOSES_SCRIPT + OPENS_COMMENT + "&\u2028"})
    assert not re.search(r"(?i)</script|<!--|<script|[<>&]", text)
    assert json.loads(text) == {"lane": CLOSES_SCRIPT + OPENS_COMMENT + "&\u2028"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    return {
        "pcapng": pcapng_bundle(root / "pcapng", [CLOSES_SCRIPT, OPENS_COMMENT]),
        "ip": ip_bundle(root / "ip", CLOSES_SCRIPT, TERMINAL, "any\x1b]0;t\x07.pcap"),
        "newline": pcapng_bundle(root / "newline", ["eth1\nFORGED: line", "eth2\r\x1b[1A"]),
        "log": log_bundle(root / "log"),
    }


def test_every_command_prints_input_texts_escaped(hostile, tmp_path):
    bundle = hostile["ip"]
    shown = {
        "inspect": run("inspect", bundle),
        "events": run("events", bundle),
        "analyze": run("analyze", bundle),
        "timeline": run("timeline", bundle, "--flow", "tcp 172.16.70.16:32904 172.16.70.15:5000"),
        "route": run("route", "--ip", bundle, "--to", "172.16.70.15"),
        "missing": run("events", tmp_path / "gone\x1b[2J.pcap"),
        **{f"log {c}": run(c, hostile["log"]) for c in ("inspect", "events", "analyze")},
    }
    assert shown["analyze"].exit_code == 1 and shown["missing"].exit_code == 2
    for command, res in shown.items():
        assert not raw_controls(res.output), (command, raw_controls(res.output)[:3])
    for command in ("inspect", "events", "analyze", "timeline", "route"):
        assert ESCAPED_TERMINAL in shown[command].output or CLOSES_SCRIPT in shown[command].output
    assert f"egress_change ({ESCAPED_TERMINAL} -> {CLOSES_SCRIPT})" in shown["analyze"].output
    assert "any\\033]0;t\\a.pcap#" in shown["analyze"].output  # evidence: the file's name
    assert "gone\\033[2J.pcap" in shown["missing"].output
    # JSON escapes them its own way: the same characters, as \u escapes.
    doc = json.loads(run("analyze", bundle, "--format", "json").output)
    assert doc["findings"][0]["ifaces"] == [TERMINAL, CLOSES_SCRIPT]


def test_batch_prints_input_texts_escaped(hostile, tmp_path):
    incidents = tmp_path / "incidents"
    shutil.copytree(hostile["ip"], incidents / "host-a")
    broken = incidents / "host\x1b[2Jb"
    broken.mkdir()
    (broken / "eth1.pcap").write_bytes(synth.pcap_bytes([(1.0, b"\0" * 20)], linktype=147))
    res = run("batch", incidents, "--out", tmp_path / "ds", "--jobs", 1)
    assert res.exit_code == 2, res.output
    assert not raw_controls(res.output) and not raw_controls(res.stderr)
    assert "host\\033[2Jb/eth1.pcap" in res.stdout  # the failed bundle's error names the file


def test_a_newline_in_a_name_cannot_start_a_line(hostile):
    bundle = hostile["newline"]
    for command in ("inspect", "events", "analyze"):
        res = run(command, bundle)
        assert not raw_controls(res.output), command
        assert not any(line.startswith("FORGED") for line in res.output.splitlines()), command
        assert "eth1\\nFORGED: line" in res.output, command
    assert "eth2\\r\\033[1A" in run("analyze", bundle).output


class PageParser(HTMLParser):
    """The elements a browser's tokenizer would make of a page, and each script's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parsed(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


def specs(page: str) -> list[dict]:
    """The Vega-Lite specs the page embeds, decoded as the browser's JSON reader would."""
    out = []
    decoder = json.JSONDecoder()
    for m in re.finditer(r'vegaEmbed\("#chart[-\w]*", ', page):
        spec, _ = decoder.raw_decode(page, m.end())
        out.append(spec)
    return out


def lanes(spec: dict) -> list[str]:
    return spec["layer"][0]["encoding"]["y"]["scale"]["domain"]


@pytest.fixture(scope="module")
def pages(hostile, tmp_path_factory) -> dict[str, Path]:
    """The report page and the plot page of each hostile bundle."""
    out = tmp_path_factory.mktemp("pages")
    written = {}
    for name, flow in (("pcapng", "0"), ("ip", "tcp 172.16.70.16:32904 172.16.70.15:5000")):
        report, plot = out / f"{name}-report.html", out / f"{name}-flow.html"
        assert run("analyze", hostile[name], "--html", report).exit_code == 1
        res = run("plot", hostile[name], "--flow", flow, "-o", plot)
        assert res.exit_code == 0, res.output
        written[f"{name}-report"], written[f"{name}-flow"] = report, plot
    return written


def test_pages_hold_input_texts_as_text_only(pages):
    for name, path in pages.items():
        page = path.read_text()
        parser = parsed(page)
        assert "img" not in parser.tags, name  # the name's markup stayed text
        assert len(parser.scripts) == 2, name  # Vega's bundle, and the charts
        for script in parser.scripts:
            # What would end the script early, or switch its parser into the state in which
            # `</script>` no longer ends it (which blanked the charts).
            assert not re.search(r"(?i)</script|<!--|<script", script), name
        (spec,) = specs(page)
        wanted = {CLOSES_SCRIPT, OPENS_COMMENT} if name.startswith("pcapng") else {CLOSES_SCRIPT}
        cards = {lane.rsplit(" ", 1)[0] for lane in lanes(spec) if lane.endswith(" capture")}
        assert wanted <= cards, (name, cards)
        if name == "ip-report":
            # A control character is shown as the terminal shows it, in the page's text too.
            assert html.escape(ESCAPED_TERMINAL, quote=False) in page
            assert "\x1b" not in page


def test_static_pictures_of_hostile_names(hostile, tmp_path):
    """PNG and SVG: a control character in a label aborted vl-convert (a panic in its SVG
    parser, which takes the process down), so these run in a process of their own."""
    for suffix in ("svg", "png"):
        out = tmp_path / f"flow.{suffix}"
        flow = "tcp 172.16.70.16:32904 172.16.70.15:5000"
        cmd = [sys.executable, "-m", "analyzer", "plot", str(hostile["ip"]), "--flow", flow]
        proc = subprocess.run([*cmd, "-o", str(out)], capture_output=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    tree = ET.parse(tmp_path / "flow.svg")
    tags = {e.tag.rsplit("}", 1)[-1] for e in tree.iter()}
    assert not tags & {"script", "foreignObject", "image", "a"}
    texts = {e.text for e in tree.iter() if e.text}
    assert f"{ESCAPED_TERMINAL} capture" in texts and f"{CLOSES_SCRIPT} capture" in texts


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (apt install chromium)")
def test_pages_in_a_headless_browser(pages):
    """Opened in Chromium with its scripts run: no element came from a name, the title is the
    page's, and every chart is drawn with the names as its labels."""
    for name, path in pages.items():
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    f"--user-data-dir={profile}",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    path.as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=180,
            )
        dom = proc.stdout
        assert proc.returncode == 0 and "</html>" in dom, (name, proc.stderr[-2000:])
        parser = parsed(dom)
        assert "img" not in parser.tags, name
        title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
        assert "pwned" not in title and html.unescape(title).startswith(("nicpath", "flow ")), title
        charts = re.findall(r'<div id="(chart[-\w]*)"[^>]*>\s*<div class="chart-wrapper"', dom)
        assert charts and len(charts) == dom.count('<div id="chart'), name  # every chart drawn
        labels = {html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", dom)}
        assert f"{CLOSES_SCRIPT} capture" in labels, (name, sorted(labels)[:20])
