"""LOG rules for ``--log-rules``: rate-limited, recognisable by their prefix, removed exactly.

A LOG line says which card the routing decision chose for an outgoing packet (filter OUTPUT,
``OUT=``) and on which card a packet arrived (filter INPUT, ``IN=``): F6. The prefix
``[nicpath-<run> OUTPUT] `` names the hook the way analyze reads it (a hook word as a whole word,
``DEFAULT_HOOK_PREFIXES`` in ``sources/kernlog.py``) and the run, so this run's lines can be told
from every other LOG line in the machine-wide kernel log.

nft when it works: a table of its own, ``inet nicpath_<run>``, deleted as a whole. Otherwise
iptables and ip6tables: one rule at the top of INPUT and of OUTPUT each, deleted by the same
specification (its prefix holds the run id, so no other rule matches it). The chains log before
the host's filter rules (priority -1), so packets the host then drops are logged too.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .tools import error_text, run

HOOKS = ("OUTPUT", "INPUT")
MAX_RATE = 10000  # iptables' limit match cannot go higher


def prefix(run_id: str, hook: str) -> str:
    """The LOG prefix of one hook (at most 29 characters, the iptables limit).

    >>> prefix("3fa2c1", "OUTPUT")
    '[nicpath-3fa2c1 OUTPUT] '
    """
    return f"[nicpath-{run_id} {hook}] "


def run_marker(run_id: str) -> str:
    """What every LOG line of one run starts with."""
    return f"[nicpath-{run_id} "


def table_name(run_id: str) -> str:
    return f"nicpath_{run_id}"


def nft_ruleset(run_id: str, rate: int) -> str:
    """The nft table that logs every non-loopback packet in input and output."""
    chains = []
    for hook in HOOKS:
        dev = "oifname" if hook == "OUTPUT" else "iifname"
        chains.append(
            f"  chain {hook.lower()} {{\n"
            f"    type filter hook {hook.lower()} priority -1; policy accept;\n"
            f'    {dev} != "lo" limit rate {rate}/second burst {rate} packets '
            f'log prefix "{prefix(run_id, hook)}" flags tcp sequence\n'
            "  }\n"
        )
    return f"table inet {table_name(run_id)} {{\n{''.join(chains)}}}\n"


def iptables_rules(run_id: str, rate: int) -> list[tuple[str, str, list[str]]]:
    """(tool, chain, rule specification) for iptables and ip6tables."""
    out = []
    for tool in ("iptables", "ip6tables"):
        for hook in HOOKS:
            dev = "-o" if hook == "OUTPUT" else "-i"
            spec = ["!", dev, "lo", "-m", "limit", "--limit", f"{rate}/second"]
            spec += ["--limit-burst", str(rate), "-j", "LOG"]
            spec += ["--log-prefix", prefix(run_id, hook), "--log-tcp-sequence"]
            out.append((tool, hook, spec))
    return out


@dataclass
class LogRules:
    """The rules one run inserted, and the commands that remove exactly them."""

    tool: str
    run_id: str
    rate: int
    rules: list[str]
    undo: list[list[str]]
    checks: list[list[str]] = field(default_factory=list)
    removed: bool = False

    def undo_script(self) -> str:
        """The removal as sh lines, for the watchdog that runs them if the collector is killed."""
        return "".join(f"{shlex.join(cmd)} >/dev/null 2>&1\n" for cmd in self.undo)

    def present(self) -> bool:
        """True while any of the rules is still in the kernel."""
        return any(run(cmd).returncode == 0 for cmd in self.checks)

    def remove(self) -> list[str]:
        """Remove the rules; returns problems (empty when every rule is gone)."""
        problems = []
        for cmd in self.undo:
            res = run(cmd)
            if res.returncode != 0:
                problems.append(f"{shlex.join(cmd)}: {error_text(res.stderr) or 'failed'}")
        if self.present():
            problems.append("LOG rules still present after removal")
        else:
            self.removed = True
            problems = []
        return problems

    def to_dict(self) -> dict:
        return {
            "tool": self.tool,
            "prefixes": [prefix(self.run_id, hook) for hook in HOOKS],
            "rate_per_second": self.rate,
            "rules": self.rules,
            "removed": self.removed,
        }


def _nft(run_id: str, rate: int, nft: str) -> tuple[LogRules | None, str]:
    ruleset = nft_ruleset(run_id, rate)
    res = run([nft, "-f", "-"], stdin=ruleset)
    if res.returncode != 0:
        return None, error_text(res.stderr) or f"status {res.returncode}"
    table = ["inet", table_name(run_id)]
    return (
        LogRules(
            "nft",
            run_id,
            rate,
            [line.strip() for line in ruleset.splitlines() if "log prefix" in line],
            [[nft, "delete", "table", *table]],
            [[nft, "list", "table", *table]],
        ),
        "",
    )


def _iptables(run_id: str, rate: int, tools: dict[str, str | None], warnings: list[str]):
    rules, undo, checks = [], [], []
    for tool, chain, spec in iptables_rules(run_id, rate):
        path = tools.get(tool)
        if path is None:
            warnings.append(f"{tool} not found: no {tool} LOG rule in {chain}")
            continue
        res = run([path, "-w", "-I", chain, "1", *spec])
        if res.returncode != 0:
            warnings.append(f"{tool} -I {chain}: {error_text(res.stderr) or 'failed'}")
            continue
        rules.append(f"{tool} -I {chain} 1 {shlex.join(spec)}")
        undo.append([path, "-w", "-D", chain, *spec])
        checks.append([path, "-w", "-C", chain, *spec])
    if not rules:
        return None
    return LogRules("iptables", run_id, rate, rules, undo, checks)


def insert(
    run_id: str, rate: int, tools: dict[str, str | None]
) -> tuple[LogRules | None, list[str]]:
    """Insert the LOG rules with nft, else iptables/ip6tables; returns them and warnings."""
    warnings: list[str] = []
    if tools.get("nft"):
        rules, why = _nft(run_id, rate, tools["nft"])
        if rules:
            return rules, warnings
        warnings.append(f"nft could not add the LOG table ({why}); trying iptables")
    if tools.get("iptables") or tools.get("ip6tables"):
        rules = _iptables(run_id, rate, tools, warnings)
        if rules:
            return rules, warnings
    warnings.append("no LOG rules inserted: neither nft nor iptables could add them")
    return None, warnings
