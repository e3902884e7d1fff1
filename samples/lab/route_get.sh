#!/bin/bash
# Record what the real kernel answers to `ip route get`, for nicpath's route replay:
#   sudo samples/lab/route_get.sh [SETUP...]        (default: every setup)
#
# Each setup builds one namespace rt-<setup> (the host) whose cards are veth devices with their
# other ends in rt-<setup>-p (so they have carrier), configures addresses, routes, rules and
# sysctls, saves the host's `ip -j` snapshots to samples/route_get/<setup>/snapshot/, then runs a few
# hundred `ip -j route get` queries (samples/lab/route_queries.py) and saves each query with the
# kernel's answer, or its error text, to samples/route_get/<setup>/queries.jsonl.  No traffic is
# sent; nothing outside the rt-* namespaces is touched; they are deleted on exit.
set -u
LAB=$(cd "$(dirname "$0")" && pwd)
OUT=$(dirname "$LAB")/route_get
export PYTHONDONTWRITEBYTECODE=1
SETUPS=(policy4 tables4 router4 ipv6)
NSLIST=()

log() { echo "[route_get $(date +%T)] $*" >&2; }

cleanup() {
    local ns
    for ns in "${NSLIST[@]}"; do ip netns del "$ns" 2>/dev/null; done
    NSLIST=()
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "route_get.sh: needs root (network namespaces)" >&2; exit 2; }

newns() {  # newns NAME: a fresh namespace, lo up, no DAD (IPv6 addresses usable at once)
    ip netns del "$1" 2>/dev/null
    ip netns add "$1" || exit 1
    NSLIST+=("$1")
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
}

x() {  # x ARGS...: an `ip` command in the host namespace, logged to commands.txt
    echo "ip $*" >> "$D/commands.txt"
    ip -n "$H" "$@" || { log "FAILED: ip $*"; exit 1; }
}

sx() {  # sx KEY=VALUE...: sysctls in the host namespace, logged
    echo "sysctl -w $*" >> "$D/commands.txt"
    ip netns exec "$H" sysctl -qw "$@" || { log "FAILED: sysctl $*"; exit 1; }
}

card() {  # card NAME: a veth card in the host, its peer end up in the peer namespace
    ip link add "$1" netns "$H" type veth peer name "p$1" netns "$PEER" || exit 1
    ip -n "$PEER" link set "p$1" up
    x link set "$1" up
}

begin() {  # begin SETUP: namespaces and an empty output directory
    SETUP=$1; H=rt-$1; PEER=rt-$1-p; D=$OUT/$1
    rm -rf "$D"; mkdir -p "$D/snapshot"
    : > "$D/commands.txt"
    newns "$H"; newns "$PEER"
}

snapshot() {  # the host's state, as record.sh saves it, plus the sysctls the lookup reads
    local d=$D/snapshot
    echo "$EPOCHREALTIME" > "$d/taken_at"
    ip -n "$H" -j addr > "$d/addr.json"
    ip -n "$H" -j link > "$d/link.json"
    ip -n "$H" -j route show table all > "$d/route.json"
    ip -n "$H" -j rule > "$d/rule.json"
    ip -n "$H" -6 -j route show table all > "$d/route6.json"
    ip -n "$H" -6 -j rule > "$d/rule6.json"
    ip -n "$H" addr > "$d/addr.txt"
    ip -n "$H" link > "$d/link.txt"
    ip -n "$H" route show table all > "$d/route.txt"
    ip -n "$H" rule > "$d/rule.txt"
    ip -n "$H" -6 route show table all > "$d/route6.txt"
    ip -n "$H" -6 rule > "$d/rule6.txt"
    ip netns exec "$H" sysctl net.ipv4.ip_forward net.ipv4.conf net.ipv6.conf 2>/dev/null \
        | grep -E '^net\.ipv4\.ip_forward |\.(forwarding|rp_filter|accept_local|route_localnet|src_valid_mark|send_redirects|use_oif_addrs_only|use_tempaddr|disable_ipv6) ' \
        > "$d/sysctl.txt"
}

queries() {  # run the generated queries against the kernel
    ip netns exec "$H" true || exit 1
    python3 "$LAB/route_queries.py" --ns "$H" --snapshot "$D/snapshot" --seed "$1" --count "$2" \
        --out "$D/queries.jsonl" || exit 1
    log "$SETUP: $(wc -l < "$D/queries.jsonl") queries, $(grep -c '"error"' "$D/queries.jsonl") failing"
}

# ------------------------------------------------------------------------------------ setups

