"""The report build: environment.properties and categories.json in the results, and a real Allure 3 HTML report
from a tiny allure-pytest run, with the failing cell in the right category and the matrix picture attached."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reports import build
from reports.allure_env import (
    environment_facts,
    read_properties,
    read_recorded_environment,
    record_environment,
    write_environment,
)
from reports.categories import CATEGORIES
from reports.cells import CellRecord, record_cell

REPORTS_DIR = Path(build.__file__).resolve().parent
LEAK_CELL = "client-sidecar/server-sidecar/pa-strict/dr-disable"
TINY_SUITE = '''
import pytest

def test_as_expected():
    pass

def test_leak():
    pytest.fail("PLAINTEXT LEAK: canary seen in cleartext where policy says mtls", pytrace=False)
'''


@pytest.fixture(scope="module")
def allure_cli() -> str:
    """Allure 3 from reports/package-lock.json, installed the way the Makefile does when it is missing."""
    if not build.DEFAULT_ALLURE.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed, so Allure 3 cannot be installed (make report installs it)")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=REPORTS_DIR,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.skip(f"`npm ci` could not install Allure 3: {done.stderr.strip()[-200:]}")
    return str(build.DEFAULT_ALLURE)


@pytest.fixture
def tiny_run(tmp_path):
    """A real allure-pytest results dir (one pass, one plaintext leak) and matching cell records."""
    (tmp_path / "test_tiny.py").write_text(TINY_SUITE)
    results = tmp_path / "allure-results"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", "/dev/null", "-p", "no:cacheprovider",
                    "--rootdir", str(tmp_path), "--alluredir", str(results), str(tmp_path / "test_tiny.py")],
                   capture_output=True, timeout=120, check=False)
    assert len(list(results.glob("*-result.json"))) == 2
    mtls = {"outcome": "mtls", "wire": "mtls", "peer_identity": "spiffe://cluster.local/ns/sleep/sa/sleep"}
    record_cell(cell=LEAK_CELL, tags=LEAK_CELL.split("/"), passed=False, expected=mtls,
                observed={**mtls, "wire": "plaintext", "outcome": "plaintext"}, directory=tmp_path / "cells",
                mesh="local", istio_version="1.30", message="PLAINTEXT LEAK: canary seen in cleartext")
    record_environment({"kernel": "6.18.44", "iptables": "iptables v1.8.9 (nf_tables)"}, tmp_path / "cells")
    return results, tmp_path / "cells"


def test_environment_keeps_what_the_run_wrote(tmp_path):
    (tmp_path / "environment.properties").write_text("istio_version=1.29.2\n")
    path = write_environment(tmp_path, {"istio_version": "1.29", "envoy": "1.40.0", "note": "a=b: c"})
    assert read_properties(path) == {"istio_version": "1.29.2", "envoy": "1.40.0", "note": "a=b: c"}


def test_oracle_version_is_not_presented_as_a_running_istio():
    local = [CellRecord(cell="a", passed=True, expected={}, observed={}, mesh="local", istio_version="1.30")]
    facts = environment_facts(local)
    assert facts["oracle_istio_version"] == "1.30" and "istio_version" not in facts
    assert facts["mesh_version"].startswith("reference mesh ")
    kube = [CellRecord(cell="a", passed=True, expected={}, observed={}, mesh="kube", istio_version="1.29")]
    facts = environment_facts(kube)
    assert facts["oracle_istio_version"] == "1.29" and "envoy" not in facts and "mesh_version" not in facts


def test_kube_control_plane_versions_stay_beside_the_oracle_version(tmp_path):
    """The run's recorded real versions and the oracle's version are two facts; neither replaces the other."""
    (tmp_path / "environment.properties").write_text("istio_control_planes=default=1.29.2\n")
    kube = [CellRecord(cell="a", passed=True, expected={}, observed={}, mesh="kube", istio_version="1.29")]
    path = write_environment(tmp_path, environment_facts(kube))
    env = read_properties(path)
    assert env["istio_control_planes"] == "default=1.29.2" and env["oracle_istio_version"] == "1.29"


def test_recorded_environment_merges_workers(tmp_path, monkeypatch):
    for worker, plane in (("gw0", "1.29.2"), ("gw1", "1.30.3")):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        record_environment({"mesh": "kube", "istio_control_planes": plane}, tmp_path)
    assert read_recorded_environment(tmp_path) == {"mesh": "kube", "istio_control_planes": "1.29.2, 1.30.3"}
    (tmp_path / "environment-gw2.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"environment-gw2\.json: want a JSON object of facts, got list"):
        read_recorded_environment(tmp_path)


def test_build_writes_environment_categories_matrix_and_html(allure_cli, tiny_run, tmp_path):
    results, cells = tiny_run
    out = tmp_path / "out"
    code = build.main(["--results", str(results), "--out", str(out), "--allure", allure_cli, "--cells", str(cells)])
    assert code == 0

    env = read_properties(results / "environment.properties")
    # The reference mesh ran, not Istio: the version is the one the oracle predicted for, named so.
    assert env["mesh"] == "local" and env["oracle_istio_version"] == "1.30" and env["cells"] == "1"
    assert "istio_version" not in env
    assert re.fullmatch(r"\d+\.\d+\.\d+", env["envoy"]) and env["python"].startswith("3.11")
    assert env["kernel"] == "6.18.44"  # recorded by the run's backend
    categories = json.loads((results / "categories.json").read_text())
    assert [c["name"] for c in categories] == [c.name for c in CATEGORIES]
    assert {"matrix.html", "matrix.png", "matrix.md"} <= {p.name for p in out.iterdir()}

    report = out / "allure-report"
    assert (report / "index.html").exists()
    data = build.report_data(report / "index.html")  # a single file: it opens from disk
    # The failing test sits in the "Plaintext leak" category of the HTML report, with exactly one result.
    tree = json.loads(data["widgets/categories.json"])
    leak = [n for n in tree["nodes"].values() if n.get("type") == "category" and n["name"] == "Plaintext leak"]
    assert leak and leak[0]["statistic"] == {"total": 1, "failed": 1}
    # The matrix picture is attached to the report as a whole, not as a fake test.
    attached = json.loads(data["widgets/globals.json"])["attachments"]
    assert {a["name"] for a in attached} == {"matrix.html", "matrix.png"}
    assert len([p for p in data if p.startswith("data/test-results/")]) == 2
    # The environment shows in the report too.
    shown = json.loads(data["widgets/allure_environment.json"])
    assert {"name": "mesh", "values": ["local"]} in shown


def test_missing_results_exit_2_and_write_nothing(allure_cli, tmp_path, capsys):
    out = tmp_path / "out"
    assert build.main(["--results", str(tmp_path / "nope"), "--out", str(out), "--allure", allure_cli]) == 2
    assert "--results" in capsys.readouterr().err and not out.exists()


def test_missing_allure_exits_2_and_says_how_to_install(tiny_run, tmp_path, capsys):
    results, cells = tiny_run
    out = tmp_path / "out"
    args = ["--results", str(results), "--out", str(out), "--allure", str(tmp_path / "no-allure"), "--cells", str(cells)]
    assert build.main(args) == 2
    assert "npm ci" in capsys.readouterr().err
    assert not out.exists() and not (results / "categories.json").exists()
