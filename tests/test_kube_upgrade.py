"""upgrade-check's judgement, without a cluster: legs, regressions against the baseline and the oracle,
the report's per-leg Allure results, and the command's refusals."""

from __future__ import annotations

import json

import pytest

from meshproof.cli import build_parser, main
from meshproof.upgrade import Leg, _merge_allure, compare_leg, leg_command, legs, markdown, regressions
from reports.cells import CellRecord

SLEEP = "spiffe://cluster.local/ns/sleep/sa/sleep"
LEG_RUNS = iter(f"k{i:06x}1" for i in range(1, 10_000))  # each leg's pods live in namespaces of its own run


def cell(name, passed=True, outcome="mtls", wire="mtls", identity=SLEEP, expected=None, run=None):
    """A record as a leg writes it; with `run`, identities carry that run's namespaces (an earlier run's
    records given as --baseline, before the suites recorded them in the scenario's names)."""
    run = run or next(LEG_RUNS)
    raw = identity.replace("/ns/sleep/", f"/ns/sleep-{run}/") if identity else None
    observed = {"outcome": outcome, "wire": wire, "peer_identity": raw, "run": {"run_id": run}}
    return CellRecord(cell=name, passed=passed,
                      expected=expected or {"outcome": outcome, "wire": wire, "peer_identity": raw},
                      observed=observed, message="" if passed else f"expected {outcome} differs")


def effective(leg: Leg) -> tuple[str, str]:
    return (leg.client_to or leg.client_revision or leg.default_tag, leg.server_to or leg.server_revision
            or leg.default_tag)


def test_legs_cover_fresh_pods_the_canary_steps_and_the_rollback_with_skew_both_ways():
    found = {leg.name: leg for leg in legs("1-29-6", "1-30-3", "1.29", "1.30")}
    assert [effective(found[n]) for n in ("old", "new", "old-client-new-server", "new-client-old-server")] == [
        ("1-29-6", "1-29-6"), ("1-30-3", "1-30-3"), ("1-29-6", "1-30-3"), ("1-30-3", "1-29-6")]
    # in place, as the canary upgrade moves them: created on one revision, then relabelled and restarted
    assert [(found[n].client_revision, effective(found[n])) for n in (
        "canary-server-moved", "canary-both-moved", "rollback-server-moved", "rollback-both-moved")] == [
        ("1-29-6", ("1-29-6", "1-30-3")), ("1-29-6", ("1-30-3", "1-30-3")),
        ("1-30-3", ("1-30-3", "1-29-6")), ("1-30-3", ("1-29-6", "1-29-6"))]
    assert found["rollback-both-moved"].istio_version == "1.29"
    assert not any(leg.default_tag for leg in found.values())  # a mesh-wide change: only when allowed
    tagged = legs("1-29-6", "1-30-3", "1.29", "1.30", tags=True)[-2:]
    assert [(leg.default_tag, leg.client_revision, leg.istio_version) for leg in tagged] == [
        ("1-30-3", "", "1.30"), ("1-29-6", "", "1.29")]


def test_identities_of_different_runs_compare_in_the_scenarios_names():
    """Each leg's pods carry their own run id; only a real identity change is a change."""
    assert compare_leg("new", [cell("a")], [cell("a")]) == []
    other = "spiffe://cluster.local/ns/sleep/sa/other"
    found = compare_leg("new", [cell("a")], [cell("a", identity=other)])
    assert [f.kind for f in found] == ["change"] and "sa/other" in found[0].detail
    assert "sleep-k" not in found[0].detail  # reported in the scenario's names


def test_identical_runs_have_no_findings():
    base = [cell("a"), cell("b", outcome="503", wire=None, identity=None)]
    assert compare_leg("new", base, list(base)) == []


def test_a_cell_that_passed_and_now_fails_is_a_regression():
    found = compare_leg("new", [cell("a")], [cell("a", passed=False, outcome="503", wire=None, identity=None)])
    assert [f.kind for f in found] == ["oracle", "regression"]
    assert regressions(found)[0].cell == "a"


