#!/bin/sh
# nicpath-collect.sh: gather a bundle for `nicpath analyze` on a host where Python cannot be
# installed. It is the sh form of `nicpath collect`: same options, same bundle (docs/collect.md),
# written by `nicpath collect --print-script`. Run it as root:
#
#   sh nicpath-collect.sh --out DIR [--iface IF]... [--duration S] [--max-size MB]
#                         [--snaplen N] [--filter BPF] [--log-rules] [--log-rate N]
#
# Bounded in time (--duration) and size (--max-size: the oldest capture chunks are dropped, with
# a warning; a file system with less than 1 MB left stops it). Changes nothing on the host unless
# --log-rules, whose rules are removed on exit, Ctrl-C, SIGTERM and SIGHUP, by a watchdog if this
# script is killed, and stop logging by themselves after the duration. --out must be new or an
# empty directory only root can write; everything is written from inside it, never through a
# symlink or over an existing file. Needs sh, awk, sed, date, du, df, dd, ls, od; uses tcpdump,
# ip (iproute2), dmesg (util-linux), nft or iptables/ip6tables, iptables-save, ip6tables-save,
# conntrack and setsid where they exist, and says what it skipped.

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
  --out DIR        directory for the bundle (new, or empty and writable by root only)
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
# Card names are words, never patterns: a card may be called `*`.
set -f

is_number() { case $1 in ''|.|*[!0-9.]*|*.*.*) return 1 ;; esac; }
is_int() { case $1 in ''|*[!0-9]*) return 1 ;; esac; }
positive() { awk -v v="$1" 'BEGIN { exit !(v + 0 > 0) }'; }

[ -n "$OUT" ] || die "--out DIR is required"
case $OUT in -*) OUT=./$OUT ;; esac
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

# --out: new, or an empty directory only root can write (someone else could plant symlinks in
# it while this runs as root); a symlink is never followed.
NOT_EMPTY="exists and is not an empty directory (never overwritten)"
unsafe_dir() {  # unsafe_dir DIR: why DIR may not take the bundle, or nothing
    ls -ldn "$1" 2>/dev/null | awk '
        $3 != 0 { print "is not owned by root (someone else could plant files in it while collect runs)"; next }
        substr($1, 6, 1) == "w" || substr($1, 9, 1) == "w" { print "is writable by group or others: only root may write it" }
        END { if (NR == 0) print "cannot be read" }'
}
if [ -L "$OUT" ]; then
    die "--out $OUT: is a symlink (never followed: give the directory itself)"
elif [ -e "$OUT" ]; then
    if [ ! -d "$OUT" ] || [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
        die "--out $OUT: $NOT_EMPTY"
    fi
    why=$(unsafe_dir "$OUT")
    [ -z "$why" ] || die "--out $OUT: $why"
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
    set +f
    for d in "$SYS_NET"/*; do
        [ -r "$d/flags" ] || continue
        f=$(cat "$d/flags" 2>/dev/null) || continue
        if [ $((f & 1)) -ne 0 ] && [ $((f & 8)) -eq 0 ]; then up=1; else up=0; fi
        printf '%s %s\n' "${d##*/}" "$up"
    done
    set -f
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
RESERVE=$MB  # below this much free space on the file system of --out the run stops
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
if [ -n "$free" ] && [ "$free" -lt $((BUDGET + RESERVE)) ]; then
    die "--max-size $MAXSIZE MB but only $((free / MB)) MB free on the file system of $parent (1 MB more is kept free): give a smaller --max-size or another --out"
