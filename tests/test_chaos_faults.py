"""The reference mesh's faults on real pods: each leaves its mark where it should (the pod's netns, the
sidecar's config, the certificate served), and healing removes exactly that, even after a failure."""

import json
import subprocess

import pytest

from cluster.backend import ApplyRefused
from cluster.faults import FaultError
from cluster.local.faults import FAULT_IN, FAULT_OUT
from meshproof.scenario import scenario_from_dict
from suites.matrix import pa, scenario

pytestmark = [pytest.mark.mesh, pytest.mark.root]


@pytest.fixture
def handle(mesh):
    handle = mesh.deploy(scenario_from_dict(scenario([pa("STRICT")]), "chaos fault test"))
    yield handle
    mesh.teardown(handle)


def _in(pod, *cmd) -> str:
    return subprocess.run(["ip", "netns", "exec", pod.name, *cmd], check=True, capture_output=True, text=True).stdout


def _root_ns_rules() -> str:
    return subprocess.run(["iptables-save"], check=False, capture_output=True, text=True).stdout


def test_network_faults_live_in_the_pods_and_heal_away(mesh, handle):
    faults = mesh.faults()
    root_before = _root_ns_rules()
    server, client = handle.pair.server, handle.pair.client
    with faults.partitioned(handle), faults.packet_loss(handle, 0.25), faults.bandwidth_limited(handle, "1mbit"):
        rules = _in(server, "iptables", "-S")
        assert f"-A {FAULT_IN} -s {client.ip}/32 -j DROP" in rules
        assert f"-A {FAULT_OUT} -d {client.ip}/32 -j DROP" in rules
        assert "--probability 0.25" in rules
        assert all("tbf" in _in(pod, "tc", "qdisc", "show", "dev", "eth0") for pod in (server, client))
        assert mesh.probe(handle, capture=False).outcome == "reset"  # curl gave up on the partitioned server
    assert "MESHPROOF" not in _in(server, "iptables", "-S")
    assert all("tbf" not in _in(pod, "tc", "qdisc", "show", "dev", "eth0") for pod in (server, client))
    assert _root_ns_rules() == root_before  # the root namespace was never touched
    assert mesh.probe(handle, capture=False).outcome == "mtls"


def test_heal_is_idempotent_and_runs_after_a_failure(mesh, handle):
    faults = mesh.faults()
    with pytest.raises(RuntimeError), faults.partitioned(handle):
        raise RuntimeError("scenario failed mid-window")
    assert "MESHPROOF" not in _in(handle.pair.server, "iptables", "-S")
    faults.heal(handle)
    faults.heal(handle)


def test_delay_is_pushed_to_the_server_sidecar_and_taken_back(mesh, handle):
    faults = mesh.faults()
    server = handle.pair.server
    before = json.dumps(handle.pair.configs[server.name].listeners, sort_keys=True)
    with faults.packet_delay(handle, 250):
        assert "envoy.filters.http.fault" in json.dumps(handle.pair.configs[server.name].listeners)
        assert mesh.probe(handle, capture=False).elapsed_ms >= 250
    assert json.dumps(handle.pair.configs[server.name].listeners, sort_keys=True) == before
    assert mesh.probe(handle, capture=False).elapsed_ms < 250


def test_control_plane_away_refuses_applies_and_keeps_serving(mesh, handle):
    """As Istio's validating webhook (failurePolicy Fail) with istiod gone: the apply is refused with a clear
    error, nothing of it reaches a sidecar, then or after the return, and the old config keeps serving."""
    faults = mesh.faults()
    sidecar = mesh.sidecar(handle, "server")
    served = sidecar.versions()["listener_manager.lds.version_text"]
    resources = handle.resources
    with faults.control_plane_away():
        with pytest.raises(ApplyRefused, match="control plane is away.*validating webhook"):
            mesh.apply(handle, [pa("DISABLE")])
        with pytest.raises(ApplyRefused):
            mesh.deploy(scenario_from_dict(scenario([pa("DISABLE")]), "deploy while away"))
        assert sidecar.versions()["listener_manager.lds.version_text"] == served
        assert mesh.probe(handle, capture=False).outcome == "mtls"  # the old config keeps serving
    assert handle.resources is resources
    assert sidecar.versions()["listener_manager.lds.version_text"] == served  # nothing was held for later
    assert mesh.probe(handle, capture=False).outcome == "mtls"
    mesh.apply(handle, [pa("DISABLE")])  # back: applies go through again
    assert mesh.probe(handle, capture=False).outcome == "plaintext"
    with pytest.raises(FaultError, match="already stopped"), faults.control_plane_away(), faults.control_plane_away():
        pass
    assert mesh.held_pushes is None  # the outer window still resumed


def test_kill_is_a_real_signal_and_restart_brings_a_new_process(mesh, handle):
    faults = mesh.faults()
    sidecar = mesh.sidecar(handle, "client")
    pid = sidecar.process.pid
    with faults.sidecar_killed(handle, "client"):
        assert sidecar.process.returncode == -9
        assert mesh.probe(handle, capture=False).outcome == "reset"
    assert sidecar.process.pid != pid and sidecar.alive()


def test_faults_on_a_pod_without_a_sidecar_say_so(mesh):
    plain = mesh.deploy(scenario_from_dict(scenario([pa("STRICT")], client_sidecar=False), "chaos fault test"))
    try:
        with pytest.raises(FaultError, match=r"the client pod \S+ has no sidecar"):
            mesh.faults().kill_sidecar(plain, "client")
    finally:
        mesh.teardown(plain)
