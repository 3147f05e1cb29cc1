"""The interface every mesh target implements, and the probe result all of them return.

Suites talk only to `MeshBackend`; `cluster.local` and `cluster.kube` are the two implementations.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from meshproof.namespaces import RunNamespaces
from meshproof.scenario import Scenario
from meshproof.vocabulary import Outcome, Wire

if TYPE_CHECKING:  # probes.verdict imports scapy: only runs that capture pay for it
    from probes.verdict import WireVerdict

# The client sidecar's response header with its %RESPONSE_FLAGS%; "<it>-reason" carries
# %UPSTREAM_TRANSPORT_FAILURE_REASON% (local: the control plane's routes; kube: cluster/manifests/response-flags.yaml).
RESPONSE_FLAGS_HEADER = "x-meshproof-response-flags"
CURL_TIMED_OUT = 28  # curl's exit code when --max-time ran out
_HTTP_STATUS = re.compile(r"^HTTP/\d(?:\.\d)? (\d{3})")


@dataclass
class ProbeResult:
    """What one probe sleep -> the server's app (at request.to's destination) did, as observed (never as
    configured). TCP apps: http_status None, curl_exit the TCP probe client's exit code, its account in
    extra["tcp_client"] (the local mesh)."""

    outcome: str  # an Outcome; else what was seen outside the oracle's words ("404", "200-none"), or "error"
    http_status: int | None
    curl_exit: int
    # The client SPIFFE ID the server side saw: httpbin in X-Forwarded-Client-Cert, or, where none exists (TCP,
    # TLS passed through), the server sidecar's own account (its access log, extra["server_sidecar"]).
    peer_identity: str | None
    failure_detail: str | None = None  # Envoy response flags / stats / curl error when not 200
    # The client sidecar's own account of a failed request: response_flags (%RESPONSE_FLAGS%, e.g. "UF"),
    # transport_failure (%UPSTREAM_TRANSPORT_FAILURE_REASON%), and where the mesh target can read them, the
    # failure counters that moved: server_counters / client_counters (stat names). None for a 200.
    proxy_report: dict[str, Any] | None = None
    wire: WireVerdict | None = None  # what the capture proves (probes.verdict.judge); None without a capture
    canary: str = ""
    elapsed_ms: float = 0.0
    command: str = ""  # reproduces the probe by hand
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "wire": self.wire.to_json() if self.wire else None}


def outcome_of(http_status: int | None, curl_exit: int, wire_verdict: Wire | None,
               peer_identity: str | None, app_tls: bool = False) -> str:
    """Map an HTTP(S) observation to the oracle's vocabulary. A 200 is `mtls` only if the wire (or, without a
    capture, the identity the server side saw) says so; a connection the client never got an answer on is
    `reset`. `app_tls`: the https app (curl -k to the app's own TLS): curl's deadline is `timeout` there, and a
    200 without a capture or an identity is `app-tls`. httpbin's probes keep the words they always had."""
    if http_status is None or http_status == 0:
        return Outcome.TIMEOUT if app_tls and curl_exit == CURL_TIMED_OUT else Outcome.RESET
    if http_status == 503:
        return Outcome.UNAVAILABLE
    if http_status != 200:
        return str(http_status)
    return completed_outcome(wire_verdict, peer_identity, Outcome.APP_TLS if app_tls else Outcome.PLAINTEXT, seen="200")


def completed_outcome(wire_verdict: Wire | None, peer_identity: str | None, unproven: str,
                      seen: str = "completed") -> str:
    """A completed exchange (a 200, the echo back): what the hop was, from the wire; without a capture, from
    the client identity the server side saw, else `unproven`."""
    if wire_verdict == Wire.PLAINTEXT:
        return Outcome.PLAINTEXT
    if wire_verdict in (Wire.MTLS, Wire.APP_TLS):
        # TLS without Istio's ALPN (DestinationRule MUTUAL) is still mutual TLS when the server sidecar
        # authenticated the client (it named the client's identity); app TLS inside Istio mTLS is mTLS on the
        # wire. The suites judge the wire verdict separately.
        return Outcome.MTLS if peer_identity or wire_verdict == Wire.MTLS else Outcome.APP_TLS
    if wire_verdict is not None:
        return f"{seen}-{wire_verdict}"  # nothing on the wire, yet an answer: outside the oracle's words
    return Outcome.MTLS if peer_identity else unproven


def tcp_outcome(client_result: str, answer: str | None, wire_verdict: Wire | None, peer_identity: str | None) -> str:
    """Map the TCP probe client's account (probes/tcp_probe.py) to the oracle's vocabulary: the echo back is
    completed; refused or closed before it, `reset` (also after another answer, such as a proxy's HTTP 400); its
    deadline, `timeout`. Another answer on a connection that stays open is outside the oracle's words: its HTTP
    status when it is an HTTP answer, else "answered"."""
    if client_result == "completed":
        return completed_outcome(wire_verdict, peer_identity, Outcome.PLAINTEXT)
    if client_result == "timeout":
        return Outcome.TIMEOUT
    if client_result == "reset":
        return Outcome.RESET
    if client_result == "answered":
        status = _HTTP_STATUS.match(answer or "")
        return status.group(1) if status else "answered"
    return "error"


@dataclass(frozen=True)
class TlsAttempt:
    """A client without a sidecar speaking its own TLS straight to the server pod's port (the adversary suite).

    certificate: None (none sent), "mesh" (issued by the mesh CA), "self-signed", or "other-ca" (a CA the mesh
    does not trust); spiffe_id is its URI SAN; versions are the TLS versions offered, oldest first."""

    certificate: str | None
    spiffe_id: str | None = None
    expired: bool = False
    alpn: tuple[str, ...] = ()
    versions: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")


@dataclass
class HandshakeResult:
    """What one TlsAttempt did, as the client and the wire saw it (probes/tls_client.py reads both)."""

    outcome: str  # "accepted" (handshake done, the app answered) | "alert" | "closed" | "error"
    alert: str | None  # the TLS alert the client received, e.g. "certificate unknown (46)"
    tls_version: str | None  # what the client negotiated, when it got that far
    http_status: int | None
    peer_identity: str | None  # the client URI the app saw in X-Forwarded-Client-Cert
    server_refusal: str | None = None  # why the server sidecar refused, from its own counters, when it can tell
    wire: WireVerdict | None = None  # probes.verdict.judge(), with its handshake (where it stopped, who closed)
    canary: str = ""
    command: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "wire": self.wire.to_json() if self.wire else None}