fi
set -- $CARDS
if [ -n "$FILTER" ] && [ $# -gt 0 ] && have tcpdump; then
    if ! err=$(tcpdump -d -i "$1" -s "$SNAPLEN" "$FILTER" 2>&1 >/dev/null); then
        die "--filter '$FILTER': $(printf '%s' "$err" | oneline)"
    fi
fi

# The bundle directory: made here (0700), entered, and checked from inside, so that renaming or
# replacing its name afterwards cannot redirect a write. Every file is then made by a bare name
# with noclobber (O_EXCL: never an existing file, never through a symlink).
umask 077
if [ ! -e "$OUT" ] && [ ! -L "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")" 2>/dev/null
    mkdir -m 700 "$OUT" || die "--out $OUT: cannot make it"
fi
[ -L "$OUT" ] && die "--out $OUT: is a symlink (never followed: give the directory itself)"
inode=$(ls -di "$OUT" 2>/dev/null | awk '{ print $1 }')
cd -P "$OUT" 2>/dev/null || die "--out $OUT: cannot enter it"
[ "$(ls -di . | awk '{ print $1 }')" = "$inode" ] || die "--out $OUT: changed while collect was starting"
why=$(unsafe_dir .)
[ -z "$why" ] || die "--out $OUT: $why"
[ -z "$(ls -A .)" ] || die "--out $OUT: $NOT_EMPTY"
set -C

# The run's state, inside the bundle directory so that nothing is left outside --out even when
# every process of the run is killed at once (analyze ignores it; it is removed at the end).
W=.collect-work
mkdir "$W" || die "cannot make $OUT/$W"
printf '' >"$W/pids"
# The watchdog, in its own session, outlives this script: once it is gone (killed), it ends what
# the script started and removes its LOG rules. It starts before anything that needs it.
WATCHDOG='trap "" INT TERM HUP
while [ -e "/proc/$1" ] && s=$(cat "/proc/$1/stat" 2>/dev/null) && s=${s##*) } &&
    [ "${s%% *}" != Z ]; do
    sleep 1
done
[ -d .collect-work ] || exit 0
for p in $(cat .collect-work/pids 2>/dev/null); do kill "$p" 2>/dev/null; done
[ -f .collect-work/undo ] && . ./.collect-work/undo
rm -rf .collect-work'
if have setsid; then
    setsid sh -c "$WATCHDOG" nicpath-collect-watchdog "$$" </dev/null >/dev/null 2>&1 &
else
    sh -c "$WATCHDOG" nicpath-collect-watchdog "$$" </dev/null >/dev/null 2>&1 &
fi
WATCHDOG_PID=$!

RUNID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
MARKER=
[ "$LOGRULES" = 1 ] && MARKER="[nicpath-$RUNID "
printf '' >"$W/captures"
printf '' >"$W/warnings"
printf '' >"$W/skipped"
STOP=
FINISHED=0
MOMENTS=
CHANGES=0
CHANGES_OVER=0
CHANGE_SNAPSHOTS=0
RULES_TOOL=
NFTHOLDER=
KLOG_SOURCE=
KDMESG=
KAWK=
MONPID=
BAD=
SPACE_LOW=
REPORTED=

warn() { say "warning: $*"; printf '%s\n' "$*" 2>/dev/null >>"$W/warnings"; }
skip() { say "skipped $1: $2"; printf '%s\t%s\n' "$1" "$2" 2>/dev/null >>"$W/skipped"; }
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

# Writing the bundle. A file that cannot be written whole (a full disk) is removed, or a log cut
# back to its last whole line, so that what the bundle holds stays readable; the run then stops
# and exits with status 2.
bad() {  # bad NAME: NAME could not be written
    case ", $BAD, " in *", $1, "*) ;; *) BAD="$BAD${BAD:+, }$1" ;; esac
}
bad_file() { rm -f "$1"; bad "$1"; }
bad_log() {  # bad_log FILE: end FILE on its last whole line
    if [ -s "$1" ] && [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" != '\n' ]; then
        size=$(wc -c <"$1" | tr -d ' ')
        part=$(tail -n 1 "$1" | wc -c | tr -d ' ')
        dd if=/dev/null of="$1" bs=1 seek=$((size - part)) 2>/dev/null
    fi
    bad "$1"
}
to_file() {  # to_file FILE CMD...: the output of CMD as FILE (new); CMD's status, or 255 when
             # FILE could not be written whole (tools rarely say so: cat does)
    tf=$1
    shift
    tst=$( { { "$@"; echo "c$?" >&5; } | { cat 2>/dev/null >"$tf" || echo w >&5; }; } 5>&1 )
    case $tst in
        *w*) bad_file "$tf"; return 255 ;;
        c*) return "${tst#c}" ;;
    esac
    return 1
}
check_space() {  # stop the orderly way once a write failed or the file system is (almost) full
    [ -z "$STOP" ] || return
    if [ -n "$BAD" ]; then
        STOP="error: could not write ${BAD%%,*}"
        warn "could not write ${BAD%%,*}: collection stopped"
        return
    fi
    left=$(df -Pk . 2>/dev/null | awk 'NR == 2 { printf "%.0f", $4 * 1024 }')
    if [ -n "$left" ] && [ "$left" -lt "$RESERVE" ]; then
        SPACE_LOW=1
        STOP="error: the file system of --out had less than 1 MB free: collection stopped early"
        warn "${STOP#error: }"
    fi
}

