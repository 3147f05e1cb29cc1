"""The conformance matrix run against deliberately broken reference meshes goes red in exactly the cells the
break affects, and a sidecar that sends cleartext where policy says mTLS is reported as a plaintext leak.

Which cells must go red is derived from the oracle, not listed by hand."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from meshproof.scenario import scenario_from_dict
from reports.categories import PLAINTEXT_LEAK
from suites.expectations import expect
from suites.matrix import matrix_scenarios

pytestmark = [pytest.mark.root, pytest.mark.mesh, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]
ROOT = Path(__file__).resolve().parent.parent


def run_matrix_with(mutant: str, tmp_path: Path) -> dict[str, str]:
    """Run the matrix suite with a mutant plugin; returns {cell id: failure message} of the red cells."""
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "MESHPROOF_CELLS_DIR": str(tmp_path / "cells")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites/test_matrix.py", "-p", f"tests.mutants.{mutant}",
                           "-n", "2", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert junit.exists(), f"the suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    red = {}
    for case in ET.parse(junit).iter("testcase"):
        failure = case.find("failure")
        if failure is not None:
            cell = case.get("name").removeprefix("test_matrix[").removesuffix("]")
            red[cell] = failure.get("message", "")
    return red


def predictions():
    return {cell: expect(scenario_from_dict(scn, cell)) for cell, scn in matrix_scenarios()}


def test_strict_compiled_as_permissive_turns_exactly_the_strict_only_cells_red(tmp_path):
    expected_red = set()
    for cell, scn in matrix_scenarios():
        permissive = [_strict_to_permissive(m) for m in scn.get("resources", [])]
        as_permissive = expect(scenario_from_dict({**scn, "resources": permissive}, cell))
        if expect(scenario_from_dict(scn, cell)).outcome != as_permissive.outcome:
            expected_red.add(cell)
    assert expected_red, "the mutant changes no prediction: this test could not go red"
    assert set(run_matrix_with("strict_as_permissive", tmp_path)) == expected_red


def test_a_sidecar_forwarding_cleartext_is_caught_in_every_istio_mutual_cell(tmp_path):
    predicted = predictions()
    expected_red = {cell for cell, p in predicted.items() if p.client_tls == "istio-mutual"}
    red = run_matrix_with("cleartext_sidecar", tmp_path)
    assert set(red) == expected_red
    accepted_in_clear = [cell for cell in red if predicted[cell].wire == "mtls" and predicted[cell].outcome == "mtls"]
    assert accepted_in_clear
    for cell in accepted_in_clear:
        assert PLAINTEXT_LEAK in red[cell], f"{cell} is not reported as a leak: {red[cell]}"


def _strict_to_permissive(manifest: dict) -> dict:
    if manifest.get("kind") != "PeerAuthentication":
        return manifest
    spec = manifest.get("spec") or {}
    mtls = spec.get("mtls") or {}
    if mtls.get("mode") != "STRICT":
        return manifest
    return {**manifest, "spec": {**spec, "mtls": {**mtls, "mode": "PERMISSIVE"}}}
