"""The chaos detectors and fault windows on their own: each check fires on made-up requests that break it,
fault windows always heal, bad input is refused with the allowed values, the timeline draws a PNG."""

import threading
import time

import pytest

from cluster.faults import FaultError, Faults, FaultUnavailable
from reports.categories import PLAINTEXT_LEAK, PROPAGATION_TIMEOUT, UNEXPECTED_OUTCOME
from reports.timeline import draw
from suites.chaos import checks
from suites.chaos.checks import FAIL_CLOSED, Expect
from suites.chaos.traffic import FaultWindow, Request, _settle, retransmissions

MTLS = Expect.of("mtls", encrypt=True)


def req(i, outcome, t=None, wire=None, clear=False, phase="p", client="sidecar", length=0.01):
    started = float(i if t is None else t)
    wire = wire or {"mtls": "mtls", "plaintext": "plaintext"}.get(outcome, "none")
    return Request(index=i, client=client, started=started, ended=started + length, outcome=outcome,
                   http_status=200 if outcome in ("mtls", "plaintext") else None, curl_exit=0, canary=f"c{i}",
                   phase=phase, wire=wire, canary_in_clear=clear)


def test_leak_fires_on_a_readable_canary_or_a_plaintext_flow_only_where_policy_says_mtls():
    clean = [req(0, "mtls"), req(1, "503")]
    assert checks.leaks(clean, lambda r: MTLS) == []
    readable = [req(0, "503", clear=True)]
    assert checks.leaks(readable, lambda r: MTLS)[0].startswith(PLAINTEXT_LEAK)
    flow = [req(0, "mtls", wire="plaintext")]
    assert checks.leaks(flow, lambda r: MTLS)[0].startswith(PLAINTEXT_LEAK)
    # No policy demands encryption from a sidecar-less client: its readable request is not a leak.
    assert checks.leaks(readable, lambda r: Expect.of("reset", encrypt=False)) == []
    assert checks.leaks(readable, lambda r: None) == []  # spanning requests are judged by other checks


def test_unexpected_names_the_allowed_outcomes():
    problems = checks.unexpected([req(0, "mtls"), req(1, "mtls")], lambda r: FAIL_CLOSED)
    assert len(problems) == 2 and problems[0].startswith(UNEXPECTED_OUTCOME)
    assert "allowed 503, reset" in problems[0]
    assert checks.unexpected([req(0, "503")], lambda r: FAIL_CLOSED) == []


def test_recovery_is_measured_from_the_heal_to_the_first_answer():
    requests = [req(0, "503", t=10.0), req(1, "503", t=10.5), req(2, "mtls", t=10.6, length=0.02)]
    assert checks.recovery_s(requests, 10.2) == pytest.approx(0.42)
    assert checks.recovery_s(requests[:2], 10.2) is None


def test_convergence_waits_for_the_outcome_to_stay():
    wanted = frozenset({"reset"})
    requests = [req(0, "plaintext", t=1.0), req(1, "reset", t=1.1), req(2, "plaintext", t=1.2),
                req(3, "reset", t=1.3), req(4, "reset", t=1.4)]
    assert checks.convergence_s(requests, 1.0, wanted) == pytest.approx(0.31)
    assert checks.flaps(requests, wanted) == 1
    assert [r.index for r in checks.propagation_leaks(requests, 1.0, wanted)] == [0, 2]
    assert checks.convergence_s(requests[:3], 1.0, wanted) is None
    # A request that spans the next change belongs to neither side.
    assert checks.convergence_s(requests, 1.0, wanted, until=1.395) == pytest.approx(0.31)
    assert checks.slow_to_converge("x", None, 5)[0].startswith(PROPAGATION_TIMEOUT)
    assert checks.slow_to_converge("x", 6.0, 5)[0].startswith(PROPAGATION_TIMEOUT)
    assert checks.slow_to_converge("x", 0.1, 5) == []


def test_no_traffic_is_a_failure_not_a_pass():
    assert checks.needs_traffic([], "while down")[0].startswith(UNEXPECTED_OUTCOME)
    assert checks.needs_traffic([req(0, "503")], "while down") == []


@pytest.mark.parametrize("app_said", ["mtls", "plaintext"])
def test_a_200_without_its_flow_is_a_harness_error_whatever_the_app_echoed(app_said):
    """The app's echo is no proof of the wire: a 200 the capture holds no flow for is an error, not kept."""
    missed = req(0, app_said, wire="none")
    _settle(missed)
    assert missed.outcome == "error"
    assert "capture holds no mTLS or plaintext flow for it (wire none, 0 flows)" in missed.failure_detail
    for wire in ("mtls", "plaintext"):  # its sibling with the flow seen takes the wire's word
        seen = req(1, app_said, wire=wire)
        seen.flows = 1
        _settle(seen)
        assert (seen.outcome, seen.failure_detail) == (wire, None)
    cut = req(2, app_said, wire="none")
    cut.curl_exit = 18  # the answer was cut off mid-body
    _settle(cut)
    assert cut.outcome == "reset"


