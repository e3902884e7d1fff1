#!/usr/bin/env python3
"""Write scenario.json for one recorded bundle.

The findings are not typed in: they are computed from the per-card captures with the finding
definitions of the lab brief (egress_change, src_not_on_nic, asymmetric_return,
reply_address_mismatch, no_route_egress), over the flows the generators reported.  The plan
of each scenario (what we expected the kernel to do) is only compared with that result; every
difference becomes a note, and the capture wins.

Issue 8 adds two findings that need more than the captures:
- nat_pinned: each flow's translation is the kernel's own, from the bundle's conntrack.txt
  (`conntrack -L` while the flows ran), and is checked against the captures (the translated
  packets must be on the card).  Two flows of one kind (protocol, original source, destination,
  destination port) whose packets overlap on the wire with different translations: the older
  one is pinned; first_ts is its first packet on the wire once the newer one has appeared.
- dropped_before_hook: a packet on a card's wire, to one of the host's addresses, with no
  filter INPUT LOG line of its own (same addresses, ports, IP ID) while INPUT logged other
  packets of its protocol less than a second before and after it (kern.journal times).
"""
import argparse
import collections
import datetime
import ipaddress
import json
import os
import platform
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pcaplib  # noqa: E402

PLANS = {
    "egress_switch_tcp": {
        "facts": ["F3", "F2"],
        "description": (
            "Host eth1 172.16.70.14/24 and eth2 172.16.70.16/24 (noprefixroute), both on one bridge with "
            "peer 172.16.70.15. The only route to 172.16.70.0/24 is 'dev eth2 src 172.16.70.16 metric 100'. "
            "A TCP flow host->peer:5000 sends a small message every 100 ms for 3 s; 1.5 s in, "
            "'ip route add 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10' is run in the host. "
            "The kernel repeats the route lookup per packet (F3): the next segments leave eth1 still "
            "carrying the pinned source 172.16.70.16 (F2), an address eth1 does not hold. A short UDP "
            "exchange and a ping on eth2 finish before the change."),
        "planned": [("egress_change", "switched", ["eth2", "eth1"]),
                    ("src_not_on_nic", "switched", ["eth1"])],
    },
    "egress_switch_udp": {
        "facts": ["F3", "F2"],
        "description": (
            "Same topology as egress_switch_tcp: host eth1 172.16.70.14/24, eth2 172.16.70.16/24 on one bridge "
            "with peer 172.16.70.15, only route 'dev eth2 src 172.16.70.16 metric 100'. A connected UDP socket "
            "on the host sends a datagram to peer:5001 every 100 ms for 3 s, the peer echoes each one back "
            "from the address it was sent to. 1.5 s in, 'ip route add 172.16.70.0/24 dev eth1 scope link src "
            "172.16.70.14 metric 10': the next datagrams leave eth1 with the socket's source 172.16.70.16 "
            "(F3, F2). A short TCP exchange and a ping on eth2 finish before the change."),
        "planned": [("egress_change", "switched", ["eth2", "eth1"]),
                    ("src_not_on_nic", "switched", ["eth1"])],
    },
    "accepted_secondary": {
        "facts": ["F2"],
        "description": (
            "Host eth1 holds 172.16.10.14/24 and a second address 172.16.70.14/24 (noprefixroute), with the "
            "only route '172.16.10.0/24 dev eth1 scope link src 172.16.10.14'; eth2 holds 172.16.20.14/24 on a "
            "separate bridge with peer2 172.16.20.15. Peer 172.16.10.15 (route 172.16.70.0/24 dev its link) "
            "connects to 172.16.70.14:5000: the host's replies carry source 172.16.70.14, the SYN's "
            "destination, not the route's src (F2), and leave eth1, which holds it. A host-initiated TCP "
            "flow to the peer gets the route's src 172.16.10.14; UDP runs on eth2. Logging uses nftables "
            "'log' rules. Everything is normal: nothing must be reported."),
        "planned": [],
    },
    "asymmetric_return": {
        "facts": ["F4"],
        "description": (
            "Host eth1 172.16.70.14/24 and eth2 172.16.70.16/24 on one bridge with peer 172.16.70.15 and "
            "peer2 172.16.70.17. Host routes: '172.16.70.0/24 dev eth1 src 172.16.70.14 metric 100' and "
            "'172.16.70.15 dev eth2 src 172.16.70.16'. The peer has a permanent neighbour entry mapping "
            "172.16.70.16 to eth1's MAC. A TCP flow host->peer:5000 leaves eth2 (source 172.16.70.16) and "
            "every reply arrives on eth1: routes decide egress only (F4); rp_filter is 0 so the host takes "
            "them. UDP and ping to peer2 stay on eth1 both ways."),
        "planned": [("asymmetric_return", "asymmetric", ["eth2", "eth1"])],
    },
    "reply_wrong_source": {
        "facts": ["F1"],
        "description": (
            "Host eth1 172.16.70.14/24 on a bridge with a peer holding 172.16.70.15/24 and 172.16.70.25/24; "
            "eth2 172.16.20.14/24 with peer2 172.16.20.15 on a second bridge. The host's connected UDP socket "
            "sends to 172.16.70.25:5300, where a server bound to 0.0.0.0 answers with sendto(): the kernel "
            "picks the source by the peer's route, 172.16.70.15. The reply reaches the host but no socket "
            "(F1), and the host answers it with ICMP port unreachable. A second server bound to "
            "172.16.70.25:5301 answers correctly; TCP runs on eth2."),
        "planned": [("reply_address_mismatch", "wrong_source_reply", ["eth1"])],
    },
    "no_routes": {
        "facts": ["F3", "F4"],
        "description": (
            "Host eth1 172.16.70.14/24 with peer 172.16.70.15 (bridge br0), eth2 172.16.20.14/24 with peer2 "
            "172.16.20.15 (bridge br1). A TCP flow host->peer:5000 (the peer also sends a line every 100 ms) "
            "and a one-way UDP flow peer2->host:5400 (a listening socket on the host) run; 1.5 s in, "
            "'ip route flush table main' in the host (the local table stays). The host's outgoing TCP "
            "packets stop at once (F3: no route for the next packet) while the peer's segments and "
            "retransmissions and peer2's datagrams keep arriving (F4: routes do not decide arrival)."),
        "planned": [("no_route_egress", "stopped", ["eth1"])],
    },
    "ipv6_egress_switch": {
        "facts": ["F3", "F2"],
        "description": (
            "IPv6 version of egress_switch_tcp: host eth1 fd00:70::14/64 and eth2 fd00:70::16/64 (nodad "
            "noprefixroute) on one bridge with peer fd00:70::15; only route 'fd00:70::/64 dev eth2 src "
            "fd00:70::16 metric 100'. A TCP flow host->peer:5000 sends every 100 ms for 3 s; 1.5 s in, "
            "'ip -6 route add fd00:70::/64 dev eth1 src fd00:70::14 metric 10': the next segments leave eth1 "
            "with source fd00:70::16 (F3, F2). ip6tables LOG rules with --log-tcp-sequence."),
        "planned": [("egress_change", "switched", ["eth2", "eth1"]),
                    ("src_not_on_nic", "switched", ["eth1"]),
                    ("asymmetric_return", "switched", ["eth1", "eth2"])],
    },
    "nat_pinned": {
        "facts": ["F5"],
        "description": (
            "Host eth1 172.16.70.14/24 with secondary addresses 172.16.70.21 and 172.16.70.22 (bridge with peer "
            "172.16.70.15), eth2 172.16.20.14/24 (bridge with peer2 172.16.20.15). nat POSTROUTING: '-o eth1 -p "
            "tcp --dport 5000 -j SNAT --to-source 172.16.70.21'; nat PREROUTING: '-i eth2 -p tcp --dport 8080 -j "
            "DNAT --to-destination 172.16.20.14:5000'. A long TCP flow host->peer:5000 starts under the first "
            "rule; 1.5 s later the rule is replaced ('iptables -t nat -R POSTROUTING 1 ... --to-source "
            "172.16.70.22') and a new flow of the same kind starts: it leaves eth1 as 172.16.70.22 while the "
            "old one keeps 172.16.70.21 (F5: NAT is decided once per flow, conntrack keeps it). filter "
            "OUTPUT/INPUT LOG lines see the packets before SNAT and after DNAT, the captures the other side. "
            "A short flow of the same kind closes before the change; peer2's connection to :8080 is "
            "translated by DNAT; UDP on eth2 and a ping on eth1 are not translated. conntrack.txt is "
            "'conntrack -L' taken while both long flows ran; ip/*/iptables.txt and nft.txt are the rules."),
        "planned": [("nat_pinned", "pinned", ["eth1"])],
    },
    "rp_filter_drop": {
        "facts": ["F4"],
        "description": (
            "Host eth1 172.16.70.14/24 (bridge with peer 172.16.70.15, which also holds 198.51.100.10/32 on "
            "lo), eth2 172.16.20.14/24 (bridge with peer2 172.16.20.15). Main table: the connected routes and "
            "'default via 172.16.20.15 dev eth2'; 'ip rule add fwmark 0x1 table 100', table 100: 'default via "
            "172.16.70.15 dev eth1'. eth1 has rp_filter=1 (strict), log_martians is on. A UDP client with "
            "SO_MARK 1 sends to 198.51.100.10:5300 out of eth1; the answers arrive on eth1 (on its wire), the "
            "reverse-path check looks 198.51.100.10 up without the mark, finds eth2 and drops them before "
            "filter INPUT (F4: routes decide the way out; strict rp_filter demands the way back be the way "
            "in), with martian log lines. UDP to 172.16.70.15 on eth1 is answered and logged at INPUT "
            "meanwhile; INPUT has no LOG rule for icmp, so the ping's replies are on the wire but not covered "
            "by the log; TCP runs on eth2."),
        "planned": [("dropped_before_hook", "dropped", ["eth1"])],
    },
    "clean_multihomed": {
        "facts": ["F2", "F3"],
        "description": (
            "Correct policy routing: eth1 10.0.1.2/24 (bridge br1, router r1 10.0.1.1 holding 192.168.101.1) "
            "and eth2 10.0.2.2/24 (bridge br2, router r2 10.0.2.1 holding 192.168.102.1); 'ip rule add from "
            "10.0.1.2 table 100', 'ip rule add from 10.0.2.2 table 200', each table with its connected route "
            "and a default route via its router. TCP, UDP and ping bound to each source run on both cards; "
            "1.5 s in, 'ip route add 203.0.113.0/24 via 10.0.1.1 dev eth1 metric 50' adds a route no flow "
            "uses. Every packet keeps its card: nothing must be reported."),
        "planned": [],
    },
}


