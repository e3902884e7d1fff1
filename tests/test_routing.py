"""The route replay answers what the real kernel answered to `ip route get`.

samples/route_get/<setup>/ holds a host's snapshots and a few hundred `ip -j route get` queries
with the kernel's answers, recorded by samples/lab/route_get.sh (policy routing, many tables and
route types, a forwarding host with rp_filter, IPv6). The replay must agree on every one: type,
card, gateway, printed source, table, or the error. Then corner cases on small hand-made tables.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from analyzer.errors import QueryError
from analyzer.kernel.answer import ERRORS, Query
from analyzer.kernel.fib import Fib
from analyzer.kernel.lookup import route_get
from analyzer.kernel.moments import route_at, snapshot_at
from analyzer.sources import ipsnap

ROOT = Path(__file__).resolve().parent.parent
SETUPS = sorted(p.parent for p in (ROOT / "samples" / "route_get").glob("*/queries.jsonl"))
ERRNO = {text: name for name, text in ERRORS.items()}


def recorded(setup: Path) -> list[dict]:
    return [json.loads(line) for line in (setup / "queries.jsonl").read_text().splitlines()]


def query_of(line: dict) -> Query:
    q = line["query"]
    return Query.parse(
        q["to"],
        q.get("from"),
        iif=q.get("iif"),
        oif=q.get("oif"),
        mark=q.get("mark"),
        proto=q.get("ipproto"),
        sport=q.get("sport"),
        dport=q.get("dport"),
        tos=q.get("tos"),
        uid=q.get("uid"),
    )


def kernel_answer(line: dict) -> dict:
    """What ip printed; it omits the table when it is main (or none)."""
    a = line.get("answer")
    if a is None:
        return {"error": ERRNO[line["error"]]}
    return {
        "type": a.get("type", "unicast"),
        "dev": a.get("dev"),
        "gateway": a.get("gateway"),
        "prefsrc": a.get("prefsrc"),
        "table": a.get("table"),
    }


def replay_answer(ans, kernel: dict) -> dict:
    if ans.error:
        return {"error": ans.error}
    dev, gateway, prefsrc = ans.dev, ans.gateway, ans.prefsrc
    if ans.multipath:
        # The kernel hashed the flow onto one nexthop with a per-boot key: it must be one of
        # the paths the replay lists, with that path's source.
        chosen = [p for p in ans.paths if (p.dev, p.gateway) == (kernel["dev"], kernel["gateway"])]
        assert chosen, (ans.paths, kernel)
        dev, gateway, prefsrc = chosen[0].dev, chosen[0].gateway, chosen[0].prefsrc
    table = None if ans.table in (None, "main") else ans.table
    return {"type": ans.type, "dev": dev, "gateway": gateway, "prefsrc": prefsrc, "table": table}


def disagreements(snapshot, lines: list[dict]) -> list[str]:
    fib = Fib(snapshot)
    out = []
    for line in lines:
        kernel = kernel_answer(line)
        ans = route_get(fib, query_of(line))
        mine = replay_answer(ans, kernel)
        if mine != kernel:
            out.append(f"{' '.join(line['argv'])}\n  kernel {kernel}\n  replay {mine} {ans.notes}")
    return out


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_replay_agrees_with_every_recorded_ip_route_get(setup):
    lines = recorded(setup)
    snapshot = ipsnap.read_snapshots(setup / "snapshot").snapshots[0]
    bad = disagreements(snapshot, lines)
    assert not bad, f"{len(bad)} of {len(lines)} disagree:\n" + "\n".join(bad[:20])


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_text_snapshots_give_the_same_answers(setup, tmp_path):
    """The plain `ip` forms carry everything the lookup needs, as the JSON forms do."""
    text_only = tmp_path / "snapshot"
    text_only.mkdir()
    for f in (setup / "snapshot").iterdir():
        if f.suffix != ".json":
            shutil.copy(f, text_only / f.name)
    lines = recorded(setup)
    bad = disagreements(ipsnap.read_snapshots(text_only).snapshots[0], lines)
    assert not bad, f"{len(bad)} of {len(lines)} disagree:\n" + "\n".join(bad[:20])


def test_the_recordings_cover_what_the_replay_claims():
    """A few hundred queries, every error kind, every route type, input and output lookups,
    marks, protocols and ports, multipath, and both IP versions."""
    lines = [line for s in SETUPS for line in recorded(s)]
    assert len(lines) >= 1000
    assert {s.name for s in SETUPS} >= {"policy4", "tables4", "router4", "ipv6"}
    outcomes = Counter(line.get("error") or line["answer"].get("type", "unicast") for line in lines)
    for kind in (*ERRORS.values(), "unicast", "local", "broadcast", "multicast"):
        if kind == "No such device":
            continue
        assert outcomes[kind] >= 2, (kind, outcomes)
    queries = [line["query"] for line in lines]
    for key in ("from", "iif", "oif", "mark", "ipproto", "sport", "dport", "tos", "uid"):
        assert sum(key in q for q in queries) >= 20, key
    assert sum(line["family"] == 6 for line in lines) >= 300
    tables = {line["answer"].get("table") for line in lines if "answer" in line}
    assert {"local", "default", "101", "300"} <= tables


# --- corner cases on hand-made snapshots ----------------------------------------------------

LINKS = """1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000
    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff
3: eth2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group 7 qlen 1000
    link/ether 02:00:00:00:00:02 brd ff:ff:ff:ff:ff:ff
4: eth3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000
    link/ether 02:00:00:00:00:03 brd ff:ff:ff:ff:ff:ff
"""  # noqa: E501

ADDRS = """1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000
    inet 127.0.0.1/8 scope host lo
2: eth1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000
    inet 10.1.7.1/32 scope link eth1
    inet 10.1.0.2/24 scope global eth1
    inet 10.9.0.2/24 scope global eth1
    inet 10.1.0.3/24 scope global secondary eth1
    inet6 2001:db8:1::3/64 scope global deprecated
    inet6 2001:db8:1::2/64 scope global
    inet6 fd00:1::2/64 scope global
    inet6 fe80::1/64 scope link
3: eth2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000
    inet 10.2.0.2/24 scope global eth2
    inet6 2001:db8:2::2/64 scope global tentative
    inet6 2002:c000:204::2/64 scope global
4: eth3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000
"""  # noqa: E501


def host(tmp_path: Path, routes: str, rules: str | None = None, routes6: str = "", **extra) -> Fib:
    d = tmp_path / "ip"
    d.mkdir(exist_ok=True)
    (d / "link.txt").write_text(LINKS)
    (d / "addr.txt").write_text(ADDRS)
    (d / "route.txt").write_text(routes)
    if routes6:
        (d / "route6.txt").write_text(routes6)
    if rules is not None:
        (d / "rule.txt").write_text(rules)
    for name, text in extra.items():
        (d / name.replace("_", ".")).write_text(text)
    return Fib(ipsnap.read_snapshot(d))


DEFAULT_RULES = (
    "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n"
)


def ask(fib: Fib, to: str, src: str | None = None, **kw):
    return route_get(fib, Query.parse(to, src, **kw))


def test_longest_prefix_then_metric(tmp_path):
    fib = host(
        tmp_path,
        "10.40.0.0/16 via 10.1.0.1 dev eth1 metric 100\n"
        "10.40.0.0/16 via 10.2.0.1 dev eth2 metric 50\n"
        "10.40.5.0/24 via 10.1.0.1 dev eth1 metric 300\n",
        DEFAULT_RULES,
    )
    assert (ask(fib, "10.40.1.1").dev, ask(fib, "10.40.1.1").prefsrc) == ("eth2", "10.2.0.2")
    longer = ask(fib, "10.40.5.9")
    assert (longer.dev, longer.route.dst, longer.rule.priority) == ("eth1", "10.40.5.0/24", 32766)
    assert ask(fib, "8.8.8.8").error == "ENETUNREACH"


def test_source_selection_ipv4(tmp_path):
    """inet_select_addr: a scope link address only for link routes, never a secondary, the
    gateway's subnet first, another card's address when the card has none."""
    fib = host(
        tmp_path,
        "10.53.0.0/16 dev eth1 scope link\n"
        "10.42.0.0/16 via 10.9.0.1 dev eth1\n"
        "10.43.0.0/16 via 10.1.0.1 dev eth1\n"
        "10.41.0.0/16 dev eth3 scope link\n",
        DEFAULT_RULES,
    )
    assert ask(fib, "10.53.1.1").prefsrc == "10.1.7.1"
    assert ask(fib, "10.42.1.1").prefsrc == "10.9.0.2"
    assert ask(fib, "10.43.1.1").prefsrc == "10.1.0.2"
    assert ask(fib, "10.41.1.1").prefsrc == "10.1.0.2"  # eth3 has no address
    given = ask(fib, "10.43.1.1", "10.1.0.3")
    assert (given.src, given.prefsrc) == ("10.1.0.3", None)  # ip prints no src = from
    assert ask(fib, "10.43.1.1", "10.77.0.1").error == "ENETUNREACH"  # not the host's address
    assert ask(fib, "10.43.1.1", "127.0.0.1").error == "EINVAL"  # loopback source off lo


def test_source_selection_ipv6(tmp_path):
    """RFC 6724: never a tentative address, avoid a deprecated one, the outgoing card's, a
    matching label, then the longest common prefix; a link-local destination takes the card's
    own addresses."""
    fib = host(
        tmp_path,
        "",
        DEFAULT_RULES,
        routes6="default via fd00:1::1 dev eth1 metric 1024 pref medium\n"
        "2001:db8:2::/64 dev eth2 metric 256 pref medium\n"
        "fe80::/64 dev eth1 metric 256 pref medium\n",
    )
    assert ask(fib, "2001:db8:99::1").prefsrc == "2001:db8:1::2"  # label 6, not deprecated ::3
    assert ask(fib, "fd00:77::1").prefsrc == "fd00:1::2"  # label 5
    # rule 5 (the outgoing card's addresses) comes before rule 6 (labels)
    assert ask(fib, "2002:c000:299::1").prefsrc == "2001:db8:1::2"
    # eth2's 2001:db8:2::2 is tentative: eth2's other address, though its label differs
    assert ask(fib, "2001:db8:2::9").prefsrc == "2002:c000:204::2"
    assert ask(fib, "fe80::99").prefsrc == "fe80::1"
    assert "no IPv6 rule snapshot" in " ".join(ask(fib, "fd00:77::1").notes)


def test_route_types_and_throw(tmp_path):
    fib = host(
        tmp_path,
        "blackhole 10.43.0.0/16\nunreachable 10.44.0.0/16\nprohibit 10.45.0.0/16\n"
        "throw 10.46.0.0/16\n10.43.1.0/24 via 10.1.0.1 dev eth1\n"
        "default via 10.2.0.1 dev eth2 table 100\n",
        DEFAULT_RULES + "32767:\tfrom all lookup 100\n",
    )
    assert [ask(fib, f"10.4{i}.0.1").error for i in (3, 4, 5)] == [
        "EINVAL",
        "EHOSTUNREACH",
        "EACCES",
    ]
    assert ask(fib, "10.43.1.1").dev == "eth1"
    thrown = ask(fib, "10.46.0.1")
    assert (thrown.dev, thrown.table, thrown.rule.priority) == ("eth2", "100", 32767)
    assert any("throw route 10.46.0.0/16" in n for n in thrown.notes)


def test_rules_goto_suppress_not_and_marks(tmp_path):
    fib = host(
        tmp_path,
        "default via 10.1.0.1 dev eth1\n"
        "10.2.0.0/24 dev eth2 proto kernel scope link src 10.2.0.2\n"
        "default via 10.2.0.1 dev eth2 table 101\n"
        "default via 10.9.0.1 dev eth1 table 102\n",
        "0:\tfrom all lookup local\n"
        "100:\tfrom all fwmark 0x1/0x1 lookup 101\n"
        "110:\tfrom all to 100.64.0.0/10 goto 400 [unresolved]\n"
        "120:\tfrom all to 100.64.0.0/10 goto 300\n"
        "130:\tfrom all lookup main suppress_prefixlength 0\n"
        "140:\tnot from all to 10.0.0.0/8 lookup 102\n"
        "300:\tfrom all lookup 101\n"
        "32766:\tfrom all lookup main\n",
    )
    marked = ask(fib, "8.8.8.8", mark="0x3")
    assert (marked.dev, marked.rule.priority) == ("eth2", 100)
    assert ask(fib, "8.8.8.8", mark="0x2").rule.priority == 140  # mask 0x1: no match
    jumped = ask(fib, "100.64.1.1")
    assert (jumped.rule.priority, jumped.table) == (300, "101")
    assert any("goto 400 is unresolved" in n for n in jumped.notes)
    # suppress_prefixlength 0: main's default is passed over, the connected /24 is not
    assert ask(fib, "10.2.0.9").rule.priority == 130
    suppressed = ask(fib, "8.8.8.8")
    assert (suppressed.rule.priority, suppressed.gateway) == (140, "10.9.0.1")
    assert any("suppressed" in n for n in suppressed.notes)
    assert ask(fib, "10.77.0.1").rule.priority == 300  # `not to 10/8`: 10.x skips rule 140


def test_ports_protocol_iif_oif_rules(tmp_path):
    fib = host(
        tmp_path,
        "default via 10.1.0.1 dev eth1\ndefault via 10.2.0.1 dev eth2 table 105\n"
        "default via 10.9.0.1 dev eth1 table 106\n",
        "0:\tfrom all lookup local\n"
        "100:\tfrom all ipproto tcp dport 443 lookup 105\n"
        "110:\tfrom all iif lo sport 5000-5010 lookup 106\n"
        "120:\tfrom all oif eth2 lookup 105\n"
        "130:\tfrom all iif eth9 [detached] lookup 105\n"
        "32766:\tfrom all lookup main\n",
    )
    assert ask(fib, "8.8.8.8", proto="tcp", dport=443).table == "105"
    assert ask(fib, "8.8.8.8", proto="udp", dport=443).table == "main"
    assert ask(fib, "8.8.8.8", sport=5010).table == "106"  # iif lo: sent by this host
    assert ask(fib, "8.8.8.8", sport=5011).table == "main"
    oif = ask(fib, "8.8.8.8", oif="eth2")
    assert (oif.table, oif.dev) == ("105", "eth2")
    assert fib.rules[4][4].selectors["iif_detached"]
    assert ask(fib, "8.8.8.8").table == "main"  # a rule on a missing card never matches


def test_input_lookups_forwarding_and_rp_filter(tmp_path):
    sysctls = (
        "net.ipv4.ip_forward = 1\n"
        "net.ipv4.conf.all.rp_filter = 0\n"
        "net.ipv4.conf.eth1.rp_filter = 1\n"
        "net.ipv4.conf.eth2.rp_filter = 2\n"
        "net.ipv4.conf.eth1.forwarding = 1\nnet.ipv4.conf.eth2.forwarding = 1\n"
        "net.ipv4.conf.eth3.forwarding = 0\n"
    )
    fib = host(
        tmp_path,
        "default via 10.1.0.1 dev eth1\n10.20.0.0/16 via 10.2.0.1 dev eth2\n"
        "10.1.0.0/24 dev eth1 proto kernel scope link src 10.1.0.2\n"
        "10.2.0.0/24 dev eth2 proto kernel scope link src 10.2.0.2\n"
        "local 10.1.0.2 dev eth1 table local proto kernel scope host src 10.1.0.2\n",
        DEFAULT_RULES,
        sysctl_txt=sysctls,
    )
    delivered = ask(fib, "10.1.0.2", "10.1.0.77", iif="eth1")
    assert (delivered.type, delivered.dev) == ("local", "lo")
    strict = ask(fib, "10.1.0.2", "10.20.0.5", iif="eth1")
    assert strict.error == "EINVAL"
    assert "rp_filter=1 (strict) on eth1: the route back to 10.20.0.5 leaves eth2" in strict.notes
    assert ask(fib, "10.1.0.2", "10.20.0.5", iif="eth2").type == "local"
    forwarded = ask(fib, "8.8.8.8", "10.20.0.5", iif="eth2")
    assert (forwarded.dev, forwarded.gateway) == ("eth1", "10.1.0.1")
    off = ask(fib, "8.8.8.8", "10.20.0.5", iif="eth3")
    assert off.error == "EHOSTUNREACH" and "forwarding is off on eth3" in off.notes
    assert ask(fib, "10.1.0.2", "10.1.0.2", iif="eth2").error == "EINVAL"  # own source


def test_multipath_lists_every_path_with_its_source(tmp_path):
    fib = host(
        tmp_path,
        "10.49.0.0/16 \n\tnexthop via 10.1.0.1 dev eth1 weight 1 \n"
        "\tnexthop via 10.2.0.1 dev eth2 weight 3 \n"
        "10.55.0.0/16 \n\tnexthop via 10.1.0.1 dev eth1 weight 1 \n"
        "\tnexthop via 10.5.0.1 dev eth3 weight 1 dead linkdown \n",
        DEFAULT_RULES,
    )
    ans = ask(fib, "10.49.0.1")
    assert ans.multipath
    assert [(p.dev, p.gateway, p.weight, p.src) for p in ans.paths] == [
        ("eth1", "10.1.0.1", 1, "10.1.0.2"),
        ("eth2", "10.2.0.1", 3, "10.2.0.2"),
    ]
    assert ans.to_dict()["multipath"] is True and "hashes each flow" in ans.text()
    one = ask(fib, "10.55.0.1")
    assert not one.multipath and one.dev == "eth1"  # the dead nexthop is never used


def test_queries_are_checked(tmp_path):
    fib = host(tmp_path, "default via 10.1.0.1 dev eth1\n", DEFAULT_RULES)
    with pytest.raises(QueryError, match="not an IPv4 or IPv6 address"):
        Query.parse("10.1.0.300")
    with pytest.raises(QueryError, match="not of one IP version"):
        Query.parse("10.1.0.3", "fd00::1")
    with pytest.raises(QueryError, match="unknown protocol"):
        Query.parse("10.1.0.3", proto="tcpp")
    with pytest.raises(QueryError, match="out of range"):
        Query.parse("10.1.0.3", dport=70000)
    with pytest.raises(QueryError, match="iif eth9: no such card"):
        ask(fib, "10.1.0.3", "10.1.0.9", iif="eth9")


def test_the_snapshot_in_force_answers():
    state = ipsnap.read_snapshots(ROOT / "samples" / "egress_switch_tcp")
    before, after = state.snapshots
    q = Query.parse("172.16.70.15", "172.16.70.16", proto="tcp", sport=32904, dport=5000)
    early = route_at(state, q, before.taken_at + 1)
    assert not early.notes
    assert "is before the first snapshot" in route_at(state, q, before.taken_at - 60).notes[0]
    late = route_at(state, q)
    assert (early.dev, early.route.metric, early.snapshot) == ("eth2", 100, "before")
    assert (late.dev, late.route.metric, late.snapshot) == ("eth1", 10, after.moment)
    assert late.prefsrc is None and late.src == "172.16.70.16"  # the pinned source stays
    assert snapshot_at(state, "before") is before
    with pytest.raises(QueryError, match="no snapshot named"):
        snapshot_at(state, "after-9")


# --- what nicpath route cannot answer from --------------------------------------------------


def route_cli(*args: str):
    from click.testing import CliRunner

    from analyzer.api.cli import main

    return CliRunner().invoke(main, ["route", *args])


def test_a_directory_without_a_snapshot_is_no_answer(tmp_path):
    """Issue 26: `--ip ~` answered "Network is unreachable" (exit 1, as if the kernel had
    refused); a directory that holds no snapshot, directly or in its subdirectories, is bad
    input (exit 2) saying so."""
    (tmp_path / "Documents").mkdir()
    (tmp_path / "Documents" / "notes.md").write_text("# notes\n")
    (tmp_path / ".cache").mkdir()
    for directory in (tmp_path, tmp_path / ".cache"):
        res = route_cli("--ip", str(directory), "--to", "1.2.3.4")
        assert res.exit_code == 2, res.output
        assert res.output == (
            f"nicpath: error: no ip snapshot in {directory}: give a bundle, its ip/ directory "
            "or one ip/<moment>/ holding route.json or route.txt (ip -j route show table all)\n"
        )


def test_a_snapshot_without_routes_is_no_answer(tmp_path):
    """A moment that holds rules but no routes knows nothing of the routes: exit 2, not the
    kernel's "Network is unreachable"; the other moments still answer."""
    bundle = tmp_path / "b"
    shutil.copytree(ROOT / "samples" / "egress_switch_tcp" / "ip", bundle / "ip")
    for form in ("json", "txt"):
        (bundle / "ip" / "after-1" / f"route.{form}").unlink()
    res = route_cli("--ip", str(bundle), "--to", "172.16.70.15")
    assert res.exit_code == 2, res.output
    assert f"snapshot {bundle / 'ip' / 'after-1'} holds no route.json or route.txt" in res.output
    before = route_cli("--ip", str(bundle), "--to", "172.16.70.15", "--at", "before")
    assert before.exit_code == 0 and "dev eth2" in before.output, before.output