trap 'STOP=${STOP:-SIGINT}' INT
trap 'STOP=${STOP:-SIGTERM}' TERM
trap 'STOP=${STOP:-SIGHUP}' HUP
trap 'on_exit' EXIT

on_exit() {  # an unexpected exit: end what was started, remove the rules
    [ "$FINISHED" = 1 ] && return
    for p in $(cat "$W/pids" 2>/dev/null); do kill "$p" 2>/dev/null; done
    [ -f "$W/undo" ] && . "$W/undo"
    kill "$WATCHDOG_PID" 2>/dev/null
    rm -rf "$W"
}

mkdir ip || die "cannot make $OUT/ip"
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
    fflush()
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
        mkfifo "$W/kfifo" || { skip kern.dmesg "cannot make a fifo in $W"; return; }
        awk -v pfx="$MARKER" -v cap="$SIDECAP" -v counts="$W/kcounts" "$KLOG_AWK" \
            <"$W/kfifo" >kern.dmesg &
        KAWK=$!
        echo "$KAWK" >>"$W/pids"
        dmesg --follow-new >>"$W/kfifo" 2>|"$W/dmesg.err" &
        KDMESG=$!
        echo "$KDMESG" >>"$W/pids"
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

late_kernel_log() {  # the lines after KSTART, from a dmesg without --follow-new
    dmesg 2>/dev/null | awk -v t="$KSTART" '
        { s = $0; sub(/^\[ */, "", s); sub(/\].*/, "", s); if (s + 0 > t + 0) print }' |
        awk -v pfx="$MARKER" -v cap="$SIDECAP" -v counts="$W/kcounts" "$KLOG_AWK"
}

close_kernel_log() {
    [ -n "$KLOG_SOURCE" ] || return
    sleep 0.2 2>/dev/null || sleep 1
    if [ -n "$KDMESG" ]; then
        kill "$KDMESG" 2>/dev/null
        wait "$KDMESG" 2>/dev/null
        wait "$KAWK" 2>/dev/null || bad_log kern.dmesg
    else
        to_file kern.dmesg late_kernel_log
        warn "dmesg has no --follow-new: kernel log read at the end; lines overwritten in the ring buffer during the run are lost"
    fi
    K_LINES=0 K_LOG=0 K_OTHER=0 K_OVER=0
    [ -s "$W/kcounts" ] && read -r K_LINES K_LOG K_OTHER K_OVER <"$W/kcounts"
    if [ "$K_OVER" -gt 0 ]; then
        warn "kern.dmesg reached a tenth of --max-size: $K_OVER later kernel log lines not written"
    fi
}

# Host facts, rulesets.
sysctl_lines() {
    set +f
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
    done
    set -f
}

host_facts() {
    bt=$(awk '$1 == "btime" { print $2 }' /proc/stat 2>/dev/null)
    if [ -n "$bt" ]; then
        to_file btime printf '%s\n' "$bt"
    else
        skip btime "no btime in /proc/stat"
    fi
    to_file sysctl.txt sysctl_lines
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
    to_file "$name" "$tool" "$@" 2>|"$W/save.err"
    rc=$?
    if [ "$rc" != 0 ] && [ "$rc" != 255 ]; then
        rm -f "$name"
        why=$(oneline <"$W/save.err")
        skip "$name" "$tool failed: ${why:-$rc}"
    fi
}

conntrack_lines() {  # both families, cut at a tenth of --max-size; the counts and problems in $W
    for fam in ipv4 ipv6; do
        if ! conntrack -L -f "$fam" 2>|"$W/ct.err"; then
            printf '%s: %s\n' "$fam" "$(oneline <"$W/ct.err")" >>"$W/ct.problems"
        fi
    done | awk -v cap="$SIDECAP" -v counts="$W/ctcounts" '
        { n++; s = length($0) + 1; if (w + s > cap) { over++; next } print; w += s }
        END { printf "%d %d\n", over, n > counts }'
}

