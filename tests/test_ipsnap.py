"""ip snapshots: JSON and text forms agree, and the host state answers by time."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.errors import InputError
from analyzer.sources import ipsnap

ROOT = Path(__file__).resolve().parent.parent
MOMENTS = sorted(p for p in (ROOT / "samples").glob("*/ip/*") if p.is_dir())
MOMENTS += sorted((ROOT / "samples" / "route_get").glob("*/snapshot"))


@pytest.mark.parametrize(
    "moment", MOMENTS, ids=[str(m.relative_to(ROOT / "samples")) for m in MOMENTS]
)
def test_json_and_text_forms_agree(moment, tmp_path):
    text_only = tmp_path / moment.name
    text_only.mkdir()
    for f in moment.glob("*.txt"):
        (text_only / f.name).write_text(f.read_text())
    if (moment / "taken_at").exists():
        (text_only / "taken_at").write_text((moment / "taken_at").read_text())
    from_json, from_text = ipsnap.read_snapshot(moment), ipsnap.read_snapshot(text_only)
    assert from_json.links == from_text.links
    assert from_json.addresses == from_text.addresses
    # every field but the raw record: multipath nexthops, tos, flags, IPv6 preference
    assert from_json.routes == from_text.routes
    assert from_json.rules == from_text.rules
    assert from_json.sysctls == from_text.sysctls


def test_host_state_picks_the_snapshot_in_force():
    state = ipsnap.read_snapshots(ROOT / "samples" / "egress_switch_tcp")
    before, after = state.snapshots
    assert (before.moment, after.moment) == ("before", "after-1")
    assert state.at(before.taken_at - 10) is before
    assert state.at((before.taken_at + after.taken_at) / 2) is before
    assert state.at(after.taken_at + 1) is after
    assert state.links_by_index()[2] == "eth1"
    assert "172.16.70.14" in before.addresses_of("eth1")
    assert before.holder_of("172.16.70.16") == ["eth2"]
    new = [r for r in after.routes if r.dev == "eth1" and r.metric == 10]
    assert new and new[0].prefsrc == "172.16.70.14" and new[0].dst == "172.16.70.0/24"


def test_policy_rules_are_read():
    state = ipsnap.read_snapshots(ROOT / "samples" / "clean_multihomed" / "ip" / "before")
    rules = {(r.selectors.get("src"), r.table) for r in state.snapshots[0].rules}
    assert ("10.0.1.2", "100") in rules and ("10.0.2.2", "200") in rules


def test_master_addresses_count_for_members(tmp_path):
    (tmp_path / "link.txt").write_text(
        "2: eth1: <BROADCAST,UP> mtu 1500 qdisc noqueue master br0 state UP mode DEFAULT\n"
        "    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff\n"
        "3: br0: <BROADCAST,UP> mtu 1500 qdisc noqueue state UP mode DEFAULT\n"
        "    link/ether 02:00:00:00:00:02 brd ff:ff:ff:ff:ff:ff\n"
        "4: eth1.10@eth1: <BROADCAST,UP> mtu 1500 qdisc noqueue state UP\n"
        "    link/ether 02:00:00:00:00:03 brd ff:ff:ff:ff:ff:ff\n"
    )
    (tmp_path / "addr.txt").write_text(
        "3: br0: <BROADCAST,UP> mtu 1500 qdisc noqueue state UP\n"
        "    inet 10.0.0.1/24 brd 10.0.0.255 scope global br0\n"
        "    inet 10.0.0.9/24 scope global secondary br0\n"
    )
    snap = ipsnap.read_snapshot(tmp_path)
    assert snap.taken_at is None
    assert snap.addresses_of("eth1") == {"10.0.0.1", "10.0.0.9"}
    assert snap.addresses_of("eth1", include_master=False) == set()
    assert snap.link_by_name("eth1.10").parent == "eth1"
    assert [a.secondary for a in snap.addresses] == [False, True]


def test_bad_input_names_file_and_line(tmp_path):
    (tmp_path / "rule.txt").write_text("0:\tfrom all lookup local\nthis is not a rule\n")
    with pytest.raises(InputError) as err:
        ipsnap.read_snapshot(tmp_path)
    assert err.value.record == 2 and "rule.txt" in str(err.value)
    (tmp_path / "rule.txt").unlink()
    (tmp_path / "addr.json").write_text("[{")
    with pytest.raises(InputError, match=r"addr\.json.*not valid JSON"):
        ipsnap.read_snapshot(tmp_path)


def test_routing_fields_are_read():
    """What the route replay needs: nexthops and their flags, tos, linkdown, IPv6 routes told
    apart from IPv4 ones in `ip route show table all`, normalised rule selectors, sysctls."""
    tables = ipsnap.read_snapshot(ROOT / "samples" / "route_get" / "tables4" / "snapshot")
    multipath = next(r for r in tables.routes if r.dst == "10.49.0.0/16")
    assert [(h.dev, h.gateway, h.weight) for h in multipath.nexthops] == [
        ("rta", "10.1.0.1", 1),
        ("rtb", "10.2.0.1", 3),
    ]
    dead = next(r for r in tables.routes if r.dst == "10.55.0.0/16")
    assert "dead" in dead.nexthops[1].flags
    assert next(r for r in tables.routes if r.dst == "10.51.0.0/16" and r.tos).tos == 0x10
    assert "linkdown" in next(r for r in tables.routes if r.dev == "rte" and r.metric == 10).flags
    assert {r.family for r in tables.routes if r.dst == "default"} == {4}
    assert "UP" not in tables.link_by_name("rtf").flags
    policy = ipsnap.read_snapshot(ROOT / "samples" / "route_get" / "policy4" / "snapshot")
    by_prio = {r.priority: r for r in policy.rules}
    assert by_prio[110].selectors == {"fwmark": 1, "fwmask": 1}
    assert by_prio[120].selectors == {"fwmark": 0x20, "fwmask": 0xFFFFFFFF}
    assert by_prio[140].selectors == {"ipproto": 6, "dport": (443, 443)}
    assert by_prio[150].selectors == {"ipproto": 17, "sport": (5000, 5010)}
    assert by_prio[180].selectors["not"] and by_prio[180].selectors["oif"] == "rtd"
    assert by_prio[190].selectors == {"uidrange": (1000, 1999)}
    assert (by_prio[170].action, by_prio[170].goto) == ("goto", 300)
    assert (by_prio[200].table, by_prio[200].suppress_prefixlength) == ("main", 0)
    assert by_prio[250].selectors["iif_detached"] and by_prio[260].action == "nop"
    assert by_prio[161].action == "blackhole"
    assert policy.sysctls["net.ipv4.conf.all.rp_filter"] == "0"
    ipv6 = ipsnap.read_snapshot(ROOT / "samples" / "route_get" / "ipv6" / "snapshot")
    deprecated = next(a for a in ipv6.addresses if a.address == "2001:db8:1::3")
    assert deprecated.flags == ("deprecated",)
    assert {r.family for r in ipv6.rules if r.priority == 100} == {6}


def test_bad_sysctl_line_names_file_and_line(tmp_path):
    (tmp_path / "sysctl.txt").write_text("net.ipv4.ip_forward = 1\nnot a sysctl\n")
    with pytest.raises(InputError) as err:
        ipsnap.read_snapshot(tmp_path)
    assert err.value.record == 2 and "sysctl.txt" in str(err.value)


@pytest.mark.parametrize(
    "moment", MOMENTS, ids=[str(m.relative_to(ROOT / "samples")) for m in MOMENTS]
)
def test_snapshots_survive_json(moment):
    """An event table carries its host state as JSON (Parquet metadata): every field comes back
    as the readers made it, so routing and explanations answer the same from a saved table."""
    state = ipsnap.read_snapshots(moment)
    back = ipsnap.host_from_json(ipsnap.host_to_json(state))
    assert back == state
    for a, b in zip(back.snapshots, state.snapshots, strict=True):
        assert (a.routes, a.rules, a.links, a.addresses) == (
            b.routes,
            b.rules,
            b.links,
            b.addresses,
        )
        assert (a.sysctls, a.parts) == (b.sysctls, b.parts)


def test_a_bundle_sysctl_serves_every_moment(tmp_path):
    """nicpath collect writes sysctl.txt at the top of the bundle."""
    (tmp_path / "ip" / "start").mkdir(parents=True)
    (tmp_path / "ip" / "start" / "rule.txt").write_text("0:\tfrom all lookup local\n")
    (tmp_path / "sysctl.txt").write_text("net.ipv4.ip_forward = 1\n")
    snap = ipsnap.read_snapshots(tmp_path).snapshots[0]
    assert snap.sysctls == {"net.ipv4.ip_forward": "1"} and "sysctl" in snap.parts


ROUTES_JSON = """[
 {"dst": "10.0.0.0/24", "dev": "eth1", "scope": "link", "prefsrc": "10.0.0.1"},
 {"dst": "999.1.1.1/99", "dev": "eth1"},
 {"dst": "default", "gateway": "10.0.0.x", "dev": "eth1"},
 {"dst": "10.9.0.0/16", "dev": "eth1", "prefsrc": "fd00::1"},
 {"dst": "10.8.0.0/16", "nexthops": [{"gateway": "10.0.0.2", "dev": "eth1"},
                                     {"gateway": "bogus", "dev": "eth1"}]},
 {"dst": 7, "dev": "eth1"},
 {"dst": "10.7.0.0/16", "via": {"family": "inet6", "host": "fe80::1"}, "dev": "eth1"}
]"""
ROUTES_TEXT = (
    "10.0.0.0/24 dev eth1 scope link src 10.0.0.1\n"
    "999.1.1.1/99 dev eth1\n"
    "default via 10.0.0.x dev eth1\n"
    "10.9.0.0/16 dev eth1 src fd00::1\n"
    "10.8.0.0/16\n"
    "\tnexthop via 10.0.0.2 dev eth1 weight 1\n"
    "\tnexthop via bogus dev eth1 weight 1\n"
    "10.6.0.0/33 dev eth1\n"
    "10.7.0.0/16 via inet6 fe80::1 dev eth1\n"
)


@pytest.mark.parametrize("name,content", [("route.json", ROUTES_JSON), ("route.txt", ROUTES_TEXT)])
def test_a_route_that_names_no_address_is_skipped_counted_and_named(tmp_path, name, content):
    """A destination, gateway (nexthops' too) or prefsrc that is not an address of the route's
    family is a bad entry: left out, the rest of the file kept, the file listed with how many
    and which; read strictly, the first one is an error naming its entry."""
    (tmp_path / name).write_text(content)
    listed: list[tuple[str, str]] = []
    snap = ipsnap.read_snapshots(tmp_path, unreadable=listed).snapshots[0]
    assert [(r.dst, r.gateway) for r in snap.routes] == [
        ("10.0.0.0/24", None),
        ("10.7.0.0/16", "fe80::1"),  # via inet6: a gateway of another family is an address
    ]
    assert "route" in snap.parts
    unit = "entry" if name.endswith(".json") else "line"
    assert listed == [
        (
            str(tmp_path / name),
            f"5 of 7 routes skipped: {unit} 2: dst '999.1.1.1/99' is not an IP prefix; "
            f"{unit} 3: gateway '10.0.0.x' is not an IP address; "
            f"{unit} 4: prefsrc fd00::1 is not an IPv4 address; and 2 more",
        )
    ]
    with pytest.raises(InputError) as err:
        ipsnap.read_snapshot(tmp_path)
    assert (err.value.unit, err.value.record) == (unit, 2)
    assert str(err.value).startswith(f"{tmp_path / name}, {unit} 2: dst '999.1.1.1/99'")


def test_a_multipath_route_with_a_bad_nexthop_gateway_is_skipped(tmp_path):
    (tmp_path / "route.txt").write_text(
        "10.8.0.0/16\n\tnexthop via 10.0.0.2 dev eth1 weight 1\n\tnexthop via x dev eth1\n"
    )
    listed: list[tuple[str, str]] = []
    snap = ipsnap.read_snapshots(tmp_path, unreadable=listed).snapshots[0]
    assert snap.routes == ()
    assert listed[0][1] == "1 of 1 routes skipped: line 1: gateway 'x' is not an IP address"


def test_addresses_and_rules_that_name_no_address_are_skipped(tmp_path):
    """The route lookup reads addresses (source selection) and rule selectors as addresses
    too: such an entry is skipped and listed the same way, in either form."""
    (tmp_path / "addr.json").write_text(
        '[{"ifindex": 2, "ifname": "eth1", "addr_info": ['
        '{"family": "inet", "local": "10.0.0.1", "prefixlen": 24},'
        '{"family": "inet", "local": "999.1.1.1", "prefixlen": 24},'
        '{"family": "inet", "local": "10.0.0.2", "prefixlen": 99}]}]'
    )
    (tmp_path / "rule.txt").write_text(
        "0:\tfrom all lookup local\n100:\tfrom 999.1.1.1 lookup 100\n32766:\tfrom all lookup main\n"
    )
    listed: list[tuple[str, str]] = []
    snap = ipsnap.read_snapshots(tmp_path, unreadable=listed).snapshots[0]
    assert [a.address for a in snap.addresses] == ["10.0.0.1"]
    assert [r.priority for r in snap.rules] == [0, 32766]
    assert {"addr", "rule"} <= set(snap.parts)
    assert dict(listed) == {
        str(tmp_path / "addr.json"): "2 of 3 addresses skipped: "
        "entry 1: eth1 address '999.1.1.1' is not an IP address; "
        "entry 1: eth1 address '10.0.0.2/99' is not an IP prefix",
        str(tmp_path / "rule.txt"): "1 of 3 rules skipped: line 2: from '999.1.1.1/32' is not "
        "an IP prefix",
    }


def test_route_via_another_family_reads_alike_in_both_forms(tmp_path):
    """``via inet6 fe80::1`` (an IPv4 route through an IPv6 gateway, RFC 5549): ``ip -j``
    prints it as a ``via`` object; both forms give the gateway, and the route stays IPv4."""
    json_dir, text_dir = tmp_path / "j", tmp_path / "t"
    json_dir.mkdir(), text_dir.mkdir()
    (json_dir / "route.json").write_text(
        '[{"dst": "default", "via": {"family": "inet6", "host": "fe80::1"}, "dev": "eth1"}]'
    )
    (text_dir / "route.txt").write_text("default via inet6 fe80::1 dev eth1\n")
    (from_json,) = ipsnap.read_snapshot(json_dir).routes
    (from_text,) = ipsnap.read_snapshot(text_dir).routes
    assert (from_json.family, from_json.gateway) == (4, "fe80::1")
    assert from_json == from_text


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "-1e12", "9223372037"])
def test_a_taken_at_no_clock_holds_is_no_time(tmp_path, value):
    """Such a moment is read as one without taken_at (placed later by changes.log, file times
    or order) and its taken_at file is listed with why."""
    (tmp_path / "route.txt").write_text("10.0.0.0/24 dev eth1\n")
    (tmp_path / "taken_at").write_text(value + "\n")
    listed: list[tuple[str, str]] = []
    snap = ipsnap.read_snapshots(tmp_path, unreadable=listed).snapshots[0]
    assert snap.taken_at is None and snap.routes
    assert listed == [
        (
            str(tmp_path / "taken_at"),
            f"line 1: taken_at {value!r} is not a time between 1677 and 2262",
        )
    ]


@pytest.mark.parametrize("value", ["-9223372036", "0", "1764040967.5", "9223372036"])
def test_a_taken_at_inside_the_clock_is_kept(tmp_path, value):
    (tmp_path / "taken_at").write_text(value)
    assert ipsnap.read_snapshot(tmp_path).taken_at == float(value)


def test_a_json_part_nested_too_deep_is_unreadable_and_the_text_form_stands_in(tmp_path):
    (tmp_path / "route.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "route.txt").write_text("10.0.0.0/24 dev eth1\n")
    listed: list[tuple[str, str]] = []
    snap = ipsnap.read_snapshots(tmp_path, unreadable=listed).snapshots[0]
    assert [r.dst for r in snap.routes] == ["10.0.0.0/24"] and "route" in snap.parts
    assert listed == [
        (str(tmp_path / "route.json"), "JSON nested too deep to read (not ip -j output)")
    ]
