"""LOG rules for ``--log-rules``: rate-limited, recognisable by their prefix, removed exactly,
and gone or inert even when the collector cannot remove them.

A LOG line says which card the routing decision chose for an outgoing packet (filter OUTPUT,
``OUT=``) and on which card a packet arrived (filter INPUT, ``IN=``): F6. The prefix
``[nicpath-<run> OUTPUT] `` names the hook the way analyze reads it (a hook word as a whole word,
``DEFAULT_HOOK_PREFIXES`` in ``sources/kernlog.py``) and the run, so this run's lines can be told
from every other LOG line in the machine-wide kernel log.

nft when it works: a table of its own, ``inet nicpath_<run>``, deleted as a whole. It is made by
an ``nft -i`` that stays for the run with ``flags owner`` (Linux 5.12): the kernel deletes the
table when that process ends, and it ends with the collector (its input closes, and
PR_SET_PDEATHSIG), so no rule outlives a run that was killed, even every process of it at once.
Its rules also match only while the elements of the set ``alive`` live, whose timeout is the
run's duration and a margin (``expiry``): where the kernel has no ``flags owner`` the table is
made without it and its rules stop logging by themselves. Otherwise iptables and ip6tables: one
rule at the top of INPUT and of OUTPUT each, with ``-m time --datestop`` (UTC) for the same
expiry where the kernel has the time match, deleted by the same specification (its prefix holds
the run id, so no other rule matches it). The chains log before the host's filter rules
(priority -1), so packets the host then drops are logged too.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field

from .tools import child_setup, error_text, run

HOOKS = ("OUTPUT", "INPUT")
MAX_RATE = 10000  # iptables' limit match cannot go higher
#: Seconds the rules may log beyond --duration: the start (captures listening) and the way out.
EXPIRY_MARGIN = 60
#: Longest expiry: nft set timeouts are 32-bit milliseconds (49 days).
MAX_EXPIRY = 30 * 86400
#: How long nft -i may take to add the table.
HOLDER_WAIT = 3.0


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


def expiry(duration: float) -> int:
    """Seconds the rules may log: the run's duration and a margin for its start and end, at
    most ``MAX_EXPIRY`` (nft's set timeouts are 32-bit milliseconds).

    >>> expiry(60), expiry(0.5), expiry(1e9)
    (120, 61, 2592000)
    """
    return min(math.ceil(duration) + EXPIRY_MARGIN, MAX_EXPIRY)


def datestop(deadline: float) -> str:
    """``--datestop`` of the iptables time match (UTC) for an epoch deadline.

    >>> datestop(1795587082.4)
    '2026-11-25T06:11:22'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(deadline))


def nft_rules(run_id: str, rate: int) -> list[tuple[str, str]]:
    """(chain, rule) of the LOG table: every non-loopback packet while ``alive`` lives."""
    out = []
    for hook in HOOKS:
        dev = "oifname" if hook == "OUTPUT" else "iifname"
        out.append(
            (
                hook.lower(),
                f'meta nfproto @alive {dev} != "lo" limit rate {rate}/second burst {rate} '
                f'packets log prefix "{prefix(run_id, hook)}" flags tcp sequence',
            )
        )
    return out


def nft_ruleset(run_id: str, rate: int, expires: int, *, owner: bool) -> str:
    """The LOG table as one line (one transaction, for ``nft -i`` as for ``nft -f -``)."""
    parts = [f"table inet {table_name(run_id)} {{"]
    if owner:
        parts.append("flags owner;")
    parts.append(
        f"set alive {{ type nf_proto; flags timeout; "
        f"elements = {{ ipv4 timeout {expires}s, ipv6 timeout {expires}s }}; }};"
    )
    for chain, rule in nft_rules(run_id, rate):
        parts.append(
            f"chain {chain} {{ type filter hook {chain} priority -1; policy accept; {rule}; }};"
        )
    parts.append("}")
    return " ".join(parts) + "\n"


