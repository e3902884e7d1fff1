"""ip snapshots: JSON and text forms agree, and the host state answers by time."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.errors import InputError
from analyzer.sources import ipsnap

ROOT = Path(__file__).resolve().parent.parent
MOMENTS = sorted(p for p in (ROOT / "samples").glob("*/ip/*") if p.is_dir())


@pytest.mark.parametrize(
    "moment", MOMENTS, ids=[f"{m.parent.parent.name}/{m.name}" for m in MOMENTS]
)
def test_json_and_text_forms_agree(moment, tmp_path):
    text_only = tmp_path / moment.name
    text_only.mkdir()
    for f in moment.glob("*.txt"):
        (text_only / f.name).write_text(f.read_text())
    (text_only / "taken_at").write_text((moment / "taken_at").read_text())
    from_json, from_text = ipsnap.read_snapshot(moment), ipsnap.read_snapshot(text_only)
    assert from_json.links == from_text.links
    assert from_json.addresses == from_text.addresses
    strip = [
        (r.family, r.table, r.type, r.dst, r.dev, r.gateway, r.prefsrc, r.metric)
        for r in from_json.routes
    ]
    assert strip == [
        (r.family, r.table, r.type, r.dst, r.dev, r.gateway, r.prefsrc, r.metric)
        for r in from_text.routes
    ]
    assert [(r.priority, r.action, r.table, r.selectors.get("src")) for r in from_json.rules] == [
        (r.priority, r.action, r.table, r.selectors.get("src")) for r in from_text.rules
    ]


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
