#!/bin/sh
# nicpath-collect.sh: gather a bundle for `nicpath analyze` on a host where Python cannot be
# installed. It is the sh form of `nicpath collect`: same options, same bundle (docs/collect.md),
# written by `nicpath collect --print-script`. Run it as root:
#
#   sh nicpath-collect.sh --out DIR [--iface IF]... [--duration S] [--max-size MB]
#                         [--snaplen N] [--filter BPF] [--log-rules] [--log-rate N]
#
# Bounded in time (--duration) and size (--max-size: the oldest capture chunks are dropped, with
# a warning). Changes nothing on the host unless --log-rules, whose rules are removed on exit,
# Ctrl-C, SIGTERM and SIGHUP, and by a watchdog if this script is killed. Needs sh, awk, sed,
# date, du, ls, od; uses tcpdump, ip (iproute2), dmesg (util-linux), nft or iptables/ip6tables,
# iptables-save, ip6tables-save and conntrack where they exist, and says what it skipped.

VERSION=0.1.0
PROG=nicpath-collect
set -u
LC_ALL=C
export LC_ALL

OUT=
IFACES=
DURATION=60
MAXSIZE=100
SNAPLEN=256
FILTER=
LOGRULES=0
LOGRATE=100

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 2; }
have() { command -v "$1" >/dev/null 2>&1; }
oneline() { tr '\n\t' '  ' | sed -e 's/  */ /g' -e 's/^ //' -e 's/ $//' | cut -c1-300; }

usage() {
    cat <<'EOF'
Usage: sh nicpath-collect.sh --out DIR [options]   (as root)
Gathers a bundle for `nicpath analyze`: captures per card, ip snapshots, kernel log.
Options (the same as `nicpath collect`):
  --out DIR        directory for the bundle (new, or empty)
  --iface IF       capture this card (repeat); default: every card that is up, loopback excepted
  --duration S     seconds to collect (default 60)
  --max-size MB    bound of the bundle on disk (default 100)
  --snaplen N      bytes kept of each packet (default 256; 0: whole packets)
  --filter BPF     tcpdump filter expression for the captures
  --log-rules      insert rate-limited LOG rules for INPUT and OUTPUT; removed on exit
  --log-rate N     LOG lines a second per rule, at most (default 100)
EOF
}

# Options.
while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*}; val=${1#*=}; shift; set -- "$opt" "$val" "$@" ;;
    esac
    case $1 in
        --out|--iface|--duration|--max-size|--snaplen|--filter|--log-rate)
            [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --iface) IFACES="$IFACES $2"; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --max-size) MAXSIZE=$2; shift 2 ;;
        --snaplen) SNAPLEN=$2; shift 2 ;;
        --filter) FILTER=$2; shift 2 ;;
        --log-rules) LOGRULES=1; shift ;;
        --log-rate) LOGRATE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

is_number() { case $1 in ''|.|*[!0-9.]*|*.*.*) return 1 ;; esac; }
is_int() { case $1 in ''|*[!0-9]*) return 1 ;; esac; }
positive() { awk -v v="$1" 'BEGIN { exit !(v + 0 > 0) }'; }

[ -n "$OUT" ] || die "--out DIR is required"
is_number "$DURATION" && positive "$DURATION" ||
    die "--duration must be a positive number of seconds: $DURATION"
is_number "$MAXSIZE" && positive "$MAXSIZE" ||
    die "--max-size must be a positive number of MB: $MAXSIZE"
is_int "$SNAPLEN" && [ "$SNAPLEN" -le 262144 ] ||
    die "--snaplen must be 0..262144 bytes (0: whole packets), not $SNAPLEN"
is_int "$LOGRATE" && [ "$LOGRATE" -ge 1 ] && [ "$LOGRATE" -le 10000 ] ||
    die "--log-rate must be 1..10000 lines a second per rule"
[ "$(id -u)" = 0 ] ||
    die "nicpath collect must run as root (captures, the kernel log and --log-rules need it)"
if [ -e "$OUT" ]; then
    if [ ! -d "$OUT" ] || [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
        die "--out $OUT: exists and is not an empty directory (never overwritten)"
    fi
fi

# Cards and budget.
SYS_NET=/sys/class/net
card_list() {  # NAME UP per card; ip asks the kernel from this namespace, /sys is the fallback
    if have ip && links=$(ip -o link show 2>/dev/null); then
        printf '%s\n' "$links" | awk -F': ' '{
            n = $2; sub(/@.*/, "", n); f = "," $3; sub(/>.*/, "", f); sub(/,</, ",", f)
            print n, (f ~ /,UP(,|$)/ && f !~ /,LOOPBACK(,|$)/) ? 1 : 0 }'
        return
    fi
    for d in "$SYS_NET"/*; do
        [ -r "$d/flags" ] || continue
        f=$(cat "$d/flags" 2>/dev/null) || continue
        if [ $((f & 1)) -ne 0 ] && [ $((f & 8)) -eq 0 ]; then up=1; else up=0; fi
        printf '%s %s\n' "${d##*/}" "$up"
    done
}
up_cards() {  # administratively up, loopback excepted, in name order
    card_list | awk '$2 == 1 { print $1 }' | sort
}