def test_weaker_wire_is_a_regression_even_when_the_oracle_agrees():
    # e.g. a version rule in the oracle now predicts plaintext: the cell passes, the upgrade still weakens it.
    found = compare_leg("new", [cell("a")], [cell("a", wire="plaintext", outcome="plaintext", identity=None)])
    assert [(f.kind, f.detail) for f in found] == [("regression", "wire was Istio mTLS in the baseline, now plaintext")]


def test_a_change_that_agrees_with_the_oracle_is_reported_not_failed():
    before = cell("a", outcome="503", wire=None, identity=None)
    after = cell("a", outcome="reset", wire=None, identity=None)
    found = compare_leg("new", [before], [after])
    assert [f.kind for f in found] == ["change"] and not regressions(found)
    assert "outcome=503" in found[0].detail and "outcome=reset" in found[0].detail


def test_a_cell_missing_from_the_leg_is_a_regression():
    found = compare_leg("mixed", [cell("a"), cell("b")], [cell("a")])
    assert [(f.cell, f.kind) for f in found] == [("b", "regression")]


def test_failing_before_and_after_is_an_oracle_difference_not_a_regression():
    failing = cell("a", passed=False, outcome="503", wire=None, identity=None)
    found = compare_leg("new", [failing], [failing])
    assert [f.kind for f in found] == ["oracle"]


def test_new_cells_are_checked_against_the_oracle_only():
    found = compare_leg("new", [], [cell("new-cell", passed=False)])
    assert [f.kind for f in found] == ["oracle"]


def test_markdown_counts_per_leg_and_says_regression():
    findings = compare_leg("new", [cell("a"), cell("b")], [cell("a", passed=False), cell("b")])
    text = markdown("1-29-6", "1-30-3", {"old": 2, "new": 2}, findings)
    assert "| new | 2 | 1 | 0 | 1 |" in text and "| old | 2 | 0 | 0 | 0 |" in text
    assert "**REGRESSION**" in text and "`a`" in text
    assert "**no regression**" in markdown("x", "y", {"old": 1}, [])


