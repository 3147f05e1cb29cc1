"""Turn a scenario into the Kubernetes objects the kube backend creates, without talking to a cluster.

Workloads come from the YAML templates in cluster/manifests/ (Istio's sleep and httpbin sample shapes);
the scenario's Istio manifests are copied into the run's namespaces. Everything here is pure so that it is
tested, and schema-validated, without a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from string import Template

import yaml

from cluster.kube import apps
from meshproof.istio_api import ManifestError
from meshproof.namespaces import RUN_ID, RunNamespaces
from meshproof.scenario import Scenario, Server, Workload, pod_shape
from probes.identity import PEER_LOG_FORMAT

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
MANAGED_BY = "app.kubernetes.io/managed-by"
SESSION_LABEL = "meshproof.io/session"
OWNER_LABEL = "meshproof.io/owner"
RUN_LABEL = "meshproof.io/run"
ROLE_LABEL = "meshproof.io/role"
CELL_LABEL = "meshproof.io/cell"  # on a cell's Istio objects: a pod pair outlives its cells
INJECT_LABEL = "sidecar.istio.io/inject"
REV_LABEL = "istio.io/rev"
# DestinationRule MUTUAL cells name the workload's own mesh certificate as files in this directory. Istio's
# supported way to have them there: pilot-agent writes the workload's key.pem, cert-chain.pem and
# root-cert.pem to OUTPUT_CERTS (pilot/cmd/pilot-agent/options/options.go, security/pkg/nodeagent/util
# OutputKeyCertToDir; secretcache.go never reads its own output back as the mesh certificate), into a
# volume mounted in the sidecar with the userVolume annotations (the injection template, release-1.28..1.30).
MESH_CERT_DIR = "/etc/certs"
CERT_VOLUME = "meshproof-mesh-certs"
# Client and server on different nodes, so the captured hop crosses the node network as east-west traffic
# does: "required" on a cluster with room for it (kind's two workers), "preferred" elsewhere.
NODE_SPREADS = ("required", "preferred")
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


@dataclass(frozen=True)
class Images:
    """Pinned images; override them for a registry mirror. Tags as in Istio's samples."""

    sleep: str = "docker.io/curlimages/curl:8.16.0"
    httpbin: str = "docker.io/mccutchen/go-httpbin:v2.15.0"
    capture: str = "docker.io/nicolaka/netshoot:v0.14"
    # Istio's samples/tcp-echo/tcp-echo.yaml at release-1.28..1.30 (pinned by tag: no public digest found).
    tcp_echo: str = "registry.istio.io/release/tcp-echo-server:1.3"
    # Runs the banner server and the TCP probe client (digest as pinned by other public projects).
    python: str = ("docker.io/library/python:3.13.7-alpine3.22"
                   "@sha256:9ba6d8cbebf0fb6546ae71f2a1c14f6ffd2fdab83af7fa5669734ef30ad48844")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Images:
        """MESHPROOF_<ROLE>_IMAGE (SLEEP, HTTPBIN, CAPTURE, TCP_ECHO, PYTHON) override the pins."""
        env = os.environ if env is None else env
        defaults = cls()
        return cls(**{f.name: env.get(f"MESHPROOF_{f.name.upper()}_IMAGE") or getattr(defaults, f.name)
                      for f in fields(cls)})


@dataclass(frozen=True)
class Revisions:
    """Which control plane injects each side: None = the default injection label (istio-injection)."""

    client: str | None = None
    server: str | None = None

    @classmethod
    def both(cls, revision: str | None) -> Revisions:
        return cls(revision, revision)


def render_template(template: str, /, **values: object) -> list[dict]:
    """Fill one template of cluster/manifests/; a placeholder without a value is an error, never blank."""
    path = MANIFESTS / template
    try:
        text = Template(path.read_text()).substitute({k: str(v) for k, v in values.items()})
    except KeyError as err:
        raise ValueError(f"{path}: placeholder ${{{err.args[0]}}} has no value") from None
    return [doc for doc in yaml.safe_load_all(text) if doc]


def run_names(scenario: Scenario, run_id: str) -> RunNamespaces:
    """The run's namespace mapping (meshproof/namespaces.py). The scenario's root namespace is the cluster's
    (the backend refuses any other), so it is kept: a run never renames or creates the mesh's root."""
    return RunNamespaces.for_scenario(scenario, run_id, mesh_root=scenario.root_namespace)


