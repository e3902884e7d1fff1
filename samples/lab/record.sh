#!/bin/bash
# Record nicpath sample bundles: sudo samples/lab/record.sh SCENARIO|all
#
# Each scenario builds its own network namespaces (names np-<tag>-*), a bridge inside a
# "switch" namespace, veth pairs, runs a few seconds of bounded traffic from the python
# generators in this directory, performs the mid-flow change, and writes
# samples/<scenario>/ (see samples/README.md).  Nothing in the root namespace is touched
# except the sysctl net.netfilter.nf_log_all_netns=1.  NICPATH_LAB_NS (default np) is the
# first word of every namespace name, so that labs run side by side never collide.
set -u
LAB=$(cd "$(dirname "$0")" && pwd)
SAMPLES=$(dirname "$LAB")
export PYTHONDONTWRITEBYTECODE=1
WORKROOT=/tmp/nplab
NSP=${NICPATH_LAB_NS:-np}
SCENARIOS=(egress_switch_tcp egress_switch_udp accepted_secondary asymmetric_return
           reply_wrong_source no_routes ipv6_egress_switch clean_multihomed nat_pinned
           rp_filter_drop macvlan_parent bridge_failover mark_reroute sampled_log
           messy_optional_inputs no_taken_at)
declare -A TAG=([egress_switch_tcp]=est [egress_switch_udp]=esu [accepted_secondary]=acc
                [asymmetric_return]=asy [reply_wrong_source]=rws [no_routes]=nor
                [ipv6_egress_switch]=e6t [clean_multihomed]=clm [nat_pinned]=nat
                [rp_filter_drop]=rpf [macvlan_parent]=mvp [bridge_failover]=brf
                [mark_reroute]=mkr [sampled_log]=sml [messy_optional_inputs]=msy
                [no_taken_at]=nta)

NSLIST=()     # namespaces created by this run (deleted on exit)
PIDS=()       # background processes started by this run (killed by pid on exit)
DEVS=()       # device names of the lab (to keep their kernel lines)

log() { echo "[record $(date +%T)] $*" >&2; }

mine() {  # mine PID: true if PID is still a child of this shell (never signal a recycled pid)
    [ -r "/proc/$1/stat" ] || return 1
    local st; st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }                       # fields after "pid (comm) "
    set -- $st
    [ "$2" = "$$" ]
}