conntrack_table() {  # at the end: the NAT each flow got when it began (F5)
    missing conntrack conntrack.txt && return
    if [ ! -d /sys/module/nf_conntrack ]; then
        skip conntrack.txt "connection tracking is not loaded (nothing to list)"
        return
    fi
    printf '' >|"$W/ct.problems"
    to_file conntrack.txt conntrack_lines
    [ "$?" = 255 ] && return
    problems=$(tr '\n' ';' <"$W/ct.problems" | sed 's/;$//; s/;/; /g')
    if [ "$(wc -l <"$W/ct.problems" | tr -d ' ')" -ge 2 ]; then
        rm -f conntrack.txt
        skip conntrack.txt "conntrack -L failed: $problems"
        return
    fi
    [ -n "$problems" ] && warn "conntrack -L: $problems"
    over=0 entries=0
    [ -s "$W/ctcounts" ] && read -r over entries <"$W/ctcounts"
    if [ "${over:-0}" -gt 0 ]; then
        warn "conntrack.txt cut at a tenth of --max-size: $over of $entries entries left out"
    fi
}

# ip snapshots and changes.
part() {  # part NAME ARGS...: ip -j, else plain text
    name=$1
    shift
    to_file "$SNAP/$name.json" ip -j "$@" 2>|"$W/ip.err"
    rc=$?
    [ "$rc" = 255 ] && return
    if [ "$rc" = 0 ] && IFS= read -r first <"$SNAP/$name.json" &&
        case $first in '['*) true ;; *) false ;; esac; then
        WROTE=1
        return
    fi
    rm -f "$SNAP/$name.json"
    to_file "$SNAP/$name.txt" ip "$@" 2>|"$W/ip.err"
    rc=$?
    [ "$rc" = 255 ] && return
    if [ "$rc" = 0 ]; then
        WROTE=1
    else
        rm -f "$SNAP/$name.txt"
        why=$(oneline <"$W/ip.err")
        warn "ip/$MOMENT: ip $*: ${why:-failed}"
    fi
}

snapshot() {  # snapshot MOMENT; left out whole when nothing of it could be written
    MOMENT=$1
    SNAP=ip/$1
    mkdir "$SNAP" 2>/dev/null || { bad "$SNAP/"; return; }
    WROTE=0
    to_file "$SNAP/taken_at" now && WROTE=1
    part addr addr
    part link link
    part route route show table all
    part rule rule
    part route6 -6 route show table all
    part rule6 -6 rule
    [ "$WROTE" = 0 ] && rmdir "$SNAP" 2>/dev/null && return
    MOMENTS="$MOMENTS $1"
}

start_monitor() {
    printf '' >"$W/monitor"
    (TZ=UTC; export TZ; exec ip -ts monitor link address route rule) >>"$W/monitor" 2>/dev/null &
    MONPID=$!
    echo "$MONPID" >>"$W/pids"
    sleep 0.05 2>/dev/null || sleep 1
    if ! kill -0 "$MONPID" 2>/dev/null; then
        printf '' >|"$W/monitor"
        ip monitor link address route rule >>"$W/monitor" 2>/dev/null &
        MONPID=$!
        echo "$MONPID" >>"$W/pids"
        sleep 0.05 2>/dev/null || sleep 1
        if ! kill -0 "$MONPID" 2>/dev/null; then
            MONPID=
            skip "change snapshots" "ip monitor could not start"
            return
        fi
    fi
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
    n=$(wc -l <"$W/monitor" | tr -d ' ')
    [ "$n" -gt "$MONSEEN" ] || return 1
    sed -n "$((MONSEEN + 1)),${n}p" "$W/monitor" |
        awk -v fallback="$(now)" "$MON_AWK" >|"$W/events"
    MONSEEN=$n
    if [ "$n" -gt 100000 ]; then  # a flood of events: start the raw file over
        printf '' >|"$W/monitor"
        MONSEEN=0
    fi
    e=$(wc -l <"$W/events" | tr -d ' ')
    [ "$e" -gt 0 ] || return 1
    CHANGES=$((CHANGES + e))
    case ", $BAD, " in *", changes.log, "*) return 0 ;; esac
    used=0
    [ -f changes.log ] && used=$(wc -c <changes.log | tr -d ' ')
    printf '0\n' >|"$W/changes.over"
    awk -v used="$used" -v cap="$SIDECAP" -v over="$W/changes.over" '
        { s = length($0) + 1; if (used + s > cap) { n++; next } print; used += s }
        END { print n + 0 > over }' "$W/events" >>changes.log || bad_log changes.log
    read -r over <"$W/changes.over"
    CHANGES_OVER=$((CHANGES_OVER + over))
    return 0
}