class Recorder(Faults):
    """Records what the bounded windows call; the primitives themselves are not under test here."""

    def __init__(self, fail_heal=False):
        self.calls, self.fail_heal = [], fail_heal

    def partition(self, handle):
        self.calls.append("partition")

    def heal(self, handle):
        self.calls.append("heal")
        if self.fail_heal:
            raise OSError("tc: no such device")

    kill_sidecar = restart_sidecar = stop_control_plane = start_control_plane = rotate_certificates = None
    serving_certificates = expire_certificate = rogue_certificate = limit_bandwidth = drop_packets = None
    delay_packets = capture = server_address = None


Recorder.__abstractmethods__ = frozenset()


def test_window_heals_once_even_when_the_block_fails():
    faults = Recorder()
    with pytest.raises(RuntimeError), faults.partitioned("h"):
        raise RuntimeError("scenario broke")
    assert faults.calls == ["partition", "heal"]


def test_window_heals_from_the_watchdog_when_the_block_outlives_its_bound():
    faults = Recorder()
    with faults.partitioned("h", bound_s=0.05):
        time.sleep(0.2)
        assert faults.calls == ["partition", "heal"]  # healed while the block still ran
    assert faults.calls == ["partition", "heal"]
    assert not any(t.name.startswith("heal ") for t in threading.enumerate())


def test_a_failed_heal_is_reported():
    with pytest.raises(FaultError, match="healing partition failed: tc: no such device"), \
            Recorder(fail_heal=True).partitioned("h"):
        pass


@pytest.mark.parametrize("call,message", [
    (lambda f: f.packet_loss("h", 1.5), "allowed 0 < p < 1"),
    (lambda f: f.packet_delay("h", 0), "allowed an integer 1-60000"),
    (lambda f: f.sidecar_killed("h", "gateway"), "allowed client, server"),
])
def test_bad_fault_parameters_name_the_allowed_values(call, message):
    faults = Recorder()
    with pytest.raises(ValueError, match=message), call(faults):
        pass
    assert faults.calls == []  # nothing injected


def test_timeline_draws_a_png(tmp_path):
    requests = [req(i, o, t=100 + i * 0.1) for i, o in enumerate(["mtls"] * 5 + ["503"] * 5 + ["mtls"] * 5)]
    requests[6].leak = True
    out = draw(requests, [(100.0, "start"), (100.5, "down"), (101.0, "after")],
               [FaultWindow("kill", 100.5, 101.0)], tmp_path / "t.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5000


def test_only_a_fault_the_target_cannot_inject_skips_a_chaos_test():
    """A skip is reserved for FaultUnavailable: a NotImplementedError from a bug must fail the test."""
    from suites.chaos.test_chaos import _run

    def unavailable(*_):
        raise FaultUnavailable("partition on this target: no NET_ADMIN")

    with pytest.raises(pytest.skip.Exception, match="network impairment: partition on this target"):
        _run("network impairment", unavailable)

    def unfinished(*_):
        raise NotImplementedError("a helper the scenario calls is not written yet")

    with pytest.raises(BaseException) as raised:  # BaseException: a skip must land here and fail the test
        _run("network impairment", unfinished)
    assert raised.type is NotImplementedError, f"a bug's NotImplementedError became {raised.type.__name__}"


def test_retransmissions_count_only_segments_sent_again_inside_the_window(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    def segment(when, seq, flags="PA", payload=b"hello"):
        frame = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=8080, flags=flags, seq=seq)
        frame = frame / payload if payload else frame
        frame.time = when
        return frame

    frames = [segment(10.0, 1, "S", b""), segment(10.1, 2), segment(10.2, 7, "A", b""), segment(10.3, 7, "A", b""),
              segment(11.0, 1, "S", b""), segment(11.5, 2), segment(13.0, 2)]
    wrpcap(str(tmp_path / "w.pcap"), frames)
    # The SYN and the data segment each sent again inside [10.5, 12]; bare ACKs repeat without counting.
    assert retransmissions(tmp_path / "w.pcap", 10.5, 12.0) == 2
    assert retransmissions(tmp_path / "w.pcap", 10.5, 14.0) == 3
    assert retransmissions(tmp_path / "w.pcap", 0.0, 10.9) == 0  # nothing resent before its copy came
