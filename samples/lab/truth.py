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

Issue 9 (stacked devices, log evidence):
- a card is a host device holding an address (not link-local) that has a capture: a macvlan
  child or a bridge, never the macvlan parent or a bridge port; those lower devices are
  captured too and only described (host.lower_devices, notes); a bridge's port changes are
  `port_failovers` (from the frames the bridge sent on its ports), never an egress change;
- LOG lines (filter OUTPUT/INPUT, IPv4) are paired with the wire by protocol, addresses, ports
  and IP ID; a flow whose lines name another card than the one its packet was on gets
  `log_wire_disagreements`;
- dropped_before_hook judges a packet only if an INPUT LOG rule without a `limit` match covers
  it (rules from ip/<moment>/iptables.txt, iptables-save or iptables -S); a packet no
  unconditional rule covers is merely unlogged.  Without iptables.txt, as in issue 8.
"""
import argparse
import collections
import datetime
import glob
import ipaddress
import json
import os
import platform
import re
import shlex
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
    "macvlan_parent": {
        "facts": ["F3", "F2", "F7"],
        "description": (
            "The host's cards are two macvlan children (mode bridge) of one veth eth1, which holds no address: "
            "mv1 172.16.70.14/24 and mv2 172.16.70.16/24 (noprefixroute), each with its own MAC, on one "
            "switch with peer 172.16.70.15. The only route to 172.16.70.0/24 is 'dev mv2 src 172.16.70.16 "
            "metric 100'. A TCP flow host->peer:5000 sends every 100 ms for 3 s; 1.5 s in, 'ip route add "
            "172.16.70.0/24 dev mv1 scope link src 172.16.70.14 metric 10': the next segments leave mv1 with "
            "the pinned source 172.16.70.16 (F3, F2). Captured on the parent eth1 (eth1.pcap) and on both "
            "children (mv1.pcap, mv2.pcap): the parent sees every packet of its children again (F7). The card "
            "of a packet is the child holding the address, never the parent. A short UDP exchange and a "
            "ping on mv2 finish before the change. ip/*/link.json is 'ip -j -d link' (link and linkinfo of "
            "the children)."),
        "planned": [("egress_change", "switched", ["mv2", "mv1"]),
                    ("src_not_on_nic", "switched", ["mv1"])],
    },
    "bridge_failover": {
        "facts": ["F7", "F3"],
        "description": (
            "The host's routing-level card is a bridge br0 holding 172.16.70.14/24, with two ports, veths eth1 "
            "and eth2, both plugged into one switch with peer 172.16.70.15. Only one port has carrier at a "
            "time: at first the switch side of eth2 is down; 1.5 s into a TCP flow (host->peer:5000, every "
            "100 ms for 4 s) and a connected UDP flow (host->peer:5001, every 100 ms), the switch side of eth1 "
            "goes down and 0.3 s later the switch side of eth2 comes up (actions of the switch, not host "
            "commands: no changes.log). Meanwhile br0 has no forwarding port (NO-CARRIER) and drops what "
            "it is given (captured on br0, on no port); then the flows continue through eth2. Bridge ports are not cards at the routing level "
            "(F7): every packet stays on br0, there is no egress change, no src_not_on_nic, no asymmetric "
            "return; the port change is recorded under port_failovers. Captured on br0, eth1 and eth2; "
            "ip/*/link.json is 'ip -j -d link' (master and linkinfo of the ports)."),
        "planned": [],
    },
    "mark_reroute": {
        "facts": ["F3", "F2", "F6", "F7"],
        "description": (
            "Host eth1 172.16.70.14/24 and eth2 172.16.70.16/24 (noprefixroute) on one bridge with peer "
            "172.16.70.15; main table: only '172.16.70.0/24 dev eth2 src 172.16.70.16 metric 100'. Before the "
            "traffic: 'ip rule add fwmark 0x1 lookup 100 pref 100', table 100: '172.16.70.0/24 dev eth1 scope "
            "link src 172.16.70.14'. A TCP flow host->peer:5000 sends every 100 ms for 3 s; 1.5 s in, "
            "'iptables -t mangle -A OUTPUT -p tcp --dport 5000 -j MARK --set-mark 0x1': from then on the "
            "mangle hook marks each segment and the kernel routes it again by the mark (table 100): it "
            "leaves eth1 with the pinned source 172.16.70.16 (F3, F2). The filter OUTPUT LOG line of such a "
            "segment still names the device of the first lookup (OUT=eth2, with MARK=0x1) while the "
            "segment is on eth1's wire (F7); flows[].log_wire_disagreements counts those lines (paired "
            "with the wire by addresses, ports and IP ID). A UDP flow to :5001 (same source 172.16.70.16) "
            "runs across the change unmarked and keeps leaving eth2, but its replies move to eth1: the "
            "rerouted flow's ARP request from eth1 carries sender 172.16.70.16 (arp_announce=0) and "
            "re-points the peer's entry for that address to eth1's MAC (F7), so the bystander UDP flow "
            "gets an asymmetric return without any change of its own. A short UDP exchange and a ping "
            "finish before the change."),
        "planned": [("egress_change", "switched", ["eth2", "eth1"]),
                    ("src_not_on_nic", "switched", ["eth1"]),
                    ("asymmetric_return", "bystander", ["eth2", "eth1"])],
    },
    "sampled_log": {
        "facts": ["F4", "F6"],
        "description": (
            "As rp_filter_drop: host eth1 172.16.70.14/24 (bridge with peer 172.16.70.15, which also holds "
            "198.51.100.10/32 on lo) with rp_filter=1, eth2 172.16.20.14/24 (bridge with peer2 172.16.20.15); "
            "main table: connected routes and 'default via 172.16.20.15 dev eth2'; 'ip rule add fwmark 0x1 "
            "table 100', table 100: 'default via 172.16.70.15 dev eth1'. The LOG rules log only a sample: "
            "tcp only for port 5000 (OUTPUT --dport 5000, INPUT --sport 5000, every packet), udp for every "
            "flow but '-m limit --limit 5/second --limit-burst 5' per rule, no icmp rule (ip/*/iptables.txt "
            "is iptables-save, so the limit is visible). Flows: TCP to 172.16.70.15:5000 (logged), TCP to "
            "172.16.20.15:5002 (not logged), two UDP flows (sampled), a ping (not logged), all delivered; "
            "and a TCP connection with SO_MARK 1 to 198.51.100.10:5000: its SYN leaves eth1 (fwmark rule), "
            "the SYN-ACKs arrive on eth1 and strict rp_filter drops them before filter INPUT (F4), whose "
            "unlimited port-5000 rule would have logged every one. Only that flow is dropped_before_hook: "
            "the unlogged packets of the other flows were merely not logged."),
        "planned": [("dropped_before_hook", "dropped", ["eth1"])],
    },
    "messy_optional_inputs": {
        "facts": ["F3", "F2", "F6"],
        "description": (
            "A short egress_switch_tcp (host eth1 172.16.70.14/24, eth2 172.16.70.16/24 on one bridge with peer "
            "172.16.70.15, only route 'dev eth2 src 172.16.70.16 metric 100'; 1 s into a TCP flow to "
            "peer:5000, 'ip route add 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10') whose "
            "optional files are in the other common forms: ip/<moment>/iptables.txt written by 'iptables "
            "-S' (no *filter/COMMIT), changes.log with one space between time and command (not a tab), "
            "conntrack.txt from 'conntrack -L' with its stderr count line, sysctl.txt at the bundle root "
            "(none under ip/), and notes.txt, a free-text file nicpath does not know. A no-op INPUT rule "
            "'-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT' makes the namespace track connections."),
        "planned": [("egress_change", "switched", ["eth2", "eth1"]),
                    ("src_not_on_nic", "switched", ["eth1"])],
    },
    "no_taken_at": {
        "facts": ["F3", "F2", "F4"],
        "description": (
            "egress_switch_tcp with two changes and no snapshot times: host eth1 172.16.70.14/24, eth2 "
            "172.16.70.16/24 on one bridge with peer 172.16.70.15, only route 'dev eth2 src 172.16.70.16 metric "
            "100'. A TCP flow host->peer:5000 sends every 100 ms for 4 s; 1.2 s in, 'ip route add "
            "172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10' (segments leave eth1 with source "
            "172.16.70.16; the host's ARP request from eth1 with sender 172.16.70.16 re-points the peer, "
            "so the replies follow to eth1), 1.2 s later 'ip route del' of that route: the segments leave "
            "eth2 again, but the replies stay on eth1 (the peer's entry for 172.16.70.16 still holds "
            "eth1's MAC and the host, whose entry for the peer on eth2 is still valid, sends no new ARP "
            "from eth2): an asymmetric return after the second change (F4, F7). The ip/before, "
            "ip/after-1, ip/after-2 directories have no taken_at file (removed after the recording): "
            "they can be placed only by changes.log and their names."),
        "planned": [("egress_change", "switched", ["eth2", "eth1"]),
                    ("src_not_on_nic", "switched", ["eth1"]),
                    ("egress_change", "switched", ["eth1", "eth2"]),
                    ("asymmetric_return", "switched", ["eth2", "eth1"])],
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


LOG_ANY = re.compile(r"^\[FILTER-(INPUT|OUTPUT) \w+\] IN=(\S*) OUT=(\S*) .*?SRC=(\S+) DST=(\S+) .*? ID=(\d+) "
                     r".*?PROTO=(\w+)(?: SPT=(\d+) DPT=(\d+))?")
LOG_MARK = re.compile(r" MARK=(0x[0-9a-fA-F]+)")
LOG_PHYSIN = re.compile(r" PHYSIN=(\S+)")


def load_log_lines(path):
    """IPv4 filter INPUT/OUTPUT LOG lines of kern.journal: dicts with time, hook, the card the line
    names (IN= for INPUT, OUT= for OUTPUT), proto, src, dst, sport, dport (None for icmp), ipid,
    mark, physin."""
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path):
        m = JOURNAL.match(line.rstrip("\n"))
        if not m:
            continue
        g = LOG_ANY.match(m.group(2))
        if not g:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        mk, ph = LOG_MARK.search(m.group(2)), LOG_PHYSIN.search(m.group(2))
        out.append({"t": t, "hook": g.group(1), "card": g.group(2) if g.group(1) == "INPUT" else g.group(3),
                    "proto": g.group(7).lower(), "src": str(ipaddress.ip_address(g.group(4))),
                    "dst": str(ipaddress.ip_address(g.group(5))),
                    "sport": int(g.group(8)) if g.group(8) else None, "dport": int(g.group(9)) if g.group(9) else None,
                    "ipid": int(g.group(6)), "mark": mk.group(1) if mk else None, "physin": ph.group(1) if ph else None})
    return out


# iptables options that take one value, and the matches whose options this reader evaluates
IPT_VALUE = {"-i", "-o", "-p", "-s", "-d", "-m", "-j", "--sport", "--dport", "--source-port", "--destination-port",
             "--limit", "--limit-burst", "--log-prefix", "--log-level", "--icmp-type", "--ctstate", "--state",
             "--comment", "--mark", "--set-mark", "--to-source", "--to-destination", "--log-tcp-options",
             "--uid-owner", "--gid-owner"}
IPT_KNOWN_MATCH = {"tcp", "udp", "icmp", "limit", "comment"}


def load_log_rules(path):
    """LOG rules of an iptables-save or `iptables -S` file: {chain: [rule]}, rule = {conds: [(neg,
    opt, value)], limited: bool, unknown: bool (a match this reader cannot evaluate)}; None when
    the file is missing."""
    if not os.path.exists(path):
        return None
    rules = collections.defaultdict(list)
    for line in open(path):
        if not line.startswith("-A "):
            continue
        toks = shlex.split(line)
        chain, toks = toks[1], toks[2:]
        if "-j" not in toks or toks[toks.index("-j") + 1] != "LOG":
            continue
        r = {"conds": [], "limited": False, "unknown": False}
        neg, i = False, 0
        while i < len(toks) and toks[i] != "-j":
            t = toks[i]
            if t == "!":
                neg = True
                i += 1
                continue
            val = toks[i + 1] if t in IPT_VALUE or (i + 1 < len(toks) and not toks[i + 1].startswith("-")) else None
            if t == "-m":
                if val == "limit":
                    r["limited"] = True
                elif val not in IPT_KNOWN_MATCH:
                    r["unknown"] = True
            elif t in ("-i", "-p", "-s", "-d", "--sport", "--dport", "--source-port", "--destination-port"):
                r["conds"].append((neg, {"--source-port": "--sport", "--destination-port": "--dport"}.get(t, t), val))
            elif t in ("--limit", "--limit-burst", "--comment"):
                pass
            else:
                r["unknown"] = True
            neg = False
            i += 2 if val is not None else 1
        rules[chain].append(r)
    return rules


def rule_matches(r, iface, proto, src, dst, sport, dport):
    for neg, opt, val in r["conds"]:
        if opt == "-i":
            m = iface.startswith(val[:-1]) if val.endswith("+") else iface == val
        elif opt == "-p":
            m = val in (proto, "all")
        elif opt in ("-s", "-d"):
            m = ipaddress.ip_address(src if opt == "-s" else dst) in ipaddress.ip_network(val, strict=False)
        else:
            port = sport if opt == "--sport" else dport
            lo, _, hi = val.partition(":")
            m = port is not None and int(lo or 0) <= port <= int(hi or lo or 65535)
        if m == neg:
            return False
    return True


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
    # the cards: captured devices holding an address that is not link-local (a macvlan child, a
    # bridge, a plain NIC); other captured devices are lower devices under them (F7)
    captured = sorted(l["ifname"] for l in links if os.path.exists(os.path.join(B, l["ifname"] + ".pcap")))
    holders = {l["ifname"] for l in addr_before if l["ifname"] != "lo" and
               any(not ai["local"].startswith("fe80") for ai in l.get("addr_info", []))}
    cards = sorted(c for c in captured if c in holders)
    lower = [c for c in captured if c not in cards]
    link_of = {l["ifname"]: l for l in links}
    mac = {l["ifname"]: l["address"] for l in links}
    ports = {c: sorted(l["ifname"] for l in links if l.get("master") == c) for c in cards}
    interfaces = []
    for l in addr_before:
        if l["ifname"] in cards:
            x = {"name": l["ifname"], "ifindex": l["ifindex"], "mac": l["address"],
                 "addresses": ["%s/%d" % (ai["local"], ai["prefixlen"]) for ai in l.get("addr_info", [])
                               if not ai["local"].startswith("fe80")]}
            li = link_of.get(l["ifname"], {})
            if "linkinfo" in li:
                x["kind"] = li["linkinfo"].get("info_kind")
            if "link" in li:
                x["lower"] = li["link"]
            if ports.get(l["ifname"]):
                x["ports"] = ports[l["ifname"]]
            interfaces.append(x)
    interfaces.sort(key=lambda i: i["name"])
    lower_devices = []
    for c in lower:
        li = link_of[c]
        x = {"name": c, "ifindex": li["ifindex"], "mac": li["address"]}
        if "linkinfo" in li:
            x["kind"] = li["linkinfo"].get("info_kind")
        up = [u for u in cards if link_of[u].get("link") == c]
        if up:
            x["role"] = "lower device (parent) of " + ", ".join(up)
        if li.get("master") in cards:
            x["role"] = "port of bridge " + li["master"]
        lower_devices.append(x)

    changes = []
    cl = os.path.join(B, "changes.log")
    changes_sep = set()
    if os.path.exists(cl):
        for line in open(cl):
            m = re.match(r"^(\S+)([\t ])(.*)$", line.rstrip("\n"))
            t, cmd = m.group(1), m.group(3)
            changes_sep.add(m.group(2))
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
        f["_fl"] = fl
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

    # LOG lines against the wire (F6, F7): pair each IPv4 filter OUTPUT/INPUT line with the packet
    # of a flow it names (protocol, addresses, ports, IP ID, direction); a line naming another card
    # than the one the packet crossed is a disagreement, and the wire is right
    log_lines = load_log_lines(os.path.join(B, "kern.journal"))
    wire_at = collections.defaultdict(list)
    for fi, f in enumerate(flows):
        for ts, c, d, i in f["_pk"]:
            if i["ver"] == 4:
                sp, dp = (None, None) if i["proto"] == "icmp" else (i["sport"], i["dport"])
                wire_at[(i["proto"], i["src"], i["dst"], sp, dp, i["ipid"], d)].append((ts, c, fi))
    disagree = collections.defaultdict(list)
    paired = collections.Counter()
    for ln in log_lines:
        cand = wire_at.get((ln["proto"], ln["src"], ln["dst"], ln["sport"], ln["dport"], ln["ipid"],
                            "out" if ln["hook"] == "OUTPUT" else "in"))
        if not cand or len({x[2] for x in cand}) != 1:
            continue
        fi = cand[0][2]
        paired[(fi, ln["hook"])] += 1
        wcards = sorted({x[1] for x in cand})
        if ln["card"] not in wcards and len(wcards) == 1:
            disagree[(fi, ln["hook"], ln["card"], wcards[0])].append((min(x[0] for x in cand), ln["mark"]))
    for (fi, hook, logged, wcard), lst in sorted(disagree.items(), key=lambda kv: min(kv[1])[0]):
        lst.sort()
        flows[fi]["_fl"].setdefault("log_wire_disagreements", []).append({
            "hook": hook, "logged": logged, "wire": wcard, "count": len(lst), "first_ts": round(lst[0][0], 6),
            "marks": sorted({m for _, m in lst if m}), "lines_paired": paired[(fi, hook)]})

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
    # the LOG rules in force (ip/<moment>/iptables.txt): only a packet that an INPUT LOG rule
    # without a limit covers must have its line; None = no rules known (judge as in issue 8)
    rule_epochs = [(float("-inf"), load_log_rules(os.path.join(B, "ip/before/iptables.txt")))]
    for n_, c_ in enumerate(changes, 1):
        rule_epochs.append((c_["at"], load_log_rules(os.path.join(B, "ip/after-%d/iptables.txt" % n_))))

    def rules_at(ts):
        cur = rule_epochs[0][1]
        for t, r in rule_epochs:
            if ts >= t:
                cur = r
        return cur

    def covered(ts, iface, proto, src, dst, sport, dport):
        r = rules_at(ts)
        if not r or not r.get("INPUT"):
            return None
        return any(not x["limited"] and not x["unknown"] and rule_matches(x, iface, proto, src, dst, sport, dport)
                   for x in r["INPUT"])

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
            if covered(ts, c, i["proto"], *seen) is False:
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
    if conntrack and any("nat" in f for f in flows):
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
    # ---- issue 9: stacked devices, bridge port changes, LOG evidence, bundle variants
    frames_of = {}

    def frames(dev):
        if dev not in frames_of:
            frames_of[dev] = pcaplib.read_pcap(os.path.join(B, dev + ".pcap"))[1]
        return frames_of[dev]

    # a macvlan parent sees every frame of its children again (F7)
    for low in lower_devices:
        up = [u for u in cards if link_of[u].get("link") == low["name"]]
        if not up:
            continue
        par = collections.Counter(fr for _, fr in frames(low["name"]))
        parts = []
        for u in up:
            ch = collections.Counter(fr for _, fr in frames(u))
            parts.append("%d of the %d frames on %s" % (sum((ch & par).values()), sum(ch.values()), u))
        own = par - sum((collections.Counter(fr for _, fr in frames(u)) for u in up), collections.Counter())
        notes.append("the capture on %s (lower device of %s) holds again %s; it has %d frames that are on no child "
                     "capture" % (low["name"], ", ".join(up), ", ".join(parts), sum(own.values())))
    # bridge port changes: from the frames the bridge sent out of its ports (F7: not cards)
    port_failovers = None
    for c in cards:
        pl = [p for p in ports.get(c, []) if p in captured]
        if not pl:
            continue
        port_failovers = port_failovers or []
        sent, recv, on_port = [], [], collections.defaultdict(list)
        for p in pl:
            for ts, fr in frames(p):
                dm, sm, _, _ = pcaplib.eth_split(fr)
                if sm == mac[c]:
                    sent.append((ts, p))
                    on_port[fr].append(ts)
                elif dm == mac[c]:
                    recv.append((ts, p))
        sent.sort()
        recv.sort()
        lost = []  # frames the bridge was given (captured on it, outgoing) that left through no port:
        for ts, fr in frames(c):  # no copy of the same bytes on a port within 10 ms
            if pcaplib.eth_split(fr)[1] == mac[c]:
                near = [t for t in on_port[fr] if abs(t - ts) < 0.01]
                if near:
                    on_port[fr].remove(min(near, key=lambda t: abs(t - ts)))
                else:
                    lost.append(ts)
        cur = last = None
        for ts, p in sent:
            if cur is not None and p != cur:
                first_in = next((t for t, q in recv if q == p and t >= last), None)
                port_failovers.append({
                    "card": c, "from": cur, "to": p, "first_ts": round(ts, 6), "last_ts_on_from": round(last, 6),
                    "first_in_ts_on_to": round(first_in, 6) if first_in is not None else None,
                    "sent_on_no_port_between": sum(1 for t in lost if last < t < ts)})
            cur, last = p, ts
        per = collections.Counter(p for _, p in sent)
        notes.append("frames sent by %s on its ports: %s; %d frames given to %s left through no port%s" % (
            c, ", ".join("%s %d" % kv for kv in sorted(per.items())), len(lost), c,
            " (%.6f to %.6f)" % (lost[0], lost[-1]) if lost else ""))
        phys = collections.Counter(ln["physin"] for ln in log_lines if ln["hook"] == "INPUT" and ln["card"] == c)
        if any(phys):
            notes.append("filter INPUT LOG lines with IN=%s carry PHYSIN= (br_netfilter): %s" % (
                c, ", ".join("%s %d" % (k or "none", n) for k, n in sorted(phys.items(), key=lambda kv: str(kv[0])))))
    ev = os.path.join(a.work, "events.log")
    if os.path.exists(ev):
        notes.append("actions outside the host (not host commands, so not in changes.log): " + "; ".join(
            "%s in %s: %s" % tuple(l.rstrip("\n").split("\t", 2)) for l in open(ev) if l.strip()))
    # LOG lines that name another card than the wire
    for f in flows:
        for x in f["_fl"].get("log_wire_disagreements", []):
            notes.append("%s flow %s %s:%s -> %s:%s: %d of its %d paired filter %s LOG lines say %s=%s%s while the "
                         "packet was on %s's wire (first at %.6f)" % (
                             f["role"], f["proto"], f["src"], f["sport"], f["dst"], f["dport"], x["count"],
                             x["lines_paired"], x["hook"], "OUT" if x["hook"] == "OUTPUT" else "IN", x["logged"],
                             " with MARK=" + "/".join(x["marks"]) if x["marks"] else "", x["wire"], x["first_ts"]))
    # how much of each flow the LOG rules covered, when they log a sample only
    rsets = [r for _, r in rule_epochs if r]
    if any(x["limited"] or any(o in ("--sport", "--dport") for _, o, _ in x["conds"])
           for r in rsets for ch in r.values() for x in ch):
        for fi, f in enumerate(flows):
            n_out = sum(1 for p in f["_pk"] if p[2] == "out")
            n_in = sum(1 for p in f["_pk"] if p[2] == "in")
            notes.append("LOG coverage of the %s flow %s %s:%s -> %s:%s: %d of %d outgoing packets have a filter "
                         "OUTPUT line, %d of %d incoming a filter INPUT line" % (
                             f["role"], f["proto"], f["src"], f["sport"], f["dst"], f["dport"],
                             paired[(fi, "OUTPUT")], n_out, paired[(fi, "INPUT")], n_in))
    # bundle variants of the optional files (only what differs from the lab's usual forms)
    variants = []
    ipt = sorted(glob.glob(os.path.join(B, "ip/*/iptables.txt")))
    if ipt and all(not any(l.startswith("*") for l in open(x)) and any(l.startswith("-P ") for l in open(x))
                   for x in ipt):
        variants.append("ip/<moment>/iptables.txt written by 'iptables -S' (no *table, :CHAIN or COMMIT lines)")
    if " " in changes_sep:
        variants.append("changes.log fields separated by one space, not a tab")
    ctf = os.path.join(B, "conntrack.txt")
    if os.path.exists(ctf) and any("flow entries have been shown" in l for l in open(ctf)):
        ctl = [l.strip() for l in open(ctf) if l.strip()]
        at = next(n for n, l in enumerate(ctl, 1) if "flow entries have been shown" in l)
        variants.append("conntrack.txt holds conntrack's stderr count line '%s' as line %d of %d%s" % (
            ctl[at - 1], at, len(ctl), " (with 2>&1 into a file stderr comes first: conntrack's stdout is "
                                       "flushed only at exit)" if at == 1 else ""))
    if os.path.exists(os.path.join(B, "sysctl.txt")):
        variants.append("sysctl.txt at the bundle root (%s)" % ("and under ip/" if glob.glob(
            os.path.join(B, "ip/*/sysctl.txt")) else "none under ip/"))
    known = {"any.pcap", "all.pcapng", "kern.dmesg", "kern.journal", "kern.syslog", "btime", "changes.log",
             "conntrack.txt", "scenario.json", "ip", "sysctl.txt"}
    unknown = sorted(x for x in os.listdir(B) if x not in known and not x.endswith(".pcap"))
    if unknown:
        variants.append("files nicpath does not know: " + ", ".join(unknown))
    no_t = sorted(os.path.basename(os.path.dirname(x)) for x in glob.glob(os.path.join(B, "ip/*/addr.json"))
                  if not os.path.exists(os.path.join(os.path.dirname(x), "taken_at")))
    if no_t:
        variants.append("ip/%s have no taken_at" % ", ip/".join(no_t))
    rt = os.path.join(a.work, "removed_taken_at.txt")
    if os.path.exists(rt):
        variants.append("the removed taken_at values were: " + "; ".join(
            l.strip().replace("\t", " ") for l in open(rt) if l.strip()))
    if variants:
        notes.append("bundle variants: " + "; ".join(variants))

    ktxt = []
    kinds = collections.Counter(x["kind"] for x in findings)
    if kinds:
        ktxt.append(" The captures show: " + ", ".join(
            "%s (%d)" % kv for kv in sorted(kinds.items())) + ".")
    else:
        ktxt.append(" The captures show no finding.")
    if port_failovers:
        ktxt[0] += " Bridge port failovers: " + ", ".join(
            "%s %s -> %s at %.6f" % (x["card"], x["from"], x["to"], x["first_ts"]) for x in port_failovers) + "."

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
    if lower_devices:
        out["host"]["lower_devices"] = lower_devices
    if port_failovers is not None:
        out["port_failovers"] = port_failovers
    with open(os.path.join(B, "scenario.json"), "w") as fh:
        json.dump(out, fh, indent=2)
        fh.write("\n")
    for n in notes:
        print("note:", n, file=sys.stderr)
    for x in findings:
        print("finding:", x["kind"], x["flow"], x["ifaces"], x["first_ts"], file=sys.stderr)


if __name__ == "__main__":
    main()
