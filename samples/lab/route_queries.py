#!/usr/bin/env python3
"""Ask the real kernel `ip -j route get` for a few hundred queries and save query + answer.

The queries come from the host's own snapshot (read here directly from the `ip -j` JSON, not
through nicpath, so the replay under test does not choose its own questions): every route's
prefix gives destinations (first, last, a random address; for IPv4 also the network and the
broadcast address), every rule gives a query that meets all its selectors and one that just
misses, and a seeded random mix adds sources (local, foreign, martian), marks, input and
output cards, protocols and ports, TOS and uid. Each line of the output is
``{"family", "query": {to, from, iif, oif, mark, ipproto, sport, dport, tos, uid}, "argv",
"answer" | "error"}``; ``answer`` is the kernel's JSON object, ``error`` its message
(``Network is unreachable``, ...).
"""
import argparse
import ipaddress
import json
import os
import random
import subprocess

OUTSIDE = {
    4: ["8.8.8.8", "1.1.1.1", "192.0.2.99", "203.0.113.200", "100.64.1.1", "255.255.255.255",
        "224.0.0.251", "239.1.2.3", "127.0.0.5", "10.250.0.1"],
    6: ["2606:4700::1111", "2001:db8:ffff::1", "ff02::1", "ff05::2", "::1", "fe80::1",
        "fe80::99", "3ffe::1", "2002:c000:299::1", "fc00::5"],
}
MARTIAN_SOURCES = {4: ["127.0.0.1", "224.0.0.5", "255.255.255.255"], 6: ["::1", "ff02::1"]}


def load(path, name):
    p = os.path.join(path, name)
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return json.load(f)


def family_of(text):
    return ipaddress.ip_address(text).version


