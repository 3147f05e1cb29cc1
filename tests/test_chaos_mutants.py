"""Each chaos scenario against a broken fault or a broken mesh: its detectors must go red, with the right
failure category. The scenarios are the very functions suites/chaos runs; only the Faults (or apply) they
are handed is a mutant, built on the reference mesh's real faults.
"""

import subprocess

import pytest

from cluster.faults import Faults
from cluster.local.faults import LocalFaults
from reports.categories import HARNESS_ERROR, PLAINTEXT_LEAK, PROPAGATION_TIMEOUT, UNEXPECTED_OUTCOME
from suites.chaos import scenarios
from suites.matrix import pa

pytestmark = [pytest.mark.mesh, pytest.mark.root, pytest.mark.slow]


class Delegating(Faults):
    """The real faults, primitive for primitive; mutants override one or two."""

    def __init__(self, inner: Faults, mesh):
        self.inner, self.mesh = inner, mesh

    def kill_sidecar(self, handle, role, signal=9):
        return self.inner.kill_sidecar(handle, role, signal)

    def restart_sidecar(self, handle, role):
        return self.inner.restart_sidecar(handle, role)

    def stop_control_plane(self):
        return self.inner.stop_control_plane()

    def start_control_plane(self):
        return self.inner.start_control_plane()

    def rotate_certificates(self, handle):
        return self.inner.rotate_certificates(handle)

    def serving_certificates(self, handle):
        return self.inner.serving_certificates(handle)

    def expire_certificate(self, handle, role, lifetime_s):
        return self.inner.expire_certificate(handle, role, lifetime_s)

    def rogue_certificate(self, handle, role):
        return self.inner.rogue_certificate(handle, role)

    def limit_bandwidth(self, handle, rate):
        return self.inner.limit_bandwidth(handle, rate)

    def drop_packets(self, handle, probability):
        return self.inner.drop_packets(handle, probability)

    def delay_packets(self, handle, ms):
        return self.inner.delay_packets(handle, ms)

    def partition(self, handle):
        return self.inner.partition(handle)

    def heal(self, handle):
        return self.inner.heal(handle)

    def capture(self, handle, pcap):
        return self.inner.capture(handle, pcap)

    def server_address(self, handle):
        return self.inner.server_address(handle)


class CleartextFallback(Delegating):
    """A mesh whose sidecars fall back to cleartext instead of going down: both sides switch to plaintext."""

    def kill_sidecar(self, handle, role, signal=9):
        self.mesh.apply(handle, [pa("DISABLE")])

    def restart_sidecar(self, handle, role):
        self.mesh.apply(handle, [pa("STRICT")])


class InterceptionBypass(Delegating):
    """A pod whose interception lets traffic past a dead sidecar straight to the app."""

    def kill_sidecar(self, handle, role, signal=9):
        self.inner.kill_sidecar(handle, role, signal)
        _in_pod(handle.pair.server.name, "-I", "PREROUTING", "1", "-p", "tcp", "-j", "ACCEPT")

    def restart_sidecar(self, handle, role):
        _in_pod(handle.pair.server.name, "-D", "PREROUTING", "-p", "tcp", "-j", "ACCEPT")
        self.inner.restart_sidecar(handle, role)


def _in_pod(pod, *nat_rule):
    subprocess.run(["ip", "netns", "exec", pod, "iptables", "-w", "-t", "nat", *nat_rule], check=True,
                   capture_output=True)


class NoKill(Delegating):
    def kill_sidecar(self, handle, role, signal=9):
        pass

    def restart_sidecar(self, handle, role):
        pass


class BlindCapture(Delegating):
    """A capture that sees none of the pod-to-pod TCP: nothing it records can prove a request encrypted."""

    def capture(self, handle, pcap):
        from probes.capture import Capture

        return Capture(iface=handle.pair.server.veth, bpf="udp", pcap_path=pcap)


class ControlPlaneNeverAway(Delegating):
    def stop_control_plane(self):
        pass

    def start_control_plane(self):
        pass


class HeldChangesLost(Delegating):
    refuses_applies_while_away = False

    def start_control_plane(self):
        self.mesh.held_pushes = None  # back, without what was held


class RotationToRogue(Delegating):
    """A rotation that hands out certificates from the wrong CA."""

    def rotate_certificates(self, handle):
        self.inner.rogue_certificate(handle, "client")


