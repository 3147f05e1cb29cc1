"""The kind scripts, the Make targets and the GitHub workflow: checked here as far as they run without a
container engine or network (parsing, refusals, checksum verification), so CI on GitHub is not the first run."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from meshproof.scenario import SUPPORTED_ISTIO_VERSIONS

ROOT = Path(__file__).resolve().parent.parent
KIND = ROOT / "cluster" / "kind"
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    return workflow["jobs"]["kind"]["steps"]


def step(steps, prefix: str) -> dict:
    found = [s for s in steps if s.get("name", "").startswith(prefix)]
    assert found, f"no step named {prefix!r}; steps: {[s.get('name') for s in steps]}"
    return found[0]


def test_workflow_runs_on_push_and_nightly(workflow):
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "push" in triggers
    assert re.fullmatch(r"\d+ \d+ \* \* \*", triggers["schedule"][0]["cron"])


def test_workflow_matrix_is_the_supported_istio_minors(workflow):
    job = workflow["jobs"]["kind"]
    assert job["strategy"]["matrix"]["istio"] == list(SUPPORTED_ISTIO_VERSIONS)
    assert job["strategy"]["fail-fast"] is False  # one broken minor must not hide the others


def test_workflow_steps_bring_up_kind_run_the_suites_and_tear_down(steps):
    names = [s.get("name", "") for s in steps]
    assert "make kind-up ISTIO_VERSION=${{ matrix.istio }}" in step(steps, "kind cluster")["run"]
    cells = step(steps, "Conformance suites (namespace")["run"]
    assert "pytest suites --mesh kube" in cells and "--istio-version ${{ matrix.istio }}" in cells
    assert "--junitxml" in cells and "--alluredir" in cells
    assert "--allow-mesh-wide" in step(steps, "Conformance suites (mesh-wide")["run"]
    assert names.index("meshproof doctor") < names.index(step(steps, "Conformance suites (namespace")["name"])
    down = steps[-1]
    assert down["run"].startswith("make kind-down") and down["if"] == "${{ always() }}"


def test_workflow_uploads_junit_allure_and_the_html_report(steps):
    upload = step(steps, "Upload results")
    assert upload["uses"].startswith("actions/upload-artifact@")
    paths = upload["with"]["path"]
    for wanted in ("junit*.xml", "allure-results", "allure-report", "matrix.*"):
        assert wanted in paths
    assert "matrix.istio" in upload["with"]["name"]  # one artifact per minor, no overwrites


def test_workflow_job_summary_and_report(steps):
    assert "GITHUB_STEP_SUMMARY" in step(steps, "Job summary")["run"]
    # reports.build appends the matrix picture to the job summary when GITHUB_STEP_SUMMARY is set.
    assert step(steps, "HTML report")["run"] == "make report"
    assert "GITHUB_STEP_SUMMARY" in (ROOT / "reports" / "build.py").read_text()


def test_every_supported_minor_is_pinned_to_a_patch_release():
    pins = dict(line.split("=", 1) for line in (KIND / "versions.env").read_text().splitlines()
                if line and not line.startswith("#"))
    for minor in SUPPORTED_ISTIO_VERSIONS:
        version = pins[f"ISTIO_{minor.replace('.', '_')}"]
        assert re.fullmatch(rf"{re.escape(minor)}\.\d+", version)
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pins["KIND_VERSION"])
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", pins["KIND_NODE_IMAGE"])


@pytest.mark.parametrize("script", ["up.sh", "down.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(KIND / script)], check=False).returncode == 0
    assert os.access(KIND / script, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_pass_shellcheck():
    done = subprocess.run(["shellcheck", "-x", "up.sh", "down.sh"], cwd=KIND, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout


def test_up_refuses_an_unsupported_version_before_creating_anything(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), PATH="/usr/bin:/bin")
    done = subprocess.run([str(KIND / "up.sh"), "1.27"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "Istio 1.27 is not pinned" in done.stderr and "allowed: 1.28, 1.29, 1.30" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no tools folder, no kubeconfig folder


def _verify(tmp_path, pinned_sum: str) -> subprocess.CompletedProcess:
    artifact = tmp_path / "istioctl-1.30.3-linux-amd64.tar.gz"
    artifact.write_bytes(b"not really a tarball")
    sums = tmp_path / "checksums.txt"
    sums.write_text(f"{pinned_sum}  {artifact.name}\n")
    script = f'source "{KIND}/up.sh"; verify "{artifact}" "http://127.0.0.1:9/unused.sha256" && echo verified'
    env = dict(os.environ, MESHPROOF_CHECKSUMS=str(sums), HOME=str(tmp_path))
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False)


def test_checksum_pinned_in_the_repo_is_enforced(tmp_path):
    good = hashlib.sha256(b"not really a tarball").hexdigest()
    assert _verify(tmp_path, good).stdout.strip() == "verified"


def test_checksum_mismatch_refuses_and_removes_the_download(tmp_path):
    done = _verify(tmp_path, "0" * 64)
    assert done.returncode == 2 and "differs from the expected" in done.stderr
    assert not (tmp_path / "istioctl-1.30.3-linux-amd64.tar.gz").exists()


def test_make_targets(tmp_path):
    def dry(*args: str) -> str:
        return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    assert "cluster/kind/up.sh 1.29 1.30" in dry("kind-up", "ISTIO_VERSION=1.29 1.30")
    assert "cluster/kind/down.sh" in dry("kind-down")
    # kind-conformance calls $(MAKE), which `make -n` would run for real: read its recipe instead.
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nkind-conformance:"):].split("\n\n")[0]
    assert "pytest suites $(KUBE_ARGS) --istio-version $(firstword $(ISTIO_VERSION))" in recipe
    assert "KUBE_ARGS = --mesh kube --kubeconfig $(KIND_KUBECONFIG)" in makefile
    upgrade = dry("upgrade-check", "OLD_REVISION=1-29-6", "NEW_REVISION=1-30-3")
    assert "meshproof upgrade-check --mesh kube" in upgrade and "--old-revision 1-29-6" in upgrade


def test_actions_are_pinned_to_commits(steps):
    for used in (s["uses"] for s in steps if "uses" in s):
        assert re.fullmatch(r"actions/[a-z-]+@[0-9a-f]{40}", used), f"{used}: pin actions by commit"