CARDS=
if [ -n "$IFACES" ]; then
    known=$(card_list | awk '{ print $1 }' | sort | tr '\n' ' ' | sed -e 's/ $//' -e 's/ /, /g')
    missing=
    for c in $IFACES; do
        case ", $known, " in *", $c, "*|", , ") ;; *) missing="$missing${missing:+, }$c" ;; esac
        case " $CARDS " in *" $c "*) ;; *) CARDS="$CARDS${CARDS:+ }$c" ;; esac
    done
    [ -n "$missing" ] && die "--iface $missing: no such card here (cards: $known)"
else
    CARDS=$(up_cards | tr '\n' ' ' | sed 's/ $//')
fi
NCARDS=0
for c in $CARDS; do NCARDS=$((NCARDS + 1)); done

MB=1000000
BUDGET=$(awk -v m="$MAXSIZE" 'BEGIN { printf "%.0f", m * 1000000 }')
SIDECAP=$((BUDGET / 10))
if [ "$NCARDS" -gt 0 ] && [ "$BUDGET" -lt $((2 * MB * NCARDS)) ]; then
    die "--max-size $MAXSIZE MB is too small for $NCARDS cards: each needs 2 MB (give more, or fewer --iface)"
fi
CHUNK=$((BUDGET / (4 * (NCARDS > 0 ? NCARDS : 1) * MB)))
[ "$CHUNK" -ge 1 ] || CHUNK=1
parent=$OUT
while [ ! -e "$parent" ]; do parent=$(dirname "$parent"); done
free=$(df -Pk "$parent" 2>/dev/null | awk 'NR == 2 { printf "%.0f", $4 * 1024 }')
if [ -n "$free" ] && [ "$free" -lt "$BUDGET" ]; then
    die "--max-size $MAXSIZE MB but only $((free / MB)) MB free on the file system of $parent: give a smaller --max-size or another --out"
fi
set -- $CARDS
if [ -n "$FILTER" ] && [ $# -gt 0 ] && have tcpdump; then
    if ! err=$(tcpdump -d -i "$1" -s "$SNAPLEN" "$FILTER" 2>&1 >/dev/null); then
        die "--filter '$FILTER': $(printf '%s' "$err" | oneline)"
    fi
fi

# The run's state.
umask 077
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nicpath-collect-XXXXXXXX" 2>/dev/null) || {
    WORK=${TMPDIR:-/tmp}/nicpath-collect-$$
    mkdir -m 700 "$WORK" || die "cannot make a work directory in ${TMPDIR:-/tmp}"
}
RUNID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
MARKER=
[ "$LOGRULES" = 1 ] && MARKER="[nicpath-$RUNID "
: >"$WORK/pids"
: >"$WORK/captures"
: >"$WORK/warnings"
: >"$WORK/skipped"
STOP=
FINISHED=0
MOMENTS=
CHANGES=0
CHANGES_OVER=0
CHANGE_SNAPSHOTS=0
RULES_TOOL=
WATCHDOG=
KLOG_SOURCE=
KDMESG=
KAWK=
MONPID=

