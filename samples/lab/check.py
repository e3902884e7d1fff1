#!/usr/bin/env python3
"""Self-checks of one recorded bundle: check.py BUNDLE [--namespaces PREFIX]

Exit 0 when all checks pass, 2 when any.pcap disagrees with the per-device captures, or a
macvlan child's capture has frames its parent's lacks (the recorder then re-records the
scenario), 1 for any other failure.

The per-device captures are every <dev>.pcap of the bundle but any.pcap: the cards of
scenario.json (host.interfaces) and, with stacked devices, the lower devices under them
(macvlan parent, bridge ports), which see the cards' packets again; together they hold what
`tcpdump -i any` holds.
"""
import argparse
import collections
import datetime
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pcaplib  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("bundle")
ap.add_argument("--namespaces", help="prefix of the scenario's namespaces, which must all be gone")
a = ap.parse_args()
B = a.bundle
fails, any_mismatch = [], False


def fail(msg):
    fails.append(msg)
    print("FAIL:", msg)


def ok(msg):
    print("ok:  ", msg)


sc = json.load(open(os.path.join(B, "scenario.json")))
cards = [i["name"] for i in sc["host"]["interfaces"]]
links = json.load(open(os.path.join(B, "ip/before/link.json")))
ifindex = {l["ifindex"]: l["ifname"] for l in links}
devices = sorted(f[:-5] for f in os.listdir(B) if f.endswith(".pcap") and f != "any.pcap")
if not set(cards) <= set(devices):
    fail("cards %s without a capture (captures: %s)" % (sorted(set(cards) - set(devices)), devices))

# 1. every capture reads; link types
per_card = {}
for c in devices:
    lt, pk = pcaplib.read_pcap(os.path.join(B, c + ".pcap"))
    if lt != 1:
        fail("%s.pcap link type %d, expected 1 (Ethernet)" % (c, lt))
    per_card[c] = pk
lt, anyp = pcaplib.read_pcap(os.path.join(B, "any.pcap"))
if lt != 276:
    fail("any.pcap link type %d, expected 276 (LINUX_SLL2)" % lt)
else:
    ok("any.pcap is LINUX_SLL2 (276), %d packets" % len(anyp))
sections, ngpk = pcaplib.read_pcapng_blocks(os.path.join(B, "all.pcapng"))
names = [i["name"] for i in sections[0]] if sections else []
if len(sections) != 1 or sorted(names) != sorted(devices):
    fail("all.pcapng interfaces %s (sections %d), expected one IDB per captured device %s"
         % (names, len(sections), devices))
else:
    ok("all.pcapng: one section, IDBs %s, %d packets" % (names, len(ngpk)))
for c in devices:  # dumpcap opens the cards after tcpdump and may miss the first frames: a note;
    # any other difference: re-record
    ng = collections.Counter(bytes(p[3]) for p in ngpk if names and names[p[1]] == c)
    pc = collections.Counter(fr for _, fr in per_card.get(c, []))
    if ng != pc:
        first_ng = min((p[2] for p in ngpk if names and names[p[1]] == c), default=None)
        left = collections.Counter(ng)
        early = late = 0
        for ts, fr in per_card.get(c, []):
            if left[fr]:
                left[fr] -= 1
            elif first_ng is not None and ts < first_ng:
                early += 1
            else:
                late += 1
        if late or sum((ng - pc).values()):
            any_mismatch = True
            fail("all.pcapng on %s: %d frames missing, %d extra compared with %s.pcap"
                 % (c, sum((pc - ng).values()), sum((ng - pc).values()), c))
        else:
            print("note: all.pcapng on %s lacks the first %d frame(s) of %s.pcap, sent before dumpcap "
                  "opened the device" % (c, early, c))

# 2. same IP packets in the per-card captures and in any.pcap (loopback excluded)
cm = collections.Counter()
for c, pk in per_card.items():
    for ts, fr in pk:
        _, _, et, pl = pcaplib.eth_split(fr)
        i = pcaplib.ip_info(et, pl)
        if i:
            cm[i["raw"]] += 1
am = collections.Counter()
for ts, fr in anyp:
    proto, idx, ptype, pl = pcaplib.sll2_split(fr)
    if ifindex.get(idx) == "lo":
        continue
    i = pcaplib.ip_info(proto, pl)
    if i:
        am[i["raw"]] += 1
miss_any, miss_card = cm - am, am - cm
if miss_any or miss_card:
    any_mismatch = True
    fail("IP packets: %d in per-card captures but not in any.pcap, %d in any.pcap but not per card"
         % (sum(miss_any.values()), sum(miss_card.values())))
    for label, miss in (("missing from any.pcap", miss_any), ("only in any.pcap", miss_card)):
        for raw in miss:
            i = pcaplib.ip_info(0x0800 if raw[0] >> 4 == 4 else 0x86DD, raw)
            print("  %s: %s %s:%s -> %s:%s len %d" % (label, i["proto"], i["src"], i["sport"], i["dst"],
                                                     i["dport"], len(raw)))
else:
    ok("per-device captures and any.pcap hold the same %d IP packets" % sum(cm.values()))

# 2b. stacked devices: a macvlan parent sees every frame of its children again (F7)
link_of = {l["ifname"]: l for l in links}
for c in cards:
    par = link_of.get(c, {}).get("link")
    if par in per_card:
        pc = collections.Counter(fr for _, fr in per_card[par])
        ch = collections.Counter(fr for _, fr in per_card[c])
        missing = ch - pc
        if missing:
            any_mismatch = True
            fail("%d frames of %s are not on its parent %s's capture" % (sum(missing.values()), c, par))
        else:
            ok("all %d frames of %s are on its parent %s's capture again" % (sum(ch.values()), c, par))