def iptables_rules(
    run_id: str, rate: int, until: str | None = None
) -> list[tuple[str, str, list[str]]]:
    """(tool, chain, rule specification) for iptables and ip6tables; with ``until`` (a
    ``datestop``) the rule stops matching then."""
    out = []
    for tool in ("iptables", "ip6tables"):
        for hook in HOOKS:
            dev = "-o" if hook == "OUTPUT" else "-i"
            spec = ["!", dev, "lo", "-m", "limit", "--limit", f"{rate}/second"]
            spec += ["--limit-burst", str(rate)]
            if until:
                spec += ["-m", "time", "--datestop", until]
            spec += ["-j", "LOG", "--log-prefix", prefix(run_id, hook), "--log-tcp-sequence"]
            out.append((tool, hook, spec))
    return out


def planned_undo(
    run_id: str, rate: int, tools: dict[str, str | None], until: str
) -> list[list[str]]:
    """Every command that removes what ``insert`` may add, known before it adds anything: the
    watchdog holds them before the first rule goes in."""
    out = []
    if tools.get("nft"):
        out.append([tools["nft"], "delete", "table", "inet", table_name(run_id)])
    for stop in (until, None):
        for tool, chain, spec in iptables_rules(run_id, rate, stop):
            if tools.get(tool):
                out.append([tools[tool], "-w", "-D", chain, *spec])
    return out


def shell_lines(commands: list[list[str]]) -> str:
    """Commands as sh lines, quiet (the watchdog runs them; a rule already gone is no error)."""
    return "".join(f"{shlex.join(cmd)} >/dev/null 2>&1\n" for cmd in commands)


