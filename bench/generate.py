"""Realistic synthetic captures of any size, written as a nicpath bundle.

A busy multi-homed host: four cards (one carrying a VLAN), many concurrent flows of TCP, UDP and
ICMP echo over IPv4 and IPv6, ICMP errors, IPv4 fragments and options, ARP, and a few flows whose
outgoing packets move to another card half way through (the egress change nicpath is for).

Frames are assembled with numpy a block at a time (one template per flow and direction, the
payload zero-filled, IP ID and TCP sequence numbers patched per packet), so ten million packets
take seconds, not the hour a per-packet dpkt loop would. The same packets are written in three
forms: one classic pcap per card, ``any.pcap`` (LINUX_SLL2) and ``all.pcapng``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from dataclasses import dataclass

import numpy as np

CARDS = ("eth1", "eth2", "eth3", "eth4")
IFINDEX = {name: 2 + i for i, name in enumerate(CARDS)}
CARD_MAC = {name: bytes([2, 0, 0, 0, 0, 1 + i]) for i, name in enumerate(CARDS)}
PEER_MAC = bytes.fromhex("0a0000000099")
VLAN_CARD = "eth4"
VLAN_ID = 100
T0_NS = 1_764_040_200_000_000_000
MTU_FRAME = 1514

#: Bumped whenever the captures it makes change: the benchmark regenerates cached ones.
VERSION = 3
#: The largest flow weight: a flow gets at most this many times the packets of the smallest.
ZIPF_CAP = 1000
#: Kinds of flow and their share of flows.
KINDS = (
    ("tcp4", 0.50),
    ("tcp6", 0.12),
    ("udp4", 0.14),
    ("udp6", 0.04),
    ("icmp4", 0.06),
    ("icmperr4", 0.03),
    ("frag4", 0.04),
    ("opts4", 0.03),
    ("arp", 0.04),
)


def _card_addr4(card: int) -> bytes:
    return bytes([10, card + 1, 0, 1])


def _card_addr6(card: int) -> bytes:
    return socket.inet_pton(socket.AF_INET6, f"fd00:{card + 1}::1")


def _ipv4(
    src: bytes, dst: bytes, proto: int, l4: bytes, total: int, opts: bytes = b"", frag: int = 0x4000
) -> bytes:
    ihl = 5 + len(opts) // 4
    return (
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, frag, 64, proto, 0, src, dst)
        + opts
        + l4
    )


def _ipv6(src: bytes, dst: bytes, nxt: int, l4: bytes, plen: int) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, plen, nxt, 64, src, dst) + l4


def _tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 502, 0, 0)


def _udp(sport: int, dport: int, length: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, length, 0)


@dataclass
class Templates:
    """One L3 template per (flow, direction): header bytes and where to patch per packet."""

    l3: list[bytes]
    ethertype: np.ndarray  # per template
    payload: np.ndarray  # payload bytes after the template (zero-filled)
    ipid_at: np.ndarray  # offset of the IPv4 ID in the L3 bytes, -1 if none
    seq_at: np.ndarray  # offset of the TCP sequence number, -1 if none


def _flows(n_flows: int, rnd: np.random.Generator, full_size: bool) -> tuple[Templates, np.ndarray]:
    """Templates for 2 * n_flows (even: out, odd: in) and each flow's card."""
    kinds = rnd.choice(len(KINDS), size=n_flows, p=[p for _, p in KINDS])
    cards = rnd.integers(0, len(CARDS), size=n_flows)
    l3: list[bytes] = []
    etype, payload, ipid_at, seq_at = [], [], [], []
    big = MTU_FRAME - 14
    for f in range(n_flows):
        kind = KINDS[kinds[f]][0]
        card = int(cards[f])
        sport = 1024 + (f * 7919) % 60000
        peer4 = bytes([172, 16 + card, (f >> 8) & 0xFF, 1 + f % 250])
        peer6 = socket.inet_pton(socket.AF_INET6, f"fd00:{card + 1}::{2 + f % 60000:x}")
        local4, local6 = _card_addr4(card), _card_addr6(card)
        for out in (True, False):
            s4, d4 = (local4, peer4) if out else (peer4, local4)
            s6, d6 = (local6, peer6) if out else (peer6, local6)
            sp, dp = (sport, 443) if out else (443, sport)
            pay = 0
            if kind in ("tcp4", "opts4"):
                pay = (big - 40 - (4 if kind == "opts4" else 0)) if full_size and out else 0
                opts = b"\x94\x04\x00\x00" if kind == "opts4" else b""
                hdr = _ipv4(
                    s4, d4, 6, _tcp(sp, dp, 0x18 if out else 0x10), 20 + len(opts) + 20 + pay, opts
                )
                ipid_at.append(4)
                seq_at.append(20 + len(opts) + 4)
                etype.append(0x0800)
            elif kind == "tcp6":
                pay = big - 60 if full_size and out else 0
                hdr = _ipv6(s6, d6, 6, _tcp(sp, dp, 0x18 if out else 0x10), 20 + pay)
                ipid_at.append(-1)
                seq_at.append(40 + 4)
                etype.append(0x86DD)
            elif kind == "udp4":
                pay = 512 if full_size else 48
                hdr = _ipv4(s4, d4, 17, _udp(sp, 53 if out else sp, 8 + pay), 28 + pay)
                if not out:
                    hdr = _ipv4(s4, d4, 17, _udp(53, sport, 8 + pay), 28 + pay)
                ipid_at.append(4)
                seq_at.append(-1)
                etype.append(0x0800)
            elif kind == "udp6":
                pay = 256 if full_size else 32
                u = _udp(sport, 123, 8 + pay) if out else _udp(123, sport, 8 + pay)
                hdr = _ipv6(s6, d6, 17, u, 8 + pay)
                ipid_at.append(-1)
                seq_at.append(-1)
                etype.append(0x86DD)
            elif kind == "icmp4":
                pay = 56
                echo = struct.pack("!BBHHH", 8 if out else 0, 0, 0, f & 0xFFFF, 0)
                hdr = _ipv4(s4, d4, 1, echo, 28 + pay)
                ipid_at.append(4)
                seq_at.append(-1)
                etype.append(0x0800)
            elif kind == "icmperr4":
                inner = _ipv4(d4, s4, 17, _udp(dp, sp, 16), 36)
                err = struct.pack("!BBHI", 3, 3, 0, 0) + inner
                hdr = _ipv4(s4, d4, 1, err, 20 + len(err))
                ipid_at.append(4)
                seq_at.append(-1)
                etype.append(0x0800)
            elif kind == "frag4":
                pay = 1200 if full_size else 64
                u = _udp(sport, 4000, 8 + pay) if out else _udp(4000, sport, 8 + pay)
                hdr = _ipv4(s4, d4, 17, u, 28 + pay, frag=0x2000)
                ipid_at.append(4)
                seq_at.append(-1)
                etype.append(0x0800)
            else:
                op = 1 if out else 2
                sha = CARD_MAC[CARDS[card]] if out else PEER_MAC
                hdr = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, s4, b"\0" * 6, d4)
                ipid_at.append(-1)
                seq_at.append(-1)
                etype.append(0x0806)
            l3.append(hdr)
            payload.append(pay)
    t = Templates(
        l3=l3,
        ethertype=np.array(etype, dtype=np.uint16),
        payload=np.array(payload, dtype=np.int64),
        ipid_at=np.array(ipid_at, dtype=np.int64),
        seq_at=np.array(seq_at, dtype=np.int64),
    )
    return t, cards