def test_allure_results_of_each_leg_stay_distinct(tmp_path):
    source = tmp_path / "leg"
    source.mkdir()
    (source / "abc-result.json").write_text(json.dumps({
        "name": "test_matrix[c1]", "historyId": "h1", "testCaseId": "t1", "parameters": [{"name": "cell", "value": "c1"}],
        "labels": [{"name": "parentSuite", "value": "suites"}]}))
    (source / "xyz-attachment.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    merged = tmp_path / "merged"
    merged.mkdir()
    for leg in legs("o", "n", "1.29", "1.30")[:2]:
        _merge_allure(source, merged, leg)
    results = [json.loads(p.read_text()) for p in sorted(merged.glob("*-result.json"))]
    assert len(results) == 2 and results[0]["historyId"] != results[1]["historyId"]
    assert {r["parameters"][-1]["value"] for r in results} == {"n -> n", "o -> o"}
    assert {lab["value"] for r in results for lab in r["labels"] if lab["name"] == "parentSuite"} == {
        "upgrade leg old", "upgrade leg new"}
    assert (merged / "xyz-attachment.pcap").exists()


@pytest.mark.parametrize("argv,message", [
    (["--old-revision", "a", "--new-revision", "a"], "both 'a'"),
    (["--old-revision", "a", "--new-revision", "b", "--mesh", "local"], "use --mesh kube"),
    (["--old-revision", "a", "--new-revision", "b", "--suites", "matrix,chaos"], "allowed: matrix, scope"),
    (["--old-revision", "a", "--new-revision", "b", "--kubeconfig", "/nonexistent/kc"], "file not found"),
])
def test_upgrade_check_refuses_bad_input_with_exit_2(argv, message, capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["upgrade-check", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written on refusal


def test_each_leg_runs_pytest_on_kube_with_its_revisions_and_its_own_results(tmp_path):
    args = build_parser().parse_args(["upgrade-check", "--old-revision", "1-29-6", "--new-revision", "1-30-3",
                                      "--context", "staging", "--suites", "matrix,scope", "--no-wire-capture"])
    leg = legs("1-29-6", "1-30-3", "1.29", "1.30")[2]
    command, env = leg_command(args, leg, tmp_path / leg.name)
    joined = " ".join(command)
    assert "suites/test_matrix.py suites/test_scope.py --mesh kube --istio-version 1.30" in joined
    assert "--context staging" in joined and "--no-wire-capture" in joined and "-m not mesh_wide" in joined
    assert f"--alluredir {tmp_path / leg.name / 'allure-results'}" in joined
    assert env["MESHPROOF_CELLS_DIR"] == str(tmp_path / leg.name / "cells")
    assert (env["MESHPROOF_CLIENT_REVISION"], env["MESHPROOF_SERVER_REVISION"]) == ("1-29-6", "1-30-3")
    canary = next(leg for leg in legs("1-29-6", "1-30-3", "1.29", "1.30") if leg.name == "canary-server-moved")
    _, env = leg_command(args, canary, tmp_path / canary.name)
    assert (env["MESHPROOF_SERVER_REVISION"], env["MESHPROOF_MIGRATE_SERVER_REVISION"],
            env["MESHPROOF_MIGRATE_CLIENT_REVISION"]) == ("1-29-6", "1-30-3", "")


def test_the_backend_takes_the_legs_revisions_from_the_environment(monkeypatch):
    from types import SimpleNamespace

    from cluster.kube.backend import KubeBackend

    monkeypatch.setenv("MESHPROOF_CLIENT_REVISION", "1-29-6")
    monkeypatch.setenv("MESHPROOF_SERVER_REVISION", "1-30-3")
    backend = KubeBackend.from_options(SimpleNamespace(kubeconfig=None, context=None, istio_revision=None))
    assert (backend.revisions.client, backend.revisions.server) == ("1-29-6", "1-30-3")


# --- on a cluster, through the official client against a loopback API server (tests/kube_apiserver.py) ---

def istiod_deployment(revision: str, version: str) -> dict:
    labels = {"app": "istiod", "istio.io/rev": revision}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"istiod-{revision}", "namespace": "istio-system", "labels": labels},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                "containers": [{"name": "discovery", "image": f"docker.io/istio/pilot:{version}"}]}}},
            "status": {"readyReplicas": 1}}


def test_every_control_planes_mesh_config_is_read(tmp_path):
    """During a canary upgrade both revisions serve workloads, each from its own ConfigMap istio-<rev>."""
    from cluster.kube.backend import KubeBackend
    from cluster.kube.client import KubeUnavailable
    from tests.kube_apiserver import FakeApiServer, kubeconfig_for

    with FakeApiServer() as api:
        api.route("GET", "/apis/apps/v1/deployments", (200, {"items": [
            istiod_deployment("1-29-6", "1.29.6"), istiod_deployment("1-30-3", "1.30.3")]}))
        for revision, mesh in (("1-29-6", "rootNamespace: istio-system\n"), ("1-30-3", "enableAutoMtls: false\n")):
            api.route("GET", f"/api/v1/namespaces/istio-system/configmaps/istio-{revision}",
                      (200, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"mesh": mesh}}))
        backend = KubeBackend(kubeconfig_for(api, tmp_path / "kubeconfig"), revision="1-29-6")
        with pytest.raises(KubeUnavailable, match=r"enableAutoMtls is false for revision\(s\) 1-30-3"):
            backend.start()
        assert not api.seen("GET", "/api/v1/namespaces")  # refused before it cleans or lists anything


