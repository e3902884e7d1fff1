"""Realistic synthetic captures of any size, written as a nicpath bundle.

A busy multi-homed host: four cards (one carrying a VLAN), many concurrent flows of TCP, UDP and
ICMP echo over IPv4 and IPv6, ICMP errors, IPv4 fragments and options, ARP, and a few flows whose
outgoing packets move to another card half way through (the egress change nicpath is for).

Frames are assembled with numpy a block at a time (one template per flow and direction, the
payload zero-filled, IP ID and TCP sequence numbers patched per packet), so ten million packets
take seconds, not the hour a per-packet dpkt loop would. The same packets are written in three
forms: one classic pcap per card, ``any.pcap`` (LINUX_SLL2) and ``all.pcapng``.

Beside them, the kernel log a host logging its traffic would keep (``_KernelLog``): netfilter LOG
lines for every Nth TCP/UDP packet and every packet of a few traced flows, as the kernel prints
them, in raw dmesg (with ``btime``), journald short-iso and whole-second syslog. A few TCP flows
are behind SNAT: the wire shows their translated source, their LOG lines the original one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CARDS = ("eth1", "eth2", "eth3", "eth4")
IFINDEX = {name: 2 + i for i, name in enumerate(CARDS)}
CARD_MAC = {name: bytes([2, 0, 0, 0, 0, 1 + i]) for i, name in enumerate(CARDS)}
PEER_MAC = bytes.fromhex("0a0000000099")
VLAN_CARD = "eth4"
VLAN_ID = 100
T0_NS = 1_764_040_200_000_000_000
MTU_FRAME = 1514

#: Bumped whenever the captures it makes change: the benchmark regenerates cached ones.
VERSION = 4
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
#: Kinds of flow whose packets get LOG lines: TCP and UDP. Not the IPv4 fragments: the filter
#: hooks see the whole datagram (before fragmentation going out, after reassembly coming in),
#: whose line would not be of the packet on the wire.
LOGGED_KINDS = ("tcp4", "opts4", "tcp6", "udp4", "udp6")
#: Renderings of the kernel log and the file each is written to, named as in ``samples/``.
LOG_FILES = {"dmesg": "kern.dmesg", "journal": "kern.journal", "syslog": "kern.syslog"}
#: Seconds since boot at the first packet. The true boot time lies ``BOOT_FRACTION_NS`` after
#: the whole second ``btime`` says, as on a real host (F7): raw dmesg placed with ``btime``
#: alone is that far off.
UPTIME_AT_T0 = 8716
BOOT_FRACTION_NS = 387_000_000
#: A hook logs a packet a few microseconds before it is on the wire (OUTPUT) or after (INPUT):
#: below this many us, under half the least gap between two packets (20 us), so the lines keep
#: the packets' order.
HOOK_GAP_US = 10
#: journald stamps a kernel line when it reads it, waking up at most this long (ns) after the
#: last read: a line is up to this late, never early, and the stamps never go back.
JOURNAL_DELAY_NS = 50_000_000
LOG_HOST = "host"
#: IPv4 flag bits as the kernel prints them, in its order.
IP_FLAG_WORDS = ((0x8000, "CE "), (0x4000, "DF "), (0x2000, "MF "))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NS = 1_000_000_000


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


def _flows(
    n_flows: int, rnd: np.random.Generator, full_size: bool
) -> tuple[Templates, np.ndarray, np.ndarray]:
    """Templates for 2 * n_flows (even: out, odd: in), each flow's card and its kind (index
    into ``KINDS``)."""
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
    return t, cards, kinds


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


def _special_flows(
    kind: np.ndarray, switching: np.ndarray, snat_flows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The flows behind SNAT (IPv4 TCP, not switching) and the traced flows, every packet of
    which is logged: the switching ones, the first half of the SNAT ones, one IPv6 TCP flow
    and one UDP flow (a user tracing the connections under investigation)."""
    tcp4 = np.setdiff1d(np.flatnonzero(kind == "tcp4"), switching)
    snat = tcp4[5::31][:snat_flows]
    extra = [np.setdiff1d(np.flatnonzero(kind == k), switching)[:1] for k in ("tcp6", "udp4")]
    traced = np.concatenate([switching, snat[: (len(snat) + 1) // 2], *extra])
    return snat, np.unique(traced)


def _apply_snat(
    tpl: Templates, snat: np.ndarray, flow_card: np.ndarray
) -> tuple[dict[int, tuple[bytes, int]], list[str]]:
    """Put the SNAT flows behind MASQUERADE: their socket has another card's address, the wire
    the egress card's (the address their templates already hold), and every other one of them
    gets another port on the wire (its templates are patched). Returns, per template, the local
    address and port the filter hooks see (OUTPUT before SNAT, INPUT after de-NAT), and the
    flows' ``conntrack -L`` lines."""
    original: dict[int, tuple[bytes, int]] = {}
    entries = []
    for j, f in enumerate(snat.tolist()):
        out_l3, in_l3 = tpl.l3[2 * f], tpl.l3[2 * f + 1]
        sport, dport = struct.unpack_from("!HH", out_l3, 20)
        peer, wire_addr = out_l3[16:20], out_l3[12:16]
        addr = _card_addr4((int(flow_card[f]) + 1) % len(CARDS))
        wire_port = 61000 + j if j % 2 else sport
        tpl.l3[2 * f] = out_l3[:20] + struct.pack("!H", wire_port) + out_l3[22:]
        tpl.l3[2 * f + 1] = in_l3[:22] + struct.pack("!H", wire_port) + in_l3[24:]
        original[2 * f] = original[2 * f + 1] = (addr, sport)
        a, p, w = (socket.inet_ntoa(x) for x in (addr, peer, wire_addr))
        entries.append(
            f"ipv4     2 tcp      6 431999 ESTABLISHED src={a} dst={p} sport={sport} "
            f"dport={dport} src={p} dst={w} sport={dport} dport={wire_port} [ASSURED] mark=0 "
            "use=1"
        )
    return original, entries


def _addr_text(addr: bytes) -> str:
    """An address as the kernel's ``%pI4`` / ``%pI6`` print it: IPv6 fully expanded."""
    if len(addr) == 4:
        return socket.inet_ntoa(addr)
    return ":".join(addr[i : i + 2].hex() for i in range(0, 16, 2))


def _tcp_flag_words(flags: int) -> str:
    """Bare TCP flag words in the kernel's order."""
    names = ("CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN")
    return "".join(f"{n} " for i, n in enumerate(names) if flags & (0x80 >> i))


def _hook_text(l3: bytes, out: bool, original: tuple[bytes, int] | None) -> tuple[str, str, str]:
    """The parts of a LOG line of one template that every packet shares, read from the
    template's own header bytes (so a line says what its packet carries): the prefix, the
    fields up to ``ID=`` (IPv6: the whole rest of the line, it has no ID) and what follows the
    ID. ``original``: the local address and port the hook sees (SNAT)."""
    if l3[0] >> 4 == 4:
        ihl = (l3[0] & 0x0F) * 4
        tos, length, frag, ttl, proto = l3[1], *struct.unpack_from("!H2xHBB", l3, 2)
        src, dst, l4 = l3[12:16], l3[16:20], l3[ihl:]
    else:
        word, plen, proto, ttl = struct.unpack_from("!IHBB", l3)
        length, src, dst, l4 = plen + 40, l3[8:24], l3[24:40], l3[40:]
    sport, dport = struct.unpack_from("!HH", l4)
    if original is not None:
        if out:
            src, sport = original
        else:
            dst, dport = original
    if proto == 6:
        window, urgp = struct.unpack_from("!H2xH", l4, 14)
        transport = (
            f"PROTO=TCP SPT={sport} DPT={dport} WINDOW={window} "
            f"RES=0x{(l4[12] & 0x0F) << 2:02x} {_tcp_flag_words(l4[13])}URGP={urgp} \n"
        )
    else:
        transport = f"PROTO=UDP SPT={sport} DPT={dport} LEN={struct.unpack_from('!H', l4, 4)[0]} \n"
    prefix = f"[FILTER-{'OUTPUT' if out else 'INPUT'} {'tcp' if proto == 6 else 'udp'}] "
    addrs = f"SRC={_addr_text(src)} DST={_addr_text(dst)} LEN={length} "
    if len(src) == 16:
        ip6 = f"TC={(word >> 20) & 0xFF} HOPLIMIT={ttl} FLOWLBL={word & 0xFFFFF} "
        return prefix, addrs + ip6 + transport, ""
    bits = "".join(w for bit, w in IP_FLAG_WORDS if frag & bit)
    if frag & 0x1FFF:
        bits += f"FRAG:{frag & 0x1FFF} "
    head = f"{addrs}TOS=0x{tos & 0x1E:02X} PREC=0x{tos & 0xE0:02X} TTL={ttl} ID="
    return prefix, head, " " + bits + transport


def _text_bytes(text: pa.Array) -> memoryview:
    """The bytes of a string array's values end to end, without a copy."""
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    return memoryview(text.buffers()[2])[offsets[0] : offsets[-1]]


def _per_second(seconds: np.ndarray, fmt: str) -> pa.Array:
    """``fmt`` (datetime.strftime, plus ``{mon}`` and ``{day}``) of each epoch second, formatted
    once per distinct second: a block of packets spans a few seconds."""
    distinct, at = np.unique(seconds, return_inverse=True)
    texts = []
    for s in distinct.tolist():
        when = dt.datetime.fromtimestamp(s, dt.UTC)
        texts.append(when.strftime(fmt.format(mon=MONTHS[when.month - 1], day=f"{when.day:2d}")))
    return pa.array(texts, pa.string()).take(pa.array(at.astype(np.int64)))


class _KernelLog:
    """The netfilter LOG lines of the generated packets, written a block of packets at a time in
    each rendering: one line for every ``every``-th packet of each rule (OUTPUT and INPUT, tcp
    and udp: ``-m statistic --mode nth --every N -j LOG``), and one for every packet of the
    traced flows (a rule before those, so its packets do not count toward them).

    A line is built from per-template text (``_hook_text``) and per-packet columns (card, IP ID,
    time) joined with Arrow string kernels, a block at a time: no Python per line."""

    def __init__(
        self,
        out_dir: str,
        tpl: Templates,
        kind: np.ndarray,
        traced: np.ndarray,
        original: dict[int, tuple[bytes, int]],
        every: int,
        renderings: tuple[str, ...],
        seed: int,
    ) -> None:
        n_tpl = len(tpl.l3)
        flow_of = np.arange(n_tpl) // 2
        self.loggable = np.isin(kind[flow_of], LOGGED_KINDS)
        self.traced = np.isin(flow_of, traced)
        self.snat = np.isin(np.arange(n_tpl), list(original))
        self.v6 = tpl.ethertype == 0x86DD
        proto = np.array([h[9] if h[0] >> 4 == 4 else h[6] for h in tpl.l3])
        self.rule = (np.arange(n_tpl) % 2) * 2 + (proto == 17)  # (in, udp): one counter each
        prefix, head, tail = [], [], []
        for i in range(n_tpl):
            parts = ("", "", "")
            if self.loggable[i]:
                parts = _hook_text(tpl.l3[i], i % 2 == 0, original.get(i))
            prefix.append(parts[0])
            head.append(parts[1])
            tail.append(parts[2])
        self.prefix, self.head, self.tail = (pa.array(x, pa.string()) for x in (prefix, head, tail))
        inout = []
        for c in CARDS:  # index (card * 2 + out) * 2 + v6
            for out in (False, True):
                for etype in ("08:00", "86:dd"):
                    if out:
                        inout.append(f"IN= OUT={c} ")
                    else:
                        macs = ":".join(f"{b:02x}" for b in CARD_MAC[c] + PEER_MAC)
                        inout.append(f"IN={c} OUT= MAC={macs}:{etype} ")
        self.inout = pa.array(inout, pa.string())
        self.every = every
        self.seen = np.zeros(4, np.int64)
        self.rnd = np.random.default_rng(seed + 7919)  # its own: captures do not depend on it
        self.btime = T0_NS // NS - UPTIME_AT_T0
        self.boot_ns = self.btime * NS + BOOT_FRACTION_NS
        self.read_at, self.read_lines = T0_NS, 0  # journald's last read, lines it took
        self.files = {r: open(os.path.join(out_dir, LOG_FILES[r]), "wb") for r in renderings}  # noqa: SIM115
        with open(os.path.join(out_dir, "btime"), "w") as f:
            f.write(f"{self.btime}\n")
        self.lines = 0
        self.snat_lines = 0
        self.traced_lines = 0

    def write(
        self,
        t: np.ndarray,
        out: np.ndarray,
        card: np.ndarray,
        stamps: np.ndarray,
        counter: np.ndarray,
    ) -> None:
        """Append the lines of one block of packets (in time order) to every rendering."""
        traced = self.traced[t]
        counted = self.loggable[t] & ~traced
        take = traced & self.loggable[t]
        rule = self.rule[t]
        for r in range(4):
            mine = counted & (rule == r)
            nth = self.seen[r] + np.cumsum(mine) - 1
            take |= mine & (nth % self.every == 0)
            self.seen[r] += int(mine.sum())
        sel = np.flatnonzero(take)
        if not sel.size:
            return
        tt = pa.array(t[sel])
        gap = self.rnd.integers(0, HOOK_GAP_US, sel.size) * 1000
        kernel_ns = stamps[sel] + np.where(out[sel], -gap, gap)
        v6 = self.v6[t[sel]]
        code = (card[sel] * 2 + out[sel]) * 2 + v6
        ids = pc.if_else(pa.array(v6), "", pa.array(counter[sel] & 0xFFFF).cast(pa.string()))
        body = pc.binary_join_element_wise(
            self.prefix.take(tt),
            self.inout.take(pa.array(code)),
            self.head.take(tt),
            ids,
            self.tail.take(tt),
            "",
        )
        read = None
        if "journal" in self.files or "syslog" in self.files:
            read = self._journal_times(kernel_ns)
        for rendering, f in self.files.items():
            stamp = self._stamps(rendering, kernel_ns, read)
            f.write(_text_bytes(pc.binary_join_element_wise(stamp, body, "")))
        self.lines += sel.size
        self.snat_lines += int(self.snat[t[sel]].sum())
        self.traced_lines += int(traced[sel].sum())

    def _stamps(self, rendering: str, kernel_ns: np.ndarray, read: np.ndarray | None) -> pa.Array:
        """Each line's stamp in ``rendering``: raw dmesg from the time the kernel logged it
        (epoch ns), journald and syslog from when the line was read (``read``)."""
        if rendering == "dmesg":  # printk: "[%5lu.%06lu] " since boot
            up = kernel_ns - self.boot_ns
            sec = pc.utf8_lpad(pa.array(up // NS).cast(pa.string()), 5, " ")
            usec = pc.utf8_lpad(pa.array(up % NS // 1000).cast(pa.string()), 6, "0")
            return pc.binary_join_element_wise("[", sec, ".", usec, "] ", "")
        assert read is not None
        if rendering == "journal":  # short-iso with microseconds
            usec = pc.utf8_lpad(pa.array(read % NS // 1000).cast(pa.string()), 6, "0")
            return pc.binary_join_element_wise(
                _per_second(read // NS, "%Y-%m-%dT%H:%M:%S"),
                ".",
                usec,
                f"+0000 {LOG_HOST} kernel: ",
                "",
            )
        return _per_second(read // NS, f"{{mon}} {{day}} %H:%M:%S {LOG_HOST} kernel: ")

    def _journal_times(self, kernel_ns: np.ndarray) -> np.ndarray:
        """When journald read each line (rsyslog takes its stamp from the journal): it wakes
        up every 1-50 ms and stamps the lines the kernel wrote since, a microsecond apart. So a
        line is 0-50 ms late, by an amount that varies line to line, and the stamps never go
        back. ``kernel_ns`` is in time order."""
        reads = [self.read_at]
        while reads[-1] < kernel_ns[-1]:
            gaps = self.rnd.integers(1_000, JOURNAL_DELAY_NS // 1000, 256) * 1000
            reads.extend((reads[-1] + np.cumsum(gaps)).tolist())
        at = np.array(reads, dtype=np.int64)
        batch = np.searchsorted(at, kernel_ns, side="left")
        rank = np.arange(batch.size) - np.searchsorted(batch, batch, side="left")
        rank[batch == 0] += self.read_lines  # the read the block before ended in goes on
        self.read_at, self.read_lines = int(at[batch[-1]]), int(rank[-1]) + 1
        return at[batch] + rank * 1000

    def close(self) -> dict:
        """Close the files; what they hold."""
        for f in self.files.values():
            f.close()
        return {
            "every": self.every,
            "lines": self.lines,
            "snat_lines": self.snat_lines,
            "traced_lines": self.traced_lines,
            "files": {r: LOG_FILES[r] for r in self.files},
            "btime": self.btime,
            "boot_time": self.boot_ns / NS,
        }


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
    snat_flows: int = 4,
    log_every: int = 10,
    renderings: tuple[str, ...] = tuple(LOG_FILES),
) -> dict:
    """Write a bundle of ``packets`` packets to ``out_dir``; return a summary of what it holds.

    ``forms``: ``host`` one Ethernet pcap of every packet (``host.pcap``), ``pcap`` one per card
    (``eth1.pcap``...), ``sll2`` ``any.pcap``, ``pcapng`` ``all.pcapng``.

    ``snaplen`` truncates every record (96 gives a headers-only capture); ``switching_flows``
    outgoing TCP flows move from their card to the next one half way through; ``snat_flows``
    TCP flows are behind SNAT (``conntrack.txt`` lists them).

    ``log_every`` > 0 also writes the kernel log of the same packets in ``renderings``
    (``LOG_FILES``) and ``btime``: a LOG line for every ``log_every``-th TCP/UDP packet of each
    rule and for every packet of the traced flows (``_KernelLog``). The captures are the same
    with or without it.
    """
    os.makedirs(out_dir, exist_ok=True)
    rnd = np.random.default_rng(seed)
    tpl, flow_card, kinds = _flows(flows, rnd, full_size)
    kind = np.array([name for name, _ in KINDS])[kinds]
    snaplen = snaplen or 262144
    tcp_flows = np.nonzero(tpl.seq_at[0::2] >= 0)[0]
    switching = tcp_flows[: switching_flows * 97 : 97][:switching_flows]
    snat, traced = _special_flows(kind, switching, snat_flows)
    original, conntrack = _apply_snat(tpl, snat, flow_card)
    pool = np.frombuffer(b"".join(tpl.l3), dtype=np.uint8)
    pool_at = np.concatenate([[0], np.cumsum([len(b) for b in tpl.l3])]).astype(np.int64)
    # Heavy-tailed flow sizes, capped: uncapped, a Zipf draw gives a handful of flows nearly
    # every packet, and a busy host has thousands of live flows.
    weights = np.minimum(rnd.zipf(1.3, size=flows), ZIPF_CAP).astype(np.float64)
    weights[np.concatenate([switching, snat, traced])] = ZIPF_CAP
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
    log = None
    if log_every > 0:
        log = _KernelLog(out_dir, tpl, kind, traced, original, log_every, renderings, seed)

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
        if log is not None:
            log.write(t, out, card, stamps, pkt_counter)
        written += n
    for w in writers.values():
        w.close()
    _write_ip_snapshot(out_dir)
    if conntrack:
        with open(os.path.join(out_dir, "conntrack.txt"), "w") as f:
            f.write("# conntrack -L --src-nat\n" + "".join(f"{e}\n" for e in conntrack))
            f.write(
                f"conntrack v1.4.7 (conntrack-tools): {len(conntrack)} flow entries have been "
                "shown.\n"
            )
    summary = {
        "version": VERSION,
        "packets": packets,
        "full_size": full_size,
        "snaplen": snaplen,
        "flows": flows,
        "switching_flows": [int(f) for f in switching],
        "snat_flows": [int(f) for f in snat],
        "traced_flows": [int(f) for f in traced],
        "log": log.close() if log is not None else None,
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