@dataclass
class RunFigures:
    """What a run cost, for `make bench`: configuration rounds (apply -> every sidecar serves it), pods started
    and probes sent, with each round's apply and convergence time."""

    config_rounds: int = 0
    pods_started: int = 0
    probes: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def round(self, apply_ms: float, converge_ms: float, **facts: Any) -> None:
        self.config_rounds += 1
        self.rounds.append({"apply_ms": round(apply_ms, 1), "converge_ms": round(converge_ms, 1), **facts})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def probe_apart(cell_ids: list[str], pods_of: Callable[[str], set[str]], probe: Callable[[str], ProbeResult],
                workers: int) -> dict[str, ProbeResult]:
    """One probe per cell, `workers` at a time, never two at once on one pod: a probe's failure counters (which
    503, from whom) are the change since that pod's previous probe, so they must be its own. A probe that
    raises is that cell's harness error."""
    pending, results = list(cell_ids), {}
    busy: set[str] = set()
    ready = threading.Condition()

    def next_cell() -> str | None:
        with ready:
            while pending:
                cell_id = next((c for c in pending if not pods_of(c) & busy), None)
                if cell_id is not None:
                    pending.remove(cell_id)
                    busy.update(pods_of(cell_id))
                    return cell_id
                ready.wait()
            return None

    def work() -> None:
        while (cell_id := next_cell()) is not None:
            try:
                results[cell_id] = probe(cell_id)
            except Exception as err:  # noqa: BLE001 - reported as this cell's, never a pass
                results[cell_id] = ProbeResult("error", None, -1, None, f"probe failed (harness error): {err!r}")
            finally:
                with ready:
                    busy.difference_update(pods_of(cell_id))
                    ready.notify_all()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    return results