class NftHolder:
    """``nft -i`` kept for the run: the owner of the LOG table (``flags owner``), so the kernel
    deletes the table when it ends. Its input is a pipe only the collector writes: when the
    collector dies, however, the input closes and it ends (PR_SET_PDEATHSIG too)."""

    def __init__(self, nft: str) -> None:
        self.proc = subprocess.Popen(
            [nft, "-i"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=child_setup(),
        )
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.said = b""

    def send(self, line: str) -> bool:
        """One line of commands (one transaction); False when nft -i is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except OSError:
            return False
        return True

    def errors(self) -> str:
        assert self.proc.stderr is not None
        with contextlib.suppress(BlockingIOError, ValueError):
            while data := os.read(self.proc.stderr.fileno(), 65536):
                self.said += data
        return self.said.decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """End nft -i (its input closes); the kernel deletes the table it owns."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


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
    holder: NftHolder | None = None

    def present(self) -> bool:
        """True while any of the rules is still in the kernel."""
        return any(run(cmd).returncode == 0 for cmd in self.checks)

    def held(self) -> bool:
        """False once the nft -i owning the table has ended (its rules went with it)."""
        return self.holder is None or self.holder.alive()

    def remove(self) -> list[str]:
        """Remove the rules; returns problems (empty when every rule is gone)."""
        if self.holder is not None:
            self.holder.send(f"delete table inet {table_name(self.run_id)}\n")
            self.holder.close()
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


def _nft_owned(run_id: str, rate: int, nft: str, expires: int) -> tuple[LogRules | None, str]:
    """The table made by an nft -i that stays: gone with it."""
    try:
        holder = NftHolder(nft)
    except OSError as exc:
        return None, str(exc)
    table = ["inet", table_name(run_id)]
    check = [nft, "list", "table", *table]
    if holder.send(nft_ruleset(run_id, rate, expires, owner=True)):
        deadline = time.monotonic() + HOLDER_WAIT
        while time.monotonic() < deadline and holder.alive() and not holder.errors().strip():
            if run(check).returncode == 0:
                rules = [rule for _, rule in nft_rules(run_id, rate)]
                undo = [[nft, "delete", "table", *table]]
                return LogRules("nft", run_id, rate, rules, undo, [check], holder=holder), ""
            time.sleep(0.02)
    why = error_text(holder.errors()) or f"nft -i did not add it within {HOLDER_WAIT:g} s"
    holder.close()
    return None, why


def _nft(run_id: str, rate: int, nft: str, expires: int) -> tuple[LogRules | None, str]:
    res = run([nft, "-f", "-"], stdin=nft_ruleset(run_id, rate, expires, owner=False))
    if res.returncode != 0:
        return None, error_text(res.stderr) or f"status {res.returncode}"
    table = ["inet", table_name(run_id)]
    return (
        LogRules(
            "nft",
            run_id,
            rate,
            [rule for _, rule in nft_rules(run_id, rate)],
            [[nft, "delete", "table", *table]],
            [[nft, "list", "table", *table]],
        ),
        "",
    )


def _iptables(
    run_id: str, rate: int, tools: dict[str, str | None], until: str, warnings: list[str]
) -> LogRules | None:
    rules, undo, checks = [], [], []
    lasting = False
    plain = iptables_rules(run_id, rate)
    for (tool, chain, spec), (_, _, bare) in zip(
        iptables_rules(run_id, rate, until), plain, strict=True
    ):
        path = tools.get(tool)
        if path is None:
            warnings.append(f"{tool} not found: no {tool} LOG rule in {chain}")
            continue
        res = run([path, "-w", "-I", chain, "1", *spec])
        if res.returncode != 0 and run([path, "-w", "-I", chain, "1", *bare]).returncode == 0:
            res, spec, lasting = subprocess.CompletedProcess([], 0), bare, True
        if res.returncode != 0:
            warnings.append(f"{tool} -I {chain}: {error_text(res.stderr) or 'failed'}")
            continue
        rules.append(f"{tool} -I {chain} 1 {shlex.join(spec)}")
        undo.append([path, "-w", "-D", chain, *spec])
        checks.append([path, "-w", "-C", chain, *spec])
    if lasting:
        warnings.append(
            "the iptables time match is missing: the LOG rules do not stop by themselves, "
            "only collect and its watchdog remove them"
        )
    if not rules:
        return None
    return LogRules("iptables", run_id, rate, rules, undo, checks)


def insert(
    run_id: str, rate: int, tools: dict[str, str | None], expires: int
) -> tuple[LogRules | None, list[str]]:
    """Insert the LOG rules with nft, else iptables/ip6tables; returns them and warnings.
    ``expires``: seconds after which they stop logging by themselves."""
    warnings: list[str] = []
    nft = tools.get("nft")
    if nft:
        rules, why = _nft_owned(run_id, rate, nft, expires)
        if rules:
            return rules, warnings
        rules, _ = _nft(run_id, rate, nft, expires)
        if rules:
            warnings.append(
                f"the LOG table cannot be tied to collect ({why}): if every process of the run "
                f"is killed at once it stays, its rules logging nothing after {expires} s "
                f"(remove it with: nft delete table inet {table_name(run_id)})"
            )
            return rules, warnings
        warnings.append(f"nft could not add the LOG table ({why}); trying iptables")
    if tools.get("iptables") or tools.get("ip6tables"):
        until = datestop(time.time() + expires)
        rules = _iptables(run_id, rate, tools, until, warnings)
        if rules:
            return rules, warnings
    warnings.append("no LOG rules inserted: neither nft nor iptables could add them")
    return None, warnings


#: The watchdog: it collects removal commands until its input closes; "done" means the
#: collector removed the rules itself, anything else (the collector died) runs them.
WATCHDOG = """trap '' INT TERM HUP
undo=
while IFS= read -r line; do
    [ "$line" = done ] && exit 0
    undo="$undo$line
"
done
eval "$undo"
"""


class Watchdog:
    """An sh in its own session that outlives the collector and removes the rules when it was
    killed: it holds the removal commands before the first rule goes in, and learns of the
    collector's death at once, from the end of its input (a pipe only the collector writes)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-c", WATCHDOG, "nicpath-collect-watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def arm(self, commands: list[list[str]]) -> bool:
        """Hand over the removal commands; False when the watchdog cannot take them."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(shell_lines(commands).encode())
            self.proc.stdin.flush()
        except OSError:
            return False
        return self.proc.poll() is None

    def disarm(self) -> None:
        """The collector removed the rules itself: the watchdog ends without running anything."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
