"""Read what is already installed on a cluster: Istio control planes, mesh config, mesh-wide policies."""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from kubernetes import client

from cluster.kube.client import Cluster
from cluster.kube.render import MANAGED_BY

ISTIO_KINDS = {  # kind -> (group, version used to read, plural)
    "PeerAuthentication": ("security.istio.io", "v1", "peerauthentications"),
    "DestinationRule": ("networking.istio.io", "v1", "destinationrules"),
}


@dataclass(frozen=True)
class ControlPlane:
    namespace: str
    revision: str  # "default" for an unrevisioned install
    version: str  # from the istiod image tag
    ready: bool


def control_planes(cluster: Cluster) -> list[ControlPlane]:
    found = []
    deployments = cluster.apps.list_deployment_for_all_namespaces(label_selector="app=istiod", _request_timeout=10)
    for dep in deployments.items:
        labels = dep.metadata.labels or {}
        image = next((c.image for c in dep.spec.template.spec.containers if c.name == "discovery"), "")
        version = image.rsplit(":", 1)[-1] if ":" in image else "?"
        ready = (dep.status.ready_replicas or 0) >= 1
        found.append(ControlPlane(dep.metadata.namespace, labels.get("istio.io/rev", "default"), version, ready))
    return sorted(found, key=lambda cp: (cp.namespace, cp.revision))


def mesh_config(cluster: Cluster, plane: ControlPlane) -> dict:
    """The MeshConfig istiod of this revision reads (ConfigMap istio or istio-<rev>, key `mesh`)."""
    name = "istio" if plane.revision == "default" else f"istio-{plane.revision}"
    try:
        cm = cluster.core.read_namespaced_config_map(name, plane.namespace, _request_timeout=10)
    except client.ApiException as err:
        if err.status == 404:
            return {}
        raise
    return yaml.safe_load((cm.data or {}).get("mesh") or "") or {}


def auto_mtls_enabled(mesh: dict) -> bool:
    # MeshConfig.enable_auto_mtls is a BoolValue that istiod defaults to true (pkg/config/mesh DefaultMeshConfig).
    return mesh.get("enableAutoMtls", True) is not False


def root_namespace(mesh: dict) -> str:
    return mesh.get("rootNamespace") or "istio-system"


def common_root_namespace(meshes: dict[str, dict]) -> str:
    """The root namespace every control plane (revision -> its MeshConfig) agrees on. Each revision reads its
    own ConfigMap, and during a canary upgrade both serve workloads, so each must have auto mTLS and the same
    root namespace; ValueError names the revisions that differ."""
    off = sorted(rev for rev, mesh in meshes.items() if not auto_mtls_enabled(mesh))
    if off:
        raise ValueError(f"meshConfig.enableAutoMtls is false for revision(s) {', '.join(off)}; "
                         "the oracle assumes auto mTLS")
    roots = {rev: root_namespace(mesh) for rev, mesh in meshes.items()}
    if len(set(roots.values())) > 1:
        raise ValueError("the control planes disagree on meshConfig.rootNamespace: "
                         + ", ".join(f"{rev}={root}" for rev, root in sorted(roots.items())))
    return next(iter(roots.values()), "istio-system")


@dataclass(frozen=True)
class ForeignPolicy:
    kind: str
    namespace: str
    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} ({self.why})"


def mesh_wide_policies(cluster: Cluster, root_ns: str, own_session: str | None = None) -> list[ForeignPolicy]:
    """Objects in the root namespace that would change what this run's workloads do.

    Every PeerAuthentication there applies mesh-wide (with a selector: to matching workloads in every
    namespace); a DestinationRule there with a wildcard host is the fallback for every service."""
    found = []
    for kind, (group, version, plural) in ISTIO_KINDS.items():
        try:
            items = cluster.custom.list_namespaced_custom_object(group, version, root_ns, plural,
                                                                 _request_timeout=10)["items"]
        except client.ApiException as err:
            if err.status == 404:  # the CRD is not installed
                continue
            raise
        for item in items:
            labels = item["metadata"].get("labels") or {}
            if own_session and labels.get("meshproof.io/session") == own_session:
                continue
            spec = item.get("spec") or {}
            if kind == "PeerAuthentication":
                why = "selector-scoped in the root namespace" if spec.get("selector") else "mesh-wide"
            elif str(spec.get("host", "")).startswith("*"):
                why = f"wildcard host {spec.get('host')} in the root namespace"
            else:
                continue
            if labels.get(MANAGED_BY) == "meshproof":
                why += ", left by an earlier meshproof run: meshproof clean --mesh kube"
            found.append(ForeignPolicy(kind, root_ns, item["metadata"]["name"], why))
    return found
