"""On every recorded bundle, the findings equal the truth in scenario.json, in every input form.

The matrix: each capture form alone (per-card pcaps, any.pcap, all.pcapng), with no log and with
each log rendering, and each log rendering alone. The truth was computed by the lab from the
per-card captures; finding kinds that later issues add are compared once their detector exists.
A kind whose detector needs what a form lacks (``nat_pinned`` and ``dropped_before_hook`` need
the packet both on the wire and at a hook: a capture and a log) is expected only where the form
has it, and the report must then say the detector did not run and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyzer.analysis.run import analyze
from analyzer.detectors import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p.parent for p in (ROOT / "samples").glob("*/scenario.json"))
CAPTURE_FORMS = ("per-card", "any", "pcapng")
LOGS = (None, "kern.dmesg", "kern.syslog", "kern.journal")
#: How far a finding's first_ts may be from the truth (seconds), by what the times come from:
#: captures are exact to the microsecond (any.pcap stamps a few us apart from per-card ones);
#: log lines alone carry btime (whole seconds, F7) or syslog's whole seconds.
EXPLAINED = ("egress_change", "src_not_on_nic", "asymmetric_return", "no_route_egress")
TOLERANCE = {"capture": 0.002, "kern.journal": 0.002, "kern.dmesg": 1.0, "kern.syslog": 1.0}


def truth(bundle: Path) -> dict:
    return json.loads((bundle / "scenario.json").read_text())


def expected_findings(t: dict) -> list[dict]:
    """The truth's findings, and a ``rerouted_after_hook`` for each disagreement the lab found
    between a flow's LOG lines and the wire (``flows[].log_wire_disagreements``)."""
    out = list(t["expected_findings"])
    for flow in t["flows"]:
        for d in flow.get("log_wire_disagreements", ()):
            out.append(
                {
                    "kind": "rerouted_after_hook",
                    "flow": {k: flow[k] for k in ("proto", "src", "sport", "dst", "dport")},
                    "ifaces": [d["logged"], d["wire"]],
                    "first_ts": d["first_ts"],
                    "packets": d["count"],
                    "marks": d["marks"],
                }
            )
    return out


def inputs(bundle: Path, form: str | None, log: str | None) -> dict:
    cards = [i["name"] for i in truth(bundle)["host"]["interfaces"]]
    files: list[str] = []
    if form == "per-card":
        files = [str(bundle / f"{c}.pcap") for c in cards]
    elif form == "any":
        files = [str(bundle / "any.pcap")]
    elif form == "pcapng":
        files = [str(bundle / "all.pcapng")]
    boot = float((bundle / "btime").read_text()) if log == "kern.dmesg" else None
    return {
        "paths": files,
        "logs": [str(bundle / log)] if log else [],
        "ip_dirs": [str(bundle / "ip")],
        "boot_time": boot,
    }


def in_log(t: dict, finding: dict) -> bool:
    """Whether a log alone shows the finding: not for a flow whose LOG lines name another card
    than its packets were on (a reroute after the hook, F7: only the wire shows where they went)."""
    misreported = {
        tuple(f[k] for k in ("proto", "src", "sport", "dst", "dport"))
        for f in t["flows"]
        if f.get("log_wire_disagreements")
    }
    flow = finding["flow"]
    return tuple(flow[k] for k in ("proto", "src", "sport", "dst", "dport")) not in misreported


def shown_by(kind: str, form: str | None, log: str | None) -> bool:
    """Whether the inputs of one form hold what the detector of ``kind`` needs."""
    have = {"captures": form is not None, "log": log is not None}
    return all(have[n] for n in REGISTRY[kind].needs)


def key(kind: str, flow: dict, ifaces) -> tuple:
    return (
        kind,
        flow["proto"],
        flow["src"],
        flow["sport"],
        flow["dst"],
        flow["dport"],
        tuple(ifaces),
    )


CASES = [(b, form, log) for b in BUNDLES for form in CAPTURE_FORMS for log in LOGS]
CASES += [(b, None, log) for b in BUNDLES for log in LOGS if log]


