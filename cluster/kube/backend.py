"""The kube backend: the suites' scenarios on any cluster with Istio, through the official kubernetes client.

Safe on shared clusters: it creates only namespaces named `<scenario ns>-<run id>` and labelled with the
run, touches the root namespace only with --allow-mesh-wide, stops when someone else's mesh-wide policy
would change the expectations, and removes what it created by label (also after an interrupted run).

Creating pods is what a cell costs on a cluster, so a pod pair (namespaces, workloads) is reused by later
cells of the same shape: such a cell only deletes the previous cell's Istio objects (by their cell label)
and creates its own. A few idle pairs are kept; the least recently used beyond that are deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from cluster.backend import (
    RESPONSE_FLAGS_HEADER,
    MeshBackend,
    ProbeResult,
    RunFigures,
    outcome_of,
    probe_apart,
    tcp_outcome,
)
from cluster.kube import apps, diagnostics
from cluster.kube.capture import CONTAINER as CAPTURE_CONTAINER
from cluster.kube.capture import CaptureError, PodCapture
from cluster.kube.client import Cluster, KubeUnavailable, connect, exec_in
from cluster.kube.convergence import Convergence, ConvergencePolicy, converge
from cluster.kube.inspect import (
    ISTIO_KINDS,
    common_root_namespace,
    control_planes,
    mesh_config,
    mesh_wide_policies,
)
from cluster.kube.render import (
    CELL_LABEL,
    NODE_SPREADS,
    OWNER_LABEL,
    REV_LABEL,
    ROLE_LABEL,
    RUN_LABEL,
    Images,
    Revisions,
    capture_patch,
    cell_labels,
    cells_selector,
    in_creation_order,
    leftover_selector,
    namespace_docs,
    policy_docs,
    run_names,
    run_selector,
    shape_key,
    workload_docs,
)
from cluster.kube.xds_sync import SyncWait, read_syncz, wait_pushed
from cluster.schemas.validate import SchemaError, errors, validate
from meshproof.istio_api import parse_resources
from meshproof.namespaces import RunNamespaces
from meshproof.scenario import Scenario, require_supported
from meshproof.vocabulary import Wire
from probes.canary import HEADER as CANARY_HEADER
from probes.canary import echoed_canary, new_canary
from probes.errors import CaptureError as WireCaptureError
from probes.identity import peer_identity_from_headers
from probes.tcp_probe import read_account
from probes.verdict import judge

SIDECAR = "istio-proxy"
CLIENT_REVISION_ENV, SERVER_REVISION_ENV = "MESHPROOF_CLIENT_REVISION", "MESHPROOF_SERVER_REVISION"
NODE_SPREAD_ENV = "MESHPROOF_NODE_SPREAD"
# upgrade-check's canary legs: pods are created on the revisions above, then moved in place to these.
MIGRATE_CLIENT_ENV, MIGRATE_SERVER_ENV = "MESHPROOF_MIGRATE_CLIENT_REVISION", "MESHPROOF_MIGRATE_SERVER_REVISION"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets on the pod template
CREATE_SPACING_S = 1.05  # creationTimestamp has 1 s resolution; Istio lets the oldest conflicting policy win
# Idle pod pairs a backend keeps for later cells of the same shape. The suites list cells grouped by shape,
# so a few keep reuse high without one pair per shape ever seen piling up on the cluster.
MAX_IDLE_PAIRS = 3
DELETE_TIMEOUT_S = 30.0  # a deleted policy without finalizers is gone within a request; this is slack
PROBE_WORKERS = 4  # co-deployed probes at once: each is an exec'd curl and a tcpdump in its server pod
PEER_LOG_WAIT_S = 1.5  # how long a probe waits for the server sidecar's access log line of its connection


class WorkloadNotReady(RuntimeError):
    """A workload did not become ready, or its sidecar is not what the scenario asked for."""


@dataclass
class Pair:
    """Namespaces and sleep/httpbin pods of one run id, shared by the cells of one shape in turn."""

    key: tuple  # render.shape_key
    run_id: str
    namespaces: dict[str, str]  # scenario namespace -> run namespace
    client_pod: tuple[str, str] = ("", "")  # (namespace, name)
    server_pod: tuple[str, str, str] = ("", "", "")  # (namespace, name, pod IP)
    client_ip: str = ""  # the address the server sidecar sees the client's connections come from
    cluster_ip: str = ""  # the httpbin Service's spec.clusterIP ("" for a headless Service)
    nodes: tuple[str, str] = ("", "")  # (client's node, server's node)
    # API server time of the last deletion of cell objects on these pods, until a syncz wait has seen the
    # sidecars take it: a cell that creates nothing still waits for the previous cell's objects to be gone
    cleared_at: datetime | None = None
    in_use: bool = False
    last_used: float = 0.0
    cells: int = 0  # deployed on it so far


@dataclass
class KubeHandle:
    scenario: Scenario
    run_id: str  # the pair's: its namespaces and pods carry it
    namespaces: dict[str, str]  # scenario namespace -> run namespace
    client_pod: tuple[str, str]  # (namespace, name)
    server_pod: tuple[str, str, str]  # (namespace, name, pod IP)
    cell_id: str = ""
    client_ip: str = ""  # this cell's: its Istio objects, pcaps and diagnostics carry it
    pair: Pair | None = None
    reused: bool = False  # the pods served earlier cells (recorded with every result)
    started: float = field(default_factory=time.monotonic)
    policies: list[dict] = field(default_factory=list)  # as created, for replacement and teardown
    convergence: Convergence | None = None
    sync: SyncWait | None = None  # istiod's push of the cell's objects and the sidecars' ACK
    capture: PodCapture | None = None
    sender: PodCapture | None = None  # the capture container of the client pod: it sends the heartbeat
    diagnostics_dir: Path | None = None  # written when convergence timed out, or on request
    cluster_ip: str = ""  # the pair's: the httpbin Service's spec.clusterIP

    @property
    def destination(self) -> tuple[str, int]:
        """(host, port) the probe connects to: the Service's name or ClusterIP and port, or the server pod's IP
        and port."""
        return apps.destination(self.scenario, self.namespaces[self.scenario.server.namespace], self.server_pod[2],
                                self.cluster_ip)

    @property
    def url(self) -> str:
        host, port = self.destination
        scheme = "https" if self.scenario.server.app == "https" else "http"
        return f"{scheme}://{host}:{port}/headers"


class KubeBackend(MeshBackend):
    name = "kube"

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, revision: str | None = None,
                 *, client_revision: str | None = None, server_revision: str | None = None,
                 allow_mesh_wide: bool = False, images: Images | None = None,
                 convergence: ConvergencePolicy | None = None, ready_timeout_s: float = 180.0,
                 stale_after_s: float = 3600.0, out_dir: str | Path = "reports/out/kube",
                 connect_timeout_s: float = 3.0, node_spread: str | None = None,
                 migrate_to: Revisions | None = None):
        self.kubeconfig, self.context = kubeconfig, context
        self.revisions = Revisions(client_revision or revision, server_revision or revision)
        self.migrate_to = migrate_to or Revisions()
        self.allow_mesh_wide = allow_mesh_wide
        self.images = images or Images.from_env()
        self.policy = convergence or ConvergencePolicy()
        self.ready_timeout_s, self.stale_after_s = ready_timeout_s, stale_after_s
        self.out_dir, self.connect_timeout_s = Path(out_dir), connect_timeout_s
        # MESHPROOF_NODE_SPREAD=required (make kind-conformance): client and server must land on two nodes.
        self.spread = node_spread or os.environ.get(NODE_SPREAD_ENV) or "preferred"
        if self.spread not in NODE_SPREADS:
            raise KubeUnavailable(f"{NODE_SPREAD_ENV}={self.spread!r}: allowed: {', '.join(NODE_SPREADS)}")
        self.owner = "k" + secrets.token_hex(3)  # this backend instance (one per pytest worker)
        # Shared by all xdist workers of one pytest run, so a worker never cleans its siblings' namespaces.
        self.session = re.sub(r"[^a-z0-9]", "", os.environ.get("PYTEST_XDIST_TESTRUNUID", "").lower())[:16] \
            or self.owner
        self.cluster: Cluster | None = None
        self.root_ns = "istio-system"
        self.planes: list = []
        self._seq = 0
        self._handles: dict[str, KubeHandle] = {}  # by cell id
        self.pairs: list[Pair] = []
        self._faults: list = []  # the KubeFaults handed out: a pair with unhealed faults is not reused
        self._deleted_at = 0.0  # monotonic time of the last deletion of cell objects
        self.push_times_s: list[float] = []  # each apply: delete, create, then the convergence wait
        self.figures = RunFigures()

    @classmethod
    def from_options(cls, options: Any) -> KubeBackend:
        """From the pytest/CLI options namespace (kubeconfig, context, istio_revision, allow_mesh_wide, ...)."""
        get = lambda name, default=None: getattr(options, name, default)
        # Mixed revisions (meshproof upgrade-check) reach pytest workers through the environment.
        return cls(get("kubeconfig"), get("context"), get("istio_revision"),
                   client_revision=get("client_revision") or os.environ.get(CLIENT_REVISION_ENV) or None,
                   server_revision=get("server_revision") or os.environ.get(SERVER_REVISION_ENV) or None,
                   allow_mesh_wide=bool(get("allow_mesh_wide", False)),
                   migrate_to=Revisions(os.environ.get(MIGRATE_CLIENT_ENV) or None,
                                        os.environ.get(MIGRATE_SERVER_ENV) or None))

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.cluster = connect(self.kubeconfig, self.context, self.connect_timeout_s)
        self.planes = control_planes(self.cluster)
        if not self.planes:
            raise KubeUnavailable(f"no Istio control plane (deployment app=istiod) on context {self.cluster.context}")
        wanted = {r for r in (self.revisions.client, self.revisions.server, self.migrate_to.client,
                              self.migrate_to.server) if r}
        missing = wanted - {p.revision for p in self.planes}
        if missing:
            raise KubeUnavailable(f"Istio revision(s) {sorted(missing)} not installed; installed: "
                                  f"{', '.join(sorted(p.revision for p in self.planes))}")
        try:
            self.root_ns = common_root_namespace({p.revision: mesh_config(self.cluster, p) for p in self.planes})
        except ValueError as err:
            raise KubeUnavailable(f"context {self.cluster.context}: {err}") from None
        self.clean_stale()
        foreign = mesh_wide_policies(self.cluster, self.root_ns, own_session=self.session)
        if foreign:
            raise KubeUnavailable("mesh-wide policies already exist and would change every expectation: "
                                  + "; ".join(map(str, foreign))
                                  + ". Run on a cluster without them (or remove them) and retry.")

    def stop(self) -> None:
        if self.cluster is None:
            return
        for handle in list(self._handles.values()):
            self.teardown(handle)
        self._delete_by_selector(f"{OWNER_LABEL}={self.owner}")  # every pair's namespaces and Istio objects
        self.pairs = []
        self.cluster.api.close()
        self.cluster = None

    def clean_stale(self) -> list[str]:
        """Remove namespaces of other meshproof sessions older than stale_after_s (crashed runs)."""
        cutoff = datetime.now(UTC).timestamp() - self.stale_after_s
        stale = [ns.metadata.name for ns in self._cluster().core.list_namespace(
            label_selector=leftover_selector(self.session)).items
            if ns.metadata.creation_timestamp.timestamp() < cutoff and not _terminating(ns)]
        for name in stale:
            self._delete_namespace(name)
        return stale

    # --- scenarios ---------------------------------------------------------------------------------

    def _next_id(self, what: str, root_namespace: str) -> str:
        """A new id for a cell's or a plan's objects, once its root namespace is the cluster's (which is fixed)."""
        if root_namespace != self.root_ns:
            raise KubeUnavailable(f"{what} root_namespace {root_namespace!r} differs from the cluster's "
                                  f"meshConfig.rootNamespace {self.root_ns!r}")
        self._seq += 1
        return f"{self.owner}{self._seq:x}"

    def deploy(self, scenario: Scenario) -> KubeHandle:
        require_supported(scenario, "the kube backend", handles=apps.HANDLES)
        cell_id = self._next_id("scenario", scenario.root_namespace)
        key = shape_key(scenario, self.revisions)
        pair = reusable_pair(self.pairs, key)
        # Everything is rendered and validated (refusals included) before any API call.
        docs = self._render(scenario, pair.run_id if pair else cell_id, cell_id, workloads=pair is None)
        self._cluster()
        if pair is not None and not self._pair_ready(pair):  # e.g. a pod evicted by the node: start afresh
            self._delete_pair(pair)
            pair = None
            docs = self._render(scenario, cell_id, cell_id, workloads=True)
        if pair is None:
            for idle in idle_pairs_to_evict(self.pairs, keep=MAX_IDLE_PAIRS - 1):
                self._delete_pair(idle)
            pair = self._create_pair(key, cell_id, scenario, docs)
        pair.in_use, pair.last_used, pair.cells = True, time.monotonic(), pair.cells + 1
        handle = KubeHandle(scenario, pair.run_id, pair.namespaces, pair.client_pod, pair.server_pod,
                            cell_id=cell_id, client_ip=pair.client_ip, pair=pair, reused=pair.cells > 1,
                            cluster_ip=pair.cluster_ip)
        self._handles[cell_id] = handle
        try:
            self._clear_pair(pair)  # normally the previous teardown left nothing
            self._create_policies(handle, [d for d in docs if d["kind"] in ISTIO_KINDS])
        except BaseException:
            self._handles.pop(cell_id, None)
            self._delete_pair(pair)  # the pair's state is unknown now: nothing half-applied stays
            raise
        return handle

    def _render(self, scenario: Scenario, run_id: str, cell_id: str, workloads: bool) -> list[dict]:
        """A new pair's namespaces and workloads (when `workloads`), then the cell's Istio objects, validated."""
        labels = cell_labels(self.session, self.owner, run_id, cell_id)
        policies = policy_docs(scenario, run_id, self.allow_mesh_wide, labels)  # refusals before creating
        docs = policies
        if workloads:
            docs = in_creation_order(namespace_docs(scenario, run_id, self.session, self.owner, self.revisions)
                                     + workload_docs(scenario, run_id, self.images, self.revisions, self.spread)
                                     + policies)
        for doc in docs:
            validate(doc, f"kube run {run_id} cell {cell_id}")
        return docs

    def dry_run(self, scenario: Scenario, capture: bool = True) -> list[tuple[str, dict]]:
        """(request, body) of everything a run of `scenario` creates, in order, rendered and validated as
        deploy() and the first captured probe do, without a cluster. The root namespace is taken to be the
        scenario's (a real run checks it against the cluster's meshConfig first)."""
        require_supported(scenario, "the kube backend", handles=apps.HANDLES)
        run_id = f"{self.owner}1"
        calls = []
        for doc in self._render(scenario, run_id, run_id, workloads=True):
            meta = doc["metadata"]
            calls.append((f"create {doc['kind']} " + "/".join(filter(None, (meta.get("namespace"), meta["name"]))),
                          doc))
        if capture:
            patch = capture_patch(scenario, run_id, CAPTURE_CONTAINER, self.images)
            problems = errors(patch, subresource="ephemeralcontainers")
            if problems:
                raise SchemaError(f"kube run {run_id}: capture container: " + "; ".join(problems))
            where = f"{patch['metadata']['namespace']} (selected by {ROLE_LABEL}=httpbin)"
            calls.append((f"patch pods/ephemeralcontainers of the httpbin pod in {where}", patch))
        return calls

    def _create_pair(self, key: tuple, run_id: str, scenario: Scenario, docs: list[dict]) -> Pair:
        namespaces = [d for d in docs if d["kind"] == "Namespace"]
        names = {d["metadata"]["labels"]["meshproof.io/scenario-namespace"]: d["metadata"]["name"]
                 for d in namespaces}
        pair = Pair(key, run_id, names)
        self.pairs.append(pair)
        cluster = self._cluster()
        try:
            for doc in namespaces:
                cluster.core.create_namespace(doc)
            for doc in docs:
                if doc["kind"] != "Namespace" and doc["kind"] not in ISTIO_KINDS:
                    self._create(doc)
            client_pod = self._wait_ready(names[scenario.client.namespace], "sleep", scenario.client.sidecar)
            server_pod = self._wait_ready(names[scenario.server.namespace], "httpbin", scenario.server.sidecar)
            pair.cluster_ip = self._cluster_ip(names[scenario.server.namespace])
        except BaseException:
            self._delete_pair(pair)
            raise
        pair.client_pod = (client_pod.metadata.namespace, client_pod.metadata.name)
        pair.client_ip = client_pod.status.pod_ip
        pair.server_pod = (server_pod.metadata.namespace, server_pod.metadata.name, server_pod.status.pod_ip)
        pair.nodes = (client_pod.spec.node_name or "", server_pod.spec.node_name or "")
        try:
            self._migrate(pair, scenario)
        except BaseException:
            self._delete_pair(pair)
            raise
        return pair

    def _cluster_ip(self, namespace: str) -> str:
        """The httpbin Service's ClusterIP as the cluster assigned it; "" for a headless one (clusterIP: None)."""
        assigned = self._cluster().core.read_namespaced_service("httpbin", namespace).spec.cluster_ip
        return "" if assigned in (None, "", "None") else assigned

    def _migrate(self, pair: Pair, scenario: Scenario) -> None:
        """Istio's canary upgrade in place (istio.io, setup/upgrade/canary): the namespace relabelled to the
        target revision and `kubectl rollout restart`; the pod template's own istio.io/rev goes along, as it
        selects the injector where the namespace has no revision label. Done when the deployment's only pod
        is Ready and was injected by the target (the injector's istio.io/rev pod annotation)."""
        core, apps = self._cluster().core, self._cluster().apps
        sides = (("sleep", scenario.client, self.revisions.client, self.migrate_to.client),
                 ("httpbin", scenario.server, self.revisions.server, self.migrate_to.server))
        for role, workload, current, target in sides:
            if not workload.sidecar or not target or target == current:
                continue
            ns = pair.namespaces[workload.namespace]
            labels = core.read_namespace(ns).metadata.labels or {}
            if REV_LABEL in labels:
                core.patch_namespace(ns, {"metadata": {"labels": {REV_LABEL: target}}})
            restarted = datetime.now(UTC).isoformat(timespec="seconds")
            apps.patch_namespaced_deployment(role, ns, {"spec": {"template": {"metadata": {
                "labels": {REV_LABEL: target}, "annotations": {RESTARTED_AT: restarted}}}}})
            pod = self._wait_injected_by(ns, role, target)
            node = pod.spec.node_name or ""  # a restarted pod may land elsewhere
            if role == "sleep":
                pair.client_pod, pair.nodes = (ns, pod.metadata.name), (node, pair.nodes[1])
                pair.client_ip = pod.status.pod_ip
            else:
                pair.server_pod, pair.nodes = (ns, pod.metadata.name, pod.status.pod_ip), (pair.nodes[0], node)

    def _wait_injected_by(self, namespace: str, role: str, revision: str) -> client.V1Pod:
        deadline, problem = time.monotonic() + self.ready_timeout_s, "no pod yet"
        while time.monotonic() < deadline:
            pods = [p for p in self._cluster().core.list_namespaced_pod(
                namespace, label_selector=f"{ROLE_LABEL}={role}").items if not p.metadata.deletion_timestamp]
            injected = [(p.metadata.annotations or {}).get(REV_LABEL) for p in pods]
            ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
            if pods and set(injected) == {revision} and len(ready) == len(pods) == 1 and ready[0].status.pod_ip:
                return ready[0]
            problem = f"pods injected by {injected or 'none'}, {len(ready)} of {len(pods)} ready"
            time.sleep(1.0)
        raise WorkloadNotReady(f"{role} in {namespace} not moved to revision {revision} after "
                               f"{self.ready_timeout_s:g} s: {problem}")

    def _pair_ready(self, pair: Pair) -> bool:
        """Both pods still there, Ready, and the server at the address the probes judge the wire by."""
        core = self._cluster().core
        for ns, name, ip in (pair.client_pod + ("",), pair.server_pod):
            try:
                pod = core.read_namespaced_pod(name, ns)
            except client.ApiException as err:
                if err.status == 404:
                    return False
                raise
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if pod.metadata.deletion_timestamp or not ready or (ip and pod.status.pod_ip != ip):
                return False
        return True

    def _delete_pair(self, pair: Pair) -> None:
        if pair in self.pairs:
            self.pairs.remove(pair)
        self._delete_by_selector(run_selector(pair.run_id))

    def run_namespaces(self, handle: KubeHandle) -> RunNamespaces:
        if not isinstance(handle, KubeHandle):  # a co-deployment
            return handle.names
        return run_names(handle.scenario, handle.run_id)

    def apply(self, handle: KubeHandle, manifests: list[dict]) -> None:
        started = time.monotonic()
        resources = parse_resources(manifests, f"apply to run {handle.run_id}")
        scenario = dataclasses.replace(handle.scenario, manifests=tuple(manifests), resources=tuple(resources))
        labels = cell_labels(self.session, self.owner, handle.run_id, handle.cell_id)
        policies = policy_docs(scenario, handle.run_id, self.allow_mesh_wide, labels)
        for doc in policies:
            validate(doc, f"kube run {handle.run_id} cell {handle.cell_id}")
        if handle.pair:
            self._clear_pair(handle.pair)
        else:
            self._clear_cells(handle.run_id)
        handle.policies = []
        handle.scenario = scenario
        self._create_policies(handle, policies)
        self.push_times_s.append(time.monotonic() - started)

    def push_time_s(self) -> float:
        """The slowest apply so far (its convergence wait included); before one, the least a convergence wait
        takes (settle time, then `required` identical probes)."""
        floor = self.policy.settle_s + self.policy.required * self.policy.interval_s
        return max([floor, *self.push_times_s])

    def cluster_refusal(self, handle: KubeHandle, manifest: dict) -> str | None:
        """What the cluster says to `manifest` in this run's namespaces, sent as a server-side dry run
        (dryRun=All: Istio's validating webhook and the CRD schema judge it, nothing is stored;
        fieldValidation=Strict: an unknown field is refused rather than dropped). The refusal's message, or
        None when the cluster accepted it. Only an object the API can route is sent: an Istio kind it knows,
        with a namespace; for anything else the reason is returned instead."""
        meta = manifest.get("metadata") or {}
        if manifest.get("kind") not in ISTIO_KINDS or not meta.get("namespace"):
            return f"not sent: the API has no place for kind {manifest.get('kind')!r} in namespace {meta.get('namespace')!r}"
        doc = self.run_namespaces(handle).rewrite_manifest(manifest)
        group, version, plural = ISTIO_KINDS[doc["kind"]]
        try:
            self._cluster().custom.create_namespaced_custom_object(group, version, doc["metadata"]["namespace"],
                                                                   plural, doc, dry_run="All",
                                                                   field_validation="Strict")
        except client.ApiException as err:
            if err.status in (400, 403, 422):  # BadRequest (schema, strict fields), webhook denial, Invalid
                try:
                    return json.loads(err.body).get("message") or str(err.reason)
                except (TypeError, ValueError):
                    return str(err.body or err.reason)
            raise
        return None

    def probe(self, handle: KubeHandle, capture: bool = True) -> ProbeResult:
        if not capture:
            return self._probe_once(handle)
        ns, pod, ip = handle.server_pod
        port = apps.wire_port(handle.scenario)
        if handle.capture is None:
            handle.capture = PodCapture(self._cluster(), ns, pod, port, self.images)
        if handle.sender is None:
            handle.sender = PodCapture(self._cluster(), *handle.client_pod, port, self.images)
        canary = new_canary()
        harness_errors = (CaptureError, WireCaptureError, TimeoutError, client.ApiException)
        try:
            handle.capture.ensure_container()
            handle.sender.ensure_container()
            handle.capture.start(canary)
        except harness_errors as err:  # the harness failed, not the mesh: an error, never a pass
            return ProbeResult("error", None, -1, None, f"capture did not start (harness error): {err}",
                               canary=canary, extra=self._extra(handle))
        result = self._probe_once(handle, canary)
        try:
            # the heartbeat from the client's link proves the capture was on the path (probes/heartbeat.py): a
            # probe whose flow is then missing sent nothing to the server (verdict none)
            handle.sender.heartbeat(ip, port)
            time.sleep(0.3)  # let the last ACKs and FINs reach the capture
            pcap = self.out_dir / "pcaps" / f"{handle.cell_id}-{canary}.pcap"
            pcap.parent.mkdir(parents=True, exist_ok=True)
            pcap.write_bytes(handle.capture.stop(canary))
            wire = judge(pcap, canary, ip, port, heartbeat=True)
        except harness_errors as err:
            result.outcome = "error"
            result.failure_detail = (f"capture failed (harness error): {err}; the probe itself got "
                                     f"HTTP {result.http_status}, curl exit {result.curl_exit}")
            return result
        result.wire = wire
        if result.outcome != "error":  # a 200 that answered another request stays a harness error
            result.outcome = observed_outcome(handle.scenario.server.app, result, wire.verdict)
        return result

    def teardown(self, handle: KubeHandle) -> None:
        """Delete the cell's Istio objects and leave its pods idle for the next cell of the same shape (a
        co-deployment: all of it, by its run label)."""
        if self.cluster is None:
            return
        if not isinstance(handle, KubeHandle):
            self._delete_by_selector(run_selector(handle.run_id))
            return
        self._handles.pop(handle.cell_id, None)
        pair = handle.pair
        if pair is None or pair not in self.pairs:
            return
        pair.in_use, pair.last_used = False, time.monotonic()
        if self._faults_left_on(pair):
            self._delete_pair(pair)
            return
        try:
            self._clear_pair(pair)
        except BaseException:
            self._delete_pair(pair)
            raise
        handle.policies = []

    # --- co-deployment (cluster/kube/codeploy.py) ---------------------------------------------------------

    def can_co_deploy(self) -> bool:
        return not (self.migrate_to.client or self.migrate_to.server)  # _migrate runs per pair only

    def deploy_plan(self, plan):
        """Namespaces per group, every Istio object in one round, the workloads, then one wait: every pod Ready
        and every proxy's ACK of a push sent after the last object (syncz)."""
        from cluster.kube import codeploy

        run_id = self._next_id("plan", plan.root_namespace)
        docs = codeploy.render_plan(plan, run_id, self.session, self.owner, self.images, self.revisions,
                                    self.spread)  # validated before any API call
        names = plan.run_names(run_id)
        deployment = codeploy.KubeDeployment(plan.in_run(names), run_id, docs, names=names)
        cluster, started = self._cluster(), time.monotonic()
        try:
            for doc in (d for d in docs if d["kind"] == "Namespace"):
                cluster.core.create_namespace(doc)
            since = codeploy.create_round(self._create, [d for d in docs if d["kind"] in ISTIO_KINDS])
            for doc in (d for d in docs if d["kind"] != "Namespace" and d["kind"] not in ISTIO_KINDS):
                self._create(doc)
            created = time.monotonic()
            for role, workloads in (("httpbin", deployment.plan.servers), ("sleep", deployment.plan.clients)):
                for workload in workloads:
                    pod = self._wait_ready(workload.namespace, role, workload.sidecar)
                    deployment.pods[workload.namespace] = (workload.namespace, pod.metadata.name, pod.status.pod_ip)
            sidecars = [deployment.pods[w.namespace][:2] for w in (*deployment.plan.clients, *deployment.plan.servers)
                        if w.sidecar]
            if since and sidecars:
                deployment.sync = wait_pushed(lambda: read_syncz(self._cluster()), sidecars, since,
                                              self.policy.sync_timeout_s)
        except BaseException:
            self._delete_by_selector(run_selector(run_id))
            raise
        self.push_times_s.append(time.monotonic() - created)
        self.figures.pods_started += len(deployment.pods)
        self.figures.round((created - started) * 1000, (time.monotonic() - created) * 1000,
                           pods_started=len(deployment.pods), objects=len(deployment.plan.manifests))
        for cell in deployment.plan.cells:
            ns, pod, _ = deployment.pods[cell.client]
            spaces = {cell.client: cell.client, cell.server: cell.server}
            handle = KubeHandle(deployment.plan.cell_scenario(cell.cell_id), run_id, spaces, (ns, pod),
                                deployment.pods[cell.server], cell_id=f"{run_id}c{len(deployment.handles):x}",
                                client_ip=deployment.pods[cell.client][2])
            handle.sync = deployment.sync
            deployment.handles[cell.cell_id] = handle
        return deployment

    def plan_in_run(self, handle):
        return handle.plan

    def dry_run_plan(self, plan) -> list[tuple[str, dict]]:
        """(request, body) of everything deploy_plan creates, in order, rendered and validated, without a cluster
        (the capture containers, one per server pod, are added as for a single cell's: see dry_run)."""
        from cluster.kube import codeploy

        docs = codeploy.render_plan(plan, f"{self.owner}1", self.session, self.owner, self.images, self.revisions,
                                    self.spread)
        return [(f"create {d['kind']} " + "/".join(filter(None, (d["metadata"].get("namespace"),
                                                                   d["metadata"]["name"]))), d) for d in docs]

    def probe_cells(self, handle, cell_ids: list[str], capture: bool = True) -> dict[str, ProbeResult]:
        deployment = handle

        def probe(cell_id: str) -> ProbeResult:
            cell = deployment.handles[cell_id]
            if capture and cell.capture is None:
                ns, pod, _ = cell.server_pod
                client_ip = deployment.pods[deployment.plan.cell(cell_id).client][2]
                cell.capture = PodCapture(self._cluster(), ns, pod, apps.wire_port(cell.scenario), self.images,
                                          peer=client_ip)
            return self.probe(cell, capture=capture)

        def pods_of(cell_id: str) -> set[str]:
            cell = deployment.handles[cell_id]
            return {"/".join(cell.client_pod), "/".join(cell.server_pod[:2])}

        return probe_apart(cell_ids, pods_of, probe, PROBE_WORKERS)

    def _faults_left_on(self, pair: Pair) -> bool:
        """An unhealed network fault (a qdisc, a DROP rule) would change every later cell on these pods, and a
        killed sidecar's next restart would wait out the kubelet's back-off. KubeFaults records both per
        (namespace, pod)."""
        pods = {pair.client_pod, pair.server_pod[:2]}
        return any(faults.unhealed_on(pods) or faults.crashed_on(pods) for faults in self._faults)

    def diagnostics(self, handle: KubeHandle) -> Path:
        """Write the bundle for a failed cell under out_dir/diagnostics/<cell id>/ and return that folder."""
        pods = {"sleep": handle.client_pod, "httpbin": handle.server_pod[:2]}
        server_first = sorted(self.planes, key=lambda p: p.revision != self.revisions.server)
        parts = diagnostics.collect(self._cluster(), sorted(set(handle.namespaces.values())), pods,
                                    int(time.monotonic() - handle.started) + 60, self.kubeconfig, self.context,
                                    diagnostics.find_istioctl([p.version for p in server_first]))
        if handle.convergence:
            parts["convergence.json"] = json.dumps(handle.convergence.summary(), indent=1)
        if handle.sync:
            parts["xds-sync.json"] = json.dumps(handle.sync.summary(), indent=1)
        handle.diagnostics_dir = diagnostics.write(parts, self.out_dir / "diagnostics" / handle.cell_id)
        return handle.diagnostics_dir

    def tls_handshake(self, handle: KubeHandle, attempt, capture: bool = True):
        """The adversary suite's client: cluster/kube/adversary.py (not yet run on a cluster)."""
        from cluster.kube.adversary import tls_handshake

        return tls_handshake(self, handle, attempt, capture)

    def faults(self):
        from cluster.kube.faults import KubeFaults

        faults = KubeFaults(self)
        self._faults.append(faults)
        return faults

    def istio_minor(self) -> str | None:
        """The server side's control plane minor, from the istiod image tag (1.30.3 -> 1.30)."""
        wanted = self.revisions.server or (self.planes[0].revision if self.planes else None)
        for plane in self.planes:
            if plane.revision == wanted and plane.version.count(".") >= 1:
                return ".".join(plane.version.lstrip("v").split(".")[:2])
        return None

    def environment(self) -> dict[str, str]:
        env = {"mesh": self.name}
        if self.cluster:
            env.update(kube_context=self.cluster.context, kubernetes_version=self.cluster.version,
                       istio_control_planes=", ".join(f"{p.revision}={p.version}" for p in self.planes))
        if self.revisions.client or self.revisions.server:
            env["istio_revisions"] = f"client={self.revisions.client}, server={self.revisions.server}"
        if self.migrate_to.client or self.migrate_to.server:
            env["istio_moved_in_place_to"] = f"client={self.migrate_to.client}, server={self.migrate_to.server}"
        return env

    # --- steps -------------------------------------------------------------------------------------

    def _cluster(self) -> Cluster:
        if self.cluster is None:
            raise RuntimeError("KubeBackend.start() was not called")
        return self.cluster

    def _create(self, doc: dict) -> Any:
        cluster, kind, ns = self._cluster(), doc["kind"], doc["metadata"].get("namespace")
        if kind == "ServiceAccount":
            return cluster.core.create_namespaced_service_account(ns, doc)
        if kind == "Service":
            return cluster.core.create_namespaced_service(ns, doc)
        if kind == "Deployment":
            return cluster.apps.create_namespaced_deployment(ns, doc)
        group, version = doc["apiVersion"].split("/")
        plural = "envoyfilters" if kind == "EnvoyFilter" else ISTIO_KINDS[kind][2]
        return cluster.custom.create_namespaced_custom_object(group, version, ns, plural, doc)

    def _create_policies(self, handle: KubeHandle, policies: list[dict]) -> None:
        # The first create, too, comes CREATE_SPACING_S after the last deletion: its creationTimestamp (whole
        # seconds) is then later than any push for the deletions, which the syncz wait must not take for one.
        last, stored = self._deleted_at, None
        for doc in policies:
            wait = last + CREATE_SPACING_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            stored = self._create(doc)["metadata"]["creationTimestamp"]
            last = time.monotonic()
            handle.policies.append(doc)
        sidecars = [pod for pod, workload in ((handle.client_pod, handle.scenario.client),
                                              (handle.server_pod[:2], handle.scenario.server)) if workload.sidecar]
        since = datetime.fromisoformat(stored) if stored else handle.pair.cleared_at if handle.pair else None
        if since and sidecars:  # istiod pushed the change and the sidecars ACKed; the probe streak then confirms
            handle.sync = wait_pushed(lambda: read_syncz(self._cluster()), sidecars, since,
                                      self.policy.sync_timeout_s)
        if handle.pair:
            handle.pair.cleared_at = None
        handle.convergence = converge(lambda: self._probe_once(handle), _convergence_key, self.policy)
        if not handle.convergence.converged or (handle.sync and not handle.sync.synced and not handle.sync.unreadable):
            handle.diagnostics_dir = self.diagnostics(handle)  # keep the evidence while it is fresh

    def _clear_pair(self, pair: Pair) -> None:
        if self._clear_cells(pair.run_id):
            pair.cleared_at = self._server_time()

    def _server_time(self) -> datetime:
        """The API server's clock, from its HTTP Date header (whole seconds, floored): creationTimestamp and
        istiod's sentTime are the cluster's time, never this machine's."""
        response = self._cluster().core.list_namespace(limit=1, _preload_content=False)
        return parsedate_to_datetime(response.headers["Date"])

    def _clear_cells(self, run_id: str) -> bool:
        """Delete the Istio objects any cell left on this run's pods (the root namespace's too) and wait
        until they are gone, so the next cell's objects never meet them (same names, older timestamps)."""
        custom = self._cluster().custom
        deadline, deleted = time.monotonic() + DELETE_TIMEOUT_S, False
        while True:
            left = cell_objects(self._list_istio(cells_selector(run_id)), run_id)
            if not left:
                return deleted
            self._deleted_at, deleted = time.monotonic(), True
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id}: still there {DELETE_TIMEOUT_S:g} s after deletion: "
                                   + ", ".join(f"{kind} {ns}/{name}" for kind, ns, name in left))
            for kind, ns, name in left:
                group, version, plural = ISTIO_KINDS[kind]
                try:
                    custom.delete_namespaced_custom_object(group, version, ns, plural, name)
                except client.ApiException as err:
                    if err.status != 404:
                        raise
            time.sleep(0.2)

    def _list_istio(self, selector: str) -> list[dict]:
        custom, items = self._cluster().custom, []
        for kind, (group, version, plural) in ISTIO_KINDS.items():
            listed = custom.list_cluster_custom_object(group, version, plural, label_selector=selector)["items"]
            items += [{**item, "kind": kind} for item in listed]
        return items

    def _delete_by_selector(self, selector: str) -> list[str]:
        return delete_labelled(self._cluster(), selector)

    def _delete_namespace(self, name: str) -> None:
        try:
            self._cluster().core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException as err:
            if err.status not in (404, 409):  # gone, or already being deleted
                raise

    def _wait_ready(self, namespace: str, role: str, sidecar: bool) -> client.V1Pod:
        deadline = time.monotonic() + self.ready_timeout_s
        problem = "no pod yet"
        while time.monotonic() < deadline:
            pods = [p for p in self._cluster().core.list_namespaced_pod(
                namespace, label_selector=f"{ROLE_LABEL}={role}").items if not p.metadata.deletion_timestamp]
            revision = (self.revisions.server if role == "httpbin" else self.revisions.client) or "default"
            for pod in pods:
                names = [c.name for c in pod.spec.containers] + [c.name for c in pod.spec.init_containers or []]
                if (SIDECAR in names) != sidecar:
                    raise WorkloadNotReady(
                        f"{role} pod {namespace}/{pod.metadata.name}: "
                        + ("a sidecar was expected but istio-proxy was not injected" if sidecar else
                           "no sidecar was expected but istio-proxy was injected")
                        + f" (revision {revision}; see meshproof doctor --mesh kube)")
                ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
                if ready and pod.status.pod_ip:
                    return pod
                problem = _pod_problem(pod)
            time.sleep(1.0)
        raise WorkloadNotReady(f"{role} in {namespace} not ready after {self.ready_timeout_s:g} s: {problem}")

    def _probe_once(self, handle: KubeHandle, canary: str | None = None) -> ProbeResult:
        """One probe as the server's app calls for (curl, curl -k, or the TCP probe client), with the server
        sidecar's account of the peer it authenticated where it keeps one (TCP has no X-Forwarded-Client-Cert)."""
        canary = canary or new_canary()
        before = self._peer_log(handle)
        if handle.scenario.server.app in apps.TCP_APPS:
            result = self._probe_tcp(handle, canary)
        else:
            result = self._probe_http(handle, canary)
        if before is not None:
            account = self._server_account(handle, before)
            result.extra["server_sidecar"] = account
            result.peer_identity = result.peer_identity or apps.account_identity(account)
        if result.outcome != "error":
            result.outcome = observed_outcome(handle.scenario.server.app, result, None)
        return result

    def _probe_http(self, handle: KubeHandle, canary: str) -> ProbeResult:
        ns, pod = handle.client_pod
        deadline = apps.curl_deadline_s(handle.scenario.server.app)
        insecure = ["-k"] if handle.scenario.server.app == "https" else []  # the app's self-signed certificate
        command = ["curl", "-sS", *insecure, "--max-time", f"{deadline:g}", "-o", "-", "-w", CURL_WRITE_OUT,
                   "-X", "GET", "-H", f"{CANARY_HEADER}: {canary}", "--data-binary", f"canary={canary}", handle.url]
        done = exec_in(self._cluster(), ns, pod, "sleep", command, timeout_s=30)
        stdout, report = split_proxy_report(done.stdout)
        outcome, status, identity, detail = read_probe(stdout, done.stderr, done.exit_code, canary)
        return ProbeResult(outcome=outcome, http_status=status,
                           curl_exit=done.exit_code, peer_identity=identity, failure_detail=detail,
                           proxy_report=report if status != 200 else None,
                           canary=canary, elapsed_ms=done.elapsed_s * 1000,
                           command=_exec_line(ns, pod, "sleep", command), extra=self._extra(handle))

    def _probe_tcp(self, handle: KubeHandle, canary: str) -> ProbeResult:
        """The reference mesh's TCP probe client in the sleep pod; its account is kept whole in the result."""
        ns, pod = handle.client_pod
        command = apps.tcp_probe_command(handle.scenario.server.app, *handle.destination, canary)
        done = exec_in(self._cluster(), ns, pod, apps.PROBE_CONTAINER, command, timeout_s=30)
        account = read_account(done.stdout)
        if account is None:
            outcome, detail = "error", ("the TCP probe printed no account (harness error): "
                                        + (done.stderr.strip() or done.stdout.strip())[:500])
        else:
            outcome = tcp_outcome(account["result"], account.get("answer"), None, None)
            detail = None if account["result"] == "completed" else account.get("detail") or None
        return ProbeResult(outcome=outcome, http_status=None, curl_exit=done.exit_code, peer_identity=None,
                           failure_detail=detail, canary=canary, elapsed_ms=done.elapsed_s * 1000,
                           command=_exec_line(ns, pod, apps.PROBE_CONTAINER, command),
                           extra={**self._extra(handle), "tcp_probe": account})

    def _peer_log(self, handle: KubeHandle) -> list[dict[str, str]] | None:
        """The server sidecar's peer-identity log so far; None for a shape without it (apps.logs_peer_identity)."""
        if not apps.logs_peer_identity(handle.scenario.server):
            return None
        ns, pod, _ = handle.server_pod
        log = self._cluster().core.read_namespaced_pod_log(pod, ns, container=SIDECAR)
        return apps.without_heartbeat(apps.peer_log_entries(log))

    def _server_account(self, handle: KubeHandle, before: list[dict[str, str]]) -> dict | None:
        """The server sidecar's line for the probe just made. tcp_proxy logs a connection when it closes, which
        can follow the client's exit by a moment; a connection that never reached the server sidecar has none."""
        deadline = time.monotonic() + PEER_LOG_WAIT_S
        while True:
            account = apps.server_account(before, self._peer_log(handle) or [], handle.client_ip)
            if account is not None or time.monotonic() > deadline:
                return account
            time.sleep(0.2)

    @staticmethod
    def _extra(handle: KubeHandle) -> dict[str, Any]:
        extra: dict[str, Any] = {"run_id": handle.run_id, "cell_id": handle.cell_id, "reused_pods": handle.reused,
                                 "namespaces": handle.namespaces}
        if handle.pair and all(handle.pair.nodes):
            extra["nodes"] = {"client": handle.pair.nodes[0], "server": handle.pair.nodes[1],
                              "cross_node": handle.pair.nodes[0] != handle.pair.nodes[1]}
        if handle.convergence:
            extra["convergence"] = handle.convergence.summary()
        if handle.sync:
            extra["xds_sync"] = handle.sync.summary()
        if handle.diagnostics_dir:
            extra["diagnostics"] = str(handle.diagnostics_dir)
        return extra