cleanup() {
    local p ns
    for p in "${PIDS[@]}"; do mine "$p" && kill "$p" 2>/dev/null; done
    sleep 0.2
    for p in "${PIDS[@]}"; do mine "$p" && kill -9 "$p" 2>/dev/null; done
    for ns in "${NSLIST[@]}"; do
        # processes still inside our own namespaces (e.g. servers): end them by pid
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    PIDS=(); NSLIST=()
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT TERM

bg() {  # bg LOGNAME NS cmd...: run in namespace NS (or "root"), remember the pid
    local name=$1 ns=$2; shift 2
    if [ "$ns" = root ]; then "$@" >"$W/$name.out" 2>"$W/$name.err" &
    else ip netns exec "$ns" "$@" >"$W/$name.out" 2>"$W/$name.err" & fi
    LASTPID=$!
    PIDS+=("$LASTPID")
}

mkns() {  # mkns NAME: new namespace with lo up, no DAD (addresses usable at once)
    ip netns add "$1" || exit 1
    NSLIST+=("$1")
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
}

mkswitch() {  # mkswitch NS BR...: switch namespace holding bridges, IPv6 off on its ports
    mkns "$1"
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    local ns=$1; shift
    for br in "$@"; do
        ip -n "$ns" link add "$br" type bridge
        ip -n "$ns" link set "$br" up
        DEVS+=("$br")
    done
}

plug() {  # plug NODE_NS NODE_IF SW_NS BR SW_PORT: veth from a node to a bridge port
    local node=$1 nif=$2 sw=$3 br=$4 port=$5
    ip link add "v$port" netns "$node" type veth peer name "$port" netns "$sw" || exit 1
    ip -n "$node" link set "v$port" name "$nif"
    ip -n "$sw" link set "$port" master "$br"
    ip -n "$sw" link set "$port" up
    ip -n "$node" link set "$nif" up
    DEVS+=("$port" "v$port" "$nif")
}

mac_of() { ip -n "$1" -j link show dev "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }

log_rules() {  # log_rules NS FAMILIES(4,6,46) TCPSEQ(0/1) NFT(0/1); no INPUT rule for $LOGNOIN
    local ns=$1 fam=$2 seq=$3 nft=$4 p chain hook word io
    local tcpopt=""; [ "$seq" = 1 ] && tcpopt="--log-tcp-sequence"
    if [ "$nft" = 1 ]; then
        ip netns exec "$ns" nft add table inet filter
        ip netns exec "$ns" nft add chain inet filter input '{ type filter hook input priority 0; policy accept; }'
        ip netns exec "$ns" nft add chain inet filter output '{ type filter hook output priority 0; policy accept; }'
        for p in tcp udp icmp; do
            ip netns exec "$ns" nft add rule inet filter output oifname != '"lo"' meta l4proto $p log prefix "\"[FILTER-OUTPUT $p] \""
            ip netns exec "$ns" nft add rule inet filter input iifname != '"lo"' meta l4proto $p log prefix "\"[FILTER-INPUT $p] \""
        done
        ip netns exec "$ns" nft add rule inet filter output oifname != '"lo"' meta l4proto ipv6-icmp log prefix '"[FILTER-OUTPUT icmp6] "'
        ip netns exec "$ns" nft add rule inet filter input iifname != '"lo"' meta l4proto ipv6-icmp log prefix '"[FILTER-INPUT icmp6] "'
        return
    fi
    if [[ $fam == *4* ]]; then
        for p in tcp udp icmp; do
            local o=""; [ $p = tcp ] && o=$tcpopt
            ip netns exec "$ns" iptables -A OUTPUT ! -o lo -p $p -j LOG $o --log-prefix "[FILTER-OUTPUT $p] "
            [[ " $LOGNOIN " == *" $p "* ]] && continue
            ip netns exec "$ns" iptables -A INPUT ! -i lo -p $p -j LOG $o --log-prefix "[FILTER-INPUT $p] "
        done
    fi
    if [[ $fam == *6* ]]; then
        for p in tcp udp icmpv6; do
            local o="" word=$p; [ $p = tcp ] && o=$tcpopt; [ $p = icmpv6 ] && word=icmp6
            ip netns exec "$ns" ip6tables -A OUTPUT ! -o lo -p $p -j LOG $o --log-prefix "[FILTER-OUTPUT $word] "
            ip netns exec "$ns" ip6tables -A INPUT ! -i lo -p $p -j LOG $o --log-prefix "[FILTER-INPUT $word] "
        done
    fi
}

snapshot() {  # snapshot MOMENT: ip state of the host namespace into ip/MOMENT/
    local d="$B/ip/$1" dl=""
    [ "$LINKD" = 1 ] && dl="-d"   # stacked devices: link.json with linkinfo (macvlan, bridge_slave)
    mkdir -p "$d"
    echo "$EPOCHREALTIME" > "$d/taken_at"
    ip -n "$H" -j addr > "$d/addr.json"
    ip -n "$H" -j $dl link > "$d/link.json"
    ip -n "$H" -j route show table all > "$d/route.json"
    ip -n "$H" -j rule > "$d/rule.json"
    ip -n "$H" addr > "$d/addr.txt"
    ip -n "$H" $dl link > "$d/link.txt"
    ip -n "$H" route show table all > "$d/route.txt"
    ip -n "$H" rule > "$d/rule.txt"
    # netfilter rules and per-card sysctls (rp_filter, log_martians, ...) at this moment
    if [ "$IPTFMT" = S ]; then   # the other common form: iptables -S (filter table, no COMMIT)
        ip netns exec "$H" iptables -S > "$d/iptables.txt" 2>/dev/null
    else
        ip netns exec "$H" iptables-save > "$d/iptables.txt" 2>/dev/null
    fi
    ip netns exec "$H" nft list ruleset > "$d/nft.txt" 2>/dev/null
    [ "$SYSCTL_ROOT" = 1 ] || ip netns exec "$H" sysctl net.ipv4.conf > "$d/sysctl.txt" 2>/dev/null
    if [ "$V6" = 1 ]; then
        ip -n "$H" -6 -j route show table all > "$d/route6.json"
        ip -n "$H" -6 -j rule > "$d/rule6.json"
        ip -n "$H" -6 route show table all > "$d/route6.txt"
        ip -n "$H" -6 rule > "$d/rule6.txt"
    fi
}

NCHANGE=0
change() {  # change CMD...: a mid-flow change in the host, logged, then snapshot after-N
    local cmd="$*" t
    t=$EPOCHREALTIME
    ip netns exec "$H" $cmd
    local rc=$?
    printf '%s%s%s\n' "$t" "$CHSEP" "$cmd" >> "$B/changes.log"
    NCHANGE=$((NCHANGE + 1))
    snapshot "after-$NCHANGE"
    log "change $NCHANGE (rc=$rc): $cmd"
}

event() {  # event NS CMD...: an action outside the host (switch, peer): not a host change, so not
    # in changes.log; its time goes to $W/events.log and truth.py puts it in the notes
    local ns=$1 t; shift
    t=$EPOCHREALTIME
    ip netns exec "$ns" "$@"
    printf '%s\t%s\t%s\n' "$t" "$ns" "$*" >> "$W/events.log"
    log "event in $ns: $*"
}

wait_listening() {  # wait_listening FILE PATTERN: up to 5 s
    local i
    for i in $(seq 50); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    log "WARNING: no '$2' in $1"; return 1
}

start_captures() {
    CAPPIDS=()
    local c
    for c in "${CARDS[@]}"; do
        bg "tcpdump-$c" "$H" tcpdump -Z root -i "$c" -w "$B/$c.pcap" --immediate-mode
        CAPPIDS+=("$LASTPID")
    done
    bg tcpdump-any "$H" tcpdump -Z root -i any -y LINUX_SLL2 --immediate-mode -w "$B/any.pcap"
    CAPPIDS+=("$LASTPID")
    local ifs=()
    for c in "${CARDS[@]}"; do ifs+=(-i "$c"); done
    bg dumpcap "$H" dumpcap "${ifs[@]}" -w "$B/all.pcapng"
    CAPPIDS+=("$LASTPID")
    for c in "${CARDS[@]}"; do wait_listening "$W/tcpdump-$c.err" "listening on"; done
    wait_listening "$W/tcpdump-any.err" "listening on"
    wait_listening "$W/dumpcap.err" "Capturing on"
    sleep 1
}

stop_captures() {
    sleep 1
    local p
    for p in "${CAPPIDS[@]}"; do mine "$p" && kill -INT "$p" 2>/dev/null; done
    for p in "${CAPPIDS[@]}"; do
        for _ in $(seq 50); do mine "$p" || break; sleep 0.1; done
    done
}

py() { echo "python3 $LAB/$1"; }   # path of a generator, for ip netns exec

# ---------------------------------------------------------------- scenarios
# Each sc_<name> sets H, CARDS (the devices captured), V6, LOGFAM/LOGSEQ/LOGNFT, builds the topology (setup) and
# later runs traffic (traffic).  Flows are appended by the generators to $W/flows.jsonl.

egress_switch_setup() {  # shared by egress_switch_tcp / _udp
    mkswitch "$S" br0
    mkns "$H"; mkns "$P1"
    plug "$H" eth1 "$S" br0 "${T}h1"
    plug "$H" eth2 "$S" br0 "${T}h2"
    plug "$P1" "vp${T}a" "$S" br0 "${T}p1"
    ip -n "$H" addr add 172.16.70.14/24 dev eth1 noprefixroute
    ip -n "$H" addr add 172.16.70.16/24 dev eth2 noprefixroute
    ip -n "$H" route add 172.16.70.0/24 dev eth2 src 172.16.70.16 metric 100
    ip -n "$P1" addr add 172.16.70.15/24 dev "vp${T}a"
}

setup_egress_switch_tcp() { egress_switch_setup; }
traffic_egress_switch_tcp() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 9
    bg srv-udp "$P1" $(py udp_flow.py) server --port 5001 --duration 9
    sleep 0.5
    bg cli-quiet-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 5 --flows "$W/flows.jsonl" \
        --role ordinary --why "short UDP exchange on eth2, finished before the route change"
    bg cli-quiet-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4660 --count 3 --interval 0.2 --flows "$W/flows.jsonl" \
        --role ordinary --why "ping on eth2, finished before the route change"
    sleep 0.2
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 30 --interval 0.1 --flows "$W/flows.jsonl" \
        --role switched --why "long TCP flow across the route change"
    local cli=$LASTPID
    sleep 1.5
    change ip route add 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10
    wait "$cli"
}

setup_egress_switch_udp() { egress_switch_setup; }
traffic_egress_switch_udp() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 9
    bg srv-udp "$P1" $(py udp_flow.py) server --port 5001 --duration 9
    sleep 0.5
    bg cli-quiet-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 4 --flows "$W/flows.jsonl" \
        --role ordinary --why "short TCP exchange on eth2, closed before the route change"
    bg cli-quiet-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4661 --count 3 --interval 0.2 --flows "$W/flows.jsonl" \
        --role ordinary --why "ping on eth2, finished before the route change"
    sleep 0.2
    bg cli-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 30 --interval 0.1 --flows "$W/flows.jsonl" \
        --role switched --why "connected UDP socket across the route change"
    local cli=$LASTPID
    sleep 1.5
    change ip route add 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10
    wait "$cli"
}

