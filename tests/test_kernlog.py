"""Kernel LOG lines: every field the kernel writes, every rendering, every skip counted."""

from __future__ import annotations

import gzip

import pytest

from analyzer.errors import InputError
from analyzer.schema import addr_text
from analyzer.sources import kernlog

SEED_OUT = (
    "[FILTER-OUTPUT tcp] IN= OUT=enp0s3 SRC=172.16.70.16 DST=172.16.70.15 LEN=60 TOS=0x00 "
    "PREC=0x00 TTL=64 ID=5783 DF PROTO=TCP SPT=42244 DPT=5000 WINDOW=502 RES=0x00 ACK PSH URGP=0 "
)
SEED_IN = (
    "[FILTER-INPUT tcp] IN=enp0s4 OUT= MAC=e6:44:8a:36:fe:32:2e:6e:87:69:af:cb:08:00 "
    "SRC=172.16.70.15 DST=172.16.70.16 LEN=61 TOS=0x00 PREC=0x00 TTL=64 ID=55474 DF PROTO=TCP "
    "SPT=5000 DPT=42244 WINDOW=64 RES=0x00 ACK PSH URGP=0 "
)


def parse(*lines, **kw):
    table, report = kernlog.parse_lines(list(lines), source="test.log", **kw)
    return table.to_pylist(), report


def test_seed_lines_in_every_rendering_give_the_same_packet():
    renderings = [
        f"[ 8716.650862] {SEED_OUT}",
        f"Nov 24 21:50:01 host kernel: {SEED_OUT}",
        f"2026-11-24T21:50:01.123456+0000 host kernel: {SEED_OUT}",
        f"[Tue Nov 24 21:50:01 2026] {SEED_OUT}",
        f"Nov 24 21:50:01 host kernel: [ 8716.650862] {SEED_OUT}",
    ]
    rows, report = parse(*renderings, year=2026)
    assert report.used == 5 and report.detail["renderings"] == {
        "dmesg": 1,
        "syslog": 2,
        "journal": 1,
        "dmesg-T": 1,
    }
    fields = ("src", "dst", "proto", "sport", "dport", "ip_id", "ip_len", "tcp_flags", "iface")
    assert len({tuple(r[f] for f in fields) for r in rows}) == 1
    r = rows[0]
    assert (r["hook"], r["direction"], r["iface"], r["out_iface"], r["in_iface"]) == (
        "filter/OUTPUT",
        "out",
        "enp0s3",
        "enp0s3",
        "",
    )
    assert addr_text(r["src"]) == "172.16.70.16" and r["ip_id"] == 5783
    assert r["tcp_flags"] == 0x18 and r["tcp_window"] == 502 and r["dont_fragment"] is True
    assert r["uptime_ns"] == 8716_650862000 and r["ts_basis"] == "boot"
    assert rows[2]["ts"].value == 1795557001_123456000  # 2026-11-24T21:50:01.123456Z
    assert rows[1]["ts"].value == 1795557001_000000000


def test_input_line_mac_and_direction():
    (r,), _ = parse(f"[ 1.000000] {SEED_IN}")
    assert (r["hook"], r["direction"], r["iface"]) == ("filter/INPUT", "in", "enp0s4")
    assert r["eth_dst"].hex() == "e6448a36fe32" and r["eth_src"].hex() == "2e6e8769afcb"
    assert r["ethertype"] == 0x0800


def test_udp_second_len_is_not_the_ip_length():
    line = (
        "[FILTER-OUTPUT udp] IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=37 TOS=0x00 PREC=0x00 "
        "TTL=64 ID=4 DF PROTO=UDP SPT=41000 DPT=5300 LEN=17 "
    )
    (r,), _ = parse(f"[ 2.000000] {line}")
    assert (r["ip_len"], r["proto"], r["sport"], r["dport"]) == (37, 17, 41000, 5300)


def test_icmp_echo_second_id_and_seq():
    line = (
        "[FILTER-OUTPUT icmp] IN= OUT=eth2 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x00 PREC=0x00 "
        "TTL=64 ID=777 DF PROTO=ICMP TYPE=8 CODE=0 ID=4660 SEQ=3 "
    )
    (r,), _ = parse(f"[ 2.000000] {line}")
    assert (r["ip_id"], r["icmp_type"], r["icmp_id"], r["icmp_seq"]) == (777, 8, 4660, 3)
    assert r["tcp_seq"] is None


def test_icmp_error_quotes_the_flow():
    line = (
        "[FILTER-OUTPUT icmp] IN= OUT=eth1 SRC=172.16.70.14 DST=172.16.70.15 LEN=65 TOS=0x00 "
        "PREC=0xC0 TTL=64 ID=16524 PROTO=ICMP TYPE=3 CODE=3 [SRC=172.16.70.15 DST=172.16.70.14 "
        "LEN=37 TOS=0x00 PREC=0x00 TTL=64 ID=9 DF PROTO=UDP SPT=5300 DPT=45018 LEN=17 ] "
    )
    (r,), _ = parse(f"[ 3.000000] {line}")
    assert (r["icmp_type"], r["icmp_code"], r["ip_len"], r["ip_id"]) == (3, 3, 65, 16524)
    assert (
        addr_text(r["inner_src"]) == "172.16.70.15" and addr_text(r["inner_dst"]) == "172.16.70.14"
    )
    assert (r["inner_proto"], r["inner_sport"], r["inner_dport"]) == (17, 5300, 45018)
    assert r["sport"] is None