def namespace_map(scenario: Scenario, run_id: str) -> dict[str, str]:
    """Scenario namespace -> run namespace, for the workloads and every non-root manifest namespace."""
    names = {scenario.client.namespace, scenario.server.namespace}
    names |= {r.namespace for r in scenario.resources if r.namespace != scenario.root_namespace}
    mapping = run_names(scenario, run_id)
    return {ns: mapping.to_run(ns) for ns in sorted(names)}


def run_labels(session: str, owner: str, run_id: str) -> dict[str, str]:
    """Labels on everything a deploy creates: cleanup selects by run, by owner (one backend) or by session."""
    return {MANAGED_BY: "meshproof", SESSION_LABEL: session, OWNER_LABEL: owner, RUN_LABEL: run_id}


def cell_labels(session: str, owner: str, run_id: str, cell_id: str) -> dict[str, str]:
    """Labels on one cell's Istio objects: the pair's run labels (cleanup by run, owner, session still finds
    them) plus the cell, so the next cell on the same pods deletes exactly these."""
    if not RUN_ID.match(cell_id):
        raise ValueError(f"cell id {cell_id!r}: allowed: 1-20 lowercase letters and digits")
    return {**run_labels(session, owner, run_id), CELL_LABEL: cell_id}


def shape_key(scenario: Scenario, revisions: Revisions) -> tuple:
    """Everything the namespaces and workloads of a run depend on: the pods' shape (as for the reference
    mesh), plus what only a cluster pair has: run namespaces for exactly the extra manifest namespaces, the
    root namespace, the revisions that inject the sidecars."""
    extra = sorted({r.namespace for r in scenario.resources if r.namespace != scenario.root_namespace}
                   - {scenario.client.namespace, scenario.server.namespace})
    return (pod_shape(scenario), tuple(extra), scenario.root_namespace, revisions.client, revisions.server)


def namespace_docs(scenario: Scenario, run_id: str, session: str, owner: str, revisions: Revisions) -> list[dict]:
    docs = []
    for scenario_ns, name in namespace_map(scenario, run_id).items():
        doc = render_template("namespace.yaml", namespace=name, session=session, owner=owner, run_id=run_id,
                              scenario_namespace=scenario_ns)[0]
        doc["metadata"]["labels"].update(_namespace_injection(scenario, scenario_ns, revisions))
        docs.append(doc)
    return docs


def _namespace_injection(scenario: Scenario, scenario_ns: str, revisions: Revisions) -> dict[str, str]:
    # Injection is decided per pod (sidecar.istio.io/inject, istio.io/rev); the namespace label only turns
    # the namespace webhook on. With two revisions in one namespace, pods alone carry istio.io/rev: Istio's
    # object-selector webhook only fires when the namespace has neither injection label.
    revs = {rev for workload, rev in ((scenario.client, revisions.client), (scenario.server, revisions.server))
            if workload.namespace == scenario_ns and workload.sidecar}
    if len(revs) > 1:
        return {}
    rev = next(iter(revs), revisions.server if scenario.server.namespace == scenario_ns else revisions.client)
    return {REV_LABEL: rev} if rev else {"istio-injection": "enabled"}


