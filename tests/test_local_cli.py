"""`meshproof probe|clean|doctor --mesh local` as a user runs them: exit codes, JSON, nothing left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from cluster.checks import Check
from cluster.local import doctor, lifecycle, runtime
from cluster.local.netns import as_user

ROOT = Path(__file__).resolve().parents[1]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")


def meshproof(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from meshproof.cli import main; sys.exit(main())",
                           *args], cwd=ROOT, check=False, capture_output=True, text=True, timeout=120)


def write_scenario(path: Path, resources: list[dict], client_sidecar: bool = True) -> tuple[Path, str]:
    """The scenario in namespaces of its own (client `<tag>c`, server `bar`), so that its pods can be told
    apart from other runs' while tests run in parallel; returns (file, tag)."""
    tag = f"cli{secrets.token_hex(3)}"
    path.write_text(yaml.safe_dump({"name": "cli", "client": {"namespace": f"{tag}c", "sidecar": client_sidecar},
                                    "server": {"namespace": "bar"}, "resources": resources}))
    return path, tag


def pods_of(tag: str) -> list[str]:
    return [n for n in lifecycle.list_netns() if f"-{tag}c-" in n]


STRICT = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": "bar"}, "spec": {"mtls": {"mode": "STRICT"}}}


@needs_root
@pytest.mark.root
def test_probe_prints_one_json_object_and_cleans_up(tmp_path):
    scenario, tag = write_scenario(tmp_path / "s.yaml", [STRICT], client_sidecar=False)
    done = meshproof("probe", str(scenario), "--mesh", "local")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"outcome", "http_status", "curl_exit", "peer_identity", "failure_detail", "wire"} <= set(result)
    assert result["outcome"] == "reset" and result["wire"]["verdict"] in ("plaintext", "none")
    assert f"-{tag}c-" in result["command"]  # the check below looks for the right names
    assert pods_of(tag) == []


@needs_root
@pytest.mark.root
@pytest.mark.parametrize(("resources", "named"), [
    ([{**STRICT, "spec": {"mtls": {"mode": "strict"}}}], "spec.mtls.mode"),
    ([{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
       "metadata": {"name": "m", "namespace": "bar"},
       "spec": {"host": "httpbin.bar.svc.cluster.local",
                "trafficPolicy": {"tls": {"mode": "MUTUAL", "clientCertificate": "/no/cert.pem",
                                          "privateKey": "/no/key.pem"}}}}], "spec.trafficPolicy.tls.clientCertificate"),
], ids=["invalid", "unsupported"])
def test_bad_input_exits_2_naming_the_field_and_leaves_nothing(tmp_path, resources, named):
    scenario, tag = write_scenario(tmp_path / "bad.yaml", resources)
    done = meshproof("probe", str(scenario), "--mesh", "local", "--no-capture")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr and done.stdout == ""
    assert pods_of(tag) == []


@needs_root
@pytest.mark.root
def test_clean_and_doctor_commands():
    done = meshproof("clean", "--mesh", "local")
    assert done.returncode == 0 and done.stdout.strip()
    done = meshproof("doctor", "--mesh", "local", "--json")
    checks = json.loads(done.stdout)
    assert done.returncode == (0 if all(c["ok"] for c in checks) else 2)
    assert {"root", "network namespaces", "envoy", "iptables backend", "curl", "packet capture"} <= \
        {c["name"] for c in checks}


def test_doctor_lines_say_how_to_fix_what_is_missing():
    missing = Check("curl", False, "not found", "apt-get install -y curl")
    assert missing.line() == "✗ curl: not found\n    fix: apt-get install -y curl"
    assert Check("curl", True, "/usr/bin/curl").line() == "✓ curl: /usr/bin/curl"
    tool = doctor._tool("surely-not-a-command-meshproof", "nothing")
    assert not tool.ok and "apt-get install" in tool.hint


@needs_root
@pytest.mark.root
def test_doctor_names_the_folder_a_workload_user_cannot_enter_and_the_fix(monkeypatch):
    """The apps' packages staged behind a 0700 folder (as a venv under /root is): the doctor runs the import
    as the apps' user for real, fails, and names that folder and a fix."""
    private = Path(tempfile.mkdtemp(prefix="meshproof-wall-"))  # mode 0700, in world-searchable /tmp
    stage = runtime.stage

    def stage_behind_a_wall(root):
        staged = stage(root)
        shutil.copytree(staged.site, private / "site")
        return dataclasses.replace(staged, site=private / "site")

    monkeypatch.setattr(runtime, "stage", stage_behind_a_wall)
    try:
        apps = next(c for c in doctor.checks() if c.name == "apps (uid 1717)")
    finally:
        shutil.rmtree(private)
    assert not apps.ok
    assert f"{private} is mode 0700" in apps.detail and "cannot reach" in apps.detail, apps.detail
    assert "apt-get install -y python3" in apps.hint


@needs_root
@pytest.mark.root
def test_doctor_leaves_no_run_behind():
    before = set(os.listdir(lifecycle.RUNTIME_ROOT)) if lifecycle.RUNTIME_ROOT.exists() else set()
    checks = doctor.checks()
    assert all(c.ok for c in checks if "uid" in c.name), [c.line() for c in checks]
    after = set(os.listdir(lifecycle.RUNTIME_ROOT)) if lifecycle.RUNTIME_ROOT.exists() else set()
    assert {p for p in after - before if (lifecycle.STATE_ROOT / p).exists() is False} == set()


HOLD_THREE_INOTIFY_INSTANCES = ("import ctypes, time; libc = ctypes.CDLL(None); "
                                "fds = [libc.inotify_init() for _ in range(3)]; print(min(fds), flush=True); time.sleep(60)")


@needs_root
@pytest.mark.root
def test_doctor_counts_a_users_inotify_instances_and_says_how_to_raise_the_limit(monkeypatch):
    """Sidecars abort at start past uid 1337's inotify limit; the doctor counts what a user holds (here a
    process of another uid holding three) and names the sysctl when the room is short."""
    holder = subprocess.Popen(
        [*as_user(4243), "/usr/bin/python3", "-c",
         HOLD_THREE_INOTIFY_INSTANCES], stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) >= 0
        assert doctor.inotify_instances_of(4243) == 3
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setattr(doctor, "MIN_SIDECAR_ROOM", 10**6)
    check = doctor._inotify()
    assert not check.ok and "fs.inotify.max_user_instances" in check.hint