setup_ipv6_egress_switch() {
    V6=1; LOGFAM=46; LOGSEQ=1
    mkswitch "$S" br0
    mkns "$H"; mkns "$P1"
    plug "$H" eth1 "$S" br0 "${T}h1"
    plug "$H" eth2 "$S" br0 "${T}h2"
    plug "$P1" "vp${T}a" "$S" br0 "${T}p1"
    ip -n "$H" addr add fd00:70::14/64 dev eth1 nodad noprefixroute
    ip -n "$H" addr add fd00:70::16/64 dev eth2 nodad noprefixroute
    ip -n "$H" -6 route add fd00:70::/64 dev eth2 src fd00:70::16 metric 100
    ip -n "$P1" addr add fd00:70::15/64 dev "vp${T}a" nodad
}
traffic_ipv6_egress_switch() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --bind :: --port 5000 --duration 9
    bg srv-udp "$P1" $(py udp_flow.py) server --bind :: --port 5001 --duration 9
    sleep 0.5
    bg cli-quiet-udp "$H" $(py udp_flow.py) client --dst fd00:70::15 --port 5001 --count 5 --flows "$W/flows.jsonl" \
        --role ordinary --why "short UDP exchange on eth2, finished before the route change"
    bg cli-quiet-ping "$H" $(py ping.py) --dst fd00:70::15 --id 4662 --count 3 --interval 0.2 --flows "$W/flows.jsonl" \
        --role ordinary --why "ping6 on eth2, finished before the route change"
    sleep 0.2
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst fd00:70::15 --port 5000 --count 30 --interval 0.1 --flows "$W/flows.jsonl" \
        --role switched --why "long TCP flow across the route change"
    local cli=$LASTPID
    sleep 1.5
    change ip -6 route add fd00:70::/64 dev eth1 src fd00:70::14 metric 10
    wait "$cli"
}

setup_accepted_secondary() {
    LOGNFT=1
    mkswitch "$S" br0 br1
    mkns "$H"; mkns "$P1"; mkns "$P2"
    plug "$H" eth1 "$S" br0 "${T}h1"
    plug "$H" eth2 "$S" br1 "${T}h2"
    plug "$P1" "vp${T}a" "$S" br0 "${T}p1"
    plug "$P2" "vp${T}b" "$S" br1 "${T}p2"
    ip -n "$H" addr add 172.16.10.14/24 dev eth1 noprefixroute
    ip -n "$H" addr add 172.16.70.14/24 dev eth1 noprefixroute
    ip -n "$H" route add 172.16.10.0/24 dev eth1 scope link src 172.16.10.14
    ip -n "$H" addr add 172.16.20.14/24 dev eth2
    ip -n "$P1" addr add 172.16.10.15/24 dev "vp${T}a"
    ip -n "$P1" route add 172.16.70.0/24 dev "vp${T}a"
    ip -n "$P2" addr add 172.16.20.15/24 dev "vp${T}b"
}
traffic_accepted_secondary() {
    bg srv-host "$H" $(py tcp_flow.py) server --port 5000 --duration 8
    bg srv-p1 "$P1" $(py tcp_flow.py) server --port 5001 --duration 8
    bg srv-p2 "$P2" $(py udp_flow.py) server --port 5002 --duration 8
    sleep 0.5
    bg cli-in "$P1" $(py tcp_flow.py) client --dst 172.16.70.14 --port 5000 --count 25 --interval 0.1 --flows "$W/flows.jsonl" \
        --initiator peer --role accepted \
        --why "accepted by the host on its second address: replies leave eth1 with source 172.16.70.14 (the SYN's destination), which eth1 holds"
    local c1=$LASTPID
    sleep 0.3
    bg cli-out "$H" $(py tcp_flow.py) client --dst 172.16.10.15 --port 5001 --count 15 --interval 0.1 --flows "$W/flows.jsonl" \
        --role ordinary --why "started by the host: source 172.16.10.14 from the route's src, leaves eth1"
    local c2=$LASTPID
    bg cli-eth2 "$H" $(py udp_flow.py) client --dst 172.16.20.15 --port 5002 --count 15 --interval 0.1 --flows "$W/flows.jsonl" \
        --role ordinary --why "UDP on the second card's own subnet"
    local c3=$LASTPID
    wait "$c1" "$c2" "$c3"
}

setup_asymmetric_return() {
    mkswitch "$S" br0
    mkns "$H"; mkns "$P1"; mkns "$P2"
    plug "$H" eth1 "$S" br0 "${T}h1"
    plug "$H" eth2 "$S" br0 "${T}h2"
    plug "$P1" "vp${T}a" "$S" br0 "${T}p1"
    plug "$P2" "vp${T}b" "$S" br0 "${T}p2"
    ip -n "$H" addr add 172.16.70.14/24 dev eth1 noprefixroute
    ip -n "$H" addr add 172.16.70.16/24 dev eth2 noprefixroute
    ip -n "$H" route add 172.16.70.0/24 dev eth1 src 172.16.70.14 metric 100
    ip -n "$H" route add 172.16.70.15/32 dev eth2 src 172.16.70.16
    ip -n "$P1" addr add 172.16.70.15/24 dev "vp${T}a"
    ip -n "$P2" addr add 172.16.70.17/24 dev "vp${T}b"
    ip -n "$P1" neigh replace 172.16.70.16 lladdr "$(mac_of "$H" eth1)" dev "vp${T}a" nud permanent
}
traffic_asymmetric_return() {
    bg srv-p1 "$P1" $(py tcp_flow.py) server --port 5000 --duration 8
    bg srv-p2 "$P2" $(py udp_flow.py) server --port 5001 --duration 8
    sleep 0.5
    bg cli-asym "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 20 --interval 0.1 --flows "$W/flows.jsonl" \
        --role asymmetric --why "leaves eth2 (route to 172.16.70.15/32), replies to 172.16.70.16 come to eth1's MAC (peer's permanent neighbour entry)"
    local c1=$LASTPID
    bg cli-quiet "$H" $(py udp_flow.py) client --dst 172.16.70.17 --port 5001 --count 15 --interval 0.1 --flows "$W/flows.jsonl" \
        --role ordinary --why "symmetric UDP exchange on eth1"
    local c2=$LASTPID
    bg cli-ping "$H" $(py ping.py) --dst 172.16.70.17 --id 4663 --count 5 --interval 0.2 --flows "$W/flows.jsonl" \
        --role ordinary --why "symmetric ping on eth1"
    wait "$c1" "$c2" "$LASTPID"
}