def observed_outcome(app: str, result: ProbeResult, wire: Wire | None) -> str:
    """The probe's outcome in the oracle's words, by what the app speaks (the wire verdict when captured), with
    the reference mesh's mapping (cluster/backend.py). A TCP probe without an account is a harness error."""
    if app in apps.TCP_APPS:
        account = result.extra.get("tcp_probe")
        if account is None:
            return "error"
        return tcp_outcome(account["result"], account.get("answer"), wire, result.peer_identity)
    return outcome_of(result.http_status, result.curl_exit, wire, result.peer_identity, app_tls=app == "https")


def _exec_line(namespace: str, pod: str, container: str, command: list[str]) -> str:
    """The probe as a command to repeat by hand."""
    return f"kubectl exec -n {namespace} {pod} -c {container} -- " + " ".join(_quote(c) for c in command)


def delete_labelled(cluster: Cluster, selector: str) -> list[str]:
    """Delete the namespaces and the Istio objects (any namespace, e.g. the root one) matching a selector."""
    removed = []
    for kind, (group, version, plural) in ISTIO_KINDS.items():
        try:
            items = cluster.custom.list_cluster_custom_object(group, version, plural, label_selector=selector)["items"]
        except client.ApiException as err:
            if err.status == 404:
                continue
            raise
        for item in items:
            meta = item["metadata"]
            try:
                cluster.custom.delete_namespaced_custom_object(group, version, meta["namespace"], plural, meta["name"])
                removed.append(f"{kind} {meta['namespace']}/{meta['name']}")
            except client.ApiException as err:
                if err.status != 404:
                    raise
    for ns in cluster.core.list_namespace(label_selector=selector).items:
        if _terminating(ns):
            continue
        try:
            cluster.core.delete_namespace(ns.metadata.name, propagation_policy="Background")
            removed.append(f"namespace {ns.metadata.name}")
        except client.ApiException as err:
            if err.status not in (404, 409):
                raise
    return removed