class RotationNoop(Delegating):
    def rotate_certificates(self, handle):
        pass


class NeverExpires(Delegating):
    def expire_certificate(self, handle, role, lifetime_s):
        import time

        self.inner.rotate_certificates(handle)
        return time.time() + lifetime_s


class RogueAccepted(Delegating):
    def rogue_certificate(self, handle, role):
        self.inner.rotate_certificates(handle)


class NoImpairment(Delegating):
    def limit_bandwidth(self, handle, rate):
        pass

    def drop_packets(self, handle, probability):
        pass

    def delay_packets(self, handle, ms):
        pass

    def partition(self, handle):
        pass


class LossIntoCleartext(Delegating):
    """Packet loss that makes the mesh give up on TLS."""

    def drop_packets(self, handle, probability):
        self.inner.drop_packets(handle, probability)
        self.mesh.apply(handle, [pa("DISABLE")])

    def heal(self, handle):
        self.inner.heal(handle)
        self.mesh.apply(handle, [pa("STRICT")])


@pytest.fixture(scope="module")
def faults(mesh):
    return mesh.faults()


@pytest.fixture(autouse=True)
def healthy_pairs(mesh, faults):
    """A mutant may leave a reused pair broken (a rogue certificate): give the next test a healthy one."""
    yield
    for client_sidecar in (True, False):
        with scenarios.deployed(mesh, "STRICT", client_sidecar) as handle:
            faults.heal(handle)
            faults.rotate_certificates(handle)
            if client_sidecar:
                for _ in range(100):
                    if mesh.probe(handle, capture=False).outcome == "mtls":
                        break
                else:
                    pytest.fail("the pair did not come back to mTLS after the mutant")


def _categories(result) -> set[str]:
    return {prefix for prefix in (PLAINTEXT_LEAK, UNEXPECTED_OUTCOME, HARNESS_ERROR)
            for problem in result.problems if problem.startswith(prefix)}


@pytest.mark.parametrize("role", ["server", "client"])
def test_crash_that_falls_back_to_cleartext_is_a_leak(mesh, faults, role):
    result = scenarios.sidecar_crash(mesh, CleartextFallback(faults, mesh), role, mid_request=False)
    assert {PLAINTEXT_LEAK, UNEXPECTED_OUTCOME} <= _categories(result), result.problems[:3]
    assert result.figures["leaked"] > 0


def test_interception_bypass_past_a_dead_sidecar_is_caught(mesh, faults):
    result = scenarios.sidecar_crash(mesh, InterceptionBypass(faults, mesh), "server", mid_request=False,
                                     client_sidecar=False)
    assert any(p.startswith(PLAINTEXT_LEAK) and "(down)" in p for p in result.problems), result.problems[:3]
    assert any("interception bypass" in p for p in result.problems)


def test_kill_that_leaves_the_request_in_flight_answered_is_caught(mesh, faults):
    result = scenarios.sidecar_crash(mesh, NoKill(faults, mesh), "server", mid_request=True)
    assert any("in flight at the kill was answered" in p for p in result.problems), result.problems[:3]
    assert all(p.startswith(UNEXPECTED_OUTCOME) for p in result.problems)


def test_answers_the_capture_cannot_prove_encrypted_are_harness_errors(mesh, faults):
    result = scenarios.certificate_rotation(mesh, BlindCapture(faults, mesh), rotations=1)
    assert HARNESS_ERROR in _categories(result), result.problems[:3]
    assert PLAINTEXT_LEAK not in _categories(result)


def test_answers_the_capture_missed_are_harness_errors_where_plaintext_is_allowed(mesh, faults):
    """A sidecar-less client under PERMISSIVE: no phase demands encryption, yet a 200 with no flow on the
    wire proves nothing and must not keep the outcome the app's echo suggests."""
    result = scenarios.sidecar_crash(mesh, BlindCapture(faults, mesh), "server", mid_request=False,
                                     client_sidecar=False)
    before = result.traffic.of(phase="before")
    assert before and all(r.outcome == "error" and r.http_status == 200 for r in before), before[:3]
    assert any(p.startswith(HARNESS_ERROR) and "(before)" in p and "capture holds no" in p
               for p in result.problems), result.problems[:3]
    assert PLAINTEXT_LEAK not in _categories(result)