def test_a_bad_route_among_good_ones_is_named_and_the_answer_refused(tmp_path):
    """The snapshots are all the answer rests on: a skipped route could be the one that
    decides, so nicpath route names it (file and line) and exits 2."""
    bundle = tmp_path / "b"
    shutil.copytree(ROOT / "samples" / "egress_switch_tcp" / "ip", bundle / "ip")
    route_txt = bundle / "ip" / "after-1" / "route.txt"
    (bundle / "ip" / "after-1" / "route.json").unlink()
    route_txt.write_text(route_txt.read_text() + "172.16.71.0/24 via 172.16.70.x dev eth1\n")
    lines = len(route_txt.read_text().splitlines())
    res = route_cli("--ip", str(bundle), "--to", "172.16.70.15")
    assert res.exit_code == 2, res.output
    assert (
        f"{route_txt}: 1 of {lines} routes skipped: line {lines}: gateway '172.16.70.x' is not "
        "an IP address" in res.output
    )


@pytest.mark.parametrize("at", ["nan", "-inf", "1e300", "-1e12", "0001-01-01T00:00:00"])
def test_a_time_no_snapshot_can_have_is_refused(at):
    """`--at nan` answered from the first snapshot, `--at -1e12` raised: both are exit 2."""
    res = route_cli(
        "--ip", str(ROOT / "samples" / "egress_switch_tcp"), "--to", "1.2.3.4", "--at", at
    )
    assert res.exit_code == 2, res.output
    assert res.output == f"nicpath: error: --at {at}: not a time between 1677 and 2262\n"


@pytest.mark.parametrize("taken_at", [float("nan"), 1e300, -1e12])
def test_an_answer_from_a_snapshot_whose_time_is_none_says_so(tmp_path, taken_at):
    """A snapshot made by hand (or read back from a table) may carry such a time; the answer
    says it is no time instead of raising, and its JSON form stays valid JSON (null)."""
    import dataclasses

    fib = host(tmp_path, "default via 10.1.0.1 dev eth1\n", DEFAULT_RULES)
    snap = dataclasses.replace(fib.snap, taken_at=taken_at)
    answer = route_get(snap, Query.parse("8.8.8.8"))
    assert answer.text().endswith(
        f"from   snapshot ip (taken_at {taken_at!r} is not a time between 1677 and 2262)"
    )
    assert answer.to_dict()["taken_at"] is None
    json.dumps(answer.to_dict(), allow_nan=False)
