"""A co-deployment (meshproof/codeploy.py Plan) on a cluster: a run namespace per group, a workload each, every
Istio object created in one round, then one wait until every pod is Ready and every proxy ACKed a push sent
after the last object (istiod's /debug/syncz), then the probes.

Objects are created before the workloads, so the pods start with the whole configuration: the one round is
the objects' push to every proxy. Objects only need creation-time order where Istio breaks a tie by it
(two namespace-wide PeerAuthentications in one namespace, two DestinationRules for one host in one namespace);
only those are spaced CREATE_SPACING_S apart, so the matrix's 88 objects go in one burst.

Listed in docs/kube.md under "not yet run on a cluster": rendering and schema validation run here
(`render_plan`, `--dry-run`), the API calls only against the self-tests' loopback API server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from cluster.kube.render import (
    HOSTNAME_TOPOLOGY,
    ROLE_LABEL,
    RUN_LABEL,
    Images,
    Revisions,
    client_docs,
    mesh_cert_files,
    pod_labels,
    render_template,
    run_labels,
    server_docs,
)
from cluster.schemas.validate import validate
from meshproof.codeploy import Plan

CREATE_SPACING_S = 1.05  # creationTimestamp has 1 s resolution; Istio lets the oldest conflicting policy win


@dataclass
class KubeDeployment:
    plan: Plan  # in the run's namespaces
    run_id: str
    docs: list[dict]
    pods: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # namespace -> (namespace, pod, IP)
    names: object = None  # the RunNamespaces of the plan's namespaces
    sync: object = None  # xds_sync.SyncWait of the one round
    handles: dict = field(default_factory=dict)  # cell id -> KubeHandle


def render_plan(plan: Plan, run_id: str, session: str, owner: str, images: Images, revisions: Revisions,
                spread: str = "preferred") -> list[dict]:
    """Every object of a co-deployment in creation order: the namespaces, the Istio objects, the workloads.
    `plan` is in its own namespaces; everything comes out in the run's, validated against the pinned schemas."""
    names = plan.run_names(run_id)
    deployed = plan.in_run(names)
    labels = run_labels(session, owner, run_id)
    policies = []
    for doc in deployed.manifests:
        doc = {**doc, "metadata": {**doc["metadata"], "labels": {**doc["metadata"].get("labels", {}), **labels}}}
        policies.append(doc)
    namespaces = _namespaces(plan, names, session, owner, revisions, run_id)
    docs: list[dict] = []
    hosts = {s.namespace: s for s in deployed.servers}
    for workload in deployed.servers:
        docs += server_docs(workload, run_id, images)
    for workload in deployed.clients:
        called = sorted({c.server for c in deployed.cells if c.client == workload.namespace})
        docs += client_docs(workload, workload.namespace, run_id, images, [hosts[ns] for ns in called])
        if not workload.sidecar:
            continue
        for index, server_ns in enumerate(called):
            for doc in render_template("no-connection-reuse.yaml", namespace=workload.namespace, run_id=run_id,
                                       server_host=f"httpbin.{server_ns}.svc.cluster.local",
                                       service_port=hosts[server_ns].service_port):
                doc["metadata"]["name"] += f"-{index}"
                docs.append(doc)
        for port in sorted({hosts[ns].service_port for ns in called}):
            for doc in render_template("response-flags.yaml", namespace=workload.namespace, run_id=run_id,
                                       service_port=port):
                doc["metadata"]["name"] += f"-{port}"
                docs.append(doc)
    for doc in docs:
        if doc["kind"] == "Deployment":
            _place(doc, deployed, revisions, run_id, spread)
    docs = namespaces + policies + docs
    for doc in docs:
        validate(doc, f"kube run {run_id} co-deployment")
    return docs


def _namespaces(plan: Plan, names, session: str, owner: str, revisions: Revisions, run_id: str) -> list[dict]:
    docs = []
    for role, workloads, rev in (("client", plan.clients, revisions.client), ("server", plan.servers,
                                                                             revisions.server)):
        for workload in workloads:
            doc = render_template("namespace.yaml", namespace=names.to_run(workload.namespace), session=session,
                                  owner=owner, run_id=run_id, scenario_namespace=workload.namespace)[0]
            doc["metadata"]["labels"].update({"istio.io/rev": rev} if rev else {"istio-injection": "enabled"})
            docs.append(doc)
    return docs


def _place(doc: dict, deployed: Plan, revisions: Revisions, run_id: str, spread: str) -> None:
    """Pod labels of its workload (sidecar or not), the client's mesh certificate files, and clients apart
    from servers by node (every server of the run, selected by role across the run's namespaces)."""
    ns = doc["metadata"]["namespace"]
    role = doc["metadata"]["name"]
    workload = deployed.workload(ns)
    template = doc["spec"]["template"]
    template["metadata"]["labels"].update(
        pod_labels(workload, revisions.client if role == "sleep" else revisions.server))
    if role == "sleep" and workload.sidecar:
        template["metadata"].setdefault("annotations", {}).update(mesh_cert_files())
    other = "httpbin" if role == "sleep" else "sleep"
    term = {"labelSelector": {"matchLabels": {ROLE_LABEL: other, RUN_LABEL: run_id}},
            "namespaceSelector": {"matchLabels": {RUN_LABEL: run_id}}, "topologyKey": HOSTNAME_TOPOLOGY}
    if spread == "required":
        template["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    else:
        template["spec"]["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": term}]}}


def tie_key(doc: dict) -> tuple | None:
    """Objects Istio orders by creation time among themselves: namespace-wide PeerAuthentications of one
    namespace, DestinationRules of one namespace for one host. None for any other object."""
    spec, ns = doc.get("spec") or {}, doc["metadata"].get("namespace")
    if doc["kind"] == "PeerAuthentication" and not spec.get("selector"):
        return ("PeerAuthentication", ns)
    if doc["kind"] == "DestinationRule":
        return ("DestinationRule", ns, spec.get("host"))
    return None


def create_round(create, policies: list[dict], sleep=time.sleep, clock=time.monotonic) -> datetime | None:
    """Create the Istio objects in order, spacing only those that tie; returns the last creationTimestamp."""
    last_of: dict[tuple, float] = {}
    stored = None
    for doc in policies:
        key = tie_key(doc)
        if key is not None and key in last_of:
            wait = last_of[key] + CREATE_SPACING_S - clock()
            if wait > 0:
                sleep(wait)
        stamp = create(doc)["metadata"]["creationTimestamp"]
        stored = stamp if stored is None or stamp > stored else stored
        if key is not None:
            last_of[key] = clock()
    return datetime.fromisoformat(stored) if stored else None
