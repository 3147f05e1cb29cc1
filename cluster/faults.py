"""Fault injection for the chaos suites, the same for every mesh target.

A backend's `faults()` returns a `Faults`. Its primitives break one thing (kill a sidecar, stop the control
plane, swap a certificate, impair the network between the pods) and `heal`/`restart_sidecar`/... undo it.
Suites never call the primitives bare: they use the context managers at the bottom (`sidecar_killed`,
`partitioned`, ...), which heal on the way out whatever happens, and also from a watchdog timer when the
window outlives its bound (a hung scenario cannot leave a pod partitioned).

A kube implementation would need: `kubectl exec` into istio-proxy (kill -9 of the envoy PID; pilot-agent
restarts it), istiod scaled to 0 and back, certificates through a custom CA plugged into istiod (or
istio-proxy's file-mounted certs), and a privileged capture/impairment pod with NET_ADMIN in the target
pod's network namespace for tbf, iptables `statistic` and DROP rules; `capture` through the capture pod
cluster/kube/capture.py already runs, `serving_certificates` from istio-proxy's admin /certs.
"""

from __future__ import annotations

import signal as signals
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

ROLES = ("client", "server")
DEFAULT_BOUND_S = 30.0  # no fault window of a suite lasts longer; the watchdog heals after this


class FaultError(RuntimeError):
    """A fault could not be injected or healed; the message names the pod and the command."""


class FaultUnavailable(NotImplementedError):
    """This mesh target cannot inject the fault at all (raised before anything was changed); the message
    says what is missing. The chaos suites skip on this alone: any other error is a failure."""


