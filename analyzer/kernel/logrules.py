"""Which packets a LOG rule logs: what the absence of a LOG line can prove.

A missing LOG line means "not at the hook" only where a rule that logs every packet it matches
covers the packet. A rule with a ``limit`` or ``hashlimit`` match logs a sample (``nicpath
collect --log-rate`` installs such rules), and rules that match some flows only leave the others
unlogged (F6). This reads the LOG rules of an ``iptables-save`` / ``iptables -S`` ruleset and
answers, for one packet at one hook: ``full`` (a rule logs every such packet), ``sampled`` (only
rules that log a sample match it), ``none`` (no LOG rule matches it) or ``unknown`` (a rule with a
match this reader does not evaluate, or no ruleset of the packet's family).
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

from ..sources.nfrules import Ruleset

#: Protocol names ``-p`` takes.
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132}
#: ``-m`` modules whose matches are read here, or that do not narrow what is logged.
MODULES = {"tcp", "udp", "icmp", "icmp6", "multiport", "limit", "hashlimit", "comment"}
#: Options that take a value and do not narrow which packets match.
SKIPPED = {
    "--log-prefix",
    "--log-level",
    "--comment",
    "--limit",
    "--limit-burst",
    "--hashlimit",
    "--hashlimit-upto",
    "--hashlimit-above",
    "--hashlimit-burst",
    "--hashlimit-mode",
    "--hashlimit-name",
    "--hashlimit-srcmask",
    "--hashlimit-dstmask",
    "--hashlimit-htable-size",
    "--hashlimit-htable-max",
    "--hashlimit-htable-expire",
    "--hashlimit-htable-gcinterval",
}
FLAGS = {
    "--log-tcp-sequence",
    "--log-tcp-options",
    "--log-ip-options",
    "--log-uid",
    "--log-macdecode",
}
ALIASES = {
    "--source-port": "--sport",
    "--destination-port": "--dport",
    "--source": "-s",
    "--destination": "-d",
    "--in-interface": "-i",
    "--out-interface": "-o",
    "--protocol": "-p",
    "--match": "-m",
    "--jump": "-j",
    "--source-ports": "--sports",
    "--destination-ports": "--dports",
}


@dataclass(frozen=True)
class Packet:
    """What a LOG rule can match on, of one packet at a hook."""

    family: int
    proto: int
    src: str
    dst: str
    sport: int | None
    dport: int | None
    in_iface: str | None = None
    out_iface: str | None = None


@dataclass(frozen=True)
class LogRule:
    """One ``-j LOG`` rule of a built-in chain: its conditions ``(what, negated, value)``, whether
    it logs a sample, and whether every condition is one this reader evaluates."""

    family: int
    chain: str
    conditions: tuple[tuple[str, bool, str], ...]
    sampled: bool
    understood: bool
    text: str

    def matches(self, p: Packet) -> bool:
        return all(_holds(what, value, p) != negated for what, negated, value in self.conditions)


def _ports(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        out.append((int(low or 0), int(high or 65535) if _ else int(low)))
    return out


def _iface(pattern: str, name: str | None) -> bool:
    if name is None:
        return False
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _holds(what: str, value: str, p: Packet) -> bool:
    if what == "proto":
        number = int(value) if value.isdigit() else PROTOCOLS.get(value, -1)
        return value == "all" or number == p.proto
    if what in ("sport", "dport", "port"):
        ports = {"sport": (p.sport,), "dport": (p.dport,), "port": (p.sport, p.dport)}[what]
        ranges = _ports(value)
        return any(n is not None and lo <= n <= hi for n in ports for lo, hi in ranges)
    if what in ("src", "dst"):
        address = p.src if what == "src" else p.dst
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
    if what == "in":
        return _iface(value, p.in_iface)
    if what == "out":
        return _iface(value, p.out_iface)
    return False


def parse_rule(text: str, family: int) -> LogRule | None:
    """A ``-A CHAIN ... -j LOG ...`` line as a LogRule; None for other rules."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    words = [ALIASES.get(w, w) for w in words]
    if "-j" not in words or words[words.index("-j") + 1 : words.index("-j") + 2] != ["LOG"]:
        return None
    chain = words[1] if len(words) > 1 else ""
    conditions: list[tuple[str, bool, str]] = []
    sampled, understood, negate = False, True, False
    i = 2
    names = {"-i": "in", "-o": "out", "-p": "proto", "-s": "src", "-d": "dst", "--sport": "sport",
             "--dport": "dport", "--sports": "sport", "--dports": "dport"}  # fmt: skip
    while i < len(words):
        w = words[i]
        value = words[i + 1] if i + 1 < len(words) else ""
        if w == "!":
            negate = True
            i += 1
            continue
        if w in names:
            conditions.append((names[w], negate, value))
            i += 2
        elif w == "--ports":
            conditions.append(("port", negate, value))
            i += 2
        elif w == "-m":
            sampled |= value in ("limit", "hashlimit")
            understood &= value in MODULES
            i += 2
        elif w == "-j" or w in SKIPPED:
            i += 2
        elif w in FLAGS:
            i += 1
        else:  # a match this reader does not evaluate (--icmp-type, --ctstate, --mark, ...)
            understood = False
            i += 1
        negate = False
    return LogRule(family, chain, tuple(conditions), sampled, understood, text)


@dataclass(frozen=True)
class Coverage:
    """The LOG rules of one moment's rulesets, by family."""

    rules: tuple[LogRule, ...]
    families: frozenset[int]

    def of(self, p: Packet, chain: str) -> str:
        """``full``, ``sampled``, ``none`` or ``unknown`` for packet ``p`` at built-in
        ``chain`` (``INPUT``, ``OUTPUT``)."""
        if p.family not in self.families:
            return "unknown"
        mine = [r for r in self.rules if r.family == p.family and r.chain == chain]
        if any(r.understood and not r.sampled and r.matches(p) for r in mine):
            return "full"
        if any(not r.understood for r in mine):
            return "unknown"
        return "sampled" if any(r.matches(p) for r in mine) else "none"


def coverage(rulesets: tuple[Ruleset, ...] | list[Ruleset]) -> Coverage | None:
    """The LOG coverage the iptables rulesets tell (filter table; ``ip6tables*`` files are
    IPv6); None when there is no iptables ruleset (nft rulesets are not evaluated here)."""
    rules: list[LogRule] = []
    families: set[int] = set()
    for ruleset in rulesets:
        if ruleset.syntax != "iptables":
            continue
        family = 6 if "ip6tables" in ruleset.path.rsplit("/", 1)[-1] else 4
        families.add(family)
        for rule in ruleset.rules:
            if rule.table not in ("filter", "unknown"):
                continue
            parsed = parse_rule(rule.text, family)
            if parsed is not None:
                rules.append(parsed)
    return Coverage(tuple(rules), frozenset(families)) if families else None
