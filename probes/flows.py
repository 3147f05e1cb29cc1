"""TCP flows of a pcap, each direction reassembled by sequence number.

Frames are cut by hand (Ethernet / Linux cooked / raw IP, then IPv4 or IPv6, then TCP): it is exact about
padding and about GSO super-frames larger than the MTU, which veth hands to the sniffer, and it costs a few
microseconds a frame. Retransmitted and overlapping segments are merged (the first copy of a byte wins and
a differing copy is counted); out-of-order segments are put back in place; a hole ends a contiguous run.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader

from probes.errors import CaptureError

Endpoint = tuple[str, int]

_ETHERTYPE_IPV4, _ETHERTYPE_IPV6, _ETHERTYPE_VLAN = 0x0800, 0x86DD, {0x8100, 0x88A8}
_DLT_EN10MB, _DLT_RAW, _DLT_LINUX_SLL, _DLT_LINUX_SLL2 = 1, {12, 101}, 113, 276
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


@dataclass
class Direction:
    """The bytes one endpoint sent, in sequence order."""

    src: Endpoint
    dst: Endpoint
    frames: int = 0
    syn: bool = False
    fin: bool = False
    rst: bool = False
    runs: list[bytes] = field(default_factory=list)  # contiguous byte runs; more than one means a hole
    conflicting_bytes: int = 0  # retransmitted bytes that differed from the first copy
    missed_start: bool = False  # the SYN was seen but the first payload bytes were not
    opened: bool = False  # sent a SYN without ACK: this side is the client
    _isn: int | None = None
    _segments: list[tuple[int, int, bytes]] = field(default_factory=list)  # (seq, frame index, payload)

    @property
    def data(self) -> bytes:
        """The stream from its first byte up to the first hole (empty if the capture missed its start)."""
        return self.runs[0] if self.runs and not self.missed_start else b""

    @property
    def start_seen(self) -> bool:
        """The capture holds this direction's first payload byte (its SYN was seen and nothing before is missing)."""
        return self._isn is not None and not self.missed_start

    @property
    def payload_bytes(self) -> int:
        return sum(len(run) for run in self.runs)

    @property
    def holes(self) -> int:
        return max(0, len(self.runs) - 1) + int(self.missed_start)

    def _reassemble(self) -> None:
        if not self._segments:
            return
        # Sequence numbers wrap at 2**32: place each segment relative to the stream start (ISN + 1), or,
        # when the SYN was not captured, relative to the first segment captured.
        base = (self._isn + 1) if self._isn is not None else self._segments[0][0]
        placed = sorted((((seq - base + 2**31) % 2**32) - 2**31, index, data)
                        for seq, index, data in self._segments)
        runs: list[tuple[int, bytearray]] = []
        end = 0
        for offset, _, data in placed:
            if not runs or offset > end:
                runs.append((offset, bytearray(data)))
                end = offset + len(data)
                continue
            run = runs[-1][1]
            overlap = end - offset
            seen = run[len(run) - overlap:len(run) - overlap + len(data)]
            if seen != data[:len(seen)]:
                self.conflicting_bytes += sum(a != b for a, b in zip(seen, data, strict=False))
            if offset + len(data) > end:
                run += data[overlap:]
                end = offset + len(data)
        self.missed_start = self._isn is not None and runs[0][0] > 0
        self.runs = [bytes(run) for _, run in runs]


@dataclass
class Flow:
    """One TCP connection. `client` is the endpoint that sent the SYN (or the guess described in read)."""

    client: Endpoint
    server: Endpoint
    to_server: Direction
    to_client: Direction
    first_frame: int
    syn_seen: bool
    first_time: float = 0.0  # capture time of its first and last frame
    last_time: float = 0.0

    @property
    def closed(self) -> bool:
        return self.to_server.rst or self.to_client.rst or (self.to_server.fin and self.to_client.fin)