def test_a_canary_leg_moves_the_server_in_place_as_the_canary_upgrade_does():
    """Namespace relabelled, rollout restart (template annotation), and the pair takes the pod the new
    revision injected once it is the deployment's only, Ready pod."""
    from cluster.kube.backend import RESTARTED_AT, KubeBackend, Pair
    from cluster.kube.render import Revisions
    from tests.kube_apiserver import FakeApiServer
    from tests.kube_scenarios import scenario

    def pod(name, injected_by, ready, ip):
        return {"metadata": {"name": name, "namespace": "httpbin-r1", "annotations": {"istio.io/rev": injected_by}},
                "spec": {"containers": [{"name": "httpbin", "image": "x"}], "nodeName": "worker2"},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    listings = iter([[pod("httpbin-old", "1-29-6", True, "10.0.0.2"), pod("httpbin-new", "1-30-3", False, "")],
                     [pod("httpbin-new", "1-30-3", True, "10.0.0.9")]])
    with FakeApiServer() as api:
        api.route("GET", "/api/v1/namespaces/httpbin-r1", (200, {"metadata": {
            "name": "httpbin-r1", "labels": {"istio.io/rev": "1-29-6"}}}))
        api.route("PATCH", "/api/v1/namespaces/httpbin-r1", lambda request, m: (200, {"metadata": request.body["metadata"]}))
        api.route("PATCH", "/apis/apps/v1/namespaces/httpbin-r1/deployments/httpbin",
                  lambda *_: (200, istiod_deployment("x", "1")))
        api.route("GET", "/api/v1/namespaces/httpbin-r1/pods", lambda *_: (200, {"items": next(listings)}))
        backend = KubeBackend(revision="1-29-6", migrate_to=Revisions(None, "1-30-3"))
        backend.cluster = api.cluster()
        pair = Pair((), "r1", {"sleep": "sleep-r1", "httpbin": "httpbin-r1"}, ("sleep-r1", "sleep-a"),
                    ("httpbin-r1", "httpbin-old", "10.0.0.2"), ("worker1", "worker2"))
        backend._migrate(pair, scenario())
    [relabel] = api.seen("PATCH", "/api/v1/namespaces/httpbin-r1")
    assert relabel.body == {"metadata": {"labels": {"istio.io/rev": "1-30-3"}}}
    [restart] = api.seen("PATCH", "/apis/apps/v1/namespaces/httpbin-r1/deployments/httpbin")
    template = restart.body["spec"]["template"]["metadata"]
    assert template["labels"] == {"istio.io/rev": "1-30-3"} and RESTARTED_AT in template["annotations"]
    assert pair.server_pod == ("httpbin-r1", "httpbin-new", "10.0.0.9") and pair.client_pod == ("sleep-r1", "sleep-a")
    assert not [r for r in api.requests if "sleep-r1" in r.path]  # the client stays where it was


def test_the_default_tag_is_read_from_its_webhook_and_moved_with_overwrite(tmp_path):
    from meshproof.upgrade import default_tag_revision, tag_command
    from tests.kube_apiserver import FakeApiServer, kubeconfig_for

    hook = {"metadata": {"name": "istio-revision-tag-default", "labels": {"istio.io/tag": "default",
                                                                         "istio.io/rev": "1-29-6"}}}
    with FakeApiServer() as api:
        api.route("GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                  (200, {"items": [hook]}))
        args = build_parser().parse_args(["upgrade-check", "--old-revision", "a", "--new-revision", "b",
                                          "--kubeconfig", kubeconfig_for(api, tmp_path / "kc")])
        assert default_tag_revision(args) == "1-29-6"
        assert api.seen("GET", ".*mutatingwebhookconfigurations")[0].query["labelSelector"] == ["istio.io/tag=default"]
    assert tag_command("/t/istioctl", args, "1-30-3")[:7] == ["/t/istioctl", "tag", "set", "default", "--revision",
                                                             "1-30-3", "--overwrite"]
