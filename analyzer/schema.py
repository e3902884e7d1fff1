"""The event table: one row per observation of a packet, whatever the input format.

A row is a packet seen on a card by a capture, or a packet logged by a netfilter hook. Every
source module returns a ``pyarrow.Table`` (or record batches) with exactly ``EVENT_SCHEMA``, so
flows, timelines and detectors never care which format a row came from.

Addresses are ``fixed_size_binary(16)``: IPv6 as is, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``).
That keeps one compact, comparable column for both families; ``ip_version`` says which it is.
Nullable columns are null where the input does not carry the field (a LOG line has no MAC for
OUTPUT, a classic pcap has no interface index, a UDP packet has no TCP flags).
"""

from __future__ import annotations

import functools
import ipaddress
import socket

import numpy as np
import pyarrow as pa

ADDR = pa.binary(16)
MAC = pa.binary(6)
DICT_STR = pa.dictionary(pa.int32(), pa.string())

#: Transport protocols whose rows carry ports: TCP, UDP, SCTP, DCCP.
PORTED_PROTOS = (6, 17, 132, 136)
#: ICMP / ICMPv6 types that are a flow of their own, keyed by the echo id: request and reply.
ECHO_TYPES = {1: (0, 8), 58: (128, 129)}
#: ICMP / ICMPv6 error types: they quote the packet they answer.
ERROR_TYPES = {1: (3, 4, 5, 11, 12), 58: (1, 2, 3, 4)}


def icmp_types_in(
    proto: np.ndarray, icmp_type: np.ndarray, types: dict[int, tuple[int, ...]]
) -> np.ndarray:
    """Rows whose ICMP (protocol 1) or ICMPv6 (58) type is one of ``types[protocol]``."""
    return ((proto == 1) & np.isin(icmp_type, types[1])) | (
        (proto == 58) & np.isin(icmp_type, types[58])
    )


