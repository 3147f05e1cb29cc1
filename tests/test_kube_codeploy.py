"""The co-deployed matrix on a cluster, as far as no cluster is needed: what is rendered (validated against the
pinned schemas by render_plan itself), in which order, and which objects are created apart in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cluster.kube.codeploy import CREATE_SPACING_S, create_round, render_plan
from cluster.kube.render import Images, Revisions
from meshproof.codeploy import plan, plan_rounds
from meshproof.scenario import scenario_from_dict
from suites.matrix import matrix_scenarios, pa, scenario, scope_scenarios

RUN = "k1a2b3c1"


def matrix_plan():
    return plan([(c, scenario_from_dict(d, c)) for c, d in matrix_scenarios()])[0]


def rendered():
    return render_plan(matrix_plan(), RUN, "sess", "k1a2b3c", Images(), Revisions(None, None), "required")


def test_the_matrix_is_twenty_pods_in_twenty_run_namespaces_and_one_round_of_objects():
    docs = rendered()
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Namespace") == 20 and kinds.count("Deployment") == 20
    assert kinds.count("PeerAuthentication") == 8 and kinds.count("DestinationRule") == 80
    # namespaces first, then every Istio object, then the workloads: pods start with the whole configuration
    istio = [i for i, k in enumerate(kinds) if k in ("PeerAuthentication", "DestinationRule")]
    workloads = [i for i, k in enumerate(kinds) if k in ("Deployment", "Service", "ServiceAccount", "EnvoyFilter")]
    assert max(i for i, k in enumerate(kinds) if k == "Namespace") < min(istio) and max(istio) < min(workloads)
    spaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert all(d["metadata"].get("namespace", d["metadata"]["name"]) in spaces for d in docs)
    assert all(s.endswith(f"-{RUN}") for s in spaces)
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "two objects of one kind share a name in one namespace"


def test_each_client_sidecar_opens_a_connection_per_request_to_every_server_it_calls():
    docs = rendered()
    filters = [d for d in docs if d["kind"] == "EnvoyFilter" and "no-connection-reuse" in d["metadata"]["name"]]
    assert len(filters) == 5 * 10  # 5 client namespaces with a sidecar, each calling the 10 servers
    hosts = {(f["metadata"]["namespace"], f["spec"]["configPatches"][0]["match"]["cluster"]["service"])
             for f in filters}
    assert len(hosts) == 50


def test_clients_keep_apart_from_every_server_of_the_run():
    for doc in (d for d in rendered() if d["kind"] == "Deployment"):
        term = doc["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"][0]
        other = "httpbin" if doc["metadata"]["name"] == "sleep" else "sleep"
        assert term["labelSelector"]["matchLabels"]["meshproof.io/role"] == other
        assert term["namespaceSelector"] == {"matchLabels": {"meshproof.io/run": RUN}}


class Clock:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def create(self, doc):
        stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=int(self.now))
        return {"metadata": {"creationTimestamp": stamp.isoformat()}}


def test_only_objects_istio_orders_by_creation_time_are_spaced():
    clock = Clock()
    policies = [d for d in rendered() if d["kind"] in ("PeerAuthentication", "DestinationRule")]
    last = create_round(clock.create, policies, clock.sleep, lambda: clock.now)
    assert clock.slept == [] and last is not None  # the matrix has no ties: one burst
    conflicting = [pa("STRICT", name="a"), pa("PERMISSIVE", name="b")]
    second = scenario_from_dict(scenario(conflicting), "t")
    clock = Clock()
    create_round(clock.create, [*second.manifests], clock.sleep, lambda: clock.now)
    assert clock.slept == [CREATE_SPACING_S]


def test_scope_rounds_render_valid_objects_and_stay_within_their_pods():
    rounds, _ = plan_rounds([(c, scenario_from_dict(d, c)) for c, d in scope_scenarios()], 20)
    for index, shared in enumerate(rounds):
        docs = render_plan(shared, f"{RUN}{index}", "sess", "k1a2b3c", Images(), Revisions(None, None))
        assert sum(d["kind"] == "Deployment" for d in docs) == len(shared.clients) + len(shared.servers) <= 20


def test_canary_legs_keep_a_deployment_per_cell():
    """upgrade-check moves a pair's pods to another revision after they start (per pair only): a co-deployment
    would skip that move, so such a backend says it cannot co-deploy and the suites deploy per cell."""
    from cluster.kube.backend import KubeBackend

    assert KubeBackend().can_co_deploy()
    assert not KubeBackend(migrate_to=Revisions("1-30-3", None)).can_co_deploy()
