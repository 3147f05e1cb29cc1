"""The records a mesh's configuration is read into: namespaces, workloads, Service ports and the Istio objects,
plus what could not be read. Sources (manifests.py) fill it; the pair builder (pairs.py) reads it."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshproof.istio_api import Resource


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    kind: str  # Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob
    labels: dict[str, str]
    service_account: str
    sidecar: bool | None  # None: cannot be known from the input (`sidecar_why` says why)
    sidecar_why: str
    container_ports: dict[str, int] = field(default_factory=dict)  # named container ports, for a named targetPort
    source: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    service: str
    port: int
    target_port: int | str  # a number, or a container port name resolved per backend
    name: str
    app_protocol: str | None
    headless: bool
    selector: dict[str, str]
    source: str = ""

    @property
    def host(self) -> str:
        return f"{self.service}.{self.namespace}.svc.cluster.local"

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"


@dataclass
class Inventory:
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> labels
    workloads: list[Workload] = field(default_factory=list)
    service_ports: list[ServicePort] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)  # PeerAuthentications and DestinationRules, oldest first
    raw: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (kind, ns, name) -> manifest
    skipped_kinds: dict[str, int] = field(default_factory=dict)  # kind -> count of objects not read
    rejected: list[str] = field(default_factory=list)  # Istio objects Istio would refuse, with why
    notes: list[str] = field(default_factory=list)  # anything else read but not used, with why

    @property
    def unknown_sidecars(self) -> list[Workload]:
        return [w for w in self.workloads if w.sidecar is None]