def workload_docs(scenario: Scenario, run_id: str, images: Images, revisions: Revisions,
                  spread: str = "preferred") -> list[dict]:
    """ServiceAccounts, Services and Deployments of sleep and the server's app (Service httpbin), deduplicated by
    kind/namespace/name, and the harness EnvoyFilters (client sidecar: one upstream connection per request and
    its response flags; server sidecar of a non-HTTP shape: its peer-identity log).
    The two pods keep apart by node (`spread`), and a client sidecar writes its mesh certificate as files."""
    if spread not in NODE_SPREADS:
        raise ValueError(f"node spread {spread!r}: allowed: {', '.join(NODE_SPREADS)}")
    names = namespace_map(scenario, run_id)
    client, server = scenario.client, scenario.server
    server_ns = names[server.namespace]
    docs = client_docs(client, names[client.namespace], run_id, images, [server])
    docs += server_docs(dataclasses.replace(server, namespace=server_ns), run_id, images)
    for doc in docs:
        if doc["kind"] == "Deployment":
            workload, rev = (client, revisions.client) if doc["metadata"]["name"] == "sleep" \
                else (server, revisions.server)
            template = doc["spec"]["template"]
            template["metadata"]["labels"].update(pod_labels(workload, rev))
            other = ("httpbin", server_ns) if workload is client else ("sleep", names[client.namespace])
            template["spec"]["affinity"] = apart_from(*other, run_id, spread)
            if workload is client and client.sidecar:
                template["metadata"].setdefault("annotations", {}).update(mesh_cert_files())
    if client.sidecar:
        docs += client_sidecar_docs(names[client.namespace], run_id, server_ns, server.service_port)
    unique: dict[tuple[str, str, str], dict] = {}
    for doc in docs:
        unique.setdefault((doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"]), doc)
    return list(unique.values())


def client_docs(client: Workload, namespace: str, run_id: str, images: Images, servers: list[Server]) -> list[dict]:
    """The sleep client's ServiceAccount, Service and Deployment; with the TCP probe container when it calls a
    TCP app."""
    docs = render_template("sleep.yaml", namespace=namespace, run_id=run_id,
                           service_account=client.service_account, sleep_image=images.sleep)
    if apps.calls_tcp_app(servers):
        [probe] = render_template("tcp-probe.yaml", python_image=images.python)
        probe["env"][0]["value"] = kubelet_literal(apps.TCP_PROBE_PROGRAM.read_text())
        next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"].append(probe)
    return docs


def server_docs(server: Server, run_id: str, images: Images) -> list[dict]:
    """The server's ServiceAccount, Service (named httpbin, its port named as the scenario says, headless when
    it says so) and Deployment running its app; `server` is in its run namespace. With a server sidecar that
    proxies anything but HTTP to httpbin, the EnvoyFilter that logs whom it authenticated."""
    docs = render_template("httpbin.yaml", namespace=server.namespace, run_id=run_id,
                           service_account=server.service_account, service_port=server.service_port,
                           target_port=server.target_port, port_name=server.port_name)
    for doc in docs:
        if doc["kind"] == "Service" and server.headless:
            doc["spec"]["clusterIP"] = "None"
        if doc["kind"] == "Service" and server.app_protocol is not None:
            doc["spec"]["ports"][0]["appProtocol"] = server.app_protocol
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"].update(server_pod_spec(server, images))
    if apps.logs_peer_identity(server):
        docs.append(peer_identity_log(server.namespace, run_id))
    return docs


def peer_identity_log(namespace: str, run_id: str) -> dict:
    """The server sidecar's peer-identity access log (EnvoyFilter), in the format both meshes write."""
    [doc] = render_template("peer-identity-log.yaml", namespace=namespace, run_id=run_id)
    logger = doc["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["access_log"][0]
    logger["typed_config"]["log_format"]["json_format"] = dict(PEER_LOG_FORMAT)
    return doc


def server_pod_spec(server: Server, images: Images) -> dict:
    """The containers (and init containers and volumes) of the server pod, from app-<app>.yaml."""
    [spec] = render_template(f"app-{server.app}.yaml", target_port=server.target_port, httpbin_image=images.httpbin,
                             capture_image=images.capture, tcp_echo_image=images.tcp_echo,
                             python_image=images.python, echo_prefix=apps.ECHO_PREFIX)
    if server.app == "banner":
        spec["containers"][0]["args"].insert(0, kubelet_literal(apps.BANNER_PROGRAM.read_text()))
    return spec


def kubelet_literal(text: str) -> str:
    """`text` as an args or env value the kubelet passes on unchanged: it expands $(VAR) there and reduces $$
    to $, so every $ is doubled."""
    return text.replace("$", "$$")


def client_sidecar_docs(namespace: str, run_id: str, server_namespace: str, service_port: int) -> list[dict]:
    """The client sidecar's harness EnvoyFilters for calls to one server: a new upstream connection per request
    and its response flags on its replies."""
    return (render_template("no-connection-reuse.yaml", namespace=namespace, run_id=run_id,
                            server_host=f"httpbin.{server_namespace}.svc.cluster.local", service_port=service_port)
            + render_template("response-flags.yaml", namespace=namespace, run_id=run_id, service_port=service_port))


def apart_from(role: str, namespace: str, run_id: str, spread: str) -> dict:
    """Pod anti-affinity to the run's pod of `role` in `namespace`, by node."""
    term = {"labelSelector": {"matchLabels": {ROLE_LABEL: role, RUN_LABEL: run_id}}, "namespaces": [namespace],
            "topologyKey": HOSTNAME_TOPOLOGY}
    if spread == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": term}]}}


def mesh_cert_files() -> dict[str, str]:
    """Pod annotations that make the sidecar keep its mesh certificate as files under MESH_CERT_DIR."""
    return {"proxy.istio.io/config": json.dumps({"proxyMetadata": {"OUTPUT_CERTS": MESH_CERT_DIR}}),
            "sidecar.istio.io/userVolume": json.dumps({CERT_VOLUME: {"emptyDir": {"medium": "Memory"}}}),
            "sidecar.istio.io/userVolumeMount": json.dumps({CERT_VOLUME: {"mountPath": MESH_CERT_DIR}})}


def pod_labels(workload: Workload, revision: str | None) -> dict[str, str]:
    labels = dict(workload.labels)
    labels[INJECT_LABEL] = "true" if workload.sidecar else "false"
    if workload.sidecar and revision:
        labels[REV_LABEL] = revision
    return labels


def policy_docs(scenario: Scenario, run_id: str, allow_mesh_wide: bool,
                labels: dict[str, str] | None = None) -> list[dict]:
    """The scenario's Istio manifests in creation order, rewritten into the run namespaces by the run's
    mapping (namespaces, hosts, exportTo, sni, subjectAltNames) and labelled.

    A manifest in the root namespace changes policy for every workload of the mesh, so it is refused
    unless allow_mesh_wide; when allowed it stays in the root namespace, labelled for cleanup."""
    names = run_names(scenario, run_id)
    out = []
    for index, manifest in enumerate(scenario.manifests):
        doc = names.rewrite_manifest(manifest)
        meta = doc["metadata"]
        if manifest["metadata"]["namespace"] == scenario.root_namespace:
            if not allow_mesh_wide:
                where = f"resources[{index}] {doc['kind']} {meta['namespace']}/{meta['name']}"
                raise ManifestError(scenario.name or "scenario", where, "metadata.namespace",
                                    f"{scenario.root_namespace!r} is the root namespace: this policy would apply "
                                    "to every workload of the cluster's mesh; refused unless --allow-mesh-wide")
            # A selector in the root namespace matches workloads of every namespace: narrow it to this run's
            # pods (which all carry the run label), so it still selects exactly the scenario's workloads.
            for key in ("selector", "workloadSelector"):
                if ((doc.get("spec") or {}).get(key) or {}).get("matchLabels"):
                    doc["spec"][key]["matchLabels"][RUN_LABEL] = run_id
        meta.setdefault("labels", {}).update(labels or {RUN_LABEL: run_id})
        out.append(doc)
    return out


def capture_container(name: str, images: Images) -> dict:
    return render_template("capture.yaml", name=name, capture_image=images.capture)[0]


def capture_patch(scenario: Scenario, run_id: str, name: str, images: Images) -> dict:
    """The pods/ephemeralcontainers request that adds the capture container to the httpbin pod. The pod's
    name comes from its Deployment once it runs; the metadata here names its namespace and the labels that
    select it."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": run_names(scenario, run_id).to_run(scenario.server.namespace),
                         "labels": {ROLE_LABEL: "httpbin", RUN_LABEL: run_id}},
            "spec": {"ephemeralContainers": [capture_container(name, images)]}}


# The order a run creates its objects in: namespaces, then what the workloads need before their pods start,
# then the Istio objects. Policies keep the scenario's order among themselves (the oldest policy wins).
CREATION_ORDER = ("Namespace", "ServiceAccount", "Deployment", "Service", "EnvoyFilter")


def in_creation_order(docs: list[dict]) -> list[dict]:
    rank = {kind: i for i, kind in enumerate(CREATION_ORDER)}
    return sorted(docs, key=lambda d: rank.get(d["kind"], len(CREATION_ORDER)))


def leftover_selector(session: str | None = None) -> str:
    """Label selector of meshproof's namespaces: all of them, or those of sessions other than `session`."""
    selector = f"{MANAGED_BY}=meshproof"
    return f"{selector},{SESSION_LABEL}!={session}" if session else selector


def run_selector(run_id: str) -> str:
    return f"{RUN_LABEL}={run_id}"


def cells_selector(run_id: str) -> str:
    """The Istio objects of any cell on this run's pods (the pair's EnvoyFilter carries no cell label)."""
    return f"{RUN_LABEL}={run_id},{CELL_LABEL}"