setup_reply_wrong_source() {
    mkswitch "$S" br0 br1
    mkns "$H"; mkns "$P1"; mkns "$P2"
    plug "$H" eth1 "$S" br0 "${T}h1"
    plug "$H" eth2 "$S" br1 "${T}h2"
    plug "$P1" "vp${T}a" "$S" br0 "${T}p1"
    plug "$P2" "vp${T}b" "$S" br1 "${T}p2"
    ip -n "$H" addr add 172.16.70.14/24 dev eth1
    ip -n "$H" addr add 172.16.20.14/24 dev eth2
    ip -n "$P1" addr add 172.16.70.15/24 dev "vp${T}a"
    ip -n "$P1" addr add 172.16.70.25/24 dev "vp${T}a"
    ip -n "$P2" addr add 172.16.20.15/24 dev "vp${T}b"
}
traffic_reply_wrong_source() {
    bg srv-wild "$P1" $(py udp_flow.py) server --bind 0.0.0.0 --port 5300 --duration 8
    bg srv-good "$P1" $(py udp_flow.py) server --bind 172.16.70.25 --port 5301 --duration 8
    bg srv-p2 "$P2" $(py tcp_flow.py) server --port 5000 --duration 8
    sleep 0.5
    bg cli-bad "$H" $(py udp_flow.py) client --dst 172.16.70.25 --port 5300 --count 15 --interval 0.15 --flows "$W/flows.jsonl" \
        --role wrong_source_reply --why "the server answers from its wildcard socket: source 172.16.70.15 chosen by its route"
    local c1=$LASTPID
    bg cli-good "$H" $(py udp_flow.py) client --dst 172.16.70.25 --port 5301 --count 15 --interval 0.15 --flows "$W/flows.jsonl" \
        --role ordinary --why "server bound to 172.16.70.25 answers from the address the request went to"
    local c2=$LASTPID
    bg cli-eth2 "$H" $(py tcp_flow.py) client --dst 172.16.20.15 --port 5000 --count 10 --interval 0.1 --flows "$W/flows.jsonl" \
        --role ordinary --why "TCP on the second card's own subnet"
    wait "$c1" "$c2" "$LASTPID"
}

setup_no_routes() {
    mkswitch "$S" br0 br1
    mkns "$H"; mkns "$P1"; mkns "$P2"
    plug "$H" eth1 "$S" br0 "${T}h1"
    plug "$H" eth2 "$S" br1 "${T}h2"
    plug "$P1" "vp${T}a" "$S" br0 "${T}p1"
    plug "$P2" "vp${T}b" "$S" br1 "${T}p2"
    ip -n "$H" addr add 172.16.70.14/24 dev eth1
    ip -n "$H" addr add 172.16.20.14/24 dev eth2
    ip -n "$P1" addr add 172.16.70.15/24 dev "vp${T}a"
    ip -n "$P2" addr add 172.16.20.15/24 dev "vp${T}b"
}
traffic_no_routes() {
    bg srv-p1 "$P1" $(py tcp_flow.py) server --port 5000 --duration 9 --tick 0.1
    bg sink "$H" $(py udp_flow.py) sink --port 5400 --duration 9
    sleep 0.5
    bg cli-ping "$H" $(py ping.py) --dst 172.16.20.15 --id 4664 --count 3 --interval 0.2 --flows "$W/flows.jsonl" \
        --role ordinary --why "ping on eth2, finished before the flush"
    bg cli-in "$P2" $(py udp_flow.py) oneway --dst 172.16.20.14 --port 5400 --count 35 --interval 0.1 --flows "$W/flows.jsonl" \
        --initiator peer --role inbound_oneway --why "one-way inbound UDP: the host never sends on it, so losing the routes changes nothing visible"
    local c1=$LASTPID
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 30 --interval 0.1 --flows "$W/flows.jsonl" \
        --role stopped --why "outgoing TCP flow; the peer keeps sending (ticks, retransmissions) after the flush"
    local c2=$LASTPID
    sleep 1.5
    change ip route flush table main
    wait "$c1" "$c2"
}