capturing() {  # capturing CARD: true when CARD has a capture already
    while read -r cc _; do
        [ "$cc" = "$1" ] && return 0
    done <"$W/captures"
    return 1
}

check_changes() {  # check_changes NOW_CS: a snapshot once a burst of changes has settled
    if record_changes; then PENDING=$1; return; fi
    [ -n "${PENDING:-}" ] || return
    [ $(($1 - PENDING)) -ge 20 ] && [ $(($1 - LAST_SNAP)) -ge 100 ] || return
    PENDING=
    LAST_SNAP=$1
    ipkb=$(du -sk ip | awk '{ print $1 * 1024 }')
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
            capturing "$c" && continue
            count=$(wc -l <"$W/captures" | tr -d ' ')
            if [ "$BUDGET" -lt $((2 * MB * (count + 1))) ]; then
                if [ ! -e "$W/noroom.$c" ]; then
                    printf '' >|"$W/noroom.$c"
                    warn "card $c came up, but --max-size has no room to capture it"
                fi
                continue
            fi
            say "card $c came up: capturing it too"
            start_capture "$c"
        done
    fi
}

# LOG rules. They stop logging by themselves EXPIRES seconds after they go in (--duration and a
# margin; nft: the set `alive` times out; iptables: the time match) and nft's table is deleted by
# the kernel when the nft -i that owns it ends, which it does with this script.
EXPIRES=$(awk -v d="$DURATION" 'BEGIN { e = int(d); if (e < d) e++; e += 60; if (e > 2592000) e = 2592000; print e }')
# An epoch as the UTC date of the iptables time match (--datestop).
DATESTOP_AWK='BEGIN {
    z = int(t / 86400); s = t - z * 86400; z += 719468
    era = int(z / 146097); doe = z - era * 146097
    yoe = int((doe - int(doe / 1460) + int(doe / 36524) - int(doe / 146096)) / 365)
    doy = doe - (365 * yoe + int(yoe / 4) - int(yoe / 100)); mp = int((5 * doy + 2) / 153)
    d = doy - int((153 * mp + 2) / 5) + 1; m = mp < 10 ? mp + 3 : mp - 9; y = yoe + era * 400 + (m <= 2)
    printf "%04d-%02d-%02dT%02d:%02d:%02d\n", y, m, d, int(s / 3600), int(s % 3600 / 60), s % 60
}'

nft_rule() {  # nft_rule HOOK: the LOG rule of one chain
    dev=iifname
    [ "$1" = OUTPUT ] && dev=oifname
    printf 'meta nfproto @alive %s != "lo" limit rate %s/second burst %s packets log prefix "[nicpath-%s %s] " flags tcp sequence\n' \
        "$dev" "$LOGRATE" "$LOGRATE" "$RUNID" "$1"
}

nft_ruleset() {  # nft_ruleset OWNER: the LOG table as one line (one transaction)
    printf 'table inet nicpath_%s {' "$RUNID"
    [ "$1" = 1 ] && printf ' flags owner;'
    printf ' set alive { type nf_proto; flags timeout; elements = { ipv4 timeout %ss, ipv6 timeout %ss }; };' \
        "$EXPIRES" "$EXPIRES"
    for hook in OUTPUT INPUT; do
        lower=$(printf '%s' "$hook" | tr A-Z a-z)
        printf ' chain %s { type filter hook %s priority -1; policy accept; %s; };' \
            "$lower" "$lower" "$(nft_rule "$hook")"
    done
    printf ' }\n'
}

ipt_spec() {  # ipt_spec HOOK [DATESTOP]: the iptables rule specification, as sh words
    dev=-i
    [ "$1" = OUTPUT ] && dev=-o
    printf "! %s lo -m limit --limit %s/second --limit-burst %s%s -j LOG --log-prefix '[nicpath-%s %s] ' --log-tcp-sequence\n" \
        "$dev" "$LOGRATE" "$LOGRATE" "${2:+ -m time --datestop $2}" "$RUNID" "$1"
}

nft_owned() {  # the table made by an nft -i that stays for the run, its input on fd 3
    mkfifo "$W/nft.in" 2>/dev/null || return 1
    exec 3<>"$W/nft.in"
    exec 4<"$W/nft.in"
    rm -f "$W/nft.in"
    nft -i <&4 >/dev/null 2>>"$W/nft.err" 3>&- 4<&- &
    NFTHOLDER=$!
    echo "$NFTHOLDER" >>"$W/pids"
    exec 4<&-
    nft_ruleset 1 >&3
    i=0
    while [ $i -lt 150 ] && kill -0 "$NFTHOLDER" 2>/dev/null && [ ! -s "$W/nft.err" ]; do
        nft list table inet "nicpath_$RUNID" >/dev/null 2>&1 && return 0
        sleep 0.02 2>/dev/null || sleep 1
        i=$((i + 1))
    done
    close_holder
    return 1
}