setup_policy4() {  # IPv4 policy routing: from, fwmark/mask, iif, oif, ipproto/ports, uid, tos, goto, suppress
    begin policy4
    card rta; card rtb; card rtc; card rtd
    x addr add 10.1.0.2/24 dev rta
    x addr add 10.1.0.3/24 dev rta
    x addr add 10.2.0.2/24 dev rtb
    x addr add 10.3.0.2/24 dev rtc
    x addr add 10.33.0.2/24 dev rtc
    x addr add 192.168.50.2/24 dev rtd
    x route add default via 10.1.0.1 dev rta metric 100
    x route add default via 10.2.0.1 dev rtb metric 200
    x route add 172.16.0.0/12 via 10.3.0.1
    x route add default via 10.2.0.1 dev rtb table 101
    x route add 10.50.0.0/16 via 10.3.0.1 table 101
    x route add default via 10.3.0.1 dev rtc src 10.33.0.2 table 102
    x route add 198.51.100.0/24 via 192.168.50.1 table 103
    x route add throw 198.51.100.128/25 table 103
    x route add default via 192.168.50.1 table 104
    x route add default via 10.3.0.1 table 105
    x route add default via 192.168.50.1 dev rtd src 192.168.50.2 table 106
    x route add default via 10.2.0.1 table 110
    x route add 172.16.5.0/24 via 10.1.0.1 table 110
    x route add default via 192.168.50.1 table 111
    x rule add from 10.2.0.2 lookup 101 pref 100
    x rule add fwmark 0x1/0x1 lookup 102 pref 110
    x rule add fwmark 0x20 lookup 103 pref 120
    x rule add iif rtb lookup 104 pref 130
    x rule add ipproto tcp dport 443 lookup 105 pref 140
    x rule add ipproto udp sport 5000-5010 lookup 106 pref 150
    x rule add to 203.0.113.0/28 prohibit pref 160
    x rule add to 203.0.113.16/28 blackhole pref 161
    x rule add to 203.0.113.32/28 unreachable pref 162
    x rule add from 10.33.0.0/16 goto 300 pref 170
    x rule add not to 10.0.0.0/8 oif rtd lookup 104 pref 180
    x rule add uidrange 1000-1999 lookup 110 pref 190
    x rule add tos 0x10 lookup 103 pref 195
    x rule add fwmark 0x40/0xc0 lookup main suppress_prefixlength 0 pref 200
    x rule add fwmark 0x40/0xc0 lookup 111 pref 210
    x rule add iif rtnosuch lookup 101 pref 250
    x rule add nop pref 260
    x rule add to 100.64.0.0/10 goto 400 pref 280
    x rule add to 100.64.0.0/10 lookup 101 pref 290
    x rule add from 10.33.0.0/16 lookup 110 pref 300
    snapshot
    queries 4101 130
}

setup_tables4() {  # IPv4 without rules: prefixes, metrics, route types, multipath, tos, source selection
    begin tables4
    card rta; card rtb; card rtc; card rtd
    x addr add 10.1.7.1/32 dev rta scope link
    x addr add 10.1.0.2/24 dev rta
    x addr add 10.1.0.3/24 dev rta
    x addr add 10.9.0.2/24 dev rta
    x addr add 10.2.0.2/24 dev rtb
    x addr add 192.168.50.2/24 dev rtd
    x route add 10.40.0.0/16 via 10.1.0.1 metric 100
    x route add 10.40.0.0/16 via 10.2.0.1 metric 50
    x route add 10.40.5.0/24 via 10.1.0.1 metric 300
    x route add 10.41.0.0/16 dev rtc
    x route add 10.42.0.0/16 via 10.9.0.1
    x route add blackhole 10.43.0.0/16
    x route add 10.43.1.0/24 via 10.1.0.1
    x route add unreachable 10.44.0.0/16
    x route add prohibit 10.45.0.0/16
    x route add throw 10.46.0.0/16
    x route add unreachable 10.47.0.0/16 metric 10
    x route add 10.47.0.0/16 via 10.1.0.1 metric 20
    x route add 10.48.0.0/16 via 10.1.0.1 metric 20
    x route add blackhole 10.48.0.0/16 metric 30
    x route add 10.49.0.0/16 nexthop via 10.1.0.1 weight 1 nexthop via 10.2.0.1 weight 3
    x route add 10.50.0.0/16 via 10.2.0.1 src 10.1.0.3
    x route add 10.51.0.0/16 tos 0x10 via 10.2.0.1
    x route add 10.51.0.0/16 via 10.1.0.1
    x route add 10.52.0.0/16 via 10.3.3.3 dev rtc onlink
    x route add 10.53.0.0/16 dev rta scope link
    x route add local 192.0.2.0/24 dev lo
    x route add default via 192.168.50.1 dev rtd table default
    card rte; ip -n "$PEER" link set prte down       # rte has no carrier: its routes are linkdown
    x addr add 10.4.0.2/24 dev rte
    x route add 10.54.0.0/16 via 10.4.0.1 dev rte metric 10
    x route add 10.54.0.0/16 via 10.1.0.1 metric 20
    card rtf
    x addr add 10.5.0.2/24 dev rtf
    x route add 10.55.0.0/16 nexthop via 10.1.0.1 dev rta nexthop via 10.5.0.1 dev rtf
    x link set rtf down                                # its nexthop of 10.55.0.0/16 is dead
    snapshot
    queries 4102 110
}

