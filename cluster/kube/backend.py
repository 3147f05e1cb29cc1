"""The kube backend: the suites' scenarios on any cluster with Istio, through the official kubernetes client.

Safe on shared clusters: it creates only namespaces named `<scenario ns>-<run id>` and labelled with the
run, touches the root namespace only with --allow-mesh-wide, stops when someone else's mesh-wide policy
would change the expectations, and removes what it created by label (also after an interrupted run).
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
from pathlib import Path
from typing import Any

from kubernetes import client

from cluster.backend import MeshBackend, ProbeResult, outcome_of
from cluster.kube import diagnostics
from cluster.kube.capture import CaptureError, PodCapture
from cluster.kube.client import Cluster, KubeUnavailable, connect, exec_in
from cluster.kube.convergence import Convergence, ConvergencePolicy, converge
from cluster.kube.inspect import (
    ISTIO_KINDS,
    auto_mtls_enabled,
    control_planes,
    mesh_config,
    mesh_wide_policies,
    root_namespace,
)
from cluster.kube.render import (
    OWNER_LABEL,
    ROLE_LABEL,
    Images,
    Revisions,
    leftover_selector,
    namespace_docs,
    policy_docs,
    run_labels,
    run_selector,
    workload_docs,
)
from cluster.schemas.validate import validate
from meshproof.istio_api import parse_resources
from meshproof.scenario import Scenario
from probes.canary import HEADER as CANARY_HEADER
from probes.canary import echoed_canary, new_canary
from probes.errors import CaptureError as WireCaptureError
from probes.identity import peer_identity_from_headers
from probes.verdict import judge

SIDECAR = "istio-proxy"
CLIENT_REVISION_ENV, SERVER_REVISION_ENV = "MESHPROOF_CLIENT_REVISION", "MESHPROOF_SERVER_REVISION"
CREATE_SPACING_S = 1.05  # creationTimestamp has 1 s resolution; Istio lets the oldest conflicting policy win


class WorkloadNotReady(RuntimeError):
    """A workload did not become ready, or its sidecar is not what the scenario asked for."""


@dataclass
class KubeHandle:
    scenario: Scenario
    run_id: str
    namespaces: dict[str, str]  # scenario namespace -> run namespace
    client_pod: tuple[str, str]  # (namespace, name)
    server_pod: tuple[str, str, str]  # (namespace, name, pod IP)
    started: float = field(default_factory=time.monotonic)
    policies: list[dict] = field(default_factory=list)  # as created, for replacement and teardown
    convergence: Convergence | None = None
    capture: PodCapture | None = None
    diagnostics_dir: Path | None = None  # written when convergence timed out, or on request

    @property
    def url(self) -> str:
        server = self.scenario.server
        return f"http://httpbin.{self.namespaces[server.namespace]}.svc.cluster.local:{server.service_port}/headers"


class KubeBackend(MeshBackend):
    name = "kube"

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, revision: str | None = None,
                 *, client_revision: str | None = None, server_revision: str | None = None,
                 allow_mesh_wide: bool = False, images: Images | None = None,
                 convergence: ConvergencePolicy | None = None, ready_timeout_s: float = 180.0,
                 stale_after_s: float = 3600.0, out_dir: str | Path = "reports/out/kube",
                 connect_timeout_s: float = 3.0):
        self.kubeconfig, self.context = kubeconfig, context
        self.revisions = Revisions(client_revision or revision, server_revision or revision)
        self.allow_mesh_wide = allow_mesh_wide
        self.images = images or Images.from_env()
        self.policy = convergence or ConvergencePolicy()
        self.ready_timeout_s, self.stale_after_s = ready_timeout_s, stale_after_s
        self.out_dir, self.connect_timeout_s = Path(out_dir), connect_timeout_s
        self.owner = "k" + secrets.token_hex(3)  # this backend instance (one per pytest worker)
        # Shared by all xdist workers of one pytest run, so a worker never cleans its siblings' namespaces.
        self.session = re.sub(r"[^a-z0-9]", "", os.environ.get("PYTEST_XDIST_TESTRUNUID", "").lower())[:16] \
            or self.owner
        self.cluster: Cluster | None = None
        self.root_ns = "istio-system"
        self.planes: list = []
        self._seq = 0
        self._handles: dict[str, KubeHandle] = {}

    @classmethod
    def from_options(cls, options: Any) -> KubeBackend:
        """From the pytest/CLI options namespace (kubeconfig, context, istio_revision, allow_mesh_wide, ...)."""
        get = lambda name, default=None: getattr(options, name, default)
        # Mixed revisions (meshproof upgrade-check) reach pytest workers through the environment.
        return cls(get("kubeconfig"), get("context"), get("istio_revision"),
                   client_revision=get("client_revision") or os.environ.get(CLIENT_REVISION_ENV) or None,
                   server_revision=get("server_revision") or os.environ.get(SERVER_REVISION_ENV) or None,
                   allow_mesh_wide=bool(get("allow_mesh_wide", False)))

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.cluster = connect(self.kubeconfig, self.context, self.connect_timeout_s)
        self.planes = control_planes(self.cluster)
        if not self.planes:
            raise KubeUnavailable(f"no Istio control plane (deployment app=istiod) on context {self.cluster.context}")
        wanted = {r for r in (self.revisions.client, self.revisions.server) if r}
        missing = wanted - {p.revision for p in self.planes}
        if missing:
            raise KubeUnavailable(f"Istio revision(s) {sorted(missing)} not installed; installed: "
                                  f"{', '.join(sorted(p.revision for p in self.planes))}")
        mesh = mesh_config(self.cluster, self.planes[0])
        self.root_ns = root_namespace(mesh)
        if not auto_mtls_enabled(mesh):
            raise KubeUnavailable("meshConfig.enableAutoMtls is false on this cluster; the oracle assumes auto mTLS")
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
        self._delete_by_selector(f"{OWNER_LABEL}={self.owner}")
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

    def deploy(self, scenario: Scenario) -> KubeHandle:
        if scenario.root_namespace != self.root_ns:
            raise KubeUnavailable(f"scenario root_namespace {scenario.root_namespace!r} differs from the cluster's "
                                  f"meshConfig.rootNamespace {self.root_ns!r}")
        self._seq += 1
        run_id = f"{self.owner}{self._seq:x}"
        labels = run_labels(self.session, self.owner, run_id)
        policies = policy_docs(scenario, run_id, self.allow_mesh_wide, labels)  # refusals before creating
        namespaces = namespace_docs(scenario, run_id, self.session, self.owner, self.revisions)
        workloads = workload_docs(scenario, run_id, self.images, self.revisions)
        for doc in namespaces + workloads + policies:
            validate(doc, f"kube run {run_id}")
        cluster = self._cluster()  # everything above refuses bad input before any API call
        names = {d["metadata"]["labels"]["meshproof.io/scenario-namespace"]: d["metadata"]["name"]
                 for d in namespaces}
        handle = KubeHandle(scenario, run_id, names, ("", ""), ("", "", ""))
        self._handles[run_id] = handle
        try:
            for doc in namespaces:
                cluster.core.create_namespace(doc)
            for doc in workloads:
                self._create(doc)
            client_pod = self._wait_ready(names[scenario.client.namespace], "sleep", scenario.client.sidecar)
            server_pod = self._wait_ready(names[scenario.server.namespace], "httpbin", scenario.server.sidecar)
            handle.client_pod = (client_pod.metadata.namespace, client_pod.metadata.name)
            handle.server_pod = (server_pod.metadata.namespace, server_pod.metadata.name, server_pod.status.pod_ip)
            self._create_policies(handle, policies)
        except BaseException:
            self.teardown(handle)
            raise
        return handle

    def apply(self, handle: KubeHandle, manifests: list[dict]) -> None:
        resources = parse_resources(manifests, f"apply to run {handle.run_id}")
        scenario = dataclasses.replace(handle.scenario, manifests=tuple(manifests), resources=tuple(resources))
        labels = run_labels(self.session, self.owner, handle.run_id)
        policies = policy_docs(scenario, handle.run_id, self.allow_mesh_wide, labels)
        for doc in policies:
            validate(doc, f"kube run {handle.run_id}")
        self._delete_policies(handle)
        handle.scenario = scenario
        self._create_policies(handle, policies)

    def probe(self, handle: KubeHandle, capture: bool = True) -> ProbeResult:
        if not capture:
            return self._probe_once(handle)
        ns, pod, ip = handle.server_pod
        if handle.capture is None:
            handle.capture = PodCapture(self._cluster(), ns, pod, handle.scenario.server.target_port, self.images)
        canary = new_canary()
        harness_errors = (CaptureError, WireCaptureError, TimeoutError, client.ApiException)
        try:
            handle.capture.ensure_container()
            handle.capture.start(canary)
        except harness_errors as err:  # the harness failed, not the mesh: an error, never a pass
            return ProbeResult("error", None, -1, None, f"capture did not start (harness error): {err}",
                               canary=canary, extra=self._extra(handle))
        result = self._probe_once(handle, canary)
        try:
            time.sleep(0.3)  # let the last ACKs and FINs reach the capture
            pcap = self.out_dir / "pcaps" / f"{handle.run_id}-{canary}.pcap"
            pcap.parent.mkdir(parents=True, exist_ok=True)
            pcap.write_bytes(handle.capture.stop(canary))
            wire = judge(pcap, canary, ip, handle.scenario.server.target_port)
        except harness_errors as err:
            result.outcome = "error"
            result.failure_detail = (f"capture failed (harness error): {err}; the probe itself got "
                                     f"HTTP {result.http_status}, curl exit {result.curl_exit}")
            return result
        result.wire = wire
        if result.outcome != "error":  # a 200 that answered another request stays a harness error
            result.outcome = outcome_of(result.http_status, result.curl_exit, wire.get("verdict"),
                                        result.peer_identity)
        return result

    def teardown(self, handle: KubeHandle) -> None:
        if self.cluster is None:
            return
        self._delete_policies(handle)
        self._delete_by_selector(run_selector(handle.run_id))
        self._handles.pop(handle.run_id, None)

    def diagnostics(self, handle: KubeHandle) -> Path:
        """Write the bundle for a failed cell under out_dir/diagnostics/<run id>/ and return that folder."""
        pods = {"sleep": handle.client_pod, "httpbin": handle.server_pod[:2]}
        parts = diagnostics.collect(self._cluster(), sorted(set(handle.namespaces.values())), pods,
                                    int(time.monotonic() - handle.started) + 60, self.kubeconfig, self.context)
        if handle.convergence:
            parts["convergence.json"] = json.dumps(handle.convergence.summary(), indent=1)
        handle.diagnostics_dir = diagnostics.write(parts, self.out_dir / "diagnostics" / handle.run_id)
        return handle.diagnostics_dir

    def faults(self):
        from cluster.kube.faults import KubeFaults

        return KubeFaults(self)

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
        return env

    # --- steps -------------------------------------------------------------------------------------

    def _cluster(self) -> Cluster:
        if self.cluster is None:
            raise RuntimeError("KubeBackend.start() was not called")
        return self.cluster

    def _create(self, doc: dict) -> None:
        cluster, kind, ns = self._cluster(), doc["kind"], doc["metadata"].get("namespace")
        if kind == "ServiceAccount":
            cluster.core.create_namespaced_service_account(ns, doc)
        elif kind == "Service":
            cluster.core.create_namespaced_service(ns, doc)
        elif kind == "Deployment":
            cluster.apps.create_namespaced_deployment(ns, doc)
        else:
            group, version = doc["apiVersion"].split("/")
            plural = "envoyfilters" if kind == "EnvoyFilter" else ISTIO_KINDS[kind][2]
            cluster.custom.create_namespaced_custom_object(group, version, ns, plural, doc)

    def _create_policies(self, handle: KubeHandle, policies: list[dict]) -> None:
        last = 0.0
        for doc in policies:
            wait = last + CREATE_SPACING_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._create(doc)
            last = time.monotonic()
            handle.policies.append(doc)
        handle.convergence = converge(lambda: self._probe_once(handle), _convergence_key, self.policy)
        if not handle.convergence.converged:  # a propagation timeout: keep the evidence while it is fresh
            handle.diagnostics_dir = self.diagnostics(handle)

    def _delete_policies(self, handle: KubeHandle) -> None:
        custom = self._cluster().custom
        for doc in handle.policies:
            group, version = doc["apiVersion"].split("/")
            try:
                custom.delete_namespaced_custom_object(group, version, doc["metadata"]["namespace"],
                                                       ISTIO_KINDS[doc["kind"]][2], doc["metadata"]["name"])
            except client.ApiException as err:
                if err.status != 404:
                    raise
        handle.policies = []

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
        canary = canary or new_canary()
        ns, pod = handle.client_pod
        command = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\\n%{http_code}", "-X", "GET",
                   "-H", f"{CANARY_HEADER}: {canary}", "--data-binary", f"canary={canary}", handle.url]
        done = exec_in(self._cluster(), ns, pod, "sleep", command, timeout_s=30)
        outcome, status, identity, detail = read_probe(done.stdout, done.stderr, done.exit_code, canary)
        return ProbeResult(outcome=outcome, http_status=status,
                           curl_exit=done.exit_code, peer_identity=identity, failure_detail=detail,
                           canary=canary, elapsed_ms=done.elapsed_s * 1000,
                           command=f"kubectl exec -n {ns} {pod} -c sleep -- " + " ".join(_quote(c) for c in command),
                           extra=self._extra(handle))

    @staticmethod
    def _extra(handle: KubeHandle) -> dict[str, Any]:
        extra: dict[str, Any] = {"run_id": handle.run_id, "namespaces": handle.namespaces}
        if handle.convergence:
            extra["convergence"] = handle.convergence.summary()
        if handle.diagnostics_dir:
            extra["diagnostics"] = str(handle.diagnostics_dir)
        return extra


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


def clean_leftovers(kubeconfig: str | None = None, context: str | None = None) -> list[str]:
    """`meshproof clean --mesh kube`: everything any meshproof run left on this cluster, by label."""
    from cluster.kube.faults import restore_istiods

    cluster = connect(kubeconfig, context)
    try:
        return restore_istiods(cluster.apps) + delete_labelled(cluster, leftover_selector())
    finally:
        cluster.api.close()


def _terminating(namespace: client.V1Namespace) -> bool:
    return bool(namespace.status and namespace.status.phase == "Terminating")


def _convergence_key(result: ProbeResult) -> tuple:
    return (result.outcome, result.http_status, result.peer_identity)


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
