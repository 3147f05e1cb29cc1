"""Read a mesh's configuration from a folder of manifests (offline): multi-document YAML, `kubectl get -A -o
yaml` List dumps and nested folders. Objects of other kinds are counted, Istio objects Istio would refuse are
named, and nothing is ever sent to a cluster."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from meshproof.audit import injection
from meshproof.audit.inventory import Inventory, ServicePort, Workload
from meshproof.errors import UsageError
from meshproof.istio_api import API_VERSIONS, ManifestError, Resource, parse_resource

YAML_SUFFIXES = (".yaml", ".yml", ".json")
TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
# The kinds meshproof ignores without a count: they never change what a pair does.
QUIET_KINDS = ("ConfigMap", "Secret", "ServiceAccount", "Endpoints", "EndpointSlice", "Event")


def read_folder(folder: str | Path) -> list[tuple[str, dict]]:
    """Every object of every YAML/JSON file under `folder`, as (file, object), List dumps unrolled."""
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{folder}: not a folder")
    return [doc for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
            for doc in read_file(path)]


def read_file(path: str | Path) -> list[tuple[str, dict]]:
    path = Path(path)
    try:
        loaded = list(yaml.safe_load_all(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ManifestError(str(path), "file", where, f"not valid YAML: {getattr(err, 'problem', err)}") from None
    except UnicodeDecodeError:
        raise ManifestError(str(path), "file", "", "not UTF-8 text") from None
    return [(str(path), item) for doc in loaded for item in _unroll(doc)]


def _unroll(doc: Any) -> list[dict]:
    if not isinstance(doc, dict):
        return []
    if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
        return [item for inner in doc["items"] for item in _unroll(inner)]
    return [doc]


def inventory_from_docs(docs: list[tuple[str, dict]]) -> Inventory:
    inv = Inventory()
    for source, doc in docs:
        if doc.get("kind") == "Namespace":
            meta = doc.get("metadata") or {}
            inv.namespaces[meta.get("name", "")] = dict(meta.get("labels") or {})
    skipped: Counter[str] = Counter()
    observed: dict[tuple[str, str], list[Workload]] = {}
    templates: list[Workload] = []
    istio = []
    in_file: Counter[str] = Counter()  # each object's place in its file, for error messages
    for order, (source, doc) in enumerate(_oldest_first(docs)):
        in_file[source] += 1
        kind = doc.get("kind")
        if kind == "Namespace":
            continue
        if kind in API_VERSIONS:
            istio.append((order, in_file[source] - 1, source, doc))
        elif kind == "Pod":
            pod = _pod(doc, source, inv.namespaces)
            if pod is not None:
                observed.setdefault((pod.namespace, pod.name), []).append(pod)
        elif kind in TEMPLATE_KINDS:
            workload = _template(doc, source, inv)
            if workload is not None:
                templates.append(workload)
        elif kind == "Service":
            inv.service_ports.extend(_service_ports(doc, source, inv))
        elif kind not in QUIET_KINDS:
            skipped[str(kind)] += 1
    inv.skipped_kinds = dict(sorted(skipped.items()))
    _add_workloads(inv, observed, templates)
    _add_istio_objects(inv, istio)
    return inv


def _oldest_first(docs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Creation time decides Istio's ties (the oldest PeerAuthentication wins); objects without one (a GitOps
    repository) come after the dated ones, in file order."""
    def stamp(item: tuple[int, tuple[str, dict]]) -> tuple[int, str, int]:
        created = ((item[1][1].get("metadata") or {}).get("creationTimestamp"))
        return (0, str(created), item[0]) if created else (1, "", item[0])
    return [doc for _, doc in sorted(enumerate(docs), key=stamp)]


def _meta(doc: dict) -> tuple[str, str, dict[str, str], dict[str, str]]:
    meta = doc.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or ""),
            {str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()})


def _named_ports(spec: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in spec.get("containers") or [] if isinstance(c, dict)
            for p in c.get("ports") or [] if isinstance(p, dict) and p.get("name") and p.get("containerPort")}


def _service_account(spec: dict) -> str:
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def _owner_workload(doc: dict, labels: dict[str, str]) -> str | None:
    """The Deployment/StatefulSet/... a pod belongs to: its owner, less the ReplicaSet's template hash."""
    owners = (doc.get("metadata") or {}).get("ownerReferences") or []
    for owner in owners:
        if isinstance(owner, dict) and owner.get("name"):
            name = str(owner["name"])
            pod_hash = labels.get("pod-template-hash")
            if owner.get("kind") == "ReplicaSet" and pod_hash and name.endswith(f"-{pod_hash}"):
                return name[: -len(pod_hash) - 1]
            if owner.get("kind") == "Job":
                return re.sub(r"-\d+$", "", name)  # a CronJob's Job: <cronjob>-<schedule time>
            return name
    return None


