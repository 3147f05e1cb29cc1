"""Local runs meet a cluster's timing and concurrency: a control plane that pushes late (--push-delay,
debounced as istiod does), chaos bounds taken from the backend's push time, and probes sent from several
threads at once through the same backend methods."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster.factory import started
from cluster.local.backend import LocalBackend
from cluster.local.faults import LocalFaults
from meshproof.scenario import scenario_from_dict
from reports.categories import PROPAGATION_TIMEOUT
from suites.chaos import scenarios
from suites.matrix import dr, pa, scenario

pytestmark = [pytest.mark.root, pytest.mark.mesh,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]

DELAY_S = 1.0


@pytest.fixture(scope="module")
def slow_mesh(tmp_path_factory):
    """A reference mesh whose control plane pushes each change DELAY_S late."""
    with started(LocalBackend(out_dir=tmp_path_factory.mktemp("slow-mesh"), push_delay_s=DELAY_S)) as backend:
        yield backend


def test_a_change_is_served_only_after_the_push_delay(slow_mesh):
    handle = slow_mesh.deploy(scenario_from_dict(scenario([pa("STRICT")]), "push delay"))
    try:
        sidecar = slow_mesh.sidecar(handle, "server")
        served = sidecar.versions()["listener_manager.lds.version_text"]
        applying = threading.Thread(target=slow_mesh.apply, args=(handle, [pa("DISABLE")]))
        applying.start()
        # While the change waits for its push, the sidecars serve the old policy.
        during = slow_mesh.probe(handle, capture=False)
        held = sidecar.versions()["listener_manager.lds.version_text"]
        still_waiting = applying.is_alive()
        applying.join()
        assert still_waiting, "the apply returned before the probe: no push delay"
        assert during.outcome == "mtls" and held == served
        assert slow_mesh.probe(handle, capture=False).outcome == "plaintext"  # served once apply returned
        assert slow_mesh.push_time_s() >= DELAY_S
    finally:
        slow_mesh.teardown(handle)


@pytest.mark.slow
@pytest.mark.parametrize("run", [scenarios.policy_flips, scenarios.control_plane_away], ids=lambda f: f.__name__)
def test_chaos_bounds_hold_with_a_push_delay(slow_mesh, run):
    result = run(slow_mesh, slow_mesh.faults())
    assert result.problems == []
    assert result.figures["converge_bound_s"] >= DELAY_S + scenarios.CONVERGE_SLACK_S


@pytest.mark.slow
def test_control_plane_away_with_the_webhook_opened_as_the_kube_backend_does(slow_mesh):
    """The scenario's kube path on the reference mesh: the change made while the control plane is away is
    accepted, held, and takes effect within the bound once it returns."""
    result = scenarios.control_plane_away(slow_mesh, LocalFaults(slow_mesh, refuses_applies_while_away=False))
    assert result.problems == [] and result.figures["refusal"] is None


class SlowerThanItSays:
    """The real mesh, but every apply takes 2 s more than its push_time_s() admits."""

    def __init__(self, mesh):
        self.mesh = mesh

    def __getattr__(self, name):
        return getattr(self.mesh, name)

    def apply(self, handle, manifests):
        threading.Event().wait(scenarios.CONVERGE_SLACK_S + 2)
        self.mesh.apply(handle, manifests)


@pytest.mark.slow
def test_a_change_slower_than_the_mesh_says_is_a_propagation_timeout(mesh):
    result = scenarios.policy_flips(SlowerThanItSays(mesh), mesh.faults())
    assert any(p.startswith(PROPAGATION_TIMEOUT) for p in result.problems), result.problems[:3]


def test_bounds_grow_with_the_backends_push_time():
    class Stub:
        def __init__(self, seconds):
            self.seconds = seconds

        def push_time_s(self):
            return self.seconds

    fast, slow = Stub(0.05), Stub(8.0)
    assert scenarios.converge_bound_s(slow) - scenarios.converge_bound_s(fast) == pytest.approx(7.95)
    assert scenarios.window_s(slow, applies=6, waits=4) > scenarios.window_s(fast, applies=6, waits=4) + 6 * 7.9


def test_concurrent_probes_of_one_pair_each_prove_their_own_request(mesh):
    """Chaos probes from several threads at once. Each probe's capture and failure counters must be its own:
    the mTLS probes each show one mTLS flow of their own, and each 503 carries the client sidecar's account."""
    good = mesh.deploy(scenario_from_dict(scenario([pa("STRICT")]), "concurrent mtls"))
    bad = mesh.deploy(scenario_from_dict(scenario([pa("STRICT"), dr("DISABLE")]), "concurrent 503"))
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda h: mesh.probe(h, capture=True), [good, bad] * 6))
    finally:
        mesh.teardown(good)
        mesh.teardown(bad)
    mtls, refused = results[0::2], results[1::2]
    # The verdict's flows: the pcap's minus the capture's heartbeat (probes/heartbeat.py).
    flows = [len(r.wire.flows) for r in results]
    assert flows == [1] * len(results), f"TCP flows per probe's capture: {flows}"
    assert all(r.outcome == "mtls" and r.wire.verdict == "mtls" for r in mtls), [r.failure_detail for r in mtls]
    # Each refused probe's failure counters moved by exactly its own one connection.
    assert all(r.outcome == "503" and r.proxy_report["response_flags"] == "UC"
               and "no_filter_chain_match+1" in r.failure_detail for r in refused), [r.failure_detail for r in refused]
    assert len({r.canary for r in results}) == len(results)