# bridge ports: port_failovers present, its times packet times on the ports
bridged = [c for c in cards if any(l.get("master") == c and l["ifname"] in per_card for l in links)]
if bridged:
    pf = sc.get("port_failovers")
    if pf is None:
        fail("bridge %s with captured ports but no port_failovers in scenario.json" % bridged)
    else:
        for x in pf:
            if x["first_ts"] not in {round(ts, 6) for ts, _ in per_card[x["to"]]}:
                fail("port failover first_ts %.6f is not a packet time on %s" % (x["first_ts"], x["to"]))
        ok("port_failovers: %s" % ", ".join("%s %s->%s at %.6f" % (x["card"], x["from"], x["to"], x["first_ts"])
                                            for x in pf))

# 3. kernel log renderings agree
def msgs(path, rx):
    out = []
    for line in open(path):
        m = rx.match(line.rstrip("\n"))
        if not m:
            fail("%s: unparsable line %r" % (os.path.basename(path), line[:80]))
            continue
        out.append(m.groups())
    return out


d = msgs(os.path.join(B, "kern.dmesg"), re.compile(r"^\[\s*(\d+)\.(\d{6})\] (.*)$"))
j = msgs(os.path.join(B, "kern.journal"), re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})\+0000 nicpath-lab kernel: (.*)$"))
s = msgs(os.path.join(B, "kern.syslog"), re.compile(
    r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) nicpath-lab kernel: (.*)$"))
if [x[2] for x in d] == [x[1] for x in j] == [x[1] for x in s] and d:
    ok("kern.dmesg/journal/syslog: the same %d lines (%d LOG lines)" % (
        len(d), sum(1 for x in d if x[2].startswith("[FILTER-"))))
else:
    fail("kernel log renderings differ or are empty (%d/%d/%d lines)" % (len(d), len(j), len(s)))
for (ds, du, _), (jt, _), (st, _) in zip(d, j, s):
    jw = datetime.datetime.strptime(jt, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    if jw.strftime("%b %e %H:%M:%S") != st:
        fail("syslog time %s does not match journal time %s" % (st, jt))
        break
btime = open(os.path.join(B, "btime")).read().strip()
if not btime.isdigit():
    fail("btime is not an integer: %r" % btime)

# LOG lines against packets: journal time minus capture time, matched on (card, src, dst, IP ID)
jt_of = {}
pk_time = {}
for c, pk in per_card.items():
    for ts, fr in pk:
        dm, sm, et, pl = pcaplib.eth_split(fr)
        i = pcaplib.ip_info(et, pl)
        if i and i["ipid"] is not None:
            pk_time.setdefault((c, i["src"], i["dst"], i["ipid"]), ts)
deltas = []
for (_, _, msg), (jtime, _) in zip(d, j):
    m = re.match(r"^\[FILTER-(INPUT|OUTPUT) \w+\] IN=(\S*) OUT=(\S*) .*?SRC=(\S+) DST=(\S+) .*? ID=(\d+) ", msg)
    if not m:
        continue
    card = m.group(2) or m.group(3)
    k = (card, m.group(4), m.group(5), int(m.group(6)))
    if k in pk_time:
        jw = datetime.datetime.strptime(jtime, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
        deltas.append(jw.timestamp() - pk_time[k])
if deltas:
    deltas.sort()
    med = deltas[len(deltas) // 2]
    print("info: %d IPv4 LOG lines matched to packets; journal time - capture time: median %.6f s, "
          "min %.6f, max %.6f" % (len(deltas), med, deltas[0], deltas[-1]))
    if abs(med) > 0.05:
        fail("journal times are %.3f s off the capture clock" % med)

# 4. flows present; findings' first_ts are packet times on the named card
times = {c: {round(ts, 6) for ts, _ in pk} for c, pk in per_card.items()}
for f in sc["flows"]:
    if not f["packets"]:
        fail("flow without packets: %s" % f)
ok("%d flows, all with packets" % len(sc["flows"]))
for x in sc["expected_findings"]:
    card = x["ifaces"][-1] if x["kind"] not in ("no_route_egress",) else None
    cand = [card] if card else cards
    if not any(x["first_ts"] in times[c] for c in cand):
        fail("finding %s first_ts %.6f is not a packet time on %s" % (x["kind"], x["first_ts"], cand))
ok("%d expected findings, first_ts checked" % len(sc["expected_findings"]))
for f in sc["flows"]:
    for x in f.get("log_wire_disagreements", []):
        if x["first_ts"] not in times.get(x["wire"], ()):
            fail("log_wire_disagreements first_ts %.6f is not a packet time on %s" % (x["first_ts"], x["wire"]))
        else:
            ok("flow %s:%s: %d filter %s lines name %s for packets on %s" % (
                f["src"], f["sport"], x["count"], x["hook"], x["logged"], x["wire"]))
if not sc["quiet_flows"]:
    fail("no quiet flow")
size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(B) for f in fs)
if size > 1_000_000:
    fail("bundle is %d bytes" % size)
else:
    ok("bundle size %d bytes" % size)

# 5. namespaces gone
if a.namespaces:
    left = [l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
            if l.startswith(a.namespaces)]
    if left:
        fail("namespaces left: %s" % left)
    else:
        ok("no %s* namespace left" % a.namespaces)

if fails:
    sys.exit(2 if any_mismatch else 1)
print("all checks passed for", B)