class Faults(ABC):
    """Primitives a mesh target implements, plus bounded windows built on them."""

    backend_name = "abstract"
    # While the control plane is away, does the mesh refuse Istio objects (ApplyRefused), as Istio's validating
    # webhook does once istiod has been ready (failurePolicy Fail)? False where the run opens the webhook for the
    # window: a change is then accepted and reaches the sidecars once the control plane is back.
    refuses_applies_while_away = True

    # --- primitives ---------------------------------------------------------------------------------

    @abstractmethod
    def kill_sidecar(self, handle: Any, role: str, signal: int = signals.SIGKILL) -> None:
        """Send `signal` to the sidecar proxy of the client or server pod and wait until it is gone."""

    @abstractmethod
    def restart_sidecar(self, handle: Any, role: str) -> None:
        """Start the sidecar again with its current config; returns once it is ready."""

    @abstractmethod
    def stop_control_plane(self) -> None:
        """From now on no config change reaches any sidecar; what they serve stays as it is."""

    @abstractmethod
    def start_control_plane(self) -> None:
        """Deliver every change made while the control plane was away; returns once the sidecars have it."""

    @abstractmethod
    def rotate_certificates(self, handle: Any) -> None:
        """Give both workloads fresh certificates from the mesh CA, without restarting anything."""

    @abstractmethod
    def serving_certificates(self, handle: Any) -> dict[str, frozenset[str]]:
        """{role: serial numbers of the workload certificates its sidecar serves now} (sidecars only)."""

    @abstractmethod
    def expire_certificate(self, handle: Any, role: str, lifetime_s: float) -> float:
        """Give one workload a mesh certificate that expires after `lifetime_s`; returns its expiry (epoch s)."""

    @abstractmethod
    def rogue_certificate(self, handle: Any, role: str) -> None:
        """Give one workload a certificate with its own SPIFFE ID, signed by a CA the mesh does not trust."""

    @abstractmethod
    def limit_bandwidth(self, handle: Any, rate: str) -> None:
        """Limit both pods' egress to `rate` (tc syntax, e.g. "1mbit") with a token bucket."""

    @abstractmethod
    def drop_packets(self, handle: Any, probability: float) -> None:
        """Drop each packet arriving at the server pod with `probability` (0 < p < 1)."""

    @abstractmethod
    def delay_packets(self, handle: Any, ms: int) -> None:
        """Hold every request at the server side for `ms` milliseconds before it is answered."""

    @abstractmethod
    def partition(self, handle: Any) -> None:
        """Drop every packet between the client and the server pod, both ways."""

    @abstractmethod
    def heal(self, handle: Any) -> None:
        """Remove every network impairment of this handle (bandwidth, loss, delay, partition). Idempotent."""

    @abstractmethod
    def capture(self, handle: Any, pcap: Path) -> AbstractContextManager:
        """Capture the pod-to-pod traffic of `handle` into `pcap` while the block runs."""

    @abstractmethod
    def server_address(self, handle: Any) -> tuple[str, int]:
        """(ip, port) the client's traffic reaches the server pod at on the wire."""

    # --- bounded windows ----------------------------------------------------------------------------

    @contextmanager
    def window(self, name: str, inject: Callable[[], Any], heal: Callable[[], Any],
               bound_s: float = DEFAULT_BOUND_S) -> Iterator[Any]:
        """Inject, run the block, heal. The heal runs exactly once: on exit (also on an exception) or
        from the watchdog after `bound_s`, whichever comes first. A failed injection is healed too."""
        lock = threading.Lock()
        healed: list[BaseException | None] = []

        def heal_once() -> None:
            with lock:
                if healed:
                    return
                try:
                    heal()
                    healed.append(None)
                except Exception as err:  # noqa: BLE001 - reported on exit, not lost in the timer thread
                    healed.append(err)

        watchdog = threading.Timer(bound_s, heal_once)
        watchdog.daemon = True
        watchdog.name = f"heal {name}"
        try:
            result = inject()
            watchdog.start()
            yield result
        finally:
            watchdog.cancel()
            heal_once()
            if healed[0] is not None:
                raise FaultError(f"healing {name} failed: {healed[0]}") from healed[0]

    def sidecar_killed(self, handle: Any, role: str, signal: int = signals.SIGKILL,
                       bound_s: float = DEFAULT_BOUND_S):
        check_role(role)
        return self.window(f"{role} sidecar kill", lambda: self.kill_sidecar(handle, role, signal),
                           lambda: self.restart_sidecar(handle, role), bound_s)

    def control_plane_away(self, bound_s: float = DEFAULT_BOUND_S):
        return self.window("control plane stop", self.stop_control_plane, self.start_control_plane, bound_s)

    def certificate_expiring(self, handle: Any, role: str, lifetime_s: float, bound_s: float = DEFAULT_BOUND_S):
        check_role(role)
        return self.window(f"{role} certificate expiry", lambda: self.expire_certificate(handle, role, lifetime_s),
                           lambda: self.rotate_certificates(handle), bound_s)

    def rogue_peer(self, handle: Any, role: str, bound_s: float = DEFAULT_BOUND_S):
        check_role(role)
        return self.window(f"{role} rogue certificate", lambda: self.rogue_certificate(handle, role),
                           lambda: self.rotate_certificates(handle), bound_s)

    def bandwidth_limited(self, handle: Any, rate: str, bound_s: float = DEFAULT_BOUND_S):
        return self.window(f"bandwidth {rate}", lambda: self.limit_bandwidth(handle, rate),
                           lambda: self.heal(handle), bound_s)

    def packet_loss(self, handle: Any, probability: float, bound_s: float = DEFAULT_BOUND_S):
        if not 0 < probability < 1:
            raise ValueError(f"packet loss probability {probability!r}: allowed 0 < p < 1")
        return self.window(f"loss {probability:.0%}", lambda: self.drop_packets(handle, probability),
                           lambda: self.heal(handle), bound_s)

    def packet_delay(self, handle: Any, ms: int, bound_s: float = DEFAULT_BOUND_S):
        if not isinstance(ms, int) or not 0 < ms <= 60_000:
            raise ValueError(f"delay {ms!r} ms: allowed an integer 1-60000")
        return self.window(f"delay {ms} ms", lambda: self.delay_packets(handle, ms), lambda: self.heal(handle),
                           bound_s)

    def partitioned(self, handle: Any, bound_s: float = DEFAULT_BOUND_S):
        return self.window("partition", lambda: self.partition(handle), lambda: self.heal(handle), bound_s)


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role {role!r}: allowed {', '.join(ROLES)}")