setup_clean_multihomed() {
    LOGSEQ=1
    mkswitch "$S" br1 br2
    mkns "$H"; mkns "$P1"; mkns "$P2"
    plug "$H" eth1 "$S" br1 "${T}h1"
    plug "$H" eth2 "$S" br2 "${T}h2"
    plug "$P1" "vp${T}a" "$S" br1 "${T}p1"
    plug "$P2" "vp${T}b" "$S" br2 "${T}p2"
    ip -n "$H" addr add 10.0.1.2/24 dev eth1
    ip -n "$H" addr add 10.0.2.2/24 dev eth2
    ip -n "$H" rule add from 10.0.1.2 table 100 pref 100
    ip -n "$H" rule add from 10.0.2.2 table 200 pref 200
    ip -n "$H" route add 10.0.1.0/24 dev eth1 src 10.0.1.2 table 100
    ip -n "$H" route add default via 10.0.1.1 dev eth1 table 100
    ip -n "$H" route add 10.0.2.0/24 dev eth2 src 10.0.2.2 table 200
    ip -n "$H" route add default via 10.0.2.1 dev eth2 table 200
    ip -n "$P1" addr add 10.0.1.1/24 dev "vp${T}a"
    ip -n "$P1" addr add 192.168.101.1/32 dev lo
    ip -n "$P2" addr add 10.0.2.1/24 dev "vp${T}b"
    ip -n "$P2" addr add 192.168.102.1/32 dev lo
}
traffic_clean_multihomed() {
    local n
    for n in P1 P2; do
        bg "srv-tcp-$n" "${!n}" $(py tcp_flow.py) server --port 5000 --duration 9
        local svc=192.168.101.1; [ $n = P2 ] && svc=192.168.102.1
        bg "srv-udp-$n" "${!n}" $(py udp_flow.py) server --bind $svc --port 5001 --duration 9
    done
    sleep 0.5
    local f="$W/flows.jsonl" pids=()
    bg c1 "$H" $(py tcp_flow.py) client --src 10.0.1.2 --dst 192.168.101.1 --port 5000 --count 30 --flows "$f" --role ordinary \
        --why "TCP from 10.0.1.2: rule -> table 100 -> eth1"; pids+=("$LASTPID")
    bg c2 "$H" $(py tcp_flow.py) client --src 10.0.2.2 --dst 192.168.102.1 --port 5000 --count 30 --flows "$f" --role ordinary \
        --why "TCP from 10.0.2.2: rule -> table 200 -> eth2"; pids+=("$LASTPID")
    bg c3 "$H" $(py udp_flow.py) client --src 10.0.1.2 --dst 192.168.101.1 --port 5001 --count 30 --flows "$f" --role ordinary \
        --why "UDP from 10.0.1.2 via eth1"; pids+=("$LASTPID")
    bg c4 "$H" $(py udp_flow.py) client --src 10.0.2.2 --dst 192.168.102.1 --port 5001 --count 30 --flows "$f" --role ordinary \
        --why "UDP from 10.0.2.2 via eth2"; pids+=("$LASTPID")
    bg c5 "$H" $(py ping.py) --src 10.0.1.2 --dst 192.168.101.1 --id 4665 --count 15 --interval 0.2 --flows "$f" --role ordinary \
        --why "ping from 10.0.1.2 via eth1"; pids+=("$LASTPID")
    bg c6 "$H" $(py ping.py) --src 10.0.2.2 --dst 192.168.102.1 --id 4666 --count 15 --interval 0.2 --flows "$f" --role ordinary \
        --why "ping from 10.0.2.2 via eth2"; pids+=("$LASTPID")
    sleep 1.5
    change ip route add 203.0.113.0/24 via 10.0.1.1 dev eth1 metric 50
    wait "${pids[@]}"
}

two_cards_two_peers() {  # shared by nat_pinned / rp_filter_drop: host eth1 and peer1 on br0
    # (172.16.70.0/24), host eth2 and peer2 on br1 (172.16.20.0/24)
    mkswitch "$S" "${NSP}br0" "${NSP}br1"
    mkns "$H"; mkns "$P1"; mkns "$P2"
    plug "$H" eth1 "$S" "${NSP}br0" "${T}h1"
    plug "$H" eth2 "$S" "${NSP}br1" "${T}h2"
    plug "$P1" "vp${T}a" "$S" "${NSP}br0" "${T}p1"
    plug "$P2" "vp${T}b" "$S" "${NSP}br1" "${T}p2"
    ip -n "$H" addr add 172.16.70.14/24 dev eth1
    ip -n "$H" addr add 172.16.20.14/24 dev eth2
    ip -n "$P1" addr add 172.16.70.15/24 dev "vp${T}a"
    ip -n "$P2" addr add 172.16.20.15/24 dev "vp${T}b"
}

setup_nat_pinned() {
    two_cards_two_peers
    ip -n "$H" addr add 172.16.70.21/24 dev eth1
    ip -n "$H" addr add 172.16.70.22/24 dev eth1
    # SNAT in nat POSTROUTING: after filter OUTPUT (LOG: before NAT), before the card (capture)
    ip netns exec "$H" iptables -t nat -A POSTROUTING -o eth1 -p tcp --dport 5000 -j SNAT --to-source 172.16.70.21
    # DNAT in nat PREROUTING: after the card (capture), before filter INPUT (LOG: after NAT)
    ip netns exec "$H" iptables -t nat -A PREROUTING -i eth2 -p tcp --dport 8080 -j DNAT --to-destination 172.16.20.14:5000
}
traffic_nat_pinned() {
    bg srv-p1 "$P1" $(py tcp_flow.py) server --port 5000 --duration 9
    bg srv-p2 "$P2" $(py udp_flow.py) server --port 5001 --duration 9
    bg srv-host "$H" $(py tcp_flow.py) server --port 5000 --duration 9
    sleep 0.5
    local f="$W/flows.jsonl" pids=()
    bg c-short "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 5 --interval 0.1 --flows "$f" \
        --role ordinary --why "same kind as the pinned flow and translated the same way (SNAT to 172.16.70.21), closed before the rule change"
    pids+=("$LASTPID")
    sleep 0.1
    bg c-old "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 35 --interval 0.1 --flows "$f" \
        --role pinned --why "started under SNAT to 172.16.70.21; conntrack keeps that mapping after the rule is replaced"
    pids+=("$LASTPID")
    bg c-udp "$H" $(py udp_flow.py) client --dst 172.16.20.15 --port 5001 --count 30 --interval 0.1 --flows "$f" \
        --role ordinary --why "UDP on eth2, not translated"
    pids+=("$LASTPID")
    bg c-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4667 --count 10 --interval 0.2 --flows "$f" \
        --role ordinary --why "ping on eth1, not translated (the SNAT rule is for tcp dport 5000)"
    pids+=("$LASTPID")
    bg c-dnat "$P2" $(py tcp_flow.py) client --dst 172.16.20.14 --port 8080 --count 25 --interval 0.1 --flows "$f" \
        --initiator peer --role dnat --why "peer2 connects to 172.16.20.14:8080, DNAT to the host's :5000: translated, the only flow of its kind"
    pids+=("$LASTPID")
    sleep 1.5
    change iptables -t nat -R POSTROUTING 1 -o eth1 -p tcp --dport 5000 -j SNAT --to-source 172.16.70.22
    sleep 0.5
    bg c-new "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 12 --interval 0.1 --flows "$f" \
        --role newer --why "same kind as the pinned flow, started after the rule change: SNAT to 172.16.70.22, as the rule now says"
    pids+=("$LASTPID")
    sleep 0.5
    ip netns exec "$H" conntrack -L > "$B/conntrack.txt" 2>/dev/null
    wait "${pids[@]}"
}

