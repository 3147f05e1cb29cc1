"""Many cells in one deployment (meshproof/codeploy.py, cluster/local/codeploy.py, suites/codeployed.py).

The plan: its groups, its objects, which cells keep their own deployment; the oracle predicting each cell from
the whole object set gives what it gives for the cell alone (every matrix and scope cell), and it does read
the whole set. On the reference mesh (root): both modes give the same outcome for every matrix cell, and a
capture on a server that serves two clients at once holds, and judges, only its own client's flows.
"""

from __future__ import annotations

import os
import threading

import pytest

from meshproof.codeploy import alone_reason, plan, plan_rounds
from meshproof.namespaces import RunNamespaces
from meshproof.scenario import scenario_from_dict
from suites.expectations import expect
from suites.matrix import matrix_scenarios, pa, scenario, scope_scenarios

RUN = "t1"
root = pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")


def parsed(cells):
    return [(cell_id, scenario_from_dict(data, source=cell_id)) for cell_id, data in cells]


def alone_prediction(scn):
    names = RunNamespaces.for_scenario(scn, RUN)
    p = expect(names.rewrite_scenario(scn))
    return p.outcome, p.wire, names.normalise_identity(p.peer_identity), p.rule


def shared_predictions(deployed, cell_ids):
    out = {}
    for cell_id in cell_ids:
        p = expect(deployed.cell_scenario(cell_id))
        names = deployed.cell(cell_id).names(RUN, deployed.root_namespace)
        out[cell_id] = (p.outcome, p.wire, names.normalise_identity(p.peer_identity), p.rule)
    return out


def test_matrix_plan_is_ten_client_and_ten_server_namespaces():
    matrix, alone = plan(parsed(matrix_scenarios()))
    assert alone == []
    assert len(matrix.clients) == 10 and len(matrix.servers) == 10 and len(matrix.cells) == 100
    # 8 server namespaces with a PeerAuthentication, 8 client namespaces with a rule per server host
    kinds = [m["kind"] for m in matrix.manifests]
    assert kinds.count("PeerAuthentication") == 8 and kinds.count("DestinationRule") == 80
    names = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in matrix.manifests}
    assert len(names) == len(matrix.manifests), "two objects share a name in one namespace"
    assert len({(c.client, c.server) for c in matrix.cells}) == 100, "two cells share a client -> server pair"


@pytest.mark.parametrize("suite", [matrix_scenarios, scope_scenarios])
def test_oracle_predicts_each_cell_from_the_whole_deployment_as_alone(suite):
    cells = parsed(suite())
    shared, alone = plan(cells)
    deployed = shared.in_run(shared.run_names(RUN))
    predicted = shared_predictions(deployed, [c.cell_id for c in shared.cells])
    assert len(predicted) >= 40
    for cell_id, scn in cells:
        if cell_id not in alone:
            assert predicted[cell_id] == alone_prediction(scn), cell_id


def test_whole_deployment_prediction_reads_every_namespace():
    """A mesh-wide STRICT added to the deployment changes cells it does not belong to: the prediction really
    comes from the whole object set, not from the cell's own objects."""
    shared, _ = plan(parsed(matrix_scenarios()))
    cell = "client-no-sidecar/server-sidecar/pa-none/dr-none"
    before = expect(shared.cell_scenario(cell)).outcome
    widened = type(shared)(shared.clients, shared.servers, (pa("STRICT", "istio-system"), *shared.manifests),
                           shared.cells, shared.istio_version, shared.root_namespace)
    assert (before, expect(widened.cell_scenario(cell)).outcome) == ("plaintext", "reset")


def test_cells_that_reach_beyond_their_namespaces_keep_their_own_deployment():
    def one(resources, **options):
        return scenario_from_dict(scenario(resources, **options), source="t")

    assert "root namespace" in alone_reason(one([pa("STRICT", "istio-system")]))
    from suites.matrix import dr
    assert "host '*'" in alone_reason(one([dr("ISTIO_MUTUAL", host="*")]))
    assert "exported to the client's namespace" in alone_reason(
        one([dr("ISTIO_MUTUAL", namespace="httpbin", export_to=["sleep"])]))
    assert alone_reason(one([pa("STRICT"), dr("SIMPLE")])) is None
    shared, alone = plan(parsed(scope_scenarios()))
    assert "scope/pa-mesh-strict" in alone and all(c.cell_id not in alone for c in shared.cells)


# --- on the reference mesh ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from cluster.factory import started
    from cluster.local.backend import LocalBackend

    with started(LocalBackend(out_dir=tmp_path_factory.mktemp("codeploy"))) as mesh:
        yield mesh


def observed(result, names):
    return result.outcome, result.wire.verdict if result.wire else None, names.normalise_identity(result.peer_identity)


