"""`meshproof probe SCENARIO --mesh kube --dry-run`: what a run would create on a cluster, in order, without one.

For every matrix and scope cell each document validates against the pinned Kubernetes and Istio schemas
(cluster/schemas/), carries the run label, lives in a run namespace (the mesh's root namespace for a
mesh-wide policy), and names no namespace of the scenario in an identity or host."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.kube.backend import KubeBackend
from cluster.kube.render import RUN_LABEL, capture_container
from cluster.local.backend import LocalBackend
from cluster.schemas.validate import SchemaError, errors
from meshproof.scenario import NotSupportedYet, scenario_from_dict
from suites.matrix import matrix_scenarios, scope_scenarios

ROOT = Path(__file__).resolve().parents[1]
CELLS = list(matrix_scenarios()) + list(scope_scenarios())
KINDS_IN_ORDER = ["Namespace", "ServiceAccount", "Deployment", "Service", "EnvoyFilter", "Policy", "Pod"]


def check_plan(calls, scenario) -> None:
    run_id = calls[0][1]["metadata"]["labels"][RUN_LABEL]
    kinds = [doc["kind"] if doc["kind"] not in ("PeerAuthentication", "DestinationRule") else "Policy"
             for _, doc in calls]
    assert kinds == sorted(kinds, key=KINDS_IN_ORDER.index), kinds
    policies = [d for _, d in calls if d["kind"] in ("PeerAuthentication", "DestinationRule")]
    assert [(d["kind"], d["metadata"]["name"]) for d in policies] == \
        [(m["kind"], m["metadata"]["name"]) for m in scenario.manifests]  # the scenario's order: oldest wins
    for request, doc in calls:
        problems = errors(doc, subresource="ephemeralcontainers") if request.startswith("patch") else errors(doc)
        assert problems == [], f"{request}: {problems}"
        meta = doc["metadata"]
        assert meta["labels"][RUN_LABEL] == run_id, request
        namespace = meta["name"] if doc["kind"] == "Namespace" else meta["namespace"]
        assert namespace.endswith(f"-{run_id}") or namespace == scenario.root_namespace, request
        for entry in (doc.get("spec") or {}).get("exportTo", []):
            assert entry in (".", "*") or entry.endswith(f"-{run_id}"), request
    text = json.dumps([doc for _, doc in calls])
    for ns in {scenario.client.namespace, scenario.server.namespace}:
        assert f"/ns/{ns}/" not in text and f".{ns}.svc" not in text, ns


@pytest.mark.parametrize("cell_id,raw", CELLS, ids=[c for c, _ in CELLS])
def test_every_cell_plans_valid_objects_in_run_namespaces(cell_id, raw):
    scenario = scenario_from_dict(copy.deepcopy(raw), cell_id)
    check_plan(KubeBackend(allow_mesh_wide=True).dry_run(scenario), scenario)


def test_the_checks_can_go_red():
    scenario = scenario_from_dict(copy.deepcopy(dict(CELLS)["scope/dr-istio-mutual-insecure-wrong-san"]), "cell")
    calls = KubeBackend().dry_run(scenario)
    broken = copy.deepcopy(calls)
    broken[-1][1]["spec"]["containers"] = [capture_container("x", KubeBackend().images)]  # not a patchable field
    with pytest.raises(AssertionError, match="spec"):
        check_plan(broken, scenario)
    unlabelled = copy.deepcopy(calls)
    del unlabelled[2][1]["metadata"]["labels"][RUN_LABEL]
    with pytest.raises(KeyError):
        check_plan(unlabelled, scenario)
    scenario_names = copy.deepcopy(calls)
    scenario_names[-2][1]["spec"]["host"] = "httpbin.httpbin.svc.cluster.local"  # not rewritten
    with pytest.raises(AssertionError, match="httpbin"):
        check_plan(scenario_names, scenario)
    with pytest.raises(SchemaError, match="allowed: Pod/ephemeralcontainers"):
        errors(calls[-1][1], subresource="status")


def test_without_capture_there_is_no_ephemeral_container():
    scenario = scenario_from_dict(copy.deepcopy(CELLS[0][1]), "cell")
    assert not [r for r, _ in KubeBackend().dry_run(scenario, capture=False) if r.startswith("patch")]


@pytest.mark.parametrize("beyond", [{"server": {"app": "tcp-echo"}}, {"server": {"port_name": "tcp"}},
                                    {"server": {"headless": True}}, {"request": {"to": "pod-ip"}}])
def test_what_neither_mesh_renders_yet_is_refused_not_planned_as_the_default(beyond):
    scenario = scenario_from_dict({**copy.deepcopy(CELLS[0][1]), **beyond}, "cell")
    field = next(f"{role}.{name}" for role, fields in beyond.items() for name in fields)
    with pytest.raises(NotSupportedYet, match=f"{field}: .* the kube backend does not handle it yet"):
        KubeBackend().dry_run(scenario)
    with pytest.raises(NotSupportedYet, match=f"{field}: .* the reference mesh does not handle it yet"):
        LocalBackend().deploy(scenario)  # refused before anything starts


def meshproof(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "no-such-kubeconfig")}
    return subprocess.run([sys.executable, "-m", "meshproof.cli", *args], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=60)


def test_the_command_needs_no_cluster_and_prints_the_plan(tmp_path):
    done = meshproof("probe", "examples/strict-namespace.yaml", "--mesh", "kube", "--dry-run", home=tmp_path)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert [d["kind"] for d in docs] == ["Namespace"] * 2 + ["ServiceAccount"] * 2 + ["Deployment"] * 2 \
        + ["Service"] * 2 + ["EnvoyFilter"] * 2 + ["PeerAuthentication", "Pod"]
    assert docs[-2]["metadata"]["namespace"].startswith("httpbin-")
    refused = meshproof("probe", "examples/root-selector-ignored.yaml", "--mesh", "kube", "--dry-run", home=tmp_path)
    assert refused.returncode == 2 and "--allow-mesh-wide" in refused.stderr, refused.stderr
    local = meshproof("probe", "examples/strict-namespace.yaml", "--dry-run", home=tmp_path)
    assert local.returncode == 2 and "use it with --mesh kube" in local.stderr