def flow_row_kinds(events: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event row: whether it belongs to a flow (an IP packet with both ports of
    ``PORTED_PROTOS``, or an ICMP echo with its id), whether it is an ICMP echo, and whether it
    is an ICMP error quoting a packet. ARP and later fragments are none of them."""

    def valid(name: str) -> np.ndarray:
        return present(events.column(name))

    proto, icmp_type = integers(events.column("proto"), 0), integers(events.column("icmp_type"), 0)
    ported = np.isin(proto, PORTED_PROTOS) & valid("sport") & valid("dport")
    echo = icmp_types_in(proto, icmp_type, ECHO_TYPES) & valid("icmp_id")
    error = icmp_types_in(proto, icmp_type, ERROR_TYPES) & valid("inner_proto")
    return (ported | echo) & valid("ip_version"), echo, error


#: direction values: the packet leaves the host through the card, arrives on it, or it is not known.
DIRECTIONS = ("out", "in", "unknown")

#: How ``ts`` was obtained; later stages weigh log rows by it.
TS_BASES = (
    "capture",  # the capture's own timestamp
    "matched",  # a LOG line paired with its captured packet: that packet's time
    "aligned",  # a LOG line placed by its file's offset to the capture clock (events.clock)
    "aligned-second",  # the same for whole-second stamps: its packet is in the second after
    "boot",  # raw dmesg plus the given boot time (no offset found: up to a second off)
    "unaligned",  # a LOG line on its file's own clock: no offset found, never joined by time
    "wallclock",  # the log line's own wall clock, as read (before alignment)
)

EVENT_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("ts", pa.timestamp("ns", tz="UTC"), "When the packet was observed, on the capture clock."),
    ("ts_basis", DICT_STR, "How ts was obtained: one of TS_BASES."),
    ("point", DICT_STR, "Observation point: the card name for a capture, the hook for a log."),
    ("iface", DICT_STR, "Card the packet crossed: capture card, LOG OUT= (out) or IN= (in)."),
    ("hook", DICT_STR, "Netfilter hook such as filter/OUTPUT for log rows; null for captures."),
    ("direction", DICT_STR, "out (leaves the host), in (arrives), unknown: never guessed."),
    ("source", DICT_STR, "Input file the row came from."),
    ("record", pa.int64(), "1-based packet number in the file, or line number for logs."),
    ("offset", pa.int64(), "Byte offset of the record in the (decompressed) file; null for logs."),
    (
        "ifindex",
        pa.int32(),
        "Interface index from LINUX_SLL2 (resolved to iface by ip link); else null.",
    ),
    (
        "pkttype",
        pa.int8(),
        "Linux packet type (0 host, 1 bcast, 2 mcast, 3 other, 4 outgoing); null above 127.",
    ),
    ("in_iface", DICT_STR, "LOG IN= device (empty string when IN= is empty); null for captures."),
    ("out_iface", DICT_STR, "LOG OUT= device; null for captures."),
    ("phys_in", DICT_STR, "LOG PHYSIN= (bridged packets); else null."),
    ("phys_out", DICT_STR, "LOG PHYSOUT=; else null."),
    ("log_prefix", DICT_STR, "The LOG/nft prefix text as written by the rule; null for captures."),
    ("eth_src", MAC, "Source MAC; null when the input has none (SLL, OUTPUT log lines)."),
    ("eth_dst", MAC, "Destination MAC; null when the input has none."),
    ("ethertype", pa.uint16(), "EtherType of the payload after any VLAN tags."),
    ("vlan", pa.uint16(), "802.1Q VLAN id of the outer tag; null when untagged."),
    ("wire_len", pa.uint32(), "Length of the frame on the wire (pcap orig_len); null for logs."),
    ("ip_version", pa.uint8(), "4 or 6; null for non-IP frames (ARP keeps its addresses)."),
    ("src", ADDR, "Source address (ARP: sender protocol address)."),
    ("dst", ADDR, "Destination address (ARP: target protocol address)."),
    (
        "ip_len",
        pa.uint32(),
        "IPv4 total length (0, TSO: the wire length) / IPv6 payload length + 40, as LOG LEN=.",
    ),
    ("ip_id", pa.uint32(), "IPv4 identification; IPv6 fragment header id; else null."),
    ("flow_label", pa.uint32(), "IPv6 flow label."),
    ("tos", pa.uint8(), "IPv4 TOS / IPv6 traffic class."),
    ("ttl", pa.uint8(), "IPv4 TTL / IPv6 hop limit."),
    ("dont_fragment", pa.bool_(), "IPv4 DF bit."),
    ("more_fragments", pa.bool_(), "IPv4 MF bit / IPv6 fragment M flag."),
    ("frag_offset", pa.uint16(), "Fragment offset in 8-byte units; 0 for first or whole packets."),
    ("proto", pa.uint8(), "IP protocol number of the transport (after IPv6 extension headers)."),
    ("sport", pa.uint16(), "TCP/UDP source port; null for other protocols and later fragments."),
    ("dport", pa.uint16(), "TCP/UDP destination port."),
    ("tcp_flags", pa.uint16(), "TCP flags, 9 bits (NS/AE CWR ECE URG ACK PSH RST SYN FIN)."),
    ("tcp_seq", pa.uint32(), "TCP sequence number (LOG: only with --log-tcp-sequence)."),
    ("tcp_ack", pa.uint32(), "TCP acknowledgement number."),
    ("tcp_window", pa.uint16(), "TCP window as sent (unscaled)."),
    ("icmp_type", pa.uint8(), "ICMP / ICMPv6 type."),
    ("icmp_code", pa.uint8(), "ICMP / ICMPv6 code."),
    ("icmp_id", pa.uint16(), "Echo request/reply identifier."),
    ("icmp_seq", pa.uint16(), "Echo request/reply sequence number."),
    ("inner_src", ADDR, "ICMP error: source address of the quoted packet (names the flow)."),
    ("inner_dst", ADDR, "ICMP error: destination address of the quoted packet."),
    ("inner_proto", pa.uint8(), "ICMP error: protocol of the quoted packet."),
    ("inner_sport", pa.uint16(), "ICMP error: source port of the quoted packet."),
    ("inner_dport", pa.uint16(), "ICMP error: destination port of the quoted packet."),
    ("arp_op", pa.uint16(), "ARP operation (1 request, 2 reply); null for other frames."),
    ("mark", pa.uint32(), "LOG MARK= (packet mark); null when not logged."),
    ("uid", pa.uint32(), "LOG UID= of the sending socket (--log-uid)."),
    ("gid", pa.uint32(), "LOG GID=."),
    (
        "uptime_ns",
        pa.int64(),
        "Raw dmesg time: nanoseconds since boot, kept to re-align; else null.",
    ),
]

EVENT_SCHEMA = pa.schema(
    [
        pa.field(name, typ, nullable=name not in ("ts", "source", "record"))
        for name, typ, _ in EVENT_FIELDS
    ],
    metadata={"nicpath.schema": "events/1"},
)
FIELD_DOCS = {name: doc for name, _, doc in EVENT_FIELDS}

IPV4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def addr_words(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_binary(16) column as an (n, 2) big-endian uint64 array (nulls as zeros)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)[arr.offset * 16 : (arr.offset + n) * 16]
    words = raw.reshape(n, 16).copy().view(">u8").astype(np.uint64)
    if arr.null_count:
        words[np.asarray(arr.is_null())] = 0
    return words


def words_to_bytes(hi: np.ndarray, lo: np.ndarray) -> list[bytes]:
    """The 16-byte addresses of ``addr_words`` rows (high and low words) back as bytes."""
    both = np.empty((len(hi), 2), dtype=">u8")
    both[:, 0] = hi
    both[:, 1] = lo
    return [bytes(row) for row in both.view(np.uint8).reshape(-1, 16)]


def addr_bytes(text: str) -> bytes:
    """16-byte column form of an address given as text (IPv4 becomes IPv4-mapped)."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return IPV4_MAPPED_PREFIX + ip.packed
    return ip.packed


def addr_text(value: bytes | None) -> str | None:
    """Text form of a 16-byte column address: dotted quad for IPv4-mapped, compressed IPv6."""
    if value is None:
        return None
    return _addr_text(value)


@functools.lru_cache(maxsize=65536)
def _addr_text(value: bytes) -> str:
    # A report names the host's few addresses again and again: format each once.
    if value[:12] == IPV4_MAPPED_PREFIX:
        return socket.inet_ntop(socket.AF_INET, value[12:])
    return str(ipaddress.IPv6Address(value))


def mac_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return ":".join(f"{b:02x}" for b in value)


def empty_events() -> pa.Table:
    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)


