"""Convergence on a real mesh: N consecutive identical results within a timeout, every observation kept.
Driven by a virtual clock, so each rule is checked exactly and fast."""

from __future__ import annotations

import pytest

from cluster.kube.convergence import ConvergencePolicy, converge


class VirtualTime:
    def __init__(self, probe_cost_s: float = 0.1):
        self.now, self.probe_cost_s = 0.0, probe_cost_s

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(sequence, policy, probe_cost_s=0.1):
    """Probe results follow `sequence`; the last one repeats forever."""
    t = VirtualTime(probe_cost_s)
    seen = iter(sequence)
    last = [None]

    def probe():
        t.now += t.probe_cost_s
        last[0] = next(seen, last[0])
        return last[0]

    return converge(probe, key=lambda r: r, policy=policy, clock=t.clock, sleep=t.sleep)


def test_settles_on_the_first_streak_of_n_after_the_old_policy():
    result = run(["plaintext", "plaintext", "mtls", "mtls", "mtls"],
                 ConvergencePolicy(required=3, timeout_s=30, interval_s=1, settle_s=0))
    assert result.converged and result.settled_key == "mtls"
    assert result.attempts == 5
    assert [o.key for o in result.transients] == ["plaintext", "plaintext"]  # the propagation window, reported
    assert result.elapsed_s == pytest.approx(4.1)
    assert not result.flapped


def test_an_early_success_is_never_the_verdict_when_it_does_not_last():
    # "retry until it passes" would stop at the first mtls; convergence needs the streak.
    result = run(["mtls", "plaintext", "plaintext", "plaintext"],
                 ConvergencePolicy(required=3, timeout_s=30, interval_s=1, settle_s=0))
    assert result.settled_key == "plaintext"
    assert [o.key for o in result.transients] == ["mtls"]


def test_results_before_settle_time_do_not_count():
    # With settle_s=2 the stale results at t<2 s cannot form the streak even though they agree.
    result = run(["503"] * 3 + ["mtls"] * 10, ConvergencePolicy(required=3, timeout_s=30, interval_s=1, settle_s=2))
    assert result.settled_key == "mtls"
    assert [o.key for o in result.observations[:3]] == ["503"] * 3


def test_times_out_without_a_streak_and_says_so():
    flapping = ["mtls", "503"] * 50
    result = run(flapping, ConvergencePolicy(required=3, timeout_s=5, interval_s=1, settle_s=0))
    assert not result.converged and result.settled_key is None
    assert result.attempts == 5
    assert result.flapped
    assert len(result.transients) == result.attempts  # nothing settled: every observation is a transient
    assert result.summary()["converged"] is False


def test_flap_is_a_return_to_an_earlier_result_not_a_sequence_of_new_ones():
    assert run(["a", "b", "c", "c", "c"], ConvergencePolicy(3, 30, 1, 0)).flapped is False
    assert run(["a", "b", "a", "a", "a"], ConvergencePolicy(3, 30, 1, 0)).flapped is True


def test_interval_counts_from_probe_start():
    result = run(["x"] * 3, ConvergencePolicy(required=3, timeout_s=30, interval_s=1, settle_s=0), probe_cost_s=0.4)
    assert [round(o.at_s, 2) for o in result.observations] == [0.4, 1.4, 2.4]


def test_required_one_takes_the_first_counted_result():
    result = run(["mtls"], ConvergencePolicy(required=1, timeout_s=5, interval_s=1, settle_s=0))
    assert result.converged and result.attempts == 1


@pytest.mark.parametrize("kwargs", [{"required": 0}, {"timeout_s": 0}, {"interval_s": -1}, {"settle_s": -1}])
def test_bad_policy_is_refused(kwargs):
    with pytest.raises(ValueError):
        ConvergencePolicy(**kwargs)