@pytest.mark.parametrize("webhook", ["closed", "opened"])
def test_control_plane_that_never_left_is_caught(mesh, faults, webhook):
    mutant = ControlPlaneNeverAway(faults, mesh)
    mutant.refuses_applies_while_away = webhook == "closed"
    result = scenarios.control_plane_away(mesh, mutant)
    if webhook == "closed":
        assert any("accepted a change while the control plane was away" in p for p in result.problems), \
            result.problems[:3]
    assert any(p.startswith(UNEXPECTED_OUTCOME) and "(changed while away)" in p for p in result.problems), \
        result.problems[:3]


def test_changes_held_while_away_and_lost_on_return_are_a_propagation_timeout(mesh, faults):
    """The kube path (webhook opened): a control plane that comes back without the change made meanwhile."""
    result = scenarios.control_plane_away(mesh, HeldChangesLost(LocalFaults(mesh, refuses_applies_while_away=False),
                                                                mesh))
    assert any(p.startswith(PROPAGATION_TIMEOUT) and "returned" in p for p in result.problems), result.problems[:3]


def test_flip_that_leaves_plaintext_allowed_is_a_leak(mesh, faults):
    def lenient_apply(handle, manifests):
        # STRICT silently becomes PERMISSIVE: plaintext stays accepted.
        mesh.apply(handle, [pa("PERMISSIVE") if m["spec"]["mtls"]["mode"] == "STRICT" else m for m in manifests])

    result = scenarios.policy_flips(mesh, faults, apply=lenient_apply)
    assert PLAINTEXT_LEAK in _categories(result), result.problems[:3]
    assert any(p.startswith(PLAINTEXT_LEAK) and "no-sidecar" in p for p in result.problems)


def test_rotation_to_an_untrusted_ca_fails_requests(mesh, faults):
    result = scenarios.certificate_rotation(mesh, RotationToRogue(faults, mesh))
    assert UNEXPECTED_OUTCOME in _categories(result)
    assert result.figures["failed"] > 0


def test_rotation_that_changes_nothing_is_caught(mesh, faults):
    result = scenarios.certificate_rotation(mesh, RotationNoop(faults, mesh), rotations=1)
    assert any("still serves certificate" in p for p in result.problems), result.problems[:3]


def test_certificate_that_never_expires_is_fail_open(mesh, faults):
    result = scenarios.certificate_expiry(mesh, NeverExpires(faults, mesh))
    assert any(p.startswith(UNEXPECTED_OUTCOME) and "(expired)" in p for p in result.problems), result.problems[:3]


def test_rogue_peer_accepted_is_caught(mesh, faults):
    result = scenarios.untrusted_peer(mesh, RogueAccepted(faults, mesh))
    assert any(p.startswith(UNEXPECTED_OUTCOME) and "(rogue)" in p for p in result.problems), result.problems[:3]


@pytest.mark.parametrize("kind", list(scenarios.IMPAIRMENTS))
def test_impairment_without_effect_is_caught(mesh, faults, kind):
    result = scenarios.network_impairment(mesh, NoImpairment(faults, mesh), kind)
    assert any(p.startswith(UNEXPECTED_OUTCOME) and "no effect" in p for p in result.problems), result.problems[:3]


def test_impairment_that_drops_tls_is_a_leak(mesh, faults):
    result = scenarios.network_impairment(mesh, LossIntoCleartext(faults, mesh), "loss")
    assert PLAINTEXT_LEAK in _categories(result), result.problems[:3]


class BrokenProbe:
    """The real mesh, except that every fifth probe raises as a broken harness would."""

    def __init__(self, mesh):
        self.mesh, self.calls = mesh, 0

    def __getattr__(self, name):
        return getattr(self.mesh, name)

    def probe(self, handle, capture=True):
        self.calls += 1
        if self.calls % 5 == 0:
            raise OSError("curl could not be started")
        return self.mesh.probe(handle, capture=capture)


def test_a_probe_that_breaks_is_a_harness_error_not_a_gap(mesh, faults):
    result = scenarios.certificate_rotation(BrokenProbe(mesh), faults, rotations=1)
    assert any(p.startswith(HARNESS_ERROR) and "curl could not be started" in p for p in result.problems)
    assert sum(r.outcome == "error" for r in result.traffic.requests) >= 2
