"""Traffic through a fault: a bounded probe loop, one capture of the whole window, each request judged.

    with Traffic(mesh, faults, {"sidecar": handle}, out_dir, max_seconds=6) as traffic:
        traffic.mark("before")
        ...
        with traffic.fault("server sidecar killed"), faults.sidecar_killed(handle, "server"):
            traffic.mark("down")
            ...
        traffic.mark("after")
    traffic.requests  # one Request per probe, with the wire verdict of its own TCP flows

The loop sends probes (each with a fresh canary) from every client handle until the block ends, `max_probes`
were sent or `max_seconds` passed, whichever comes first. Each handle's pod-to-pod link is captured for the
whole window; afterwards every TCP flow to the server is classified by probes.verdict and given to the
request that was in flight when the flow opened, and every canary is searched for in every flow's cleartext.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from scapy.utils import RawPcapReader

from probes.canary import PREFIX as CANARY_PREFIX
from probes.flows import TCP_SYN, read_flows, tcp_of_frame
from probes.verdict import summarize_flow  # per flow: a window pcap holds many probes

RANK = {"none": 0, "unproven": 1, "mtls": 2, "app-tls": 3, "plaintext": 4}
SUCCESS = ("mtls", "plaintext")  # outcomes where the app answered 200


@dataclass
class Request:
    index: int
    client: str  # the name of the client handle it came from
    started: float  # epoch seconds (the capture's clock)
    ended: float
    outcome: str  # a meshproof.vocabulary Outcome, or "error"
    http_status: int | None
    curl_exit: int
    canary: str
    failure_detail: str | None = None
    phase: str | None = None  # the phase it started and ended in; None when it spans a phase change
    phase_at_start: str = ""
    wire: str = "none"  # worst verdict of its own flows on the wire
    flows: int = 0
    wire_reason: str = ""  # why its worst flow got its verdict (probes.verdict)
    canary_in_clear: bool = False  # its canary is readable somewhere in the window's capture
    leak: bool = False  # set by the checks: readable where policy says mTLS

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultWindow:
    name: str
    started: float
    ended: float | None = None


@dataclass
class Traffic:
    mesh: Any
    faults: Any
    handles: dict[str, Any]  # client name -> deployed scenario handle
    out_dir: Path
    max_probes: int = 600
    max_seconds: float = 20.0
    gap_s: float = 0.01  # pause between two probes of one worker
    requests: list[Request] = field(default_factory=list)
    phases: list[tuple[float, str]] = field(default_factory=list)
    windows: list[FaultWindow] = field(default_factory=list)
    pcaps: dict[str, Path] = field(default_factory=dict)
    orphan_flows: list[dict] = field(default_factory=list)  # flows no request was in flight for

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stack = ExitStack()
        self.started = 0.0

    # --- the window ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name, handle in self.handles.items():
                self.pcaps[name] = self.out_dir / f"{name}.pcap"
                self._stack.enter_context(self.faults.capture(handle, self.pcaps[name]))
        except BaseException:
            self._stack.close()
            raise
        self.started = time.time()
        self.mark("start")
        for name, handle in self.handles.items():
            # One probe at a time per client: each flow on the wire then belongs to exactly one request.
            thread = threading.Thread(target=self._loop, args=(name, handle), name=f"traffic {name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self.mark("end")
        for window in self.windows:
            window.ended = window.ended or self.phases[-1][0]
        self._stack.close()  # stops the captures, writes the pcaps
        if exc_type is None:
            self._judge()

    def mark(self, phase: str) -> float:
        """From now on requests belong to `phase`; returns the time of the change."""
        now = time.time()
        with self._lock:
            self.phases.append((now, phase))
        return now

    @contextmanager
    def fault(self, name: str, during: str, after: str):
        """Shade the block's time on the timeline as a fault window: phase `during` starts as the block is
        entered (before the fault is injected), phase `after` once it is left (after the fault healed)."""
        self.mark(during)
        window = FaultWindow(name, time.time())
        self.windows.append(window)
        try:
            yield window
        finally:
            window.ended = time.time()
            self.mark(after)

    def wait(self, seconds: float) -> None:
        """Let traffic run; ends early when the loop's bound is reached."""
        self._stop.wait(seconds)

    def wait_for(self, predicate, timeout: float) -> bool:
        """Let traffic run until predicate(requests so far) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            with self._lock:
                done = predicate(list(self.requests))
            if done:
                return True
            time.sleep(0.01)
        return False

    # --- the loop -----------------------------------------------------------------------------------

    def _loop(self, name: str, handle: Any) -> None:
        while not self._stop.is_set():
            with self._lock:
                if len(self.requests) >= self.max_probes or time.time() - self.started >= self.max_seconds:
                    self._stop.set()
                    return
                phase = self.phases[-1][1]
            started = time.time()
            try:
                result = self.mesh.probe(handle, capture=False)  # the window's own capture proves the wire
                request = Request(index=0, client=name, started=started, ended=time.time(), outcome=result.outcome,
                                  http_status=result.http_status, curl_exit=result.curl_exit, canary=result.canary,
                                  failure_detail=result.failure_detail, phase_at_start=phase)
            except Exception as err:  # noqa: BLE001 - a probe that broke is recorded (a harness error), not lost
                request = Request(index=0, client=name, started=started, ended=time.time(), outcome="error",
                                  http_status=None, curl_exit=-1, canary="", phase_at_start=phase,
                                  failure_detail=f"the probe itself failed: {type(err).__name__}: {err}")
            with self._lock:
                request.index = len(self.requests)
                self.requests.append(request)
            self._stop.wait(self.gap_s)

    # --- the wire -----------------------------------------------------------------------------------

    def _judge(self) -> None:
        self.requests.sort(key=lambda r: r.started)
        for i, request in enumerate(self.requests):
            request.index = i
            request.phase = self._phase_of(request)
        for name, handle in self.handles.items():
            server = self.faults.server_address(handle)
            mine = [r for r in self.requests if r.client == name]
            _, flows = read_flows(self.pcaps[name])
            canaries = {r.canary.encode(): r for r in mine if r.canary}
            for flow in flows:
                runs = flow.to_server.runs + flow.to_client.runs
                for marker, request in canaries.items():
                    if any(marker in run for run in runs):
                        request.canary_in_clear = True
                if flow.server != server:
                    continue
                summary = summarize_flow(flow, CANARY_PREFIX)
                opened, closed = flow.first_time, flow.last_time
                # Curl starts a few ms before its flow opens; a flow overlapping two probes goes to the one
                # that has none yet.
                in_flight = [r for r in mine if r.started - 0.005 <= closed and opened <= r.ended + 0.005]
                owner = next((r for r in in_flight if not r.flows), in_flight[-1] if in_flight else None)
                if owner is None:
                    self.orphan_flows.append({"client": name, "opened": opened, "verdict": summary["verdict"],
                                              "canary_in_clear": summary["canary_in_clear"]})
                    continue
                owner.flows += 1
                if RANK[summary["verdict"]] > RANK[owner.wire]:
                    owner.wire, owner.wire_reason = summary["verdict"], summary["reason"]
        for request in self.requests:
            _settle(request)

    def _phase_of(self, request: Request) -> str | None:
        at_start = at_end = None
        for when, phase in self.phases:
            if when <= request.started:
                at_start = phase
            if when <= request.ended:
                at_end = phase
        changes = [when for when, _ in self.phases if request.started < when < request.ended]
        return at_start if at_start == at_end and not changes else None

    def of(self, client: str | None = None, phase: str | None = None) -> list[Request]:
        return [r for r in self.requests if (client is None or r.client == client)
                and (phase is None or r.phase == phase)]

    def phase_start(self, phase: str) -> float:
        return next(when for when, name in self.phases if name == phase)


def _settle(request: Request) -> None:
    """The outcome as the wire proves it: an answer cut off mid-body (curl exit != 0) is a reset, and a 200
    is mTLS or plaintext by its flows, not by whether the app echoed an identity. A 200 the capture holds no
    mTLS or plaintext flow for is a harness error in every phase: nothing shows how it crossed the wire."""
    if request.http_status != 200 or request.outcome == "error":
        return
    if request.curl_exit != 0:
        request.outcome = "reset"
    elif request.wire in SUCCESS:
        request.outcome = request.wire
    else:
        request.failure_detail = (f"answered 200 ({request.outcome} by the app's echo) but the capture holds no "
                                  f"mTLS or plaintext flow for it (wire {request.wire}, {request.flows} flows"
                                  + (f": {request.wire_reason})" if request.wire_reason else ")"))
        request.outcome = "error"


def _tcp_frames(pcap: Path):
    """(time, source IP, destination IP, TCP header and payload) of each TCP frame of a pcap with a whole header."""
    with RawPcapReader(str(pcap)) as reader:
        for frame, meta in reader:
            parsed = tcp_of_frame(frame, reader.linktype)
            if parsed is not None and len(parsed[2]) >= 20:
                yield (meta.sec + meta.usec / 1e6, *parsed)


def retransmissions(pcap: Path, start: float, end: float) -> int:
    """Segments (a SYN or payload) sent again between `start` and `end`: the same endpoints, sequence number
    and length as an earlier frame. On a veth nothing is lost by itself, so these show packets were dropped."""
    seen: set[tuple] = set()
    again = 0
    for when, src_ip, dst_ip, tcp in _tcp_frames(pcap):
        flags, length = tcp[13], len(tcp) - (tcp[12] >> 4) * 4
        if not (flags & TCP_SYN or length > 0):
            continue
        key = (src_ip, dst_ip, tcp[0:4], tcp[4:8], length, flags & TCP_SYN)
        if key in seen and start <= when <= end:
            again += 1
        seen.add(key)
    return again
