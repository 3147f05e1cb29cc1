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


def documented_kind_commands() -> list[str]:
    """The commands of docs/kube.md "kind, step by step", comments and blank lines left out."""
    text = (ROOT / "docs" / "kube.md").read_text()
    section = text[text.index("## kind, step by step"):]
    block = section[section.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("```")]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_the_workflow_runs_the_documented_kind_commands_as_written(steps):
    """Every command of the kind steps is a documented line (for the minor of the job), in the documented
    order, and every documented command runs; nothing else (no sudo, no apt-get) is run around them."""
    documented = documented_kind_commands()
    ran = [s["run"].replace("${{ matrix.istio }}", "1.30") for s in steps
           if "run" in s and s["run"].startswith("make ")]
    assert ran == documented
    assert not any("sudo" in s.get("run", "") or "system-deps" in s.get("run", "") for s in steps)
    down = steps[-1]
    assert down["run"] == "make kind-down" and down["if"] == "${{ always() }}"


def prerequisites() -> dict[str, list[str]]:
    """Each Make target's prerequisites, from make's own database (-p; -n and an unknown goal run nothing)."""
    database = subprocess.run(["make", "-pn", "__meshproof_nothing__"], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout
    found = {}
    for line in database.splitlines():
        target, colon, rest = line.partition(":")
        if colon and target and not target.startswith(("#", "\t", " ")) and not rest.startswith("="):
            found.setdefault(target, rest.split())
    return found


@pytest.mark.parametrize("target", ["kind-up", "kind-doctor", "kind-conformance", "kind-down", "upgrade-check"])
def test_kube_targets_never_need_root_or_host_capture_tools(target):
    """system-deps installs iptables and tcpdump with apt-get (root); a GitHub runner has no root for it and
    the kube path runs both inside the pods."""
    graph, seen, todo = prerequisites(), set(), [target]
    assert target in graph
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph.get(name, [])
    assert "system-deps" not in seen and "setup" not in seen, sorted(seen)


STUB = """#!/bin/sh
# stands in for the .venv's pytest / python: logs its call, exits with the next code of STUB_CODES
echo "$(basename "$0") MESHPROOF_NODE_SPREAD=$MESHPROOF_NODE_SPREAD $*" >> "$STUB_LOG"
n=$(grep -c '^pytest' "$STUB_LOG")
[ "$(basename "$0")" = pytest ] && exit "$(echo $STUB_CODES | cut -d' ' -f"$n")"
exit 0
"""


@pytest.mark.parametrize(("codes", "exit_code"), [
    ("0 5", 0),  # this tree has no mesh-wide cells: nothing ran there, nothing failed
    ("1 0", 1), ("0 1", 1),  # either run failing fails the target
    ("5 0", 1),  # no namespace-scoped cells collected is an error
])
def test_kind_conformance_runs_both_cell_sets_on_two_nodes_then_the_report(tmp_path, codes, exit_code):
    """The recipe itself, run by make with the .venv's pytest and python replaced by a stub that logs."""
    for tool in ("pytest", "python"):
        (tmp_path / tool).write_text(STUB)
        (tmp_path / tool).chmod(0o755)
    (tmp_path / "stamp").touch()
    (tmp_path / "allure").touch()
    log = tmp_path / "calls.log"
    done = subprocess.run(["make", "--no-print-directory", "kind-conformance", f"BIN={tmp_path}",
                           f"STAMP={tmp_path / 'stamp'}", f"ALLURE={tmp_path / 'allure'}", f"OUT={tmp_path / 'out'}",
                           "KIND_KUBECONFIG=/k/config", "ISTIO_VERSION=1.29 1.30"], cwd=ROOT,
                          env=dict(os.environ, STUB_LOG=str(log), STUB_CODES=codes),
                          capture_output=True, text=True, check=False)
    assert done.returncode == (2 if exit_code else 0), done.stdout + done.stderr  # make exits 2 on a failure
    scoped, wide, report = log.read_text().splitlines()
    kube = "suites --mesh kube --kubeconfig /k/config --istio-version 1.29"
    assert scoped.startswith(f"pytest MESHPROOF_NODE_SPREAD=required {kube} -m not mesh_wide -n 2")
    assert wide.startswith(f"pytest MESHPROOF_NODE_SPREAD=required {kube} -m mesh_wide --allow-mesh-wide")
    assert report.split()[0] == "python" and "-m reports.build" in report  # the report, either way


def test_kind_has_two_workers_for_client_and_server():
    config = yaml.safe_load((KIND / "kind-config.yaml").read_text())
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]


