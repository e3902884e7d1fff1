"""Kernel LOG lines: every field the kernel writes, every rendering, every skip counted."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
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


# --- issue 25: forged prefixes, router lines, extreme times, streaming ---------------------

REAL = (
    "IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=7 DF "
    "PROTO=TCP SPT=40000 DPT=80 WINDOW=512 RES=0x00 ACK URGP=0 "
)


@pytest.mark.parametrize(
    "prefix",
    [
        "IN=evil0 OUT=evil1 ",
        "IN=evil0 OUT=evil1 SRC=6.6.6.6 DST=7.7.7.7 LEN=1 ",
        "x IN=evil0 OUT= MAC=00:00 SRC=6.6.6.6 [FILTER-OUTPUT] ",
        "IN=",  # glued to the kernel's IN=: "IN=IN= OUT=eth1 ..."
        "IN=a OUT=",  # glued: "IN=a OUT=IN= OUT=eth1 ..."
        "[a] IN=eth9 OUT=eth8 PHYSIN=x ",
        "OUT=evil1 IN=evil0 ",
    ],
)
def test_a_prefix_cannot_supply_the_interfaces_of_its_line(prefix):
    """The kernel writes `<prefix>IN=`: the fields are those after the last IN= OUT= pair
    followed by what the kernel writes next, so a prefix holding such a pair is only prefix."""
    (r,), report = parse(f"[ 1.000000] {prefix}{REAL}")
    assert (r["in_iface"], r["out_iface"], r["iface"]) == ("", "eth1", "eth1")
    assert addr_text(r["src"]) == "10.0.0.1" and r["ip_id"] == 7
    assert r["log_prefix"] == prefix and report.used == 1


def test_log_fields_take_the_last_pair_the_kernel_field_order_allows():
    assert kernlog.log_fields("IN=a OUT=b foo IN=c OUT=d SRC=1.2.3.4 DST=1.2.3.5") == (
        "IN=a OUT=b foo ",
        "c",
        "d",
        "SRC=1.2.3.4 DST=1.2.3.5",
    )
    # nothing after the pair that the kernel writes: not a LOG line
    assert kernlog.log_fields("IN=a OUT=b hello") is None
    # bridged packets: PHYSIN= holds IN= but no pair
    got = kernlog.log_fields("p IN=br0 OUT= PHYSIN=veth1 MAC=ff:ff SRC=1.1.1.1 DST=1.1.1.2")
    assert got[:3] == ("p ", "br0", "")


@pytest.mark.parametrize(
    "line,tag",
    [
        (f"Jun 28 04:35:30 router [RULE-1] {REAL}", None),
        (f"Jun 28 04:35:30 router ulogd[812]: [RULE-1] {REAL}", "ulogd"),
        (f"2026-06-28T04:35:30.250000+0000 router [RULE-1] {REAL}", None),
        (f"Jun 28 04:35:30 ubnt kernel: [WAN_LOCAL-default-D]{REAL}", "kernel"),
    ],
)
def test_router_lines_under_another_tag_or_none_are_read_with_their_date(line, tag):
    (r,), report = parse(line, year=2026)
    assert r["ts"].year == 2026 and (r["ts"].month, r["ts"].day) == (6, 28)
    assert report.detail["renderings"] in ({"syslog": 1}, {"journal": 1})
    assert (r["out_iface"], addr_text(r["dst"])) == ("eth1", "10.0.0.2")
    if tag == "ulogd":
        assert report.detail["other_tags"] == {"ulogd": 1}
        assert any("other tags than kernel (ulogd 1)" in w for w in report.warnings)
    else:
        assert "other_tags" not in report.detail


@pytest.mark.parametrize(
    "body,expect",
    [
        (
            "IN= OUT=eth2 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=29731 DF "
            "PROTO=ICMP TYPE=0 CODE=0 ID=4660 SEQ=3 UID=0 GID=0 MARK=0x1 ",
            (29731, 0, 4660, 3, 1),
        ),
        (
            "IN=eth1 OUT= MAC=02:00:00:00:00:02:02:00:00:00:00:01:86:dd "
            "SRC=fd00:0070:0000:0000:0000:0000:0000:0015 "
            "DST=fd00:0070:0000:0000:0000:0000:0000:0016 "
            "LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=ICMPv6 TYPE=128 CODE=0 ID=55 SEQ=9 ",
            (None, 128, 55, 9, None),
        ),
    ],
)
def test_icmp_echo_lines_with_their_second_id_are_read(body, expect):
    (r,), report = parse(f"[ 2.0] [FILTER-OUTPUT icmp] {body}")
    assert (r["ip_id"], r["icmp_type"], r["icmp_id"], r["icmp_seq"], r["mark"]) == expect
    assert report.used == 1 and not report.skipped


def test_a_quoted_packet_is_read_one_level_deep_whatever_the_nesting():
    from tests.test_hostile_inputs import deep_icmp_line

    (r,), _ = parse(deep_icmp_line(2000))
    assert (r["icmp_type"], r["inner_proto"], addr_text(r["inner_src"])) == (3, 1, "10.0.0.2")
    assert r["inner_sport"] is None


@pytest.mark.parametrize(
    "stamp,reason",
    [
        ("1500-01-01T00:00:00.000000+0000 host kernel: ", "time outside 1677-2262"),
        ("2263-01-01T00:00:00.000000+0000 host kernel: ", "time outside 1677-2262"),
        ("9999-12-31T23:59:59.999999+0000 host kernel: ", "time outside 1677-2262"),
        ("[Wed Jan  1 00:00:00 3000] ", "time outside 1677-2262"),
        ("[99999999999999.000000] ", "time outside 1677-2262"),
        ("2026-13-01T00:00:00.000000+0000 host kernel: ", "time stamp is no valid date"),
        ("[Mon Feb 30 00:00:00 2026] ", "time stamp is no valid date"),
        ("Foo 30 00:00:00 host kernel: ", "time stamp is no valid date"),
    ],
)
def test_a_log_line_out_of_the_nanosecond_range_is_skipped_with_its_reason(stamp, reason):
    rows, report = parse(f"{stamp}{SEED_OUT}", f"[ 1.0] {SEED_OUT}", year=2026)
    assert [r["record"] for r in rows] == [2]
    assert report.skipped == {reason: 1}


@pytest.mark.parametrize("boot", [float("nan"), float("inf"), 1e300, -1e12])
def test_a_boot_time_no_clock_holds_is_ignored_with_a_warning(boot):
    (r,), report = parse(f"[ 8716.650862] {SEED_OUT}", boot_time=boot)
    assert r["ts"].value == 8716_650862000 and r["ts_basis"] == "boot"
    assert any("is no time between 1677 and 2262" in w for w in report.warnings)


def test_iter_read_streams_the_rows_read_gives(tmp_path):
    """Chunks of at most `chunk_lines` lines, the report filled as they come, and together
    the same rows and counts as `read` (plain and gzip, CRLF line ends)."""
    lines = []
    for k in range(1000):
        lines.append(f"Nov 24 21:50:{k % 60:02d} host kernel: {SEED_OUT}")
        if k % 7 == 0:
            lines.append("Nov 24 21:50:00 host kernel: eth1: link up")
    text = "\r\n".join(lines) + "\r\n"
    plain = tmp_path / "kern.log"
    plain.write_text(text)
    packed = tmp_path / "kern.log.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    whole, whole_report = kernlog.read(plain, year=2026)
    assert whole.num_rows == 1000 and whole_report.records == len(lines)
    for path in (plain, packed):
        report = kernlog.SourceReport(path=str(path), format="kernlog")
        seen = []
        for chunk in kernlog.iter_read(path, report, year=2026, chunk_lines=100):
            seen.append((chunk.num_rows, report.records))
            assert chunk.num_rows <= 100
        assert seen[0][1] == 100 and len(seen) == -(-len(lines) // 100)
        assert report.used == 1000 and report.records == whole_report.records
        assert report.skipped == whole_report.skipped
    chunks = list(
        kernlog.iter_read(plain, kernlog.SourceReport("x", "kernlog"), chunk_lines=64, year=2026)
    )
    assert kernlog.concat(chunks).drop_columns(["source"]).equals(whole.drop_columns(["source"]))
    # Blocks parsed ahead in a thread give the rows of blocks parsed one after the other.
    one_by_one, _ = kernlog.parse_lines(lines, source=str(plain), year=2026)
    assert one_by_one.drop_columns(["source"]).equals(whole.drop_columns(["source"]))
    exact = tmp_path / "exact.log"
    exact.write_text("\n".join(lines[:200]) + "\n")
    report = kernlog.SourceReport(path=str(exact), format="kernlog")
    assert len(list(kernlog.iter_read(exact, report, year=2026, chunk_lines=100))) == 2
    assert report.records == 200


def test_a_cut_gzip_log_is_read_to_where_its_data_ends(tmp_path):
    text = "".join(f"[ {k}.000000] {SEED_OUT}\n" for k in range(3000))
    whole = gzip.compress(text.encode())
    path = tmp_path / "kern.dmesg.gz"
    path.write_bytes(whole[: len(whole) // 2])
    table, report = kernlog.read(path)
    assert 0 < table.num_rows < 3000
    assert any("gzip stream is cut short" in w for w in report.warnings)
    assert report.records == report.used + sum(report.skipped.values())


def test_corrupt_gzip_log_is_an_input_error_naming_the_file(tmp_path):
    path = tmp_path / "kern.log.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00\xff" * 100)
    with pytest.raises(InputError, match=r"kern\.log\.gz: corrupt gzip data"):
        kernlog.read(path)


def test_a_line_longer_than_64k_is_cut_and_the_next_lines_keep_their_numbers(tmp_path):
    path = tmp_path / "kern.dmesg"
    path.write_text("[ 1.0] " + "x" * 300_000 + "\n" + f"[ 2.0] {SEED_OUT}\n")
    table, report = kernlog.read(path)
    assert table.column("record").to_pylist() == [2]
    assert report.records == 2 and report.detail["long_lines"] == 1


def test_martian_lines_with_times_that_are_no_date_keep_no_time(tmp_path):
    from analyzer.sources import martians

    martian = "IPv4: martian source 10.0.0.1 from 10.0.0.9, on dev eth1"
    lines = [
        f"2026-13-45T00:00:00+0000 host kernel: {martian}",
        f"[Mon Feb 30 00:00:00 2026] {martian}",
        f"[99999999999999.000000] {martian}",
        f"[ 5.000000] {martian}",
    ]
    got = martians.parse_lines(lines, source="x", boot_time=1e300)
    assert [m.ts for m in got] == [None, None, None, None]
    got = martians.parse_lines(lines, source="x", boot_time=1000.0)
    assert [m.ts for m in got] == [None, None, None, 1005 * 10**9]


# --- the block reader (logfast) against the line-by-line reader ----------------------------

SAMPLE_LOGS = sorted(
    str(p) for p in (Path(__file__).parent.parent / "samples").glob("*/kern.*") if p.is_file()
)
ODD_BODIES = [
    SEED_OUT,
    SEED_IN,
    SEED_OUT.replace("ACK PSH", "SYN") + "UID=0 GID=0 MARK=0x2a ",
    SEED_OUT.replace("TTL=64", "TTL=300"),
    SEED_OUT.replace("SPT=42244", "SPT=70000"),
    SEED_OUT.replace("DF ", "DF MF "),
    SEED_OUT.replace("ID=5783 DF", "ID=5783 DF FRAG:12"),
    SEED_OUT.replace("DF ", "DF OPT (0101080A) "),
    SEED_IN.replace("MAC=e6:44", "PHYSIN=veth0 MAC=e6:44"),
    SEED_OUT.replace("172.16.70.15", "300.1.1.1"),
    "[FILTER-OUTPUT u] IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=33 TOS=0x00 PREC=0x00 TTL=64 "
    "ID=9 PROTO=UDP SPT=5353 DPT=53 LEN=13 ",
    "[FILTER-OUTPUT u] IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=33 TOS=0x00 PREC=0x00 TTL=64 "
    "ID=9 PROTO=UDPLITE SPT=5353 DPT=53 LEN=13 ",
    "[FILTER-OUTPUT i] IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 "
    "ID=1 DF PROTO=ICMP TYPE=8 CODE=0 ID=77 SEQ=3 ",
    "[FILTER-INPUT i] IN=eth1 OUT= SRC=10.0.0.9 DST=10.0.0.1 LEN=112 TOS=0x00 PREC=0xC0 TTL=64 "
    "ID=5 PROTO=ICMP TYPE=3 CODE=3 [SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 "
    "ID=1 DF PROTO=UDP SPT=1 DPT=2 LEN=64 ] ",
    "[FILTER-OUTPUT 6] IN= OUT=eth1 SRC=fd00:0000:0000:0000:0000:0000:0000:0001 "
    "DST=fd00:0000:0000:0000:0000:0000:0000:0002 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=12345 "
    "PROTO=TCP SPT=1 DPT=2 SEQ=1 ACK=0 WINDOW=64800 RES=0x00 SYN URGP=0 ",
    "[FILTER-OUTPUT 6] IN= OUT=eth1 SRC=fd00:0000:0000:0000:0000:0000:0000:0001 "
    "DST=fd00:0000:0000:0000:0000:0000:0000:0002 LEN=64 TC=0 HOPLIMIT=64 FLOWLBL=0 "
    "PROTO=ICMPv6 TYPE=128 CODE=0 ID=5 SEQ=1 ",
    "[FILTER-OUTPUT 6] IN= OUT=eth1 SRC=fd00:0000:0000:0000:0000:0000:0000:0001 "
    "DST=fd00:0000:0000:0000:0000:0000:0000:0002 LEN=64 TC=0 HOPLIMIT=64 FLOWLBL=0 "
    "PROTO=ICMPv6 TYPE=135 CODE=0 ",
    "x=y IN= OUT=eth1 " + SEED_OUT.split("OUT=enp0s3 ", 1)[1],
    "IN=IN= OUT=eth1 " + SEED_OUT.split("OUT=enp0s3 ", 1)[1],
]
STAMPS = [
    "[ 8716.650862] ",
    "[99999999999999.000000] ",
    "Nov 24 21:50:01 host kernel: ",
    "Nov 24 21:50:01 host ulogd[3]: ",
    "Nov 24 21:50:01 host ",
    "Feb 30 21:50:01 host kernel: ",
    "2026-11-24T21:50:01.123456+0100 host kernel: ",
    "2026-11-24 21:50:01 host kernel: ",
    "2026-02-29T21:50:01Z host kernel: ",
    "2263-01-01T00:00:00.000000+0000 host kernel: ",
    "[Tue Nov 24 21:50:01 2026] ",
    "[Mon Feb 30 00:00:00 2026] ",
    "Nov 24 21:50:01 host kernel: [ 8716.650862] ",
]


def _both_readers(lines, monkeypatch, **kw):
    """Rows and report of the block reader, and of the line-by-line reader alone."""
    fast, fast_report = kernlog.parse_lines(lines, source="t.log", **kw)
    with monkeypatch.context() as m:
        m.setattr(kernlog.logfast, "parse", lambda *_: kernlog.logfast._empty())
        slow, slow_report = kernlog.parse_lines(lines, source="t.log", **kw)
    return (fast.to_pylist(), fast_report), (slow.to_pylist(), slow_report)


def _same_reports(a, b):
    assert (a.records, a.used, a.skipped, a.warnings) == (b.records, b.used, b.skipped, b.warnings)
    assert a.detail == b.detail and (a.first_ns, a.last_ns) == (b.first_ns, b.last_ns)


@pytest.mark.parametrize("path", SAMPLE_LOGS, ids=lambda p: "/".join(Path(p).parts[-2:]))
def test_the_block_reader_gives_every_sample_line_the_row_of_the_line_reader(path, monkeypatch):
    lines = Path(path).read_text().splitlines()
    (fast, fr), (slow, sr) = _both_readers(lines, monkeypatch, boot_time=1e9, year=2026)
    assert fast == slow
    _same_reports(fr, sr)
    taken = kernlog.logfast.parse(pa.array(lines), 2026).rows
    assert len(taken) >= 0.5 * len(slow) > 0  # the block reader did read most (not PHYSIN=)


def test_odd_lines_and_every_cut_of_them_read_the_same_by_both_readers(monkeypatch):
    lines = [stamp + body for stamp in STAMPS for body in ODD_BODIES]
    lines += [line[:k] for line in lines[:: len(ODD_BODIES) + 1] for k in range(len(line))]
    for boot in (None, 1e9, 9.2e9):
        (fast, fr), (slow, sr) = _both_readers(lines, monkeypatch, boot_time=boot, year=2026)
        assert fast == slow
        _same_reports(fr, sr)
