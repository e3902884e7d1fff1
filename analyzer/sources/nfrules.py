"""Netfilter rule snapshots: ``iptables-save`` or ``iptables -S`` (and their ip6tables forms)
and ``nft list ruleset``.

A bundle keeps them per moment beside the ip snapshots (``ip/<moment>/iptables.txt``,
``ip6tables.txt``, ``nft.txt``), so two moments can be compared: which NAT rule was replaced
between them. Rules are kept as written, with packet counters taken out (they change between
snapshots without the rule changing); NAT rules (SNAT, DNAT, MASQUERADE, REDIRECT, NETMAP, nft
``snat``/``dnat``/``masquerade``/``redirect``) also get their action and target, and LOG rules
that log only a sample (a ``limit`` or ``hashlimit`` match) are marked: a packet they cover may
have no line.

``iptables -S`` prints no table: a file may hold several outputs one after another (``iptables
-S; iptables -t nat -S``), each starting with its ``-P`` lines. The table of each comes from a
comment before it (``# table nat``, ``# iptables -t nat -S``), else from NAT targets (valid only
in nat), else from its built-in chains (nat, mangle and raw have their own set; filter's is also
security's, so only the first such output is taken for filter). When none tells, its rules are
kept under table ``unknown`` and the ruleset's ``notes`` say so.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .bundle import unreadable_entry

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
IPT_COUNTERS = re.compile(r"\s+-c\s+\d+\s+\d+(?=\s|$)")  # iptables -S -v
NFT_NAT = re.compile(r"\b(snat|dnat|masquerade|redirect)\b(?:\s+(?:ip6?\s+)?to\s+(\S+))?")
NFT_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")
NFT_HANDLE = re.compile(r"\s*# handle \d+$")  # nft -a
NFT_QUOTED = re.compile(r'"[^"]*"')
#: A log statement that writes kernel log lines (``log group N`` sends to nflog instead).
NFT_LOG = re.compile(r"\blog\b(?![^;]*\bgroup\s+\d)")
#: A limit in an nft rule: native, or an iptables-nft ``-m limit``/``-m hashlimit`` match.
NFT_LIMIT = re.compile(r"\blimit rate\b|\bxt match (?:hash)?limit\b")
#: The iptables tables and the order of the built-in chains ``iptables -S`` lists with ``-P``.
IPT_TABLES = ("filter", "nat", "mangle", "raw", "security")
HOOK_ORDER = {"PREROUTING": 0, "INPUT": 1, "FORWARD": 2, "OUTPUT": 3, "POSTROUTING": 4}
#: Tables told by their built-in chains; filter's chains are also security's.
TABLE_BY_CHAINS = {
    frozenset({"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}): "nat",
    frozenset({"PREROUTING", "OUTPUT", "POSTROUTING"}): "nat",  # kernels before 2.6.36
    frozenset(HOOK_ORDER): "mangle",
    frozenset({"PREROUTING", "OUTPUT"}): "raw",
    frozenset({"INPUT", "FORWARD", "OUTPUT"}): "filter",
}
#: A comment that names the table of the ``iptables -S`` output after it: ``-t nat``,
#: ``table nat``, or only the name (``nat``, ``*nat``, ``== nat table ==``).
_TABLE_WORD = "(" + "|".join(IPT_TABLES) + ")"
TABLE_COMMENT = re.compile(
    rf"(?:-t\s*|--table[=\s]\s*|\btable\s+){_TABLE_WORD}\b|^\W*{_TABLE_WORD}\W*(?:table\W*)?$"
)
UNKNOWN_TABLE = "unknown"


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
    #: A LOG rule with a limit or hashlimit match: it logs a sample of what it covers.
    sampled_log: bool = False

    def describe(self) -> str:
        return f"{self.table} {self.chain}: {self.text}"


@dataclass(frozen=True, slots=True)
class Ruleset:
    """The rules of one file at one moment; ``form`` is the output it was read as
    (``iptables-save``, ``iptables -S``, ``nft list ruleset``), ``notes`` what it does not tell
    (the table of an ``iptables -S`` output)."""

    path: str
    syntax: str
    rules: tuple[Rule, ...]
    form: str = ""
    notes: tuple[str, ...] = ()

    @property
    def nat_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.nat)

    @property
    def sampled_log_rules(self) -> tuple[str, ...]:
        """The texts of the LOG rules that log only a sample (``-m limit``, ``-m hashlimit``,
        nft ``limit rate``): a packet they cover may have no log line. The rules themselves
        (with table and chain) are those of ``rules`` with ``sampled_log``."""
        return tuple(r.text for r in self.rules if r.sampled_log)


def _words(line: str) -> list[str]:
    """A rule's words as the shell splits them (a quoted log prefix is one word)."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _iptables_rule(table: str, line: str, no: int) -> Rule:
    """One ``-A CHAIN ...`` line (counters already taken out)."""
    words = _words(line)
    chain = words[1]
    target = words[words.index("-j") + 1] if "-j" in words[:-1] else None
    nat = to = None
    if target in IPT_NAT_TARGETS:
        nat = target.lower()
        m = IPT_TO.search(line)
        to = m.group(1) if m else None
    modules = {b for a, b in itertools.pairwise(words) if a in ("-m", "--match")}
    limited = bool(modules & {"limit", "hashlimit"}) or "--limit" in words
    return Rule(table, chain, line, no, nat, to, target == "LOG" and limited)


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
            if len(line.split()) < 2:
                raise InputError(source, "-A without a chain", record=no, unit="line")
            rules.append(_iptables_rule(table, IPT_COUNTERS.sub("", line), no))
            continue
        raise InputError(source, f"not iptables-save output: {line[:60]!r}", record=no, unit="line")
    return Ruleset(source, "iptables", tuple(rules), "iptables-save")


