"""Netfilter rule snapshots: ``iptables-save`` / ``ip6tables-save`` and ``nft list ruleset``.

A bundle keeps them per moment beside the ip snapshots (``ip/<moment>/iptables.txt``,
``ip6tables.txt``, ``nft.txt``), so two moments can be compared: which NAT rule was replaced
between them. Rules are kept as written, with packet counters taken out (they change between
snapshots without the rule changing); NAT rules (SNAT, DNAT, MASQUERADE, REDIRECT, NETMAP, nft
``snat``/``dnat``/``masquerade``/``redirect``) also get their action and target.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: File names in a moment directory (or, as ``nicpath collect`` names them, at the top of a
#: bundle) and the syntax each holds.
RULE_FILES = {
    "iptables.txt": "iptables",
    "ip6tables.txt": "iptables",
    "nft.txt": "nft",
    "iptables-save.txt": "iptables",
    "ip6tables-save.txt": "iptables",
    "nft-ruleset.txt": "nft",
}
IPT_NAT_TARGETS = {"SNAT", "DNAT", "MASQUERADE", "REDIRECT", "NETMAP"}
IPT_TO = re.compile(r"--to(?:-source|-destination|-ports|)\s+(\S+)")
NFT_NAT = re.compile(r"\b(snat|dnat|masquerade|redirect)\b(?:\s+(?:ip6?\s+)?to\s+(\S+))?")
NFT_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")
NFT_HANDLE = re.compile(r"\s*# handle \d+$")  # nft -a


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: where it sits and its text (counters removed); NAT rules name action and
    target (``to``: the --to-source/--to-destination/--to-ports or nft ``to`` value)."""

    table: str
    chain: str
    text: str
    line: int
    nat: str | None = None
    to: str | None = None

    def describe(self) -> str:
        return f"{self.table} {self.chain}: {self.text}"


@dataclass(frozen=True, slots=True)
class Ruleset:
    """The rules of one file at one moment."""

    path: str
    syntax: str
    rules: tuple[Rule, ...]

    @property
    def nat_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.nat)


def parse_iptables_save(lines: list[str], *, source: str) -> Ruleset:
    """``iptables-save`` output: ``*table``, ``:CHAIN POLICY [p:b]``, ``-A CHAIN ...``,
    ``COMMIT``."""
    rules = []
    table = None
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
            continue
        if line == "COMMIT":
            table = None
            continue
        if line.startswith(":") and table:
            continue
        counters = re.match(r"^\[\d+:\d+\]\s+", line)  # iptables-save -c
        if counters:
            line = line[counters.end() :]
        if line.startswith("-A ") and table:
            words = line.split()
            if len(words) < 2:
                raise InputError(source, "-A without a chain", record=no, unit="line")
            chain = words[1]
            nat = to = None
            if "-j" in words[:-1]:
                target = words[words.index("-j") + 1]
                if target in IPT_NAT_TARGETS:
                    nat = target.lower()
                    m = IPT_TO.search(line)
                    to = m.group(1) if m else None
            rules.append(Rule(table, chain, line, no, nat, to))
            continue
        raise InputError(source, f"not iptables-save output: {line[:60]!r}", record=no, unit="line")
    return Ruleset(source, "iptables", tuple(rules))


def parse_nft(lines: list[str], *, source: str) -> Ruleset:
    """``nft list ruleset`` output: ``table FAMILY NAME {`` ``chain NAME {`` rules ``}``.

    Sets, maps and other objects are skipped whole; a chain's ``type ... hook ...`` and
    ``policy`` lines are not rules."""
    rules = []
    stack: list[tuple[str, str]] = []  # (block kind, name)
    for no, raw in enumerate(lines, 1):
        line = NFT_HANDLE.sub("", raw.strip())
        if not line or line.startswith("#"):
            continue
        opens, closes = line.count("{"), line.count("}")
        words = line.split()
        if opens > closes and line.endswith("{"):
            if not stack and words[0] == "table" and len(words) >= 3:
                stack.append(("table", f"{words[1]} {words[2]}"))
            elif stack and stack[-1][0] == "table" and words[0] == "chain" and len(words) >= 2:
                stack.append(("chain", words[1]))
            elif stack:
                stack.append(("other", words[0]))
            else:
                raise InputError(
                    source, f"not nft ruleset output: {line[:60]!r}", record=no, unit="line"
                )
            continue
        if line == "}":
            if not stack:
                raise InputError(source, "unbalanced '}'", record=no, unit="line")
            stack.pop()
            continue
        if not stack:
            raise InputError(
                source, f"not nft ruleset output: {line[:60]!r}", record=no, unit="line"
            )
        if stack[-1][0] != "chain" or words[0] in ("type", "policy"):
            continue
        text = NFT_COUNTER.sub("counter", line)
        m = NFT_NAT.search(text)
        rules.append(
            Rule(
                stack[0][1],
                stack[-1][1],
                text,
                no,
                m.group(1) if m else None,
                m.group(2) if m else None,
            )
        )
    if stack:
        raise InputError(source, "ruleset ends inside a block (missing '}')")
    return Ruleset(source, "nft", tuple(rules))


def read_rulesets(directory: str | os.PathLike) -> list[Ruleset]:
    """The rule files of one moment directory (any of ``RULE_FILES``); none is fine."""
    out = []
    for name, syntax in RULE_FILES.items():
        path = Path(directory) / name
        if not path.exists():
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(path, "not UTF-8 text", offset=exc.start) from None
        parse = parse_iptables_save if syntax == "iptables" else parse_nft
        out.append(parse(lines, source=str(path)))
    return out


def nat_rule_changes(before: list[Ruleset], after: list[Ruleset]) -> tuple[list[Rule], list[Rule]]:
    """NAT rules in ``before`` and not in ``after`` (removed or replaced), and the reverse.

    Compared within one syntax, so iptables-save and nft listings of the same rules (iptables-nft
    shows both) are not counted twice; iptables-save wins when both exist."""
    syntaxes = {r.syntax for r in before} & {r.syntax for r in after}
    syntax = "iptables" if "iptables" in syntaxes else "nft" if "nft" in syntaxes else None
    if syntax is None:
        return [], []

    def nat(rulesets: list[Ruleset]) -> list[Rule]:
        return [r for rs in rulesets if rs.syntax == syntax for r in rs.nat_rules]

    old, new = nat(before), nat(after)
    old_keys = {(r.table, r.chain, r.text) for r in old}
    new_keys = {(r.table, r.chain, r.text) for r in new}
    removed = [r for r in old if (r.table, r.chain, r.text) not in new_keys]
    added = [r for r in new if (r.table, r.chain, r.text) not in old_keys]
    return removed, added