setup_rp_filter_drop() {
    LOGNOIN="icmp"
    SYSCTL_NOTE="net.ipv4.conf.eth1.rp_filter net.ipv4.conf.all.log_martians"
    two_cards_two_peers
    ip -n "$H" route add default via 172.16.20.15 dev eth2
    ip -n "$H" rule add fwmark 0x1 table 100 pref 100
    ip -n "$H" route add default via 172.16.70.15 dev eth1 table 100
    ip netns exec "$H" sysctl -qw net.ipv4.conf.eth1.rp_filter=1 net.ipv4.conf.all.log_martians=1
    ip -n "$P1" addr add 198.51.100.10/32 dev lo
}
traffic_rp_filter_drop() {
    bg srv-svc "$P1" $(py udp_flow.py) server --bind 198.51.100.10 --port 5300 --duration 9
    bg srv-p1 "$P1" $(py udp_flow.py) server --bind 172.16.70.15 --port 5301 --duration 9
    bg srv-p2 "$P2" $(py tcp_flow.py) server --port 5000 --duration 9
    sleep 0.5
    local f="$W/flows.jsonl" pids=()
    bg c-cover "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5301 --count 40 --interval 0.1 --flows "$f" \
        --role ordinary --why "UDP on eth1 to the peer's own address: the route back is eth1's connected route, so the replies pass rp_filter and filter INPUT logs them (the log covers udp while the other flow's replies vanish)"
    pids+=("$LASTPID")
    bg c-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4667 --count 12 --interval 0.2 --flows "$f" \
        --role ordinary --why "ping on eth1: its replies are on the wire and in no INPUT line because INPUT has no LOG rule for icmp: the log does not cover them"
    pids+=("$LASTPID")
    sleep 0.5
    bg c-drop "$H" $(py udp_flow.py) client --mark 1 --dst 198.51.100.10 --port 5300 --count 25 --interval 0.1 --flows "$f" \
        --role dropped --why "SO_MARK 1: rule fwmark 1 -> table 100 -> out eth1; the replies arrive on eth1, whose strict rp_filter finds the main table's route back to 198.51.100.10 through eth2 and drops them before filter INPUT"
    pids+=("$LASTPID")
    bg c-eth2 "$H" $(py tcp_flow.py) client --dst 172.16.20.15 --port 5000 --count 20 --interval 0.1 --flows "$f" \
        --role ordinary --why "TCP on eth2 through the main table"
    pids+=("$LASTPID")
    wait "${pids[@]}"
}

# ---------------------------------------------------------------- scenarios since issue 9
# CARDS is the list of host devices captured (one pcap each, and one IDB each in all.pcapng);
# with stacked devices it also holds the lower ones (macvlan parent, bridge ports), so that the
# per-device captures together hold what `tcpdump -i any` holds.

setup_macvlan_parent() {
    # the host's cards are macvlan children mv1, mv2 (mode bridge) of one veth eth1
    LINKD=1
    CARDS=(eth1 mv1 mv2)
    mkswitch "$S" "${NSP}br0"
    mkns "$H"; mkns "$P1"
    plug "$H" eth1 "$S" "${NSP}br0" "${T}h1"
    plug "$P1" "vp${T}a" "$S" "${NSP}br0" "${T}p1"
    ip -n "$H" link add mv1 link eth1 type macvlan mode bridge
    ip -n "$H" link add mv2 link eth1 type macvlan mode bridge
    ip -n "$H" link set mv1 up
    ip -n "$H" link set mv2 up
    DEVS+=(mv1 mv2)
    ip -n "$H" addr add 172.16.70.14/24 dev mv1 noprefixroute
    ip -n "$H" addr add 172.16.70.16/24 dev mv2 noprefixroute
    ip -n "$H" route add 172.16.70.0/24 dev mv2 src 172.16.70.16 metric 100
    ip -n "$P1" addr add 172.16.70.15/24 dev "vp${T}a"
}
traffic_macvlan_parent() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 9
    bg srv-udp "$P1" $(py udp_flow.py) server --port 5001 --duration 9
    sleep 0.5
    bg cli-quiet-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 5 --flows "$W/flows.jsonl" \
        --role ordinary --why "short UDP exchange on mv2, finished before the route change"
    bg cli-quiet-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4670 --count 3 --interval 0.2 --flows "$W/flows.jsonl" \
        --role ordinary --why "ping on mv2, finished before the route change"
    sleep 0.2
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 30 --interval 0.1 --flows "$W/flows.jsonl" \
        --role switched --why "long TCP flow across the route change"
    local cli=$LASTPID
    sleep 1.5
    change ip route add 172.16.70.0/24 dev mv1 scope link src 172.16.70.14 metric 10
    wait "$cli"
}

setup_bridge_failover() {
    # the host's routing-level card is a bridge br0 with two ports eth1, eth2 to one switch;
    # only one port has carrier at a time (the switch side of eth2 is down at first)
    LINKD=1
    CARDS=(br0 eth1 eth2)
    mkswitch "$S" "${NSP}br0"
    mkns "$H"; mkns "$P1"
    plug "$H" eth1 "$S" "${NSP}br0" "${T}h1"
    plug "$H" eth2 "$S" "${NSP}br0" "${T}h2"
    ip -n "$S" link set "${T}h2" down       # before br0 joins the two ports: never a loop
    plug "$P1" "vp${T}a" "$S" "${NSP}br0" "${T}p1"
    ip -n "$H" link add br0 type bridge
    ip -n "$H" link set eth1 master br0
    ip -n "$H" link set eth2 master br0
    ip -n "$H" link set br0 up
    DEVS+=(br0)
    ip -n "$H" addr add 172.16.70.14/24 dev br0
    ip -n "$P1" addr add 172.16.70.15/24 dev "vp${T}a"
}
traffic_bridge_failover() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 10
    bg srv-udp "$P1" $(py udp_flow.py) server --port 5001 --duration 10
    sleep 0.5
    local f="$W/flows.jsonl" pids=()
    bg cli-quiet-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4671 --count 3 --interval 0.2 --flows "$f" \
        --role ordinary --why "ping through br0 (port eth1), finished before the failover"
    pids+=("$LASTPID")
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 40 --interval 0.1 --flows "$f" \
        --role failover --why "TCP through br0 across the port failover: br0 stays the card, only the bridge port under it changes"
    pids+=("$LASTPID")
    bg cli-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 40 --interval 0.1 --flows "$f" \
        --role failover --why "connected UDP through br0 across the port failover"
    pids+=("$LASTPID")
    sleep 1.5
    # the failover: the switch side of eth1 loses carrier, 0.3 s later the switch side of eth2
    # comes up (never both: the two ports would make a loop); meanwhile br0 has no carrier
    event "$S" ip link set "${T}h1" down
    sleep 0.3
    event "$S" ip link set "${T}h2" up
    wait "${pids[@]}"
}