def load_addrs(path):
    """ip -j addr -> {ifname: set(addresses)}"""
    res = {}
    for link in json.load(open(path)):
        res[link["ifname"]] = {str(ipaddress.ip_address(a["local"])) for a in link.get("addr_info", [])}
    return res


CT_TUPLE = re.compile(r"src=(\S+) dst=(\S+) (?:sport=(\d+) dport=(\d+)|type=\d+ code=\d+ id=(\d+))")


def load_conntrack(path):
    """conntrack -L -> {(proto, src, sport, dst, dport) original: (src, sport, dst, dport) after NAT}.

    The translated original direction is the reply tuple reversed."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        words = line.split()
        if not words:
            continue
        proto = words[1] if words[0] in ("ipv4", "ipv6") else words[0]
        tuples = CT_TUPLE.findall(line)
        if len(tuples) < 2:
            continue

        def tup(t):
            sport = int(t[2]) if t[2] else int(t[4])
            dport = int(t[3]) if t[3] else int(t[4])
            return (str(ipaddress.ip_address(t[0])), sport, str(ipaddress.ip_address(t[1])), dport)

        o, r = tup(tuples[0]), tup(tuples[1])
        out[(proto,) + o] = (r[2], r[3], r[0], r[1])
    return out


JOURNAL = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})\+0000 \S+ kernel: (.*)$")
LOG_IN = re.compile(r"^\[FILTER-INPUT \w+\] IN=\S* OUT=\S* .*?SRC=(\S+) DST=(\S+) .*? ID=(\d+) .*?PROTO=(\w+)"
                    r"(?: SPT=(\d+) DPT=(\d+))?")


def load_input_lines(path):
    """filter INPUT LOG lines of kern.journal: [(wall time, proto, src, dst, sport, dport, ip id)]."""
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path):
        m = JOURNAL.match(line.rstrip("\n"))
        if not m:
            continue
        g = LOG_IN.match(m.group(2))
        if not g:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        out.append((t, g.group(4).lower(), str(ipaddress.ip_address(g.group(1))),
                    str(ipaddress.ip_address(g.group(2))), int(g.group(5)) if g.group(5) else None,
                    int(g.group(6)) if g.group(6) else None, int(g.group(3))))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--traffic", nargs=2, type=float)
    a = ap.parse_args()
    plan = PLANS[a.scenario]
    B = a.bundle

    links = json.load(open(os.path.join(B, "ip/before/link.json")))
    addr_before = json.load(open(os.path.join(B, "ip/before/addr.json")))
    cards = sorted(l["ifname"] for l in links if l["ifname"].startswith("eth"))
    mac = {l["ifname"]: l["address"] for l in links}
    interfaces = []
    for l in addr_before:
        if l["ifname"] in cards:
            interfaces.append({"name": l["ifname"], "ifindex": l["ifindex"], "mac": l["address"],
                               "addresses": ["%s/%d" % (ai["local"], ai["prefixlen"]) for ai in l.get("addr_info", [])
                                             if not ai["local"].startswith("fe80")]})
    interfaces.sort(key=lambda i: i["name"])

    changes = []
    cl = os.path.join(B, "changes.log")
    if os.path.exists(cl):
        for line in open(cl):
            t, cmd = line.rstrip("\n").split("\t", 1)
            changes.append({"at": float(t), "command": cmd})
    # addresses in force: 'before' from -inf, 'after-N' from change N's time
    addr_epochs = [(float("-inf"), load_addrs(os.path.join(B, "ip/before/addr.json")))]
    for i, c in enumerate(changes, 1):
        addr_epochs.append((c["at"], load_addrs(os.path.join(B, "ip/after-%d/addr.json" % i))))

    def addrs_at(ts, card):
        cur = addr_epochs[0][1]
        for t, m in addr_epochs:
            if ts >= t:
                cur = m
        return cur.get(card, set())

    host_addrs = set()
    for _, m in addr_epochs:
        for s in m.values():
            host_addrs |= s

    # every frame seen on every card, with direction from the card's MAC
    events = []
    for c in cards:
        _, pk = pcaplib.read_pcap(os.path.join(B, c + ".pcap"))
        for ts, fr in pk:
            dst, src, et, pl = pcaplib.eth_split(fr)
            if src == mac[c]:
                d = "out"
            elif dst == mac[c] or int(dst[:2], 16) & 1:
                d = "in"
            else:
                d = "other"
            info = pcaplib.ip_info(et, pl)
            events.append((ts, c, d, et, info))
    events.sort(key=lambda e: (e[0], e[1]))

    flows = [json.loads(l) for l in open(os.path.join(a.work, "flows.jsonl")) if l.strip()]
    conntrack = load_conntrack(os.path.join(B, "conntrack.txt"))
    for f in flows:
        nat = conntrack.get((f["proto"], f["src"], f["sport"], f["dst"], f["dport"]))
        if nat and nat != (f["src"], f["sport"], f["dst"], f["dport"]):
            f["nat"] = dict(zip(("src", "sport", "dst", "dport"), nat))
    if conntrack and any(f["initiator"] == "host" and f["proto"] != "icmp" and
                         (f["proto"], f["src"], f["sport"], f["dst"], f["dport"]) not in conntrack for f in flows):
        print("warning: a host flow is not in conntrack.txt", file=sys.stderr)

    def wire(f):
        """The flow's tuple on the host's cards: after SNAT for the host's flows, before DNAT for
        the peers' (the capture is taken on the card)."""
        if "nat" in f and f["initiator"] == "host":
            n = f["nat"]
            return n["src"], n["sport"], n["dst"], n["dport"]
        return f["src"], f["sport"], f["dst"], f["dport"]

    def fwd(f, i):
        if i is None or i["proto"] != f["proto"]:
            return False
        if f["proto"] == "icmp" and i.get("echo") != "request":
            return False
        return (i["src"], i["sport"], i["dst"], i["dport"]) == wire(f)

    def rev(f, i):
        if i is None or i["proto"] != f["proto"]:
            return False
        if f["proto"] == "icmp" and i.get("echo") != "reply":
            return False
        w = wire(f)
        return (i["src"], i["sport"], i["dst"], i["dport"]) == (w[2], w[3], w[0], w[1])

    findings, flow_out, notes = [], [], []
    claimed = set()  # ids of events that are packets of some flow
    for f in flows:
        w = wire(f)
        local = w[0] if f["initiator"] == "host" else w[2]
        remote = w[2] if f["initiator"] == "host" else w[0]
        lport = w[1] if f["initiator"] == "host" else w[3]
        rport = w[3] if f["initiator"] == "host" else w[1]
        f.update(local=local, remote=remote, lport=lport, rport=rport)
        pk = []
        for idx, e in enumerate(events):
            ts, c, d, et, i = e
            if d == "other":
                continue
            if fwd(f, i) or rev(f, i):
                if d == "out" and i["src"] == local or d == "in" and i["dst"] == local:
                    pk.append((ts, c, d, i))
                    claimed.add(idx)
        f["_pk"] = pk
        key = {k: f[k] for k in ("proto", "src", "sport", "dst", "dport")}
        fl = dict(key, role=f["role"],
                  first_ts=round(pk[0][0], 6) if pk else None, last_ts=round(pk[-1][0], 6) if pk else None,
                  packets=len(pk))
        if "nat" in f:
            fl["nat"] = f["nat"]
        flow_out.append(fl)
        outs = [p for p in pk if p[2] == "out"]
        # egress_change
        cur = None
        for ts, c, d, i in outs:
            if cur is not None and c != cur:
                findings.append({"kind": "egress_change", "flow": key, "ifaces": [cur, c], "first_ts": ts, "fact": "F3"})
            cur = c
        # src_not_on_nic
        seen = set()
        for ts, c, d, i in outs:
            if i["src"] not in addrs_at(ts, c) and c not in seen:
                seen.add(c)
                findings.append({"kind": "src_not_on_nic", "flow": key, "ifaces": [c], "first_ts": ts, "fact": "F2"})
        # asymmetric_return
        last_out, seen = None, set()
        for ts, c, d, i in pk:
            if d == "out":
                last_out = c
            elif last_out is not None and c != last_out and (last_out, c) not in seen:
                seen.add((last_out, c))
                findings.append({"kind": "asymmetric_return", "flow": key, "ifaces": [last_out, c], "first_ts": ts,
                                 "fact": "F4"})
        # no_route_egress
        if outs:
            L, first_out = outs[-1][0], outs[0][0]
            for ch in changes:
                if not first_out < ch["at"]:
                    continue
                after = [p for p in pk if p[2] == "in" and p[0] > L and p[0] > ch["at"]]
                later_in = [p for p in pk if p[2] == "in" and p[0] > L]
                if len(after) >= 2:
                    findings.append({"kind": "no_route_egress", "flow": key, "ifaces": [outs[-1][1]],
                                     "first_ts": later_in[0][0], "fact": "F3"})
                    break

    # reply_address_mismatch: packets to a flow's local address/port from its remote port,
    # but from another address, that belong to no flow
    for f in flows:
        if f["proto"] == "icmp":
            continue
        key = {k: f[k] for k in ("proto", "src", "sport", "dst", "dport")}
        seen = set()
        for idx, (ts, c, d, et, i) in enumerate(events):
            if d != "in" or idx in claimed or i is None or i["proto"] != f["proto"]:
                continue
            if i["dst"] == f["local"] and i["dport"] == f["lport"] and i["sport"] == f["rport"] \
                    and i["src"] != f["remote"] and i["src"] not in seen:
                seen.add(i["src"])
                findings.append({"kind": "reply_address_mismatch", "flow": key, "ifaces": [c], "first_ts": ts,
                                 "foreign_addr": i["src"], "fact": "F1"})

    # nat_pinned: flows of one kind, overlapping on the wire with different translations
    def translation(f):
        n = f.get("nat") or {"src": f["src"], "sport": f["sport"], "dst": f["dst"], "dport": f["dport"]}
        return n["src"], n["dst"], n["dport"]

    if conntrack:
        kinds = collections.defaultdict(list)
        for f in flows:
            if f["_pk"] and f["proto"] != "icmp":
                kinds[(f["proto"], f["src"], f["dst"], f["dport"])].append(f)
        for group in kinds.values():
            group.sort(key=lambda f: f["_pk"][0][0])
            for i, old in enumerate(group):
                for new in group[i + 1:]:
                    start = new["_pk"][0][0]
                    later = [p for p in old["_pk"] if p[0] >= start]
                    if later and translation(old) != translation(new):
                        key = {k: old[k] for k in ("proto", "src", "sport", "dst", "dport")}
                        findings.append({"kind": "nat_pinned", "flow": key,
                                         "ifaces": list(dict.fromkeys(p[1] for p in later)),
                                         "first_ts": later[0][0], "fact": "F5",
                                         "nat": old.get("nat"), "newer_flow": {k: new[k] for k in key},
                                         "newer_nat": new.get("nat")})
                        break

    # dropped_before_hook: on the wire, to the host, no INPUT line of its own while INPUT logged
    # other packets of its protocol around it
    inputs = load_input_lines(os.path.join(B, "kern.journal"))
    logged = {(p, s_, d, sp, dp, ipid) for _, p, s_, d, sp, dp, ipid in inputs}
    for f in flows:
        key = {k: f[k] for k in ("proto", "src", "sport", "dst", "dport")}
        for ts, c, d, i in f["_pk"]:
            if d != "in" or i["dst"] not in addrs_at(ts, c) or i["ver"] != 4:
                continue
            # filter INPUT sees an arriving packet after NAT is undone (replies) or done (DNAT)
            if f["initiator"] == "host":
                seen = (f["dst"], f["src"], f["dport"], f["sport"])
            else:
                n = f.get("nat") or f
                seen = (n["src"], n["dst"], n["sport"], n["dport"])
            if i["proto"] == "icmp":
                seen = seen[:2] + (None, None)
            if (i["proto"], *seen, i["ipid"]) in logged:
                continue
            around = [t for t, p, *_ in inputs if p == i["proto"] and abs(t - ts) <= 1.0]
            if any(t <= ts for t in around) and any(t >= ts for t in around):
                findings.append({"kind": "dropped_before_hook", "flow": key, "ifaces": [c], "first_ts": ts,
                                 "fact": "F4"})
                break

    for x in findings:
        x["first_ts"] = round(x["first_ts"], 6)
    findings.sort(key=lambda x: x["first_ts"])

    # ---- observations for the notes
    def flow_of(x):
        return next(f for f in flows if {k: f[k] for k in ("proto", "src", "sport", "dst", "dport")} == x["flow"])

    got = collections.Counter((x["kind"], flow_of(x)["role"], tuple(x["ifaces"])) for x in findings)
    want = collections.Counter((k, r, tuple(i)) for k, r, i in plan["planned"])
    for k in sorted(set(want) - set(got)):
        notes.append("planned but not in the captures: %s on the %s flow %s" % (k[0], k[1], list(k[2])))
    for k in sorted(set(got) - set(want)):
        notes.append("not planned but shown by the captures: %s on the %s flow %s" % (k[0], k[1], list(k[2])))
    for f in flows:
        if not f["_pk"]:
            notes.append("flow %s %s:%s -> %s:%s has no packets in the captures" % (
                f["proto"], f["src"], f["sport"], f["dst"], f["dport"]))
    # replies after an egress change: where did they arrive?
    for x in findings:
        if x["kind"] == "egress_change":
            f = flow_of(x)
            ins = collections.Counter(p[1] for p in f["_pk"] if p[2] == "in" and p[0] >= x["first_ts"])
            notes.append("after the egress change of the %s flow, its incoming packets arrived on: %s" % (
                f["role"], ", ".join("%s %d" % kv for kv in sorted(ins.items())) or "none"))
    # ARP / neighbour solicitations sent by the host on each card, and their sender addresses
    arp = collections.Counter()
    for c in cards:
        _, pk = pcaplib.read_pcap(os.path.join(B, c + ".pcap"))
        for ts, fr in pk:
            dst, src, et, pl = pcaplib.eth_split(fr)
            if src == mac[c] and et == pcaplib.ETH_P_ARP and len(pl) >= 28:
                op = "request" if pl[7] == 1 else "reply"
                arp["%s from %s (sender %s)" % (op, c, ".".join(str(b) for b in pl[14:18]))] += 1
    for ts, c, d, et, i in events:
        if d == "out" and i and i["ver"] == 6 and i["proto"] == "icmp" and i["icmp_type"] in (135, 136):
            arp["%s from %s (source %s)" % ("neighbour solicitation" if i["icmp_type"] == 135
                                            else "neighbour advertisement", c, i["src"])] += 1
    if arp:
        notes.append("address resolution by the host: %s" % "; ".join("%dx %s" % (n, k) for k, n in sorted(arp.items())))
    icmp_err = [(ts, c, d, i) for ts, c, d, et, i in events
                if i and i["proto"] == "icmp" and i["inner"] is not None]
    if icmp_err:
        byk = collections.Counter("%s %s->%s type %d code %d on %s" % (d, i["src"], i["dst"], i["icmp_type"],
                                                                     i["icmp_code"], c) for ts, c, d, i in icmp_err)
        notes.append("ICMP errors in the captures (evidence, part of no flow): " +
                     "; ".join("%dx %s" % (n, k) for k, n in sorted(byk.items())))
    if a.scenario == "no_routes":
        for f in flows:
            if f["role"] == "stopped" and changes:
                ch = changes[0]["at"]
                o = [p for p in f["_pk"] if p[2] == "out" and p[0] > ch]
                i_ = [p for p in f["_pk"] if p[2] == "in" and p[0] > ch]
                notes.append("after the time logged for the flush the TCP flow sent %d packets (the last %.6f s after "
                             "it, while the command was still starting) and received %d (the last %.3f s after it)"
                             % (len(o), (o[-1][0] - ch) if o else 0, len(i_), (i_[-1][0] - ch) if i_ else 0))
    ki = os.path.join(a.work, "kern_info.json")
    if os.path.exists(ki):
        k = json.load(open(ki))
        if k.get("kmsg_minus_monotonic_s") is not None:
            notes.append("kernel log clock: kmsg timestamp minus CLOCK_MONOTONIC (read delay included) was %.6f s during this "
                         "recording; kern.journal/kern.syslog use wall = kmsg usec + %.6f, calibrated from the "
                         "read times of the records (time.time() - CLOCK_MONOTONIC was %.6f)"
                         % (k["kmsg_minus_monotonic_s"], k["calibrated_offset"], k["naive_offset"]))
    if conntrack:
        notes.append("translations from conntrack.txt: " + "; ".join(
            "%s %s:%s -> %s:%s as %s:%s -> %s:%s" % (f["proto"], f["src"], f["sport"], f["dst"], f["dport"],
                                                    f["nat"]["src"], f["nat"]["sport"], f["nat"]["dst"],
                                                    f["nat"]["dport"]) for f in flows if "nat" in f))
    if inputs:
        martians = sum(1 for l in open(os.path.join(B, "kern.dmesg")) if "martian source" in l)
        if martians:
            notes.append("martian source lines in the kernel log: %d" % martians)
    if a.scenario == "accepted_secondary":
        notes.append("nftables 'log' rules (table inet filter) were used for the kernel log lines")
    sysctl = os.path.join(a.work, "sysctl.txt")
    if os.path.exists(sysctl):
        notes.append("host sysctls: " + "; ".join(l.strip() for l in open(sysctl) if l.strip()))

    ktxt = []
    kinds = collections.Counter(x["kind"] for x in findings)
    if kinds:
        ktxt.append(" The captures show: " + ", ".join(
            "%s (%d)" % kv for kv in sorted(kinds.items())) + ".")
    else:
        ktxt.append(" The captures show no finding.")

    quiet = []
    bad = {tuple(sorted(x["flow"].items())) for x in findings}
    for f in flows:
        key = {k: f[k] for k in ("proto", "src", "sport", "dst", "dport")}
        if tuple(sorted(key.items())) not in bad:
            quiet.append(dict(key, why=f["why"]))

    rec = datetime.datetime.fromtimestamp(a.traffic[0] if a.traffic else os.path.getmtime(B),
                                          datetime.timezone.utc)
    out = {
        "scenario": a.scenario,
        "description": plan["description"] + ktxt[0],
        "facts": plan["facts"],
        "recorded_at": rec.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "host": {"interfaces": interfaces},
        "changes": changes,
        "flows": flow_out,
        "expected_findings": findings,
        "quiet_flows": quiet,
        "notes": notes,
    }
    with open(os.path.join(B, "scenario.json"), "w") as fh:
        json.dump(out, fh, indent=2)
        fh.write("\n")
    for n in notes:
        print("note:", n, file=sys.stderr)
    for x in findings:
        print("finding:", x["kind"], x["flow"], x["ifaces"], x["first_ts"], file=sys.stderr)


if __name__ == "__main__":
    main()