@dataclass
class _Listing:
    """One ``iptables -S`` output while it is read: its comment's table, built-in chains,
    user chains and rules (``-A`` lines)."""

    named: str | None
    first: int
    last: int = 0
    builtin: list[str] = field(default_factory=list)
    user: bool = False
    rules: list[tuple[str, int]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.builtin or self.user or self.rules)

    def opens_with(self, policy_chain: str | None, user_chain: bool) -> bool:
        """Whether this ``-P``/``-N`` line starts the next output: the built-in chains come
        first, in hook order, then the user chains, then the rules."""
        if policy_chain is not None:
            if self.user or self.rules:
                return True
            order = HOOK_ORDER.get(policy_chain, -1)
            return any(HOOK_ORDER.get(c, -1) >= order for c in self.builtin)
        return user_chain and bool(self.rules)


def parse_iptables_s(lines: list[str], *, source: str) -> Ruleset:
    """``iptables -S`` output, or several (``iptables -S; iptables -t nat -S``): ``-P CHAIN
    POLICY``, ``-N CHAIN``, ``-A CHAIN ...``, comments. The table of each output is told as the
    module docstring says, or ``unknown`` with a note."""
    listings = [_Listing(None, 1)]
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = TABLE_COMMENT.search(line.lstrip("#").strip())
            if m:
                named = _Listing(m.group(1) or m.group(2), no)
                if listings[-1].empty():
                    listings[-1] = named
                else:
                    listings.append(named)
            continue
        words = line.split()
        if words[0] not in ("-P", "-N", "-A") or len(words) < 2:
            raise InputError(
                source,
                f"not iptables-save or iptables -S output: {line[:60]!r}",
                record=no,
                unit="line",
            )
        current = listings[-1]
        if current.opens_with(words[1] if words[0] == "-P" else None, words[0] == "-N"):
            current = _Listing(None, no)
            listings.append(current)
        current.last = no
        if words[0] == "-P":
            current.builtin.append(words[1])
        elif words[0] == "-N":
            current.user = True
        else:
            current.rules.append((IPT_COUNTERS.sub("", line), no))
    rules: list[Rule] = []
    notes: list[str] = []
    filter_taken = False
    for listing in listings:
        drafts = [_iptables_rule(UNKNOWN_TABLE, text, no) for text, no in listing.rules]
        chains = frozenset(listing.builtin)
        table = "nat" if any(r.nat for r in drafts) else listing.named
        why = ""
        if table is None:
            table = TABLE_BY_CHAINS.get(chains, UNKNOWN_TABLE)
            if table == "filter" and filter_taken:
                table = UNKNOWN_TABLE
                why = (
                    f"built-in chains {', '.join(listing.builtin)}: filter's but also security's, "
                    "and an earlier output was taken for filter"
                )
        filter_taken = filter_taken or table == "filter"
        if table == UNKNOWN_TABLE and drafts:
            why = why or (
                f"built-in chains {', '.join(listing.builtin)}, which more than one table has"
                if listing.builtin
                else "no built-in chain"
            )
            count = f"{len(drafts)} rule{'s' if len(drafts) != 1 else ''}"
            notes.append(
                f"lines {listing.first}-{listing.last}: iptables -S output that does not say "
                f"its table (no table comment, no NAT target; {why}): its {count} kept "
                f"under table {UNKNOWN_TABLE!r}"
            )
        rules += [Rule(table, r.chain, r.text, r.line, r.nat, r.to, r.sampled_log) for r in drafts]
    return Ruleset(source, "iptables", tuple(rules), "iptables -S", tuple(notes))


def parse_iptables(lines: list[str], *, source: str) -> Ruleset:
    """``iptables-save`` output (``*table`` lines), else ``iptables -S`` output; a file of
    comments alone is an empty iptables-save."""
    stripped = [line.strip() for line in lines]
    saved = any(line.startswith(("*", ":", "COMMIT")) for line in stripped)
    content = any(line and not line.startswith("#") for line in stripped)
    return (parse_iptables_s if content and not saved else parse_iptables_save)(
        lines, source=source
    )


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
        bare = NFT_QUOTED.sub('""', text)  # a log prefix may say anything
        rules.append(
            Rule(
                stack[0][1],
                stack[-1][1],
                text,
                no,
                m.group(1) if m else None,
                m.group(2) if m else None,
                bool(NFT_LOG.search(bare) and NFT_LIMIT.search(bare)),
            )
        )
    if stack:
        raise InputError(source, "ruleset ends inside a block (missing '}')")
    return Ruleset(source, "nft", tuple(rules), "nft list ruleset")


def read_rulesets(
    directory: str | os.PathLike, *, unreadable: list[tuple[str, str]] | None = None
) -> list[Ruleset]:
    """The rule files of one moment directory (any of ``RULE_FILES``); none is fine.

    A file that cannot be read raises InputError; with ``unreadable`` given it is listed there
    (file, why) instead and the others are read."""
    out = []
    for name, syntax in RULE_FILES.items():
        path = Path(directory) / name
        if not path.exists():
            continue
        try:
            out.append(_read_ruleset(path, syntax))
        except (InputError, OSError) as exc:
            if unreadable is None:
                raise
            unreadable.append(unreadable_entry(path, exc))
    return out


def _read_ruleset(path: Path, syntax: str) -> Ruleset:
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(path, "not UTF-8 text", offset=exc.start) from None
    parse = parse_iptables if syntax == "iptables" else parse_nft
    return parse(lines, source=str(path))


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