close_holder() {  # end nft -i (its input closes): the kernel deletes the table it owns
    [ -n "$NFTHOLDER" ] || return
    exec 3>&-
    i=0
    while kill -0 "$NFTHOLDER" 2>/dev/null && [ $i -lt 50 ]; do
        sleep 0.1 2>/dev/null || sleep 1
        i=$((i + 1))
    done
    kill -KILL "$NFTHOLDER" 2>/dev/null
    wait "$NFTHOLDER" 2>/dev/null
    NFTHOLDER=
}

undo_lines() {  # every command that removes a rule insert_rules may add
    have nft && echo "nft delete table inet nicpath_$RUNID >/dev/null 2>&1"
    for t in iptables ip6tables; do
        have "$t" || continue
        for hook in OUTPUT INPUT; do
            echo "$t -w -D $hook $(ipt_spec "$hook" "$UNTIL") >/dev/null 2>&1"
            echo "$t -w -D $hook $(ipt_spec "$hook") >/dev/null 2>&1"
        done
    done
}

insert_rules() {
    printf '' >|"$W/rules"
    printf '' >|"$W/checks"
    UNTIL=$(awk -v t="$(($(date +%s) + EXPIRES))" "$DATESTOP_AWK")
    # What removes every rule this may add, before the first goes in (the watchdog runs it).
    if ! to_file "$W/undo" undo_lines; then
        warn "no LOG rules inserted: their removal could not be written down"
        return
    fi
    if have nft; then
        if nft_owned; then
            RULES_TOOL=nft
        else
            why=$(oneline <"$W/nft.err" 2>/dev/null)
            why=${why:-nft -i did not add it within 3 s}
            if nft_ruleset 0 | nft -f - 2>|"$W/nft.err"; then
                RULES_TOOL=nft
                warn "the LOG table cannot be tied to collect ($why): if every process of the run is killed at once it stays, its rules logging nothing after $EXPIRES s (remove it with: nft delete table inet nicpath_$RUNID)"
            else
                warn "nft could not add the LOG table ($(oneline <"$W/nft.err")); trying iptables"
            fi
        fi
        if [ -n "$RULES_TOOL" ]; then
            for hook in OUTPUT INPUT; do nft_rule "$hook"; done >>"$W/rules"
            echo "nft list table inet nicpath_$RUNID" >>"$W/checks"
        fi
    fi
    if [ -z "$RULES_TOOL" ] && { have iptables || have ip6tables; }; then
        lasting=
        for t in iptables ip6tables; do
            for hook in OUTPUT INPUT; do
                if ! have "$t"; then
                    warn "$t not found: no $t LOG rule in $hook"
                    continue
                fi
                spec=$(ipt_spec "$hook" "$UNTIL")
                if ! eval "$t -w -I $hook 1 $spec" 2>|"$W/ipt.err"; then
                    spec=$(ipt_spec "$hook")
                    if eval "$t -w -I $hook 1 $spec" 2>/dev/null; then
                        lasting=1
                    else
                        warn "$t -I $hook: $(oneline <"$W/ipt.err")"
                        continue
                    fi
                fi
                echo "$t -I $hook 1 $spec" >>"$W/rules"
                echo "$t -w -C $hook $spec" >>"$W/checks"
            done
        done
        [ -n "$lasting" ] &&
            warn "the iptables time match is missing: the LOG rules do not stop by themselves, only collect and its watchdog remove them"
        [ -s "$W/rules" ] && RULES_TOOL=iptables
    fi
    if [ -z "$RULES_TOOL" ]; then
        warn "no LOG rules inserted: neither nft nor iptables could add them"
        return
    fi
    RULES_REMOVED=false
    say "LOG rules inserted with $RULES_TOOL, prefixes ${MARKER}OUTPUT/INPUT]"
}

rules_present() {
    while IFS= read -r check; do
        eval "$check" >/dev/null 2>&1 && return 0
    done <"$W/checks"
    return 1
}