warn() { say "warning: $*"; printf '%s\n' "$*" >>"$WORK/warnings"; }
skip() { say "skipped $1: $2"; printf '%s\t%s\n' "$1" "$2" >>"$WORK/skipped"; }
missing() {  # missing TOOL WHAT: true (and skipped) when TOOL is not on PATH
    have "$1" && return 1
    skip "$2" "$1 not found"
    return 0
}
now() {  # epoch seconds with microseconds
    t=$(date +%s.%N 2>/dev/null)
    case $t in
        *.?????????) t=${t%???} ;;
        *) t="$(date +%s).000000" ;;
    esac
    printf '%s\n' "$t"
}
now_cs() {  # epoch centiseconds, for the loop's arithmetic
    t=$(date +%s%N 2>/dev/null)
    case $t in
        *N*|'') printf '%s00\n' "$(date +%s)" ;;
        *) printf '%s\n' "$t" | cut -c1-$((${#t} - 7)) ;;
    esac
}

trap 'STOP=${STOP:-SIGINT}' INT
trap 'STOP=${STOP:-SIGTERM}' TERM
trap 'STOP=${STOP:-SIGHUP}' HUP
trap 'on_exit' EXIT

on_exit() {  # an unexpected exit: end what was started, remove the rules
    [ "$FINISHED" = 1 ] && return
    for p in $(cat "$WORK/pids" 2>/dev/null); do kill "$p" 2>/dev/null; done
    [ -f "$WORK/undo" ] && . "$WORK/undo"
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    rm -rf "$WORK"
}

mkdir -p "$OUT/ip" || die "cannot make $OUT"
STARTED_AT=$(now)

# Kernel log.
# Raw dmesg lines since the start; with --log-rules, LOG lines of other prefixes are left out
# (the kernel log is one for the whole machine). The same rules as the Python form.
KLOG_AWK='
{
    msg = $0
    sub(/^\[ *[0-9]+\.[0-9]+\] /, "", msg)
    islog = (msg ~ /IN=[^ ]* OUT=[^ ]*( |$)/)
    if (pfx != "" && islog && index(msg, pfx) != 1) { other++; next }
    size = length($0) + 1
    if (written + size > cap) { over++; next }
    print
    written += size
    lines++
    if (islog) loglines++
}
END { printf "%d %d %d %d\n", lines, loglines, other, over > counts }'

start_kernel_log() {
    if ! have dmesg; then
        skip kern.dmesg "dmesg not found"
        return
    fi
    if dmesg --help 2>&1 | grep -q -- --follow-new; then
        mkfifo "$WORK/kfifo" || { skip kern.dmesg "cannot make a fifo in $WORK"; return; }
        awk -v pfx="$MARKER" -v cap="$SIDECAP" -v counts="$WORK/kcounts" "$KLOG_AWK" \
            <"$WORK/kfifo" >"$OUT/kern.dmesg" &
        KAWK=$!
        dmesg --follow-new >"$WORK/kfifo" 2>"$WORK/dmesg.err" &
        KDMESG=$!
        printf '%s\n%s\n' "$KAWK" "$KDMESG" >>"$WORK/pids"
        KLOG_SOURCE="dmesg --follow-new"
        sleep 0.1 2>/dev/null || sleep 1
    elif KSTART=$(dmesg 2>/dev/null | sed -n '$s/^\[ *\([0-9]*\.[0-9]*\)\].*/\1/p'); then
        # No --follow-new: the lines after the last one present now, read at the end.
        KSTART=${KSTART:-0}
        KLOG_SOURCE="dmesg at the end"
    else
        skip kern.dmesg "dmesg cannot read the kernel log"
    fi
}

close_kernel_log() {
    [ -n "$KLOG_SOURCE" ] || return
    sleep 0.2 2>/dev/null || sleep 1
    if [ -n "$KDMESG" ]; then
        kill "$KDMESG" 2>/dev/null
        wait "$KDMESG" 2>/dev/null
        wait "$KAWK" 2>/dev/null
    else
        dmesg 2>/dev/null | awk -v t="$KSTART" '
            { s = $0; sub(/^\[ */, "", s); sub(/\].*/, "", s); if (s + 0 > t + 0) print }' |
            awk -v pfx="$MARKER" -v cap="$SIDECAP" -v counts="$WORK/kcounts" "$KLOG_AWK" \
                >"$OUT/kern.dmesg"
        warn "dmesg has no --follow-new: kernel log read at the end; lines overwritten in the ring buffer during the run are lost"
    fi
    K_LINES=0 K_LOG=0 K_OTHER=0 K_OVER=0
    [ -s "$WORK/kcounts" ] && read -r K_LINES K_LOG K_OTHER K_OVER <"$WORK/kcounts"
    if [ "$K_OVER" -gt 0 ]; then
        warn "kern.dmesg reached a tenth of --max-size: $K_OVER later kernel log lines not written"
    fi
}

# Host facts, rulesets.
host_facts() {
    bt=$(awk '$1 == "btime" { print $2 }' /proc/stat 2>/dev/null)
    if [ -n "$bt" ]; then printf '%s\n' "$bt" >"$OUT/btime"; else skip btime "no btime in /proc/stat"; fi
    for pat in net/ipv4/ip_forward 'net/ipv4/conf/*/rp_filter' 'net/ipv4/conf/*/arp_announce' \
        'net/ipv4/conf/*/arp_ignore' 'net/ipv4/conf/*/arp_filter' 'net/ipv4/conf/*/log_martians' \
        'net/ipv4/conf/*/accept_local' 'net/ipv4/conf/*/src_valid_mark' \
        'net/ipv6/conf/*/forwarding' net/netfilter/nf_log_all_netns; do
        for f in /proc/sys/$pat; do
            [ -r "$f" ] || continue
            v=$(cat "$f" 2>/dev/null) || continue
            k=$(printf '%s' "${f#/proc/sys/}" | tr / .)
            printf '%s = %s\n' "$k" "$v"
        done
    done >"$OUT/sysctl.txt"
    if [ "$LOGRULES" = 1 ]; then
        self=$(readlink /proc/self/ns/net 2>/dev/null)
        init=$(readlink /proc/1/ns/net 2>/dev/null)
        if [ -n "$self" ] && [ -n "$init" ] && [ "$self" != "$init" ] &&
            [ "$(cat /proc/sys/net/netfilter/nf_log_all_netns 2>/dev/null)" = 0 ]; then
            warn "this network namespace is not the host's and net.netfilter.nf_log_all_netns is 0: the kernel writes no LOG lines from here (it is set in the host's namespace; collect does not change it)"
        fi
    fi
}

save() {  # save TOOL FILE ARGS...: the firewall as it was, before any LOG rule of ours
    tool=$1 name=$2
    shift 2
    missing "$tool" "$name" && return
    if ! "$tool" "$@" >"$OUT/$name" 2>"$WORK/save.err"; then
        rc=$?
        rm -f "$OUT/$name"
        why=$(oneline <"$WORK/save.err")
        skip "$name" "$tool failed: ${why:-$rc}"
    fi
}

conntrack_table() {  # at the end: the NAT each flow got when it began (F5)
    missing conntrack conntrack.txt && return
    if [ ! -d /sys/module/nf_conntrack ]; then
        skip conntrack.txt "connection tracking is not loaded (nothing to list)"
        return
    fi
    : >"$WORK/ct"
    ok=0 problems=
    for fam in ipv4 ipv6; do
        if conntrack -L -f "$fam" >>"$WORK/ct" 2>"$WORK/ct.err"; then
            ok=$((ok + 1))
        else
            problems="$problems${problems:+; }$fam: $(oneline <"$WORK/ct.err")"
        fi
    done
    if [ "$ok" = 0 ]; then
        skip conntrack.txt "conntrack -L failed: $problems"
        return
    fi
    [ -n "$problems" ] && warn "conntrack -L: $problems"
    awk -v cap="$SIDECAP" -v counts="$WORK/ctcounts" '
        { n++; s = length($0) + 1; if (w + s > cap) { over++; next } print; w += s }
        END { printf "%d %d\n", over, n > counts }' "$WORK/ct" >"$OUT/conntrack.txt"
    read -r over entries <"$WORK/ctcounts"
    if [ "$over" -gt 0 ]; then
        warn "conntrack.txt cut at a tenth of --max-size: $over of $entries entries left out"
    fi
}

# ip snapshots and changes.
part() {  # part NAME ARGS...: ip -j, else plain text
    name=$1
    shift
    if ip -j "$@" >"$SNAP/$name.json" 2>"$WORK/ip.err" && IFS= read -r first <"$SNAP/$name.json" &&
        case $first in '['*) true ;; *) false ;; esac; then
        return
    fi
    rm -f "$SNAP/$name.json"
    if ! ip "$@" >"$SNAP/$name.txt" 2>"$WORK/ip.err"; then
        rm -f "$SNAP/$name.txt"
        why=$(oneline <"$WORK/ip.err")
        warn "ip/$MOMENT: ip $*: ${why:-failed}"
    fi
}