class ApplyRefused(RuntimeError):
    """The mesh's admission refused an Istio object (e.g. a fail-closed validating webhook while the control
    plane is away); nothing of the change was applied."""


class MeshBackend(ABC):
    """A mesh the suites can deploy workloads into, configure with Istio manifests and probe."""

    name: str = "abstract"
    figures: RunFigures

    def can_co_deploy(self) -> bool:
        """Whether deploy_plan can stand for this mesh's per-cell deployments (not while pods are moved to
        another revision after they start: upgrade-check's canary legs)."""
        return True

    def deploy_plan(self, plan: Any) -> Any:
        """Deploy a meshproof.codeploy.Plan: its namespaces in run namespaces, a workload each, every object in
        one round, one convergence wait. Returns a handle for probe_cells/plan_in_run/teardown."""
        raise NotImplementedError(f"mesh backend {self.name!r} cannot co-deploy cells yet")

    def plan_in_run(self, handle: Any) -> Any:
        """The deployed plan in the run's namespaces (the oracle predicts each cell from it)."""
        raise NotImplementedError(f"mesh backend {self.name!r} cannot co-deploy cells yet")

    def probe_cells(self, handle: Any, cell_ids: list[str], capture: bool = True) -> dict[str, ProbeResult]:
        """One probe per cell of a deployed plan, each with its own canary and capture of its own flows."""
        raise NotImplementedError(f"mesh backend {self.name!r} cannot co-deploy cells yet")

    @abstractmethod
    def start(self) -> None:
        """Bring the mesh up (or connect to it) and clean what a crashed run left."""

    @abstractmethod
    def stop(self) -> None:
        """Remove everything this run created. Safe to call twice and after a partial start."""

    @abstractmethod
    def deploy(self, scenario: Scenario) -> Any:
        """Create the scenario's client and server workloads and apply its manifests in order.
        Returns a handle for probe/apply/teardown. Raises ManifestError before creating anything
        if a manifest is invalid."""

    @abstractmethod
    def run_namespaces(self, handle: Any) -> RunNamespaces:
        """The namespace mapping the handle's scenario runs under: its workloads live in `<ns>-<run>`, and
        apply() rewrites manifests with it. The suites predict on its rewrite_scenario() of the scenario."""

    @abstractmethod
    def apply(self, handle: Any, manifests: list[dict]) -> None:
        """Replace the Istio manifests of a deployed scenario (written in the scenario's namespaces, as
        deploy() takes them); returns once the mesh has converged. Raises ApplyRefused when the mesh's
        admission refuses the objects (nothing changed then)."""

    @abstractmethod
    def push_time_s(self) -> float:
        """Seconds an apply takes on this mesh, from the call until every sidecar serves the change: the
        slowest measured so far, or what the mesh is configured for before it measured one. Chaos bounds
        (convergence, fault windows) are derived from it, never from constants."""

    @abstractmethod
    def probe(self, handle: Any, capture: bool = True) -> ProbeResult:
        """Send one request sleep -> httpbin.<ns>:<service_port>/headers with a fresh canary marker."""

    @abstractmethod
    def teardown(self, handle: Any) -> None:
        """Remove one deployed scenario."""

    def environment(self) -> dict[str, str]:
        """Facts for the report's environment.properties (mesh kind, versions)."""
        return {"mesh": self.name}

    def istio_minor(self) -> str | None:
        """The Istio minor ("1.30") the mesh runs, when it can tell; the oracle then predicts for it."""
        return None

    def tls_handshake(self, handle: Any, attempt: TlsAttempt, capture: bool = True) -> HandshakeResult:
        """Run `attempt` from the scenario's client (which has no sidecar) to the server pod's target port,
        with credentials minted for it, and send one request if the handshake completes."""
        raise NotImplementedError(f"mesh backend {self.name!r} cannot run adversarial TLS clients yet")

    def faults(self):
        """The chaos suites' fault injector for this mesh (cluster.faults.Faults)."""
        raise NotImplementedError(f"mesh backend {self.name!r} has no fault injection (cluster.faults.Faults) yet")