# The capture readers build their columns from numpy buffers with the helpers below rather than
# ``pa.array``: that call checks its input for pandas types and so imports pandas, a tenth of a
# short ``nicpath events`` run that never needs it.


def _numpy_dtype(typ: pa.DataType) -> np.dtype:
    if pa.types.is_timestamp(typ):
        return np.dtype(np.int64)
    if pa.types.is_integer(typ):
        return np.dtype(f"{'i' if pa.types.is_signed_integer(typ) else 'u'}{typ.bit_width // 8}")
    return np.dtype(typ.to_pandas_dtype())


def arrow_column(values: np.ndarray, typ: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """A numpy array as an Arrow column of ``typ`` (fixed width), null where ``valid`` is False."""
    n = values.shape[0]
    if pa.types.is_boolean(typ):
        data = np.packbits(values.astype(bool, copy=False), bitorder="little")
    else:
        data = np.ascontiguousarray(values, dtype=_numpy_dtype(typ))
    nulls = 0 if valid is None else n - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(typ, n, [bitmap, pa.py_buffer(data)], null_count=nulls)


def integers(column: pa.Array | pa.ChunkedArray, missing: int) -> np.ndarray:
    """An integer, timestamp or dictionary (its codes) column as int64 numbers, ``missing``
    where null."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.indices
    if column.null_count == len(column):  # may have no data buffer at all
        return np.full(len(column), missing, dtype=np.int64)
    values = np.frombuffer(column.buffers()[1], _numpy_dtype(column.type))
    values = values[column.offset : column.offset + len(column)].astype(np.int64)
    if column.null_count:
        values[~present(column)] = missing
    return values


def present(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per row of a column, whether it holds a value (its validity bitmap as booleans)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if not column.null_count:
        return np.ones(n, dtype=bool)
    if column.buffers()[0] is None:  # a null-type or all-null column without a bitmap
        return np.zeros(n, dtype=bool)
    bits = np.frombuffer(column.buffers()[0], np.uint8)
    return np.unpackbits(bits, bitorder="little")[column.offset : column.offset + n].view(bool)


def text_column(texts: list[str] | tuple[str, ...]) -> pa.Array:
    """A few strings (a dictionary's values) as an Arrow string column."""
    encoded = [t.encode() for t in texts]
    ends = np.cumsum([0, *map(len, encoded)], dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(ends), pa.py_buffer(b"".join(encoded))]
    )


def labels(
    codes: np.ndarray,
    names: pa.Array | list[str] | tuple[str, ...],
    valid: np.ndarray | None = None,
) -> pa.Array:
    """A ``DICT_STR`` column: per row, the position of its text in ``names`` (null where
    ``valid`` is False)."""
    if not isinstance(names, pa.Array):
        names = text_column(names)
    return pa.DictionaryArray.from_arrays(arrow_column(codes, pa.int32(), valid), names)


def conform(columns: dict[str, pa.Array | list | None], length: int) -> pa.Table:
    """Build an event table from the columns a source has; every other column is null.

    Sources give plain arrays; this casts them to the schema's types (dictionary encoding for
    strings included) so that tables from every format concatenate.
    """
    arrays = []
    for field in EVENT_SCHEMA:
        value = columns.get(field.name)
        if value is None:
            arrays.append(pa.nulls(length, type=field.type))
            continue
        if not isinstance(value, pa.Array | pa.ChunkedArray):
            value = pa.array(value)
        if value.type != field.type:
            if pa.types.is_dictionary(field.type) and not pa.types.is_dictionary(value.type):
                value = value.cast(pa.string()).dictionary_encode()
                if value.type != field.type:
                    value = value.cast(field.type)
            else:
                value = value.cast(field.type)
        arrays.append(value)
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)
