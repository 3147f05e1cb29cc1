"""The runner predicts for the scenario as a backend deployed it, in run namespaces, and compares there.

Before, the oracle predicted spiffe://cluster.local/ns/sleep/sa/sleep while the kube backend's client ran in
sleep-<run>: every mTLS cell of the matrix and the scope suite failed with "identity differ". Here the
prediction is checked against the identity of the client workload the kube backend renders (its
Deployment's namespace and service account), without a cluster."""

from __future__ import annotations

import copy
import json

import pytest

from cluster.backend import ProbeResult
from cluster.kube.backend import KubeBackend, KubeHandle
from cluster.kube.render import Images, Revisions, namespace_map, workload_docs
from meshproof.scenario import scenario_from_dict, spiffe_id
from reports import allure_cell
from suites.interpret import compare
from suites.matrix import matrix_scenarios, scope_scenarios
from suites.runner import predict_for_run
from tests.kube_scenarios import RUN
from testsupport.wire import wire_verdict

CELLS = list(matrix_scenarios()) + list(scope_scenarios())


def kube_handle(scenario) -> KubeHandle:
    return KubeHandle(scenario, RUN, namespace_map(scenario, RUN), ("", ""), ("", "", ""))


def rendered_client_identity(scenario) -> str:
    [sleep] = [d for d in workload_docs(scenario, RUN, Images(), Revisions())
               if d["kind"] == "Deployment" and d["metadata"]["name"] == "sleep"]
    return spiffe_id(sleep["metadata"]["namespace"], sleep["spec"]["template"]["spec"]["serviceAccountName"])


def observed_as_predicted(prediction, identity) -> ProbeResult:
    """What a cluster that behaves as the oracle says returns: the app sees the rendered client's identity."""
    envoy = prediction.envoy  # a 503 as predicted carries the client sidecar's report the rule names
    report = {"response_flags": envoy["flags"], "transport_failure": envoy["failure"]} if envoy else None
    return ProbeResult(prediction.outcome, 200 if prediction.outcome in ("mtls", "plaintext") else None, 0,
                       identity if prediction.peer_identity else None, wire=wire_verdict(prediction.wire),
                       proxy_report=report)


@pytest.mark.parametrize("cell_id,raw", CELLS, ids=[c for c, _ in CELLS])
def test_kube_cells_predict_the_identity_the_cluster_will_show(cell_id, raw):
    scenario = scenario_from_dict(copy.deepcopy(raw), cell_id)
    _, run_scenario, prediction = predict_for_run(KubeBackend(), kube_handle(scenario), scenario)
    identity = rendered_client_identity(scenario)
    assert run_scenario.client.spiffe_id == identity
    verdict = compare(prediction, observed_as_predicted(prediction, identity), captured=False)
    assert verdict, verdict.message
    if prediction.peer_identity:
        # The comparison can go red: the identity of the scenario's own names is not the run's.
        wrong = compare(prediction, observed_as_predicted(prediction, scenario.client.spiffe_id), captured=False)
        assert not wrong and "identity differ" in wrong.message


def test_records_carry_identities_in_the_scenarios_names_and_the_run_beside(tmp_path, monkeypatch):
    """So two runs (or upgrade-check legs) with different run ids compare cell by cell."""
    monkeypatch.setenv("MESHPROOF_CELLS_DIR", str(tmp_path))
    cell_id, raw = next(c for c in CELLS if c[0] == "client-sidecar/server-sidecar/pa-strict/dr-istio-mutual")
    scenario = scenario_from_dict(copy.deepcopy(raw), cell_id)
    backend = KubeBackend()
    names, _, prediction = predict_for_run(backend, kube_handle(scenario), scenario)
    observed = observed_as_predicted(prediction, rendered_client_identity(scenario))
    allure_cell.record(cell_id, (), scenario, prediction, observed, compare(prediction, observed, False), 1.0, backend.name, names)
    [record] = [json.loads(line) for path in tmp_path.glob("*.jsonl") for line in path.read_text().splitlines()]
    assert record["expected"]["peer_identity"] == record["observed"]["peer_identity"] == \
        "spiffe://cluster.local/ns/sleep/sa/sleep"
    assert record["observed"]["run"] == {"run_id": RUN, "namespaces": {"httpbin": f"httpbin-{RUN}",
                                                                       "sleep": f"sleep-{RUN}"},
                                         "peer_identity": f"spiffe://cluster.local/ns/sleep-{RUN}/sa/sleep"}