@root
@pytest.mark.root
@pytest.mark.mesh
def test_both_modes_give_the_same_outcome_for_every_matrix_cell(backend):
    cells = parsed(matrix_scenarios())
    isolated = {}
    for cell_id, scn in cells:
        handle = backend.deploy(scn)
        try:
            isolated[cell_id] = observed(backend.probe(handle), handle.names)
        finally:
            backend.teardown(handle)
    shared, _ = plan(cells)
    rounds, pods = backend.figures.config_rounds, backend.figures.pods_started
    deployment = backend.deploy_plan(shared)
    assert (backend.figures.config_rounds - rounds, backend.figures.pods_started - pods) == (1, 20)
    try:
        results = backend.probe_cells(deployment, [c.cell_id for c in shared.cells])
        codeployed = {c.cell_id: observed(results[c.cell_id], c.names(backend.run.prefix, shared.root_namespace))
                      for c in deployment.plan.cells}
    finally:
        backend.teardown(deployment)
    assert codeployed == isolated
    # and both are what the oracle says (the wire only where it judges it)
    for cell_id, scn in cells:
        outcome, _, identity, _ = alone_prediction(scn)
        assert (isolated[cell_id][0], isolated[cell_id][2]) == (outcome, identity), cell_id


@root
@pytest.mark.root
@pytest.mark.mesh
def test_a_capture_holds_only_its_own_clients_flows(backend):
    """Two clients call one PERMISSIVE server at the same moment, one in cleartext (no sidecar), one over Istio
    mTLS: each probe's capture holds only its own client's flows, so neither lends its flow to the other."""
    cells = parsed([("naked", scenario([], client_sidecar=False)), ("meshed", scenario([]))])
    shared, _ = plan(cells)
    assert len(shared.servers) == 1 and len(shared.clients) == 2
    deployment = backend.deploy_plan(shared)
    try:
        handles = {c: backend.cell_handle(deployment, c) for c in ("naked", "meshed")}
        results, start = {}, threading.Barrier(2)

        def probe(cell_id):
            start.wait()
            results[cell_id] = backend.probe(handles[cell_id])

        threads = [threading.Thread(target=probe, args=(c,)) for c in handles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for cell_id, verdict in (("naked", "plaintext"), ("meshed", "mtls")):
            wire = results[cell_id].wire
            assert wire.verdict == verdict, (cell_id, wire.reason)
            client_ip = handles[cell_id].pair.client.ip
            assert {f["client"].split(":")[0] for f in wire.flows} == {client_ip}, cell_id
    finally:
        backend.teardown(deployment)


@root
@pytest.mark.root
@pytest.mark.mesh
def test_scope_cells_in_rounds_give_what_each_gives_alone(backend):
    """The scope cells that can share a deployment, in rounds of at most 20 pods (as on a cluster), observed
    as the oracle predicts each of them alone: outcome and identity, and the wire where it is judged."""
    cells = parsed(scope_scenarios())
    rounds, alone = plan_rounds(cells, 20)
    assert len(rounds) == 3 and all(len(r.clients) + len(r.servers) <= 20 for r in rounds)
    predicted = {cell_id: alone_prediction(scn) for cell_id, scn in cells}
    seen = {}
    for shared in rounds:
        deployment = backend.deploy_plan(shared)
        try:
            results = backend.probe_cells(deployment, [c.cell_id for c in shared.cells])
            for c in deployment.plan.cells:
                seen[c.cell_id] = observed(results[c.cell_id], c.names(backend.run.prefix, shared.root_namespace))
        finally:
            backend.teardown(deployment)
    assert len(seen) == len(cells) - len(alone) >= 40
    for cell_id, (outcome, wire, identity) in seen.items():
        want_outcome, want_wire, want_identity, _ = predicted[cell_id]
        assert (outcome, identity) == (want_outcome, want_identity), cell_id
        if want_outcome in ("mtls", "plaintext", "reset"):
            assert wire == want_wire, cell_id


@pytest.mark.parametrize("fields", [{"server": {"app": "tcp-echo", "port_name": "tcp"}},
                                    {"server": {"port_name": "web"}},
                                    {"server": {"headless": True, "service_port": 8080}},
                                    {"request": {"to": "pod-ip"}}])
def test_cells_beyond_one_http_service_keep_their_own_deployment(fields):
    """One httpbin serves every server pod of a co-deployment and each cell is probed through its Service: a
    cell with another app, port name, Service kind or destination would be probed as the default one."""
    from meshproof.scenario import scenario_from_dict

    data = {"client": {"namespace": "sleep"}, "server": {"namespace": "httpbin", **fields.get("server", {})},
            "request": fields.get("request", {})}
    assert "a co-deployment holds httpbin through a ClusterIP Service only" in alone_reason(scenario_from_dict(data))
    assert alone_reason(scenario_from_dict({"client": {"namespace": "sleep"}, "server": {"namespace": "httpbin"}})) \
        is None
