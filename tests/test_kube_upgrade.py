"""upgrade-check's judgement, without a cluster: legs, regressions against the baseline and the oracle,
the report's per-leg Allure results, and the command's refusals."""

from __future__ import annotations

import json

import pytest

from meshproof.cli import build_parser, main
from meshproof.upgrade import Leg, _merge_allure, compare_leg, leg_command, legs, markdown, regressions
from reports.cells import CellRecord

SLEEP = "spiffe://cluster.local/ns/sleep/sa/sleep"


def cell(name, passed=True, outcome="mtls", wire="mtls", identity=SLEEP, expected=None):
    observed = {"outcome": outcome, "wire": wire, "peer_identity": identity}
    return CellRecord(cell=name, passed=passed, expected=expected or dict(observed), observed=observed,
                      message="" if passed else f"expected {outcome} differs")


def test_four_legs_cover_old_new_and_both_mixed_directions():
    assert legs("1-29-6", "1-30-3", "1.29", "1.30") == [
        Leg("old", "1-29-6", "1-29-6", "1.29"), Leg("new", "1-30-3", "1-30-3", "1.30"),
        Leg("old-client-new-server", "1-29-6", "1-30-3", "1.30"),
        Leg("new-client-old-server", "1-30-3", "1-29-6", "1.30")]


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


def test_the_backend_takes_the_legs_revisions_from_the_environment(monkeypatch):
    from types import SimpleNamespace

    from cluster.kube.backend import KubeBackend

    monkeypatch.setenv("MESHPROOF_CLIENT_REVISION", "1-29-6")
    monkeypatch.setenv("MESHPROOF_SERVER_REVISION", "1-30-3")
    backend = KubeBackend.from_options(SimpleNamespace(kubeconfig=None, context=None, istio_revision=None))
    assert (backend.revisions.client, backend.revisions.server) == ("1-29-6", "1-30-3")