setup_mark_reroute() {
    egress_switch_setup
    # policy route by fwmark, in place before the traffic; the mark comes mid-flow
    ip -n "$H" rule add fwmark 0x1 lookup 100 pref 100
    ip -n "$H" route add 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 table 100
}
traffic_mark_reroute() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 9
    bg srv-udp "$P1" $(py udp_flow.py) server --port 5001 --duration 9
    sleep 0.5
    local f="$W/flows.jsonl" pids=()
    bg cli-quiet-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 5 --flows "$f" \
        --role ordinary --why "short UDP exchange on eth2, finished before the mark rule"
    pids+=("$LASTPID")
    bg cli-quiet-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4672 --count 3 --interval 0.2 --flows "$f" \
        --role ordinary --why "ping on eth2, finished before the mark rule"
    pids+=("$LASTPID")
    sleep 0.2
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 30 --interval 0.1 --flows "$f" \
        --role switched --why "long TCP flow to :5000: marked 0x1 from the mangle rule on, rerouted by the fwmark rule to table 100 (eth1)"
    pids+=("$LASTPID")
    bg cli-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 30 --interval 0.1 --flows "$f" \
        --role bystander --why "UDP to :5001 across the mark rule: not matched by it (tcp dport 5000 only), keeps leaving eth2; its replies follow the peer's re-pointed ARP entry for 172.16.70.16 to eth1"
    pids+=("$LASTPID")
    sleep 1.5
    change iptables -t mangle -A OUTPUT -p tcp --dport 5000 -j MARK --set-mark 0x1
    wait "${pids[@]}"
}

setup_sampled_log() {
    # LOG rules that log a sample only; beside them a real strict rp_filter drop (as rp_filter_drop)
    LOGCUSTOM=1
    SYSCTL_NOTE="net.ipv4.conf.eth1.rp_filter net.ipv4.conf.all.log_martians"
    two_cards_two_peers
    ip -n "$H" route add default via 172.16.20.15 dev eth2
    ip -n "$H" rule add fwmark 0x1 table 100 pref 100
    ip -n "$H" route add default via 172.16.70.15 dev eth1 table 100
    ip netns exec "$H" sysctl -qw net.ipv4.conf.eth1.rp_filter=1 net.ipv4.conf.all.log_martians=1
    ip -n "$P1" addr add 198.51.100.10/32 dev lo
    local x="ip netns exec $H iptables"
    # tcp: only the flows of port 5000 are logged (every packet of them)
    $x -A OUTPUT ! -o lo -p tcp --dport 5000 -j LOG --log-prefix "[FILTER-OUTPUT tcp] "
    $x -A INPUT ! -i lo -p tcp --sport 5000 -j LOG --log-prefix "[FILTER-INPUT tcp] "
    # udp: every flow, but at most 5 lines a second per rule (burst 5)
    $x -A OUTPUT ! -o lo -p udp -m limit --limit 5/second --limit-burst 5 -j LOG --log-prefix "[FILTER-OUTPUT udp] "
    $x -A INPUT ! -i lo -p udp -m limit --limit 5/second --limit-burst 5 -j LOG --log-prefix "[FILTER-INPUT udp] "
    # icmp: no rule
}
traffic_sampled_log() {
    bg srv-p1-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 9
    bg srv-p1-udp "$P1" $(py udp_flow.py) server --bind 172.16.70.15 --port 5001 --duration 9
    bg srv-p2-tcp "$P2" $(py tcp_flow.py) server --port 5002 --duration 9
    bg srv-p2-udp "$P2" $(py udp_flow.py) server --bind 172.16.20.15 --port 5001 --duration 9
    sleep 0.5
    local f="$W/flows.jsonl" pids=()
    bg c-cover "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 40 --interval 0.1 --flows "$f" \
        --role ordinary --why "TCP to :5000 on eth1: covered by the unlimited port-5000 LOG rules, every packet has its line"
    pids+=("$LASTPID")
    bg c-unlogged "$H" $(py tcp_flow.py) client --dst 172.16.20.15 --port 5002 --count 40 --interval 0.1 --flows "$f" \
        --role unlogged --why "TCP to :5002 on eth2: no LOG rule matches it, so none of its packets is logged; delivered normally"
    pids+=("$LASTPID")
    bg c-udp1 "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 40 --interval 0.1 --flows "$f" \
        --role sampled --why "UDP on eth1: logged only as far as the 5/second limit allows; the unlogged datagrams were delivered"
    pids+=("$LASTPID")
    bg c-udp2 "$H" $(py udp_flow.py) client --dst 172.16.20.15 --port 5001 --count 40 --interval 0.1 --flows "$f" \
        --role sampled --why "UDP on eth2: shares the limited rules with the other UDP flow; the unlogged datagrams were delivered"
    pids+=("$LASTPID")
    bg c-ping "$H" $(py ping.py) --dst 172.16.20.15 --id 4673 --count 15 --interval 0.2 --flows "$f" \
        --role unlogged --why "ping on eth2: no icmp LOG rule; replies delivered"
    pids+=("$LASTPID")
    sleep 0.7
    bg c-drop "$H" $(py tcp_flow.py) client --mark 1 --dst 198.51.100.10 --port 5000 --count 5 --interval 0.1 --flows "$f" \
        --role dropped --why "SO_MARK 1: rule fwmark 1 -> table 100 -> SYN out eth1; the SYN-ACKs arrive on eth1, whose strict rp_filter finds the main table's route back to 198.51.100.10 through eth2 and drops them before filter INPUT (whose port-5000 rule would have logged every one)"
    pids+=("$LASTPID")
    wait "${pids[@]}"
}

setup_messy_optional_inputs() {
    # egress_switch_tcp, short, with the common variants of the optional files
    IPTFMT=S; SYSCTL_ROOT=1; CHSEP=' '
    egress_switch_setup
    # a no-op rule that needs conntrack, so that the namespace tracks connections for conntrack -L
    ip netns exec "$H" iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
}
traffic_messy_optional_inputs() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 8
    bg srv-udp "$P1" $(py udp_flow.py) server --port 5001 --duration 8
    sleep 0.5
    local f="$W/flows.jsonl"
    bg cli-quiet-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 5 --flows "$f" \
        --role ordinary --why "short UDP exchange on eth2, finished before the route change"
    bg cli-quiet-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4674 --count 3 --interval 0.2 --flows "$f" \
        --role ordinary --why "ping on eth2, finished before the route change"
    sleep 0.2
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 20 --interval 0.1 --flows "$f" \
        --role switched --why "TCP flow across the route change"
    local cli=$LASTPID
    sleep 1.0
    change ip route add 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10
    sleep 0.3
    # conntrack -L with its count line (written to stderr) kept in the file
    ip netns exec "$H" conntrack -L > "$B/conntrack.txt" 2>&1
    # sysctls once, at the bundle root instead of ip/<moment>/sysctl.txt
    ip netns exec "$H" sysctl net.ipv4.ip_forward net.ipv4.conf > "$B/sysctl.txt" 2>/dev/null
    wait "$cli"
}
finish_messy_optional_inputs() {
    cat > "$B/notes.txt" <<'NOTES'
Notes of the operator who collected this bundle (free text, not a nicpath input).

Host lab-01, two NICs on the same switch VLAN. Around the time in changes.log someone added a
better route for 172.16.70.0/24 through eth1 while an application session to .15:5000 was open.
The firewall dump was taken with "iptables -S" (not iptables-save); conntrack.txt is
"conntrack -L" with stderr; sysctl.txt is from the host root, taken once.
NOTES
}