snapshot() {  # snapshot MOMENT
    MOMENT=$1
    SNAP=$OUT/ip/$1
    mkdir -p "$SNAP"
    now >"$SNAP/taken_at"
    part addr addr
    part link link
    part route route show table all
    part rule rule
    part route6 -6 route show table all
    part rule6 -6 rule
    MOMENTS="$MOMENTS $1"
}

start_monitor() {
    (TZ=UTC; export TZ; exec ip -ts monitor link address route rule) >>"$WORK/monitor" 2>/dev/null &
    MONPID=$!
    sleep 0.05 2>/dev/null || sleep 1
    if ! kill -0 "$MONPID" 2>/dev/null; then
        : >"$WORK/monitor"
        ip monitor link address route rule >>"$WORK/monitor" 2>/dev/null &
        MONPID=$!
        sleep 0.05 2>/dev/null || sleep 1
        if ! kill -0 "$MONPID" 2>/dev/null; then
            MONPID=
            skip "change snapshots" "ip monitor could not start"
            return
        fi
    fi
    echo "$MONPID" >>"$WORK/pids"
    MONSEEN=0
    PENDING=
    LAST_SNAP=0
}

# ip -ts monitor stamps (UTC) to epoch seconds; continuation lines are skipped.
MON_AWK='
function days(y, m, d) {
    if (m <= 2) { y -= 1; m += 12 }
    return 365 * y + int(y / 4) - int(y / 100) + int(y / 400) + int((153 * (m - 3) + 2) / 5) + d - 719469
}
{
    line = $0; stamp = fallback
    if (match(line, /^\[[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9:]+(\.[0-9]+)?\] ?/)) {
        ts = substr(line, 2, RLENGTH - 2); sub(/\] ?$/, "", ts); line = substr(line, RLENGTH + 1)
        frac = "000000"
        if (index(ts, ".")) { frac = substr(ts, index(ts, ".") + 1) "000000"; frac = substr(frac, 1, 6) }
        secs = days(substr(ts, 1, 4) + 0, substr(ts, 6, 2) + 0, substr(ts, 9, 2) + 0) * 86400 \
            + substr(ts, 12, 2) * 3600 + substr(ts, 15, 2) * 60 + substr(ts, 18, 2)
        stamp = sprintf("%d.%s", secs, frac)
    }
    if (line ~ /^[ \t]/ || line ~ /^[ \t]*$/) next
    sub(/[ \t\r]+$/, "", line)
    print stamp "\t" line
}'