@pytest.mark.parametrize(
    "bundle,form,log",
    CASES,
    ids=[f"{b.name}-{form or 'log-only'}-{log or 'no-log'}" for b, form, log in CASES],
)
def test_findings_equal_the_truth(bundle, form, log):
    t = truth(bundle)
    opts = inputs(bundle, form, log)
    result = analyze(opts.pop("paths"), **opts)
    expected = {
        key(f["kind"], f["flow"], f["ifaces"]): f
        for f in expected_findings(t)
        if f["kind"] in REGISTRY and shown_by(f["kind"], form, log) and (form or in_log(t, f))
    }
    for kind in REGISTRY:
        if not shown_by(kind, form, log):
            assert result.detectors[kind].startswith("not run: needs "), result.detectors[kind]
    # No finding twice: one per kind, flow, cards and start (a flow that switches twice has two).
    said = [(f.kind, f.flow_id, tuple(f.ifaces), f.first_ts) for f in result.findings]
    assert len(said) == len(set(said)), said
    got = {
        key(f.kind, f.flow, f.ifaces): f
        for f in result.findings
        if form or in_log(t, {"flow": f.flow})
    }
    for f in result.findings:  # a log alone cannot tell a reroute after the hook: it says so
        if not form and not in_log(t, {"flow": f.flow}) and f.kind == "asymmetric_return":
            assert "a reroute after the hook (F7) may have sent it" in f.summary, f.summary
    assert set(got) == set(expected), "\n".join(f.summary for f in result.findings)
    tolerance = TOLERANCE["capture" if form else log]
    for k, f in expected.items():
        assert abs(got[k].first_ts - f["first_ts"]) <= tolerance, (
            k,
            got[k].first_ts,
            f["first_ts"],
        )
        if "foreign_addr" in f:
            assert got[k].extra["foreign_addr"] == f["foreign_addr"]
        if f["kind"] == "rerouted_after_hook":
            assert (got[k].packets, got[k].extra["marks"]) == (f["packets"], f["marks"])
        for field in ("nat", "newer_flow", "newer_nat"):  # nat_pinned: as conntrack says
            if field in f:
                assert got[k].extra[field] == f[field], field
    # Every finding about where packets went is explained by the route replay, and the replay
    # sends the flow to the card its packets were seen on.
    for f in result.findings:
        if f.kind in EXPLAINED:
            lookups = [f.explanation.get(k) for k in ("before", "after", "now", "egress")]
            assert all(d["agrees"] for d in lookups if d), f.explanation["text"]
    quiet = {(q["proto"], q["src"], q["sport"], q["dst"], q["dport"]) for q in t["quiet_flows"]}
    for f in result.findings:
        assert key("", f.flow, ())[1:6] not in quiet, f.summary


def test_reply_pairing_prefilter_keeps_only_strays_that_answer_a_request_in_time():
    """``reply_address_mismatch._paired``: the hash prefilter before the merge keeps a stray only
    when it comes back to a request's ends from another address while the request lasts."""
    import numpy as np
    import pandas as pd

    from analyzer.detectors.reply_address_mismatch import LATE_REPLY_NS, _paired

    s = 1_000_000_000
    rows = [
        # flow_id, proto, src (hi, lo), dst (hi, lo), sport, dport, first_ns, last_ns
        (0, 6, 0, 10, 0, 20, 40000, 443, 1 * s, 9 * s),  # request 10:40000 -> 20:443
        (1, 6, 0, 30, 0, 10, 443, 40000, 2 * s, 3 * s),  # stray from 30: answers flow 0
        (2, 6, 0, 20, 0, 10, 443, 40000, 2 * s, 3 * s),  # from 20 itself: no mismatch
        (3, 17, 0, 30, 0, 10, 443, 40000, 2 * s, 3 * s),  # UDP: not the TCP request's
        (4, 6, 0, 30, 0, 10, 443, 40000, 9 * s + LATE_REPLY_NS + 1, 20 * s),  # too late
        (5, 6, 0, 30, 0, 10, 443, 40001, 2 * s, 3 * s),  # another local port
        (6, 6, 0, 10, 0, 20, 40000, 443, 30 * s, 40 * s),  # the port pair reused later
        (7, 6, 0, 31, 0, 10, 443, 40000, 31 * s, 32 * s),  # answers flow 6, not flow 0
    ]
    cols = ["flow_id", "proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport"]
    fl = pd.DataFrame(rows, columns=[*cols, "first_ns", "last_ns"]).astype(
        {c: np.uint64 for c in ("src_hi", "src_lo", "dst_hi", "dst_lo")}
    )
    paired = _paired(fl, np.array([1, 2, 3, 4, 5, 7]), np.array([0, 6]))
    assert np.flatnonzero(paired).tolist() == [1, 7]
