"""Small builders of capture files for corner cases the kernel will not produce on demand.

Frames are built with dpkt; the file containers (pcap in both byte orders and resolutions,
pcapng with several interfaces) are written here so every variant can be pinned.
"""

from __future__ import annotations

import socket
import struct

import dpkt

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def ip4(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, a)


def ip6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


def tcp4(
    src="10.0.0.1",
    dst="10.0.0.2",
    sport=40000,
    dport=80,
    flags=dpkt.tcp.TH_SYN,
    seq=1000,
    ack=0,
    ip_id=1,
    ttl=64,
    payload=b"",
    df=True,
) -> dpkt.ip.IP:
    t = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=512, data=payload)
    ip = dpkt.ip.IP(
        src=ip4(src), dst=ip4(dst), p=dpkt.ip.IP_PROTO_TCP, id=ip_id, ttl=ttl, data=t, df=int(df)
    )
    ip.len = len(bytes(ip))
    return ip


def udp4(src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=53, payload=b"x" * 8, ip_id=2):
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    u.ulen = len(bytes(u))
    ip = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=dpkt.ip.IP_PROTO_UDP, id=ip_id, data=u)
    ip.len = len(bytes(ip))
    return ip


def eth(payload, *, src=MAC_A, dst=MAC_B, vlan: int | None = None) -> bytes:
    body = bytes(payload)
    etype = 0x86DD if body[0] >> 4 == 6 else 0x0800
    if vlan is None:
        return dst + src + struct.pack("!H", etype) + body
    return dst + src + struct.pack("!HHH", 0x8100, vlan, etype) + body


def sll2(payload: bytes, *, ifindex: int, pkttype: int, mac=MAC_A, proto=0x0800) -> bytes:
    return struct.pack("!HHIHBB", proto, 0, ifindex, 1, pkttype, 6) + mac + b"\0\0" + payload


def sll1(payload: bytes, *, pkttype: int, mac=MAC_A, proto=0x0800) -> bytes:
    return struct.pack("!HHH", pkttype, 1, 6) + mac + b"\0\0" + struct.pack("!H", proto) + payload


def _ns(ts: float | int) -> int:
    """Timestamps: an int is nanoseconds (exact), a float seconds (microsecond precision)."""
    return ts if isinstance(ts, int) else round(ts * 1e6) * 1000


def pcap_bytes(
    frames: list[tuple[float, bytes]], *, linktype=1, endian="<", nano=False, snaplen=262144
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, frame in frames:
        sec, ns = divmod(_ns(ts), 1_000_000_000)
        frac = ns if nano else ns // 1000
        cap = frame[:snaplen]
        out.append(struct.pack(endian + "IIII", sec, frac, len(cap), len(frame)) + cap)
    return b"".join(out)


def _opt(code: int, value: bytes, endian: str) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * pad


def _block(btype: int, body: bytes, endian: str) -> bytes:
    length = 12 + len(body)
    return struct.pack(endian + "II", btype, length) + body + struct.pack(endian + "I", length)


def pcapng_bytes(interfaces: list[dict], packets: list[dict], *, endian="<") -> bytes:
    """interfaces: {name (None: no if_name), linktype=1, tsresol=6}; packets: {iface, ts, frame,
    flags=None}."""
    shb = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    out = [_block(0x0A0D0D0A, shb, endian)]
    for i in interfaces:
        opts = _opt(2, i["name"].encode(), endian) if i.get("name") is not None else b""
        if "tsresol" in i:
            opts += _opt(9, bytes([i["tsresol"]]), endian)
        opts += struct.pack(endian + "HH", 0, 0)
        out.append(
            _block(1, struct.pack(endian + "HHI", i.get("linktype", 1), 0, 262144) + opts, endian)
        )
    for p in packets:
        res = interfaces[p["iface"]].get("tsresol", 6)
        units = _ns(p["ts"]) * 10**res // 1_000_000_000
        frame = p["frame"]
        body = struct.pack(
            endian + "IIIII", p["iface"], units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)
        )
        body += frame + b"\0" * ((-len(frame)) % 4)
        if p.get("flags") is not None:
            body += _opt(2, struct.pack(endian + "I", p["flags"]), endian)
            body += struct.pack(endian + "HH", 0, 0)
        out.append(_block(6, body, endian))
    return b"".join(out)