record_changes() {  # append new ip monitor events to changes.log; true when there were any
    [ -n "$MONPID" ] || return 1
    n=$(wc -l <"$WORK/monitor" | tr -d ' ')
    [ "$n" -gt "$MONSEEN" ] || return 1
    sed -n "$((MONSEEN + 1)),${n}p" "$WORK/monitor" |
        awk -v fallback="$(now)" "$MON_AWK" >"$WORK/events"
    MONSEEN=$n
    if [ "$n" -gt 100000 ]; then  # a flood of events: start the raw file over
        : >"$WORK/monitor"
        MONSEEN=0
    fi
    e=$(wc -l <"$WORK/events" | tr -d ' ')
    [ "$e" -gt 0 ] || return 1
    used=0
    [ -f "$OUT/changes.log" ] && used=$(wc -c <"$OUT/changes.log" | tr -d ' ')
    awk -v used="$used" -v cap="$SIDECAP" -v over="$WORK/changes.over" '
        { s = length($0) + 1; if (used + s > cap) { n++; next } print; used += s }
        END { print n + 0 > over }' "$WORK/events" >>"$OUT/changes.log"
    read -r over <"$WORK/changes.over"
    CHANGES_OVER=$((CHANGES_OVER + over))
    CHANGES=$((CHANGES + e))
    return 0
}

check_changes() {  # check_changes NOW_CS: a snapshot once a burst of changes has settled
    if record_changes; then PENDING=$1; return; fi
    [ -n "${PENDING:-}" ] || return
    [ $(($1 - PENDING)) -ge 20 ] && [ $(($1 - LAST_SNAP)) -ge 100 ] || return
    PENDING=
    LAST_SNAP=$1
    ipkb=$(du -sk "$OUT/ip" | awk '{ print $1 * 1024 }')
    if [ "$ipkb" -gt "$SIDECAP" ]; then
        if [ -z "${SNAPS_CAPPED:-}" ]; then
            SNAPS_CAPPED=1
            warn "ip/ reached a tenth of --max-size: no more change snapshots"
        fi
        return
    fi
    CHANGE_SNAPSHOTS=$((CHANGE_SNAPSHOTS + 1))
    snapshot "change-$CHANGE_SNAPSHOTS"
    if [ -z "$IFACES" ] && have tcpdump; then
        for c in $(up_cards); do
            grep -q "^$c " "$WORK/captures" && continue
            count=$(wc -l <"$WORK/captures" | tr -d ' ')
            if [ "$BUDGET" -lt $((2 * MB * (count + 1))) ]; then
                if [ ! -e "$WORK/noroom.$c" ]; then
                    : >"$WORK/noroom.$c"
                    warn "card $c came up, but --max-size has no room to capture it"
                fi
                continue
            fi
            say "card $c came up: capturing it too"
            start_capture "$c"
        done
    fi
}

# LOG rules.
nft_ruleset() {
    printf 'table inet nicpath_%s {\n' "$RUNID"
    for hook in OUTPUT INPUT; do
        lower=$(printf '%s' "$hook" | tr A-Z a-z)
        dev=iifname
        [ "$hook" = OUTPUT ] && dev=oifname
        printf '  chain %s {\n' "$lower"
        printf '    type filter hook %s priority -1; policy accept;\n' "$lower"
        printf '    %s != "lo" limit rate %s/second burst %s packets log prefix "[nicpath-%s %s] " flags tcp sequence\n' \
            "$dev" "$LOGRATE" "$LOGRATE" "$RUNID" "$hook"
        printf '  }\n'
    done
    printf '}\n'
}

insert_rules() {
    : >"$WORK/rules"
    : >"$WORK/checks"
    : >"$WORK/undo.tmp"
    if have nft; then
        if nft_ruleset | nft -f - 2>"$WORK/nft.err"; then
            RULES_TOOL=nft
            nft_ruleset | grep 'log prefix' | sed 's/^ *//' >"$WORK/rules"
            echo "nft delete table inet nicpath_$RUNID >/dev/null 2>&1" >"$WORK/undo.tmp"
            echo "nft list table inet nicpath_$RUNID" >"$WORK/checks"
        else
            warn "nft could not add the LOG table ($(oneline <"$WORK/nft.err")); trying iptables"
        fi
    fi
    if [ -z "$RULES_TOOL" ] && { have iptables || have ip6tables; }; then
        for t in iptables ip6tables; do
            for hook in OUTPUT INPUT; do
                if ! have "$t"; then
                    warn "$t not found: no $t LOG rule in $hook"
                    continue
                fi
                dev=-i
                [ "$hook" = OUTPUT ] && dev=-o
                pfx="[nicpath-$RUNID $hook] "
                if "$t" -w -I "$hook" 1 ! "$dev" lo -m limit --limit "$LOGRATE/second" \
                    --limit-burst "$LOGRATE" -j LOG --log-prefix "$pfx" --log-tcp-sequence \
                    2>"$WORK/ipt.err"; then
                    spec="! $dev lo -m limit --limit $LOGRATE/second --limit-burst $LOGRATE -j LOG --log-prefix '$pfx' --log-tcp-sequence"
                    echo "$t -I $hook 1 $spec" >>"$WORK/rules"
                    echo "$t -w -D $hook $spec >/dev/null 2>&1" >>"$WORK/undo.tmp"
                    echo "$t -w -C $hook $spec" >>"$WORK/checks"
                else
                    warn "$t -I $hook: $(oneline <"$WORK/ipt.err")"
                fi
            done
        done
        [ -s "$WORK/rules" ] && RULES_TOOL=iptables
    fi
    if [ -z "$RULES_TOOL" ]; then
        warn "no LOG rules inserted: neither nft nor iptables could add them"
        return
    fi
    mv "$WORK/undo.tmp" "$WORK/undo"
    RULES_REMOVED=false
    say "LOG rules inserted with $RULES_TOOL, prefixes ${MARKER}OUTPUT/INPUT]"
}