remove_rules() {
    [ -n "$RULES_TOOL" ] || return
    if [ -n "$NFTHOLDER" ]; then
        printf 'delete table inet nicpath_%s\n' "$RUNID" >&3
        close_holder
    fi
    [ -f "$W/undo" ] && . "$W/undo"
    if rules_present; then
        RULES_PROBLEM="LOG rules still present after removal"
        warn "LOG rules not removed: $RULES_PROBLEM"
    else
        RULES_REMOVED=true
        say "LOG rules removed"
    fi
}

# Captures.
start_capture() {  # start_capture CARD: tcpdump -C writes CARD.pcap, CARD.pcap1, ... here
    tcpdump -i "$1" -w "$1.pcap" -C "$CHUNK" -s "$SNAPLEN" -p -n -U --immediate-mode \
        -Z root ${FILTER:+"$FILTER"} </dev/null >/dev/null 2>|"$W/tcpdump-$1.err" 3>&- &
    echo "$1 $!" >>"$W/captures"
    echo "$!" >>"$W/pids"
}

wait_listening() {
    i=0
    while [ $i -lt 250 ] && [ -z "$STOP" ]; do
        waiting=0
        while read -r c p; do
            grep -q "listening on" "$W/tcpdump-$c.err" 2>/dev/null && continue
            kill -0 "$p" 2>/dev/null && waiting=1
        done <"$W/captures"
        [ "$waiting" = 0 ] && return
        sleep 0.02 2>/dev/null || sleep 1
        i=$((i + 1))
    done
    while read -r c p; do
        grep -q "listening on" "$W/tcpdump-$c.err" 2>/dev/null ||
            warn "tcpdump on $c did not say it listens within 5 s"
    done <"$W/captures"
}

capture_problem() {  # tcpdump's own words, without the listening line and the counts
    grep -v -e 'listening on' -e 'packets\{0,1\} captured' -e 'received by filter' \
        -e 'dropped by kernel' "$W/tcpdump-$1.err" 2>/dev/null | oneline
}

check_captures() {
    while read -r c p; do
        [ -e "$W/status.$c" ] && continue
        kill -0 "$p" 2>/dev/null && continue
        wait "$p" 2>/dev/null
        st=$?
        echo "$st" 2>/dev/null >|"$W/status.$c"
        why=$(capture_problem "$c")
        warn "capture on $c stopped (status $st): ${why:-no message}"
    done <"$W/captures"
}

stop_captures() {
    while read -r c p; do
        [ -e "$W/status.$c" ] && continue
        kill -TERM "$p" 2>/dev/null
    done <"$W/captures"
    while read -r c p; do
        [ -e "$W/status.$c" ] && continue
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1 2>/dev/null || sleep 1
            i=$((i + 1))
        done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
        echo "$?" 2>/dev/null >|"$W/status.$c"
        dropped=$(stat_of "$c" 'dropped by kernel')
        if [ "${dropped:-0}" -gt 0 ]; then
            warn "capture on $c: $dropped packets dropped by the kernel (tcpdump could not keep up; a --filter or a smaller --snaplen helps)"
        fi
    done <"$W/captures"
}

successor() {  # the name tcpdump -C gives the chunk after $1
    case $1 in
        *.pcap) printf '%s1\n' "$1" ;;
        *) printf '%s.pcap%s\n' "${1%.pcap*}" "$((${1##*.pcap} + 1))" ;;
    esac
}

oldest_closed_chunk() {  # a chunk is closed once its successor exists
    ls -tr 2>/dev/null | while IFS= read -r f; do
        case $f in *.pcap|*.pcap[0-9]|*.pcap[0-9]*[0-9]) ;; *) continue ;; esac
        if [ -e "$(successor "$f")" ]; then
            printf '%s\n' "$f"
            break
        fi
    done
}

keep_budget() {
    used=$(du -sk . | awk '{ printf "%.0f", $1 * 1024 }')
    while [ "$used" -gt "$BUDGET" ]; do
        victim=$(oldest_closed_chunk)
        [ -n "$victim" ] || break
        size=$(wc -c <"$victim" | tr -d ' ')
        rm -f -- "$victim"
        printf '%s\n' "$victim" >>"$W/dropped.${victim%.pcap*}"
        warn "capture budget: dropped oldest chunk $victim ($size bytes)"
        used=$(du -sk . | awk '{ printf "%.0f", $1 * 1024 }')
    done
}