def test_ipv6_with_tcp_sequence_numbers():
    line = (
        "[FILTER-OUTPUT tcp] IN= OUT=eth1 SRC=fd00:0070:0000:0000:0000:0000:0000:0016 "
        "DST=fd00:0070:0000:0000:0000:0000:0000:0015 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=787301 "
        "PROTO=TCP SPT=40690 DPT=5000 SEQ=1234567 ACK=7654321 WINDOW=507 RES=0x00 ACK PSH URGP=0 "
    )
    (r,), _ = parse(f"[ 4.000000] {line}")
    assert (r["ip_version"], addr_text(r["src"]), r["flow_label"], r["ttl"]) == (
        6,
        "fd00:70::16",
        787301,
        64,
    )
    assert (r["tcp_seq"], r["tcp_ack"], r["ip_id"]) == (1234567, 7654321, None)


def test_fragments_mark_uid_gid_physin():
    line = (
        "[FILTER-INPUT udp] IN=br0 OUT= PHYSIN=veth1 MAC=ff:ff:ff:ff:ff:ff:02:00:00:00:00:01:08:00 "
        "SRC=10.0.0.1 DST=10.0.0.2 LEN=1500 TOS=0x00 PREC=0x00 TTL=64 ID=99 MF FRAG:185 "
        "PROTO=UDP UID=1000 GID=1000 MARK=0x2a "
    )
    (r,), _ = parse(f"[ 5.000000] {line}")
    assert (r["more_fragments"], r["frag_offset"], r["ip_id"]) == (True, 185, 99)
    assert (r["uid"], r["gid"], r["mark"], r["phys_in"]) == (1000, 1000, 42, "veth1")


def test_macsrc_form_nft_prefix_and_hook_mapping():
    nft = (
        "out-all IN= OUT=eth1 MACSRC=02:00:00:00:00:01 MACDST=02:00:00:00:00:02 MACPROTO=0800 "
        "SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2 "
        "WINDOW=1 RES=0x00 SYN URGP=0 "
    )
    nat = (
        "nat-POSTROUTING: IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 "
        "TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2 WINDOW=1 RES=0x00 SYN URGP=0 "
    )
    rows, report = parse(f"[ 6.0] {nft}", f"[ 6.1] {nat}")
    assert rows[0]["hook"] == "unknown" and rows[0]["direction"] == "out"
    assert rows[0]["eth_src"].hex() == "020000000001" and rows[0]["ethertype"] == 0x0800
    assert rows[1]["hook"] == "nat/POSTROUTING"
    assert report.detail["unknown_prefixes"] == {"out-all ": 1}
    rows, _ = parse(f"[ 6.0] {nft}", hook_prefixes={"out-all": "filter/OUTPUT"})
    assert rows[0]["hook"] == "filter/OUTPUT"


def test_hook_words_must_be_whole_words():
    line = SEED_OUT.replace("[FILTER-OUTPUT tcp] ", "IN-DROP ")
    (r,), _ = parse(f"[ 1.0] {line}")
    assert r["hook"] == "unknown"


def test_mixed_file_counts_every_line(tmp_path):
    lines = [
        "Nov 24 21:50:00 host sshd[812]: Accepted publickey for root",
        "Nov 24 21:50:00 host kernel: br0: port 1(veth0) entered forwarding state",
        "",
        f"Nov 24 21:50:01 host kernel: {SEED_OUT}",
        "Nov 24 21:50:02 host kernel: [FILTER-OUTPUT tcp] IN= OUT=eth1 SRC=nonsense DST=1.2.3.4 "
        "LEN=x PROTO=TCP",
        f"Nov 24 21:50:03 host kernel: {SEED_IN}",
    ]
    path = tmp_path / "syslog.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    table, report = kernlog.read(path, year=2026)
    assert report.records == 6 and report.used == 2
    assert report.skipped == {"not a LOG line": 2, "empty line": 1, "unparsable LOG line": 1}
    assert report.detail["unparsable_lines"] == [5]
    assert report.records == report.used + sum(report.skipped.values())
    assert table.column("record").to_pylist() == [4, 6]


@pytest.mark.parametrize("field", ["TTL=5300", "SPT=70000", "TOS=0x1ff", "DPT=-1"])
def test_out_of_range_field_is_skipped_not_cast(field):
    key = field.split("=")[0]
    line = SEED_OUT.replace(f"{key}=64" if key == "TTL" else f"{key}=", f"{field} X=", 1)
    rows, report = parse(f"[ 1.0] {SEED_OUT}", f"[ 2.0] {line}")
    assert len(rows) == 1 and rows[0]["record"] == 1
    assert report.skipped == {"unparsable LOG line": 1}
    assert report.detail["unparsable_lines"] == [2]


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "kern.log"
    path.write_text("")
    with pytest.raises(InputError, match="empty file"):
        kernlog.read(path)


@pytest.mark.parametrize("name", ["kern.dmesg", "kern.syslog", "kern.journal"])
def test_every_recorded_log_parses(name):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "samples"
    for path in root.glob(f"*/{name}"):
        _, report = kernlog.read(path, year=2026)
        assert "unparsable LOG line" not in report.skipped, path
        assert report.used > 0 and not report.detail.get("unknown_prefixes"), path


def test_source_quoting_the_log_format_is_not_a_kernel_log(tmp_path):
    """A script or doc that quotes a LOG line pattern is not sniffed as a log; a bare LOG line
    with real addresses is."""
    quoted = tmp_path / "check.py"
    quoted.write_text(
        'm = re.match(r"^\\[FILTER-OUTPUT \\w+\\] IN=(\\S*) OUT=(\\S*) SRC=(\\S+) DST=(\\S+) ")\n'
    )
    assert not kernlog.looks_like_kernlog(quoted.read_bytes())
    assert kernlog.looks_like_kernlog(SEED_OUT.encode())