setup_no_taken_at() {
    egress_switch_setup
}
traffic_no_taken_at() {
    bg srv-tcp "$P1" $(py tcp_flow.py) server --port 5000 --duration 9
    bg srv-udp "$P1" $(py udp_flow.py) server --port 5001 --duration 9
    sleep 0.5
    local f="$W/flows.jsonl"
    bg cli-quiet-udp "$H" $(py udp_flow.py) client --dst 172.16.70.15 --port 5001 --count 5 --flows "$f" \
        --role ordinary --why "short UDP exchange on eth2, finished before the first route change"
    bg cli-quiet-ping "$H" $(py ping.py) --dst 172.16.70.15 --id 4675 --count 3 --interval 0.2 --flows "$f" \
        --role ordinary --why "ping on eth2, finished before the first route change"
    sleep 0.2
    bg cli-tcp "$H" $(py tcp_flow.py) client --dst 172.16.70.15 --port 5000 --count 40 --interval 0.1 --flows "$f" \
        --role switched --why "long TCP flow across both route changes"
    local cli=$LASTPID
    sleep 1.2
    change ip route add 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10
    sleep 1.2
    change ip route del 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10
    wait "$cli"
}
finish_no_taken_at() {
    # the bundle keeps changes.log but its snapshots say nothing of when they were taken; the
    # removed values go to the work directory (truth.py notes them)
    local f
    for f in "$B"/ip/*/taken_at; do
        printf '%s\t%s\n' "$(basename "$(dirname "$f")")" "$(cat "$f")" >> "$W/removed_taken_at.txt"
    done
    rm -f "$B"/ip/*/taken_at
}

# ---------------------------------------------------------------- one recording
record_once() {
    local name=$1
    T=${TAG[$name]}
    W="$WORKROOT/$name"; rm -rf "$W"; mkdir -p "$W"; chmod 777 "$W"
    B="$SAMPLES/$name"; rm -rf "$B"; mkdir -p "$B"
    H="$NSP-$T-host"; S="$NSP-$T-sw"; P1="$NSP-$T-peer"; P2="$NSP-$T-peer2"
    CARDS=(eth1 eth2); V6=0; LOGFAM=4; LOGSEQ=0; LOGNFT=0; LOGNOIN=""; NCHANGE=0; DEVS=()
    SYSCTL_NOTE=""; LINKD=0; IPTFMT=save; SYSCTL_ROOT=0; CHSEP=$'\t'; LOGCUSTOM=0
    log "=== $name ($T)"

    bg kmsg root python3 "$LAB/kmsg_reader.py" --out "$W/kmsg.jsonl" --stop "$W/kmsg.stop" --timeout 120
    local kpid=$LASTPID
    for _ in $(seq 50); do [ -e "$W/kmsg.stop.ready" ] && break; sleep 0.1; done

    "setup_$name"
    [ "$LOGCUSTOM" = 1 ] || log_rules "$H" "$LOGFAM" "$LOGSEQ" "$LOGNFT"
    ip netns exec "$H" sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.all.arp_announce \
        net.ipv4.conf.all.arp_ignore $SYSCTL_NOTE > "$W/sysctl.txt" 2>&1
    sleep 0.5
    snapshot before
    start_captures
    local t0=$EPOCHREALTIME
    "traffic_$name"
    local t1=$EPOCHREALTIME
    stop_captures
    touch "$W/kmsg.stop"
    wait "$kpid"
    chmod 644 "$B"/*.pcap "$B"/all.pcapng 2>/dev/null
    cp "$W/flows.jsonl" "$W/flows.final.jsonl" 2>/dev/null
    cleanup
    python3 "$LAB/render_kern.py" --raw "$W/kmsg.jsonl" --bundle "$B" --devices "$(IFS=,; echo "${DEVS[*]}")" \
        --info "$W/kern_info.json" || return 1
    awk '/^btime/ {print $2}' /proc/stat > "$B/btime"
    if declare -F "finish_$name" >/dev/null; then "finish_$name" || return 1; fi
    python3 "$LAB/truth.py" --scenario "$name" --bundle "$B" --work "$W" --traffic "$t0" "$t1" || return 1
    python3 "$LAB/check.py" "$B" --namespaces "$NSP-$T-" > "$W/check.txt" 2>&1
    local rc=$?
    cat "$W/check.txt" >&2
    { echo "--- $name try at $(date -u +%FT%TZ) rc=$rc"; cat "$W/check.txt"; } >> "$WORKROOT/$name.checks.log"
    return $rc
}

run_scenario() {
    local name=$1 try rc
    for try in 1 2 3; do
        record_once "$name"; rc=$?
        echo "$try" > "$WORKROOT/$name/tries"
        [ $rc = 0 ] && return 0
        log "$name: check failed (rc=$rc) on try $try"
        [ $rc = 2 ] || return $rc   # 2 = any.pcap disagrees with the per-card captures: re-record
    done
    return $rc
}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ $# = 1 ] || { echo "usage: $0 SCENARIO|all  (${SCENARIOS[*]})" >&2; exit 1; }
sysctl -qw net.netfilter.nf_log_all_netns=1
mkdir -p "$WORKROOT"
rm -f "$WORKROOT"/*.checks.log
if [ "$1" = all ]; then list=("${SCENARIOS[@]}"); else list=("$1"); fi
fail=0
for sc in "${list[@]}"; do
    [ -n "${TAG[$sc]:-}" ] || { echo "unknown scenario $sc" >&2; exit 1; }
    run_scenario "$sc" || fail=1
done
left=$(ip netns list | grep -c "^$NSP-")
log "namespaces left: $left"
[ "$left" = 0 ] || fail=1
exit $fail
