"""Evidence an engineer opens in Wireshark (issue 26): each evidence packet named once per flow
in the file to open first, the tshark commands and flow filter the report prints run as
printed, and ``analyze --evidence FILE`` writes one pcapng that tshark reads back with every
packet as captured (bytes, lengths, times), an interface per card with the source's link type,
and a comment naming the findings each packet proves."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.analysis.run import analyze
from analyzer.api.cli import main
from analyzer.outputs import evidence
from analyzer.outputs.evidence import flow_evidence
from analyzer.outputs.text import text_report

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TCP = SAMPLES / "egress_switch_tcp"
NAT = SAMPLES / "nat_pinned"
TSHARK = shutil.which("tshark")
CAPINFOS = shutil.which("capinfos")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="needs tshark (apt install tshark)")

TCP_FLOW = "tcp 172.16.70.16:32904 -> 172.16.70.15:5000"
CHANGE, SOURCE = "egress_change (eth2 -> eth1)", "src_not_on_nic (eth1)"
#: Per sample: each evidence packet as (file, frame, card, the findings it proves), in time
#: order; the flow the findings are on.
EXPECTED = {
    "egress_switch_tcp": (
        f"flow 2 {TCP_FLOW}",
        [
            ("eth2.pcap", 64, "eth2", [CHANGE]),
            ("eth1.pcap", 6, "eth1", [CHANGE, SOURCE]),
            ("eth1.pcap", 8, "eth1", [CHANGE, SOURCE]),
            ("eth1.pcap", 9, "eth1", [CHANGE, SOURCE]),
            ("eth1.pcap", 11, "eth1", [CHANGE, SOURCE]),
            ("eth1.pcap", 13, "eth1", [SOURCE]),
        ],
    ),
    # The first packet is the newer flow's SYN (the lead-in: it has the new translation).
    "nat_pinned": (
        "flow 1 tcp 172.16.70.14:53770 -> 172.16.70.15:5000",
        [("eth1.pcap", n, "eth1", ["nat_pinned (eth1)"]) for n in (117, 126, 127, 128, 132)],
    ),
}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tshark_frames(path: Path, display_filter: str | None = None) -> list[dict]:
    """Each frame tshark reads: number, interface, comment, time (as tshark prints it) and raw
    bytes."""
    args = [TSHARK, "-r", str(path), "-T", "json", "-x"]
    if display_filter:
        args += ["-Y", display_filter]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    frames = []
    for packet in json.loads(out or "[]"):
        layers = packet["_source"]["layers"]
        frame = layers["frame"]
        frames.append(
            {
                "number": int(frame["frame.number"]),
                "interface": frame.get("frame.interface_id_tree", {}).get("frame.interface_name"),
                "comment": layers.get("pkt_comment", {}).get("frame.comment"),
                "time": frame["frame.time_epoch"],
                "len": int(frame["frame.len"]),
                "raw": layers["frame_raw"][0],
            }
        )
    return frames


def interfaces(path: Path) -> list[tuple[str, str]]:
    """(name, encapsulation) of each Interface Description Block, as capinfos lists them."""
    out = subprocess.run([CAPINFOS, str(path)], capture_output=True, text=True, check=True)
    names = re.findall(r"^\s+Name = (.*)$", out.stdout, re.M)
    encaps = re.findall(r"^\s+Encapsulation = .*\((\d+) - ([\w-]+)\)$", out.stdout, re.M)
    return list(zip(names, [e[1] for e in encaps], strict=True))


def bundle(name: str, tmp_path: Path) -> Path:
    """A sample as given, or (``egress_switch_tcp.gz``) a copy whose eth1.pcap is gzipped."""
    if not name.endswith(".gz"):
        return SAMPLES / name
    copy = tmp_path / name.removesuffix(".gz")
    shutil.copytree(SAMPLES / copy.name, copy)
    raw = (copy / "eth1.pcap").read_bytes()
    (copy / "eth1.pcap.gz").write_bytes(gzip.compress(raw))
    (copy / "eth1.pcap").unlink()
    return copy


@needs_tshark
@pytest.mark.parametrize("name", ["egress_switch_tcp", "nat_pinned", "egress_switch_tcp.gz"])
def test_evidence_pcapng_read_back_with_tshark(name, tmp_path):
    path = bundle(name, tmp_path)
    flow, expected = EXPECTED[name.removesuffix(".gz")]
    out = tmp_path / "evidence.pcapng"
    res = run("analyze", path, "--evidence", out)
    assert res.exit_code == 1, res.output
    cards = ", ".join(dict.fromkeys(card for _, _, card, _ in expected))
    n_cards = len(set(cards.split(", ")))
    assert (
        f"nicpath analyze: wrote {out}: {len(expected)} evidence packets on {n_cards} "
        f"interface{'s' if n_cards > 1 else ''} ({cards})"
    ) in res.stderr
    assert not list(tmp_path.glob(".evidence.pcapng*"))  # written under a temporary name

    def source(file: str) -> Path:
        return path / (f"{file}.gz" if name.endswith(".gz") and file == "eth1.pcap" else file)

    written = tshark_frames(out)
    assert [(f["interface"], f["comment"]) for f in written] == [
        (card, f"nicpath {flow}: {', '.join(proves)} [{source(file)} frame {frame}]")
        for file, frame, card, proves in expected
    ]
    assert len(tshark_frames(out, "frame.comment")) == len(expected)  # every one commented
    if CAPINFOS:
        assert interfaces(out) == [(card, "ether") for card in cards.split(", ")]
    # As captured: the same bytes, lengths and times as the frames in the files they came from.
    originals = {}
    for file in dict.fromkeys(file for file, *_ in expected):
        numbers = ",".join(str(n) for f, n, *_ in expected if f == file)
        for frame in tshark_frames(source(file), f"frame.number in {{{numbers}}}"):
            originals[(file, frame["number"])] = frame
    for got, (file, number, *_) in zip(written, expected, strict=True):
        want = originals[(file, number)]
        assert (got["raw"], got["len"], got["time"]) == (want["raw"], want["len"], want["time"])


@needs_tshark
def test_a_tcpdump_any_capture_keeps_its_link_type_per_card(tmp_path):
    """From any.pcap alone (LINUX_SLL2), the packets are named by frame there and the pcapng's
    interfaces are the cards, each with the cooked link type."""
    out = tmp_path / "evidence.pcapng"
    res = run("analyze", TCP / "any.pcap", "--ip", TCP / "ip", "--evidence", out)
    assert res.exit_code == 1, res.output
    numbers = [65, 73, 75, 76, 78, 81]
    assert f"tshark -r {TCP / 'any.pcap'} -Y 'frame.number in {{65,73,75,76,78,81}}'" in res.stdout
    written = tshark_frames(out)
    assert [f["interface"] for f in written] == ["eth2", *["eth1"] * 5]
    assert [f["comment"].rsplit(" frame ", 1)[1] for f in written] == [f"{n}]" for n in numbers]
    if CAPINFOS:
        assert interfaces(out) == [("eth2", "linux-sll2"), ("eth1", "linux-sll2")]
    originals = tshark_frames(TCP / "any.pcap", "frame.number in {65,73,75,76,78,81}")
    assert [f["raw"] for f in written] == [f["raw"] for f in originals]


@needs_tshark
@pytest.mark.parametrize("name", ["egress_switch_tcp", "nat_pinned"])
def test_the_printed_tshark_commands_and_flow_filter_give_those_frames(name):
    """Each ``tshark -r FILE -Y 'frame.number in {...}'`` line of the report, run as printed,
    shows the frames the report names; the flow filter, on each card's capture, every frame
    of the flow there (a translated flow's frames on the wire too)."""
    result = analyze([str(SAMPLES / name)])
    lines = text_report(result)
    commands = [line.strip() for line in lines if line.strip().startswith("tshark -r ")]
    _flow, expected = EXPECTED[name]
    files = list(dict.fromkeys(file for file, *_ in expected))
    assert len(commands) == len(files)
    for command, file in zip(commands, files, strict=True):
        args = shlex.split(command)
        assert args[2] == str(SAMPLES / name / file)
        shown = [f["number"] for f in tshark_frames(Path(args[2]), args[4])]
        assert shown == [n for f, n, *_ in expected if f == file]
    (fe,) = flow_evidence(result)
    assert f"  Wireshark filter for the flow: {fe.display_filter()}" in lines
    obs = result.tables.observations
    for card in ("eth1", "eth2"):
        path = SAMPLES / name / f"{card}.pcap"
        in_file = obs[(obs["flow_id"] == fe.flow_id) & (obs["source"] == str(path))]
        frames = tshark_frames(path, fe.display_filter())
        assert sorted(f["number"] for f in frames) == sorted(in_file["record"].tolist()), card


@needs_tshark
def test_evidence_seen_only_in_a_log_is_named_by_line_and_left_out(tmp_path):
    out = tmp_path / "evidence.pcapng"
    res = run("analyze", TCP / "kern.dmesg", "--ip", TCP / "ip", "--evidence", out)
    assert res.exit_code == 1, res.output
    named = re.findall(rf"{re.escape(str(TCP / 'kern.dmesg'))}:(\d+) ", res.stdout)
    assert named == [
        "85",
        "86",
        "88",
        "89",
        "91",
        "92",
    ]
    assert "tshark -r" not in res.stdout and "Wireshark filter" not in res.stdout
    assert "0 evidence packets on 0 interfaces; 6 packets seen only in a kernel log left out" in (
        res.stderr
    )
    assert tshark_frames(out) == []


def test_evidence_file_is_whole_or_untouched(tmp_path, monkeypatch):
    """Refused before any input is read when it cannot be written; a failure while reading the
    packets back leaves the earlier file and no temporary one."""
    missing = tmp_path / "nowhere" / "e.pcapng"
    res = run("analyze", TCP, "--evidence", missing)
    assert res.exit_code == 2 and res.output.startswith("nicpath: error: ")
    assert "no such directory" in res.output and "--evidence" in res.output
    out = tmp_path / "e.pcapng"
    out.write_bytes(b"earlier")

    def gone(path, records):
        raise evidence.InputError(path, "packet 6 is not in the file any more")

    monkeypatch.setattr(evidence, "read_records", gone)
    res = run("analyze", TCP, "--evidence", out)
    assert res.exit_code == 2 and "packet 6 is not in the file any more" in res.output
    assert out.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pcapng"]


def test_each_packet_once_per_flow_in_the_best_file():
    """The findings of a flow share packets: each is listed once, in the per-card capture,
    with the other files that hold it kept for --verbose."""
    (fe,) = flow_evidence(analyze([str(TCP)]))
    _flow, expected = EXPECTED["egress_switch_tcp"]
    assert [(Path(p.shown.source).name, p.shown.record, p.card, p.proves) for p in fe.packets] == [
        tuple(e) for e in expected
    ]
    second = fe.packets[1]
    assert [w.text() for w in second.elsewhere] == [
        f"{TCP / 'all.pcapng'}#70",
        f"{TCP / 'any.pcap'}#73",
        f"{TCP / 'kern.dmesg'}:86",
    ]


def test_evidence_lists_a_packet_at_one_time_in_the_order_it_crossed_card_and_hooks():
    """A LOG line paired with its packet takes the packet's time: at that time a packet coming
    in shows its card before its hooks, one going out its hooks before its card, whatever order
    the inputs were merged in."""
    import types

    import pandas as pd

    from analyzer.detectors.base import Context

    t = 1_764_000_000_000_000_000
    obs = pd.DataFrame(
        {
            "source": ["kern.log", "eth1.pcap", "kern.log", "eth2.pcap", "eth1.pcap"],
            "record": [7, 3, 8, 4, 5],
            "ts": [t, t, t + 9, t + 9, t + 20],
            "point": ["filter/INPUT", "eth1", "eth2", "filter/OUTPUT", "eth1"],
            "hook": ["filter/INPUT", None, None, "filter/OUTPUT", None],
            "direction": ["in", "in", "out", "out", "in"],
            "packet_id": [1, 1, 2, 2, 3],
        }
    )
    obs.loc[2, "source"], obs.loc[3, "source"] = "eth2.pcap", "kern.log"
    context = types.SimpleNamespace(tables=types.SimpleNamespace(observations=obs))
    shown = [(e["packet"], e["point"]) for e in Context.evidence(context, [1, 2, 3])]
    assert shown == [
        (1, "eth1"),
        (1, "filter/INPUT"),
        (2, "filter/OUTPUT"),
        (2, "eth2"),
        (3, "eth1"),
    ]