rules_present() {
    while IFS= read -r check; do
        eval "$check" >/dev/null 2>&1 && return 0
    done <"$WORK/checks"
    return 1
}

remove_rules() {
    [ -n "$RULES_TOOL" ] || return
    . "$WORK/undo"
    if rules_present; then
        RULES_PROBLEM="LOG rules still present after removal"
        warn "LOG rules not removed: $RULES_PROBLEM"
    else
        RULES_REMOVED=true
        rm -f "$WORK/undo"
        say "LOG rules removed"
    fi
}

# Captures.
start_capture() {  # start_capture CARD: tcpdump -C writes CARD.pcap, CARD.pcap1, ...
    tcpdump -i "$1" -w "$OUT/$1.pcap" -C "$CHUNK" -s "$SNAPLEN" -p -n -U --immediate-mode \
        -Z root ${FILTER:+"$FILTER"} </dev/null >/dev/null 2>"$WORK/tcpdump-$1.err" &
    echo "$1 $!" >>"$WORK/captures"
    echo "$!" >>"$WORK/pids"
}

wait_listening() {
    i=0
    while [ $i -lt 250 ] && [ -z "$STOP" ]; do
        waiting=0
        while read -r c p; do
            grep -q "listening on" "$WORK/tcpdump-$c.err" 2>/dev/null && continue
            kill -0 "$p" 2>/dev/null && waiting=1
        done <"$WORK/captures"
        [ "$waiting" = 0 ] && return
        sleep 0.02 2>/dev/null || sleep 1
        i=$((i + 1))
    done
    while read -r c p; do
        grep -q "listening on" "$WORK/tcpdump-$c.err" 2>/dev/null ||
            warn "tcpdump on $c did not say it listens within 5 s"
    done <"$WORK/captures"
}

capture_problem() {  # tcpdump's own words, without the listening line and the counts
    grep -v -e 'listening on' -e 'packets\{0,1\} captured' -e 'received by filter' \
        -e 'dropped by kernel' "$WORK/tcpdump-$1.err" 2>/dev/null | oneline
}

check_captures() {
    while read -r c p; do
        [ -e "$WORK/status.$c" ] && continue
        kill -0 "$p" 2>/dev/null && continue
        wait "$p" 2>/dev/null
        st=$?
        echo "$st" >"$WORK/status.$c"
        why=$(capture_problem "$c")
        warn "capture on $c stopped (status $st): ${why:-no message}"
    done <"$WORK/captures"
}

stop_captures() {
    while read -r c p; do
        [ -e "$WORK/status.$c" ] && continue
        kill -TERM "$p" 2>/dev/null
    done <"$WORK/captures"
    while read -r c p; do
        [ -e "$WORK/status.$c" ] && continue
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1 2>/dev/null || sleep 1
            i=$((i + 1))
        done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
        echo "$?" >"$WORK/status.$c"
        dropped=$(stat_of "$c" 'dropped by kernel')
        if [ "${dropped:-0}" -gt 0 ]; then
            warn "capture on $c: $dropped packets dropped by the kernel (tcpdump could not keep up; a --filter or a smaller --snaplen helps)"
        fi
    done <"$WORK/captures"
}

successor() {  # the name tcpdump -C gives the chunk after $1
    case $1 in
        *.pcap) printf '%s1\n' "$1" ;;
        *) printf '%s.pcap%s\n' "${1%.pcap*}" "$((${1##*.pcap} + 1))" ;;
    esac
}

oldest_closed_chunk() {  # a chunk is closed once its successor exists
    ls -tr "$OUT" 2>/dev/null | while IFS= read -r f; do
        case $f in *.pcap|*.pcap[0-9]|*.pcap[0-9]*[0-9]) ;; *) continue ;; esac
        if [ -e "$OUT/$(successor "$f")" ]; then
            printf '%s\n' "$f"
            break
        fi
    done
}

