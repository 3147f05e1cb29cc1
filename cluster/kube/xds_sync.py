"""Has istiod pushed a policy change to the sidecars, and have they accepted it? Read from istiod's own account.

istiod's /debug/syncz (pilot/pkg/xds/debug.go, release-1.28 to 1.30) lists each connected proxy with, per xDS
type, the nonce last sent, the nonce last ACKed, when it was sent and the last NACK's error. It is asked
inside each istiod pod with `pilot-discovery request GET /debug/syncz` (pilot/cmd/pilot-discovery/app/
request.go: 127.0.0.1:15014, which the debug handlers serve to localhost without authentication).

A change has reached a sidecar when istiod sent it clusters or listeners (what PeerAuthentication and
DestinationRule change) after the change was stored, and the sidecar ACKed exactly that push. istiod debounces
pushes up to PILOT_DEBOUNCE_MAX (10 s by default, pilot/pkg/features/tuning.go) under churn, so a fixed wait
after an apply proves nothing. istiod does not push to a sidecar whose scope the change is outside of
(pilot/pkg/xds/proxy_dependencies.go: SidecarScope.DependsOnConfig): such a proxy keeps its config. It counts
as settled once nothing is outstanding on it and either another sidecar ACKed the change PUSH_SPREAD_S ago (one
push goes to every affected proxy at once) or the bound ran out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from kubernetes import client

from cluster.kube.client import Cluster, exec_in

CHANGED_TYPES = {"cluster": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                 "listener": "type.googleapis.com/envoy.config.listener.v3.Listener"}
# As Istio's own integration tests call it (tests/integration/pilot/vm_test.go: `pilot-discovery request GET
# /debug/...`); the command prints the body and fails on a status above 399 other than 404
# (pilot/pkg/request/command.go). sentTime is set on every send, SotW and delta (pkg/xds/server.go,
# pilot/pkg/xds/delta.go: LastSendTime).
SYNCZ_COMMAND = ["pilot-discovery", "request", "GET", "/debug/syncz"]
PUSH_SPREAD_S = 2.0  # how long after one sidecar ACKed the change another affected one may still get it


class SyncUnreadable(RuntimeError):
    """istiod's syncz could not be read (no istiod pod, exec refused, not JSON)."""


@dataclass(frozen=True)
class ProxySync:
    pod: str  # namespace/name
    state: str  # "acked" | "sent" (not yet ACKed) | "rejected" (NACK) | "not pushed" | "not connected"
    detail: str = ""


def proxy_state(entry: dict | None, since: datetime) -> tuple[str, str]:
    """One proxy's syncz entry judged against the time the change was stored."""
    if entry is None:
        return "not connected", "the proxy is not in istiod's syncz"
    resources = entry.get("resources") or {}
    pushed = False
    for name, type_url in CHANGED_TYPES.items():
        status = resources.get(type_url) or {}
        if status.get("lastError"):
            return "rejected", f"{name}: {status['lastError']}"
        if status.get("sent") and status.get("sent") != status.get("acked"):
            return "sent", f"{name} {status['sent']} not ACKed yet"
        sent_at = status.get("sentTime")
        if sent_at and datetime.fromisoformat(sent_at) >= since and status.get("acked") == status.get("sent"):
            pushed = True
    return ("acked", "") if pushed else ("not pushed", "no cluster or listener push since the change")


def find_entry(entries: list[dict], namespace: str, pod: str) -> dict | None:
    """A sidecar's id is sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<domain> (model.Proxy.ID)."""
    return next((e for e in entries if f"~{pod}.{namespace}~" in str(e.get("proxy", ""))), None)


@dataclass
class SyncWait:
    synced: bool
    elapsed_s: float
    proxies: list[ProxySync] = field(default_factory=list)
    reads: int = 0
    unreadable: str = ""  # why syncz could not be read (e.g. the control plane is away): the probes decide alone

    def summary(self) -> dict:
        return {"synced": self.synced, "elapsed_s": round(self.elapsed_s, 3), "reads": self.reads,
                "proxies": {p.pod: f"{p.state} {p.detail}".strip() for p in self.proxies},
                **({"unreadable": self.unreadable} if self.unreadable else {})}


def wait_pushed(read: Callable[[], list[dict]], pods: list[tuple[str, str]], since: datetime, timeout_s: float,
                interval_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> SyncWait:
    """Read syncz until every sidecar pod ACKed a push sent after `since`. A pod that got no push and has nothing
    outstanding counts as settled PUSH_SPREAD_S after another pod ACKed, or at the bound; anything sent and not
    ACKed (or NACKed) never does."""
    started, reads, first_acked = clock(), 0, None
    while True:
        try:
            entries = read()
        except SyncUnreadable as err:
            return SyncWait(False, clock() - started, [], reads, str(err))
        reads += 1
        states = [ProxySync(f"{ns}/{pod}", *proxy_state(find_entry(entries, ns, pod), since)) for ns, pod in pods]
        if all(s.state == "acked" for s in states):
            return SyncWait(True, clock() - started, states, reads)
        if first_acked is None and any(s.state == "acked" for s in states):
            first_acked = clock()
        if (first_acked is not None and clock() - first_acked >= PUSH_SPREAD_S
                and all(s.state in ("acked", "not pushed") for s in states)):
            return SyncWait(True, clock() - started, states, reads)
        if clock() - started + interval_s > timeout_s:
            settled = all(s.state in ("acked", "not pushed") for s in states)
            return SyncWait(settled, clock() - started, states, reads)
        sleep(interval_s)


def read_syncz(cluster: Cluster, timeout_s: float = 10.0) -> list[dict]:
    """syncz of every istiod pod, merged (each proxy is connected to one of them)."""
    try:
        pods = [p for p in cluster.core.list_pod_for_all_namespaces(label_selector="app=istiod").items
                if not p.metadata.deletion_timestamp and p.status.phase == "Running"]
    except client.ApiException as err:
        raise SyncUnreadable(f"listing istiod pods: {err.status} {err.reason}") from None
    if not pods:
        raise SyncUnreadable("no running istiod pod (control plane away?)")
    entries: list[dict] = []
    for pod in pods:
        try:
            done = exec_in(cluster, pod.metadata.namespace, pod.metadata.name, "discovery", SYNCZ_COMMAND, timeout_s)
        except (client.ApiException, TimeoutError, OSError) as err:
            raise SyncUnreadable(f"exec in {pod.metadata.namespace}/{pod.metadata.name}: {err}") from None
        if done.exit_code != 0:
            raise SyncUnreadable(f"{' '.join(SYNCZ_COMMAND)} in {pod.metadata.namespace}/{pod.metadata.name}: "
                                 f"exit {done.exit_code}: {(done.stderr or done.stdout).strip()[:200]}")
        try:
            entries += json.loads(done.stdout)
        except ValueError as err:
            raise SyncUnreadable(f"syncz of {pod.metadata.name} is not JSON: {err}") from None
    return entries
