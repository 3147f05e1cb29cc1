"""A co-deployment (meshproof/codeploy.py Plan) on the reference mesh: one cluster with a pod per group
namespace and a Service per server group, every sidecar configured from every object in one push, then one
probe per cell, many at once.

Unlike the pod pairs of backend.py (each its own little cluster with one Service), every pod here resolves
and reaches every Service, and every sidecar's config is compiled from the whole object set: a client
sidecar has one outbound cluster per Service, each with the DestinationRule its own lookup picks.

Probes run in parallel, never two at once on one pod (cluster.backend.probe_apart). Each probe's capture keeps
only its own client's flows (backend.py LocalBackend._captured), and the verdict picks the flows to its
server's port.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cluster.backend import ProbeResult, probe_apart
from cluster.local import controlplane
from cluster.local.pods import Handle, LocalPod, Pair, destroy_pods, service_of
from cluster.local.push import Debouncer
from cluster.local.workloads import Httpbin, server_app
from meshproof.codeploy import Plan
from meshproof.istio_api import parse_resources
from meshproof.namespaces import RunNamespaces

# Probes in flight at once: each mostly waits (curl through two Envoys, the capture settling), so more than
# the cores; pods bound it too (never two probes on one pod: at most 10 at once in the matrix).
PROBE_WORKERS = 8


@dataclass
class Deployment:
    plan: Plan  # in the run's namespaces
    names: RunNamespaces
    pods: dict[str, LocalPod]  # by namespace
    services: list[controlplane.Service]
    configs: dict[str, controlplane.SidecarConfig] = field(default_factory=dict)  # by pod name
    pairs: dict[str, Pair] = field(default_factory=dict)  # a cell's client -> server view, by cell id


def deploy(backend, plan: Plan) -> Deployment:
    """Start every pod with the config compiled from every object: one configuration round."""
    backend._refuse_while_away()
    names = plan.run_names(backend.run.prefix)
    run_plan = plan.in_run(names)
    manifests = list(run_plan.manifests)
    resources = parse_resources(manifests, "co-deployment")  # raises before anything exists
    pods: dict[str, LocalPod] = {}
    for role, workloads in (("server", run_plan.servers), ("client", run_plan.clients)):
        for workload in workloads:
            pods[workload.namespace] = backend.new_pod(role, workload, backend.allocate_index())
    services = [service_of(pods[w.namespace], backend.vip(server_index(backend, pods[w.namespace])))
                for w in run_plan.servers]
    deployment = Deployment(run_plan, names, pods, services)
    compiling = time.monotonic()
    with_policy = controlplane.policy_keys(manifests)
    configs = {pod.name: controlplane.compile_sidecar(pod.model(), services, resources, run_plan.root_namespace,
                                                      with_policy)
               for pod in pods.values() if pod.workload.sidecar}
    started = time.monotonic()
    backend.deployments.append(deployment)
    # The objects reach the sidecars when the control plane pushes (--push-delay debounces it as istiod does).
    Debouncer(lambda _key, change: _start(backend, deployment, change),
              after_s=backend.debouncer.after_s).deliver("co-deployment", configs)
    converged = time.monotonic()
    backend.push_times_s.append(converged - started)
    backend.figures.pods_started += len(pods)
    backend.figures.round((started - compiling) * 1000, (converged - started) * 1000, pods_started=len(pods),
                          objects=len(manifests), cells=len(run_plan.cells))
    for cell in run_plan.cells:
        server = pods[cell.server]
        vip = next(s.vip for s in services if s.namespace == cell.server)
        deployment.pairs[cell.cell_id] = Pair(("co-deployment", cell.cell_id), server_index(backend, server),
                                              pods[cell.client], server, vip, in_use=True,
                                              configs=deployment.configs)
    return deployment


def server_index(backend, pod: LocalPod) -> int:
    return int(pod.veth.removeprefix(backend.run.prefix)[:-1], 16)


def _start(backend, deployment: Deployment, configs: dict[str, controlplane.SidecarConfig]) -> None:
    """Every pod at once (most of the time is waiting for processes), then until every sidecar serves."""
    backend.version += 1
    version = f"v{backend.version}"
    pods = list(deployment.pods.values())
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(backend.start_pod, pod, deployment.services, configs.get(pod.name), version,
                                   app=False) for pod in pods]:
            future.result()
    # One httpbin process answers in every httpbin server pod (workloads.Httpbin `serves`): a Python per pod
    # would cost ~50 MB and a second of start-up CPU each. Other apps run one process per pod.
    servers = [pod for pod in pods if pod.role == "server" and pod.workload.app == "httpbin"]
    apps = []
    if servers:
        shared = Httpbin(servers[0].name, servers[0].dir, servers[0].workload.target_port, backend.runtime,
                         serves=tuple((pod.name, pod.workload.target_port) for pod in servers[1:]))
        apps.append(shared)
        for pod in servers:
            pod.app = shared
    for pod in pods:
        if pod.role == "server" and pod.workload.app != "httpbin":
            pod.app = server_app(pod.workload, pod.name, pod.dir, backend.runtime)
            apps.append(pod.app)
    for app in apps:
        app.start(backend.run.record_pid)
    for pod in pods:
        if pod.sidecar:
            pod.sidecar.wait_ready()
            pod.sidecar.wait_version(version)
            deployment.configs[pod.name] = configs[pod.name]
    for app in apps:
        app.wait_ready()


def handle(deployment: Deployment, cell_id: str) -> Handle:
    """The pair view of one cell, as backend.py's probe and diagnostics take it."""
    scenario = deployment.plan.cell_scenario(cell_id)
    return Handle(deployment.pairs[cell_id], scenario, deployment.names, list(scenario.resources))


def probe_cells(backend, deployment: Deployment, cell_ids: list[str], capture: bool) -> dict[str, ProbeResult]:
    def pods_of(cell_id: str) -> set[str]:
        return {deployment.pairs[cell_id].client.name, deployment.pairs[cell_id].server.name}

    return probe_apart(cell_ids, pods_of, lambda c: backend.probe(Handle(deployment.pairs[c], None, deployment.names),
                                                                  capture=capture), PROBE_WORKERS)


def teardown(backend, deployment: Deployment) -> None:
    destroy_pods(list(deployment.pods.values()))
    if deployment in backend.deployments:
        backend.deployments.remove(deployment)