def cell_objects(items: list[dict], run_id: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of the listed Istio objects that a cell on this run's pods created: the run
    label and a cell label, both checked here too, so nothing else is deleted whatever the listing matched."""
    found = []
    for item in items:
        meta = item["metadata"]
        labels = meta.get("labels") or {}
        if labels.get(RUN_LABEL) == run_id and labels.get(CELL_LABEL):
            found.append((item["kind"], meta["namespace"], meta["name"]))
    return sorted(found)


def reusable_pair(pairs: list[Pair], key: tuple) -> Pair | None:
    """An idle pair of this shape, the most recently used one (its pods are the likeliest still warm)."""
    return max((p for p in pairs if p.key == key and not p.in_use), key=lambda p: p.last_used, default=None)


def idle_pairs_to_evict(pairs: list[Pair], keep: int) -> list[Pair]:
    """The idle pairs beyond `keep`, least recently used first; pairs in use are never chosen."""
    idle = sorted((p for p in pairs if not p.in_use), key=lambda p: p.last_used)
    return idle[:max(0, len(idle) - keep)]


def clean_leftovers(kubeconfig: str | None = None, context: str | None = None) -> list[str]:
    """`meshproof clean --mesh kube`: everything any meshproof run left on this cluster, by label."""
    from cluster.kube.faults import restore_istiods, restore_validators

    cluster = connect(kubeconfig, context)
    try:
        return (restore_istiods(cluster.apps) + restore_validators(cluster.admission)
                + delete_labelled(cluster, leftover_selector()))
    finally:
        cluster.api.close()


def _terminating(namespace: client.V1Namespace) -> bool:
    return bool(namespace.status and namespace.status.phase == "Terminating")


def _convergence_key(result: ProbeResult) -> tuple:
    return (result.outcome, result.http_status, result.peer_identity)


# After the body, curl writes the client sidecar's report (the headers of cluster/manifests/response-flags.yaml)
# on a line of its own, then the status code.
PROXY_REPORT_MARK = "meshproof-proxy-report"
CURL_WRITE_OUT = (f"\\n{PROXY_REPORT_MARK}\\t%header{{{RESPONSE_FLAGS_HEADER}}}\\t"
                  f"%header{{{RESPONSE_FLAGS_HEADER}-reason}}\\n%{{http_code}}")


def split_proxy_report(stdout: str) -> tuple[str, dict[str, str | None] | None]:
    """(curl's output without the report line, the client sidecar's report): its response flags and upstream
    transport failure, None each where Envoy wrote "-" or nothing; no report when the line is missing."""
    rest, _, code = stdout.rpartition("\n")
    body, _, line = rest.rpartition("\n")
    if not line.startswith(PROXY_REPORT_MARK + "\t"):
        return stdout, None
    _, flags, reason = (line.split("\t") + ["", ""])[:3]
    report = {"response_flags": flags.strip() or None, "transport_failure": reason.strip() or None}
    return f"{body}\n{code}", {k: None if v == "-" else v for k, v in report.items()}


def parse_curl_output(stdout: str, stderr: str) -> tuple[int | None, str | None, str | None]:
    """(HTTP status or None when no response, peer identity, failure detail) from the probe's curl output:
    the /headers body, a newline, then the status code curl writes (000 when nothing came back)."""
    body, _, code = stdout.rpartition("\n")
    status = int(code) if code.strip().isdigit() and int(code) > 0 else None
    identity = _peer_identity(body) if status == 200 else None
    detail = None if status == 200 else (body.strip()[:500] or stderr.strip()[:500] or None)
    return status, identity, detail


def read_probe(stdout: str, stderr: str, curl_exit: int, canary: str) -> tuple[str, int | None, str | None,
                                                                             str | None]:
    """(outcome, HTTP status, peer identity, failure detail) of one probe. A 200 that does not echo this
    probe's canary answered some other request: a harness error, never a pass (as on the local mesh)."""
    status, identity, detail = parse_curl_output(stdout, stderr)
    outcome = outcome_of(status, curl_exit, None, identity)
    if status == 200 and curl_exit == 0 and echoed_canary(stdout.rpartition("\n")[0]) != canary:
        outcome = "error"
        detail = (f"the 200 did not echo this probe's canary {canary}: it answered another request; "
                  f"the probe got HTTP {status}, curl exit {curl_exit}")
    return outcome, status, identity, detail


def _peer_identity(body: str) -> str | None:
    """The client SPIFFE ID from httpbin's /headers echo. go-httpbin (Istio's sample) lists each header's
    values; they are joined as HTTP joins repeated headers, the shape probes.identity reads."""
    try:
        headers = json.loads(body).get("headers", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(headers, dict):
        return None
    flat = {k: ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in headers.items()}
    return peer_identity_from_headers(json.dumps({"headers": flat}))


def _pod_problem(pod: client.V1Pod) -> str:
    for status in (pod.status.container_statuses or []) + (pod.status.init_container_statuses or []):
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason:
            return f"container {status.name}: {waiting.reason} {waiting.message or ''}".strip()
    return f"phase {pod.status.phase}"


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:%=@-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"
