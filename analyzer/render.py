"""Readable one-line forms of events and addresses, shared by every text output."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pyarrow as pa

from .schema import addr_text

PROTO_NAMES = {
    1: "icmp",
    6: "tcp",
    17: "udp",
    58: "icmp6",
    132: "sctp",
    136: "udplite",
    50: "esp",
    51: "ah",
    47: "gre",
}
TCP_FLAG_NAMES = (
    (0x02, "SYN"),
    (0x01, "FIN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x10, "ACK"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
    (0x100, "AE"),
)


ARP_OPS = {1: "request", 2: "reply"}


def proto_name(proto: int | None) -> str:
    if proto is None:
        return "-"
    return PROTO_NAMES.get(proto, str(proto))


def tcp_flags_text(flags: int | None) -> str:
    """Flag names in the order a network engineer reads them (SYN,ACK; PSH,ACK; RST)."""
    if flags is None:
        return ""
    names = [name for bit, name in TCP_FLAG_NAMES if flags & bit]
    return ",".join(names)


def ts_text(ns: int) -> str:
    stamp = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000 // 1000:06d}Z"


def endpoint(addr: bytes | str | None, port: int | None) -> str:
    """``10.0.0.1:80`` or ``[fd00::1]:80``; the address as column bytes or as text."""
    text = (addr_text(addr) if isinstance(addr, bytes) else addr) or "?"
    if port is None or port != port:  # None or NaN
        return text
    return f"[{text}]:{int(port)}" if ":" in text else f"{text}:{int(port)}"


def event_lines(table: pa.Table, *, batch_rows: int = 65536) -> Iterator[str]:
    """One line per event: time, point, direction, src -> dst, protocol details, length."""
    cols = [
        "ts",
        "point",
        "direction",
        "src",
        "sport",
        "dst",
        "dport",
        "proto",
        "tcp_flags",
        "icmp_type",
        "icmp_code",
        "ip_len",
        "ethertype",
        "arp_op",
        "wire_len",
        "vlan",
    ]
    for batch in table.select(cols).to_batches(max_chunksize=batch_rows):
        d = batch.to_pydict()
        ts = batch.column(0).cast(pa.int64()).to_pylist()
        for i in range(batch.num_rows):
            proto = d["proto"][i]
            if d["src"][i] is None and d["ethertype"][i] is not None:
                what = f"ethertype 0x{d['ethertype'][i]:04x}"
                detail = ""
            else:
                src = endpoint(d["src"][i], d["sport"][i])
                what = f"{src} -> {endpoint(d['dst'][i], d['dport'][i])}"
                if d["arp_op"][i] is not None:
                    detail = f"arp {ARP_OPS.get(d['arp_op'][i], d['arp_op'][i])}"
                else:
                    detail = proto_name(proto)
                    if d["tcp_flags"][i] is not None:
                        detail += f" [{tcp_flags_text(d['tcp_flags'][i])}]"
                    if d["icmp_type"][i] is not None:
                        detail += f" type {d['icmp_type'][i]} code {d['icmp_code'][i]}"
            length = d["ip_len"][i] if d["ip_len"][i] is not None else d["wire_len"][i]
            vlan = f" vlan {d['vlan'][i]}" if d["vlan"][i] is not None else ""
            yield (
                f"{ts_text(ts[i])}  {d['point'][i] or '?':<16} {d['direction'][i]:<7} "
                f"{what}  {detail}{vlan}  len {length if length is not None else '-'}"
            )
