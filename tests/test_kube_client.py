"""Option and error handling of the kube backend without a cluster: a missing or unreachable kubeconfig fails
fast with a message naming the file, the context or the server; refusals happen before any API call."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest

from cluster.kube.backend import KubeBackend, clean_leftovers
from cluster.kube.client import KubeUnavailable, connect, kubeconfig_path
from cluster.kube.doctor import checks
from meshproof.errors import UsageError
from meshproof.istio_api import ManifestError
from meshproof.scenario import scenario_from_dict

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "https://127.0.0.1:{port}"}}
contexts:
- name: first
  context: {{cluster: c, user: u}}
- name: second
  context: {{cluster: c, user: u}}
current-context: first
users:
- name: u
  user: {{token: not-a-secret}}
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def kubeconfig(tmp_path):
    def write(port: int) -> str:
        path = tmp_path / "kubeconfig"
        path.write_text(KUBECONFIG.format(port=port))
        return str(path)
    return write


@pytest.fixture
def silent_server():
    """A port that accepts TCP connections and never answers (a hung API server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_missing_kubeconfig_file_is_named(tmp_path):
    missing = tmp_path / "nope" / "config"
    started = time.monotonic()
    with pytest.raises(KubeUnavailable, match=f"kubeconfig {missing}: file not found"):
        connect(str(missing))
    assert time.monotonic() - started < 1
    assert issubclass(KubeUnavailable, UsageError)  # the CLI prints it as one line and exits 2


def test_no_kubeconfig_anywhere(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig_path(None) is None
    with pytest.raises(KubeUnavailable, match="no kubeconfig: pass --kubeconfig"):
        connect()


def test_kubeconfig_env_is_the_usual_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert str(kubeconfig_path(None)) == f"{tmp_path}/a"
    assert str(kubeconfig_path("/explicit")) == "/explicit"


def test_unreachable_api_server_fails_fast(kubeconfig):
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(KubeUnavailable) as err:
        connect(kubeconfig(port))
    assert time.monotonic() - started < 2
    assert f"https://127.0.0.1:{port}" in str(err.value) and "connection refused" in str(err.value)
    assert "context first" in str(err.value)


def test_hung_api_server_times_out_within_the_connect_timeout(kubeconfig, silent_server):
    started = time.monotonic()
    with pytest.raises(KubeUnavailable, match="unreachable within 1 s"):
        connect(kubeconfig(silent_server), timeout_s=1.0)
    assert time.monotonic() - started < 3


def test_unknown_context_lists_the_allowed_ones(kubeconfig):
    with pytest.raises(KubeUnavailable, match="context 'third' not found; allowed: first, second"):
        connect(kubeconfig(closed_port()), context="third")


def test_chosen_context_is_used(kubeconfig):
    with pytest.raises(KubeUnavailable, match="context second"):
        connect(kubeconfig(closed_port()), context="second")


def test_malformed_kubeconfig_is_named(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\ncontexts: []\nclusters: []\nusers: []\n")
    with pytest.raises(KubeUnavailable, match=f"kubeconfig {path}: "):
        connect(str(path))


def test_kubeconfig_that_is_not_yaml_is_named(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(KubeUnavailable, match=f"kubeconfig {path}: not valid YAML at line"):
        connect(str(path))


def test_backend_start_fails_fast_and_stop_after_failed_start_is_safe(kubeconfig):
    backend = KubeBackend(kubeconfig(closed_port()))
    started = time.monotonic()
    with pytest.raises(KubeUnavailable, match="connection refused"):
        backend.start()
    assert time.monotonic() - started < 2
    backend.stop()
    backend.stop()


def test_backend_from_the_suite_options(kubeconfig):
    options = SimpleNamespace(kubeconfig=kubeconfig(1), context="second", istio_revision="1-30-3",
                              allow_mesh_wide=True, capture=True)
    backend = KubeBackend.from_options(options)
    assert (backend.kubeconfig, backend.context, backend.allow_mesh_wide) == (options.kubeconfig, "second", True)
    assert (backend.revisions.client, backend.revisions.server) == ("1-30-3", "1-30-3")


def test_clean_leftovers_without_a_cluster_says_why(tmp_path):
    with pytest.raises(KubeUnavailable, match="file not found"):
        clean_leftovers(kubeconfig=str(tmp_path / "none"))


@pytest.mark.parametrize("how", ["args", "keywords"])
def test_doctor_reports_an_unreachable_cluster_as_one_failed_check(kubeconfig, how):
    path = kubeconfig(closed_port())
    found = checks(SimpleNamespace(kubeconfig=path, context=None)) if how == "args" else checks(kubeconfig=path)
    assert [c.name for c in found] == ["API server reachable"]
    assert not found[0].ok and "connection refused" in found[0].detail and found[0].hint
    assert found[0].line().startswith("✗ API server reachable")
    assert found[0].to_json()["ok"] is False


MESH_WIDE = {"client": {"namespace": "sleep"}, "server": {"namespace": "httpbin"},
             "resources": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                            "metadata": {"name": "default", "namespace": "istio-system"},
                            "spec": {"mtls": {"mode": "STRICT"}}}]}


def test_mesh_wide_refusal_comes_before_any_api_call():
    # No start(), no cluster: the refusal must not need one, so nothing can be half-created.
    backend = KubeBackend("/nonexistent")
    with pytest.raises(ManifestError, match="root namespace.*--allow-mesh-wide"):
        backend.deploy(scenario_from_dict(MESH_WIDE, "mesh-wide.yaml"))
    assert backend._handles == {}


def test_allowed_mesh_wide_scenario_still_needs_a_started_backend():
    backend = KubeBackend("/nonexistent", allow_mesh_wide=True)
    with pytest.raises(RuntimeError, match=r"start\(\) was not called"):
        backend.deploy(scenario_from_dict(MESH_WIDE, "mesh-wide.yaml"))


def test_scenario_root_namespace_must_match_the_cluster():
    other_root = dict(MESH_WIDE, root_namespace="mesh-root", resources=[])
    with pytest.raises(KubeUnavailable, match="'mesh-root' differs from the cluster's meshConfig.rootNamespace"):
        KubeBackend("/nonexistent").deploy(scenario_from_dict(other_root, "x.yaml"))


@pytest.mark.parametrize("command", [["doctor"], ["clean"], ["probe", "SCENARIO"]])
def test_cli_commands_on_an_unreachable_cluster_exit_2_fast(command, kubeconfig, tmp_path, capsys):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("client: {namespace: sleep}\nserver: {namespace: httpbin}\nresources: []\n")
    argv = [str(scenario) if part == "SCENARIO" else part for part in command]
    from meshproof.cli import main

    started = time.monotonic()
    code = main([*argv, "--mesh", "kube", "--kubeconfig", kubeconfig(closed_port())])
    assert code == 2 and time.monotonic() - started < 3
    printed = capsys.readouterr()
    assert "connection refused" in printed.out + printed.err
