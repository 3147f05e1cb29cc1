"""Packet capture around one probe: a live sniffer on an interface, written to a pcap when the flow settles.

    with Capture("pm-srv-h", "tcp port 8000", Path("probe.pcap")) as cap:
        ...send the probe...
    cap.packets  # frames written to probe.pcap

scapy is imported once, with this module; a long-lived process pays its import cost (about 0.5 s) once.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Self

from scapy.arch.common import compile_filter, free_filter
from scapy.arch.linux import L2ListenSocket
from scapy.config import conf
from scapy.data import DLT_EN10MB, ETH_P_ALL, SO_ATTACH_FILTER
from scapy.error import Scapy_Exception
from scapy.libs.structures import sock_fprog
from scapy.sendrecv import AsyncSniffer
from scapy.utils import RawPcapWriter

from probes import netns as netns_mod
from probes.errors import CaptureError
from probes.flows import TCP_FIN, TCP_RST, tcp_of_frame

SETTLE_QUIET_S = 0.030  # silence that ends a capture whose flows did not all close (pooled connections)
CLOSED_GRACE_S = 0.001  # after every flow saw FIN both ways or RST: room for the last ACK
MAX_SETTLE_S = 0.5  # a flow that keeps talking after the probe returned does not hold the capture forever
# Frames still queued for a sniffer thread that lags (a long window on a loaded machine) were on the wire
# before the capture stopped: they are read first, for at most this long.
MAX_DRAIN_S = 15.0
START_TIMEOUT_S = 2.0
RECEIVE_BUFFER = 4 << 20  # bytes of frames the kernel queues for the sniffer thread before it drops
_SOL_PACKET, _PACKET_AUXDATA, _PACKET_STATISTICS, _SO_TIMESTAMPNS = 263, 8, 6, 35


class _ListenSocket(L2ListenSocket):
    """scapy's L2ListenSocket, opened without its per-socket cost: scapy creates the packet socket with
    ETH_P_ALL and then binds it, and that re-bind waits for an RCU grace period (8-25 ms here). A socket
    created with protocol 0 registers with the kernel only once, at bind, and never sees unfiltered frames."""

    def __init__(self, iface: str, bpf: str):  # replaces the parent's __init__ on purpose
        self.iface, self.type, self.promisc = iface, ETH_P_ALL, False
        self.outs = None
        self.ins = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            program = compile_filter(bpf, linktype=DLT_EN10MB)
            try:
                fprog = sock_fprog(program.bf_len, program.bf_insns)
                self.ins.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            finally:
                free_filter(program)
            self.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self.ins.bind((iface, ETH_P_ALL))
            self.ins.setsockopt(_SOL_PACKET, _PACKET_AUXDATA, 1)  # VLAN tags, as scapy's reader expects
            self.ins.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)  # kernel receive time per frame
        except BaseException:
            self.ins.close()
            raise
        self.auxdata_available = True
        # Frames stay raw bytes: dissecting each one in the sniffer thread would compete with the probe for
        # the GIL; the verdict parses the pcap afterwards anyway.
        self.LL, self.lvl = conf.raw_layer, 2

    def dropped(self) -> int:
        """Frames the kernel dropped because the receive queue was full (since the last call)."""
        _, drops = struct.unpack("II", self.ins.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
        return drops


class Capture:
    """Sniff `bpf` on `iface` (inside `ip netns` namespace `netns`, or in this process's namespace) while the
    block runs; on exit wait until the flows settled, then write every frame to `pcap_path`.

    Settled means: every TCP flow seen has closed (FIN both ways, or RST), or nothing arrived for
    SETTLE_QUIET_S, whichever comes first, and never longer than MAX_SETTLE_S.
    """

    def __init__(self, iface: str, bpf: str, pcap_path: Path, netns: str | None = None):
        self.iface, self.bpf, self.pcap_path, self.netns = iface, bpf, Path(pcap_path), netns
        self.packets = 0
        self.dropped = 0  # frames the kernel could not queue for the sniffer: the pcap is then incomplete
        self.timings_ms: dict[str, float] = {}
        self.settled_by = ""  # after exit: "closed", "quiet" or "limit" (MAX_SETTLE_S ran out)
        self._flows: dict[tuple, dict] = {}
        self._last_frame = 0.0
        self._last_wire_time = 0.0  # the kernel's receive time of the last frame the sniffer read
        self._socket: _ListenSocket | None = None
        self._sniffer: AsyncSniffer | None = None

    def _where(self) -> str:
        return f"interface {self.iface!r}" + (f" in network namespace {self.netns!r}" if self.netns else "")

    def __enter__(self) -> Self:
        started = time.perf_counter()
        if not isinstance(self.iface, str) or not self.iface:
            # An empty name would bind the sniffer to every interface of the namespace.
            raise CaptureError(f"capture interface must be an interface name, not {self.iface!r}")
        if not self.pcap_path.parent.is_dir():
            raise CaptureError(f"{self.pcap_path}: the directory for the pcap does not exist")
        try:
            with netns_mod.entered(self.netns):
                self._socket = _ListenSocket(self.iface, self.bpf)
        except ValueError as err:  # unknown namespace
            raise CaptureError(f"cannot capture on {self._where()}: {err}") from None
        except Scapy_Exception as err:
            raise CaptureError(f"capture filter {self.bpf!r} is not valid BPF: {err}") from None
        except OSError as err:
            raise CaptureError(f"cannot capture on {self._where()}: {err.strerror or err}") from None
        ready = threading.Event()
        self._sniffer = AsyncSniffer(opened_socket=self._socket, prn=self._track, store=True,
                                     started_callback=ready.set)
        self._sniffer.start()
        if not ready.wait(START_TIMEOUT_S):
            self._stop()
            raise CaptureError(f"the sniffer on {self._where()} did not start within {START_TIMEOUT_S} s")
        self._last_frame = time.monotonic()
        self.timings_ms["start"] = (time.perf_counter() - started) * 1e3
        return self

    def _track(self, frame) -> None:
        """Runs in the sniffer thread for each frame: remember when it came and how its TCP flow stands."""
        self._last_frame, self._last_wire_time = time.monotonic(), float(frame.time)
        parsed = tcp_of_frame(bytes(frame), DLT_EN10MB)
        if parsed is None or len(parsed[2]) < 14:
            return
        src_ip, dst_ip, tcp = parsed
        src, dst = (src_ip, int.from_bytes(tcp[0:2], "big")), (dst_ip, int.from_bytes(tcp[2:4], "big"))
        state = self._flows.setdefault((min(src, dst), max(src, dst)), {"fin": set(), "rst": False})
        if tcp[13] & TCP_RST:
            state["rst"] = True
        if tcp[13] & TCP_FIN:
            state["fin"].add(src)

    def wait_seen(self, a: tuple[str, int], b: tuple[str, int], timeout: float = START_TIMEOUT_S) -> bool:
        """Until a frame between endpoints `a` and `b` has reached the sniffer (a frame sent just now may still
        be on its way when the flows already look settled); False after `timeout`."""
        key = (min(a, b), max(a, b))
        deadline = time.monotonic() + timeout
        while key not in self._flows:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def _settled(self) -> str | None:
        """Why the capture may stop now: "closed" (every flow ended), "quiet" (silence), or None."""
        if self._frames_queued():
            return None
        quiet = time.monotonic() - self._last_frame
        flows = list(self._flows.values())
        if flows and all(f["rst"] or len(f["fin"]) == 2 for f in flows):
            return "closed" if quiet >= CLOSED_GRACE_S else None
        return "quiet" if quiet >= SETTLE_QUIET_S else None

    def __exit__(self, exc_type, exc, tb) -> None:
        began = time.perf_counter()
        deadline = time.monotonic() + MAX_SETTLE_S
        while not (settled_by := self._settled()) and time.monotonic() < deadline:
            time.sleep(0.001)
        self.settled_by = settled_by or "limit"
        drained = self._drain()
        self.timings_ms["settle"] = (time.perf_counter() - began) * 1e3
        frames = self._stop()
        began = time.perf_counter()
        self._write(frames)
        self.timings_ms["write"] = (time.perf_counter() - began) * 1e3
        self.packets = len(frames)
        failure = self._sniffer.exception if self._sniffer else None
        if exc_type is None and failure is not None:
            raise CaptureError(f"the sniffer on {self._where()} failed: {failure}")
        if exc_type is None and not drained:
            raise CaptureError(f"{self.pcap_path}: the sniffer on {self._where()} still had frames queued after "
                               f"{MAX_DRAIN_S} s; the capture is incomplete")
        if exc_type is None and self.dropped:
            raise CaptureError(f"{self.pcap_path}: the kernel dropped {self.dropped} frames on {self._where()} "
                               f"(receive queue of {RECEIVE_BUFFER} bytes full); the capture is incomplete")

    def _frames_queued(self) -> bool:
        """Whether the kernel holds frames the sniffer thread has not read yet."""
        assert self._socket is not None
        return bool(select.select([self._socket.ins], [], [], 0)[0])

    def _drain(self) -> bool:
        """Until the sniffer thread has read every frame the kernel queued for it before now (a flow that keeps
        talking queues more); False after MAX_DRAIN_S. Stopping earlier would silently lose the last frames."""
        now, deadline = time.time(), time.monotonic() + MAX_DRAIN_S
        while self._last_wire_time < now and self._frames_queued():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _stop(self) -> list:
        frames = []
        if self._sniffer is not None and self._sniffer.running:
            frames = list(self._sniffer.stop() or [])
        if self._socket is not None:
            self.dropped = self._socket.dropped()
            # Closing a packet socket waits for an RCU grace period (8-25 ms); nobody needs to wait for it.
            threading.Thread(target=self._socket.close, name="capture-close", daemon=True).start()
        return frames

    def _write(self, frames: list) -> None:
        """Write the pcap under a temporary name and rename it, so a pcap_path is always a whole file."""
        partial = self.pcap_path.with_name(self.pcap_path.name + ".partial")
        try:
            with RawPcapWriter(str(partial), linktype=DLT_EN10MB, sync=False) as writer:
                writer.write_header(None)
                for frame in frames:
                    seconds, fraction = divmod(float(frame.time), 1)
                    writer.write_packet(bytes(frame), sec=int(seconds), usec=round(fraction * 1e6))
            os.replace(partial, self.pcap_path)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise CaptureError(f"{self.pcap_path}: cannot write the pcap: {err.strerror or err}") from None
