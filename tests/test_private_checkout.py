"""meshproof run from a checkout only root may enter, as a new user's clone under /root or `mktemp -d` is.

The project and a venv are copied into a fresh 0700 folder, under a 077 umask; from there one matrix cell
runs end to end through the suites (deploy, probe with capture, verdict), and a run killed with SIGKILL is
cleaned by that checkout's `meshproof clean`. The premise is checked first: the workload users really
cannot read the copied venv, so a run that still reached into the checkout would fail here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from cluster.local import lifecycle
from cluster.local.iptables import PROXY_UID
from cluster.local.netns import as_user
from cluster.local.workloads import APP_UID

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CELL = "client-sidecar/server-sidecar/pa-strict/dr-istio-mutual"


@pytest.fixture(scope="module")
def private_checkout():
    folder = Path(tempfile.mkdtemp(prefix="meshproof-private-"))  # mode 0700, like /root
    checkout = folder / "meshproof"
    shutil.copytree(ROOT, checkout, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "out", "__pycache__", ".pytest_cache", ".tox"))
    python = _private_venv(checkout / ".venv")
    yield checkout, python
    shutil.rmtree(folder, ignore_errors=True)


def _private_venv(venv: Path) -> Path:
    """A venv inside the private folder holding this venv's packages (hard links where possible), minus the
    editable install that would point back at this checkout: the copy imports its own sources."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_paths()["purelib"])
    target = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    shutil.rmtree(target)
    shutil.copytree(site, target, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(
        "__editable__*", "meshproof-*.dist-info", "__pycache__"))
    return venv / "bin" / "python"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _as_user(uid: int, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*as_user(uid), *command], check=False, capture_output=True, text=True)


def _with_strict_umask(command: list[str]) -> list[str]:
    return ["sh", "-c", 'umask 077 && exec "$@"', "sh", *command]


def test_premise_the_workload_users_cannot_read_the_checkout(private_checkout):
    checkout, python = private_checkout
    for uid in (APP_UID, PROXY_UID):
        assert _as_user(uid, ["cat", str(checkout / "pyproject.toml")]).returncode != 0
        # Through a shell: setpriv itself resolves the program it is given before the user's rights apply.
        assert _as_user(uid, ["sh", "-c", f"exec {python} -c 'import gunicorn'"]).returncode != 0


def test_one_cell_end_to_end_from_a_private_checkout(private_checkout):
    checkout, python = private_checkout
    proc = subprocess.run(_with_strict_umask(
        [str(python), "-m", "pytest", "suites/test_matrix.py", "-k", CELL, "-p", "no:cacheprovider", "-q",
         "--alluredir", "reports/out/allure-results"]),
        check=False, cwd=checkout, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
    assert list((checkout / "reports/out/local/pcaps").glob("*.pcap")), "the cell captured nothing"


def test_a_killed_run_is_cleaned_from_a_private_checkout(private_checkout, tmp_path):
    checkout, python = private_checkout
    script = (
        "import time\n"
        "from cluster.local.backend import LocalBackend\n"
        "from meshproof.scenario import scenario_from_dict\n"
        "b = LocalBackend(out_dir='reports/out/local'); b.start()\n"
        "b.deploy(scenario_from_dict({'client': {'namespace': 'foo'}, 'server': {'namespace': 'bar'}}))\n"
        "print(b.run.prefix, flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen(_with_strict_umask([str(python), "-c", script]), cwd=checkout,
                            stdout=subprocess.PIPE, text=True)
    try:
        prefix = proc.stdout.readline().strip()
        assert prefix, "the run did not start"
        assert (lifecycle.RUNTIME_ROOT / prefix / "bin" / "envoy").exists()
        assert any(ns.startswith(prefix) for ns in lifecycle.list_netns())
    finally:
        proc.kill()
        proc.wait()
    clean = subprocess.run([str(python), "-m", "meshproof.cli", "clean"], cwd=checkout, check=False,
                           capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    left = [ns for ns in lifecycle.list_netns() if ns.startswith(prefix)]
    left += [str(root / prefix) for root in (lifecycle.STATE_ROOT, lifecycle.RUNTIME_ROOT) if (root / prefix).exists()]
    assert not left, f"clean left {left}"
