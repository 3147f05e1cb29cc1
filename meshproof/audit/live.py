"""Read a mesh's configuration from a live cluster, read-only: list calls through the official kubernetes
client, and nothing else (no create, patch, delete, watch or exec). `clusterrole.yaml` beside this module is
the minimal ClusterRole these calls need. The objects come back as the API serves them (camelCase JSON, as in
manifests) and go through the same reader as a folder of manifests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from meshproof.audit.inventory import Inventory
from meshproof.audit.manifests import inventory_from_docs
from meshproof.errors import UsageError

CLUSTER_ROLE = Path(__file__).with_name("clusterrole.yaml")
PAGE = 500  # objects per list call; the API server's continue token fetches the rest
TIMEOUT_S = 30.0
MESH_CONFIG = ("istio-system", "istio")  # the ConfigMap holding the mesh config (key `mesh`), as installed

# (kind, apiVersion, lister(api, **kwargs)): every read the source makes.
Lister = Callable[..., Any]  # with _preload_content=False: the raw response, JSON in .data


def _listers(api: client.ApiClient) -> list[tuple[str, str, str, Lister]]:
    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)

    def crd(group: str, version: str, plural: str) -> Lister:
        return lambda **kw: custom.list_cluster_custom_object(group, version, plural, **kw)
    return [
        ("Namespace", "v1", "namespaces", core.list_namespace),
        ("Pod", "v1", "pods", core.list_pod_for_all_namespaces),
        ("Service", "v1", "services", core.list_service_for_all_namespaces),
        ("Deployment", "apps/v1", "deployments", apps.list_deployment_for_all_namespaces),
        ("StatefulSet", "apps/v1", "statefulsets", apps.list_stateful_set_for_all_namespaces),
        ("DaemonSet", "apps/v1", "daemonsets", apps.list_daemon_set_for_all_namespaces),
        ("CronJob", "batch/v1", "cronjobs", batch.list_cron_job_for_all_namespaces),
        ("PeerAuthentication", "security.istio.io/v1", "peerauthentications",
         crd("security.istio.io", "v1", "peerauthentications")),
        ("DestinationRule", "networking.istio.io/v1", "destinationrules",
         crd("networking.istio.io", "v1", "destinationrules")),
    ]


def _list_all(kind: str, lister: Lister) -> list[dict]:
    items: list[dict] = []
    token = None
    while True:
        kwargs = {"limit": PAGE, "_preload_content": False, "_request_timeout": TIMEOUT_S}
        if token:
            kwargs["_continue"] = token
        page = json.loads(lister(**kwargs).data)
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def read_cluster(api: client.ApiClient, where: str) -> tuple[Inventory, str | None]:
    """The cluster's inventory and its mesh config's rootNamespace (None when the mesh config is unreadable)."""
    docs: list[tuple[str, dict]] = []
    notes = []
    for kind, api_version, plural, lister in _listers(api):
        try:
            items = _list_all(kind, lister)
        except client.ApiException as err:
            if err.status == 404 and "." in api_version:
                notes.append(f"{where}: {plural}.{api_version.split('/')[0]} is not served (Istio's CRDs are not "
                             "installed?); none read")
                continue
            raise UsageError(_refused(where, f"list {plural}", err)) from None
        # a List's items carry no kind or apiVersion of their own (kubectl adds them)
        docs += [(f"{where} {plural}", {"kind": kind, "apiVersion": api_version, **item}) for item in items]
    inv = inventory_from_docs(docs)
    inv.notes[:0] = notes
    return inv, _root_namespace(api, where, inv)


def _root_namespace(api: client.ApiClient, where: str, inv: Inventory) -> str | None:
    namespace, name = MESH_CONFIG
    try:
        read: Lister = client.CoreV1Api(api).read_namespaced_config_map
        config_map = json.loads(read(name, namespace, _preload_content=False, _request_timeout=TIMEOUT_S).data)
    except client.ApiException as err:
        inv.notes.append(f"{where}: the mesh config ConfigMap {namespace}/{name} is unreadable ({err.status} "
                         f"{err.reason}); the root namespace is taken from --root-namespace")
        return None
    try:
        mesh = yaml.safe_load((config_map.get("data") or {}).get("mesh") or "") or {}
    except yaml.YAMLError:
        mesh = {}
    root = mesh.get("rootNamespace") if isinstance(mesh, dict) else None
    return str(root) if root else namespace  # meshConfig's default rootNamespace is the control plane's namespace


def _refused(where: str, what: str, err: client.ApiException) -> str:
    hint = f" (bind the read-only ClusterRole in {CLUSTER_ROLE})" if err.status in (401, 403) else ""
    return f"{where}: {what} failed: {err.status} {err.reason}{hint}"