def mixed_frames(n: int, seed: int = 7) -> list[tuple[int, bytes]]:
    """A deterministic mix of what a busy multi-homed host sees: TCP/UDP/ICMP over IPv4 and
    IPv6, VLAN tags, IPv4 options and fragments, ICMP errors, ARP."""
    import random

    rnd = random.Random(seed)
    out = []
    t = 1_764_040_200_000_000_000
    for i in range(n):
        t += rnd.randint(1_000, 5_000_000)
        kind = rnd.randrange(9)
        a = f"172.16.{rnd.randrange(4)}.{rnd.randrange(1, 250)}"
        b = f"10.{rnd.randrange(4)}.0.{rnd.randrange(1, 250)}"
        if kind == 0:
            ip = tcp4(
                a,
                b,
                rnd.randrange(1024, 65535),
                rnd.choice((22, 80, 443)),
                flags=rnd.choice((2, 18, 16, 24, 17, 4)),
                seq=rnd.getrandbits(32),
                ack=rnd.getrandbits(32),
                ip_id=rnd.getrandbits(16),
                payload=b"p" * rnd.randrange(60),
            )
        elif kind == 1:
            ip = udp4(
                a,
                b,
                rnd.randrange(1024, 65535),
                rnd.choice((53, 123, 5000)),
                payload=b"u" * rnd.randrange(1, 80),
                ip_id=rnd.getrandbits(16),
            )
        elif kind == 2:
            echo = dpkt.icmp.ICMP(
                type=rnd.choice((0, 8)),
                data=dpkt.icmp.ICMP.Echo(id=rnd.getrandbits(16), seq=i & 0xFFFF, data=b"e" * 16),
            )
            ip = dpkt.ip.IP(src=ip4(a), dst=ip4(b), p=1, id=i & 0xFFFF, data=echo)
        elif kind == 3:
            inner = bytes(udp4(b, a, 5000, rnd.randrange(1024, 65535)))[:28]
            err = dpkt.icmp.ICMP(type=3, code=3, data=dpkt.icmp.ICMP.Unreach(data=inner))
            ip = dpkt.ip.IP(src=ip4(a), dst=ip4(b), p=1, id=i & 0xFFFF, data=err)
        elif kind == 4:
            t6 = dpkt.tcp.TCP(
                sport=rnd.randrange(1024, 65535),
                dport=443,
                seq=rnd.getrandbits(32),
                flags=rnd.choice((2, 16, 24)),
                data=b"s" * rnd.randrange(40),
            )
            ip = dpkt.ip6.IP6(
                src=ip6(f"fd00:70::{rnd.randrange(1, 999):x}"),
                dst=ip6("fd00:9::1"),
                nxt=6,
                hlim=64,
                data=t6,
                plen=len(bytes(t6)),
            )
        elif kind == 5:
            u6 = dpkt.udp.UDP(sport=546, dport=547, data=b"d" * 12)
            u6.ulen = len(bytes(u6))
            ip = dpkt.ip6.IP6(
                src=ip6("fe80::1"),
                dst=ip6("ff02::1:2"),
                nxt=17,
                hlim=1,
                data=u6,
                plen=len(bytes(u6)),
            )
        elif kind == 6:
            whole = udp4(a, b, 4000, 4001, payload=b"f" * 64, ip_id=i & 0xFFFF)
            frag = dpkt.ip.IP(
                src=whole.src,
                dst=whole.dst,
                p=17,
                id=whole.id,
                offset=rnd.choice((0, 4)),
                mf=1,
                data=bytes(whole.data)[:32],
            )
            ip = frag
        elif kind == 7:
            ip = tcp4(a, b, 1234, 80, ip_id=i & 0xFFFF)
            ip.opts = b"\x94\x04\x00\x00"  # router alert
            ip.hl = 6
        else:
            arp = dpkt.arp.ARP(
                op=rnd.choice((1, 2)), sha=MAC_A, spa=ip4(a), tha=b"\0" * 6, tpa=ip4(a)
            )
            out.append((t, b"\xff" * 6 + MAC_A + b"\x08\x06" + bytes(arp)))
            continue
        if isinstance(ip, dpkt.ip.IP):
            ip.len = len(bytes(ip))
        vlan = rnd.choice((None, None, None, 10, 20))
        src, dst = (MAC_A, MAC_B) if rnd.random() < 0.5 else (MAC_B, MAC_A)
        out.append((t, eth(ip, src=src, dst=dst, vlan=vlan)))
    return out
