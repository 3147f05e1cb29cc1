"""The capture's heartbeat: one frame sent from the client pod's link to the server pod, after the probe, that
the capture must see. It proves the sniffer was on the path from this client to this server and working; so
when the probe's own flow is missing, nothing of the probe reached the server's link (a client sidecar that
answered or waited by itself), instead of "the capture missed it" (probes/verdict.py judge).

The frame is a lone TCP RST from the client's address to the server's HEARTBEAT_PORT, written to the client
pod's eth0 with a packet socket: it bypasses the pod's iptables (no sidecar sees it), the bridge delivers it to
the server's MAC only, and the server's kernel drops an RST that belongs to no connection.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from probes.netns import entered

HEARTBEAT_PORTS = (9, 19)  # discard / chargen: the first that is not the probe's own port
HEARTBEAT_SOURCE_PORT = 9
_TCP_RST = 0x04


def heartbeat_port(server_port: int | None) -> int:
    return next(p for p in HEARTBEAT_PORTS if p != server_port)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, dst_port: int) -> bytes:
    """Ethernet / IPv4 / TCP RST, checksums included."""
    src, dst = ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed
    tcp = struct.pack("!HHIIBBHHH", HEARTBEAT_SOURCE_PORT, dst_port, 0, 0, 5 << 4, _TCP_RST, 0, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", _checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00" + ip + tcp


def send(netns: str, iface: str, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, dst_port: int) -> None:
    """Write the heartbeat frame to `iface` inside network namespace `netns`."""
    with entered(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with sock:
        sock.bind((iface, 0))
        sock.send(frame(src_mac, dst_mac, src_ip, dst_ip, dst_port))
