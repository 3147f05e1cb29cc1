"""Chaos suites: traffic keeps flowing through a fault, the whole window is captured, and the mesh must fail
closed and leak nothing. Scenarios live in suites/chaos/scenarios.py; each test here runs one and reports it
(timeline PNG, window pcaps, figures) in the Allure suite "chaos".
"""

import pytest

from cluster.faults import FaultUnavailable
from suites.chaos import scenarios
from suites.chaos.report import describe, finish

pytestmark = [pytest.mark.mesh, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="session")
def faults(mesh):
    return mesh.faults()


def _run(family: str, run, *args):
    doc = (run.__doc__ or "").strip()
    try:
        result = run(*args)
    except FaultUnavailable as err:  # this mesh target cannot inject that fault: say which, never pass
        pytest.skip(f"{family}: {err}")
    describe(family, result.name, doc)
    finish(result.name, result.traffic, result.problems, result.figures)


@pytest.mark.parametrize("role", ["server", "client"])
@pytest.mark.parametrize("mid_request", [False, True], ids=["between-requests", "mid-request"])
def test_sidecar_crash(mesh, faults, role, mid_request):
    _run("sidecar crash", scenarios.sidecar_crash, mesh, faults, role, mid_request)


def test_server_sidecar_crash_with_sidecar_less_client(mesh, faults):
    _run("sidecar crash", scenarios.sidecar_crash, mesh, faults, "server", False, False)


@pytest.mark.mesh_wide  # stops the control plane every workload of the mesh depends on
def test_control_plane_away(mesh, faults):
    _run("control plane away", scenarios.control_plane_away, mesh, faults)


def test_policy_flips_under_traffic(mesh, faults):
    _run("policy flip", scenarios.policy_flips, mesh, faults)


def test_certificate_rotation(mesh, faults):
    _run("certificates", scenarios.certificate_rotation, mesh, faults)


def test_certificate_expiry(mesh, faults):
    _run("certificates", scenarios.certificate_expiry, mesh, faults)


def test_untrusted_ca_peer(mesh, faults):
    _run("certificates", scenarios.untrusted_peer, mesh, faults)


@pytest.mark.parametrize("kind", list(scenarios.IMPAIRMENTS))
def test_network_impairment(mesh, faults, kind):
    _run("network impairment", scenarios.network_impairment, mesh, faults, kind)