chunk_files() {  # one card's chunks in the order tcpdump wrote them
    ls | CARD=$1 awk '
        index($0, ENVIRON["CARD"] ".pcap") == 1 {
            n = substr($0, length(ENVIRON["CARD"]) + 6); if (n ~ /^[0-9]*$/) print n + 0 "\t" $0 }' |
        sort -n | cut -f2
}

bundle_files() {  # every file of the bundle but the manifest (and the run's own state)
    find . -path "./$W" -prune -o -type f ! -name manifest.json -print | sed 's|^\./||' | sort
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
    sed -n "s/^\([0-9][0-9]*\) packets\{0,1\} $2.*/\1/p" "$W/tcpdump-$1.err" 2>/dev/null | head -n 1
}
tool_version() {  # the first line a tool prints for its version flag; null when it has none
    if have "$1" && "$1" "$2" >|"$W/version" 2>&1 </dev/null; then
        json_or_null "$(awk 'NF { sub(/^[ \t]+/, ""); sub(/[ \t]+$/, ""); print; exit }' "$W/version")"
    else
        printf 'null'
    fi
}

manifest() {
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
            "$(cat "$W/dropped.$c" 2>/dev/null | json_lines)" \
            "$(num_or_null "$(stat_of "$c" captured)")" \
            "$(num_or_null "$(stat_of "$c" 'received by filter')")" \
            "$(num_or_null "$(stat_of "$c" 'dropped by kernel')")" \
            "$(num_or_null "$(cat "$W/status.$c" 2>/dev/null)")" "$(json_or_null "$err")"
        sep=,
    done <"$W/captures"
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
            "$(json_str "[nicpath-$RUNID INPUT] ")" "$LOGRATE" "$(json_lines <"$W/rules")" \
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
    printf '  "files": %s,\n' "$(bundle_files | json_lines)"
    printf '  "skipped": ['
    sep=
    while IFS="$(printf '\t')" read -r what why; do
        printf '%s{"what": %s, "why": %s}' "$sep" "$(json_str "$what")" "$(json_str "$why")"
        sep=', '
    done <"$W/skipped"
    printf '],\n'
    printf '  "warnings": %s\n}\n' "$(json_lines <"$W/warnings")"
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
captured=$(cut -d' ' -f1 "$W/captures" | tr '\n' ' ' | sed -e 's/ $//' -e 's/ /, /g')
say "collecting into $OUT for $DURATION s (cards: ${captured:-none}); Ctrl-C stops"

END_CS=$(($(now_cs) + $(awk -v d="$DURATION" 'BEGIN { printf "%d", d * 100 }')))
while [ -z "$STOP" ]; do
    NOW=$(now_cs)
    [ "$NOW" -lt "$END_CS" ] || break
    [ -n "$MONPID" ] && check_changes "$NOW"
    keep_budget
    check_space
    check_captures
    if [ -n "$NFTHOLDER" ] && [ -z "$REPORTED" ] && ! kill -0 "$NFTHOLDER" 2>/dev/null; then
        REPORTED=1
        warn "the nft -i that owns the LOG table ended: its rules went with it"
    fi
    [ -z "$STOP" ] && { sleep 0.2 2>/dev/null || sleep 1; }
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
to_file manifest.json manifest
FINISHED=1
kill "$WATCHDOG_PID" 2>/dev/null
nfiles=$(bundle_files | wc -l | tr -d ' ')
nwarn=$(wc -l <"$W/warnings" | tr -d ' ')
undo=$(sed -e 's/^nft list /nft delete /' -e 's/ -w -C / -w -D /' "$W/checks" 2>/dev/null |
    tr '\n' ';' | sed 's/;$//; s/;/; /g')
rm -rf "$W"
problems=
if [ -n "$BAD" ]; then
    problems="the bundle in $OUT is incomplete: could not write $BAD (is its file system full?); what it holds is readable"
elif [ -n "$SPACE_LOW" ]; then
    problems="bundle written to $OUT, but ${STOP#error: }"
fi
if [ -n "$RULES_PROBLEM" ]; then
    rules="the LOG rules could not be removed ($RULES_PROBLEM): remove them with: $undo"
    if [ -n "$problems" ]; then problems="$problems; $rules"; else problems="bundle written to $OUT, but $rules"; fi
fi
[ -z "$problems" ] || die "$problems"
echo "bundle written to $OUT ($nfiles files, $nwarn warnings); read it with: nicpath analyze $OUT"