keep_budget() {
    used=$(du -sk "$OUT" | awk '{ printf "%.0f", $1 * 1024 }')
    while [ "$used" -gt "$BUDGET" ]; do
        victim=$(oldest_closed_chunk)
        [ -n "$victim" ] || break
        size=$(wc -c <"$OUT/$victim" | tr -d ' ')
        rm -f "$OUT/$victim"
        printf '%s\n' "$victim" >>"$WORK/dropped.${victim%.pcap*}"
        warn "capture budget: dropped oldest chunk $victim ($size bytes)"
        used=$(du -sk "$OUT" | awk '{ printf "%.0f", $1 * 1024 }')
    done
}

chunk_files() {  # one card's chunks in the order tcpdump wrote them
    ls "$OUT" | awk -v c="$1" '
        index($0, c ".pcap") == 1 { n = substr($0, length(c) + 6); if (n ~ /^[0-9]*$/) print n + 0 "\t" $0 }' |
        sort -n | cut -f2
}

# Manifest.
json_str() {
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\000-\037')"
}
json_or_null() { if [ -n "$1" ]; then json_str "$1"; else printf 'null'; fi; }
json_num() { awk -v v="$1" 'BEGIN { print v + 0 }'; }
num_or_null() { if [ -n "$1" ]; then printf '%s' "$1"; else printf 'null'; fi; }
json_lines() {  # a JSON list of the lines of stdin
    sep=
    printf '['
    while IFS= read -r line; do
        printf '%s%s' "$sep" "$(json_str "$line")"
        sep=', '
    done
    printf ']'
}
stat_of() {  # stat_of CARD WORDS: the number tcpdump printed before WORDS
    sed -n "s/^\([0-9][0-9]*\) packets\{0,1\} $2.*/\1/p" "$WORK/tcpdump-$1.err" 2>/dev/null | head -n 1
}
tool_version() {  # the first line a tool prints for its version flag; null when it has none
    if have "$1" && "$1" "$2" >"$WORK/version" 2>&1 </dev/null; then
        json_or_null "$(awk 'NF { sub(/^[ \t]+/, ""); sub(/[ \t]+$/, ""); print; exit }' "$WORK/version")"
    else
        printf 'null'
    fi
}