def test_workflow_uploads_junit_allure_and_the_html_report(steps):
    upload = step(steps, "Upload results")
    assert upload["uses"].startswith("actions/upload-artifact@")
    paths = upload["with"]["path"]
    for wanted in ("junit*.xml", "allure-results", "allure-report", "matrix.*"):
        assert wanted in paths
    assert "matrix.istio" in upload["with"]["name"]  # one artifact per minor, no overwrites


def test_workflow_job_summary_and_report(steps):
    assert "GITHUB_STEP_SUMMARY" in step(steps, "Job summary")["run"]
    # kind-conformance builds the report; reports.build appends the matrix picture to the job summary.
    makefile = (ROOT / "Makefile").read_text()
    assert "$(MAKE) --no-print-directory report" in makefile[makefile.index("\nkind-conformance:"):].split("\n\n")[0]
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


def _verify(tmp_path, pinned_sum: str | None, url: str = "http://127.0.0.1:9/unused.sha256",
            **env: str) -> subprocess.CompletedProcess:
    artifact = tmp_path / "istio-1.30.3-linux-amd64.tar.gz"
    artifact.write_bytes(b"not really a tarball")
    sums = tmp_path / "checksums.txt"
    sums.write_text(f"{pinned_sum}  {artifact.name}\n" if pinned_sum else "# nothing pinned\n")
    script = f'source "{KIND}/up.sh"; verify "{artifact}" "{url}" && echo verified'
    env = dict(os.environ, MESHPROOF_CHECKSUMS=str(sums), HOME=str(tmp_path), **env)
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def published_sum():
    """The release's own .sha256 of the artifact, served on loopback (what up.sh would fetch)."""
    from tests.kube_apiserver import FakeApiServer

    body = f"{hashlib.sha256(b'not really a tarball').hexdigest()}  istio-1.30.3-linux-amd64.tar.gz\n".encode()
    with FakeApiServer() as server:
        server.route("GET", "/istio.tar.gz.sha256", (200, body))
        yield f"{server.host}/istio.tar.gz.sha256"


def test_a_download_without_a_committed_sum_is_refused_even_when_its_release_publishes_one(tmp_path, published_sum):
    done = _verify(tmp_path, None, published_sum)
    assert done.returncode == 2 and "no sha256 committed" in done.stderr and "ALLOW_UNPINNED=1" in done.stderr
    assert not (tmp_path / "istio-1.30.3-linux-amd64.tar.gz").exists()


def test_allow_unpinned_trusts_the_release_sum_and_says_so(tmp_path, published_sum):
    done = _verify(tmp_path, None, published_sum, ALLOW_UNPINNED="1")
    assert done.returncode == 0 and done.stdout.strip() == "verified"
    assert "UNPINNED: istio-1.30.3-linux-amd64.tar.gz" in done.stderr


def committed_sums() -> dict[str, str]:
    return {name: digest for digest, name in (line.split() for line in (KIND / "checksums.txt").read_text().splitlines()
                                              if line.strip() and not line.startswith("#"))}


def test_kind_downloads_are_pinned_and_the_unpinned_istio_bundles_are_named():
    pins = dict(line.split("=", 1) for line in (KIND / "versions.env").read_text().splitlines()
                if line and not line.startswith("#"))
    sums, notes = committed_sums(), (KIND / "checksums.txt").read_text()
    for arch in ("amd64", "arm64"):
        assert re.fullmatch(r"[0-9a-f]{64}", sums[f"kind-{pins['KIND_VERSION']}-linux-{arch}"])
    for minor in SUPPORTED_ISTIO_VERSIONS:
        version = pins[f"ISTIO_{minor.replace('.', '_')}"]
        for arch in ("amd64", "arm64"):
            name = f"istio-{version}-linux-{arch}.tar.gz"
            assert name in sums or f"istio-{version}-linux-{{amd64,arm64}}" in notes or name.removesuffix(
                ".tar.gz") in notes, f"{name}: neither pinned nor listed as not pinned"


def test_checksum_pinned_in_the_repo_is_enforced(tmp_path):
    good = hashlib.sha256(b"not really a tarball").hexdigest()
    assert _verify(tmp_path, good).stdout.strip() == "verified"


def test_checksum_mismatch_refuses_and_removes_the_download(tmp_path):
    done = _verify(tmp_path, "0" * 64)
    assert done.returncode == 2 and "differs from the expected" in done.stderr
    assert not (tmp_path / "istio-1.30.3-linux-amd64.tar.gz").exists()


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