setup_router4() {  # IPv4 forwarding: input lookups (iif), local delivery, martians, rp_filter strict/loose
    begin router4
    card rta; card rtb; card rtc
    sx net.ipv4.ip_forward=1
    sx net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    sx net.ipv4.conf.rta.rp_filter=1 net.ipv4.conf.rtb.rp_filter=2 net.ipv4.conf.rtc.rp_filter=0
    x addr add 10.1.0.2/24 dev rta
    x addr add 10.2.0.2/24 dev rtb
    x addr add 10.3.0.2/24 dev rtc
    x route add default via 10.1.0.1
    x route add 10.20.0.0/16 via 10.2.0.1
    x route add 10.30.0.0/16 via 10.3.0.1
    x route add blackhole 10.99.0.0/16
    x route add unreachable 10.98.0.0/16
    x route add prohibit 10.97.0.0/16
    x route add default via 10.3.0.1 table 200
    x rule add iif rtc lookup 200 pref 100
    x rule add fwmark 0x7 iif rtb unreachable pref 110
    snapshot
    queries 4103 110
}

setup_ipv6() {  # IPv6: prefixes, metrics, route types, rules, source address selection (RFC 6724)
    begin ipv6
    card rta; card rtb; card rtc; card rtd
    x addr add fd00:1::2/64 dev rta nodad
    x addr add 2001:db8:1::2/64 dev rta nodad
    x addr add 2001:db8:1::3/64 dev rta nodad preferred_lft 0
    x addr add fd00:2::2/64 dev rtb nodad
    x addr add 2001:db8:2::2/64 dev rtb nodad
    x addr add fd00:4::2/64 dev rtd nodad
    x addr add 2002:c000:204::2/64 dev rtd nodad
    x -6 route add default via fd00:1::1 dev rta metric 1024
    x -6 route add default via fd00:2::1 dev rtb metric 2048
    x -6 route add 2001:db8:100::/48 via 2001:db8:2::1 metric 100
    x -6 route add 2001:db8:100::/48 via fd00:1::1 metric 50
    x -6 route add 2001:db8:100:5::/64 dev rtc
    x -6 route add 2001:db8:101::/48 via fd00:2::1 src 2001:db8:1::2
    x -6 route add blackhole 2001:db8:dead::/48
    x -6 route add unreachable 2001:db8:beef::/48
    x -6 route add prohibit 2001:db8:cafe::/48
    x -6 route add throw 2001:db8:f00d::/48
    x -6 route add 2001:db8:400::/48 nexthop via fd00:1::1 dev rta nexthop via fd00:2::1 dev rtb
    x -6 route add default via fd00:4::1 dev rtd table 300
    x -6 route add 2001:db8:200::/48 via fd00:2::1 table 300
    x -6 route add throw 2001:db8:f00d::/48 table 300
    x -6 rule add from fd00:4::/64 lookup 300 pref 100
    x -6 rule add fwmark 0x3 lookup 300 pref 110
    x -6 rule add to 2001:db8:200::/40 lookup 300 pref 120
    x -6 rule add iif rtb lookup 300 pref 130
    x -6 rule add to 2001:db8:bad:1::/64 prohibit pref 139
    x -6 rule add to 2001:db8:bad::/48 unreachable pref 140
    x -6 rule add to 2001:db8:bad:2::/64 blackhole pref 141
    x -6 rule add ipproto udp dport 53 lookup 300 pref 150
    x -6 rule add fwmark 0x40/0xc0 lookup main suppress_prefixlength 0 pref 160
    x -6 rule add fwmark 0x40/0xc0 lookup 300 pref 170
    card rte; ip -n "$PEER" link set prte down       # no carrier: linkdown routes
    x addr add fd00:5::2/64 dev rte nodad
    x -6 route add 2001:db8:500::/48 via fd00:5::1 dev rte metric 10
    x -6 route add 2001:db8:500::/48 via fd00:1::1 dev rta metric 20
    snapshot
    queries 4106 130
}

want=("$@")
[ ${#want[@]} = 0 ] && want=("${SETUPS[@]}")
for s in "${want[@]}"; do
    declare -F "setup_$s" >/dev/null || { echo "route_get.sh: unknown setup $s (${SETUPS[*]})" >&2; exit 2; }
    log "setup $s"
    "setup_$s"
    cleanup
done
log "done: $OUT"