write_manifest() {
    {
        printf '{\n  "nicpath_bundle": 1,\n'
        printf '  "collector": {"name": "nicpath-collect.sh", "version": %s, "run_id": %s, "python": null},\n' \
            "$(json_str "$VERSION")" "$(json_str "$RUNID")"
        printf '  "host": {"name": %s, "kernel": %s, "kernel_build": %s, "machine": %s, "netns": %s},\n' \
            "$(json_str "$(uname -n)")" "$(json_str "$(uname -r)")" "$(json_str "$(uname -v)")" \
            "$(json_str "$(uname -m)")" "$(json_or_null "$(readlink /proc/self/ns/net 2>/dev/null)")"
        printf '  "started_at": %s,\n  "ended_at": %s,\n  "stopped_by": %s,\n' \
            "$STARTED_AT" "$(now)" "$(json_str "${STOP:-duration}")"
        printf '  "options": {"ifaces": %s, "duration": %s, "max_size_mb": %s, "snaplen": %s, "filter": %s, "log_rules": %s, "log_rate": %s},\n' \
            "$(for c in $IFACES; do echo "$c"; done | json_lines)" "$(json_num "$DURATION")" \
            "$(json_num "$MAXSIZE")" "$(json_num "$SNAPLEN")" \
            "$(json_or_null "$FILTER")" "$([ "$LOGRULES" = 1 ] && echo true || echo false)" \
            "$(json_num "$LOGRATE")"
        printf '  "captures": ['
        sep=
        while read -r c p; do
            err=$(capture_problem "$c")
            printf '%s\n    {"iface": %s, "files": %s, "dropped_files": %s, "packets_captured": %s, "packets_received_by_filter": %s, "packets_dropped_by_kernel": %s, "exit_status": %s, "error": %s}' \
                "$sep" "$(json_str "$c")" "$(chunk_files "$c" | json_lines)" \
                "$(cat "$WORK/dropped.$c" 2>/dev/null | json_lines)" \
                "$(num_or_null "$(stat_of "$c" captured)")" \
                "$(num_or_null "$(stat_of "$c" 'received by filter')")" \
                "$(num_or_null "$(stat_of "$c" 'dropped by kernel')")" \
                "$(num_or_null "$(cat "$WORK/status.$c" 2>/dev/null)")" "$(json_or_null "$err")"
            sep=,
        done <"$WORK/captures"
        printf '\n  ],\n'
        printf '  "snapshots": %s,\n  "changes": %s,\n' \
            "$(for m in $MOMENTS; do echo "$m"; done | json_lines)" "$CHANGES"
        if [ -n "$KLOG_SOURCE" ]; then
            printf '  "kernel_log": {"file": "kern.dmesg", "source": %s, "lines": %s, "log_lines": %s, "left_out_other_prefixes": %s, "over_size_limit": %s, "lost_in_ring_buffer": null, "boot_time_measured": null},\n' \
                "$(json_str "$KLOG_SOURCE")" "${K_LINES:-0}" "${K_LOG:-0}" "${K_OTHER:-0}" "${K_OVER:-0}"
        else
            printf '  "kernel_log": null,\n'
        fi
        if [ -n "$RULES_TOOL" ]; then
            printf '  "log_rules": {"tool": %s, "prefixes": [%s, %s], "rate_per_second": %s, "rules": %s, "removed": %s},\n' \
                "$(json_str "$RULES_TOOL")" "$(json_str "[nicpath-$RUNID OUTPUT] ")" \
                "$(json_str "[nicpath-$RUNID INPUT] ")" "$LOGRATE" "$(json_lines <"$WORK/rules")" \
                "$RULES_REMOVED"
        else
            printf '  "log_rules": null,\n'
        fi
        printf '  "tools": {'
        sep=
        for t in tcpdump:--version ip:-V nft:--version iptables:--version ip6tables:--version \
            iptables-save:--version ip6tables-save:--version conntrack:--version dmesg:--version; do
            printf '%s%s: %s' "$sep" "$(json_str "${t%%:*}")" "$(tool_version "${t%%:*}" "${t#*:}")"
            sep=', '
        done
        printf '},\n'
        printf '  "files": %s,\n' \
            "$(cd "$OUT" && find . -type f ! -name manifest.json | sed 's|^\./||' | sort | json_lines)"
        printf '  "skipped": ['
        sep=
        while IFS="$(printf '\t')" read -r what why; do
            printf '%s{"what": %s, "why": %s}' "$sep" "$(json_str "$what")" "$(json_str "$why")"
            sep=', '
        done <"$WORK/skipped"
        printf '],\n'
        printf '  "warnings": %s\n}\n' "$(json_lines <"$WORK/warnings")"
    } >"$OUT/manifest.json"
}

# The run.
start_kernel_log
host_facts
save nft nft-ruleset.txt list ruleset
save iptables-save iptables-save.txt
save ip6tables-save ip6tables-save.txt
if ! missing ip "ip snapshots and change detection"; then
    snapshot start
    start_monitor
fi
[ "$LOGRULES" = 1 ] && insert_rules
if ! missing tcpdump captures; then
    for c in $CARDS; do start_capture "$c"; done
    wait_listening
fi
[ -n "$CARDS" ] || warn "no card is up: nothing to capture"
# The watchdog ends what this script started and removes the LOG rules if it is killed.
(
    while kill -0 $$ 2>/dev/null; do sleep 1; done
    for p in $(cat "$WORK/pids" 2>/dev/null); do kill "$p" 2>/dev/null; done
    [ -f "$WORK/undo" ] && . "$WORK/undo"
    rm -rf "$WORK"
) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!
captured=$(cut -d' ' -f1 "$WORK/captures" | tr '\n' ' ' | sed -e 's/ $//' -e 's/ /, /g')
say "collecting into $OUT for $DURATION s (cards: ${captured:-none}); Ctrl-C stops"

END_CS=$(($(now_cs) + $(awk -v d="$DURATION" 'BEGIN { printf "%d", d * 100 }')))
while [ -z "$STOP" ]; do
    NOW=$(now_cs)
    [ "$NOW" -lt "$END_CS" ] || break
    [ -n "$MONPID" ] && check_changes "$NOW"
    keep_budget
    check_captures
    sleep 0.2 2>/dev/null || sleep 1
done

case " $MOMENTS " in *" start "*) snapshot end ;; esac
stop_captures
RULES_PROBLEM=
remove_rules
close_kernel_log
if [ -n "$MONPID" ]; then
    kill "$MONPID" 2>/dev/null
    wait "$MONPID" 2>/dev/null
    record_changes
fi
if [ "$CHANGES_OVER" -gt 0 ]; then
    warn "changes.log reached a tenth of --max-size: $CHANGES_OVER later changes not written"
fi
conntrack_table
keep_budget
write_manifest
FINISHED=1
kill "$WATCHDOG" 2>/dev/null
nfiles=$(cd "$OUT" && find . -type f ! -name manifest.json | wc -l | tr -d ' ')
nwarn=$(wc -l <"$WORK/warnings" | tr -d ' ')
undo=$(sed 's| >/dev/null 2>&1$||' "$WORK/undo" 2>/dev/null | tr '\n' ';' | sed 's/;$//; s/;/; /g')
rm -rf "$WORK"
if [ -n "$RULES_PROBLEM" ]; then
    die "bundle written to $OUT, but the LOG rules could not be removed ($RULES_PROBLEM): remove them with: $undo"
fi
echo "bundle written to $OUT ($nfiles files, $nwarn warnings); read it with: nicpath analyze $OUT"