class Host:
    def __init__(self, snap):
        links = load(snap, "link.json")
        self.cards = [d["ifname"] for d in links if d["ifname"] != "lo"]
        self.local = {4: [], 6: []}
        self.subnets = {4: [], 6: []}
        for d in load(snap, "addr.json"):
            for a in d.get("addr_info", []):
                fam = 6 if a["family"] == "inet6" else 4
                self.local[fam].append(a["local"])
                self.subnets[fam].append(
                    ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
        self.prefixes = {4: [], 6: []}
        for name in ("route.json", "route6.json"):
            for r in load(snap, name):
                dst = r.get("dst", "default")
                if dst == "default":
                    continue
                net = ipaddress.ip_network(dst if "/" in dst else dst, strict=False)
                if net not in self.prefixes[net.version]:
                    self.prefixes[net.version].append(net)
        self.rules = {4: load(snap, "rule.json"), 6: load(snap, "rule6.json")}


def hosts_of(net, rng):
    """First, last and a random address of a prefix; IPv4 adds network and broadcast."""
    n = net.num_addresses
    if n == 1:
        return [net.network_address]
    out = [net.network_address + 1, net.network_address + min(n - 2, 2**32)]
    out.append(net.network_address + rng.randrange(1, max(2, min(n - 1, 2**40))))
    if net.version == 4 and net.prefixlen >= 16:
        out += [net.network_address, net.broadcast_address]
    return out


def destinations(host, fam, rng):
    out = []
    for net in host.prefixes[fam]:
        out += [str(a) for a in hosts_of(net, rng)]
    for rule in host.rules[fam]:
        if "dst" in rule:
            net = prefix(rule, "dst", fam)
            out += [str(a) for a in hosts_of(net, rng)[:2]]
    out += OUTSIDE[fam]
    return list(dict.fromkeys(out))


def prefix(rule, key, fam):
    """A rule's from/to prefix (ip -j omits the length of a host address)."""
    plen = rule.get(f"{key}len", 32 if fam == 4 else 128)
    return ipaddress.ip_network(f"{rule[key]}/{plen}", strict=False)


def rule_ports(rule, key):
    if key in rule:
        return int(rule[key]), int(rule[key])
    if f"{key}_start" in rule:
        return int(rule[f"{key}_start"]), int(rule[f"{key}_end"])
    return None


def rule_query(rule, host, fam, dests, rng, miss):
    """A query meeting every selector of the rule (miss: all but one, which just misses)."""
    q = {"to": rng.choice(dests)}
    misses = []
    if "dst" in rule:
        net = prefix(rule, "dst", fam)
        q["to"] = str(net.network_address + 1) if net.num_addresses > 1 else str(net[0])
        misses.append(("to", str(net.broadcast_address + 1)))
    if "src" in rule and rule["src"] != "all":
        net = prefix(rule, "src", fam)
        inside = [a for a in host.local[fam] if ipaddress.ip_address(a) in net]
        q["from"] = inside[0] if inside else str(net.network_address + 1)
        outside = [a for a in host.local[fam] if ipaddress.ip_address(a) not in net]
        if outside:
            misses.append(("from", outside[0]))
    if "fwmark" in rule:
        mark = int(rule["fwmark"], 16)
        mask = int(rule.get("fwmask", "0xffffffff"), 16)
        q["mark"] = mark | (rng.getrandbits(8) & ~mask & 0xFF)
        low = mask & -mask
        misses.append(("mark", mark ^ low))
    if "iif" in rule and rule["iif"] in host.cards:
        q["iif"] = rule["iif"]
        others = [c for c in host.cards if c != rule["iif"]]
        misses.append(("iif", rng.choice(others)))
    if "oif" in rule and rule["oif"] in host.cards:
        q["oif"] = rule["oif"]
        others = [c for c in host.cards if c != rule["oif"]]
        misses.append(("oif", rng.choice(others)))
    if "ipproto" in rule:
        q["ipproto"] = rule["ipproto"]
        misses.append(("ipproto", "udp" if rule["ipproto"] == "tcp" else "tcp"))
    for key in ("sport", "dport"):
        rng_ports = rule_ports(rule, key)
        if rng_ports:
            q[key] = rng.randint(*rng_ports)
            misses.append((key, rng_ports[1] + 1))
    if "uid_start" in rule:
        q["uid"] = rng.randint(int(rule["uid_start"]), int(rule["uid_end"]))
        misses.append(("uid", int(rule["uid_end"]) + 1))
    if "tos" in rule:
        q["tos"] = int(rule["tos"], 16)
        misses.append(("tos", 0))
    if "iif" in q and "from" not in q:
        q["from"] = rng.choice([d for d in dests if d not in host.local[fam]])
    if miss:
        if not misses:
            return None
        key, value = rng.choice(misses)
        q[key] = value
    return q


def random_query(host, fam, dests, marks, rng):
    q = {"to": rng.choice(dests)}
    foreign = [d for d in dests if d not in host.local[fam]]
    r = rng.random()
    if r < 0.45:
        q["from"] = rng.choice(host.local[fam])
    elif r < 0.6:
        q["from"] = rng.choice(foreign)
    elif r < 0.63:
        q["from"] = rng.choice(MARTIAN_SOURCES[fam])
    if rng.random() < 0.25:
        q["iif"] = rng.choice(host.cards)
        if "from" not in q or rng.random() < 0.7:
            q["from"] = rng.choice(foreign)
    elif rng.random() < 0.15:
        q["oif"] = rng.choice(host.cards)
    if rng.random() < 0.3 and marks:
        q["mark"] = rng.choice(marks)
    if rng.random() < 0.25:
        q["ipproto"] = rng.choice(["tcp", "udp"])
        q["sport"] = rng.choice([1000, 5005, 40000, 5011])
        q["dport"] = rng.choice([22, 53, 443, 8080])
    if rng.random() < 0.06:
        q["tos"] = 0x10
    if rng.random() < 0.06:
        q["uid"] = rng.choice([1500, 2500])
    return q


def arrivals(host, fam, dests, rng, count):
    """Packets arriving on each card from peers: sources in each card's subnet and behind each
    route, to local addresses, forwarded destinations and broadcasts."""
    peers = [str(net.network_address + 1) for net in host.subnets[fam] if net.prefixlen < 32]
    peers += [str(net.network_address + 7) for net in host.prefixes[fam] if net.num_addresses > 8]
    peers = [p for p in peers if p not in host.local[fam]]
    combos = [
        {"to": to, "from": src, "iif": card}
        for card in host.cards
        for src in peers
        for to in rng.sample(dests, 3) + rng.sample(host.local[fam], 1)
    ]
    return rng.sample(combos, min(count, len(combos)))


def argv_of(ns, fam, q):
    argv = ["ip", "-n", ns, "-j", f"-{fam}", "route", "get", q["to"]]
    for key in ("from", "iif", "oif", "mark", "ipproto", "sport", "dport", "tos", "uid"):
        if key in q:
            value = q[key]
            if key in ("mark", "tos"):
                value = hex(value)
            argv += [key, str(value)]
    return argv


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ns", required=True)
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--count", type=int, required=True, help="random queries per family")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    host = Host(args.snapshot)
    queries = []
    for fam in (4, 6):
        if not host.local[fam] or (fam == 6 and not host.prefixes[6]):
            continue
        dests = destinations(host, fam, rng)
        custom = [r for r in host.rules[fam] if r.get("priority") not in (0, 32766, 32767)]
        marks = [0]
        for r in custom:
            if "fwmark" in r:
                m = int(r["fwmark"], 16)
                marks += [m, m | 0x100, m ^ 1]
        queries += [{"to": d} for d in dests]
        for rule in custom:
            for miss in (False, True):
                q = rule_query(rule, host, fam, dests, rng, miss)
                if q:
                    queries.append(q)
        # IPv6 only where the setup has IPv6 routes of its own; otherwise a handful.
        count = args.count if len(host.prefixes[fam]) > 4 else 10
        queries += [random_query(host, fam, dests, marks, rng) for _ in range(count)]
        queries += arrivals(host, fam, dests, rng, count // 2)
    seen = set()
    with open(args.out, "w") as out:
        for q in queries:
            key = json.dumps(q, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            fam = family_of(q["to"])
            argv = argv_of(args.ns, fam, q)
            proc = subprocess.run(argv, capture_output=True, text=True)
            line = {"family": fam, "query": q, "argv": ["ip", "-j", *argv[4:]]}
            if proc.returncode == 0:
                answers = json.loads(proc.stdout)
                line["answer"] = answers[0]
            else:
                line["error"] = proc.stderr.strip().removeprefix("RTNETLINK answers: ")
            out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