def _ragged_copy(
    out: np.ndarray,
    dst_start: np.ndarray,
    pool: np.ndarray,
    src_start: np.ndarray,
    length: np.ndarray,
) -> None:
    """out[dst_start[i]:+length[i]] = pool[src_start[i]:+length[i]] for every i, at once."""
    total = int(length.sum())
    if not total:
        return
    run_start = np.cumsum(length) - length
    within = np.arange(total, dtype=np.int64) - np.repeat(run_start, length)
    out[np.repeat(dst_start, length) + within] = pool[np.repeat(src_start, length) + within]


def _be16(v: np.ndarray) -> np.ndarray:
    return v.astype(">u2").view(np.uint8).reshape(-1, 2)


def _be32(v: np.ndarray) -> np.ndarray:
    return v.astype(">u4").view(np.uint8).reshape(-1, 4)


def _le32(*columns: np.ndarray) -> np.ndarray:
    """Per row, the columns as consecutive little-endian 32-bit words (record headers)."""
    return np.stack([c.astype(np.uint32) for c in columns], axis=1).astype("<u4").view(np.uint8)


class _Writer:
    """Appends blocks of packets to one capture file in one of three forms: per-card Ethernet
    pcap (``eth``), ``tcpdump -i any`` pcap (``sll2``) or multi-interface pcapng (``pcapng``)."""

    def __init__(self, path: str, form: str, snaplen: int) -> None:
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.form = form
        self.snaplen = snaplen
        if form == "pcapng":
            self._block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
            for name in CARDS:
                opt = _pcapng_opt(2, name.encode()) + _pcapng_opt(9, b"\x09") + b"\0" * 4
                self._block(1, struct.pack("<HHI", 1, 0, snaplen) + opt)
        else:
            linktype = 276 if form == "sll2" else 1
            self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))

    def _block(self, btype: int, body: bytes) -> None:
        total = 12 + len(body)
        self.f.write(struct.pack("<II", btype, total) + body + struct.pack("<I", total))

    def write(
        self,
        tpl: Templates,
        pool: np.ndarray,
        pool_at: np.ndarray,
        t: np.ndarray,
        ts_ns: np.ndarray,
        card: np.ndarray,
        out: np.ndarray,
        counter: np.ndarray,
    ) -> None:
        """Write packets of templates ``t``: record header, link header, L3 template, zero
        payload, truncated to the snap length; IP ID and TCP sequence patched per packet."""
        n = t.shape[0]
        if not n:
            return
        l3_len = pool_at[t + 1] - pool_at[t]
        if self.form == "sll2":
            vlan = np.zeros(n, bool)
            link_len = np.full(n, 20)
        else:
            vlan = (card == CARDS.index(VLAN_CARD)) & (tpl.ethertype[t] != 0x0806)
            link_len = np.where(vlan, 18, 14)
        wire = link_len + l3_len + tpl.payload[t]
        caplen = np.minimum(wire, self.snaplen)
        if self.form == "pcapng":
            head, tail = 28, 16
            rec_len = head + ((caplen + 3) & ~3) + tail
        else:
            head, tail = 16, 0
            rec_len = head + caplen
        rec = np.cumsum(rec_len) - rec_len
        buf = np.zeros(int(rec_len.sum()) + 64, dtype=np.uint8)  # slack: patches past snaplen
        start = rec + head
        card_mac = np.frombuffer(b"".join(CARD_MAC[c] for c in CARDS), np.uint8).reshape(-1, 6)
        peer = np.frombuffer(PEER_MAC, np.uint8)
        if self.form == "sll2":
            buf[start[:, None] + np.arange(2)] = _be16(tpl.ethertype[t])
            ifindex = np.array([IFINDEX[c] for c in CARDS], dtype=np.uint32)[card]
            buf[start[:, None] + 4 + np.arange(4)] = _be32(ifindex)
            buf[start[:, None] + 8 + np.arange(2)] = _be16(np.full(n, 1))
            buf[start + 10] = np.where(out, 4, 0)
            buf[start + 11] = 6
            buf[start[:, None] + 12 + np.arange(6)] = np.where(out[:, None], card_mac[card], peer)
        else:
            buf[start[:, None] + np.arange(6)] = np.where(out[:, None], peer, card_mac[card])
            buf[start[:, None] + 6 + np.arange(6)] = np.where(out[:, None], card_mac[card], peer)
            et_at = start + 12
            tagged = np.nonzero(vlan)[0]
            buf[et_at[tagged, None] + np.arange(2)] = _be16(np.full(tagged.size, 0x8100))
            buf[et_at[tagged, None] + 2 + np.arange(2)] = _be16(np.full(tagged.size, VLAN_ID))
            et_at = et_at + np.where(vlan, 4, 0)
            buf[et_at[:, None] + np.arange(2)] = _be16(tpl.ethertype[t])
        l3_at = start + link_len
        _ragged_copy(buf, l3_at, pool, pool_at[t], np.minimum(l3_len, caplen - link_len))
        has_id = np.nonzero(tpl.ipid_at[t] >= 0)[0]
        at = l3_at[has_id] + tpl.ipid_at[t[has_id]]
        buf[at[:, None] + np.arange(2)] = _be16(counter[has_id] & 0xFFFF)
        has_seq = np.nonzero((tpl.seq_at[t] >= 0) & (caplen >= link_len + tpl.seq_at[t] + 4))[0]
        at = l3_at[has_seq] + tpl.seq_at[t[has_seq]]
        seq = (counter[has_seq] * 1448 + t[has_seq] * 7_777_777) & 0xFFFFFFFF
        buf[at[:, None] + np.arange(4)] = _be32(seq)
        # the patches above may write past a truncated record: clear what spilled into the
        # next record's header by writing the headers last
        if self.form == "pcapng":
            fields = _le32(
                np.full(n, 6), rec_len, card, ts_ns >> 32, ts_ns & 0xFFFFFFFF, caplen, wire
            )
            buf[rec[:, None] + np.arange(28)] = fields
            trailer = _le32(np.full(n, 2 | (4 << 16)), np.where(out, 2, 1), np.zeros(n), rec_len)
            buf[(rec + rec_len - tail)[:, None] + np.arange(16)] = trailer
        else:
            hdr = _le32(ts_ns // 1_000_000_000, ts_ns % 1_000_000_000 // 1000, caplen, wire)
            buf[rec[:, None] + np.arange(16)] = hdr
        buf[: int(rec_len.sum())].tofile(self.f)

    def close(self) -> None:
        self.f.close()


def _pcapng_opt(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def generate(
    out_dir: str,
    packets: int,
    *,
    full_size: bool = True,
    snaplen: int | None = None,
    flows: int = 20000,
    switching_flows: int = 8,
    forms: tuple[str, ...] = ("host", "pcap", "sll2", "pcapng"),
    block: int = 65536,
    seed: int = 1,
) -> dict:
    """Write a bundle of ``packets`` packets to ``out_dir``; return a summary of what it holds.

    ``forms``: ``host`` one Ethernet pcap of every packet (``host.pcap``), ``pcap`` one per card
    (``eth1.pcap``...), ``sll2`` ``any.pcap``, ``pcapng`` ``all.pcapng``.

    ``snaplen`` truncates every record (96 gives a headers-only capture); ``switching_flows``
    outgoing TCP flows move from their card to the next one half way through.
    """
    os.makedirs(out_dir, exist_ok=True)
    rnd = np.random.default_rng(seed)
    tpl, flow_card = _flows(flows, rnd, full_size)
    pool = np.frombuffer(b"".join(tpl.l3), dtype=np.uint8)
    pool_at = np.concatenate([[0], np.cumsum([len(b) for b in tpl.l3])]).astype(np.int64)
    snaplen = snaplen or 262144
    tcp_flows = np.nonzero(tpl.seq_at[0::2] >= 0)[0]
    switching = tcp_flows[: switching_flows * 97 : 97][:switching_flows]
    # Heavy-tailed flow sizes, capped: uncapped, a Zipf draw gives a handful of flows nearly
    # every packet, and a busy host has thousands of live flows.
    weights = np.minimum(rnd.zipf(1.3, size=flows), ZIPF_CAP).astype(np.float64)
    weights[switching] = ZIPF_CAP
    weights /= weights.sum()

    writers: dict[str, _Writer] = {}
    if "host" in forms:
        writers["host"] = _Writer(os.path.join(out_dir, "host.pcap"), "eth", snaplen)
    if "pcap" in forms:
        for c in CARDS:
            writers[c] = _Writer(os.path.join(out_dir, f"{c}.pcap"), "eth", snaplen)
    if "sll2" in forms:
        writers["any"] = _Writer(os.path.join(out_dir, "any.pcap"), "sll2", snaplen)
    if "pcapng" in forms:
        writers["ng"] = _Writer(os.path.join(out_dir, "all.pcapng"), "pcapng", snaplen)

    counter = np.zeros(2 * flows, dtype=np.int64)
    ts = T0_NS
    half = packets // 2
    written = 0
    while written < packets:
        n = min(block, packets - written)
        flow = rnd.choice(flows, size=n, p=weights)
        out = rnd.random(n) < 0.6
        t = 2 * flow + (~out)
        card = flow_card[flow].copy()
        moved = np.isin(flow, switching) & out & (np.arange(written, written + n) >= half)
        card[moved] = (card[moved] + 1) % len(CARDS)
        order = np.argsort(t, kind="stable")
        rank = np.empty(n, np.int64)
        ts_sorted = t[order]
        first = np.r_[True, ts_sorted[1:] != ts_sorted[:-1]]
        run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        rank[order] = np.arange(n) - run_start
        pkt_counter = counter[t] + rank
        np.add.at(counter, t, 1)
        stamps = ts + np.cumsum(rnd.integers(20, 300, size=n) * 1000)
        ts = int(stamps[-1])
        for name, w in writers.items():
            sel = np.nonzero(card == CARDS.index(name))[0] if name in CARDS else np.arange(n)
            w.write(tpl, pool, pool_at, t[sel], stamps[sel], card[sel], out[sel], pkt_counter[sel])
        written += n
    for w in writers.values():
        w.close()
    _write_ip_snapshot(out_dir)
    summary = {
        "version": VERSION,
        "packets": packets,
        "full_size": full_size,
        "snaplen": snaplen,
        "flows": flows,
        "switching_flows": [int(f) for f in switching],
        "files": sorted(os.listdir(out_dir)),
    }
    with open(os.path.join(out_dir, "generated.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _write_ip_snapshot(out_dir: str) -> None:
    """``ip -j link`` and ``ip -j addr`` of the four cards, so directions and addresses resolve."""
    snap = os.path.join(out_dir, "ip", "before")
    os.makedirs(snap, exist_ok=True)
    links, addrs = [], []
    for i, name in enumerate(CARDS):
        mac = ":".join(f"{b:02x}" for b in CARD_MAC[name])
        link = {
            "ifindex": IFINDEX[name],
            "ifname": name,
            "flags": ["UP"],
            "mtu": 1500,
            "operstate": "UP",
            "link_type": "ether",
            "address": mac,
        }
        links.append(link)
        addrs.append(
            {
                **link,
                "addr_info": [
                    {
                        "family": "inet",
                        "local": f"10.{i + 1}.0.1",
                        "prefixlen": 16,
                        "scope": "global",
                    },
                    {
                        "family": "inet6",
                        "local": f"fd00:{i + 1}::1",
                        "prefixlen": 64,
                        "scope": "global",
                    },
                ],
            }
        )
    with open(os.path.join(snap, "link.json"), "w") as f:
        json.dump(links, f)
    with open(os.path.join(snap, "addr.json"), "w") as f:
        json.dump(addrs, f)
    with open(os.path.join(snap, "taken_at"), "w") as f:
        f.write(f"{T0_NS / 1e9 - 1:.6f}\n")
