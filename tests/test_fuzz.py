"""Every parser, fed random bytes or real inputs with bytes flipped, cut or repeated, ends with
rows or the documented InputError: never another exception or a hang."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.errors import InputError
from analyzer.sources import kernlog, pcap, pcapng, sniff
from analyzer.sources.ipsnap import read_snapshot

ROOT = Path(__file__).resolve().parent.parent / "samples" / "reply_wrong_source"
ROUTE_GET = ROOT.parent / "route_get"
SEEDS = {
    "pcap": (ROOT / "eth1.pcap").read_bytes()[:3000],
    "any": (ROOT / "any.pcap").read_bytes()[:3000],
    "pcapng": (ROOT / "all.pcapng").read_bytes()[:3000],
    "log": (ROOT / "kern.journal").read_bytes()[:4000],
    "rule": (ROOT / "ip" / "before" / "rule.txt").read_bytes(),
    "addr": (ROOT / "ip" / "before" / "addr.json").read_bytes(),
    # multipath nexthop lines, route types, flags; sysctls
    "route": (ROUTE_GET / "tables4" / "snapshot" / "route.txt").read_bytes()[:3000],
    "sysctl": (ROUTE_GET / "router4" / "snapshot" / "sysctl.txt").read_bytes()[:2000],
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mangled(draw, seed: bytes):
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "repeat", "insert"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "repeat":
            data[i:i] = data[i : i + draw(st.integers(1, 64))]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def read_any(path: Path) -> None:
    try:
        fmt = sniff(path)
        if fmt == "pcap":
            pcap.read(path)
        elif fmt == "pcapng":
            pcapng.read(path)
        elif fmt == "kernlog":
            kernlog.read(path)
    except InputError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=512), *[mangled(SEEDS[k]) for k in ("pcap", "any", "pcapng")]))
def test_captures(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "eth1.pcap"
    path.write_bytes(data)
    read_any(path)
    for reader in (pcap.read, pcapng.read):
        with contextlib.suppress(InputError):
            reader(path)


@FUZZ
@given(st.one_of(st.text(max_size=400).map(str.encode), mangled(SEEDS["log"])))
def test_kernel_logs(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "kern.log"
    path.write_bytes(data)
    try:
        table, report = kernlog.read(path)
    except InputError:
        return
    assert report.records == report.used + sum(report.skipped.values())
    assert table.num_rows == report.used


@FUZZ
@given(st.sampled_from(["pcap", "pcapng", "log"]), st.data())
def test_gzip_inputs(tmp_path_factory, seed, data):
    """Gzip streams flipped, cut or repeated: read as far as their data goes, or an
    InputError (corrupt data), never zlib.error or EOFError."""
    packed = gzip.compress(SEEDS[seed])
    path = tmp_path_factory.mktemp("fuzz") / f"x.{seed}.gz"
    path.write_bytes(data.draw(mangled(packed)))
    read_any(path)
    with contextlib.suppress(InputError):
        report = kernlog.SourceReport(path=str(path), format="kernlog")
        rows = sum(chunk.num_rows for chunk in kernlog.iter_read(path, report, chunk_lines=7))
        assert rows == report.used
        assert report.records == report.used + sum(report.skipped.values())


@FUZZ
@given(mangled(SEEDS["rule"]), mangled(SEEDS["addr"]))
def test_ip_snapshots(tmp_path_factory, rule, addr):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "rule.txt").write_bytes(rule)
    (d / "addr.json").write_bytes(addr)
    with contextlib.suppress(InputError):
        read_snapshot(d)


@FUZZ
@given(st.sampled_from(["route", "sysctl"]), st.data())
def test_routes_and_sysctls(tmp_path_factory, part, data):
    d = tmp_path_factory.mktemp("fuzz")
    (d / f"{part}.txt").write_bytes(data.draw(mangled(SEEDS[part])))
    with contextlib.suppress(InputError):
        read_snapshot(d)