def tcp_of_frame(frame: bytes, linktype: int) -> tuple[str, str, bytes] | None:
    """(src ip, dst ip, tcp segment) of one frame, or None when it is not TCP over IP."""
    if linktype == _DLT_EN10MB:
        offset, ethertype = 14, struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
        while ethertype in _ETHERTYPE_VLAN and len(frame) >= offset + 4:
            ethertype, offset = struct.unpack_from("!H", frame, offset + 2)[0], offset + 4
    elif linktype == _DLT_LINUX_SLL:
        offset, ethertype = 16, struct.unpack_from("!H", frame, 14)[0] if len(frame) >= 16 else 0
    elif linktype == _DLT_LINUX_SLL2:
        offset, ethertype = 20, struct.unpack_from("!H", frame, 0)[0] if len(frame) >= 20 else 0
    elif linktype in _DLT_RAW:
        offset = 0
        ethertype = _ETHERTYPE_IPV6 if frame[:1] and frame[0] >> 4 == 6 else _ETHERTYPE_IPV4
    else:
        raise CaptureError(f"pcap link type {linktype} is not supported (Ethernet, Linux cooked, raw IP are)")
    ip = frame[offset:]
    if ethertype == _ETHERTYPE_IPV4 and len(ip) >= 20 and ip[9] == 6:
        header, total = (ip[0] & 0x0F) * 4, struct.unpack_from("!H", ip, 2)[0]
        # A GSO/GRO super-frame can carry a total length of 0 (or a truncated one): trust the frame then.
        end = total if header <= total <= len(ip) and total != 0 else len(ip)
        return _ipv4(ip[12:16]), _ipv4(ip[16:20]), ip[header:end]
    if ethertype == _ETHERTYPE_IPV6 and len(ip) >= 40 and ip[6] == 6:
        length = struct.unpack_from("!H", ip, 4)[0]
        end = 40 + length if 0 < length <= len(ip) - 40 else len(ip)
        return _ipv6(ip[8:24]), _ipv6(ip[24:40]), ip[40:end]
    return None


def _ipv4(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _ipv6(raw: bytes) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(raw))


def read_flows(pcap: Path) -> tuple[int, list[Flow]]:
    """(frames in the pcap, its TCP flows in order of first appearance).

    The client of a flow is the sender of the SYN. A flow whose start the capture missed has no SYN; then
    the sender of the first payload is taken as the client (HTTP and TLS both speak first from the client).
    A SYN with a new initial sequence number on endpoints seen before opens a new flow: a port freed by a
    reset is reused within seconds, and the two connections must not be read as one stream with holes.
    A pcap that is missing or not a pcap raises CaptureError naming the file.
    """
    try:
        reader = RawPcapReader(str(pcap))
    except FileNotFoundError:
        raise CaptureError(f"{pcap}: no such pcap file") from None
    except (Scapy_Exception, OSError, EOFError) as err:
        raise CaptureError(f"{pcap}: not a readable pcap file: {err}") from None
    directions: dict[tuple[Endpoint, Endpoint, int], Direction] = {}
    first_frame: dict[tuple[frozenset, int], int] = {}
    times: dict[tuple[frozenset, int], tuple[float, float]] = {}
    first_payload: dict[tuple[frozenset, int], Endpoint] = {}
    opening: dict[frozenset, tuple[int, int | None]] = {}  # endpoints -> (their current flow, its SYN's ISN)
    frames = 0
    with reader:
        linktype = reader.linktype
        for frames, (frame, meta) in enumerate(reader, start=1):
            parsed = tcp_of_frame(frame, linktype)
            if parsed is None or len(parsed[2]) < 20:
                continue
            src_ip, dst_ip, tcp = parsed
            sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
            header, flags = (tcp[12] >> 4) * 4, tcp[13]
            src, dst = (src_ip, sport), (dst_ip, dport)
            endpoints = frozenset((src, dst))
            number, isn = opening.get(endpoints, (0, None))
            if flags & TCP_SYN and not flags & TCP_ACK and isn != seq:
                # A new connection on these endpoints, unless it is the first frame seen on them.
                number += (endpoints, number) in first_frame
                opening[endpoints] = (number, seq)
            else:
                opening.setdefault(endpoints, (number, isn))
            key = (endpoints, number)
            first_frame.setdefault(key, frames)
            when = meta.sec + meta.usec / 1e6
            times[key] = (times.get(key, (when, when))[0], when)
            direction = directions.setdefault((src, dst, number), Direction(src, dst))
            direction.frames += 1
            if flags & TCP_SYN:
                direction.syn, direction._isn = True, seq
                direction.opened |= not flags & TCP_ACK
            direction.fin |= bool(flags & TCP_FIN)
            direction.rst |= bool(flags & TCP_RST)
            payload = tcp[header:]
            if payload and not flags & TCP_RST:
                first_payload.setdefault(key, src)
                direction._segments.append((seq, frames, payload))
    flows = []
    for key, index in sorted(first_frame.items(), key=lambda item: item[1]):
        endpoints, number = key
        a, b = sorted(endpoints) if len(endpoints) == 2 else (next(iter(endpoints)),) * 2
        da = directions.get((a, b, number)) or Direction(a, b)
        db = directions.get((b, a, number)) or Direction(b, a)
        syn_seen = da.syn or db.syn
        if da.opened or db.opened:
            a_is_client = da.opened
        elif syn_seen:  # only the SYN-ACK was captured
            a_is_client = not da.syn
        else:
            a_is_client = first_payload.get(key, a) == a
        to_server, to_client = (da, db) if a_is_client else (db, da)
        for direction in (to_server, to_client):
            direction._reassemble()
        flows.append(Flow(to_server.src, to_server.dst, to_server, to_client, index, syn_seen, *times[key]))
    return frames, flows
