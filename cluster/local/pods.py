"""The reference mesh's pods and the views the backends probe through: a pod (a network namespace with its
app and maybe a sidecar), a client -> server pair of pods, a deployed scenario's handle."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.local import controlplane, netns
from cluster.local.envoy import Sidecar
from cluster.local.workloads import ServerApp
from meshproof.namespaces import RunNamespaces
from meshproof.scenario import Scenario, Server, Workload


@dataclass
class LocalPod:
    role: str  # "client" or "server"
    workload: Workload
    name: str  # netns
    veth: str  # root-side interface
    ip: str
    dir: Path
    sidecar: Sidecar | None = None
    app: Any = None
    stat_baseline: dict[str, int] = field(default_factory=dict)

    def model(self) -> controlplane.Pod:
        labels = dict(self.workload.labels)
        if self.workload.sidecar:  # the injector's label; a value the pod already has is kept (injection template)
            labels.setdefault("security.istio.io/tlsMode", "istio")
        return controlplane.Pod(self.name, self.workload.namespace, labels, self.workload.service_account,
                                self.ip, self.workload.sidecar, str(self.dir / "certs"), str(self.dir / "sds"))


@dataclass
class Pair:
    key: tuple
    index: int
    client: LocalPod
    server: LocalPod
    vip: str
    in_use: bool = False
    last_used: float = 0.0
    configs: dict[str, controlplane.SidecarConfig] = field(default_factory=dict)  # what each sidecar serves now
    # One probe at a time per pair: each flow on the wire and each failure counter's change is that probe's.
    probing: threading.Lock = field(default_factory=threading.Lock)

    @property
    def service(self) -> controlplane.Service:
        return service_of(self.server, self.vip)

    def pods(self) -> list[LocalPod]:
        return [self.client, self.server]


def service_of(server: LocalPod, vip: str) -> controlplane.Service:
    """The Service `httpbin` in front of one server pod: its `vip` unless headless (clusterIP: None)."""
    workload: Server = server.workload
    return controlplane.Service("httpbin", workload.namespace, None if workload.headless else vip,
                                workload.service_port, workload.target_port, (server.model(),), workload.port_name,
                                workload.app_protocol)


@dataclass
class Handle:
    pair: Pair
    scenario: Scenario  # as deployed: in the run's namespaces
    names: RunNamespaces
    resources: list = field(default_factory=list)


def destroy_pods(pods: list[LocalPod]) -> None:
    """Stop every process of the pods and remove their namespaces; side by side, as each step is mostly
    waiting for `ip` (a co-deployment's 20 pods took a second one after another)."""
    def destroy(pod: LocalPod) -> None:
        if pod.sidecar:
            pod.sidecar.stop()
        if isinstance(pod.app, ServerApp):
            pod.app.stop()  # a shared one (co-deployment) stops once, the others find it gone
        netns.delete_pod(pod.name, pod.veth)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(destroy, pod) for pod in pods]:
            future.result()