def _pod(doc: dict, source: str, namespaces: dict[str, dict[str, str]]) -> Workload | None:
    namespace, name, labels, annotations = _meta(doc)
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        return None
    if "status" in doc or (doc.get("metadata") or {}).get("uid"):
        sidecar: bool | None = injection.observed(spec, annotations)
        why = "observed: the pod " + ("runs" if sidecar else "does not run") + " the istio-proxy container"
    else:
        sidecar, why = injection.predicted(spec, labels, annotations, namespaces.get(namespace))
    if sidecar is False and (mode := injection.ambient(labels, namespaces.get(namespace))):
        sidecar, why = None, mode
    owner = _owner_workload(doc, labels)
    clean = {k: v for k, v in labels.items() if k not in ("pod-template-hash", "controller-revision-hash",
                                                          "statefulset.kubernetes.io/pod-name")}
    return Workload(namespace, owner or name, "Pod", clean, _service_account(spec), sidecar, why,
                    _named_ports(spec), source)


def _template(doc: dict, source: str, inv: Inventory) -> Workload | None:
    namespace, name, _, _ = _meta(doc)
    if (doc.get("metadata") or {}).get("ownerReferences"):
        return None  # a ReplicaSet of a Deployment (or a Job of a CronJob): its owner is read instead
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") if isinstance(spec, dict) else None
    if not isinstance(template, dict):
        inv.notes.append(f"{source}: {doc.get('kind')} {namespace}/{name} has no pod template; skipped")
        return None
    t_meta = template.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (t_meta.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (t_meta.get("annotations") or {}).items()}
    pod_spec = template.get("spec") or {}
    sidecar, why = injection.predicted(pod_spec, labels, annotations, inv.namespaces.get(namespace))
    if sidecar is False and (mode := injection.ambient(labels, inv.namespaces.get(namespace))):
        sidecar, why = None, mode
    return Workload(namespace, name, str(doc.get("kind")), labels, _service_account(pod_spec), sidecar,
                    f"predicted from its pod template: {why}", _named_ports(pod_spec), source)


def _add_workloads(inv: Inventory, observed: dict[tuple[str, str], list[Workload]],
                   templates: list[Workload]) -> None:
    """Running pods are the truth for their workload; a template stands for a workload with no pod in the input.
    Pods of one workload that disagree (a rollout half done) make its sidecar status unknown."""
    for (namespace, name), pods in observed.items():
        with_sidecar = sum(1 for p in pods if p.sidecar)
        first = pods[0]
        if len({p.sidecar for p in pods}) > 1:
            first = Workload(namespace, name, first.kind, first.labels, first.service_account, None,
                             f"{with_sidecar} of its {len(pods)} pods run a sidecar (a rollout in progress?)",
                             first.container_ports, first.source)
        inv.workloads.append(first)
    for workload in templates:
        if (workload.namespace, workload.name) not in observed:
            inv.workloads.append(workload)


def _service_ports(doc: dict, source: str, inv: Inventory) -> list[ServicePort]:
    namespace, name, _, _ = _meta(doc)
    spec = doc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        inv.notes.append(f"{source}: Service {namespace}/{name} is an ExternalName Service (no endpoints in the "
                         "mesh); skipped")
        return []
    selector = spec.get("selector")
    if not selector:
        inv.notes.append(f"{source}: Service {namespace}/{name} has no selector, so its endpoints are not in the "
                         "input; skipped")
        return []
    ports = []
    for port in spec.get("ports") or []:
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            continue
        if port.get("protocol", "TCP") != "TCP":
            inv.notes.append(f"{source}: Service {namespace}/{name} port {port['port']} is {port['protocol']}: "
                             "mTLS is for TCP only; skipped")
            continue
        target = port.get("targetPort", port["port"])
        ports.append(ServicePort(namespace, name, port["port"], target if isinstance(target, int | str) else port["port"],
                                 str(port.get("name") or ""), port.get("appProtocol"),
                                 spec.get("clusterIP") == "None",
                                 {str(k): str(v) for k, v in selector.items()}, source))
    return ports


def _add_istio_objects(inv: Inventory, istio: list[tuple[int, int, str, dict]]) -> None:
    """Parse each PeerAuthentication and DestinationRule with Istio's validation; a refused one is named and
    left out (Istio's webhook would not have admitted it). A name seen twice: the later manifest replaces the
    earlier one, as `kubectl apply` would."""
    by_key: dict[tuple[str, str, str], Resource] = {}
    for order, place, source, doc in istio:
        try:
            resource = replace(parse_resource(doc, source, place), order=order)
        except ManifestError as err:
            inv.rejected.append(str(err))
            continue
        key = (type(resource).__name__, resource.namespace, resource.name)
        if key in by_key:
            # an update keeps the object's creation time
            inv.notes.append(f"{source}: {key[0]} {key[1]}/{key[2]} appears twice; the later manifest is used")
            resource = replace(resource, order=by_key[key].order)
        by_key[key] = resource
        inv.raw[key] = doc
    inv.resources = sorted(by_key.values(), key=lambda r: r.order)


def read_manifests(folder: str | Path) -> Inventory:
    return inventory_from_docs(read_folder(folder))
